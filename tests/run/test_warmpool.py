"""hpo.warm: worker processes that `hpo search` starts before its study exists.

Real processes throughout: a warm process must become exactly the worker a fresh one would be,
and whatever happens before its order (a bad study file, a killed supervisor, fewer workers than
guessed) must leave no process behind and nothing written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpo.run import warmpool
from tests.support.searchprocs import cmdline, hpo_env, read_trials, wait_until


def _marked(mark: str) -> list[int]:
    """Live processes whose environment holds WARM_TEST_MARK=mark."""
    out = []
    needle = f"WARM_TEST_MARK={mark}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    stat = (entry / "stat").read_text()
                    if stat.rsplit(")", 1)[1].split()[0] != "Z":
                        out.append(int(entry.name))
            except OSError:
                continue
    return out


@pytest.mark.parametrize(("argv", "expected"), [
    (["hpo", "search", "s.toml"], 2),
    (["hpo", "search", "s.toml", "--workers", "3"], 3),
    (["hpo", "search", "--workers=5", "s.toml"], 5),
    (["hpo", "search", "s.toml", "--workers", "two"], None),
    (["hpo", "search", "s.toml", "--workers", "0"], None),
    (["hpo", "search", "s.toml", "--workers"], 2),
])
def test_the_workers_flag_is_read_before_the_command_parses_it(
        argv: list[str], expected: int | None) -> None:
    assert warmpool._workers_flag(argv[2:]) == expected


@pytest.mark.parametrize("argv", [["hpo"], ["hpo", "best", "x"], ["hpo", "worker", "x"],
                                  ["hpo", "search", "--help"], ["hpo", "search", "x", "-h"]])
def test_only_a_real_search_prestarts(argv: list[str]) -> None:
    warmpool.prestart(argv)
    try:
        assert warmpool._pool is None
    finally:
        warmpool.discard()


def test_unused_warm_processes_are_discarded_at_once() -> None:
    pool = warmpool.Pool(2)
    procs = list(pool.idle)
    assert len(procs) == 2
    # Right after fork, before exec, a child's /proc/PID/cmdline is still the parent's (or
    # empty): wait for the state the test asserts (it failed so on a loaded machine).
    wait_until(lambda: all("hpo.warm" in cmdline(p.pid) for p in procs), 60,
               "both warm processes to run python -m hpo.warm")
    pool.discard()
    assert pool.idle == [] and all(p.returncode is not None for p in procs)  # reaped


def test_a_dead_warm_process_is_skipped_and_none_left_means_start_one_as_usual(
        tmp_path: Path) -> None:
    pool = warmpool.Pool(1)
    (p,) = pool.idle
    p.kill()
    p.wait()
    assert pool.take(["worker", "x"], dict(os.environ), str(tmp_path / "w.log")) is None
    assert pool.idle == []


def test_a_warm_process_without_an_order_ends_when_its_supervisor_dies(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    supervisor = subprocess.run(
        [sys.executable, "-c", "import os, signal; from hpo.run import warmpool; "
         "warmpool.prestart(['hpo', 'search', 'x.toml', '--workers', '2']); "
         "print(len(warmpool._pool.idle), flush=True); os.kill(os.getpid(), signal.SIGKILL)"],
        env=hpo_env(WARM_TEST_MARK=mark), capture_output=True, text=True, timeout=60)
    assert supervisor.stdout.strip() == str(min(2, os.cpu_count() or 1))
    # Orphaned, each finishes importing, reads end-of-file and exits without a word.
    wait_until(lambda: not _marked(mark) or None, 60, "the orphaned warm processes to exit")


def test_a_search_runs_its_trials_on_warm_workers(
        tmp_path: Path, study_file: Callable[..., Path]) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    path = study_file(trials=3)
    mark = uuid.uuid4().hex
    with (tmp_path / "out").open("w") as out:
        search = subprocess.Popen(
            [sys.executable, "-m", "hpo", "search", str(path), "--workers", "2", "--storage",
             url], env=hpo_env(WARM_TEST_MARK=mark), stdout=out, stderr=subprocess.STDOUT,
            cwd=tmp_path)
        seen: set[str] = set()
        while search.poll() is None:
            seen |= {cmdline(pid) for pid in _marked(mark) if pid != search.pid}
            time.sleep(0.05)
    text = (tmp_path / "out").read_text()
    assert search.returncode == 0, text
    workers = {c for c in seen if "hpo.warm" in c}
    assert len(workers) >= 1, seen  # the workers were the prestarted processes
    assert not any(" worker " in f" {c} " for c in seen), seen  # none started the usual way
    trials = read_trials(url, path.stem)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    logs = sorted((tmp_path / "logs").glob("*.log"))
    assert len(logs) == 2
    for log in logs:
        body = log.read_text()
        assert body.startswith("==== hpo search ") and "Traceback" not in body
    assert not _marked(mark)


def test_a_bad_study_file_leaves_no_warm_process_and_no_storage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ntrials = 2\nunknown = 1\n[space.hidden_size]\ntype = "int"\n'
                   "low = 4\nhigh = 8\n")
    mark = uuid.uuid4().hex
    done = subprocess.run([sys.executable, "-m", "hpo", "search", str(bad), "--storage",
                           f"sqlite:///{tmp_path / 'hpo.db'}"],
                          env=hpo_env(WARM_TEST_MARK=mark), capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and "unknown" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not _marked(mark)
    assert not (tmp_path / "hpo.db").exists()
