"""hpo.store.engines as a unit: URL rules, and a brand-new SQLite database opened by several
processes
at the same instant (a search creating it while workers, queries or the dashboard open it)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hpo.errors import StorageError
from hpo.store.engines import close_storages, open_storage
from hpo.store.urls import mask, parse
from tests.support.fullfs import FullFs, full_fs_fixture  # noqa: F401 (the full_fs fixture)

RACER = """
import sys, time
from hpo.errors import HpoError
from hpo.store.engines import open_storage
while time.time() < float(sys.argv[2]):
    time.sleep(0.001)
try:
    open_storage(sys.argv[1], create=True, heartbeat=False)
except HpoError as e:
    print(e)
    sys.exit(1)
"""


def test_processes_racing_to_create_one_database_all_open_it(tmp_path: Path) -> None:
    for round_ in range(2):
        url = f"sqlite:///{tmp_path / f'race{round_}.db'}"
        start = time.time() + 3  # after every racer has imported hpo
        racers = [subprocess.Popen([sys.executable, "-c", RACER, url, str(start)],
                                   stdout=subprocess.PIPE, text=True) for _ in range(6)]
        failed = [out for p in racers if (out := p.communicate(timeout=120)[0]) and
                  p.returncode]
        assert not failed, failed
        open_storage(url, heartbeat=False).get_all_studies()  # complete: Optuna opens it


def test_a_locked_new_file_is_waited_for_then_reported(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting WAL on a new file that a racer holds fails at once with "database is locked";
    it is retried (CI once saw one of six racers give up on it), and reported only if it
    lasts."""
    import sqlite3

    import hpo.store.engines

    real, calls = sqlite3.connect, []

    def locked_twice(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        calls.append(1)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(hpo.store.engines.sqlite3, "connect", locked_twice)
    open_storage(f"sqlite:///{tmp_path / 'a.db'}", create=True, heartbeat=False)
    assert len(calls) >= 3

    def always_locked(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(hpo.store.engines.sqlite3, "connect", always_locked)
    with pytest.raises(StorageError, match=r"cannot create .*b\.db \(database is locked\)"):
        open_storage(f"sqlite:///{tmp_path / 'b.db'}", create=True, heartbeat=False)


@pytest.mark.parametrize(("url", "needle"), [
    ("not a url", "is not a database URL"),
    ("oracle://u@h/db", "unsupported database 'oracle'"),
    ("sqlite://", "in-memory"),
    ("sqlite:///:memory:", "in-memory"),
])
def test_urls_refused_before_any_connection(url: str, needle: str) -> None:
    with pytest.raises(StorageError, match=needle):
        parse(url)


def test_passwords_never_printed() -> None:
    assert mask("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert "secret" not in mask("mysql://root:secret@127.0.0.1:3306/test")
    assert mask("::nonsense::") == "<unparseable storage URL>"
    assert parse("postgresql://u@h/db").drivername == "postgresql+psycopg"


def test_a_full_disk_is_named_as_such_when_creating_and_when_reading(full_fs: FullFs) -> None:
    """SQLite says "disk I/O error" (it cannot make its -shm) or "database or disk is full";
    hpo names the full disk and the fix instead of blaming the file."""
    from typer.testing import CliRunner

    from hpo.cli import app

    url = f"sqlite:///{full_fs.root / 'hpo.db'}"
    smoke = str(Path(__file__).resolve().parents[2] / "studies" / "smoke.toml")
    full_fs.fill()
    r = CliRunner().invoke(app, ["create", smoke, "--storage", url])
    assert r.exit_code == 2 and full_fs.files() == [], (r.output, full_fs.files())
    assert f"the disk holding {full_fs.root / 'hpo.db'} is full" in r.stderr, r.stderr
    full_fs.free()
    assert CliRunner().invoke(app, ["create", smoke, "--storage", url]).exit_code == 0
    close_storages()  # as `hpo` does when a command ends: the -wal and -shm files go
    full_fs.fill()
    for options in ("", "?timeout=30"):  # the SQLite reader, and Optuna's path
        r = CliRunner().invoke(app, ["studies", "--storage", url + options])
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.exit_code == 2 and len(lines) == 1, r.output
        assert "is full" in lines[0] and "free space on it" in lines[0], lines
