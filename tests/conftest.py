"""Shared pytest fixtures for the whole suite.

Keep this file small: only fixtures that several test files use belong here; anything else
lives in its own test module. Data here is tiny so that training-based tests run in
milliseconds; tests that need to modify arrays must copy them first (fixtures are shared).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from hpo.task.curves import Split, make_split
from tests.support.backends import backend_url
from tests.support.studies import TINY_DATA, TINY_STUDY


@pytest.fixture(autouse=True, scope="session")
def _artifacts_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Trials upload pictures and models; keep the suite's uploads out of the repo's storage/.
    One directory for the session, so module-scoped searches and later tests agree on it
    (subprocesses inherit the variable); a test may still point it elsewhere."""
    old = os.environ.get("HPO_ARTIFACTS")
    os.environ["HPO_ARTIFACTS"] = str(tmp_path_factory.mktemp("artifacts"))
    yield
    if old is None:
        os.environ.pop("HPO_ARTIFACTS", None)
    else:
        os.environ["HPO_ARTIFACTS"] = old


@pytest.fixture(scope="session")
def tiny_splits() -> tuple[Split, Split]:
    """(train, val) splits of TINY_DATA. Shared: copy before modifying the arrays."""
    return make_split(TINY_DATA, "train"), make_split(TINY_DATA, "val")


# --- Storage backends: one suite over every backend -------------------------------------------
# SQLite always runs (a fresh file per test); PostgreSQL and MySQL/MariaDB run when their URL is
# set (.ci/run sets both) and are skipped with the reason otherwise. Server databases are shared
# between tests, so every test uses its own study names (see `study_file`).

@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A storage URL for each backend in turn."""
    return backend_url(request.param, tmp_path)


@pytest.fixture
def study_file(tmp_path: Path) -> Callable[..., Path]:
    """Writes a study file with a unique name; keyword arguments override TINY_STUDY's keys
    (None removes one)."""

    def write(**overrides: Any) -> Path:
        body = {"name": f"t{uuid.uuid4().hex[:10]}", **TINY_STUDY, **overrides}
        body = {k: v for k, v in body.items() if v is not None}  # None drops a key
        path = tmp_path / f"{body['name']}.toml"
        path.write_text(tomli_w.dumps(body))
        return path

    return write
