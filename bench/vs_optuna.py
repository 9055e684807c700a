"""`hpo search` against plain Optuna on the same fixed configurations: what does hpo cost?

    python bench/vs_optuna.py [--quick] [--trials N] [--pairs P] [--workers W] [--json PATH]
                              [--load N] [--keep] [--note TEXT]
    python bench/vs_optuna.py --from-json bench/results/vs_optuna.json   # reprint a saved run

Both sides train exactly the same N configurations (default 12: hidden 16-40, shift 0-10,
20-60 epochs, drawn once from a fixed seed; no pruning) on the protocol's data (data seed 0,
200 training and 50 validation curves) with the same training function, `hpo.task.train.train`, on
one torch thread per process, two processes sharing one SQLite study:

* **hpo**: the real command, as a user runs it: `hpo search STUDY.toml --workers W` (the
  installed `hpo` script, else `python -m hpo`) in a fresh directory with `HPO_STORAGE` set to a
  fresh SQLite file, artifacts on (hpo's default: a picture, a model file and the curves per
  trial). The study file is a `points` study listing the N configurations. Nothing of hpo is
  imported for this side.
* **optuna**: a plain-Optuna script (this file, `--role optuna-search`): it creates the study
  once (SQLite in WAL mode), then starts W worker processes (`--role optuna-worker`), each calling
  `study.optimize(objective)` with `MaxTrialsCallback(N)` as the shared budget. A five-line
  sampler gives trial k configuration k (trial numbers are unique across processes), the
  objective suggests the three parameters, trains with `hpo.task.train.train` on
  `hpo.task.curves.make_split`
  curves and returns the validation score; training seeds follow hpo's formula, so both sides
  train the very same models. A process that creates a trial past N (a race on the last one)
  prunes it at once without training (counted as `extra`). Enqueuing the configurations
  (`enqueue_trial`) was the first design and is not safe here: two processes popping the queue
  at the same moment both got trial 0 from SQLite (Optuna's check-then-set of a WAITING trial is
  not atomic there), trained it twice, and one then died on "Cannot tell a COMPLETE trial".
  hpo claims under its budget lock and cannot do that.

Runs alternate hpo, optuna, hpo, optuna... for P pairs (default 5), each on a fresh study, so that
a neighbour's burst of load hits both sides alike; an untimed `hpo create` first warms the disk
cache and hpo's baseline cache, as on any machine that has created a study before. Per run:

* wall: the command's wall time; CPU: user + sys of the command and all its descendants
  (`os.wait4` on the command, which waits for its workers);
* start-up: from the command's start to the first trial's `datetime_start` in the storage (and to
  the last worker's first trial);
* tail: from the last trial's `datetime_complete` to the command's exit;
* train: the summed training seconds (hpo's `train_seconds` user attr; the plain script's own
  `TrainResult.seconds`);
* overhead per trial: (W x wall - summed training seconds) / N, i.e. worker-seconds not spent
  training, per trial; split into inside a trial (complete - start - training) and between a
  worker's consecutive trials.

The table gives each run and the median ratio hpo / optuna over the pairs, for wall, for CPU
time (which a shared machine's load inflates far less), and for wall at equal training speed
(each side's wall over its own summed training seconds, then hpo's over optuna's: a neighbour's
load slows training and overhead alike, so this one survives a busy machine). The load average
(`uptime`) is recorded before and after every run. `--quick` (4 trials, 2 pairs) is a smoke
check; it writes no JSON unless --json is given. A full run writes bench/results/vs_optuna.json.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import optuna

RESULTS = Path(__file__).resolve().parent / "results" / "vs_optuna.json"
TARGET_WALL_RATIO = 1.05
SPACE = {"hidden_size": (16, 40), "shift": (0, 10), "epochs": (20, 60)}
DATA = {"seed": 0, "train": 200, "val": 50, "test": 1000}  # the protocol's splits
STUDY_SEED = 0


# --- the configurations ---------------------------------------------------------------------

def configurations(n: int, seed: int = 0) -> list[dict[str, int]]:
    """N fixed configurations; --quick takes the first few of the same list."""
    rng = np.random.default_rng(seed)
    return [{k: int(rng.integers(lo, hi + 1)) for k, (lo, hi) in SPACE.items()}
            for _ in range(max(n, 12))][:n]


def training_seed(number: int, repeat: int = 0) -> int:
    """hpo's training seed of a trial (StudySpec seed, trial number, repeat), so both sides train
    identical models. Written out here rather than imported: the plain side must not depend on
    hpo's internals."""
    state = np.random.SeedSequence([STUDY_SEED, number, repeat]).generate_state(1)[0]
    return int(state % 2**31)


