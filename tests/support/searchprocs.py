"""Helpers for tests that run real `hpo search` processes against a storage and look at what
they left in it: start, find the workers, wait, clean up, read the trials back.

Not a test module (no test_ prefix): tests/system/test_reliability.py, test_load.py and
test_security.py import it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import HpoError
from hpo.store.engines import open_storage
from hpo.store.optuna_api import models

T = TypeVar("T")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

# Trials of two to four seconds (on a busy 2-core machine): long enough to kill or interrupt a
# worker in the middle of one, short enough for a whole search to take well under a minute.
SECONDS_STUDY: dict[str, Any] = {
    "trials": 6,
    "seed": 0,
    "sampler": {"type": "random"},
    "pruner": {"type": "none"},
    "space": {
        "hidden_size": {"type": "int", "low": 8, "high": 12},
        "epochs": {"type": "int", "low": 15, "high": 20},
    },
    "data": {"seed": 0, "train": 200, "val": 10, "test": 10},
}


def hpo_env(**extra: str) -> dict[str, str]:
    """The environment of a search under test: heartbeats every second, a worker declared dead
    after 4 s without one, at most 2 retries of a trial's params."""
    env = {**os.environ, "HPO_HEARTBEAT_INTERVAL": "1", "HPO_GRACE_PERIOD": "4",
           "HPO_MAX_RETRY": "2", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    env.pop("HPO_STORAGE", None)
    env.pop("HPO_DEADLINE", None)
    env.update(extra)
    return env


def children(pid: int) -> list[int]:
    """Direct children of pid (the workers of a search), from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


@dataclass
class Search:
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    workers: set[int]

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def note_workers(self) -> set[int]:
        if self.proc.poll() is None:
            self.workers |= set(children(self.proc.pid))
        return self.workers

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"hpo search still running after {timeout:.0f} s\nstdout:\n"
                                 f"{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}") from None

    def kill_all(self) -> None:
        self.note_workers()
        for pid in [self.proc.pid, *self.workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def start_search(study_file: Path, cwd: Path, *args: str, url: str | None = None,
                 env: dict[str, str] | None = None, tag: str = "search") -> Search:
    """`hpo search STUDY_FILE [--storage URL] ARGS` in cwd (see worker_logs for its logs)."""
    cmd = [sys.executable, "-m", "hpo", "search", str(study_file), *args]
    if url is not None:
        cmd += ["--storage", url]
    out, err = cwd / f"{tag}.out", cwd / f"{tag}.err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env or hpo_env(), stdout=o, stderr=e,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return Search(proc, out, err, set())


def worker_logs(url: str | None, cwd: Path) -> dict[str, str]:
    """The worker logs of a search started in cwd, by file name: beside a SQLite file, else in
    cwd/storage/logs (hpo.run.supervisor.log_dir, resolved from cwd)."""
    from hpo.run.supervisor import log_dir

    where = log_dir(url) if url is not None and url.startswith("sqlite") else None
    folder = where if where is not None else cwd / "storage" / "logs"
    return {f.name: f.read_text() for f in folder.glob("*.log")}


@contextlib.contextmanager
def running_search(*args: Any, **kwargs: Any) -> Iterator[Search]:
    """start_search that never leaves a process behind, whatever the test does."""
    s = start_search(*args, **kwargs)
    try:
        yield s
    finally:
        s.kill_all()


def wait_until(fn: Callable[[], T | None], timeout: float, what: str, poll: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def read_trials(url: str, name: str) -> list[FrozenTrial]:
    """All trials of a study, read through a storage of its own (closed afterwards)."""
    storage = open_storage(url, heartbeat=False)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()


def peek_trials(url: str, name: str) -> list[FrozenTrial]:
    """read_trials, or [] while the search has not created the study (or its file) yet."""
    try:
        return read_trials(url, name)
    except (KeyError, HpoError):
        return []


def utc_now() -> datetime:
    """Now as the storage writes it (naive UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)


def by_state(trials: list[FrozenTrial], *states: TrialState) -> list[FrozenTrial]:
    return [t for t in trials if t.state in states]


def successors(trials: list[FrozenTrial], number: int) -> list[FrozenTrial]:
    """Trials that re-run the params of trial `number` (directly or further down its line)."""
    return [t for t in trials if number in t.system_attrs.get("retry_history", [])]


def mid_trial(url: str, name: str, low: float = 0.3, high: float = 1.2) -> FrozenTrial | None:
    """A RUNNING trial that has recorded its worker's pid and has been training for between
    low and high seconds: well inside a trial of two seconds or more, not at its edges."""
    for t in by_state(peek_trials(url, name), TrialState.RUNNING):
        if "pid" in t.user_attrs and "seeds" in t.user_attrs and t.datetime_start:
            age = (utc_now() - t.datetime_start).total_seconds()
            if low <= age <= high:
                return t
    return None


def age_heartbeat(url: str, trial_id: int, seconds: float) -> None:
    """Moves a trial's last heartbeat into the past (as if its worker died that long ago)."""
    storage = open_storage(url, heartbeat=False)
    session = storage.scoped_session()
    try:
        beat = session.query(models().TrialHeartbeatModel).filter_by(trial_id=trial_id).one()
        beat.heartbeat = beat.heartbeat - timedelta(seconds=seconds)
        session.commit()
    finally:
        session.close()
        storage.engine.dispose()
