"""Storage URLs: which databases hpo opens, how a URL reads, and how it prints.

A URL comes from --storage, else HPO_STORAGE, else a SQLite file under storage/ of the current
directory (hpo.env.resolve_url). `parse` is the one door: it refuses what cannot work before
anything connects (control characters and stray white space, an unknown database, an in-memory
SQLite file, an option the driver does not take or a value it would refuse later), expands `~`
in a SQLite path, and names the flag and the variable in every message. `mask` is the one way a
URL is shown: every credential hidden, in any form.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SAWarning

from hpo import env
from hpo.errors import HpoError, StorageError, one_line
from hpo.paths import expand_home

WHERE = f"--storage or {env.STORAGE.name}"  # where a storage URL comes from, for every message
DIALECTS = {"sqlite", "postgresql", "mysql", "mariadb"}
# Plain dialect names get the drivers this package installs (psycopg 3, PyMySQL).
DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql",
                   "mariadb": "mysql+pymysql"}
# An option whose name says it holds a credential (password, sslpassword, passfile, a secret).
SECRET_OPTION = re.compile(r"pass|secret|token|key", re.IGNORECASE)
HIDDEN = "***"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# SQLite: the options SQLAlchemy's pysqlite dialect takes and checks; URI mode (uri=true and
# its mode=, cache=, immutable=...) would open another file than the one hpo checks and locks.
SQLITE_OPTIONS = ("timeout", "check_same_thread", "isolation_level", "detect_types",
                  "cached_statements")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# PostgreSQL options that must be whole seconds or counts (libpq checks them only when it
# connects, as a traceback).
PG_INTEGERS = ("connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
               "keepalives_count", "tcp_user_timeout", "port")


PG_CHOICES = {
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby",
                             "prefer-standby"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "load_balance_hosts": ("disable", "random"),
}


def mask(url: str) -> str:
    """The URL with every credential replaced by ***: the password in its user part and every
    option whose name holds one (password=, sslpassword=, a secret or token). Safe to print and
    log; a URL that does not parse is not shown at all."""
    try:
        u = make_url(url)
    except (ArgumentError, ValueError, TypeError):
        return "<unparseable storage URL>"
    if u.host and "@" in u.host:
        # An unencoded '@' in the password: SQLAlchemy splits at the first '@', so the rest of
        # the password would be shown as part of the host.
        u = u.set(host=u.host.rsplit("@", 1)[1], password="-")
    hidden = {k: HIDDEN for k, v in u.query.items()
              if SECRET_OPTION.search(k) or SECRET_OPTION.search(str(v))}
    if hidden:
        u = u.update_query_dict(hidden)
    return one_line(u.render_as_string(hide_password=True).replace("%2A%2A%2A", HIDDEN))


def parse(url: str) -> URL:
    """The URL as hpo will open it, or StorageError naming the problem and the fix."""
    if url != url.strip() or _CONTROL.search(url):
        raise StorageError(f"storage URL {mask(url.strip())!r} has white space at an end or "
                           "control characters in it (a newline kept from a file, as a secret "
                           f"made from a file keeps it); remove them ({WHERE})")
    try:
        u = make_url(url)
    except (ArgumentError, ValueError) as e:  # ValueError: a port that is not a number
        raise StorageError(f"storage URL {mask(url)!r} is not a database URL; use e.g. "
                           "sqlite:///storage/hpo.db or postgresql://user@host/db "
                           f"({WHERE})") from e
    if u.get_backend_name() not in DIALECTS:
        raise StorageError(f"storage URL {mask(url)}: unsupported database "
                           f"'{u.get_backend_name()}'; use sqlite, postgresql or mysql "
                           f"({WHERE})")
    if u.host and "@" in u.host:
        raise StorageError(f"storage URL {mask(url)}: its user or password holds an unencoded "
                           f"'@'; write it as %40 ({WHERE})")
    # Decoded, a %00 in a server's database name ends it early in libpq (the tester reached
    # database tester1 through tester1%00junk): no part of a URL may hold a control character.
    parts = {"user": u.username, "password": u.password, "host": u.host, "database": u.database,
             **{f"option {k}": v for k, v in u.query.items()}}
    for part, value in parts.items():
        if any(_CONTROL.search(v) for v in ([value] if isinstance(value, str) else value or ())):
            raise StorageError(f"storage URL {mask(url)}: its {part} holds control characters "
                               f"(perhaps percent-encoded, such as %00 or %0A); remove them "
                               f"({WHERE})")
    if u.get_backend_name() == "sqlite":
        if u.database in (None, "", ":memory:"):
            # An in-memory database dies with the process: no worker could ever join it.
            raise StorageError(f"storage URL {mask(url)} is an in-memory SQLite database; give "
                               f"a file, e.g. sqlite:///storage/hpo.db ({WHERE})")
        if u.database != u.database.strip() or _CONTROL.search(u.database):
            raise StorageError(f"storage URL {mask(url)}: its file name holds white space at an "
                               f"end or control characters (perhaps percent-encoded); rename "
                               f"it ({WHERE})")
        if u.database.startswith("~"):  # the same file for the database, logs and artifacts
            try:
                u = u.set(database=expand_home(u.database, f"storage URL {mask(url)}:"))
            except HpoError as e:
                raise StorageError(f"{e} ({WHERE})") from None
    u = u.set(drivername=DEFAULT_DRIVERS.get(u.drivername, u.drivername))
    check_options(u, url)
    return u


def check_options(u: URL, shown: str) -> None:
    """Refuses an option the driver does not take, or a value it would refuse when it connects,
    by building what the driver builds from the URL (nothing connects)."""
    def refuse(what: str) -> StorageError:
        return StorageError(f"storage URL {mask(shown)}: {what} ({WHERE})")

    backend = u.get_backend_name()
    if backend == "sqlite":
        unknown = sorted(set(u.query) - set(SQLITE_OPTIONS))
        if unknown:
            raise refuse(f"option {unknown[0]!r} is not one hpo opens SQLite with; use only "
                         f"{', '.join(SQLITE_OPTIONS)}, or none")
        _check_sqlite(u.query, refuse)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", SAWarning)  # an option the driver would ignore
            _, kw = u.get_dialect()().create_connect_args(u)
        if backend == "postgresql":
            _check_libpq(kw, refuse)
        elif backend in ("mysql", "mariadb"):
            _check_pymysql(kw)
    except StorageError:
        raise
    except NoSuchModuleError as e:
        raise refuse(f"no driver for this URL ({e}); use postgresql+psycopg:// or "
                     "mysql+pymysql://") from e
    except (ValueError, TypeError, KeyError, AttributeError, SAWarning, ImportError, OSError,
            ArgumentError, ArithmeticError) as e:
        raise refuse(f"an option the driver refuses ({one_line(str(e))[:200] or type(e).__name__})"
                     "; fix or drop it") from e


def _check_sqlite(query: Any, refuse: Any) -> None:
    """What sqlite3 takes without a word and fails on later: a timeout that is not a finite
    number of seconds, a cache size past C's int, an isolation level it does not have."""
    def one(k: str) -> str:
        v = query[k]
        return str(v[-1] if isinstance(v, tuple) else v)

    if "timeout" in query:
        try:
            t = float(one("timeout"))
        except ValueError:
            t = math.nan
        if not 0 <= t <= 86400:
            raise refuse(f"option timeout={one('timeout')!r} must be seconds from 0 to 86400")
    for k in ("cached_statements", "detect_types"):
        if k in query and not (one(k).isdigit() and int(one(k)) <= 2**31 - 1):
            raise refuse(f"option {k}={one(k)!r} must be a whole number from 0 to 2147483647")
    if "isolation_level" in query and one("isolation_level").upper() not in (
            "DEFERRED", "IMMEDIATE", "EXCLUSIVE", "AUTOCOMMIT", "READ UNCOMMITTED",
            "SERIALIZABLE"):
        raise refuse(f"option isolation_level={one('isolation_level')!r}: use DEFERRED, "
                     "IMMEDIATE, EXCLUSIVE or AUTOCOMMIT")


