"""Reliability: a worker killed mid-trial, a database restarted mid-search, Ctrl-C, diverging
configurations, and the bulk controls `hpo retry-failed` / `hpo fail-stale`. Nothing is lost:
every search still ends with exactly its budget and no trial is left RUNNING.

Searches run as real processes (tests/support/searchprocs.py) with heartbeats every second and a
grace period of 4 s, so a killed worker is noticed within seconds. The in-process tests drive
the same library code (hpo.run.worker, hpo.store.recovery) on every storage backend in well
under a second each.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from typer.testing import CliRunner

import hpo.run.objective
import hpo.run.worker
import hpo.store.engines
import hpo.store.urls
from hpo.cli import app
from hpo.store.engines import open_storage
from hpo.store.recovery import fail_stale, pid_alive
from hpo.store.studies import create_study, load
from hpo.study.parse import load_study_file
from hpo.study.spec import trial_seed
from tests.support.backends import backend_url
from tests.support.searchprocs import (
    FINISHED,
    SECONDS_STUDY,
    age_heartbeat,
    by_state,
    hpo_env,
    mid_trial,
    peek_trials,
    read_trials,
    running_search,
    successors,
    wait_until,
    worker_logs,
)

RETRY = RetryHeartbeatStaleTrialCallback


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def name_of(path: Path) -> str:
    return load_study_file(path).name


def create(path: Path, url: str, trials: int | None = None) -> optuna.Study:
    return create_study(load_study_file(path), open_storage(url, create=True), trials)


def finished(trials: list[optuna.trial.FrozenTrial]) -> int:
    return len(by_state(trials, *FINISHED))


# --- 1. a worker SIGKILLed in the middle of a trial --------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])  # MySQL: in-process tests only
def test_sigkilled_worker_trial_fails_and_is_retried_within_the_budget(
        backend: str, study_file: Callable[..., Path], tmp_path: Path) -> None:
    storage_url = backend_url(backend, tmp_path)
    path = study_file(**SECONDS_STUDY)
    name = name_of(path)
    with running_search(path, tmp_path, "--workers", "2", url=storage_url) as search:
        victim = wait_until(lambda: mid_trial(storage_url, name), 150, "a trial mid-training")
        os.kill(victim.user_attrs["pid"], signal.SIGKILL)
        code = search.wait(240)

    trials = read_trials(storage_url, name)
    killed = trials[victim.number]
    assert killed.state == TrialState.FAIL  # failed by a surviving worker, never left RUNNING
    assert not by_state(trials, TrialState.RUNNING, TrialState.WAITING)
    assert finished(trials) == SECONDS_STUDY["trials"]  # exactly the budget
    assert len(trials) == SECONDS_STUDY["trials"] + 1  # the budget plus the one killed trial
    retry = successors(trials, victim.number)
    assert len(retry) == 1, [(t.number, t.state) for t in retry]
    assert retry[0].params == victim.params
    assert retry[0].state == TrialState.COMPLETE
    assert RETRY.retried_trial_number(retry[0]) == victim.number
    # The retry starts clean: no attrs of the dead attempt, only a link back to it.
    assert retry[0].user_attrs["retry_of"] == victim.number
    assert retry[0].user_attrs["pid"] != victim.user_attrs["pid"]
    assert "fail_reason" not in retry[0].user_attrs
    # The search reports the dead worker and exits non-zero, though its budget is met.
    assert code == 1, search.stderr
    assert "exited with -9" in search.stderr
    assert f"{SECONDS_STUDY['trials']}/{SECONDS_STUDY['trials']} trials finished" in search.stdout


# --- 2. the PostgreSQL server restarted in the middle of a search -------------------------------


def pg_restart_command(url: str) -> list[str]:
    host = sqlalchemy.engine.make_url(url).host
    if host not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip(f"restarting PostgreSQL needs a local server; {host} is not local")
    if os.geteuid() != 0:
        pytest.skip("restarting PostgreSQL needs root (pg_ctlcluster)")
    if shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir():
        pytest.skip("pg_ctlcluster / /etc/postgresql not found: not a Debian PostgreSQL cluster")
    versions = sorted(os.listdir("/etc/postgresql"))
    if not versions:
        pytest.skip("no PostgreSQL cluster under /etc/postgresql")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart"]


def postmaster_started(url: str) -> Any:
    engine = sqlalchemy.create_engine(hpo.store.urls.parse(url))
    try:
        with engine.connect() as con:
            return con.execute(sqlalchemy.select(sqlalchemy.func.pg_postmaster_start_time())
                               ).scalar()
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_postgres_restart_mid_search_loses_nothing(
        study_file: Callable[..., Path], tmp_path: Path) -> None:
    url = os.environ.get("HPO_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("needs $HPO_TEST_POSTGRES_URL; .ci/run sets it")
    restart = pg_restart_command(url)
    path = study_file(**{**SECONDS_STUDY, "trials": 8})
    name = name_of(path)
    # A grace period well above the restart's few seconds: no live trial is declared dead.
    env = hpo_env(HPO_GRACE_PERIOD="30", HPO_STORAGE_RETRY_SECONDS="120")
    with running_search(path, tmp_path, "--workers", "2", url=url, env=env) as search:
        def ready() -> list[optuna.trial.FrozenTrial] | None:
            trials = peek_trials(url, name)
            return trials if finished(trials) >= 2 and mid_trial(url, name) else None

        before = wait_until(ready, 200, "two finished trials and one mid-training")
        started = postmaster_started(url)
        t0 = time.monotonic()
        subprocess.run(restart, check=True, timeout=120, capture_output=True)
        outage = time.monotonic() - t0
        code = search.wait(300)

    back = postmaster_started(url)
    assert back > started  # the server really restarted
    # When the new server started (naive UTC, as the storage writes): the restart command
    # returns a moment after that, and on a fast machine the workers had finished the budget
    # against the new server by then.
    restarted_at = back.astimezone(UTC).replace(tzinfo=None)
    trials = read_trials(url, name)
    assert code == 0, search.stderr[-3000:]
    for t in by_state(before, *FINISHED):  # every trial finished before the restart is intact
        assert trials[t.number].state == t.state
        assert trials[t.number].values == t.values
        assert trials[t.number].params == t.params
    running_then = by_state(before, TrialState.RUNNING)
    assert running_then
    assert finished(trials) == 8  # the budget
    assert not by_state(trials, TrialState.RUNNING, TrialState.WAITING)
    # The workers went on after the restart rather than stopping at it.
    assert any(t.datetime_complete and t.datetime_complete > restarted_at
               for t in by_state(trials, *FINISHED))
    assert outage < 60
    # The workers met the outage mid-trial and waited it out (see hpo.run.worker.retry).
    logs = "".join(worker_logs(url, tmp_path).values())
    assert "storage error while trying to" in logs
    assert "Traceback" not in logs


# --- 4. Ctrl-C (SIGINT to `hpo search`) ---------------------------------------------------------
# tests/system/test_search.py interrupts a SQLite search mid-trial; here PostgreSQL, the re-queued
# params themselves, an interrupt that lands while the workers still start up, and (in-process,
# on every backend) one that lands while a worker claims a trial.


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["postgresql"])
def test_ctrl_c_requeues_running_params_and_rerun_completes(
        backend: str, study_file: Callable[..., Path], tmp_path: Path) -> None:
    url = backend_url(backend, tmp_path)
    path = study_file(**SECONDS_STUDY)
    name = name_of(path)
    with running_search(path, tmp_path, "--workers", "2", url=url) as search:
        wait_until(lambda: mid_trial(url, name), 150, "a trial mid-training")
        assert len(search.note_workers()) == 2
        search.proc.send_signal(signal.SIGINT)
        code = search.wait(90)
        assert not [pid for pid in search.workers if pid_alive(pid)]
    assert code == 130, search.stderr[-2000:]
    assert "interrupted" in search.stdout
    assert "Traceback" not in search.stderr and "error" not in search.stderr
    trials = read_trials(url, name)
    assert not by_state(trials, TrialState.RUNNING)
    interrupted = by_state(trials, TrialState.FAIL)
    assert interrupted
    for t in interrupted:
        assert t.user_attrs["fail_reason"].startswith("interrupted")
        (retry,) = successors(trials, t.number)
        assert retry.state == TrialState.WAITING and retry.params == t.params

    with running_search(path, tmp_path, "--workers", "2", url=url, tag="rerun") as rerun:
        assert rerun.wait(240) == 0, rerun.stderr[-2000:]
    trials = read_trials(url, name)
    assert finished(trials) == SECONDS_STUDY["trials"]
    assert not by_state(trials, TrialState.RUNNING, TrialState.WAITING)
    for t in interrupted:  # the re-queued params did run
        assert successors(trials, t.number)[0].state in FINISHED


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ctrl_c_while_workers_start_is_clean(
        study_file: Callable[..., Path], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    path = study_file(**SECONDS_STUDY)
    with running_search(path, tmp_path, "--workers", "2", url=url) as search:
        # SIGINT lands while the workers are still importing torch, and the search itself is
        # between starting them and watching them: it must still stop every one of them.
        # The worker processes start before the study exists (hpo.warm); the logs' headers
        # are written when each is given its study.
        wait_until(lambda: len(search.note_workers()) == 2 and len(
            worker_logs(url, tmp_path)) == 2, 30, "two worker processes given their study")
        search.proc.send_signal(signal.SIGINT)
        code = search.wait(60)
        assert not [pid for pid in search.workers if pid_alive(pid)]  # none left searching
    assert code == 130
    assert "interrupted: run the same command again" in search.stdout
    assert "error" not in search.stderr.lower(), search.stderr  # an interrupt, not a failure
    assert not by_state(read_trials(url, name_of(path)), TrialState.RUNNING)


def test_interrupt_while_claiming_a_trial_fails_and_requeues_it(
        storage_url: str, study_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT arriving inside `study.ask()` (here: just after it) must not leave the new trial
    RUNNING: the worker defers it to a safe point, then fails and re-queues that trial."""
    path = study_file(trials=3)
    study = create(path, storage_url)
    real_claim = hpo.run.worker._claim

    def claim_then_sigint(*args: Any) -> Any:
        trial = real_claim(*args)
        os.kill(os.getpid(), signal.SIGINT)  # delivered right here, between bytecodes
        return trial

    monkeypatch.setattr(hpo.run.worker, "_claim", claim_then_sigint)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        hpo.run.worker.run_worker(storage_url, study.study_name, poll=0.1)
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back
    trials = read_trials(storage_url, study.study_name)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["fail_reason"].startswith("interrupted")
    assert trials[1].params == trials[0].params
    assert RETRY.retried_trial_number(trials[1]) == 0


