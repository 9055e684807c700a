"""Studies in storage: atomic creation, the stored definition, samplers, pruners, budget.

The study file's validated spec is stored in the study's user attrs, so any worker anywhere needs
only the study name and the storage URL. A new study is written in one transaction (its row,
directions, spec, budget, dashboard note and queued points), so it exists complete or not at all.
The budget counts finished trials (complete or pruned) across every worker and every run; a lock
around "count, then ask" keeps concurrent workers from overshooting it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hpo.errors import StorageError, StudyMismatchError, first_line
from hpo.store import damage, heartbeat, optuna_api, queries, stored
from hpo.store.attrs import BUDGET_ATTR, HEARTBEAT_ATTR, SPEC_ATTR, SUMMARY_ATTR
from hpo.store.engines import study_names
from hpo.store.urls import mask, sqlite_path
from hpo.study.metrics import METRIC_LABELS
from hpo.study.spec import StudySpec

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def make_sampler(spec: StudySpec, seed: int | None) -> optuna.samplers.BaseSampler:
    return spec.sampler.build(seed, spec.space, spec.seed)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    return spec.pruner.build()


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        return out
    return [] if json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) else [path]


@dataclass(frozen=True)
class Creation:
    study: optuna.Study
    created: bool  # False: it existed and matches the file
    budget: int
    message: str | None = None  # a budget change or a kept budget the file disagrees with


def ensure_study(spec: StudySpec, storage: optuna.storages.BaseStorage,
                 trials: int | None = None) -> Creation:
    """Creates the study atomically, or checks that the stored one matches `spec`; the budget
    is --trials when given, else the file's when the file changed it, else the stored one."""
    if trials is not None:
        check_budget(trials, spec)  # a bad --trials must not leave anything behind
    damage.note_study(spec.name)
    if spec.name not in study_names(storage):
        rdb = optuna_api.rdb_of(storage)
        assert rdb is not None, "hpo studies live in SQL storage"
        try:
            _write_new(rdb, spec, trials or spec.trials)
            study = optuna.load_study(study_name=spec.name, storage=storage)
            return Creation(study, True, trials or spec.trials)
        except optuna.exceptions.DuplicatedStudyError:
            pass  # a concurrent creator won the race: compare with what it stored
        except optuna.exceptions.StorageInternalError as e:
            raise StorageError(f"could not store study '{spec.name}': "
                               f"{first_line(e.__cause__ or e)}; nothing was written") from e
    study = optuna.load_study(study_name=spec.name, storage=storage)
    return _check_existing(study, spec, trials)


def create_study(spec: StudySpec, storage: optuna.storages.BaseStorage,
                 trials: int | None = None) -> optuna.Study:
    return ensure_study(spec, storage, trials).study


def _write_new(rdb: optuna.storages.RDBStorage, spec: StudySpec, budget: int) -> None:
    from hpo.study.note import study_note, summary_line  # scipy: only when a study is made

    note = study_note(spec)
    waiting = [optuna.trial.create_trial(state=TrialState.WAITING,
                                         system_attrs={"fixed_params": dict(p)})
               for p in spec.sampler.points]
    optuna_api.create_study_atomically(
        rdb, spec.name, [StudyDirection[d.upper()] for d in spec.directions],
        # The summary first: the dashboard lists study attrs in the order they were written.
        {SUMMARY_ATTR: summary_line(spec), BUDGET_ATTR: budget,
         SPEC_ATTR: json.loads(json.dumps(spec.to_dict())),
         HEARTBEAT_ATTR: heartbeat.from_env().to_dict()},
        {**optuna_api.note_attrs(note),
         **optuna_api.metric_names_attrs([METRIC_LABELS[m] for m in spec.metrics])}, waiting)


def _user_attrs(study: optuna.Study) -> tuple[dict[str, Any], dict[str, str | None]]:
    """The study's user attrs that read, and the raw text of those that are not JSON."""
    rdb = optuna_api.rdb_of(optuna_api.storage_of(study))
    if rdb is None:
        return dict(study.user_attrs), {}
    return queries.study_user_attrs(rdb, optuna_api.study_id(study))


