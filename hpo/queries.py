"""Read-only views of studies: summaries, best trials, trial listings (table, JSON, CSV).

`hpo best` and `hpo studies` must answer quickly at any study size, so on SQL storage they never
load every trial: Optuna builds a full FrozenTrial (params, values, user attrs with their learning
curves, intermediate values) for each one, about 14 s of CPU at 10,000 trials. They ask the
database for the counts and the best trial ids instead, then load only those trials
(bench/storage.py measures both paths). Like the whole core, it imports neither torch nor
matplotlib: a quick query must start quickly.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from typing import Any

import numpy as np
import optuna
import sqlalchemy as sa
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from hpo import optuna_api
from hpo.errors import HpoError
from hpo.study import BUDGET_ATTR, RESCORE_ATTR, SPEC_ATTR, load

# The one vocabulary of trial fields, shared by `best --json`, `trials` (JSON and CSV) and
# `train --json`: val_removed, model_val_removed, train_seconds (wall, per seed), cpu_seconds...
SUMMARY_ATTRS = ("model_val_removed", "train_seconds", "cpu_seconds", "epochs_run", "n_params",
                 "val_std", "pruned_at_epoch", "status", "reason", "fail_reason",
                 "artifact_error", "retry_of", "host", "pid", "seeds")
STATES = {s.name.lower(): s for s in TrialState}


def trial_record(t: FrozenTrial) -> dict[str, Any]:
    """One trial as plain JSON-able data: what a user scripts against."""
    duration = (t.datetime_complete - t.datetime_start).total_seconds() if (
        t.datetime_complete and t.datetime_start) else None
    return {
        "number": t.number,
        "state": t.state.name.lower(),
        "values": t.values,
        "params": t.params,
        **{k: t.user_attrs[k] for k in SUMMARY_ATTRS if k in t.user_attrs},
        "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
        "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
        "duration_seconds": duration,
    }


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
    if not by_trial:
        return []
    ids = sorted(by_trial, key=lambda i: by_trial[i][0])  # by number, as Optuna lists them
    values = np.array([by_trial[i][1] for i in ids], dtype=float)
    signs = np.array([-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in directions])
    front = [ids[i] for i in np.flatnonzero(pareto_mask(values * signs))]
    front.sort(key=lambda i: by_trial[i][1][0], reverse=True)  # stable: ties stay by number
    return front[:top]


def pareto_mask(loss: np.ndarray) -> np.ndarray:
    """Rows of `loss` (to minimize, one column per objective) that no other row dominates;
    equal rows are all kept, as Optuna keeps them. A dominating row always sorts earlier
    lexicographically, so one pass against the front found so far is enough."""
    keep = np.zeros(len(loss), dtype=bool)
    front: list[np.ndarray] = []
    for i in np.lexsort(loss.T[::-1]):
        p = loss[i]
        if front:
            f = np.array(front)
            if np.any(np.all(f <= p, axis=1) & np.any(f < p, axis=1)):
                continue
        front.append(p)
        keep[i] = True
    return keep


def parse_state(state: str | None) -> tuple[TrialState, ...] | None:
    if state is None:
        return None
    if state.lower() not in STATES:
        raise HpoError(f"--state: unknown state {state!r}; use one of {', '.join(STATES)}")
    return (STATES[state.lower()],)


def to_json(records: list[dict[str, Any]]) -> str:
    return json.dumps(records, indent=2, default=str)


def to_csv(records: list[dict[str, Any]], params: list[str] | None = None,
           n_values: int | None = None) -> str:
    """Flattens params and values into columns; lists (seeds) become JSON strings. With the
    study's parameter names and objective count the columns are the same whatever the rows
    (a --state filter, an empty study); without them they follow the rows."""
    names = params if params is not None else sorted({k for r in records for k in r["params"]})
    n = n_values if n_values is not None else max((len(r["values"] or []) for r in records),
                                                  default=0)
    cols = ["number", "state", *(f"value_{i}" for i in range(n)),
            *(f"param_{k}" for k in names), *SUMMARY_ATTRS, "datetime_start",
            "datetime_complete", "duration_seconds"]
    rows = []
    for r in records:
        row = {k: v for k, v in r.items() if k not in ("params", "values")}
        for i, v in enumerate(r.get("values") or []):
            row[f"value_{i}"] = v
        row.update({f"param_{k}": v for k, v in r["params"].items()})
        rows.append({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def fmt(v: Any, kind: str = "") -> str:
    """One rounding rule for every table: percents to 2 decimals, seconds to 1, other floats
    to 4 significant digits."""
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if kind in ("val_removed", "percent"):
            return f"{v:.2f}"
        if kind in ("train_seconds", "cpu_seconds", "seconds"):
            return f"{v:.1f}"
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


SHORT = {"val_removed": "val %", "train_seconds": "train s", "cpu_seconds": "cpu s",
         "hidden_size": "hidden", "batch_size": "batch", "train_curves": "curves",
         "weight_decay": "wd", "grad_clip": "clip", "epochs_run": "ran",
         "rescored": "rescored val %"}


def trials_table(title: str, records: list[dict[str, Any]], metrics: list[str]) -> Table:
    """Trials as a table: train s is wall seconds per seed, cpu s its CPU seconds (they differ
    when other processes share the cores)."""
    params = sorted({k for r in records for k in r["params"]})
    table = Table(title=title, title_justify="left")
    extra = ["epochs_run", *(c for c in ("train_seconds", "cpu_seconds") if c not in metrics)]
    # Short headers keep the table readable in an 80-column terminal or a pipe.
    if any("rescored" in r for r in records):  # `hpo rescore` ran: its mean beside the value
        extra.insert(0, "rescored")
    for col in ["#", "state", *metrics, *params, *extra]:
        table.add_column(SHORT.get(col, col), justify="right" if col != "state" else "left",
                         no_wrap=True)
    for r in records:
        values = r["values"] or [None] * len(metrics)
        table.add_row(str(r["number"]), r["state"], *(fmt(v, m) for v, m in zip(
                          values, metrics, strict=False)),
                      *(fmt(r["params"].get(p)) for p in params),
                      *(_rescored(r) if c == "rescored" else fmt(r.get(c), c) for c in extra))
    return table


def _rescored(r: dict[str, Any]) -> str:
    x = r.get("rescored")
    return "-" if x is None else f"{x['val_mean']:.2f}±{x['val_std']:.2f}"


def with_rescores(study: optuna.Study, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each record's `hpo rescore` result (mean and std over its seeds on its validation
    curves), where there is one."""
    kept = study.user_attrs.get(RESCORE_ATTR) or {}
    for r in records:
        if str(r["number"]) in kept:
            x = kept[str(r["number"])]
            r["rescored"] = {k: x[k] for k in ("val_mean", "val_std", "seeds", "val_curves")}
    return records
