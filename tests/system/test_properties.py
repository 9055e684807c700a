"""Property-based bad-input tests: hypothesis GENERATES study files, flag values, paths and
environment values instead of listing them (tests/system/test_bad_input.py is the listed corpus).

The property, everywhere: an input either works (exit 0, and the study, output or result is
really there) or is refused by the contract: exactly one line on stderr starting with `error: `
that names the file, key, flag or variable, a non-zero exit, no traceback (no exception other than
SystemExit), nothing on stdout, and the storage (every file of a SQLite directory, byte for byte,
and its logical dump) left as it was. An accepted study file must also be workable: what every
worker builds from it (sampler, pruner, a few asked and pruned trials, training and data settings
at the corners of the space, within this machine's memory) must not raise; otherwise the file was
"accepted at create time, crashes every worker later".

Nothing a generated input asks for may hurt the test process: each in-process call runs under a
guard (an address-space limit a few GiB above the current size, so a huge allocation is a
MemoryError instead of the kernel's OOM killer, and a CPU-time limit), `hpo search` never starts
real workers (subprocess.Popen is replaced by stand-ins that exit at once, and counted), and
trainings are kept tiny.

Sizes: the default run does a bounded number of examples (about a minute on two cores); the tests
marked slow (`pytest -m slow tests/system/test_properties.py`) do HPO_HYPOTHESIS_EXAMPLES
examples in total (default 10000), shared between the same properties.
`--hypothesis-show-statistics` shows how many inputs were accepted, refused, and why.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import math
import os
import re
import resource
import shutil
import signal
import sqlite3
import string
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from typer.testing import CliRunner

from hpo.cli import app
from hpo.errors import HpoError, one_line
from hpo.study.parse import load_study_file
from hpo.study.spec import StudySpec
from tests.support.snapshots import sqlite_snapshot

ROOT = Path(__file__).resolve().parents[2]
LONG_TOTAL = max(int(os.environ.get("HPO_HYPOTHESIS_EXAMPLES", "10000")), 100)
MACHINE_MEMORY = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
GIB = 2**30
HEADROOM = 3 * GIB  # what one in-process call may allocate beyond the process's current size
WORKER_BYTES = 200 * 2**20  # a worker process (Python, torch, optuna) needs at least this much
THREAD_BYTES = 8 * 2**20  # the stack a thread reserves


# Failing examples are replayed first on the next run; kept out of the work tree's status.
DATABASE = DirectoryBasedExampleDatabase(ROOT / ".pytest_cache" / "hypothesis-properties")


def examples(default: int, share: float, *, slow: bool, shrink: bool = True
             ) -> Callable[[Any], Any]:
    """Hypothesis settings: `default` examples in the default run, `share` of the long run's
    total in the slow one. No "explain" phase (it reruns every failure dozens of times); no
    shrinking where one example costs a fresh interpreter."""
    n = max(default, int(LONG_TOTAL * share)) if slow else default
    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target] + (
        [Phase.shrink] if shrink else [])
    return settings(max_examples=n, deadline=None, database=DATABASE, phases=phases,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much,
                                           HealthCheck.function_scoped_fixture])


# --- the guard: no generated input may kill or stall the test process -------------------------


class Overrun(BaseException):
    """The guarded call ran past its CPU-time limit (a BaseException: hpo's `except Exception`
    must not swallow it)."""


class WouldKillTheMachine(AssertionError):
    """An in-process call asked for more memory than the guard allows: outside the test, the
    kernel would have killed the process (or the machine would have swapped to a halt)."""


class TooSlow(AssertionError):
    """An in-process call that should be quick (a validation, a create) ran past its limit."""


def _vsz() -> int:
    return int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def guard(cpu_seconds: float) -> Iterator[None]:
    """Runs the block with an address-space limit HEADROOM above the current size and a limit of
    cpu_seconds of CPU time (SIGPROF: no clash with pytest-timeout's SIGALRM)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vsz() + HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)

    def on_timer(signum: int, frame: Any) -> None:
        raise Overrun(f"more than {cpu_seconds} s of CPU time")

    previous = signal.signal(signal.SIGPROF, on_timer)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.setitimer(signal.ITIMER_PROF, cpu_seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGPROF, previous)


def is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and (
        "allocate" in str(e) or "out of memory" in str(e).lower()))


def guarded(fn: Callable[[], Any], cpu_seconds: float, what: str) -> Any:
    """fn() under the guard; running out of the guard's memory or time becomes a failure of its
    own kind (raised here, outside the except blocks, so every such case is one bug class)."""
    overrun: str | None = None
    oom: BaseException | None = None
    try:
        with guard(cpu_seconds):
            return fn()
    except Overrun as e:
        overrun = str(e)
    except BaseException as e:
        if not is_out_of_memory(e):
            raise
        oom = e
    gc.collect()
    if overrun is not None:
        raise TooSlow(f"{what}: {overrun}")
    assert oom is not None
    raise WouldKillTheMachine(f"{what}: needs more than {HEADROOM / GIB:.0f} GiB beyond the "
                              f"process ({type(oom).__name__}: {str(oom)[:200]})") from oom





def files_snapshot(d: Path) -> dict[str, bytes | str]:
    """Every entry under d: a file's bytes, or what a directory or link is."""
    snap: dict[str, bytes | str] = {}
    for f in sorted(d.rglob("*")):
        key = str(f.relative_to(d))
        if f.is_symlink():
            snap[key] = f"link to {os.readlink(f)}"
        elif f.is_dir():
            snap[key] = "directory"
        elif f.is_file():
            snap[key] = f.read_bytes()
    return snap


# --- the contract ------------------------------------------------------------------------------


class BrokenContract(AssertionError):
    """A refusal that is not one `error:` line, or that changed something."""


class ValidRefused(AssertionError):
    """An input the documentation allows was refused."""


class AcceptedImpossible(AssertionError):
    """An input accepted although it can never work (crashes every worker later, or needs more
    than this machine has)."""


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]


def check_refusal(exit_code: int | None, stdout: str, stderr: str, names: list[str],
                  exception: BaseException | None = None) -> str:
    """The contract for a refused input; returns the error line. An exception other than
    SystemExit is re-raised as it is, with its own traceback (each such bug keeps its own
    origin, so hypothesis reports each of them)."""
    if exception is not None and not isinstance(exception, SystemExit):
        raise_unexpected(exception)
    if exit_code in (0, None):
        raise BrokenContract(f"exit code {exit_code} for a refusal")
    lines = error_lines(stderr)
    if "Traceback" in stderr:
        raise BrokenContract(f"a traceback on stderr (exit {exit_code}): {lines[-1:]}")
    if not lines:
        raise BrokenContract(f"exit {exit_code} with nothing on stderr (stdout: {stdout[-300:]!r})")
    if len(lines) != 1:
        raise BrokenContract(f"{len(lines)} lines on stderr instead of one: {lines[:4]}")
    line = lines[0]
    if not line.startswith("error: "):
        raise BrokenContract(f"the line does not start with 'error: ': {line[:300]!r}")
    if stdout.strip():
        raise BrokenContract(f"stdout is not empty on a refusal: {stdout[:300]!r}")
    if names and not any(n and n in line for n in names):
        raise BrokenContract(f"the error names none of {names[:6]}: {line[:300]!r}")
    return line


def raise_unexpected(e: BaseException) -> None:
    """A command's uncaught exception, as it is (its origin is the bug's), except that running
    out of the guard's memory says so."""
    if is_out_of_memory(e):
        raise WouldKillTheMachine(f"needs more than the test's guard of {HEADROOM / GIB:.0f} GiB "
                                  f"beyond the process ({type(e).__name__}: {str(e)[:200]})"
                                  ) from e
    raise e


_calls = [0]


def collect() -> None:
    """Commands run in-process leave their storage's pooled SQLite connections to the garbage
    collector; a full collection costs most of a second here, so one every 25 commands."""
    _calls[0] += 1
    if _calls[0] % 25 == 0:
        gc.collect()


def invoke(args: list[str], *, cpu_seconds: float = 30.0, env: dict[str, str | None] | None = None,
           ) -> Any:
    """The CLI in-process, guarded. Usage errors must come back as one line too."""
    note(f"hpo {' '.join(args)}")
    # The caller's own HPO_* settings (but the test's artifact and cache directories) must not
    # leak into a command.
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("HPO_")
                                    and k not in ("HPO_ARTIFACTS", "HPO_CACHE_DIR")}
    result = guarded(lambda: CliRunner().invoke(app, args, env={**clean, **(env or {})}),
                     cpu_seconds, f"hpo {args[0] if args else ''}")
    note(f"exit {result.exit_code}; stdout {result.stdout[-500:]!r}; "
         f"stderr {result.stderr[-800:]!r}")
    return result


# --- the world: a storage with studies, a model file and a CSV ---------------------------------

EXISTING = "existing"  # one complete and one failed trial
DONE = "done"  # budget 1, met: a worker on it stops at once
TINY_STUDY: dict[str, Any] = {
    "trials": 4, "seed": 0, "sampler": {"type": "tpe"}, "pruner": {"type": "none"},
    "space": {"hidden_size": {"type": "int", "low": 2, "high": 4},
              "epochs": {"type": "int", "low": 1, "high": 2}},
    "data": {"seed": 0, "train": 4, "val": 10, "test": 10},
}


class World:
    """Where examples run: a template storage (studies EXISTING and DONE) copied for each
    example, a model file, a CSV of signals, and the environment of subprocesses."""

    def __init__(self, base: Path, template: Path, model: Path, csv: Path, rows: int,
                 env: dict[str, str]) -> None:
        self.base, self.template, self.model, self.csv = base, template, model, csv
        self.rows, self.env = rows, env

    def __repr__(self) -> str:  # hypothesis prints it with every falsifying example
        return f"World({self.base})"

    def storage(self) -> tuple[Path, str]:
        """A fresh copy of the template storage: (its directory, its URL)."""
        d = Path(tempfile.mkdtemp(prefix="st", dir=self.base))
        shutil.copy(self.template / "hpo.db", d / "hpo.db")
        return d, f"sqlite:///{d / 'hpo.db'}"

    def scratch(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="ex", dir=self.base))


def write_study(path: Path, body: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(body))
    return path


