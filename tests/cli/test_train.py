"""`hpo train` and `hpo denoise` in-process: JSON output, a save/denoise round trip, and one-line
errors (no traceback) for every bad input file.

typer's CliRunner keeps stderr apart from stdout (result.stderr; result.output has both). A bug
that escapes the CLI's error boundary shows up in-process as result.exception being something
other than SystemExit; in a real terminal it would be a traceback.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hpo.cli import app
from hpo.task.config import TrainConfig
from hpo.task.curves import DataConfig, make_split
from hpo.task.model import Denoiser
from hpo.task.modelfile import FORMAT, load_model, save_model
from hpo.task.signals import read_signals, write_signals
from hpo.task.train import predict
from tests.support.fullfs import FullFs, full_fs_fixture  # noqa: F401 (the full_fs fixture)

ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, names: str | Path) -> None:
    """Non-zero exit, exactly one line on stderr naming the file, nothing on stdout."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}"
    )
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(names) in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model saved through the library (random weights) and a CSV of noisy signals."""
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = save_model(d / "model.pt", Denoiser(8, 3), TrainConfig(hidden_size=8, shift=3),
                       DataConfig(), {"val_removed": 1.0})
    signals = write_signals(d / "signals.csv", make_split(DataConfig(n_test=5), "test").noisy)
    return {"model": model, "signals": signals}


def denoise(model: Path, inp: Path, out: Path):
    return invoke("denoise", "--model", model, "--input", inp, "--output", out)


# --- train -------------------------------------------------------------------------------------


def test_train_json_prints_one_json_object() -> None:
    result = invoke("train", "--epochs", "3", "--hidden-size", "8", "--train-curves", "20",
                    "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # stdout holds the JSON and nothing else
    for key in ("val_removed", "test_removed", "train_seconds"):
        assert isinstance(out[key], int | float), key
    assert 0.0 <= out["val_removed"] <= 100.0
    assert 0.0 <= out["test_removed"] <= 100.0
    assert out["train_seconds"] > 0
    assert out["training_ended"] == "completed" and "status" not in out  # not a trial state
    assert out["epochs_run"] == 3
    assert out["n_params"] == Denoiser(8, 10).n_params()
    assert out["params"]["hidden_size"] == 8 and out["params"]["epochs"] == 3


def test_train_without_json_prints_a_summary() -> None:
    result = invoke("train", "--epochs", "2", "--hidden-size", "4", "--train-curves", "10")
    assert result.exit_code == 0, result.output
    assert "validation" in result.stdout and "%" in result.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)


def test_a_diverged_train_exits_non_zero_and_saves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "m.pt"
    result = invoke("train", "--epochs", "2", "--hidden-size", "4", "--train-curves", "10",
                    "--lr", "1e30", "--save", target, "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["training_ended"] == "diverged" and out["reason"]
    assert "saved" not in out
    assert not target.exists()


def test_train_save_then_denoise_round_trip(tmp_path: Path, files: dict[str, Path]) -> None:
    target = tmp_path / "model.pt"
    result = invoke("train", "--epochs", "2", "--hidden-size", "8", "--shift", "3",
                    "--train-curves", "20", "--save", target, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert Path(out["saved"]) == target and target.is_file()

    model, meta = load_model(target)
    assert (meta["format"], meta["hidden_size"], meta["shift"]) == (FORMAT, 8, 3)
    assert meta["scores"]["val_removed"] == pytest.approx(out["val_removed"], abs=1e-4)
    assert meta["scores"]["test_removed"] == pytest.approx(out["test_removed"], abs=1e-4)

    denoised = tmp_path / "nested" / "dir" / "denoised.csv"
    result = denoise(target, files["signals"], denoised)
    assert result.exit_code == 0, result.output
    got = read_signals(denoised)
    noisy = read_signals(files["signals"])
    expected = predict(model, noisy)
    assert got.shape == noisy.shape == (5, 80)
    # The CSV holds 6 significant digits.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, noisy, atol=1e-3)  # the model was actually applied
    as_npy = tmp_path / "denoised.npy"  # an .npy output is an .npy file, as hpo score reads it
    assert denoise(target, files["signals"], as_npy).exit_code == 0
    np.testing.assert_allclose(np.load(as_npy, allow_pickle=False), expected, rtol=1e-6)
    r = invoke("denoise", "--model", target, "--input", files["signals"], "--output",
               "/proc/self/mem", "--force")  # not a place for files: no talk of free space
    assert r.exit_code == 2 and "choose another path" in r.stderr, r.output
    assert "free space" not in r.stderr


def test_denoise_accepts_signals_of_another_length(tmp_path: Path, files: dict[str, Path]) -> None:
    inp = tmp_path / "short.csv"
    inp.write_text("0.1,0.2,0.3,0.2,0.1\n\n-1,0,1,0,-1\n")
    out = tmp_path / "out.csv"
    result = denoise(files["model"], inp, out)
    assert result.exit_code == 0, result.output
    model, _ = load_model(files["model"])
    np.testing.assert_allclose(read_signals(out), predict(model, read_signals(inp)),
                               rtol=1e-5, atol=1e-6)


# --- bad input files ---------------------------------------------------------------------------

BAD_CSV = {
    "non-numeric cell": "1,2,3\n4,five,6\n",
    "ragged rows": "1,2,3\n4,5\n",
    "empty file": "",
    "only blank lines": "\n\n  \n",
    "NaN cell": "1,nan,3\n",
    "infinite cell": "1,2,inf\n",
    "one point per signal": "1\n2\n",
}


@pytest.mark.parametrize("content", BAD_CSV.values(), ids=BAD_CSV.keys())
def test_bad_input_csv_is_one_line_error(
    tmp_path: Path, files: dict[str, Path], content: str
) -> None:
    inp = tmp_path / "bad.csv"
    inp.write_text(content)
    out = tmp_path / "out.csv"
    assert_one_line_error(denoise(files["model"], inp, out), inp)
    assert not out.exists()


def test_binary_input_file_is_one_line_error(tmp_path: Path, files: dict[str, Path]) -> None:
    inp = tmp_path / "bad.csv"
    inp.write_bytes(b"\xff\xfe\x00\x01\x80\x81" * 50)
    assert_one_line_error(denoise(files["model"], inp, tmp_path / "out.csv"), inp)


def test_missing_input_file_is_one_line_error(tmp_path: Path, files: dict[str, Path]) -> None:
    missing = tmp_path / "nope.csv"
    assert_one_line_error(denoise(files["model"], missing, tmp_path / "out.csv"), missing)


def test_missing_model_file_is_one_line_error(tmp_path: Path, files: dict[str, Path]) -> None:
    missing = tmp_path / "nope.pt"
    assert_one_line_error(denoise(missing, files["signals"], tmp_path / "out.csv"), missing)


def test_directory_as_model_is_one_line_error(tmp_path: Path, files: dict[str, Path]) -> None:
    assert_one_line_error(denoise(tmp_path, files["signals"], tmp_path / "out.csv"), tmp_path)


def _write_random(path: Path, seed: int) -> None:
    path.write_bytes(np.random.default_rng(seed).bytes(4096))


NOT_MODELS = {
    "a CSV": lambda p: p.write_text("1,2,3\n4,5,6\n"),
    "an empty file": lambda p: p.write_bytes(b""),
    "random bytes 0": lambda p: _write_random(p, 0),
    "random bytes 1": lambda p: _write_random(p, 1),
    "random bytes 2": lambda p: _write_random(p, 2),
    "a torch dict without hpo metadata": lambda p: torch.save({"a": torch.zeros(1)}, p),
    "a bare tensor": lambda p: torch.save(torch.zeros(3), p),
    "another format version": lambda p: torch.save(
        {"meta": {"format": "hpo-denoiser/0", "hidden_size": 8, "shift": 3}, "state_dict": {}}, p
    ),
    "weights of another size": lambda p: torch.save(
        {"meta": {"format": FORMAT, "hidden_size": 8, "shift": 3},
         "state_dict": Denoiser(4, 3).state_dict()}, p
    ),
    "metadata without weights": lambda p: torch.save(
        {"meta": {"format": FORMAT, "hidden_size": 8, "shift": 3}}, p
    ),
}


@pytest.mark.parametrize("make", NOT_MODELS.values(), ids=NOT_MODELS.keys())
def test_a_file_that_is_not_a_model_is_one_line_error(
    tmp_path: Path, files: dict[str, Path], make
) -> None:
    model = tmp_path / "model.pt"
    make(model)
    out = tmp_path / "out.csv"
    assert_one_line_error(denoise(model, files["signals"], out), model)
    assert not out.exists()


# Files that load (or fail to load) in ways load_model does not catch yet.
UNCAUGHT = {
    "pickle IndexError": lambda p: p.write_bytes(b"\x80\x02t"),
    "pickle KeyError": lambda p: p.write_bytes(b"\x80\x02h\x05"),
    "pickle struct.error": lambda p: p.write_bytes(b"\x80\x02J\x00"),
    "metadata without sizes": lambda p: torch.save({"meta": {"format": FORMAT}}, p),
    "non-numeric hidden size": lambda p: torch.save(
        {"meta": {"format": FORMAT, "hidden_size": "x", "shift": 3}, "state_dict": {}}, p
    ),
    "zero hidden size": lambda p: torch.save(
        {"meta": {"format": FORMAT, "hidden_size": 0, "shift": 3}, "state_dict": {}}, p
    ),
    "state_dict not a dict": lambda p: torch.save(
        {"meta": {"format": FORMAT, "hidden_size": 8, "shift": 3}, "state_dict": [1, 2]}, p
    ),
}


@pytest.mark.parametrize("make", UNCAUGHT.values(), ids=UNCAUGHT.keys())
def test_malformed_model_files_are_one_line_errors(
    tmp_path: Path, files: dict[str, Path], make
) -> None:
    model = tmp_path / "model.pt"
    make(model)
    assert_one_line_error(denoise(model, files["signals"], tmp_path / "out.csv"), model)


class Payload:
    """Unpickling this runs code: it creates the file named `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("writer", ["pickle.dump", "torch.save"])
def test_a_pickle_with_code_is_refused_not_executed(
    tmp_path: Path, files: dict[str, Path], writer: str
) -> None:
    marker = tmp_path / "executed"
    model = tmp_path / "evil.pt"
    with model.open("wb") as f:
        if writer == "pickle.dump":
            pickle.dump(Payload(marker), f)
        else:
            torch.save(Payload(marker), f)
    result = denoise(model, files["signals"], tmp_path / "out.csv")
    assert not marker.exists(), "loading the model file ran code from it"
    assert_one_line_error(result, model)
    # The payload is live: an unsafe load would have run it.
    with model.open("rb") as f:
        if writer == "pickle.dump":
            pickle.load(f)  # deliberately unsafe, on our own file
        else:
            torch.load(f, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("name", ["a[/b]x.pt", "my[bold]model.pt"])
def test_file_names_with_brackets_are_printed_verbatim(
    tmp_path: Path, files: dict[str, Path], name: str
) -> None:
    missing = tmp_path / name
    assert_one_line_error(denoise(missing, files["signals"], tmp_path / "out.csv"), missing)


# --- the same in a real process (warnings and tracebacks reach the terminal there) -------------


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpo.cli", *map(str, args)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )


def test_real_process_prints_one_line_for_a_missing_input(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    missing = tmp_path / "nope.csv"
    proc = run_cli("denoise", "--model", files["model"], "--input", missing,
                   "--output", tmp_path / "out.csv")
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and str(missing) in proc.stderr


def test_real_process_prints_one_line_for_a_plain_pickle(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    model = tmp_path / "evil.pkl"
    with model.open("wb") as f:
        pickle.dump(Payload(tmp_path / "executed"), f)
    proc = run_cli("denoise", "--model", model, "--input", files["signals"],
                   "--output", tmp_path / "out.csv")
    assert proc.returncode != 0
    assert not (tmp_path / "executed").exists()
    assert proc.stderr.strip().count("\n") == 0, proc.stderr


def test_train_and_create_estimate_memory_alike(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`hpo train` and `hpo create` on the same settings are refused or accepted alike, fresh
    curves or not: one estimate, in which fresh curves count a second training set (`hpo train
    --fresh` used to leave it out)."""
    import tomli_w

    from hpo import resources
    from hpo.task.source import memory_parts

    cfg = TrainConfig(hidden_size=8, shift=2, epochs=1)
    plain = sum(memory_parts(cfg, DataConfig()).values())
    fresh = sum(memory_parts(cfg, DataConfig(fresh=True)).values())
    assert fresh > plain
    # A machine whose share for one process lies between the two.
    monkeypatch.setattr(resources, "machine_memory",
                        lambda: int((plain + fresh) / 2 / resources.PROCESS_SHARE))
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    for is_fresh in (True, False):
        study = tmp_path / f"mem-{is_fresh}.toml"
        study.write_text(tomli_w.dumps({
            "name": study.stem, "trials": 1, "space": {"epochs": {"type": "int", "low": 1,
                                                               "high": 1}},
            "train": {"hidden_size": 8, "shift": 2},
            "data": {"seed": 0, "train": 200, "val": 50, "test": 1000, "fresh": is_fresh}}))
        created = invoke("create", study, "--storage", url)
        trained = invoke("train", "--hidden-size", "8", "--shift", "2", "--epochs", "1",
                         *(["--fresh"] if is_fresh else []), "--json")
        if is_fresh:
            assert_one_line_error(created, "of memory")
            assert_one_line_error(trained, "of memory")
            assert "data.test" in created.stderr and "--test-curves" in trained.stderr
        else:
            assert created.exit_code == 0, created.output
            assert trained.exit_code == 0, trained.output


def test_denoise_refuses_to_overwrite_without_force_and_score_measures_it(
        tmp_path: Path) -> None:
    clean = make_split(DataConfig(seed=3, n_val=6), "val")
    write_signals(tmp_path / "clean.csv", clean.clean)
    # A header row, as a spreadsheet writes one: skipped.
    (tmp_path / "noisy.csv").write_text(
        ",".join(f"t{i}" for i in range(clean.noisy.shape[1])) + "\n"
        + "\n".join(",".join(f"{v:.6g}" for v in row) for row in clean.noisy) + "\n")
    model = save_model(tmp_path / "m.pt", Denoiser(4, 1), TrainConfig(hidden_size=4, shift=1),
                       DataConfig())
    out = tmp_path / "out.csv"
    out.write_text("mine\n")
    r = invoke("denoise", "--model", model, "--input", tmp_path / "noisy.csv", "--output", out)
    assert_one_line_error(r, "--force")
    assert out.read_text() == "mine\n"
    r = invoke("denoise", "--model", model, "--input", tmp_path / "noisy.csv", "--output", out,
               "--force")
    assert r.exit_code == 0 and "denoised 6 signals of 80 points" in r.stdout, r.output
    r = invoke("score", "--clean", tmp_path / "clean.csv", "--noisy", tmp_path / "noisy.csv",
               "--denoised", tmp_path / "clean.csv", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["removed"] == 100.0, r.output
    half = (clean.clean + clean.noisy) / 2  # halfway: half of every error, 50 % removed
    write_signals(tmp_path / "half.csv", half)
    r = invoke("score", "--clean", tmp_path / "clean.csv", "--noisy", tmp_path / "noisy.csv",
               "--denoised", tmp_path / "half.csv")
    assert r.exit_code == 0 and r.stdout.startswith("50.0"), r.output
    write_signals(tmp_path / "short.csv", clean.clean[:3])
    assert_one_line_error(invoke("score", "--clean", tmp_path / "short.csv", "--noisy",
                                 tmp_path / "noisy.csv", "--denoised", out), "same shape")


def test_counts_of_one_read_in_the_singular(tmp_path: Path, files: dict[str, Path]) -> None:
    one = write_signals(tmp_path / "one.csv", read_signals(files["signals"])[:1])
    r = invoke("denoise", "--model", files["model"], "--input", one, "--output",
               tmp_path / "d.csv")
    assert r.exit_code == 0 and "denoised 1 signal of " in r.stdout, r.output
    r = invoke("score", "--clean", tmp_path / "d.csv", "--noisy", one, "--denoised",
               tmp_path / "d.csv")
    assert r.exit_code == 0 and "(1 signal of " in r.stdout, r.output
    r = invoke("train", "--epochs", "1", "--hidden-size", "2", "--train-curves", "4",
               "--val-curves", "2", "--test-curves", "2")
    assert r.exit_code == 0 and "(1 epoch, " in r.stdout, r.output


# --- a full disk, and inputs and outputs that are not plain files ------------------------------


def test_denoise_on_a_full_disk_leaves_no_output_and_the_rerun_needs_no_force(
        full_fs: FullFs, tmp_path: Path, files: dict[str, Path]) -> None:
    """The tester's case: a truncated out.csv that then blocked the rerun ("pass --force")."""
    big = write_signals(tmp_path / "big.csv",
                        np.random.default_rng(0).normal(size=(1000, 80)).astype(np.float32))
    full_fs.fill(leave=300 * 1024)
    out = full_fs.root / "out.csv"
    r = denoise(files["model"], big, out)
    assert_one_line_error(r, f"--output {out}")
    assert "cannot write the denoised signals (No space left on device)" in r.stderr
    assert full_fs.files() == []
    full_fs.free()
    r = denoise(files["model"], big, out)
    assert r.exit_code == 0, r.output
    assert read_signals(out).shape == (1000, 80)


def test_train_save_on_a_full_disk_names_the_disk_and_leaves_no_file(full_fs: FullFs) -> None:
    """torch.save fails with "unexpected pos 64 vs 0"; the message says the disk is full."""
    full_fs.fill(leave=4 * 1024)
    out = full_fs.root / "m.pt"
    r = invoke("train", "--epochs", "1", "--hidden-size", "32", "--train-curves", "4",
               "--val-curves", "2", "--test-curves", "2", "--save", out)
    assert r.exit_code != 0 and "Traceback" not in r.output
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: --save {out}: cannot write the model file (No space left on "
                           "device"), r.stderr
    assert "unexpected pos" not in r.stderr
    assert full_fs.files() == []


def test_a_fifo_as_input_is_named_as_one(tmp_path: Path, files: dict[str, Path]) -> None:
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    r = denoise(files["model"], fifo, tmp_path / "out.csv")
    assert_one_line_error(r, fifo)
    assert "not a regular file (a pipe" in r.stderr and "not found" not in r.stderr


def test_a_dangling_link_as_output_is_named_as_one(tmp_path: Path,
                                                   files: dict[str, Path]) -> None:
    link = tmp_path / "out.csv"
    link.symlink_to(tmp_path / "nowhere" / "out.csv")
    r = denoise(files["model"], files["signals"], link)
    assert_one_line_error(r, f"--output {link}")
    assert "symbolic link" in r.stderr and "File exists" not in r.stderr


def test_a_model_with_nan_weights_is_refused_before_anything_is_written(
        tmp_path: Path, files: dict[str, Path]) -> None:
    blob = torch.load(files["model"], weights_only=True)
    blob["state_dict"]["head.weight"].fill_(float("nan"))
    torch.save(blob, tmp_path / "nan.pt")
    out = tmp_path / "out.csv"
    r = denoise(tmp_path / "nan.pt", files["signals"], out)
    assert_one_line_error(r, tmp_path / "nan.pt")
    assert "(state_dict.head.weight: holds NaN weights)" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("field,value,words", [
    ("length", -80, "meta.data.length: must be >= 2"),
    ("x_max", float("nan"), "meta.data.x_max: must be finite"),
])
def test_denoise_refuses_damaged_metadata_instead_of_warning_about_it(
        tmp_path: Path, files: dict[str, Path], field: str, value: object, words: str) -> None:
    blob = torch.load(files["model"], weights_only=True)
    blob["meta"]["data"][field] = value
    torch.save(blob, tmp_path / "bad.pt")
    r = denoise(tmp_path / "bad.pt", files["signals"], tmp_path / "out.csv")
    assert_one_line_error(r, tmp_path / "bad.pt")
    assert words in r.stderr and "trained on" not in r.stderr


def test_threads_are_capped_at_one_per_usable_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tester's `--threads 1024` on 2 cores ran 2,048 threads for 9 minutes: a process gets
    at most one torch thread per core it may run on, and a warning line says so."""
    from hpo import resources

    monkeypatch.setattr(resources, "usable_cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        for argv, env_threads, said in (
                (["--threads", "1024"], None, "--threads 1024: using 2 threads, one per core"),
                ([], "64", "HPO_THREADS=64: using 2 threads, one per core")):
            if env_threads is not None:
                monkeypatch.setenv("HPO_THREADS", env_threads)
            torch.set_num_threads(1)
            r = invoke("train", *argv, "--epochs", "1", "--hidden-size", "4", "--train-curves",
                       "10", "--json")
            assert r.exit_code == 0, r.output
            assert torch.get_num_threads() == 2  # what the training ran with
            warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
            assert len(warnings) == 1 and said in warnings[0], r.stderr
        r = invoke("train", "--threads", "2", "--epochs", "1", "--hidden-size", "4",
                   "--train-curves", "10", "--json")
        assert r.exit_code == 0 and "warning" not in r.stderr, r.output
    finally:
        torch.set_num_threads(before)
