"""The curves: reproducible from one seed, disjoint splits, and the protocol's distributions."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from hpo.task.config import ConfigValueError
from hpo.task.curves import (
    SPLITS,
    DataConfig,
    Split,
    epoch_train_split,
    make_curves,
    make_split,
    make_splits,
    x_grid,
)

SMALL = DataConfig(seed=7, n_train=30, n_val=20, n_test=40)


def digest(splits: dict[str, Split]) -> str:
    h = hashlib.sha256()
    for name in SPLITS:
        s = splits[name]
        for a in (s.clean, s.noisy, s.n_sines.astype(np.int64)):
            h.update(str(a.dtype).encode() + str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def assert_same_split(a: Split, b: Split) -> None:
    np.testing.assert_array_equal(a.clean, b.clean)
    np.testing.assert_array_equal(a.noisy, b.noisy)
    np.testing.assert_array_equal(a.n_sines, b.n_sines)


# --- shapes and defaults -------------------------------------------------------------------


def test_defaults_are_the_protocol() -> None:
    cfg = DataConfig()
    assert (cfg.n_train, cfg.n_val, cfg.length, cfg.x_max) == (200, 50, 80, 5.0)
    assert (cfg.noise_ratio, cfg.max_sines, cfg.amp_max) == (0.05, 3, 2.0)
    assert (cfg.freq_min, cfg.freq_max) == (0.1, 1.0)
    np.testing.assert_array_equal(x_grid(cfg), np.linspace(0, 5, 80))


def test_split_shapes_and_dtypes() -> None:
    splits = make_splits(SMALL)
    for name, n in (("train", 30), ("val", 20), ("test", 40)):
        s = splits[name]
        assert len(s) == n
        assert s.clean.shape == s.noisy.shape == (n, 80)
        assert s.clean.dtype == s.noisy.dtype == np.float32
        assert s.n_sines.shape == (n,)
        assert np.isfinite(s.clean).all() and np.isfinite(s.noisy).all()


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="split"):
        make_split(SMALL, "validation")


# --- reproducibility ---------------------------------------------------------------------------


def test_same_seed_gives_bit_identical_arrays() -> None:
    a, b = make_splits(SMALL), make_splits(SMALL)
    for name in SPLITS:
        assert_same_split(a[name], b[name])
    assert digest(a) == digest(b)


def test_same_seed_gives_bit_identical_arrays_in_another_process() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from tests.task.test_curves import SMALL, digest; "
        "from hpo.task.curves import make_splits; "
        "print(digest(make_splits(SMALL)))"
    )
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run(
        [sys.executable, "-c", code, root],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == digest(make_splits(SMALL))


def test_different_seeds_differ() -> None:
    a, b = make_splits(SMALL), make_splits(replace(SMALL, seed=8))
    for name in SPLITS:
        assert not np.array_equal(a[name].clean, b[name].clean)
        assert not np.array_equal(a[name].noisy, b[name].noisy)
    assert digest(a) != digest(b)


def test_splits_never_share_a_curve() -> None:
    splits = make_splits(DataConfig(seed=3, n_train=200, n_val=50, n_test=1000))
    seen: dict[bytes, str] = {}
    for name in SPLITS:
        for row in splits[name].clean:
            key = row.tobytes()
            assert key not in seen, f"a {name} curve repeats a {seen.get(key)} curve"
            seen[key] = name
    assert len(seen) == 1250


def test_growing_one_split_does_not_change_the_others() -> None:
    base = make_splits(SMALL)
    grown = make_splits(replace(SMALL, n_test=500))
    assert_same_split(base["train"], grown["train"])
    assert_same_split(base["val"], grown["val"])
    assert len(grown["test"]) == 500
    more_train = make_splits(replace(SMALL, n_train=100))
    assert_same_split(base["val"], more_train["val"])
    assert_same_split(base["test"], more_train["test"])


def test_make_curves_depends_only_on_its_generator() -> None:
    a = make_curves(SMALL, 25, np.random.default_rng(99))
    b = make_curves(SMALL, 25, np.random.default_rng(99))
    c = make_curves(SMALL, 25, np.random.default_rng(100))
    assert_same_split(a, b)
    assert not np.array_equal(a.clean, c.clean)


# --- distributions -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many() -> Split:
    return make_curves(DataConfig(), 3000, np.random.default_rng(2024))


def test_every_k_in_1_2_3_occurs_about_equally(many: Split) -> None:
    values, counts = np.unique(many.n_sines, return_counts=True)
    assert values.tolist() == [1, 2, 3]
    # 3000 draws of U{1,2,3}: each count is 1000 +- 26 (one sd); allow about 4 sd.
    assert np.all(np.abs(counts - 1000) < 110), counts


def test_clean_curves_are_bounded_by_the_sum_of_amplitudes(many: Split) -> None:
    peak = np.abs(many.clean).max(axis=1)
    assert np.all(peak <= 2.0 * many.n_sines + 1e-5)
    # Bound is reachable in spirit: some single sines get close to amplitude 2.
    assert peak[many.n_sines == 1].max() > 1.9
    assert peak[many.n_sines == 3].max() > 4.0


def _fit_one_sine(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Best a*sin(pi*f*x + o) for one curve: (f, a, o, residual sum of squares).

    For a fixed f the model is linear in (a cos o, a sin o); search f on a grid, then refine.
    """

    def rss(f: float) -> tuple[float, np.ndarray]:
        basis = np.stack([np.sin(np.pi * f * x), np.cos(np.pi * f * x)], axis=1)
        coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
        return float(np.sum((basis @ coef - y) ** 2)), coef

    grid = np.linspace(0.02, 2.0, 496)
    best = int(np.argmin([rss(f)[0] for f in grid]))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    f = float(minimize_scalar(lambda f: rss(f)[0], bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-10}).x)
    r, (c_sin, c_cos) = rss(f)
    return f, float(np.hypot(c_sin, c_cos)), float(np.arctan2(c_cos, c_sin)), r


