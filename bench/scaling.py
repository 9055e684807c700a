"""Scaling of `hpo search`: finished trials per minute by number of workers and storage backend.

    python bench/scaling.py [--quick] [--repeats N] [--backends sqlite postgresql]
                            [--postgres-url URL] [--json-only]

Two experiments, each on SQLite and on PostgreSQL, every run through the real command
(`python -m hpo search STUDY_FILE --workers N` in a subprocess, storage in HPO_STORAGE) on a
fresh study:

* real objective, 1 and 2 workers: the protocol's 200 training and 50 validation curves, hidden
  16-32, shift 0-10, 10-20 epochs. The configurations are a fixed list (a `points` study) so both
  worker counts train exactly the same models; the speed-up is the ratio of their rates (target
  >= 1.8x on 2 cores, one torch thread per worker).
* tiny objective, 8 and 16 workers: 2 epochs on 20 curves with TPE, so that trials take tens of
  milliseconds and the storage, the budget lock and the sampler are what is measured. It shows
  whether the storage keeps up: errors must be 0 and the study must end with exactly its budget.

Rate = finished trials / (last trial finished - first trial started), from the trials' own
timestamps in the storage: the few seconds each worker spends importing torch before its first
trial are excluded (they are reported separately as the command's wall time).

PostgreSQL runs use a private database created for the run (and dropped after it) on the server
of --postgres-url (default $HPO_TEST_POSTGRES_URL), so that pg_stat_activity sees only this run.
During those runs the server's connection count is sampled every 0.2 s, and so is the number of
TCP connections each process holds to the server (from /proc), to report connections per worker.

Errors counted per run: a non-zero exit, failed trials, trials left running or waiting, a finished
count other than the budget, and storage-error retries or tracebacks in the worker logs.
The machine may be shared: the load average (1 min) before and after each run is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy
import tomli_w
from sqlalchemy.engine import URL, make_url

from hpo.store.engines import open_storage
from hpo.store.studies import counts, load

TARGET_SPEEDUP = 1.8
REAL_WORKERS = (1, 2)
TINY_WORKERS = (8, 16)


# --- study files ------------------------------------------------------------------------------

def real_study(name: str, n: int) -> dict[str, Any]:
    """The protocol's data with short schedules; a fixed list of configurations (same for every
    run) so that 1 and 2 workers do identical work."""
    rng = np.random.default_rng(0)
    points = [{"hidden_size": int(rng.integers(16, 33)), "shift": int(rng.integers(0, 11)),
               "epochs": int(rng.integers(10, 21))} for _ in range(n)]
    return {
        "name": name, "description": "bench/scaling.py: real objective, short epochs",
        "trials": n, "seed": 0, "repeats": 1,
        "objective": {"metric": "val_removed"},
        "sampler": {"type": "points", "points": points},
        "pruner": {"type": "none"},
        "space": {"hidden_size": {"type": "int", "low": 16, "high": 32},
                  "shift": {"type": "int", "low": 0, "high": 10},
                  "epochs": {"type": "int", "low": 10, "high": 20}},
        "data": {"seed": 0, "train": 200, "val": 50, "test": 100},
    }


def tiny_study(name: str, n: int) -> dict[str, Any]:
    """Trials of tens of milliseconds: the storage and the sampler dominate."""
    return {
        "name": name, "description": "bench/scaling.py: tiny objective, storage load",
        "trials": n, "seed": 0, "repeats": 1,
        "objective": {"metric": "val_removed"},
        "sampler": {"type": "tpe", "n_startup_trials": 10},
        "pruner": {"type": "none"},
        "space": {"hidden_size": {"type": "int", "low": 4, "high": 8},
                  "shift": {"type": "int", "low": 0, "high": 5}},
        "train": {"epochs": 2},
        "data": {"seed": 0, "train": 20, "val": 10, "test": 10},
    }


# --- connection sampling (PostgreSQL runs) ----------------------------------------------------

def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                # Field 4 is the parent pid; the command name (field 2) may contain spaces.
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
    return out


def _server_sockets(port: int) -> set[str]:
    """Inodes of established TCP connections to `port` (this machine's network namespace)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "01" and int(f[2].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f[9])
    return inodes


def _sockets_of(pid: int, inodes: set[str]) -> int:
    n = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                n += link.startswith("socket:[") and link[8:-1] in inodes
    return n


@dataclass
class ConnSamples:
    server_total: list[int] = field(default_factory=list)   # pg_stat_activity, whole run
    per_worker: list[list[int]] = field(default_factory=list)  # /proc, one list per sample
    supervisor: list[int] = field(default_factory=list)
    interruptions: int = 0  # server restarts seen while sampling

    def summary(self, workers: int) -> dict[str, Any]:
        # "Steady" samples: every worker process is up (before that, some are importing torch).
        full = [s for s in self.per_worker if len(s) == workers]
        flat = [n for s in full for n in s]
        clients = [sum(w) + s for w, s in zip(self.per_worker, self.supervisor, strict=True)]
        return {
            "server_peak": max(self.server_total, default=0),
            "server_median": statistics.median(self.server_total) if self.server_total else 0,
            # The same connections counted from the client side, process by process.
            "clients_peak": max(clients, default=0),
            "per_worker_peak": max((n for s in self.per_worker for n in s), default=0),
            "per_worker_median": statistics.median(flat) if flat else 0,
            "per_worker_mean": round(statistics.fmean(flat), 2) if flat else 0,
            "supervisor_peak": max(self.supervisor, default=0),
            "samples": len(self.server_total),
            "server_restarts_seen": self.interruptions,
        }


@contextlib.contextmanager
def sample_connections(server: URL, database: str, supervisor: subprocess.Popen[bytes]
                       ) -> Iterator[ConnSamples]:
    """Samples every 0.2 s until the block ends. Connects to the server's own database (not the
    bench one), so the sampler is never among the connections it counts."""
    samples, stop = ConnSamples(), threading.Event()
    engine = sqlalchemy.create_engine(server, poolclass=sqlalchemy.pool.NullPool)
    query = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
                            "AND backend_type = 'client backend'")
    port = server.port or 5432

    def loop() -> None:
        while not stop.is_set():
            try:
                with engine.connect() as con:
                    while not stop.is_set():
                        total = int(con.execute(query, {"db": database}).scalar() or 0)
                        con.commit()
                        inodes = _server_sockets(port)
                        samples.server_total.append(total)
                        samples.per_worker.append([_sockets_of(p, inodes)
                                                   for p in _children(supervisor.pid)])
                        samples.supervisor.append(_sockets_of(supervisor.pid, inodes))
                        stop.wait(0.2)
            except sqlalchemy.exc.SQLAlchemyError:
                # The server restarted under us (the machine is shared): reconnect and go on;
                # the run's own errors are counted from the workers, not from the sampler.
                samples.interruptions += 1
                stop.wait(1.0)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()
        engine.dispose()


