"""hpo.study.strategies: sampler and pruner specs that build Optuna's objects.

Every kind builds the right Optuna class with its options, grid and points sizes, the stored
dict format `{"type": ..., **options}` (plus "points") round-tripping, Optuna's constructor
errors arriving as ValueError/TypeError, the grid sampler's shared seed and its budget-ended
search (no study.stop() outside optimize).
"""

from __future__ import annotations

import itertools
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution

from hpo.study.spec import Param
from hpo.study.strategies import MAX_STEP, BudgetGridSampler, PrunerSpec, SamplerSpec

optuna.logging.set_verbosity(optuna.logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

SPACE = (
    Param("hidden_size", "int", low=8, high=10),  # 3 values
    Param("shift", "categorical", choices=(1, 2)),  # 2
    Param("epochs", "int", low=10, high=30, step=10),  # 3
)
DISTS = {"hidden_size": IntDistribution(8, 10), "shift": CategoricalDistribution([1, 2]),
         "epochs": IntDistribution(10, 30, step=10)}
CONTINUOUS = (Param("lr", "float", low=1e-3, high=1e-1, log=True),)


def _ask_all(sampler: optuna.samplers.BaseSampler, n: int) -> list[dict[str, Any]]:
    study = optuna.create_study(sampler=sampler)
    out = []
    for _ in range(n):
        trial = study.ask(DISTS)
        out.append(dict(trial.params))
        study.tell(trial, 0.0)
    return out


# --- samplers ----------------------------------------------------------------------------------

def test_default_sampler_is_tpe() -> None:
    assert SamplerSpec() == SamplerSpec("tpe", {}, ())
    assert isinstance(SamplerSpec().build(0, SPACE), optuna.samplers.TPESampler)


def test_tpe_gets_its_options() -> None:
    opts = {"n_startup_trials": 7, "multivariate": True, "constant_liar": True,
            "n_ei_candidates": 5, "group": True}
    s = SamplerSpec("tpe", opts).build(3, SPACE)
    assert type(s) is optuna.samplers.TPESampler
    assert s._n_startup_trials == 7
    assert s._multivariate is True
    assert s._constant_liar is True
    assert s._n_ei_candidates == 5
    assert s._group is True


def test_gp_gets_its_options() -> None:
    s = SamplerSpec("gp", {"n_startup_trials": 4, "deterministic_objective": True}).build(0, SPACE)
    assert type(s) is optuna.samplers.GPSampler
    assert s._n_startup_trials == 4
    assert s._deterministic is True


@pytest.mark.parametrize("kind", ["random", "points"])
def test_random_and_points_build_a_random_sampler(kind: str) -> None:
    assert type(SamplerSpec(kind).build(0, SPACE)) is optuna.samplers.RandomSampler


def test_grid_builds_the_budget_grid_of_the_space() -> None:
    s = SamplerSpec("grid").build(0, SPACE, study_seed=5)
    assert isinstance(s, BudgetGridSampler)
    assert isinstance(s, optuna.samplers.GridSampler)
    assert s._search_space == {"epochs": [10, 20, 30], "hidden_size": [8, 9, 10],
                               "shift": [1, 2]}


@pytest.mark.parametrize("kind", ["random", "tpe"])
def test_worker_seed_makes_draws_reproducible(kind: str) -> None:
    a = _ask_all(SamplerSpec(kind).build(11, SPACE), 5)
    b = _ask_all(SamplerSpec(kind).build(11, SPACE), 5)
    c = _ask_all(SamplerSpec(kind).build(12, SPACE), 5)
    assert a == b
    assert a != c


def test_grid_order_follows_the_study_seed_not_the_workers() -> None:
    """Grid ids index a list shuffled by the seed: every worker must shuffle it alike."""
    a = _ask_all(SamplerSpec("grid").build(1, SPACE, study_seed=7), 18)
    b = _ask_all(SamplerSpec("grid").build(2, SPACE, study_seed=7), 18)
    c = _ask_all(SamplerSpec("grid").build(1, SPACE, study_seed=8), 18)
    assert a == b
    assert a != c
    # All 18 points exactly once, each run.
    points = {tuple(sorted(p.items())) for p in a}
    assert len(points) == 18 == SamplerSpec("grid").size(SPACE)
    product = itertools.product(*(p.grid() or [] for p in SPACE))
    assert points == {tuple(sorted(zip([p.name for p in SPACE], combo, strict=True)))
                      for combo in product}


def test_budget_grid_does_not_stop_the_study_outside_optimize() -> None:
    """Optuna's own GridSampler calls study.stop() when exhausted, which fails under ask/tell;
    BudgetGridSampler leaves the end to the study's budget."""
    grid = {"hidden_size": [8, 9, 10], "shift": [1, 2], "epochs": [10, 20, 30]}
    with pytest.raises(RuntimeError):
        _ask_all(optuna.samplers.GridSampler(grid, seed=0), 18)
    assert len(_ask_all(BudgetGridSampler(grid, seed=0), 20)) == 20


def test_sizes() -> None:
    assert SamplerSpec("grid").size(SPACE) == 3 * 2 * 3
    assert SamplerSpec("grid").size(SPACE[:1]) == 3
    points = ({"hidden_size": 8, "shift": 1, "epochs": 10},
              {"hidden_size": 9, "shift": 2, "epochs": 30})
    assert SamplerSpec("points", {}, points).size(SPACE) == 2
    for kind in ("tpe", "random", "gp"):
        assert SamplerSpec(kind).size(SPACE) is None
        assert SamplerSpec(kind).size(CONTINUOUS) is None


def test_grid_size_of_a_float_step_and_a_large_grid() -> None:
    space = (Param("lr", "float", low=0.1, high=0.5, step=0.1),
             Param("hidden_size", "int", low=1, high=1000))
    assert SamplerSpec("grid").size(space) == 5 * 1000


@pytest.mark.parametrize("spec", [
    SamplerSpec("tpe", {"n_startup_trials": 4}),
    SamplerSpec("tpe", {"n_startup_trials": 10, "multivariate": True, "constant_liar": False}),
    SamplerSpec("random"),
    SamplerSpec("grid"),
    SamplerSpec("gp", {"deterministic_objective": True}),
    SamplerSpec("points", {}, ({"hidden_size": 8, "shift": 1, "epochs": 10},)),
])
def test_sampler_round_trip(spec: SamplerSpec) -> None:
    d = spec.to_dict()
    expected: dict[str, Any] = {"type": spec.kind, **spec.options}
    if spec.kind == "points":
        expected["points"] = [dict(p) for p in spec.points]
    assert d == expected
    assert SamplerSpec.from_dict(d) == spec
    assert SamplerSpec.from_dict(d).to_dict() == d


def test_sampler_from_stored_dicts() -> None:
    assert SamplerSpec.from_dict({"type": "tpe", "n_startup_trials": 4}) == SamplerSpec(
        "tpe", {"n_startup_trials": 4})
    assert SamplerSpec.from_dict({}) == SamplerSpec()
    pts = [{"hidden_size": 40, "shift": 10, "epochs": 100}]
    s = SamplerSpec.from_dict({"type": "points", "points": pts})
    assert s.kind == "points"
    assert s.options == {}
    assert s.points == ({"hidden_size": 40, "shift": 10, "epochs": 100},)
    pts[0]["hidden_size"] = 1  # from_dict copies: the stored dict is not aliased
    assert s.points[0]["hidden_size"] == 40


def test_to_dict_returns_fresh_dicts() -> None:
    spec = SamplerSpec("tpe", {"n_startup_trials": 4})
    spec.to_dict()["n_startup_trials"] = 99
    assert spec.options == {"n_startup_trials": 4}


def test_sampler_kinds_declare_option_types() -> None:
    assert set(SamplerSpec.KINDS) == {"tpe", "random", "grid", "gp", "points"}
    for kind, keys in SamplerSpec.KINDS.items():
        assert all(isinstance(t, type) for t in keys.values()), kind


def test_sampler_constructor_errors_propagate() -> None:
    with pytest.raises(TypeError):
        SamplerSpec("tpe", {"bogus": 1}).build(0, SPACE)
    with pytest.raises(TypeError):
        SamplerSpec("gp", {"n_ei_candidates": 3}).build(0, SPACE)


# --- pruners -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "opts", "cls", "attrs"), [
    ("none", {}, optuna.pruners.NopPruner, {}),
    ("median", {"n_startup_trials": 3, "n_warmup_steps": 20, "interval_steps": 10,
                "n_min_trials": 2}, optuna.pruners.MedianPruner,
     {"_percentile": 50.0, "_n_startup_trials": 3, "_n_warmup_steps": 20, "_interval_steps": 10,
      "_n_min_trials": 2}),
    ("percentile", {"percentile": 25.0, "n_startup_trials": 1, "n_warmup_steps": 10},
     optuna.pruners.PercentilePruner,
     {"_percentile": 25.0, "_n_startup_trials": 1, "_n_warmup_steps": 10}),
    ("successive_halving", {"min_resource": 10, "reduction_factor": 3,
                            "min_early_stopping_rate": 1, "bootstrap_count": 0},
     optuna.pruners.SuccessiveHalvingPruner,
     {"_min_resource": 10, "_reduction_factor": 3, "_min_early_stopping_rate": 1}),
    ("hyperband", {"min_resource": 10, "max_resource": MAX_STEP, "reduction_factor": 3},
     optuna.pruners.HyperbandPruner,
     {"_min_resource": 10, "_max_resource": MAX_STEP, "_reduction_factor": 3}),
])
def test_pruner_kinds_build_with_options(kind: str, opts: dict[str, Any], cls: type,
                                         attrs: dict[str, Any]) -> None:
    pruner = PrunerSpec(kind, opts).build()
    assert type(pruner) is cls
    for name, value in attrs.items():
        assert getattr(pruner, name) == value, name


