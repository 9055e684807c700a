"""hpo.study.parse: study files parsed and then constructed (Optuna's sampler, pruner and
distributions, the listed points, the seeds, the configs at the corners, a memory bound).

Every file in studies/ is accepted; each refusal is one line, `<file>: <dotted key>: reason`,
whether the parser or construct() finds it: pruner settings Optuna refuses, bad resources,
negative seeds, corner configs out of range, memory, oversized grids, pruning a metric that is
not the validation score. Also the objective's directions and load_study_file's own errors.
"""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w

from hpo.errors import StudyFileError
from hpo.study.construct import MAX_CORNERS, construct, memory_estimate
from hpo.study.parse import MAX_GRID, load_study_file, parse_study
from hpo.study.spec import Param, StudySpec
from hpo.study.strategies import PrunerSpec, SamplerSpec

STUDIES_DIR = Path(__file__).resolve().parents[2] / "studies"
STUDIES = sorted(STUDIES_DIR.glob("*.toml"))
SRC = "my.toml"

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _raw(name: str = "smoke") -> dict[str, Any]:
    """A study file's TOML data, to be changed by a test."""
    return tomllib.loads((STUDIES_DIR / f"{name}.toml").read_text())


def _check_line(e: StudyFileError, key: str) -> str:
    text = str(e)
    assert "\n" not in text
    assert text.startswith(f"{SRC}: {key}: "), text
    return text


def _refused(raw: dict[str, Any], key: str) -> str:
    with pytest.raises(StudyFileError) as info:
        parse_study(raw, SRC)
    return _check_line(info.value, key)


def _construct_refuses(spec: StudySpec, key: str) -> str:
    with pytest.raises(StudyFileError) as info:
        construct(spec, SRC)
    return _check_line(info.value, key)


@pytest.fixture(scope="module")
def smoke() -> StudySpec:
    return load_study_file(STUDIES_DIR / "smoke.toml")


# --- the shipped studies -----------------------------------------------------------------------

@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_shipped_study_is_accepted(path: Path) -> None:
    spec = load_study_file(path)
    assert spec.name == path.stem
    assert spec.trials >= 1
    assert spec.space
    construct(spec, str(path))  # again, on the parsed spec
    construct(StudySpec.from_dict(spec.to_dict()), str(path))  # and as storage gives it back
    assert memory_estimate(spec).fits()


def test_shipped_studies_as_parsed(smoke: StudySpec) -> None:
    assert smoke.sampler == SamplerSpec("tpe", {"n_startup_trials": 4})
    assert smoke.pruner == PrunerSpec("median", {"n_startup_trials": 2})
    assert smoke.data == {"seed": 0, "train": 100, "val": 20, "test": 100}
    assert [p.name for p in smoke.space] == ["hidden_size", "shift", "epochs"]
    assert smoke.space[0] == Param("hidden_size", "int", low=8, high=24)
    seed_table = load_study_file(STUDIES_DIR / "seed_table.toml")
    assert seed_table.sampler.kind == "points"
    assert seed_table.trials == len(seed_table.sampler.points) == 5  # trials default to points
    assert seed_table.repeats == 3
    pareto = load_study_file(STUDIES_DIR / "pareto.toml")
    assert pareto.directions == ["maximize", "minimize"]


# --- objective ---------------------------------------------------------------------------------

def test_train_seconds_then_val_removed(smoke: StudySpec) -> None:
    raw = _raw()
    raw["objective"] = {"metric": "train_seconds", "second": "val_removed"}
    raw["pruner"] = {"type": "none"}
    spec = parse_study(raw, SRC)
    assert spec.metrics == ("train_seconds", "val_removed")
    assert spec.directions == ["minimize", "maximize"]


def test_single_objective_default() -> None:
    raw = _raw()
    del raw["objective"]
    assert parse_study(raw, SRC).directions == ["maximize"]


def test_pruning_train_seconds_is_refused() -> None:
    raw = _raw()
    raw["objective"] = {"metric": "train_seconds"}
    assert "train_seconds" in _refused(raw, "pruner.type")


def test_pruning_two_objectives_is_refused() -> None:
    raw = _raw()
    raw["objective"] = {"metric": "val_removed", "second": "train_seconds"}
    assert "single objective" in _refused(raw, "pruner.type")


