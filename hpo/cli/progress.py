"""Progress of long commands (rich, on stderr so stdout stays clean): a training run's epochs,
and the retrainings of `hpo evaluate`, `rescore` and `replay`. Shown only on a terminal and never
with --json: a script or a log gets the result alone."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:  # the training module imports torch; a progress bar needs none of it
    from hpo.task.train import EpochCallback, EpochReport


def wanted(as_json: bool) -> bool:
    """Progress for a person at a terminal; none in a pipe, a log or for --json."""
    return not as_json and sys.stderr.isatty()


@contextmanager
def epoch_bar(epochs: int, enabled: bool = True) -> Iterator[EpochCallback | None]:
    if not enabled:
        yield None
        return
    progress = Progress(
        TextColumn("epoch"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("val {task.fields[val]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True, emoji=False),
        transient=True,
    )
    task = progress.add_task("train", total=epochs, val="-")

    def on_epoch(r: EpochReport) -> None:
        progress.update(task, completed=r.epoch, val=f"{r.val_removed:.2f} %")

    with progress:
        yield on_epoch


@contextmanager
def job_bar(total: int, what: str, enabled: bool = True) -> Iterator[Callable[[], None]]:
    """A bar of `total` jobs (a trial retrained on one seed, each); yields the call that marks
    one done."""
    if not enabled:
        yield lambda: None
        return
    progress = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True, emoji=False), transient=True)
    task = progress.add_task(what, total=total)
    with progress:
        yield lambda: progress.advance(task)
