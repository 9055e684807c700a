"""Stored data is input too: whatever another tool, another hpo or damage left in a study, every
command either reads it or refuses it in one line naming the study and the key (never a
traceback), through both readers. Listed cases first, then hypothesis's mutations of a real
study's rows and of its file's pages; and a valid study on read-only media is read."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hpo.cli import app
from hpo.errors import StorageError
from hpo.store import stored
from hpo.store.attrs import BUDGET_ATTR, RESCORE_ATTR, SPEC_ATTR
from hpo.store.engines import open_storage
from hpo.store.studies import create_study
from hpo.study.parse import load_study_file
from tests.support.studies import TINY_STUDY

EXAMPLES = int(os.environ.get("HPO_HYPOTHESIS_EXAMPLES", "0")) // 20 or 30


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite study 'made' with two complete trials (one from a plain Optuna client with a
    parameter the study does not search) and a rescore, closed and checkpointed."""
    import tomli_w

    d = tmp_path_factory.mktemp("stored")
    (d / "made.toml").write_text(tomli_w.dumps({"name": "made", **TINY_STUDY, "trials": 4}))
    spec = load_study_file(d / "made.toml")
    storage = open_storage(f"sqlite:///{d / 'hpo.db'}", create=True, heartbeat=False)
    study = create_study(spec, storage)
    dists: dict[str, optuna.distributions.BaseDistribution] = {
        "hidden_size": optuna.distributions.IntDistribution(4, 8),
        "shift": optuna.distributions.IntDistribution(0, 5),
        "epochs": optuna.distributions.IntDistribution(2, 4)}
    study.add_trial(optuna.trial.create_trial(params={"hidden_size": 5, "shift": 1, "epochs": 2},
                                              distributions=dists, value=30.0))
    study.add_trial(optuna.trial.create_trial(
        params={"hidden_size": 6, "shift": 1, "epochs": 2, "dropout": 0.5},
        distributions={**dists, "dropout": optuna.distributions.FloatDistribution(0, 1)},
        value=40.0))
    study.set_user_attr(RESCORE_ATTR, {"0": {"number": 0, "val_mean": 29.0, "val_std": 1.0,
                                             "seeds": 2, "val_curves": 10}})
    storage.engine.dispose()
    return d


@pytest.fixture
def copy(made: Path, tmp_path: Path) -> Path:
    d = tmp_path / "copy"
    shutil.copytree(made, d)
    return d


def run(d: Path, *argv: str) -> Any:
    return CliRunner().invoke(app, [*argv, "--storage", f"sqlite:///{d / 'hpo.db'}"])


def one_line_or_ok(r: Any) -> None:
    assert r.exception is None or isinstance(r.exception, SystemExit), (
        f"uncaught {type(r.exception).__name__}: {r.exception}")
    if r.exit_code != 0:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and lines[-1].startswith("error: "), r.stderr


def set_study_attr(d: Path, key: str, value_json: str) -> None:
    with contextlib.closing(sqlite3.connect(d / "hpo.db")) as con:
        con.execute("UPDATE study_user_attributes SET value_json = ? WHERE key = ?",
                    (value_json, key))
        con.commit()


COMMANDS = (["studies"], ["studies", "--json"], ["best", "made", "--json"],
            ["trials", "made", "--format", "csv"])


@pytest.mark.parametrize("key,value,words", [
    (BUDGET_ATTR, '"many"', "'hpo:budget' = 'many' is not a number of trials"),
    (BUDGET_ATTR, "true", "'hpo:budget' = True"),
    (BUDGET_ATTR, "{not json", "'hpo:budget' = '{not json' is not JSON"),
    (RESCORE_ATTR, '{"0": {"val_mean": "high"}}', "hpo:rescored"),
    (SPEC_ATTR, json.dumps({"metrics": ["val_removed"], "name": "made", "trials": 4,
                            "space": [], "future_key": 1}), "'future_key'"),
])
def test_a_stored_value_hpo_did_not_write_is_named_in_one_line(
        copy: Path, key: str, value: str, words: str) -> None:
    set_study_attr(copy, key, value)
    said = []
    for argv in (*COMMANDS, ["create", str(copy / "made.toml")]):
        for options in ("", "?timeout=30"):  # the SQLite reader, and Optuna's path
            r = CliRunner().invoke(app, [*argv, "--storage",
                                         f"sqlite:///{copy / 'hpo.db'}{options}"])
            one_line_or_ok(r)
            said.append(r.stderr)
    assert any(words in s for s in said), said


