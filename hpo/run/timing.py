"""A timing hook: where a worker's time goes, for benchmarks and profiling, without patching.

Every storage call (through hpo.run.retrying.retry), every parameter suggestion and every heartbeat
is wrapped in `timed(kind)`. Nothing is measured until someone calls `observe(fn)`; then fn gets
(kind, wall seconds, CPU seconds of the calling thread) after each wrapped call. The kinds are
the constants below, never the wording of a message, so a benchmark's categories do not change
when a log line does. bench/storage.py is the user.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

Observer = Callable[[str, float, float], None]
_observers: list[Observer] = []

# Kinds of timed work.
FAIL_STALE = "fail-stale check"
CLAIM = "claim (lock, count, ask)"
SAMPLING = "sampling (suggest)"
ATTRS = "user attrs"
REPORT = "reports"
PRUNE_CHECK = "pruning checks"
TELL = "tell"
ARTIFACTS = "artifacts"
HEARTBEAT = "heartbeats"
COUNT = "counts"
OTHER = "other storage"


def observe(fn: Observer) -> Callable[[], None]:
    """Registers fn; returns the function that unregisters it."""
    _observers.append(fn)
    return lambda: _observers.remove(fn)


@contextlib.contextmanager
def timed(kind: str) -> Iterator[None]:
    if not _observers:
        yield
        return
    start, cpu = time.perf_counter(), time.thread_time()
    try:
        yield
    finally:
        wall, used = time.perf_counter() - start, time.thread_time() - cpu
        for fn in list(_observers):
            fn(kind, wall, used)
