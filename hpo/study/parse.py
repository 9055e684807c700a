"""Study files: TOML data declaring one study, validated strictly before storage is touched.

Validation has two halves. The parser here checks what only hpo knows: unknown keys, types,
names, which parameters exist, resource bounds no library checks. Then hpo.study.construct builds,
in memory, every object a worker will build from the spec, through the owners' own constructors,
and refuses what they refuse, as one line naming the file and the dotted key.

A study on the user's own signals (`[data] file = "PATH"`, relative to the study file) is
described by the parser (the files' shapes from their headers, their sha256, the split sizes),
and construct() checks what a worker will find: the same bytes, a memory estimate, then every
value loaded and split. hpo.study.datatable holds those checks.
"""

from __future__ import annotations

import math
import re
import tomllib
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

from hpo.errors import StudyFileError, first_line
from hpo.study.construct import (
    construct,
    contains,
    distribution,
    fail,
)
from hpo.study.datatable import DATA_KEYS, data_table
from hpo.study.metrics import METRICS
from hpo.study.spec import TUNABLE, Param, StudySpec
from hpo.study.strategies import MAX_STEP, PrunerSpec, SamplerSpec

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_TRIALS = 10**9
# Optuna's GridSampler lists every point in memory (and so does a points study's storage).
MAX_GRID = 1_000_000
# A stepped range with more values than this is continuous in all but name (and Optuna's
# exact decimal arithmetic on the step fails past about 1e28).
MAX_VALUES = 1e12
MAX_EI_CANDIDATES = 10_000
_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               list: "an array", dict: "a table"}


def load_study_file(path: str | Path) -> StudySpec:
    path = Path(path)
    if not path.is_file():
        raise StudyFileError(f"{path}: study file not found; pass a TOML file such as "
                             "studies/smoke.toml")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StudyFileError(f"{path}: not valid TOML ({e}); fix the syntax") from e
    except OSError as e:
        raise StudyFileError(f"{path}: cannot read the study file ({e.strerror})") from e
    return parse_study(raw, str(path), base=path.parent)


def parse_study(raw: dict[str, Any], src: str = "<study>", base: str | Path | None = None
                ) -> StudySpec:
    """`base`: the directory relative data paths start from (the study file's; else the current
    directory)."""
    spec = _Parser(src, Path(base) if base is not None else Path.cwd()).study(raw)
    construct(spec, src)
    return spec




