"""Study data from the user's own files: clean signals, one per row, in a .npy or a .csv.

A file study replaces the synthetic sines of hpo.task.curves with the rows of a file. The rows
are shuffled once by the data seed and cut into test, validation and training signals (in that
order, so growing the training split never moves a validation or test signal). Their noisy
inputs are either the rows of a second file, paired row by row, or the protocol's noise: Gaussian,
std = noise_ratio * peak-to-peak of each clean signal, drawn from a stream of its own per split.
A study records the files' sha256 (FileData) so that no worker ever trains on a changed file.
The files themselves are read by hpo.task.signals.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from hpo import resources
from hpo.errors import InputFileError
from hpo.task.curves import NOISE_RATIO, SPLITS, Split
from hpo.task.normalize import Scale, fit_scale
from hpo.task.signals import file_digest, file_label, load_signals_file, read_shape

DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)  # train/val/test shares when no counts are given
# SeedSequence keys after the data seed. hpo.task.curves's synthetic splits use 0..2; a file study
# takes keys of its own so that it shares no random stream with a synthetic one.
PERMUTATION_KEY = 10
NOISE_KEY = 11
# Bytes per value while a file loads: CSV parsing holds Python floats in lists before the
# float32 array exists; np.load holds the file's own dtype (float64 at most) before the cast.
LOAD_BYTES_PER_VALUE = {".csv": 36, ".npy": 12}


class Keys(NamedTuple):
    """How messages name the settings: a study file's dotted keys, or `hpo train`'s flags."""

    file: str = "data.file"
    noisy_file: str = "data.noisy_file"
    counts: tuple[str, str, str] = ("data.train", "data.val", "data.test")
    seed: str = "data.seed"
    noise_ratio: str = "data.noise_ratio"
    normalize: str = "data.normalize"
    fresh: str = "data.fresh"

    def of_field(self, name: str) -> str:
        """The key of a DataConfig field, for its ConfigValueError."""
        return {"n_train": self.counts[0], "n_val": self.counts[1], "n_test": self.counts[2],
                "seed": self.seed, "noise_ratio": self.noise_ratio, "fresh": self.fresh
                }.get(name, name)


STUDY_KEYS = Keys()
FLAG_KEYS = Keys("--data-file", "--noisy-file", ("--train-curves", "--val-curves",
                                                 "--test-curves"), "--data-seed", "--noise-ratio",
                 "--normalize", "--fresh")


def split_counts(n: int, counts: tuple[int, int, int] | None = None,
                 fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, *,
                 label: str = "data.file",
                 keys: tuple[str, str, str] = STUDY_KEYS.counts) -> tuple[int, int, int]:
    """(train, val, test) signals out of n: the counts, else the fractions of n (rounded down,
    the training split taking the remainder when the fractions add up to 1). `keys` name the
    three counts in messages."""
    every = f"{keys[0]}, {keys[1]} and {keys[2]}"
    if counts is not None:
        if min(counts) < 1:
            raise InputFileError(f"{label}: {every} must each be >= 1, "
                                 f"got {'/'.join(map(str, counts))}")
        if sum(counts) > n:
            raise InputFileError(f"{label}: holds {n} signals but {' + '.join(keys)} ask for "
                                 f"{sum(counts)} ({' + '.join(map(str, counts))}); lower them "
                                 "or add signals")
        return counts
    if min(fractions) <= 0 or sum(fractions) > 1 + 1e-9:
        raise InputFileError(f"{label}: split fractions {fractions} must be > 0 and add up to "
                             "at most 1")
    sizes = _by_fractions(n, fractions)
    if min(sizes) < 1:
        need = next(m for m in range(n + 1, 10 * n + 100) if min(_by_fractions(m, fractions)) > 0)
        empty = SPLITS[sizes.index(min(sizes))]
        raise InputFileError(f"{label}: holds {n} signals, too few for train/val/test fractions "
                             f"{'/'.join(f'{x:g}' for x in fractions)} (the {empty} split would "
                             f"be empty); give at least {need} signals, or set {every}")
    return sizes


def _by_fractions(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    val, test = (math.floor(n * f + 1e-9) for f in fractions[1:])
    whole = abs(sum(fractions) - 1) < 1e-9
    train = n - val - test if whole else math.floor(n * fractions[0] + 1e-9)
    return train, val, test


def make_file_splits(clean: np.ndarray, noisy: np.ndarray | None = None, *, seed: int = 0,
                     counts: tuple[int, int, int] | None = None,
                     fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
                     noise_ratio: float = NOISE_RATIO, label: str = "data.file",
                     noisy_label: str = "data.noisy_file",
                     keys: tuple[str, str, str] = STUDY_KEYS.counts) -> dict[str, Split]:
    """Train/val/test Splits (float32, n_sines all 0) of the file's rows, shuffled by the seed."""
    clean = np.asarray(clean)
    if noisy is not None and noisy.shape != clean.shape:
        raise _mismatch(noisy_label, noisy.shape, label, clean.shape)
    sizes = dict(zip(SPLITS, split_counts(len(clean), counts, fractions, label=label,
                                          keys=keys), strict=True))
    perm = np.random.default_rng(np.random.SeedSequence([seed, PERMUTATION_KEY])).permutation(
        len(clean))
    out: dict[str, Split] = {}
    start = 0
    for name in ("test", "val", "train"):  # the held-out split first: it moves last
        rows = perm[start:start + sizes[name]]
        start += sizes[name]
        c = clean[rows].astype(np.float64)
        if noisy is not None:
            nz = noisy[rows]
        else:
            rng = np.random.default_rng(
                np.random.SeedSequence([seed, NOISE_KEY, SPLITS.index(name)]))
            std = noise_ratio * (c.max(axis=1) - c.min(axis=1))
            nz = c + rng.standard_normal(c.shape) * std[:, None]
        out[name] = Split(c.astype(np.float32), np.asarray(nz, dtype=np.float32),
                          np.zeros(len(rows), dtype=np.int64))
    return {name: out[name] for name in SPLITS}


