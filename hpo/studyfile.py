"""Study files: TOML data declaring one study, validated strictly before storage is touched.

Every error names the file and the dotted key and says what would be valid. A validated study is
a `StudySpec`, which is also what the storage keeps (as JSON) so that a remote worker needs only
the study's name and the storage URL.
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpo.data import DataConfig
from hpo.errors import StudyFileError
from hpo.train import TrainConfig

# Parameters a search may tune, with the config they feed. train_curves is DataConfig.n_train.
TUNABLE: dict[str, type] = {
    "hidden_size": int, "shift": int, "epochs": int, "batch_size": int, "train_curves": int,
    "lr": float, "weight_decay": float, "grad_clip": float,
}
MINIMUM = {"hidden_size": 1, "shift": 0, "epochs": 1, "batch_size": 1, "train_curves": 1,
           "lr": 0.0, "weight_decay": 0.0, "grad_clip": 0.0}
DATA_KEYS = {"seed": int, "train": int, "val": int, "test": int, "noise_ratio": float}
METRICS = {"val_removed": "maximize", "train_seconds": "minimize"}
SAMPLERS: dict[str, dict[str, type]] = {
    "tpe": {"n_startup_trials": int, "multivariate": bool, "constant_liar": bool},
    "random": {},
    "grid": {},
    "gp": {"n_startup_trials": int},
    "points": {"points": list},
}
PRUNERS: dict[str, dict[str, type]] = {
    "none": {},
    "median": {"n_startup_trials": int, "n_warmup_steps": int, "interval_steps": int},
    "percentile": {"percentile": float, "n_startup_trials": int, "n_warmup_steps": int,
                   "interval_steps": int},
    "successive_halving": {"min_resource": int, "reduction_factor": int,
                           "min_early_stopping_rate": int},
    "hyperband": {"min_resource": int, "max_resource": int, "reduction_factor": int},
}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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

    def _ints(self, step: float) -> list[Any]:
        assert self.low is not None and self.high is not None
        return list(range(int(self.low), int(self.high) + 1, int(step)))

    def _floats(self, step: float) -> list[Any]:
        assert self.low is not None and self.high is not None
        n = int(round((self.high - self.low) / step))
        return [round(self.low + i * step, 12) for i in range(n + 1)]


@dataclass(frozen=True)
class StudySpec:
    name: str
    trials: int  # budget of the whole study: finished (complete or pruned) trials
    seed: int = 0  # base of the sampler seeds and of every trial's training seeds
    repeats: int = 1  # training seeds per trial, averaged: single runs vary by +-2 points
    description: str = ""
    metrics: tuple[str, ...] = ("val_removed",)
    sampler: dict[str, Any] = field(default_factory=lambda: {"type": "tpe"})
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "none"})
    space: tuple[Param, ...] = ()
    train: dict[str, Any] = field(default_factory=dict)  # fixed TrainConfig fields
    data: dict[str, Any] = field(default_factory=dict)  # DataConfig overrides

    @property
    def directions(self) -> list[str]:
        return [METRICS[m] for m in self.metrics]

    def data_config(self, params: dict[str, Any] | None = None) -> DataConfig:
        d = dict(self.data)
        kw = {"seed": d.get("seed", 0), "n_train": d.get("train", 200), "n_val": d.get("val", 50),
              "n_test": d.get("test", 1000), "noise_ratio": d.get("noise_ratio", 0.05)}
        if params and "train_curves" in params:
            kw["n_train"] = int(params["train_curves"])
        return DataConfig(**kw)

    def train_config(self, params: dict[str, Any], seed: int, threads: int = 1) -> TrainConfig:
        kw = {**self.train, **{k: v for k, v in params.items() if k != "train_curves"}}
        return TrainConfig(**kw, seed=seed, threads=threads)

    def grid_values(self) -> dict[str, list[Any]]:
        return {p.name: p.grid() or [] for p in self.space}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudySpec:
        d = dict(d)
        d["space"] = tuple(Param(**{**p, "choices": tuple(p["choices"])}) for p in d["space"])
        d["metrics"] = tuple(d["metrics"])
        return cls(**d)

    def fingerprint(self) -> dict[str, Any]:
        """What must not change once trials exist: everything but the budget."""
        d = self.to_dict()
        d.pop("trials")
        d.pop("description")
        return d


def load_study_file(path: str | Path) -> StudySpec:
    path = Path(path)
    if not path.is_file():
        raise StudyFileError(f"{path}: study file not found; pass a TOML file such as "
                             "studies/smoke.toml")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StudyFileError(f"{path}: not valid TOML ({e}); fix the syntax") from e
    return parse_study(raw, str(path))


def parse_study(raw: dict[str, Any], src: str = "<study>") -> StudySpec:
    return _Parser(src).study(raw)


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src

    def fail(self, key: str, msg: str) -> StudyFileError:
        return StudyFileError(f"{self.src}: {key}: {msg}")

    def table(self, raw: Any, key: str, allowed: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail(key, f"must be a table, got {type(raw).__name__}")
        for k in raw:
            if k not in allowed:
                raise self.fail(f"{key}.{k}" if key else k,
                                f"unknown key; allowed: {', '.join(sorted(allowed))}")
        return {k: self.value(raw[k], f"{key}.{k}" if key else k, allowed[k]) for k in raw}

    def value(self, v: Any, key: str, kind: Any) -> Any:
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if kind in (int, float) and isinstance(v, bool) or not isinstance(v, kind):
            names = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
                     list: "an array", dict: "a table"}
            raise self.fail(key, f"must be {names.get(kind, kind)}, got {v!r}")
        if isinstance(v, float) and not math.isfinite(v):
            raise self.fail(key, f"must be finite, got {v!r}")
        return v

    def study(self, raw: dict[str, Any]) -> StudySpec:
        top = self.table(raw, "", {"name": str, "description": str, "trials": int, "seed": int,
                                   "repeats": int, "objective": dict, "sampler": dict,
                                   "pruner": dict, "space": dict, "train": dict, "data": dict})
        if "name" not in top:
            raise self.fail("name", "missing; give the study a name, e.g. name = \"my_study\"")
        if not NAME_RE.match(top["name"]):
            raise self.fail("name", f"{top['name']!r} is not a valid name; use letters, digits, "
                            "'_', '-' or '.' (at most 64)")
        space = self.space(top.get("space", {}))
        if not space:
            raise self.fail("space", "declare at least one parameter, e.g. [space.hidden_size]")
        metrics = self.objective(top.get("objective", {}))
        sampler = self.sampler(top.get("sampler", {"type": "tpe"}), space)
        pruner = self.pruner(top.get("pruner", {"type": "none"}), metrics)
        names = {p.name for p in space}
        train = self.table(top.get("train", {}), "train",
                           {k: t for k, t in TUNABLE.items() if k != "train_curves"})
        data = self.table(top.get("data", {}), "data", DATA_KEYS)
        fixed = {**train, **({"data.train": data["train"]} if "train" in data else {})}
        for k, v in fixed.items():
            name = "train_curves" if k == "data.train" else k
            if v < MINIMUM[name] or (name == "lr" and v <= 0):
                raise self.fail(f"train.{k}" if k in train else k, f"must be >= {MINIMUM[name]}"
                                f"{' and > 0' if name == 'lr' else ''}, got {v}")
            if name in names:
                raise self.fail(f"train.{k}" if k in train else k, f"'{name}' is also searched "
                                f"in [space.{name}]; fix it in one place only")
        for k in ("val", "test"):
            if data.get(k, 1) < 1:
                raise self.fail(f"data.{k}", f"must be >= 1, got {data[k]}")
        if not 0 <= data.get("noise_ratio", 0.05) <= 10:
            raise self.fail("data.noise_ratio", "must be between 0 and 10")
        repeats = top.get("repeats", 1)
        if not 1 <= repeats <= 20:
            raise self.fail("repeats", f"must be between 1 and 20, got {repeats}")
        trials = self.budget(top.get("trials"), sampler, space)
        return StudySpec(name=top["name"], trials=trials, seed=top.get("seed", 0), repeats=repeats,
                         description=top.get("description", ""), metrics=metrics, sampler=sampler,
                         pruner=pruner, space=space, train=train, data=data)

    def objective(self, raw: dict[str, Any]) -> tuple[str, ...]:
        obj = self.table(raw, "objective", {"metric": str, "second": str})
        metrics = [obj.get("metric", "val_removed")]
        if "second" in obj:
            metrics.append(obj["second"])
        for key, m in zip(("objective.metric", "objective.second"), metrics, strict=False):
            if m not in METRICS:
                raise self.fail(key, f"unknown metric {m!r}; use one of {', '.join(METRICS)}")
        if len(set(metrics)) != len(metrics):
            raise self.fail("objective.second", "must differ from objective.metric")
        return tuple(metrics)

    def space(self, raw: dict[str, Any]) -> tuple[Param, ...]:
        params = []
        for name, body in raw.items():
            key = f"space.{name}"
            if name not in TUNABLE:
                raise self.fail(key, f"unknown parameter; searchable: {', '.join(TUNABLE)}")
            p = self.table(body, key, {"type": str, "low": float, "high": float, "log": bool,
                                       "step": float, "choices": list})
            params.append(self.param(name, key, p))
        return tuple(params)

    def param(self, name: str, key: str, p: dict[str, Any]) -> Param:
        kind = p.get("type")
        lo_min = MINIMUM[name]
        if kind == "categorical":
            if set(p) - {"type", "choices"}:
                raise self.fail(key, "a categorical parameter takes only 'choices'")
            choices = p.get("choices") or []
            if not choices:
                raise self.fail(f"{key}.choices", "give a non-empty array of values")
            want = TUNABLE[name]
            for c in choices:
                self.value(c, f"{key}.choices", want)
                if c < lo_min or (name == "lr" and c <= 0):
                    raise self.fail(f"{key}.choices", f"{c} is below the minimum {lo_min}")
            if len(set(choices)) != len(choices):
                raise self.fail(f"{key}.choices", "values must be distinct")
            return Param(name, "categorical", choices=tuple(choices))
        if kind not in ("int", "float"):
            raise self.fail(f"{key}.type", f"must be 'int', 'float' or 'categorical', got {kind!r}")
        want_kind = "int" if TUNABLE[name] is int else "float"
        if kind != want_kind:
            raise self.fail(f"{key}.type", f"'{name}' takes {want_kind} values; use "
                            f"type = \"{want_kind}\" (or categorical)")
        if "choices" in p:
            raise self.fail(f"{key}.choices", "only categorical parameters take choices")
        for b in ("low", "high"):
            if b not in p:
                raise self.fail(f"{key}.{b}", "missing")
            if kind == "int" and p[b] != int(p[b]):
                raise self.fail(f"{key}.{b}", f"must be an integer, got {p[b]}")
        low, high, log, step = p["low"], p["high"], p.get("log", False), p.get("step")
        if low > high:
            raise self.fail(key, f"low ({low:g}) is greater than high ({high:g}); swap them")
        if low < lo_min or (name == "lr" and low <= 0):
            raise self.fail(f"{key}.low", f"{low:g} is below the minimum {lo_min} for {name}")
        if log and low <= 0:
            raise self.fail(f"{key}.low", f"a log range needs low > 0, got {low:g}")
        if step is not None:
            if log:
                raise self.fail(f"{key}.step", "cannot be combined with log = true")
            if step <= 0 or (kind == "int" and step != int(step)):
                raise self.fail(f"{key}.step", f"must be a positive {kind}, got {step:g}")
            n = (high - low) / step
            if abs(n - round(n)) > 1e-9:
                raise self.fail(f"{key}.step", f"{step:g} does not divide high - low "
                                f"({high - low:g}); pick a step that fits")
        cast = int if kind == "int" else float
        return Param(name, kind, low=cast(low), high=cast(high), log=log,
                     step=None if step is None else cast(step))

    def sampler(self, raw: dict[str, Any], space: tuple[Param, ...]) -> dict[str, Any]:
        kind = raw.get("type", "tpe") if isinstance(raw, dict) else None
        if kind not in SAMPLERS:
            raise self.fail("sampler.type", f"unknown sampler {kind!r}; use one of "
                            f"{', '.join(SAMPLERS)}")
        s = self.table(raw, "sampler", {"type": str, **SAMPLERS[kind]})
        if s.get("n_startup_trials", 1) < 0:
            raise self.fail("sampler.n_startup_trials", "must be >= 0")
        if kind == "grid":
            for p in space:
                if p.grid() is None:
                    raise self.fail(f"space.{p.name}", "a grid needs finite values: give a step "
                                    "or choices")
        if kind == "points":
            s["points"] = [self.point(pt, i, space) for i, pt in enumerate(s.get("points", []))]
            if not s["points"]:
                raise self.fail("sampler.points", "give at least one point")
        return {"type": kind, **s}

    def point(self, pt: Any, i: int, space: tuple[Param, ...]) -> dict[str, Any]:
        key = f"sampler.points[{i}]"
        if not isinstance(pt, dict) or set(pt) != {p.name for p in space}:
            raise self.fail(key, f"must set exactly {', '.join(p.name for p in space)}")
        for p in space:
            v = pt[p.name]
            grid = p.grid()
            ok = v in grid if grid is not None else p.low is not None and p.low <= v <= p.high  # type: ignore[operator]
            if not ok:
                raise self.fail(f"{key}.{p.name}", f"{v!r} is outside [space.{p.name}]")
        return dict(pt)

    def pruner(self, raw: dict[str, Any], metrics: tuple[str, ...]) -> dict[str, Any]:
        kind = raw.get("type", "none") if isinstance(raw, dict) else None
        if kind not in PRUNERS:
            raise self.fail("pruner.type", f"unknown pruner {kind!r}; use one of "
                            f"{', '.join(PRUNERS)}")
        p = self.table(raw, "pruner", {"type": str, **PRUNERS[kind]})
        if kind != "none" and len(metrics) > 1:
            raise self.fail("pruner.type", "pruning needs a single objective; use type = "
                            "\"none\" with objective.second")
        for k, v in p.items():
            if k != "type" and (v < 0 or (k in ("reduction_factor",) and v < 2)):
                raise self.fail(f"pruner.{k}", f"{v} is out of range")
        if not 0 < p.get("percentile", 50.0) < 100:
            raise self.fail("pruner.percentile", "must be between 0 and 100")
        return {"type": kind, **p}

    def budget(self, trials: int | None, sampler: dict[str, Any],
               space: tuple[Param, ...]) -> int:
        size = None
        if sampler["type"] == "grid":
            size = math.prod(len(p.grid() or []) for p in space)
        elif sampler["type"] == "points":
            size = len(sampler["points"])
        if trials is None:
            if size is None:
                raise self.fail("trials", "missing; set the study's budget, e.g. trials = 40")
            return size
        if trials < 1:
            raise self.fail("trials", f"must be >= 1, got {trials}")
        if size is not None and trials > size:
            raise self.fail("trials", f"{trials} exceeds the {size} distinct points of this "
                            f"{sampler['type']} study; lower it or drop it")
        return trials


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    names = [p.name for p in spec.space]
    return [dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(p.grid() or [] for p in spec.space))]


