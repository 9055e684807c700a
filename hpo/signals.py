"""Reading and writing the user's own signals: one signal per CSV row, all rows one length."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from hpo.errors import InputFileError


def read_signals(path: str | Path) -> np.ndarray:
    """Returns an (n, length) float32 array or raises InputFileError naming the file and row."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: input file not found; pass --input a CSV of signals, "
                             "one per row")
    return parse_signals_csv(path)


def parse_signals_csv(path: Path, label: str | None = None) -> np.ndarray:
    """The CSV parser shared by `hpo denoise` and study data files (hpo.datafile): an (n, length)
    float32 array of an existing file. `label` starts every message (default: the path), so a
    study's file can also name its key."""
    label = str(path) if label is None else label
    rows: list[list[float]] = []
    try:
        with path.open(newline="") as f:
            for lineno, row in enumerate(csv.reader(f), start=1):
                cells = [c.strip() for c in row]
                if not any(cells):
                    continue  # blank lines carry no signal
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


def write_signals(path: str | Path, signals: np.ndarray) -> Path:
    path = Path(path)
    try:
        if path.parent != Path():
            path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            for row in signals:
                writer.writerow([f"{v:.6g}" for v in row])
    except OSError as e:  # a full disk, a device such as /dev/full, a read-only place
        raise InputFileError(f"{path}: cannot write the denoised signals ({e.strerror}); "
                             "choose another --output") from e
    return path
