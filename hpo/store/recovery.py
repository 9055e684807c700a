"""Recovering a study's failed and abandoned trials, in one place: the workers' own stale check,
`hpo fail-stale`, `hpo retry-failed`, and the re-queue of an interrupted trial.

Every re-queue goes through the workers' own retry callback (hpo.store.engines.RetryStaleTrial),
so the `retry_history` that Optuna keeps on each new attempt is the one record of what has been
retried:
a failed trial whose number appears in any trial's retry_history already has a successor and is
never queued again, whether the workers, `fail-stale` or an earlier `retry-failed` queued it.

Which RUNNING trials `fail-stale` declares dead, by evidence that holds for every process:
* a trial whose worker ran on this host and whose process id no longer exists (or is a zombie):
  at once, heartbeat or not (a worker killed a moment ago need not wait out the grace period);
* a trial whose last heartbeat is older than the study's grace period (hpo.store.heartbeat),
  exactly as the workers decide it.
Every other RUNNING trial is left alone and reported with the reason: its heartbeat's age against
the grace period, or its host. A pid reused by an unrelated process keeps its trial RUNNING: the
error is on the safe side.
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo import env
from hpo.store import heartbeat, optuna_api, queries
from hpo.store.attrs import (
    ADOPTED_ATTR,
    FAIL_REASON_ATTR,
    HOST_ATTR,
    PID_ATTR,
    RETRY_HISTORY,
    RETRY_OF_ATTR,
)
from hpo.store.engines import RetryStaleTrial
from hpo.store.studies import budget_lock, counts


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of the trials that already have a successor (a re-queued copy of their params)."""
    return {n for t in trials for n in _history(t)}


def _history(t: FrozenTrial) -> list[int]:
    """A trial's retry history as Optuna writes it: numbers; anything else reads as none."""
    raw = t.system_attrs.get(RETRY_HISTORY)
    return [n for n in raw if isinstance(n, int) and not isinstance(n, bool)] if isinstance(
        raw, list) else []