def test_single_sines_have_the_protocol_parameter_ranges() -> None:
    cfg = DataConfig()
    split = make_curves(cfg, 450, np.random.default_rng(11))
    x = x_grid(cfg)
    ones = split.clean[split.n_sines == 1].astype(np.float64)
    assert len(ones) > 100
    fits = np.array([_fit_one_sine(x, y) for y in ones])
    f, a, o, r = fits.T
    # Each K=1 clean curve is exactly one sine of the form a*sin(pi*f*x + o) on the grid...
    assert np.all(r <= 1e-9 * np.maximum(1.0, np.sum(ones**2, axis=1)))
    # ...with f in [0.1, 1], a in [0, 2] and o anywhere in (-pi, pi].
    assert f.min() >= 0.1 - 1e-6 and f.max() <= 1.0 + 1e-6
    assert a.min() >= 0 and a.max() <= 2.0 + 1e-5
    # The ranges are covered uniformly, not just respected.
    assert f.min() < 0.15 and f.max() > 0.95
    assert a.min() < 0.1 and a.max() > 1.9
    assert o.min() < -2.8 and o.max() > 2.8
    assert abs(f.mean() - 0.55) < 0.08
    assert abs(a.mean() - 1.0) < 0.2
    assert abs(o.mean()) < 0.6


def test_noise_std_is_five_percent_of_peak_to_peak(many: Split) -> None:
    clean = many.clean.astype(np.float64)
    ptp = clean.max(axis=1) - clean.min(axis=1)
    z = (many.noisy - clean) / ptp[:, None]  # should be N(0, 0.05^2) at every point
    # 240,000 points: the sample sd of sd is 0.05/sqrt(2*240000) ~ 7e-5.
    assert z.std() == pytest.approx(0.05, rel=0.01)
    assert abs(z.mean()) < 1e-3
    # Gaussian: about 68.3 % within one sd, 95.4 % within two.
    assert np.mean(np.abs(z) < 0.05) == pytest.approx(0.683, abs=0.01)
    assert np.mean(np.abs(z) < 0.10) == pytest.approx(0.954, abs=0.005)
    # The scale follows each curve's own peak-to-peak, for flat and tall curves alike.
    flat, tall = ptp < np.quantile(ptp, 0.25), ptp > np.quantile(ptp, 0.75)
    assert z[flat].std() == pytest.approx(0.05, rel=0.03)
    assert z[tall].std() == pytest.approx(0.05, rel=0.03)
    raw = many.noisy - clean
    assert raw[tall].std() > 2 * raw[flat].std()


def test_noise_is_independent_across_points_and_curves(many: Split) -> None:
    clean = many.clean.astype(np.float64)
    z = (many.noisy - clean) / (clean.max(axis=1) - clean.min(axis=1))[:, None]
    lag1 = np.corrcoef(z[:, :-1].ravel(), z[:, 1:].ravel())[0, 1]
    across = np.corrcoef(z[:-1].ravel(), z[1:].ravel())[0, 1]
    assert abs(lag1) < 0.02 and abs(across) < 0.02


def test_noise_ratio_option_scales_the_noise() -> None:
    quiet = make_split(replace(SMALL, noise_ratio=0.0, n_train=10), "train")
    np.testing.assert_array_equal(quiet.noisy, quiet.clean)
    loud = make_split(replace(SMALL, noise_ratio=0.2, n_train=500), "train")
    clean = loud.clean.astype(np.float64)
    z = (loud.noisy - clean) / (clean.max(axis=1) - clean.min(axis=1))[:, None]
    assert z.std() == pytest.approx(0.2, rel=0.02)


# --- fresh curves (a new training set every epoch) ---------------------------------------------


def test_fresh_epochs_are_deterministic_distinct_and_apart_from_val_and_test() -> None:
    cfg = DataConfig(seed=3, n_train=20, n_val=10, n_test=10, fresh=True)
    first, second, third = (epoch_train_split(cfg, e) for e in (1, 2, 3))
    np.testing.assert_array_equal(first.noisy, make_split(cfg, "train").noisy)  # epoch 1: train
    np.testing.assert_array_equal(second.clean, epoch_train_split(cfg, 2).clean)  # replayable
    assert second.clean.shape == first.clean.shape
    assert not np.array_equal(second.clean, first.clean)
    assert not np.array_equal(third.clean, second.clean)
    held_out = np.concatenate([make_split(cfg, "val").clean, make_split(cfg, "test").clean])
    drawn = np.concatenate([second.clean, third.clean])
    assert not (drawn[:, None, :] == held_out[None, :, :]).all(axis=2).any()


def test_without_fresh_every_epoch_trains_on_the_train_split() -> None:
    cfg = DataConfig(seed=3, n_train=20)
    np.testing.assert_array_equal(epoch_train_split(cfg, 7).noisy, make_split(cfg, "train").noisy)


def test_fresh_must_be_a_boolean() -> None:
    with pytest.raises(ConfigValueError, match="fresh"):
        DataConfig(fresh=1)  # type: ignore[arg-type]
