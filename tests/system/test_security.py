"""Security: the dashboard listens on loopback unless told otherwise; a storage password never
shows in any output, log or process command line; nothing in hpo/ builds SQL by hand.

The password tests use a PostgreSQL role `hpo_secret` with a password and a database of its own,
made by the `secret_url` fixture. (The test server trusts local logins, so the password is not
checked there; what is tested is that it never leaks.)
"""

from __future__ import annotations

import ast
import contextlib
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy
from typer.testing import CliRunner

from hpo.cli import app
from hpo.errors import StorageError
from hpo.store.engines import open_storage
from hpo.store.studies import create_study
from hpo.store.urls import mask, parse
from hpo.study.parse import load_study_file
from tests.support.searchprocs import cmdline, hpo_env, running_search, wait_until, worker_logs

ROOT = Path(__file__).resolve().parents[2]
ROLE = "hpo_secret"
SECRET = "Sup3r-s3cret-pa55word"


@pytest.fixture(scope="module")
def secret_url() -> str:
    """A PostgreSQL URL whose user has a password, on a database that user owns."""
    base = os.environ.get("HPO_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("needs $HPO_TEST_POSTGRES_URL (a database URL); .ci/run sets it")
    admin = sqlalchemy.create_engine(parse(base), isolation_level="AUTOCOMMIT")
    roles = sqlalchemy.table("pg_roles", sqlalchemy.column("rolname"))
    dbs = sqlalchemy.table("pg_database", sqlalchemy.column("datname"))
    try:
        with admin.connect() as con:
            # Test set-up of a server role: DDL takes no bound parameters, and ROLE / SECRET
            # are constants of this file.
            verb = "ALTER" if con.execute(sqlalchemy.select(roles.c.rolname).where(
                roles.c.rolname == ROLE)).first() else "CREATE"
            con.execute(sqlalchemy.text(f"{verb} ROLE {ROLE} LOGIN PASSWORD '{SECRET}'"))
            if not con.execute(sqlalchemy.select(dbs.c.datname).where(
                    dbs.c.datname == ROLE)).first():
                with contextlib.suppress(sqlalchemy.exc.ProgrammingError):  # a concurrent run
                    con.execute(sqlalchemy.text(f"CREATE DATABASE {ROLE} OWNER {ROLE}"))
    except sqlalchemy.exc.DBAPIError as e:
        pytest.skip(f"cannot create role {ROLE}: {str(e).splitlines()[0]}")
    finally:
        admin.dispose()
    return parse(base).set(username=ROLE, password=SECRET, database=ROLE).render_as_string(
        hide_password=False)


def invoke(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args), env={"HPO_STORAGE": None})
    return r.exit_code, r.output


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_password_never_shows_in_output_logs_or_command_lines(
        secret_url: str, study_file: Callable[..., Path], tmp_path: Path) -> None:
    path = study_file(trials=4)
    name = load_study_file(path).name
    env = hpo_env(HPO_STORAGE=secret_url)  # the documented way: not on a command line
    with running_search(path, tmp_path, "--workers", "2", env=env) as search:
        workers = wait_until(
            lambda: (search.workers or None) if len(search.note_workers()) == 2 else None, 60,
            "two worker processes")
        lines = {pid: cmdline(pid) for pid in [search.proc.pid, *workers]}
        code = search.wait(240)
    # Workers are `python -m hpo.warm` (started before the study existed, hpo.warm), or
    # `python -m hpo worker STUDY` where one had to be started afresh.
    assert all(" worker " in lines[pid] or "-m hpo.warm" in lines[pid] for pid in workers), lines
    for pid, line in lines.items():  # what `ps` shows to every user of the machine
        assert SECRET not in line, (pid, line)
    assert code == 0, search.stderr[-2000:]
    shown = search.stdout + search.stderr
    assert SECRET not in shown
    assert f"{ROLE}:***@" in shown  # the URL is shown, masked
    logs = worker_logs(secret_url, tmp_path)
    assert len(logs) == 2
    for log_name, text in logs.items():
        assert SECRET not in text, log_name

    # Every command that reads the storage, on success and on failure.
    for args in (["studies"], ["studies", "--json"], ["trials", name, "--format", "json"],
                 ["trials", name, "--format", "csv"], ["best", name, "--json"], ["best", name],
                 ["worker", name], ["fail-stale", name], ["retry-failed", name],
                 ["create", str(path)], ["best", "no-such-study"]):
        code, out = invoke(*args, "--storage", secret_url)
        assert SECRET not in out, args
        assert code == (2 if "no-such-study" in args else 0), (args, out)


