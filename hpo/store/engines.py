"""Opening a storage: safe engines per dialect, heartbeats, and the first open of a new database.

SQLite runs in WAL mode with a busy timeout so readers (the dashboard, queries) never
block workers; PostgreSQL and MySQL get small pools with pre-ping so dozens of workers fit in a
server's connection limit and survive a server restart.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
import sqlite3
import time
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import NoSuchModuleError

from hpo import env
from hpo.errors import StorageError, first_line
from hpo.store import diskfull
from hpo.store.attrs import ARTIFACT_PREFIX, RETRY_OF_ATTR
from hpo.store.optuna_api import HeartbeatStorage
from hpo.store.urls import WHERE, mask, parse, sqlite_path

# Heartbeats: a worker that stops beating for HPO_GRACE_PERIOD seconds is declared dead and its
# trial failed and retried (at most HPO_MAX_RETRY times); hpo.env reads them, on every open.


MYSQL_READ_TIMEOUT = 180  # seconds


def engine_kwargs(u: URL) -> dict[str, Any]:
    backend = u.get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": 60}}
    kw: dict[str, Any] = {"pool_size": 2, "max_overflow": 2, "pool_pre_ping": True,
                          "pool_recycle": 3600}
    if backend == "postgresql":
        # libpq's connect_timeout bounds the whole start-up: the connection and the greeting.
        kw["connect_args"] = {"connect_timeout": 10}
    elif backend == "mysql":
        # PyMySQL's connect_timeout bounds only the TCP connection; a port whose listener never
        # speaks would hang in the greeting for ever. The read timeout ends that, and is longer
        # than the budget lock's GET_LOCK wait (120 s), the longest a healthy call waits.
        kw["connect_args"] = {"connect_timeout": 10, "read_timeout": MYSQL_READ_TIMEOUT,
                              "write_timeout": MYSQL_READ_TIMEOUT}
    return kw


def prepare_sqlite(path: Path, create: bool, url: str) -> None:
    try:
        present = path.exists()
    except OSError as e:  # a name the file system refuses (too long, a loop of links...)
        raise StorageError(f"storage {mask(url)}: {path}: {e.strerror}; choose another path "
                           f"({WHERE})") from e
    if present:
        if path.is_dir():
            raise StorageError(f"storage {mask(url)}: {path} is a directory; point --storage at "
                               "an hpo SQLite file, e.g. sqlite:///storage/hpo.db")
        return
    if not create:
        raise StorageError(f"storage {mask(url)}: no database file at {path}; run `hpo search` "
                           f"or `hpo create` with a study file first, or fix {WHERE}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, FIRST_OPEN_ATTEMPTS + 1):
            try:
                # WAL is a property of the file: set once here so every later connection gets
                # it. Changing the mode needs the file to itself, and a process racing to
                # create the same new file (see FIRST_OPEN_ATTEMPTS) may hold it: "database
                # is locked", at once, without SQLite's busy wait (seen once in CI).
                with contextlib.closing(sqlite3.connect(path)) as con:
                    con.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as e:
                if attempt == FIRST_OPEN_ATTEMPTS or "locked" not in str(e):
                    raise
                time.sleep(random.uniform(0.02, 0.1) * attempt)
    except (OSError, sqlite3.Error) as e:
        full = diskfull.full_at(path, url, f"{e} {getattr(e, 'strerror', '')}")
        if full is not None:
            raise StorageError(full) from e
        raise StorageError(f"storage {mask(url)}: cannot create {path} "
                           f"({getattr(e, 'strerror', None) or e}); choose a writable place "
                           f"({WHERE})") from e


@contextlib.contextmanager
def undo_new_sqlite_file(url: str) -> Iterator[None]:
    """Removes the SQLite file (and the directories) that the block created, if the block
    fails: a failed `hpo create` on a new path leaves nothing behind."""
    try:
        path: Path | None = sqlite_path(parse(url))
    except StorageError:
        path = None  # the block reports the bad URL itself
    if path is None or path.exists():
        yield
        return
    missing = [d for d in [path.parent, *path.parent.parents] if not d.exists()]
    try:
        yield
    except BaseException:
        for side in ("", "-wal", "-shm", "-journal"):
            # OSError too: with a file where a parent directory goes (NotADirectoryError) the
            # block's own one-line error is the one to show, not the clean-up's traceback.
            with contextlib.suppress(OSError):
                Path(f"{path}{side}").unlink(missing_ok=True)
        for d in missing:  # innermost first
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


class RetryStaleTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry (same params, `retry_history` system attr, at most max_retry times), but the
    new attempt starts without the failed attempt's user attrs and artifact references: Optuna
    copies both, so a retry that later completes would still carry the old fail_reason, seeds,
    host and pid, and point at the dead attempt's pictures and model files."""

    def __init__(self, max_retry: int | None = None) -> None:
        with warnings.catch_warnings():  # "experimental" since Optuna 2.8; it works
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        attempt = copy.deepcopy(trial)  # the parent mutates system_attrs' retry_history list
        attempt.user_attrs = {RETRY_OF_ATTR: trial.number}
        attempt.system_attrs = {k: v for k, v in attempt.system_attrs.items()
                                if not k.startswith(ARTIFACT_PREFIX)}
        super().__call__(study, attempt)


