"""One search worker: claims trials within the study's budget, trains, reports, and tells.

It drives Optuna's ask/tell itself rather than `study.optimize` so that it can hold the budget
lock around "count, then ask", keep its own heartbeat thread alive through a database restart,
retry storage calls while the server is away, and hand an interrupted trial back to the queue.

A worker started by `hpo search` watches its supervisor: if the supervisor dies (SIGKILL, the
OOM killer, a closed terminal), the worker finishes the trial it is training, records it, and
exits at that safe point instead of searching on unattended. A trained result is never thrown
away for it, and no trial is left RUNNING. Workers started on their own (`hpo worker`) have no
supervisor and run to the end of the budget.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import optuna
from optuna.trial import TrialState

from hpo import env
from hpo.errors import HpoError, WorkerError
from hpo.run import objective, timing
from hpo.run.retrying import STORAGE_ERRORS
from hpo.run.retrying import retry as _retry
from hpo.run.uploads import check_store
from hpo.store import optuna_api
from hpo.store.attrs import FAIL_REASON_ATTR, INTERRUPTED
from hpo.store.engines import check_identity, file_identity, open_storage
from hpo.store.heartbeat import note
from hpo.store.recovery import adopt, fail_stale, requeue
from hpo.store.studies import budget_lock, counts, load, make_pruner, make_sampler
from hpo.store.urls import mask
from hpo.study.construct import construct
from hpo.study.spec import worker_seed
from hpo.task.source import verify

log = logging.getLogger("hpo.worker")
T = TypeVar("T")
MAX_CONSECUTIVE_FAILURES = 3
# Seconds between looks at the study while the last trials run elsewhere: short, because the
# search ends only when every worker has seen the budget met.
POLL = 0.5


class _StopRequests:
    """SIGINT/SIGTERM handling that never tears a storage call in half.

    A KeyboardInterrupt raised inside `study.ask()` or `study.tell()` would leave a trial RUNNING
    that nobody fails. So the first signal raises only while a trial trains (where `_run_one`
    fails and re-queues it); anywhere else it is only recorded, and the worker stops at its next
    safe point. A second signal raises at once: the user insists, and a trial caught in between
    is still recovered later through its heartbeat.

    A raise can be lost: landing in a weakref callback or `__del__` (the garbage collector runs
    them anywhere; SQLAlchemy's class registry has one), Python prints "Exception ignored" and
    goes on. So the trial also calls `check` after every epoch (run_trial's `stop`), and a lost
    interrupt still ends it one epoch later instead of letting it train to the end (CI saw both
    workers of a Ctrl-C'd search complete their trials).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.in_trial = False
        self.requeued: int | None = None  # the trial number this worker failed and re-queued

    def __call__(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.in_trial or self.count > 1:
            self.in_trial = False  # raise once; the handler code that follows must not re-raise
            raise KeyboardInterrupt

    @property
    def requested(self) -> bool:
        return self.count > 0

    def check(self) -> None:
        if self.count:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def trial(self) -> Iterator[None]:
        self.in_trial = True
        try:
            self.check()  # a signal that came while the trial was being claimed
            yield
        finally:
            self.in_trial = False


STOP = _StopRequests()


def retry(fn: Callable[[], T], what: str, patience: float | None = None,
          kind: str = timing.OTHER) -> T:
    """hpo.run.retrying.retry that gives up at once when this worker is asked to stop."""
    return _retry(fn, what, patience, stop_requested=lambda: STOP.requested, kind=kind)


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.RDBStorage, trial_id: int,
              study: optuna.Study | None = None) -> Iterator[None]:
    """Beats every interval; unlike Optuna's thread it survives a storage error, so a trial
    outlives a short database restart instead of being declared dead.

    Every half grace period it also fails (and re-queues) the study's stale trials: a dead
    host's trial is then noticed within 1.5 grace periods, not only when some worker next
    finishes a trial of its own (minutes, with real trials). Only one worker's attempt to fail
    a trial succeeds, so concurrent checks re-queue it once."""
    interval = storage.get_heartbeat_interval() or 0
    every = max(1, math.ceil((storage.grace_period or 2 * interval) / 2 / max(interval, 1)))
    stop = threading.Event()

    def beat() -> None:
        n = 0
        while not stop.is_set():
            with contextlib.suppress(*STORAGE_ERRORS), timing.timed(timing.HEARTBEAT):
                storage.record_heartbeat(trial_id)
            n += 1
            if study is not None and n % every == 0:
                with contextlib.suppress(*STORAGE_ERRORS), timing.timed(timing.FAIL_STALE):
                    _fail_stale(study, storage)
            stop.wait(interval)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    if interval:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if interval:
            thread.join()


@dataclass
class WorkerSummary:
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    interrupted: bool = False


RunTrial = Callable[..., "objective.Outcome"]


def run_worker(url: str, study_name: str, *, worker_index: int | None = None, threads: int = 1,
               poll: float = POLL, max_trials: int | None = None,
               run_trial: RunTrial | None = None) -> WorkerSummary:
    """Runs trials until the study's budget is met (or max_trials of its own are done).
    `run_trial` replaces hpo.run.objective.run_trial (benchmarks measure the worker around it)."""
    job = run_trial or objective.run_trial
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # We run our own heartbeat thread around ask/tell; Optuna's warning assumes optimize().
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
    STOP.reset()
    if threading.current_thread() is not threading.main_thread():
        return _run(url, study_name, worker_index, threads, poll, max_trials, job)
    # Ctrl-C, `kill` and `docker stop` take the same path; the caller's handlers come back after.
    previous = {s: signal.signal(s, STOP) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(url, study_name, worker_index, threads, poll, max_trials, job)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run(url: str, study_name: str, worker_index: int | None, threads: int, poll: float,
         max_trials: int | None, job: RunTrial) -> WorkerSummary:
    storage = open_storage(url)
    try:
        return _loop(storage, study_name, worker_index, threads, poll, max_trials, job)
    finally:
        storage.engine.dispose()  # closed properly, also when the process then ends at once


def _loop(storage: optuna.storages.RDBStorage, study_name: str, worker_index: int | None,
          threads: int, poll: float, max_trials: int | None, job: RunTrial) -> WorkerSummary:
    study, spec = load(study_name, storage)
    if (differ := note(study)) is not None:
        log.warning("%s", differ)
    # A study on a data file: this host's copy must be the file the study recorded (its
    # sha256), refused in one line before this worker claims any trial.
    verify(spec.source(), study_name)
    construct(spec, f"study '{study_name}' (its stored definition)")  # as a study file is
    now = counts(study)  # a grouped count: no trial is loaded to seed this worker
    n_existing = now.total
    log.info("worker %s:%d joined study '%s' on %s: %d of %d trials finished, %d running; it "
             "stops when the budget is met", socket.gethostname(), os.getpid(), study_name,
             mask(storage.engine.url.render_as_string(hide_password=False)), now.finished,
             now.budget, now.running)
    # In containers every worker is PID 1: the host name (container id, pod name) tells them apart.
    index = worker_index if worker_index is not None else int.from_bytes(
        f"{socket.gethostname()}:{os.getpid()}".encode(), "big")
    study.sampler = make_sampler(spec, worker_seed(spec, index, n_existing))
    study.pruner = make_pruner(spec)
    me = f"{socket.gethostname()}:{os.getpid()}"
    summary, consecutive = WorkerSummary(), 0
    deadline = env.deadline()  # set by `hpo search --timeout`
    opened = file_identity(storage.engine.url)  # a SQLite file deleted or replaced: stop
    supervisor = env.supervisor_pid()
    check_store(storage)  # an unwritable artifact store is said once, now, not per trial
    while max_trials is None or summary.completed + summary.pruned < max_trials:
        STOP.check()  # a safe point: no trial of ours is running
        check_identity(storage.engine.url, opened)
        if time.time() >= deadline:
            break
        if supervisor is not None and os.getppid() != supervisor:
            log.warning("the `hpo search` that started this worker (pid %d) is gone; stopping "
                        "at this safe point (no trial of ours is running)", supervisor)
            summary.interrupted = True
            break
        retry(lambda: _fail_stale(study, storage), "fail stale trials", kind=timing.FAIL_STALE)
        trial = retry(lambda: _claim(study, storage), "claim a trial", kind=timing.CLAIM)
        if trial is None:
            if retry(lambda: counts(study), "count trials", kind=timing.COUNT).done:
                break
            time.sleep(poll)  # the last trials are running elsewhere; wait in case one fails
            continue
        with heartbeat(storage, optuna_api.trial_id(trial), study):
            state = _run_one(study, storage, spec, trial, threads, me, job)
        if state == TrialState.FAIL:
            summary.failed += 1
            consecutive += 1
            if consecutive >= MAX_CONSECUTIVE_FAILURES:
                raise WorkerError(f"worker {me}: {consecutive} trials in a row failed; see the "
                                  f"trials' fail_reason (`hpo trials {study_name} --state fail`)")
        else:
            consecutive = 0
            summary.completed += state == TrialState.COMPLETE
            summary.pruned += state == TrialState.PRUNED
    return summary


def _fail_stale(study: optuna.Study, storage: optuna.storages.RDBStorage) -> None:
    fail_stale(study, storage, judge_pids=False, by="found by a worker")


def _claim(study: optuna.Study, storage: optuna.storages.RDBStorage) -> optuna.Trial | None:
    with budget_lock(storage, study.study_name):
        if not counts(study).may_ask:
            return None
        return study.ask()


def _run_one(study: optuna.Study, storage: optuna.storages.RDBStorage, spec: Any,
             trial: optuna.Trial, threads: int, me: str, job: RunTrial) -> TrialState:
    try:
        with STOP.trial():
            outcome = job(spec, trial, threads=threads, host=me, call=retry, stop=STOP.check)
    except KeyboardInterrupt:
        # Failed and re-queued under the budget lock, for the reason fail_stale gives.
        with budget_lock(storage, study.study_name):
            if _fail(study, trial, f"{INTERRUPTED} (Ctrl-C or SIGTERM); its parameters were "
                                   "re-queued"):
                frozen = retry(lambda: optuna_api.storage_of(study).get_trial(
                    optuna_api.trial_id(trial)), "read the trial")
                retry(lambda: requeue(study, frozen), "re-queue the interrupted trial")
                STOP.requeued = trial.number
        raise
    except STORAGE_ERRORS:
        raise
    except optuna.exceptions.UpdateFinishedTrialError:
        _declared_dead(trial, "it had not trained yet; the re-queued copy runs instead")
        return TrialState.FAIL
    except HpoError as e:  # refused input (a trial another client made): one line, no trace
        log.error("trial %d failed: %s", trial.number, e)
        _fail(study, trial, str(e))
        return TrialState.FAIL
    except Exception as e:  # a bug or a bad configuration: record it, keep the worker alive
        log.exception("trial %d failed", trial.number)
        _fail(study, trial, f"{type(e).__name__}: {e}")
        return TrialState.FAIL
    state = outcome.state
    try:
        told = retry(lambda: study.tell(trial, outcome.values if state == TrialState.COMPLETE
                                        else None, state=state, skip_if_finished=True),
                     "record the trial's result", kind=timing.TELL)
    except WorkerError as e:  # results first: a result that is lost is said to be lost
        raise WorkerError(f"trial {trial.number} ({state.name.lower()}: {outcome.summary}) "
                          f"is not stored: {e}") from e
    if told.state == state and not outcome.detached:
        log.info("trial %d %s: %s", trial.number, state.name.lower(), outcome.summary)
        return state
    if state == TrialState.COMPLETE and outcome.values is not None:
        # Results first: a trained result is kept on the re-queued copy if nobody took it yet.
        values = outcome.values
        copy_ = retry(lambda: adopt(study, storage, trial.number, values, outcome.attrs,
                                    outcome.upload),
                      "keep the result on the trial's re-queued copy", kind=timing.TELL)
        if copy_ is not None:
            log.warning("trial %d was declared dead by another process (no heartbeat within the "
                        "study's grace period) and re-queued as trial %d, which had not started: "
                        "this attempt's result is recorded there: %s", trial.number, copy_,
                        outcome.summary)
            return TrialState.COMPLETE
    _declared_dead(trial, "its copy already runs or ran, so this attempt's result is dropped")
    return TrialState.FAIL


def _declared_dead(trial: optuna.Trial, what: str) -> None:
    # This worker went without heartbeats for longer than the grace period (a starved CPU, a
    # long database outage): another process failed the trial and re-queued its params, and
    # that copy runs or ran. Saying so beats a traceback, or a "complete" that storage never saw.
    log.warning("trial %d was declared dead by another worker (no heartbeat within the grace "
                "period) and its parameters re-queued; %s", trial.number, what)


def _fail(study: optuna.Study, trial: optuna.Trial, reason: str) -> bool:
    """Fails the trial with its reason; False if it had already finished (declared dead by
    another worker, which then also re-queued it)."""
    try:
        retry(lambda: trial.set_user_attr(FAIL_REASON_ATTR, reason[:500]), "record the failure")
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    retry(lambda: study.tell(trial, state=TrialState.FAIL, skip_if_finished=True),
          "mark the trial failed")
    return True


