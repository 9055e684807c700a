"""Fixed against fresh training curves at equal compute, side by side (issue 15).

    python bench/fresh.py [--hidden 64] [--shift 16] [--epochs 40] [--train 2000] [--seeds 2]
                          [--lr 0.01] [--batch 20] [--json]

Each seed trains the same configuration twice, through the path `hpo train` takes
(hpo.task.fit.train_and_test): once on the fixed `--train` curves every epoch (the exercise's
way), once with `fresh` curves (a new set of `--train` curves every epoch after the first). Both
see the same number of curves per epoch, so the compute is equal; both are scored on the same
1,000 held-out test curves. Printed: test % per seed and mode, the means, and the difference.
One torch thread per run, runs one after the other.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from hpo.task.config import TrainConfig
from hpo.task.curves import DataConfig
from hpo.task.fit import train_and_test


def run(hidden: int, shift: int, epochs: int, n_train: int, lr: float, batch: int, seed: int,
        fresh: bool) -> dict[str, Any]:
    cfg = TrainConfig(hidden_size=hidden, shift=shift, epochs=epochs, lr=lr, batch_size=batch,
                      seed=seed, threads=1)
    data = DataConfig(seed=0, n_train=n_train, n_val=50, n_test=1000, fresh=fresh)
    start = time.process_time()
    result, test = train_and_test(cfg, data)
    return {"seed": seed, "fresh": fresh, "val": round(result.val_removed, 3),
            "test": round(test, 3), "cpu_seconds": round(time.process_time() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--shift", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = []
    for seed in range(a.seeds):
        for fresh in (False, True):  # alternating, so a burst of load hits both modes alike
            rows.append(run(a.hidden, a.shift, a.epochs, a.train, a.lr, a.batch, seed, fresh))
            if not a.json:
                r = rows[-1]
                print(f"seed {seed} {'fresh' if fresh else 'fixed'}: test {r['test']:.2f} %, "
                      f"val {r['val']:.2f} %, {r['cpu_seconds']:.0f} s CPU", flush=True)
    mean = {mode: statistics.mean(r["test"] for r in rows if r["fresh"] == mode)
            for mode in (False, True)}
    summary = {"config": vars(a), "runs": rows, "fixed_test_mean": round(mean[False], 3),
               "fresh_test_mean": round(mean[True], 3),
               "fresh_minus_fixed": round(mean[True] - mean[False], 3)}
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"H{a.hidden} S{a.shift}, {a.epochs} epochs of {a.train} curves, {a.seeds} seed(s): "
              f"fixed {mean[False]:.2f} %, fresh {mean[True]:.2f} % "
              f"(fresh - fixed = {mean[True] - mean[False]:+.2f} points) on 1,000 test curves")


if __name__ == "__main__":
    main()
