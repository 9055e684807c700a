"""hpo.env: every HPO_* variable, parsed lazily with its unit rules.

Durations (seconds or a s/m/h suffix), whole-number counts, the heartbeat/grace pairing, the
deadline, defaults when unset or empty, and one-line EnvErrors that name the variable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from hpo import env
from hpo.errors import HpoError

ALL_VARS = [v for v in vars(env).values() if isinstance(v, env.Var)]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts with no HPO_* variable set, whatever the caller's shell has."""
    for var in ALL_VARS:
        monkeypatch.delenv(var.name, raising=False)


def _error(fn: Callable[[], object]) -> env.EnvError:
    with pytest.raises(env.EnvError) as info:
        fn()
    return info.value


def _one_line_naming(e: Exception, name: str) -> None:
    text = str(e)
    assert "\n" not in text
    assert name in text


def test_every_variable_is_hpo_prefixed_and_distinct() -> None:
    names = [v.name for v in ALL_VARS]
    assert len(names) >= 10
    assert len(set(names)) == len(names)
    assert all(n.startswith("HPO_") for n in names)
    assert all(v.help for v in ALL_VARS)


def test_env_error_is_an_hpo_error() -> None:
    assert issubclass(env.EnvError, HpoError)


# --- durations ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "seconds"), [
    ("30", 30.0), ("30s", 30.0), ("1.5m", 90.0), ("2h", 7200.0), (" 45 ", 45.0),
    ("30 s", 30.0), (".5", 0.5), ("0", 0.0), ("1e2", 100.0), ("0.25h", 900.0),
])
def test_duration_parses_units(monkeypatch: pytest.MonkeyPatch, value: str,
                               seconds: float) -> None:
    monkeypatch.setenv(env.STORAGE_RETRY.name, value)
    assert env.storage_retry_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["30x", "-1", "inf", "nan", "-inf", "1e400", "30ms", "m",
                                   "1.5.2", "30 sec", "1,5m"])
def test_duration_refuses_with_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                            value: str) -> None:
    monkeypatch.setenv(env.STORAGE_RETRY.name, value)
    e = _error(env.storage_retry_seconds)
    _one_line_naming(e, env.STORAGE_RETRY.name)
    assert repr(value) in str(e)


@pytest.mark.parametrize("value", ["", "   ", "\t"])
def test_empty_counts_as_unset(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    for var in ALL_VARS:
        monkeypatch.setenv(var.name, value)
    assert env.raw(env.STORAGE) is None
    assert env.storage_retry_seconds() == 300.0
    assert env.heartbeat_settings() == (5, 30, 3)
    assert env.deadline() == math.inf
    assert env.threads() == 1
    assert env.storage_url() is None
    assert env.artifacts() is None
    assert env.supervisor_pid() is None


def test_duration_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    ten_years = 10 * 365 * 86400
    monkeypatch.setenv(env.STORAGE_RETRY.name, str(ten_years))
    assert env.storage_retry_seconds() == ten_years
    monkeypatch.setenv(env.STORAGE_RETRY.name, str(ten_years + 1))
    _one_line_naming(_error(env.storage_retry_seconds), env.STORAGE_RETRY.name)


def test_duration_minimum_and_default_are_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    var = env.Var("HPO_TEST_ONLY_DURATION", "test")
    monkeypatch.delenv(var.name, raising=False)
    assert env.duration(var, 12.5) == 12.5
    monkeypatch.setenv(var.name, "2")
    assert env.duration(var, 0.0, minimum=1.0) == 2.0
    _one_line_naming(_error(lambda: env.duration(var, 0.0, minimum=3.0)), var.name)
    _one_line_naming(_error(lambda: env.duration(var, 0.0, maximum=1.0)), var.name)


def test_values_are_read_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is cached: a changed variable is seen by the next call."""
    monkeypatch.setenv(env.STORAGE_RETRY.name, "10")
    assert env.storage_retry_seconds() == 10.0
    monkeypatch.setenv(env.STORAGE_RETRY.name, "20")
    assert env.storage_retry_seconds() == 20.0
    monkeypatch.delenv(env.STORAGE_RETRY.name)
    assert env.storage_retry_seconds() == 300.0


# --- heartbeat, grace period, retries ----------------------------------------------------------

def test_heartbeat_defaults() -> None:
    assert env.heartbeat_settings() == (5, 30, 3)


@pytest.mark.parametrize(("interval", "grace", "expected"), [
    ("10", "11", (10, 11)),
    ("1m", "2m", (60, 120)),
    ("4.5", "5.5", (5, 6)),  # rounded up to whole seconds, as Optuna needs
    ("1", "2s", (1, 2)),
])
def test_heartbeat_whole_seconds(monkeypatch: pytest.MonkeyPatch, interval: str, grace: str,
                                 expected: tuple[int, int]) -> None:
    monkeypatch.setenv(env.HEARTBEAT.name, interval)
    monkeypatch.setenv(env.GRACE.name, grace)
    got = env.heartbeat_settings()
    assert got[:2] == expected
    assert all(isinstance(x, int) for x in got)


@pytest.mark.parametrize(("interval", "grace"), [
    ("10", "10"), ("10", "5"), ("1m", "60"), ("4.5", "5"), ("30", None), ("2m", "1m"),
])
def test_grace_period_must_exceed_heartbeat(monkeypatch: pytest.MonkeyPatch, interval: str,
                                            grace: str | None) -> None:
    monkeypatch.setenv(env.HEARTBEAT.name, interval)
    if grace is not None:
        monkeypatch.setenv(env.GRACE.name, grace)
    e = _error(env.heartbeat_settings)
    _one_line_naming(e, env.GRACE.name)
    assert env.HEARTBEAT.name in str(e)


def test_grace_suggestion_is_itself_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The error's `e.g. HPO_GRACE_PERIOD=N` works when followed."""
    monkeypatch.setenv(env.HEARTBEAT.name, "20")
    monkeypatch.setenv(env.GRACE.name, "20")
    text = str(_error(env.heartbeat_settings))
    suggested = text.split(f"e.g. {env.GRACE.name}=")[1].split()[0]
    monkeypatch.setenv(env.GRACE.name, suggested)
    assert env.heartbeat_settings()[1] == int(suggested)


@pytest.mark.parametrize("value", ["0", "0.5", "-1", "x"])
def test_heartbeat_needs_at_least_one_second(monkeypatch: pytest.MonkeyPatch,
                                             value: str) -> None:
    monkeypatch.setenv(env.HEARTBEAT.name, value)
    _one_line_naming(_error(env.heartbeat_settings), env.HEARTBEAT.name)


@pytest.mark.parametrize(("value", "n"), [("0", 0), ("3", 3), (" 7 ", 7), ("1000", 1000)])
def test_max_retry_whole_numbers(monkeypatch: pytest.MonkeyPatch, value: str, n: int) -> None:
    monkeypatch.setenv(env.MAX_RETRY.name, value)
    assert env.heartbeat_settings()[2] == n


@pytest.mark.parametrize("value", ["3.0", "1.5", "1e3", "three", "3s", "-1", "1001", "inf"])
def test_max_retry_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(env.MAX_RETRY.name, value)
    e = _error(env.heartbeat_settings)
    _one_line_naming(e, env.MAX_RETRY.name)
    assert repr(value) in str(e)


def test_count_suggests_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env.MAX_RETRY.name, "many")
    assert f"{env.MAX_RETRY.name}=3" in str(_error(env.heartbeat_settings))


