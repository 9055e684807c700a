"""Read-only views of studies: summaries, best trials, trial listings (table, JSON, CSV).

`hpo best` and `hpo studies` must answer quickly at any study size, so on SQL storage they never
load every trial: Optuna builds a full FrozenTrial (params, values, user attrs with their
learning curves, intermediate values) for each one, about 14 s of CPU at 10,000 trials. They ask the
database for the counts and the best trial ids instead, then load only those trials
(bench/storage.py measures both paths; the queries are hpo.store.queries). On a SQLite file,
`hpo best` and `hpo studies` are answered by hpo.results.sqlite_reader without Optuna at all, and
come here only when it cannot answer.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import HpoError
from hpo.results.records import objective_names, pareto_best, record, with_rescores
from hpo.store import damage, optuna_api, queries, stored
from hpo.store.attrs import FAIL_REASON_ATTR, INTERRUPTED, SPEC_ATTR
from hpo.store.studies import load

STATES = {s.name.lower(): s for s in TrialState}
# The study system attr Study.set_metric_names writes (FrozenStudy has no metric_names).
(METRIC_NAMES_KEY,) = optuna_api.metric_names_attrs(())


def trial_record(t: FrozenTrial, names: list[str] | None = None) -> dict[str, Any]:
    """One trial as plain JSON-able data: what a user scripts against (hpo.results.records).
    `names`: the study's objective names (names_of); without them, Optuna's default ones."""
    return record(t.number, t.state.name, t.values, t.params, t.user_attrs, t.datetime_start,
                  t.datetime_complete,
                  names if names is not None else objective_names(None, len(t.values or [0])))


def names_of(study: optuna.Study) -> list[str]:
    """The study's objectives, named as Optuna's CLI names them (records.objective_names)."""
    return objective_names(study.metric_names, len(study.directions))


def open_study(name: str, storage: optuna.storages.BaseStorage
               ) -> tuple[optuna.Study, list[str]]:
    """The study and its metrics, for read-only commands."""
    study, spec = load(name, storage)
    return study, list(spec.metrics)


# What Optuna raises on a stored row it cannot read (hpo.store.damage names the row).
UNREAD = (ValueError, LookupError, AssertionError, TypeError)


def _each_study(storage: optuna.storages.BaseStorage, rdb: optuna.storages.RDBStorage | None,
                damaged: set[int]) -> list[Any]:
    """Every study; on SQL storage, when one study's rows do not read, every other study, the
    damaged one added to `damaged` (Optuna reads them all in one go, and fails on the first)."""
    try:
        return list(storage.get_all_studies())
    except UNREAD:
        if rdb is None:
            raise
    out = []
    for sid, name in queries.study_ids(rdb):
        try:
            out.append(optuna_api.frozen_study(storage, sid, name))
        except UNREAD:
            damaged.add(sid)
        except KeyError:
            continue  # deleted by someone else while we were listing
    return out


def studies(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """One row per study. A study whose stored rows do not read is named in a warning line
    (stderr), with its first damaged row and the fix; the others are listed as ever."""
    rdb = optuna_api.rdb_of(storage)
    damaged: set[int] = set()
    counts = queries.state_counts_by_study(rdb, damaged=damaged) if rdb is not None else None
    damaged |= queries.unranked(rdb) if rdb is not None else set()
    stopped = queries.interrupted_counts(rdb) if rdb is not None else {}
    extremes = queries.value_extremes(rdb) if rdb is not None else None
    out = []
    for s in _each_study(storage, rdb, damaged):
        n = {state: 0 for state in TrialState}
        if counts is not None:
            n.update(counts.get(optuna_api.summary_id(s), {}))
        else:
            try:
                for t in storage.get_all_trials(optuna_api.summary_id(s), deepcopy=False):
                    n[t.state] += 1
                    reason = t.user_attrs.get(FAIL_REASON_ATTR)
                    if t.state == TrialState.FAIL and str(reason).startswith(INTERRUPTED):
                        sid = optuna_api.summary_id(s)
                        stopped[sid] = stopped.get(sid, 0) + 1
            except KeyError:
                continue  # deleted by someone else while we were listing: not a study any more
        names = objective_names(s.system_attrs.get(METRIC_NAMES_KEY), len(s.directions))
        best = None
        if len(s.directions) == 1 and n[TrialState.COMPLETE]:
            if extremes is not None:
                lo, hi = extremes.get(optuna_api.summary_id(s), (None, None))
                best = hi if s.directions[0] == StudyDirection.MAXIMIZE else lo
            else:
                with contextlib.suppress(ValueError):
                    best = storage.get_best_trial(optuna_api.summary_id(s)).value
        try:
            budget = stored.budget(s.study_name, s.user_attrs)
            if SPEC_ATTR in s.user_attrs:
                stored.check_directions(s.study_name, stored.spec(s.study_name, s.user_attrs),
                                        [d.name.lower() for d in s.directions])
        except HpoError:
            damaged.add(optuna_api.summary_id(s))
            budget = None
        out.append({
            "name": s.study_name,
            "directions": [d.name.lower() for d in s.directions], "metric_names": names,
            "budget": budget,
            "finished": n[TrialState.COMPLETE] + n[TrialState.PRUNED],
            "complete": n[TrialState.COMPLETE], "pruned": n[TrialState.PRUNED],
            "running": n[TrialState.RUNNING], "waiting": n[TrialState.WAITING],
            "failed": n[TrialState.FAIL] - stopped.get(optuna_api.summary_id(s), 0),
            "interrupted": stopped.get(optuna_api.summary_id(s), 0),
            "best_values": None if best is None else {names[0]: best},
            "made_by_hpo": SPEC_ATTR in s.user_attrs,
        })
    if rdb is not None:
        for sid in sorted(damaged):
            stored.tolerate(damage.first_damage(rdb.engine, {sid}))
    return out


def best_trials(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """Single objective: the top K complete trials (ties: lower number first); two objectives:
    the Pareto front, by the first objective. Only the trials returned are loaded in full."""
    storage = optuna_api.storage_of(study)
    rdb = optuna_api.rdb_of(storage)
    if rdb is None:
        return _best_trials_loaded(study, top)
    sid = optuna_api.study_id(study)
    if len(study.directions) > 1:
        ids = _pareto_ids(rdb, sid, study.directions, top)
    else:
        ids = queries.top_ids(rdb, sid, study.direction, top)
    return [storage.get_trial(i) for i in ids]


def best_records(name: str, storage: optuna.storages.BaseStorage, top: int
                 ) -> tuple[list[str], list[str], list[dict[str, Any]], dict[str, Any] | None]:
    """`hpo best`'s answer: the study's metrics and objective names, the records of its best
    trials with their rescores, and its rescore attr (hpo.results.sqlite_reader gives the same
    from a SQLite file)."""
    study, metrics = open_study(name, storage)
    rdb = optuna_api.rdb_of(storage)
    sid = optuna_api.study_id(study)
    if rdb is not None and sid in queries.unranked(rdb):
        stored.tolerate(f"{damage.first_damage(rdb.engine, {sid})}; until then that trial is "
                        "left out of the ranking")
    names = names_of(study)
    rescored = stored.rescores(name, study.user_attrs)
    return metrics, names, with_rescores(rescored, [trial_record(t, names) for t in best_trials(
        study, top)]), rescored


def _best_trials_loaded(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The same answer from every trial loaded: for storages that are not SQL databases."""
    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: t.values[0], reverse=True)[:top]
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = -1 if study.direction == StudyDirection.MAXIMIZE else 1
    return sorted(done, key=lambda t: (sign * t.values[0], t.number))[:top]


def _pareto_ids(rdb: optuna.storages.RDBStorage, study_id: int,
                directions: list[StudyDirection], top: int) -> list[int]:
    rows = queries.complete_values(rdb, study_id)
    by_trial: dict[int, tuple[int, list[float]]] = {}
    for tid, number, objective, value in rows:
        by_trial.setdefault(tid, (number, [math.nan] * len(directions)))[1][objective] = value
    return pareto_best(by_trial, [d == StudyDirection.MAXIMIZE for d in directions], top)


def parse_state(state: str | None) -> tuple[TrialState, ...] | None:
    if state is None:
        return None
    if state.lower() not in STATES:
        raise HpoError(f"--state: unknown state {state!r}; use one of "
                       f"{', '.join(s.upper() for s in STATES)} (any case)")
    return (STATES[state.lower()],)