def _params_key(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def _successor(trials: list[FrozenTrial], number: int) -> int | None:
    for t in trials:
        history = _history(t)
        if history and history[-1] == number:
            return t.number
    return None


@dataclass
class RetryReport:
    requeued: list[tuple[int, int]] = field(default_factory=list)  # (failed, new trial)
    already_retried: list[int] = field(default_factory=list)
    params_taken: list[int] = field(default_factory=list)  # same params finished/queued elsewhere
    no_params: list[int] = field(default_factory=list)  # failed before suggesting anything
    budget: int = 0
    finished: int = 0


def retry_failed(study: optuna.Study, storage: optuna.storages.RDBStorage) -> RetryReport:
    """Re-queues the params of each failed trial that has no successor yet, once.

    A failed trial whose params another trial already ran, runs or waits to run is skipped: in a
    grid or points study a second copy would run a point twice. Manual retries ignore
    HPO_MAX_RETRY (that bounds the automatic ones); each failed trial still gets at most one.
    """
    report = RetryReport()
    # Under the budget lock two concurrent `retry-failed` runs cannot both queue the same trial.
    with budget_lock(storage, study.study_name):
        trials = study.get_trials(deepcopy=False)
        retried = retried_numbers(trials)
        taken = {_params_key(t.params) for t in trials if t.state != TrialState.FAIL}
        requeue = RetryStaleTrial(max_retry=None)
        queued: list[int] = []
        for t in trials:
            if t.state != TrialState.FAIL:
                continue
            key = _params_key(t.params)
            if t.number in retried:
                report.already_retried.append(t.number)
            elif not t.params:
                report.no_params.append(t.number)
            elif key in taken:
                report.params_taken.append(t.number)
            else:
                requeue(study, copy.deepcopy(t))
                taken.add(key)
                queued.append(t.number)
        after = study.get_trials(deepcopy=False)
    for n in queued:
        new = _successor(after, n)
        assert new is not None, f"trial {n} was re-queued but no successor is stored"
        report.requeued.append((n, new))
    c = counts(study)
    report.budget, report.finished = c.budget, c.finished
    return report


@dataclass
class StaleReport:
    failed: list[tuple[int, str]] = field(default_factory=list)  # (number, why)
    requeued: list[tuple[int, int]] = field(default_factory=list)  # (failed, new trial)
    not_requeued: list[int] = field(default_factory=list)  # out of retries (HPO_MAX_RETRY)
    unjudged: list[int] = field(default_factory=list)  # alive, or not judged from here
    why: dict[int, str] = field(default_factory=dict)  # number -> why it was left alone
    running: int = 0


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a killed worker not yet reaped). A
    stored value that cannot be a process id (another tool wrote it) counts as alive: such a
    trial is left alone, never failed on its word."""
    if not 0 < pid < 2**22 * 1024:  # Linux's pid_max is at most 2**22
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The state follows the command name, which is in parentheses and may hold spaces.
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _waiting(age: float | None, grace: int | None, where: Any, pid: Any, host: str) -> str:
    """Why a RUNNING trial is left alone, in words."""
    place = (f"its worker pid {pid} is alive here" if where == host and isinstance(pid, int)
             else f"on host {where}" if isinstance(where, str) else "no host recorded")
    if age is None:
        return f"no heartbeat to judge by; {place}"
    return f"heartbeat {age:.0f} s old, under the study's {grace} s grace period; {place}"


def fail_stale(study: optuna.Study, storage: optuna.storages.RDBStorage, *,
               judge_pids: bool = True, by: str = "`hpo fail-stale`") -> StaleReport:
    """Fails the RUNNING trials whose worker is gone (see the module notes) and re-queues their
    params as the workers would, at most HPO_MAX_RETRY times per lineage. `by` ends each
    reason: who declared the trial dead.

    Workers call this before every claim and from their heartbeat threads, with judge_pids off:
    then it costs one read (the stale ids), and the rest runs only when a trial is stale, which
    is rare. Everything is failed and re-queued under the budget lock: Optuna would commit the
    FAIL first and add the re-queued copy after, and a claim in between would see room in the
    budget and no waiting trial, start a fresh trial that fills the budget, and strand the dead
    trial's parameters WAITING for ever (CI caught it in
    test_host_lost_mid_trial_its_trial_is_retried_elsewhere)."""
    report = StaleReport()
    sid = optuna_api.study_id(study)
    beats = storage.heartbeat_interval is not None  # a storage opened without: no stale ids
    if beats:
        # A trial another client started and never beats for would hold its place in the
        # budget for ever (workers wait for it): its first beat is given now, by the database's
        # clock, and the study's grace period then judges it as it judges every trial.
        for tid in queries.silent_running(storage, sid):
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                storage.record_heartbeat(tid)
    stale = set(optuna_api.stale_trial_ids(storage, sid)) if beats else set()
    if not stale and not judge_pids:
        return report
    grace = storage.grace_period
    host = socket.gethostname()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    report.running = len(running)
    ages = queries.heartbeat_ages(storage, sid) if judge_pids else {}
    dead: list[tuple[FrozenTrial, str]] = []
    for t in running:
        tid, pid, where = optuna_api.trial_id(t), t.user_attrs.get(PID_ATTR), t.user_attrs.get(
            HOST_ATTR)
        if tid in stale:
            dead.append((t, f"no heartbeat for more than {grace} s: its worker is gone ({by})"))
        elif not judge_pids:
            continue
        elif where == host and isinstance(pid, int) and not pid_alive(pid):
            # Evidence that holds for everyone, at once: no need to wait out the grace period.
            dead.append((t, f"its worker (pid {pid} on {host}) is gone ({by})"))
        else:
            report.unjudged.append(t.number)
            report.why[t.number] = _waiting(ages.get(tid), grace, where, pid, host)
    contract = heartbeat.stored(study)
    callback = (storage.get_heartbeat_stale_trial_callback() or RetryStaleTrial(
        contract.max_retry if contract is not None else env.heartbeat_settings()[2]))
    failed: list[int] = []
    st = optuna_api.storage_of(study)  # through the study's cache, so its later reads see them
    with budget_lock(storage, study.study_name) if dead else contextlib.nullcontext():
        for t, why in dead:
            try:
                tid = optuna_api.trial_id(t)
                st.set_trial_user_attr(tid, FAIL_REASON_ATTR, why)
                if not st.set_trial_state_values(tid, TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # it finished (or a worker failed it) meanwhile: not ours to touch
            report.failed.append((t.number, why))
            failed.append(t.number)
            callback(study, copy.deepcopy(st.get_trial(tid)))
    after = study.get_trials(deepcopy=False)
    for n in failed:
        new = _successor(after, n)
        if new is None:
            report.not_requeued.append(n)
        else:
            report.requeued.append((n, new))
    return report


def requeue(study: optuna.Study, frozen: FrozenTrial) -> None:
    """Re-queues a failed trial's parameters through Optuna's own retry bookkeeping, so retry
    history and the retry limit are shared with heartbeat-stale retries."""
    storage = optuna_api.storage_of(study)
    callback = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
    if callback is None:
        callback = RetryStaleTrial(max_retry=env.heartbeat_settings()[2])
    callback(study, frozen)


def adopt(study: optuna.Study, storage: optuna.storages.RDBStorage, number: int,
          values: list[float], attrs: dict[str, Any],
          upload: Callable[[optuna.Trial], dict[str, Any]] | None = None) -> int | None:
    """Keeps a finished attempt's result that storage refused because another process
    declared the trial dead (by its clock, or through a long outage) and re-queued its
    parameters: when that re-queued copy has not started yet, the result is recorded on it,
    with the attempt's params and attrs and `adopted_from`. Returns the copy's number, or None
    when the copy already runs or ran (then its result counts and this one is dropped).
    Under the budget lock, like every claim: a worker cannot take the copy meanwhile."""
    st = optuna_api.storage_of(study)
    with budget_lock(storage, study.study_name):
        original = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        copy_ = next((t for t in waiting
                      if _history(t)[-1:] == [number]), None)
        if copy_ is None:
            return None
        tid = optuna_api.trial_id(copy_)
        if not st.set_trial_state_values(tid, TrialState.RUNNING):
            return None
        for name, value in original.params.items():
            dist = original.distributions[name]
            st.set_trial_param(tid, name, dist.to_internal_repr(value), dist)
        if upload is not None:  # its picture and model file, while the copy runs
            attrs = {**attrs, **upload(optuna_api.live_trial(study, tid))}
        for k, v in {**attrs, RETRY_OF_ATTR: number, ADOPTED_ATTR: number}.items():
            st.set_trial_user_attr(tid, k, v)
        st.set_trial_state_values(tid, TrialState.COMPLETE, values)
        return copy_.number
