"""How a study searches: typed sampler and pruner specs that build Optuna's objects themselves.

A spec holds what the study file said (the kind and Optuna's keyword arguments) and is stored
as the same plain dict the file had (`{"type": "tpe", "n_startup_trials": 4}`), so studies
created before these classes existed still load. `build()` is the one place an Optuna sampler or
pruner is constructed: the study checker calls it before anything is stored, so every setting
Optuna's constructors refuse is refused then, with Optuna's own reason.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

# Intermediate values are reported at 10, 20, ..., 100 percent of a trial's schedule
# (hpo.run.objective), so pruner resources and steps are percents.
MAX_STEP = 100


class BudgetGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler calls study.stop() when the grid is exhausted, which only works
    inside study.optimize(); here the study's budget (= grid size) ends the search instead."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        return None


@dataclass(frozen=True)
class SamplerSpec:
    kind: str = "tpe"
    options: Mapping[str, Any] = field(default_factory=dict)  # Optuna's keyword arguments
    points: tuple[Mapping[str, Any], ...] = ()  # the `points` sampler's enqueued configurations

    # Keys a study file may set per kind, with their TOML types.
    KINDS: ClassVar[dict[str, dict[str, type]]] = {
        "tpe": {"n_startup_trials": int, "multivariate": bool, "constant_liar": bool,
                "n_ei_candidates": int, "group": bool},
        "random": {},
        "grid": {},
        "gp": {"n_startup_trials": int, "deterministic_objective": bool},
        "points": {"points": list},
    }

    def build(self, seed: int | None, space: Sequence[Any], study_seed: int = 0
              ) -> optuna.samplers.BaseSampler:
        """The Optuna sampler; `seed` is this worker's, `study_seed` the study's."""
        opts = dict(self.options)
        with warnings.catch_warnings():
            # TPE's `group` and some GP settings are "experimental" in Optuna 5: valid settings,
            # whose warning would reach the user on every command and in every worker log.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if self.kind == "tpe":
                return optuna.samplers.TPESampler(seed=seed, **opts)
            if self.kind == "gp":
                return optuna.samplers.GPSampler(seed=seed, **opts)
        if self.kind == "grid":
            # The grid is shuffled by its seed and grid ids index the shuffled list, so every
            # worker must use the same seed or ids would map to different points.
            grid = {p.name: p.grid() or [] for p in space}
            return BudgetGridSampler(grid, seed=study_seed)
        return optuna.samplers.RandomSampler(seed=seed)  # random, and points (all enqueued)

    def size(self, space: Sequence[Any]) -> int | None:
        """How many distinct trials this sampler can produce: the grid's points or the listed
        points; None when unbounded."""
        if self.kind == "grid":
            return math.prod(p.count() or 0 for p in space)
        if self.kind == "points":
            return len(self.points)
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, **self.options}
        if self.kind == "points":
            out["points"] = [dict(p) for p in self.points]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SamplerSpec:
        opts = {k: v for k, v in d.items() if k not in ("type", "points")}
        return cls(str(d.get("type", "tpe")), opts, tuple(dict(p) for p in d.get("points", ())))


@dataclass(frozen=True)
class PrunerSpec:
    kind: str = "none"
    options: Mapping[str, Any] = field(default_factory=dict)

    KINDS: ClassVar[dict[str, dict[str, type]]] = {
        "none": {},
        "median": {"n_startup_trials": int, "n_warmup_steps": int, "interval_steps": int,
                   "n_min_trials": int},
        "percentile": {"percentile": float, "n_startup_trials": int, "n_warmup_steps": int,
                       "interval_steps": int, "n_min_trials": int},
        "successive_halving": {"min_resource": int, "reduction_factor": int,
                               "min_early_stopping_rate": int, "bootstrap_count": int},
        "hyperband": {"min_resource": int, "max_resource": int, "reduction_factor": int,
                      "bootstrap_count": int},
    }
    CLASSES: ClassVar[dict[str, str]] = {
        "none": "NopPruner", "median": "MedianPruner", "percentile": "PercentilePruner",
        "successive_halving": "SuccessiveHalvingPruner", "hyperband": "HyperbandPruner",
    }
    STEP_KEYS: ClassVar[tuple[str, ...]] = ("min_resource", "max_resource", "n_warmup_steps",
                                            "interval_steps")

    def build(self) -> optuna.pruners.BasePruner:
        cls = getattr(optuna.pruners, self.CLASSES[self.kind])
        pruner: optuna.pruners.BasePruner = cls(**dict(self.options))
        if self.kind == "hyperband":
            # HyperbandPruner hands these to its brackets only when a trial first reports (then
            # a ZeroDivisionError, or a ValueError in every worker); the brackets' constructor
            # checks them now.
            optuna.pruners.SuccessiveHalvingPruner(**{
                k: v for k, v in self.options.items()
                if k in ("min_resource", "reduction_factor", "bootstrap_count")})
        return pruner

    def probe(self, direction: Literal["minimize", "maximize"] = "maximize") -> None:
        """Runs the pruner as workers will (trials reporting at 10, 20, ..., 100 percent, asking
        should_prune after each) on a throw-away in-memory study, so that what Optuna refuses
        only at that point is refused before anything is stored."""
        if not self.active:
            return
        study = optuna.create_study(storage=optuna.storages.InMemoryStorage(),
                                    direction=direction, pruner=self.build())
        for i in range(4):
            trial = study.ask()
            for step in range(10, MAX_STEP + 1, 10):
                trial.report(float(i * step), step)
                if trial.should_prune():
                    study.tell(trial, state=TrialState.PRUNED)
                    break
            else:
                study.tell(trial, float(i * MAX_STEP))

    @property
    def active(self) -> bool:
        return self.kind != "none"

    @property
    def warmup(self) -> int:
        """Steps below which Optuna's median and percentile pruners never prune."""
        if self.kind in ("median", "percentile"):
            return int(self.options.get("n_warmup_steps", 0))
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **self.options}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrunerSpec:
        return cls(str(d.get("type", "none")), {k: v for k, v in d.items() if k != "type"})
