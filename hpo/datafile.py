"""Study data from the user's own files: clean signals, one per row, in a .npy or a .csv.

A file study replaces the synthetic sines of hpo.data with the rows of a file. The rows are
shuffled once by the data seed and cut into test, validation and training signals (in that
order, so growing the training split never moves a validation or test signal). Their noisy
inputs are either the rows of a second file, paired row by row, or the protocol's noise: Gaussian,
std = noise_ratio * peak-to-peak of each clean signal, drawn from a stream of its own per split.
A study records the files' sha256 (FileData) so that no worker ever trains on a changed file.

numpy only: the study validator and the CLI import this without torch.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from hpo import resources
from hpo.data import SPLITS, Split
from hpo.errors import InputFileError
from hpo.normalize import SCALE_FLOOR, Scale, fit_scale
from hpo.signals import parse_signals_csv

# Per-signal normalization lives in hpo.normalize; its names stay importable from here.
__all__ = ["DEFAULT_FRACTIONS", "FLAG_KEYS", "SCALE_FLOOR", "STUDY_KEYS", "FileData", "Keys",
           "Scale", "describe_file", "estimate_bytes", "file_digest", "fit_scale",
           "load_signals_file", "make_file_splits", "normalize_split", "read_shape",
           "split_counts"]

FORMATS = (".npy", ".csv")
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)  # train/val/test shares when no counts are given
# SeedSequence keys after the data seed. hpo.data's synthetic splits use 0..2; a file study
# takes keys of its own so that it shares no random stream with a synthetic one.
PERMUTATION_KEY = 10
NOISE_KEY = 11
# Bytes per value while a file loads: CSV parsing holds Python floats in lists before the
# float32 array exists; np.load holds the file's own dtype (float64 at most) before the cast.
LOAD_BYTES_PER_VALUE = {".csv": 36, ".npy": 12}
HINT = "save an (n_signals, length) float array with numpy.save, or a CSV of one signal per row"


class Keys(NamedTuple):
    """How messages name the settings: a study file's dotted keys, or `hpo train`'s flags."""

    file: str = "data.file"
    noisy_file: str = "data.noisy_file"
    counts: tuple[str, str, str] = ("data.train", "data.val", "data.test")


STUDY_KEYS = Keys()
FLAG_KEYS = Keys("--data-file", "--noisy-file", ("--train-curves", "--val-curves",
                                                 "--test-curves"))


def _label(path: Path, what: str) -> str:
    return f"{what} {path}"


def _check_path(path: Path, what: str) -> str:
    """The file's format, after the checks every reader shares; the message names key and path."""
    label = _label(path, what)
    if path.is_dir():
        raise InputFileError(f"{label}: is a directory; give the file itself ({HINT})")
    if not path.exists():
        raise InputFileError(f"{label}: file not found; check the path ({HINT})")
    if not path.is_file():
        raise InputFileError(f"{label}: not a regular file; {HINT}")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputFileError(f"{label}: unknown extension {path.suffix!r}; use .npy or .csv "
                             f"({HINT})")
    if path.stat().st_size == 0:
        raise InputFileError(f"{label}: the file is empty; {HINT}")
    return suffix


