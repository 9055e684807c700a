"""Per-signal normalization: each signal shifted and scaled by its own noisy input's mean and
standard deviation, the only statistics a denoiser has at use time.

A `normalize = true` study trains its model on signals in these units (clean and noisy alike,
both mapped by the noisy input's statistics) and maps every output back before it is scored, so
the protocol's metric is always computed on the original scale. `hpo denoise` fits the same map
on the signals it is given.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# A constant signal has std 0: scale it by a tiny fraction of its level instead (it maps to 0).
SCALE_FLOOR = 1e-6


class Scale(NamedTuple):
    """Per-signal affine map fitted on the noisy input only: all a denoiser sees at use time."""

    offset: np.ndarray  # (n, 1) mean of each noisy signal
    scale: np.ndarray  # (n, 1) its standard deviation, floored for constant signals

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.asarray((np.asarray(x, np.float64) - self.offset) / self.scale, np.float32)

    def undo(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(np.asarray(y, np.float64) * self.scale + self.offset, np.float32)


def fit_scale(noisy: np.ndarray) -> Scale:
    x = np.asarray(noisy, np.float64)
    offset = x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True)
    return Scale(offset, np.maximum(std, SCALE_FLOOR * np.maximum(np.abs(offset), 1.0)))
