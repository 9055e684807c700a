"""A full disk, named: SQLite says "disk I/O error" or "database or disk is full" when a write or
the -shm file WAL mode needs finds no room; with the disk's free space in hand, hpo says which
disk is full and what to do, where it would otherwise blame the file."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy.engine import URL

from hpo.resources import human
from hpo.store.urls import mask, sqlite_path

# What SQLite says when a write, or the -shm file WAL mode needs, finds no room.
NO_ROOM = ("disk i/o error", "database or disk is full", "disk is full", "no space left")
LOW = 64 * 1024  # bytes: less than this free and SQLite cannot grow its file or make its -shm


def full_disk(u: URL, e: BaseException | str) -> str | None:
    """One line naming a full disk under a SQLite file, when `e` is SQLite's I/O or full error
    and the file's directory has (next to) no room left; else None."""
    path = sqlite_path(u)
    return None if path is None else full_at(path, str(u), e)


def full_at(path: Path, url: str, e: BaseException | str) -> str | None:
    text = str(e).lower() + " " + str(getattr(e, "__cause__", None) or "").lower()
    if not any(word in text for word in NO_ROOM):
        return None
    try:
        free = shutil.disk_usage(path.resolve().parent).free
    except OSError:
        return None
    if free >= LOW:
        return None
    return (f"storage {mask(url)}: the disk holding {path} is full ({human(free)} free); "
            "free space on it (or move the database to a disk with room) and run the command "
            "again")
