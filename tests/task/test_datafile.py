"""hpo.task.datafile: the user's own signals as study data. numpy only, fast, no torch."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from hpo.errors import InputFileError
from hpo.task.curves import SPLITS, Split
from hpo.task.datafile import (
    FileData,
    describe_file,
    estimate_bytes,
    make_file_splits,
    normalize_split,
    split_counts,
)
from hpo.task.normalize import fit_scale
from hpo.task.signals import file_digest, load_signals_file, read_shape

ROOT = Path(__file__).resolve().parents[2]


def signals(n: int = 40, length: int = 16, seed: int = 0) -> np.ndarray:
    """Smooth rows at different levels and sizes, like real series."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 2 * np.pi, length)
    amp, level = rng.uniform(0.5, 5, (n, 1)), rng.uniform(-50, 400, (n, 1))
    return (level + amp * np.sin(x + rng.uniform(0, 6, (n, 1)))).astype(np.float32)


def one_line_error(fn: Callable[[], object], *names: object) -> str:
    with pytest.raises(InputFileError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    for name in names:
        assert str(name) in msg, msg
    return msg


# --- formats -------------------------------------------------------------------------------------


def test_npy_and_csv_load_the_same_float32_rows(tmp_path: Path) -> None:
    x = signals()
    np.save(tmp_path / "s.npy", x.astype(np.float64))
    (tmp_path / "s.csv").write_text("\n".join(",".join(repr(float(v)) for v in r) for r in x)
                                    + "\n\n")  # a trailing blank line carries no signal
    np.save(tmp_path / "i.npy", np.arange(12).reshape(3, 4))  # integers cast
    for name in ("s.npy", "s.csv"):
        got = load_signals_file(tmp_path / name)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, x)
        assert read_shape(tmp_path / name) == x.shape
    np.testing.assert_array_equal(load_signals_file(tmp_path / "i.npy")[1], [4, 5, 6, 7])


def test_two_points_is_enough(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("1,2\n3,5\n")
    assert load_signals_file(tmp_path / "s.csv").shape == (2, 2)


BAD_CSV = {
    "ragged.csv": ("1,2,3\n4,5\n", "row 2"),
    "text.csv": ("1,2\n3,abc\n", "row 2, column 2"),
    "nan.csv": ("1,2\n3,nan\n", "row 2, column 2"),
    "inf.csv": ("1,inf\n", "row 1, column 2"),
    "one_point.csv": ("1\n2\n", "at least 2"),
    "blank.csv": ("\n\n", "no signals"),
    "empty.csv": ("", "empty"),
    "huge.csv": ("1,1e300\n", "signal 1, column 2"),  # finite text, beyond float32
}


@pytest.mark.parametrize("name", sorted(BAD_CSV))
def test_bad_csv_is_one_line_naming_path_key_and_place(tmp_path: Path, name: str) -> None:
    text, where = BAD_CSV[name]
    path = tmp_path / name
    path.write_text(text)
    one_line_error(lambda: load_signals_file(path, what="data.noisy_file"), path,
                   "data.noisy_file", where)


def _write_npy(path: Path, kind: str) -> None:
    arrays = {
        "1d": np.zeros(8), "3d": np.zeros((2, 3, 4)), "short": np.zeros((3, 1)),
        "none": np.zeros((0, 5)), "complex": np.zeros((2, 3), complex),
        "strings": np.array([["1.5", "2"]]), "structured": np.zeros(3, [("a", "f4")]),
        "nan": np.array([[1.0, 2.0], [3.0, np.nan]]), "huge": np.array([[1.0, 1e300]]),
    }
    if kind in arrays:
        np.save(path, arrays[kind])
    elif kind == "object":
        np.save(path, np.array([[1, "a"]], dtype=object), allow_pickle=True)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps([[1.0, 2.0]]))
    elif kind == "npz":
        with path.open("wb") as f:
            np.savez(f, a=np.zeros((2, 3)))
    elif kind == "truncated":
        np.save(path, np.zeros((50, 40)))
        path.write_bytes(path.read_bytes()[:1000])
    elif kind == "garbage":
        path.write_bytes(b"this is not an array at all")
    elif kind == "empty":
        path.write_bytes(b"")