def make_world(base: Path) -> World:
    """Builds the world in base (HPO_CACHE_DIR should point into it already)."""
    import optuna

    template = base / "template"
    template.mkdir()
    url = f"sqlite:///{template / 'hpo.db'}"
    for name, trials in ((EXISTING, 4), (DONE, 1)):
        f = write_study(base / f"{name}.toml", {"name": name, **TINY_STUDY, "trials": trials})
        r = CliRunner().invoke(app, ["create", str(f), "--storage", url])
        assert r.exit_code == 0, r.output
    storage = optuna.storages.RDBStorage(url)
    dist: dict[str, optuna.distributions.BaseDistribution] = {
        "hidden_size": optuna.distributions.IntDistribution(2, 4),
            "epochs": optuna.distributions.IntDistribution(1, 2)}
    for name, states in ((EXISTING, ("complete", "fail")), (DONE, ("complete",))):
        study = optuna.load_study(study_name=name, storage=storage)
        for state in states:
            t = study.ask(dist)
            if state == "complete":
                study.tell(t, 42.0)
            else:
                study.tell(t, state=optuna.trial.TrialState.FAIL)
    storage.engine.dispose()
    del storage
    gc.collect()
    con = sqlite3.connect(template / "hpo.db")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    for f in template.iterdir():
        if f.name != "hpo.db":
            f.unlink()
    model = base / "model.pt"
    r = CliRunner().invoke(app, ["train", "--epochs", "1", "--hidden-size", "2", "--train-curves",
                                 "4", "--threads", "1", "--save", str(model), "--json"])
    assert r.exit_code == 0, r.output
    (base / "artifacts").mkdir()
    csv = base / "noisy.csv"
    rows = 3
    csv.write_text("\n".join(",".join(f"{math.sin(i / 7 + k):.4f}" for i in range(80))
                             for k in range(rows)) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env.update(PYTHONPATH=str(ROOT), HPO_ARTIFACTS=str(base / "artifacts"),
               HPO_CACHE_DIR=str(base / "cache"), PYTHONDONTWRITEBYTECODE="1")
    return World(base, template, model, csv, rows, env)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("properties")
    mp = pytest.MonkeyPatch()
    mp.setenv("HPO_CACHE_DIR", str(base / "cache"))  # baselines of generated data stay here
    try:
        yield make_world(base)
    finally:
        mp.undo()


# --- what a worker builds from an accepted study -----------------------------------------------


def corners(spec: StudySpec) -> list[dict[str, Any]]:
    """The space's all-low and all-high points, and each parameter alone at its high end."""
    ends: dict[str, tuple[Any, Any]] = {}
    for p in spec.space:
        if p.type == "categorical":
            values = list(p.choices)
            try:
                ends[p.name] = (min(values), max(values))
            except TypeError:
                ends[p.name] = (values[0], values[-1])
        else:
            assert p.low is not None and p.high is not None
            cast = int if p.type == "int" else float
            ends[p.name] = (cast(p.low), cast(p.high))
    low = {k: v[0] for k, v in ends.items()}
    points = [low, {k: v[1] for k, v in ends.items()}]
    points += [{**low, k: v[1]} for k, v in ends.items()]
    return points


@dataclass(frozen=True)
class Sizes:
    n_train: int
    n_val: int
    n_test: int
    length: int  # points per signal


def worker_bytes(train: Any, data: Sizes) -> int:
    """A lower estimate of what one training needs: the model and Adam's state, a batch's and the
    validation pass's activations, the signals (generating a split holds about 51 bytes per
    point)."""
    h = int(train.hidden_size)
    params = 4 * h * (1 + h + 2) + 4 * h * (2 * h + 2) + h + 1
    steps = data.length + int(train.shift)
    batch = min(int(train.batch_size), data.n_train)
    activations = 4 * steps * h * 6 * (batch + min(data.n_val, 1000))
    curves = 51 * data.length * max(data.n_train, data.n_val, data.n_test)
    return 4 * 4 * params + activations + curves


def worker_flops(train: Any, data: Sizes) -> float:
    """A lower estimate of one training's arithmetic: forward and backward (x3) through both
    LSTMs (about 12 h^2 per step) for every training and validation curve, every epoch."""
    h = int(train.hidden_size)
    steps = data.length + int(train.shift)
    curves = data.n_train + data.n_val
    return 3.0 * int(train.epochs) * curves * steps * 12 * h * (h + 1)


YEAR_OF_FLOPS = 1e11 * 3.15e7  # a year at 100 GFLOP/s: a trial longer than that never finishes


def build_like_a_worker(spec: StudySpec) -> None:
    """What every worker builds from a stored study (hpo.run.worker / hpo.run.objective): its
    sampler
    (seeded like a worker's), its pruner, and a few trials asked, reported at 10 ... 100 % and
    told, on an in-memory study; plus the training and data settings at the corners of the space,
    each within this machine's memory. Raises what a worker would hit. (The one place that
    knows hpo's worker internals: update it when they move.)"""
    import optuna

    from hpo.run.objective import suggest
    from hpo.store.studies import make_pruner, make_sampler
    from hpo.study.spec import trial_seed, worker_seed
    from hpo.task import source as task_source

    for index, n_existing in ((0, 0), (7, 3)):
        make_sampler(spec, worker_seed(spec, index, n_existing))
    sampler, pruner = make_sampler(spec, 0), make_pruner(spec)
    for params in corners(spec):
        train = spec.train_config(params, seed=0)
        source = spec.source(params)
        n_train, n_val, n_test = task_source.sizes(source)
        data = Sizes(n_train, n_val, n_test, task_source.length(source))
        need = worker_bytes(train, data)
        if need > MACHINE_MEMORY:
            raise AcceptedImpossible(
                f"a trial at {params} needs at least {need / GIB:.3g} GiB (model hidden "
                f"{train.hidden_size}, shift {train.shift}, batch {train.batch_size}; curves "
                f"train {data.n_train}, val {data.n_val}, test {data.n_test}); this machine has "
                f"{MACHINE_MEMORY / GIB:.0f} GiB")
        if worker_flops(train, data) > YEAR_OF_FLOPS:
            raise AcceptedImpossible(
                f"a trial at {params} needs more than a year at 100 GFLOP/s ({train.epochs} "
                f"epochs of {data.n_train} curves, hidden {train.hidden_size}, shift "
                f"{train.shift}): it can never finish")
    high = corners(spec)[1]  # the splits a worker trains on, at the largest corner
    source = spec.source(high)
    if worker_bytes(spec.train_config(high, seed=0), Sizes(*task_source.sizes(source),
                                                           task_source.length(source))) < GIB:
        for name in ("train", "val"):  # (larger ones, within the machine, only estimated)
            task_source.model_split(source, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(directions=spec.directions,  # type: ignore[arg-type]
                                    sampler=sampler, pruner=pruner)
    if spec.sampler.kind == "points":
        for point in spec.sampler.points:
            study.enqueue_trial(dict(point))
    # TPE samples its own way only after its start-up trials: ask past them (its candidates
    # are drawn then), as every worker soon does.
    asks = 3
    if spec.sampler.kind == "tpe":
        asks = max(3, min(int(spec.sampler.options.get("n_startup_trials", 10)) + 2, 12))
    for _ in range(asks):
        trial = study.ask()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna warns when it narrows a range (below)
            params = {p.name: suggest(trial, p) for p in spec.space}
        for p in spec.space:
            dist = trial.distributions[p.name]
            numeric = (optuna.distributions.IntDistribution,
                       optuna.distributions.FloatDistribution)
            if isinstance(dist, numeric) and p.low is not None and p.high is not None and not (
                    math.isclose(dist.low, p.low, rel_tol=1e-9)
                    and math.isclose(dist.high, p.high, rel_tol=1e-9)):
                raise SpaceChanged(f"space.{p.name}: the file says {p.low:g} to {p.high:g}"
                                   f"{f' step {p.step:g}' if p.step else ''}, the workers "
                                   f"search {dist}")
        train = spec.train_config(params, seed=trial_seed(spec, trial.number, 0))
        spec.source(params)
        if len(spec.directions) > 1:
            study.tell(trial, [50.0, 1.0])
            continue
        pruned = False
        for step in range(10, 101, 10):
            trial.report(50.0 - trial.number + step / 10, step)
            if trial.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, 50.0 - trial.number)
        assert train.epochs >= 1


class SpaceChanged(AssertionError):
    """Accepted, but Optuna's distribution differs from the file's range (a step that does not
    divide it narrows it silently)."""


def worker_check(spec: StudySpec) -> None:
    """build_like_a_worker, guarded; whatever it raises means "accepted at create time, crashes
    every worker later" (the original exception stays attached: one bug class per origin)."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # (an exhausted grid warns each ask)
    try:
        guarded(lambda: build_like_a_worker(spec), 20.0, "build_like_a_worker")
    except (AcceptedImpossible, TooSlow, WouldKillTheMachine, SpaceChanged):
        raise
    except Exception as e:
        raise AcceptedImpossible(f"accepted, but what a worker builds from it raises "
                                 f"{type(e).__name__}: {str(e)[:300]}") from e
    finally:
        optuna.logging.set_verbosity(verbosity)


# --- study files: a valid generator ------------------------------------------------------------

INT_RANGES = {"hidden_size": (1, 64), "shift": (0, 30), "epochs": (1, 60), "batch_size": (1, 64),
              "train_curves": (1, 300)}
FLOAT_RANGES = {"lr": (1e-4, 0.3), "weight_decay": (0.0, 0.1), "grad_clip": (0.0, 10.0)}
PARAMS = [*INT_RANGES, *FLOAT_RANGES]
METRICS = ["val_removed", "train_seconds"]
SAMPLERS = ["tpe", "random", "grid", "gp", "points"]
PRUNERS = ["none", "median", "percentile", "successive_halving", "hyperband"]
ALNUM = string.ascii_letters + string.digits
# Names hpo's own error message allows: a letter or digit, then letters, digits, '_', '-' or
# '.'; 64 characters at most.
NAMES = st.builds(str.__add__, st.sampled_from(ALNUM), st.text(ALNUM + "_.-", max_size=63))
RESERVED = {EXISTING, DONE}


def one_in(n: int, draw: st.DrawFn) -> bool:
    """True once in n draws (hypothesis's integers favour 0, sampled_from is uniform); shrinks
    to False."""
    return draw(st.sampled_from([False] * (n - 1) + [True]))


def nice_floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False).map(lambda x: round(x, 6)) \
        .filter(lambda x: lo <= x <= hi)


@st.composite
def int_param(draw: st.DrawFn, name: str, finite: bool) -> tuple[dict[str, Any], list[Any] | None]:
    """A valid int parameter and its finite values (None for a range)."""
    lo, hi = INT_RANGES[name]
    form = draw(st.sampled_from(["step", "categorical", "plain"] if finite else
                                ["plain", "log", "step", "categorical"]))
    if form == "categorical":
        choices = draw(st.lists(st.integers(lo, hi), min_size=1, max_size=5, unique=True))
        return {"type": "categorical", "choices": choices}, choices
    low = draw(st.integers(max(lo, 1) if form == "log" else lo, hi))
    if form == "step":
        step = draw(st.integers(1, 10))
        k = draw(st.integers(0, 4 if finite else 10))
        high = low + k * step
        body = {"type": "int", "low": low, "high": high, "step": step}
        return body, list(range(low, high + 1, step))
    high = draw(st.integers(low, min(hi, low + 6) if finite else hi))
    body = {"type": "int", "low": low, "high": high}
    if form == "log":
        body["log"] = True
    elif draw(st.booleans()):
        body["log"] = False
    return body, list(range(low, high + 1))


@st.composite
def float_param(draw: st.DrawFn, name: str, finite: bool
                ) -> tuple[dict[str, Any], list[Any] | None]:
    lo, hi = FLOAT_RANGES[name]
    positive = name == "lr"
    form = draw(st.sampled_from(["step", "categorical"] if finite else
                                ["plain", "log", "step", "categorical"]))
    if form == "categorical":
        choices = draw(st.lists(nice_floats(max(lo, 1e-4) if positive else lo, hi), min_size=1,
                                max_size=5, unique=True))
        return {"type": "categorical", "choices": choices}, choices
    if form == "step":
        step = draw(st.sampled_from([0.5, 0.25, 0.1, 0.01, 0.001, 0.0001]))
        first = 1 if positive else 0
        i = draw(st.integers(first, max(first, int(hi / step) // 2)))
        k = draw(st.integers(0, 4 if finite else 20))
        low, high = round(i * step, 10), round((i + k) * step, 10)
        return ({"type": "float", "low": low, "high": high, "step": step},
                [round(low + j * step, 10) for j in range(k + 1)])
    low = draw(nice_floats(max(lo, 1e-4) if form == "log" or positive else lo, hi))
    high = draw(nice_floats(low, hi))
    body = {"type": "float", "low": low, "high": high}
    if form == "log":
        body["log"] = True
    return body, None


@st.composite
def point_value(draw: st.DrawFn, body: dict[str, Any], values: list[Any] | None) -> Any:
    if values is not None:
        return draw(st.sampled_from(values))
    return draw(nice_floats(body["low"], body["high"]))


@st.composite
def valid_studies(draw: st.DrawFn, small_data: bool = False) -> dict[str, Any]:
    """A random study file (as data) that the README allows and that can run."""
    doc: dict[str, Any] = {"name": draw(NAMES.filter(lambda n: n not in RESERVED))}
    if draw(st.booleans()):
        doc["description"] = draw(st.text(max_size=40))
    sampler_kind = draw(st.sampled_from(SAMPLERS))
    finite = sampler_kind == "grid"
    file_study = one_in(5, draw)  # the user's own signals (make_data_files)
    names = draw(st.lists(st.sampled_from([p for p in PARAMS if not file_study
                                           or p != "train_curves"]),
                          min_size=1, max_size=3 if finite else 4, unique=True))
    space: dict[str, Any] = {}
    values: dict[str, list[Any] | None] = {}
    for name in names:
        maker = int_param if name in INT_RANGES else float_param
        space[name], values[name] = draw(maker(name, finite))
    sampler: dict[str, Any] = {"type": sampler_kind}
    size: int | None = None
    if sampler_kind in ("tpe", "gp") and draw(st.booleans()):
        sampler["n_startup_trials"] = draw(st.integers(0, 20))
    if sampler_kind == "tpe":
        for opt in ("multivariate", "constant_liar"):
            if draw(st.booleans()):
                sampler[opt] = draw(st.booleans())
        if draw(st.booleans()):
            sampler["n_ei_candidates"] = draw(st.integers(1, 48))
    if sampler_kind == "grid":
        size = math.prod(len(v or []) for v in values.values())
    if sampler_kind == "points":
        pts = draw(st.lists(st.fixed_dictionaries(
            {n: point_value(space[n], values[n]) for n in names}), min_size=1, max_size=5))
        sampler["points"] = pts
        size = len(pts)
    if size is None or draw(st.booleans()):
        doc["trials"] = draw(st.integers(1, size if size is not None else 60))
    if draw(st.booleans()):
        doc["seed"] = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        doc["repeats"] = draw(st.integers(1, 3))
    metric = draw(st.sampled_from(METRICS))
    two = draw(st.booleans())
    objective: dict[str, Any] = {}
    if metric != METRICS[0] or draw(st.booleans()):
        objective["metric"] = metric
    if two:
        objective["second"] = METRICS[1 - METRICS.index(metric)]
    if bool(objective) or draw(st.booleans()):
        doc["objective"] = objective
    if draw(st.booleans()) or sampler_kind != "tpe":
        doc["sampler"] = sampler
    # Pruning compares validation scores during training: only for that one objective.
    pruner_kind = "none" if two or metric != METRICS[0] else draw(st.sampled_from(PRUNERS))
    pruner = draw(pruner_settings(pruner_kind))
    if pruner_kind != "none" or draw(st.booleans()):
        doc["pruner"] = pruner
    doc["space"] = space
    train: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from([p for p in PARAMS if p not in names
                                                and p != "train_curves"]), unique=True,
                              max_size=3)):
        if name in INT_RANGES:
            lo, hi = INT_RANGES[name]
            train[name] = draw(st.integers(lo, hi))
        else:
            flo, fhi = FLOAT_RANGES[name]
            train[name] = draw(nice_floats(max(flo, 1e-4) if name == "lr" else flo, fhi))
    if train:
        doc["train"] = train
    data: dict[str, Any] = {}
    if file_study:
        data["file"] = draw(st.sampled_from(["signals.npy", "signals.csv"]))
        if data["file"] == "signals.npy" and draw(st.booleans()):
            data["noisy_file"] = "noisy.npy"
        elif draw(st.booleans()):
            data["noise_ratio"] = draw(nice_floats(0.0, 1.0))
        if draw(st.booleans()):
            data["normalize"] = draw(st.booleans())
        if draw(st.booleans()):
            data["seed"] = draw(st.integers(0, 2**32 - 1))
        if draw(st.booleans()):
            data.update(zip(("train", "val", "test"), (20, 10, 10) if data["file"].endswith(
                "npy") else (15, 8, 7), strict=True))
        doc["data"] = data
        return doc
    if small_data:
        data = {"seed": draw(st.sampled_from([0, 1])), "val": draw(st.sampled_from([10, 20])),
                "test": draw(st.sampled_from([10, 30]))}
    else:
        for key, strategy in (("seed", st.integers(0, 2**32 - 1)), ("val", st.integers(1, 60)),
                              ("test", st.integers(1, 300)),
                              ("noise_ratio", nice_floats(0.0, 1.0))):
            if draw(st.booleans()):
                data[key] = draw(strategy)
    if "train_curves" not in names and draw(st.booleans()):
        data["train"] = draw(st.integers(1, 100 if small_data else 300))
    if bool(data) or draw(st.booleans()):
        doc["data"] = data
    return doc


@st.composite
def pruner_settings(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    table: dict[str, dict[str, st.SearchStrategy[Any]]] = {
        "none": {},
        "median": {"n_startup_trials": st.integers(0, 10), "n_warmup_steps": st.integers(0, 100),
                   "interval_steps": st.integers(1, 10), "n_min_trials": st.integers(1, 5)},
        "percentile": {"percentile": nice_floats(1.0, 99.0),
                       "n_startup_trials": st.integers(0, 10),
                       "n_warmup_steps": st.integers(0, 100),
                       "interval_steps": st.integers(1, 10), "n_min_trials": st.integers(1, 5)},
        "successive_halving": {"min_resource": st.integers(1, 10),
                               "reduction_factor": st.integers(2, 6),
                               "min_early_stopping_rate": st.integers(0, 4)},
        "hyperband": {"min_resource": st.integers(1, 10), "reduction_factor": st.integers(2, 6)},
    }
    options = table[kind]
    body: dict[str, Any] = {"type": kind}
    for k, strategy in options.items():
        if draw(st.booleans()) or (kind == "percentile" and k == "percentile"):
            body[k] = draw(strategy)
    if kind == "hyperband" and draw(st.booleans()):
        body["max_resource"] = draw(st.integers(body.get("min_resource", 1), 100))
    if "min_early_stopping_rate" in body:  # valid: the first rung within the 100-step schedule
        first, factor = body.get("min_resource", 1), body.get("reduction_factor", 4)
        while first * factor ** body["min_early_stopping_rate"] > 100:
            body["min_early_stopping_rate"] -= 1
    return body


# --- study files: mutations --------------------------------------------------------------------

# Shrinking moves towards the front: 10**9 before 10**6, so that a minimal example of "too big"
# is too big for any machine, not only for the test's guard.
# Characters a TOML file or a command line can hold: no lone surrogates (not encodable); for
# arguments and environment values no NUL either (impossible in argv and environ).
ANY_CHAR = st.characters(exclude_categories=["Cs"])
ARG_CHAR = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
INT_EXTREMES = [0, -1, 1, 2, 10**9, 2**31, 2**32, 10**18, 2**63 - 1, -(2**63), 10**6]
FLOAT_EXTREMES = [0.0, -0.0, -1.0, 0.5, 1e-300, 5e-324, 1e9, 1e308, math.inf, -math.inf,
                  math.nan]
ODD_NAMES = ["", " ", "a b", "naïve", "名前", "x" * 64, "x" * 65, "y" * 1000, ".hidden", "-x",
             "_x", "a/b", "a\\b", "a\nb", "a\tb", "zero\u200bwidth", "emoji🦄", "CON", "..",
             "a:smile:b", "[red]x[/red]", "x;DROP TABLE studies"]
KNOWN_KEYS: dict[str, list[str]] = {
    "": ["name", "description", "trials", "seed", "repeats", "objective", "sampler", "pruner",
         "space", "train", "data"],
    "objective": ["metric", "second"],
    "sampler": ["type", "n_startup_trials", "multivariate", "constant_liar", "points",
                "n_ei_candidates", "group", "deterministic_objective"],
    "pruner": ["type", "n_startup_trials", "n_warmup_steps", "interval_steps", "percentile",
               "min_resource", "max_resource", "reduction_factor", "min_early_stopping_rate",
               "n_min_trials", "bootstrap_count"],
    "space.*": ["type", "low", "high", "log", "step", "choices"],
    "train": [p for p in PARAMS if p != "train_curves"],
    "data": ["seed", "train", "val", "test", "noise_ratio", "file", "noisy_file", "normalize"],
}
SIZE_KEYS = [("data", "val"), ("data", "test"), ("data", "train"), ("train", "hidden_size"),
             ("train", "shift"), ("train", "batch_size"), ("space", "hidden_size", "high"),
             ("space", "train_curves", "high"), ("space", "shift", "high"),
             ("space", "batch_size", "high"), ("space", "epochs", "high")]
HUGE = [10**9, 10**12, 2**63 - 1, 10**6]

Path_ = tuple[Any, ...]


def leaves(node: Any, path: Path_ = ()) -> list[Path_]:
    """Every path to a value (tables and arrays included) in the document."""
    out: list[Path_] = [path] if path else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += leaves(v, (*path, i))
    return out


def dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


def get(doc: Any, path: Path_) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def put(doc: dict[str, Any], path: Path_, value: Any) -> None:
    node: Any = doc
    for p in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(p, {})
            if not isinstance(node, (dict, list)):
                return
        else:
            node = node[p]
    if isinstance(node, dict) or (isinstance(node, list) and isinstance(path[-1], int)
                                  and path[-1] < len(node)):
        node[path[-1]] = value


def remove(doc: dict[str, Any], path: Path_) -> None:
    parent = get(doc, path[:-1])
    del parent[path[-1]]


def in_array(path: Path_) -> bool:
    """A table inside an array (a point): its errors name the table, not each key."""
    return any(isinstance(p, int) for p in path)


def tables(doc: dict[str, Any]) -> list[Path_]:
    return [()] + [p for p in leaves(doc) if isinstance(get(doc, p), dict)]


def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(INT_EXTREMES), st.sampled_from(FLOAT_EXTREMES),
        st.sampled_from(["", "x", "inf", "nan", "1", "tpe", "int", "categorical", "🦄", " "]),
        st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
        st.just(datetime.date(2024, 2, 29)), st.just(datetime.time(12, 30)),
        st.just(datetime.datetime(1979, 5, 27, 7, 32, tzinfo=datetime.UTC)))


def weird_values() -> st.SearchStrategy[Any]:
    return st.one_of(scalars(), st.lists(scalars(), max_size=3),
                     st.dictionaries(st.text(max_size=5), scalars(), max_size=2),
                     st.just([]), st.just({}))


def key_names() -> st.SearchStrategy[str]:
    all_known = sorted({k for ks in KNOWN_KEYS.values() for k in ks} | set(PARAMS))
    return st.one_of(st.sampled_from(all_known),
                     st.sampled_from(all_known).map(lambda k: k + "s"),
                     st.sampled_from(all_known).map(str.upper),
                     st.sampled_from(all_known).map(lambda k: k.replace("_", "-")),
                     st.text(ANY_CHAR, min_size=1, max_size=12),
                     st.sampled_from(ODD_NAMES).filter(bool))


@dataclass
class Mutation:
    kind: str
    key: str  # the dotted key it touched
    detail: str
    new_key: str | None = None  # a key it introduced (must be named when refused)


@st.composite
def mutate(draw: st.DrawFn, doc: dict[str, Any]) -> Mutation:
    """Applies one random mutation to doc (in place) and says what it did."""
    # Weighted towards changes of meaning (a number pushed to an extreme, a known key set to an
    # odd value): a typo'd key or a string for a number is refused almost always.
    kinds = ["setting", "extreme", "add_known", "huge", "drop", "setting", "change_type",
             "retype", "swap_bounds", "swap_metrics", "name", "add_unknown", "rename",
             "empty_table", "wrap", "setting", "extreme", "setting", "huge", "setting",
             "data_file", "data_file"]
    kind = draw(st.sampled_from(kinds))
    paths = leaves(doc)
    if kind in ("retype", "extreme", "drop", "wrap") and not paths:
        return Mutation(kind, "", "nothing to mutate in an empty file")
    if kind in ("retype", "extreme", "drop", "wrap"):
        if kind == "extreme":
            paths = [p for p in paths if isinstance(get(doc, p), (int, float))] or paths
        path = draw(st.sampled_from(paths))
        if kind == "drop":
            remove(doc, path)
            return Mutation(kind, dotted(path), "dropped")
        if kind == "wrap":
            put(doc, path, [get(doc, path)])
            return Mutation(kind, dotted(path), "wrapped in an array")
        value = draw(weird_values() if kind == "retype" else
                     st.sampled_from(INT_EXTREMES + FLOAT_EXTREMES))
        put(doc, path, value)
        return Mutation(kind, dotted(path), f"set to {value!r}")
    if kind in ("add_unknown", "add_known", "rename", "empty_table"):
        table = draw(st.sampled_from(tables(doc)))
        node = get(doc, table)
        known = KNOWN_KEYS.get("space.*" if table[:1] == ("space",) and len(table) == 2 else
                               dotted(table), PARAMS if table == ("space",) else [])
        if kind == "empty_table":
            if not table:
                doc.clear()
            else:
                put(doc, table, {})
            return Mutation(kind, dotted(table), "emptied")
        if kind == "rename" and node:
            old = draw(st.sampled_from(sorted(node, key=str)))
            new = draw(st.one_of(st.sampled_from(known), key_names()) if known else key_names())
            if new in node:
                return Mutation(kind, dotted(table), f"rename {old!r} to existing {new!r}: none")
            node[new] = node.pop(old)
            return Mutation(kind, dotted((*table, old)), f"renamed to {new!r}",
                            None if new in known or in_array(table) else new)
        key = draw(st.sampled_from(known)) if kind == "add_known" and known else draw(key_names())
        value = draw(st.sampled_from(INT_EXTREMES + FLOAT_EXTREMES) if kind == "add_known" and
                     draw(st.booleans()) else st.one_of(st.sampled_from(INT_EXTREMES +
                                                                        FLOAT_EXTREMES),
                                                        weird_values()))
        existed = key in node
        node[key] = value
        return Mutation(kind, dotted((*table, key)), f"set to {value!r}",
                        None if existed or key in known or kind == "add_known" or in_array(table)
                        else key)
    if kind == "swap_bounds":
        ranges = [p for p in leaves(doc) if len(p) == 2 and p[0] == "space"
                  and isinstance(get(doc, p), dict) and "low" in get(doc, p)]
        if not ranges:
            return Mutation(kind, "space", "no range to swap")
        p = get(doc, draw(st.sampled_from(ranges)))
        p["low"], p["high"] = p["high"], p["low"]
        return Mutation(kind, dotted(("space",)), "low and high swapped")
    if kind == "swap_metrics":
        obj = doc.setdefault("objective", {})
        if not isinstance(obj, dict):
            return Mutation(kind, "objective", "not a table")
        how = draw(st.sampled_from(["swap", "same", "second_only", "unknown"]))
        if how == "swap":
            obj["metric"], obj["second"] = obj.get("second", METRICS[1]), obj.get("metric",
                                                                                    METRICS[0])
        elif how == "same":
            obj["second"] = obj.get("metric", METRICS[0])
        elif how == "second_only":
            obj.pop("metric", None)
            obj["second"] = draw(st.sampled_from(METRICS))
        else:
            obj[draw(st.sampled_from(["metric", "second"]))] = draw(
                st.sampled_from(["accuracy", "VAL_REMOVED", "val_removed ", "test_removed"]))
        return Mutation(kind, "objective", how)
    if kind == "name":
        name = draw(st.one_of(st.sampled_from(ODD_NAMES), st.text(max_size=80),
                              NAMES.map(lambda n: n + "x" * 64)))
        doc["name"] = name
        return Mutation(kind, "name", f"set to {name!r}")
    if kind == "setting":
        return draw(setting(doc))
    if kind == "data_file":
        data = doc.setdefault("data", {})
        if not isinstance(data, dict):
            return Mutation(kind, "data", "not a table")
        key = draw(st.sampled_from(["file", "file", "noisy_file", "normalize"]))
        path_value: Any = draw(st.sampled_from(DATA_FILES) if key != "normalize" else
                               st.one_of(st.booleans(), weird_values()))
        data[key] = path_value
        return Mutation(kind, f"data.{key}", f"set to {path_value!r}")
    if kind == "huge":
        path = draw(st.sampled_from(SIZE_KEYS))
        value = draw(st.sampled_from(HUGE))
        put(doc, path, value)
        space = doc.get("space", {})
        if path[0] == "space" and (not isinstance(space, dict) or path[1] not in space):
            return Mutation(kind, dotted(path), "no such parameter")
        return Mutation(kind, dotted(path), f"set to {value}")
    # change_type
    where = draw(st.sampled_from(["sampler", "pruner", "param"]))
    if where == "param":
        space = doc.get("space")
        if not isinstance(space, dict) or not space:
            return Mutation(kind, "space", "no parameter")
        name = draw(st.sampled_from(sorted(space)))
        t = draw(st.sampled_from(["int", "float", "categorical", "str", "bool", "INT"]))
        if isinstance(space[name], dict):
            space[name]["type"] = t
        return Mutation(kind, f"space.{name}.type", f"set to {t!r}")
    choices = SAMPLERS if where == "sampler" else PRUNERS
    t = draw(st.one_of(st.sampled_from(choices), st.sampled_from(["annealing", "TPE", ""])))
    table = doc.setdefault(where, {})
    if isinstance(table, dict):
        table["type"] = t
    return Mutation(kind, f"{where}.type", f"set to {t!r}")


# The documented settings and their kinds: a value of the right kind passes the type checks, so
# an extreme one tests the range checks (where hpo and Optuna must agree).
SETTINGS: dict[str, dict[str, str]] = {
    "": {"trials": "int", "seed": "int", "repeats": "int"},
    "sampler": {"n_startup_trials": "int", "multivariate": "bool", "constant_liar": "bool",
                "n_ei_candidates": "int"},
    "pruner:median": {"n_startup_trials": "int", "n_warmup_steps": "int",
                      "interval_steps": "int", "n_min_trials": "int"},
    "pruner:percentile": {"percentile": "float", "n_startup_trials": "int",
                          "n_warmup_steps": "int", "interval_steps": "int",
                          "n_min_trials": "int"},
    "pruner:successive_halving": {"min_resource": "int", "reduction_factor": "int",
                                  "min_early_stopping_rate": "int", "bootstrap_count": "int"},
    "pruner:hyperband": {"min_resource": "int", "max_resource": "int", "reduction_factor": "int",
                         "bootstrap_count": "int"},
    "data": {"seed": "int", "train": "int", "val": "int", "test": "int", "noise_ratio": "float",
             "normalize": "bool"},
    "train": {p: "int" if p in INT_RANGES else "float" for p in PARAMS if p != "train_curves"},
}


@st.composite
def setting(draw: st.DrawFn, doc: dict[str, Any]) -> Mutation:
    """A documented setting, present or not, set to an extreme value of its own kind."""
    where = draw(st.sampled_from(["", "sampler", "pruner", "pruner", "data", "train", "space"]))
    if where == "space":
        space = doc.get("space")
        if not isinstance(space, dict) or not space:
            return Mutation("setting", "space", "no parameter")
        name = draw(st.sampled_from(sorted(space)))
        body = space[name]
        if not isinstance(body, dict):
            return Mutation("setting", f"space.{name}", "not a table")
        kind = "int" if name in INT_RANGES else "float"
        key = draw(st.sampled_from(["low", "high", "step", "choices"]))
        value: Any = draw(extreme_of(kind))
        if key == "choices":
            body.pop("low", None), body.pop("high", None), body.pop("step", None)
            body["type"] = "categorical"
            value = [value]
        body[key] = value
        return Mutation("setting", f"space.{name}.{key}", f"set to {value!r}")
    if where == "pruner":
        pruner = doc.get("pruner")
        if not isinstance(pruner, dict) or pruner.get("type") in (None, "none"):
            pruner = {"type": draw(st.sampled_from(PRUNERS[1:]))}
            doc["pruner"] = pruner
            doc.get("objective", {}).pop("second", None) if isinstance(
                doc.get("objective"), dict) else None
        keys = SETTINGS.get(f"pruner:{pruner.get('type')}", {})
    else:
        table = doc if where == "" else doc.setdefault(where, {})
        if not isinstance(table, dict):
            return Mutation("setting", where, "not a table")
        keys = SETTINGS[where]
    if not keys:
        return Mutation("setting", where, "no settings")
    key = draw(st.sampled_from(sorted(keys)))
    value = draw(extreme_of(keys[key]))
    target = doc if where == "" else doc[where]
    target[key] = value
    return Mutation("setting", f"{where}.{key}".strip("."), f"set to {value!r}")


def extreme_of(kind: str) -> st.SearchStrategy[Any]:
    if kind == "int":
        return st.sampled_from(INT_EXTREMES)
    if kind == "float":
        return st.one_of(st.sampled_from(FLOAT_EXTREMES), st.sampled_from(INT_EXTREMES))
    return st.booleans()


# Files make_data_files writes beside every generated study file, and paths that are no file.
DATA_FILES = ["signals.npy", "signals.csv", "noisy.npy", "short.npy", "one_row.npy",
              "vector.npy", "nan.npy", "ints.npy", "bools.npy", "objects.npy", "complex.npy",
              "huge_header.npy", "garbage.npy", "pickle.npy", "ragged.csv", "text.csv",
              "empty.csv", "mismatch.npy", "two_points.npy", "inf.csv", "header.csv",
              "semicolons.csv", "study.toml", "missing.npy", "", " ", ".", "/dev/null",
              "/dev/zero", "/proc/self/status", "~/missing.npy", "../signals.npy",
              "signals.NPY", "a_directory", "signals.npy/x.npy", "x" * 300 + ".npy"]


def make_data_files(d: Path) -> None:
    """Small signal files (good and bad) for data.file and data.noisy_file to point at."""
    import numpy as np

    x = np.linspace(0.0, 5.0, 80)
    clean = np.stack([np.sin(x * (1 + k / 10)) for k in range(40)]).astype(np.float32)
    np.save(d / "signals.npy", clean)
    np.save(d / "noisy.npy", clean + np.float32(0.05))
    (d / "signals.csv").write_text("\n".join(",".join(f"{v:.4f}" for v in row)
                                             for row in clean[:30]) + "\n")
    np.save(d / "short.npy", clean[:, :3])
    np.save(d / "two_points.npy", clean[:, :2])
    np.save(d / "one_row.npy", clean[:1])
    np.save(d / "vector.npy", clean[0])
    nan = clean.copy()
    nan[3, 7] = np.nan
    np.save(d / "nan.npy", nan)
    np.save(d / "ints.npy", (clean * 100).astype(np.int64))
    np.save(d / "bools.npy", clean > 0)
    np.save(d / "complex.npy", clean.astype(np.complex64))
    np.save(d / "objects.npy", np.array([[1.0, "x"]], dtype=object), allow_pickle=True)
    with (d / "huge_header.npy").open("wb") as f:  # claims 10**9 signals, holds none
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 80)})
        f.write(b"\0" * 320)
    (d / "garbage.npy").write_bytes(b"\x93NUMPY\x01\x00garbage" + bytes(range(256)))
    (d / "pickle.npy").write_bytes(b"\x80\x04\x95" + b"\0" * 40)
    np.save(d / "mismatch.npy", clean[:30])
    (d / "ragged.csv").write_text("1,2,3\n4,5\n")
    (d / "text.csv").write_text("a,b\nc,d\n")
    (d / "empty.csv").write_text("")
    (d / "inf.csv").write_text("1,2,inf\n1,2,3\n")
    (d / "header.csv").write_text("t0,t1,t2\n1,2,3\n4,5,6\n")
    (d / "semicolons.csv").write_text("1;2;3\n4;5;6\n")
    (d / "a_directory").mkdir(exist_ok=True)


@dataclass
class StudyCase:
    doc: dict[str, Any]
    mutations: list[Mutation]
    raw: bytes | None = None  # the file's bytes when an encoding mutation made them
    raw_kind: str = ""

    @property
    def valid(self) -> bool:
        return not self.mutations and self.raw is None

    def content(self) -> bytes:
        return self.raw if self.raw is not None else tomli_w.dumps(self.doc).encode()

    def describe(self) -> str:
        what = [f"{m.kind} {m.key}: {m.detail}" for m in self.mutations]
        if self.raw is not None:
            what.append(f"bytes: {self.raw_kind}")
        return "; ".join(what) or "valid, unmutated"


@st.composite
def raw_bytes(draw: st.DrawFn, doc: dict[str, Any]) -> tuple[bytes, str]:
    text = tomli_w.dumps(doc)
    kind = draw(st.sampled_from(["utf16", "latin1", "ff_byte", "truncate", "nul", "bom", "crlf",
                                 "duplicate_key", "lone_surrogate_escape", "random_bytes"]))
    if kind == "utf16":
        return text.encode("utf-16"), kind
    if kind == "latin1":
        doc = {**doc, "description": "café – naïve"}
        return tomli_w.dumps(doc).encode("latin-1", errors="replace"), kind
    data = text.encode()
    at = draw(st.integers(0, len(data)))
    if kind == "ff_byte":
        return data[:at] + b"\xff" + data[at:], kind
    if kind == "truncate":
        return data[:at], kind
    if kind == "nul":
        return data[:at] + b"\x00" + data[at:], kind
    if kind == "bom":
        return b"\xef\xbb\xbf" + data, kind
    if kind == "crlf":
        return data.replace(b"\n", b"\r\n"), kind
    if kind == "duplicate_key":
        return data + b'\nname = "again"\n', kind
    if kind == "lone_surrogate_escape":
        return data.replace(b'name = "', b'name = "\\udcff', 1), kind
    return draw(st.binary(max_size=200)), kind


@st.composite
def study_cases(draw: st.DrawFn, small_data: bool = False) -> StudyCase:
    doc = draw(valid_studies(small_data))
    form = draw(st.sampled_from(["mutated", "mutated", "mutated", "twice", "bytes", "valid"]))
    if form == "valid":
        return StudyCase(doc, [])
    if form == "bytes":
        raw, kind = draw(raw_bytes(doc))
        return StudyCase(doc, [], raw, kind)
    muts = [draw(mutate(doc)) for _ in range(2 if form == "twice" else 1)]
    return StudyCase(doc, muts)


# --- study files: the properties ---------------------------------------------------------------


def note_case(case: StudyCase, path: Path) -> None:
    note(f"mutations: {case.describe()}")
    note(f"{path.name}:\n{case.content().decode('utf-8', errors='backslashreplace')[:4000]}")


def error_names(case: StudyCase, path: Path) -> list[str]:
    """What a refusal of this file must name: the file (its path or its name)."""
    return [str(path), path.name]


def check_named(case: StudyCase, line: str) -> None:
    """A refusal caused by one new key must name that key."""
    if len(case.mutations) != 1 or case.mutations[0].new_key is None or \
            case.mutations[0].kind != "add_unknown":
        return
    key = case.mutations[0].new_key
    # Shown as typed, or with its control characters escaped (hpo.errors.one_line).
    if key not in line and repr(key)[1:-1] not in line and one_line(key) not in line:
        raise BrokenContract(f"the file got the unknown key {key!r}, the error does not name "
                             f"it: {line[:300]!r}")


def check_study_file(case: StudyCase, d: Path) -> StudySpec | None:
    """Validation in-process: a one-line HpoError naming the file, or a workable spec."""
    path = d / "study.toml"
    path.write_bytes(case.content())
    make_data_files(d)
    note_case(case, path)
    try:
        spec = guarded(lambda: load_study_file(path), 5.0, "load_study_file")
    except HpoError as e:
        msg = str(e)
        event(f"refused: {type(e).__name__}")
        if case.valid:
            raise ValidRefused(f"a valid study file was refused: {msg}") from e
        if not msg.strip() or "\n" in msg or "\r" in msg:
            raise BrokenContract(f"the message is not one line: {msg[:300]!r}") from e
        if not any(n in msg for n in error_names(case, path)):
            raise BrokenContract(f"the message does not name the file: {msg[:300]!r}") from e
        check_named(case, msg)
        return None
    event("accepted" if case.valid else "accepted after a mutation")
    worker_check(spec)
    return spec


@given(case=study_cases())
@examples(100, 0.0, slow=False)
def test_generated_study_files_validate_or_refuse_in_one_line(case: StudyCase,
                                                               world: World) -> None:
    d = world.scratch()
    try:
        check_study_file(case, d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.slow
@given(case=study_cases())
@examples(100, 0.82, slow=True)
def test_generated_study_files_long_run(case: StudyCase, world: World) -> None:
    d = world.scratch()
    try:
        check_study_file(case, d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def studies_rows(url: str) -> list[dict[str, Any]]:
    r = CliRunner().invoke(app, ["studies", "--json", "--storage", url], env={})
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def accepted_spec(path: Path) -> StudySpec | None:
    try:
        return guarded(lambda: load_study_file(path), 5.0, "load_study_file")
    except HpoError:
        return None


def create_bytes(spec: StudySpec) -> int:
    """What `hpo create` allocates at least: the validation and test curves of its baselines."""
    from hpo.task import source as task_source

    source = spec.source()
    _, n_val, n_test = task_source.sizes(source)
    return 51 * task_source.length(source) * (n_val + n_test)


def check_create(case: StudyCase, trials: str | None, world: World) -> None:
    """`hpo create FILE --storage URL [--trials N]`: the study exists with its budget, or the
    contract holds and the storage is unchanged."""
    d, url = world.storage()
    scratch = world.scratch()
    try:
        path = scratch / "study.toml"
        path.write_bytes(case.content())
        make_data_files(scratch)
        note_case(case, path)
        before = sqlite_snapshot(d)
        args = ["create", str(path), "--storage", url, *(["--trials", trials] if trials else [])]
        spec = accepted_spec(path)
        if spec is not None and create_bytes(spec) > HEADROOM // 2:
            # `hpo create` scores baselines on every validation and test curve: more than the
            # guard allows. Only what a worker needs is checked (by estimate).
            event("create: accepted, too large to run under the guard")
            worker_check(spec)
            return
        try:
            result = invoke(args, cpu_seconds=30.0)
        except (TooSlow, WouldKillTheMachine):
            collect()
            note(f"storage changed: {sqlite_snapshot(d) != before}")
            raise
        collect()
        if result.exit_code == 0 and result.exception is None:
            event("create: accepted")
            spec = load_study_file(path)
            rows = {r["name"]: r for r in studies_rows(url)}
            if spec.name not in rows:
                raise BrokenContract(f"exit 0 but no study '{spec.name}' in storage")
            want = as_int(trials) if trials else spec.trials
            if rows[spec.name].get("budget") != want:
                raise BrokenContract(f"exit 0 but the budget is {rows[spec.name].get('budget')},"
                                     f" not {want}")
            worker_check(spec)
            return
        event("create: refused")
        changed = sqlite_snapshot(d) != before
        note(f"storage changed: {changed}")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise_unexpected(result.exception)
        if case.valid and not trials:
            raise ValidRefused(f"a valid study file was refused: {result.stderr[-400:]!r}")
        line = check_refusal(result.exit_code, result.stdout, result.stderr,
                             [*error_names(case, path), "--trials"], result.exception)
        check_named(case, line)
        if changed:
            raise BrokenContract(f"the storage changed on a refusal: {line[:300]!r}")
    finally:
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


@given(case=study_cases(small_data=True))
@examples(12, 0.0, slow=False)
def test_hpo_create_on_generated_study_files(case: StudyCase, world: World) -> None:
    check_create(case, None, world)


@pytest.mark.slow
@given(case=study_cases(small_data=True))
@examples(15, 0.05, slow=True)
def test_hpo_create_on_generated_study_files_long_run(case: StudyCase, world: World) -> None:
    check_create(case, None, world)


# --- flag values -------------------------------------------------------------------------------

JUNK = ["", " ", "abc", "1.5", "1e3", "0x10", "+3", " 2 ", "٣", "inf", "-inf", "nan", "-0",
        "1_000", "true", "None", "--help", "-1", "0", "١٠", "３", "1,000", "5 workers"]


def int_values(sane: tuple[int, int]) -> st.SearchStrategy[str]:
    return st.one_of(st.integers(*sane).map(str), st.sampled_from(INT_EXTREMES).map(str),
                     st.integers(-(10**30), 10**30).map(str), st.sampled_from(JUNK),
                     st.floats().map(repr), st.text(ARG_CHAR, max_size=8))


def float_values(sane: tuple[float, float]) -> st.SearchStrategy[str]:
    return st.one_of(nice_floats(*sane).map(repr), st.sampled_from(FLOAT_EXTREMES).map(repr),
                     st.sampled_from(INT_EXTREMES).map(str), st.sampled_from(JUNK),
                     st.sampled_from(["1e400", "-1e400", "1e-400", "NaN", "Infinity", "5e-324"]),
                     st.text(ARG_CHAR, max_size=8))


ASCII_INT = re.compile(r"^[+-]?[0-9]+$")
ASCII_FLOAT = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")


def integral(s: str) -> bool:
    """'7.0', '1e3': not an integer's spelling, but an integer's value (a parser may take it)."""
    try:
        v = float(s)
    except ValueError:
        return False
    return math.isfinite(v) and v == int(v)


def as_int(s: str) -> int:
    """What a parser that took s as an integer took: int('7'), or int of an integral '7.0'."""
    try:
        return int(s)
    except ValueError:
        return int(float(s))


def judge_int(s: str, minimum: int, sane_max: int, impossible: int | None = None) -> str:
    """'valid' (must work), 'invalid' (must be refused) or 'either'."""
    try:
        v = int(s)
    except ValueError:
        return "either" if integral(s) else "invalid"
    if v < minimum or (impossible is not None and v >= impossible):
        return "invalid"
    return "valid" if ASCII_INT.match(s) and v <= sane_max else "either"


def judge_float(s: str, minimum: float, sane_max: float, *, above: bool = False,
                finite: bool = False) -> str:
    try:
        v = float(s)
    except ValueError:
        return "invalid"
    if math.isnan(v) or v < minimum or (above and v == minimum) or (finite and math.isinf(v)):
        return "invalid"
    return "valid" if ASCII_FLOAT.match(s) and v <= sane_max else "either"


def worst(*verdicts: str) -> str:
    return "invalid" if "invalid" in verdicts else ("either" if "either" in verdicts else "valid")


def check_outcome(verdict: str, result: Any, names: list[str], before: Any,
                  after: Callable[[], Any], ok: Callable[[Any], None] | None = None) -> None:
    """One command's outcome against the verdict on its input."""
    event(f"{verdict} -> exit {result.exit_code}")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        note(f"changed on the way: {after() != before}")
        raise_unexpected(result.exception)
    if result.exit_code == 0:
        if ok is not None:
            ok(result)
        if verdict == "invalid":
            raise AcceptedImpossible(f"accepted (exit 0) an input that must be refused: "
                                     f"{result.stdout[-300:]!r}")
        return
    if verdict == "valid":
        raise ValidRefused(f"a valid input was refused: exit {result.exit_code}, "
                           f"{result.stderr[-400:]!r}")
    check_refusal(result.exit_code, result.stdout, result.stderr, names, result.exception)
    if after() != before:
        raise BrokenContract("the storage changed on a refusal")


@st.composite
def create_trials_cases(draw: st.DrawFn) -> tuple[str, str, str]:
    sampler = draw(st.sampled_from(["tpe", "grid"]))
    value = draw(int_values((1, 6)))
    size = 6 if sampler == "grid" else None
    verdict = judge_int(value, 1, 6)
    if size is not None and verdict != "invalid":
        with contextlib.suppress(ValueError, OverflowError):
            if as_int(value) > size:
                verdict = "invalid"
    return sampler, value, verdict


def check_create_trials(sampler: str, value: str, verdict: str, world: World) -> None:
    d, url = world.storage()
    scratch = world.scratch()
    try:
        body = {"name": "flagged", **TINY_STUDY, "sampler": {"type": sampler}}
        if sampler == "grid":
            body["space"] = {"hidden_size": {"type": "int", "low": 2, "high": 4},
                             "epochs": {"type": "categorical", "choices": [1, 2]}}
            body.pop("trials")
        path = write_study(scratch / "flagged.toml", body)
        before = sqlite_snapshot(d)
        result = invoke(["create", str(path), "--storage", url, "--trials", value])
        collect()

        def ok(_: Any) -> None:
            rows = {r["name"]: r for r in studies_rows(url)}
            if rows.get("flagged", {}).get("budget") != as_int(value):
                raise BrokenContract(f"--trials {value!r} accepted, budget "
                                     f"{rows.get('flagged', {}).get('budget')}")

        check_outcome(verdict, result, ["--trials", "trials"], before, lambda: sqlite_snapshot(d),
                      ok)
    finally:
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


@given(case=create_trials_cases())
@examples(8, 0.0, slow=False)
def test_hpo_create_trials_flag(case: tuple[str, str, str], world: World) -> None:
    check_create_trials(*case, world)


@pytest.mark.slow
@given(case=create_trials_cases())
@examples(10, 0.02, slow=True)
def test_hpo_create_trials_flag_long_run(case: tuple[str, str, str], world: World) -> None:
    check_create_trials(*case, world)


class WouldStartTooMany(BaseException):
    """`hpo search` went on starting workers past what this machine can hold."""


class FakeWorker:
    """Stands in for a worker process: it exits at once, successfully."""

    def __init__(self, args: list[str], **kwargs: Any) -> None:
        self.args = list(args)
        self.returncode = 0
        self.pid = 0

    def poll(self) -> int:
        return 0

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def send_signal(self, sig: int) -> None:
        return None

    def kill(self) -> None:
        return None

    def terminate(self) -> None:
        return None


MAX_WORKERS = MACHINE_MEMORY // WORKER_BYTES  # more than this can never run here
MAX_THREADS = MACHINE_MEMORY // THREAD_BYTES


@st.composite
def search_cases(draw: st.DrawFn) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    verdicts = []
    for flag, values, judge in (
            # More workers than the machine holds may be refused, or capped (the stand-ins count
            # how many really start: never more than MAX_WORKERS).
            ("--workers", int_values((1, 3)), lambda s: judge_int(s, 1, 3)),
            ("--trials", int_values((1, 6)), lambda s: judge_int(s, 1, 6)),
            ("--timeout", float_values((0.0, 3600.0)), lambda s: judge_float(s, 0.0, 1e6)),
            ("--threads", int_values((1, 2)), lambda s: judge_int(s, 1, 2)),
            ("--top", int_values((1, 10)), lambda s: judge_int(s, 1, 10))):
        if draw(st.booleans()):
            flags[flag] = draw(values)
            verdicts.append(judge(flags[flag]))
    return flags, worst(*verdicts)


def check_search(flags: dict[str, str], verdict: str, world: World) -> None:
    d, url = world.storage()
    scratch = world.scratch()
    started: list[FakeWorker] = []

    def popen(args: list[str], **kwargs: Any) -> FakeWorker:
        if len(started) >= MAX_WORKERS:
            raise WouldStartTooMany(f"{len(started) + 1} workers")
        started.append(FakeWorker(args, **kwargs))
        return started[-1]

    mp = pytest.MonkeyPatch()
    try:
        path = write_study(scratch / "searched.toml", {"name": "searched", **TINY_STUDY})
        before = sqlite_snapshot(d)
        argv = ["search", str(path), "--storage", url]
        for k, v in flags.items():
            argv += [k, v]
        mp.setattr(subprocess, "Popen", popen)
        mp.chdir(scratch)  # worker logs go to ./storage/logs
        try:
            result = invoke(argv)
        except WouldStartTooMany as e:
            raise AcceptedImpossible(f"hpo search {flags} went on starting workers past "
                                     f"{MAX_WORKERS} (this machine's memory): {e}") from None
        finally:
            mp.undo()
        collect()
        note(f"workers started: {len(started)}; their argv: "
             f"{[w.args[3:] for w in started[:2]]}")

        def ok(_: Any) -> None:
            threads = {w.args[w.args.index("--threads") + 1] for w in started
                       if "--threads" in w.args}
            if threads and len(started) * max(int(t) for t in threads) > MAX_THREADS:
                raise AcceptedImpossible(f"{len(started)} workers started with --threads "
                                         f"{threads}: more threads than this machine's memory "
                                         f"holds ({MAX_THREADS})")

        check_outcome(verdict, result, [*flags, "--", "trials"], before,
                      lambda: sqlite_snapshot(d), ok)
    finally:
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


@given(case=search_cases())
@examples(10, 0.0, slow=False)
def test_hpo_search_flags(case: tuple[dict[str, str], str], world: World) -> None:
    check_search(*case, world)


@pytest.mark.slow
@given(case=search_cases())
@examples(12, 0.03, slow=True)
def test_hpo_search_flags_long_run(case: tuple[dict[str, str], str], world: World) -> None:
    check_search(*case, world)


STATES = ["complete", "pruned", "fail", "running", "waiting"]
FORMATS = ["table", "json", "csv"]


def word_values(valid: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid).map(str.upper),
                     st.sampled_from(valid).map(lambda s: f" {s}"),
                     st.sampled_from(valid).map(lambda s: s + "d"), st.sampled_from(JUNK),
                     st.text(ARG_CHAR, max_size=10))


def judge_word(s: str, valid: list[str]) -> str:
    if s in valid:
        return "valid"
    return "either" if s.strip().lower() in valid else "invalid"


# A study name as a shell may pass it: any text, and bytes that are not UTF-8 (Python keeps them
# as lone surrogates, U+DC80-U+DCFF).
NAME_CHAR = st.one_of(ARG_CHAR, st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF))