def _npy_header(path: Path, label: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Shape and dtype from the .npy header alone, refusing what np.load would misread."""
    fmt = np.lib.format
    with path.open("rb") as f:
        head = f.read(len(fmt.MAGIC_PREFIX))
        if not head.startswith(fmt.MAGIC_PREFIX):
            kind = ("a .npz archive, not one array" if head.startswith(b"PK") else
                    "a pickle, never loaded (it could run code)" if head[:1] == b"\x80" else
                    "not a .npy file (no numpy header)")
            raise InputFileError(f"{label}: {kind}; {HINT}")
        f.seek(0)
        try:
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(f)
        except ValueError as e:
            raise InputFileError(f"{label}: damaged .npy header ({_one_line(e)}); {HINT}") from e
        data_bytes = path.stat().st_size - f.tell()
    if dtype.hasobject:
        raise InputFileError(f"{label}: holds Python objects (a pickle), which are never loaded; "
                             f"{HINT}")
    if dtype.kind not in "biuf":
        raise InputFileError(f"{label}: holds {dtype} values, not numbers; {HINT}")
    if len(shape) != 2:
        raise InputFileError(f"{label}: a {len(shape)}-D array of shape {tuple(shape)}; one "
                             "signal per row needs a 2-D array (n_signals, length), e.g. "
                             "x[None, :] for one signal")
    if data_bytes < (want := math.prod(shape) * dtype.itemsize):
        raise InputFileError(f"{label}: truncated ({data_bytes} of {want} data bytes); save it "
                             "again")
    return tuple(shape), dtype


def _check_rows(shape: tuple[int, ...], label: str) -> tuple[int, int]:
    if shape[0] == 0:
        raise InputFileError(f"{label}: the file holds no signals; write one signal per row")
    if shape[1] < 2:
        raise InputFileError(f"{label}: signals have {shape[1]} point(s); each needs at least 2")
    return shape[0], shape[1]


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


@contextlib.contextmanager
def _reading(label: str) -> Iterator[None]:
    """The readers' own exceptions as one line naming the file."""
    try:
        yield
    except (UnicodeDecodeError, csv.Error) as e:  # before ValueError: a subclass of it
        raise InputFileError(f"{label}: not a text CSV file ({_one_line(e)}); {HINT}") from e
    except OSError as e:
        raise InputFileError(f"{label}: cannot be read ({e.strerror}); check its "
                             "permissions") from e
    except ValueError as e:  # np.load's own checks, after the header looked fine
        raise InputFileError(f"{label}: not a readable .npy ({_one_line(e)}); {HINT}") from e


def read_shape(path: str | Path, *, what: str = "data.file") -> tuple[int, int]:
    """(signals, points) without loading the values: the .npy header, or a count of CSV rows.
    The values themselves are checked only by load_signals_file."""
    path = Path(path)
    label = _label(path, what)
    with _reading(label):
        if _check_path(path, what) == ".npy":
            return _check_rows(_npy_header(path, label)[0], label)
        rows, width = 0, 0
        with path.open(newline="") as f:
            for row in csv.reader(f):
                if any(c.strip() for c in row):
                    rows, width = rows + 1, width or len(row)
        return _check_rows((rows, width), label)


def load_signals_file(path: str | Path, *, what: str = "data.file") -> np.ndarray:
    """An (n, length) float32 array of finite values, or InputFileError naming key and path."""
    path = Path(path)
    label = _label(path, what)
    # A value beyond float32 becomes inf in the cast: reported below, by position, not warned.
    with _reading(label), np.errstate(over="ignore"):
        if _check_path(path, what) == ".csv":
            arr = parse_signals_csv(path, label)  # NaN/inf text is refused while parsing
        else:
            _check_rows(_npy_header(path, label)[0], label)
            raw = np.load(path, allow_pickle=False)
            bad = _first_bad(raw)
            if bad is not None:
                raise InputFileError(f"{label}: signals[{bad[0]}, {bad[1]}] is {raw[bad]}; "
                                     "remove NaN/inf values")
            arr = raw.astype(np.float32)
    bad = _first_bad(arr)
    if bad is not None:
        where = (f"signals[{bad[0]}, {bad[1]}]" if path.suffix.lower() == ".npy" else
                 f"signal {bad[0] + 1}, column {bad[1] + 1}")
        raise InputFileError(f"{label}: {where} is beyond float32 (|x| > 3.4e38); rescale the "
                             "signals")
    return arr


def _first_bad(a: np.ndarray) -> tuple[int, int] | None:
    if a.dtype.kind != "f":
        return None
    finite = np.isfinite(a)
    if finite.all():
        return None
    i, j = np.argwhere(~finite)[0]
    return int(i), int(j)


def file_digest(path: str | Path) -> str:
    """sha256 of the file's bytes, read in chunks (a file of any size)."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
                     noise_ratio: float = 0.05, label: str = "data.file",
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
    noise_ratio: float = 0.05  # drawn noise std / each clean signal's peak-to-peak
    normalize: bool = False  # the model sees each signal scaled by its noisy input (fit_scale)
    seed: int = 0  # the data seed: the row shuffle and the drawn noise

    def sizes(self, keys: Keys = STUDY_KEYS) -> tuple[int, int, int]:
        return split_counts(self.shape[0], self.counts, self.fractions,
                            label=_label(Path(self.path), keys.file), keys=keys.counts)

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
                                label=_label(Path(self.path), keys.file),
                                noisy_label=_label(Path(self.noisy_path or ""), keys.noisy_file),
                                keys=keys.counts)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileData:
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)


def describe_file(path: str | Path, *, noisy_path: str | Path | None = None,
                  counts: tuple[int, int, int] | None = None,
                  fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
                  noise_ratio: float = 0.05, normalize: bool = False, seed: int = 0,
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