def test_a_trial_with_foreign_parameters_is_shown_and_skipped_by_retraining(copy: Path) -> None:
    r = run(copy, "best", "made", "--top", "5", "--json")
    assert r.exit_code == 0 and {t["number"] for t in json.loads(r.stdout)} == {0, 1}
    r = run(copy, "rescore", "made", "--top", "1", "--seeds", "1", "--val-curves", "5",
            "--workers", "1", "--json")
    assert r.exit_code == 0, r.output
    assert [row["number"] for row in json.loads(r.stdout)] == [0]
    assert "trial 1 of 'made' is skipped: its parameters dropout are not the study's" in r.stderr
    r = run(copy, "replay", "made", "1")
    one_line_or_ok(r)
    assert "dropout" in r.stderr and r.exit_code == 2
    r = run(copy, "export", "made", "--trial", "1", "--out", str(copy / "m.pt"))
    one_line_or_ok(r)
    assert r.exit_code == 2 and "another client told it: its parameters dropout" in r.stderr


def test_a_damaged_page_is_one_line(copy: Path) -> None:
    data = bytearray((copy / "hpo.db").read_bytes())
    for i in range(4096, len(data), 4096):  # every page's header, after the first
        data[i:i + 8] = b"\xff" * 8
    (copy / "hpo.db").write_bytes(bytes(data))
    for argv in COMMANDS:
        one_line_or_ok(run(copy, *argv))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                               max_size=3),
    max_leaves=6)
raw_text = st.text(max_size=12) | st.binary(max_size=12).map(lambda b: b.decode("latin-1"))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(where=st.sampled_from(["study attr", "trial attr", "param", "value", "page", "state",
                              "distribution", "direction"]),
       key=st.sampled_from([SPEC_ATTR, BUDGET_ATTR, RESCORE_ATTR, "learning_curve", "seeds"]),
       value=json_values, text=raw_text, as_text=st.booleans(), offset=st.integers(0, 10**6))
def test_mutated_stored_data_is_read_or_refused_in_one_line(
        made: Path, tmp_path_factory: pytest.TempPathFactory, where: str, key: str, value: Any,
        text: str, as_text: bool, offset: int) -> None:
    d = tmp_path_factory.mktemp("mutated")
    shutil.copy(made / "hpo.db", d / "hpo.db")
    shutil.copy(made / "made.toml", d / "made.toml")
    stored_text = text if as_text else json.dumps(value, allow_nan=True)
    if where == "page":
        data = bytearray((d / "hpo.db").read_bytes())
        i = offset % len(data)
        data[i:i + 16] = (text.encode("utf-8", "surrogatepass") * 16)[:16] or b"\0" * 16
        (d / "hpo.db").write_bytes(bytes(data))
    else:
        table, column = {"study attr": ("study_user_attributes", "value_json"),
                         "trial attr": ("trial_user_attributes", "value_json"),
                         "param": ("trial_params", "param_value"),
                         "value": ("trial_values", "value"),
                         "state": ("trials", "state"),
                         "distribution": ("trial_params", "distribution_json"),
                         "direction": ("study_directions", "direction")}[where]
        with contextlib.closing(sqlite3.connect(d / "hpo.db")) as con:
            if where in ("study attr", "trial attr"):
                con.execute(f"UPDATE {table} SET {column} = ? WHERE key = ?", (stored_text, key))
            else:
                try:
                    con.execute(f"UPDATE {table} SET {column} = ?", (
                        stored_text if as_text or isinstance(value, list | dict) else value,))
                except (sqlite3.IntegrityError, OverflowError):  # NOT NULL, or beyond 64 bits
                    assume(False)
            con.commit()
    for argv in COMMANDS:
        one_line_or_ok(run(d, *argv))


def test_the_boundary_functions_refuse_what_they_do_not_understand() -> None:
    assert stored.budget("s", {}) is None and stored.budget("s", {BUDGET_ATTR: 8}) == 8
    for bad in ("8", 8.0, True, 0, -1, 10**12, [8]):
        with pytest.raises(StorageError, match="study 's': its stored hpo:budget"):
            stored.budget("s", {BUDGET_ATTR: bad})
    with pytest.raises(StorageError, match="made by a newer hpo"):
        stored.spec("s", {SPEC_ATTR: {"name": "s", "trials": 1, "future": True}})
    with pytest.raises(StorageError, match="does not read"):
        stored.spec("s", {SPEC_ATTR: {"name": "s", "trials": 1, "metrics": ["val_removed"],
                                      "space": [{"name": "hidden_size", "type": "bogus"}]}})


