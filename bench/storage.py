"""Coordination overhead of the search service: what the shared storage costs per trial.

    python bench/storage.py [--quick] [--sections throughput queries overhead real]
                            [--backends sqlite postgresql] [--postgres-url URL] [--json PATH]

Four sections, every one through hpo's own code paths (hpo.worker.run_worker, the `hpo` CLI):

* throughput: trials per second of hpo.worker.run_worker with a no-op objective (it suggests the
  mission's three parameters and returns at once) in a study that already holds 1,000 or 10,000
  trials, on SQLite and PostgreSQL, with 1 and 4 worker processes. Each run adds --window trials.
  The rate is measured in the steady state, while every worker is running trials: from the moment
  the last worker finished its first trial to the moment the first worker finished its last one.
  Worker start-up (importing torch, loading every existing trial into Optuna's cache) is reported
  on its own.
* queries: wall and CPU seconds of `hpo best` (top 1 and top 5), `hpo studies` and `hpo --help`
  (the start-up floor) at 1,000 and 10,000 trials, run in-process through typer's CliRunner
  (imports warm, the storage opened by the command as always) and as a fresh interpreter (what a
  user waits for). The same commands with the query code of hpo before issue 7 (`legacy`, kept
  below) give the before/after in one run.
* overhead: what a worker does around training, per trial, with training replaced by an instant
  stand-in that still calls the per-epoch callback every epoch (so every report, pruning check
  and user attr is written as in a real trial), in studies of 0, 1,000 and 10,000 trials on
  SQLite: milliseconds per trial by kind of storage call.
* real: three real trials (hidden 40, shift 10, 100 epochs, the protocol's 200/50 curves) through
  run_worker on SQLite, in a study with 50 earlier trials so that TPE and the median pruner do
  their real work: trial wall time, pure training time, and the share of the worker's cycle spent
  on sampling, storage writes and reports (target: at most 2 %). With both overhead and real, a
  last table projects that share to studies of 1,000 and 10,000 trials.

overhead and real run three variants: `legacy` (the objective's reporting before issue 7: a
report and a pruning check every 5 %, a transaction per user attr), `current`, and `current,
synchronous=NORMAL` (SQLite told to sync its file at checkpoints rather than at every commit: a
proposal for hpo.storage, measured here). Every call is timed in wall seconds and in CPU seconds
of the calling thread; on SQLite the database work runs in that thread, and on a shared machine
CPU seconds stay close to what an idle core would take where wall seconds do not.

Existing trials are written in bulk into Optuna's own tables (its SQLAlchemy models) because
creating 10,000 trials through the API one by one takes minutes; they look like real trials
(params, value, intermediate values, the user attrs run_trial writes, 20-400-point curves) and
read back through Optuna like any other. The machine may be shared: `uptime`'s load averages are
recorded with every row, and only ratios measured within one run should be compared.
PostgreSQL studies get unique names and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy as sa
from optuna.distributions import IntDistribution, distribution_to_json
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_PG = os.environ.get("HPO_TEST_POSTGRES_URL",
                            "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGET_SHARE = 2.0  # percent of a real trial's wall time
TARGET_BEST_S = 1.0  # `hpo best` at 10,000 trials
REAL = {"hidden_size": 40, "shift": 10, "epochs": 100}


# The current code paths, kept while a legacy (pre-change) variant is swapped in.
_CURRENT_RUN_TRIAL: Any = None
_CURRENT_QUERIES: Any = None


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load_avg()}] {msg}", file=sys.stderr, flush=True)


# --- the study and its synthetic history -------------------------------------------------------

def mission_spec(name: str) -> Any:
    """studies/noise_removal.toml (TPE, median pruner, the mission's space) with one seed per
    trial, so that a trial is one 100-epoch run."""
    from hpo.studyfile import load_study_file

    return dataclasses.replace(load_study_file(ROOT / "studies" / "noise_removal.toml"),
                               name=name, repeats=1)


def new_study(url: str, tag: str, budget: int) -> tuple[str, int]:
    from hpo.storage import open_storage
    from hpo.study import create_study

    name = f"bench-storage-{tag}-{uuid.uuid4().hex[:8]}"
    study = create_study(mission_spec(name), open_storage(url, create=True, heartbeat=False),
                         budget)
    return name, study._study_id


def delete_study(url: str, name: str) -> None:
    from hpo.storage import open_storage

    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=name, storage=open_storage(url, heartbeat=False))


def prefill(url: str, study_id: int, n: int, *, seed: int = 0, level: float = 40.0) -> None:
    """Adds n finished trials (60 % complete, 40 % pruned) shaped like run_trial's, in one
    transaction. `level` is the lowest final score; scores spread 15 points above it."""
    from hpo.storage import open_storage

    if n <= 0:
        return
    rng = np.random.default_rng(seed)
    engine = open_storage(url, heartbeat=False).engine
    dists = {"hidden_size": IntDistribution(8, 128, log=True), "shift": IntDistribution(0, 30),
             "epochs": IntDistribution(20, 400, step=20)}
    dist_json = {k: distribution_to_json(d) for k, d in dists.items()}
    finite_v = models.TrialValueModel.TrialValueType.FINITE
    finite_iv = models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
    t0 = dt.datetime(2026, 1, 1)
    T = models.TrialModel
    with engine.begin() as con:
        base = con.execute(sa.select(sa.func.count()).select_from(T.__table__)
                           .where(T.study_id == study_id)).scalar() or 0
        rows = []
        for i in range(n):
            start = t0 + dt.timedelta(seconds=10 * (base + i))
            state = TrialState.COMPLETE if rng.random() < 0.6 else TrialState.PRUNED
            rows.append({"number": base + i, "study_id": study_id, "state": state,
                         "datetime_start": start,
                         "datetime_complete": start + dt.timedelta(seconds=8)})
        con.execute(sa.insert(T.__table__), rows)
        ids = con.execute(sa.select(T.trial_id, T.state).where(
            T.study_id == study_id, T.number >= base).order_by(T.number)).all()
        params, values, inter, attrs = [], [], [], []
        for tid, state in ids:
            epochs = int(rng.integers(1, 21)) * 20
            point = {"hidden_size": int(np.exp(rng.uniform(np.log(8), np.log(129)))),
                     "shift": int(rng.integers(0, 31)), "epochs": epochs}
            for k, v in point.items():
                params.append({"trial_id": tid, "param_name": k, "param_value": float(v),
                               "distribution_json": dist_json[k]})
            final = level + 15 * rng.random()
            curve = [round(final * (1 - np.exp(-5 * (j + 1) / epochs)), 3)
                     for j in range(epochs)]
            steps = list(range(5, 101, 5))
            if state == TrialState.PRUNED:
                steps = steps[: int(rng.integers(6, 15))]
                curve = curve[: int(np.ceil(steps[-1] * epochs / 100))]
            for p in steps:
                inter.append({"trial_id": tid, "step": p, "intermediate_value_type": finite_iv,
                              "intermediate_value": curve[int(np.ceil(p * epochs / 100)) - 1]})
            ua: dict[str, Any] = {"seeds": [int(rng.integers(2**31))], "host": "bench",
                                  "pid": 1, "torch": "2.13.0", "device": "cpu", "threads": 1,
                                  "val_curve": curve, "epochs_run": len(curve)}
            if state == TrialState.COMPLETE:
                values.append({"trial_id": tid, "objective": 0, "value": final,
                               "value_type": finite_v})
                ua.update(loss_curve=[round(float(x), 6) for x in rng.random(epochs)],
                          n_params=20000, train_seconds=7.0, val_removed_per_seed=[final],
                          val_std=0.0, model_val_removed=final,
                          artifact_picture=str(uuid.uuid4()), artifact_model=str(uuid.uuid4()),
                          artifact_seconds=0.2)
            else:
                ua.update(pruned_at_epoch=len(curve),
                          reason=f"pruned at epoch {len(curve)} ({steps[-1]} % of the schedule)")
            attrs += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)}
                      for k, v in ua.items()]
        con.execute(sa.insert(models.TrialParamModel.__table__), params)
        if values:
            con.execute(sa.insert(models.TrialValueModel.__table__), values)
        con.execute(sa.insert(models.TrialIntermediateValueModel.__table__), inter)
        con.execute(sa.insert(models.TrialUserAttributeModel.__table__), attrs)
    engine.dispose()


@contextlib.contextmanager
def sqlite_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="hpo-bench-storage-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def copy_sqlite(src: Path, dst: Path) -> str:
    """A copy of a SQLite database (checkpointed first, so the WAL holds nothing)."""
    import sqlite3

    with sqlite3.connect(src) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(src, dst)
    return f"sqlite:///{dst}"


# --- instrumentation of the worker ---------------------------------------------------------------

CATEGORIES = {
    "fail stale trials": "fail-stale check",
    "claim a trial": "claim (lock, count, ask)",
    "count trials": "claim (lock, count, ask)",
    "record the trial's setup": "user attrs",
    "record the trial's results": "user attrs",
    "report an intermediate value": "reports",
    "report intermediate values": "reports",
    "ask the pruner": "pruning checks",
    "record the trial's result": "tell",
}


# Optuna 5 runs TPE's multivariate sampling lazily, at a trial's first suggest, not in ask.
SAMPLING = "sampling (suggest)"


class Clock:
    """Wall and CPU seconds spent per kind of call, in this process (thread-safe: heartbeats).
    CPU is the calling thread's: on SQLite the database work runs in it, and on a shared machine
    CPU seconds stay close to what an idle machine would take, where wall seconds do not."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.tells: list[float] = []  # time.time() at the end of each tell

    def add(self, what: str, wall: float, cpu: float) -> None:
        with self.lock:
            self.seconds[what] += wall
            self.cpu[what] += cpu
            self.calls[what] += 1

    def reset(self) -> None:
        with self.lock:
            self.seconds.clear()
            self.calls.clear()
            self.tells.clear()


CLOCK = Clock()


def instrument() -> None:
    """Times every storage call the worker and the objective make (they all go through
    hpo.worker.retry), every suggest, and the heartbeat thread's writes."""
    import hpo.objective
    import hpo.storage
    import hpo.worker

    if getattr(hpo.worker.retry, "bench", False):
        return
    retry, suggest = hpo.worker.retry, hpo.objective.suggest
    beat = hpo.storage.HeartbeatStorage.record_heartbeat

    def timed_retry(fn: Callable[[], Any], what: str, patience: float = hpo.worker.RETRY_FOR
                    ) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return retry(fn, what, patience)
        finally:
            kind = "artifacts" if what.startswith("upload ") else CATEGORIES.get(what, what)
            CLOCK.add(kind, time.perf_counter() - start, time.thread_time() - cpu)
            if what == "record the trial's result":
                CLOCK.tells.append(time.time())

    def timed_suggest(trial: optuna.Trial, p: Any) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return suggest(trial, p)
        finally:
            CLOCK.add(SAMPLING, time.perf_counter() - start, time.thread_time() - cpu)

    def timed_beat(self: Any, trial_id: int) -> None:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            beat(self, trial_id)
        finally:
            CLOCK.add("heartbeats", time.perf_counter() - start, time.thread_time() - cpu)

    timed_retry.bench = True  # type: ignore[attr-defined]
    hpo.worker.retry = timed_retry  # type: ignore[assignment]
    hpo.objective.suggest = timed_suggest
    hpo.storage.HeartbeatStorage.record_heartbeat = timed_beat  # type: ignore[method-assign]


def noop_objective(spec: Any, trial: optuna.Trial, *, threads: int, host: str,
                   call: Callable[..., Any]) -> Any:
    """Suggests the study's parameters (a storage write each) and returns at once."""
    import hpo.objective

    params = {p.name: hpo.objective.suggest(trial, p) for p in spec.space}
    value = 50.0 - abs(np.log(params["hidden_size"] / 40)) - abs(params["shift"] - 10) / 10
    return hpo.objective.Outcome(TrialState.COMPLETE, [float(value)], "no-op")


def instant_train(cfg: Any, train_split: Any, val_split: Any, on_epoch: Any = None) -> Any:
    """Stands in for hpo.train.train: no training, but the per-epoch callback runs for every
    epoch with a plausible score, and the result carries a real (untrained) model."""
    import torch

    from hpo.model import Denoiser
    from hpo.train import EpochReport, TrainResult

    torch.set_num_threads(cfg.threads)  # as train() does; the model is still used (predict)
    curve = [60.0 * (1 - np.exp(-5 * e / cfg.epochs)) for e in range(1, cfg.epochs + 1)]
    for e, v in enumerate(curve, 1):
        if on_epoch is not None:
            on_epoch(EpochReport(e, v, 0.01))
    return TrainResult("completed", "", Denoiser(cfg.hidden_size, cfg.shift), cfg.epochs,
                       curve[-1], 0.0, curve, [0.01] * cfg.epochs)


def use_objective(kind: str) -> None:
    """kind: real | instant (run_trial, training replaced) | noop (run_trial replaced)."""
    import hpo.objective
    import hpo.train

    if kind == "noop":
        hpo.objective.run_trial = noop_objective  # type: ignore[assignment]
    if kind == "instant":
        hpo.objective.train = instant_train
    if kind == "real":
        hpo.objective.train = hpo.train.train


def legacy_run_trial(spec: Any, trial: optuna.Trial, *, threads: int, host: str,
                     call: Callable[..., Any]) -> Any:
    """hpo.objective.run_trial before issue 7 (commit d0664c2), verbatim but for module
    prefixes: a write per user attr, a report and a pruning check at every 5 % mark."""
    import torch

    import hpo.objective as o
    from hpo.study import trial_seed
    from hpo.train import resolve_device

    params = {p.name: o.suggest(trial, p) for p in spec.space}
    data = spec.data_config(params)
    train_split, val_split = o.cached_split(data, "train"), o.cached_split(data, "val")
    seeds = [trial_seed(spec, trial.number, r) for r in range(spec.repeats)]
    multi = len(spec.metrics) > 1
    attrs: dict[str, Any] = {
        "seeds": seeds, "host": host.rsplit(":", 1)[0], "pid": os.getpid(),
        "torch": str(torch.__version__), "device": str(resolve_device("auto")),
        "threads": threads,
    }
    for k, v in attrs.items():
        call(lambda k=k, v=v: trial.set_user_attr(k, v), "record the trial's setup")

    epochs = spec.train_config(params, 0).epochs
    marks = {math.ceil(pct * epochs / 100): pct for pct in range(5, 101, 5)}
    curve: list[float] = []

    def on_epoch(r: Any) -> None:
        curve.append(round(r.val_removed, 3))
        pct = marks.get(r.epoch)
        if pct is None or multi:
            return
        call(lambda: trial.report(r.val_removed, pct), "report an intermediate value")
        if call(trial.should_prune, "ask the pruner"):
            raise optuna.TrialPruned(f"pruned at epoch {r.epoch} ({pct} % of the schedule)")

    def record(attrs: dict[str, Any]) -> None:
        for k, v in attrs.items():
            call(lambda k=k, v=v: trial.set_user_attr(k, v), "record the trial's results")

    results = []
    try:
        for r, seed in enumerate(seeds):
            cfg = spec.train_config(params, seed, threads)
            res = o.train(cfg, train_split, val_split, on_epoch if r == 0 else None)
            results.append(res)
            if res.status == "diverged":
                break
    except optuna.TrialPruned as e:
        record({"val_curve": curve, "epochs_run": len(curve), "pruned_at_epoch": len(curve),
                "reason": str(e)})
        return o.Outcome(TrialState.PRUNED, None, str(e))

    first = results[0]
    vals = [res.val_removed for res in results]
    seconds = sum(res.seconds for res in results) / len(results)
    rec = {
        "val_curve": first.val_curve if first.status != "diverged" else curve,
        "loss_curve": [round(x, 6) if math.isfinite(x) else str(x) for x in first.loss_curve],
        "epochs_run": first.epochs_run, "n_params": first.model.n_params(),
        "train_seconds": round(seconds, 3), "val_removed_per_seed": [round(v, 4) for v in vals],
    }
    if results[-1].status == "diverged":
        rec.update(status="diverged", reason=results[-1].reason)
        record(rec)
        return o.Outcome(TrialState.PRUNED, None, f"diverged: {results[-1].reason}")
    mean = sum(vals) / len(vals)
    rec["val_std"] = round(o._std(vals), 4)
    from hpo.artifacts import upload_trial_artifacts

    rec.update(upload_trial_artifacts(trial, first, spec.train_config(params, seeds[0], threads),
                                      data, val_split, call))
    record(rec)
    values = [mean, seconds] if multi else [mean]
    return o.Outcome(TrialState.COMPLETE, values,
                     f"{mean:.2f} % {params} ({seconds:.1f} s per seed)")


def sample_before_enqueued_params() -> None:
    """Real trials run enqueued (fixed) parameters, for which Optuna skips TPE's multivariate
    sampling; a searched trial pays it at its first suggest. Pay it here, timed as sampling, so
    that the real trials cost what searched ones do (the sampled values are not used)."""
    import hpo.objective

    run = hpo.objective.run_trial

    def sampled_then_run(spec: Any, trial: optuna.Trial, **kw: Any) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        _ = trial.relative_params
        CLOCK.add(SAMPLING, time.perf_counter() - start, time.thread_time() - cpu)
        return run(spec, trial, **kw)

    hpo.objective.run_trial = sampled_then_run


def use_legacy_reporting(legacy: bool) -> None:
    """Puts back the objective's reporting as it was before issue 7 (or the current one)."""
    import hpo.objective

    global _CURRENT_RUN_TRIAL
    if _CURRENT_RUN_TRIAL is None:
        _CURRENT_RUN_TRIAL = hpo.objective.run_trial
    hpo.objective.run_trial = legacy_run_trial if legacy else _CURRENT_RUN_TRIAL


# --- worker processes ----------------------------------------------------------------------------

def worker_process(url: str, name: str, index: int, objective: str, legacy: bool,
                   sync: str | None, out: str) -> None:
    """One worker (a spawned process): run_worker until the study's budget is met. Only real
    trials upload artifacts (beside the SQLite file): the stand-ins have no model worth it."""
    if objective == "real":
        os.environ.pop("HPO_ARTIFACTS", None)
    else:
        os.environ["HPO_ARTIFACTS"] = "none"
    import hpo.worker

    if sync is not None:
        sqlite_synchronous(sync)
    instrument()
    use_legacy_reporting(legacy)
    use_objective(objective)
    if objective == "real":
        sample_before_enqueued_params()
    start, cpu = time.time(), time.process_time()
    try:
        summary = hpo.worker.run_worker(url, name, worker_index=index, poll=0.2)
    except BaseException:
        import traceback

        Path(out + ".err").write_text(traceback.format_exc())
        raise
    Path(out).write_text(json.dumps({
        "start": start, "tells": CLOCK.tells, "seconds": dict(CLOCK.seconds),
        "cpu": dict(CLOCK.cpu), "process_cpu": time.process_time() - cpu,
        "calls": dict(CLOCK.calls), "completed": summary.completed, "pruned": summary.pruned,
        "failed": summary.failed}))


def run_workers(url: str, name: str, procs: int, objective: str, legacy: bool = False,
                sync: str | None = None) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        outs = [str(Path(tmp) / f"w{i}.json") for i in range(procs)]
        ps = [ctx.Process(target=worker_process, args=(url, name, i, objective, legacy, sync, o))
              for i, o in enumerate(outs)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        bad = [p.exitcode for p in ps if p.exitcode != 0]
        if bad:
            errs = [Path(o + ".err").read_text()[-1500:] for o in outs
                    if Path(o + ".err").exists()]
            raise RuntimeError(f"worker exit codes {bad}: {errs[:1]}")
        return [json.loads(Path(o).read_text()) for o in outs]


def steady_rate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Trials/s while every worker runs trials (see the module docstring)."""
    tells = [sorted(r["tells"]) for r in results]
    if any(len(t) < 2 for t in tells):
        raise RuntimeError("a worker finished fewer than 2 trials: raise --window")
    t0 = max(t[0] for t in tells)
    t1 = min(t[-1] for t in tells)
    if t1 <= t0:  # the workers never overlapped in the steady state (too small a window)
        t0, t1 = min(t[0] for t in tells), max(t[-1] for t in tells)
    n = sum(1 for t in tells for x in t if t0 < x <= t1)
    startup = statistics.median(t[0] - r["start"] for t, r in zip(tells, results, strict=True))
    return {"rate": n / (t1 - t0), "steady_trials": n, "steady_seconds": t1 - t0,
            "trials": sum(len(t) for t in tells), "startup_s": startup}


# --- section: throughput ---------------------------------------------------------------

def section_throughput(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for backend in args.backends:
        for size in args.sizes:
            for procs in args.procs:
                log(f"throughput: {backend}, {size} trials, {procs} process(es)")
                load_before = load_avg()
                with sqlite_dir() as d:
                    url = f"sqlite:///{d / 'bench.db'}" if backend == "sqlite" else args.pg
                    name, sid = new_study(url, f"tp{procs}", size + args.window)
                    try:
                        prefill(url, sid, size)
                        r = steady_rate(run_workers(url, name, procs, "noop"))
                    except RuntimeError as e:  # keep the other rows; say what went wrong
                        log(f"  failed: {e}")
                        r = {"rate": math.nan, "error": str(e)[:2000]}
                    finally:
                        if backend != "sqlite":
                            delete_study(url, name)
                rows.append({"backend": backend, "trials_before": size, "processes": procs,
                             **{k: round(v, 3) if isinstance(v, float) else v
                                for k, v in r.items()},
                             "load_before": load_before, "load_after": load_avg()})
                log(f"  {rows[-1]}")
    print_table("Throughput, no-op objective (trials/s in the steady state)", rows,
                ["backend", "trials_before", "processes", "rate", "steady_trials", "startup_s",
                 "load_before"])
    return rows


# --- section: queries ------------------------------------------------------------------

def legacy_best_trials(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """hpo.queries.best_trials before issue 7: loads every complete trial."""
    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: t.values[0], reverse=True)[:top]
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    return sorted(done, key=lambda t: (sign * t.values[0], t.number))[:top]


def legacy_studies(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """hpo.queries.studies before issue 7: loads every trial of every study."""
    from hpo.study import BUDGET_ATTR, SPEC_ATTR

    out = []
    for s in storage.get_all_studies():
        n = {state: 0 for state in TrialState}
        for t in storage.get_all_trials(s._study_id, deepcopy=False):
            n[t.state] += 1
        best = None
        if len(s.directions) == 1 and n[TrialState.COMPLETE]:
            with contextlib.suppress(ValueError):
                best = storage.get_best_trial(s._study_id).value
        out.append({
            "name": s.study_name,
            "directions": [d.name.lower() for d in s.directions],
            "budget": s.user_attrs.get(BUDGET_ATTR),
            "finished": n[TrialState.COMPLETE] + n[TrialState.PRUNED],
            "complete": n[TrialState.COMPLETE], "pruned": n[TrialState.PRUNED],
            "running": n[TrialState.RUNNING], "waiting": n[TrialState.WAITING],
            "failed": n[TrialState.FAIL], "best_value": best,
            "hpo": SPEC_ATTR in s.user_attrs,
        })
    return out


def legacy_open_study(name: str, storage: Any) -> tuple[optuna.Study, list[str]]:
    """`hpo best` before issue 7 loaded the study through hpo.study.load (which imports torch)."""
    from hpo.study import load

    study, spec = load(name, storage)
    return study, list(spec.metrics)


def use_legacy_queries(legacy: bool) -> None:
    import hpo.queries

    global _CURRENT_QUERIES
    if _CURRENT_QUERIES is None:
        _CURRENT_QUERIES = (hpo.queries.best_trials, hpo.queries.studies, hpo.queries.open_study)
    (hpo.queries.best_trials, hpo.queries.studies,  # type: ignore[assignment]
     hpo.queries.open_study) = ((legacy_best_trials, legacy_studies, legacy_open_study)
                                if legacy else _CURRENT_QUERIES)


def time_cli_inprocess(argv: list[str], legacy: bool) -> tuple[float, float, str]:
    from typer.testing import CliRunner

    from hpo.cli import app

    use_legacy_queries(legacy)
    w, c = time.perf_counter(), time.process_time()
    r = CliRunner().invoke(app, argv)
    w, c = time.perf_counter() - w, time.process_time() - c
    use_legacy_queries(False)
    if r.exit_code != 0:
        raise RuntimeError(f"hpo {' '.join(argv)} failed: {r.output[-500:]}")
    return w, c, r.stdout


def time_cli_subprocess(argv: list[str], legacy: bool) -> tuple[float, float, str]:
    """A fresh interpreter, as a user runs it; CPU = the child's user + system time."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "_cli",
           "legacy" if legacy else "current", *argv]
    before = os.times()
    w = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    w = time.perf_counter() - w
    after = os.times()
    c = (after.children_user - before.children_user) + (after.children_system
                                                        - before.children_system)
    if r.returncode != 0:
        raise RuntimeError(f"hpo {' '.join(argv)} failed: {r.stderr[-500:]}")
    return w, c, r.stdout


def section_queries(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    backends = [b for b in args.backends]
    for backend in backends:
        for size in args.sizes:
            log(f"queries: {backend}, {size} trials")
            with sqlite_dir() as d:
                url = f"sqlite:///{d / 'bench.db'}" if backend == "sqlite" else args.pg
                name, sid = new_study(url, "q", size)
                try:
                    prefill(url, sid, size)
                    # `hpo studies` lists every study: a shared server holds others too.
                    n_studies = len(optuna.get_all_study_names(storage=url))
                    commands = {"best": ["best", name, "--storage", url],
                                "best --top 5 --json": ["best", name, "--top", "5", "--json",
                                                        "--storage", url],
                                "studies": ["studies", "--storage", url],
                                # Interpreter and CLI start-up alone: the floor of a subprocess.
                                "--help": ["--help"]}
                    for label, argv in commands.items():
                        outputs = {}
                        for legacy in (False, True) if label != "--help" else (False,):
                            reps = 1 if legacy else args.repeats
                            for how, fn in (("in-process", time_cli_inprocess),
                                            ("subprocess", time_cli_subprocess)):
                                load_before = load_avg()
                                ts = [fn(argv, legacy) for _ in range(reps)]
                                outputs[(legacy, how)] = ts[-1][2]
                                rows.append({
                                    "backend": backend, "trials": size, "command": f"hpo {label}",
                                    "studies_in_storage": n_studies,
                                    "code": "legacy" if legacy else "current", "how": how,
                                    "wall_s": round(statistics.median(t[0] for t in ts), 3),
                                    "cpu_s": round(statistics.median(t[1] for t in ts), 3),
                                    "repeats": reps, "load_before": load_before})
                                log(f"  hpo {label} [{rows[-1]['code']}, {how}]: "
                                    f"{rows[-1]['wall_s']} s wall, {rows[-1]['cpu_s']} s CPU")
                        if label.startswith("best"):  # same answer, old and new
                            same = outputs[(False, "in-process")] == outputs[(True, "in-process")]
                            if not same:
                                raise RuntimeError(f"hpo {label}: legacy and current differ")
                finally:
                    if backend != "sqlite":
                        delete_study(url, name)
    if args.json is not None:
        plot_queries(rows, args.json.with_suffix(".png"))
    print_table("`hpo best` / `hpo studies` latency", rows,
                ["backend", "trials", "command", "code", "how", "wall_s", "cpu_s",
                 "load_before"])
    return rows


def plot_queries(rows: list[dict[str, Any]], path: Path) -> None:
    """Wall seconds of each command in a fresh interpreter, before and after, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = [r for r in rows if r["how"] == "subprocess" and r["command"] != "hpo --help"]
    groups = list(dict.fromkeys((r["backend"], r["trials"], r["command"]) for r in sub))
    floor = {(r["backend"], r["trials"]): r["wall_s"] for r in rows
             if r["how"] == "subprocess" and r["command"] == "hpo --help"
             and r["code"] == "current"}
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for j, code in enumerate(("legacy", "current")):
        ys = [next((r["wall_s"] for r in sub if (r["backend"], r["trials"], r["command"]) == g
                    and r["code"] == code), np.nan) for g in groups]
        ax.bar(np.arange(len(groups)) + (j - 0.5) * 0.4, ys, width=0.4,
               label="before issue 7" if code == "legacy" else "now",
               color="tab:gray" if code == "legacy" else "tab:blue")
    for i, g in enumerate(groups):
        if (g[0], g[1]) in floor:
            ax.hlines(floor[(g[0], g[1])], i - 0.4, i + 0.4, color="black", linewidth=1)
    ax.axhline(TARGET_BEST_S, color="tab:red", linestyle=":", label="1 s")
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(groups)),
                  [f"{c.removeprefix('hpo ').replace(' --json', '')}\n"
                   f"{'SQLite' if b == 'sqlite' else 'PG'} {t // 1000}k" for b, t, c in groups],
                  fontsize=8)
    ax.set_ylabel("wall seconds, fresh process")
    ax.set_title("hpo best / hpo studies, before and after (black line: `hpo --help` start-up)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- sections: overhead (instant training) and real trials ---------------------------------------

# Before/after: the objective's reporting before issue 7; today's; today's with SQLite told not to
# sync its file at every commit (a proposal for hpo.storage, see sqlite_synchronous).
VARIANTS = (("legacy", True, None), ("current", False, None),
            ("current, synchronous=NORMAL", False, "NORMAL"))


def sqlite_synchronous(mode: str) -> None:
    """PRAGMA synchronous on every SQLite connection this process opens. In WAL mode NORMAL
    syncs at checkpoints instead of at every commit: no corruption on a crash, but a power cut
    may undo the last commits (a trial that then fails its heartbeat and is retried)."""
    import sqlite3

    @sa.event.listens_for(sa.engine.Engine, "connect")
    def _pragma(con: Any, record: Any) -> None:
        if isinstance(con, sqlite3.Connection):
            con.execute(f"PRAGMA synchronous={mode}")


def per_trial_ms(by_kind: dict[str, float], trials: int) -> dict[str, float]:
    """Milliseconds per trial by kind of call."""
    return {k: round(1000 * v / trials, 2) for k, v in sorted(by_kind.items())}


COORDINATION = ("fail-stale check", "claim (lock, count, ask)", SAMPLING, "user attrs",
                "reports", "pruning checks", "tell", "heartbeats")
KINDS = ("fail-stale check", "claim (lock, count, ask)", SAMPLING, "reports", "pruning checks",
         "user attrs", "tell", "heartbeats")


def coordination_ms(ms: dict[str, float]) -> float:
    return round(sum(ms.get(k, 0.0) for k in COORDINATION), 1)


def section_overhead(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with sqlite_dir() as d:
        for size in args.history:
            src = d / f"h{size}.db"
            name, sid = new_study(f"sqlite:///{src}", "oh", size + args.overhead_trials)
            prefill(f"sqlite:///{src}", sid, size)
            for code, legacy, sync in VARIANTS:
                log(f"overhead: {size} earlier trials, {code}")
                url = copy_sqlite(src, d / "run.db")
                load_before = load_avg()
                (res,) = run_workers(url, name, 1, "instant", legacy, sync)
                n = res["completed"] + res["pruned"]
                tells = sorted(res["tells"])
                cpu = per_trial_ms(res["cpu"], n)
                wall = per_trial_ms(res["seconds"], n)
                rows.append({"trials_before": size, "code": code,
                             "trials": n,
                             "cycle_wall_ms": round(1000 * (tells[-1] - tells[0]) / (n - 1), 1),
                             "coordination_wall_ms": coordination_ms(wall),
                             "process_cpu_ms": round(1000 * res["process_cpu"] / n, 1),
                             "coordination_cpu_ms": coordination_ms(cpu),
                             **{f"{k} (CPU ms)": cpu.get(k, 0.0) for k in KINDS},
                             "calls": {k: round(v / n, 1) for k, v in res["calls"].items()},
                             "wall_ms": wall, "load_before": load_before,
                             "load_after": load_avg()})
                log(f"  {rows[-1]}")
                for f in d.glob("run.db*"):
                    f.unlink()
    print_table("Per-trial work around training (training replaced by an instant stand-in), "
                "SQLite, 1 process", rows,
                ["trials_before", "code", "cycle_wall_ms", "coordination_wall_ms",
                 "process_cpu_ms", "coordination_cpu_ms", *(f"{k} (CPU ms)" for k in KINDS),
                 "load_before"])
    return rows


def section_real(args: argparse.Namespace) -> list[dict[str, Any]]:
    from hpo.storage import open_storage

    rows = []
    with sqlite_dir() as d:
        for i, (code, legacy, sync) in enumerate(VARIANTS):
            url = f"sqlite:///{d / f'real{i}.db'}"
            # Earlier trials score 20-35 %: TPE and the pruner work on a real history, and the
            # real trials (55-58 %) stay above the median, so that none is pruned.
            name, sid = new_study(url, "real", 50 + args.real_trials)
            prefill(url, sid, 50, level=20.0)
            storage = open_storage(url, heartbeat=False)
            study = optuna.load_study(study_name=name, storage=storage)
            for _ in range(args.real_trials):
                study.enqueue_trial(REAL)
            log(f"real: {args.real_trials} trials {REAL}, {code}")
            load_before = load_avg()
            (res,) = run_workers(url, name, 1, "real", legacy, sync)
            trials = [t for t in optuna.load_study(study_name=name, storage=storage).get_trials(
                deepcopy=False) if t.number >= 50]
            n = len(trials)
            assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
            wall = sum((t.datetime_complete - t.datetime_start).total_seconds()  # type: ignore
                       for t in trials) / n
            train_s = sum(t.user_attrs["train_seconds"] for t in trials) / n
            artifacts_s = sum(t.user_attrs.get("artifact_seconds", 0.0) for t in trials) / n
            ms, cpu = per_trial_ms(res["seconds"], n), per_trial_ms(res["cpu"], n)
            in_loop = (ms.get("reports", 0) + ms.get("pruning checks", 0)) / 1000
            coord_wall, coord_cpu = coordination_ms(ms) / 1000, coordination_ms(cpu) / 1000
            # The worker's whole cycle for one trial: claim, train, upload, record, tell. The
            # storage timestamps span create..tell; the claim before the creation is added.
            cycle = wall + (ms.get("claim (lock, count, ask)", 0)
                            + ms.get("fail-stale check", 0)) / 1000
            process_cpu = res["process_cpu"] / n
            rows.append({
                "code": code, "trials": n,
                "trial_wall_s": round(wall, 3), "train_seconds_attr": round(train_s, 3),
                "pure_training_s": round(train_s - in_loop, 3),
                "artifacts_s": round(artifacts_s, 3),
                "coordination_wall_s": round(coord_wall, 4),
                "share_wall_pct": round(100 * coord_wall / cycle, 2),
                "process_cpu_s": round(process_cpu, 3),
                "coordination_cpu_s": round(coord_cpu, 4),
                "share_cpu_pct": round(100 * coord_cpu / process_cpu, 2),
                **{f"{k} (CPU ms)": cpu.get(k, 0.0) for k in KINDS},
                **{f"{k} (wall ms)": ms.get(k, 0.0) for k in KINDS},
                "calls": {k: round(v / n, 1) for k, v in res["calls"].items()},
                "load_before": load_before, "load_after": load_avg()})
            log(f"  {rows[-1]}")
    print_table(f"Real trials ({REAL}), SQLite, 1 process: coordination share of a trial", rows,
                ["code", "trials", "trial_wall_s", "pure_training_s", "artifacts_s",
                 "coordination_wall_s", "share_wall_pct", "process_cpu_s", "coordination_cpu_s",
                 "share_cpu_pct", "load_before"])
    print_table("Real trials: coordination per trial by kind", rows,
                ["code", *(f"{k} (CPU ms)" for k in KINDS), *(f"{k} (wall ms)" for k in KINDS)])
    return rows


# --- output -------------------------------------------------------------------------

def print_table(title: str, rows: list[dict[str, Any]], cols: list[str]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |")
    sys.stdout.flush()


def project(overhead: list[dict[str, Any]], real: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The share a real trial would spend on coordination in a study of each size: the
    coordination CPU per trial measured with the instant stand-in at that size, against the
    real trial's CPU seconds outside coordination (same code variant, same run)."""
    rows = []
    for o in overhead:
        r = next((r for r in real if r["code"] == o["code"]), None)
        if r is None:
            continue
        rest = r["process_cpu_s"] - r["coordination_cpu_s"]
        coord = o["coordination_cpu_ms"] / 1000
        rows.append({"trials_before": o["trials_before"], "code": o["code"],
                     "coordination_cpu_ms": o["coordination_cpu_ms"],
                     "real_trial_cpu_s": round(rest + coord, 3),
                     "projected_share_pct": round(100 * coord / (rest + coord), 2)})
    print_table("Projected coordination share of a real 100-epoch trial by study size (CPU)",
                rows, ["trials_before", "code", "coordination_cpu_ms", "real_trial_cpu_s",
                       "projected_share_pct"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="100 and 1,000 trials, small windows: a few minutes")
    ap.add_argument("--sections", nargs="+", default=["throughput", "queries", "overhead", "real"],
                    choices=["throughput", "queries", "overhead", "real"])
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"],
                    choices=["sqlite", "postgresql"])
    ap.add_argument("--postgres-url", dest="pg", default=DEFAULT_PG)
    ap.add_argument("--sizes", nargs="+", type=int, help="existing trials (default 1000 10000)")
    ap.add_argument("--procs", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--window", type=int, help="trials added per throughput run (default 200)")
    ap.add_argument("--repeats", type=int, default=3, help="timings per query (median)")
    ap.add_argument("--history", nargs="+", type=int,
                    help="earlier trials for the overhead section (default 0 1000 10000)")
    ap.add_argument("--overhead-trials", type=int, help="instant trials per run (default 60)")
    ap.add_argument("--real-trials", type=int, help="real trials per run (default 3)")
    ap.add_argument("--json", type=Path, help="write every row here")
    args = ap.parse_args()
    q = args.quick
    args.sizes = args.sizes or ([100, 1000] if q else [1000, 10000])
    args.window = args.window or (40 if q else 200)
    args.history = args.history or ([0, 1000] if q else [0, 1000, 10000])
    args.overhead_trials = args.overhead_trials or (20 if q else 60)
    args.real_trials = args.real_trials or (1 if q else 3)
    if q:
        args.repeats = min(args.repeats, 1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: dict[str, Any] = {"command": " ".join(sys.argv), "cpu": cpu_model(),
                           "cores": os.cpu_count(), "load_start": load_avg()}
    for section in args.sections:
        out[section] = globals()[f"section_{section}"](args)
    if out.get("overhead") and out.get("real"):
        out["projection"] = project(out["overhead"], out["real"])
    out["load_end"] = load_avg()
    print(f"\nload averages (1, 5, 15 min): start {out['load_start']}, end {out['load_end']}; "
          f"{out['cores']} cores, {out['cpu']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=str) + "\n")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def cli_entry() -> None:
    """`python bench/storage.py _cli current|legacy ARGS...`: the real `hpo` CLI in a fresh
    process, with the query functions of today or of before issue 7."""
    legacy = sys.argv[2] == "legacy"
    if legacy and sys.argv[3] in ("best", "studies"):
        # Before issue 7 both commands imported hpo.study (hpo.queries did), and torch with it.
        import hpo.study  # noqa: F401
    use_legacy_queries(legacy)
    from hpo.cli import app

    app(args=sys.argv[3:])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_cli":
        cli_entry()
    else:
        main()
