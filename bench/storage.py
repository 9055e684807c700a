"""Coordination overhead of the search service: what the shared storage costs per trial.

    python bench/storage.py [--quick] [--sections throughput queries overhead real]
                            [--backends sqlite postgresql] [--postgres-url URL] [--json PATH]

Four sections, every one through hpo's own code paths (hpo.run.worker.run_worker, the `hpo` CLI):

* throughput: trials per second of hpo.run.worker.run_worker with a no-op objective (it suggests the
  mission's three parameters and returns at once) in a study that already holds 1,000 or 10,000
  trials, on SQLite and PostgreSQL, with 1 and 4 worker processes. Each run adds --window trials.
  The rate is measured in the steady state, while every worker is running trials: from the moment
  the last worker finished its first trial to the moment the first worker finished its last one.
  Worker start-up (importing torch, loading every existing trial into Optuna's cache) is reported
  on its own.
* queries: wall and CPU seconds of `hpo best` (top 1 and top 5), `hpo studies` and `hpo --help`
  (the start-up floor) at 1,000 and 10,000 trials, run in-process through typer's CliRunner
  (imports warm, the storage opened by the command as always) and as `python -m hpo` in a fresh
  interpreter (what a user waits for).
* overhead: what a worker does around training, per trial, with training replaced by an instant
  stand-in (run_trial's `trainer`) that still calls the per-epoch callback every epoch, so that
  every report, pruning check and user attr is written as in a real trial, in studies of 0, 1,000
  and 10,000 trials on SQLite: milliseconds per trial by kind of call.
* real: three real trials (hidden 40, shift 10, 100 epochs, the protocol's 200/50 curves) through
  run_worker on SQLite, in a study with 50 earlier trials so that TPE and the median pruner do
  their real work: trial wall time, pure training time, and the share of the worker's cycle spent
  on sampling, storage writes and reports (target: at most 2 %). With both overhead and real, a
  last table projects that share to studies of 1,000 and 10,000 trials.

overhead and real run two variants: `default` (hpo as shipped) and `synchronous=NORMAL` (SQLite
told to sync its file at checkpoints rather than at every commit: a proposal for hpo.store.engines,
measured here). Times come from hpo.run.timing, the package's own hook: every storage call, every
suggestion and every heartbeat is reported by kind (hpo.run.timing's constants) in wall seconds and
in CPU seconds of the calling thread; on SQLite the database work runs in that thread, and on a
shared machine CPU seconds stay close to what an idle core would take where wall seconds do not.
"heartbeats" is all the heartbeat thread does (its beats and its own stale-trial checks), beside
the trial rather than in its path; "fail-stale check" is the one before each claim.

Until issue 11 this script also ran copies of the code before issue 7 ("legacy": reports and
pruning checks every 5 %, one transaction per user attr, queries that load every trial) to give
each table its before and after. Those figures are recorded: bench/results/storage-*.json as
bench/storage.py wrote them at commit 41475e4, and BENCHMARKS.md. The copies are gone, and so are
their rows. The synthetic history now has today's shape (intermediate values every 10 %, compact
curves), so figures from this version are not directly comparable with those recorded ones.

Existing trials are written in bulk into Optuna's own tables (bench/storage_setup.py) because
creating 10,000 trials through the API one by one takes minutes; they read back through Optuna
like any other. The machine may be shared: `uptime`'s load averages are recorded with every row,
and only ratios measured within one run should be compared. PostgreSQL studies get unique names
and are deleted afterwards.
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from storage_setup import (
    ROOT,
    bench_study,
    copy_sqlite,
    load_avg,
    log,
    run_workers,
    steady_rate,
)

from hpo.run import timing
from hpo.store.engines import open_storage

Row = dict[str, Any]
DEFAULT_PG = os.environ.get("HPO_TEST_POSTGRES_URL",
                            "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGET_BEST_S = 1.0  # `hpo best` at 10,000 trials
REAL = {"hidden_size": 40, "shift": 10, "epochs": 100}
# Variant name -> PRAGMA synchronous for the worker's SQLite connections (None: hpo's default).
VARIANTS = {"default": None, "synchronous=NORMAL": "NORMAL"}
# The kinds of call a table shows, in a trial's order. Coordination is their sum plus COUNT
# (the claim's recount when nothing could be claimed); not artifacts or OTHER (failure paths).
KINDS = (timing.FAIL_STALE, timing.CLAIM, timing.SAMPLING, timing.REPORT, timing.PRUNE_CHECK,
         timing.ATTRS, timing.TELL, timing.HEARTBEAT)
COORDINATION = (*KINDS, timing.COUNT)


def per_trial_ms(by_kind: dict[str, float], trials: int) -> dict[str, float]:
    return {k: round(1000 * v / trials, 2) for k, v in sorted(by_kind.items())}


def coordination_ms(ms: dict[str, float]) -> float:
    return round(sum(ms.get(k, 0.0) for k in COORDINATION), 1)


def by_kind(ms: dict[str, float], unit: str) -> Row:
    """Flat columns "<kind> (<unit> ms)", one per shown kind (0 where there were no calls)."""
    return {f"{k} ({unit} ms)": ms.get(k, 0.0) for k in KINDS}


def calls_per_trial(res: dict[str, Any], n: int) -> dict[str, float]:
    return {k: round(v / n, 1) for k, v in sorted(res["calls"].items())}


# --- section: throughput -------------------------------------------------------------------------

def section_throughput(args: argparse.Namespace) -> list[Row]:
    rows = []
    for backend in args.backends:
        for size in args.sizes:
            for procs in args.procs:
                log(f"throughput: {backend}, {size} trials, {procs} process(es)")
                load_before = load_avg()
                with bench_study(backend, args.pg, f"tp{procs}", size + args.window,
                                 size) as (url, name):
                    try:
                        r = steady_rate(run_workers(url, name, procs, "noop"))
                    except RuntimeError as e:  # keep the other rows; say what went wrong
                        log(f"  failed: {e}")
                        r = {"rate": float("nan"), "error": str(e)[:2000]}
                rows.append({"backend": backend, "trials_before": size, "processes": procs,
                             **{k: round(v, 3) if isinstance(v, float) else v
                                for k, v in r.items()},
                             "load_before": load_before, "load_after": load_avg()})
                log(f"  {rows[-1]}")
    print_table("Throughput, no-op objective (trials/s in the steady state)", rows,
                ["backend", "trials_before", "processes", "rate", "steady_trials", "startup_s",
                 "load_before"])
    return rows


# --- section: queries ----------------------------------------------------------------------------

def time_inprocess(argv: list[str]) -> tuple[float, float]:
    # Imported here, not at the top: every spawned worker re-imports this module.
    from typer.testing import CliRunner

    from hpo.cli import app

    w, c = time.perf_counter(), time.process_time()
    r = CliRunner().invoke(app, argv)
    w, c = time.perf_counter() - w, time.process_time() - c
    if r.exit_code != 0:
        raise RuntimeError(f"hpo {' '.join(argv)} failed: {r.output[-500:]}")
    return w, c


def time_subprocess(argv: list[str]) -> tuple[float, float]:
    """`python -m hpo ...` in a fresh interpreter; CPU = the child's user + system time."""
    before, w = os.times(), time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "hpo", *argv], capture_output=True, text=True,
                       cwd=ROOT)
    w, after = time.perf_counter() - w, os.times()
    if r.returncode != 0:
        raise RuntimeError(f"hpo {' '.join(argv)} failed: {r.stderr[-500:]}")
    return w, (after.children_user - before.children_user
               + after.children_system - before.children_system)