def test_metric_errors() -> None:
    raw = _raw()
    raw["objective"] = {"metric": "accuracy"}
    _refused(raw, "objective.metric")
    raw["objective"] = {"metric": "val_removed", "second": "val_removed"}
    _refused(raw, "objective.second")


# --- pruners -----------------------------------------------------------------------------------

def test_interval_steps_zero_is_refused_with_optunas_reason(smoke: StudySpec) -> None:
    raw = _raw()
    raw["pruner"]["interval_steps"] = 0
    text = _refused(raw, "pruner")
    assert "interval_steps" in text
    assert "Optuna" in text
    # construct() alone finds it too, on a spec that never saw the parser.
    bad = dataclasses.replace(smoke, pruner=PrunerSpec("median", {"interval_steps": 0}))
    assert "interval_steps" in _construct_refuses(bad, "pruner")


def test_hyperband_min_resource_above_max_resource() -> None:
    raw = _raw()
    raw["pruner"] = {"type": "hyperband", "min_resource": 50, "max_resource": 10}
    assert "max_resource" in _refused(raw, "pruner.min_resource")


@pytest.mark.parametrize("opts", [{"reduction_factor": 1}, {"min_resource": 0}])
def test_hyperband_settings_optuna_checks_late_are_refused_now(smoke: StudySpec,
                                                               opts: dict[str, Any]) -> None:
    """HyperbandPruner checks these only when a trial first reports (and then divides by zero
    in the worker); the study file must be refused before anything is stored."""
    raw = _raw()
    raw["pruner"] = {"type": "hyperband", **opts}
    _refused(raw, "pruner")
    _construct_refuses(dataclasses.replace(smoke, pruner=PrunerSpec("hyperband", opts)),
                       "pruner")


@pytest.mark.parametrize(("pruner", "key"), [
    ({"type": "median", "n_warmup_steps": 101}, "pruner.n_warmup_steps"),
    ({"type": "median", "interval_steps": -1}, "pruner.interval_steps"),
    ({"type": "hyperband", "max_resource": 1000}, "pruner.max_resource"),
    ({"type": "percentile", "percentile": 100.0}, "pruner.percentile"),
    ({"type": "percentile", "percentile": 0}, "pruner.percentile"),
    ({"type": "successive_halving", "reduction_factor": 1}, "pruner"),
    ({"type": "median", "percentile": 10.0}, "pruner.percentile"),  # not a median key
    ({"type": "bogus"}, "pruner.type"),
])
def test_pruner_refusals(pruner: dict[str, Any], key: str) -> None:
    raw = _raw()
    raw["pruner"] = pruner
    _refused(raw, key)


def test_percentile_pruner_needs_its_percentile() -> None:
    raw = _raw()
    raw["pruner"] = {"type": "percentile"}
    assert "percentile" in _refused(raw, "pruner.percentile")
    raw["pruner"] = {"type": "percentile", "percentile": 25}
    assert parse_study(raw, SRC).pruner == PrunerSpec("percentile", {"percentile": 25.0})


# --- samplers ----------------------------------------------------------------------------------

def test_grid_of_more_than_a_million_points_is_refused() -> None:
    raw = _raw()
    raw["sampler"] = {"type": "grid"}
    raw["pruner"] = {"type": "none"}
    raw["space"] = {"hidden_size": {"type": "int", "low": 1, "high": 1000},
                    "shift": {"type": "int", "low": 0, "high": 1000}}  # 1000 * 1001 points
    text = _refused(raw, "sampler.type")
    assert str(MAX_GRID) in text
    assert "1001000" in text


def test_a_small_grid_sets_the_budget() -> None:
    raw = _raw()
    raw["sampler"] = {"type": "grid"}
    del raw["trials"]
    raw["space"] = {"hidden_size": {"type": "int", "low": 8, "high": 12, "step": 2},
                    "shift": {"type": "categorical", "choices": [0, 5]}}
    spec = parse_study(raw, SRC)
    assert spec.trials == spec.budget_limit() == 6
    raw["trials"] = 7
    assert "6 distinct points" in _refused(raw, "trials")


def test_a_continuous_grid_is_refused() -> None:
    raw = _raw()
    raw["sampler"] = {"type": "grid"}
    raw["space"]["lr"] = {"type": "float", "low": 0.001, "high": 0.1}
    _refused(raw, "space.lr")


def test_points_outside_the_space() -> None:
    raw = _raw("seed_table")
    raw["sampler"]["points"][2]["hidden_size"] = 30
    assert "30" in _refused(raw, "sampler.points[2].hidden_size")
    raw = _raw("seed_table")
    del raw["sampler"]["points"][0]["shift"]
    _refused(raw, "sampler.points[0]")


