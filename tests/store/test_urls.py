"""hpo.store.urls: one parser and one mask for every storage URL. Generated URLs carry
passwords in every form a driver takes; none survives `mask`, and no command prints one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpo.errors import StorageError
from hpo.store.urls import WHERE, mask, parse, sqlite_path
from tests.support.backends import SERVER_ENV

ROOT = Path(__file__).resolve().parents[2]
# A secret that no other part of a URL or message contains by chance.
secrets = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!$*()+",
                  min_size=8, max_size=24).map(lambda s: f"Zq{s}Xk")
option_names = st.sampled_from(["password", "sslpassword", "PASSWORD", "db_pass", "passfile",
                                "client_secret", "Secret", "api_token"])
bases = st.sampled_from(["postgresql://u@db.example/hpo", "postgresql+psycopg://u@h:5432/d",
                         "mysql://root@127.0.0.1/test", "mysql+pymysql://a@h/d",
                         "sqlite:////tmp/hpo.db"])


@settings(max_examples=300, deadline=None)
@given(base=bases, secret=secrets, name=option_names, in_user=st.booleans(),
       other=st.sampled_from(["", "&application_name=x", "&connect_timeout=10", "&charset=utf8"]))
def test_mask_hides_every_credential_in_every_form(base: str, secret: str, name: str,
                                                   in_user: bool, other: str) -> None:
    url = f"{base}?{name}={quote(secret)}{other}"
    if in_user and "@" in base:
        scheme, rest = base.split("://", 1)
        user, host = rest.split("@", 1)
        url = f"{scheme}://{user}:{quote(secret, safe='')}@{host}?x_secret={quote(secret)}{other}"
    shown = mask(url)
    assert secret not in shown and quote(secret) not in shown, shown
    assert "***" in shown
    try:
        parse(url)
    except StorageError as e:  # an option this driver does not take: refused, and still masked
        assert secret not in str(e) and quote(secret) not in str(e), str(e)


@pytest.mark.parametrize("url,words", [
    ("sqlite:////tmp/x.db\n", ["white space", "newline"]),
    (" sqlite:////tmp/x.db", ["white space"]),
    ("sqlite:////tmp/x\x07.db", ["control characters"]),
    ("sqlite:////tmp/x.db?timeout=abc", ["timeout=", "abc", "seconds from 0"]),
    ("sqlite:////tmp/x.db?timeout=-1", ["seconds from 0"]),
    ("sqlite:////tmp/x.db?isolation_level=BOGUS", ["isolation_level"]),
    ("sqlite:////tmp/x.db?cached_statements=99999999999999999999", ["cached_statements"]),
    ("sqlite:////tmp/x%0A.db", ["control characters"]),
    ("postgresql://postgres@127.0.0.1:5432/tester1%00junk", ["database", "control characters"]),
    ("mysql://root@127.0.0.1/test%0A", ["database", "control characters"]),
    ("postgresql://po%00stgres@127.0.0.1/test", ["user", "control characters"]),
    ("postgresql://u@h/db?application_name=a%01b", ["application_name", "control characters"]),
    ("postgresql://u@h/db?target_session_attrs=bogus", ["target_session_attrs"]),
    ("sqlite:////tmp/x.db?check_same_thread=maybe", ["maybe"]),
    ("sqlite:////tmp/x.db?mode=ro", ["'mode'", "timeout"]),
    ("sqlite:////tmp/x.db?uri=true&mode=ro", ["'mode'"]),
    ("mysql://root@127.0.0.1/test?charset=bogus", ["unknown charset 'bogus'"]),
    ("mysql://root@127.0.0.1/test?bogus=1", ["'bogus'"]),
    ("mysql://root@127.0.0.1/test?read_timeout=abc", ["abc"]),
    ("postgresql://u@h/db?bogus=1", ["invalid connection option"]),
    ("postgresql://u@h/db?connect_timeout=abc", ["connect_timeout", "whole number"]),
    ("postgresql://u@h/db?sslmode=weird", ["sslmode", "verify-full"]),
    ("postgresql+nodriver://a@b/c", ["no driver"]),
])
def test_what_a_driver_would_refuse_later_is_refused_now_in_one_line(url: str,
                                                                       words: list[str]) -> None:
    with pytest.raises(StorageError) as info:
        parse(url)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and WHERE in message, message
    for w in words:
        assert w in message, message


def test_options_a_driver_takes_pass_and_a_home_path_is_expanded() -> None:
    for url in ("sqlite:////tmp/x.db?timeout=30", "mysql://root@h/test?charset=utf8mb4",
                "postgresql://u@h/db?sslmode=require&application_name=hpo&connect_timeout=5"):
        parse(url)
    home = sqlite_path(parse("sqlite:///~/studies/x.db"))
    assert home == Path.home() / "studies" / "x.db"


def test_a_sqlite_url_with_options_is_never_a_new_file_named_after_them(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HPO_STORAGE"}
    url = f"sqlite:///{tmp_path / 'hpo.db'}?uri=true&mode=ro"
    p = subprocess.run([sys.executable, "-m", "hpo", "create", str(ROOT / "studies" / "smoke.toml"),
                        "--storage", url], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2 and "'mode'" in p.stderr, p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == []  # nothing created


def test_no_command_prints_a_password_given_as_an_option(tmp_path: Path) -> None:
    """Against the real PostgreSQL server (trust authentication takes any password): create,
    search, studies, best and the worker logs never show it."""
    base = os.environ.get(SERVER_ENV["postgresql"])
    if not base:
        pytest.skip(f"needs ${SERVER_ENV['postgresql']}; .ci/run sets it")
    secret = "Zq7hunter2SECRETXk"
    url = f"{base}?password={secret}&sslpassword={secret}"
    study = tmp_path / "pw.toml"
    name = f"pw{os.getpid()}"
    study.write_text((ROOT / "studies" / "smoke.toml").read_text().replace('name = "smoke"',
                                                                        f'name = "{name}"'))
    env = {**{k: v for k, v in os.environ.items() if k != "HPO_STORAGE"},
           "HPO_ARTIFACTS": str(tmp_path / "artifacts")}
    out = ""
    for argv in (["search", str(study), "--workers", "1", "--trials", "1"], ["studies"],
                 ["best", name], ["create", str(study)]):
        p = subprocess.run([sys.executable, "-m", "hpo", *argv, "--storage", url], env=env,
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        out += p.stdout + p.stderr
    logs = "".join(f.read_text(errors="replace") for f in tmp_path.rglob("*.log"))
    assert "password=***" in out
    assert secret not in out and secret not in logs


option_names_any = st.sampled_from([
    "timeout", "check_same_thread", "mode", "uri", "cache", "immutable", "isolation_level",
    "connect_timeout", "sslmode", "application_name", "options", "keepalives", "port", "bogus",
    "charset", "read_timeout", "ssl_ca", "local_infile", "unix_socket", "client_flag",
    "password", "target_session_attrs", ""]) | st.text(max_size=10)
option_values = st.text(max_size=12) | st.integers(-5, 10**12).map(str) | st.sampled_from(
    ["true", "false", "ro", "1", "0", "utf8mb4", "bogus", "-1", "1e9", "nan", "inf"])


@settings(max_examples=int(os.environ.get("HPO_HYPOTHESIS_EXAMPLES", "0")) // 10 or 400,
          deadline=None)
@given(base=st.sampled_from(["sqlite:////tmp/hpo.db", "postgresql://u@h/d", "mysql://r@h/d",
                             "mariadb://r@h/d", "postgresql+psycopg://u@h:5432/d"]),
       options=st.lists(st.tuples(option_names_any, option_values), max_size=3))
def test_generated_options_are_taken_or_refused_in_one_line(
        base: str, options: list[tuple[str, str]]) -> None:
    """Whatever options a URL carries, parse gives a URL or one StorageError line naming the
    flag and the variable: never the driver's exception."""
    url = base + ("?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in options) if options else "")
    try:
        parse(url)
    except StorageError as e:
        assert len(str(e).splitlines()) == 1 and WHERE in str(e), str(e)
