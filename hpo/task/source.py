"""The signals a study trains and is scored on, in the units its model sees.

A study's data source is a DataConfig (the protocol's sums of sines) or a FileData (the user's
own file), chosen by one set of rules (`source_from`) from a study file's [data] table or from
`hpo train`'s flags. Everything that trains or scores (a trial, `hpo evaluate` and `hpo replay`,
the trial's picture, the baselines, the study note) takes its splits from here, so all of them
see the same signals: synthetic splits are drawn from the data seed; file splits come from the file
the study recorded, checked against its sha256 (FileData.verify), loaded and split once per
process.

A `normalize = true` file study feeds its model each signal mapped by its own noisy input's mean
and standard deviation (hpo.task.normalize) and trains it toward the clean signal in those units;
every output is mapped back before it is scored, so every score is the protocol's metric on the
original scale.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpo import resources
from hpo.errors import InputFileError
from hpo.task.config import ConfigValueError, TrainConfig
from hpo.task.curves import (
    NOISE_RATIO,
    SPLITS,
    DataConfig,
    Split,
    epoch_train_split,
    make_split,
    x_grid,
)
from hpo.task.datafile import (
    DEFAULT_FRACTIONS,
    STUDY_KEYS,
    FileData,
    Keys,
    describe_file,
    normalize_split,
)
from hpo.task.metric import percent_removed
from hpo.task.normalize import Scale

Source = DataConfig | FileData
Counts = tuple[int | None, int | None, int | None]
_SHARES = "/".join(f"{round(100 * f)}" for f in DEFAULT_FRACTIONS)


def source_from(keys: Keys, *, seed: int = 0, noise_ratio: float | None = None,
                counts: Counts = (None, None, None), file: str | None = None,
                noisy_file: str | None = None, normalize: bool = False, fresh: bool = False
                ) -> Source:
    """The signals a study file's [data] table or `hpo train`'s flags ask for, by one set of
    rules: the synthetic curves (unset counts take the protocol's), or the user's file,
    described (shape from its header, sha256, split sizes; no value loaded). Paths are taken as
    given (the caller makes them absolute). Each refusal is one line naming the key (`keys`)."""
    if file is None:
        for key, used in ((keys.noisy_file, noisy_file is not None), (keys.normalize, normalize)):
            if used:
                raise InputFileError(f"{key}: applies to your own signals only; add {keys.file} "
                                     "(a .npy or .csv of clean signals) or drop it")
        defaults = DataConfig()
        n_train, n_val, n_test = (c if c is not None else d for c, d in zip(
            counts, (defaults.n_train, defaults.n_val, defaults.n_test), strict=True))
        try:
            return DataConfig(seed=seed, n_train=n_train, n_val=n_val, n_test=n_test,
                              noise_ratio=NOISE_RATIO if noise_ratio is None else noise_ratio,
                              fresh=fresh)
        except ConfigValueError as e:
            raise InputFileError(f"{keys.of_field(e.field)}: {e.message}") from e
    if fresh:
        raise InputFileError(f"{keys.fresh}: fresh curves are drawn from the exercise's "
                             f"generator; {keys.file} trains on the file's fixed training "
                             "signals: drop one of the two")
    if noisy_file is not None and noise_ratio is not None:
        raise InputFileError(f"{keys.noise_ratio}: the noisy inputs come from "
                             f"{keys.noisy_file}, so no noise is drawn; drop one of the two")
    given = [c for c in counts if c is not None]
    if given and len(given) < len(counts):
        missing = keys.counts[[c is None for c in counts].index(True)]
        raise InputFileError(f"{missing}: missing: with {keys.file} give "
                             f"{', '.join(keys.counts[:2])} and {keys.counts[2]} together, or "
                             f"none of them ({_SHARES} % of the file's signals)")
    for key, path in ((keys.file, file), (keys.noisy_file, noisy_file)):
        if path is not None and not path.strip():
            raise InputFileError(f"{key}: is empty; give the path of a .npy or .csv file")
    ratio = NOISE_RATIO if noise_ratio is None else noise_ratio
    try:
        DataConfig(seed=seed, noise_ratio=ratio)
    except ConfigValueError as e:
        raise InputFileError(f"{keys.of_field(e.field)}: {e.message}") from e
    full = None if not given else (counts[0], counts[1], counts[2])
    return describe_file(file, noisy_path=noisy_file, counts=full,  # type: ignore[arg-type]
                         noise_ratio=ratio, normalize=normalize, seed=seed, keys=keys)


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


def memory_parts(cfg: TrainConfig, source: Source) -> dict[str, int]:
    """Bytes a run of `cfg` on `source` needs at its peak, by part: each synthetic split
    ("train", "val", "test"; with fresh curves an epoch's new training set is drawn while the
    last is alive, so the training split counts twice) or a file's loading and splits ("file"),
    and training the model ("model"). All three splits count: `hpo evaluate` keeps them
    together. The one estimate of a run: a study's corners and `hpo train` both use it."""
    if isinstance(source, FileData):
        parts = {"file": source.estimate_bytes()}
        length, n_val = source.shape[1], source.sizes()[1]
    else:
        parts = {s: resources.curves_bytes(source.count(s), source.length, source.max_sines)
                 * (2 if s == "train" and source.fresh else 1) for s in SPLITS}
        length, n_val = source.length, source.n_val
    parts["model"] = resources.training_bytes(cfg.hidden_size, cfg.shift, length,
                                              cfg.batch_size, n_val)
    return parts


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
