"""Damaged rows, named. Optuna turns every row into a value as it reads (a JSON attribute, an
enum state, a float), and one row it cannot read fails the whole read with a bare
JSONDecodeError, LookupError or AssertionError. These queries read the same rows as plain text
and name the first that does not read: its study, its trial, its table and key, and a statement
that repairs it; `explain` turns a failed read into that line (or a full disk's)."""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from optuna.trial import TrialState

from hpo.errors import StorageError, first_line
from hpo.store import diskfull, engines, optuna_api, stored
from hpo.store.attrs import BUDGET_ATTR, SPEC_ATTR
from hpo.store.urls import sqlite_path
from hpo.study.metrics import directions as metrics_directions

# The studies this process loaded (hpo.store.studies notes them): a failed read names their
# damage first.
_NOTED: list[str] = []


def note_study(name: str) -> None:
    if name not in _NOTED:
        _NOTED.append(name)


def _json_problem(text: Any) -> str | None:
    if text is None:
        return "is NULL, not JSON"
    try:
        json.loads(text)
    except (ValueError, TypeError) as e:
        return f"= {stored.shown(text)} is not JSON ({first_line(e)[:80]})"
    return None


def _number_problem(value: Any, vtype: Any, kinds: Collection[str], *, nan_ok: bool = False
                    ) -> str | None:
    """Why a stored number does not read back, or None. A NaN result is damage (Optuna fails a
    trial that returns one); a NaN report is not (`nan_ok`: Optuna reads it back as NaN)."""
    if vtype not in kinds:
        return f"has the value type {stored.shown(vtype)}, which Optuna does not know"
    if vtype == "FINITE" and value is None:
        return "is NULL (a finite value without its number)"
    if value is not None:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"= {stored.shown(value)} is not a number"
        if math.isnan(number) and not nan_ok:
            return "is NaN (Optuna never stores NaN as a result; a trial that gave one failed)"
    return None


def statement(engine: sa.engine.Engine, *statements: Any) -> str:
    """Statements the user can run to repair a row, as a command line for a SQLite file (shown
    by SQLAlchemy, values quoted by it: nothing is written out by hand)."""
    sql = "; ".join(" ".join(str(s.compile(dialect=engine.dialect,
                                            compile_kwargs={"literal_binds": True})).split())
                    for s in statements)
    path = sqlite_path(engine.url)
    if path is not None and "mode=ro" not in str(engine.url):
        return f'`sqlite3 {shlex.quote(str(path))} "{sql}"`'
    return f'`{sql}` on the database'


def _directions(engine: sa.engine.Engine, D: Any, sid: int, spec_json: Any,
                have: dict[int, tuple[int, str]], add: Any) -> None:
    """A study's direction rows against its definition's metrics: a row deleted or flipped by
    another tool would rank its worst trial best."""
    try:
        metrics = json.loads(spec_json).get("metrics")
        want = [d.upper() for d in metrics_directions(metrics)]
    except Exception:  # noqa: BLE001 - an unreadable definition is named on its own
        return
    for objective, direction in enumerate(want):
        pk, got = have.get(objective, (None, None))
        if got == direction:
            continue
        repair = (sa.insert(D).values(study_id=sid, objective=objective, direction=direction)
                  if pk is None else
                  sa.update(D).where(D.c.study_direction_id == pk).values(direction=direction))
        add(sid, None, f"study_directions direction of objective {objective}",
            "is missing" if got is None else f"is {stored.shown(got)}",
            f"its definition says {direction} {metrics[objective]}; set it back "
            f"({statement(engine, repair)}), or {stored.RESTORE}")


