"""Every use of Optuna's (and optuna-dashboard's) private API, in one module.

hpo needs a few things Optuna does not offer publicly: writing several user attrs in one
transaction, creating a study with its attrs and queued trials atomically, counting and ranking
trials in SQL instead of loading them all, the ids behind Study and Trial objects, the stale
trial ids that heartbeats produce, and the directory of a FileSystemArtifactStore. They all live
here, so an Optuna release that changes one breaks one module, and `tests/store/test_optuna_api.py`
(run over SQLite, PostgreSQL and MySQL) fails naming the call. `PRIVATE` lists each name this
module relies on; `missing_private_names()` checks they still exist.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

# (module, attribute path) of every private name used below.
PRIVATE: tuple[tuple[str, str], ...] = (
    ("optuna.storages._rdb.models", "StudyModel"),
    ("optuna.storages._rdb.models", "StudyDirectionModel"),
    ("optuna.storages._rdb.models", "StudyUserAttributeModel"),
    ("optuna.storages._rdb.models", "StudySystemAttributeModel"),
    ("optuna.storages._rdb.models", "TrialModel"),
    ("optuna.storages._rdb.models", "TrialValueModel"),
    ("optuna.storages._rdb.models", "TrialValueModel.TrialValueType"),
    ("optuna.storages._rdb.models", "TrialParamModel"),
    ("optuna.storages._rdb.models", "TrialIntermediateValueModel"),
    ("optuna.storages._rdb.models", "TrialUserAttributeModel"),
    ("optuna.storages._rdb.models", "TrialSystemAttributeModel"),
    ("optuna.storages._rdb.models", "TrialHeartbeatModel"),
    ("optuna.storages._rdb.models", "TrialHeartbeatModel.where_trial_id"),
    ("optuna.storages._rdb.storage", "_create_scoped_session"),
    ("optuna.storages._rdb.storage", "RDBStorage._set_trial_attr_without_commit"),
    ("optuna.storages._rdb.storage", "RDBStorage._get_prepared_new_trial"),
    ("optuna.storages._rdb.storage", "RDBStorage._create_new_trial"),
    ("optuna.storages._rdb.storage", "RDBStorage._get_stale_trial_ids"),
    ("optuna.storages._cached_storage", "_CachedStorage"),
    ("optuna.trial._trial", "Trial._cached_frozen_trial"),
    ("optuna.study.study", "_SYSTEM_ATTR_METRIC_NAMES"),
    ("optuna.study._frozen", "FrozenStudy"),
    ("optuna_dashboard._note", "note_ver_key"),
    ("optuna_dashboard._note", "split_body"),
)


def missing_private_names() -> list[str]:
    """The names in PRIVATE that this Optuna no longer has (instance attributes such as
    `Trial._cached_frozen_trial` are checked by the contract test on a real trial)."""
    missing = []
    for module, path in PRIVATE:
        try:
            obj: Any = importlib.import_module(module)
        except ImportError:
            missing.append(f"{module} (module)")
            continue
        for part in path.split("."):
            if part.startswith("_cached_frozen"):
                break
            if not hasattr(obj, part):
                missing.append(f"{module}.{path}")
                break
            obj = getattr(obj, part)
    return missing


def models() -> Any:
    """Optuna's SQLAlchemy models (its schema), for read-only queries."""
    from optuna.storages._rdb import models as m

    return m


# --- ids and unwrapping ---------------------------------------------------------------------


def rdb_of(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage | None:
    """The RDBStorage behind a storage (create_study/load_study wrap it in a cache), or None."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    return trial._trial_id


def lineage_origin(trial: optuna.Trial) -> int:
    """The number of the first attempt of this trial's parameters: itself, or, for a re-queued
    copy, the first number of the `retry_history` Optuna's retry callback keeps."""
    history = trial.storage.get_trial(trial._trial_id).system_attrs.get("retry_history") or []
    return int(history[0]) if history and isinstance(history[0], int) else trial.number


def live_trial(study: optuna.Study, tid: int) -> optuna.Trial:
    """A Trial object for a RUNNING trial by id (to upload to it as its own worker would)."""
    return optuna.trial.Trial(study, tid)


def frozen_study(storage: optuna.storages.BaseStorage, sid: int, name: str) -> FrozenStudy:
    """One study as get_all_studies gives it, read on its own (so that another study's damaged
    rows do not stop it)."""
    return FrozenStudy(study_name=name, direction=None,
                       directions=storage.get_study_directions(sid),
                       user_attrs=storage.get_study_user_attrs(sid),
                       system_attrs=storage.get_study_system_attrs(sid), study_id=sid)


def summary_id(summary: optuna.study.StudySummary | FrozenStudy) -> int:
    return summary._study_id


def artifact_dir(store: optuna.artifacts.FileSystemArtifactStore) -> Path:
    return Path(store._base_path)


# --- writes -----------------------------------------------------------------------------------


class HeartbeatStorage(optuna.storages.RDBStorage):
    """RDBStorage that gives a trial its first heartbeat the moment it becomes RUNNING.

    Optuna only declares a trial stale once it has a heartbeat row. A worker that dies (or loses
    the database) inside `study.ask()`, before its heartbeat thread starts, would otherwise leave
    a RUNNING trial that nothing ever fails, and the study would never reach its budget. The
    hook is `_create_new_trial`, because Optuna's storage cache (which every Study uses) calls
    that, not the public `create_new_trial`.
    """

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None
                          ) -> FrozenTrial:
        frozen = super()._create_new_trial(study_id, template_trial)
        if self.heartbeat_interval and (template_trial is None
                                        or template_trial.state == TrialState.RUNNING):
            self.record_heartbeat(frozen._trial_id)
        return frozen

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)
        if changed and state == TrialState.RUNNING and self.heartbeat_interval:
            self.record_heartbeat(trial_id)  # a WAITING (enqueued or retried) trial popped
        return changed


