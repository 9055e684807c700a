"""Every attribute key hpo writes or reads on a study or trial, in one place.

Studies made by earlier versions hold these very keys, and both readers (Optuna's and the SQLite
one) look them up here, so a key is never spelled twice.
"""

from __future__ import annotations

# Study user attrs.
SPEC_ATTR = "hpo:spec"  # the study file's definition, as JSON
BUDGET_ATTR = "hpo:budget"  # finished trials the study asks for
RESCORE_ATTR = "hpo:rescored"  # `hpo rescore`: the top trials on more seeds and val curves
SUMMARY_ATTR = "hpo:summary"  # one readable line: what the dashboard shows first
EVAL_ATTR = "hpo:evaluation"  # `hpo evaluate`: the top trials on the held-out test split
PRUNE_ATTR = "hpo:artifacts_pruned"  # `hpo artifacts prune`: the last 20 runs
HEARTBEAT_ATTR = "hpo:heartbeat"  # the study's heartbeat contract (hpo.store.heartbeat)

# Trial user attrs that other commands read back.
SEEDS_ATTR = "seeds"  # the training seed of each repeat
PER_SEED_ATTR = "val_removed_per_seed"  # each seed's validation score, as recorded
MODEL_SCORE_ATTR = "model_val_removed"  # what the uploaded model file scores on validation
FAIL_REASON_ATTR = "fail_reason"
INTERRUPTED = "interrupted"  # how the fail_reason of a trial stopped by Ctrl-C or SIGTERM begins
REASON_ATTR = "reason"  # why a trial was pruned or diverged
ARTIFACT_ERROR_ATTR = "artifact_error"  # why a trial's picture or model file was not uploaded
HOST_ATTR = "host"
PID_ATTR = "pid"
RETRY_OF_ATTR = "retry_of"  # on a re-queued attempt: the number of the trial it retries
ADOPTED_ATTR = "adopted_from"  # a result recorded on the re-queued copy of a trial declared dead

# Optuna's own system attr keys (optuna.artifacts, the dashboard, heartbeat retries).
ARTIFACT_PREFIX = "artifacts:"  # a trial's (or a study's) artifact: artifacts:<id>
DASHBOARD_PREFIX = "dashboard:artifacts:"  # uploaded from the dashboard's page
RETRY_HISTORY = "retry_history"  # on a retried trial: the numbers before it


def dashboard_trial(key: str) -> int:
    """The trial id inside a dashboard upload's key, dashboard:artifacts:<trial_id>:<id>
    (-1 for any other key)."""
    parts = key.split(":")
    return int(parts[2]) if key.startswith(DASHBOARD_PREFIX) and parts[2].isdigit() else -1
