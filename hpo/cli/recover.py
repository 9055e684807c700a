"""Maintenance commands registered on the main `hpo` app: bulk controls over failed and stale
trials. Each command is one thin function over library code (hpo.store.recovery)."""

from __future__ import annotations

import typer

from hpo.cli.common import JsonOpt, StorageOpt, StudyArg, app, emit_json, load_study
from hpo.errors import plural
from hpo.store.optuna_api import rdb_of, storage_of
from hpo.store.recovery import fail_stale, retry_failed


def _pairs(pairs: list[tuple[int, int]]) -> str:
    return ", ".join(f"{a} -> {b}" for a, b in pairs)


@app.command("retry-failed")
def retry_failed_cmd(
    study: StudyArg,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-queue the parameters of every failed trial, once.

    Trials already retried (by the workers or an earlier run) and parameters that ran or wait
    elsewhere are skipped.
    """
    s, _ = load_study(study, storage)
    st = rdb_of(storage_of(s))
    assert st is not None, "hpo studies live in SQL storage"
    r = retry_failed(s, st)
    if as_json:
        emit_json({"requeued": [{"failed": a, "new": b} for a, b in r.requeued],
                   "already_retried": r.already_retried, "params_taken": r.params_taken,
                   "no_params": r.no_params, "finished": r.finished, "budget": r.budget})
        return
    typer.echo(f"re-queued {plural(len(r.requeued), 'failed trial')} of '{study}'"
               + (f": {_pairs(r.requeued)}" if r.requeued else ""))
    for label, numbers in (("already retried", r.already_retried),
                           ("parameters already ran or are queued elsewhere", r.params_taken),
                           ("failed before any parameter was chosen", r.no_params)):
        if numbers:
            typer.echo(f"skipped {len(numbers)} ({label}): {', '.join(map(str, numbers))}")
    if r.requeued and r.finished >= r.budget:
        typer.echo(f"the budget ({r.budget}) is already met, so no worker will run them: raise "
                   f"it with `hpo search STUDY_FILE --trials N` or `hpo create STUDY_FILE "
                   f"--trials N`")


@app.command("fail-stale")
def fail_stale_cmd(
    study: StudyArg,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mark RUNNING trials whose worker is gone as failed, and re-queue their parameters.

    Gone: its worker ran on this host and its pid no longer exists (at once), or no heartbeat
    for the study's grace period. Every other running trial is left alone, with the reason
    (its heartbeat's age, or its host). Re-queues stop after the study's retry limit.
    """
    # Heartbeat settings on: they carry the grace period and the bounded retry callback.
    s, _ = load_study(study, storage, heartbeat=True)  # the study's contract, not ours
    st = rdb_of(storage_of(s))
    assert st is not None, "hpo studies live in SQL storage"
    r = fail_stale(s, st)
    if as_json:
        emit_json({"failed": [{"number": n, "reason": why} for n, why in r.failed],
                   "requeued": [{"failed": a, "new": b} for a, b in r.requeued],
                   "not_requeued": r.not_requeued, "unjudged": r.unjudged,
                   "left_alone": [{"number": n, "why": r.why.get(n, "")} for n in r.unjudged],
                   "running": r.running})
        return
    typer.echo(f"failed {len(r.failed)} of {plural(r.running, 'running trial')} of '{study}'"
               + (": " + "; ".join(f"{n} ({why})" for n, why in r.failed) if r.failed else ""))
    if r.requeued:
        typer.echo(f"re-queued their parameters: {_pairs(r.requeued)}")
    if r.not_requeued:
        typer.echo(f"not re-queued (out of retries, HPO_MAX_RETRY): "
                   f"{', '.join(map(str, r.not_requeued))}")
    for n in r.unjudged:
        typer.echo(f"left alone: trial {n} ({r.why.get(n, 'not judged from here')})")

