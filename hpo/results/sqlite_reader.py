"""`hpo studies` and `hpo best` on a SQLite file, read with the standard library's sqlite3.

In a fresh process these commands spent 1.2 of their 1.7 s importing Optuna and opening its
RDBStorage (SQLAlchemy, Optuna's ORM models, alembic's schema check) to run three small queries.
On a SQLite file, the default storage, they read Optuna's tables directly instead, through a
connection that cannot write (PRAGMA query_only). What they rely on is Optuna's table layout at
one schema revision (SCHEMA_REVISION). A file at another revision, a URL with options, a study
hpo did not create, a parameter distribution not known here, or any database error gives None,
and the command takes the Optuna path, which gives the same answer or the proper error.
tests/results/test_sqlite_reader.py holds the contract: both paths agree, and the layout assumed
here is the one Optuna writes. Beside hpo.store (optuna_api, queries), this is the only module
that knows Optuna's tables.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from hpo.errors import StorageError
from hpo.results.records import objective_names, pareto_best, record, with_rescores
from hpo.store import stored
from hpo.store.attrs import BUDGET_ATTR, FAIL_REASON_ATTR, INTERRUPTED, RESCORE_ATTR, SPEC_ATTR
from hpo.study.metrics import directions as metric_directions

SCHEMA_REVISION = "v3.2.0.a"  # alembic's head in Optuna 5.0; the contract test compares
# Only a plain file URL: options, escapes, `~`, white space or control characters are left to
# hpo.store.urls.parse (through Optuna's path), which expands or refuses them.
PLAIN_SQLITE = re.compile(r"sqlite:///([^?%#~\s\x00-\x1f\x7f-\x9f][^?%#\s\x00-\x1f\x7f-\x9f]*)")
INFINITY = {"INF_POS": math.inf, "INF_NEG": -math.inf}
STATES = ("COMPLETE", "PRUNED", "RUNNING", "WAITING", "FAIL")
METRIC_NAMES_KEY = "study:metric_names"  # the system attr of Study.set_metric_names
# What the queries below read of Optuna's tables (the contract test checks each exists).
COLUMNS = {
    "alembic_version": (),  # alembic's, not an Optuna model: the revision check reads it
    "studies": ("study_id", "study_name"),
    "study_directions": ("study_direction_id", "study_id", "direction"),
    "study_user_attributes": ("study_id", "key", "value_json"),
    "study_system_attributes": ("study_id", "key", "value_json"),
    "trials": ("trial_id", "number", "study_id", "state", "datetime_start", "datetime_complete"),
    "trial_values": ("trial_id", "objective", "value", "value_type"),
    "trial_params": ("param_id", "trial_id", "param_name", "param_value", "distribution_json"),
    "trial_user_attributes": ("trial_id", "key", "value_json"),
}


class NotHere(Exception):
    """Not answerable without Optuna: the caller takes the Optuna path."""


def sqlite_file(url: str) -> Path | None:
    m = PLAIN_SQLITE.fullmatch(url)
    if m is None:
        return None
    path = Path(m.group(1))
    try:
        return path if path.is_file() else None
    except OSError:  # a name the file system refuses: Optuna's path says so in one line
        return None


@contextlib.contextmanager
def _reading(url: str) -> Iterator[sqlite3.Connection]:
    path = sqlite_file(url)
    if path is None:
        raise NotHere(url)
    if os.access(path.parent, os.W_OK):
        con = sqlite3.connect(path, timeout=60)
    else:  # read-only media: no -shm or -wal can be made, so nothing is locked (as the store)
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        con.execute("PRAGMA query_only = ON")
        (revision,) = con.execute("SELECT version_num FROM alembic_version").fetchone()
        if revision != SCHEMA_REVISION:
            raise NotHere(f"schema {revision}")
        con.execute("BEGIN")  # one snapshot for every query of the answer
        yield con
    finally:
        con.close()


def _answer(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (NotHere, sqlite3.Error, LookupError, TypeError, ValueError, ArithmeticError):
        return None  # json.JSONDecodeError is a ValueError


def studies(url: str) -> list[dict[str, Any]] | None:
    """hpo.results.optuna_reader.studies' rows, or None."""
    return _answer(_studies, url)


