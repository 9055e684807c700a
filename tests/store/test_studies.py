"""hpo.store.studies as a unit, over every backend: a study is created complete (spec, budget, note,
queued points) or not at all, whatever step fails; budgets from the file or --trials are applied
or reported, never silently ignored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from optuna.trial import TrialState
from optuna_dashboard import get_note
from typer.testing import CliRunner

import hpo.study.note
from hpo.cli import app
from hpo.store.attrs import BUDGET_ATTR, SPEC_ATTR, SUMMARY_ATTR
from hpo.store.engines import open_storage, study_names
from hpo.store.optuna_api import HeartbeatStorage
from hpo.store.studies import ensure_study, load
from hpo.store.urls import parse, sqlite_path
from hpo.study.parse import load_study_file
from tests.support.snapshots import sqlite_snapshot

POINTS = {"sampler": {"type": "points", "points": [
    {"hidden_size": 4, "shift": 0, "epochs": 2}, {"hidden_size": 5, "shift": 1, "epochs": 3}]},
    "trials": None}


def snapshot(url: str) -> Any:
    path = sqlite_path(parse(url))
    if path is not None:
        return sqlite_snapshot(path.parent)
    engine = sqlalchemy.create_engine(parse(url))
    try:
        with engine.connect() as con:
            return {t: con.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(
                        sqlalchemy.table(t))).scalar_one()
                    for t in sqlalchemy.inspect(con).get_table_names()}
    finally:
        engine.dispose()


def _fail_note(*args: object, **kwargs: object) -> str:
    raise MemoryError("injected: the note's baselines could not be computed")


def _fail_in_transaction(*args: object, **kwargs: object) -> None:
    raise RuntimeError("injected: the connection broke after the study row was written")


@pytest.mark.parametrize(("where", "fault", "raises"), [
    (hpo.study.note, "study_note", MemoryError),
    (HeartbeatStorage, "_get_prepared_new_trial", RuntimeError),
])
def test_a_failed_creation_leaves_the_storage_as_it_was(
        storage_url: str, study_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
        where: Any, fault: str, raises: type[Exception]) -> None:
    storage = open_storage(storage_url, create=True)
    ensure_study(load_study_file(study_file()), storage)  # some other study is already there
    spec = load_study_file(study_file(**POINTS))
    before = snapshot(storage_url)
    with monkeypatch.context() as m:
        m.setattr(where, fault, _fail_note if fault == "study_note" else _fail_in_transaction)
        with pytest.raises(raises, match="injected"):
            ensure_study(spec, storage)
    assert spec.name not in study_names(storage)
    assert snapshot(storage_url) == before
    # Nothing half-made blocks the next try: the same file now creates the whole study.
    c = ensure_study(spec, storage)
    assert c.created and c.budget == 2
    study, stored = load(spec.name, open_storage(storage_url))
    assert stored == spec and study.user_attrs[BUDGET_ATTR] == 2
    assert spec.name in study.user_attrs[SUMMARY_ATTR] or "searching" in study.user_attrs[
        SUMMARY_ATTR]
    assert get_note(study).startswith(f"# {spec.name}")
    assert [t.state for t in study.trials] == [TrialState.WAITING] * 2


def test_a_failed_create_on_a_new_sqlite_path_leaves_no_file(
        tmp_path: Path, study_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hpo.study.note, "study_note", _fail_note)
    db = tmp_path / "new" / "dir" / "hpo.db"
    with pytest.raises(MemoryError):
        CliRunner().invoke(app, ["create", str(study_file()), "--storage", f"sqlite:///{db}"],
                           catch_exceptions=False)
    assert not (tmp_path / "new").exists()


def test_budgets_are_applied_or_reported(storage_url: str, study_file: Callable[..., Path]
                                         ) -> None:
    path = study_file(trials=8)
    name = load_study_file(path).name

    def create(*extra: str) -> tuple[int, str]:
        r = CliRunner().invoke(app, ["create", str(path), "--storage", storage_url, *extra])
        assert r.exit_code == 0, r.output
        study, _ = load(name, open_storage(storage_url, heartbeat=False))
        return study.user_attrs[BUDGET_ATTR], r.stderr

    assert create() == (8, "")
    text = path.read_text().replace("trials = 8", "trials = 10")
    assert "trials = 10" in text
    path.write_text(text)
    budget, said = create()  # the file's edited budget is applied, and said
    assert budget == 10 and "budget changed from 8 to 10 trials" in said
    study, spec = load(name, open_storage(storage_url, heartbeat=False))
    assert study.user_attrs[SPEC_ATTR]["trials"] == 10 and spec.trials == 10
    budget, said = create("--trials", "12")
    assert budget == 12 and "from 10 to 12" in said
    budget, said = create()  # the file did not change since: --trials' budget stays, reported
    assert budget == 12 and "stays 12" in said and "the file says 10" in said


def test_interrupted_trials_are_counted_apart_from_failed_ones(
        storage_url: str, study_file: Callable[..., Path]) -> None:
    """As `hpo studies` counts them: the search's progress shows `failed` without the trials a
    Ctrl-C stopped (they are re-queued, not failures)."""
    from hpo.run.supervisor import _failures
    from hpo.store.attrs import FAIL_REASON_ATTR, INTERRUPTED
    from hpo.store.studies import counts, interrupted_count

    spec = load_study_file(study_file())
    study = ensure_study(spec, open_storage(storage_url, create=True, heartbeat=False)).study
    for reason in (f"{INTERRUPTED} by SIGINT", "diverged", f"{INTERRUPTED} by SIGTERM"):
        t = study.ask()
        t.set_user_attr(FAIL_REASON_ATTR, reason)
        study.tell(t, state=TrialState.FAIL)
    c = counts(study)
    assert (c.failed, interrupted_count(study)) == (3, 2)
    assert _failures(c, interrupted_count(study)) == {"failed": 1, "interrupted": "  interrupted 2"}
