"""What one trial does: suggest, train `repeats` seeds, report, and record everything needed to
understand and replay it. The training loop itself (hpo.task.train) knows nothing of Optuna.

Pruning compares trials at equal *progress* through their own cosine schedule: a trial reports at
steps 10, 20, ..., 100 (percent of its epochs). Comparing at equal epoch numbers would prune every
long run, because mid-schedule its learning rate is still high while a short run has converged.

Storage traffic is kept to what a decision needs, so that a 100-epoch trial spends under 2 % of
its time on it (bench/storage.py measures it): ten reports, the pruner asked only where it can
answer yes, and user attrs written in one transaction per phase of the trial.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from hpo.errors import StorageError
from hpo.run import timing
from hpo.run.uploads import upload_trial_artifacts
from hpo.store import optuna_api
from hpo.store.attrs import HOST_ATTR, PER_SEED_ATTR, PID_ATTR, REASON_ATTR, SEEDS_ATTR
from hpo.store.stored import foreign_params
from hpo.study.spec import Param, StudySpec, trial_seed
from hpo.task.fit import fit_source
from hpo.task.metric import mean_std
from hpo.task.source import model_split
from hpo.task.train import EpochReport, TrainResult, resolve_device, train

# Percent of the schedule between two reports (and pruning checks). A report is a write and a
# check a read of the study's new and unfinished trials (2 and 6 ms of CPU on SQLite); at every
# 5 % they were the largest part of a 100-epoch trial's coordination overhead. Every 10 % a trial
# is pruned at most 5 % of its schedule later than it could have been; studies begun with 5 %
# reports still compare, their marks include these.
REPORT_EVERY = 10
# A trial's learning curve is kept in its user attrs at this many points at most (every
# trial query and `optuna best-trial` prints user attrs); the full curves are an artifact.
CURVE_POINTS = 21


@dataclass
class Outcome:
    state: TrialState
    values: list[float] | None
    summary: str
    # Set when storage refused this attempt's writes part-way (another process declared the
    # trial dead): what it meant to record, so that the worker can still keep the result.
    attrs: dict[str, Any] = field(default_factory=dict)
    detached: bool = False
    upload: Callable[[optuna.Trial], dict[str, Any]] | None = None  # its files, to another trial


def suggest(trial: optuna.Trial, p: Param) -> Any:
    with timing.timed(timing.SAMPLING):
        return _suggest(trial, p)


def _suggest(trial: optuna.Trial, p: Param) -> Any:
    if p.type == "categorical":
        return trial.suggest_categorical(p.name, list(p.choices))
    assert p.low is not None and p.high is not None
    if p.type == "int":
        return trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1),
                                 log=p.log)
    return trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)


def progress_steps(epochs: int) -> dict[int, int]:
    """Maps the epoch at which each REPORT_EVERY % progress mark is first reached to the mark
    (the last one, when a short run reaches several in one epoch)."""
    marks: dict[int, int] = {}
    for pct in range(REPORT_EVERY, 101, REPORT_EVERY):
        marks[math.ceil(pct * epochs / 100)] = pct  # short runs: one report per epoch
    return marks


def pruning_marks(spec: StudySpec, reported: Iterable[int]) -> frozenset[int]:
    """The reported marks (percent) at which the pruner is asked.

    None without a pruner (NopPruner always answers no); none below the warm-up of the median and
    percentile pruners (Optuna answers no there without looking further); none at 100 %, where
    the training is over and pruning would only turn a finished result into a pruned one.
    """
    if not spec.pruner.active or len(spec.metrics) > 1:
        return frozenset()
    return frozenset(p for p in reported if spec.pruner.warmup <= p < 100)


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any], call: Callable[..., Any],
                   what: str) -> None:
    """All attrs in one transaction (hpo.store.optuna_api), so `call` may safely retry it."""
    call(lambda: optuna_api.set_trial_user_attrs(trial, attrs), what, kind=timing.ATTRS)


def run_trial(spec: StudySpec, trial: optuna.Trial, *, threads: int, host: str,
              call: Callable[..., Any], trainer: Callable[..., TrainResult] = train,
              stop: Callable[[], None] | None = None) -> Outcome:
    """Trains and scores one trial. `call(fn, what)` wraps each storage access (retries);
    `trainer` stands in for hpo.task.train.train (bench/storage.py: an instant one); `stop()` runs
    after every epoch of every seed and raises to end the trial (the worker's Ctrl-C check)."""
    params = {p.name: suggest(trial, p) for p in spec.space}
    # A trial another client enqueued may carry values outside the space (Optuna only warns):
    # never trained, since its memory was never checked.
    if bad := foreign_params(spec, params):
        raise StorageError(f"trial {trial.number}: parameters {', '.join(bad)} are not the "
                           "study's (another client enqueued them); not trained")
    data = spec.source(params)
    study = trial.study.study_name
    val = model_split(data, "val", study)  # the same split fit_source scores on
    # A re-queued trial is the same trial: it trains with its first attempt's seeds.
    seeds = [trial_seed(spec, optuna_api.lineage_origin(trial), r) for r in range(spec.repeats)]
    # Intermediate values are validation scores: they only mean something (to the pruner and
    # the dashboard) when that is the one objective.
    report = spec.metrics == ("val_removed",)
    attrs: dict[str, Any] = {
        SEEDS_ATTR: seeds, HOST_ATTR: host.rsplit(":", 1)[0], PID_ATTR: os.getpid(),
        "torch": str(torch.__version__), "device": str(resolve_device("auto")),
        "threads": threads,  # what the dashboard's 'Step' means is said once, in the study note
    }
    set_user_attrs(trial, attrs, call, "record the trial's setup")

    marks = progress_steps(spec.train_config(params, 0).epochs)
    prune_at = pruning_marks(spec, marks.values())
    curve: list[float] = []
    detached = False  # storage refused a write: the trial was declared dead elsewhere

    def checkpoint(_: EpochReport) -> None:
        if stop is not None:
            stop()

    def on_epoch(r: EpochReport) -> None:
        nonlocal detached
        checkpoint(r)
        curve.append(round(r.val_removed, 3))
        pct = marks.get(r.epoch)
        if pct is None or not report or detached:
            return
        try:
            call(lambda: trial.report(r.val_removed, pct), "report an intermediate value",
                 kind=timing.REPORT)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Declared dead by another process (its clock, a long outage): train on, so that
            # the result can still be kept (the worker records it on the re-queued copy).
            detached = True
            return
        if pct in prune_at and call(trial.should_prune, "ask the pruner",
                                    kind=timing.PRUNE_CHECK):
            raise optuna.TrialPruned(f"pruned at epoch {r.epoch} ({pct} % of the schedule)")

    results: list[TrainResult] = []
    try:
        for r, seed in enumerate(seeds):
            cfg = spec.train_config(params, seed, threads)
            res = fit_source(cfg, data, study=study, on_epoch=on_epoch if r == 0 else checkpoint,
                             trainer=trainer)
            results.append(res)
            if res.status == "diverged":
                break
    except optuna.TrialPruned as e:
        _record(trial, call, {"learning_curve": compact_curve(curve, None), "epochs_run":
                              len(curve), "pruned_at_epoch": len(curve), REASON_ATTR: str(e)})
        return Outcome(TrialState.PRUNED, None, str(e).removeprefix("pruned "))

    first = results[0]
    vals = [res.val_removed for res in results]
    seconds = sum(res.seconds for res in results) / len(results)
    cpu = sum(res.cpu_seconds for res in results) / len(results)
    record = {
        "learning_curve": compact_curve(first.val_curve if first.status != "diverged" else curve,
                                        first.loss_curve),
        "epochs_run": first.epochs_run, "n_params": first.model.n_params(),
        "train_seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
        PER_SEED_ATTR: [round(v, 4) for v in vals],
    }
    if results[-1].status == "diverged":
        # A diverged configuration is a legitimate (bad) result, not a crash: PRUNED counts it
        # against the budget and tells TPE to avoid the region, and the reason is kept.
        record.update(status="diverged", reason=results[-1].reason)
        _record(trial, call, record)
        return Outcome(TrialState.PRUNED, None, f"diverged: {results[-1].reason}")
    mean, std = mean_std(vals)
    record["val_std"] = round(std, 4)
    # Optuna refuses uploads to a finished trial, so the first seed's picture and model file go
    # up now, while this trial still runs. A failure there is recorded, never the trial's end.
    cfg0 = spec.train_config(params, seeds[0], threads)

    def upload(to: optuna.Trial) -> dict[str, Any]:
        return upload_trial_artifacts(to, first, cfg0, data, val, call)

    if not detached:
        try:
            record.update(upload(trial))
            _record(trial, call, record)
        except optuna.exceptions.UpdateFinishedTrialError:
            detached = True  # its files go to the re-queued copy, if the worker keeps it there
    measured = {"val_removed": mean, "train_seconds": seconds}
    values = [measured[m] for m in spec.metrics]  # by name: the study's order, not ours
    return Outcome(TrialState.COMPLETE, values,
                   f"{mean:.2f} % {params} ({seconds:.1f} s per seed)", {**attrs, **record},
                   detached, upload if detached else None)


def compact_curve(val: list[float], loss: list[float] | None) -> dict[str, list[Any]]:
    """At most CURVE_POINTS evenly spaced epochs (the first and last always) of the validation
    score and the training loss; non-finite losses are kept as strings ("inf", "nan")."""
    n = len(val)
    picks = sorted({round(i * (n - 1) / (CURVE_POINTS - 1)) for i in range(CURVE_POINTS)}
                   ) if n else []
    out: dict[str, list[Any]] = {"epoch": [i + 1 for i in picks],
                                 "val_removed": [round(val[i], 3) for i in picks]}
    if loss is not None:
        out["train_loss"] = [float(f"{loss[i]:.4g}") if math.isfinite(loss[i]) else str(loss[i])
                             for i in picks if i < len(loss)]
    return out


def _record(trial: optuna.Trial, call: Callable[..., Any], attrs: dict[str, Any]) -> None:
    set_user_attrs(trial, attrs, call, "record the trial's results")


