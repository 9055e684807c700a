"""`hpo search`: create the study once, start N worker processes, watch them, stop them cleanly.

Workers run in their own sessions so that Ctrl-C reaches only this process, which forwards one
SIGINT to each worker: each fails and re-queues its running trial and exits, leaving no trial
RUNNING. The storage URL travels to workers in the environment (through hpo.warm's pipe, for
the workers started before the study existed), never on a command line where `ps` would show its
password. If this process itself dies (SIGKILL, the OOM killer), each worker
finishes and records the trial it is training, then exits (hpo.run.worker): nothing runs unattended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hpo import env
from hpo.env import DEFAULT_DIR
from hpo.errors import HpoError, plural
from hpo.run import lastwords, warmpool
from hpo.run.retrying import STORAGE_ERRORS, cause, retry
from hpo.store import optuna_api
from hpo.store.engines import check_identity, file_identity
from hpo.store.recovery import fail_stale
from hpo.store.studies import Counts, counts, interrupted_count
from hpo.store.urls import mask, parse, sqlite_path


@dataclass
class SearchOutcome:
    finished: int
    budget: int
    interrupted: bool
    worker_errors: list[str]
    lost: str | None = None  # the database vanished or was replaced: nothing after is stored
    recovered: list[int] = field(default_factory=list)  # trials its dead workers left RUNNING
    stuck: str | None = None  # why such trials could not be failed and re-queued


def worker_args(study_name: str, index: int, threads: int) -> list[str]:
    """`hpo` arguments of worker `index`: a fresh process's or a warm one's (hpo.warm)."""
    return ["worker", study_name, "--worker-index", str(index), "--threads", str(threads)]


def worker_command(study_name: str, index: int, threads: int) -> list[str]:
    return [sys.executable, "-m", "hpo", *worker_args(study_name, index, threads)]


def log_dir(url: str) -> Path:
    """Worker logs live beside their storage, as artifacts do: `logs/` next to a SQLite file,
    else storage/logs under the current directory."""
    db = sqlite_path(parse(url))
    return (db.expanduser().resolve().parent if db is not None else DEFAULT_DIR) / "logs"


def log_paths(logs: Path, study_name: str, n: int) -> list[Path]:
    return [logs / f"{study_name}-worker-{i}.log" for i in range(n)]


def check_logs(logs: Path, study_name: str, n: int) -> None:
    """Refuses, before the study is created, a log directory or file that cannot be written
    (a file where the directory goes, a directory where a log goes); creates nothing."""
    fix = "move it away or point --storage elsewhere"
    if logs.exists() and not logs.is_dir():
        raise HpoError(f"cannot create the log directory {logs}: a file is in the way; {fix}")
    for path in log_paths(logs, study_name, n):
        if path.exists() and not path.is_file():
            raise HpoError(f"cannot write the worker log {path}: it is not a file; {fix}")
    here = next((d for d in [logs, *logs.parents] if d.exists()), None)
    if here is not None and not (here.is_dir() and os.access(here, os.W_OK | os.X_OK)):
        what = "not writable" if here.is_dir() else "a file, not a directory"
        raise HpoError(f"cannot create the log directory {logs}: {here} is {what}; {fix}")


def start_workers(url: str, study_name: str, n: int, threads: int, logs: Path,
                  timeout: float | None) -> list[tuple[subprocess.Popen[bytes], Path]]:
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HpoError(f"cannot create the log directory {logs} ({e.strerror}); make it "
                       "writable or point --storage elsewhere") from e
    environ = {**os.environ, env.STORAGE.name: url, "PYTHONUNBUFFERED": "1",
               env.SUPERVISOR.name: str(os.getpid()), **lastwords.child_env()}
    if timeout is not None:
        environ[env.DEADLINE.name] = str(time.time() + timeout)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    procs = []
    try:
        for i, log in enumerate(log_paths(logs, study_name, n)):
            with _open_log(log) as f:
                # One header per run: several runs (and resumes) append to the same file.
                f.write(f"==== hpo search {stamp}: worker {i} of {n}, study {study_name}, "
                        f"storage {mask(url)}, supervisor pid {os.getpid()} ====\n".encode())
                f.flush()
                p = warmpool.take(worker_args(study_name, i, threads), environ, str(log)) or \
                    subprocess.Popen(worker_command(study_name, i, threads), env=environ,
                                     stdout=f, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     pass_fds=(lastwords.open_pipe(),))
            procs.append((p, log))
    finally:
        warmpool.discard()  # any left over (fewer workers than prestarted) hold memory for nothing
    return procs


def _open_log(log: Path) -> Any:
    try:
        return log.open("ab")
    except OSError as e:  # check_logs ran before the study was made; this is a race with it
        raise HpoError(f"cannot write the worker log {log} ({e.strerror}); move it away or "
                       "point --storage elsewhere") from e


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1]
    return "no output"


def _best(study: optuna.Study) -> str:
    if len(study.directions) > 1:
        return f"{len(study.best_trials)} on the Pareto front" if _any_complete(study) else "-"
    with contextlib.suppress(ValueError):
        return f"{study.best_value:.2f} % (trial {study.best_trial.number})"
    return "-"


def _any_complete(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


class _Signals:
    """Ctrl-C and SIGTERM are counted here, never raised: a KeyboardInterrupt landing between
    starting the workers and watching them would end this process and leave the workers (in
    sessions of their own) searching on unseen. `kill` and `docker stop` mean Ctrl-C too."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, signum: int, frame: Any) -> None:
        self.count += 1


