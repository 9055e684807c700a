"""The numbers we publish: retrain the best configurations on several seeds and score them on the
held-out test split that no search ever saw; and replay any trial exactly from its seed.

Both use the study's own data (hpo.task.source): a file study's file is checked against the sha256
the study recorded before anything trains, and scores are on the signals' original scale.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from hpo.errors import HpoError
from hpo.results.optuna_reader import best_trials
from hpo.store import stored
from hpo.store.attrs import (
    EVAL_ATTR,
    PER_SEED_ATTR,
    REASON_ATTR,
    RESCORE_ATTR,
    RETRY_HISTORY,
    SEEDS_ATTR,
)
from hpo.store.stored import foreign_params
from hpo.study.spec import StudySpec, trial_seed
from hpo.task.curves import DataConfig
from hpo.task.fit import fit_source, held_out_score
from hpo.task.metric import mean_std
from hpo.task.source import verify


@dataclass(frozen=True)
class Job:
    spec: StudySpec
    number: int
    params: dict[str, Any]
    seed: int
    threads: int
    study: str | None = None  # names the study in a data file's messages
    val_curves: int | None = None  # rescoring: this many validation curves, not the study's


def run_job(job: Job) -> dict[str, float]:
    data = job.spec.source(job.params)
    if job.val_curves is not None and isinstance(data, DataConfig):
        data = dataclasses.replace(data, n_val=job.val_curves)
    result = fit_source(job.spec.train_config(job.params, job.seed, job.threads), data,
                        study=job.study)
    test = held_out_score(result, data, job.study)
    return {"val": result.val_removed, "test": test, "seconds": result.seconds,
            "cpu_seconds": result.cpu_seconds}


def seed_of(spec: StudySpec, t: FrozenTrial, repeat: int) -> int:
    """The training seed of a trial's repeat: the one it recorded, else its lineage's (a
    re-queued trial trains with its first attempt's seeds)."""
    recorded = t.user_attrs.get(SEEDS_ATTR)
    if isinstance(recorded, list) and repeat < len(recorded) and isinstance(recorded[repeat], int):
        return stored.seeds("", t.number, {"seeds": [recorded[repeat]]})[0]
    history = t.system_attrs.get(RETRY_HISTORY) or []
    origin = history[0] if history and isinstance(history[0], int) else t.number
    return trial_seed(spec, origin, repeat)


def retrainable(study: optuna.Study, spec: StudySpec, top: int,
                skipped: Callable[[str], None]) -> list[FrozenTrial]:
    """The `top` best trials hpo can retrain: a trial another client told, with parameters the
    study does not search (or without some it does), is skipped with one line to `skipped`."""
    out: list[FrozenTrial] = []
    for t in best_trials(study, 2 * top + 10):
        foreign = foreign_params(spec, t.params)
        if foreign:
            skipped(f"trial {t.number} of '{study.study_name}' is skipped: its parameters "
                    f"{', '.join(foreign)} are not the study's (another client told it)")
        elif len(out) < top:
            out.append(t)
    return out


def evaluate_top(study: optuna.Study, spec: StudySpec, top: int, seeds: int,
                 workers: int | None = None, threads: int = 1,
                 skipped: Callable[[str], None] = lambda _: None,
                 done: Callable[[], None] = lambda: None) -> list[dict[str, Any]]:
    """Retrains each of the top trials `seeds` times (its own seeds first) and scores on test."""
    trials = retrainable(study, spec, top, skipped)
    if not trials:
        raise HpoError(f"study '{study.study_name}' has no complete trial to evaluate yet; run "
                       f"`hpo search` or `hpo worker {study.study_name}` first")
    verify(spec.source(), study.study_name)  # one line here, not a traceback from a pool process
    jobs = [Job(spec, t.number, t.params, seed_of(spec, t, r), threads,
                study.study_name) for t in trials for r in range(seeds)]
    results = _run(jobs, workers, done)
    rows = []
    for i, t in enumerate(trials):
        chunk = results[i * seeds:(i + 1) * seeds]
        val_m, val_s = mean_std([r["val"] for r in chunk])
        test_m, test_s = mean_std([r["test"] for r in chunk])
        rows.append({"number": t.number, "params": t.params, "search_value": t.values[0],
                     "val_mean": val_m, "val_std": val_s, "test_mean": test_m, "test_std": test_s,
                     "seeds": seeds,
                     "train_seconds": sum(r["seconds"] for r in chunk) / seeds,
                     "cpu_seconds": sum(r["cpu_seconds"] for r in chunk) / seeds})
    study.set_user_attr(EVAL_ATTR, {str(r["number"]): r for r in rows})
    return rows


def _run(jobs: list[Job], workers: int | None, done: Callable[[], None]
         ) -> list[dict[str, float]]:
    """Every job's result, in the jobs' order; `done()` after each one finishes."""
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers <= 1:
        out = []
        for j in jobs:
            out.append(run_job(j))
            done()
        return out
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(run_job, j) for j in jobs]
        for _ in as_completed(futures):
            done()
        return [f.result() for f in futures]


