"""The contract of hpo.results.sqlite_reader, which reads Optuna's SQLite tables without Optuna:
on generated studies it answers exactly as the Optuna path (hpo.results.optuna_reader) does, it
assumes the table layout Optuna writes, it never writes, and whatever it cannot answer it leaves
to Optuna (None)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sqlite3
import uuid
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial

from hpo.results import optuna_reader, sqlite_reader
from hpo.results.records import SUMMARY_ATTRS, strict
from hpo.store import optuna_api
from hpo.store.attrs import BUDGET_ATTR, RESCORE_ATTR, SPEC_ATTR
from hpo.store.engines import open_storage
from hpo.study.metrics import directions as metric_directions
from hpo.study.parse import load_study_file

SPEC = load_study_file(Path(__file__).resolve().parents[2] / "studies" / "smoke.toml").to_dict()

DISTRIBUTIONS: dict[str, BaseDistribution] = {
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "hidden_size": IntDistribution(2, 64),
    "shift": IntDistribution(1, 31, step=2),
    "kind": CategoricalDistribution(["lstm", 3, 2.5, None, True]),
    "dropout": FloatDistribution(0.0, 0.5, step=0.1),
}
LABELS = ["% noise removed on validation", "training seconds per seed"]
VALUES = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from(
    [math.inf, -math.inf, 0.0, 42.0]))
ATTR_VALUES = st.one_of(st.integers(-10, 10**6), st.floats(allow_nan=False),
                        st.text(max_size=8), st.lists(st.integers(0, 9), max_size=3), st.none())


@st.composite
def studies(draw: st.DrawFn) -> dict[str, Any]:
    n_obj = draw(st.sampled_from([1, 1, 2]))
    trials = []
    for _ in range(draw(st.integers(0, 12))):
        state = draw(st.sampled_from([TrialState.COMPLETE, TrialState.COMPLETE,
                                      TrialState.PRUNED, TrialState.FAIL, TrialState.WAITING]))
        names = draw(st.lists(st.sampled_from(sorted(DISTRIBUTIONS)), unique=True))
        params = {n: draw(_param(n)) for n in names}
        attrs = draw(st.dictionaries(st.sampled_from([*SUMMARY_ATTRS, "val_curve", "other"]),
                                     ATTR_VALUES, max_size=4))
        values = ([draw(VALUES) for _ in range(n_obj)] if state == TrialState.COMPLETE
                  else None)
        trials.append((state, values, params, attrs))
    return {"directions": draw(st.lists(st.sampled_from(["maximize", "minimize"]),
                                        min_size=n_obj, max_size=n_obj)),
            "trials": trials, "hpo": draw(st.booleans()),
            # Optuna's metric names: set, absent (an older study), or not one per objective.
            "names": draw(st.sampled_from(["named", "named", "none", "damaged"])),
            "rescored": draw(st.booleans()), "budget": draw(st.integers(1, 100))}


def _param(name: str) -> st.SearchStrategy[Any]:
    d = DISTRIBUTIONS[name]
    if isinstance(d, CategoricalDistribution):
        return st.sampled_from(d.choices)
    if isinstance(d, IntDistribution):
        low, step = d.low, d.step
        return st.integers(d.low, d.high).filter(lambda v: (v - low) % step == 0)
    assert isinstance(d, FloatDistribution)
    if d.step is not None:
        return st.sampled_from([0.0, 0.1, 0.2, 0.5])
    return st.floats(d.low, d.high)


def make(storage: optuna.storages.BaseStorage, case: dict[str, Any]) -> str:
    name = f"lr-{uuid.uuid4().hex[:10]}"
    if case["hpo"]:  # an hpo study's directions are its metrics' (others are damage)
        case = {**case, "directions": metric_directions(
            ["val_removed", "train_seconds"][:len(case["directions"])])}
    study = optuna.create_study(study_name=name, storage=storage, directions=case["directions"])
    if case.get("names") == "named":
        with warnings.catch_warnings():  # experimental in Optuna; hpo's studies all call it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(LABELS[:len(case["directions"])])
    elif case.get("names") == "damaged":
        storage.set_study_system_attr(optuna_api.study_id(study), sqlite_reader.METRIC_NAMES_KEY,
                                      LABELS * 2)
    if case["hpo"]:
        metrics = ["val_removed", "train_seconds"][:len(case["directions"])]
        study.set_user_attr(SPEC_ATTR, {**SPEC, "name": name, "metrics": metrics})
        study.set_user_attr(BUDGET_ATTR, case["budget"])
    for state, values, params, attrs in case["trials"]:
        study.add_trial(create_trial(state=state, values=values, params=params,
                                     distributions={k: DISTRIBUTIONS[k] for k in params},
                                     user_attrs=attrs))
    if case["rescored"] and case["trials"]:
        study.set_user_attr(RESCORE_ATTR, {"0": {"number": 0, "val_mean": 50.0, "val_std": 1.5,
                                                 "seeds": 3, "val_curves": 500}})
    return name


def as_json(answer: Any) -> str:
    """The JSON a command prints of an answer: equal dicts may still differ in key order."""
    return json.dumps(strict(answer), allow_nan=False)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, optuna.storages.BaseStorage]:
    url = f"sqlite:///{tmp_path_factory.mktemp('lightread') / 'hpo.db'}"
    return url, open_storage(url, create=True, heartbeat=False)


@given(case=studies(), top=st.sampled_from([1, 2, 5, 100]))
@settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_answers_as_the_optuna_path(db: tuple[str, Any], case: dict[str, Any],
                                    top: int) -> None:
    url, storage = db
    name = make(storage, case)
    rows = sqlite_reader.studies(url)
    assert as_json(rows) == as_json(optuna_reader.studies(storage))  # key order too
    n = len(case["directions"])
    names = (LABELS[:n] if case["names"] == "named" else [str(i) for i in range(n)])
    row = next(r for r in rows if r["name"] == name)
    assert row["metric_names"] == names and row["made_by_hpo"] == case["hpo"]
    assert row["best_values"] is None or list(row["best_values"]) == names[:1]
    if case["hpo"]:
        light = sqlite_reader.best(url, name, top)
        assert light is not None, "the reader fell back on a study it should answer"
        assert as_json(light) == as_json(optuna_reader.best_records(name, storage, top))
        assert light[1] == names and all(list(r["values"]) == names for r in light[2])
    else:
        assert sqlite_reader.best(url, name, top) is None  # Optuna's path says "not created by hpo"


def test_the_layout_is_the_one_optuna_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    optuna.storages.RDBStorage(url)  # Optuna's own tables, as a new storage gets them
    with sqlite3.connect(tmp_path / "fresh.db") as con:
        (revision,) = con.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision == sqlite_reader.SCHEMA_REVISION, (
        f"Optuna's schema is now {revision}: check hpo.results.sqlite_reader's queries against "
        "it, then update SCHEMA_REVISION")
    tables = optuna_api.models().BaseModel.metadata.tables
    for table, columns in sqlite_reader.COLUMNS.items():
        if table == "alembic_version":
            continue  # read above
        assert table in tables, f"Optuna has no table {table}"
        missing = set(columns) - {c.name for c in tables[table].columns}
        assert not missing, f"Optuna's {table} lost {sorted(missing)}"
    m = optuna_api.models()
    # The stored enum names the reader compares with.
    assert set(sqlite_reader.STATES) <= {s.name for s in TrialState}
    assert list(optuna_api.metric_names_attrs(["x"])) == [sqlite_reader.METRIC_NAMES_KEY]
    kinds = {k.name for k in m.TrialValueModel.TrialValueType}
    assert set(sqlite_reader.INFINITY) | {"FINITE"} == kinds
    assert {d.name for d in optuna.study.StudyDirection} >= {"MAXIMIZE", "MINIMIZE"}


def test_every_distribution_optuna_stores_is_read(db: tuple[str, Any]) -> None:
    url, storage = db
    name = make(storage, {"directions": ["maximize"], "hpo": True, "rescored": False,
                          "budget": 3, "trials": [(TrialState.COMPLETE, [1.0], {
                              "lr": 0.01, "hidden_size": 7, "shift": 5, "kind": None,
                              "dropout": 0.2}, {})]})
    found = sqlite_reader.best(url, name, 1)
    assert found is not None
    params = found[2][0]["params"]
    assert params == {"dropout": 0.2, "hidden_size": 7, "kind": None, "lr": 0.01, "shift": 5}
    slow = optuna_reader.best_records(name, storage, 1)[2][0]["params"]
    assert list(params) == list(slow) == ["lr", "hidden_size", "shift", "kind", "dropout"]
    assert type(params["hidden_size"]) is int and type(params["lr"]) is float


def _digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.parent.glob(path.name + "*"))}


def test_it_never_writes_and_leaves_what_it_cannot_answer(tmp_path: Path) -> None:
    path = tmp_path / "hpo.db"
    url = f"sqlite:///{path}"
    storage = open_storage(url, create=True, heartbeat=False)
    name = make(storage, {"directions": ["minimize"], "hpo": True, "rescored": True,
                          "budget": 5, "trials": [(TrialState.COMPLETE, [2.0], {}, {})]})
    storage.engine.dispose()
    before = _digest(path)
    assert sqlite_reader.studies(url) is not None and sqlite_reader.best(url, name, 3) is not None
    assert _digest(path) == before  # no byte written, no -wal or -shm left
    assert sqlite_reader.best(url, "nope", 1) is None  # Optuna's path lists the names
    for other in (f"{url}?timeout=5", "sqlite:///" + str(tmp_path / "missing.db"),
                  f"sqlite:///{tmp_path}", "postgresql://u@127.0.0.1:1/db", "sqlite://"):
        assert sqlite_reader.studies(other) is None, other
    old = tmp_path / "old.db"
    shutil.copy(path, old)
    with sqlite3.connect(old) as con:
        con.execute("UPDATE alembic_version SET version_num = 'v9.9.9'")
    assert sqlite_reader.studies(f"sqlite:///{old}") is None  # a schema it does not know
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    assert sqlite_reader.studies(f"sqlite:///{junk}") is None
