"""Read-only views of studies: summaries, best trials, trial listings (table, JSON, CSV).

`hpo best` and `hpo studies` must answer quickly at any study size, so on SQL storage they never
load every trial: Optuna builds a full FrozenTrial (params, values, user attrs with their learning
curves, intermediate values) for each one, about 14 s of CPU at 10,000 trials. They ask the
database for the counts and the best trial ids instead, then load only those trials
(bench/storage.py measures both paths). Records and their rendering are hpo.records'; on a
SQLite file, `hpo best` and `hpo studies` are answered by hpo.lightread without Optuna at all,
and come here only when it cannot answer. Like the whole core, imports neither torch nor
matplotlib.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpo import optuna_api
from hpo.attrs import BUDGET_ATTR, RESCORE_ATTR, SPEC_ATTR
from hpo.errors import HpoError
from hpo.records import pareto_best, record, with_rescores
from hpo.study import load

STATES = {s.name.lower(): s for s in TrialState}


def trial_record(t: FrozenTrial) -> dict[str, Any]:
    """One trial as plain JSON-able data: what a user scripts against (hpo.records)."""
    return record(t.number, t.state.name, t.values, t.params, t.user_attrs, t.datetime_start,
                  t.datetime_complete)


def open_study(name: str, storage: optuna.storages.BaseStorage
               ) -> tuple[optuna.Study, list[str]]:
    """The study and its metrics, for read-only commands."""
    study, spec = load(name, storage)
    return study, list(spec.metrics)


def _rdb(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage | None:
    """The RDBStorage behind a storage (Optuna wraps it in a cache), or None."""
    return optuna_api.rdb_of(storage)


def studies(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    rdb = _rdb(storage)
    counts = optuna_api.state_counts_by_study(rdb) if rdb is not None else None
    extremes = _value_extremes(rdb) if rdb is not None else None
    out = []
    for s in storage.get_all_studies():
        n = {state: 0 for state in TrialState}
        if counts is not None:
            n.update(counts.get(optuna_api.summary_id(s), {}))
        else:
            try:
                for t in storage.get_all_trials(optuna_api.summary_id(s), deepcopy=False):
                    n[t.state] += 1
            except KeyError:
                continue  # deleted by someone else while we were listing: not a study any more
        best = None
        if len(s.directions) == 1 and n[TrialState.COMPLETE]:
            if extremes is not None:
                lo, hi = extremes.get(optuna_api.summary_id(s), (None, None))
                best = hi if s.directions[0] == StudyDirection.MAXIMIZE else lo
            else:
                with contextlib.suppress(ValueError):
                    best = storage.get_best_trial(optuna_api.summary_id(s)).value
        out.append({
            "name": s.study_name,
            "directions": [d.name.lower() for d in s.directions],
            "budget": s.user_attrs.get(BUDGET_ATTR),
            "finished": n[TrialState.COMPLETE] + n[TrialState.PRUNED],
            "complete": n[TrialState.COMPLETE], "pruned": n[TrialState.PRUNED],
            "running": n[TrialState.RUNNING], "waiting": n[TrialState.WAITING],
            "failed": n[TrialState.FAIL], "best_value": best,
            "hpo": SPEC_ATTR in s.user_attrs,
        })
    return out


def _value_extremes(rdb: optuna.storages.RDBStorage
                    ) -> dict[int, tuple[float | None, float | None]]:
    """(lowest, highest) first-objective value of each study's complete trials, in one query;
    infinities (stored as NULL values with a type) included."""
    m = optuna_api.models()
    T, V = m.TrialModel, m.TrialValueModel

    kind = V.TrialValueType
    found: dict[int, list[float]] = {}
    query = (sa.select(T.study_id, V.value_type, sa.func.min(V.value), sa.func.max(V.value))
             .join(V, V.trial_id == T.trial_id)
             .where(T.state == TrialState.COMPLETE, V.objective == 0)
             .group_by(T.study_id, V.value_type))
    with rdb.engine.connect() as con:
        for study_id, vtype, lo, hi in con.execute(query):
            if vtype == kind.INF_POS:
                lo = hi = math.inf
            elif vtype == kind.INF_NEG:
                lo = hi = -math.inf
            found.setdefault(study_id, []).extend([lo, hi])
    return {sid: (min(v), max(v)) for sid, v in found.items()}


def best_trials(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """Single objective: the top K complete trials (ties: lower number first); two objectives:
    the Pareto front, by the first objective. Only the trials returned are loaded in full."""
    storage = optuna_api.storage_of(study)
    rdb = _rdb(storage)
    if rdb is None:
        return _best_trials_loaded(study, top)
    sid = optuna_api.study_id(study)
    if len(study.directions) > 1:
        ids = _pareto_ids(rdb, sid, study.directions, top)
    else:
        ids = _top_ids(rdb, sid, study.direction, top)
    return [storage.get_trial(i) for i in ids]


def best_records(name: str, storage: optuna.storages.BaseStorage, top: int
                 ) -> tuple[list[str], list[dict[str, Any]], dict[str, Any] | None]:
    """`hpo best`'s answer: the study's metrics, the records of its best trials with their
    rescores, and its rescore attr (hpo.lightread gives the same from a SQLite file)."""
    study, metrics = open_study(name, storage)
    rescored = study.user_attrs.get(RESCORE_ATTR)
    return metrics, with_rescores(rescored, [trial_record(t) for t in best_trials(study, top)]), \
        rescored


def _best_trials_loaded(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The same answer from every trial loaded: for storages that are not SQL databases."""
    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: t.values[0], reverse=True)[:top]
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = -1 if study.direction == StudyDirection.MAXIMIZE else 1
    return sorted(done, key=lambda t: (sign * t.values[0], t.number))[:top]


