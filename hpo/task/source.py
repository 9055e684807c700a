"""The signals a study trains and is scored on, in the units its model sees.

A study's data source is a DataConfig (the protocol's sums of sines) or a FileData (the user's
own file). Everything that trains or scores — a trial, `hpo evaluate` and `hpo replay`, the
trial's picture, the baselines, the study note — takes its splits from here, so all of them see
the same signals: synthetic splits are drawn from the data seed; file splits come from the file
the study recorded, checked against its sha256 (FileData.verify), loaded and split once per
process.

A `normalize = true` file study feeds its model each signal mapped by its own noisy input's mean
and standard deviation (hpo.task.normalize) and trains it toward the clean signal in those units;
every output is mapped back before it is scored, so every score is the protocol's metric on the
original scale. numpy only: the study validator and `hpo create` use this without torch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpo.task.curves import DataConfig, Split, epoch_train_split, make_split, x_grid
from hpo.task.datafile import STUDY_KEYS, FileData, Keys, normalize_split
from hpo.task.metric import percent_removed
from hpo.task.normalize import Scale

Source = DataConfig | FileData


@dataclass(frozen=True)
class ModelSplit:
    """One split as given and as the model sees it, with the way back between the two."""

    raw: Split  # the signals as given: what every score and picture uses
    model: Split  # what the model reads and is trained toward: raw, or normalized per signal
    scale: Scale | None = None  # raw -> model units, per signal; None: the same units

    def original(self, output: np.ndarray) -> np.ndarray:
        """A model output (model units) on the original scale."""
        return output if self.scale is None else self.scale.undo(output)

    def score(self, output: np.ndarray) -> float:
        """Percent of noise removed by a model output, on the original scale."""
        return percent_removed(self.raw.clean, self.raw.noisy, self.original(output))

    def __len__(self) -> int:
        return len(self.raw)


def fresh_of(source: Source) -> Callable[[int], Split] | None:
    """Each later epoch's training curves of a synthetic source with fresh = true (a data
    file's signals are what they are: a file study trains on its fixed split); else None."""
    if isinstance(source, DataConfig) and source.fresh:
        return functools.partial(epoch_train_split, source)
    return None


def length(source: Source) -> int:
    """Points per signal."""
    return source.length if isinstance(source, DataConfig) else source.shape[1]


def x_axis(source: Source) -> np.ndarray:
    """The synthetic curves' x grid; a file's signals have none: their sample index."""
    if isinstance(source, DataConfig):
        return x_grid(source)
    return np.arange(source.shape[1], dtype=np.float64)


def verify(source: Source, study: str | None = None, keys: Keys = STUDY_KEYS) -> None:
    """Refuses, in one line naming the path and the recorded hash, a file that changed or went
    missing since the study was defined; always reads the file (never cached)."""
    if isinstance(source, FileData):
        source.verify(study, keys)


@functools.lru_cache(maxsize=4)
def file_splits(fd: FileData, study: str | None = None,
                keys: Keys = STUDY_KEYS) -> dict[str, Split]:
    """The file's splits, verified and loaded once per process (a failure is not cached)."""
    return fd.splits(study, keys)


@functools.lru_cache(maxsize=16)
def model_split(source: Source, name: str, study: str | None = None,
                keys: Keys = STUDY_KEYS) -> ModelSplit:
    """Split `name` of the source, once per process and data protocol, not once per trial."""
    if isinstance(source, DataConfig):
        split = make_split(source, name)
        return ModelSplit(split, split)
    raw = file_splits(source, study, keys)[name]
    if not source.normalize:
        return ModelSplit(raw, raw)
    model, scale = normalize_split(raw)
    return ModelSplit(raw, model, scale)


def sizes(source: Source) -> tuple[int, int, int]:
    """(train, val, test) signals."""
    if isinstance(source, DataConfig):
        return source.n_train, source.n_val, source.n_test
    return source.sizes()


def noise_source(fd: FileData) -> str:
    """Where a file study's noisy inputs come from, in words."""
    if fd.noisy_path is not None:
        return (f"measured: the rows of {fd.noisy_path} (sha256 {(fd.noisy_sha256 or '')[:12]}), "
                "paired row by row with the clean signals")
    return (f"Gaussian, std = {fd.noise_ratio:g} x (max - min) of each clean signal, drawn from "
            f"data seed {fd.seed}")


def describe(fd: FileData) -> str:
    """One line: the file, its hash prefix, shape, splits, noise and normalization."""
    n, points = fd.shape
    tr, va, te = fd.sizes()
    how = ("counts" if fd.counts is not None else
           "/".join(f"{100 * f:g}" for f in fd.fractions) + " % of the file")
    return (f"{fd.path} (sha256 {fd.sha256[:12]}): {n} signals of {points} points; shuffled by "
            f"data seed {fd.seed} into {tr} training, {va} validation and {te} test signals "
            f"({how}); noise {noise_source(fd)}; "
            + ("normalized per signal by its noisy input's mean and std (scores on the original "
               "scale)" if fd.normalize else "not normalized"))


def file_meta(fd: FileData) -> dict[str, Any]:
    """What a model file records of the data it was trained on (plain JSON)."""
    return {"source": "file", "file": fd.path, "sha256": fd.sha256, "shape": list(fd.shape),
            "length": fd.shape[1], "noisy_file": fd.noisy_path, "noisy_sha256": fd.noisy_sha256,
            "seed": fd.seed, "noise_ratio": None if fd.noisy_path else fd.noise_ratio,
            "splits": list(fd.sizes()), "normalize": fd.normalize}
