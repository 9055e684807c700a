"""Many hosts for real: workers on separate network hosts, a link cut mid-trial, a host lost.

Each test runs one study on a lab of Linux network namespaces (tests/support/netns.py): a "db" host
with a private PostgreSQL, and three worker hosts h1, h2, h3, each with its own host name,
joined by veth pairs to one bridge and sharing one artifacts directory, as NFS would share it.
The workers are real `hpo worker` processes that reach the database over TCP; the faults are
real too: a link taken down (`ip link set eth0 down` on the host) for longer and for shorter
than the grace period, every process of a host SIGKILLed at once behind a cut link (a power cut:
the server never hears a FIN) in the middle of a trial and while it holds the budget lock,
PostgreSQL restarted, a host that joins when the budget is nearly spent.

Whatever the fault, a study must end with exactly its budget of finished trials, none RUNNING
or left WAITING, no parameters finished twice, every complete trial's artifacts in the store and
no file there that no trial references, and `hpo best --json` the same on every host. Each test
writes its figures (time to detect, time to retry, trials lost, duplicates) to
bench/results/faults.json once its assertions have passed; BENCHMARKS.md quotes them.

Needs root (namespaces) and PostgreSQL's server binaries; skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
import tomli_w
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import HpoError
from tests.support import netns
from tests.support.netns import Host, Lab, LabUnavailable
from tests.support.searchprocs import FINISHED, SECONDS_STUDY, by_state, hpo_env, successors

pytestmark = pytest.mark.slow

HEARTBEAT = 1  # seconds between heartbeats
# A grace period of 5 s leaves a cut of SHORT_CUT s a margin of about a second: TCP retransmits
# a segment sent into a down link only at its backoff times (0.2, 0.6, 1.4, 3.0 s after it was
# sent), so a worker is heard again up to ~1.8 s after a 1 s cut, up to 3 s after its last beat.
GRACE = 5
SHORT_CUT = 1.0
BUDGET = 6
# Trials of a few seconds (a worker's first one ~10 s more: torch starts), with a float parameter
# so that two trials share their parameters only when one re-runs the other. Half the training
# curves of searchprocs.SECONDS_STUDY and fewer epochs: three workers share two cores here, and
# its trials took 10-13 s each.
HOST_STUDY: dict[str, Any] = {
    **SECONDS_STUDY,
    "trials": BUDGET,
    "space": {"hidden_size": {"type": "int", "low": 8, "high": 12},
              "epochs": {"type": "int", "low": 8, "high": 12},
              "lr": {"type": "float", "low": 0.015, "high": 0.04, "log": True}},
    "train": {"batch_size": 5},  # as many steps as 200 curves in batches of 10: trials learn
    "data": {**SECONDS_STUDY["data"], "train": 100},
}
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "faults.json"
COMMAND = ".venv/bin/python -m pytest -m slow tests/system/test_hosts.py"
HPO = [sys.executable, "-m", "hpo"]
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """The namespaces and their PostgreSQL, once for the module (about 5 s to build)."""
    try:
        made = netns.build()
    except LabUnavailable as e:
        pytest.skip(f"cannot build a lab of network namespaces here: {e}")
    try:
        yield made
    finally:
        problems = made.close()
    assert not problems, problems  # a lab that leaves things behind fails the run


@dataclass
class Study:
    """One study on the lab: its file, its shared artifact store, its workers and their logs."""

    lab: Lab
    name: str
    file: Path
    dir: Path
    artifacts: Path
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    observer: optuna.storages.RDBStorage | None = None
    budget: int = BUDGET

    def env(self) -> dict[str, str]:
        return hpo_env(HPO_STORAGE=self.lab.url, HPO_ARTIFACTS=str(self.artifacts),
                       HPO_HEARTBEAT_INTERVAL=str(HEARTBEAT), HPO_GRACE_PERIOD=str(GRACE),
                       HPO_STORAGE_RETRY_SECONDS="120")

    def log(self, host: str) -> Path:
        return self.dir / f"{host}.log"

    def text(self, host: str) -> str:
        path = self.log(host)
        return path.read_text(errors="replace") if path.exists() else ""

    def tails(self) -> str:
        return "\n".join(f"--- {h} (exit {p.poll()}):\n{self.text(h)[-2500:]}"
                         for h, p in self.workers.items())

    def create(self, trials: int = BUDGET) -> None:
        """`hpo create FILE --trials N` once, from h1, before any worker starts."""
        self.budget = trials
        done = self.lab.run(self.lab.workers[0],
                            [*HPO, "create", str(self.file), "--trials", str(trials)],
                            self.env(), self.dir)
        assert done.returncode == 0, done.stdout + done.stderr

    def start(self, *hosts: str) -> None:
        for h in hosts:
            self.started[h] = time.time()
            self.workers[h] = self.lab.spawn(self.lab.host(h), [*HPO, "worker", self.name],
                                             self.env(), self.log(h), self.dir)

    def trials(self) -> list[FrozenTrial]:
        # One storage for the test's many polls: a new engine per poll costs the CPU that the
        # workers need. Pre-ping reconnects it after a server restart.
        if self.observer is None:
            self.observer = optuna.storages.RDBStorage(
                self.lab.observer_url, skip_table_creation=True,
                engine_kwargs={"pool_pre_ping": True})
        return optuna.load_study(study_name=self.name, storage=self.observer).get_trials()

    def peek(self) -> list[FrozenTrial]:
        """trials(), or [] while the study does not exist or the server restarts."""
        try:
            return self.trials()
        except (KeyError, HpoError, optuna.exceptions.StorageInternalError,
                sqlalchemy.exc.SQLAlchemyError):
            return []

    def wait(self, timeout: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        codes = {}
        for h, p in self.workers.items():
            try:
                codes[h] = p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"worker on {h} still running after {timeout:.0f} s\n"
                                     f"{self.tails()}") from None
        return codes

    def stop(self) -> None:
        for p in self.workers.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        if self.observer is not None:
            self.observer.engine.dispose()


@pytest.fixture
def study(lab: Lab, tmp_path: Path) -> Iterator[Study]:
    name = f"hosts-{uuid.uuid4().hex[:8]}"
    file = tmp_path / f"{name}.toml"
    file.write_text(tomli_w.dumps({"name": name, **HOST_STUDY}))
    artifacts = tmp_path / "artifacts"  # the hosts' shared directory (NFS, in real life)
    artifacts.mkdir()
    s = Study(lab, name, file, tmp_path, artifacts)
    try:
        yield s
    finally:
        # Whatever the test did, the next one starts with every host up and its server running.
        s.stop()
        for h in lab.workers:
            lab.heal(h)
        if lab.pg_ctl("status", check=False).returncode != 0:
            lab.pg_ctl("-w", "-t", "60", "-l", str(lab.pg_log), "start")


# --- what every fault must leave intact -----------------------------------------------------------


def epoch(dt: datetime | None) -> float:
    """A storage timestamp as Unix time (Optuna writes naive local time, as time.time() sees
    it on this one machine)."""
    assert dt is not None
    return dt.timestamp()


def log_time(line: str) -> float:
    m = LOG_TIME.match(line)
    assert m, line
    return time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000


def params_key(t: FrozenTrial) -> str:
    return json.dumps(t.params, sort_keys=True)


def artifact_refs(t: FrozenTrial) -> set[str]:
    """Artifact ids the trial references (Optuna's `artifacts:<id>` system attrs; a removed
    one's metadata is the JSON string "null")."""
    return {k.split(":", 1)[1] for k, v in t.system_attrs.items()
            if k.startswith("artifacts:") and v not in (None, "null", json.dumps("null"))}


def best_everywhere(s: Study) -> list[dict[str, Any]]:
    """`hpo best --json` on every worker host at once; all must print the same."""
    procs = {h.name: subprocess.Popen(s.lab.argv(h, [*HPO, "best", s.name, "--json"]),
                                      env=s.env(), cwd=s.dir, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
             for h in s.lab.workers}
    outs = {}
    for h, p in procs.items():
        try:
            out, err = p.communicate(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        assert p.returncode == 0, f"hpo best on {h}: {err.decode(errors='replace')}"
        outs[h] = out.decode()
    assert len(set(outs.values())) == 1, outs
    return json.loads(next(iter(outs.values())))


def check_study(s: Study) -> dict[str, Any]:
    """The invariants every fault must keep; returns the counts for the figures."""
    trials = s.trials()
    listing = [(t.number, t.state.name, t.user_attrs.get("host"),
                t.system_attrs.get("retry_history")) for t in trials]
    assert not by_state(trials, TrialState.RUNNING), listing
    # A re-queued attempt that never ran would be a lost trial, even with the budget met.
    assert not by_state(trials, TrialState.WAITING), listing
    finished = by_state(trials, *FINISHED)
    assert len(finished) == s.budget, listing

    # Parameters run twice only as a recorded retry, and finish at most once.
    groups: dict[str, list[FrozenTrial]] = defaultdict(list)
    for t in trials:
        groups[params_key(t)].append(t)
    duplicates = 0
    for group in groups.values():
        first, *later = sorted(group, key=lambda t: t.number)
        for t in later:
            history = t.system_attrs.get("retry_history", [])
            assert first.number in history, (t.number, history, listing)
            assert t.user_attrs.get("retry_of") == history[-1], (t.number, t.user_attrs)
        duplicates += max(0, len(by_state(group, *FINISHED)) - 1)
    assert duplicates == 0, listing
    # Every failed trial's parameters did finish in the end (at most HPO_MAX_RETRY deaths).
    lost = [t.number for t in by_state(trials, TrialState.FAIL)
            if not by_state(successors(trials, t.number), *FINISHED)]
    assert not lost, (lost, listing)

    # Artifacts: each complete trial's files (picture, model, curves: the ids it records in
    # its artifact_* user attrs) are in the shared store, it references those and nothing else
    # (none inherited from a dead attempt), and no file in the store is unreferenced.
    files = {p.name for p in s.artifacts.iterdir()}
    referenced = set().union(*(artifact_refs(t) for t in trials))
    assert files - referenced == set(), f"orphaned files: {sorted(files - referenced)}"
    for t in by_state(trials, TrialState.COMPLETE):
        assert "artifact_error" not in t.user_attrs, (t.number, t.user_attrs["artifact_error"])
        own = {v for k, v in t.user_attrs.items()
               if k.startswith("artifact_") and isinstance(v, str) and UUID.match(v)}
        assert "artifact_model" in t.user_attrs, t.user_attrs  # pictures: the best only
        assert own <= files, (t.number, own - files)
        assert artifact_refs(t) == own, (t.number, artifact_refs(t), own)
    # HPO_PICTURES=top: the trial with the best model drew one (it ranked first when it ended).
    top = max(by_state(trials, TrialState.COMPLETE),
              key=lambda t: t.user_attrs["model_val_removed"])
    assert "artifact_picture" in top.user_attrs, top.number

    best = best_everywhere(s)
    complete = by_state(trials, TrialState.COMPLETE)
    expected = max(complete, key=lambda t: (t.values[0], -t.number))
    assert best[0]["number"] == expected.number
    assert list(best[0]["values"].values()) == expected.values

    for h in s.workers:
        assert "Traceback" not in s.text(h), s.tails()
    return {"budget": s.budget, "trials": len(trials), "finished": len(finished),
            "failed": len(by_state(trials, TrialState.FAIL)),
            "lost": len(lost) + len(by_state(trials, TrialState.WAITING)),
            "duplicates": duplicates}


def save_figures(fault: str, figures: dict[str, Any]) -> None:
    """Merges one passed test's figures into bench/results/faults.json."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data["command"] = COMMAND
    data["settings"] = {"hosts": 3, "workers_per_host": 1,
                        "heartbeat_interval_s": HEARTBEAT, "grace_period_s": GRACE,
                        "max_retry": 2, "short_cut_s": SHORT_CUT,
                        "cpus": os.cpu_count()}
    data.setdefault("faults", {})[fault] = {
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")


def wait_for(fn: Callable[[], Any], timeout: float, what: str, s: Study) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{s.tails()}")


def training(s: Study, most: int = 50) -> list[FrozenTrial]:
    """RUNNING trials inside their training loop and at most `most` % through it: they have
    sent a progress report (a worker's first trial spends seconds starting torch before its
    first epoch, with no storage call but its heartbeats) and have some way to go."""
    return [t for t in by_state(s.peek(), TrialState.RUNNING)
            if "host" in t.user_attrs and t.intermediate_values
            and max(t.intermediate_values) <= most]


def mid_trial_host(s: Study) -> tuple[FrozenTrial, Host]:
    victim = wait_for(lambda: next(iter(training(s)), None), 150, "a trial mid-training", s)
    return victim, s.lab.host(victim.user_attrs["host"])


def state_of(s: Study, number: int) -> TrialState | None:
    trials = s.peek()
    return trials[number].state if len(trials) > number else None


def drop_line(s: Study, host: str, number: int) -> str:
    lines = [ln for ln in s.text(host).splitlines()
             if f"trial {number} was declared dead by another" in ln]
    assert len(lines) == 1, s.tails()
    return lines[0]


# --- 1. a host cut off for longer than the grace period -------------------------------------------


@pytest.mark.timeout(300)
def test_host_cut_off_beyond_grace_its_trial_is_retried_elsewhere(study: Study) -> None:
    s = study
    s.create()
    s.start("h1", "h2", "h3")
    victim, host = mid_trial_host(s)
    cut_at = time.time()
    s.lab.cut(host)
    try:
        time.sleep(GRACE + 1)
        # Held until another host has declared the trial dead: the others look for stale
        # trials only between two of their own, so a fixed cut could end before anyone looked.
        wait_for(lambda: state_of(s, victim.number) == TrialState.FAIL, 120,
                 f"trial {victim.number} declared dead", s)
    finally:
        s.lab.heal(host)
    healed_at = time.time()
    codes = s.wait(180)

    trials = s.trials()
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL and dead.values is None, (
        f"trial {victim.number} on {host.name}, cut {cut_at - epoch(victim.datetime_start):.1f}"
        f" s after its start\n{s.tails()}")
    (retry,) = successors(trials, victim.number)
    assert retry.state == TrialState.COMPLETE
    assert retry.params == victim.params and retry.user_attrs["retry_of"] == victim.number
    # Results first: back, the cut-off host keeps its trained result on the re-queued copy if
    # no other host had started it yet; else the copy ran on a host that could reach the
    # database, and the cut-off host drops its attempt with a warning.
    line = drop_line(s, host.name, victim.number)
    if retry.user_attrs.get("adopted_from") == victim.number:
        assert retry.user_attrs["host"] == host.name and "which had not started" in line
    else:
        assert retry.user_attrs["host"] != host.name and "result is dropped" in line
    detect = epoch(dead.datetime_complete) - cut_at
    # Declared dead only once its last beat (at most one interval before the cut) was older
    # than the grace period: never while it was merely slow.
    assert detect >= GRACE - HEARTBEAT - 0.5, detect
    # The cut-off host goes on by the rules: the budget is met, so it ends like every other
    # worker.
    assert codes == {h.name: 0 for h in s.lab.workers}, (codes, s.tails())
    assert "worker done:" in s.text(host.name)
    counts = check_study(s)
    assert counts["failed"] == 1 and counts["trials"] == BUDGET + 1
    save_figures("host_cut_beyond_grace", {
        "what": f"link down mid-trial until its trial is failed (grace {GRACE} s), then up",
        "cut_s": healed_at - cut_at,
        "detect_s": detect,
        "retry_s": epoch(retry.datetime_start) - cut_at,
        "retry_done_s": epoch(retry.datetime_complete) - cut_at,
        "dropped_after_heal_s": log_time(line) - healed_at,
        **counts,
        "wall_s": time.time() - s.started["h1"],
    })


# --- 2. a cut shorter than the grace period -------------------------------------------------------


@pytest.mark.timeout(300)
def test_short_cut_trial_survives_and_completes_once(study: Study) -> None:
    s = study
    s.create()
    s.start("h1", "h2", "h3")
    victim, host = mid_trial_host(s)
    cut_at = time.time()
    s.lab.cut(host)
    try:
        time.sleep(SHORT_CUT)
    finally:
        s.lab.heal(host)
    codes = s.wait(180)

    trials = s.trials()
    survived = trials[victim.number]
    assert survived.state == TrialState.COMPLETE, s.tails()
    assert survived.user_attrs["host"] == host.name and survived.params == victim.params
    assert not successors(trials, victim.number)
    assert not by_state(trials, TrialState.FAIL)  # nobody was declared dead
    assert "declared dead" not in s.text(host.name)
    assert codes == {h.name: 0 for h in s.lab.workers}, (codes, s.tails())
    counts = check_study(s)
    assert counts["trials"] == BUDGET
    # Its peers: the trials that were running on the other hosts when the link went down.
    peers = [epoch(t.datetime_complete) - epoch(t.datetime_start)
             for t in by_state(trials, TrialState.COMPLETE) if t.number != victim.number
             and epoch(t.datetime_start) <= cut_at <= epoch(t.datetime_complete)]
    save_figures("host_cut_within_grace", {
        "what": f"link down {SHORT_CUT:.0f} s mid-trial (grace {GRACE} s), then up",
        "detect_s": None, "retry_s": None,
        "victim_trial_s": epoch(survived.datetime_complete) - epoch(survived.datetime_start),
        "peers_trial_s": statistics.median(peers) if peers else None,
        "victim_done_after_cut_s": epoch(survived.datetime_complete) - cut_at,
        **counts,
        "wall_s": time.time() - s.started["h1"],
    })


# --- 3. a whole host lost -------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_host_lost_mid_trial_its_trial_is_retried_elsewhere(study: Study) -> None:
    s = study
    s.create()
    s.start("h1", "h2", "h3")
    victim, host = mid_trial_host(s)
    lost_at = time.time()
    # A power cut: the link goes first, so that no FIN or RST of the dying processes reaches
    # the server, which keeps their sessions as if the host might still answer.
    s.lab.cut(host)
    killed = s.lab.kill_host(host)
    assert s.workers[host.name].pid in killed
    codes = s.wait(180)
    s.lab.heal(host)  # the host is rebuilt and rejoins: `hpo best` must work there too

    trials = s.trials()
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL, s.tails()
    (retry,) = successors(trials, victim.number)
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    assert retry.user_attrs["host"] != host.name
    detect = epoch(dead.datetime_complete) - lost_at
    assert detect >= GRACE - HEARTBEAT - 0.5, detect
    assert codes.pop(host.name) == -signal.SIGKILL
    assert codes == {h.name: 0 for h in s.lab.workers if h != host}, (codes, s.tails())
    counts = check_study(s)
    assert counts["failed"] == 1 and counts["trials"] == BUDGET + 1
    save_figures("host_lost", {
        "what": "every process of one host SIGKILLed mid-trial behind a cut link",
        "detect_s": detect,
        "retry_s": epoch(retry.datetime_start) - lost_at,
        "retry_done_s": epoch(retry.datetime_complete) - lost_at,
        **counts,
        "wall_s": time.time() - s.started["h1"],
    })


# --- 3b. a host lost while it holds the budget lock ---------------------------------------------
# "Count, then ask" runs under a PostgreSQL advisory lock held by one session of the claiming
# worker. A worker that dies releases it (its kernel closes the socket, the server ends the
# session), but a host that vanishes closes nothing: the server notices only by TCP keepalive.

LOCK_HOLDERS = """
    SELECT host(a.client_addr) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND a.client_addr IS NOT NULL"""
# How long the others may wait for the lock of a lost holder: the server's keepalive probes
# (hpo sets 10 s idle + 3 x 5 s per session) and then a claim on a loaded machine.
LOCK_RELEASE_BOUND = 60.0


def catch_lock_holder(s: Study, timeout: float) -> Host:
    """Polls the server's locks every few milliseconds until a worker host holds the budget
    lock; the lock is held only while a worker claims a trial (tens of milliseconds)."""
    addrs = {h.addr: h for h in s.lab.workers}
    with s.lab.superuser() as con:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for (addr,) in con.execute(LOCK_HOLDERS).fetchall():
                if addr in addrs:
                    return addrs[addr]
            time.sleep(0.003)
    raise AssertionError(f"no host seen holding the budget lock in {timeout:.0f} s\n"
                         f"{s.tails()}")


@pytest.mark.timeout(300)
def test_host_lost_holding_the_budget_lock_does_not_stop_the_study(study: Study) -> None:
    s = study
    s.create(trials=4)  # two rounds of the two hosts left: the stall is what is measured
    s.start("h1", "h2", "h3")
    host = catch_lock_holder(s, 150)
    lost_at = time.time()
    s.lab.cut(host)  # a power cut at that instant: the server is never told
    s.lab.kill_host(host)
    with s.lab.superuser() as con:
        assert con.execute(LOCK_HOLDERS).fetchall() == [(host.addr,)]  # caught holding it

    def others_claimed() -> list[FrozenTrial]:
        return [t for t in s.peek() if t.datetime_start and epoch(t.datetime_start) > lost_at
                and t.user_attrs.get("host") not in (None, host.name)]

    claimed = wait_for(others_claimed, LOCK_RELEASE_BOUND, "another host to claim a trial "
                       "after the lock holder was lost (the budget lock is still held)", s)
    resumed = min(epoch(t.datetime_start) for t in claimed) - lost_at
    codes = s.wait(180)
    s.lab.heal(host)

    assert codes.pop(host.name) == -signal.SIGKILL
    assert codes == {h.name: 0 for h in s.lab.workers if h != host}, (codes, s.tails())
    counts = check_study(s)
    trials = s.trials()
    dead = [t for t in by_state(trials, TrialState.FAIL) if t.user_attrs.get("host") == host.name]
    save_figures("host_lost_holding_lock", {
        "what": "every process of one host SIGKILLed behind a cut link while it held the "
                "budget lock (claiming a trial)",
        "others_claim_again_s": resumed,
        "detect_s": (epoch(dead[0].datetime_complete) - lost_at) if dead else None,
        "retry_s": (min(epoch(t.datetime_start) for t in successors(trials, dead[0].number))
                    - lost_at) if dead else None,
        **counts,
        "wall_s": time.time() - s.started["h1"],
    })


# --- 4. the database server restarted while every host trains -------------------------------------


@pytest.mark.timeout(300)
def test_postgres_restart_while_all_hosts_train(study: Study) -> None:
    s = study
    # Longer trials than the other faults': three hosts on two cores must be caught training at
    # the same moment, and 8-12 epochs (2-3 s) left that window too short once per-trial
    # overhead fell (the hosts finished the budget without ever overlapping).
    s.file.write_text(tomli_w.dumps({"name": s.name, **HOST_STUDY, "space": {
        **HOST_STUDY["space"], "epochs": {"type": "int", "low": 24, "high": 30}}}))
    s.create()
    s.start("h1", "h2", "h3")

    def all_training() -> list[FrozenTrial] | None:
        running = training(s, most=80)
        return running if len({t.user_attrs["host"] for t in running}) == 3 else None

    before = wait_for(all_training, 150, "a trial mid-training on each of the three hosts", s)
    started = s.lab.pg_start_time()
    restart_at = time.time()
    s.lab.pg_restart()
    outage = time.time() - restart_at
    codes = s.wait(180)

    assert s.lab.pg_start_time() != started  # the server really restarted
    # The premise of "nothing dies": the outage, plus a beat missed on either side of it, fits
    # in the grace period. A slower restart would rightly fail and retry the trials.
    assert outage + 2 * HEARTBEAT < GRACE, outage
    trials = s.trials()
    for t in before:  # each host's trial lived through the restart and completed once
        assert trials[t.number].state == TrialState.COMPLETE, s.tails()
        assert not successors(trials, t.number)
    assert not by_state(trials, TrialState.FAIL)
    # The workers went on after the restart rather than stopping at it: trials completed
    # against the new server. (Not "a trial started after the restart": on a fast machine the
    # three trials that lived through it were often the budget's last.)
    back = float(s.lab.psql("SELECT extract(epoch FROM pg_postmaster_start_time())"))
    assert any(t.datetime_complete and epoch(t.datetime_complete) > back for t in trials)
    assert codes == {h.name: 0 for h in s.lab.workers}, (codes, s.tails())
    counts = check_study(s)
    survivors = [epoch(trials[t.number].datetime_complete) - restart_at for t in before]
    save_figures("postgres_restart", {
        "what": "pg_ctl restart -m fast on the db host while h1, h2, h3 each train a trial",
        "detect_s": None, "retry_s": None,
        "restart_s": outage,
        "running_at_restart": len(before),
        "last_survivor_done_after_restart_s": max(survivors),
        **counts,
        "wall_s": time.time() - s.started["h1"],
    })


# --- 5. a host that joins late --------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_host_joining_when_budget_nearly_spent(study: Study) -> None:
    s = study
    s.create(trials=4)  # two rounds of h1 and h2; h3 comes in the second
    s.start("h1", "h2")

    def nearly_spent() -> list[FrozenTrial] | None:
        trials = s.peek()
        return trials if len(by_state(trials, *FINISHED)) >= s.budget - 2 else None

    at_join = wait_for(nearly_spent, 200, f"{s.budget - 2} finished trials", s)
    room = s.budget - len(by_state(at_join, *FINISHED, TrialState.RUNNING))
    join_at = time.time()
    s.start("h3")
    codes = s.wait(180)
    left_at = time.time()

    trials = s.trials()
    late = [t for t in trials if t.user_attrs.get("host") == "h3"]
    # It takes no more than the room left when it joined (none, once both others have claimed
    # their next trial), waits for the running ones rather than overshooting, and stops.
    assert len(late) <= max(room, 0), ([t.number for t in late], room)
    assert codes == {"h1": 0, "h2": 0, "h3": 0}, (codes, s.tails())
    assert f"worker done: {len(late)} complete" in s.text("h3")
    counts = check_study(s)
    assert counts["failed"] == 0
    save_figures("late_host", {
        "what": f"h3 starts when {s.budget - room} of {s.budget} trials are finished or "
                "running",
        "detect_s": None, "retry_s": None,
        "room_at_join": room, "late_host_trials": len(late),
        "late_host_join_to_exit_s": left_at - join_at,
        **counts,
        "wall_s": time.time() - s.started["h1"],
    })
