"""Every query hpo makes on Optuna's tables, in one module beside its private API.

hpo asks the database what Optuna would answer only by loading every trial: counts per state,
the best values and trials, and which artifacts a study's trials reference. One grouped query
costs the same with 10 trials or 10,000 (bench/storage.py measures both paths). The tables are
Optuna's models (hpo.store.optuna_api.models); tests/store/test_optuna_api.py holds this module
to the same answers on SQLite, PostgreSQL and MySQL.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hpo.errors import StorageError
from hpo.store import damage, optuna_api
from hpo.store.attrs import (
    ARTIFACT_PREFIX,
    DASHBOARD_PREFIX,
    FAIL_REASON_ATTR,
    INTERRUPTED,
    dashboard_trial,
)

# Optuna names every artifact by a uuid4; anything else in a key is not ours to touch.
ARTIFACT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def state_counts_by_study(rdb: optuna.storages.RDBStorage, sid: int | None = None,
                          damaged: set[int] | None = None) -> dict[int, dict[TrialState, int]]:
    """Trials per study and state (of one study, given `sid`), counted by the database in one
    grouped query rather than by loading every trial with its params, attrs and intermediate
    values, as get_trials does. A state Optuna does not know (damage, another tool) is refused
    in one line naming the trial, or, given `damaged`, its study is added there and the trial
    not counted."""
    T = optuna_api.models().TrialModel
    # As text: Optuna's Enum column raises a LookupError on a state it does not know.
    state = sa.type_coerce(T.state, sa.String)
    query = sa.select(T.study_id, state, sa.func.count())
    if sid is not None:
        query = query.where(T.study_id == sid)
    out: dict[int, dict[TrialState, int]] = {}
    with rdb.engine.connect() as con:
        rows = con.execute(query.group_by(T.study_id, state)).all()
    for study, name, n in rows:
        if name not in TrialState.__members__:
            if damaged is None:
                raise StorageError(damage.first_damage(rdb.engine, {study}))
            damaged.add(study)
            continue
        out.setdefault(study, {})[TrialState[name]] = int(n)
    return out


def state_counts(rdb: optuna.storages.RDBStorage, sid: int) -> dict[TrialState, int]:
    """One study's trials per state, every state present (0 when none)."""
    return {**dict.fromkeys(TrialState, 0), **state_counts_by_study(rdb, sid).get(sid, {})}


def _readable(V: Any) -> Any:
    """A stored value Optuna can read back: an infinity by its type, or a finite number (a NULL
    or NaN finite value, which only damage or another tool leaves, is no value at all: NaN
    sorts above every number in PostgreSQL and would rank first; hpo.store.damage names it)."""
    return sa.or_(V.value_type != V.TrialValueType.FINITE,
                  V.value.between(-sys.float_info.max, sys.float_info.max))


def unranked(rdb: optuna.storages.RDBStorage) -> set[int]:
    """The studies with a complete trial whose finite value does not read (NULL or NaN): that
    trial cannot rank, and the readers say so rather than leave it out without a word."""
    m = optuna_api.models()
    T, V = m.TrialModel, m.TrialValueModel
    query = (sa.select(T.study_id).distinct().join(V, V.trial_id == T.trial_id)
             .where(T.state == TrialState.COMPLETE, V.value_type == V.TrialValueType.FINITE,
                    sa.or_(V.value.is_(None), sa.not_(V.value.between(  # NULL: three values
                        -sys.float_info.max, sys.float_info.max)))))
    with rdb.engine.connect() as con:
        return {sid for (sid,) in con.execute(query)}


def study_ids(rdb: optuna.storages.RDBStorage) -> list[tuple[int, str]]:
    """(id, name) of every study, in the order they were made."""
    S = optuna_api.models().StudyModel
    with rdb.engine.connect() as con:
        return [(sid, name) for sid, name in con.execute(
            sa.select(S.study_id, S.study_name).order_by(S.study_id))]


def study_user_attrs(rdb: optuna.storages.RDBStorage, sid: int
                     ) -> tuple[dict[str, Any], dict[str, str | None]]:
    """A study's user attrs, each parsed on its own: (those that read, the raw text of those that
    are not JSON), where Optuna's study.user_attrs fails on the first one that does not read."""
    A = optuna_api.models().StudyUserAttributeModel
    good: dict[str, Any] = {}
    bad: dict[str, str | None] = {}
    with rdb.engine.connect() as con:
        for key, value in con.execute(sa.select(A.key, A.value_json).where(A.study_id == sid)):
            try:
                good[key] = json.loads(value)
            except (ValueError, TypeError):
                bad[key] = value
    return good, bad