@st.composite
def study_names(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    """(a name, its verdict, what a refusal must name): the existing study most of the time."""
    name = draw(st.one_of(st.just(EXISTING), st.just(EXISTING), st.just(EXISTING),
                          st.sampled_from([EXISTING.upper(), f" {EXISTING}", EXISTING + "\udc85",
                                           DONE, ""]),
                          st.text(NAME_CHAR, max_size=10)))
    if name == EXISTING:
        return name, "valid", []
    # One that starts with "-" reads as an option (click: "No such option: -0").
    return name, "either" if name == DONE else "invalid", ["study", "STUDY", name, "option"]


@st.composite
def query_cases(draw: st.DrawFn) -> tuple[list[str], str, list[str]]:
    command = draw(st.sampled_from(["best", "trials"]))
    study, named, study_names_ = draw(study_names())
    if command == "best":
        top = draw(int_values((1, 5)))
        return ["best", study, "--top", top, *(["--json"] if draw(st.booleans()) else [])], \
            worst(judge_int(top, 1, 5), named), ["--top", *study_names_]
    args, verdicts, names = ["trials", study], [named], list(study_names_)
    if draw(st.booleans()):
        state = draw(word_values(STATES))
        args += ["--state", state]
        verdicts.append(judge_word(state, STATES))
        names.append("--state")
    if draw(st.booleans()):
        fmt = draw(word_values(FORMATS))
        args += ["--format", fmt]
        verdicts.append(judge_word(fmt, FORMATS))
        names.append("--format")
    return args, worst(*verdicts), names


def check_query(args: list[str], verdict: str, names: list[str], world: World) -> None:
    """Queries never change the storage, whether they work or not."""
    d, url = world.storage()
    try:
        before = sqlite_snapshot(d)
        result = invoke([*args, "--storage", url])
        collect()
        check_outcome(verdict, result, names, before, lambda: sqlite_snapshot(d))
        if sqlite_snapshot(d) != before:
            raise BrokenContract(f"hpo {args[0]} changed the storage")
    finally:
        shutil.rmtree(d, ignore_errors=True)


@given(case=query_cases())
@examples(10, 0.0, slow=False)
def test_query_flags(case: tuple[list[str], str, list[str]], world: World) -> None:
    check_query(*case, world)


@pytest.mark.slow
@given(case=query_cases())
@examples(15, 0.03, slow=True)
def test_query_flags_long_run(case: tuple[list[str], str, list[str]], world: World) -> None:
    check_query(*case, world)


# --- hpo train: only tiny trainings are ever allowed to run --------------------------------------

# --data-file values (files of make_data_files) and what each must do.
TRAIN_DATA_FILES = {"signals.npy": "valid", "signals.csv": "valid", "missing.npy": "invalid",
                    "a_directory": "invalid", "garbage.npy": "invalid", "nan.npy": "invalid",
                    "huge_header.npy": "invalid", "objects.npy": "invalid",
                    "pickle.npy": "invalid", "text.csv": "invalid", "empty.csv": "invalid",
                    "ragged.csv": "invalid", "vector.npy": "invalid", "/dev/zero": "invalid",
                    "/dev/null": "invalid", "": "invalid", "short.npy": "either",
                    "ints.npy": "either"}
SHAPES = {"signals.npy": (40, 80), "signals.csv": (30, 80), "noisy.npy": (40, 80),
          "mismatch.npy": (30, 80), "ints.npy": (40, 80), "short.npy": (40, 3)}
# (of make_data_files' files; nan.npy is 40 x 80 too, but its NaN is refused whatever it pairs)
SAVE_KINDS = ["none", "new", "nested", "directory", "parent_is_file", "dev_full", "long_name",
              "empty", "proc"]


def judge_seed(s: str) -> str:
    """0 <= seed < 2**32 must work; other integers may work or be refused."""
    try:
        v = int(s)
    except ValueError:
        return "invalid"
    return "valid" if ASCII_INT.match(s) and 0 <= v < 2**32 else "either"


def tiny_or(sane: tuple[int, int], bad: list[str]) -> st.SearchStrategy[str]:
    """Two tiny values for one bad one."""
    tiny = st.integers(*sane).map(str)
    return st.one_of(tiny, tiny, st.sampled_from(bad))


@st.composite
def train_cases(draw: st.DrawFn) -> tuple[dict[str, str], str, str]:
    """Flags of a tiny training: every value is tiny, or something that must never run (huge,
    negative, not a number); epochs never exceed 2."""
    junk = ["0", "-1", "abc", "", "1.5", "nan", "inf"]
    huge = [str(v) for v in (10**9, 10**12, 2**63 - 1)]
    specs: list[tuple[str, st.SearchStrategy[str], Callable[[str], str]]] = [
        ("--hidden-size", tiny_or((1, 8), junk + huge), lambda s: judge_int(s, 1, 8, 10**6)),
        ("--shift", tiny_or((0, 12), junk + huge), lambda s: judge_int(s, 0, 12, 10**6)),
        ("--epochs", tiny_or((1, 2), junk), lambda s: judge_int(s, 1, 2, 3)),
        ("--lr", st.one_of(nice_floats(1e-3, 0.1).map(repr), st.sampled_from(
            ["0", "-0.01", "nan", "inf", "-inf", "1e-10", "1e308", "5e-324", "abc", ""])),
         lambda s: judge_float(s, 1e-9, 1.0, finite=True)),
        ("--batch-size", tiny_or((1, 20), junk + huge), lambda s: judge_int(s, 1, 20)),
        ("--train-curves", tiny_or((1, 16), junk + huge), lambda s: judge_int(s, 1, 16, 10**9)),
        ("--seed", st.one_of(st.integers(0, 100).map(str), st.sampled_from(
            [str(v) for v in INT_EXTREMES] + [str(2**64), str(-(2**64)), "abc"])),
         judge_seed),
        ("--data-seed", st.one_of(st.integers(0, 100).map(str), st.sampled_from(
            [str(v) for v in INT_EXTREMES] + [str(2**64), "abc"])),
         judge_seed),
        ("--val-curves", tiny_or((1, 10), junk + huge), lambda s: judge_int(s, 1, 10, 10**9)),
        ("--test-curves", tiny_or((1, 20), junk + huge), lambda s: judge_int(s, 1, 20, 10**9)),
        ("--noise-ratio", st.one_of(nice_floats(0.0, 0.5).map(repr), st.sampled_from(
            ["-0.1", "nan", "inf", "1e308", "11", "abc", ""])),
         lambda s: judge_float(s, 0.0, 1.0, finite=True)),
    ]
    data_file = None
    if one_in(3, draw):  # a third on the user's own signals, half of them good
        data_file = draw(st.one_of(st.sampled_from(["signals.npy", "signals.csv"]),
                                   st.sampled_from(sorted(TRAIN_DATA_FILES))))
    flags = {"--epochs": "1", "--hidden-size": "2"}
    if data_file is None:
        flags["--train-curves"] = "4"
    verdicts = []
    for flag, strategy, judge in specs:
        if one_in(4, draw):  # a few flags per example, so that most can run
            flags[flag] = draw(strategy)
        verdicts.append(judge(flags[flag]) if flag in flags else "valid")
    if data_file is not None:
        flags["--data-file"] = data_file
        verdicts.append(TRAIN_DATA_FILES[data_file])
        if any(f in flags for f in ("--train-curves", "--val-curves", "--test-curves")):
            verdicts.append("either")  # counts must fit the file's 40 signals
        noisy = draw(st.sampled_from([None, "noisy.npy", "mismatch.npy", "nan.npy"]))
        if noisy is not None:
            flags["--noisy-file"] = noisy
            same = SHAPES.get(noisy) is not None and SHAPES.get(noisy) == SHAPES.get(data_file)
            verdicts.append("either" if same else "invalid")  # noisy inputs row by row
            if "--noise-ratio" in flags:
                verdicts.append("either")  # no noise is drawn with a noisy file
    elif one_in(10, draw):
        flags["--noisy-file"] = "noisy.npy"  # without --data-file: refused
        verdicts.append("invalid")
    save = draw(st.sampled_from(["none", "none", "none", "new", "new", *SAVE_KINDS[2:]]))
    verdicts.append({"none": "valid", "new": "valid", "nested": "valid"}.get(save, "invalid"))
    return flags, save, worst(*verdicts)


def save_path(kind: str, d: Path) -> str:
    (d / "a_file").write_text("not a directory\n")
    (d / "a_directory").mkdir(exist_ok=True)
    return {"new": str(d / "model.pt"), "nested": str(d / "x" / "y" / "model.pt"),
            "directory": str(d / "a_directory"), "parent_is_file": str(d / "a_file" / "m.pt"),
            "dev_full": "/dev/full", "long_name": str(d / ("m" * 300 + ".pt")), "empty": "",
            "proc": "/proc/hpo-property-test.pt"}[kind]


def check_train(flags: dict[str, str], save: str, verdict: str, world: World) -> None:
    import torch

    d = world.scratch()
    threads = torch.get_num_threads()
    try:
        make_data_files(d)
        argv = ["train", "--threads", "1", "--json"]
        for k, v in flags.items():
            if k in ("--data-file", "--noisy-file") and v and not v.startswith("/"):
                v = str(d / v)
            argv += [k, v]
        if save != "none":
            argv += ["--save", save_path(save, d)]
        before = files_snapshot(d)
        result = invoke(argv, cpu_seconds=60.0)

        def ok(r: Any) -> None:
            out = json.loads(r.stdout)
            if (save != "none" and out["training_ended"] != "diverged"
                    and not Path(out["saved"]).is_file()):
                raise BrokenContract(f"exit 0 but no model file at {out.get('saved')}")

        if result.exit_code == 1 and "diverged" in result.stdout and verdict != "invalid":
            event("train: diverged")
            return  # a legitimate, reported outcome for a large learning rate
        check_outcome(verdict, result, list(flags) + ["--save", "--threads"], before,
                      lambda: files_snapshot(d), ok)
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(d, ignore_errors=True)


@given(case=train_cases())
@examples(6, 0.0, slow=False)
def test_hpo_train_flags(case: tuple[dict[str, str], str, str], world: World) -> None:
    check_train(*case, world)


@pytest.mark.slow
@given(case=train_cases())
@examples(8, 0.02, slow=True)
def test_hpo_train_flags_long_run(case: tuple[dict[str, str], str, str], world: World) -> None:
    check_train(*case, world)


# --- hpo denoise: paths ------------------------------------------------------------------------

INPUT_KINDS = {"csv": "valid", "npy": "valid", "missing": "invalid", "directory": "invalid",
               "empty": "invalid", "model": "invalid", "dev_null": "invalid", "latin1": "invalid",
               "huge_header": "invalid", "objects": "invalid", "nan": "invalid"}
INPUT_ROWS = {"csv": 3, "npy": 40}
OUTPUT_KINDS = {"new": "valid", "nested": "valid", "unicode": "valid", "existing_other": "either",
                "same_as_input": "invalid", "input_via_dot": "invalid", "input_npy": "either",
                "input_via_symlink": "invalid", "input_hardlink": "invalid",
                "same_as_model": "invalid", "directory": "invalid", "parent_is_file": "invalid",
                "dev_full": "invalid", "long_name": "invalid", "empty": "invalid",
                "proc": "invalid", "dev_null": "either"}
MODEL_KINDS = {"model": "valid", "csv": "invalid", "missing": "invalid", "directory": "invalid"}


def denoise_paths(d: Path, world: World, model_kind: str, input_kind: str, output_kind: str
                  ) -> tuple[str, str, str]:
    shutil.copy(world.model, d / "model.pt")
    shutil.copy(world.csv, d / "noisy.csv")
    make_data_files(d)
    (d / "a_file").write_text("x\n")
    (d / "empty.csv").write_text("")
    (d / "latin1.csv").write_bytes("1,2,3\n4,5,é\n".encode("latin-1"))
    (d / "other.csv").write_text("1,2\n")
    (d / "linkdir").symlink_to(d)
    os.link(d / "noisy.csv", d / "hardlink.csv")
    model = {"model": d / "model.pt", "csv": d / "noisy.csv", "missing": d / "nope.pt",
             "directory": d / "a_directory"}[model_kind]
    inp = {"csv": d / "noisy.csv", "missing": d / "nope.csv", "directory": d / "a_directory",
           "empty": d / "empty.csv", "model": d / "model.pt", "dev_null": Path("/dev/null"),
           "latin1": d / "latin1.csv", "npy": d / "signals.npy",
           "huge_header": d / "huge_header.npy", "objects": d / "objects.npy",
           "nan": d / "nan.npy"}[input_kind]
    out = {"new": str(d / "clean.csv"), "nested": str(d / "x" / "y" / "clean.csv"),
           "unicode": str(d / "nettoyé 信号.csv"), "existing_other": str(d / "other.csv"),
           "same_as_input": str(inp), "input_via_dot": f"{inp.parent}/./{inp.name}",
           "input_via_symlink": str(d / "linkdir" / inp.name),
           "input_hardlink": str(d / "hardlink.csv") if input_kind == "csv" else str(inp),
           "input_npy": str(d / "signals.npy"),
           "same_as_model": str(model), "directory": str(d / "a_directory"),
           "parent_is_file": str(d / "a_file" / "clean.csv"), "dev_full": "/dev/full",
           "long_name": str(d / ("c" * 300 + ".csv")), "empty": "",
           "proc": "/proc/hpo-property-test.csv", "dev_null": "/dev/null"}[output_kind]
    return str(model), str(inp), out


def check_denoise(model_kind: str, input_kind: str, output_kind: str, world: World) -> None:
    d = world.scratch()
    try:
        model, inp, out = denoise_paths(d, world, model_kind, input_kind, output_kind)
        verdict = worst(MODEL_KINDS[model_kind], INPUT_KINDS[input_kind],
                        "invalid" if output_kind == "input_npy" and input_kind == "npy"
                        else OUTPUT_KINDS[output_kind])
        before = files_snapshot(d)
        result = invoke(["denoise", "--model", model, "--input", inp, "--output", out])

        def ok(_: Any) -> None:
            name = Path(inp).name
            if Path(inp).is_file() and before.get(name) is not None \
                    and (d / name).read_bytes() != before[name]:
                raise AcceptedImpossible(f"exit 0 and the input {inp} was overwritten "
                                         f"(--output {out})")
            if (d / "model.pt").read_bytes() != before["model.pt"]:
                raise AcceptedImpossible(f"exit 0 and the model file was overwritten "
                                         f"(--output {out})")
            if out != "/dev/null":
                rows = [ln for ln in Path(out).read_text().splitlines() if ln.strip()]
                want = INPUT_ROWS.get(input_kind)
                if out.endswith(".csv") and (len(rows) != want or any(
                        len(r.split(",")) != 80 for r in rows)):
                    raise BrokenContract(f"exit 0 but {out} holds {len(rows)} rows")

        check_outcome(verdict, result, ["--model", "--input", "--output", model, inp, out,
                                        Path(out).name if out else "--output"],
                      before, lambda: files_snapshot(d), ok)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# Mostly a good model and input, so that the output path decides.
denoise_cases = st.tuples(
    st.sampled_from(["model"] * 4 + sorted(set(MODEL_KINDS) - {"model"})),
    st.sampled_from(["csv"] * 6 + ["npy"] * 2 + sorted(set(INPUT_KINDS) - set(INPUT_ROWS))),
    st.sampled_from(["new", *sorted(set(OUTPUT_KINDS) - {"new"})]))


@given(case=denoise_cases)
@examples(15, 0.0, slow=False)
def test_hpo_denoise_paths(case: tuple[str, str, str], world: World) -> None:
    check_denoise(*case, world)


@pytest.mark.slow
@given(case=denoise_cases)
@examples(15, 0.02, slow=True)
def test_hpo_denoise_paths_long_run(case: tuple[str, str, str], world: World) -> None:
    check_denoise(*case, world)


# --- environment values, each in a fresh interpreter -------------------------------------------

DURATION_VALUES = ["30s", "", " ", "0", "-1", "1", "5", "30", "1m", "1.5", "inf", "nan", "1e9",
                   "1e400", "99999999999999999999", "abc", "١٢", "0x10", "+5", " 7 ", "none",
                   "\udcff", "5\udcff"]


def env_values(first: str, extra: list[str] | None = None) -> st.SearchStrategy[str]:
    """`first` is the example hypothesis tries first (its simplest)."""
    return st.one_of(
        st.sampled_from([first, *DURATION_VALUES, *(extra or [])]),
        st.integers(-(10**20), 10**20).map(str),
        st.floats().map(repr),
        st.text(ARG_CHAR, max_size=12))


DOC_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smh]?)$")  # the README's `30`, `30s`, `1.5m`


