"""Your own signals, end to end: a study on a data file (.npy, .csv, a paired noisy file,
normalized or not) created, searched, exported, denoised, evaluated and baselined on the same
signals; a changed file refused in one line by a worker in another process and by every command;
`hpo train --data-file --normalize` -> model file -> `hpo denoise` scoring what training scored;
and the study-file mistakes of a data file, each one `error:` line through `hpo create` that
leaves the storage as it was, on every backend. Tiny data (40 signals of 16 points) and models
of a few epochs: the module runs in well under a minute.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import tomli_w
from optuna.trial import TrialState
from typer.testing import CliRunner

from hpo.cli import app
from hpo.run import objective
from hpo.store.attrs import SPEC_ATTR
from hpo.store.engines import open_storage, study_names
from hpo.store.studies import load, make_sampler
from hpo.study.note import study_note
from hpo.study.parse import load_study_file
from hpo.task.datafile import FLAG_KEYS, FileData, describe_file
from hpo.task.metric import percent_removed
from hpo.task.modelfile import load_model
from hpo.task.normalize import fit_scale
from hpo.task.signals import file_digest, read_signals, write_signals
from hpo.task.source import model_split
from hpo.task.train import predict
from tests.support.fullfs import FullFs, full_fs_fixture  # noqa: F401 (the full_fs fixture)

ROOT = Path(__file__).resolve().parents[2]
# Two fixed trials that learn a little in a fraction of a second (lr 0.05).
BODY: dict[str, Any] = {
    "trials": 2, "seed": 0,
    "sampler": {"type": "points", "points": [{"hidden_size": 6, "shift": 1, "epochs": 4},
                                             {"hidden_size": 4, "shift": 0, "epochs": 3}]},
    "space": {"hidden_size": {"type": "int", "low": 4, "high": 8},
              "shift": {"type": "int", "low": 0, "high": 2},
              "epochs": {"type": "int", "low": 2, "high": 4}},
    "train": {"lr": 0.05},
}


def signals(n: int = 40, length: int = 16, seed: int = 0) -> np.ndarray:
    """Smooth rows at very different levels (-50 to 400) and sizes, like real series."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 2 * np.pi, length)
    amp, level = rng.uniform(0.5, 5, (n, 1)), rng.uniform(-50, 400, (n, 1))
    return (level + amp * np.sin(x + rng.uniform(0, 6, (n, 1)))).astype(np.float32)


def write_csv(path: Path, rows: Any) -> Path:
    path.write_text("\n".join(",".join(repr(float(v)) for v in r) for r in rows) + "\n")
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """tmp/data: clean.npy, clean.csv (the same rows) and noisy.npy (their measured inputs)."""
    d = tmp_path / "data"
    d.mkdir()
    x = signals()
    np.save(d / "clean.npy", x)
    write_csv(d / "clean.csv", x)
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, x.shape) * 0.3 * np.ptp(x, axis=1, keepdims=True)
    np.save(d / "noisy.npy", (x + noise).astype(np.float32))
    return d


def study_file(where: Path, data: dict[str, Any], **top: Any) -> Path:
    """A study file in `where` (data paths relative to it), with a unique name."""
    body = {"name": f"f{uuid.uuid4().hex[:10]}", **BODY, **top, "data": data}
    body = {k: v for k, v in body.items() if v is not None}
    path = where / f"{body['name']}.toml"
    path.write_text(tomli_w.dumps(body))
    return path


def invoke(*args: str | Path, **kw: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], **kw)


def one_line_error(result: Any, *names: str | Path) -> str:
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}")
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for name in names:
        assert str(name) in lines[0], lines[0]
    assert "Traceback" not in result.output and result.stdout == ""
    return lines[0]


def run_trials(name: str, url: str) -> optuna.Study:
    """The study's trials, in this process, through the code a worker runs."""
    study, spec = load(name, open_storage(url, heartbeat=False))
    study.sampler = make_sampler(spec, 0)
    for _ in range(spec.trials):
        trial = study.ask()
        out = objective.run_trial(spec, trial, threads=1, host="test:1",
                                  call=lambda fn, w, **_: fn())
        study.tell(trial, out.values, state=out.state)
    return study


# --- every format, end to end --------------------------------------------------------------------

