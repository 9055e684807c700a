"""Noisy sums of sines: the data of the exercise (see docs/protocol.md).

Every curve is a sum of K ~ U{1..max_sines} sines a*sin(pi*f*x + o) on linspace(0, x_max,
length), plus Gaussian noise whose standard deviation is noise_ratio * (max - min) of that clean
curve. Each split draws from its own child stream of one SeedSequence, so the same data seed gives
bit-identical curves in any process, and growing one split never changes another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpo.task.config import ConfigValueError, check_fields

SPLITS = ("train", "val", "test")
# The protocol's noise: std = NOISE_RATIO x (max - min) of each clean curve (docs/protocol.md).
NOISE_RATIO = 0.05


@dataclass(frozen=True)
class DataConfig:
    seed: int = 0  # the data seed; one seed, one fixed set of curves for a whole study
    n_train: int = 200  # the exercise's training curves
    n_val: int = 50  # the exercise's validation curves: what a search optimizes
    n_test: int = 1000  # held-out curves no search sees: what final numbers are quoted on
    length: int = 80  # points per curve
    x_max: float = 5.0  # curves are sampled on linspace(0, x_max, length)
    noise_ratio: float = NOISE_RATIO  # noise std as a fraction of the clean curve's peak-to-peak
    max_sines: int = 3  # K is drawn uniformly from 1..max_sines
    amp_max: float = 2.0  # amplitude ~ U(0, amp_max)
    freq_min: float = 0.1  # frequency ~ U(freq_min, freq_max)
    freq_max: float = 1.0
    # Fresh curves: a new training set every epoch (epoch e's drawn from the data seed and e,
    # so a replay reproduces it). More curve presentations at the same compute; validation and
    # test stay fixed. Off: the exercise's one fixed training set.
    fresh: bool = False

    # (lowest, highest, lowest allowed): sanity limits; memory is checked by hpo.resources.
    RULES = {
        "seed": (0, 2**63 - 1, True), "n_train": (0, 10**12, True), "n_val": (1, 10**12, True),
        "n_test": (1, 10**12, True), "length": (2, 10**9, True), "x_max": (0.0, 1e12, False),
        "noise_ratio": (0.0, 10.0, True), "max_sines": (1, 1000, True),
        "amp_max": (0.0, 1e12, True), "freq_min": (0.0, 1e6, True), "freq_max": (0.0, 1e6, True),
    }

    def __post_init__(self) -> None:
        check_fields(self, self.RULES)  # seeds >= 0: numpy's SeedSequence refuses negatives
        if not isinstance(self.fresh, bool):
            raise ConfigValueError("fresh", f"must be true or false, got {self.fresh!r}")

    def count(self, split: str) -> int:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]


@dataclass(frozen=True)
class Split:
    clean: np.ndarray  # (n, length) float32
    noisy: np.ndarray  # (n, length) float32
    n_sines: np.ndarray  # (n,) int: K of each curve, kept for tests and analysis

    def __len__(self) -> int:
        return len(self.clean)


def x_grid(cfg: DataConfig) -> np.ndarray:
    return np.linspace(0.0, cfg.x_max, cfg.length)


def make_curves(cfg: DataConfig, n: int, rng: np.random.Generator) -> Split:
    """Draws n clean curves and their noisy copies from rng."""
    x = x_grid(cfg)
    k = rng.integers(1, cfg.max_sines + 1, size=n)
    # Draw parameters for max_sines terms and mask the unused ones, so the number of random
    # draws per curve is fixed and vectorised generation stays reproducible.
    shape = (n, cfg.max_sines)
    amp = rng.uniform(0.0, cfg.amp_max, size=shape)
    freq = rng.uniform(cfg.freq_min, cfg.freq_max, size=shape)
    phase = rng.uniform(-np.pi, np.pi, size=shape)
    used = np.arange(cfg.max_sines)[None, :] < k[:, None]
    terms = amp[..., None] * np.sin(np.pi * freq[..., None] * x + phase[..., None])
    clean = (terms * used[..., None]).sum(axis=1)
    std = cfg.noise_ratio * (clean.max(axis=1) - clean.min(axis=1))
    noisy = clean + rng.standard_normal(clean.shape) * std[:, None]
    return Split(clean.astype(np.float32), noisy.astype(np.float32), k)


def make_split(cfg: DataConfig, split: str) -> Split:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    child = np.random.SeedSequence([cfg.seed, SPLITS.index(split)])
    return make_curves(cfg, cfg.count(split), np.random.default_rng(child))


def epoch_train_split(cfg: DataConfig, epoch: int) -> Split:
    """The training curves of epoch `epoch` (1-based): with `fresh`, epoch 1 trains on the
    train split and each later epoch on n_train new curves from its own stream of the data
    seed (disjoint from the three splits' streams); without, always the train split."""
    if not cfg.fresh or epoch <= 1:
        return make_split(cfg, "train")
    child = np.random.SeedSequence([cfg.seed, len(SPLITS), epoch])
    return make_curves(cfg, cfg.n_train, np.random.default_rng(child))


def make_splits(cfg: DataConfig) -> dict[str, Split]:
    return {name: make_split(cfg, name) for name in SPLITS}