def judge_duration(s: str, lo: float, hi: float, *, bad_at_most: float | None = None,
                   bad_at_least: float | None = None, whole: bool = False) -> str:
    """A duration the README documents (seconds, or a number with s, m or h) within [lo, hi] must
    work; a negative, NaN or digitless one, or one the README rules out (bad_*), must be refused;
    anything else (units with spaces, exponents, other digits) may go either way. Empty means
    unset."""
    if not s.strip():
        return "either"
    m = DOC_DURATION.match(s)
    documented = m is not None
    if m is not None:
        v = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    else:
        try:
            v = float(s)
        except ValueError:
            return "either" if any(c.isdigit() for c in s) else "invalid"
        if math.isnan(v) or v < 0:
            return "invalid"
    if (bad_at_most is not None and v <= bad_at_most) or (
            bad_at_least is not None and v >= bad_at_least):
        return "invalid"
    if documented and lo <= v <= hi and (not whole or v == int(v)):
        return "valid"
    return "either"


def artifact_values(world_base: str) -> list[str]:
    return ["/proc/hpo-artifacts", f"{world_base}/artifacts", "none", "OFF", "/dev/null",
            "~/nonexistent-hpo-artifacts", "relative/dir", f"{world_base}/model.pt"]


@dataclass(frozen=True)
class EnvVar:
    name: str
    command: Callable[[str], list[str]]  # given the storage URL
    values: Callable[[World], st.SearchStrategy[str]]
    judge: Callable[[str, World], str]


