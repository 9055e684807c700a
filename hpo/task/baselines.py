"""Classical denoisers on the study's own curves: the numbers an LSTM has to beat.

Two baselines, each tuned on the validation split and reported on the held-out test split, the
same way a search chooses trials: the best Savitzky-Golay filter (window and polynomial order)
and the best least-squares polynomial fit of the whole curve (degree). Both are linear maps of
the noisy curve, so a whole split is denoised in one call. Tuning both takes about half a second
of CPU plus half a second to import scipy.signal; every new study asks (its note quotes them), so
results are cached per data protocol, in the process and in a small JSON file under the user's
cache directory, and scipy (signal, linalg) is imported only on a cache miss.

A file study's baselines run on its own validation and test signals, on their original scale
(both methods are linear and keep constants, so per-signal normalization would not change them);
they are cached by the file's sha256, not its path.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpo import env
from hpo.task.curves import DataConfig, Split, make_split
from hpo.task.metric import percent_removed
from hpo.task.source import Source, model_split

# Orders above ~12 only add ill-conditioned fits at the curve ends (scipy warns); the best
# filters on this data sit at orders 4-9 anyway.
MAX_ORDER = 12
MAX_DEGREE = 30
# Part of the cache key: bump it whenever the search grids or the methods change.
METHOD_VERSION = 1


@dataclass(frozen=True)
class Baseline:
    method: str  # "savitzky_golay" or "polynomial"
    setting: dict[str, int]  # window/order, or degree: what the validation split chose
    val_removed: float
    test_removed: float

    def describe(self) -> str:
        if self.method == "savitzky_golay":
            return f"Savitzky-Golay, window {self.setting['window']}, order {self.setting['order']}"
        return f"polynomial least squares, degree {self.setting['degree']}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def savgol(noisy: np.ndarray, window: int, order: int) -> np.ndarray:
    """Smooths each row; the ends are fitted by the window's polynomial (scipy's 'interp')."""
    from scipy.signal import savgol_filter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.RankWarning)
        return savgol_filter(np.asarray(noisy, dtype=np.float64), window, order, axis=-1)


def polyfit(noisy: np.ndarray, degree: int) -> np.ndarray:
    """Least-squares polynomial of each row. A Legendre basis on [-1, 1] keeps degree 20+ well
    conditioned where a plain Vandermonde matrix on [0, 5] would not be."""
    noisy = np.asarray(noisy, dtype=np.float64)
    import scipy.linalg  # half a second of import, paid only on a cache miss

    basis = np.polynomial.legendre.legvander(np.linspace(-1.0, 1.0, noisy.shape[-1]), degree)
    coef, *_ = scipy.linalg.lstsq(basis, noisy.T)
    return np.asarray((basis @ coef).T)


def savgol_grid(length: int) -> list[tuple[int, int]]:
    """Every odd window that fits the curve, with every order below it (up to MAX_ORDER)."""
    return [(w, o) for w in range(3, length + 1, 2) for o in range(min(w, MAX_ORDER + 1))]


def poly_grid(length: int) -> list[int]:
    return list(range(min(length - 1, MAX_DEGREE) + 1))


def best_savgol(val: Split) -> tuple[dict[str, int], float]:
    """The first (smallest) window/order of the highest validation score."""
    best: tuple[float, int, int] = (-1.0, 0, 0)
    for w, o in savgol_grid(val.noisy.shape[-1]):
        score = percent_removed(val.clean, val.noisy, savgol(val.noisy, w, o))
        if score > best[0]:
            best = (score, w, o)
    return {"window": best[1], "order": best[2]}, best[0]


def best_poly(val: Split) -> tuple[dict[str, int], float]:
    best: tuple[float, int] = (-1.0, 0)
    for d in poly_grid(val.noisy.shape[-1]):
        score = percent_removed(val.clean, val.noisy, polyfit(val.noisy, d))
        if score > best[0]:
            best = (score, d)
    return {"degree": best[1]}, best[0]


def baselines_for(val: Split, test: Split) -> tuple[Baseline, ...]:
    sg, sg_val = best_savgol(val)
    poly, poly_val = best_poly(val)
    return (
        Baseline("savitzky_golay", sg, round(sg_val, 4), round(percent_removed(
            test.clean, test.noisy, savgol(test.noisy, sg["window"], sg["order"])), 4)),
        Baseline("polynomial", poly, round(poly_val, 4), round(percent_removed(
            test.clean, test.noisy, polyfit(test.noisy, poly["degree"])), 4)),
    )


def data_key(cfg: DataConfig) -> DataConfig:
    """The training curves (their count, fixed or fresh) do not change validation or test curves
    (each split has its own random stream), so studies that differ only in them share one cache
    entry."""
    return DataConfig(**{**asdict(cfg), "n_train": 0, "fresh": False})


def cache_dir() -> Path:
    return env.cache_dir()


def _key(source: Source) -> str:
    """What the baselines depend on. A file's validation and test signals are fixed by its bytes,
    the data seed, the drawn noise and the two split sizes (training signals come last)."""
    if isinstance(source, DataConfig):
        data = asdict(data_key(source))
        data.pop("fresh")  # the key of the studies created before fresh curves existed
        return json.dumps({"data": data, "version": METHOD_VERSION}, sort_keys=True)
    _, val, test = source.sizes()
    return json.dumps({"file": {
        "sha256": source.sha256, "noisy_sha256": source.noisy_sha256, "shape": list(source.shape),
        "seed": source.seed, "noise_ratio": None if source.noisy_path else source.noise_ratio,
        "val": val, "test": test}, "version": METHOD_VERSION}, sort_keys=True)


def _cache_file(key: str) -> Path:
    return cache_dir() / f"baselines-{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"


def _read_cache(path: Path) -> tuple[Baseline, ...] | None:
    try:
        return tuple(Baseline(**d) for d in json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None  # missing or damaged: recompute (and rewrite) it


def _write_cache(path: Path, bs: tuple[Baseline, ...]) -> None:
    # A cache is an optimisation: a read-only home must never stop a study from being created.
    # Writing a temporary file and renaming it keeps concurrent creators from reading halves.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps([b.to_dict() for b in bs]))
        tmp.replace(path)
    except OSError:
        pass


def _val_test(source: Source) -> tuple[Split, Split]:
    if isinstance(source, DataConfig):
        return make_split(source, "val"), make_split(source, "test")
    return model_split(source, "val").raw, model_split(source, "test").raw


@functools.lru_cache(maxsize=16)
def _cached(key: str, source: Source) -> tuple[Baseline, ...]:
    path = _cache_file(key)
    found = _read_cache(path)
    if found is not None:
        return found
    bs = baselines_for(*_val_test(source))
    _write_cache(path, bs)
    return bs


def compute_baselines(source: Source, *, use_cache: bool = True) -> tuple[Baseline, ...]:
    """Both baselines for a data protocol or a data file: chosen on its validation signals,
    scored on its test signals."""
    if not use_cache:
        return baselines_for(*_val_test(source))
    key = _key(source)
    return _cached(key, data_key(source) if isinstance(source, DataConfig) else source)