def supervise(study: optuna.Study, url: str, workers: int, threads: int, log_dir: Path,
              timeout: float | None, console: Console) -> SearchOutcome:
    """Runs the workers to the end of the budget with a live progress bar."""
    c = counts(study)
    console.print(f"study [bold]{escape(study.study_name)}[/bold] on {escape(mask(url))}: "
                  f"{c.finished}/{c.budget}"
                  f" finished; starting {plural(workers, 'worker')}, logs in "
                  f"{escape(str(log_dir))}/",
                  highlight=False)
    signals = _Signals()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, signals) for s in (signal.SIGINT, signal.SIGTERM)}
    u = parse(url)
    opened = file_identity(u)
    lost: list[str] = []

    def still_there() -> bool:
        try:
            check_identity(u, opened)
        except HpoError as e:
            lost.append(f"{e}: its workers are stopped, and whatever they finished since is not "
                        "stored (it went with the file); restore the file or start anew")
            return False
        return True

    said = lastwords.Reader()  # the workers' warnings, also when their logs cannot be written
    try:
        procs = start_workers(url, study.study_name, workers, threads, log_dir, timeout)
        _watch(study, procs, signals, console, c, still_there, said)
        for p, _ in procs:
            p.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if lost:
        return SearchOutcome(0, c.budget, False, [], lost[0])
    recovered, stuck = _recover(study)
    interrupted = signals.count > 0
    # A worker stopped by our own SIGINT before its handler was installed (still importing)
    # dies of the signal itself; that is the interrupt working, not a worker error. Landing
    # while the interpreter itself starts, it is a "Fatal Python error" ending in
    # KeyboardInterrupt and exit code 1.
    stopped = {0, 130} | ({-signal.SIGINT, -signal.SIGKILL} if interrupted else set())
    errors = []
    for i, (p, log) in enumerate(procs):
        last = said.final.get(str(i)) or _last_line(log)
        if p.returncode not in stopped and not (interrupted and last == "KeyboardInterrupt"):
            errors.append(f"worker {i} exited with {p.returncode}: {last}")
    c = retry(lambda: counts(study), "count the trials")
    return SearchOutcome(c.finished, c.budget, interrupted, errors, None, recovered, stuck)


def _recover(study: optuna.Study) -> tuple[list[int], str | None]:
    """Its workers have all exited: any trial one of them left RUNNING (a worker killed, out of
    memory, or unable to write) is failed and re-queued now, by its dead pid, so that nothing
    waits out a grace period or stays RUNNING. Returns the trials, or why it could not."""
    rdb = optuna_api.rdb_of(optuna_api.storage_of(study))
    if rdb is None:
        return [], None
    try:
        report = fail_stale(study, rdb, by="`hpo search`, after its workers exited")
    except (*STORAGE_ERRORS, HpoError) as e:
        return [], (f"trials its workers left RUNNING could not be failed and re-queued "
                    f"({cause(e)}); run `hpo fail-stale {study.study_name}` when the "
                    "storage is writable again")
    return [n for n, _ in report.failed], None


def _watch(study: optuna.Study, procs: list[tuple[subprocess.Popen[bytes], Path]],
           signals: _Signals, console: Console, c: Counts,
           still_there: Callable[[], bool], said: lastwords.Reader) -> None:
    """Shows progress until every worker has exited; forwards the first Ctrl-C to the workers
    (each fails and re-queues its running trial) and kills them on the second. A database
    file that vanished or was replaced stops the workers as a Ctrl-C would."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("running {task.fields[running]}  failed {task.fields[failed]}"
                                   "{task.fields[interrupted]}  best {task.fields[best]}"),
                        TimeElapsedColumn(),
                        console=console, transient=False, refresh_per_second=2)
    task = progress.add_task("trials", total=c.budget, completed=c.finished, running=0,
                             best="-", **_failures(c, interrupted_count(study)))
    asked, killed, tick, best, best_at = False, False, 0, "-", -1
    with progress:
        while True:
            if signals.count >= 1 and not asked:
                progress.console.print("interrupt: stopping workers (their running trials are "
                                       "failed and re-queued)...")
                _send(procs, signal.SIGINT)
                asked = True
            if signals.count >= 2 and not killed:  # a second Ctrl-C: stop waiting politely
                _send(procs, signal.SIGKILL)
                killed = True
            alive = [p for p, _ in procs if p.poll() is None]
            for line in said.read():
                progress.console.print(escape(line), highlight=False)
            if tick % 4 == 0 and not asked and not still_there():
                progress.console.print("the database file is gone or replaced: stopping the "
                                       "workers...")
                _send(procs, signal.SIGINT)
                asked = True
            if tick % 4 == 0 or not alive:
                # The workers wait out a database restart; the progress bar must not die of it.
                with contextlib.suppress(*STORAGE_ERRORS):
                    c = counts(study)  # one grouped count; the best only when it can change
                    if c.complete != best_at:
                        best, best_at = _best(study), c.complete
                    progress.update(task, total=c.budget, completed=c.finished,
                                    running=c.running, best=best,
                                    **_failures(c, interrupted_count(study)))
            if not alive:
                break
            time.sleep(0.25)
            tick += 1


def _failures(c: Counts, stopped: int) -> dict[str, Any]:
    """Failed and interrupted (`stopped`) counted apart, as `hpo studies` counts them: a trial
    stopped by Ctrl-C did not fail (it is re-queued)."""
    return {"failed": c.failed - stopped,
            "interrupted": f"  interrupted {stopped}" if stopped else ""}


def _send(procs: list[tuple[subprocess.Popen[bytes], Path]], sig: int) -> None:
    for p, _ in procs:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(sig)
