"""Progress display for single training runs (rich, on stderr so stdout stays clean)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hpo.task.train import EpochCallback, EpochReport


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
