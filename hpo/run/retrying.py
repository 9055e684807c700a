"""Waiting out a database that restarts or is briefly unreachable.

Every storage call a worker or the `hpo search` supervisor makes goes through `retry`, which
retries Optuna's and SQLAlchemy's storage errors with a capped exponential backoff for up to
HPO_STORAGE_RETRY_SECONDS (300 s) and then gives up with one line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import optuna
import sqlalchemy

from hpo import env
from hpo.errors import WorkerError, first_line
from hpo.run import timing

log = logging.getLogger("hpo.worker")
T = TypeVar("T")
STORAGE_ERRORS = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)


def retry(fn: Callable[[], T], what: str, patience: float | None = None,
          stop_requested: Callable[[], bool] = lambda: False, kind: str = timing.OTHER) -> T:
    """Calls fn, retrying storage errors; `stop_requested` ends the wait at once (Ctrl-C).
    `kind` is what hpo.run.timing reports the call as."""
    with timing.timed(kind):
        return _retry(fn, what, patience, stop_requested)


def _retry(fn: Callable[[], T], what: str, patience: float | None,
           stop_requested: Callable[[], bool]) -> T:
    patience = env.storage_retry_seconds() if patience is None else patience
    deadline, delay = time.monotonic() + patience, 0.5
    while True:
        try:
            return fn()
        except STORAGE_ERRORS as e:
            if stop_requested():  # asked to stop: don't sit out an outage first
                raise KeyboardInterrupt from e
            if time.monotonic() > deadline:
                raise WorkerError(f"the storage failed for {patience:.0f} s while trying to "
                                  f"{what} ({cause(e)}); giving up") from e
            log.warning("storage error while trying to %s (%s); retrying in %.1f s", what,
                        cause(e), delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def cause(e: BaseException) -> str:
    """The database's own reason ("database or disk is full"), under Optuna's wrapper ("An
    exception is raised during the commit...") and SQLAlchemy's."""
    while e.__cause__ is not None and getattr(e, "orig", None) is None:
        e = e.__cause__
    return first_line(e)
