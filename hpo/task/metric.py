"""The protocol's score: percent of noise removed (docs/protocol.md), and its mean over seeds.
Every score hpo reports, of a trial, a baseline or a retraining, is computed here."""

from __future__ import annotations

import math

import numpy as np


def percent_removed(clean: np.ndarray, noisy: np.ndarray, output: np.ndarray) -> float:
    """100 * (1 - sum|clean - output| / sum|clean - noisy|), floored at 0.

    Sums run over every point of every curve. With no noise at all (denominator 0) a perfect
    output scores 100 and anything else 0.
    """
    clean, noisy, output = (np.asarray(a, dtype=np.float64) for a in (clean, noisy, output))
    if not clean.shape == noisy.shape == output.shape:
        raise ValueError(f"shapes differ: {clean.shape}, {noisy.shape}, {output.shape}")
    noise = np.abs(clean - noisy).sum()
    error = np.abs(clean - output).sum()
    if noise == 0:
        return 100.0 if error == 0 else 0.0
    return float(max(0.0, 100.0 * (1.0 - error / noise)))


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) of scores over seeds."""
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, s
