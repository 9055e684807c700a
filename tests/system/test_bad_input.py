"""Bad input: a corpus of malformed study files, flags and storage URLs. Every one gives exactly
one line on stderr naming the problem (the key, flag, file or URL), a non-zero exit and no
traceback, and leaves the storage exactly as it was: the same bytes and the same rows for SQLite,
the same row counts in every table for PostgreSQL (a database of its own, so other tests' writes
cannot blur the count).

CSV and model files are the other half of the corpus and live in tests/cli/test_train.py (30
cases: 7 malformed CSVs, a binary and a missing input, a missing model, a directory as model, 10
files that are not models, 7 malformed model files, 2 pickles carrying code). They touch no storage.

Everything runs in-process through typer's CliRunner: a bug that escapes the CLI's error
boundary shows up as result.exception being something other than SystemExit (in a terminal: a
traceback).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import tomli_w
from optuna.trial import TrialState
from typer.testing import CliRunner

from hpo.cli import app
from hpo.store.engines import open_storage
from hpo.store.studies import create_study
from hpo.store.urls import parse
from hpo.study.parse import load_study_file, parse_study
from tests.support.snapshots import sqlite_snapshot

EXISTING = "existing"
VALID: dict[str, Any] = {
    "name": "probe", "trials": 4, "seed": 0,
    "sampler": {"type": "tpe"}, "pruner": {"type": "none"},
    "space": {"hidden_size": {"type": "int", "low": 4, "high": 8},
              "epochs": {"type": "int", "low": 1, "high": 2}},
    "data": {"seed": 0, "train": 10, "val": 10, "test": 10},
}
PG_DB = "hpo_bad_input"  # a database of its own: row counts must not move under other tests


# --- the storages that must stay unchanged ------------------------------------------------------


@dataclass
class World:
    backend: str
    url: str
    dir: Path  # study files and odd SQLite files live here
    counter: sqlalchemy.engine.Engine | None = None  # PostgreSQL: one engine for all counts

    def snapshot(self) -> Any:
        if self.counter is None:
            return sqlite_snapshot(self.dir)
        return pg_counts(self.counter)


def pg_counts(engine: sqlalchemy.engine.Engine) -> dict[str, int]:
    with engine.connect() as con:
        return {t: con.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(
                    sqlalchemy.table(t))).scalar_one()
                for t in sqlalchemy.inspect(con).get_table_names()}


def populate(url: str) -> None:
    """One hpo study, EXISTING, with one failed trial."""
    spec = parse_study({**copy.deepcopy(VALID), "name": EXISTING})
    storage = open_storage(url, create=True, heartbeat=False)
    study = create_study(spec, storage)
    if not study.trials:
        study.tell(study.ask(), state=TrialState.FAIL)
    storage.engine.dispose()


def pg_database(base: str) -> str:
    """The URL of PG_DB on the server of `base`, created on first use."""
    u = parse(base)
    admin = sqlalchemy.create_engine(u, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as con:
            db = sqlalchemy.table("pg_database", sqlalchemy.column("datname"))
            found = con.execute(sqlalchemy.select(db.c.datname).where(db.c.datname == PG_DB))
            if found.first() is None:
                # ProgrammingError: created meanwhile by a concurrent run.
                with contextlib.suppress(sqlalchemy.exc.ProgrammingError):
                    con.execute(sqlalchemy.text(f'CREATE DATABASE "{PG_DB}"'))
    except sqlalchemy.exc.OperationalError as e:
        pytest.skip(f"cannot create database {PG_DB}: {str(e).splitlines()[0]}")
    finally:
        admin.dispose()
    return u.set(database=PG_DB).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, World]]:
    out: dict[str, World] = {}
    d = tmp_path_factory.mktemp("bad_sqlite")
    (d / "not_a_db.db").write_bytes(b"this is not a database\n" * 100)
    con = sqlite3.connect(d / "no_tables.db")
    con.execute("CREATE TABLE unrelated (a INTEGER)")
    con.commit()
    con.close()
    (d / "a_directory").mkdir()
    out["sqlite"] = World("sqlite", f"sqlite:///{d / 'hpo.db'}", d)
    populate(out["sqlite"].url)
    pg = os.environ.get("HPO_TEST_POSTGRES_URL")
    if pg:
        url = pg_database(pg)
        populate(url)
        out["postgresql"] = World("postgresql", url, tmp_path_factory.mktemp("bad_pg"),
                                  sqlalchemy.create_engine(parse(url), pool_size=1))
    yield out
    for w in out.values():
        if w.counter is not None:
            w.counter.dispose()


# --- the corpus ---------------------------------------------------------------------------------


def edit(**changes: Any) -> Callable[[dict[str, Any]], None]:
    """Sets dotted keys of the study (e.g. space__hidden_size__low=8); None deletes the key."""

    def apply(d: dict[str, Any]) -> None:
        for dotted, value in changes.items():
            *path, last = dotted.split("__")
            node = d
            for k in path:
                node = node.setdefault(k, {})
            if value is None:
                node.pop(last, None)
            else:
                node[last] = value

    return apply


@dataclass(frozen=True)
class StudyCase:
    id: str
    change: Callable[[dict[str, Any]], None] | str | bytes  # an edit, or raw file content
    names: str  # what the one line must name


STUDY_FILES = [
    StudyCase("unknown_top_key", edit(trails=4), "trails"),
    StudyCase("unknown_param_key", edit(space__hidden_size__lo=4), "space.hidden_size.lo"),
    StudyCase("wrong_type", edit(trials="ten"), "trials"),
    StudyCase("low_above_high", edit(space__hidden_size__low=8, space__hidden_size__high=4),
              "space.hidden_size"),
    StudyCase("log_with_low_zero", edit(space__weight_decay={
        "type": "float", "low": 0.0, "high": 0.1, "log": True}), "space.weight_decay.low"),
    StudyCase("step_not_fitting", edit(space__hidden_size__step=3), "space.hidden_size.step"),
    StudyCase("unknown_sampler", edit(sampler={"type": "annealing"}), "sampler.type"),
    StudyCase("unknown_pruner", edit(pruner={"type": "guillotine"}), "pruner.type"),
    StudyCase("bad_toml", 'name = "x"\ntrials = \n[space\n', "not valid TOML"),
    StudyCase("missing_name", edit(name=None), "name"),
    StudyCase("bad_name", edit(name="has spaces/and slashes"), "name"),
    StudyCase("empty_space", edit(space={}), "space"),
    StudyCase("unknown_parameter", edit(space__dropout={"type": "float", "low": 0, "high": 1}),
              "space.dropout"),
    StudyCase("fractional_int_bound", edit(space__hidden_size__low=4.5), "space.hidden_size.low"),
    StudyCase("categorical_without_choices", edit(space__epochs={"type": "categorical"}),
              "space.epochs.choices"),
    StudyCase("categorical_duplicates", edit(space__epochs={
        "type": "categorical", "choices": [1, 1]}), "space.epochs.choices"),
    StudyCase("trials_zero", edit(trials=0), "trials"),
    StudyCase("grid_of_a_continuous_range", edit(
        sampler={"type": "grid"}, space__lr={"type": "float", "low": 0.001, "high": 0.1}),
        "space.lr"),
    StudyCase("trials_beyond_grid", edit(sampler={"type": "grid"}, trials=11), "trials"),
    StudyCase("pruner_with_two_objectives", edit(
        objective={"second": "train_seconds"}, pruner={"type": "median"}), "pruner.type"),
    StudyCase("unknown_metric", edit(objective={"metric": "accuracy"}), "objective.metric"),
    StudyCase("repeats_zero", edit(repeats=0), "repeats"),
    StudyCase("noise_ratio_too_big", edit(data__noise_ratio=11.0), "data.noise_ratio"),
    StudyCase("fixed_and_searched", edit(train={"epochs": 3}), "train.epochs"),
    StudyCase("zero_learning_rate", edit(train={"lr": 0.0}), "train.lr"),
    StudyCase("empty_file", "", "name"),
    StudyCase("not_utf8", b"\xff\xfe\x00name = \x93bad\x94\n", "not valid TOML"),
    StudyCase("point_outside_space", edit(sampler={"type": "points", "points": [
        {"hidden_size": 99, "epochs": 1}]}), "sampler.points[0].hidden_size"),
    StudyCase("sampler_option_wrong_type", edit(sampler={"type": "tpe",
                                                         "n_startup_trials": "x"}),
              "sampler.n_startup_trials"),
    StudyCase("step_with_log", edit(space__lr={"type": "float", "low": 0.001, "high": 0.1,
                                               "log": True, "step": 0.001}), "space.lr.step"),
    StudyCase("param_type_string", edit(space__hidden_size__type="string"),
              "space.hidden_size.type"),
    StudyCase("int_type_for_float_param", edit(space__lr={"type": "int", "low": 1, "high": 2}),
              "space.lr.type"),
    StudyCase("percentile_out_of_range", edit(pruner={"type": "percentile",
                                                      "percentile": 150.0}),
              "pruner.percentile"),
    StudyCase("param_not_a_table", edit(space__hidden_size=5), "space.hidden_size"),
    StudyCase("nan_bound", 'name = "p"\ntrials = 4\n[space.lr]\ntype = "float"\nlow = nan\n'
                           'high = 0.1\n', "space.lr.low"),
    StudyCase("val_curves_zero", edit(data__val=0), "data.val"),
    # Found by tests/system/test_properties.py's long run (issue 10); each stands for a class.
    StudyCase("sampler_type_an_array", edit(sampler={"type": ["tpe"]}), "sampler.type"),
    StudyCase("pruner_type_a_table", edit(pruner={"type": {"a": 1}}), "pruner.type"),
    StudyCase("step_subnormal", edit(space__lr={"type": "float", "low": 0.001, "high": 0.01,
                                                "step": 5e-324}), "space.lr.step"),
    StudyCase("step_too_fine_for_decimal", edit(space__lr={
        "type": "float", "low": 0.001, "high": 0.01, "step": 1e-300}), "space.lr.step"),
    StudyCase("step_larger_than_range", edit(space__lr={
        "type": "float", "low": 0.001, "high": 0.01, "step": 1.0}), "space.lr.step"),
    StudyCase("hyperband_negative_bootstrap", edit(pruner={"type": "hyperband",
                                                           "bootstrap_count": -1}), "pruner"),
    StudyCase("halving_rate_huge", edit(pruner={"type": "successive_halving",
                                                "min_early_stopping_rate": 10**18}),
              "pruner.min_early_stopping_rate"),
    StudyCase("tpe_candidates_huge", edit(sampler={"type": "tpe", "n_ei_candidates": 10**9}),
              "sampler.n_ei_candidates"),
    StudyCase("unknown_key_with_a_newline", 'name = "p"\ntrials = 4\n"bad\\nkey" = 1\n'
              '[space.hidden_size]\ntype = "int"\nlow = 4\nhigh = 8\n', "bad\\nkey"),
]


def write_study(d: Path, case: StudyCase) -> Path:
    path = d / f"{case.id}.toml"
    if isinstance(case.change, bytes):
        path.write_bytes(case.change)
    elif isinstance(case.change, str):
        path.write_text(case.change)
    else:
        body = copy.deepcopy(VALID)
        case.change(body)
        path.write_text(tomli_w.dumps(body))
    return path


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[World], list[str]]
    names: str  # what the one line must name
    secret: str | None = None  # must appear nowhere in the output (a password)
    per_backend: bool = True  # run against each storage (else once, next to SQLite)


def valid_file(w: World, **changes: Any) -> Path:
    body = copy.deepcopy(VALID)
    edit(**changes)(body)
    path = w.dir / f"valid_{abs(hash(repr(sorted(changes.items()))))}.toml"
    path.write_text(tomli_w.dumps(body))
    return path


def url_case(case_id: str, url: str | Callable[[World], str], names: str,
             secret: str | None = None, command: str = "studies") -> Case:
    def argv(w: World) -> list[str]:
        u = url(w) if callable(url) else url
        head = ["search", str(valid_file(w))] if command == "search" else (
            ["worker", EXISTING] if command == "worker" else [command])
        return [*head, "--storage", u]

    return Case(case_id, argv, names, secret, per_backend=False)


def mysql_wrong_password(w: World) -> str:
    base = os.environ.get("HPO_TEST_MYSQL_URL")
    if not base:
        pytest.skip("needs $HPO_TEST_MYSQL_URL (PostgreSQL here trusts local logins, so a "
                    "wrong password is tried on MySQL/MariaDB)")
    return parse(base).set(password="wr0ngpassw0rd").render_as_string(hide_password=False)


def storage(w: World) -> list[str]:
    return ["--storage", w.url]


def search_study(c: StudyCase) -> Callable[[World], list[str]]:
    return lambda w: ["search", str(write_study(w.dir, c)), "--workers", "1", *storage(w)]


CASES = [
    *(Case(f"study_file_{c.id}", search_study(c), c.names) for c in STUDY_FILES),
    Case("study_file_missing", lambda w: ["search", str(w.dir / "nope.toml"), *storage(w)],
         "nope.toml"),
    Case("study_file_is_a_directory", lambda w: ["search", str(w.dir), *storage(w)], "study file"),
    Case("study_file_changed_after_creation", lambda w: [
        "search", str(valid_file(w, name=EXISTING, space__hidden_size__high=9)), *storage(w)],
        "different definition"),
    # flags
    Case("workers_zero", lambda w: ["search", str(valid_file(w)), "--workers", "0",
                                    *storage(w)], "--workers"),
    Case("trials_zero_flag", lambda w: ["search", str(valid_file(w)), "--trials", "0",
                                        *storage(w)], "--trials"),
    Case("trials_not_a_number", lambda w: ["search", str(valid_file(w)), "--trials", "abc",
                                           *storage(w)], "--trials"),
    Case("trials_beyond_grid_flag", lambda w: [
        "search", str(valid_file(w, sampler={"type": "grid"})), "--trials", "1000",
        *storage(w)], "--trials"),
    Case("timeout_negative", lambda w: ["search", str(valid_file(w)), "--timeout", "-5",
                                        *storage(w)], "--timeout"),
    Case("threads_zero", lambda w: ["search", str(valid_file(w)), "--threads", "0",
                                    *storage(w)], "--threads"),
    Case("unknown_option", lambda w: ["search", str(valid_file(w)), "--wrkers", "2",
                                      *storage(w)], "--wrkers"),
    Case("unknown_command", lambda w: ["serach", str(valid_file(w))], "serach",
         per_backend=False),
    Case("unknown_format", lambda w: ["trials", EXISTING, "--format", "xml", *storage(w)],
         "--format"),
    Case("unknown_state", lambda w: ["trials", EXISTING, "--state", "sleeping", *storage(w)],
         "--state"),
    Case("unknown_study", lambda w: ["best", "nosuchstudy", *storage(w)], "nosuchstudy"),
    Case("unknown_study_worker", lambda w: ["worker", "nosuchstudy", *storage(w)],
         "nosuchstudy"),
    Case("unknown_study_retry_failed", lambda w: ["retry-failed", "nosuchstudy", *storage(w)],
         "nosuchstudy"),
    Case("unknown_study_fail_stale", lambda w: ["fail-stale", "nosuchstudy", *storage(w)],
         "nosuchstudy"),
    Case("no_complete_trial_yet", lambda w: ["best", EXISTING, *storage(w)],
         "no complete trial"),
    Case("unknown_trial_number", lambda w: ["replay", EXISTING, "999", *storage(w)], "999"),
    Case("trial_number_not_a_number", lambda w: ["replay", EXISTING, "last", *storage(w)],
         "'TRIAL'"),
    Case("evaluate_top_zero", lambda w: ["evaluate", EXISTING, "--top", "0", *storage(w)],
         "--top"),
    Case("best_top_beyond_int64", lambda w: ["best", EXISTING, "--top", str(2**63),
                                             *storage(w)], "--top"),
    Case("replay_trial_beyond_int64", lambda w: ["replay", EXISTING, str(2**64), *storage(w)],
         "'TRIAL'"),
    # storage URLs
    url_case("unreachable_port", "postgresql://postgres@127.0.0.1:1/test", "127.0.0.1:1"),
    url_case("unreachable_port_on_create", "postgresql://postgres@127.0.0.1:1/test",
             "127.0.0.1:1", command="search"),
    url_case("unreachable_port_worker", "postgresql://postgres@127.0.0.1:1/test",
             "127.0.0.1:1", command="worker"),
    url_case("unknown_host", "postgresql://postgres@nohost.invalid/test", "nohost.invalid"),
    url_case("unknown_user_with_password",
             "postgresql://nosuchuser:hunter2hunter2@127.0.0.1:5432/test", "nosuchuser",
             secret="hunter2hunter2"),
    url_case("unknown_database", "postgresql://postgres@127.0.0.1:5432/nosuchdb", "nosuchdb"),
    url_case("wrong_password", mysql_wrong_password, "Access denied", secret="wr0ngpassw0rd"),
    url_case("unknown_mysql_database", "mysql://root@127.0.0.1:3306/nosuchdb", "nosuchdb"),
    url_case("unknown_dialect", "oracle://scott:tiger-tiger@db/x", "oracle",
             secret="tiger-tiger"),
    url_case("garbage_url", "not a url at all", "not a database URL"),
    url_case("port_not_a_number", "postgresql://u:s3cr3t-pw@host:port/db",
             "not a database URL", secret="s3cr3t-pw"),
    url_case("missing_driver", "postgresql+nodriver://a@b/c", "no driver"),
    url_case("sqlite_not_a_database", lambda w: f"sqlite:///{w.dir / 'not_a_db.db'}",
             "not_a_db.db"),
    url_case("sqlite_not_a_database_on_create", lambda w: f"sqlite:///{w.dir / 'not_a_db.db'}",
             "not_a_db.db", command="search"),
    url_case("sqlite_without_hpo_tables", lambda w: f"sqlite:///{w.dir / 'no_tables.db'}",
             "no hpo tables"),
    url_case("sqlite_directory", lambda w: f"sqlite:///{w.dir / 'a_directory'}", "a_directory"),
    url_case("sqlite_in_memory", "sqlite://", "in-memory"),
    url_case("sqlite_missing_file", lambda w: f"sqlite:///{w.dir / 'missing.db'}",
             "missing.db"),
]


def params() -> list[Any]:
    out = []
    for case in CASES:
        for backend in ("sqlite", "postgresql") if case.per_backend else ("sqlite",):
            out.append(pytest.param(case, backend, id=f"{case.id}-{backend}"))
    return out


def test_the_corpus_is_large_and_its_base_file_is_valid(tmp_path: Path) -> None:
    assert len(STUDY_FILES) >= 25
    assert len(CASES) >= 60
    path = tmp_path / "valid.toml"
    path.write_text(tomli_w.dumps(VALID))
    assert load_study_file(path).name == "probe"  # so each case fails for its own reason


@pytest.mark.parametrize(("case", "backend"), params())
def test_bad_input_is_one_line_and_changes_nothing(
        case: Case, backend: str, worlds: dict[str, World]) -> None:
    if backend not in worlds:
        pytest.skip("needs $HPO_TEST_POSTGRES_URL (a database URL); .ci/run sets it")
    w = worlds[backend]
    argv = case.argv(w)
    before = w.snapshot()
    result = CliRunner().invoke(app, argv, env={"HPO_STORAGE": None})
    if w.counter is not None:
        gc.collect()  # closes the pooled server connections of the command's storage
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}")
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert case.names in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""
    if case.secret:
        assert case.secret not in result.output
    assert w.snapshot() == before, "the storage changed"


def test_pg_world_is_really_a_separate_database(worlds: dict[str, World]) -> None:
    if "postgresql" not in worlds:
        pytest.skip("needs $HPO_TEST_POSTGRES_URL (a database URL); .ci/run sets it")
    counts = worlds["postgresql"].snapshot()
    assert counts["studies"] >= 1 and counts["trials"] >= 1  # the snapshot counts real rows
    storage = open_storage(worlds["postgresql"].url, heartbeat=False)
    try:
        names = [s.study_name for s in storage.get_all_studies()]
    finally:
        storage.engine.dispose()
    assert EXISTING in names
