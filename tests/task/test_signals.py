"""hpo.task.signals: a signal file's header and size are checked before its values are loaded,
and every value must fit float32."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hpo import resources
from hpo.errors import InputFileError
from hpo.paths import PathError
from hpo.task.signals import load_signals_file, read_signals, write_signals
from tests.support.fullfs import FullFs, full_fs_fixture  # noqa: F401 (the full_fs fixture)


def npy_with_header(path: Path, shape: str, data: bytes = b"") -> Path:
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()
                     + data)
    return path


def test_a_negative_dimension_is_a_damaged_header(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="damaged .npy header"):
        load_signals_file(npy_with_header(tmp_path / "neg.npy", "(-3, 80)"), what="--input")


def test_an_array_larger_than_memory_is_refused_from_its_header(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sparse file declaring 74.5 GiB has all its bytes as far as its size says."""
    path = npy_with_header(tmp_path / "big.npy", "(100000, 100000)")
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size + 100000 * 100000 * 8)  # sparse: no disk used
    called = []
    monkeypatch.setattr(np, "load", lambda *a, **k: called.append(1))
    with pytest.raises(InputFileError, match="of memory"):
        load_signals_file(path, what="--input")
    assert not called


def test_a_csv_larger_than_memory_is_refused_by_its_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.csv"
    path.write_text("1,2,3\n" * 20000)
    monkeypatch.setattr(resources, "machine_memory", lambda: 2**20)
    with pytest.raises(InputFileError, match="of memory"):
        read_signals(path)


@pytest.mark.parametrize("reader", [read_signals, load_signals_file])
def test_a_value_beyond_float32_is_one_line_not_a_nan(tmp_path: Path, reader: object,
                                                     recwarn: pytest.WarningsRecorder) -> None:
    path = tmp_path / "s.csv"
    path.write_text("1,2,3\n4,1e39,6\n")
    with pytest.raises(InputFileError) as info:
        reader(path)  # type: ignore[operator]
    assert "signal 2, column 2" in str(info.value) and "float32" in str(info.value)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("kind,words", [
    ("fifo", "input file is not a regular file (a pipe, device or socket)"),
    ("dir", "input file is a directory"),
    ("dangling", "input file is a symbolic link to"),
    ("missing", "input file not found"),
])
def test_an_input_that_is_not_a_file_is_named_for_what_it_is(tmp_path: Path, kind: str,
                                                             words: str) -> None:
    path = tmp_path / "in.csv"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "dangling":
        path.symlink_to(tmp_path / "gone.csv")
    with pytest.raises(InputFileError) as info:
        read_signals(path)
    assert str(info.value).startswith(f"{path}: {words}") and "\n" not in str(info.value)


def test_signals_on_a_full_disk_leave_no_partial_file(full_fs: FullFs) -> None:
    """The tester's case: a truncated CSV, cut mid-number, that then blocked the rerun."""
    full_fs.fill(leave=100 * 1024)
    out = full_fs.root / "out.csv"
    signals = np.random.default_rng(0).normal(size=(500, 80)).astype(np.float32)
    with pytest.raises(PathError) as info:
        write_signals(out, signals, flag="--output", what="the denoised signals")
    assert str(info.value).startswith(f"--output {out}: cannot write the denoised signals (No "
                                      "space left on device)")
    assert full_fs.files() == []
    with pytest.raises(OSError):  # without a flag: raised as it came, for hpo.paths.writing
        write_signals(out, signals)
    assert full_fs.files() == []
    full_fs.free()
    write_signals(out, signals)
    assert read_signals(out).shape == (500, 80)