def _complete_values(rdb: optuna.storages.RDBStorage, study_id: int
                     ) -> list[tuple[int, int, int, float]]:
    """(trial id, number, objective, value) of the study's complete trials, values as floats."""
    m = optuna_api.models()
    T, V = m.TrialModel, m.TrialValueModel

    kind = V.TrialValueType
    # Optuna stores an infinity as a NULL value with its type; finite values as themselves.
    inf = {kind.INF_POS: math.inf, kind.INF_NEG: -math.inf}
    query = (sa.select(T.trial_id, T.number, V.objective, V.value, V.value_type)
             .join(V, V.trial_id == T.trial_id)
             .where(T.study_id == study_id, T.state == TrialState.COMPLETE))
    with rdb.engine.connect() as con:
        return [(tid, number, objective, inf.get(vtype, value))
                for tid, number, objective, value, vtype in con.execute(query)]


def _top_ids(rdb: optuna.storages.RDBStorage, study_id: int, direction: StudyDirection,
             top: int) -> list[int]:
    m = optuna_api.models()
    T, V = m.TrialModel, m.TrialValueModel

    # Infinities are stored as NULL values with a type; rank them by type first, as Optuna does.
    kind = V.TrialValueType
    rank = sa.case((V.value_type == kind.INF_NEG, -1), (V.value_type == kind.FINITE, 0),
                   else_=1)
    order = ([rank.desc(), V.value.desc()] if direction == StudyDirection.MAXIMIZE
             else [rank, V.value])
    query = (sa.select(T.trial_id).join(V, V.trial_id == T.trial_id)
             .where(T.study_id == study_id, T.state == TrialState.COMPLETE, V.objective == 0)
             .order_by(*order, T.number).limit(top))
    with rdb.engine.connect() as con:
        return [row[0] for row in con.execute(query)]


def _pareto_ids(rdb: optuna.storages.RDBStorage, study_id: int,
                directions: list[StudyDirection], top: int) -> list[int]:
    rows = _complete_values(rdb, study_id)
    by_trial: dict[int, tuple[int, list[float]]] = {}
    for tid, number, objective, value in rows:
        by_trial.setdefault(tid, (number, [math.nan] * len(directions)))[1][objective] = value
    return pareto_best(by_trial, [d == StudyDirection.MAXIMIZE for d in directions], top)


def parse_state(state: str | None) -> tuple[TrialState, ...] | None:
    if state is None:
        return None
    if state.lower() not in STATES:
        raise HpoError(f"--state: unknown state {state!r}; use one of {', '.join(STATES)}")
    return (STATES[state.lower()],)