def _check_existing(study: optuna.Study, spec: StudySpec, trials: int | None) -> Creation:
    attrs, unreadable = _user_attrs(study)
    if SPEC_ATTR in unreadable:
        stored.attr_json(spec.name, SPEC_ATTR, unreadable[SPEC_ATTR])  # raises, naming it
    if attrs.get(SPEC_ATTR) is None:
        raise StudyMismatchError(f"study '{spec.name}' exists without an hpo definition; "
                                 "choose another name")
    old = stored.spec(spec.name, attrs)
    changed = _diff(json.loads(json.dumps(old.fingerprint())),
                    json.loads(json.dumps(spec.fingerprint())))
    if changed:
        raise StudyMismatchError(
            f"study '{spec.name}' in storage was created from a different definition "
            f"({', '.join(changed[:4])} differ); restore the file or use a new study name")
    if [d.name.lower() for d in study.directions] != spec.directions:
        raise StudyMismatchError(f"study '{spec.name}' has directions "
                                 f"{[d.name.lower() for d in study.directions]}, the file "
                                 f"{spec.directions}; use a new study name")
    if study.metric_names is None:  # a study made before hpo named its objectives
        study.set_metric_names([METRIC_LABELS[m] for m in spec.metrics])
    # A stored budget that does not read is replaced (from --trials, else the file): the budget
    # is hpo's to set, and this is the command that sets it.
    damaged: str | None = None
    if BUDGET_ATTR in unreadable:
        damaged = repr(unreadable[BUDGET_ATTR])
    else:
        try:
            stored.budget(spec.name, attrs)
        except StorageError:
            damaged = repr(attrs[BUDGET_ATTR])
    current = old.trials if damaged is not None else stored.budget(spec.name, attrs) or old.trials
    message = None
    if damaged is not None:
        budget = trials if trials is not None else spec.trials
        message = (f"study '{spec.name}': its stored {BUDGET_ATTR} = {damaged[:80]} could not be "
                   f"read; replaced it with {budget} trials (from "
                   f"{'--trials' if trials is not None else 'the study file'})")
    elif trials is not None:
        budget = trials
    elif spec.trials != old.trials:
        budget = spec.trials  # the file's budget was edited: apply it
    else:
        budget = current
        if budget != spec.trials:
            message = (f"budget stays {budget} trials (set earlier with --trials); the file says "
                       f"{spec.trials}: pass --trials to change it")
    check_budget(budget, spec)
    if damaged is not None:
        study.set_user_attr(BUDGET_ATTR, budget)
    elif budget != current:
        message = f"budget changed from {current} to {budget} trials"
        study.set_user_attr(BUDGET_ATTR, budget)
    if (old.trials, old.description) != (spec.trials, spec.description):
        study.set_user_attr(SPEC_ATTR, json.loads(json.dumps(spec.to_dict())))
    return Creation(study, False, budget, message)


def check_budget(trials: int, spec: StudySpec) -> None:
    if trials < 1:
        raise StorageError(f"--trials must be >= 1, got {trials}")
    limit = spec.budget_limit()
    if limit is not None and trials > limit:
        raise StudyMismatchError(f"--trials {trials} exceeds the {limit} points of study "
                                 f"'{spec.name}'; use at most {limit}")


def load(name: str, storage: optuna.storages.BaseStorage, *,
         sampler: optuna.samplers.BaseSampler | None = None,
         pruner: optuna.pruners.BasePruner | None = None) -> tuple[optuna.Study, StudySpec]:
    """Loads an hpo study; an unknown name gets an error listing the existing ones."""
    damage.note_study(name)
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                                  pruner=pruner)
    except KeyError:
        names = study_names(storage)
        listing = ", ".join(names) if names else "none yet"
        raise StorageError(f"no study named '{name}' in this storage; existing studies: "
                           f"{listing}") from None
    spec = stored.spec(name, study.user_attrs)
    stored.check_directions(name, spec, [d.name.lower() for d in study.directions])
    heartbeat.apply(study, storage)  # staleness judged by the study's contract, not ours
    return study, spec


@dataclass(frozen=True)
class Counts:
    complete: int
    pruned: int
    running: int
    waiting: int
    failed: int  # the interrupted ones included: Optuna's FAIL
    budget: int

    @property
    def finished(self) -> int:
        return self.complete + self.pruned

    @property
    def total(self) -> int:
        """Every trial of the study, in any state."""
        return self.finished + self.running + self.waiting + self.failed

    @property
    def done(self) -> bool:
        return self.finished >= self.budget

    @property
    def may_ask(self) -> bool:
        """`ask` pops a waiting (enqueued or retried) trial before it creates a new one, so one
        rule serves both: a trial may start while the finished and running ones leave room.
        Every start happens under the budget lock, so finished + running never passes the budget.
        Waiting trials do not count: more of them than the budget (a points study run with a
        smaller --trials) must not block the study, they simply stay queued."""
        return self.finished + self.running < self.budget


def counts(study: optuna.Study) -> Counts:
    """Asked under the budget lock before every claim and by the progress bar every second: a
    grouped count in the database, which costs the same with 10 trials or 10,000."""
    rdb = optuna_api.rdb_of(optuna_api.storage_of(study))
    if rdb is not None:
        by_state = queries.state_counts(rdb, optuna_api.study_id(study))
    else:
        by_state = dict.fromkeys(TrialState, 0)
        for t in study.get_trials(deepcopy=False):
            by_state[t.state] += 1
    return Counts(by_state[TrialState.COMPLETE], by_state[TrialState.PRUNED],
                  by_state[TrialState.RUNNING], by_state[TrialState.WAITING],
                  by_state[TrialState.FAIL], stored.budget(study.study_name, study.user_attrs) or 0)


def interrupted_count(study: optuna.Study) -> int:
    """Failed trials whose worker was stopped (Ctrl-C, SIGTERM): re-queued, not failures. Apart
    from counts(), which every claim asks under the budget lock: only the progress bar needs it."""
    rdb = optuna_api.rdb_of(optuna_api.storage_of(study))
    if rdb is None:
        return 0
    return sum(queries.interrupted_counts(rdb, optuna_api.study_id(study)).values())


@contextlib.contextmanager
def budget_lock(storage: optuna.storages.RDBStorage, study_name: str) -> Iterator[None]:
    """Serialises "count, then ask" across every worker of a study.

    SQLite lives on one machine, so an flock on a file beside the database does; servers get a
    named lock of their own (PostgreSQL advisory lock, MySQL GET_LOCK) that the server releases
    by itself if the worker dies.
    """
    url = storage.engine.url
    path = sqlite_path(url)
    if path is not None:
        # An flock on the database's directory: no lock file is left beside the database, and
        # it never meets SQLite's own (POSIX) locks on the file. Studies in one directory share
        # it; it is held only for "count, then ask" (milliseconds).
        fd = os.open(path.resolve().parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock
        return
    key = int.from_bytes(hashlib.sha1(f"hpo:{study_name}".encode()).digest()[:8], "big",
                         signed=True)
    fn = sqlalchemy.func
    with storage.engine.connect() as con:
        if url.get_backend_name() == "postgresql":
            con.execute(sqlalchemy.select(fn.pg_advisory_lock(key)))
            release = sqlalchemy.select(fn.pg_advisory_unlock(key))
        else:
            got = con.execute(sqlalchemy.select(fn.get_lock(f"hpo:{study_name}"[:64], 120)))
            if got.scalar() != 1:
                raise StorageError(f"timed out waiting for the budget lock of '{study_name}' "
                                   f"on {mask(str(url))}")
            release = sqlalchemy.select(fn.release_lock(f"hpo:{study_name}"[:64]))
        try:
            yield
        finally:
            with contextlib.suppress(sqlalchemy.exc.DBAPIError):
                con.execute(release)
                con.commit()
