"""hpo.run.lastwords: a worker's warnings and its reason for stopping reach the supervisor through
a pipe, whatever state its log file is in."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from hpo.run import lastwords


@pytest.fixture
def worker_side(monkeypatch: pytest.MonkeyPatch) -> Iterator[lastwords.Reader]:
    reader = lastwords.Reader()
    monkeypatch.setenv("HPO_LAST_WORDS_FD", str(lastwords.open_pipe()))
    before = list(logging.getLogger("hpo").handlers)
    lastwords.install(7)
    yield reader
    logging.getLogger("hpo").handlers = before
    monkeypatch.setattr(lastwords, "_me", None)


def test_warnings_reach_the_reader_once_per_gist_and_the_final_line_is_kept(
        worker_side: lastwords.Reader) -> None:
    log = logging.getLogger("hpo.worker")
    log.info("trial 1 complete")  # not a warning: the log alone has it
    for delay in (0.5, 1.0, 2.0):
        log.warning("storage error while trying to tell (database or disk is full); retrying in "
                    "%.1f s", delay)
    log.warning("trial 3 was declared dead\nby another worker")
    log.warning("trial 4 was declared dead by another worker")
    lastwords.say_final("the storage failed for 3 s; giving up")
    lines = worker_side.read()
    assert lines == [
        "worker 7: storage error while trying to tell (database or disk is full); retrying in "
        "0.5 s",
        "worker 7: trial 3 was declared dead by another worker",
        "worker 7: trial 4 was declared dead by another worker",
        "worker 7: the storage failed for 3 s; giving up"]
    assert worker_side.final == {"7": "the storage failed for 3 s; giving up"}
    assert worker_side.read() == []


def test_a_full_pipe_drops_lines_instead_of_blocking_the_worker(
        worker_side: lastwords.Reader) -> None:
    log = logging.getLogger("hpo.worker")
    for i in range(200):  # 200 lines of 4 KB: three times a pipe's 64 KB
        log.warning("%d %s", i, "x" * 5000)
    lines = worker_side.read()
    assert 0 < len(lines) < 200 and all(len(ln) <= lastwords.LINE_LIMIT + 10 for ln in lines)


def test_a_worker_started_without_the_pipe_logs_as_before() -> None:
    code = ("import logging, os; from hpo.run import lastwords; lastwords.install(0); "
            "assert lastwords._me is None; logging.getLogger('hpo').warning('x')")
    env = {**os.environ, "HPO_LAST_WORDS_FD": "999"}  # named, but not inherited
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