def _studies(url: str) -> list[dict[str, Any]]:
    with _reading(url) as con:
        names = con.execute("SELECT study_id, study_name FROM studies ORDER BY study_id").fetchall()
        directions: dict[int, list[str]] = {}
        for sid, d in con.execute("SELECT study_id, direction FROM study_directions "
                                  "ORDER BY study_direction_id"):
            directions.setdefault(sid, []).append(d.lower())
        attrs: dict[int, dict[str, str]] = {}
        for sid, key, value in con.execute(
                "SELECT study_id, key, value_json FROM study_user_attributes WHERE key IN (?, ?)",
                (SPEC_ATTR, BUDGET_ATTR)):
            attrs.setdefault(sid, {})[key] = value
        metric_names = {sid: json.loads(value) for sid, value in con.execute(
            "SELECT study_id, value_json FROM study_system_attributes WHERE key = ?",
            (METRIC_NAMES_KEY,))}
        counts: dict[int, dict[str, int]] = {}
        for sid, state, n in con.execute("SELECT study_id, state, count(*) FROM trials "
                                         "GROUP BY study_id, state"):
            counts.setdefault(sid, {})[state] = n
        stopped = dict(con.execute(
            "SELECT t.study_id, count(*) FROM trials t JOIN trial_user_attributes a ON "
            "a.trial_id = t.trial_id WHERE t.state = 'FAIL' AND a.key = ? AND a.value_json "
            "LIKE ? GROUP BY t.study_id", (FAIL_REASON_ATTR, f'"{INTERRUPTED}%')).fetchall())
        if con.execute(UNRANKED[None]).fetchone():
            raise NotHere("a value that does not read")  # Optuna's path names the study
        extremes: dict[int, list[float]] = {}
        for sid, vtype, lo, hi in con.execute(
                "SELECT t.study_id, v.value_type, min(v.value), max(v.value) FROM trials t "
                "JOIN trial_values v ON v.trial_id = t.trial_id WHERE t.state = 'COMPLETE' AND "
                "v.objective = 0 GROUP BY t.study_id, v.value_type"):
            if vtype in INFINITY:
                lo = hi = INFINITY[vtype]
            extremes.setdefault(sid, []).extend([float(lo), float(hi)])
    if any(set(c) - set(STATES) for c in counts.values()):
        raise NotHere("a trial state Optuna does not know")  # Optuna's path names the trial
    out = []
    for sid, name in names:
        n = {s: counts.get(sid, {}).get(s, 0) for s in STATES}
        dirs = directions.get(sid, [])
        names = objective_names(metric_names.get(sid), len(dirs))
        best = None
        if len(dirs) == 1 and n["COMPLETE"] and sid in extremes:
            best = max(extremes[sid]) if dirs[0] == "maximize" else min(extremes[sid])
        try:  # a damaged study: Optuna's path lists the others and names it in a warning
            a = {k: stored.attr_json(name, k, v) for k, v in attrs.get(sid, {}).items()}
            budget = stored.budget(name, a)
            if SPEC_ATTR in a and dirs != metric_directions(stored.metrics(name, a)):
                raise StorageError(name)  # damaged directions
        except StorageError as e:
            raise NotHere(name) from e
        out.append({
            "name": name, "directions": dirs, "metric_names": names,
            "budget": budget,
            "finished": n["COMPLETE"] + n["PRUNED"],
            "complete": n["COMPLETE"], "pruned": n["PRUNED"], "running": n["RUNNING"],
            "waiting": n["WAITING"], "failed": n["FAIL"] - stopped.get(sid, 0),
            "interrupted": stopped.get(sid, 0),
            "best_values": None if best is None else {names[0]: best},
            "made_by_hpo": SPEC_ATTR in a,
        })
    return out


def best(url: str, name: str, top: int) -> tuple[list[str], list[str], list[dict[str, Any]],
                                                  dict[str, Any] | None] | None:
    """hpo.results.optuna_reader.best_records' answer (the study's metrics and objective
    names, the records of its best trials with their rescores, the rescore attr), or None."""
    return _answer(_best, url, name, top)


def _best(url: str, name: str, top: int
          ) -> tuple[list[str], list[str], list[dict[str, Any]], dict[str, Any] | None]:
    with _reading(url) as con:
        (sid,) = con.execute("SELECT study_id FROM studies WHERE study_name = ?",
                             (name,)).fetchone()  # an unknown name: TypeError, Optuna's path
        dirs = [d for (d,) in con.execute("SELECT direction FROM study_directions WHERE "
                                          "study_id = ? ORDER BY study_direction_id", (sid,))]
        attrs = {k: stored.attr_json(name, k, v) for k, v in con.execute(
            "SELECT key, value_json FROM study_user_attributes WHERE study_id = ? AND key IN "
            "(?, ?)", (sid, SPEC_ATTR, RESCORE_ATTR))}
        if SPEC_ATTR not in attrs:
            raise NotHere(name)  # not hpo's: Optuna's path says so
        metrics = stored.metrics(name, attrs)
        if con.execute(UNRANKED["study"], (sid,)).fetchone():
            raise NotHere(name)  # a value that does not read: Optuna's path names it
        if [d.lower() for d in dirs] != metric_directions(metrics):
            raise NotHere(name)  # damaged directions: Optuna's path names them
        found = con.execute("SELECT value_json FROM study_system_attributes WHERE study_id = ? "
                            "AND key = ?", (sid, METRIC_NAMES_KEY)).fetchone()
        names = objective_names(None if found is None else json.loads(found[0]), len(dirs))
        ids = _top_ids(con, sid, dirs[0], top) if len(dirs) == 1 else _pareto_ids(
            con, sid, dirs, top)
        records = [_record(con, tid, names) for tid in ids]
    rescored = stored.rescores(name, attrs)
    return metrics, names, with_rescores(rescored, records), rescored