# --- 5. divergence ------------------------------------------------------------------------------


def test_diverging_configurations_are_recorded_and_the_worker_goes_on(
        storage_url: str, study_file: Callable[..., Path]) -> None:
    # lr 1e30 overflows Adam on the first step; lr 0.01 trains normally. Grid order is shuffled,
    # so the worker meets both kinds in some order and must finish all four.
    space = {"lr": {"type": "categorical", "choices": [1e30, 0.01]},
             "hidden_size": {"type": "categorical", "choices": [4, 6]}}
    path = study_file(trials=4, sampler={"type": "grid"}, space=space, train={"epochs": 2})
    study = create(path, storage_url)
    summary = hpo.run.worker.run_worker(storage_url, study.study_name, poll=0.1)
    assert (summary.completed, summary.pruned, summary.failed) == (2, 2, 0)
    trials = read_trials(storage_url, study.study_name)
    for t in trials:
        if t.params["lr"] == 1e30:
            assert t.state == TrialState.PRUNED  # counted in the budget, avoided by TPE
            assert t.user_attrs["status"] == "diverged"
            assert "lr=1e+30" in t.user_attrs["reason"]
            assert "became" in t.user_attrs["reason"]  # "training loss became inf/nan at ..."
        else:
            assert t.state == TrialState.COMPLETE and "status" not in t.user_attrs
    assert len(trials) == 4