def study_toml(name: str, cfgs: list[dict[str, int]]) -> str:
    points = ",\n".join("    { " + ", ".join(f"{k} = {v}" for k, v in c.items()) + " }"
                        for c in cfgs)
    space = "\n".join(f'[space.{k}]\ntype = "int"\nlow = {lo}\nhigh = {hi}\n'
                      for k, (lo, hi) in SPACE.items())
    data = "\n".join(f"{k} = {v}" for k, v in DATA.items())
    return (f'name = "{name}"\ndescription = "bench/vs_optuna.py: fixed configurations"\n'
            f"trials = {len(cfgs)}\nseed = {STUDY_SEED}\nrepeats = 1\n\n"
            f'[objective]\nmetric = "val_removed"\n\n'
            f'[sampler]\ntype = "points"\npoints = [\n{points},\n]\n\n'
            f'[pruner]\ntype = "none"\n\n{space}\n[data]\n{data}\n')


# --- the plain-Optuna side (runs in its own processes) ---------------------------------------

class FixedConfigurations(optuna.samplers.BaseSampler):
    """Trial k gets configuration k."""

    def __init__(self, cfgs: list[dict[str, int]]) -> None:
        self.cfgs = cfgs

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: Any, space: dict[str, Any]
                        ) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: Any, name: str,
                           distribution: Any) -> Any:
        return self.cfgs[trial.number][name]


def optuna_search(url: str, name: str, cfgs_json: str, workers: int, out_dir: Path) -> int:
    """Creates the study once (SQLite in WAL mode), then runs W worker processes."""
    db = Path(url.removeprefix("sqlite:///"))
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("PRAGMA journal_mode=WAL")
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    optuna.create_study(study_name=name, storage=storage, direction="maximize")
    storage.engine.dispose()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--role", "optuna-worker",
           "--url", url, "--name", name, "--configs", cfgs_json, "--out-dir", str(out_dir)]
    procs = [subprocess.Popen(cmd, stdin=subprocess.DEVNULL) for _ in range(workers)]
    return max(p.wait() for p in procs)


def optuna_worker(url: str, name: str, cfgs: list[dict[str, int]], out_dir: Path) -> None:
    """One process of the plain script: study.optimize until N trials exist."""
    import torch

    from hpo.task.config import TrainConfig
    from hpo.task.curves import DataConfig, make_split
    from hpo.task.train import train

    torch.set_num_threads(1)
    data = DataConfig(seed=DATA["seed"], n_train=DATA["train"], n_val=DATA["val"],
                      n_test=DATA["test"])
    train_split, val_split = make_split(data, "train"), make_split(data, "val")
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=FixedConfigurations(cfgs))
    log = out_dir / f"train-{os.getpid()}.jsonl"

    def objective(trial: optuna.Trial) -> float:
        if trial.number >= len(cfgs):  # the other process took the last configuration first
            trial.study.stop()
            raise optuna.TrialPruned("no configuration left")
        p = {k: trial.suggest_int(k, lo, hi) for k, (lo, hi) in SPACE.items()}
        cfg = TrainConfig(hidden_size=p["hidden_size"], shift=p["shift"], epochs=p["epochs"],
                          seed=training_seed(trial.number), threads=1)
        result = train(cfg, train_split, val_split)
        with log.open("a") as f:
            f.write(json.dumps({"number": trial.number, "pid": os.getpid(),
                                "train_seconds": result.seconds}) + "\n")
        return result.val_removed

    study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(len(cfgs), states=None)])


