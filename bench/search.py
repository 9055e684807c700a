"""Search efficiency at equal compute: TPE with pruning, TPE without, and random search.

    python bench/search.py [--quick | --full] [--seeds N] [--budget EPOCHS] [--procs N]
                           [--estimate]

Every search runs the mission's study (studies/noise_removal.toml: hidden size 8-128 log, shift
0-30, epochs; TPE with 10 start-up trials; median pruner, 8 start-up trials, 30 % warm-up) through
hpo.run.objective.run_trial, the code every worker runs, on the protocol's 200 training and 50
validation curves. Each search is one process with an in-memory Optuna study: no storage overhead,
so only the samplers and the pruner differ. Compute is counted in epochs trained (a trial's
`epochs_run` user attr, times its repeats when it completes); every search gets the same epoch
budget and stops starting trials once it is spent.

By default the epochs range is scaled down to 10-100 (step 10) so that a full comparison fits a
2-core machine; --full uses the study's own 20-400 (step 20). Each method runs with several
sampler seeds (the seed also sets the training seeds, as a study's seed does).

The score to reach is the best validation score random search found within the budget, median
over its seeds. For each method and seed the script prints the epochs needed to first reach it
(`-` if never), and the median over seeds; the target is TPE with pruning at most a third of
random search's median. It writes every trial to bench/results/search[-quick|-full].json and plots
the best-so-far score against cumulative epochs (median over seeds) to the matching .png. Each
finished search is also kept in bench/results/search-runs/, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
METHODS = ("tpe+pruning", "tpe", "random")
TARGET_RATIO = 1 / 3


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load_avg()}] {msg}", file=sys.stderr, flush=True)


def make_spec(method: str, seed: int, args: argparse.Namespace) -> Any:
    from hpo.study.parse import load_study_file
    from hpo.study.spec import Param
    from hpo.study.strategies import PrunerSpec, SamplerSpec

    spec = load_study_file(ROOT / "studies" / "noise_removal.toml")
    space = tuple(
        dataclasses.replace(p, low=args.epochs_low, high=args.epochs_high, step=args.epochs_step)
        if p.name == "epochs" else p for p in spec.space)
    assert isinstance(space[0], Param)
    sampler = spec.sampler if method.startswith("tpe") else SamplerSpec("random")
    pruner = spec.pruner if method == "tpe+pruning" else PrunerSpec("none")
    return dataclasses.replace(spec, name=f"bench-search-{method}-{seed}", seed=seed,
                               repeats=args.repeats, space=space, sampler=sampler,
                               pruner=pruner)


def run_search(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One search until its epoch budget is spent; returns every trial in order."""
    os.environ["HPO_ARTIFACTS"] = "none"  # no pictures or model files for benchmark trials
    import optuna

    from hpo.run.objective import run_trial
    from hpo.store.studies import make_pruner, make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = make_spec(method, seed, args)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(spec, seed),
                                pruner=make_pruner(spec))
    trials: list[dict[str, Any]] = []
    spent, start = 0, time.perf_counter()
    while spent < args.budget:
        trial = study.ask()
        out = run_trial(spec, trial, threads=1, host="bench", call=lambda fn, what, **_: fn())
        complete = out.state == optuna.trial.TrialState.COMPLETE
        study.tell(trial, out.values if complete else None, state=out.state)
        attrs = trial.user_attrs
        epochs = int(attrs["epochs_run"]) * (spec.repeats if complete else 1)
        spent += epochs
        trials.append({"number": trial.number, "params": trial.params,
                       "state": out.state.name.lower(), "epochs": epochs, "cumulative": spent,
                       "value": out.values[0] if complete and out.values else None})
    return {"method": method, "seed": seed, "trials": trials,
            "seconds": round(time.perf_counter() - start, 1)}


def cache_path(method: str, seed: int, args: argparse.Namespace) -> Path:
    """Where one finished search is kept, keyed by everything that shapes it (the study file
    too), so that an interrupted benchmark resumes instead of starting over (--fresh ignores
    the cache)."""
    study = hashlib.sha256((ROOT / "studies" / "noise_removal.toml").read_bytes()).hexdigest()
    key = (f"{method}-s{seed}-b{args.budget}-e{args.epochs_low}-{args.epochs_high}-"
           f"{args.epochs_step}-r{args.repeats}-{study[:8]}")
    return RESULTS / "search-runs" / f"{key}.json"


def _run(job: tuple[str, int, argparse.Namespace]) -> dict[str, Any]:
    method, seed, args = job
    cached = cache_path(method, seed, args)
    if cached.exists() and not args.fresh:
        r = json.loads(cached.read_text())
        log(f"{method} seed {seed}: from {cached.relative_to(ROOT)}")
        return r  # type: ignore[no-any-return]
    r = run_search(method, seed, args)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(r) + "\n")
    n_pruned = sum(t["state"] == "pruned" for t in r["trials"])
    best = max((t["value"] for t in r["trials"] if t["value"] is not None), default=math.nan)
    log(f"{method} seed {seed}: {len(r['trials'])} trials ({n_pruned} pruned), best "
        f"{best:.2f} %, {r['seconds']:.0f} s")
    return r


