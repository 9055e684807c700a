"""Read-only views of studies: summaries, best trials, trial listings (table, JSON, CSV)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from hpo.errors import HpoError
from hpo.study import BUDGET_ATTR, SPEC_ATTR

SUMMARY_ATTRS = ("train_seconds", "epochs_run", "n_params", "val_std", "pruned_at_epoch",
                 "status", "reason", "fail_reason", "host", "pid", "seeds")
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


def studies(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    out = []
    for s in storage.get_all_studies():
        n = {state: 0 for state in TrialState}
        for t in storage.get_all_trials(s._study_id, deepcopy=False):
            n[t.state] += 1
        best = None
        if len(s.directions) == 1 and n[TrialState.COMPLETE]:
            with contextlib.suppress(ValueError):
                best = storage.get_best_trial(s._study_id).value
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


def best_trials(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """Single objective: the top K complete trials; two objectives: the Pareto front."""
    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: t.values[0], reverse=True)[:top]
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    return sorted(done, key=lambda t: (sign * t.values[0], t.number))[:top]


def parse_state(state: str | None) -> tuple[TrialState, ...] | None:
    if state is None:
        return None
    if state.lower() not in STATES:
        raise HpoError(f"--state: unknown state {state!r}; use one of {', '.join(STATES)}")
    return (STATES[state.lower()],)


def to_json(records: list[dict[str, Any]]) -> str:
    return json.dumps(records, indent=2, default=str)


def to_csv(records: list[dict[str, Any]]) -> str:
    """Flattens params and values into columns; lists (seeds) become JSON strings."""
    rows = []
    for r in records:
        row = {k: v for k, v in r.items() if k not in ("params", "values")}
        for i, v in enumerate(r.get("values") or []):
            row[f"value_{i}"] = v
        row.update({f"param_{k}": v for k, v in r["params"].items()})
        rows.append({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def trials_table(title: str, records: list[dict[str, Any]], metrics: list[str]) -> Table:
    params = sorted({k for r in records for k in r["params"]})
    table = Table(title=title, title_justify="left")
    for col in ["#", "state", *metrics, *params, "epochs run", "seconds"]:
        table.add_column(col, justify="right" if col != "state" else "left")
    for r in records:
        values = r["values"] or [None] * len(metrics)
        table.add_row(str(r["number"]), r["state"], *(fmt(v) for v in values),
                      *(fmt(r["params"].get(p)) for p in params),
                      fmt(r.get("epochs_run")), fmt(r.get("train_seconds")))
    return table