# --- one timed run ---------------------------------------------------------------------------

@dataclass
class Run:
    side: str
    pair: int
    expected: int
    workers: int
    rc: int = 0
    complete: int = 0
    extra: int = 0  # plain side: trials created after the queue ran dry (pruned, no training)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    user_s: float = 0.0
    sys_s: float = 0.0
    startup_s: float = 0.0  # command start -> first trial's start
    startup_last_worker_s: float = 0.0  # command start -> the last worker's first trial
    tail_s: float = 0.0  # last trial's completion -> command exit
    train_s: float = 0.0
    overhead_per_trial_s: float = 0.0  # (workers * wall - train) / trials
    in_trial_s: float = 0.0  # mean of (complete - start - training) per trial
    between_trials_s: float = 0.0  # mean gap between a worker's consecutive trials
    artifact_s: float = 0.0  # hpo: mean artifact_seconds user attr (inside in_trial_s)
    load_before: list[float] = field(default_factory=list)
    load_after: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path
          ) -> tuple[int, float, float, float, datetime]:
    """Runs cmd; returns its exit code, wall seconds, user and sys seconds of its whole tree."""
    with log.open("wb") as f:
        started = datetime.now()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, not by Popen
    return proc.returncode, wall, usage.ru_utime, usage.ru_stime, started


def hpo_command() -> list[str]:
    script = Path(sys.executable).with_name("hpo")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "hpo"]


def measure(run: Run, cmd: list[str], cwd: Path, env: dict[str, str], url: str, name: str,
            cfgs: list[dict[str, int]], train_of: Any) -> Run:
    run.load_before = loadavg()
    rc, wall, user, sys_, started = timed(cmd, cwd, env, cwd / "output.log")
    run.load_after = loadavg()
    run.rc, run.wall_s, run.user_s, run.sys_s = rc, wall, user, sys_
    run.cpu_s = user + sys_
    if rc != 0:
        tail = (cwd / "output.log").read_text(errors="replace")[-1500:]
        run.errors.append(f"exit code {rc}: {tail}")
    storage = optuna.storages.RDBStorage(url)
    try:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    run.complete = len(done)
    run.extra = sum(t.number >= len(cfgs) for t in trials)
    got = sorted(tuple(sorted(t.params.items())) for t in done)
    want = sorted(tuple(sorted(c.items())) for c in cfgs)
    if got != want:
        run.errors.append(f"trained {len(got)} configurations, not the {len(want)} given")
    bad = [t.number for t in trials if t.state not in (optuna.trial.TrialState.COMPLETE,)
           and t.number < len(cfgs)]
    if bad:
        run.errors.append(f"trials not complete: {bad}")
    if not done:
        return run
    train = {t.number: train_of(t) for t in done}  # number -> (seconds, worker id)
    span = {t.number: (t.datetime_start, t.datetime_complete) for t in done
            if t.datetime_start is not None and t.datetime_complete is not None}
    run.startup_s = (min(a for a, _ in span.values()) - started).total_seconds()
    run.tail_s = wall - (max(b for _, b in span.values()) - started).total_seconds()
    run.train_s = sum(s for s, _ in train.values())
    run.overhead_per_trial_s = (run.workers * wall - run.train_s) / len(done)
    run.in_trial_s = statistics.fmean((b - a).total_seconds() - train[n][0]
                                      for n, (a, b) in span.items())
    by_worker: dict[Any, list[tuple[datetime, datetime]]] = {}
    for n, times in span.items():
        by_worker.setdefault(train[n][1], []).append(times)
    gaps, firsts = [], []
    for ts in by_worker.values():
        ts.sort()
        firsts.append((ts[0][0] - started).total_seconds())
        gaps += [(b[0] - a[1]).total_seconds() for a, b in zip(ts, ts[1:], strict=False)]
    run.startup_last_worker_s = max(firsts)
    run.between_trials_s = statistics.fmean(gaps) if gaps else 0.0
    arts = [t.user_attrs.get("artifact_seconds") for t in done]
    run.artifact_s = statistics.fmean(a for a in arts if a is not None) \
        if any(a is not None for a in arts) else 0.0
    return run


