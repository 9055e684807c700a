"""`hpo create`, `hpo search` and `hpo worker`: making a study and running its trials.

`create` and `search` validate the whole study file (by constructing what workers construct)
before the storage is opened, and create the study atomically; a SQLite file that a failed
creation made is removed again. `search` itself trains nothing and never imports torch; the
workers it starts do.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from hpo import env, resources
from hpo.cli.common import (
    MAX_COUNT,
    StorageOpt,
    StudyArg,
    ThreadsOpt,
    app,
    err,
    out,
    prog,
    say_error,
    threads_or_env,
    unreadable,
    warn,
)
from hpo.env import resolve_url
from hpo.errors import HpoError, first_line
from hpo.results.artifacts import resolve_dir
from hpo.results.optuna_reader import best_trials, names_of, trial_record
from hpo.results.records import trials_table
from hpo.run.retrying import cause
from hpo.run.supervisor import check_logs, log_dir, supervise
from hpo.store import heartbeat
from hpo.store.engines import open_storage, undo_new_sqlite_file
from hpo.store.studies import Creation, counts, ensure_study
from hpo.store.urls import mask
from hpo.study.construct import memory_estimate
from hpo.study.parse import load_study_file
from hpo.study.spec import StudySpec

StudyFileArg = Annotated[Path, typer.Argument(help="A study file, e.g. studies/smoke.toml.",
                                              metavar="STUDY_FILE")]
TrialsOpt = Annotated[int | None, typer.Option(
    min=1, max=10**9, help="Budget of the whole study (finished trials, all workers, all runs).")]


def _create(spec: StudySpec, storage: str | None, trials: int | None) -> tuple[str, Creation]:
    url = resolve_url(storage)
    with undo_new_sqlite_file(url):
        creation = ensure_study(spec, open_storage(url, create=True, heartbeat=False), trials)
    if creation.message:
        warn(creation.message)
    if (differ := heartbeat.note(creation.study)) is not None:
        warn(differ)
    return url, creation


def next_steps(study: str, storage: str | None) -> str:
    """What to do next, as commands that run as printed: hpo as the user invoked it, and the
    storage as the user gave it: nothing when it came from HPO_STORAGE (still set), a stand-in
    when the URL holds a password (never printed, and `***` would not connect)."""
    from_env = storage is not None and storage == env.raw(env.STORAGE)
    secret = storage is not None and mask(storage) != storage
    at = ("" if not storage or from_env else " --storage URL" if secret
          else f" --storage {shlex.quote(storage)}")
    hpo = prog()
    return "\n".join([
        "next:" + ("  (URL: the storage URL you gave; its password is not printed here)"
                   if at == " --storage URL" else ""),
        f"  browse trials, curves, pictures, models:  {hpo} dashboard{at}",
        f"  the best trials, for scripts:             {hpo} best {study}{at} --json",
        f"  use the best model on your signals:       {hpo} export {study}{at} --out best.pt && "
        f"{hpo} denoise --model best.pt --input noisy.csv --output clean.csv",
        f"  retrain the best on 3 seeds, held out:    {hpo} evaluate {study}{at}",
    ])


@app.command()
def create(study_file: StudyFileArg, storage: StorageOpt = None, trials: TrialsOpt = None
           ) -> None:
    """Create the study (idempotent) so that workers anywhere can join it."""
    url, c = _create(load_study_file(study_file), storage, trials)
    typer.echo(f"study '{c.study.study_name}' ready on {mask(url)} (budget {c.budget} trials"
               f"{'; created now' if c.created else ''})")


@app.command()
def search(
    study_file: StudyFileArg,
    workers: Annotated[int, typer.Option(min=1, max=MAX_COUNT,
                                         help="Worker processes on this machine (capped "
                                              "by its memory and cores).")] = 2,
    trials: TrialsOpt = None,
    storage: StorageOpt = None,
    timeout: Annotated[float | None, typer.Option(
        min=0, max=10 * 365 * 86400, help="Start no new trial after this many seconds.")] = None,
    threads: ThreadsOpt = None,
    top: Annotated[int, typer.Option(min=1, max=MAX_COUNT,
                                     help="Best trials to print at the end.")] = 5,
) -> None:
    """Run a parallel search: create the study once, start workers, show progress."""
    spec = load_study_file(study_file)  # every check that needs no storage comes first
    workers, capped = resources.worker_cap(workers, memory_estimate(spec).bytes)
    threads = threads_or_env(threads)
    resources.check_threads(workers, threads)
    check_logs(log_dir(resolve_url(storage)), spec.name, workers)  # before the study is made
    resolve_dir(None, resolve_url(storage))  # the workers' artifact directory, as they will
    url, c = _create(spec, storage, trials)
    done = counts(c.study)
    if done.done:  # nothing to run: say so and start no worker (the warm ones end unused)
        _print_best(c.study, spec, top)
        typer.echo(f"{done.finished}/{done.budget} trials finished: the budget is already met, "
                   f"so no worker was started; raise it with --trials N to search on")
        typer.echo(next_steps(c.study.study_name, storage))
        return
    if capped:
        warn(capped)
    console = Console(stderr=True, emoji=False)
    outcome = supervise(c.study, url, workers, threads, log_dir(url), timeout,
                        console)
    if outcome.lost is not None:  # never "finished": what it would count is not stored
        say_error(outcome.lost)
        raise typer.Exit(1)
    records = _print_best(c.study, spec, top)
    typer.echo(f"{outcome.finished}/{outcome.budget} trials finished")
    if outcome.recovered:
        typer.echo(f"failed and re-queued {'trial' if len(outcome.recovered) == 1 else 'trials'} "
                   f"{', '.join(map(str, outcome.recovered))}, "
                   "which exited workers left running")
    for line in [*outcome.worker_errors, *([outcome.stuck] if outcome.stuck else [])]:
        say_error(line)
    if outcome.interrupted:
        typer.echo("interrupted: run the same command again to resume toward the budget")
        raise typer.Exit(130)
    if outcome.worker_errors:
        raise typer.Exit(1)
    if timeout is not None and outcome.finished < outcome.budget:
        # The budget was not met because the user asked so: say it, and how to go on.
        typer.echo(f"--timeout {timeout:g} s reached before the budget: run the same command "
                   "again (without --timeout, or with a longer one) to continue")
    if records:
        typer.echo(next_steps(c.study.study_name, storage))


def _print_best(study: Any, spec: StudySpec, top: int) -> list[dict[str, Any]]:
    names = names_of(study)
    records = [trial_record(t, names) for t in best_trials(study, top)]
    if records:
        out().print(trials_table(f"best trials of '{study.study_name}'", records,
                                 list(spec.metrics), names))
    return records


@app.command()
def worker(
    study: StudyArg,
    storage: StorageOpt = None,
    threads: ThreadsOpt = None,
    worker_index: Annotated[int | None, typer.Option(
        min=0, max=MAX_COUNT,
        help="Seeds this worker's sampler (hpo search numbers its workers 0..N-1).")
    ] = None,
) -> None:
    """Join an existing study from any machine; stop when its budget is reached."""
    import logging

    from hpo.run import lastwords
    from hpo.run.worker import STOP, run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    lastwords.install(worker_index)  # its warnings reach `hpo search` even on a full disk
    try:
        s = run_worker(resolve_url(storage), study, worker_index=worker_index,
                       threads=threads_or_env(threads))
    except Exception as e:
        # The database's own reason, or a full disk named as such, rather than Optuna's
        # wrapper ("invalid data in the commit, e.g. exceeding max length").
        lastwords.say_final(first_line(e) if isinstance(e, HpoError) else
                            unreadable(e) or f"{type(e).__name__}: {cause(e)}")
        raise
    except KeyboardInterrupt:
        err.print("worker interrupted; " + (
            f"its running trial {STOP.requeued} was failed and its parameters re-queued"
            if STOP.requeued is not None else "no trial of its own was left unfinished"))
        raise typer.Exit(130) from None
    typer.echo(f"worker done: {s.completed} complete, {s.pruned} pruned, {s.failed} failed"
               + ("; stopped because its `hpo search` is gone" if s.interrupted else ""))
