"""Construction: every object a worker builds from a study spec, built now, in memory.

`construct()` goes through the owners' own constructors: Optuna's sampler and pruner (the
pruner also run on a throw-away study, as workers run it), each parameter's distribution, each
listed point as a trial in those distributions, the seeds, and the training and data configs at
every corner of the space; and it estimates the memory of the data and of the largest model
(hpo.resources). Whatever those refuse is refused here, with the owner's reason, as one line
naming the file and the dotted key. The parser (hpo.study.parse) checks what only hpo knows.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import optuna

from hpo import resources
from hpo.errors import InputFileError, StudyFileError, first_line
from hpo.study.spec import DATA_FIELDS, Param, StudySpec
from hpo.task.config import ConfigValueError
from hpo.task.curves import DataConfig
from hpo.task.source import file_splits, memory_parts, verify

# Optuna keeps a user attr in a TEXT column: 64 KiB on MySQL. The stored spec must fit.
MAX_SPEC_BYTES = 60_000
MAX_CORNERS = 4096  # configs built at the corners of the space; more parameters sample corners


def fail(src: str, key: str, msg: str) -> StudyFileError:
    return StudyFileError(f"{src}: {key}: {msg}")



def construct(spec: StudySpec, src: str = "<study>") -> None:
    """Builds everything a worker builds from `spec`; raises StudyFileError naming the key."""
    try:
        np.random.SeedSequence([spec.seed, 0, 0])
    except (ValueError, TypeError) as e:
        raise fail(src, "seed", f"{first_line(e)}; use a whole number >= 0") from e
    try:
        spec.sampler.build(0, spec.space, spec.seed)
    except (ValueError, TypeError) as e:
        raise fail(src, "sampler", f"Optuna refuses these settings: {first_line(e)}") from e
    try:
        with _quiet_optuna():
            spec.pruner.probe()
    except (ValueError, TypeError, ArithmeticError) as e:
        raise fail(src, "pruner", f"Optuna refuses these settings: {first_line(e)}") from e
    dists = {}
    for p in spec.space:
        try:
            dists[p.name] = distribution(p)
        except (ValueError, TypeError) as e:
            raise fail(src, f"space.{p.name}", f"{first_line(e)}") from e
    for i, point in enumerate(spec.sampler.points):
        try:
            optuna.trial.create_trial(params=dict(point), distributions=dists, value=0.0)
        except ValueError as e:
            bad = next((k for k, v in point.items() if not contains(dists[k], v)), None)
            key = f"sampler.points[{i}]" + (f".{bad}" if bad else "")
            raise fail(src, key, f"{point[bad] if bad else point!r} is outside the space "
                        f"([space.{bad}]): {first_line(e)}") from e
    worst = memory_estimate(spec, src)
    if not worst.fits():
        raise fail(src, worst.what, f"this setting {resources.too_big(worst)}; use a smaller "
                    "value")
    check_file_values(spec, src)  # after the memory check: this loads every value
    size = len(json.dumps(spec.to_dict()))
    if size > MAX_SPEC_BYTES:
        raise fail(src, "points" if spec.sampler.points else "description",
                    f"the study's definition is {size} bytes as JSON, more than the "
                    f"{MAX_SPEC_BYTES} a storage attribute holds; shorten it")


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """The probe study's own log lines ("A new study created in memory") are not the user's."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(level)


def distribution(p: Param) -> optuna.distributions.BaseDistribution:
    if p.type == "categorical":
        return optuna.distributions.CategoricalDistribution(list(p.choices))
    assert p.low is not None and p.high is not None
    if p.type == "int":
        return optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log,
                                                    step=int(p.step or 1))
    return optuna.distributions.FloatDistribution(p.low, p.high, log=p.log, step=p.step)


def contains(d: optuna.distributions.BaseDistribution, v: Any) -> bool:
    """Whether Optuna accepts `v` as a trial's value in `d`."""
    try:
        optuna.trial.create_trial(params={"x": v}, distributions={"x": d}, value=0.0)
    except ValueError:
        return False
    return True


def _corner_points(spec: StudySpec) -> list[dict[str, Any]]:
    values = [p.corners() for p in spec.space]
    if math.prod(len(v) for v in values) <= MAX_CORNERS:
        return [dict(zip([p.name for p in spec.space], c, strict=True))
                for c in itertools.product(*values)]
    # Too many: each parameter at each of its values once, the rest at their first.
    base = {p.name: v[0] for p, v in zip(spec.space, values, strict=True)}
    return [{**base, p.name: x} for p, v in zip(spec.space, values, strict=True) for x in v]


def memory_estimate(spec: StudySpec, src: str = "<study>") -> resources.Estimate:
    """Builds the configs at every corner and bounds the memory of the worst one (the one
    estimate of a run, hpo.task.source.memory_parts, which `hpo train` uses too), naming the
    study key responsible for its largest part."""
    searched = {p.name for p in spec.space}
    worst = resources.Estimate(0, "")
    fd = spec.file_data()
    model = [n for n in ("hidden_size", "batch_size", "shift") if n in searched]
    keys = {"train": _key_of("n_train", searched), "val": _key_of("n_val", searched),
            "test": _key_of("n_test", searched), "file": "data.file",
            "model": f"space.{model[0]}" if model else "train.hidden_size"}
    for params in _corner_points(spec):
        try:
            cfg = spec.train_config(params, seed=0)
            data = fd if fd is not None else spec.data_config(params)
        except ConfigValueError as e:
            raise fail(src, _key_of(e.field, searched), e.message) from e
        if isinstance(data, DataConfig) and data.n_train < 1:
            # DataConfig allows 0 (baselines need no training curves); a trial does not.
            raise fail(src, keys["train"], f"must be >= 1, got {data.n_train}")
        try:
            parts = {keys[k]: v for k, v in memory_parts(cfg, data).items()}
        except InputFileError as e:
            raise StudyFileError(f"{src}: {e}") from e
        total = sum(parts.values())
        if total > worst.bytes:
            worst = resources.Estimate(total, max(parts, key=lambda k: parts[k]))
    return worst


def _key_of(config_field: str, searched: set[str]) -> str:
    study_key = {v: k for k, v in DATA_FIELDS.items()}.get(config_field)
    if config_field == "n_train" and "train_curves" in searched:
        return "space.train_curves"
    if study_key is not None:
        return f"data.{study_key}"
    return f"space.{config_field}" if config_field in searched else f"train.{config_field}"


def check_file_values(spec: StudySpec, src: str) -> None:
    """What a worker will do with a file study's data: check its bytes against the recorded
    sha256, load every value (NaN, inf, text, ragged rows are refused) and split it."""
    fd = spec.file_data()
    if fd is None:
        return
    try:
        verify(fd)  # never cached: the bytes on disk now
        file_splits(fd)  # cached: `hpo create` draws its note's baselines from the same splits
    except InputFileError as e:
        raise StudyFileError(f"{src}: {e}") from e