def test_sampler_settings_optuna_refuses(smoke: StudySpec) -> None:
    raw = _raw()
    raw["sampler"] = {"type": "tpe", "n_ei_candidates": 0}
    _refused(raw, "sampler.n_ei_candidates")
    raw["sampler"] = {"type": "random", "n_startup_trials": 3}
    _refused(raw, "sampler.n_startup_trials")  # not a random sampler's key
    bad = dataclasses.replace(smoke, sampler=SamplerSpec("tpe", {"bogus": 1}))
    assert "Optuna" in _construct_refuses(bad, "sampler")


# --- seeds -------------------------------------------------------------------------------------

def test_negative_seed_is_refused(smoke: StudySpec) -> None:
    raw = _raw()
    raw["seed"] = -1
    _refused(raw, "seed")
    _construct_refuses(dataclasses.replace(smoke, seed=-3), "seed")


def test_negative_data_seed_is_refused() -> None:
    raw = _raw()
    raw["data"]["seed"] = -1
    _refused(raw, "data.seed")


def test_large_seeds_are_fine() -> None:
    raw = _raw()
    raw["seed"] = 2**62
    raw["data"]["seed"] = 2**62
    assert parse_study(raw, SRC).seed == 2**62


# --- configs at the corners --------------------------------------------------------------------

def test_categorical_hidden_size_of_zero() -> None:
    raw = _raw()
    raw["space"]["hidden_size"] = {"type": "categorical", "choices": [8, 0, 16]}
    text = _refused(raw, "space.hidden_size")
    assert "0" in text


def test_int_range_reaching_zero() -> None:
    raw = _raw()
    raw["space"]["epochs"] = {"type": "int", "low": 0, "high": 10}
    _refused(raw, "space.epochs")
    raw = _raw()
    raw["space"]["lr"] = {"type": "float", "low": 0.0, "high": 0.1}
    _refused(raw, "space.lr")


def test_fixed_train_settings_are_checked() -> None:
    raw = _raw()
    raw["train"] = {"batch_size": 0}
    _refused(raw, "train.batch_size")
    raw["train"] = {"lr": -0.1}
    _refused(raw, "train.lr")


def test_train_curves_of_zero() -> None:
    raw = _raw()
    raw["data"].pop("train")
    raw["space"]["train_curves"] = {"type": "categorical", "choices": [0, 100]}
    _refused(raw, "space.train_curves")
    raw = _raw()
    raw["data"]["train"] = 0
    _refused(raw, "data.train")


def test_every_value_is_checked_when_corners_are_too_many() -> None:
    """Past MAX_CORNERS corners, each value is still tried once."""
    raw = _raw()
    raw["space"] = {name: {"type": "categorical", "choices": [1, 2, 3, 4]}
                    for name in ("shift", "epochs", "batch_size", "train_curves")}
    raw["space"].update({name: {"type": "categorical", "choices": [0.1, 0.2, 0.3, 0.4]}
                         for name in ("lr", "weight_decay", "grad_clip")})
    raw["space"]["hidden_size"] = {"type": "categorical", "choices": [8, 16, 24, 0]}
    raw["data"].pop("train")
    assert MAX_CORNERS < 4**8
    _refused(raw, "space.hidden_size")
    raw["space"]["hidden_size"]["choices"][-1] = 32
    parse_study(raw, SRC)


def test_huge_integers_are_one_line_errors() -> None:
    """TOML integers may exceed float range; no OverflowError traceback."""
    raw = _raw()
    raw["data"]["val"] = 10**400
    _refused(raw, "data.val")
    raw = _raw()
    raw["train"] = {"grad_clip": 10**400}
    _refused(raw, "train.grad_clip")
    raw = _raw()
    raw["space"]["hidden_size"]["high"] = 10**400
    _refused(raw, "space.hidden_size.high")


# --- memory ------------------------------------------------------------------------------------

def test_val_of_1e11_curves_is_refused_for_memory() -> None:
    raw = _raw()
    raw["data"]["val"] = 10**11
    text = _refused(raw, "data.val")
    assert "memory" in text


def test_huge_model_is_refused_for_memory() -> None:
    raw = _raw()
    raw["space"]["hidden_size"] = {"type": "int", "low": 8, "high": 1_000_000}
    assert "memory" in _refused(raw, "space.hidden_size")


