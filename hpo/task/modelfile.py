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
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpo import resources
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
    _check_inflated_size(path)
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
        hidden, shift = _checked_shape(meta, blob.get("state_dict"))
        model = Denoiser(hidden, shift)
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise InputFileError(f"{path}: damaged hpo model file ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); export it again"
                             ) from e
    model.eval()
    return model, meta


def _check_inflated_size(path: Path) -> None:
    """A model file is a zip archive; refuses one whose members would inflate past this
    process's share of memory (a few MB can hold GBs of compressed zeros) before torch reads
    a byte of it."""
    try:
        with zipfile.ZipFile(path) as z:
            inflated = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip: torch.load refuses it below, in one line
    est = resources.Estimate(inflated, "--model")
    if not est.fits():
        raise InputFileError(f"{path}: its contents inflate to {resources.human(inflated)}, "
                             f"which {resources.too_big(est)}; not an hpo model file")


def expected_shapes(hidden: int) -> dict[str, tuple[int, ...]]:
    """The state dict of a Denoiser of this hidden size, by tensor name and shape."""
    h4 = 4 * hidden
    shapes: dict[str, tuple[int, ...]] = {}
    for name, width in (("lstm1", 1), ("lstm2", hidden)):
        shapes.update({f"{name}.weight_ih_l0": (h4, width), f"{name}.weight_hh_l0": (h4, hidden),
                       f"{name}.bias_ih_l0": (h4,), f"{name}.bias_hh_l0": (h4,)})
    return {**shapes, "head.weight": (1, hidden), "head.bias": (1,)}


def _checked_shape(meta: dict[str, Any], state: Any) -> tuple[int, int]:
    """(hidden size, shift) from the metadata, believed only when the weights have exactly the
    shapes they imply: a model is built only after that, so a file cannot make hpo allocate
    more than its own tensors hold."""
    hidden, shift = meta.get("hidden_size"), meta.get("shift")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (hidden, shift)):
        raise ValueError(f"hidden_size {hidden!r} and shift {shift!r} must be whole numbers")
    assert isinstance(hidden, int) and isinstance(shift, int)
    if not (1 <= hidden <= 1_000_000 and 0 <= shift <= 1_000_000):
        raise ValueError(f"hidden_size {hidden} or shift {shift} out of range")
    if not isinstance(state, dict):
        raise ValueError("no state_dict of tensors")
    scores = meta.get("scores", {})
    if not isinstance(scores, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
            for k, v in scores.items()):
        raise ValueError(f"its scores {scores!r:.60} are not numbers by name")
    found = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    want = expected_shapes(hidden)
    if found != want:
        bad = next((k for k in want if found.get(k) != want[k]), None) or next(iter(
            set(found) - set(want)), "?")
        raise ValueError(f"its weights do not match hidden_size {hidden} (tensor {bad}: "
                         f"{found.get(bad)}, expected {want.get(bad)})")
    return hidden, shift


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
