"""Writes studies/data/co2_weekly.npy: real signals for a file study, from a package, offline.

The series is the Mauna Loa weekly atmospheric CO2 record (ppm, March 1958 to December 2001,
2,284 weeks, 59 of them missing) that statsmodels ships as `statsmodels.datasets.co2`
(`pip install -e '.[examples]'`). It is cut into windows of 80 weeks, one every 4 weeks:

* 80 points is the protocol's curve length, so the searched spaces (shift up to 16, the LSTM's
  sizes) mean the same on this file as on the synthetic curves; 80 weeks (about 1.5 years) hold
  one and a half seasonal cycles on top of the trend, so every window is a curve with real shape
  rather than a line or a fragment of one cycle.
* A 4-week stride gives 403 windows (129 KB as float32): with the default 0.6/0.2/0.2 fractions,
  243/80/80 signals, about the protocol's 200 training and 50 validation curves.
* A window that touches a missing week is dropped, not spliced across the gap: every window is
  80 consecutive weeks.

Neighbouring windows overlap (76 of 80 weeks), so after the row shuffle a test window's clean
shape is mostly also in some training windows; the noise added to each split is independent.
The record is itself rough from week to week (about 0.3 ppm against the 0.4 ppm of noise that
noise_ratio 0.05 adds to a typical 8 ppm window), and the metric scores against it, so smoothing
is penalised: hpo's classical baselines remove only about 20 % of the added noise here.

    python studies/data/make_co2.py [--baselines]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

LENGTH = 80  # points per signal: the protocol's curve length
STRIDE = 4  # weeks between window starts
OUT = Path(__file__).with_name("co2_weekly.npy")


def weekly_co2() -> np.ndarray:
    try:
        from statsmodels.datasets import co2
    except ImportError as e:
        raise SystemExit("statsmodels is not installed: pip install -e '.[examples]'") from e
    return np.asarray(co2.load_pandas().data["co2"], dtype=np.float64)


def windows(series: np.ndarray, length: int = LENGTH, stride: int = STRIDE) -> np.ndarray:
    """Every length-point window starting at a multiple of stride that has no missing value."""
    starts = [s for s in range(0, len(series) - length + 1, stride)
              if np.isfinite(series[s:s + length]).all()]
    return np.stack([series[s:s + length] for s in starts]).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--baselines", action="store_true",
                    help="also score hpo's classical baselines on the file (seed 0, noise 0.05)")
    args = ap.parse_args()
    x = windows(weekly_co2())
    np.save(args.out, x)
    print(f"{args.out}: {x.shape[0]} signals of {x.shape[1]} weeks, "
          f"{args.out.stat().st_size} bytes, {x.min():.1f}-{x.max():.1f} ppm")
    if args.baselines:
        from hpo.baselines import baselines_for
        from hpo.datafile import make_file_splits

        sp = make_file_splits(x, seed=0, noise_ratio=0.05)
        print("splits: " + ", ".join(f"{k} {len(v)}" for k, v in sp.items()))
        for b in baselines_for(sp["val"], sp["test"]):
            print(f"{b.describe()}: validation {b.val_removed:.2f} %, test {b.test_removed:.2f} %")


if __name__ == "__main__":
    main()
