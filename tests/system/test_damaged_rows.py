"""A damaged row is named where it is: its study, its trial, its table and key, and a fix that
works (the printed statement is run here, and the command then succeeds). One damaged study
hides no other in `hpo studies`; a budget `hpo create` cannot read is replaced by it; the
dashboard names a damaged study when it starts and keeps a failing page to one line."""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import optuna
import pytest
from typer.testing import CliRunner

from hpo.cli import app
from hpo.store.attrs import BUDGET_ATTR, SPEC_ATTR
from hpo.store.engines import open_storage
from tests.system.test_stored_data import made  # noqa: F401 - the study these tests damage


@pytest.fixture
def two(made: Path, tmp_path: Path) -> Path:  # noqa: F811 - the fixture imported above
    """The made study beside a second, undamaged one ('other')."""
    d = tmp_path / "two"
    shutil.copytree(made, d)
    storage = open_storage(f"sqlite:///{d / 'hpo.db'}", heartbeat=False)
    optuna.create_study(study_name="other", storage=storage).set_user_attr("note", 1)
    storage.engine.dispose()
    return d


def cli(d: Path, *argv: str, optuna_path: bool = False) -> Any:
    """`?timeout=30` sends the read through Optuna's path instead of the SQLite reader."""
    url = f"sqlite:///{d / 'hpo.db'}" + ("?timeout=30" if optuna_path else "")
    return CliRunner().invoke(app, [*argv, "--storage", url])


def sql(d: Path, statement: str, *args: Any) -> None:
    with contextlib.closing(sqlite3.connect(d / "hpo.db")) as con:
        con.execute(statement, args)
        con.commit()


def one_error(r: Any) -> str:
    assert r.exception is None or isinstance(r.exception, SystemExit), (
        f"uncaught {type(r.exception).__name__}: {r.exception}")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def run_the_fix(d: Path, line: str) -> None:
    """Runs the `sqlite3 FILE "SQL"` the message printed, as the user would paste it."""
    m = re.search(r'`sqlite3 (\S+) "([^"]+)"`', line)
    assert m is not None, f"no statement to run in: {line}"
    assert Path(m.group(1)) == d / "hpo.db"
    with contextlib.closing(sqlite3.connect(m.group(1))) as con:
        con.executescript(m.group(2))


def test_an_unknown_trial_state_is_named_with_a_fix_that_works(two: Path) -> None:
    sql(two, "UPDATE trials SET state = 'BOGUS' WHERE number = 0 AND study_id = 1")
    for optuna_path in (False, True):
        r = cli(two, "studies", "--json", optuna_path=optuna_path)
        assert r.exit_code == 0, r.output
        assert {s["name"] for s in __import__("json").loads(r.stdout)} == {"made", "other"}
        assert "study 'made', trial 0: its stored state (trials.state) is 'BOGUS'" in r.stderr
    for argv in (["worker", "made"], ["trials", "made"]):  # `best` reads only COMPLETE rows
        line = one_error(cli(two, *argv, optuna_path=True))
        assert "trial 0" in line and "'BOGUS'" in line, (argv, line)
    run_the_fix(two, line)
    r = cli(two, "trials", "made", "--state", "fail", "--format", "json")
    assert r.exit_code == 0 and '"number": 0' in r.stdout, r.output


def test_a_damaged_trial_attribute_is_named_and_its_removal_lets_commands_read(
        two: Path) -> None:
    sql(two, "INSERT INTO trial_user_attributes (trial_id, key, value_json) SELECT trial_id, "
             "'seeds', '{bad' FROM trials WHERE number = 1 AND study_id = 1")
    for argv in (["trials", "made"], ["best", "made", "--json"],
                 ["export", "made", "--trial", "1", "--out", str(two / "m.pt")]):
        line = one_error(cli(two, *argv, optuna_path=True))
        assert ("study 'made', trial 1: its stored trial_user_attributes 'seeds' = '{bad' is "
                "not JSON") in line, (argv, line)
    run_the_fix(two, line)
    r = cli(two, "trials", "made", "--format", "json", optuna_path=True)
    assert r.exit_code == 0, r.output


