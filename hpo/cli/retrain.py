"""`hpo evaluate`, `hpo rescore` and `hpo replay`: the commands that retrain recorded
configurations (torch, imported inside each command)."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from rich.table import Table

from hpo import resources
from hpo.cli.common import (
    MAX_COUNT,
    JsonOpt,
    StorageOpt,
    StudyArg,
    ThreadsOpt,
    app,
    emit_json,
    load_study,
    out,
    prog,
    threads_or_env,
    warn,
)
from hpo.cli.progress import job_bar, wanted
from hpo.errors import plural
from hpo.results.records import pm

# Options of the commands that retrain the best trials (evaluate, rescore).
TopOpt = Annotated[int, typer.Option(min=1, max=1000, help="How many of the best trials.")]
SeedsOpt = Annotated[int, typer.Option(min=1, max=100, help="Retrainings per configuration.")]
PoolOpt = Annotated[int | None, typer.Option(min=1, max=1024,
                                             help="Processes (default: one per core).")]


@app.command("evaluate")
def evaluate_cmd(
    study: StudyArg,
    storage: StorageOpt = None,
    top: TopOpt = 3,
    seeds: SeedsOpt = 3,
    workers: PoolOpt = None,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrain the top configurations on several seeds; report held-out test % removed."""
    from hpo.run.retrain import evaluate_top

    s, spec = load_study(study, storage, trains=True)
    n, threads = _pool(spec, workers, top * seeds, threads_or_env(threads))
    with job_bar(top * seeds, "retraining on held-out", wanted(as_json)) as done:
        rows = evaluate_top(s, spec, top, seeds, n, threads, skipped=warn, done=done)
    if as_json:
        emit_json(rows)
        return
    over = f"over {seeds} seeds" if seeds > 1 else "one seed"
    table = Table(title=f"'{study}': held-out test, {over}", title_justify="left")
    for c in ("#", "params", "search val %", "val %", "test %", "train_seconds", "cpu_seconds"):
        table.add_column(c, no_wrap=c != "params")
    for r in rows:
        table.add_row(str(r["number"]), _params(r["params"]), f"{r['search_value']:.2f}",
                      pm(r["val_mean"], r["val_std"], seeds),
                      pm(r["test_mean"], r["test_std"], seeds),
                      f"{r['train_seconds']:.1f}", f"{r['cpu_seconds']:.1f}")
    out().print(table)
    typer.echo("train_seconds: wall seconds per seed; cpu_seconds: CPU seconds per seed (lower "
               "than wall when other processes share the cores)")


RESCORE_CURVES = 500  # 10x the exercise's 50: ranks the top five apart (issue 15)


@app.command("rescore")
def rescore_cmd(
    study: StudyArg,
    storage: StorageOpt = None,
    top: TopOpt = 5,
    seeds: SeedsOpt = 3,
    val_curves: Annotated[int | None, typer.Option(
        min=1, max=100_000, help="Validation curves to score on (default 500; a data.file "
                                 "study: its file's validation signals).")] = None,
    workers: PoolOpt = None,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-score the top trials on more seeds and validation curves before calling one best."""
    from hpo.run.retrain import rescore_top

    s, spec = load_study(study, storage, trains=True)
    curves = val_curves if val_curves is not None else (
        None if spec.file_data() is not None else RESCORE_CURVES)
    n, threads = _pool(spec, workers, top * seeds, threads_or_env(threads))
    with job_bar(top * seeds, "rescoring", wanted(as_json)) as done:
        rows = rescore_top(s, spec, top, seeds, curves, n, threads, skipped=warn, done=done)
    if as_json:
        emit_json(rows)
        return
    table = Table(title=f"'{study}': rescored on {plural(seeds, 'seed')} x "
                        f"{plural(rows[0]['val_curves'], 'validation curve')} (test curves unseen)",
                  title_justify="left")
    for c in ("#", "params", "search val %", "rescored val %"):
        table.add_column(c, no_wrap=c != "params")
    for r in rows:
        table.add_row(str(r["number"]), _params(r["params"]), f"{r['search_value']:.2f}",
                      pm(r["val_mean"], r["val_std"], seeds))
    out().print(table)
    hpo = prog()
    typer.echo(f"best after rescoring: trial {rows[0]['number']}; `{hpo} best {study}` shows it, "
               f"`{hpo} evaluate {study}` scores it on the held-out test curves")


def _pool(spec: Any, workers: int | None, jobs: int, threads: int) -> tuple[int, int]:
    """Processes (default: one per core, never more than jobs) and threads this machine can
    run, as `hpo search --workers` is capped: by memory, cores and the pids limit."""
    from hpo.study.construct import memory_estimate

    wanted = workers if workers is not None else min(jobs, os.cpu_count() or 1)
    n, capped = resources.worker_cap(wanted, memory_estimate(spec).bytes, threads)
    if capped:
        warn(capped)
    resources.check_threads(n, threads)
    return n, threads


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items())


@app.command("replay")
def replay_cmd(
    study: StudyArg,
    trial: Annotated[int, typer.Argument(min=0, max=MAX_COUNT, help="Trial number.",
                                         metavar="TRIAL")],
    storage: StorageOpt = None,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retrain one complete trial from its recorded seeds; exit 1 if the scores differ."""
    from hpo.run.retrain import replay

    s, spec = load_study(study, storage, trains=True)
    seeds = len(s.trials[trial].user_attrs.get("seeds", [])) if trial < len(s.trials) else 0
    with job_bar(seeds, f"replaying trial {trial}", wanted(as_json)) as done:
        r = replay(s, spec, trial, _pool(spec, 1, 1, threads_or_env(threads))[1], done)
    if as_json:
        emit_json(r)
    else:
        typer.echo(f"trial {trial} {r['params']}: recorded {r['recorded']}, replayed "
                   f"{r['replayed']} -> {'identical' if r['identical'] else 'DIFFERENT'}")
    if not r["identical"]:
        raise typer.Exit(1)