# Noise of 0.4 x peak-to-peak: enough for models of a few epochs to remove some of it.
FORMATS: dict[str, dict[str, Any]] = {
    "npy": {"file": "data/clean.npy", "noise_ratio": 0.4},
    "csv_normalized": {"file": "data/clean.csv", "normalize": True, "seed": 3,
                       "noise_ratio": 0.4},
    "npy_with_noisy_file": {"file": "data/clean.npy", "noisy_file": "data/noisy.npy",
                            "normalize": True, "train": 20, "val": 8, "test": 8},
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_a_study_on_each_format_runs_end_to_end(fmt: str, data_dir: Path, tmp_path: Path
                                                ) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    path = study_file(tmp_path, FORMATS[fmt])
    r = invoke("create", path, "--storage", url)
    assert r.exit_code == 0, r.output
    name = path.stem
    study = run_trials(name, url)
    spec = load(name, open_storage(url, heartbeat=False))[1]
    fd = spec.file_data()
    assert fd is not None
    # Resolved against the study file's directory (this process runs in the repository).
    assert fd.path == str(tmp_path / FORMATS[fmt]["file"])
    assert fd.sha256 == file_digest(fd.path) and fd.shape == (40, 16)
    assert fd.normalize == bool(FORMATS[fmt].get("normalize"))
    assert set(study.user_attrs[SPEC_ATTR]["data"]) == {"file"}
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    best = max(trials, key=lambda t: t.value or 0.0)
    assert best.value is not None
    if fd.normalize:
        assert best.value > 5  # the model learnt: the comparisons below mean something
    for t in trials:
        assert "artifact_error" not in t.user_attrs, t.user_attrs["artifact_error"]
        assert t.user_attrs["model_val_removed"] == pytest.approx(t.value, abs=1e-3)

    # Export -> denoise on the study's own validation inputs reproduces the recorded score, on
    # the original scale (so with the normalization the model file records).
    r = invoke("export", name, "--storage", url, "--out", tmp_path / "m.pt")
    assert r.exit_code == 0, r.output
    meta = load_model(tmp_path / "m.pt")[1]
    assert meta["normalize"] is fd.normalize
    assert (meta["data"]["file"], meta["data"]["sha256"], meta["data"]["length"]) == (
        fd.path, fd.sha256, 16)
    val = model_split(fd, "val").raw
    assert len(val) == fd.sizes()[1]
    np.save(tmp_path / "val_noisy.npy", val.noisy)
    r = invoke("denoise", "--model", tmp_path / "m.pt", "--input", tmp_path / "val_noisy.npy",
               "--output", tmp_path / "out.csv")
    assert r.exit_code == 0 and r.stderr == "", r.output
    got = percent_removed(val.clean, val.noisy, read_signals(tmp_path / "out.csv"))
    assert got == pytest.approx(best.user_attrs["model_val_removed"], abs=0.05)

    # evaluate retrains on the same signals: the first seed's validation score comes back.
    r = invoke("evaluate", name, "--storage", url, "--top", "1", "--seeds", "1", "--workers",
               "1", "--json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)[0]
    assert row["val_mean"] == pytest.approx(best.value, abs=1e-6)
    assert 0 <= row["test_mean"] <= 100

    # The baselines and the note describe this file.
    r = invoke("baselines", "--study", name, "--storage", url, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["data"]["file"], out["data"]["sha256"]) == (fd.path, fd.sha256)
    assert out["data"]["val"] == fd.sizes()[1] and len(out["baselines"]) == 2
    note = study_note(spec)
    for needle in (fd.path, fd.sha256[:12], "40 signals of 16 points",
                   "measured" if fd.noisy_path else "Gaussian",
                   "**normalized**" if fd.normalize else "not normalized"):
        assert needle in note, needle


def test_a_synthetic_study_stores_what_it_always_stored() -> None:
    spec = load_study_file(ROOT / "studies" / "smoke.toml")
    assert spec.file_data() is None
    assert spec.to_dict()["data"] == {"seed": 0, "train": 100, "val": 20, "test": 100}
    assert set(spec.to_dict()) == {"name", "trials", "seed", "repeats", "description", "metrics",
                                   "sampler", "pruner", "space", "train", "data"}


def test_the_example_study_describes_the_co2_file() -> None:
    spec = load_study_file(ROOT / "studies" / "co2.toml")
    fd = spec.file_data()
    assert fd is not None and fd.normalize
    assert fd.path == str(ROOT / "studies" / "data" / "co2_weekly.npy")
    assert fd.shape == (403, 80) and fd.sizes() == (243, 80, 80)


# --- the same file everywhere --------------------------------------------------------------------


def test_a_changed_file_is_refused_by_a_worker_elsewhere_and_by_every_command(
        data_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    path = study_file(tmp_path, {"file": "data/clean.npy"})
    name = path.stem
    assert invoke("create", path, "--storage", url).exit_code == 0
    run_trials(name, url)
    recorded = file_digest(data_dir / "clean.npy")
    np.save(data_dir / "clean.npy", signals(seed=9))  # same shape, other values
    now = file_digest(data_dir / "clean.npy")

    env = {k: v for k, v in os.environ.items() if k != "HPO_STORAGE"}
    proc = subprocess.run([sys.executable, "-m", "hpo", "worker", name, "--storage", url],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    for needle in ("error: ", f"study {name}", str(data_dir / "clean.npy"), recorded[:12],
                   now[:12], "restore it or create a new study"):
        assert needle in lines[0], lines[0]
    assert len(load(name, open_storage(url, heartbeat=False))[0].trials) == 2  # none claimed

    for argv in (["evaluate", name, "--top", "1", "--seeds", "1"], ["replay", name, "0"],
                 ["baselines", "--study", name]):
        one_line_error(invoke(*argv, "--storage", url), str(data_dir / "clean.npy"),
                       recorded[:12])
    # Re-creating from the study file sees the new hash: a changed definition.
    one_line_error(invoke("create", path, "--storage", url), "different definition",
                   "data.file.sha256")
    # The file restored, everything works again.
    np.save(data_dir / "clean.npy", signals())
    assert file_digest(data_dir / "clean.npy") == recorded
    assert invoke("create", path, "--storage", url).exit_code == 0


# --- normalization: train -> model file -> denoise -----------------------------------------------


def test_normalized_training_round_trips_through_the_model_file(data_dir: Path,
                                                                tmp_path: Path) -> None:
    csv = data_dir / "clean.csv"
    r = invoke("train", "--data-file", csv, "--normalize", "--noise-ratio", "0.4", "--epochs",
               "4", "--hidden-size", "6", "--shift", "1", "--lr", "0.05", "--save",
               tmp_path / "m.pt", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["data"]["splits"] == [24, 8, 8] and out["data"]["normalize"] is True
    assert out["test_removed"] > 5  # normalized, it learns even from a few epochs
    model, meta = load_model(tmp_path / "m.pt")
    assert meta["normalize"] is True
    assert meta["data"]["file"] == str(csv) and meta["data"]["sha256"] == file_digest(csv)
    assert meta["data"]["length"] == 16 and meta["data"]["splits"] == [24, 8, 8]
    assert meta["scores"]["test_removed"] == pytest.approx(out["test_removed"], abs=1e-4)

    # The held-out inputs, denoised by the CLI, score what training reported.
    test = model_split(describe_file(csv, normalize=True, noise_ratio=0.4, keys=FLAG_KEYS),
                       "test").raw
    write_signals(tmp_path / "test_noisy.csv", test.noisy)
    r = invoke("denoise", "--model", tmp_path / "m.pt", "--input", tmp_path / "test_noisy.csv",
               "--output", tmp_path / "clean.csv")
    assert r.exit_code == 0 and "normalized" in r.stdout, r.output
    got = read_signals(tmp_path / "clean.csv")
    assert percent_removed(test.clean, test.noisy, got) == pytest.approx(
        out["test_removed"], abs=0.05)
    noisy = read_signals(tmp_path / "test_noisy.csv")
    scale = fit_scale(noisy)  # what denoise must have done: normalize, predict, map back
    np.testing.assert_allclose(got, scale.undo(predict(model, scale.apply(noisy))),
                               rtol=1e-5, atol=2e-3)
    assert not np.allclose(got, predict(model, noisy), atol=1.0)

    # Another length: denoised anyway, with one warning naming both lengths.
    np.save(tmp_path / "long.npy", signals(3, length=24))
    r = invoke("denoise", "--model", tmp_path / "m.pt", "--input", tmp_path / "long.npy",
               "--output", tmp_path / "long.csv")
    assert r.exit_code == 0, r.output
    warning = r.stderr.strip().splitlines()
    assert len(warning) == 1 and "24 points" in warning[0] and "16-point" in warning[0]
    assert read_signals(tmp_path / "long.csv").shape == (3, 24)


@pytest.mark.parametrize(("flags", "names"), [
    (["--noisy-file", "n.npy"], "--noisy-file"),
    (["--normalize"], "--normalize"),
    (["--data-file", "{d}/clean.npy", "--train-curves", "10"], "--val-curves"),
    (["--data-file", "{d}/clean.npy", "--noisy-file", "{d}/noisy.npy", "--noise-ratio", "0.1"],
     "--noise-ratio"),
    (["--data-file", "{d}/nope.npy"], "--data-file"),
    (["--data-file", "{d}/clean.npy", "--train-curves", "30", "--val-curves", "10",
      "--test-curves", "10"], "--train-curves + --val-curves + --test-curves"),
    (["--data-file", "{d}/clean.npy", "--noisy-file", "{d}/short.npy"], "--noisy-file"),
], ids=["noisy_without_file", "normalize_without_file", "partial_counts",
        "noise_ratio_with_noisy_file", "missing_file", "too_few_signals", "noisy_shape"])
def test_train_flag_mistakes_are_one_line(flags: list[str], names: str, data_dir: Path) -> None:
    np.save(data_dir / "short.npy", signals(40, length=15))
    one_line_error(invoke("train", "--epochs", "1", *(f.format(d=data_dir) for f in flags)),
                   names)


# --- a data file's mistakes, through `hpo create`, on every backend ------------------------------


def bad_files(d: Path) -> None:
    """Broken data files beside the good ones of `data_dir`: ten rows, row 4 broken (enough
    rows for the splits, so that the broken value is what is refused)."""
    for name, row in (("ragged", "4,5"), ("text", "4,abc,6"), ("inf", "4,inf,6")):
        (d / f"{name}.csv").write_text("1,2,3\n" * 3 + f"{row}\n" + "1,2,3\n" * 6)
    nan = np.ones((10, 4))
    nan[3, 2] = np.nan
    np.save(d / "nan.npy", nan)
    np.save(d / "flat.npy", np.zeros(40))
    np.save(d / "short.npy", signals(40, length=15))
    (d / "a_dir.npy").mkdir()
    (d / "s.txt").write_text("1,2\n")


# (case, [data] table, what the one line must name besides the study file)
BAD: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("missing", {"file": "data/nope.npy"}, ("data.file", "data/nope.npy", "not found")),
    ("directory", {"file": "data/a_dir.npy"}, ("data.file", "is a directory")),
    ("extension", {"file": "data/s.txt"}, ("data.file", "'.txt'", "use .npy or .csv")),
    ("ragged_csv", {"file": "data/ragged.csv"}, ("data.file", "ragged.csv", "row 4",
                                                 "same length")),
    ("text_csv", {"file": "data/text.csv"}, ("data.file", "text.csv", "row 4, column 2",
                                             "not a number")),
    ("inf_csv", {"file": "data/inf.csv"}, ("data.file", "inf.csv", "row 4, column 2",
                                           "remove NaN/inf")),
    ("nan_npy", {"file": "data/nan.npy"}, ("data.file", "nan.npy", "signals[3, 2] is nan",
                                           "remove NaN/inf")),
    ("one_dimensional", {"file": "data/flat.npy"}, ("data.file", "flat.npy", "1-D",
                                                    "x[None, :]")),
    ("noisy_shape", {"file": "data/clean.npy", "noisy_file": "data/short.npy"},
     ("data.noisy_file", "short.npy", "(40, 15)", "(40, 16)")),
    ("too_few_signals", {"file": "data/clean.npy", "train": 30, "val": 10, "test": 10},
     ("data.file", "holds 40 signals", "lower them")),
    ("unknown_key", {"file": "data/clean.npy", "files": "x"}, ("data.files", "unknown key")),
    ("noisy_without_file", {"noisy_file": "data/noisy.npy"}, ("data.noisy_file",
                                                              "data.file")),
    ("normalize_without_file", {"normalize": True}, ("data.normalize", "data.file")),
    ("partial_counts", {"file": "data/clean.npy", "train": 20}, ("data.val", "together")),
    ("noise_ratio_with_noisy_file", {"file": "data/clean.npy", "noisy_file": "data/noisy.npy",
                                     "noise_ratio": 0.1}, ("data.noise_ratio",)),
    ("empty_path", {"file": " "}, ("data.file", "empty")),
    ("negative_seed", {"file": "data/clean.npy", "seed": -1}, ("data.seed",)),
]


def storage_state(storage: optuna.storages.RDBStorage, existing: str, d: Path) -> Any:
    """What must not change: a SQLite file's rows and bytes; on a shared server (other tests may
    write to it meanwhile) the existing study's definition and trials, and which of this
    module's studies exist."""
    if storage.engine.url.get_backend_name() == "sqlite":
        con = sqlite3.connect(d / "hpo.db")
        try:
            return "\n".join(con.iterdump()), (d / "hpo.db").read_bytes()
        finally:
            con.close()
    sid = storage.get_study_id_from_name(existing)
    mine = sorted(n for n in study_names(storage) if n.startswith("bad-"))
    return (storage.get_study_user_attrs(sid), len(storage.get_all_trials(sid, deepcopy=False)),
            mine)


def test_data_file_mistakes_are_one_line_and_change_no_storage(
        storage_url: str, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    bad_files(data_dir)
    existing = study_file(tmp_path, {"file": "data/clean.npy"})
    assert invoke("create", existing, "--storage", storage_url).exit_code == 0
    storage = open_storage(storage_url, heartbeat=False)
    request.addfinalizer(storage.engine.dispose)
    before = storage_state(storage, existing.stem, tmp_path)

    def check(path: Path, *names: str | Path) -> None:
        one_line_error(invoke("create", path, "--storage", storage_url,
                              env={"HPO_STORAGE": None}), *names)
        assert storage_state(storage, existing.stem, tmp_path) == before, path

    for case, data, names in BAD:
        path = study_file(tmp_path, data, name=f"bad-{case}-{uuid.uuid4().hex[:6]}")
        check(path, path, *names)  # the study file, the dotted key, the data file, the fix
    path = study_file(tmp_path, {"file": "data/clean.npy"}, name=f"bad-tc-{uuid.uuid4().hex[:6]}",
                      space={**BODY["space"], "train_curves": {"type": "int", "low": 10,
                                                               "high": 20}},
                      sampler={"type": "tpe"})
    check(path, path, "space.train_curves")
    # Memory: what the file's splits need is part of the estimate, refused by its key.
    monkeypatch.setattr(FileData, "estimate_bytes", lambda self: 10**16)
    path = study_file(tmp_path, {"file": "data/clean.npy"}, name=f"bad-mem-{uuid.uuid4().hex[:6]}")
    check(path, path, "data.file", "of memory")
    monkeypatch.undo()
    # The existing study's file changed: its definition (the hash is part of it) differs.
    np.save(data_dir / "clean.npy", signals(seed=5))
    check(existing, existing.stem, "different definition", "data.file.sha256")


def test_the_checks_also_hold_for_a_spec_as_storage_gives_it_back(data_dir: Path,
                                                                  tmp_path: Path) -> None:
    """construct() on a stored spec (what a worker builds from) finds a changed file itself."""
    from hpo.errors import StudyFileError
    from hpo.study.construct import construct
    from hpo.study.spec import StudySpec

    spec = load_study_file(study_file(tmp_path, {"file": "data/clean.csv"}))
    stored = StudySpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert stored == spec and stored.fingerprint() == spec.fingerprint()
    construct(stored)
    write_csv(data_dir / "clean.csv", signals(seed=2))
    with pytest.raises(StudyFileError, match="sha256") as e:
        construct(stored, "stored")
    assert "\n" not in str(e.value) and str(data_dir / "clean.csv") in str(e.value)


def test_split_on_a_full_disk_names_the_flag_and_leaves_no_partial_file(
        data_dir: Path, tmp_path: Path, full_fs: FullFs) -> None:
    """--noisy on a full disk: one line naming --noisy (not --output, not "denoised"), and no
    partial file. --clean, written first and complete, stays (hpo split writes its files one
    by one, each atomically)."""
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    path = study_file(tmp_path, FORMATS["npy"])
    assert invoke("create", path, "--storage", url).exit_code == 0
    clean, noisy = tmp_path / "c.csv", full_fs.root / "n.csv"
    full_fs.fill()
    r = invoke("split", path.stem, "test", "--storage", url, "--clean", clean, "--noisy", noisy)
    line = one_line_error(r, f"--noisy {noisy}", "No space left on device")
    assert "--output" not in line and "denoised" not in line
    assert full_fs.files() == []
    full_fs.free()
    r = invoke("split", path.stem, "test", "--storage", url, "--clean", clean, "--noisy", noisy,
               "--force")
    assert r.exit_code == 0, r.output
    assert read_signals(noisy).shape == read_signals(clean).shape