def rescore_top(study: optuna.Study, spec: StudySpec, top: int, seeds: int,
                val_curves: int | None, workers: int | None = None, threads: int = 1,
                skipped: Callable[[str], None] = lambda _: None,
                done: Callable[[], None] = lambda: None) -> list[dict[str, Any]]:
    """Selection that survives noise: retrains the top trials on `seeds` seeds (their own first)
    and scores each on `val_curves` validation curves (default: the study's), so that the best
    is picked on more than one seed and 50 curves. Test curves stay unseen. The results are
    kept in the study's RESCORE_ATTR, which `hpo best` shows."""
    trials = retrainable(study, spec, top, skipped)
    if not trials:
        raise HpoError(f"study '{study.study_name}' has no complete trial to rescore yet; run "
                       f"`hpo search` or `hpo worker {study.study_name}` first")
    if len(study.directions) > 1:
        raise HpoError(f"study '{study.study_name}' has two objectives: its Pareto front has no "
                       "single best to rescore; use `hpo evaluate`")
    if val_curves is not None and spec.file_data() is not None:
        raise HpoError("--val-curves: a data.file study validates on its file's own signals; "
                       "drop it and rescore with --seeds")
    verify(spec.source(), study.study_name)
    jobs = [Job(spec, t.number, t.params, seed_of(spec, t, r), threads,
                study.study_name, val_curves) for t in trials for r in range(seeds)]
    results = _run(jobs, workers, done)
    fd = spec.file_data()
    n_val = fd.sizes()[1] if fd is not None else (
        val_curves or spec.data_config(trials[0].params).n_val)
    rows = []
    for i, t in enumerate(trials):
        m, sd = mean_std([r["val"] for r in results[i * seeds:(i + 1) * seeds]])
        rows.append({"number": t.number, "params": t.params, "search_value": t.values[0],
                     "val_mean": round(m, 4), "val_std": round(sd, 4), "seeds": seeds,
                     "val_curves": n_val})
    rows.sort(key=lambda r: -r["val_mean"])  # val_removed is maximized
    study.set_user_attr(RESCORE_ATTR, {str(r["number"]): r for r in rows})
    return rows


def replay(study: optuna.Study, spec: StudySpec, number: int, threads: int = 1,
           done: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Retrains trial `number` with its recorded seeds and compares with what it recorded."""
    trials = study.get_trials(deepcopy=False)
    match = [t for t in trials if t.number == number]
    if not match:
        raise HpoError(f"study '{study.study_name}' has no trial {number}; it has trials 0.."
                       f"{len(trials) - 1}")
    t = match[0]
    if t.params and (foreign := foreign_params(spec, t.params)):
        raise HpoError(f"trial {number} of '{study.study_name}' has parameters "
                       f"{', '.join(foreign)} that the study does not search (another client "
                       "told it): hpo cannot retrain it")
    if not t.params or SEEDS_ATTR not in t.user_attrs:
        raise HpoError(f"trial {number} of '{study.study_name}' never started training "
                       f"(state {t.state.name.lower()}); nothing to replay")
    if t.state != optuna.trial.TrialState.COMPLETE or PER_SEED_ATTR not in t.user_attrs:
        why = f" ({t.user_attrs[REASON_ATTR]})" if REASON_ATTR in t.user_attrs else ""
        raise HpoError(f"trial {number} of '{study.study_name}' is {t.state.name.lower()}{why}: "
                       "it recorded no final score to compare with; replay a complete trial")
    verify(spec.source(), study.study_name)
    jobs = [Job(spec, number, t.params, s, threads, study.study_name)
            for s in stored.seeds(study.study_name, number, t.user_attrs)]
    vals = [r["val"] for r in _run(jobs, 1, done)]
    recorded = t.user_attrs.get(PER_SEED_ATTR)
    return {"number": number, "params": t.params, "state": t.state.name,
            "seeds": t.user_attrs[SEEDS_ATTR], "recorded": recorded,
            "replayed": [round(v, 4) for v in vals],
            "identical": recorded is not None and [round(v, 4) for v in vals] == recorded}