def test_huge_searched_train_curves_is_refused_for_memory() -> None:
    raw = _raw()
    raw["data"].pop("train")
    raw["space"]["train_curves"] = {"type": "categorical", "choices": [100, 10**11]}
    assert "memory" in _refused(raw, "space.train_curves")


def test_memory_estimate_names_the_largest_part(smoke: StudySpec) -> None:
    base = memory_estimate(smoke)
    assert base.bytes > 0
    big_test = dataclasses.replace(smoke, data={**smoke.data, "test": 10**7})
    worse = memory_estimate(big_test)
    assert worse.bytes > base.bytes
    assert worse.what == "data.test"
    wide = dataclasses.replace(smoke, space=(Param("hidden_size", "int", low=8, high=4096),
                                             *smoke.space[1:]))
    assert memory_estimate(wide).what == "space.hidden_size"


# --- the parser --------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "key"), [
    (lambda r: r.__setitem__("bogus", 1), "bogus"),
    (lambda r: r["sampler"].__setitem__("bogus", 1), "sampler.bogus"),
    (lambda r: r["space"]["shift"].__setitem__("bogus", 1), "space.shift.bogus"),
    (lambda r: r["data"].__setitem__("length", 100), "data.length"),
    (lambda r: r.__setitem__("trials", 0), "trials"),
    (lambda r: r.__setitem__("trials", "8"), "trials"),
    (lambda r: r.__setitem__("repeats", 21), "repeats"),
    (lambda r: r.__setitem__("name", "bad name"), "name"),
    (lambda r: r.pop("name"), "name"),
    (lambda r: r.__setitem__("space", {}), "space"),
    (lambda r: r["space"]["shift"].__setitem__("low", 11), "space.shift"),
    (lambda r: r["space"]["shift"].__setitem__("type", "float"), "space.shift.type"),
    (lambda r: r["space"]["shift"].__setitem__("low", 1.5), "space.shift.low"),
    (lambda r: r["space"]["epochs"].__setitem__("step", 4), "space.epochs.step"),
    (lambda r: r["space"].__setitem__("lr", {"type": "float", "low": 0.0, "high": 1.0,
                                             "log": True}), "space.lr.low"),
    (lambda r: r["data"].__setitem__("noise_ratio", float("nan")), "data.noise_ratio"),
    (lambda r: r["data"].__setitem__("val", True), "data.val"),
    (lambda r: r.__setitem__("train", {"hidden_size": 8}), "train.hidden_size"),
    (lambda r: r.__setitem__("description", "x" * 70_000), "description"),
])
def test_parser_refusals(change: Any, key: str) -> None:
    raw = _raw()
    change(raw)
    _refused(raw, key)


LR = {"type": "float", "low": 0.001, "high": 0.01}


@pytest.mark.parametrize(("table", "body", "key", "says"), [
    # A type that is not a string (an array, a table) is named, not a TypeError.
    ("sampler", {"type": ["tpe"]}, "sampler.type", "unknown sampler"),
    ("pruner", {"type": {"a": 1}}, "pruner.type", "unknown pruner"),
    # Optuna's HyperbandPruner passes bootstrap_count to its brackets only at the first report.
    ("pruner", {"type": "hyperband", "bootstrap_count": -1}, "pruner", "bootstrap_count"),
    # A rate this high makes Optuna compute reduction_factor ** rate at every report.
    ("pruner", {"type": "successive_halving", "min_early_stopping_rate": 10**18},
     "pruner.min_early_stopping_rate", "use at most 3"),
    ("pruner", {"type": "successive_halving", "reduction_factor": 2,
                "min_early_stopping_rate": 7}, "pruner.min_early_stopping_rate", "at most 6"),
    # 8 bytes per candidate and past trial, per suggestion: 1e9 was 7.45 GiB.
    ("sampler", {"type": "tpe", "n_ei_candidates": 10**9}, "sampler.n_ei_candidates", "GiB"),
])
def test_settings_that_fail_or_exhaust_workers_later(table: str, body: dict[str, Any], key: str,
                                                     says: str) -> None:
    raw = _raw()
    raw[table] = body
    assert says in _refused(raw, key)


