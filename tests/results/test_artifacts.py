"""Trial artifacts: uploads while trials run, `hpo export`, and `hpo artifacts prune`.

Trials here run through the real objective (hpo.run.objective.run_trial, the code a worker runs) on
a tiny study whose models learn something in a fraction of a second, so recorded scores are not
all zero and "export, then denoise, gives the recorded score" means something. Prune tests build
trials with small artifacts by hand: they are about which files go, on every storage backend.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from PIL import Image
from typer.testing import CliRunner

import hpo.run.uploads
from hpo.cli import app
from hpo.errors import ArtifactError
from hpo.results.artifacts import ENV, prune_artifacts, trial_artifacts
from hpo.run import objective
from hpo.store.attrs import PRUNE_ATTR
from hpo.store.engines import open_storage
from hpo.store.studies import create_study, load, make_sampler
from hpo.study.parse import load_study_file
from hpo.task.curves import make_split
from hpo.task.metric import percent_removed
from hpo.task.modelfile import load_model
from hpo.task.signals import read_signals, write_signals

# Three fixed trials that learn ~30 % in about 0.2 s each (lr 0.05 on 40 curves).
LEARNS: dict[str, Any] = {
    "trials": 3,
    "sampler": {"type": "points", "points": [
        {"hidden_size": 8, "shift": 2, "epochs": 15},
        {"hidden_size": 6, "shift": 3, "epochs": 12},
        {"hidden_size": 8, "shift": 0, "epochs": 8},
    ]},
    "space": {"hidden_size": {"type": "int", "low": 4, "high": 12},
              "shift": {"type": "int", "low": 0, "high": 5},
              "epochs": {"type": "int", "low": 5, "high": 20}},
    "train": {"lr": 0.05},
    "data": {"seed": 0, "train": 40, "val": 10, "test": 10},
}


def invoke(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result: Any, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert "Traceback" not in result.output and result.stdout == ""


def get_json(wsgi_app: Any, path: str) -> Any:
    from wsgiref.util import setup_testing_defaults

    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(wsgi_app(environ, lambda s, h, *a: status.append(s)))
    assert status[0].startswith("200"), (path, status, body[:200])
    return json.loads(body)


def run_study(path: Path, url: str, n: int | None = None) -> optuna.Study:
    """Creates the study and runs its trials in this process, as a worker would."""
    spec = load_study_file(path)
    create_study(spec, open_storage(url, create=True))
    study, spec = load(spec.name, open_storage(url, heartbeat=False))
    study.sampler = make_sampler(spec, 0)
    for _ in range(n or spec.trials):
        trial = study.ask()
        out = objective.run_trial(spec, trial, threads=1, host="test:1",
                                  call=lambda fn, w, **_: fn())
        study.tell(trial, out.values, state=out.state)
    return study


@pytest.fixture(autouse=True)
def _default_artifacts_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """This module checks the default place (beside the SQLite file): drop the suite's
    HPO_ARTIFACTS; tests that want the setting set it themselves."""
    monkeypatch.delenv(ENV, raising=False)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished three-trial study in SQLite, artifacts in the default place beside it."""
    d = tmp_path_factory.mktemp("searched")
    path = d / "learns.toml"
    import tomli_w

    path.write_text(tomli_w.dumps({"name": "learns", **LEARNS}))
    url = f"sqlite:///{d / 'db' / 'hpo.db'}"
    old = os.environ.pop(ENV, None)
    try:
        study = run_study(path, url)
    finally:
        if old is not None:
            os.environ[ENV] = old
    return {"url": url, "dir": d / "db" / "artifacts", "study": study,
            "spec": load_study_file(path)}


def test_each_complete_trial_uploads_its_picture_and_model(searched: dict[str, Any]) -> None:
    study, store = searched["study"], searched["dir"]
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 3 and sorted(p.name for p in store.iterdir()) == sorted(
        [t.user_attrs["artifact_picture"] for t in trials]
        + [t.user_attrs["artifact_model"] for t in trials]
        + [t.user_attrs["artifact_curves"] for t in trials])
    for t in trials:
        metas = {m.filename: m for m in optuna.artifacts.get_all_artifact_meta(
            t, storage=study._storage)}
        png, pt = metas[f"trial-{t.number}-curves.png"], metas[f"trial-{t.number}-model.pt"]
        curves = json.loads((store / t.user_attrs["artifact_curves"]).read_text())
        assert len(curves["val_removed"]) == t.user_attrs["epochs_run"] == curves["epoch"][-1]
        compact = t.user_attrs["learning_curve"]
        assert round(curves["val_removed"][-1], 3) == compact["val_removed"][-1]
        assert png.mimetype == "image/png" and png.artifact_id == t.user_attrs["artifact_picture"]
        assert pt.artifact_id == t.user_attrs["artifact_model"]
        with Image.open(store / png.artifact_id) as im:
            assert im.format == "PNG" and im.size == (720, 448)
        model, meta = load_model(store / pt.artifact_id)
        assert (meta["hidden_size"], meta["shift"]) == (t.params["hidden_size"], t.params["shift"])
        assert meta["train"]["seed"] == t.user_attrs["seeds"][0] and meta["train"]["lr"] == 0.05
        # One repeat: the uploaded model is the one that earned the trial's value.
        assert meta["scores"]["val_removed"] == pytest.approx(t.user_attrs["model_val_removed"],
                                                         abs=1e-4)
        assert t.user_attrs["model_val_removed"] == pytest.approx(t.value, abs=1e-3)
        assert 0 < t.user_attrs["artifact_seconds"] < 30
    assert max(t.value for t in trials) > 10  # the models learnt: the checks below mean something


