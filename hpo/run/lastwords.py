"""A worker's warnings reach the `hpo search` that started it, even when its log cannot.

A worker writes its log to a file beside the storage. On a full disk that file is full too:
the one line saying why the worker stopped, or why its result could not be stored, would be
lost with it. So the supervisor opens one pipe before it starts any worker (warm ones
included) and every worker it starts inherits the pipe's write end, named by
HPO_LAST_WORDS_FD. A worker sends each warning and error it logs down the pipe as one line,
prefixed with its number; the supervisor prints them above its progress bar and names the last
one when the worker exits with an error.

The pipe costs nothing when it is not read: the write end is non-blocking and a line that
does not fit (the supervisor stopped reading) is dropped, never waited for. A line is at most
PIPE_BUF bytes, so lines of several workers never interleave. A worker started by hand (`hpo
worker` on another machine) has no pipe and logs as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select

from hpo import env

LINE_LIMIT = 4000  # under PIPE_BUF (4096 on Linux): one write, never interleaved
FINAL = "stopped: "  # marks the line a worker sends as it exits with an error

_pipe: tuple[int, int] | None = None  # the supervisor's ends: (read, write)


def open_pipe() -> int:
    """The write end every worker this process starts inherits (opened once per process)."""
    global _pipe
    if _pipe is None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)  # shared with every child: a full pipe drops, never blocks
        os.set_inheritable(w, True)
        _pipe = (r, w)
    return _pipe[1]


def child_env() -> dict[str, str]:
    """What a worker's environment gets so that it finds the pipe."""
    return {env.LAST_WORDS.name: str(open_pipe())}


class Reader:
    """The supervisor's side: the workers' lines, as they come."""

    def __init__(self) -> None:
        open_pipe()
        self._rest = b""
        self.final: dict[str, str] = {}  # worker number -> why it stopped, if it said
        self._shown: dict[str, str] = {}  # worker number -> the last line shown, durations aside

    def read(self) -> list[str]:
        """The new lines worth showing: a worker repeating itself (a retry every 5 s) is shown
        once, until it says something else."""
        assert _pipe is not None
        chunks = []
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while select.select([_pipe[0]], [], [], 0)[0]:
                chunk = os.read(_pipe[0], 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        *lines, self._rest = (self._rest + b"".join(chunks)).split(b"\n")
        shown = []
        for raw in lines:
            who, _, text = raw.decode(errors="replace").partition(" ")
            if text.startswith(FINAL):
                text = self.final[who] = text[len(FINAL):]
            gist = re.sub(r"\d+\.\d+", "#", text)  # "retrying in 2.0 s", not trial numbers
            if self._shown.get(who) != gist:
                self._shown[who] = gist
                shown.append(f"worker {who}: {text}")
        return shown


class _Handler(logging.Handler):
    def __init__(self, fd: int, who: str) -> None:
        super().__init__(logging.WARNING)
        self.fd, self.who = fd, who

    def emit(self, record: logging.LogRecord) -> None:
        _write(self.fd, self.who, record.getMessage())


def _write(fd: int, who: str, text: str) -> None:
    text = " ".join(text.split())  # one line, whatever the message held
    line = f"{who} {text}"[:LINE_LIMIT].encode(errors="replace") + b"\n"
    with contextlib.suppress(OSError):  # a full pipe or a supervisor gone: the log has it
        os.write(fd, line)


_me: tuple[int, str] | None = None  # this worker's pipe and number, once installed


def install(worker_index: int | None) -> None:
    """Worker side: send this process's warnings and errors down the supervisor's pipe too."""
    global _me
    fd = env.last_words_fd()
    if fd is None:
        return
    try:
        os.fstat(fd)
    except OSError:
        return  # not inherited (a variable copied into another shell): nothing to write to
    _me = (fd, str(worker_index) if worker_index is not None else str(os.getpid()))
    logging.getLogger("hpo").addHandler(_Handler(*_me))


def say_final(text: str) -> None:
    """Worker side: why this worker stops (its error line), for the supervisor to name."""
    if _me is not None:
        _write(_me[0], _me[1], FINAL + text)