# A PostgreSQL server hears of a client host that vanished (power cut, network partition) only
# from TCP: by default after 2 h 11 min of keepalive on an idle session, or ~15 min of
# retransmissions when its last reply was never acknowledged. Until then that host's sessions
# live on, and one that held the budget lock (hpo.store.studies.budget_lock) stopped every worker of
# the study. Each session asks its server to probe after 10 s of silence, every 5 s, and to end
# the session after 3 unanswered probes or 25 s of unacknowledged data, which ends the lock
# with it. A SET, not the `options` startup parameter, which PgBouncer refuses.
SERVER_KEEPALIVE = ("SELECT set_config('tcp_keepalives_idle', '10', false), "
                    "set_config('tcp_keepalives_interval', '5', false), "
                    "set_config('tcp_keepalives_count', '3', false), "
                    "set_config('tcp_user_timeout', '25000', false)")


def _server_keepalive(dbapi_con: Any, _record: Any) -> None:
    autocommit = dbapi_con.autocommit  # outside a transaction, so no rollback can undo it
    dbapi_con.autocommit = True
    with dbapi_con.cursor() as cur:
        cur.execute(SERVER_KEEPALIVE)
    dbapi_con.autocommit = autocommit


# The engines of the storages this process opened. Weak: a storage dropped by its user may go
# with its engine; one that lingers in a reference cycle keeps its connections open until then.
_ENGINES: weakref.WeakSet[sqlalchemy.engine.Engine] = weakref.WeakSet()
# The storage this process opened last: what a failed read is diagnosed on (hpo.store.queries).
# A command opens one; in a process that runs many (tests, a notebook) it is the current one's.
_OPENED: list[URL] = []


def opened_urls() -> list[URL]:
    return list(_OPENED)


def close_storages() -> None:
    """Closes the connections of every storage this process opened (hpo.cli.main, before the
    process ends without the interpreter's teardown): SQLite checkpoints its WAL and removes
    the -wal file on the last close, a server sees a clean goodbye."""
    for engine in list(_ENGINES):
        with contextlib.suppress(Exception):  # ending anyway: a dead server must not stop it
            engine.dispose()


def open_storage(url: str, *, create: bool = False, heartbeat: bool = True
                 ) -> optuna.storages.RDBStorage:
    """Opens (and with create=True, creates) the storage; user-facing errors are StorageError."""
    u = parse(url)
    path = sqlite_path(u)
    if path is not None:
        prepare_sqlite(path, create, url)
        if not create and on_read_only_media(path):
            u = read_only_url(path)  # a study on a DVD, a read-only mount or snapshot
    logging.getLogger("optuna").setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Heartbeats and their retry callback are "experimental" in Optuna 5: they work, and a
            # warning in every worker log would only alarm users.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            hb: dict[str, Any] = {}
            if heartbeat:
                interval, grace, max_retry = env.heartbeat_settings()
                hb = {"heartbeat_interval": interval, "grace_period": grace,
                      "heartbeat_stale_trial_callback": RetryStaleTrial(max_retry=max_retry)}
            storage = _construct(u, create, hb)
            if u.get_backend_name() == "postgresql":
                sqlalchemy.event.listen(storage.engine, "connect", _server_keepalive)
                storage.engine.dispose()  # the connections made while opening lack it
            _ENGINES.add(storage.engine)
            _OPENED[:] = [u]
            return storage
    except (ImportError, NoSuchModuleError) as e:
        raise StorageError(f"storage {mask(url)}: no driver for this URL ({e}); use "
                           "postgresql+psycopg:// or mysql+pymysql://") from e
    except optuna.exceptions.StorageInternalError as e:
        # Optuna 5 wraps the driver's error (refused, unknown user, not a database...).
        raise _open_error(url, u, e.__cause__ or e) from e
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise _open_error(url, u, e) from e
    except RuntimeError as e:  # optuna's schema version check
        raise StorageError(f"storage {mask(url)}: {first_line(e)}") from e


# Two processes opening a brand-new database at once (a search creating it while a worker, a
# query or the dashboard opens it) can both find a table or Optuna's version row missing and
# both write it: the second fails on "already exists" or a unique key. Whatever the first wrote
# is there when the second opens again, so each retry has less left to race for.
FIRST_OPEN_ATTEMPTS = 8