def _fail_stale(url: str) -> list[str]:
    return ["fail-stale", EXISTING, "--json", "--storage", url]


def _worker(url: str) -> list[str]:
    return ["worker", DONE, "--storage", url]


def judge_path_like(s: str, w: World) -> str:
    return "valid" if s in (str(w.base / "artifacts"), str(w.base / "cache")) else "either"


ENV_VARS = [
    # The README: durations in seconds or with a unit; the grace period must exceed the
    # heartbeat interval (defaults 30 s and 5 s).
    EnvVar("HPO_GRACE_PERIOD", _fail_stale, lambda w: env_values("30s", ["5", "1.5m", "2h"]),
           lambda s, w: judge_duration(s, 6, 86400, bad_at_most=5)),
    EnvVar("HPO_HEARTBEAT_INTERVAL", _fail_stale, lambda w: env_values("0", ["30", "29"]),
           lambda s, w: judge_duration(s, 1, 29, bad_at_most=0, bad_at_least=30, whole=True)),
    EnvVar("HPO_MAX_RETRY", _fail_stale, lambda w: env_values("-1"),
           lambda s, w: judge_int(s, 0, 100) if s.strip() == s and s else "either"),
    EnvVar("HPO_STORAGE", lambda url: ["studies", "--json"], lambda w: st.one_of(
        st.sampled_from(["sqlite://", "{url}", "not a url", "postgresql://u@127.0.0.1:1/db",
                         f"sqlite:///{w.base}/nope/x.db", "sqlite:///", "mysql://", "🦄",
                         f"sqlite:///{w.base}/model.pt"]), env_values("sqlite://")),
           lambda s, w: "valid" if s == "{url}" else "either"),
    EnvVar("HPO_ARTIFACTS", lambda url: ["artifacts", "prune", EXISTING, "--keep-top", "0",
                                         "--dry-run", "--storage", url],
           lambda w: st.one_of(st.sampled_from(artifact_values(str(w.base))),
                               env_values("/proc/hpo-artifacts")), judge_path_like),
    EnvVar("HPO_THREADS", lambda url: ["train", "--epochs", "1", "--hidden-size", "2",
                                       "--train-curves", "4", "--json"],
           lambda w: st.one_of(st.sampled_from(["1000000", "1", "2", str(2**31), "0", "-1",
                                                "abc", "", "1.5"]),
                               st.integers(1, 2).map(str)),
           lambda s, w: judge_int(s, 1, 2, 10**6) if s.strip() == s and s else "either"),
    EnvVar("HPO_STORAGE_RETRY_SECONDS", _worker, lambda w: env_values("-1"),
           lambda s, w: judge_duration(s, 0, 86400)),
    EnvVar("HPO_DEADLINE", _worker, lambda w: env_values("abc"),
           lambda s, w: judge_float(s, -1e18, 1e18) if s.strip() == s and s
           else "either"),
    EnvVar("HPO_CACHE_DIR", lambda url: ["baselines", "--study", EXISTING, "--json", "--storage",
                                         url],
           lambda w: st.one_of(st.sampled_from(["/proc/hpo-cache", f"{w.base}/model.pt",
                                                "/dev/null", f"{w.base}/cache"]),
                               env_values("/proc/hpo-cache")),
           lambda s, w: "valid"),  # the cache is an optimisation: no value may stop a command
]
TRACEBACK_ORIGINS: dict[str, type[AssertionError]] = {}


