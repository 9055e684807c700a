"""Studies and instrumented workers for bench/storage.py (its docstring says what is measured).

* Studies: the mission's study file, with a history of finished trials bulk-written into Optuna's
  own tables and shaped by hpo.run.objective's own helpers, so that they look like today's trials.
* Workers: spawned processes running hpo.run.worker.run_worker with one of three objectives (`noop`,
  `instant`, `real`), each timing every kind of call through hpo.run.timing.observe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
import math
import multiprocessing
import os
import shutil
import sqlite3
import statistics
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
import torch
from optuna.distributions import distribution_to_json
from optuna.storages._rdb import models
from optuna.trial import TrialState

from hpo.run import objective, timing
from hpo.run.worker import run_worker
from hpo.store.engines import open_storage
from hpo.store.studies import create_study
from hpo.study.construct import distribution
from hpo.study.parse import load_study_file
from hpo.study.spec import Param, StudySpec
from hpo.task.config import TrainConfig
from hpo.task.curves import Split
from hpo.task.model import Denoiser
from hpo.task.train import EpochCallback, EpochReport, TrainResult

ROOT = Path(__file__).resolve().parent.parent


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load_avg()}] {msg}", file=sys.stderr, flush=True)


# --- studies -------------------------------------------------------------------------------------

def mission_spec(name: str) -> StudySpec:
    """studies/noise_removal.toml (TPE, median pruner, the mission's space) with one seed per
    trial, so that a trial is one training run."""
    spec = load_study_file(ROOT / "studies" / "noise_removal.toml")
    return dataclasses.replace(spec, name=name, repeats=1)


@contextlib.contextmanager
def bench_study(backend: str, pg_url: str, tag: str, budget: int, history: int,
                level: float = 40.0) -> Iterator[tuple[str, str]]:
    """(url, study name) of a fresh study holding `history` finished trials: a SQLite file in a
    temporary directory, or a uniquely named study on the PostgreSQL server, deleted after."""
    with tempfile.TemporaryDirectory(prefix="hpo-bench-storage-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}" if backend == "sqlite" else pg_url
        spec = mission_spec(f"bench-storage-{tag}-{uuid.uuid4().hex[:8]}")
        name, storage = spec.name, open_storage(url, create=True, heartbeat=False)
        study = create_study(spec, storage, budget)
        try:
            prefill(url, study._study_id, spec, history, level=level)
            yield url, name
        finally:
            if backend != "sqlite":
                with contextlib.suppress(KeyError):
                    optuna.delete_study(study_name=name, storage=storage)


def _draw(rng: np.random.Generator, p: Param) -> int:
    assert p.type == "int" and p.low is not None and p.high is not None, p  # the mission's space
    if p.log:
        return min(int(p.high), int(np.exp(rng.uniform(np.log(p.low), np.log(p.high + 1)))))
    step = int(p.step or 1)
    return int(p.low) + step * int(rng.integers(0, (int(p.high) - int(p.low)) // step + 1))


def prefill(url: str, study_id: int, spec: StudySpec, n: int, *, seed: int = 0,
            level: float = 40.0) -> None:
    """Adds n finished trials (60 % complete, 40 % pruned between 30 and 70 % of their schedule)
    in one transaction. Intermediate values sit at hpo.run.objective.progress_steps' marks and the
    curves are hpo.run.objective.compact_curve's; `level` is the lowest final score, and scores
    spread 15 points above it. Creating them through Optuna one by one would take minutes."""
    if n <= 0:
        return
    rng = np.random.default_rng(seed)
    engine = open_storage(url, heartbeat=False).engine
    dist_json = {p.name: distribution_to_json(distribution(p)) for p in spec.space}
    finite_v = models.TrialValueModel.TrialValueType.FINITE
    finite_iv = models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
    t0, T = dt.datetime(2026, 1, 1), models.TrialModel
    with engine.begin() as con:
        base = con.execute(sa.select(sa.func.count()).select_from(T.__table__)
                           .where(T.study_id == study_id)).scalar() or 0
        states = [TrialState.COMPLETE if rng.random() < 0.6 else TrialState.PRUNED
                  for _ in range(n)]
        con.execute(sa.insert(T.__table__), [
            {"number": base + i, "study_id": study_id, "state": state,
             "datetime_start": t0 + dt.timedelta(seconds=10 * (base + i)),
             "datetime_complete": t0 + dt.timedelta(seconds=10 * (base + i) + 8)}
            for i, state in enumerate(states)])
        ids = con.execute(sa.select(T.trial_id, T.state).where(
            T.study_id == study_id, T.number >= base).order_by(T.number)).all()
        params, values, inter, attrs = [], [], [], []
        for tid, state in ids:
            point = {p.name: _draw(rng, p) for p in spec.space}
            params += [{"trial_id": tid, "param_name": k, "param_value": float(v),
                        "distribution_json": dist_json[k]} for k, v in point.items()]
            epochs, final = point["epochs"], level + 15 * rng.random()
            curve = [round(final * (1 - math.exp(-5 * (j + 1) / epochs)), 3)
                     for j in range(epochs)]
            marks = sorted(objective.progress_steps(epochs).items())
            if state == TrialState.PRUNED:
                marks = marks[: int(rng.integers(3, 8))]
                curve = curve[: marks[-1][0]]
            inter += [{"trial_id": tid, "step": pct, "intermediate_value_type": finite_iv,
                       "intermediate_value": curve[epoch - 1]} for epoch, pct in marks]
            loss = [float(x) for x in rng.random(len(curve))]
            ua: dict[str, Any] = {"seeds": [int(rng.integers(2**31))], "host": "bench",
                                  "pid": 1, "torch": "2.13.0", "device": "cpu", "threads": 1,
                                  "steps": "intermediate values at 10, 20, ..., 100 percent",
                                  "learning_curve": objective.compact_curve(curve, loss),
                                  "epochs_run": len(curve)}
            if state == TrialState.COMPLETE:
                values.append({"trial_id": tid, "objective": 0, "value": final,
                               "value_type": finite_v})
                ua.update(n_params=20000, train_seconds=7.0, cpu_seconds=7.0,
                          val_removed_per_seed=[final], val_std=0.0, model_val_removed=final,
                          artifact_picture=str(uuid.uuid4()), artifact_model=str(uuid.uuid4()),
                          artifact_curves=str(uuid.uuid4()), artifact_seconds=0.2)
            else:
                ua.update(pruned_at_epoch=len(curve),
                          reason=f"pruned at epoch {len(curve)} ({marks[-1][1]} % of the "
                                 "schedule)")
            attrs += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)}
                      for k, v in ua.items()]
        con.execute(sa.insert(models.TrialParamModel.__table__), params)
        if values:
            con.execute(sa.insert(models.TrialValueModel.__table__), values)
        con.execute(sa.insert(models.TrialIntermediateValueModel.__table__), inter)
        con.execute(sa.insert(models.TrialUserAttributeModel.__table__), attrs)
    engine.dispose()


def copy_sqlite(src: str, dst: Path) -> str:
    """A copy of a SQLite database (checkpointed first, so that the WAL holds nothing)."""
    path = src.removeprefix("sqlite:///")
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(path, dst)
    return f"sqlite:///{dst}"


def sqlite_synchronous(mode: str) -> None:
    """PRAGMA synchronous on every SQLite connection this process opens (an SQLAlchemy event, not
    a change to hpo). In WAL mode NORMAL syncs at checkpoints instead of at every commit: no
    corruption on a crash, but a power cut may undo the last commits."""

    @sa.event.listens_for(sa.engine.Engine, "connect")
    def _pragma(con: Any, record: Any) -> None:
        if isinstance(con, sqlite3.Connection):
            con.execute(f"PRAGMA synchronous={mode}")


# --- objectives (run_worker's run_trial) ---------------------------------------------------------

def noop_trial(spec: StudySpec, trial: optuna.Trial, *, threads: int, host: str,
               call: Callable[..., Any], stop: Callable[[], None] | None = None
               ) -> objective.Outcome:
    """Suggests the study's parameters (TPE's work and a storage write each) and returns
    (no epochs, so nothing for `stop` to end between)."""
    params = {p.name: objective.suggest(trial, p) for p in spec.space}
    value = 50.0 - abs(math.log(params["hidden_size"] / 40)) - abs(params["shift"] - 10) / 10
    return objective.Outcome(TrialState.COMPLETE, [value], "no-op")


def instant_train(cfg: TrainConfig, train_split: Split, val_split: Split,
                  on_epoch: EpochCallback | None = None) -> TrainResult:
    """Stands in for hpo.task.train.train: no training, but the callback sees every epoch with a
    plausible score, and the result carries a real (untrained) model for the objective to score."""
    torch.set_num_threads(cfg.threads)  # as train() does: the model still predicts
    curve = [60.0 * (1 - math.exp(-5 * e / cfg.epochs)) for e in range(1, cfg.epochs + 1)]
    for e, v in enumerate(curve, 1):
        if on_epoch is not None:
            on_epoch(EpochReport(e, v, 0.01))
    return TrainResult("completed", "", Denoiser(cfg.hidden_size, cfg.shift), cfg.epochs,
                       curve[-1], seconds=0.0, cpu_seconds=0.0, val_curve=curve,
                       loss_curve=[0.01] * cfg.epochs)


def real_trial(spec: StudySpec, trial: optuna.Trial, **kw: Any) -> objective.Outcome:
    """hpo.run.objective.run_trial, after paying TPE's multivariate sampling (timed as sampling):
    Optuna skips it for enqueued parameters, and a searched trial pays it at its first suggest;
    the sampled values are not used."""
    with timing.timed(timing.SAMPLING):
        _ = trial.relative_params
    return objective.run_trial(spec, trial, **kw)


OBJECTIVES: dict[str, Callable[..., objective.Outcome]] = {
    "noop": noop_trial, "real": real_trial,
    "instant": functools.partial(objective.run_trial, trainer=instant_train)}


# --- worker processes ----------------------------------------------------------------------------

class Clock:
    """An hpo.run.timing observer: wall and thread-CPU seconds and calls per kind, summed in this
    process (the heartbeat thread reports too, hence the lock), and when each tell ended.

    Whatever runs off the worker's main thread is the heartbeat thread's: its beats and its
    own stale-trial checks (hpo.run.worker.heartbeat) are counted as heartbeats, work beside the
    trial, so that "fail-stale check" stays the one the worker makes before each claim."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.tells: list[float] = []

    def __call__(self, kind: str, wall: float, cpu: float) -> None:
        if threading.current_thread() is not threading.main_thread():
            kind = timing.HEARTBEAT
        with self.lock:
            self.wall[kind] += wall
            self.cpu[kind] += cpu
            self.calls[kind] += 1
            if kind == timing.TELL:
                self.tells.append(time.time())