def _value(value: float | None, vtype: str) -> float:
    return INFINITY[vtype] if vtype in INFINITY else float(value)  # type: ignore[arg-type]


# Every statement is a constant with ? parameters: no value ever enters SQL text
# (tests/system/test_security.py checks). Optuna ranks a stored infinity (a NULL value with its
# type) by the type first; ties go to the lower trial number.
TOP = {
    "MAXIMIZE": "SELECT t.trial_id FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
                "WHERE t.study_id = ? AND t.state = 'COMPLETE' AND v.objective = 0 ORDER BY "
                "CASE v.value_type WHEN 'INF_NEG' THEN -1 WHEN 'FINITE' THEN 0 ELSE 1 END DESC, "
                "v.value DESC, t.number LIMIT ?",
    "MINIMIZE": "SELECT t.trial_id FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
                "WHERE t.study_id = ? AND t.state = 'COMPLETE' AND v.objective = 0 ORDER BY "
                "CASE v.value_type WHEN 'INF_NEG' THEN -1 WHEN 'FINITE' THEN 0 ELSE 1 END, "
                "v.value, t.number LIMIT ?",
}


# A complete trial whose finite value is NULL (SQLite stores a NaN so): damage, which cannot rank.
# Constant statements only (tests/system/test_security.py): in any study, and in one.
UNRANKED = {None: "SELECT 1 FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id WHERE "
                  "t.state = 'COMPLETE' AND v.value_type = 'FINITE' AND v.value IS NULL LIMIT 1",
            "study": "SELECT 1 FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
                     "WHERE t.state = 'COMPLETE' AND v.value_type = 'FINITE' AND v.value IS "
                     "NULL AND t.study_id = ? LIMIT 1"}


def _top_ids(con: sqlite3.Connection, sid: int, direction: str, top: int) -> list[int]:
    return [tid for (tid,) in con.execute(TOP[direction], (sid, top))]


def _pareto_ids(con: sqlite3.Connection, sid: int, dirs: list[str], top: int) -> list[int]:
    by_trial: dict[int, tuple[int, list[float]]] = {}
    for tid, number, objective, value, vtype in con.execute(
            "SELECT t.trial_id, t.number, v.objective, v.value, v.value_type FROM trials t "
            "JOIN trial_values v ON v.trial_id = t.trial_id WHERE t.study_id = ? AND "
            "t.state = 'COMPLETE'", (sid,)):
        by_trial.setdefault(tid, (number, [math.nan] * len(dirs)))[1][objective] = _value(
            value, vtype)
    return pareto_best(by_trial, [d == "MAXIMIZE" for d in dirs], top)


def _record(con: sqlite3.Connection, tid: int, names: list[str]) -> dict[str, Any]:
    number, state, start, complete = con.execute(
        "SELECT number, state, datetime_start, datetime_complete FROM trials WHERE trial_id = ?",
        (tid,)).fetchone()
    stored = con.execute("SELECT objective, value, value_type FROM trial_values WHERE "
                         "trial_id = ? ORDER BY objective", (tid,)).fetchall()
    values = [_value(v, vtype) for _, v, vtype in stored] or None
    params = {p: _external(value, json.loads(dist)) for p, value, dist in con.execute(
        "SELECT param_name, param_value, distribution_json FROM trial_params WHERE trial_id = ? "
        "ORDER BY param_id", (tid,))}
    attrs = {k: json.loads(v) for k, v in con.execute(
        "SELECT key, value_json FROM trial_user_attributes WHERE trial_id = ?", (tid,))}
    return record(number, state, values, params, attrs, _time(start), _time(complete), names)


def _external(value: float, dist: dict[str, Any]) -> Any:
    """A stored parameter as the user sees it (Optuna's `to_external_repr`)."""
    kind = dist["name"]
    if kind == "CategoricalDistribution":
        return dist["attributes"]["choices"][int(value)]
    if kind in ("IntDistribution", "IntUniformDistribution", "IntLogUniformDistribution"):
        return int(value)
    if kind in ("FloatDistribution", "UniformDistribution", "LogUniformDistribution",
                "DiscreteUniformDistribution"):
        return float(value)
    raise NotHere(kind)


def _time(stored: str | None) -> datetime | None:
    return datetime.fromisoformat(stored) if stored else None