def section_queries(args: argparse.Namespace) -> list[Row]:
    rows = []
    timers: dict[str, Callable[[list[str]], tuple[float, float]]] = {
        "in-process": time_inprocess, "subprocess": time_subprocess}
    for backend in args.backends:
        for size in args.sizes:
            log(f"queries: {backend}, {size} trials")
            with bench_study(backend, args.pg, "q", size, size) as (url, name):
                # `hpo studies` lists every study: a shared server holds others too.
                n_studies = len(optuna.get_all_study_names(storage=url))
                commands = {"best": ["best", name, "--storage", url],
                            "best --top 5 --json": ["best", name, "--top", "5", "--json",
                                                    "--storage", url],
                            "studies": ["studies", "--storage", url],
                            # Interpreter and CLI start-up alone: the floor of a subprocess.
                            "--help": ["--help"]}
                for label, argv in commands.items():
                    for how, timer in timers.items():
                        load_before = load_avg()
                        ts = [timer(argv) for _ in range(args.repeats)]
                        rows.append({
                            "backend": backend, "trials": size, "command": f"hpo {label}",
                            "studies_in_storage": n_studies, "how": how,
                            "wall_s": round(statistics.median(t[0] for t in ts), 3),
                            "cpu_s": round(statistics.median(t[1] for t in ts), 3),
                            "repeats": args.repeats, "load_before": load_before})
                        log(f"  hpo {label} [{how}]: {rows[-1]['wall_s']} s wall, "
                            f"{rows[-1]['cpu_s']} s CPU")
    if args.json is not None:
        plot_queries(rows, args.json.with_suffix(".png"))
    print_table("`hpo best` / `hpo studies` latency", rows,
                ["backend", "trials", "command", "how", "wall_s", "cpu_s", "load_before"])
    return rows