def run_hpo(pair: int, cfgs: list[dict[str, int]], workers: int, root: Path,
            env: dict[str, str]) -> Run:
    d = root / f"hpo-{pair}"
    d.mkdir()
    name = f"vs_optuna_hpo_{pair}"
    (d / "study.toml").write_text(study_toml(name, cfgs))
    url = f"sqlite:///{d / 'hpo.db'}"
    cmd = [*hpo_command(), "search", str(d / "study.toml"), "--workers", str(workers)]

    def train_of(t: optuna.trial.FrozenTrial) -> tuple[float, Any]:
        return float(t.user_attrs["train_seconds"]), t.user_attrs.get("pid")

    return measure(Run("hpo", pair, len(cfgs), workers), cmd, d, {**env, "HPO_STORAGE": url},
                   url, name, cfgs, train_of)


def run_optuna(pair: int, cfgs: list[dict[str, int]], workers: int, root: Path,
               env: dict[str, str]) -> Run:
    d = root / f"optuna-{pair}"
    d.mkdir()
    name = f"vs_optuna_plain_{pair}"
    url = f"sqlite:///{d / 'optuna.db'}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--role", "optuna-search", "--url", url,
           "--name", name, "--configs", json.dumps(cfgs), "--workers", str(workers),
           "--out-dir", str(d)]
    seconds: dict[int, tuple[float, Any]] = {}

    def train_of(t: optuna.trial.FrozenTrial) -> tuple[float, Any]:
        if not seconds:
            for path in d.glob("train-*.jsonl"):
                for line in path.read_text().splitlines():
                    r = json.loads(line)
                    seconds[r["number"]] = (float(r["train_seconds"]), r["pid"])
        return seconds[t.number]

    run = measure(Run("optuna", pair, len(cfgs), workers), cmd, d, env, url, name, cfgs,
                  train_of)
    trained = [json.loads(line)["number"] for path in d.glob("train-*.jsonl")
               for line in path.read_text().splitlines()]
    if len(trained) != len(set(trained)):
        run.errors.append(f"configurations trained twice: {sorted(trained)}")
    return run


# --- report ----------------------------------------------------------------------------------

def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 3) if xs else float("nan")


def summarize(runs: list[Run]) -> dict[str, Any]:
    hpo = {r.pair: r for r in runs if r.side == "hpo"}
    plain = {r.pair: r for r in runs if r.side == "optuna"}
    pairs = sorted(set(hpo) & set(plain))
    wall = [hpo[p].wall_s / plain[p].wall_s for p in pairs]
    cpu = [hpo[p].cpu_s / plain[p].cpu_s for p in pairs]
    # Each side's wall over its own summed training seconds: a neighbour's load slows training
    # and overhead alike, so this ratio of ratios compares the two at equal training speed.
    paced = [(hpo[p].wall_s / hpo[p].train_s) / (plain[p].wall_s / plain[p].train_s)
             for p in pairs if hpo[p].train_s > 0 and plain[p].train_s > 0]
    keys = ("wall_s", "cpu_s", "startup_s", "startup_last_worker_s", "tail_s", "train_s",
            "overhead_per_trial_s", "in_trial_s", "between_trials_s", "artifact_s")
    sides = {side: {k: median([getattr(r, k) for r in rs.values()]) for k in keys}
             for side, rs in (("hpo", hpo), ("optuna", plain))}
    return {
        "wall_ratio_median": median(wall), "cpu_ratio_median": median(cpu),
        "wall_ratio_equal_training_median": median(paced),
        "wall_ratios": [round(x, 3) for x in wall], "cpu_ratios": [round(x, 3) for x in cpu],
        "wall_ratios_equal_training": [round(x, 3) for x in paced],
        "excess_wall_s_median": median([hpo[p].wall_s - plain[p].wall_s for p in pairs]),
        "excess_cpu_s_median": median([hpo[p].cpu_s - plain[p].cpu_s for p in pairs]),
        "medians": sides, "target_wall_ratio": TARGET_WALL_RATIO,
        "errors": sum(len(r.errors) for r in runs),
    }


