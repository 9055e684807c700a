"""What a trial measures: each metric's direction and unit. A module of its own, without numpy,
so that the light readers (hpo.results.sqlite_reader, `hpo best` on SQLite) check a study's
stored directions against its definition and label its objective as the spec does."""

from __future__ import annotations

METRICS = {"val_removed": "maximize", "train_seconds": "minimize"}
# Each metric's unit: the objective's name in every output and the dashboard's axis label.
METRIC_LABELS = {"val_removed": "% noise removed on validation",
                 "train_seconds": "training seconds per seed"}


def directions(metrics: list[str] | tuple[str, ...]) -> list[str]:
    """The study's directions (lower case, by objective) for its metrics."""
    return [METRICS[m] for m in metrics]
