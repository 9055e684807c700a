"""hpo.study.spec: StudySpec and Param, the definition storage keeps.

Round trips (to_dict/from_dict, also through JSON) for every studies/*.toml, a spec dict as an
older version stored it, the fingerprint (all but trials and description), the data and train
configs built from a spec and a trial's params, Param.grid()/corners(), directions and budgets.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from hpo.study.parse import load_study_file
from hpo.study.spec import DATA_FIELDS, METRICS, TUNABLE, Param, StudySpec
from hpo.study.strategies import PrunerSpec, SamplerSpec
from hpo.task.config import ConfigValueError, TrainConfig
from hpo.task.curves import DataConfig

STUDIES = sorted((Path(__file__).resolve().parents[2] / "studies").glob("*.toml"))

# The stored form of a study as the release before SamplerSpec/PrunerSpec wrote it: `asdict` of
# a spec whose sampler and pruner were plain dicts, through JSON (lists, not tuples).
OLD_STORED: dict[str, Any] = {
    "name": "seed_table", "trials": 5, "seed": 0, "repeats": 3,
    "description": "The report's five hand-tuned configurations, 3 seeds each.",
    "metrics": ["val_removed"],
    "sampler": {"type": "points", "points": [
        {"hidden_size": 40, "shift": 10, "epochs": 100},
        {"hidden_size": 20, "shift": 3, "epochs": 200}]},
    "pruner": {"type": "none"},
    "space": [
        {"name": "hidden_size", "type": "categorical", "low": None, "high": None, "log": False,
         "step": None, "choices": [20, 40]},
        {"name": "shift", "type": "categorical", "low": None, "high": None, "log": False,
         "step": None, "choices": [3, 10]},
        {"name": "epochs", "type": "int", "low": 100, "high": 200, "log": False, "step": 100,
         "choices": []}],
    "train": {}, "data": {"seed": 0},
}
OLD_STORED_TPE: dict[str, Any] = {
    "name": "noise_removal", "trials": 40, "seed": 0, "repeats": 2, "description": "",
    "metrics": ["val_removed"],
    "sampler": {"type": "tpe", "n_startup_trials": 10},
    "pruner": {"type": "median", "n_startup_trials": 8, "n_warmup_steps": 30},
    "space": [{"name": "hidden_size", "type": "int", "low": 8, "high": 128, "log": True,
               "step": None, "choices": []},
              {"name": "lr", "type": "float", "low": 0.001, "high": 0.1, "log": True,
               "step": None, "choices": []}],
    "train": {"epochs": 50}, "data": {"seed": 0, "train": 200, "val": 50, "test": 1000},
}


def _json(d: Any) -> Any:
    return json.loads(json.dumps(d))


def _spec(**kw: Any) -> StudySpec:
    base: dict[str, Any] = {"name": "t", "trials": 4, "space": (
        Param("hidden_size", "int", low=8, high=16), Param("lr", "float", low=0.001, high=0.1,
                                                           log=True))}
    return StudySpec(**{**base, **kw})


def test_studies_exist() -> None:
    assert len(STUDIES) >= 6
    assert "smoke.toml" in {p.name for p in STUDIES}


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_round_trip_every_study_file(path: Path) -> None:
    spec = load_study_file(path)
    d = spec.to_dict()
    assert StudySpec.from_dict(d) == spec
    stored = _json(d)  # what storage keeps and gives back
    again = StudySpec.from_dict(stored)
    assert again == spec
    assert _json(again.to_dict()) == stored
    assert again.fingerprint() == spec.fingerprint()
    assert isinstance(again.sampler, SamplerSpec)
    assert isinstance(again.pruner, PrunerSpec)
    assert again.budget_limit() == spec.budget_limit()


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_stored_sampler_and_pruner_are_plain_dicts(path: Path) -> None:
    d = load_study_file(path).to_dict()
    assert isinstance(d["sampler"], dict)
    assert isinstance(d["pruner"], dict)
    assert isinstance(d["sampler"]["type"], str)
    assert isinstance(d["pruner"]["type"], str)
    assert set(d) == {f.name for f in dataclasses.fields(StudySpec)}
    json.dumps(d)  # plain data throughout


@pytest.mark.parametrize("old", [OLD_STORED, OLD_STORED_TPE], ids=["points", "tpe"])
def test_a_spec_stored_by_an_older_version_still_loads(old: dict[str, Any]) -> None:
    spec = StudySpec.from_dict(old)
    assert spec.sampler == SamplerSpec.from_dict(old["sampler"])
    assert spec.pruner == PrunerSpec.from_dict(old["pruner"])
    assert [p.name for p in spec.space] == [p["name"] for p in old["space"]]
    assert spec.metrics == ("val_removed",)
    # The stored format has not changed: writing it back gives the same plain data.
    assert _json(spec.to_dict()) == old
    spec.sampler.build(0, spec.space, spec.seed)
    spec.pruner.build()


def test_old_points_spec_fields() -> None:
    spec = StudySpec.from_dict(OLD_STORED)
    assert spec.sampler.kind == "points"
    assert spec.sampler.options == {}
    assert spec.sampler.points[1] == {"hidden_size": 20, "shift": 3, "epochs": 200}
    assert spec.budget_limit() == 2
    assert spec.space[0].choices == (20, 40)


def test_from_dict_defaults_missing_sampler_and_pruner() -> None:
    d = {k: v for k, v in OLD_STORED_TPE.items() if k not in ("sampler", "pruner")}
    spec = StudySpec.from_dict(d)
    assert spec.sampler == SamplerSpec("tpe")
    assert spec.pruner == PrunerSpec("none")


def test_from_dict_does_not_modify_its_argument() -> None:
    d = _json(OLD_STORED)
    StudySpec.from_dict(d)
    assert d == OLD_STORED


# --- fingerprint -------------------------------------------------------------------------------

def test_fingerprint_ignores_trials_and_description() -> None:
    spec = _spec()
    other = dataclasses.replace(spec, trials=400, description="a different text")
    assert other.fingerprint() == spec.fingerprint()
    assert "trials" not in spec.fingerprint()
    assert "description" not in spec.fingerprint()


@pytest.mark.parametrize("change", [
    {"seed": 1}, {"repeats": 2}, {"name": "u"}, {"metrics": ("train_seconds",)},
    {"sampler": SamplerSpec("random")}, {"sampler": SamplerSpec("tpe", {"n_startup_trials": 3})},
    {"pruner": PrunerSpec("median")}, {"train": {"epochs": 5}}, {"data": {"val": 10}},
    {"space": (Param("hidden_size", "int", low=8, high=17),)},
])
def test_fingerprint_sees_everything_else(change: dict[str, Any]) -> None:
    spec = _spec()
    assert dataclasses.replace(spec, **change).fingerprint() != spec.fingerprint()


def test_fingerprint_survives_json() -> None:
    spec = _spec(sampler=SamplerSpec("tpe", {"n_startup_trials": 3}), train={"epochs": 5})
    assert _json(StudySpec.from_dict(_json(spec.to_dict())).fingerprint()) == _json(
        spec.fingerprint())


# --- configs -----------------------------------------------------------------------------------

def test_data_config_maps_study_keys_to_fields() -> None:
    spec = _spec(data={"seed": 3, "train": 7, "val": 5, "test": 9, "noise_ratio": 0.1})
    assert spec.data_config() == DataConfig(seed=3, n_train=7, n_val=5, n_test=9,
                                            noise_ratio=0.1)
    assert set(DATA_FIELDS.values()) <= {f.name for f in dataclasses.fields(DataConfig)}


def test_data_config_defaults() -> None:
    assert _spec().data_config() == DataConfig()
    assert _spec().data_config({}) == DataConfig()


def test_train_curves_sets_n_train() -> None:
    spec = _spec(data={"train": 7, "val": 5})
    cfg = spec.data_config({"hidden_size": 8, "train_curves": 123})
    assert cfg.n_train == 123
    assert cfg.n_val == 5
    assert spec.data_config({"hidden_size": 8}).n_train == 7


def test_train_config_merges_fixed_and_searched() -> None:
    spec = _spec(train={"epochs": 5, "lr": 0.02})
    cfg = spec.train_config({"hidden_size": 12, "lr": 0.005, "train_curves": 100}, seed=7,
                            threads=2)
    assert cfg == TrainConfig(hidden_size=12, epochs=5, lr=0.005, seed=7, threads=2)


def test_train_config_is_validated() -> None:
    with pytest.raises(ConfigValueError) as info:
        _spec().train_config({"hidden_size": 0}, seed=0)
    assert info.value.field == "hidden_size"
    with pytest.raises(ConfigValueError) as info:
        _spec(data={"val": 0}).data_config()
    assert info.value.field == "n_val"


def test_tunable_parameters_are_train_fields_or_train_curves() -> None:
    train_fields = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for name, kind in TUNABLE.items():
        if name == "train_curves":
            continue
        assert train_fields[name] == kind.__name__, name


# --- metrics, budgets --------------------------------------------------------------------------

def test_directions() -> None:
    assert _spec().directions == ["maximize"]
    assert _spec(metrics=("val_removed", "train_seconds")).directions == ["maximize", "minimize"]
    assert _spec(metrics=("train_seconds", "val_removed")).directions == ["minimize", "maximize"]
    assert set(METRICS.values()) == {"maximize", "minimize"}


def test_budget_limit_and_grid_values() -> None:
    space = (Param("hidden_size", "int", low=8, high=12, step=2),
             Param("shift", "categorical", choices=(0, 5)))
    spec = _spec(space=space, sampler=SamplerSpec("grid"))
    assert spec.budget_limit() == 6
    assert spec.grid_values() == {"hidden_size": [8, 10, 12], "shift": [0, 5]}
    assert _spec().budget_limit() is None


# --- Param -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("param", "grid"), [
    (Param("shift", "int", low=0, high=3), [0, 1, 2, 3]),
    (Param("epochs", "int", low=20, high=100, step=20), [20, 40, 60, 80, 100]),
    (Param("epochs", "int", low=5, high=5), [5]),
    (Param("hidden_size", "int", low=8, high=128, log=True), None),
    (Param("lr", "float", low=0.001, high=0.1), None),
    (Param("lr", "float", low=0.001, high=0.1, log=True), None),
    (Param("lr", "float", low=0.1, high=0.5, step=0.1), [0.1, 0.2, 0.3, 0.4, 0.5]),
    (Param("grad_clip", "float", low=0.0, high=1.0, step=0.25), [0.0, 0.25, 0.5, 0.75, 1.0]),
    (Param("batch_size", "categorical", choices=(10, 20, 50)), [10, 20, 50]),
])
def test_param_grid(param: Param, grid: list[Any] | None) -> None:
    assert param.grid() == grid


def test_float_grid_has_no_rounding_noise() -> None:
    grid = Param("lr", "float", low=0.0, high=1.0, step=0.1).grid()
    assert grid is not None
    assert grid[3] == 0.3
    assert grid[7] == 0.7
    assert len(grid) == 11


@pytest.mark.parametrize(("param", "corners"), [
    (Param("shift", "int", low=0, high=30), [0, 30]),
    (Param("epochs", "int", low=20, high=400, step=20), [20, 400]),
    (Param("hidden_size", "int", low=8, high=128, log=True), [8, 128]),
    (Param("lr", "float", low=0.002, high=0.03, log=True), [0.002, 0.03]),
    (Param("shift", "int", low=4, high=4), [4]),
    (Param("batch_size", "categorical", choices=(10, 20, 50)), [10, 20, 50]),
])
def test_param_corners(param: Param, corners: list[Any]) -> None:
    assert param.corners() == corners
