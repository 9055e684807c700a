"""A complete trial's artifacts: its picture and model file, uploaded while it still runs.

Results first: the trial's value is the product, and nothing here may cost it. Any failure of
drawing, saving or uploading (a full disk, a read-only store, a matplotlib bug) is caught,
recorded on the trial as `artifact_error`, and logged once per worker; the trial is still told
COMPLETE with its value. A store that is not writable is reported once when the worker starts.
This module trains nothing but imports torch (predict, save) and matplotlib (the picture): only
workers import it.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from hpo import env
from hpo.errors import ArtifactError
from hpo.results.artifacts import (
    CURVES_SUFFIX,
    ENV,
    MODEL_SUFFIX,
    PICTURE_SUFFIX,
    open_store,
    resolve_dir,
    storage_url_of,
)
from hpo.run import timing
from hpo.store import optuna_api
from hpo.store.attrs import ARTIFACT_ERROR_ATTR, MODEL_SCORE_ATTR
from hpo.task.config import TrainConfig
from hpo.task.curves import DataConfig, Split
from hpo.task.metric import percent_removed
from hpo.task.source import ModelSplit, Source, x_axis
from hpo.task.train import TrainResult, predict

log = logging.getLogger("hpo.worker")
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)


def check_store(storage: optuna.storages.BaseStorage) -> Path | None:
    """The store this worker uploads to, checked writable now; a warning (once) if it is not.
    Trials still run and complete without artifacts."""
    where = resolve_dir(None, storage_url_of(storage))
    if where is None:
        return None
    try:
        where.mkdir(parents=True, exist_ok=True)
        probe = where / f".hpo-write-check-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        _warn_once(str(where), f"artifact store {where} is not writable ({e.strerror}): trials "
                   f"will complete without pictures or model files; set {ENV} to a writable "
                   "(shared) directory, or to none")
    return where


def upload_trial_artifacts(trial: optuna.Trial, result: TrainResult, train_cfg: TrainConfig,
                           data: Source, val: Split | ModelSplit, call: Callable[..., Any],
                           store_dir: Path | None = None) -> dict[str, Any]:
    """Scores the trial's model on the validation split and uploads its picture and model file.

    Returns user attrs to record: `model_val_removed` (what the uploaded model file scores on the
    validation curves, on their original scale, which `hpo export` + `hpo denoise` reproduce),
    the two artifact ids and the seconds this took; or `artifact_error` when anything failed.
    """
    start = time.perf_counter()
    split = val if isinstance(val, ModelSplit) else ModelSplit(val, val)
    denoised = split.original(predict(result.model, split.model.noisy))
    score = percent_removed(split.raw.clean, split.raw.noisy, denoised)
    attrs: dict[str, Any] = {MODEL_SCORE_ATTR: round(score, 4)}
    if store_dir is None:
        store_dir = resolve_dir(None, storage_url_of(trial.storage))
    if store_dir is None:
        return attrs
    if trial.storage.get_trial(optuna_api.trial_id(trial)).state.is_finished():
        # Declared dead meanwhile: Optuna would write each file, then refuse to record it.
        raise optuna.exceptions.UpdateFinishedTrialError(f"trial {trial.number} has finished")
    try:
        attrs.update(_upload_all(trial, result, train_cfg, data, split.raw, denoised, score,
                                 call, store_dir))
    except optuna.exceptions.UpdateFinishedTrialError:
        raise  # declared dead meanwhile: the objective keeps the files for the re-queued copy
    except Exception as e:  # noqa: BLE001 - results first: any failure here is only recorded
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        attrs[ARTIFACT_ERROR_ATTR] = reason
        _warn_once(f"upload:{type(e).__name__}", f"trial {trial.number}: artifacts not uploaded "
                   f"({reason}); the trial keeps its value. Later failures of this kind are "
                   "recorded on each trial (artifact_error) without another warning")
    attrs["artifact_seconds"] = round(time.perf_counter() - start, 3)
    return attrs


def _upload_all(trial: optuna.Trial, result: TrainResult, train_cfg: TrainConfig,
                data: Source, val: Split, denoised: Any, score: float,
                call: Callable[..., Any], store_dir: Path) -> dict[str, Any]:
    from hpo.task.modelfile import save_model

    store = open_store(store_dir, create=True, flag=ENV)
    stem = f"trial-{trial.number}"
    title = (f"trial {trial.number}: {score:.2f} % of the noise removed (hidden "
             f"{train_cfg.hidden_size}, shift {train_cfg.shift}, {train_cfg.epochs} epochs)")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hpo-artifacts-") as tmp:
        files = []
        if wants_picture(trial, score):
            from hpo.task.plots import trial_png

            picture = Path(tmp) / f"{stem}{PICTURE_SUFFIX}"
            # A file's signals have no x grid: they are drawn over their sample index.
            synthetic = isinstance(data, DataConfig)
            picture.write_bytes(trial_png(x_axis(data), val.clean, val.noisy, denoised,
                                          result.val_curve, result.loss_curve, title,
                                          item="curve" if synthetic else "signal",
                                          x_label=None if synthetic else "sample"))
            files.append(("artifact_picture", picture))
        model = save_model(Path(tmp) / f"{stem}{MODEL_SUFFIX}", result.model, train_cfg, data,
                           {"val_removed": score})
        curves = Path(tmp) / f"{stem}{CURVES_SUFFIX}"
        curves.write_text(json.dumps({
            "epoch": list(range(1, len(result.val_curve) + 1)), "val_removed": result.val_curve,
            "train_loss": [x if math.isfinite(x) else str(x) for x in result.loss_curve]}))
        files += [("artifact_model", model), ("artifact_curves", curves)]
        for key, path in files:
            out[key] = call(lambda p=path: _upload(store, store_dir, trial, p),
                            f"upload {path.name}", kind=timing.ARTIFACTS)
    return out


TOP_PICTURES = 3


def wants_picture(trial: optuna.Trial, score: float) -> bool:
    """HPO_PICTURES (hpo.env.pictures): with 'top', whether this trial's model (`score`, % of
    the noise removed on validation) ranks among the TOP_PICTURES best models of the complete
    trials so far, whatever the study's objective."""
    which = env.pictures()
    if which != "top":
        return which == "all"
    done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    better = sum(1 for t in done if isinstance(t.user_attrs.get(MODEL_SCORE_ATTR), float)
                 and t.user_attrs[MODEL_SCORE_ATTR] > score)
    return better < TOP_PICTURES


def _upload(store: optuna.artifacts.FileSystemArtifactStore, where: Path, trial: optuna.Trial,
            path: Path) -> str:
    try:
        # Python guesses .pt as a SNES page table; a model file is plain bytes to a browser.
        mime = "application/octet-stream" if path.suffix == ".pt" else None
        return optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path),
                                                study_or_trial=trial, mimetype=mime)
    except OSError as e:
        raise ArtifactError(f"artifact store {where}: cannot write {path.name} ({e.strerror}); "
                            f"set {ENV} to a writable (shared) directory") from e