def interrupted_counts(rdb: optuna.storages.RDBStorage, sid: int | None = None
                       ) -> dict[int, int]:
    """Failed trials per study (of one study, given `sid`) that were failed because their
    worker was interrupted (Ctrl-C, SIGTERM): not failures of the trial, and re-queued at once."""
    m = optuna_api.models()
    T, A = m.TrialModel, m.TrialUserAttributeModel
    query = (sa.select(T.study_id, sa.func.count()).join(A, A.trial_id == T.trial_id)
             .where(T.state == TrialState.FAIL, A.key == FAIL_REASON_ATTR,
                    A.value_json.like(f'"{INTERRUPTED}%'))
             .group_by(T.study_id))
    if sid is not None:
        query = query.where(T.study_id == sid)
    with rdb.engine.connect() as con:
        return {sid: int(n) for sid, n in con.execute(query)}


def silent_running(rdb: optuna.storages.RDBStorage, study_id: int) -> list[int]:
    """RUNNING trials with no heartbeat row at all: hpo's storage gives every trial its first
    beat as it starts, so these were started by a client that sends none (plain Optuna's ask)."""
    m = optuna_api.models()
    T, H = m.TrialModel, m.TrialHeartbeatModel
    query = (sa.select(T.trial_id).outerjoin(H, H.trial_id == T.trial_id)
             .where(T.study_id == study_id, T.state == TrialState.RUNNING, H.trial_id.is_(None)))
    with rdb.engine.connect() as con:
        return [tid for (tid,) in con.execute(query)]


def heartbeat_ages(rdb: optuna.storages.RDBStorage, study_id: int) -> dict[int, float]:
    """Seconds since each RUNNING trial's last heartbeat (trial id -> age), by the database's
    clock: the clock every process judges staleness by."""
    m = optuna_api.models()
    T, H = m.TrialModel, m.TrialHeartbeatModel
    query = (sa.select(T.trial_id, H.heartbeat, sa.func.now()).join(H, H.trial_id == T.trial_id)
             .where(T.study_id == study_id, T.state == TrialState.RUNNING))
    with rdb.engine.connect() as con:
        return {tid: (now.replace(tzinfo=None) - beat).total_seconds()
                for tid, beat, now in con.execute(query)}


def value_extremes(rdb: optuna.storages.RDBStorage
                    ) -> dict[int, tuple[float | None, float | None]]:
    """(lowest, highest) first-objective value of each study's complete trials, in one query;
    infinities (stored as NULL values with a type) included."""
    m = optuna_api.models()
    T, V = m.TrialModel, m.TrialValueModel

    kind = V.TrialValueType
    found: dict[int, list[float]] = {}
    query = (sa.select(T.study_id, V.value_type, sa.func.min(V.value), sa.func.max(V.value))
             .join(V, V.trial_id == T.trial_id)
             .where(T.state == TrialState.COMPLETE, V.objective == 0, _readable(V))
             .group_by(T.study_id, V.value_type))
    with rdb.engine.connect() as con:
        for study_id, vtype, lo, hi in con.execute(query):
            if vtype == kind.INF_POS:
                lo = hi = math.inf
            elif vtype == kind.INF_NEG:
                lo = hi = -math.inf
            found.setdefault(study_id, []).extend([lo, hi])
    return {sid: (min(v), max(v)) for sid, v in found.items()}


def complete_values(rdb: optuna.storages.RDBStorage, study_id: int
                     ) -> list[tuple[int, int, int, float]]:
    """(trial id, number, objective, value) of the study's complete trials, values as floats."""
    m = optuna_api.models()
    T, V = m.TrialModel, m.TrialValueModel

    kind = V.TrialValueType
    # Optuna stores an infinity as a NULL value with its type; finite values as themselves.
    inf = {kind.INF_POS: math.inf, kind.INF_NEG: -math.inf}
    query = (sa.select(T.trial_id, T.number, V.objective, V.value, V.value_type)
             .join(V, V.trial_id == T.trial_id)
             .where(T.study_id == study_id, T.state == TrialState.COMPLETE, _readable(V)))
    with rdb.engine.connect() as con:
        return [(tid, number, objective, inf.get(vtype, value))
                for tid, number, objective, value, vtype in con.execute(query)]


