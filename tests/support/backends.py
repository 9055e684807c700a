"""The storage backends a test runs over: SQLite always; PostgreSQL and MySQL/MariaDB when their URL
is set (.ci/run sets both), skipped with the reason otherwise. Server databases are shared between
tests, so every test uses its own study names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SERVER_ENV = {"postgresql": "HPO_TEST_POSTGRES_URL", "mysql": "HPO_TEST_MYSQL_URL"}


def backend_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'hpo.db'}"
    url = os.environ.get(SERVER_ENV[backend])
    if not url:
        pytest.skip(f"{backend} tests need ${SERVER_ENV[backend]} (a database URL); "
                    ".ci/run sets it")
    return url
