"""Trials as plain records, and their one rendering: table, JSON and CSV, in one vocabulary.

A record is what a user scripts against (`hpo best --json`, `hpo trials --format json|csv`,
the table after a search). It is built from a trial's fields, not from Optuna's FrozenTrial, so
both readers (hpo.results.optuna_reader and hpo.results.sqlite_reader, which answers the light
commands without Optuna) make the very same records. Its names are Optuna's where Optuna has
one: states as TrialState spells them, the objective values keyed by the study's metric names
(as Optuna's CLI keys them), and CSV columns flattened as trials_dataframe flattens them
(values_<metric name>, params_<name>); each field is explained in TRIAL_FIELDS, which the
commands' --help shows.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table

# Optuna's trial states, as Optuna spells them (TrialState names) in every output.
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
# The stored trial user attrs a record shows, in this order, each under its stored key but for
# those in SHOWN_AS: the training's own end ("completed", "stopped", "diverged") is not a trial
# state, so it is not called `status` beside `state`.
SUMMARY_ATTRS = ("model_val_removed", "train_seconds", "cpu_seconds", "epochs_run", "n_params",
                 "val_std", "pruned_at_epoch", "status", "reason", "fail_reason",
                 "artifact_error", "retry_of", "host", "pid", "seeds")
SHOWN_AS = {"status": "training_ended"}
SUMMARY_FIELDS = tuple(SHOWN_AS.get(k, k) for k in SUMMARY_ATTRS)
TIMES = ("datetime_start", "datetime_complete", "duration_seconds")

# The one vocabulary of `hpo best`, `hpo trials` and the table after a search: each field once,
# the same in JSON keys, CSV headers (values and params flattened as Optuna's trials_dataframe
# does: values_<metric name>, params_<name>) and table headers. Each command's --help shows it.
TRIAL_FIELDS = {
    "number": "the trial's number in its study (# in the table)",
    "state": "the trial's state as Optuna spells it: " + ", ".join(STATES),
    "values": "the objective values, keyed by the study's metric names as Optuna's own CLI "
              "keys them (e.g. '% noise removed on validation'; 0, 1... for a study without "
              "names); in CSV one column values_<name>, in the table a column headed by the "
              "name (values_0... for unnamed ones)",
    "params": "the trial's hyperparameters by name; in CSV one column params_<name>, in the "
              "table a column headed by the name",
    "model_val_removed": "% noise removed on validation by the trial's uploaded model file",
    "train_seconds": "wall-clock seconds of training, per seed",
    "cpu_seconds": "CPU seconds of training, per seed (below train_seconds when other "
                   "processes share the cores)",
    "epochs_run": "epochs actually trained (fewer than epochs when pruned or diverged)",
    "n_params": "the model's trainable parameters",
    "val_std": "standard deviation of the validation score over the trial's seeds",
    "pruned_at_epoch": "the epoch a PRUNED trial stopped after",
    "training_ended": "how training ended when it did not run its course: diverged (the "
                      "training loss became inf or nan; the trial is then PRUNED)",
    "reason": "why the trial was pruned or diverged",
    "fail_reason": "why the trial FAILed ('interrupted...': stopped by Ctrl-C or SIGTERM, its "
                   "parameters re-queued)",
    "artifact_error": "why its picture or model file could not be uploaded",
    "retry_of": "the number of the trial this one retries",
    "host": "the machine its worker ran on",
    "pid": "its worker's process id",
    "seeds": "the training seed of each repeat",
    "datetime_start": "when the trial started (ISO 8601, local time)",
    "datetime_complete": "when it finished",
    "duration_seconds": "datetime_complete minus datetime_start, in seconds",
}
RESCORED_FIELD = {"rescored": "`hpo rescore`'s mean and standard deviation of the % noise "
                              "removed over more seeds and validation curves (JSON: val_mean, "
                              "val_std, seeds, val_curves)"}
STUDY_FIELDS = {
    "name": "the study's name",
    "directions": "maximize or minimize, one per objective",
    "metric_names": "the objectives' names, as Optuna's CLI and the dashboard show them (0, "
                    "1... when the study has none)",
    "budget": "the finished trials the study asks for (`hpo search --trials`)",
    "finished": "COMPLETE plus PRUNED trials: what the budget counts",
    "complete": "trials in state COMPLETE", "pruned": "trials in state PRUNED",
    "running": "trials in state RUNNING", "waiting": "trials in state WAITING (queued)",
    "failed": "trials in state FAIL, less the interrupted ones",
    "interrupted": "FAIL trials stopped by Ctrl-C or SIGTERM, whose parameters were re-queued",
    "best_values": "the best COMPLETE trial's value, keyed by metric name (none with two "
                   "objectives: `hpo best` shows their Pareto front)",
    "made_by_hpo": "true for a study hpo created (it holds an hpo definition); only those "
                   "answer `hpo best` and `hpo trials`",
}


def glossary(fields: Mapping[str, str], heading: str) -> str:
    """Help text listing each field and what it means (an epilog of the command's --help)."""
    return heading + "\n\n" + "\n".join(f"{k}: {v}" for k, v in fields.items())


def objective_names(stored: Any, n: int) -> list[str]:
    """The study's objectives named as Optuna names them: its metric names
    (Study.set_metric_names, what Optuna's CLI keys values by) when they are n distinct texts,
    else Optuna's default, the objective's index (its trials_dataframe column values_0...)."""
    if (isinstance(stored, list) and len(stored) == n and len(set(stored)) == n
            and all(isinstance(s, str) and s for s in stored)):
        return list(stored)
    return [str(i) for i in range(n)]


def value_column(name: str) -> str:
    """An objective's CSV column, as Optuna's trials_dataframe flattens it."""
    return f"values_{name}"


def value_header(name: str) -> str:
    """An objective's table header: its metric name, or its CSV column when it has none."""
    return value_column(name) if name.isdecimal() else name


def record(number: int, state: str, values: Sequence[float] | None, params: dict[str, Any],
           user_attrs: Mapping[str, Any], start: datetime | None,
           complete: datetime | None, names: Sequence[str]) -> dict[str, Any]:
    """One trial as plain JSON-able data; `state` is Optuna's state name (COMPLETE...), `names`
    the study's objective names (objective_names)."""
    duration = (complete - start).total_seconds() if complete and start else None
    return {
        "number": number,
        "state": state,
        "values": dict(zip(names, values if values is not None else [None] * len(names),
                           strict=False)),
        "params": params,
        **{SHOWN_AS.get(k, k): user_attrs[k] for k in SUMMARY_ATTRS if k in user_attrs},
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


def to_csv(records: list[dict[str, Any]], params: list[str], names: Sequence[str]) -> str:
    """Values and params flattened into columns as Optuna's trials_dataframe names them
    (values_<metric name>, params_<name>); lists (seeds) become JSON strings. The columns come
    from the study's parameters and objectives, so they are the same whatever the rows (a
    --state filter, an empty study)."""
    cols = ["number", "state", *(value_column(n) for n in names),
            *(f"params_{k}" for k in params), *SUMMARY_FIELDS, *TIMES]
    rows = []
    for r in records:
        row = {k: v for k, v in r.items() if k not in ("params", "values")}
        row.update({value_column(k): v for k, v in r["values"].items()})
        row.update({f"params_{k}": v for k, v in r["params"].items()})
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


class TrialsTable:
    """Trials as a table whose headers are the JSON and CSV names: the objectives by their
    metric names, then the parameters, then epochs_run, train_seconds and cpu_seconds. Where
    that is wider than the terminal, the metric names wrap at their spaces and, if that is not
    enough, every header breaks after its underscores (train_ / seconds) in a table without
    inner borders: the same names, on more lines."""

    def __init__(self, title: str, records: list[dict[str, Any]], metrics: list[str],
                 names: Sequence[str]) -> None:
        self.title, self.records, self.metrics, self.names = title, records, metrics, names
        self.params = sorted({k for r in records for k in r["params"]})
        extra = ["epochs_run", *(c for c in ("train_seconds", "cpu_seconds") if c not in metrics)]
        if any("rescored" in r for r in records):  # `hpo rescore` ran: its mean beside the value
            extra.insert(0, "rescored")
        self.extra = extra

    def _headers(self) -> list[str]:
        return ["#", "state", *map(value_header, self.names), *self.params, *self.extra]

    def _rows(self) -> list[list[str]]:
        rows = []
        for r in self.records:
            rows.append([str(r["number"]), r["state"],
                         *(fmt(v, m) for v, m in zip(r["values"].values(), self.metrics,
                                                      strict=False)),
                         *(fmt(r["params"].get(p)) for p in self.params),
                         *(_rescored(r) if c == "rescored" else fmt(r.get(c), c)
                           for c in self.extra)])
        return rows

    def _fits(self, width: int) -> bool:
        headers, rows = self._headers(), self._rows()
        need = 3 * len(headers) + 1  # the borders and each cell's padding
        for i, h in enumerate(headers):
            cells = [cell_len(row[i]) for row in rows if i < len(row)]
            wraps = 2 <= i < 2 + len(self.names)  # a metric name wraps at its spaces
            need += max([max(map(cell_len, h.split())) if wraps else cell_len(h), *cells])
        return need <= width

    def table(self, narrow: bool = False) -> Table:
        table = Table(title=self.title, title_justify="left") if not narrow else Table(
            title=self.title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
            pad_edge=False, collapse_padding=True)
        for i, h in enumerate(self._headers()):
            wraps = 2 <= i < 2 + len(self.names)
            table.add_column(h.replace("_", "_\n") if narrow and not wraps else h,
                             justify="left" if h == "state" else "right", no_wrap=not wraps)
        for row in self._rows():
            table.add_row(*row)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(narrow=not self._fits(options.max_width))


def trials_table(title: str, records: list[dict[str, Any]], metrics: list[str],
                 names: Sequence[str] | None = None) -> TrialsTable:
    """Trials as a table (TrialsTable); `metrics` are the study's metric keys (val_removed...),
    which set each value's rounding, `names` its objective names (objective_names). Without
    them, the names hpo gives the metrics when it creates a study."""
    if names is None:
        from hpo.study.metrics import METRIC_LABELS

        names = [METRIC_LABELS.get(m, m) for m in metrics]
    return TrialsTable(title, records, metrics, names)


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