def traceback_failure(stderr: str) -> type[AssertionError]:
    """One failure class per place a subprocess's traceback came from, so that hypothesis
    reports each of them."""
    frames = re.findall(r'File "([^"]+)", line (\d+)', stderr)
    last = error_lines(stderr)[-1] if error_lines(stderr) else ""
    where = f"{Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else "?"
    key = f"{last.split(':')[0]} at {where}"
    if key not in TRACEBACK_ORIGINS:
        TRACEBACK_ORIGINS[key] = type(f"Traceback[{key}]", (BrokenContract,), {})
    return TRACEBACK_ORIGINS[key]


# `python -m hpo ARGS` with at most half this machine's memory (or 16 GiB) of address space, so
# that a value asking for the impossible fails in the child instead of starving the machine.
LIMITED_HPO = (
    "import resource, runpy, sys\n"
    f"cap = {min(MACHINE_MEMORY // 2, 16 * GIB)}\n"
    "resource.setrlimit(resource.RLIMIT_AS, (cap, cap))\n"
    "sys.argv[0] = 'hpo'\n"
    "runpy.run_module('hpo', run_name='__main__', alter_sys=True)\n")


def check_env(var: EnvVar, value: str, world: World) -> None:
    d, url = world.storage()
    scratch = world.scratch()
    try:
        verdict = var.judge(value, world)
        value = value.replace("{url}", url)
        env = {**world.env, var.name: value}
        cmd = var.command(url)
        note(f"{var.name}={value!r} hpo {' '.join(cmd)}  ({verdict})")
        before = sqlite_snapshot(d)
        try:
            p = subprocess.run([sys.executable, "-c", LIMITED_HPO, *cmd], env=env, cwd=scratch,
                               capture_output=True, timeout=120)
        except subprocess.TimeoutExpired as e:
            raise TooSlow(f"{var.name}={value!r}: hpo {cmd[0]} ran past 120 s") from e
        stdout = p.stdout.decode(errors="backslashreplace")
        stderr = p.stderr.decode(errors="backslashreplace")
        note(f"exit {p.returncode}; stdout {stdout[-300:]!r}; stderr {stderr[-1500:]!r}")
        event(f"{var.name}: {verdict} -> exit {p.returncode}")
        if p.returncode < 0:
            raise BrokenContract(f"{var.name}={value!r}: killed by signal {-p.returncode}: "
                                 f"{error_lines(stderr)[-1:]}")
        if "Traceback" in stderr:
            raise traceback_failure(stderr)(f"{var.name}={value!r}: hpo {cmd[0]} ends in a "
                                            f"traceback: {error_lines(stderr)[-1][:300]}")
        if p.returncode == 0:
            if verdict == "invalid":
                raise AcceptedImpossible(f"{var.name}={value!r} accepted by hpo {cmd[0]}")
            return
        if verdict == "valid":
            raise ValidRefused(f"{var.name}={value!r} refused: {error_lines(stderr)[-1:]}")
        check_refusal(p.returncode, stdout, stderr, [var.name])
        if sqlite_snapshot(d) != before:
            raise BrokenContract(f"{var.name}={value!r}: the storage changed on a refusal")
    finally:
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.parametrize("var", ENV_VARS, ids=[v.name for v in ENV_VARS])
@given(data=st.data())
@examples(1, 0.0, slow=False, shrink=False)
def test_environment_values(var: EnvVar, world: World, data: st.DataObject) -> None:
    check_env(var, data.draw(var.values(world), label=var.name), world)


@pytest.mark.slow
@pytest.mark.parametrize("var", ENV_VARS, ids=[v.name for v in ENV_VARS])
@given(data=st.data())
@examples(3, 0.01 / len(ENV_VARS), slow=True, shrink=False)
def test_environment_values_long_run(var: EnvVar, world: World, data: st.DataObject) -> None:
    check_env(var, data.draw(var.values(world), label=var.name), world)