def _check_libpq(kw: MutableMapping[str, Any], refuse: Any) -> None:
    from psycopg import ProgrammingError
    from psycopg.conninfo import make_conninfo

    try:
        make_conninfo("", **kw)  # libpq's own parser: an unknown option is refused here
    except ProgrammingError as e:
        raise refuse(f"{one_line(str(e))}; see libpq's connection parameters") from e
    for k in PG_INTEGERS:
        if k in kw and not (str(kw[k]).strip().isdigit() and int(kw[k]) <= 2**31 - 1):
            raise refuse(f"option {k}={kw[k]!r} must be a whole number from 0 to 2147483647")
    for k, allowed in PG_CHOICES.items():
        if k in kw and str(kw[k]) not in allowed:
            raise refuse(f"option {k}={kw[k]!r}: use one of {', '.join(allowed)}")
    if "sslmode" in kw and kw["sslmode"] not in SSLMODES:
        raise refuse(f"option sslmode={kw['sslmode']!r}: use one of {', '.join(SSLMODES)}")


def _check_pymysql(kw: MutableMapping[str, Any]) -> None:
    import pymysql

    if "charset" in kw and pymysql.charset.charset_by_name(kw["charset"]) is None:
        raise ValueError(f"unknown charset {kw['charset']!r}; e.g. charset=utf8mb4")
    # A Connection built without connecting checks every keyword, the charset and timeouts.
    pymysql.connections.Connection(defer_connect=True, **kw)


def sqlite_path(u: URL) -> Path | None:
    return Path(u.database) if u.get_backend_name() == "sqlite" and u.database else None