def test_one_damaged_study_hides_no_other_in_the_list(two: Path) -> None:
    sql(two, "UPDATE study_user_attributes SET value_json = '{not json' WHERE key = ?",
        SPEC_ATTR)
    for optuna_path in (False, True):
        r = cli(two, "studies", optuna_path=optuna_path)
        assert r.exit_code == 0, r.output
        assert "other" in r.stdout
        warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ")]
        assert len(warnings) == 1 and "study 'made'" in warnings[0], r.stderr
        assert "hpo:spec" in warnings[0] and "restore the database from a copy" in warnings[0]


@pytest.mark.parametrize("damage", ['"many"', "{not json", "-3"])
def test_hpo_create_replaces_a_budget_it_cannot_read(two: Path, damage: str) -> None:
    sql(two, "UPDATE study_user_attributes SET value_json = ? WHERE key = ?", damage,
        BUDGET_ATTR)
    line = one_error(cli(two, "worker", "made", optuna_path=True))
    assert BUDGET_ATTR in line and "hpo create" in line, line
    r = CliRunner().invoke(app, ["create", str(two / "made.toml"), "--trials", "6", "--storage",
                                 f"sqlite:///{two / 'hpo.db'}"])
    assert r.exit_code == 0, r.output
    assert "could not be read; replaced it with 6 trials (from --trials)" in r.output
    r = cli(two, "studies", "--json")
    budgets = {s["name"]: s["budget"] for s in __import__("json").loads(r.stdout)}
    assert budgets["made"] == 6, r.output


def test_the_dashboard_names_a_damaged_study_and_keeps_a_failing_page_to_one_line(
        two: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    from wsgiref.util import setup_testing_defaults

    from hpo.results.dashboard import make_app

    sql(two, "UPDATE trials SET state = 'BOGUS' WHERE number = 0 AND study_id = 1")
    storage = open_storage(f"sqlite:///{two / 'hpo.db'}", heartbeat=False)
    try:
        wsgi = make_app(storage, None)
        started = capsys.readouterr().err
        assert "warning: study 'made', trial 0: its stored state" in started
        assert "its dashboard pages will fail until then" in started
        assert "study 'other'" not in started
        environ: dict[str, Any] = {"PATH_INFO": "/api/studies/1", "REQUEST_METHOD": "GET"}
        setup_testing_defaults(environ)
        got: list[Any] = []
        b"".join(wsgi(environ, lambda status, headers, *a: got.append(status)))
        assert got and got[0].startswith("500"), got
        # optuna-dashboard logs the failure (to stderr in `hpo dashboard`), bottle writes to
        # wsgi.errors: one line in all, the error's own.
        said = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        said += [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and said[0].startswith("warning: "), said
        assert "\n" not in said[0] and "'BOGUS'" in said[0] and not caplog.records[0].exc_info
    finally:
        storage.engine.dispose()


@pytest.mark.parametrize("change", ["DELETE FROM study_directions WHERE study_id = 1",
                                    "UPDATE study_directions SET direction = 'MINIMIZE' "
                                    "WHERE study_id = 1"])
def test_directions_that_are_not_the_definitions_are_named_and_set_back(
        two: Path, change: str) -> None:
    """A deleted or flipped direction would rank the worst trial best (the tester's export of
    the worst model): every reader refuses it in one line, `hpo studies` names it with the
    statement that sets it back, and after that statement `best` is right again."""
    right = cli(two, "best", "made", "--json").stdout
    sql(two, change)
    for optuna_path in (False, True):
        for argv in (["best", "made"], ["export", "made", "--out", str(two / "m.pt")],
                     ["trials", "made"]):
            line = one_error(cli(two, *argv, optuna_path=optuna_path))
            assert "study 'made': its stored directions" in line, (argv, line)
            assert "maximize val_removed" in line, line
        r = cli(two, "studies", optuna_path=optuna_path)
        assert r.exit_code == 0 and "other" in r.stdout, r.output
    assert "study_directions direction of objective 0" in r.stderr, r.stderr
    run_the_fix(two, r.stderr)
    assert cli(two, "best", "made", "--json").stdout == right
