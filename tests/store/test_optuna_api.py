"""The contract of hpo.store.optuna_api, the one module that uses Optuna's private API, over every
storage backend. If an Optuna (or optuna-dashboard) release renames or changes one of these,
this fails naming the call, before any user meets it somewhere unexpected."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial
from optuna_dashboard import get_note

from hpo.store import optuna_api, queries
from hpo.store.engines import open_storage


def test_every_private_name_still_exists() -> None:
    assert optuna_api.missing_private_names() == []


def _name() -> str:
    return f"api-{uuid.uuid4().hex[:10]}"


def test_ids_and_unwrapping(storage_url: str, tmp_path: Path) -> None:
    storage = open_storage(storage_url, create=True, heartbeat=False)
    study = optuna.create_study(study_name=_name(), storage=storage)
    trial = study.ask()
    assert optuna_api.rdb_of(optuna_api.storage_of(study)) is storage  # through Optuna's cache
    assert optuna_api.study_id(study) == storage.get_study_id_from_name(study.study_name)
    assert storage.get_trial(optuna_api.trial_id(trial)).number == trial.number
    frozen = study.trials[0]
    assert optuna_api.trial_id(frozen) == optuna_api.trial_id(trial)
    summary = next(s for s in optuna.get_all_study_summaries(storage)
                   if s.study_name == study.study_name)
    assert optuna_api.summary_id(summary) == optuna_api.study_id(study)
    assert optuna_api.rdb_of(optuna.storages.InMemoryStorage()) is None
    store = optuna.artifacts.FileSystemArtifactStore(tmp_path)
    assert optuna_api.artifact_dir(store) == tmp_path


def test_user_attrs_in_one_transaction(storage_url: str) -> None:
    storage = open_storage(storage_url, create=True, heartbeat=False)
    study = optuna.create_study(study_name=_name(), storage=storage)
    trial = study.ask()
    trial.set_user_attr("n", 1)
    assert hasattr(trial, "_cached_frozen_trial"), "Trial._cached_frozen_trial is gone"
    optuna_api.set_trial_user_attrs(trial, {"n": 2, "curve": [1.5, 2.5], "who": "x"})
    assert trial.user_attrs == {"n": 2, "curve": [1.5, 2.5], "who": "x"}  # the cached copy
    assert storage.get_trial(optuna_api.trial_id(trial)).user_attrs == trial.user_attrs
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        optuna_api.set_trial_user_attrs(trial, {"late": 1})


def test_atomic_creation_writes_everything_or_nothing(storage_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    storage = open_storage(storage_url, create=True, heartbeat=False)
    name = _name()
    waiting = [create_trial(state=TrialState.WAITING, system_attrs={"fixed_params": {"x": i}})
               for i in range(3)]
    optuna_api.create_study_atomically(
        storage, name, [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE], {"a": {"b": [1]}},
        optuna_api.note_attrs("# a note\n" + "x" * 5000), waiting)
    study = optuna.load_study(study_name=name, storage=storage)
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert study.user_attrs == {"a": {"b": [1]}}
    assert get_note(study) == "# a note\n" + "x" * 5000  # read back by optuna-dashboard itself
    assert [(t.number, t.state, t.system_attrs["fixed_params"]) for t in study.trials] == [
        (i, TrialState.WAITING, {"x": i}) for i in range(3)]
    with pytest.raises(optuna.exceptions.DuplicatedStudyError):
        optuna_api.create_study_atomically(storage, name, [StudyDirection.MINIMIZE], {}, {})

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected after the study row was flushed")

    other = _name()
    monkeypatch.setattr(type(storage), "_get_prepared_new_trial", broken)
    with pytest.raises(RuntimeError, match="injected"):
        optuna_api.create_study_atomically(storage, other, [StudyDirection.MINIMIZE],
                                           {"spec": 1}, {}, waiting)
    assert other not in [s.study_name for s in storage.get_all_studies()]


def test_stale_trials_and_heartbeats(storage_url: str) -> None:
    storage = open_storage(storage_url, create=True, heartbeat=True)
    study = optuna.create_study(study_name=_name(), storage=storage)
    fresh, stale, plain = study.ask(), study.ask(), study.ask()
    m = optuna_api.models()
    with storage.engine.begin() as con:
        con.execute(sqlalchemy.delete(m.TrialHeartbeatModel.__table__).where(
            m.TrialHeartbeatModel.trial_id == optuna_api.trial_id(plain)))
        assert storage.grace_period is not None
        old = datetime.now() - timedelta(seconds=storage.grace_period + 3600)
        con.execute(sqlalchemy.update(m.TrialHeartbeatModel.__table__).where(
            m.TrialHeartbeatModel.trial_id == optuna_api.trial_id(stale)).values(heartbeat=old))
    time.sleep(0.01)
    sid = optuna_api.study_id(study)
    assert optuna_api.stale_trial_ids(storage, sid) == [optuna_api.trial_id(stale)]
    assert optuna_api.has_heartbeat(storage, optuna_api.trial_id(fresh))
    assert not optuna_api.has_heartbeat(storage, optuna_api.trial_id(plain))


def test_state_counts_match_the_trials(storage_url: str) -> None:
    storage = open_storage(storage_url, create=True, heartbeat=False)
    study = optuna.create_study(study_name=_name(), storage=storage)
    other = optuna.create_study(study_name=_name(), storage=storage)
    other.ask()  # another study's trials are not counted
    for state, n in ((TrialState.COMPLETE, 3), (TrialState.PRUNED, 2), (TrialState.FAIL, 1)):
        for _ in range(n):
            t = study.ask()
            study.tell(t, 1.0 if state == TrialState.COMPLETE else None, state=state)
    study.ask()
    study.enqueue_trial({})
    got = queries.state_counts(storage, optuna_api.study_id(study))
    want = {s: sum(t.state == s for t in study.get_trials()) for s in TrialState}
    assert got == want
    assert (got[TrialState.COMPLETE], got[TrialState.RUNNING], got[TrialState.WAITING]) == (3, 1, 1)


def test_models_carry_the_columns_queries_use() -> None:
    m = optuna_api.models()
    for model, cols in ((m.TrialModel, ("trial_id", "number", "study_id", "state")),
                        (m.TrialValueModel, ("trial_id", "objective", "value", "value_type")),
                        (m.TrialSystemAttributeModel, ("trial_id", "key", "value_json")),
                        (m.StudySystemAttributeModel, ("study_id", "key", "value_json"))):
        missing = [c for c in cols if c not in model.__table__.c]
        assert not missing, f"{model.__name__} lost columns {missing}"
    assert {"FINITE", "INF_POS", "INF_NEG"} <= {k.name for k in m.TrialValueModel.TrialValueType}