def best_so_far(trials: list[dict[str, Any]], budget: int) -> list[tuple[int, float]]:
    """(cumulative epochs, best value so far) after each complete trial within the budget."""
    out, best = [], -math.inf
    for t in trials:
        if t["cumulative"] > budget:
            break
        if t["value"] is not None and t["value"] > best:
            best = t["value"]
            out.append((t["cumulative"], best))
    return out


def epochs_to_reach(trials: list[dict[str, Any]], target: float, budget: int) -> int | None:
    for epochs, best in best_so_far(trials, budget):
        if best >= target:
            return epochs
    return None


def summarize(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    finals = {m: [max([b for _, b in best_so_far(r["trials"], args.budget)], default=math.nan)
                  for r in runs if r["method"] == m] for m in METHODS}
    target = statistics.median(finals["random"])
    rows: list[dict[str, Any]] = []
    for m in METHODS:
        mine = [r for r in runs if r["method"] == m]
        reach = [epochs_to_reach(r["trials"], target, args.budget) for r in mine]
        # A seed that never reaches the target counts as "more than the budget" in the median.
        as_num = [x if x is not None else math.inf for x in reach]
        rows.append({
            "method": m, "seeds": [r["seed"] for r in mine], "epochs_to_target": reach,
            "median_epochs": statistics.median(as_num),
            "reached": sum(x is not None for x in reach),
            "best": [round(b, 2) for b in finals[m]],
            "median_best": round(statistics.median(finals[m]), 2),
            "trials": [len(r["trials"]) for r in mine],
            "pruned": [sum(t["state"] == "pruned" for t in r["trials"]) for r in mine],
        })
    rand = rows[-1]["median_epochs"]
    for r in rows:
        r["ratio_to_random"] = (round(r["median_epochs"] / rand, 3)
                                if math.isfinite(r["median_epochs"]) and math.isfinite(rand)
                                else None)
    return {"target": round(target, 3), "rows": rows}


def print_report(summary: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n### Epochs to reach random search's best ({summary['target']:.2f} % removed, "
          f"median over {args.seeds} seeds of random search's best within {args.budget} "
          "epochs)\n")
    print("| method | median epochs | ratio to random | reached (of seeds) | epochs per seed "
          "| best % per seed | trials (pruned) per seed |")
    print("|---|---|---|---|---|---|---|")
    for r in summary["rows"]:
        med = r["median_epochs"]
        print(f"| {r['method']} | {med if math.isfinite(med) else '> budget'} | "
              f"{r['ratio_to_random'] if r['ratio_to_random'] is not None else '-'} | "
              f"{r['reached']}/{len(r['seeds'])} | "
              f"{', '.join('-' if x is None else str(x) for x in r['epochs_to_target'])} | "
              f"{', '.join(f'{b:.2f}' for b in r['best'])} | "
              f"{', '.join(f'{n} ({p})' for n, p in zip(r['trials'], r['pruned'], strict=True))}"
              " |")
    tp = summary["rows"][0]["ratio_to_random"]
    verdict = ("met" if tp is not None and tp <= TARGET_RATIO else "missed")
    print(f"\nTPE with pruning / random search: {tp if tp is not None else 'n/a'} "
          f"(target <= {TARGET_RATIO:.2f}: {verdict})")


def plot(runs: list[dict[str, Any]], summary: dict[str, Any], args: argparse.Namespace,
         path: Path) -> None:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)  # before a first result
    import matplotlib.pyplot as plt

    grid = np.linspace(0, args.budget, 400)
    fig, ax = plt.subplots(figsize=(8, 5))
    for m, color in zip(METHODS, ("tab:blue", "tab:orange", "tab:gray"), strict=True):
        curves = []
        for r in (r for r in runs if r["method"] == m):
            pts = best_so_far(r["trials"], args.budget)
            xs = np.array([p[0] for p in pts])
            ys = np.array([p[1] for p in pts])
            idx = np.searchsorted(xs, grid, side="right") - 1
            curves.append(np.where(idx >= 0, ys[np.clip(idx, 0, None)] if len(ys) else np.nan,
                                   np.nan))
        c = np.array(curves, dtype=float)
        # The median exists once more than half of the seeds have a complete trial.
        enough = np.sum(~np.isnan(c), axis=0) > len(c) / 2
        med = np.where(enough, np.nanmedian(np.where(np.isnan(c), -np.inf, c), axis=0), np.nan)
        ax.plot(grid, med, label=f"{m} (median of {len(c)} seeds)", color=color)
        ax.fill_between(grid, np.nanmin(c, axis=0), np.nanmax(c, axis=0), color=color,
                        alpha=0.12, linewidth=0)
    ax.axhline(summary["target"], color="black", linestyle=":", linewidth=1,
               label=f"random search's best (median) {summary['target']:.2f} %")
    ax.set_xlabel("cumulative epochs trained")
    ax.set_ylabel("best validation % of noise removed so far")
    ax.set_title(f"Search efficiency at equal compute (epochs {args.epochs_low}-"
                 f"{args.epochs_high}); band: min-max over seeds")
    lo = np.nanmin([b for r in summary["rows"] for b in r["best"]]) - 6
    ax.set_ylim(lo, None)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def calibrate() -> tuple[float, float]:
    """(wall, CPU) seconds per epoch of an H=40 model here and now (5 epochs after a warm-up).
    CPU seconds are what an idle core would take; wall seconds what this machine takes now."""
    from hpo.task.config import TrainConfig
    from hpo.task.curves import DataConfig, make_split
    from hpo.task.train import train

    data = DataConfig()
    tr, va = make_split(data, "train"), make_split(data, "val")
    train(TrainConfig(epochs=1), tr, va)
    cpu = time.process_time()
    res = train(TrainConfig(epochs=5), tr, va)
    return res.seconds / 5, (time.process_time() - cpu) / 5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="epochs 5-20, 2 seeds, 150 epochs each: a check that it works")
    mode.add_argument("--full", action="store_true",
                      help="the study's own epochs range (20-400, step 20)")
    ap.add_argument("--seeds", type=int, help="sampler seeds per method (default 5)")
    ap.add_argument("--budget", type=int, help="epochs per search (default 2000; --full 8000)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="training seeds per trial (the study file has 2; 1 halves the cost)")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1,
                    help="searches run in parallel, one torch thread each")
    ap.add_argument("--estimate", action="store_true", help="print the runtime estimate, stop")
    ap.add_argument("--fresh", action="store_true",
                    help="rerun every search, ignoring bench/results/search-runs/")
    args = ap.parse_args()
    if args.quick:
        args.epochs_low, args.epochs_high, args.epochs_step = 5, 20, 5
        args.seeds, args.budget = args.seeds or 2, args.budget or 150
    elif args.full:
        args.epochs_low, args.epochs_high, args.epochs_step = 20, 400, 20
        args.seeds, args.budget = args.seeds or 5, args.budget or 8000
    else:
        args.epochs_low, args.epochs_high, args.epochs_step = 10, 100, 10
        args.seeds, args.budget = args.seeds or 5, args.budget or 2000
    suffix = "-quick" if args.quick else "-full" if args.full else ""

    per_epoch, cpu_per_epoch = calibrate()
    # Hidden sizes are drawn log-uniformly over 8-128, whose mean cost is close to H=40's; the
    # last trial of a search may overrun the budget by up to one trial.
    total = len(METHODS) * args.seeds * (args.budget + args.epochs_high)
    lanes = max(1, min(args.procs, len(METHODS) * args.seeds))
    log(f"{len(METHODS)} methods x {args.seeds} seeds x {args.budget} epochs = {total} epochs; "
        f"H=40 takes {per_epoch:.3f} s/epoch now ({cpu_per_epoch:.3f} s of CPU): about "
        f"{total * per_epoch / lanes / 60:.0f} min on {lanes} process(es) at this load, "
        f"{total * cpu_per_epoch / lanes / 60:.0f} min on {lanes} idle cores")
    if args.estimate:
        return

    load_start = load_avg()
    jobs = [(m, s, args) for s in range(args.seeds) for m in METHODS]
    start = time.perf_counter()
    if args.procs > 1:
        with multiprocessing.get_context("spawn").Pool(args.procs, maxtasksperchild=1) as pool:
            runs = pool.map(_run, jobs, chunksize=1)
    else:
        runs = [_run(j) for j in jobs]
    wall = time.perf_counter() - start
    summary = summarize(runs, args)
    print_report(summary, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    png, js = RESULTS / f"search{suffix}.png", RESULTS / f"search{suffix}.json"
    plot(runs, summary, args, png)
    meta = {"command": " ".join(["python", *sys.argv]), "epochs_range": [
        args.epochs_low, args.epochs_high, args.epochs_step], "budget": args.budget,
        "seeds": args.seeds, "repeats": args.repeats, "wall_seconds": round(wall),
        "seconds_per_epoch_h40": round(per_epoch, 4),
        "cpu_seconds_per_epoch_h40": round(cpu_per_epoch, 4), "load_start": load_start,
        "load_end": load_avg(), "cpu": cpu_model(), "cores": os.cpu_count()}
    js.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}) + "\n")
    print(f"\nwrote {png.relative_to(ROOT)} and {js.relative_to(ROOT)}; {wall / 60:.1f} min; "
          f"load averages (1, 5, 15 min): start {load_start}, end {meta['load_end']}; "
          f"{meta['cores']} cores, {meta['cpu']}")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
