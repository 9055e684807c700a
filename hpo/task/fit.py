"""Training a denoiser on a data source: the one way every model of hpo is trained and scored.

A search's trial, `hpo evaluate`, `rescore`, `replay` and `hpo train` all train through
`fit_source`, so each takes its splits and, with fresh curves, each later epoch's new training
set from the same source, and scores on the original scale of the signals (a normalized file
study's outputs are mapped back first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hpo.task.config import TrainConfig
from hpo.task.curves import Split
from hpo.task.datafile import STUDY_KEYS, Keys
from hpo.task.model import Denoiser
from hpo.task.source import ModelSplit, Source, fresh_of, model_split
from hpo.task.train import EpochCallback, TrainResult, predict, train


def fit(cfg: TrainConfig, train_split: ModelSplit, val: ModelSplit,
        on_epoch: EpochCallback | None = None,
        trainer: Callable[..., TrainResult] = train,
        fresh: Callable[[int], Split] | None = None) -> TrainResult:
    """Trains in the model's units (normalized or not); every validation score, per epoch and
    final, is on the original scale. `fresh`: each later epoch's training curves."""
    kw: dict[str, Any] = {} if fresh is None else {"fresh": fresh}
    if val.scale is not None:
        kw["score"] = lambda model: score_on(model, val)
    return trainer(cfg, train_split.model, val.model, on_epoch, **kw)


def score_on(model: Denoiser, split: ModelSplit) -> float:
    """Percent of noise the model removes from the split, on the original scale."""
    return split.score(predict(model, split.model.noisy))


def fit_source(cfg: TrainConfig, source: Source, *, study: str | None = None,
               keys: Keys = STUDY_KEYS, on_epoch: EpochCallback | None = None,
               trainer: Callable[..., TrainResult] = train) -> TrainResult:
    """A model trained on the source's training split (with fresh curves: each later epoch's
    new set) and scored on its validation split every epoch. `study` and `keys` name the
    study and its settings in a data file's messages; `trainer` stands in for the training
    loop (benchmarks: an instant one)."""
    train_split, val = (model_split(source, s, study, keys) for s in ("train", "val"))
    return fit(cfg, train_split, val, on_epoch, trainer, fresh_of(source))


def held_out_score(result: TrainResult, source: Source, study: str | None = None,
                   keys: Keys = STUDY_KEYS) -> float:
    """The held-out test score of a trained model (0 when it diverged)."""
    if result.status == "diverged":
        return 0.0
    return score_on(result.model, model_split(source, "test", study, keys))


def train_and_test(cfg: TrainConfig, source: Source,
                   on_epoch: EpochCallback | None = None, *,
                   keys: Keys = STUDY_KEYS) -> tuple[TrainResult, float]:
    """One model outside any study (`hpo train`): trained, then scored on the held-out test
    split (0 when it diverged). `keys` name the settings in a data file's messages."""
    result = fit_source(cfg, source, keys=keys, on_epoch=on_epoch)
    return result, held_out_score(result, source, keys=keys)
