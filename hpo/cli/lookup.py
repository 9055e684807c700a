"""`hpo studies`, `hpo best` and `hpo trials`: reading a study's results. The two a user runs
most are answered in a fraction of a second: from a SQLite file they are read without Optuna
(hpo.results.sqlite_reader), and the process entry (hpo.cli.main) imports this sub-app alone
for them. Any other storage, or a file the reader
cannot answer from, goes through Optuna (hpo.results.optuna_reader, imported only then) with the
same output.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from hpo import env
from hpo.cli.common import (
    MAX_COUNT,
    JsonOpt,
    StorageOpt,
    StudyArg,
    app,
    emit_json,
    load_study,
    open_storage_url,
    out,
)
from hpo.errors import HpoError, one_line
from hpo.results import sqlite_reader
from hpo.results.records import fmt, pm, to_csv, to_json, trials_table


@app.command()
def studies(storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """List the studies in the storage."""
    rows = sqlite_reader.studies(env.resolve_url(storage))
    if rows is None:
        from hpo.results.optuna_reader import studies as listed

        rows = listed(open_storage_url(storage)[1])
    if as_json:
        emit_json(rows)
        return
    table = Table(title_justify="left")
    cols = ["name", "directions", "finished", "budget", "running", "failed", "interrupted",
            "best_value"]
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*(one_line(fmt(",".join(r[c]) if c == "directions" else r[c],
                            "percent" if c == "best_value" and r["directions"] == ["maximize"]
                            else "")) for c in cols))
    out().print(table)


@app.command()
def best(
    study: StudyArg,
    storage: StorageOpt = None,
    top: Annotated[int, typer.Option(min=1, max=MAX_COUNT, help="How many trials.")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """The best trials (the Pareto front for two objectives)."""
    found = sqlite_reader.best(env.resolve_url(storage), study, top)
    if found is None:
        from hpo.results.optuna_reader import best_records

        found = best_records(study, open_storage_url(storage)[1], top)
    metrics, records, rescored = found
    if as_json:
        emit_json(records)
        return
    if not records:
        raise HpoError(f"study '{study}' has no complete trial yet")
    out().print(trials_table(f"best of '{study}'", records, metrics))
    if rescored:
        _say_rescored(rescored)


def _say_rescored(rescored: dict[str, Any]) -> None:
    first = max(rescored.values(), key=lambda r: r["val_mean"])
    typer.echo(f"rescored (`hpo rescore`): trial {first['number']} is best on "
               f"{first['seeds']} seed(s) x {first['val_curves']} validation curves, "
               f"{pm(first['val_mean'], first['val_std'], first['seeds'])} %; "
               f"{len(rescored)} trial(s) rescored")


FORMATS = ("table", "json", "csv")


@app.command()
def trials(
    study: StudyArg,
    storage: StorageOpt = None,
    state: Annotated[str | None, typer.Option(
        metavar="STATE",
        help="Only trials in this state: complete, pruned, fail, running or waiting.")] = None,
    fmt_: Annotated[str, typer.Option("--format", metavar="FORMAT",
                                      help="table, json or csv.")] = "table",
) -> None:
    """All trials of a study, as a table, JSON or CSV."""
    from hpo.results.optuna_reader import parse_state, trial_record

    if fmt_ not in FORMATS:
        raise HpoError(f"--format: unknown format {fmt_!r}; use table, json or csv")
    states = parse_state(state)
    s, spec = load_study(study, storage)
    records = [trial_record(t) for t in s.get_trials(deepcopy=False, states=states)]
    if fmt_ == "json":
        sys.stdout.write(to_json(records) + "\n")
    elif fmt_ == "csv":
        sys.stdout.write(to_csv(records, [p.name for p in spec.space], len(spec.metrics)))
    else:
        out().print(trials_table(f"trials of '{study}'", records, list(spec.metrics)))