def _first_open_race(e: BaseException) -> bool:
    cause = e.__cause__ if isinstance(e, optuna.exceptions.StorageInternalError) else e
    return isinstance(cause, sqlalchemy.exc.IntegrityError) or (
        isinstance(cause, sqlalchemy.exc.DBAPIError) and "already exists" in str(cause))


def _construct(u: URL, create: bool, hb: dict[str, Any]) -> HeartbeatStorage:
    for attempt in range(1, FIRST_OPEN_ATTEMPTS + 1):
        try:
            return HeartbeatStorage(u.render_as_string(hide_password=False),
                                    engine_kwargs=engine_kwargs(u),
                                    skip_table_creation=not create, **hb)
        except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.DBAPIError) as e:
            if attempt == FIRST_OPEN_ATTEMPTS or not _first_open_race(e):
                raise
            time.sleep(random.uniform(0.02, 0.1) * attempt)  # apart from the other racers
    raise AssertionError("unreachable")


def _open_error(url: str, u: URL, e: BaseException) -> StorageError:
    msg = first_line(e)
    missing = ("no such table", "does not exist", "doesn't exist")
    if isinstance(e, sqlalchemy.exc.ProgrammingError) or (
            any(m in msg for m in missing) and ("table" in msg or "relation" in msg)):
        return StorageError(f"storage {mask(url)} holds no hpo tables ({msg}); run `hpo search` "
                            f"or `hpo create` with a study file first, or fix {WHERE}")
    if u.get_backend_name() == "sqlite":
        full = diskfull.full_disk(u, msg)
        if full is not None:
            return StorageError(full)
        return StorageError(f"storage {mask(url)}: cannot use {u.database} as a database "
                            f"({msg}); point {WHERE} at an hpo SQLite file")
    return StorageError(f"cannot reach storage {mask(url)}: {msg}; check the host, port, user, "
                        f"password and database name ({WHERE})")


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """The names alone: Optuna's get_all_studies reads every study's attributes too, and one
    damaged attribute of any study would fail it."""
    from hpo.store.optuna_api import models, rdb_of

    rdb = rdb_of(storage)
    if rdb is None:
        return [s.study_name for s in storage.get_all_studies()]
    S = models().StudyModel
    with rdb.engine.connect() as con:
        return [name for (name,) in con.execute(
            sqlalchemy.select(S.study_name).order_by(S.study_id))]


def on_read_only_media(path: Path) -> bool:
    """Whether this process cannot write the SQLite file's directory (a read-only mount): then
    SQLite cannot make the -shm and -wal files a WAL database needs, even to read."""
    return path.is_file() and not os.access(path.parent, os.W_OK)


def read_only_url(path: Path) -> URL:
    """The file opened read-only and immutable, as a quoted SQLite URI ('#', '%' and '?' in a
    name stay part of it): nothing is locked or written, which read-only media allow. Only a
    process that reads opens a file so; workers and creation need a writable one."""
    return make_url(f"sqlite:///file:{quote(str(path.resolve()))}?mode=ro&immutable=1&uri=true")


def file_identity(u: URL) -> tuple[int, int] | None:
    """(device, inode) of a SQLite database file; None for a database server. A file deleted or
    replaced while processes have it open keeps their writes in a file nobody can read again:
    a search and its workers compare this with what they opened, and stop when it changed."""
    path = sqlite_path(u)
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError as e:
        raise StorageError(f"storage {mask(str(u))}: the database file {path} is gone "
                           f"({e.strerror}); it was deleted or moved while in use") from e
    return st.st_dev, st.st_ino


def check_identity(u: URL, opened: tuple[int, int] | None) -> None:
    """Refuses to go on when the SQLite file is no longer the one that was opened. The -wal
    and -shm files beside the name belong to the database that was opened, not to the file
    there now: they are moved aside at once, or the next process to open the name would
    replay the old database's log into it (a restored backup overwritten)."""
    if opened is None:
        return
    try:
        now = file_identity(u)
    except StorageError:
        set_aside(u)
        raise
    if now != opened:
        set_aside(u)
        raise StorageError(f"storage {mask(str(u))}: the database file {sqlite_path(u)} was "
                           "replaced while in use (another file now has its name); stopping")


def set_aside(u: URL) -> list[Path]:
    """Renames a lost database's -wal and -shm files (NAME-wal.orphaned-PID); returns them."""
    path = sqlite_path(u)
    moved = []
    for side in ("-wal", "-shm"):
        src = Path(f"{path}{side}")
        dst = Path(f"{path}{side}.orphaned-{os.getpid()}")
        with contextlib.suppress(OSError):
            src.rename(dst)
            moved.append(dst)
    return moved