def test_diverged_reason_shows_in_trial_listing(
        tmp_path: Path, study_file: Callable[..., Path]) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    space = {"hidden_size": {"type": "int", "low": 4, "high": 8}}
    path = study_file(trials=2, space=space, train={"lr": 1e30, "epochs": 2})  # all diverge
    study = create(path, url)
    summary = hpo.run.worker.run_worker(url, study.study_name, poll=0.1)
    assert (summary.completed, summary.pruned, summary.failed) == (0, 2, 0)  # no give-up
    result = invoke("trials", study.study_name, "--storage", url, "--format", "json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["training_ended"] for r in records] == ["diverged", "diverged"]
    assert all("lr=1e+30" in r["reason"] for r in records)


# --- 6. bulk controls: retry-failed, fail-stale --------------------------------------------------

DISTS: dict[str, BaseDistribution] = {
    "hidden_size": IntDistribution(4, 8), "shift": IntDistribution(0, 5),
    "epochs": IntDistribution(2, 4)}


def add_trial(study: optuna.Study, params: dict[str, int] | None, state: TrialState) -> int:
    """A trial with exactly these params, left in `state` (RUNNING: left running). Call it only
    while nothing waits in the queue: `ask` pops the oldest waiting trial."""
    if params is not None:
        study.enqueue_trial(params)
    trial = study.ask(fixed_distributions=DISTS if params is not None else None)
    if state == TrialState.COMPLETE:
        study.tell(trial, 50.0)
    elif state != TrialState.RUNNING:
        study.tell(trial, state=state)
    return trial.number


def p(h: int, s: int = 0, e: int = 2) -> dict[str, int]:
    return {"hidden_size": h, "shift": s, "epochs": e}


def test_retry_failed_requeues_each_failed_trial_once(
        storage_url: str, study_file: Callable[..., Path]) -> None:
    path = study_file(trials=8)
    study = create(path, storage_url)
    name = study.study_name
    a = add_trial(study, p(4), TrialState.FAIL)
    b = add_trial(study, p(5), TrialState.FAIL)
    add_trial(study, p(6), TrialState.COMPLETE)
    same = add_trial(study, p(6), TrialState.FAIL)  # its params already completed elsewhere
    old = add_trial(study, p(7), TrialState.FAIL)
    empty = add_trial(study, None, TrialState.FAIL)  # failed before any suggest
    hpo.store.engines.RetryStaleTrial()(study, copy.deepcopy(study.trials[old]))  # already retried

    result = invoke("retry-failed", name, "--storage", storage_url, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["failed"] for r in report["requeued"]] == [a, b]
    assert report["already_retried"] == [old]
    assert report["params_taken"] == [same]
    assert report["no_params"] == [empty]
    trials = read_trials(storage_url, name)
    for r in report["requeued"]:
        new = trials[r["new"]]
        assert new.state == TrialState.WAITING
        assert new.params == trials[r["failed"]].params
        assert RETRY.retry_history(new) == [r["failed"]]
        assert new.user_attrs == {"retry_of": r["failed"]}

    again = invoke("retry-failed", name, "--storage", storage_url)  # nothing twice
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith(f"re-queued 0 failed trials of '{name}'")
    assert f"already retried): {a}, {b}, {old}" in again.stdout
    assert len(read_trials(storage_url, name)) == len(trials)

    # Workers pop the queued params before sampling new ones.
    summary = hpo.run.worker.run_worker(storage_url, name, poll=0.1, max_trials=3)
    assert summary.completed == 3
    trials = read_trials(storage_url, name)
    for n in (a, b, old):
        (retry,) = successors(trials, n)
        assert retry.state == TrialState.COMPLETE and retry.params == trials[n].params


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_fail_stale_fails_dead_workers_trials_and_leaves_live_ones(
        storage_url: str, study_file: Callable[..., Path]) -> None:
    path = study_file(trials=8)
    create(path, storage_url)
    name = name_of(path)
    with_beats, _ = load(name, open_storage(storage_url))  # trials get a heartbeat at start
    no_beats, _ = load(name, open_storage(storage_url, heartbeat=False))
    host, gone = socket.gethostname(), dead_pid()

    stale = add_trial(with_beats, p(4), TrialState.RUNNING)
    age_heartbeat(storage_url, with_beats.trials[stale]._trial_id, 3600)
    beating = add_trial(with_beats, p(5), TrialState.RUNNING)  # fresh heartbeat: alive
    # A fresh heartbeat, but its worker ran here and is gone (kill -9 a moment ago): failed at
    # once, without waiting out the grace period.
    killed = add_trial(with_beats, p(7), TrialState.RUNNING)
    with_beats._storage.set_trial_user_attr(with_beats.trials[killed]._trial_id, "host", host)
    with_beats._storage.set_trial_user_attr(with_beats.trials[killed]._trial_id, "pid", gone)
    cases = {"dead pid here": (host, gone), "live pid here": (host, os.getpid()),
             "other host": ("elsewhere", gone), "no pid": (None, None)}
    numbers: dict[str, int] = {}
    for label, (h, pid) in cases.items():
        n = numbers[label] = add_trial(no_beats, p(6, len(numbers)), TrialState.RUNNING)
        if h is not None:
            trial_id = no_beats.trials[n]._trial_id
            no_beats._storage.set_trial_user_attr(trial_id, "host", h)
            no_beats._storage.set_trial_user_attr(trial_id, "pid", pid)

    result = invoke("fail-stale", name, "--storage", storage_url, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    dead = [stale, killed, numbers["dead pid here"]]
    assert [f["number"] for f in report["failed"]] == dead
    assert "no heartbeat" in report["failed"][0]["reason"]
    assert f"pid {gone}" in report["failed"][1]["reason"]
    assert f"pid {gone}" in report["failed"][2]["reason"]
    assert sorted(report["unjudged"]) == sorted(
        [beating, *(numbers[k] for k in ("live pid here", "other host", "no pid"))])
    why = {w["number"]: w["why"] for w in report["left_alone"]}  # why each waits, in words
    assert "s old, under the study's 30 s grace period" in why[beating]
    assert f"pid {os.getpid()} is alive here" in why[numbers["live pid here"]]
    assert "on host elsewhere" in why[numbers["other host"]]
    # A trial that never had a heartbeat (another client's ask) gets its first now, by the
    # database's clock: the study's grace period judges it from here (it cannot wait for ever).
    assert re.search(r"^heartbeat \d+ s old, under the study's 30 s grace period; no host "
                     "recorded$", why[numbers["no pid"]]), why
    trials = read_trials(storage_url, name)
    for n in dead:
        assert trials[n].state == TrialState.FAIL
        assert "fail-stale" in trials[n].user_attrs["fail_reason"]
        (retry,) = successors(trials, n)
        assert retry.state == TrialState.WAITING and retry.params == trials[n].params
    assert trials[beating].state == TrialState.RUNNING
    for k in ("live pid here", "other host", "no pid"):
        assert trials[numbers[k]].state == TrialState.RUNNING

    again = invoke("fail-stale", name, "--storage", storage_url)
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith(f"failed 0 of 4 running trials of '{name}'")
    assert again.stdout.count("left alone: trial") == 4


def test_a_trial_that_keeps_dying_is_retried_a_bounded_number_of_times(
        storage_url: str, study_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPO_MAX_RETRY", "2")
    path = study_file(trials=8)
    create(path, storage_url)
    storage = open_storage(storage_url)
    study, _ = load(name_of(path), storage)
    first = add_trial(study, p(4), TrialState.RUNNING)
    lineage = [first]
    for _ in range(3):  # the trial and its two retries all die
        trial = study.trials[lineage[-1]]
        assert trial.state == TrialState.RUNNING
        age_heartbeat(storage_url, trial._trial_id, 3600)  # its first beat came with the claim
        report = fail_stale(study, storage)
        assert [n for n, _ in report.failed] == [lineage[-1]]
        if report.requeued:
            lineage.append(report.requeued[0][1])
            assert study.ask().number == lineage[-1]  # a worker claims the retry
    assert report.not_requeued == [lineage[-1]]  # the third death is final
    trials = read_trials(storage_url, study.study_name)
    assert [trials[n].state for n in lineage] == [TrialState.FAIL] * 3
    assert RETRY.retry_history(trials[lineage[-1]]) == lineage[:-1]
    assert len(trials) == 3


def test_points_study_with_smaller_budget_finishes(
        storage_url: str, study_file: Callable[..., Path]) -> None:
    """More queued points than the budget must not block the workers (it once did: queued
    trials counted as taken, so no worker ever asked)."""
    points = [p(4), p(5), p(6), p(7)]
    path = study_file(trials=2, sampler={"type": "points", "points": points})
    study = create(path, storage_url)
    summary = hpo.run.worker.run_worker(storage_url, study.study_name, poll=0.1)
    assert summary.completed == 2
    trials = read_trials(storage_url, study.study_name)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.WAITING] * 2


@pytest.mark.parametrize("when", ["before training", "at tell", "at tell, copy taken"])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_worker_declared_dead_keeps_its_result_when_it_can_and_goes_on(
        when: str, backend: str, study_file: Callable[..., Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A worker starved of CPU (or cut off from the database) beyond the grace period is
    declared dead by another, which fails and re-queues its trial. When it wakes up it neither
    crashes nor claims a result that storage refused. A result it trained is kept on the
    re-queued copy if that copy has not started (results first); if the copy already runs or
    ran, or nothing was trained yet, the attempt is dropped with a line saying why. Either way
    the study ends with exactly its budget."""
    storage_url = backend_url(backend, tmp_path)
    path = study_file(trials=3)
    study = create(path, storage_url)
    other = open_storage(storage_url)
    real = hpo.run.objective.run_trial
    victims: list[int] = []

    def starved(spec: Any, trial: optuna.Trial, **kw: Any) -> Any:
        if victims:
            return real(spec, trial, **kw)
        victims.append(trial.number)
        for param in spec.space:  # it got as far as choosing its params
            hpo.run.objective.suggest(trial, param)
        age_heartbeat(storage_url, trial._trial_id, 3600)
        watcher, _ = load(study.study_name, other)
        assert [n for n, _ in fail_stale(watcher, other).failed] == [trial.number]
        if when == "before training":
            return real(spec, trial, **kw)  # its first set_user_attr is refused
        if when == "at tell, copy taken":
            copy_ = watcher.ask()  # another worker claims the copy and finishes it
            watcher.tell(copy_, 1.0)
        return hpo.run.objective.Outcome(TrialState.COMPLETE, [99.0], "trained")

    monkeypatch.setattr(hpo.run.objective, "run_trial", starved)
    with caplog.at_level("WARNING", logger="hpo.worker"):
        summary = hpo.run.worker.run_worker(storage_url, study.study_name, poll=0.1)
    trials = read_trials(storage_url, study.study_name)
    assert trials[victims[0]].state == TrialState.FAIL
    (retry,) = successors(trials, victims[0])
    assert retry.state == TrialState.COMPLETE and retry.params == trials[victims[0]].params
    assert finished(trials) == 3
    if when == "before training":  # a retry is the same trial: its first attempt's seeds
        assert retry.user_attrs["seeds"] == [trial_seed(load_study_file(path), victims[0], 0)]
    if when == "at tell":
        assert (summary.completed, summary.failed) == (3, 0)
        assert retry.values == [99.0] and retry.user_attrs["adopted_from"] == victims[0]
        assert f"re-queued as trial {retry.number}, which had not started" in caplog.text
    else:
        assert f"trial {victims[0]} was declared dead by another worker" in caplog.text
        assert 99.0 not in [v for t in trials for v in (t.values or [])]
        assert summary.failed == 1
        assert summary.completed == (3 if when == "before training" else 2)


# --- 6. the database file deleted or replaced during a search --------------------------------


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_lost_mid_search_stops_it_in_one_line_never_finished(
        how: str, study_file: Callable[..., Path], tmp_path: Path) -> None:
    """Workers keep writing into a SQLite file that was deleted (or had another file moved to
    its name): nothing they finish can be read again. The search stops them within a second or
    so and says so in one line; it never prints `finished` or advises querying the database."""
    path = study_file(**SECONDS_STUDY)
    name, db = name_of(path), tmp_path / "db" / "hpo.db"
    url = f"sqlite:///{db}"
    with running_search(path, tmp_path, "--workers", "2", url=url) as search:
        wait_until(lambda: mid_trial(url, name, 0.2, 30.0), 120, "a trial to be training")
        if how == "deleted":
            for side in ("", "-wal", "-shm"):
                Path(f"{db}{side}").unlink(missing_ok=True)
        else:
            other = tmp_path / "other.db"
            other.write_bytes(db.read_bytes())
            os.replace(other, db)
        assert search.wait(120) == 1
        search.note_workers()
    assert "trials finished" not in search.stdout and "next:" not in search.stdout
    errors = [ln for ln in search.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, search.stderr[-2000:]
    assert str(db) in errors[0] and ("is gone" if how == "deleted" else "replaced") in errors[0]
    assert "not stored" in errors[0]
    for pid in search.workers:  # every worker has exited
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_a_replaced_database_keeps_no_log_of_the_old_one(
        study_file: Callable[..., Path], tmp_path: Path) -> None:
    """The old database's -wal must not be replayed into the file restored in its place."""
    path = study_file(**SECONDS_STUDY)
    name, db = name_of(path), tmp_path / "db" / "hpo.db"
    url = f"sqlite:///{db}"
    with running_search(path, tmp_path, "--workers", "1", url=url) as search:
        wait_until(lambda: mid_trial(url, name, 0.2, 30.0), 120, "a trial to be training")
        backup = tmp_path / "backup.db"
        with contextlib.closing(sqlite3.connect(db)) as src, contextlib.closing(
                sqlite3.connect(backup)) as dst:
            src.backup(dst)
        other = tmp_path / "other.db"
        shutil.copy(backup, other)
        os.replace(other, db)
        assert search.wait(120) == 1
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    read_trials(url, name)  # opening the restored file must not change it
    with contextlib.closing(sqlite3.connect(db)) as a, contextlib.closing(
            sqlite3.connect(backup)) as b:
        assert list(a.iterdump()) == list(b.iterdump())


# --- 7. the storage's disk fills up during a search --------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 40 MB file system of its own (a tmpfs; root only), unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}); needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(folder: Path) -> Path:
    """Writes zeros into folder/filler until the file system refuses (ENOSPC)."""
    filler = folder / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as f:
        while True:
            f.write(bytes(1 << 20))
            f.flush()
    return filler


def test_a_full_disk_loses_no_stored_result_and_says_why_where_it_can_be_read(
        study_file: Callable[..., Path], small_disk: Path, tmp_path: Path) -> None:
    """The database, the worker logs and the artifacts share a disk that fills up mid-search.
    The workers' logs cannot take their last words, so the reason reaches the search's own
    output through its pipe; the search ends non-zero and counts only what is stored; every
    result stored before the fill is still there; once space is freed, `hpo fail-stale` leaves
    no trial RUNNING."""
    path = study_file(**{**SECONDS_STUDY, "trials": 30})
    name, db = name_of(path), small_disk / "hpo.db"
    url = f"sqlite:///{db}"
    env = hpo_env(HPO_STORAGE_RETRY_SECONDS="3")
    with running_search(path, tmp_path, "--workers", "2", url=url, env=env) as search:
        wait_until(lambda: finished(peek_trials(url, name)) >= 1 and mid_trial(
            url, name, 0.2, 30.0), 180, "a finished trial and one training")
        before = {t.number: t.values for t in by_state(read_trials(url, name), *FINISHED)}
        filler = fill(small_disk)
        assert search.wait(180) != 0
    said = search.stdout + search.stderr
    assert "Traceback" not in said, said[-3000:]
    assert "database or disk is full" in said, said[-3000:]  # the logs could not take it
    trials = read_trials(url, name)
    after = {t.number: t.values for t in by_state(trials, *FINISHED)}
    assert after.items() >= before.items()  # nothing stored was lost
    # The count it printed is what is stored, never more.
    assert f"{len(after)}/30 trials finished" in search.stdout, search.stdout[-2000:]
    left = by_state(trials, TrialState.RUNNING)
    if left:  # the disk was still full when its workers died: it says so, with the fix
        assert "could not be failed and re-queued (database or disk is full)" in said
        assert f"hpo fail-stale {name}" in said
    print(f"full disk: {len(before)} finished before the fill, {len(after)} stored at the end, "
          f"{len(left)} left RUNNING until space was freed")
    filler.unlink()
    r = subprocess.run([sys.executable, "-m", "hpo", "fail-stale", name, "--storage", url],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    trials = read_trials(url, name)
    assert by_state(trials, TrialState.RUNNING) == []
    assert {t.number: t.values for t in by_state(trials, *FINISHED)} == after
