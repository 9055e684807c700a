"""Storage URLs: which databases hpo opens, how a URL reads, and how it prints.

A URL comes from --storage, else HPO_STORAGE, else a SQLite file under storage/ of the current
directory (hpo.env.resolve_url). `parse` refuses what cannot work before anything connects,
naming the flag and the variable; `mask` is the one way a URL is shown, with every password
hidden.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from hpo import env
from hpo.errors import StorageError

WHERE = f"--storage or {env.STORAGE.name}"  # where a storage URL comes from, for every message
DIALECTS = {"sqlite", "postgresql", "mysql", "mariadb"}
# Plain dialect names get the drivers this package installs (psycopg 3, PyMySQL).
DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql",
                   "mariadb": "mysql+pymysql"}


def mask(url: str) -> str:
    """The URL with any password replaced by ***: safe to print and log."""
    try:
        u = make_url(url)
    except (ArgumentError, ValueError):
        return "<unparseable storage URL>"
    if u.host and "@" in u.host:
        # An unencoded '@' in the password: SQLAlchemy splits at the first '@', so the rest of
        # the password would be shown as part of the host.
        u = u.set(host=u.host.rsplit("@", 1)[1], password="-")
    return u.render_as_string(hide_password=True)


def parse(url: str) -> URL:
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
    if u.get_backend_name() == "sqlite" and u.database in (None, "", ":memory:"):
        # An in-memory database dies with the process: no worker could ever join it.
        raise StorageError(f"storage URL {mask(url)} is an in-memory SQLite database; give a "
                           f"file, e.g. sqlite:///storage/hpo.db ({WHERE})")
    return u.set(drivername=DEFAULT_DRIVERS.get(u.drivername, u.drivername))


def sqlite_path(u: URL) -> Path | None:
    return Path(u.database) if u.get_backend_name() == "sqlite" and u.database else None