@pytest.fixture
def read_only(made: Path, tmp_path: Path) -> Iterator[Path]:
    """The study on a read-only mount (root only)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}); needs root")
    try:
        shutil.copy(made / "hpo.db", mnt / "hpo.db")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, capture_output=True)
        assert not os.access(mnt, os.W_OK)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_valid_study_on_read_only_media_is_read(read_only: Path,
                                                  made: Path) -> None:
    for argv in COMMANDS:
        for options in ("", "?timeout=30"):
            r = CliRunner().invoke(app, [*argv, "--storage",
                                         f"sqlite:///{read_only / 'hpo.db'}{options}"])
            assert r.exit_code == 0, r.output
    expected = run(made, "best", "made", "--json").stdout
    assert run(read_only, "best", "made", "--json").stdout == expected


def test_trials_another_client_left_are_never_trained_outside_the_space(copy: Path) -> None:
    """A trial enqueued by a plain client with values outside the space (Optuna only warns)
    fails in one line, untrained; stored seeds that are not seeds are refused by replay."""
    storage = open_storage(f"sqlite:///{copy / 'hpo.db'}", heartbeat=False)
    study = optuna.load_study(study_name="made", storage=storage)
    study.set_user_attr(BUDGET_ATTR, 3)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.enqueue_trial({"hidden_size": 1_000_000, "shift": 3, "epochs": 2},
                            skip_if_exists=False)
    storage.engine.dispose()
    r = run(copy, "worker", "made")
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    with contextlib.closing(sqlite3.connect(copy / "hpo.db")) as con:
        reason = con.execute("SELECT value_json FROM trial_user_attributes WHERE key = "
                             "'fail_reason'").fetchone()
    assert reason is not None and "hidden_size=1000000" in reason[0]
    with contextlib.closing(sqlite3.connect(copy / "hpo.db")) as con:
        for key, value in (("seeds", '"abc"'), ("val_removed_per_seed", "[30.0]")):
            con.execute("INSERT INTO trial_user_attributes (trial_id, key, value_json) SELECT "
                        "trial_id, ?, ? FROM trials WHERE number = 0", (key, value))
        con.commit()
    r = run(copy, "replay", "made", "0")
    one_line_or_ok(r)
    assert r.exit_code == 2 and "seeds of trial 0" in r.stderr


def test_a_stored_definition_is_constructed_as_a_study_file_before_training(copy: Path) -> None:
    with contextlib.closing(sqlite3.connect(copy / "hpo.db")) as con:
        (raw,) = con.execute("SELECT value_json FROM study_user_attributes WHERE key = ?",
                             (SPEC_ATTR,)).fetchone()
        spec = json.loads(raw)
        spec["data"]["val"] = 10**12  # terabytes of curves
        con.execute("UPDATE study_user_attributes SET value_json = ? WHERE key = ?",
                    (json.dumps(spec), SPEC_ATTR))
        con.commit()
    for argv in (["worker", "made"], ["evaluate", "made", "--top", "1", "--seeds", "1"]):
        r = run(copy, *argv)
        one_line_or_ok(r)
        assert r.exit_code == 2 and "its stored definition" in r.stderr and "data.val" in r.stderr


def test_json_output_is_strict_even_with_infinite_values(copy: Path) -> None:
    storage = open_storage(f"sqlite:///{copy / 'hpo.db'}", heartbeat=False)
    study = optuna.load_study(study_name="made", storage=storage)
    study.add_trial(optuna.trial.create_trial(
        params={"hidden_size": 5, "shift": 1, "epochs": 2}, value=float("inf"),
        distributions={"hidden_size": optuna.distributions.IntDistribution(4, 8),
                       "shift": optuna.distributions.IntDistribution(0, 5),
                       "epochs": optuna.distributions.IntDistribution(2, 4)}))
    storage.engine.dispose()
    for argv in (["best", "made", "--json"], ["studies", "--json"],
                 ["trials", "made", "--format", "json"]):
        for options in ("", "?timeout=30"):
            r = CliRunner().invoke(app, [*argv, "--storage",
                                         f"sqlite:///{copy / 'hpo.db'}{options}"])
            assert r.exit_code == 0, r.output
            json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
