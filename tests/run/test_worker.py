"""hpo.run.worker as a unit: its supervisor watch (a killed `hpo search` leaves no worker running
unattended and no trial RUNNING, and loses no trained result), values told by metric name, and
its retry wrapper. Real processes where the behaviour is about processes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

import hpo.run.worker
import hpo.store.recovery
from hpo.errors import WorkerError
from hpo.store import optuna_api
from hpo.store.engines import open_storage
from hpo.store.studies import create_study, load
from hpo.study.parse import load_study_file
from tests.support.searchprocs import (
    SECONDS_STUDY,
    by_state,
    mid_trial,
    peek_trials,
    running_search,
    wait_until,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.timeout(300)
def test_a_killed_supervisor_leaves_finished_trials_and_no_running_worker(
        study_file: Callable[..., Path], tmp_path: Path) -> None:
    path = study_file(**{**SECONDS_STUDY, "trials": 12})
    name = load_study_file(path).name
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    with running_search(path, tmp_path, "--workers", "2", url=url) as search:
        running = wait_until(lambda: mid_trial(url, name, 0.2, 3.0), 120, "a trial mid-way")
        workers = wait_until(lambda: search.note_workers() or None, 30, "the workers")
        killed_at = time.monotonic()
        os.kill(search.proc.pid, signal.SIGKILL)  # the supervisor: no chance to forward a signal
        search.proc.wait(10)
        wait_until(lambda: not any(_alive(p) for p in workers) or None, 120,
                   "the workers to stop after their supervisor died")
        stopped_after = time.monotonic() - killed_at
    trials = peek_trials(url, name)
    assert not by_state(trials, TrialState.RUNNING), [(t.number, t.state) for t in trials]
    after = next(t for t in trials if t.number == running.number)
    assert after.state == TrialState.COMPLETE  # the trial in training was finished, not thrown away
    assert len(by_state(trials, TrialState.COMPLETE)) < 12  # they stopped instead of going on
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "is gone; stopping at this safe point" in logs
    assert "Traceback" not in logs
    assert stopped_after < 60


def test_values_are_told_by_metric_name(tmp_path: Path, study_file: Callable[..., Path],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """[objective] metric = "train_seconds" stores training seconds; a swapped pair is stored
    in the study's order, whatever order the objective measures them in."""
    monkeypatch.setenv("HPO_ARTIFACTS", "none")
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    for metrics, directions in ((("train_seconds",), ["minimize"]),
                                (("train_seconds", "val_removed"), ["minimize", "maximize"]),
                                (("val_removed", "train_seconds"), ["maximize", "minimize"])):
        objective = {"metric": metrics[0], **({"second": metrics[1]} if len(metrics) > 1 else {})}
        path = study_file(trials=1, objective=objective, sampler={"type": "random"})
        spec = load_study_file(path)
        assert spec.directions == directions
        create_study(spec, open_storage(url, create=True))
        summary = hpo.run.worker.run_worker(url, spec.name, worker_index=0)
        assert summary.completed == 1
        study, _ = load(spec.name, open_storage(url, heartbeat=False))
        t = study.trials[0]
        measured = {"train_seconds": t.user_attrs["train_seconds"],
                    "val_removed": sum(t.user_attrs["val_removed_per_seed"]) / len(
                        t.user_attrs["val_removed_per_seed"])}
        assert t.values == pytest.approx([measured[m] for m in metrics], abs=1e-3)
        assert [d.name.lower() for d in study.directions] == directions