@pytest.mark.parametrize(("setting", "drawn"), [
    (None, [80.0, 70.0, 60.0, 75.0, 90.0]),  # top: among the best three models so far
    ("all", [80.0, 70.0, 60.0, 50.0, 75.0, 90.0]),
    ("none", []),
])
def test_pictures_for_the_best_models_only_by_default(setting: str | None, drawn: list[float],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """HPO_PICTURES: a picture costs ~0.5 s of a worker; the ones a user opens are the best."""
    if setting is None:
        monkeypatch.delenv("HPO_PICTURES", raising=False)
    else:
        monkeypatch.setenv("HPO_PICTURES", setting)
    study = optuna.create_study(direction="maximize")
    got = []
    for score in (80.0, 70.0, 60.0, 50.0, 75.0, 90.0):
        trial = study.ask()
        if hpo.run.uploads.wants_picture(trial, score):
            got.append(score)
        trial.set_user_attr("model_val_removed", score)
        study.tell(trial, score)
    assert got == drawn


def test_a_bad_pictures_setting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPO_PICTURES", "some")
    r = invoke("studies", "--storage", "sqlite://")
    assert r.exit_code != 0
    assert r.stderr.strip() == "error: HPO_PICTURES='some': must be one of top, all, none"


def test_export_then_denoise_gives_the_recorded_score(searched: dict[str, Any],
                                                      tmp_path: Path) -> None:
    study, spec = searched["study"], searched["spec"]
    best = max(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    r = invoke("export", "learns", "--storage", searched["url"], "--out", tmp_path / "m.pt")
    assert r.exit_code == 0, r.output
    assert f"exported trial {best.number} of 'learns'" in r.stdout
    val = make_split(spec.data_config(), "val")
    write_signals(tmp_path / "noisy.csv", val.noisy)
    r = invoke("denoise", "--model", tmp_path / "m.pt", "--input", tmp_path / "noisy.csv",
               "--output", tmp_path / "clean.csv")
    assert r.exit_code == 0, r.output
    score = percent_removed(val.clean, val.noisy, read_signals(tmp_path / "clean.csv"))
    assert score == pytest.approx(best.user_attrs["model_val_removed"], abs=0.01)
    # --trial picks another one; its file is that trial's model.
    other = next(t for t in study.trials if t.number != best.number)
    r = invoke("export", "learns", "--storage", searched["url"], "--trial", other.number,
               "--out", tmp_path / "other.pt")
    assert r.exit_code == 0 and load_model(tmp_path / "other.pt")[1]["scores"][
        "val_removed"] == pytest.approx(other.user_attrs["model_val_removed"], abs=1e-4)


def test_export_mistakes_are_one_line(searched: dict[str, Any], tmp_path: Path) -> None:
    url = searched["url"]
    (tmp_path / "there.pt").write_bytes(b"x")
    assert_one_line_error(invoke("export", "learns", "--storage", url, "--out",
                                 tmp_path / "there.pt"), "--out", "--force")
    assert_one_line_error(invoke("export", "learns", "--storage", url, "--trial", "7", "--out",
                                 tmp_path / "a.pt"), "--trial 7", "0 to 2")
    assert_one_line_error(invoke("export", "learns", "--storage", url, "--out", tmp_path / "a.pt",
                                 "--artifacts", tmp_path / "nowhere"), "does not exist",
                          "--artifacts")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke("export", "learns", "--storage", url, "--out", tmp_path / "a.pt",
                                 "--artifacts", tmp_path / "empty"), "is not in", "--artifacts")
    assert_one_line_error(invoke("export", "nope", "--storage", url, "--out", tmp_path / "a.pt"),
                          "no study named 'nope'")
    assert not (tmp_path / "a.pt").exists()


def test_artifacts_setting_points_at_a_shared_directory(
        storage_url: str, study_file: Callable[..., Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    monkeypatch.setenv(ENV, str(shared))
    study = run_study(study_file(**{**LEARNS, "sampler": {"type": "random"}}), storage_url, 1)
    t = study.trials[0]
    assert t.state == TrialState.COMPLETE
    assert {p.name for p in shared.iterdir()} == {t.user_attrs["artifact_picture"],
                                                  t.user_attrs["artifact_model"],
                                                  t.user_attrs["artifact_curves"]}
    assert not (tmp_path / "artifacts").exists()  # not beside the SQLite file
    monkeypatch.delenv(ENV)
    r = invoke("export", study.study_name, "--storage", storage_url, "--artifacts", shared,
               "--out", tmp_path / "m.pt")
    assert r.exit_code == 0, r.output
    monkeypatch.setenv(ENV, "none")  # uploads off: the score is still recorded
    study = run_study(study_file(**{**LEARNS, "sampler": {"type": "random"}}), storage_url, 1)
    assert "model_val_removed" in study.trials[0].user_attrs
    assert trial_artifacts(study._storage, study.trials[0]) == []


def test_an_unusable_store_costs_no_result_and_names_the_fix(
        tmp_path: Path, study_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Results first: trained trials keep their values when uploads fail; the failure is
    recorded on each trial and logged once."""
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(ENV, str(tmp_path / "a-file" / "artifacts"))
    hpo.run.uploads._warned.clear()
    with caplog.at_level("WARNING", logger="hpo.worker"):
        study = run_study(study_file(**{**LEARNS, "sampler": {"type": "random"}}),
                          f"sqlite:///{tmp_path / 'hpo.db'}", 2)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for t in study.trials:
        assert t.value is not None and round(t.value, 4) == t.user_attrs["model_val_removed"]
        assert "cannot create it" in t.user_attrs["artifact_error"]
        assert f"set {ENV} to a writable" in t.user_attrs["artifact_error"]
    warnings = [r for r in caplog.records if "artifacts not uploaded" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    # Exporting such a trial names the upload's failure, not a prune or uploads turned off.
    r = invoke("export", study.study_name, "--out", tmp_path / "m.pt", "--storage",
               f"sqlite:///{tmp_path / 'hpo.db'}")
    assert_one_line_error(r, "has no model file (its upload failed:", "cannot create it")
    assert not (tmp_path / "m.pt").exists()


# --- prune --------------------------------------------------------------------------------------

def fake_study(url: str, store: Path, path: Path, values: list[float | None],
               size: int = 1000) -> optuna.Study:
    """Complete trials with these values (None: failed), each with a picture and a model of
    known sizes, plus one running trial with an artifact (it must never be touched)."""
    create_study(load_study_file(path), open_storage(url, create=True))
    study, _ = load(load_study_file(path).name, open_storage(url, heartbeat=False))
    fs = optuna.artifacts.FileSystemArtifactStore(store)
    store.mkdir(parents=True, exist_ok=True)
    for value in [*values, "running"]:
        t = study.ask({"hidden_size": optuna.distributions.IntDistribution(4, 8)})
        for name, n in (("curves.png", size), ("model.pt", 2 * size)):
            f = store.parent / f"trial-{t.number}-{name}"
            f.write_bytes(os.urandom(n))
            optuna.artifacts.upload_artifact(artifact_store=fs, file_path=str(f),
                                             study_or_trial=t)
        if value is None:
            study.tell(t, state=TrialState.FAIL)
        elif not isinstance(value, str):  # "running": left running
            study.tell(t, value)
    return study


def files_of(study: optuna.Study, number: int) -> list[str]:
    t = next(t for t in study.get_trials() if t.number == number)
    return sorted(m["artifact_id"] for m in trial_artifacts(study._storage, t))


def test_prune_keeps_the_best_k_and_frees_the_rest(
        storage_url: str, study_file: Callable[..., Path], tmp_path: Path) -> None:
    store = tmp_path / "store"
    study = fake_study(storage_url, store, study_file(), [1.0, 5.0, 3.0, 4.0, None, 2.0])
    before = {n: files_of(study, n) for n in range(7)}
    (store / "0123-not-an-artifact").write_text("a stranger's file")
    r = prune_artifacts(study, open_storage(storage_url, heartbeat=False), store, 2)
    assert r.kept == [1, 3] and r.trials == [0, 2, 4, 5]
    assert (r.removed, r.freed_bytes, r.missing, r.shared) == (8, 4 * 3000, 0, 0)
    fresh, _ = load(study.study_name, open_storage(storage_url, heartbeat=False))
    for n in (0, 2, 4, 5):
        assert files_of(fresh, n) == [] and not any((store / a).exists() for a in before[n])
    for n in (1, 3, 6):  # the best two, and the running trial
        assert files_of(fresh, n) == before[n] and all((store / a).exists() for a in before[n])
    assert (store / "0123-not-an-artifact").exists()
    assert fresh.user_attrs[PRUNE_ATTR][-1]["freed_bytes"] == 12000
    again = prune_artifacts(fresh, open_storage(storage_url, heartbeat=False), store, 2)
    assert (again.removed, again.freed_bytes) == (0, 0)
    # The dashboard still serves the study; pruned trials simply show no artifacts.
    from hpo.results.dashboard import make_app

    body = get_json(make_app(open_storage(storage_url, heartbeat=False), store),
                    f"/api/studies/{fresh._study_id}")
    shown = {t["number"]: [a["artifact_id"] for a in t["artifacts"]] for t in body["trials"]}
    assert shown[0] == [] and sorted(shown[1]) == sorted(before[1])


def test_prune_dry_run_and_cli(tmp_path: Path, study_file: Callable[..., Path]) -> None:
    url, store = f"sqlite:///{tmp_path / 'hpo.db'}", tmp_path / "artifacts"
    study = fake_study(url, store, study_file(), [1.0, 2.0, 3.0], size=2048)
    n_files = len(list(store.iterdir()))
    r = invoke("artifacts", "prune", study.study_name, "--keep-top", "1", "--storage", url,
               "--dry-run")
    assert r.exit_code == 0, r.output
    assert "would remove 4 artifacts of 2 trials (0, 1), would free 12.0 KiB" in r.stdout
    assert len(list(store.iterdir())) == n_files
    r = invoke("artifacts", "prune", study.study_name, "--keep-top", "1", "--storage", url,
               "--json")
    out = json.loads(r.stdout)
    assert (out["removed"], out["freed_bytes"], out["kept"]) == (4, 12288, [2])
    assert len(list(store.iterdir())) == n_files - 4
    assert_one_line_error(invoke("artifacts", "prune", study.study_name, "--keep-top", "0",
                                 "--storage", url, "--artifacts", tmp_path / "x"),
                          "does not exist")


def test_prune_leaves_shared_files_and_refuses_a_wrong_store(
        tmp_path: Path, study_file: Callable[..., Path]) -> None:
    url, store = f"sqlite:///{tmp_path / 'hpo.db'}", tmp_path / "artifacts"
    study = fake_study(url, store, study_file(), [1.0, 2.0])
    # A copy of trial 0 in another study (what optuna.copy_study does) shares its artifacts.
    other = optuna.create_study(study_name="copy", storage=open_storage(url, heartbeat=False))
    t = other.ask()
    st = study._storage
    for k, v in st.get_trial_system_attrs(study.trials[0]._trial_id).items():
        st.set_trial_system_attr(t._trial_id, k, v)
    other.tell(t, 0.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="none of the 2 artifacts"):
        prune_artifacts(study, open_storage(url, heartbeat=False), tmp_path / "empty", 0)
    assert len(files_of(study, 0)) == 2  # nothing was marked
    r = prune_artifacts(study, open_storage(url, heartbeat=False), store, 0)
    assert (r.removed, r.shared, r.trials) == (2, 2, [1])
    assert all((store / a).exists() for a in files_of(study, 0))


def test_prune_on_a_store_that_refuses_records_only_what_went(
        tmp_path: Path, study_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Files first, then the metadata of the files that were removed: a store that refuses
    after the first file (read-only, full, gone) leaves one line, that file recorded as
    removed, and every other reference pointing at a file that is still there."""
    url, store = f"sqlite:///{tmp_path / 'hpo.db'}", tmp_path / "store"
    study = fake_study(url, store, study_file(), [1.0, 5.0, 3.0])
    before = {n: files_of(study, n) for n in range(4)}
    real, calls = Path.unlink, []

    def refusing(self: Path, missing_ok: bool = False) -> None:
        if self.parent == store:
            calls.append(self.name)
            if len(calls) > 1:
                raise PermissionError(13, "Read-only file system")
        real(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refusing)
    with pytest.raises(ArtifactError) as info:
        prune_artifacts(study, open_storage(url, heartbeat=False), store, 1)
    assert "Read-only file system" in str(info.value) and "removed 1 of 4" in str(info.value)
    monkeypatch.setattr(Path, "unlink", real)
    fresh, _ = load(study.study_name, open_storage(url, heartbeat=False))
    left = {n: files_of(fresh, n) for n in range(4)}
    assert sum(len(v) for v in left.values()) == sum(len(v) for v in before.values()) - 1
    for ids in left.values():  # every reference kept points at a file that is there
        assert all((store / a).is_file() for a in ids)
    assert fresh.user_attrs[PRUNE_ATTR][-1]["removed"] == 1
    again = prune_artifacts(fresh, open_storage(url, heartbeat=False), store, 1)
    assert again.removed == 3 and not any((store / a).exists() for n in (0, 2)
                                          for a in before[n])
