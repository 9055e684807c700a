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

import math
import re
import warnings
import zipfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpo import resources
from hpo.errors import InputFileError
from hpo.paths import atomic_write
from hpo.task.config import ConfigValueError, TrainConfig
from hpo.task.curves import DataConfig
from hpo.task.datafile import FileData
from hpo.task.model import Denoiser
from hpo.task.normalize import fit_scale
from hpo.task.signals import not_a_file
from hpo.task.source import Source, file_meta
from hpo.task.train import predict

FORMAT = "hpo-denoiser/1"


def save_model(
    path: str | Path,
    model: Denoiser,
    train_cfg: TrainConfig,
    data_cfg: Source,
    scores: dict[str, float] | None = None,
    *,
    flag: str | None = None,
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
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # Atomic: a full disk leaves no file. torch.save's RuntimeError is put down to its cause
    # (hpo.paths.write_error) by `flag`, or by the caller's hpo.paths.writing without one.
    # torch.save writes into a file hpo opened, so its descriptor is closed even when torch's
    # writer fails (a full disk) and would otherwise keep the removed file's space until GC.
    with atomic_write(path, flag, "the model file") as tmp, tmp.open("wb") as f:
        torch.save({"meta": meta, "state_dict": state}, f)
    return path


def load_model(path: str | Path) -> tuple[Denoiser, dict[str, Any]]:
    """Returns the model (in eval mode, on the CPU) and its metadata."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: {not_a_file(path, 'model file')}; pass --model a file "
                             "saved by `hpo train --save` or `hpo export`")
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
        check_meta(meta)
        hidden, shift = _checked_shape(meta, blob.get("state_dict"))
        _check_finite(blob["state_dict"])
        model = Denoiser(hidden, shift)
        model.load_state_dict(blob["state_dict"])
    except MetaError as e:  # before ValueError: a subclass of it
        raise InputFileError(f"{path}: damaged hpo model file ({e.field}: {e.message}); "
                             "export it or train it again") from e
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


class MetaError(ValueError):
    """A field that is not of its type or within its bounds; `field` is its dotted name in the
    file (meta.data.length, state_dict.head.weight)."""

    def __init__(self, field: str, message: str) -> None:
        field = field if field.startswith("state_dict.") else f"meta.{field}"
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _int(v: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise MetaError(field, f"must be a whole number, got {v!r:.60}")
    if not lo <= v <= hi:
        raise MetaError(field, f"must be >= {lo} and <= {hi}, got {v}")
    return v


def _float(v: Any, field: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise MetaError(field, f"must be a number, got {v!r:.60}")
    if not math.isfinite(v):
        raise MetaError(field, f"must be finite, got {v!r}")
    if not lo <= v <= hi:
        raise MetaError(field, f"must be >= {lo:g} and <= {hi:g}, got {v!r}")
    return float(v)


def _bool(v: Any, field: str) -> bool:
    if not isinstance(v, bool):
        raise MetaError(field, f"must be true or false, got {v!r:.60}")
    return v


def _str(v: Any, field: str, *, optional: bool = False) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str) or len(v) > 100_000:
        raise MetaError(field, f"must be {'text or null' if optional else 'text'}, got "
                        f"{v!r:.60}")
    return v


def _sha256(v: Any, field: str, *, optional: bool = False) -> None:
    if v is None and optional:
        return
    if not isinstance(v, str) or not SHA256.fullmatch(v):
        raise MetaError(field, f"must be a sha256 (64 hex digits), got {v!r:.60}")


def _ints(v: Any, field: str, n: int, lo: int) -> list[int]:
    if not isinstance(v, list | tuple) or len(v) != n:
        raise MetaError(field, f"must be a list of {n} whole numbers, got {v!r:.60}")
    return [_int(x, f"{field}[{i}]", lo, MAX_COUNT) for i, x in enumerate(v)]


SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_COUNT = 10**12
FILE_DATA_KEYS = {"source", "file", "sha256", "shape", "length", "noisy_file", "noisy_sha256",
                  "seed", "noise_ratio", "splits", "normalize"}


def check_meta(meta: dict[str, Any]) -> None:
    """Every field of a model file's metadata parsed into its type within its bounds, or
    MetaError naming the first that is not. Fields absent from older files keep their meaning
    (no data description, not normalized, no scores)."""
    _int(meta.get("hidden_size"), "hidden_size", 1, 1_000_000)
    _int(meta.get("shift"), "shift", 0, 1_000_000)
    _bool(meta.get("normalize", False), "normalize")
    if "torch" in meta:
        _str(meta["torch"], "torch")
    scores = meta.get("scores", {})
    if not isinstance(scores, dict):
        raise MetaError("scores", f"must be a table of numbers by name, got {scores!r:.60}")
    for k, v in scores.items():
        if not isinstance(k, str):
            raise MetaError("scores", f"names must be text, got {k!r:.60}")
        _float(v, f"scores.{k}", -1e300, 1e300)
    if "train" in meta:
        _check_train(meta["train"], meta)
    if "data" in meta:
        _check_data(meta["data"])


def _table(v: Any, field: str, known: set[str]) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise MetaError(field, f"must be a table, got {v!r:.60}")
    unknown = sorted(str(k) for k in v if k not in known)
    if unknown:
        raise MetaError(f"{field}.{unknown[0]}", "unknown field")
    return v


def _check_train(train: Any, meta: dict[str, Any]) -> None:
    train = _table(train, "train", {f.name for f in fields(TrainConfig)})
    try:
        cfg = TrainConfig(**train)
    except ConfigValueError as e:
        raise MetaError(f"train.{e.field}", e.message) from e
    for key in ("hidden_size", "shift"):
        if key in train and getattr(cfg, key) != meta[key]:
            raise MetaError(f"train.{key}", f"is {getattr(cfg, key)} but {key} is {meta[key]}")


def _check_data(data: Any) -> None:
    if isinstance(data, dict) and data.get("source") == "file":
        _check_file_data(_table(data, "data", FILE_DATA_KEYS))
        return
    data = _table(data, "data", {f.name for f in fields(DataConfig)})
    try:
        DataConfig(**data)
    except ConfigValueError as e:
        raise MetaError(f"data.{e.field}", e.message) from e


def _check_file_data(d: dict[str, Any]) -> None:
    """What hpo.task.source.file_meta records of a data file."""
    _str(d.get("file"), "data.file")
    _sha256(d.get("sha256"), "data.sha256")
    shape = _ints(d.get("shape"), "data.shape", 2, 1)
    length = _int(d.get("length"), "data.length", 2, MAX_COUNT)
    if length != shape[1]:
        raise MetaError("data.length", f"is {length} but data.shape says {shape[1]} points")
    noisy = _str(d.get("noisy_file"), "data.noisy_file", optional=True)
    _sha256(d.get("noisy_sha256"), "data.noisy_sha256", optional=noisy is None)
    _int(d.get("seed", 0), "data.seed", 0, 2**63 - 1)
    if d.get("noise_ratio") is not None:
        _float(d["noise_ratio"], "data.noise_ratio", 0.0, 10.0)
    if "splits" in d:
        splits = _ints(d["splits"], "data.splits", 3, 0)
        if sum(splits) > shape[0]:
            raise MetaError("data.splits", f"{splits} add up to more than the file's "
                            f"{shape[0]} signals")
    _bool(d.get("normalize", False), "data.normalize")


def _check_finite(state: dict[str, Any]) -> None:
    """Weights are floating-point numbers, every one finite: a NaN weight makes every output
    NaN, which hpo denoise would otherwise write without a word."""
    for name, t in state.items():
        if not t.is_floating_point():
            raise MetaError(f"state_dict.{name}", f"holds {t.dtype} values, not floating-point "
                            "weights")
        if not bool(torch.isfinite(t).all()):
            bad = "NaN" if bool(torch.isnan(t).any()) else "infinite"
            raise MetaError(f"state_dict.{name}", f"holds {bad} weights")


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