# --- other variables ---------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "n"), [("1", 1), ("16", 16), ("1024", 1024)])
def test_threads(monkeypatch: pytest.MonkeyPatch, value: str, n: int) -> None:
    monkeypatch.setenv(env.THREADS.name, value)
    assert env.threads() == n


@pytest.mark.parametrize("value", ["0", "1025", "2.0", "auto"])
def test_threads_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(env.THREADS.name, value)
    _one_line_naming(_error(env.threads), env.THREADS.name)


def test_threads_default_is_the_callers() -> None:
    assert env.threads() == 1
    assert env.threads(4) == 4


def test_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env.deadline() == math.inf
    monkeypatch.setenv(env.DEADLINE.name, "1700000000.5")
    assert env.deadline() == 1700000000.5
    monkeypatch.setenv(env.DEADLINE.name, "inf")
    assert env.deadline() == math.inf


@pytest.mark.parametrize("value", ["nan", "tomorrow", "1h", "-inf", "-1e20", "1e19"])
def test_deadline_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(env.DEADLINE.name, value)
    _one_line_naming(_error(env.deadline), env.DEADLINE.name)


def test_supervisor_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env.supervisor_pid() is None
    monkeypatch.setenv(env.SUPERVISOR.name, "4242")
    assert env.supervisor_pid() == 4242
    for bad in ("0", "-5", "pid", str(2**31 + 1)):
        monkeypatch.setenv(env.SUPERVISOR.name, bad)
        _one_line_naming(_error(env.supervisor_pid), env.SUPERVISOR.name)


def test_storage_and_artifacts_are_passed_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env.STORAGE.name, "sqlite:///x.db")
    monkeypatch.setenv(env.ARTIFACTS.name, "none")
    assert env.storage_url() == "sqlite:///x.db"
    assert env.artifacts() == "none"


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert env.cache_dir() == tmp_path / "home" / ".cache" / "hpo"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert env.cache_dir() == tmp_path / "xdg" / "hpo"
    monkeypatch.setenv(env.CACHE_DIR.name, str(tmp_path / "mine"))
    assert env.cache_dir() == tmp_path / "mine" / "hpo"


def test_a_value_that_is_not_utf8_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env.GRACE.name, "3\udc850")
    e = _error(env.heartbeat_settings)
    _one_line_naming(e, env.GRACE.name)
    assert "not UTF-8" in str(e) and "\\x85" in str(e)