def plot_queries(rows: list[Row], path: Path) -> None:
    """Wall seconds of each command, in-process and in a fresh process, log scale; the black
    line is `hpo --help` in a fresh process (the start-up floor)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmds = [r for r in rows if r["command"] != "hpo --help"]
    groups = list(dict.fromkeys((r["backend"], r["trials"], r["command"]) for r in cmds))
    floor = {(r["backend"], r["trials"]): r["wall_s"] for r in rows
             if r["how"] == "subprocess" and r["command"] == "hpo --help"}
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for j, (how, color) in enumerate((("in-process", "tab:gray"), ("subprocess", "tab:blue"))):
        ys = [next((r["wall_s"] for r in cmds if (r["backend"], r["trials"], r["command"]) == g
                    and r["how"] == how), np.nan) for g in groups]
        ax.bar(np.arange(len(groups)) + (j - 0.5) * 0.4, ys, width=0.4, color=color,
               label="in-process (imports warm)" if how == "in-process" else "fresh process")
    for i, g in enumerate(groups):
        if (g[0], g[1]) in floor:
            ax.hlines(floor[(g[0], g[1])], i - 0.4, i + 0.4, color="black", linewidth=1)
    ax.axhline(TARGET_BEST_S, color="tab:red", linestyle=":", label="1 s")
    ax.set_yscale("log")
    ax.set_ylim(top=4 * max((r["wall_s"] for r in rows), default=1.0))  # room for the legend
    ax.set_xticks(np.arange(len(groups)),
                  [f"{c.removeprefix('hpo ').replace(' --json', '')}\n"
                   f"{'SQLite' if b == 'sqlite' else 'PG'} {t:,}" for b, t, c in groups],
                  fontsize=8)
    ax.set_ylabel("wall seconds")
    ax.set_title("hpo best / hpo studies (black line: `hpo --help` start-up)")
    ax.legend(fontsize=8, ncol=3, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- sections: overhead (instant training) and real trials ---------------------------------------

def section_overhead(args: argparse.Namespace) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="hpo-bench-storage-") as tmp:
        for size in args.history:
            with bench_study("sqlite", args.pg, "oh", size + args.overhead_trials,
                             size) as (src, name):
                for variant, sync in VARIANTS.items():
                    log(f"overhead: {size} earlier trials, {variant}")
                    url = copy_sqlite(src, Path(tmp) / "run.db")  # each variant: same start
                    load_before = load_avg()
                    (res,) = run_workers(url, name, 1, "instant", sync)
                    n = res["completed"] + res["pruned"]
                    tells = sorted(res["tells"])
                    wall, cpu = per_trial_ms(res["wall"], n), per_trial_ms(res["cpu"], n)
                    rows.append({
                        "trials_before": size, "variant": variant, "trials": n,
                        "cycle_wall_ms": round(1000 * (tells[-1] - tells[0]) / (n - 1), 1),
                        "coordination_wall_ms": coordination_ms(wall),
                        "process_cpu_ms": round(1000 * res["process_cpu"] / n, 1),
                        "coordination_cpu_ms": coordination_ms(cpu), **by_kind(cpu, "CPU"),
                        "calls": calls_per_trial(res, n), "wall_ms": wall,
                        "load_before": load_before, "load_after": load_avg()})
                    log(f"  {rows[-1]}")
                    for f in Path(tmp).glob("run.db*"):
                        f.unlink()
    print_table("Per-trial work around training (training replaced by an instant stand-in), "
                "SQLite, 1 process", rows,
                ["trials_before", "variant", "cycle_wall_ms", "coordination_wall_ms",
                 "process_cpu_ms", "coordination_cpu_ms", *by_kind({}, "CPU"), "load_before"])
    return rows


def section_real(args: argparse.Namespace) -> list[Row]:
    rows = []
    for variant, sync in VARIANTS.items():
        # Earlier trials score 20-35 %: TPE and the pruner work on a real history, and the real
        # trials (55-58 %) stay above the median, so that none is pruned.
        with bench_study("sqlite", args.pg, "real", 50 + args.real_trials, 50,
                         level=20.0) as (url, name):
            storage = open_storage(url, heartbeat=False)
            study = optuna.load_study(study_name=name, storage=storage)
            for _ in range(args.real_trials):
                study.enqueue_trial(REAL)
            log(f"real: {args.real_trials} trials {REAL}, {variant}")
            load_before = load_avg()
            (res,) = run_workers(url, name, 1, "real", sync)
            done = optuna.load_study(study_name=name, storage=storage)  # read back afresh
            trials = [t for t in done.get_trials(deepcopy=False) if t.number >= 50]
        n = len(trials)
        assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
        wall = sum((t.datetime_complete - t.datetime_start).total_seconds()  # type: ignore
                   for t in trials) / n
        train_s = sum(t.user_attrs["train_seconds"] for t in trials) / n
        artifacts_s = sum(t.user_attrs.get("artifact_seconds", 0.0) for t in trials) / n
        ms, cpu = per_trial_ms(res["wall"], n), per_trial_ms(res["cpu"], n)
        in_loop = (ms.get(timing.REPORT, 0) + ms.get(timing.PRUNE_CHECK, 0)) / 1000
        coord_wall, coord_cpu = coordination_ms(ms) / 1000, coordination_ms(cpu) / 1000
        # The worker's whole cycle for one trial: claim, train, upload, record, tell. The
        # storage timestamps span create..tell; the claim before the creation is added.
        cycle = wall + (ms.get(timing.CLAIM, 0) + ms.get(timing.FAIL_STALE, 0)) / 1000
        process_cpu = res["process_cpu"] / n
        rows.append({
            "variant": variant, "trials": n,
            "trial_wall_s": round(wall, 3), "train_seconds_attr": round(train_s, 3),
            "pure_training_s": round(train_s - in_loop, 3), "artifacts_s": round(artifacts_s, 3),
            "coordination_wall_s": round(coord_wall, 4),
            "share_wall_pct": round(100 * coord_wall / cycle, 2),
            "process_cpu_s": round(process_cpu, 3), "coordination_cpu_s": round(coord_cpu, 4),
            "share_cpu_pct": round(100 * coord_cpu / process_cpu, 2),
            **by_kind(cpu, "CPU"), **by_kind(ms, "wall"), "calls": calls_per_trial(res, n),
            "load_before": load_before, "load_after": load_avg()})
        log(f"  {rows[-1]}")
    print_table(f"Real trials ({REAL}), SQLite, 1 process: coordination share of a trial", rows,
                ["variant", "trials", "trial_wall_s", "pure_training_s", "artifacts_s",
                 "coordination_wall_s", "share_wall_pct", "process_cpu_s", "coordination_cpu_s",
                 "share_cpu_pct", "load_before"])
    print_table("Real trials: coordination per trial by kind", rows,
                ["variant", *by_kind({}, "CPU"), *by_kind({}, "wall")])
    return rows


def project(overhead: list[Row], real: list[Row]) -> list[Row]:
    """The share a real trial would spend on coordination in a study of each size: the
    coordination CPU per trial measured with the instant stand-in at that size, against the
    real trial's CPU seconds outside coordination (same variant, same run)."""
    rows = []
    for o in overhead:
        r = next((r for r in real if r["variant"] == o["variant"]), None)
        if r is None:
            continue
        rest, coord = r["process_cpu_s"] - r["coordination_cpu_s"], o["coordination_cpu_ms"] / 1000
        rows.append({"trials_before": o["trials_before"], "variant": o["variant"],
                     "coordination_cpu_ms": o["coordination_cpu_ms"],
                     "real_trial_cpu_s": round(rest + coord, 3),
                     "projected_share_pct": round(100 * coord / (rest + coord), 2)})
    print_table("Projected coordination share of a real 100-epoch trial by study size (CPU)",
                rows, ["trials_before", "variant", "coordination_cpu_ms", "real_trial_cpu_s",
                       "projected_share_pct"])
    return rows