def test_retry_gives_up_with_one_line_after_its_patience(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    import sqlalchemy

    calls = []

    def down() -> None:
        calls.append(1)
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server gone"))

    with pytest.raises(WorkerError, match="storage failed for 1 s while trying to count"):
        hpo.run.worker.retry(down, "count", patience=1.0)
    assert len(calls) >= 2  # it did retry before giving up
    hpo.run.worker.STOP.reset()
    hpo.run.worker.STOP.count = 1  # Ctrl-C meanwhile: no waiting out the outage
    with pytest.raises(KeyboardInterrupt):
        hpo.run.worker.retry(down, "count", patience=60.0)
    hpo.run.worker.STOP.reset()


def test_a_claim_waits_while_a_stale_trial_is_failed_and_requeued(
        tmp_path: Path, study_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Optuna commits a stale trial's FAIL before it adds the re-queued copy. A claim in that gap
    once saw room in the budget and no waiting trial, started a fresh trial that filled the
    budget, and left the dead trial's parameters WAITING for ever (a CI failure of
    test_hosts.py). fail_stale holds the budget lock across both, so the claim gets the copy."""
    import threading

    import optuna

    from hpo.store.attrs import RETRY_OF_ATTR
    from hpo.store.engines import RetryStaleTrial

    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPO_GRACE_PERIOD", "2")
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    spec = load_study_file(study_file(trials=1))
    create_study(spec, open_storage(url, create=True))
    dying = open_storage(url)
    study, _ = load(spec.name, dying)
    victim = study.ask()
    dying.record_heartbeat(victim._trial_id)
    # No beat since: stale once the grace period has passed by the database's clock (whole
    # seconds on SQLite).
    wait_until(lambda: optuna_api.stale_trial_ids(dying, optuna_api.study_id(study)) or None,
               10, "the trial to go stale")

    other = open_storage(url)  # another worker, which asks for a trial meanwhile
    peer, _ = load(spec.name, other)
    claimed: list[optuna.Trial | None] = []
    in_gap: list[bool] = []
    requeue = RetryStaleTrial.__call__
    claim = threading.Thread(target=lambda: claimed.append(hpo.run.worker._claim(peer, other)))

    def slow_requeue(self: RetryStaleTrial, study: optuna.Study, trial: Any) -> None:
        claim.start()
        claim.join(timeout=1.0)  # the FAIL is committed; the copy is not there yet
        in_gap.append(not claim.is_alive())
        requeue(self, study, trial)

    monkeypatch.setattr(RetryStaleTrial, "__call__", slow_requeue)
    watcher = open_storage(url)
    hpo.store.recovery.fail_stale(load(spec.name, watcher)[0], watcher)
    claim.join(timeout=30)
    assert in_gap == [False], "a claim ran between the FAIL and the re-queue"
    (trial,) = claimed
    assert trial is not None and trial.user_attrs[RETRY_OF_ATTR] == victim.number


def test_an_interrupt_lost_in_a_weakref_callback_still_ends_the_trial_at_the_next_epoch(
        tmp_path: Path, study_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's SIGINT handler raises KeyboardInterrupt where the signal lands. In a weakref
    callback (the garbage collector runs SQLAlchemy's anywhere) Python prints "Exception
    ignored" and trains on: in CI both workers of a Ctrl-C'd search completed their trials.
    The epoch check behind it fails and re-queues the trial one epoch later."""
    import functools
    import weakref

    from hpo.run import objective
    from hpo.task.train import train

    monkeypatch.setenv("HPO_ARTIFACTS", "none")
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    spec = load_study_file(study_file(trials=2, space={
        "hidden_size": {"type": "int", "low": 4, "high": 4},
        "epochs": {"type": "int", "low": 30, "high": 30}}))
    create_study(spec, open_storage(url, create=True))
    epochs: list[int] = []
    ignored: list[str] = []
    monkeypatch.setattr("sys.unraisablehook", lambda u: ignored.append(type(u.exc_value).__name__))

    class Thing:
        pass

    def lossy(cfg: Any, tr: Any, val: Any, on_epoch: Any, **kw: Any) -> Any:
        def watch(r: Any) -> Any:
            epochs.append(r.epoch)
            if r.epoch == 3:  # Ctrl-C arrives while the collector runs a weakref callback
                thing = Thing()
                ref = weakref.ref(thing, lambda _: signal.raise_signal(signal.SIGINT))
                del thing
                assert ref() is None and ignored == ["KeyboardInterrupt"]  # lost, as in CI
            return on_epoch(r)
        return train(cfg, tr, val, watch, **kw)

    with pytest.raises(KeyboardInterrupt):
        hpo.run.worker.run_worker(url, spec.name, worker_index=0,
                              run_trial=functools.partial(objective.run_trial, trainer=lossy))
    assert epochs == [1, 2, 3]  # ended at the check right after the lost interrupt
    assert hpo.run.worker.STOP.requeued == 0
    study, _ = load(spec.name, open_storage(url, heartbeat=False))
    states = [(t.number, t.state) for t in study.trials]
    assert states == [(0, TrialState.FAIL), (1, TrialState.WAITING)]
    assert "interrupted" in study.trials[0].user_attrs["fail_reason"]
    assert study.trials[1].params == study.trials[0].params