@pytest.mark.parametrize(("step", "says"), [
    (5e-324, "more than 1e+12 values"),  # (high - low) / step overflows to inf
    (1e-300, "more than 1e+12 values"),  # Optuna's decimal arithmetic fails on the step
    (1.0, "larger than high - low"),  # Optuna would quietly search low only
    (0.004, "lower high from 0.01 to 0.009"),  # Optuna would quietly narrow the range
])
def test_float_steps_optuna_would_reject_or_narrow(step: float, says: str) -> None:
    raw = _raw()
    raw["space"]["lr"] = {**LR, "step": step}
    assert says in _refused(raw, "space.lr.step")


@pytest.mark.parametrize(("low", "high", "step", "count"), [
    (0.001, 0.01, 0.001, 10),
    (0.02, 0.03, 0.01, 2),  # (high - low) / step is 0.999... in floats, 1 in the file's decimals
    (0.1, 0.7, 0.3, 3),
])
def test_steps_that_divide_the_range_exactly_are_kept(low: float, high: float, step: float,
                                                      count: int) -> None:
    raw = _raw()
    raw["space"]["lr"] = {"type": "float", "low": low, "high": high, "step": step}
    lr = next(p for p in parse_study(raw, SRC).space if p.name == "lr")
    assert (lr.low, lr.high, lr.step, lr.count()) == (low, high, step, count)


def test_a_grid_over_a_huge_int_range_is_sized_without_listing_it() -> None:
    raw = _raw()
    raw["sampler"] = {"type": "grid"}
    raw["space"] = {"hidden_size": {"type": "int", "low": 1, "high": 2**53}}
    assert "9007199254740992 points" in _refused(raw, "sampler.type")


def test_a_pruner_that_passes_construction_is_also_run() -> None:
    """The probe reports and asks should_prune as workers do, on an in-memory study."""
    PrunerSpec("hyperband", {"min_resource": 10, "reduction_factor": 3}).probe()
    PrunerSpec("successive_halving", {"min_early_stopping_rate": 3}).probe()
    with pytest.raises(ValueError, match="bootstrap_count"):
        PrunerSpec("hyperband", {"bootstrap_count": -1}).probe()


def test_fresh_curves_are_a_data_option() -> None:
    raw = _raw()
    raw["data"]["fresh"] = True
    spec = parse_study(raw, SRC)
    assert spec.data_config({}).fresh
    assert not parse_study(_raw(), SRC).data_config({}).fresh  # the exercise's default
    raw["data"]["fresh"] = 1
    assert "true or false" in _refused(raw, "data.fresh")


def test_fresh_curves_are_refused_for_a_data_file(tmp_path: Path) -> None:
    np.save(tmp_path / "signals.npy", np.random.default_rng(0).normal(size=(40, 30)))
    raw = _raw()
    raw["data"] = {"file": "signals.npy", "fresh": True}
    with pytest.raises(StudyFileError) as info:
        parse_study(raw, SRC, base=tmp_path)
    assert _check_line(info.value, "data.fresh")


def test_parse_does_not_modify_the_raw_data() -> None:
    raw = _raw()
    before = copy.deepcopy(raw)
    parse_study(raw, SRC)
    assert raw == before


# --- load_study_file ---------------------------------------------------------------------------

def test_load_names_the_file(tmp_path: Path) -> None:
    raw = _raw()
    raw["pruner"]["interval_steps"] = 0
    path = tmp_path / "study.toml"
    path.write_text(tomli_w.dumps(raw))
    with pytest.raises(StudyFileError, match=rf"^{path}: pruner: "):
        load_study_file(path)


def test_load_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(StudyFileError, match="not found"):
        load_study_file(tmp_path / "none.toml")
    with pytest.raises(StudyFileError, match="not found"):
        load_study_file(tmp_path)  # a directory
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(StudyFileError, match="not valid TOML"):
        load_study_file(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(StudyFileError):
        load_study_file(binary)


def test_load_accepts_a_string_path() -> None:
    assert load_study_file(str(STUDIES_DIR / "smoke.toml")).name == "smoke"


def test_reading_every_study_imports_no_torch() -> None:
    """The core is torch-free: validating a study file must not cost a torch import."""
    code = ("import sys\n"
            "from pathlib import Path\n"
            "import hpo.env, hpo.task.config, hpo.task.curves, hpo.task.metric, hpo.resources\n"
            "import hpo.paths\n"
            "from hpo.study.parse import load_study_file\n"
            f"for p in sorted(Path({str(STUDIES_DIR)!r}).glob('*.toml')):\n"
            "    load_study_file(p).to_dict()\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout
