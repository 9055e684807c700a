"""Studies in storage: idempotent creation, the stored definition, samplers, pruners, budget.

The study file's validated spec is stored in the study's user attrs, so any worker anywhere needs
only the study name and the storage URL. The budget counts finished trials (complete or pruned)
across every worker and every run; a lock around "count, then ask" keeps concurrent workers from
overshooting it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy
from optuna.trial import TrialState

from hpo.errors import StorageError, StudyMismatchError
from hpo.storage import mask, sqlite_path, study_names
from hpo.studyfile import StudySpec, grid_points

SPEC_ATTR = "hpo:spec"
BUDGET_ATTR = "hpo:budget"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class BudgetGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler calls study.stop() when the grid is exhausted, which only works
    inside study.optimize(); here the study's budget (= grid size) ends the search instead."""

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                    state: TrialState, values: Any) -> None:
        return None


def make_sampler(spec: StudySpec, seed: int | None) -> optuna.samplers.BaseSampler:
    s = {k: v for k, v in spec.sampler.items() if k not in ("type", "points")}
    kind = spec.sampler["type"]
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, **s)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, **s)
    if kind == "grid":
        # The grid is shuffled by its seed and grid ids index the shuffled list, so every
        # worker must use the same seed or ids would map to different points.
        return BudgetGridSampler(spec.grid_values(), seed=spec.seed)
    return optuna.samplers.RandomSampler(seed=seed)  # random, and points (all enqueued)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    p = {k: v for k, v in spec.pruner.items() if k != "type"}
    return {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }[spec.pruner["type"]](**p)


def worker_seed(spec: StudySpec, worker_index: int, n_existing: int) -> int:
    """A fresh single-worker search is reproducible; a resumed or parallel one never repeats the
    random start-up points of an earlier run because the existing trial count enters the seed."""
    return int(np.random.SeedSequence([spec.seed, worker_index, n_existing]).generate_state(1)[0])


def trial_seed(spec: StudySpec, number: int, repeat: int) -> int:
    """Training seed of one repeat of one trial: replayable from the study seed alone."""
    return int(np.random.SeedSequence([spec.seed, number, repeat]).generate_state(1)[0] % 2**31)


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        return out
    return [] if json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) else [path]


def create_study(spec: StudySpec, storage: optuna.storages.BaseStorage,
                 trials: int | None = None) -> optuna.Study:
    """Creates the study, or checks that the stored one matches `spec`; sets the budget."""
    if trials is not None:
        check_budget(trials, spec)  # a bad --trials must not leave a half-made study behind
    study = optuna.create_study(study_name=spec.name, storage=storage,
                                directions=list(spec.directions),  # type: ignore[arg-type]
                                load_if_exists=True)
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is None:
        if study.trials:
            raise StudyMismatchError(f"study '{spec.name}' exists without an hpo definition; "
                                     "choose another name")
        spec_json = json.loads(json.dumps(spec.to_dict()))
        study.set_user_attr(SPEC_ATTR, spec_json)
        if spec.sampler["type"] == "points":
            for point in spec.sampler["points"]:
                study.enqueue_trial(point)
        from hpo.notes import write_study_note

        write_study_note(study, spec)  # the dashboard's note: protocol and reference numbers
    else:
        old = StudySpec.from_dict(stored)
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
    set_budget(study, trials or study.user_attrs.get(BUDGET_ATTR) or spec.trials, spec)
    return study


def set_budget(study: optuna.Study, trials: int, spec: StudySpec) -> None:
    check_budget(trials, spec)
    if study.user_attrs.get(BUDGET_ATTR) != trials:
        study.set_user_attr(BUDGET_ATTR, trials)


def check_budget(trials: int, spec: StudySpec) -> None:
    if trials < 1:
        raise StorageError(f"--trials must be >= 1, got {trials}")
    limit = len(grid_points(spec)) if spec.sampler["type"] == "grid" else (
        len(spec.sampler["points"]) if spec.sampler["type"] == "points" else None)
    if limit is not None and trials > limit:
        raise StudyMismatchError(f"--trials {trials} exceeds the {limit} points of study "
                                 f"'{spec.name}'; use at most {limit}")


def load(name: str, storage: optuna.storages.BaseStorage, *,
         sampler: optuna.samplers.BaseSampler | None = None,
         pruner: optuna.pruners.BasePruner | None = None) -> tuple[optuna.Study, StudySpec]:
    """Loads an hpo study; an unknown name gets an error listing the existing ones."""
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                                  pruner=pruner)
    except KeyError:
        names = study_names(storage)
        listing = ", ".join(names) if names else "none yet"
        raise StorageError(f"no study named '{name}' in this storage; existing studies: "
                           f"{listing}") from None
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is None:
        raise StorageError(f"study '{name}' was not created by hpo (no stored definition); "
                           "create it with `hpo create STUDY_FILE`")
    return study, StudySpec.from_dict(stored)


@dataclass(frozen=True)
class Counts:
    complete: int
    pruned: int
    running: int
    waiting: int
    failed: int
    budget: int

    @property
    def finished(self) -> int:
        return self.complete + self.pruned

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
    by_state = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        by_state[t.state] += 1
    return Counts(by_state[TrialState.COMPLETE], by_state[TrialState.PRUNED],
                  by_state[TrialState.RUNNING], by_state[TrialState.WAITING],
                  by_state[TrialState.FAIL], int(study.user_attrs.get(BUDGET_ATTR, 0)))


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
        lock = Path(f"{path}.{hashlib.sha1(study_name.encode()).hexdigest()[:8]}.lock")
        with lock.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
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
