"""What a command may not change: a storage directory before and after, compared."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


def sqlite_snapshot(d: Path) -> dict[str, Any]:
    """Bytes of every file under d (a new file counts as a change) and the logical dump of
    d/hpo.db, WAL included. Readers may leave empty -wal / -shm side files."""
    snap: dict[str, Any] = {"bytes in WAL files": 0}
    for f in sorted(d.rglob("*")):
        if f.is_file() and not f.name.endswith(("-shm", "-wal")):
            snap[str(f.relative_to(d))] = f.read_bytes()
        elif f.name.endswith("-wal"):
            snap["bytes in WAL files"] += f.stat().st_size
    if (d / "hpo.db").is_file():
        con = sqlite3.connect(d / "hpo.db")
        try:
            snap["dump"] = "\n".join(con.iterdump())
        finally:
            con.close()
    return snap