@contextlib.contextmanager
def private_database(server_url: str) -> Iterator[tuple[str, URL, str]]:
    """A fresh database on the server for this benchmark, dropped afterwards."""
    server = make_url(server_url)
    name = f"hpo_bench_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT",
                                     poolclass=sqlalchemy.pool.NullPool)
    with admin.connect() as con:
        con.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False), server, name
    finally:
        with admin.connect() as con:
            con.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- one run --------------------------------------------------------------------------------

@dataclass
class Run:
    backend: str
    objective: str
    workers: int
    budget: int
    finished: int = 0
    wall_s: float = 0.0
    span_s: float = 0.0
    per_min: float = 0.0
    errors: int = 0
    error_detail: dict[str, int] = field(default_factory=dict)
    load_before: float = 0.0
    load_after: float = 0.0
    connections: dict[str, Any] | None = None


def run_search(backend: str, url: str, objective: str, workers: int, trials: int, tmp: Path,
               pg: tuple[URL, str] | None) -> Run:
    name = f"scale-{objective}-{backend[:2]}-{workers}w-{uuid.uuid4().hex[:6]}"
    body = (real_study if objective == "real" else tiny_study)(name, trials)
    study_file = tmp / f"{name}.toml"
    study_file.write_text(tomli_w.dumps(body))
    run = Run(backend, objective, workers, trials, load_before=os.getloadavg()[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env.update(HPO_STORAGE=url, PYTHONUNBUFFERED="1")
    out = tmp / f"{name}.out"
    t0 = time.perf_counter()
    with out.open("wb") as f:
        # cwd=tmp: the command writes its worker logs to ./storage/logs there.
        proc = subprocess.Popen([sys.executable, "-m", "hpo", "search", str(study_file),
                                 "--workers", str(workers), "--threads", "1"],
                                cwd=tmp, env=env, stdout=f, stderr=subprocess.STDOUT)
        with (sample_connections(pg[0], pg[1], proc) if pg else contextlib.nullcontext()
              ) as samples:
            rc = proc.wait()
    run.wall_s = time.perf_counter() - t0
    run.load_after = os.getloadavg()[0]
    if samples is not None:
        run.connections = samples.summary(workers)

    storage = open_storage(url, heartbeat=False)
    study, _ = load(name, storage)
    c = counts(study)
    done = [t for t in study.get_trials(deepcopy=False)
            if t.datetime_start is not None and t.datetime_complete is not None]
    # Close this process's pooled connections, or the next run's pg_stat_activity counts them.
    storage.engine.dispose()
    run.finished = c.finished
    if done:
        first = min(t.datetime_start for t in done if t.datetime_start is not None)
        last = max(t.datetime_complete for t in done if t.datetime_complete is not None)
        run.span_s = (last - first).total_seconds()
        run.per_min = 60 * c.finished / run.span_s if run.span_s > 0 else 0.0
    logs = "\n".join(p.read_text(errors="replace")
                     for p in (tmp / "storage" / "logs").glob(f"{name}-worker-*.log"))
    detail = {
        "exit_code_nonzero": int(rc != 0),
        "failed_trials": c.failed,
        "left_running_or_waiting": c.running + c.waiting,
        "budget_mismatch": abs(c.finished - c.budget),
        "storage_retries": logs.count("storage error while trying to"),
        "tracebacks": logs.count("Traceback"),
    }
    run.error_detail = {k: v for k, v in detail.items() if v}
    run.errors = sum(detail.values())
    if rc != 0:
        print(f"  {name}: exit {rc}; last output:\n{out.read_text(errors='replace')[-1500:]}",
              file=sys.stderr)
    return run


# --- main ---------------------------------------------------------------------------------

def pair_ratios(runs: list[Run], backend: str) -> list[float]:
    """Speed-up of each (1 worker, 2 workers) pair of real-objective runs, in run order."""
    real = [r for r in runs if r.backend == backend and r.objective == "real"]
    ones = [r.per_min for r in real if r.workers == 1]
    twos = [r.per_min for r in real if r.workers == 2]
    return [b / a for a, b in zip(ones, twos, strict=False) if a > 0]


def speedups(runs: list[Run]) -> dict[str, float]:
    """Median over the pairs: with --repeats, pairs alternate 1, 2, 1, 2 workers so that a
    neighbour's burst of load on a shared machine hits both sides alike."""
    out = {}
    for backend in sorted({r.backend for r in runs}):
        ratios = pair_ratios(runs, backend)
        if ratios:
            out[backend] = round(statistics.median(ratios), 3)
    return out


def table(runs: list[Run], ups: dict[str, float]) -> str:
    head = (f"{'backend':<11}{'objective':<10}{'workers':>7}{'trials':>8}{'wall s':>8}"
            f"{'trials/min':>12}{'speed-up':>10}{'errors':>8}{'conn/worker':>13}"
            f"{'server conn':>13}{'load 1m':>13}")
    lines = [head, "-" * len(head)]
    pairs = {b: iter(pair_ratios(runs, b)) for b in ups}
    for r in runs:
        up = f"{next(pairs[r.backend]):.2f}x" if r.objective == "real" and r.workers == 2 \
            and r.backend in pairs else ""
        c = r.connections or {}
        conn = f"{c['per_worker_median']:g} (max {c['per_worker_peak']})" if c else "-"
        server = f"{c['server_peak']}" if c else "-"
        lines.append(f"{r.backend:<11}{r.objective:<10}{r.workers:>7}"
                     f"{f'{r.finished}/{r.budget}':>8}{r.wall_s:>8.1f}{r.per_min:>12.1f}"
                     f"{up:>10}{r.errors:>8}{conn:>13}{server:>13}"
                     f"{f'{r.load_before:.1f}->{r.load_after:.1f}':>13}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer trials (about a third)")
    ap.add_argument("--postgres-url", default=os.environ.get("HPO_TEST_POSTGRES_URL"),
                    help="a PostgreSQL server URL; a private database is created on it "
                         "(default: $HPO_TEST_POSTGRES_URL)")
    ap.add_argument("--backends", nargs="+", choices=("sqlite", "postgresql"),
                    default=["sqlite", "postgresql"], help="storage backends to measure")
    ap.add_argument("--real-trials", type=int,
                    help="trials of each real-objective run (0: skip them)")
    ap.add_argument("--tiny-trials", type=int,
                    help="trials of each tiny-objective run (0: skip them)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="(1 worker, 2 workers) pairs per backend; the median ratio is reported")
    ap.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = ap.parse_args()
    real_n = (12 if args.quick else 32) if args.real_trials is None else args.real_trials
    tiny_n = (60 if args.quick else 200) if args.tiny_trials is None else args.tiny_trials

    def say(*a: Any, **k: Any) -> None:
        if not args.json_only:
            print(*a, **k)

    load0 = os.getloadavg()
    say(f"load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} "
        f"on {os.cpu_count()} CPUs")
    if load0[0] > (os.cpu_count() or 1) * 0.5:
        # Two workers can only be twice as fast as one if two cores are free for them.
        say("warning: the machine is already busy; speed-ups measured now understate an idle "
            "machine's")

    runs: list[Run] = []
    plan = [("real", w, real_n) for _ in range(args.repeats) for w in REAL_WORKERS if real_n] + \
        [("tiny", w, tiny_n) for w in TINY_WORKERS if tiny_n]
    with tempfile.TemporaryDirectory(prefix="hpo-scaling-") as d:
        tmp = Path(d)
        backends: list[tuple[str, Any]] = []
        if "sqlite" in args.backends:
            backends.append(("sqlite", None))
        if "postgresql" in args.backends and args.postgres_url:
            backends.append(("postgresql", args.postgres_url))
        elif "postgresql" in args.backends:
            say("PostgreSQL skipped: give --postgres-url or set HPO_TEST_POSTGRES_URL")
        for backend, server_url in backends:
            sqlite = (f"sqlite:///{tmp / 'bench.db'}", None, None)
            ctx: Any = private_database(server_url) if server_url else \
                contextlib.nullcontext(sqlite)
            with ctx as (url, server, dbname):
                for objective, workers, n in plan:
                    say(f"{backend}: {objective} objective, {workers} worker(s), {n} trials ...",
                        flush=True)
                    runs.append(run_search(backend, url, objective, workers, n, tmp,
                                           (server, dbname) if server else None))
    ups = speedups(runs)
    load1 = os.getloadavg()
    say("")
    say(table(runs, ups))
    say("\nspeed-up with 2 workers (real objective, median of pairs): "
        + ", ".join(f"{b} {u:.2f}x" for b, u in ups.items())
        + f"  (target >= {TARGET_SPEEDUP}x)")
    say(f"load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    print(json.dumps({
        "bench": "scaling", "quick": args.quick, "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load0], "load_after": [round(x, 2) for x in load1],
        "speedup_2_workers": ups, "target": TARGET_SPEEDUP, "repeats": args.repeats,
        "errors": sum(r.errors for r in runs),
        "runs": [{**asdict(r), "wall_s": round(r.wall_s, 2), "span_s": round(r.span_s, 2),
                  "per_min": round(r.per_min, 2)} for r in runs],
    }))


if __name__ == "__main__":
    main()
