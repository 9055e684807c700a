"""A study's definition: what is searched, how, on which data, toward which metrics.

A `StudySpec` is what a study file validates into (hpo.study.parse) and what storage keeps, as
JSON in the study's user attrs, so that a remote worker needs only the study's name and the
storage URL. Its stored form is plain data and has not changed since the first release, so every
existing study still loads.

A study on the user's own signals keeps one key in `data`, "file": the
hpo.task.datafile.FileData of its files (paths, sha256, shape, splits, noise, normalization) as
plain JSON. A synthetic study's `data` holds the study file's own [data] keys, exactly as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

import numpy as np

from hpo.study.metrics import METRICS, directions
from hpo.study.strategies import PrunerSpec, SamplerSpec
from hpo.task.config import TrainConfig
from hpo.task.curves import DataConfig
from hpo.task.datafile import FileData
from hpo.task.source import Source

# Parameters a search may tune, with their type. train_curves is DataConfig.n_train.
TUNABLE: dict[str, type] = {
    "hidden_size": int, "shift": int, "epochs": int, "batch_size": int, "train_curves": int,
    "lr": float, "weight_decay": float, "grad_clip": float,
}
# Study-file [data] keys and the DataConfig field each sets.
DATA_FIELDS = {"seed": "seed", "train": "n_train", "val": "n_val", "test": "n_test",
               "noise_ratio": "noise_ratio", "fresh": "fresh"}
FILE_KEY = "file"  # the stored `data` key of a study on the user's own signals


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # "int", "float" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def grid(self) -> list[Any] | None:
        """The finite list of values, or None when the range is continuous."""
        if self.type == "categorical":
            return list(self.choices)
        if self.step is None:
            return None if self.type == "float" or self.log else self._ints(1)
        return self._ints(self.step) if self.type == "int" else self._floats(self.step)

    def count(self) -> int | None:
        """len(grid()) without listing it (a wide int range has 2**53 values); None when the
        range is continuous."""
        if self.type == "categorical":
            return len(self.choices)
        assert self.low is not None and self.high is not None
        if self.step is None:
            return None if self.type == "float" or self.log else int(self.high - self.low) + 1
        if self.type == "int":
            return (int(self.high) - int(self.low)) // int(self.step) + 1
        return int(round((self.high - self.low) / self.step)) + 1

    def corners(self) -> list[Any]:
        """The extreme values a worker may be handed: both ends, or every choice."""
        if self.type == "categorical":
            return list(self.choices)
        return [self.low, self.high] if self.low != self.high else [self.low]

    def _ints(self, step: float) -> list[Any]:
        assert self.low is not None and self.high is not None
        return list(range(int(self.low), int(self.high) + 1, int(step)))

    def _floats(self, step: float) -> list[Any]:
        """The grid in the file's own decimals: low + i * step computed exactly on the numbers
        as written (0.1 + 2 * 0.1 is 0.30000000000000004 in floats; rounding that to a fixed
        number of places instead turned a 1e-13 step into a grid of zeros)."""
        assert self.low is not None and self.high is not None
        low, d = Decimal(repr(self.low)), Decimal(repr(step))
        n = int((Decimal(repr(self.high)) - low) / d)
        return [float(low + i * d) for i in range(n + 1)]


@dataclass(frozen=True)
class StudySpec:
    STORED_KEYS: ClassVar[frozenset[str]] = frozenset({
        "name", "trials", "seed", "repeats", "description", "metrics", "sampler", "pruner",
        "space", "train", "data"})

    name: str
    trials: int  # budget of the whole study: finished (complete or pruned) trials
    seed: int = 0  # base of the sampler seeds and of every trial's training seeds
    repeats: int = 1  # training seeds per trial, averaged: single runs vary by +-2 points
    description: str = ""
    metrics: tuple[str, ...] = ("val_removed",)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    space: tuple[Param, ...] = ()
    train: Mapping[str, Any] = field(default_factory=dict)  # fixed TrainConfig fields
    data: Mapping[str, Any] = field(default_factory=dict)  # study-file [data] keys

    @property
    def directions(self) -> list[str]:
        return directions(self.metrics)

    def file_data(self) -> FileData | None:
        """The user's files this study trains on; None for the synthetic curves."""
        stored = self.data.get(FILE_KEY)
        return FileData.from_dict(dict(stored)) if stored is not None else None

    def source(self, params: Mapping[str, Any] | None = None) -> Source:
        """The signals a trial with these parameters trains and is scored on: the user's file,
        or the synthetic curves (`train_curves` may be searched)."""
        fd = self.file_data()
        return fd if fd is not None else self.data_config(params)

    def data_config(self, params: Mapping[str, Any] | None = None) -> DataConfig:
        if FILE_KEY in self.data:  # a caller that forgot file studies would score sines
            raise ValueError(f"study {self.name!r} trains on a data file: it has no synthetic "
                             "DataConfig (use file_data())")
        kw = {DATA_FIELDS[k]: v for k, v in self.data.items() if k in DATA_FIELDS}
        if params and "train_curves" in params:
            kw["n_train"] = int(params["train_curves"])
        return DataConfig(**kw)

    def train_config(self, params: Mapping[str, Any], seed: int, threads: int = 1
                     ) -> TrainConfig:
        kw = {**self.train, **{k: v for k, v in params.items() if k != "train_curves"}}
        return TrainConfig(**kw, seed=seed, threads=threads)

    def grid_values(self) -> dict[str, list[Any]]:
        return {p.name: p.grid() or [] for p in self.space}

    def budget_limit(self) -> int | None:
        """The most trials this study can run: a grid's or a points list's size."""
        return self.sampler.size(self.space)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("sampler", "pruner")}
        d["sampler"] = self.sampler.to_dict()
        d["pruner"] = self.pruner.to_dict()
        d["train"], d["data"] = dict(self.train), dict(self.data)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StudySpec:
        d = dict(d)
        d["space"] = tuple(Param(**{**p, "choices": tuple(p["choices"])}) for p in d["space"])
        d["metrics"] = tuple(d["metrics"])
        d["sampler"] = SamplerSpec.from_dict(d.get("sampler", {"type": "tpe"}))
        d["pruner"] = PrunerSpec.from_dict(d.get("pruner", {"type": "none"}))
        return cls(**d)

    @classmethod
    def from_stored(cls, d: Mapping[str, Any]) -> StudySpec:
        """from_dict, believed only after every part reads as hpo writes it: a ValueError or
        TypeError names the first key that does not (hpo.store.stored says it in one line)."""
        spec = cls.from_dict(d)
        for key, ok in (("name", isinstance(spec.name, str)),
                        ("trials", _whole(spec.trials) and spec.trials >= 1),
                        ("seed", _whole(spec.seed) and spec.seed >= 0),
                        ("repeats", _whole(spec.repeats) and 1 <= spec.repeats <= 20),
                        ("description", isinstance(spec.description, str)),
                        ("metrics", 1 <= len(spec.metrics) <= 2 and set(spec.metrics) <= set(
                            METRICS) and len(set(spec.metrics)) == len(spec.metrics)),
                        ("sampler.type", spec.sampler.kind in SamplerSpec.KINDS),
                        ("pruner.type", spec.pruner.kind in PrunerSpec.KINDS),
                        ("space", bool(spec.space) and all(_param_ok(p) for p in spec.space)),
                        ("train", isinstance(spec.train, Mapping) and all(
                            k in TUNABLE and k != "train_curves" for k in spec.train)),
                        ("data", isinstance(spec.data, Mapping))):
            if not ok:
                raise ValueError(f"key {key!r} does not read")
        if spec.file_data() is None:
            spec.data_config()  # the synthetic curves' settings, checked by their config
        spec.train_config({p.name: p.corners()[0] for p in spec.space}, seed=0)
        return spec

    def fingerprint(self) -> dict[str, Any]:
        """What must not change once trials exist: everything but the budget."""
        d = self.to_dict()
        d.pop("trials")
        d.pop("description")
        return d


def worker_seed(spec: StudySpec, worker_index: int, n_existing: int) -> int:
    """A fresh single-worker search is reproducible; a resumed or parallel one never repeats the
    random start-up points of an earlier run because the existing trial count enters the seed."""
    return int(np.random.SeedSequence([spec.seed, worker_index, n_existing]).generate_state(1)[0])


def trial_seed(spec: StudySpec, number: int, repeat: int) -> int:
    """Training seed of one repeat of one trial: replayable from the study seed alone."""
    return int(np.random.SeedSequence([spec.seed, number, repeat]).generate_state(1)[0] % 2**31)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _param_ok(p: Param) -> bool:
    if p.name not in TUNABLE:
        return False
    if p.type == "categorical":
        return bool(p.choices)
    return p.type in ("int", "float") and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in (p.low, p.high))