@pytest.mark.parametrize("form", ["userinfo", "password option", "both"])
def test_no_command_prints_the_password_in_any_url_form(
        form: str, secret_url: str, study_file: Callable[..., Path], tmp_path: Path) -> None:
    """libpq takes the password in the URL's userinfo or as a `password=` option: whichever
    form, no command prints it, on success or on failure, and nothing hpo writes holds it."""
    u = parse(secret_url)
    bare = u.set(password=None).render_as_string(hide_password=False)
    url = {"userinfo": secret_url, "password option": f"{bare}?password={SECRET}",
           "both": f"{secret_url}?password={SECRET}&application_name=hpo"}[form]
    path = study_file(trials=1)
    name = load_study_file(path).name
    outs = []
    for args in (["create", str(path)], ["studies"], ["studies", "--json"], ["best", name],
                 ["best", name, "--json"], ["trials", name, "--format", "csv"],
                 ["fail-stale", name], ["retry-failed", name], ["best", "no-such-study"],
                 ["trials", name, "--state", "bogus"]):
        code, out = invoke(*args, "--storage", url)
        outs.append(out)
        assert SECRET not in out, (args, out)
        assert code in (0, 2), (args, out)
    assert f"study '{name}' ready" in outs[0], outs[0]  # it connected with that password
    assert any(f"{ROLE}:***@" in out or "password=***" in out for out in outs)
    assert not [f for f in tmp_path.rglob("*") if f.is_file() and SECRET.encode() in
                f.read_bytes()]


def test_mask_hides_every_password_form() -> None:
    for url in ("postgresql://u:p%40ss-w0rd@db:5432/hpo", "mysql+pymysql://u:p%40ss-w0rd@db/hpo",
                "postgresql+psycopg://u:p%40ss-w0rd@db/hpo?sslmode=require"):
        shown = mask(url)
        assert "p%40ss-w0rd" not in shown and "p@ss-w0rd" not in shown
        assert "u:***@db" in shown
    assert "s3cret" not in mask("postgresql://u:s3cret@db:notaport/hpo")  # unparseable: hidden
    # An '@' left unencoded: SQLAlchemy splits at the first one and took "ss-w0rd@db" for a host.
    assert mask("postgresql://u:p@ss-w0rd@db:5432/hpo") == "postgresql://u:***@db:5432/hpo"
    assert mask("mysql://u:a@b@c@db/hpo") == "mysql://u:***@db/hpo"


def test_an_unencoded_at_sign_in_the_password_is_refused_in_one_line() -> None:
    with pytest.raises(StorageError, match="unencoded '@'; write it as %40") as e:
        parse("postgresql://u:p@ss-w0rd@db/hpo")
    assert "ss-w0rd" not in str(e.value) and "u:***@db/hpo" in str(e.value)
    assert parse("postgresql://u:p%40ss-w0rd@db/hpo").password == "p@ss-w0rd"


