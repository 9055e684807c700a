"""`hpo studies` and `hpo best`, the commands a user runs most, answered in a fraction of a
second: from a SQLite file they are read without Optuna (hpo.lightread), and the process entry
(hpo.cli.main) imports this sub-app alone for them. Any other storage, or a file the reader
cannot answer from, goes through Optuna (hpo.queries, imported only then) with the same output.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from hpo import env, lightread
from hpo.cli.common import (
    MAX_COUNT,
    JsonOpt,
    StorageOpt,
    StudyArg,
    app,
    emit_json,
    open_storage_url,
    out,
)
from hpo.errors import HpoError
from hpo.records import fmt, pm, trials_table


@app.command()
def studies(storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """List the studies in the storage."""
    rows = lightread.studies(env.resolve_url(storage))
    if rows is None:
        from hpo.queries import studies as listed  # Optuna's path

        rows = listed(open_storage_url(storage)[1])
    if as_json:
        emit_json(rows)
        return
    table = Table(title_justify="left")
    cols = ["name", "directions", "finished", "budget", "running", "failed", "best_value"]
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*(fmt(",".join(r[c]) if c == "directions" else r[c],
                            "percent" if c == "best_value" and r["directions"] == ["maximize"]
                            else "") for c in cols))
    out().print(table)


@app.command()
def best(
    study: StudyArg,
    storage: StorageOpt = None,
    top: Annotated[int, typer.Option(min=1, max=MAX_COUNT, help="How many trials.")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """The best trials (the Pareto front for two objectives)."""
    found = lightread.best(env.resolve_url(storage), study, top)
    if found is None:
        from hpo.queries import best_records  # Optuna's path, and its errors

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