def _mismatch(noisy: str, noisy_shape: tuple[int, ...], clean: str,
              clean_shape: tuple[int, ...]) -> InputFileError:
    return InputFileError(f"{noisy}: shape {noisy_shape} differs from {clean}'s {clean_shape}; "
                          "give one noisy signal per clean one, in the same order and length")


def normalize_split(split: Split) -> tuple[Split, Scale]:
    """The split in its noisy inputs' units. Score on the original scale: percent_removed(
    split.clean, split.noisy, scale.undo(output)), as the protocol defines it."""
    s = fit_scale(split.noisy)
    return Split(s.apply(split.clean), s.apply(split.noisy), split.n_sines), s


def estimate_bytes(shape: tuple[int, int], sizes: tuple[int, int, int], *, csv: bool = False,
                   noisy_file: bool = False, normalize: bool = False) -> int:
    """Bytes that loading the file(s) and making the splits need at their peak, rounded up:
    loading, then the splits' float32 arrays (and normalized copies) and the float64
    temporaries of the largest split. Training's own memory is not included."""
    n, length = shape
    loading = (2 if noisy_file else 1) * n * length * LOAD_BYTES_PER_VALUE[
        ".csv" if csv else ".npy"]
    used, largest = sum(sizes) * length, max(sizes) * length
    return loading + used * 8 * (2 if normalize else 1) + largest * 32


