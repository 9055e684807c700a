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
from hpo.errors import HpoError, one_line, plural
from hpo.results import sqlite_reader
from hpo.results.records import (
    RESCORED_FIELD,
    STUDY_FIELDS,
    TRIAL_FIELDS,
    fmt,
    glossary,
    pm,
    to_csv,
    to_json,
    trials_table,
)

# The trials table's columns, named as in JSON and CSV (hpo.results.records.TrialsTable).
TABLE = ("the table shows #, state, each objective, the params, {}epochs_run, train_seconds and "
         "cpu_seconds under these names, broken after underscores in a narrow terminal")
STUDY_COLUMNS = ("name", "metric_names", "directions", "finished", "budget", "running",
                 "failed", "interrupted", "best_values")


@app.command(epilog=glossary(STUDY_FIELDS, "Columns (the table shows " + ", ".join(
    STUDY_COLUMNS) + "; --json every field):"))
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
    for c in STUDY_COLUMNS:
        table.add_column(c)
    for r in rows:
        table.add_row(*(one_line(_cell(r, c)) for c in STUDY_COLUMNS))
    out().print(table)


def _cell(row: dict[str, Any], column: str) -> str:
    value = row[column]
    if column in ("metric_names", "directions"):
        return ", ".join(value)
    if column == "best_values":
        return "-" if value is None else ", ".join(
            fmt(v, "percent" if row["directions"] == ["maximize"] else "")
            for v in value.values())
    return fmt(value)


@app.command(epilog=glossary({**TRIAL_FIELDS, **RESCORED_FIELD},
                             f"Fields (JSON keys; {TABLE.format('rescored, ')}):"))
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
    metrics, names, records, rescored = found
    if as_json:
        emit_json(records)
        return
    if not records:
        raise HpoError(f"study '{study}' has no complete trial yet")
    out().print(trials_table(f"best of '{study}'", records, metrics, names))
    if rescored:
        _say_rescored(rescored)


def _say_rescored(rescored: dict[str, Any]) -> None:
    first = max(rescored.values(), key=lambda r: r["val_mean"])
    typer.echo(f"rescored (`hpo rescore`): trial {first['number']} is best on "
               f"{plural(first['seeds'], 'seed')} x "
               f"{plural(first['val_curves'], 'validation curve')}"
               f", {pm(first['val_mean'], first['val_std'], first['seeds'])} %; "
               f"{plural(len(rescored), 'trial')} rescored")


FORMATS = ("table", "json", "csv")


@app.command(epilog=glossary(TRIAL_FIELDS, "Fields (JSON keys and CSV headers, CSV flattening "
                                           f"values and params; {TABLE.format('')}):"))
def trials(
    study: StudyArg,
    storage: StorageOpt = None,
    state: Annotated[str | None, typer.Option(
        metavar="STATE",
        help="Only trials in this state: COMPLETE, PRUNED, FAIL, RUNNING or WAITING (any "
             "case).")] = None,
    fmt_: Annotated[str, typer.Option("--format", metavar="FORMAT",
                                      help="table, json or csv.")] = "table",
) -> None:
    """All trials of a study, as a table, JSON or CSV."""
    from hpo.results.optuna_reader import names_of, parse_state, trial_record

    if fmt_ not in FORMATS:
        raise HpoError(f"--format: unknown format {fmt_!r}; use table, json or csv")
    states = parse_state(state)
    s, spec = load_study(study, storage)
    names = names_of(s)
    records = [trial_record(t, names) for t in s.get_trials(deepcopy=False, states=states)]
    if fmt_ == "json":
        sys.stdout.write(to_json(records) + "\n")
    elif fmt_ == "csv":
        sys.stdout.write(to_csv(records, [p.name for p in spec.space], names))
    else:
        out().print(trials_table(f"trials of '{study}'", records, list(spec.metrics), names))
