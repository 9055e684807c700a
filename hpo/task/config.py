"""Typed settings of one training run, checked when built.

Defaults are the protocol's (docs/protocol.md). Building a config is also how a study file is
validated: the study checker builds the configs at the corners of the search space, so whatever
a worker would later refuse is refused before anything is stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any


class ConfigValueError(ValueError):
    """A config field out of its range; `field` names it so callers can point at their key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check_fields(cfg: Any, rules: dict[str, tuple[float, float, bool]]) -> None:
    """rules: field -> (lowest, highest, lowest itself allowed). Types are checked too, since a
    config built from JSON or TOML may carry a float where an int belongs."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name not in rules:
            continue
        lo, hi, inclusive = rules[f.name]
        want = int if f.type in ("int", int) else float
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                want is int and not isinstance(value, int)):
            raise ConfigValueError(f.name, f"must be {'an integer' if want is int else 'a number'}"
                                   f", got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):  # ints: no float() overflow
            raise ConfigValueError(f.name, f"must be finite, got {value!r}")
        if value < lo or (value == lo and not inclusive) or value > hi:
            op = ">=" if inclusive else ">"
            raise ConfigValueError(f.name, f"must be {op} {lo:g} and <= {hi:g}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    hidden_size: int = 40  # LSTM width; the report's table varies 20 / 40 / 60
    shift: int = 10  # look-ahead steps; output at t sees inputs up to t + shift
    epochs: int = 100  # the cosine schedule spans exactly this many epochs
    lr: float = 0.01  # Adam's initial learning rate
    batch_size: int = 10  # curves per step, taken in order (no shuffling) as in the exercise
    weight_decay: float = 0.0  # Adam's L2 penalty; 0 is the exercise
    grad_clip: float = 0.0  # max gradient norm; 0 disables clipping, as in the exercise
    seed: int = 0  # initial weights; data has its own seed in DataConfig
    threads: int = 1  # torch threads; one per worker so N workers fill N cores
    device: str = "auto"  # "auto" picks CUDA when present, else CPU

    # (lowest, highest, lowest allowed). Upper bounds are sanity limits; memory is checked
    # separately (hpo.resources) against the machine.
    RULES = {
        "hidden_size": (1, 1_000_000, True), "shift": (0, 1_000_000, True),
        "epochs": (1, 1_000_000, True), "lr": (0.0, 1e300, False),
        "batch_size": (1, 10_000_000, True), "weight_decay": (0.0, 1e6, True),
        "grad_clip": (0.0, 1e12, True), "seed": (-(2**63), 2**63 - 1, True),
        "threads": (1, 1024, True),
    }

    def __post_init__(self) -> None:
        check_fields(self, self.RULES)
        if not isinstance(self.device, str) or (
                self.device != "auto" and not self.device.startswith(("cpu", "cuda", "mps"))):
            raise ConfigValueError("device", f"unknown device {self.device!r}; use auto, cpu "
                                   "or cuda")