def table(runs: list[Run], summary: dict[str, Any]) -> str:
    cols = [("side", 7, "side"), ("pair", 5, "pair"), ("done", 6, "complete"),
            ("wall s", 8, "wall_s"), ("CPU s", 8, "cpu_s"), ("start-up", 9, "startup_s"),
            ("last 1st", 9, "startup_last_worker_s"), ("tail", 6, "tail_s"),
            ("train", 7, "train_s"), ("ovh/trial", 10, "overhead_per_trial_s"),
            ("in-trial", 9, "in_trial_s"), ("between", 8, "between_trials_s"),
            ("load 1m", 14, None)]
    head = "".join(f"{c:>{w}}" for c, w, _ in cols)
    lines = [head, "-" * len(head)]
    for r in runs:
        cells = []
        for _, w, k in cols:
            if k is None:
                v = f"{r.load_before[0]:.2f}->{r.load_after[0]:.2f}"
            elif k == "complete":
                v = f"{r.complete}/{r.expected}"
            else:
                x = getattr(r, k)
                v = f"{x:.2f}" if isinstance(x, float) else str(x)
            cells.append(f"{v:>{w}}")
        lines.append("".join(cells) + ("  ERROR" if r.errors else ""))
    m = summary["medians"]
    lines.append("")
    for side in ("hpo", "optuna"):
        s = m[side]
        lines.append(f"median {side:<7} wall {s['wall_s']:.2f} s  CPU {s['cpu_s']:.2f} s  "
                     f"start-up {s['startup_s']:.2f} s "
                     f"(last worker {s['startup_last_worker_s']:.2f})"
                     f"  tail {s['tail_s']:.2f} s  overhead/trial {s['overhead_per_trial_s']:.3f} s"
                     f" (in-trial {s['in_trial_s']:.3f}, between {s['between_trials_s']:.3f}"
                     + (f", artifacts {s['artifact_s']:.3f}" if side == "hpo" else "") + ")")
    lines.append(f"hpo / optuna, median of {len(summary['wall_ratios'])} pairs: wall "
                 f"{summary['wall_ratio_median']:.3f}x {summary['wall_ratios']}, CPU "
                 f"{summary['cpu_ratio_median']:.3f}x {summary['cpu_ratios']}, wall at equal "
                 f"training speed {summary['wall_ratio_equal_training_median']:.3f}x "
                 f"{summary['wall_ratios_equal_training']}  (target wall <= "
                 f"{TARGET_WALL_RATIO}x); excess {summary['excess_wall_s_median']:.2f} s wall, "
                 f"{summary['excess_cpu_s_median']:.2f} s CPU per run")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in ("torch", "optuna", "hpo", "sqlalchemy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    spec = importlib.util.find_spec("hpo")  # where the hpo that ran came from (PYTHONPATH too)
    source = str(Path(spec.origin).parent) if spec and spec.origin else None
    head = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(["git", "-C", source or ".", "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5).stdout.strip() or None
    return {"cpu": model, "cpus": os.cpu_count(), "python": platform.python_version(),
            "versions": versions, "hpo_source": source, "git_head": head}


def uptime() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    return " ".join(map(str, loadavg()))


def bench(args: argparse.Namespace) -> None:
    cfgs = configurations(args.trials)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    print(f"{uptime()}\n{args.pairs} pairs of {args.trials} trials, {args.workers} workers; "
          f"configurations {cfgs}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="hpo-vs-optuna-"))
    env["HPO_CACHE_DIR"] = str(root / "cache")  # hpo's baseline cache, warmed below
    runs: list[Run] = []
    # --load N: N busy processes share the cores with both sides throughout, as neighbours' jobs
    # would (a reproducible stand-in for "other jobs on the machine").
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.load)]
    load0 = loadavg()
    try:
        if not args.no_warmup:
            warm = root / "warmup"
            warm.mkdir()
            (warm / "study.toml").write_text(study_toml("vs_optuna_warmup", cfgs))
            subprocess.run([*hpo_command(), "create", str(warm / "study.toml")], cwd=warm,
                           env={**env, "HPO_STORAGE": f"sqlite:///{warm / 'hpo.db'}"},
                           check=True, stdout=subprocess.DEVNULL)
        for pair in range(args.pairs):
            for side, fn in (("hpo", run_hpo), ("optuna", run_optuna)):
                print(f"pair {pair}: {side} ...", end=" ", flush=True)
                r = fn(pair, cfgs, args.workers, root, env)
                runs.append(r)
                print(f"{r.wall_s:.1f} s wall, {r.cpu_s:.1f} s CPU, load {r.load_after[0]:.2f}"
                      + (f"  ERRORS: {r.errors}" if r.errors else ""), flush=True)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    summary = summarize(runs)
    print()
    print(table(runs, summary))
    end = uptime()
    print(end)
    out = args.json or (None if args.quick else RESULTS)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps({
            "bench": "vs_optuna", "date": datetime.now().isoformat(timespec="seconds"),
            "note": args.note, "quick": args.quick, "trials": args.trials, "pairs": args.pairs,
            "workers": args.workers, "busy_processes": args.load, "machine": machine(),
            "load_before": load0,
            "load_after": loadavg(), "uptime_after": end, "configurations": cfgs,
            "summary": summary,
            "runs": [{k: round(v, 4) if isinstance(v, float) else v
                      for k, v in asdict(r).items()} for r in runs],
        }, indent=1) + "\n")
        print(f"wrote {out}")


def resummarize(path: Path) -> None:
    """Reprints a saved run's table with the summary recomputed (and stored back)."""
    saved = json.loads(path.read_text())
    runs = [Run(**r) for r in saved["runs"]]
    saved["summary"] = summarize(runs)
    print(table(runs, saved["summary"]))
    path.write_text(json.dumps(saved, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 trials, 2 pairs: a smoke check")
    ap.add_argument("--trials", type=int, help="configurations per run (default 12; quick 4)")
    ap.add_argument("--pairs", type=int, help="(hpo, optuna) pairs (default 5; quick 2)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes per run")
    ap.add_argument("--json", type=Path, help=f"where to write the results (default {RESULTS}; "
                                              "none with --quick)")
    ap.add_argument("--load", type=int, default=0, metavar="N",
                    help="run N busy-loop processes beside both sides (a loaded machine)")
    ap.add_argument("--keep", action="store_true", help="keep the runs' directories (logs, dbs)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed `hpo create`")
    ap.add_argument("--note", default="", help="free text kept in the JSON (e.g. the commit)")
    ap.add_argument("--from-json", type=Path, metavar="PATH",
                    help="run nothing: recompute the summary of a results file, print its table")
    # The plain-Optuna side runs as this same file in its own processes.
    ap.add_argument("--role", choices=("optuna-search", "optuna-worker"), help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--name", help=argparse.SUPPRESS)
    ap.add_argument("--configs", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "optuna-search":
        sys.exit(optuna_search(args.url, args.name, args.configs, args.workers, args.out_dir))
    if args.role == "optuna-worker":
        optuna_worker(args.url, args.name, json.loads(args.configs), args.out_dir)
        return
    if args.from_json:
        resummarize(args.from_json)
        return
    args.trials = args.trials or (4 if args.quick else 12)
    args.pairs = args.pairs or (2 if args.quick else 5)
    bench(args)


if __name__ == "__main__":
    main()