def listening_addresses(port: int) -> list[str]:
    """Addresses with a socket listening on `port` (any process), from /proc/net/tcp{,6}."""
    found = []
    for name, width in (("tcp", 8), ("tcp6", 32)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                host_hex, port_hex = local.split(":")
                if state != "0A" or int(port_hex, 16) != port or len(host_hex) != width:
                    continue
                raw = bytes.fromhex(host_hex)  # 32-bit words in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                family = socket.AF_INET if width == 8 else socket.AF_INET6
                found.append(socket.inet_ntop(family, raw))
    return found


@contextlib.contextmanager
def dashboard(env: dict[str, str], cwd: Path) -> Iterator[tuple[int, list[str]]]:
    proc = subprocess.Popen([sys.executable, "-m", "hpo", "dashboard", "--port", "0"], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        seen: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if m := re.search(r"open http://[^\s]+:(\d+)/", line):
                yield int(m.group(1)), seen
                break
        else:
            raise AssertionError(f"the dashboard did not start: {''.join(seen)[-2000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_dashboard_listens_on_loopback_only_by_default(
        study_file: Callable[..., Path], tmp_path: Path) -> None:
    if "dashboard" not in invoke("--help")[1]:
        pytest.skip("no `hpo dashboard` command yet")
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    create_study(load_study_file(study_file()), open_storage(url, create=True))
    with dashboard(hpo_env(HPO_STORAGE=url), tmp_path) as (port, _):
        addresses = listening_addresses(port)
    assert addresses, f"nothing listens on port {port}"
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_dashboard_masks_the_storage_password(secret_url: str, tmp_path: Path) -> None:
    if "dashboard" not in invoke("--help")[1]:
        pytest.skip("no `hpo dashboard` command yet")
    open_storage(secret_url, create=True, heartbeat=False).engine.dispose()
    with dashboard(hpo_env(HPO_STORAGE=secret_url), tmp_path) as (_, seen):
        pass
    text = "".join(seen)
    assert SECRET not in text
    assert f"{ROLE}:***@" in text


# --- nothing builds SQL by hand --------------------------------------------------------------

# Statement shapes, not single words: "Create the study" in a docstring is not SQL.
SQL = re.compile(r"^\s*(SELECT\b.*\bFROM\b|INSERT\s+INTO\b|UPDATE\s+\S+\s+SET\b|DELETE\s+FROM\b|"
                 r"(CREATE|DROP|ALTER)\s+(TABLE|INDEX|DATABASE|ROLE|USER|VIEW)\b|TRUNCATE\b|"
                 r"GRANT\b|PRAGMA\b)", re.IGNORECASE | re.DOTALL)
# Constant pragmas on a local SQLite file: no data ever enters them.
ALLOWED = {"PRAGMA journal_mode=WAL", "PRAGMA journal_mode"}
RAW_SQL_CALLS = {"text", "exec_driver_sql", "executescript", "literal_column"}


def hand_made_sql(source: str) -> list[str]:
    """Literal SQL, f-strings that start like SQL, and raw-SQL calls in Python source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if SQL.match(node.value) and node.value not in ALLOWED:
                found.append(f"line {node.lineno}: {node.value[:60]!r}")
        elif isinstance(node, ast.JoinedStr):
            head = "".join(v.value for v in node.values
                           if isinstance(v, ast.Constant) and isinstance(v.value, str))
            if SQL.match(head):
                found.append(f"line {node.lineno}: f-string {head[:60]!r}")
        elif isinstance(node, ast.Call):
            fn = node.func
            called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if called in RAW_SQL_CALLS:
                found.append(f"line {node.lineno}: {called}(...)")
    return found


def test_the_detector_finds_hand_made_sql() -> None:
    sample = '''
import sqlalchemy
from sqlalchemy import text
def q(con, name, tid):
    con.execute(text("SELECT * FROM trials"))
    con.execute(f"DELETE FROM trials WHERE trial_id = {tid}")
    con.exec_driver_sql("UPDATE studies SET study_name = '%s'" % name)
    con.execute(sqlalchemy.text("insert into trials values (1)"))
    con.execute("PRAGMA journal_mode=WAL")
    """Create the study: select the best trials from the storage."""
'''
    flagged = {int(f.split(":")[0].split()[1]) for f in hand_made_sql(sample)}
    assert flagged == {5, 6, 7, 8}  # not the constant pragma (9), not the docstring (10)


# hpo.results.sqlite_reader reads SQLite without SQLAlchemy (the light commands' start-up), so
# its SQL is written out; but only as constants with ? parameters, so no value ever enters SQL text.
CONSTANT_SQL = {"hpo/results/sqlite_reader.py"}


def executed_non_constants(source: str) -> list[str]:
    """Every `.execute(...)` whose statement is not a string constant or an entry of a
    module-level dict of string constants; and any f-string or raw-SQL call."""
    tree = ast.parse(source)
    tables = {t.id for node in tree.body if isinstance(node, ast.Assign)
              and isinstance(node.value, ast.Dict)
              and all(isinstance(v, ast.Constant) and isinstance(v.value, str)
                      for v in node.value.values)
              for t in node.targets if isinstance(t, ast.Name)}
    found = [f for f in hand_made_sql(source) if "f-string" in f or "(...)" in f]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "execute" and node.args):
            sql = node.args[0]
            constant = isinstance(sql, ast.Constant) and isinstance(sql.value, str)
            from_table = (isinstance(sql, ast.Subscript) and isinstance(sql.value, ast.Name)
                          and sql.value.id in tables)
            if not (constant or from_table):
                found.append(f"line {node.lineno}: execute({ast.unparse(sql)[:60]})")
    return found


def test_nothing_in_hpo_builds_sql_by_hand() -> None:
    files = sorted((ROOT / "hpo").rglob("*.py"))
    assert len(files) > 10
    offenders = {str(f.relative_to(ROOT)): found for f in files
                 if str(f.relative_to(ROOT)) not in CONSTANT_SQL
                 and (found := hand_made_sql(f.read_text()))}
    assert offenders == {}, offenders
    for name in CONSTANT_SQL:
        assert executed_non_constants((ROOT / name).read_text()) == [], name


def test_the_constant_sql_check_finds_built_statements() -> None:
    sample = '''
TOP = {"A": "SELECT 1 FROM t WHERE x = ?"}
def q(con, name, order):
    con.execute("SELECT * FROM trials WHERE study_id = ?", (1,))
    con.execute(TOP[order], (1,))
    con.execute("SELECT * FROM trials ORDER BY " + order)
    con.execute(f"SELECT * FROM trials WHERE name = '{name}'")
    con.execute("SELECT %s FROM trials" % name)
    sql = "SELECT 1"
    con.execute(sql)
'''
    flagged = {int(f.split(":")[0].split()[1]) for f in executed_non_constants(sample)}
    assert flagged == {6, 7, 8, 10}