BAD_NPY = {"1d": "1-D", "3d": "3-D", "short": "at least 2", "none": "no signals",
           "complex": "complex128", "strings": "not numbers", "structured": "not numbers",
           "nan": "signals[1, 1] is nan", "huge": "signals[0, 1] is beyond float32",
           "object": "Python objects", "pickle": "pickle", "npz": ".npz",
           "truncated": "truncated", "garbage": "not a .npy", "empty": "empty"}


@pytest.mark.parametrize("kind", sorted(BAD_NPY))
def test_bad_npy_is_one_line_naming_path_and_fix(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.npy"
    _write_npy(path, kind)
    one_line_error(lambda: load_signals_file(path), path, "data.file", BAD_NPY[kind])
    if kind not in ("nan", "huge"):  # values are only looked at by a full load
        one_line_error(lambda: read_shape(path), path)


def test_pickles_are_never_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for kind in ("object", "pickle"):
        _write_npy(tmp_path / f"{kind}.npy", kind)
        monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
        monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
        one_line_error(partial(load_signals_file, tmp_path / f"{kind}.npy"), "pickle")


def test_missing_directory_and_unknown_extension(tmp_path: Path) -> None:
    (tmp_path / "d.npy").mkdir()
    (tmp_path / "s.txt").write_text("1,2\n")
    for path, why in ((tmp_path / "nope.npy", "not found"), (tmp_path / "d.npy", "directory"),
                      (tmp_path / "s.txt", "'.txt'")):
        one_line_error(partial(load_signals_file, path), path, why, ".npy")
        one_line_error(partial(describe_file, path), path, why)


# --- splits --------------------------------------------------------------------------------------


def test_split_counts_and_fractions() -> None:
    assert split_counts(100, (50, 20, 30)) == (50, 20, 30)
    assert split_counts(100, (10, 10, 10)) == (10, 10, 10)  # the rest stays unused
    assert split_counts(10) == (6, 2, 2)
    assert split_counts(11) == (7, 2, 2)  # training takes the rounding remainder
    assert split_counts(5) == (3, 1, 1)
    assert split_counts(100, fractions=(0.5, 0.1, 0.1)) == (50, 10, 10)
    one_line_error(lambda: split_counts(4, label="data.file x.npy"), "x.npy", "val split",
                   "at least 5")
    one_line_error(lambda: split_counts(20, (10, 10, 5)), "20 signals", "25")
    one_line_error(lambda: split_counts(20, (10, 0, 5)), ">= 1")
    one_line_error(lambda: split_counts(20, fractions=(0.6, 0.3, 0.3)), "at most 1")


def test_splits_are_a_shuffled_partition_of_the_rows() -> None:
    x = signals(50)
    sp = make_file_splits(x, seed=3, counts=(30, 10, 10))
    assert list(sp) == list(SPLITS)
    for s in sp.values():
        assert s.clean.dtype == s.noisy.dtype == np.float32
        assert not s.n_sines.any() and len(s.n_sines) == len(s)
    rows = np.concatenate([s.clean for s in sp.values()])
    assert {r.tobytes() for r in rows} == {r.tobytes() for r in x}
    assert not np.array_equal(rows, x)  # shuffled
    other = make_file_splits(x, seed=4, counts=(30, 10, 10))
    assert not np.array_equal(other["test"].clean, sp["test"].clean)


def test_growing_train_moves_no_val_or_test_signal_nor_their_noise() -> None:
    x = signals(60)
    small = make_file_splits(x, seed=1, counts=(10, 10, 10))
    big = make_file_splits(x, seed=1, counts=(40, 10, 10))
    for name in ("val", "test"):
        np.testing.assert_array_equal(small[name].clean, big[name].clean)
        np.testing.assert_array_equal(small[name].noisy, big[name].noisy)
    np.testing.assert_array_equal(small["train"].noisy, big["train"].noisy[:10])


def test_drawn_noise_std_is_noise_ratio_times_peak_to_peak() -> None:
    x = signals(400, length=200)
    sp = make_file_splits(x, seed=0, counts=(200, 100, 100), noise_ratio=0.05)
    for s in sp.values():
        ratio = (s.noisy - s.clean).std(axis=1) / np.ptp(s.clean, axis=1)
        assert abs(ratio.mean() - 0.05) < 0.002
    flat = make_file_splits(np.full((5, 4), 3.0), counts=(3, 1, 1))  # constant: no noise at all
    np.testing.assert_array_equal(flat["train"].noisy, flat["train"].clean)


def test_noisy_file_rows_pair_with_their_clean_rows(tmp_path: Path) -> None:
    x = signals(30)
    noisy = x + np.arange(30, dtype=np.float32)[:, None] * 1000  # row i carries i in thousands
    sp = make_file_splits(x, noisy, seed=2, counts=(10, 10, 10))
    for s in sp.values():
        k = np.round((s.noisy - s.clean) / 1000).astype(int)[:, 0]
        assert np.abs(s.noisy - s.clean - k[:, None] * 1000.0).max() < 1e-2
        np.testing.assert_array_equal(s.clean, x[k])
    np.save(tmp_path / "c.npy", x)
    np.save(tmp_path / "n.npy", noisy[:, :-1])
    one_line_error(lambda: make_file_splits(x, noisy[:, :-1], label="data.file c.npy",
                                            noisy_label="data.noisy_file n.npy"),
                   "c.npy", "n.npy", "(30, 15)", "(30, 16)")
    one_line_error(lambda: describe_file(tmp_path / "c.npy", noisy_path=tmp_path / "n.npy"),
                   tmp_path / "c.npy", tmp_path / "n.npy", "(30, 15)", "(30, 16)")


SPLITS_IN_A_CHILD = """
import hashlib, json, sys
from hpo.task.datafile import FileData
sp = FileData.from_dict(json.loads(sys.argv[1])).splits()
h = hashlib.sha256()
for s in sp.values():
    h.update(s.clean.tobytes()); h.update(s.noisy.tobytes())
print(h.hexdigest())
"""


def test_splits_are_bit_identical_in_another_process(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", signals(50))
    fd = describe_file(tmp_path / "s.npy", seed=7)
    h = hashlib.sha256()
    for s in fd.splits().values():
        h.update(s.clean.tobytes())
        h.update(s.noisy.tobytes())
    child = subprocess.run([sys.executable, "-c", SPLITS_IN_A_CHILD, json.dumps(fd.to_dict())],
                           capture_output=True, text=True, check=True, cwd=ROOT)
    assert child.stdout.strip() == h.hexdigest()


def test_the_module_needs_numpy_only() -> None:
    code = ("import sys, hpo.task.datafile; print([m for m in ('torch', 'matplotlib', "
            "'hpo.task.train', 'hpo.study.parse') if m in sys.modules])")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=ROOT)
    assert child.stdout.strip() == "[]"


# --- the study's record of its data --------------------------------------------------------------


def test_file_data_round_trips_through_json(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", signals(20))
    (tmp_path / "n.csv").write_text("\n".join(",".join(map(str, r)) for r in signals(20, seed=1)))
    fd = describe_file(tmp_path / "c.npy", noisy_path=tmp_path / "n.csv", counts=(10, 5, 5),
                       noise_ratio=0.1, normalize=True, seed=3)
    assert fd.shape == (20, 16) and fd.sha256 == file_digest(tmp_path / "c.npy")
    assert fd.sha256 == hashlib.sha256((tmp_path / "c.npy").read_bytes()).hexdigest()
    back = FileData.from_dict(json.loads(json.dumps(fd.to_dict())))
    assert back == fd
    assert describe_file(tmp_path / "c.npy").counts is None
    assert FileData.from_dict(json.loads(json.dumps(describe_file(tmp_path / "c.npy")
                                                    .to_dict()))).sizes() == (12, 4, 4)


def test_a_changed_or_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.npy"
    np.save(path, signals(20))
    fd = describe_file(path)
    fd.verify("mine")
    np.save(path, signals(20, seed=9))
    msg = one_line_error(lambda: fd.splits("mine"), "study mine", "data.file", path,
                         fd.sha256[:12], file_digest(path)[:12], "create a new study")
    assert "restore it" in msg
    path.unlink()
    one_line_error(lambda: fd.verify(), "this study", path, "restore it")


def test_a_changed_noisy_file_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", signals(20))
    np.save(tmp_path / "n.npy", signals(20, seed=1))
    fd = describe_file(tmp_path / "c.npy", noisy_path=tmp_path / "n.npy")
    np.save(tmp_path / "n.npy", signals(20, seed=2))
    one_line_error(lambda: fd.verify("s"), "data.noisy_file", tmp_path / "n.npy")


# --- normalization and memory --------------------------------------------------------------------


def test_normalization_round_trips_and_is_fitted_on_the_noisy_input() -> None:
    sp = make_file_splits(signals(40), seed=0, counts=(20, 10, 10))["train"]
    norm, scale = normalize_split(sp)
    assert np.allclose(norm.noisy.mean(axis=1), 0, atol=1e-5)
    assert np.allclose(norm.noisy.std(axis=1), 1, atol=1e-4)
    np.testing.assert_allclose(scale.undo(norm.clean), sp.clean, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(scale.undo(scale.apply(sp.noisy)), sp.noisy, rtol=1e-6, atol=1e-4)
    offset, s = fit_scale(sp.noisy)  # unpacks as (offset, scale)
    assert offset.shape == s.shape == (20, 1)
    flat = fit_scale(np.full((2, 5), 340.0, np.float32))
    assert np.isfinite(flat.apply(np.full((2, 5), 340.0))).all()
    np.testing.assert_allclose(flat.undo(flat.apply(np.full((2, 5), 340.0))), 340.0)


def test_metric_is_the_same_on_the_original_scale_after_undo() -> None:
    """A scale-equivariant denoiser (a moving average) run in normalized units and undone gives
    the output, and so the percent removed, of running it on the original signals."""
    def smooth(a: np.ndarray) -> np.ndarray:
        pad = np.pad(a, ((0, 0), (1, 1)), mode="edge")
        return np.asarray((pad[:, :-2] + pad[:, 1:-1] + pad[:, 2:]) / 3)

    def removed(s: Split, out: np.ndarray) -> float:
        return float(100 * (1 - np.abs(s.clean - out).sum() / np.abs(s.clean - s.noisy).sum()))

    sp = make_file_splits(signals(40, length=64), seed=0, counts=(20, 10, 10))["val"]
    norm, scale = normalize_split(sp)
    direct, undone = smooth(sp.noisy), scale.undo(smooth(norm.noisy))
    np.testing.assert_allclose(undone, direct, rtol=1e-5, atol=1e-3)
    assert abs(removed(sp, undone) - removed(sp, direct)) < 0.05


@pytest.mark.parametrize("fmt", ["npy", "csv"])
def test_estimate_bytes_covers_the_measured_peak(tmp_path: Path, fmt: str) -> None:
    x = signals(400, length=100)
    path = tmp_path / f"s.{fmt}"
    if fmt == "npy":
        np.save(path, x.astype(np.float64))  # the usual dtype: loaded whole, then cast
    else:
        path.write_text("\n".join(",".join(map(str, r)) for r in x))
    fd = describe_file(path, normalize=True)
    tracemalloc.start()
    try:
        sp = fd.splits()
        normalize_split(sp["train"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= fd.estimate_bytes() <= 4 * peak + 100_000
    assert estimate_bytes((10**6, 80), (6 * 10**5, 2 * 10**5, 2 * 10**5)) > 10**6 * 80 * 4


def test_the_example_data_set_loads() -> None:
    path = ROOT / "studies" / "data" / "co2_weekly.npy"
    x = load_signals_file(path)
    assert x.shape == read_shape(path) and x.shape[1] == 80 and len(x) >= 400
    assert path.stat().st_size < 500_000
    sizes = describe_file(path).sizes()
    assert min(sizes) >= 80
