"""Warm workers, the supervisor's side: `hpo search` starts its worker processes before it knows
their study (the child side is hpo.warm, a process entry point).

A worker spends most of its start-up importing torch and Optuna (1.6-3.5 s); the supervisor
spends its own (the CLI, the study file, creating the study) before it may start anyone. Done
one after the other, a search's first trial began about 1.2 s later than a plain Optuna
script's. So `hpo search` starts `python -m hpo.warm` at once (`prestart`, from the process
entry), one per worker it may run, and each imports what a worker needs and then waits on stdin
for one JSON line: the worker's arguments, its environment and its log file. Once the study
exists, `take` hands a warm process its order, and it runs `hpo worker` exactly as a freshly
started one would; it is a child of the supervisor like one, in a session of its own.

A warm process has touched nothing yet: it has opened no storage and read no study. Whatever
stops the search before the order (a bad study file, Ctrl-C, fewer workers than guessed)
`discard`s the unused ones with SIGKILL, and a supervisor that dies meanwhile closes their stdin,
which ends them. Nothing here is needed for correctness: a warm process that died, or that a
supervisor cannot write to, is replaced by a freshly started worker. Its own output before the
order (an import warning) is copied to the head of its log. The supervisor never imports torch; only
the children do.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile

from hpo.run import lastwords

ORDER_LIMIT = 1 << 20  # one JSON line: arguments, environment, log path


class Pool:
    """Warm processes started by this supervisor and not yet given an order."""

    def __init__(self, n: int) -> None:
        self.idle: list[subprocess.Popen[bytes]] = []
        environ = {**os.environ, "PYTHONUNBUFFERED": "1", **lastwords.child_env()}
        for _ in range(n):
            # Its output until the order; closed here once the child holds its own descriptor.
            with tempfile.TemporaryFile(prefix="hpo-warm-") as early:
                try:
                    self.idle.append(subprocess.Popen(
                        [sys.executable, "-m", "hpo.warm"], stdin=subprocess.PIPE,
                        stdout=early, stderr=early, env=environ, start_new_session=True,
                        pass_fds=(lastwords.open_pipe(),)))
                except OSError:
                    break  # no processes left to start: the workers start the usual way

    def take(self, argv: list[str], environ: dict[str, str], log: str
             ) -> subprocess.Popen[bytes] | None:
        """A warm process now running `hpo *argv` with `environ`, its output appended to `log`;
        None when none is left alive to take it (start a worker the usual way)."""
        order = json.dumps({"argv": argv, "env": environ, "log": log}).encode() + b"\n"
        while self.idle:
            p = self.idle.pop(0)
            if p.poll() is not None or len(order) > ORDER_LIMIT:
                _end(p)
                continue
            try:
                assert p.stdin is not None
                p.stdin.write(order)
                p.stdin.close()
            except OSError:  # it died meanwhile (a broken pipe): try the next
                _end(p)
                continue
            return p
        return None

    def discard(self) -> None:
        while self.idle:
            _end(self.idle.pop())


def _end(p: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        p.kill()
    with contextlib.suppress(OSError):
        if p.stdin is not None:
            p.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=5)


_pool: Pool | None = None


def prestart(argv: list[str]) -> None:
    """Called by the process entry with its arguments: for `hpo search`, starts as many warm
    processes as it will likely run (--workers, default 2, at most one per core: the memory cap
    is decided later, on the study)."""
    global _pool
    if len(argv) < 2 or argv[1] != "search" or any(a in ("--help", "-h") for a in argv):
        return
    n = _workers_flag(argv[2:])
    if n is not None:
        _pool = Pool(min(n, os.cpu_count() or 1))


def _workers_flag(args: list[str]) -> int | None:
    n = 2  # hpo.cli.search's default
    for i, a in enumerate(args):
        value = a.split("=", 1)[1] if a.startswith("--workers=") else (
            args[i + 1] if a == "--workers" and i + 1 < len(args) else None)
        if value is not None:
            try:
                n = int(value)
            except ValueError:
                return None  # the command will refuse it; nothing to warm
    return n if n >= 1 else None


def take(argv: list[str], environ: dict[str, str], log: str) -> subprocess.Popen[bytes] | None:
    return _pool.take(argv, environ, log) if _pool is not None else None


def discard() -> None:
    global _pool
    if _pool is not None:
        _pool.discard()
        _pool = None