def worker_process(url: str, name: str, index: int, job: str, sync: str | None,
                   out: str) -> None:
    """One worker (a spawned process): run_worker until the study's budget is met. Only real
    trials upload artifacts (beside the SQLite file); the stand-ins have no model worth it."""
    if job == "real":
        os.environ.pop("HPO_ARTIFACTS", None)
    else:
        os.environ["HPO_ARTIFACTS"] = "none"
    if sync is not None:
        sqlite_synchronous(sync)
    clock = Clock()
    timing.observe(clock)
    start, cpu = time.time(), time.process_time()
    try:
        summary = run_worker(url, name, worker_index=index, poll=0.2, run_trial=OBJECTIVES[job])
    except BaseException:
        import traceback

        Path(out + ".err").write_text(traceback.format_exc())
        raise
    Path(out).write_text(json.dumps({
        "start": start, "tells": clock.tells, "wall": clock.wall, "cpu": clock.cpu,
        "calls": clock.calls, "process_cpu": time.process_time() - cpu,
        "completed": summary.completed, "pruned": summary.pruned, "failed": summary.failed}))


def run_workers(url: str, name: str, procs: int, job: str,
                sync: str | None = None) -> list[dict[str, Any]]:
    """Runs `procs` workers on the study at once; each one's timings."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        outs = [str(Path(tmp) / f"w{i}.json") for i in range(procs)]
        ps = [ctx.Process(target=worker_process, args=(url, name, i, job, sync, o))
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
    """Trials/s while every worker runs trials: from the moment the last worker finished its
    first trial to the moment the first worker finished its last one."""
    tells = [sorted(r["tells"]) for r in results]
    if any(len(t) < 2 for t in tells):
        raise RuntimeError("a worker finished fewer than 2 trials: raise --window")
    t0, t1 = max(t[0] for t in tells), min(t[-1] for t in tells)
    if t1 <= t0:  # the workers never overlapped in the steady state (too small a window)
        t0, t1 = min(t[0] for t in tells), max(t[-1] for t in tells)
    n = sum(1 for t in tells for x in t if t0 < x <= t1)
    startup = statistics.median(t[0] - r["start"] for t, r in zip(tells, results, strict=True))
    return {"rate": n / (t1 - t0), "steady_trials": n, "steady_seconds": t1 - t0,
            "trials": sum(len(t) for t in tells), "startup_s": startup}