@contextlib.contextmanager
def session(rdb: optuna.storages.RDBStorage) -> Iterator[Any]:
    """One transaction on Optuna's own session factory: committed at the end, rolled back (and
    the driver's error wrapped in StorageInternalError, as Optuna does) on any failure."""
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(rdb.scoped_session) as s:
        yield s


def set_trial_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """All of `attrs` in one transaction (one commit instead of one per key, each a sync of the
    database file on SQLite); all or nothing, so a caller may retry it. Storages that are not
    RDB get one call per key."""
    rdb = rdb_of(trial.storage)
    if rdb is None:
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        return
    m = models()
    with session(rdb) as s:
        for k, v in attrs.items():
            rdb._set_trial_attr_without_commit(s, m.TrialUserAttributeModel, trial._trial_id, k, v)
    cached = getattr(trial, "_cached_frozen_trial", None)  # what trial.user_attrs returns
    if cached is not None:
        cached.user_attrs.update(attrs)


def note_attrs(body: str) -> dict[str, Any]:
    """The study system attrs optuna_dashboard.save_note writes for a first note."""
    from optuna_dashboard._note import note_ver_key, split_body

    return {note_ver_key(None): 1, **split_body(body, None)}


def metric_names_attrs(names: Sequence[str]) -> dict[str, Any]:
    """The study system attr Study.set_metric_names writes (the dashboard's axis labels)."""
    from optuna.study.study import _SYSTEM_ATTR_METRIC_NAMES

    return {_SYSTEM_ATTR_METRIC_NAMES: list(names)}


def create_study_atomically(rdb: optuna.storages.RDBStorage, name: str,
                            directions: Sequence[StudyDirection], user_attrs: Mapping[str, Any],
                            system_attrs: Mapping[str, Any],
                            waiting: Sequence[FrozenTrial] = ()) -> None:
    """The study row, its directions, attrs and queued trials in ONE transaction: a study exists
    complete or not at all. Raises optuna.exceptions.DuplicatedStudyError when the name is
    taken (a concurrent creator won; the caller then compares definitions)."""
    m = models()
    try:
        with session(rdb) as s:
            study = m.StudyModel(study_name=name, directions=[
                m.StudyDirectionModel(objective=i, direction=d) for i, d in enumerate(directions)])
            s.add(study)
            s.flush()
            for k, v in user_attrs.items():
                s.add(m.StudyUserAttributeModel(study_id=study.study_id, key=k,
                                                value_json=json.dumps(v)))
            for k, v in system_attrs.items():
                s.add(m.StudySystemAttributeModel(study_id=study.study_id, key=k,
                                                  value_json=json.dumps(v)))
            s.flush()
            for template in waiting:
                rdb._get_prepared_new_trial(study.study_id, template, s)
                s.flush()
    except sqlalchemy.exc.IntegrityError as e:
        raise optuna.exceptions.DuplicatedStudyError(f"study {name!r} already exists") from e


# --- reads ------------------------------------------------------------------------------------


def stale_trial_ids(rdb: optuna.storages.RDBStorage, sid: int) -> list[int]:
    """RUNNING trials whose last heartbeat is older than the grace period."""
    return list(rdb._get_stale_trial_ids(sid))


def has_heartbeat(rdb: optuna.storages.RDBStorage, tid: int) -> bool:
    s = rdb.scoped_session()
    try:
        return models().TrialHeartbeatModel.where_trial_id(tid, s) is not None
    finally:
        s.close()


