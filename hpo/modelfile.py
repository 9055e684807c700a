"""Model files that describe themselves and load without unpickling code.

A model file is a torch.save of plain data: the state dict's tensors plus a `meta` dict of
strings and numbers (format version, hidden size, shift, the training and data settings, the
scores). Loading uses `torch.load(weights_only=True)`, which refuses arbitrary pickles.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from hpo.data import DataConfig
from hpo.errors import InputFileError
from hpo.model import Denoiser
from hpo.train import TrainConfig

FORMAT = "hpo-denoiser/1"


def save_model(
    path: str | Path,
    model: Denoiser,
    train_cfg: TrainConfig,
    data_cfg: DataConfig,
    scores: dict[str, float] | None = None,
) -> Path:
    meta: dict[str, Any] = {
        "format": FORMAT,
        "hidden_size": model.hidden_size,
        "shift": model.shift,
        "train": asdict(train_cfg),
        "data": asdict(data_cfg),
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
