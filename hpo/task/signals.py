"""The user's own signal files: one signal per row, in a CSV or a 2-D .npy, all rows one length.

Every reader checks what it is given before it believes it: the path, the extension, a .npy's
header (shape, dtype, no pickle) and its size against that header, then every value (NaN, inf,
beyond float32). `hpo denoise` and study data files (hpo.task.datafile) share these readers, so a
file means the same to both; each message names the key or flag and the path.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hpo import resources
from hpo.errors import InputFileError, plural
from hpo.paths import atomic_write


def read_signals(path: str | Path) -> np.ndarray:
    """Returns an (n, length) float32 array or raises InputFileError naming the file and row."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: {not_a_file(path, 'input file')}; pass --input a CSV of "
                             "signals, one per row")
    with np.errstate(over="ignore"):  # reported by position below, not warned
        return _within_float32(parse_signals_csv(path), str(path))


def not_a_file(path: Path, what: str) -> str:
    """Why `path` is not a readable regular file, in a few words."""
    if path.is_dir():
        return f"{what} is a directory"
    if path.exists():
        return f"{what} is not a regular file (a pipe, device or socket)"
    if path.is_symlink():
        return f"{what} is a symbolic link to {os.readlink(path)}, which does not exist"
    return f"{what} not found"


def parse_signals_csv(path: Path, label: str | None = None) -> np.ndarray:
    """The CSV parser shared by `hpo denoise` and study data files (hpo.task.datafile): an (n,
    length) float32 array of an existing file. A first row of names (a header, as spreadsheets
    write) is skipped. `label` starts every message (default: the path), so a study's file can
    also name its key."""
    label = str(path) if label is None else label
    # At most one value per two bytes of text, each a Python float in a list until the array
    # exists: refused by the file's size before a line is read.
    _fits(label, path.stat().st_size // 2 * CSV_BYTES_PER_VALUE)
    rows: list[list[float]] = []
    seen_header = False
    try:
        with path.open(newline="") as f:
            for lineno, row in enumerate(csv.reader(f), start=1):
                cells = [c.strip() for c in row]
                if not any(cells):
                    continue  # blank lines carry no signal
                if not rows and not seen_header and is_header(cells):
                    seen_header = True
                    continue
                values = []
                for col, cell in enumerate(cells, start=1):
                    try:
                        v = float(cell)
                    except ValueError:
                        raise InputFileError(f"{label}: row {lineno}, column {col}: {cell!r} is "
                                             "not a number; every cell must be numeric") from None
                    if not math.isfinite(v):
                        raise InputFileError(f"{label}: row {lineno}, column {col}: {cell!r} is "
                                             "not finite; remove NaN/inf values")
                    values.append(v)
                if rows and len(values) != len(rows[0]):
                    raise InputFileError(f"{label}: row {lineno} has {len(values)} values but "
                                         f"row 1 has {len(rows[0])}; all signals in one file "
                                         "must have the same length")
                rows.append(values)
    except UnicodeDecodeError as e:
        raise InputFileError(f"{label}: not a text CSV file ({e.reason}); pass a CSV of "
                             "numbers") from e
    except csv.Error as e:  # a field over csv's size limit: binary data that decoded
        raise InputFileError(f"{label}: not a text CSV file ({e}); pass a CSV of numbers") from e
    if not rows:
        raise InputFileError(f"{label}: the file holds no signals; write one signal per row")
    if len(rows[0]) < 2:
        raise InputFileError(f"{label}: signals have {len(rows[0])} point; each needs at least 2")
    return np.asarray(rows, dtype=np.float32)


def is_header(cells: list[str]) -> bool:
    """A row of names: no cell is empty and none is a number."""
    def number(c: str) -> bool:
        try:
            float(c)
        except ValueError:
            return False
        return True

    return all(cells) and not any(number(c) for c in cells)


def write_signals(path: str | Path, signals: np.ndarray, *, flag: str | None = None,
                  what: str = "the signals") -> Path:
    """Writes (n, length) signals as a CSV, one per row (a float32 .npy array when the name
    ends in .npy), atomically (hpo.paths.atomic_write): a
    failed write (a full disk, a quota) leaves no partial file. With `flag`, such a failure is
    one line naming the flag and `what`; without, its OSError is raised for the caller's
    hpo.paths.writing to name."""
    path = Path(path)
    if path.suffix.lower() == ".npy":  # as its name says: what `hpo score` and data files read
        with atomic_write(path, flag, what) as tmp, tmp.open("wb") as b:
            np.save(b, np.asarray(signals, dtype=np.float32), allow_pickle=False)
        return path
    with atomic_write(path, flag, what) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        for row in signals:
            writer.writerow([f"{v:.6g}" for v in row])
    return path


FORMATS = (".npy", ".csv")
CSV_BYTES_PER_VALUE = 36  # a float in a list, its list slot, and the float32 array


def _fits(label: str, need: int) -> None:
    """Refuses a file whose values would not fit in this process's share of memory."""
    est = resources.Estimate(need, label)
    if not est.fits():
        raise InputFileError(f"{label}: loading it {resources.too_big(est)}; use fewer or "
                             "shorter signals, or split the file")


HINT = "save an (n_signals, length) float array with numpy.save, or a CSV of one signal per row"


def file_label(path: Path, what: str) -> str:
    return f"{what} {path}"


def _check_path(path: Path, what: str) -> str:
    """The file's format, after the checks every reader shares; the message names key and path."""
    label = file_label(path, what)
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
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise InputFileError(f"{label}: damaged .npy header (shape {tuple(shape)}); {HINT}")
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
        raise InputFileError(f"{label}: signals have {plural(shape[1], 'point')}; each needs at "
                             "least 2")
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
    label = file_label(path, what)
    with _reading(label):
        if _check_path(path, what) == ".npy":
            return _check_rows(_npy_header(path, label)[0], label)
        rows, width, first = 0, 0, True
        with path.open(newline="") as f:
            for row in csv.reader(f):
                cells = [c.strip() for c in row]
                if not any(cells):
                    continue
                if first and is_header(cells):  # skipped, as parse_signals_csv skips it
                    first = False
                    continue
                first = False
                rows, width = rows + 1, width or len(row)
        return _check_rows((rows, width), label)


def load_signals_file(path: str | Path, *, what: str = "data.file") -> np.ndarray:
    """An (n, length) float32 array of finite values, or InputFileError naming key and path."""
    path = Path(path)
    label = file_label(path, what)
    # A value beyond float32 becomes inf in the cast: reported below, by position, not warned.
    with _reading(label), np.errstate(over="ignore"):
        if _check_path(path, what) == ".csv":
            arr = parse_signals_csv(path, label)  # NaN/inf text is refused while parsing
        else:
            shape, dtype = _npy_header(path, label)
            _fits(label, math.prod(_check_rows(shape, label)) * (dtype.itemsize + 4 + 1))
            raw = np.load(path, allow_pickle=False)
            bad = _first_bad(raw)
            if bad is not None:
                raise InputFileError(f"{label}: signals[{bad[0]}, {bad[1]}] is {raw[bad]}; "
                                     "remove NaN/inf values")
            arr = raw.astype(np.float32)
    return _within_float32(arr, label, npy=path.suffix.lower() == ".npy")


def _within_float32(arr: np.ndarray, label: str, *, npy: bool = False) -> np.ndarray:
    """The array, or one line naming the first value the cast to float32 made infinite."""
    bad = _first_bad(arr)
    if bad is not None:
        where = (f"signals[{bad[0]}, {bad[1]}]" if npy else
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