# --- output and command line ---------------------------------------------------------------------

def print_table(title: str, rows: list[Row], cols: list[str]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |")
    sys.stdout.flush()


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


SECTIONS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "throughput": section_throughput, "queries": section_queries,
    "overhead": section_overhead, "real": section_real}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="100 and 1,000 trials, 1 and 2 processes, small windows, one real trial")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"],
                    choices=["sqlite", "postgresql"])
    ap.add_argument("--postgres-url", dest="pg", default=DEFAULT_PG)
    ap.add_argument("--sizes", nargs="+", type=int, help="existing trials (default 1000 10000)")
    ap.add_argument("--procs", nargs="+", type=int, help="worker processes (default 1 4)")
    ap.add_argument("--window", type=int, help="trials added per throughput run (default 200)")
    ap.add_argument("--repeats", type=int, help="timings per query, median (default 3)")
    ap.add_argument("--history", nargs="+", type=int,
                    help="earlier trials for the overhead section (default 0 1000 10000)")
    ap.add_argument("--overhead-trials", type=int, help="instant trials per run (default 60)")
    ap.add_argument("--real-trials", type=int, help="real trials per run (default 3)")
    ap.add_argument("--json", type=Path, help="write every row here (and plots beside it)")
    args = ap.parse_args()
    q = args.quick
    args.sizes = args.sizes or ([100, 1000] if q else [1000, 10000])
    args.procs = args.procs or ([1, 2] if q else [1, 4])
    args.window = args.window or (40 if q else 200)
    args.repeats = args.repeats or (1 if q else 3)
    args.history = args.history or ([0, 1000] if q else [0, 1000, 10000])
    args.overhead_trials = args.overhead_trials or (20 if q else 60)
    args.real_trials = args.real_trials or (1 if q else 3)
    if args.json:  # the queries plot is written beside it before the rows are
        args.json.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: dict[str, Any] = {"command": " ".join(sys.argv), "cpu": cpu_model(),
                           "cores": os.cpu_count(), "load_start": load_avg()}
    for section in args.sections:
        out[section] = SECTIONS[section](args)
    if out.get("overhead") and out.get("real"):
        out["projection"] = project(out["overhead"], out["real"])
    out["load_end"] = load_avg()
    print(f"\nload averages (1, 5, 15 min): start {out['load_start']}, end {out['load_end']}; "
          f"{out['cores']} cores, {out['cpu']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