@dataclass(frozen=True)
class FileData:
    """A file study's data, as its stored definition keeps it (to_dict is plain JSON)."""

    path: str  # the clean signals, as the study gave the path
    sha256: str  # of the file's bytes when the study was defined
    shape: tuple[int, int]  # (signals, points)
    noisy_path: str | None = None  # paired noisy inputs; None: the protocol's noise is drawn
    noisy_sha256: str | None = None
    counts: tuple[int, int, int] | None = None  # train/val/test signals; None: the fractions
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    noise_ratio: float = NOISE_RATIO  # drawn noise std / each clean signal's peak-to-peak
    normalize: bool = False  # the model sees each signal scaled by its noisy input (fit_scale)
    seed: int = 0  # the data seed: the row shuffle and the drawn noise

    def sizes(self, keys: Keys = STUDY_KEYS) -> tuple[int, int, int]:
        return split_counts(self.shape[0], self.counts, self.fractions,
                            label=file_label(Path(self.path), keys.file), keys=keys.counts)

    def estimate_bytes(self) -> int:
        return estimate_bytes(self.shape, self.sizes(), csv=self.path.lower().endswith(".csv"),
                              noisy_file=self.noisy_path is not None, normalize=self.normalize)

    def verify(self, study: str | None = None, keys: Keys = STUDY_KEYS) -> None:
        """Refuses (one line) a file that is gone or whose bytes changed since the study began."""
        who = f"study {study}" if study else "this study"
        files = [(keys.file, self.path, self.sha256)]
        if self.noisy_path is not None:
            files.append((keys.noisy_file, self.noisy_path, self.noisy_sha256 or ""))
        for what, path, want in files:
            head = f"{who} was defined on {what} {path} with sha256 {want[:12]}..."
            if Path(path).exists() and not Path(path).is_file():  # a FIFO would hang the read
                raise InputFileError(f"{head}; it is no longer a regular file: restore it or "
                                     "create a new study")
            try:
                found = file_digest(path)
            except OSError as e:
                raise InputFileError(f"{head}; it cannot be read ({e.strerror}): restore it or "
                                     "create a new study") from e
            if found != want:
                raise InputFileError(f"{head}; this file has {found[:12]}...: restore it or "
                                     "create a new study")

    def splits(self, study: str | None = None, keys: Keys = STUDY_KEYS) -> dict[str, Split]:
        """Verified, loaded and split: what a worker trains and scores on."""
        self.verify(study, keys)
        clean = load_signals_file(self.path, what=keys.file)
        noisy = (None if self.noisy_path is None else
                 load_signals_file(self.noisy_path, what=keys.noisy_file))
        return make_file_splits(clean, noisy, seed=self.seed, counts=self.counts,
                                fractions=self.fractions, noise_ratio=self.noise_ratio,
                                label=file_label(Path(self.path), keys.file),
                                noisy_label=file_label(Path(self.noisy_path or ""),
                                keys.noisy_file), keys=keys.counts)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileData:
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)


def describe_file(path: str | Path, *, noisy_path: str | Path | None = None,
                  counts: tuple[int, int, int] | None = None,
                  fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
                  noise_ratio: float = NOISE_RATIO, normalize: bool = False, seed: int = 0,
                  keys: Keys = STUDY_KEYS) -> FileData:
    """A FileData for a new study: hashes and shapes (no values loaded), split sizes checked."""
    shape = read_shape(path, what=keys.file)
    if noisy_path is not None:
        noisy_shape = read_shape(noisy_path, what=keys.noisy_file)
        if noisy_shape != shape:
            raise _mismatch(f"{keys.noisy_file} {noisy_path}", noisy_shape,
                            f"{keys.file} {path}", shape)
    fd = FileData(str(path), "", shape,
                  noisy_path=None if noisy_path is None else str(noisy_path),
                  noisy_sha256=None, counts=counts, fractions=fractions,
                  noise_ratio=noise_ratio, normalize=normalize, seed=seed)
    fd.sizes(keys)  # refuse too few signals now, not in every worker
    # A file too big to load is refused from its header's shape, before hashing its bytes
    # (minutes for tens of GB) only to refuse it afterwards.
    need = resources.Estimate(fd.estimate_bytes(), keys.file)
    if not need.fits():
        raise InputFileError(f"{keys.file} {path}: a {shape[0]} x {shape[1]} file "
                             f"{resources.too_big(need)}; use fewer or shorter signals")
    return replace(fd, sha256=file_digest(path),
                   noisy_sha256=None if noisy_path is None else file_digest(noisy_path))