def damage(engine: sa.engine.Engine, study_ids: Collection[int] | None = None
           ) -> list[stored.Damage]:
    """Every row of these studies (all, when None) that Optuna or hpo cannot read back, in the
    order of their studies and trials."""
    from optuna.distributions import json_to_distribution
    from optuna.study import StudyDirection

    m = optuna_api.models()
    S, D = m.StudyModel.__table__, m.StudyDirectionModel.__table__
    T = m.TrialModel.__table__
    SU, SS = m.StudyUserAttributeModel.__table__, m.StudySystemAttributeModel.__table__
    TU, TS = m.TrialUserAttributeModel.__table__, m.TrialSystemAttributeModel.__table__
    P, V = m.TrialParamModel.__table__, m.TrialValueModel.__table__
    IV = m.TrialIntermediateValueModel.__table__
    text = sa.String
    found: list[tuple[int, int, stored.Damage]] = []
    restore = stored.RESTORE

    def of(query: Any, column: Any) -> Any:
        return query if study_ids is None else query.where(column.in_(list(study_ids)))

    def fail_trial(tid: int) -> Any:
        return sa.update(T).where(T.c.trial_id == tid).values(state=TrialState.FAIL)

    with engine.connect() as con:
        names = {sid: name for sid, name in con.execute(
            of(sa.select(S.c.study_id, S.c.study_name), S.c.study_id))}

        def add(sid: int, number: int | None, where: str, problem: str, fix: str) -> None:
            found.append((sid, -1 if number is None else number,
                          stored.Damage(names.get(sid, f"#{sid}"), number, where, problem, fix)))

        stored_dirs: dict[int, dict[int, tuple[int, str]]] = {}
        for pk, sid, objective, direction in con.execute(of(sa.select(
                D.c.study_direction_id, D.c.study_id, D.c.objective,
                sa.type_coerce(D.c.direction, text)), D.c.study_id)):
            stored_dirs.setdefault(sid, {})[objective] = (pk, direction)
            if direction not in StudyDirection.__members__:
                add(sid, None, "study_directions direction",
                    f"is {stored.shown(direction)}, not a direction Optuna knows", restore)
        for sid, value in con.execute(of(sa.select(SU.c.study_id, SU.c.value_json)
                                         .where(SU.c.key == SPEC_ATTR), SU.c.study_id)):
            _directions(engine, D, sid, value, stored_dirs.get(sid, {}), add)
        for table, kind in ((SU, "study_user_attributes"), (SS, "study_system_attributes")):
            pkc = table.c[f"{kind[:-len('attributes')]}attribute_id"]
            for pk, sid, key, value in con.execute(of(sa.select(
                    pkc, table.c.study_id, table.c.key, table.c.value_json), table.c.study_id)):
                problem = _json_problem(value)
                if problem is None and table is SU and key in (BUDGET_ATTR, SPEC_ATTR):
                    parsed = json.loads(value)
                    try:
                        if key == BUDGET_ATTR:
                            stored.budget("", {key: parsed})
                        elif not isinstance(parsed, dict):
                            problem = f"= {stored.shown(parsed)} is not a study definition"
                    except StorageError:
                        problem = f"= {stored.shown(parsed)} is not a number of trials"
                if problem is None:
                    continue
                drop = statement(engine, sa.delete(table).where(pkc == pk))
                fix = (stored.fix_of(key) if table is SU and key.startswith("hpo:")
                       else f"remove it ({drop}) or {restore}")
                add(sid, None, f"{kind} {key!r}", problem, fix)
        for tid, sid, number, state in con.execute(of(sa.select(
                T.c.trial_id, T.c.study_id, T.c.number, sa.type_coerce(T.c.state, text)),
                T.c.study_id)):
            if state not in TrialState.__members__:
                add(sid, number, "state (trials.state)",
                    f"is {stored.shown(state)}, not a trial state Optuna knows",
                    f"mark the trial failed ({statement(engine, fail_trial(tid))}), or {restore}")

        def trial_rows(*columns: Any, table: Any) -> Any:
            return con.execute(of(sa.select(T.c.trial_id, T.c.study_id, T.c.number, *columns)
                                  .join(T, T.c.trial_id == table.c.trial_id), T.c.study_id))

        for table, kind in ((TU, "trial_user_attributes"), (TS, "trial_system_attributes")):
            pkc = table.c[f"{kind[:-len('attributes')]}attribute_id"]
            for _tid, sid, number, pk, key, value in trial_rows(
                    pkc, table.c.key, table.c.value_json, table=table):
                problem = _json_problem(value)
                if problem is not None:
                    add(sid, number, f"{kind} {key!r}", problem,
                        f"remove it ({statement(engine, sa.delete(table).where(pkc == pk))}); "
                        f"hpo then reads the trial without it; or {restore}")
        for tid, sid, number, pk, name, value, dist in trial_rows(
                P.c.param_id, P.c.param_name, sa.type_coerce(P.c.param_value, text),
                P.c.distribution_json, table=P):
            try:
                json_to_distribution(dist).to_external_repr(float(value))
                continue
            except Exception as e:  # noqa: BLE001 - anything that does not read is the damage
                problem = (f"(value {stored.shown(value)}, distribution "
                           f"{stored.shown(dist)}) does not read "
                           f"({type(e).__name__}: {first_line(e)[:80]})")
            add(sid, number, f"trial_params {name!r}", problem,
                f"mark the trial failed without this parameter ("
                f"{statement(engine, sa.delete(P).where(P.c.param_id == pk), fail_trial(tid))})"
                f", or {restore}")
        kinds = m.TrialValueModel.TrialValueType.__members__
        for tid, sid, number, pk, objective, value, vtype in trial_rows(
                V.c.trial_value_id, V.c.objective, sa.type_coerce(V.c.value, text),
                sa.type_coerce(V.c.value_type, text), table=V):
            problem = _number_problem(value, vtype, kinds)
            if problem is not None:
                gone = sa.delete(V).where(V.c.trial_value_id == pk)
                add(sid, number, f"trial_values value of objective {objective}", problem,
                    f"mark the trial failed without it ({statement(engine, gone, fail_trial(tid))})"
                    f", or {restore}")
        ikinds = m.TrialIntermediateValueModel.TrialIntermediateValueType.__members__
        for _tid, sid, number, pk, step, value, vtype in trial_rows(
                IV.c.trial_intermediate_value_id, IV.c.step,
                sa.type_coerce(IV.c.intermediate_value, text),
                sa.type_coerce(IV.c.intermediate_value_type, text), table=IV):
            problem = _number_problem(value, vtype, ikinds, nan_ok=True)
            if problem is not None:
                report = sa.delete(IV).where(IV.c.trial_intermediate_value_id == pk)
                add(sid, number, f"trial_intermediate_values value of step {step}", problem,
                    f"remove that step's report ({statement(engine, report)}), or {restore}")
    return [d for _, _, d in sorted(found, key=lambda f: (f[0], f[1]))]


def first_damage(engine: sa.engine.Engine, study_ids: Collection[int] | None = None) -> str:
    """One line for the first damaged row, or for there being none found."""
    found = damage(engine, study_ids)
    if not found:
        return ("a stored value could not be read, but no damaged row was found; restore the "
                "database from a copy")
    more = len(found) - 1
    return found[0].line() + (f" ({more} more damaged rows)" if more else "")


def explain(e: BaseException) -> str | None:
    """The one line for a read that failed in the storage this process opened last: a full disk,
    or the first damaged row (of a study the command loaded, first). None when neither is
    found; the caller then says what it can."""
    for u in engines.opened_urls():
        full = diskfull.full_disk(u, e)
        if full is not None:
            return full
        engine = sa.create_engine(u, **engines.engine_kwargs(u))
        try:
            found = damage(engine)
        except Exception:  # noqa: BLE001 - a diagnosis must not hide the error it explains
            continue
        finally:
            engine.dispose()
        if found:
            noted = [d for d in found if d.study in _NOTED]
            more = len(found) - 1
            return (noted or found)[0].line() + (
                f" ({more} more damaged rows; `hpo studies` names each damaged study)"
                if more else "")
    return None