def top_ids(rdb: optuna.storages.RDBStorage, study_id: int, direction: StudyDirection,
             top: int) -> list[int]:
    m = optuna_api.models()
    T, V = m.TrialModel, m.TrialValueModel

    # Infinities are stored as NULL values with a type; rank them by type first, as Optuna does.
    kind = V.TrialValueType
    rank = sa.case((V.value_type == kind.INF_NEG, -1), (V.value_type == kind.FINITE, 0),
                   else_=1)
    order = ([rank.desc(), V.value.desc()] if direction == StudyDirection.MAXIMIZE
             else [rank, V.value])
    query = (sa.select(T.trial_id).join(V, V.trial_id == T.trial_id)
             .where(T.study_id == study_id, T.state == TrialState.COMPLETE, V.objective == 0,
                    _readable(V))
             .order_by(*order, T.number).limit(top))
    with rdb.engine.connect() as con:
        return [row[0] for row in con.execute(query)]


# Optuna has no delete. The dashboard deletes by overwriting the metadata with the JSON string
# "null", which its listings skip; prune writes the same marker, so that a trial pruned here looks
# to the dashboard exactly like one whose artifact was deleted from its page.
REMOVED = json.dumps("null")


def _live(value_json: str | None) -> bool:
    return value_json not in (None, "null", REMOVED)


def artifact_references(rdb: optuna.storages.RDBStorage, ids: set[str]
                ) -> list[tuple[str, int, str, str]]:
    """Every live reference to `ids` in the whole database: (table, owner id, key, id). A study
    copied with optuna.copy_study shares its artifact ids with the original."""
    models = optuna_api.models()
    ts = models.TrialSystemAttributeModel.__table__
    ss = models.StudySystemAttributeModel.__table__
    out: list[tuple[str, int, str, str]] = []
    with rdb.engine.connect() as con:
        ordered = sorted(ids)
        for i in range(0, len(ordered), 200):
            keys = [ARTIFACT_PREFIX + a for a in ordered[i:i + 200]]
            rows = con.execute(sa.select(ts.c.trial_id, ts.c.key, ts.c.value_json)
                               .where(ts.c.key.in_(keys)))
            out += [("trial", r[0], r[1], r[1][len(ARTIFACT_PREFIX):]) for r in rows if _live(r[2])]
        rows = con.execute(sa.select(ss.c.study_id, ss.c.key, ss.c.value_json).where(
            sa.or_(ss.c.key.like(ARTIFACT_PREFIX + "%"), ss.c.key.like(DASHBOARD_PREFIX + "%"))))
        out += [("study", r[0], r[1], r[1].rsplit(":", 1)[-1]) for r in rows
                if _live(r[2]) and r[1].rsplit(":", 1)[-1] in ids]
    return out


def artifact_ids(rdb: optuna.storages.RDBStorage, study_id: int, trial_ids: set[int]
                 ) -> set[str]:
    """The artifact ids (uuids only) recorded on these trials, or uploaded to them from the
    dashboard's page."""
    ids = set()
    for tid in trial_ids:
        for k, v in rdb.get_trial_system_attrs(tid).items():
            if k.startswith(ARTIFACT_PREFIX) and v not in (None, "null"):
                ids.add(k[len(ARTIFACT_PREFIX):])
    for k, v in rdb.get_study_system_attrs(study_id).items():
        if dashboard_trial(k) in trial_ids and v not in (None, "null"):
            ids.add(k.rsplit(":", 1)[-1])
    return {i for i in ids if ARTIFACT_ID.match(i)}


def mark_removed(rdb: optuna.storages.RDBStorage, refs: list[tuple[str, int, str, str]]) -> None:
    """Marks each reference (from artifact_references) removed, in one transaction, as the
    dashboard does when a user deletes an artifact from its page."""
    models = optuna_api.models()
    ts = models.TrialSystemAttributeModel.__table__
    ss = models.StudySystemAttributeModel.__table__
    with rdb.engine.begin() as con:
        for table, owner, key, _ in refs:
            tbl, col = (ts, ts.c.trial_id) if table == "trial" else (ss, ss.c.study_id)
            con.execute(sa.update(tbl).where(col == owner, tbl.c.key == key)
                        .values(value_json=REMOVED))