def test_every_pruner_kind_has_a_class() -> None:
    assert set(PrunerSpec.KINDS) == set(PrunerSpec.CLASSES)
    for kind in PrunerSpec.KINDS:
        opts = {"percentile": 50.0} if kind == "percentile" else {}  # Optuna requires it
        assert isinstance(PrunerSpec(kind, opts).build(), optuna.pruners.BasePruner)


@pytest.mark.parametrize(("kind", "opts"), [
    ("median", {"interval_steps": 0}),
    ("median", {"n_warmup_steps": -1}),
    ("median", {"n_startup_trials": -1}),
    ("percentile", {"percentile": 150.0}),
    ("successive_halving", {"reduction_factor": 1}),
    ("successive_halving", {"min_early_stopping_rate": -1}),
    # HyperbandPruner itself checks these only when a trial first reports (ZeroDivisionError
    # in the worker); build() refuses them up front.
    ("hyperband", {"reduction_factor": 1}),
    ("hyperband", {"min_resource": 0}),
    ("hyperband", {"bootstrap_count": 2}),  # needs a max_resource
])
def test_optuna_pruner_errors_propagate_as_value_error(kind: str, opts: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PrunerSpec(kind, opts).build()


def test_unknown_or_missing_pruner_option_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        PrunerSpec("median", {"percentile": 10.0}).build()
    with pytest.raises(TypeError):
        PrunerSpec("percentile", {}).build()


def test_pruner_active_and_warmup() -> None:
    assert not PrunerSpec().active
    assert PrunerSpec("median").active
    assert PrunerSpec("median", {"n_warmup_steps": 30}).warmup == 30
    assert PrunerSpec("percentile", {"n_warmup_steps": 20}).warmup == 20
    assert PrunerSpec("median").warmup == 0
    assert PrunerSpec("hyperband", {"min_resource": 30}).warmup == 0


@pytest.mark.parametrize("spec", [
    PrunerSpec(), PrunerSpec("median", {"n_startup_trials": 8, "n_warmup_steps": 30}),
    PrunerSpec("hyperband", {"min_resource": 10, "max_resource": 100}),
])
def test_pruner_round_trip(spec: PrunerSpec) -> None:
    d = spec.to_dict()
    assert d == {"type": spec.kind, **spec.options}
    assert PrunerSpec.from_dict(d) == spec


def test_pruner_from_stored_dicts() -> None:
    assert PrunerSpec.from_dict({}) == PrunerSpec("none", {})
    assert PrunerSpec.from_dict({"type": "median", "n_warmup_steps": 30}) == PrunerSpec(
        "median", {"n_warmup_steps": 30})


# --- grid_of -----------------------------------------------------------------------------------
