"""Model files that describe themselves and load without unpickling code.

A model file is a torch.save of plain data: the state dict's tensors plus a `meta` dict of
strings and numbers (format version, hidden size, shift, the training and data settings, the
scores). Loading uses `torch.load(weights_only=True)`, which refuses arbitrary pickles.

`meta["data"]` says where the training signals came from: the synthetic protocol's settings, or
a data file's path, sha256 and signal length (hpo.task.source.file_meta). `meta["normalize"]`
says whether the model reads each signal normalized by its own mean and std; `apply_model`
does that, so `hpo denoise` uses a model exactly as it was trained and scored.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpo.errors import InputFileError
from hpo.task.config import TrainConfig
from hpo.task.curves import DataConfig
from hpo.task.datafile import FileData
from hpo.task.model import Denoiser
from hpo.task.normalize import fit_scale
from hpo.task.source import Source, file_meta
from hpo.task.train import predict

FORMAT = "hpo-denoiser/1"


def save_model(
    path: str | Path,
    model: Denoiser,
    train_cfg: TrainConfig,
    data_cfg: Source,
    scores: dict[str, float] | None = None,
) -> Path:
    meta: dict[str, Any] = {
        "format": FORMAT,
        "hidden_size": model.hidden_size,
        "shift": model.shift,
        "train": asdict(train_cfg),
        "data": asdict(data_cfg) if isinstance(data_cfg, DataConfig) else file_meta(data_cfg),
        "normalize": isinstance(data_cfg, FileData) and data_cfg.normalize,
        "scores": dict(scores or {}),
        "torch": str(torch.__version__),
    }
    path = Path(path)
    if path.parent != Path():
        path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"meta": meta, "state_dict": state}, path)
    return path


def load_model(path: str | Path) -> tuple[Denoiser, dict[str, Any]]:
    """Returns the model (in eval mode, on the CPU) and its metadata."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: model file not found; pass --model a file saved by "
                             "`hpo train --save` or `hpo export`")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about old pickle protocols first
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses code; malformed bytes raise many kinds
        raise InputFileError(f"{path}: not an hpo model file (it does not load as a safe torch "
                             "file); pass a file saved by `hpo train --save` or `hpo export`"
                             ) from e
    meta = blob.get("meta") if isinstance(blob, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputFileError(f"{path}: not an hpo model file (no '{FORMAT}' metadata); pass a "
                             "file saved by `hpo train --save` or `hpo export`")
    try:
        model = Denoiser(int(meta["hidden_size"]), int(meta["shift"]))
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise InputFileError(f"{path}: damaged hpo model file ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); export it again"
                             ) from e
    model.eval()
    return model, meta


def trained_length(meta: dict[str, Any]) -> int | None:
    """Points per signal of the model's training data, when its file says."""
    data = meta.get("data")
    n = data.get("length") if isinstance(data, dict) else None
    return n if isinstance(n, int) else None


def apply_model(model: Denoiser, meta: dict[str, Any], signals: np.ndarray) -> np.ndarray:
    """Denoises (n, length) signals as the model was trained: normalized per signal by their own
    mean and std first when its file says so, and mapped back after."""
    if not meta.get("normalize"):
        return predict(model, signals)
    scale = fit_scale(signals)
    return scale.undo(predict(model, scale.apply(signals)))
