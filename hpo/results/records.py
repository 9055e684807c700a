"""Trials as plain records, and their one rendering: table, JSON and CSV.

A record is what a user scripts against (`hpo best --json`, `hpo trials --format json|csv`,
the table after a search). It is built from a trial's fields, not from Optuna's FrozenTrial, so
both readers (hpo.results.optuna_reader and hpo.results.sqlite_reader, which answers the light
commands without Optuna) make the very same records.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.table import Table

# The one vocabulary of trial fields, shared by `best --json`, `trials` (JSON and CSV) and
# `train --json`: val_removed, model_val_removed, train_seconds (wall, per seed), cpu_seconds...
SUMMARY_ATTRS = ("model_val_removed", "train_seconds", "cpu_seconds", "epochs_run", "n_params",
                 "val_std", "pruned_at_epoch", "status", "reason", "fail_reason",
                 "artifact_error", "retry_of", "host", "pid", "seeds")


def record(number: int, state: str, values: list[float] | None, params: dict[str, Any],
           user_attrs: Mapping[str, Any], start: datetime | None,
           complete: datetime | None) -> dict[str, Any]:
    """One trial as plain JSON-able data; `state` is Optuna's state name (COMPLETE...)."""
    duration = (complete - start).total_seconds() if complete and start else None
    return {
        "number": number,
        "state": state.lower(),
        "values": values,
        "params": params,
        **{k: user_attrs[k] for k in SUMMARY_ATTRS if k in user_attrs},
        "datetime_start": start.isoformat() if start else None,
        "datetime_complete": complete.isoformat() if complete else None,
        "duration_seconds": duration,
    }


def with_rescores(rescored: Mapping[str, Any] | None, records: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """Each record's `hpo rescore` result (mean and std over its seeds on its validation
    curves), from the study's rescore attr (trial number as a string -> result)."""
    kept = rescored or {}
    for r in records:
        if str(r["number"]) in kept:
            x = kept[str(r["number"])]
            r["rescored"] = {k: x[k] for k in ("val_mean", "val_std", "seeds", "val_curves")}
    return records


def strict(obj: Any) -> Any:
    """The object with every infinity or NaN as the string Python writes for it ("inf",
    "-inf", "nan"): JSON has no such numbers, and strict parsers refuse `Infinity`."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict(v) for v in obj]
    return obj


def to_json(records: list[dict[str, Any]]) -> str:
    return json.dumps(strict(records), indent=2, default=str, allow_nan=False)


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


def pareto_best(by_trial: Mapping[int, tuple[int, list[float]]], maximize: list[bool],
                top: int) -> list[int]:
    """The `top` trials of the Pareto front of `by_trial` (trial id -> (number, values)), the
    largest first objective first, whatever its direction (as `hpo best` always listed them);
    ties stay in trial-number order, as Optuna lists them."""
    ids = sorted(by_trial, key=lambda i: by_trial[i][0])
    signs = [-1.0 if m else 1.0 for m in maximize]
    loss = [tuple(s * v for s, v in zip(signs, by_trial[i][1], strict=True)) for i in ids]
    front = [ids[i] for i in pareto_front(loss)]
    front.sort(key=lambda i: by_trial[i][1][0], reverse=True)  # stable
    return front[:top]


def pareto_front(points: Sequence[tuple[float, ...]]) -> list[int]:
    """Indices of the `points` (losses, to minimize) that no other point dominates; equal points
    are all kept, as Optuna keeps them. A dominating point always sorts earlier
    lexicographically, so one pass against the front found so far is enough."""
    front: list[tuple[float, ...]] = []
    keep = []
    for i in sorted(range(len(points)), key=lambda j: points[j]):
        p = points[i]
        if any(f != p and all(a <= b for a, b in zip(f, p, strict=True)) for f in front):
            continue
        front.append(p)
        keep.append(i)
    return sorted(keep)


def pm(mean: float, std: float, n: int) -> str:
    """A mean over n seeds, with its spread where there is one."""
    return f"{mean:.2f}" if n < 2 else f"{mean:.2f} ± {std:.2f}"