class _Parser:
    def __init__(self, src: str, base: Path) -> None:
        self.src = src
        self.base = base  # relative data paths start here

    def fail(self, key: str, msg: str) -> StudyFileError:
        return fail(self.src, key, msg)

    def table(self, raw: Any, key: str, allowed: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail(key, f"must be a table, got {type(raw).__name__}")
        for k in raw:
            if k not in allowed:
                raise self.fail(f"{key}.{k}" if key else k,
                                f"unknown key; allowed: {', '.join(sorted(allowed)) or 'none'}")
        return {k: self.value(raw[k], f"{key}.{k}" if key else k, allowed[k]) for k in raw}

    def value(self, v: Any, key: str, kind: Any) -> Any:
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            try:
                v = float(v)
            except OverflowError:
                raise self.fail(key, f"{v} is too large for a number") from None
        if kind in (int, float) and isinstance(v, bool) or not isinstance(v, kind):
            raise self.fail(key, f"must be {_TYPE_NAMES.get(kind, kind)}, got {v!r}")
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
        for k in train:
            if k in names:
                raise self.fail(f"train.{k}", f"'{k}' is also searched in [space.{k}]; fix it "
                                "in one place only")
        if "train" in data and "train_curves" in names:
            raise self.fail("data.train", "'train_curves' is also searched in "
                            "[space.train_curves]; fix it in one place only")
        data = data_table(data, names, self.src, self.base)  # a file study: describes its file
        repeats = top.get("repeats", 1)
        if not 1 <= repeats <= 20:
            raise self.fail("repeats", f"must be between 1 and 20, got {repeats}")
        trials = self.budget(top.get("trials"), sampler.size(space), sampler.kind)
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
        for name, body in self.table(raw, "space", dict.fromkeys(TUNABLE, dict)).items():
            key = f"space.{name}"
            p = self.table(body, key, {"type": str, "low": float, "high": float, "log": bool,
                                       "step": float, "choices": list})
            params.append(self.param(name, key, p))
        return tuple(params)

    def param(self, name: str, key: str, p: dict[str, Any]) -> Param:
        kind = p.get("type")
        if kind == "categorical":
            if set(p) - {"type", "choices"}:
                raise self.fail(key, "a categorical parameter takes only 'choices'")
            choices = p.get("choices") or []
            if not choices:
                raise self.fail(f"{key}.choices", "give a non-empty array of values")
            for c in choices:
                self.value(c, f"{key}.choices", TUNABLE[name])
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
            if kind == "int" and (p[b] != int(p[b]) or abs(p[b]) > 2**53):
                raise self.fail(f"{key}.{b}", f"must be an integer, got {p[b]}")
        low, high, log, step = p["low"], p["high"], p.get("log", False), p.get("step")
        if low > high:
            raise self.fail(key, f"low ({low:g}) is greater than high ({high:g}); swap them")
        if log and low <= 0:
            raise self.fail(f"{key}.low", f"a log range needs low > 0, got {low:g}")
        if step is not None:
            if log:
                raise self.fail(f"{key}.step", "cannot be combined with log = true")
            if step <= 0 or (kind == "int" and step != int(step)):
                raise self.fail(f"{key}.step", f"must be a positive {kind}, got {step:g}")
            n = (high - low) / step  # inf for a subnormal step
            # Compared as the decimals the file wrote: (0.03 - 0.02) / 0.01 is 0.999... in floats.
            if high > low and Decimal(repr(high)) - Decimal(repr(low)) < Decimal(repr(step)):
                raise self.fail(f"{key}.step", f"{step:g} is larger than high - low "
                                f"({high - low:g}), which leaves only low; use a smaller step")
            if not n <= MAX_VALUES:
                raise self.fail(f"{key}.step", f"{step:g} cuts [{low:g}, {high:g}] into more "
                                f"than {MAX_VALUES:g} values; use a coarser step or drop step "
                                "(a continuous range)")
            # Whether the step divides the range is Optuna's to say: a distribution whose high
            # it moves is one the workers would search narrower than the file says.
            try:
                with warnings.catch_warnings():  # its warning about moving high: we refuse
                    warnings.simplefilter("ignore")
                    d = distribution(Param(name, kind, low=low, high=high, step=step))
            except (ValueError, TypeError, ArithmeticError) as e:
                raise self.fail(f"{key}.step", first_line(e)) from e
            if d.high != high:  # type: ignore[attr-defined]
                raise self.fail(f"{key}.step", f"{step:g} does not divide high - low "
                                f"({high - low:g}): Optuna would lower high from {high:g} to "
                                f"{d.high:g}; pick a step that fits")  # type: ignore[attr-defined]
        cast = int if kind == "int" else float
        return Param(name, kind, low=cast(low), high=cast(high), log=log,
                     step=None if step is None else cast(step))

    def sampler(self, raw: dict[str, Any], space: tuple[Param, ...]) -> SamplerSpec:
        kind = raw.get("type", "tpe") if isinstance(raw, dict) else None
        if not isinstance(kind, str) or kind not in SamplerSpec.KINDS:
            raise self.fail("sampler.type", f"unknown sampler {kind!r}; use one of "
                            f"{', '.join(SamplerSpec.KINDS)}")
        s = self.table(raw, "sampler", {"type": str, **SamplerSpec.KINDS[kind]})
        s.pop("type", None)
        for k in ("n_startup_trials", "n_ei_candidates"):
            if s.get(k, 1) < (1 if k == "n_ei_candidates" else 0):
                raise self.fail(f"sampler.{k}", f"must be >= {1 if k == 'n_ei_candidates' else 0}"
                                f", got {s[k]}")
        if s.get("n_ei_candidates", 1) > MAX_EI_CANDIDATES:
            # TPE scores every candidate against every past trial: 8 bytes each, per suggestion.
            raise self.fail("sampler.n_ei_candidates", f"{s['n_ei_candidates']} candidates "
                            f"would cost ~{s['n_ei_candidates'] * 8 / 2**30:.2g} GiB per "
                            f"suggestion and trial so far; use at most {MAX_EI_CANDIDATES} "
                            "(Optuna's default is 24)")
        if kind == "grid":
            for p in space:
                if p.count() is None:
                    raise self.fail(f"space.{p.name}", "a grid needs finite values: give a step "
                                    "or choices")
            size = math.prod(p.count() or 0 for p in space)
            if size > MAX_GRID:
                raise self.fail("sampler.type", f"the grid has {size} points, more than "
                                f"{MAX_GRID}; coarsen the steps")
        points: list[dict[str, Any]] = []
        if kind == "points":
            points = [self.point(pt, i, space) for i, pt in enumerate(s.pop("points", []))]
            if not points:
                raise self.fail("sampler.points", "give at least one point")
        return SamplerSpec(kind, s, tuple(points))

    def point(self, pt: Any, i: int, space: tuple[Param, ...]) -> dict[str, Any]:
        key = f"sampler.points[{i}]"
        if not isinstance(pt, dict) or set(pt) != {p.name for p in space}:
            raise self.fail(key, f"must set exactly {', '.join(p.name for p in space)}")
        out = {p.name: self.value(pt[p.name], f"{key}.{p.name}", TUNABLE[p.name])
               for p in space}
        for p in space:  # asked of Optuna's own distribution, as a worker's trial would be
            if not contains(distribution(p), out[p.name]):
                raise self.fail(f"{key}.{p.name}", f"{out[p.name]!r} is outside "
                                f"[space.{p.name}]")
        return out

    def pruner(self, raw: dict[str, Any], metrics: tuple[str, ...]) -> PrunerSpec:
        kind = raw.get("type", "none") if isinstance(raw, dict) else None
        if not isinstance(kind, str) or kind not in PrunerSpec.KINDS:
            raise self.fail("pruner.type", f"unknown pruner {kind!r}; use one of "
                            f"{', '.join(PrunerSpec.KINDS)}")
        p = self.table(raw, "pruner", {"type": str, **PrunerSpec.KINDS[kind]})
        p.pop("type", None)
        if kind != "none" and len(metrics) > 1:
            raise self.fail("pruner.type", "pruning needs a single objective; use type = "
                            "\"none\" with objective.second")
        if kind != "none" and metrics[0] != "val_removed":
            raise self.fail("pruner.type", f"pruning compares validation scores during "
                            f"training, but the objective is {metrics[0]!r}; use type = "
                            "\"none\" or metric = \"val_removed\"")
        for k in PrunerSpec.STEP_KEYS:
            if k in p and not 0 <= p[k] <= MAX_STEP:
                raise self.fail(f"pruner.{k}", f"{p[k]} is out of range: steps are percent of "
                                f"each trial's schedule (10, 20, ..., {MAX_STEP})")
        if p.get("min_resource", 1) > p.get("max_resource", MAX_STEP):
            raise self.fail("pruner.min_resource", "must not exceed max_resource")
        if "min_early_stopping_rate" in p:
            # Successive halving's first rung is at min_resource * reduction_factor ** rate;
            # Optuna computes that power at every report, which never ends for a huge rate.
            rate, factor = p["min_early_stopping_rate"], p.get("reduction_factor", 4)
            first = max(p.get("min_resource", 1), 1)
            top = 0 if factor < 2 else int(math.log(MAX_STEP / first, factor) + 1e-9)
            if rate > top:
                raise self.fail("pruner.min_early_stopping_rate", f"{rate} puts the first rung "
                                f"past step {MAX_STEP} (the end of every schedule), so nothing "
                                f"would be pruned; use at most {top}")
        if kind == "percentile" and "percentile" not in p:
            raise self.fail("pruner.percentile", "missing; e.g. percentile = 25.0 (prune trials "
                            "below the 25th percentile)")
        if not 0 < p.get("percentile", 50.0) < 100:
            raise self.fail("pruner.percentile", "must be between 0 and 100")
        return PrunerSpec(kind, p)

    def budget(self, trials: int | None, size: int | None, kind: str) -> int:
        if trials is None:
            if size is None:
                raise self.fail("trials", "missing; set the study's budget, e.g. trials = 40")
            return size
        if not 1 <= trials <= MAX_TRIALS:
            raise self.fail("trials", f"must be between 1 and {MAX_TRIALS}, got {trials}")
        if size is not None and trials > size:
            raise self.fail("trials", f"{trials} exceeds the {size} distinct points of this "
                            f"{kind} study; lower it or drop it")
        return trials
