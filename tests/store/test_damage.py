"""hpo.store.damage on every backend: a row Optuna cannot read back is named (study, trial, table,
key) in one line with a statement that repairs it, rendered for that database; running the
statement makes the command work again."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import optuna
import sqlalchemy as sa
from typer.testing import CliRunner

from hpo.cli import app
from hpo.store import damage, optuna_api
from hpo.store.engines import open_storage
from hpo.store.studies import ensure_study
from hpo.study.parse import load_study_file


def test_a_damaged_trial_attribute_is_named_with_a_statement_that_repairs_it(
        storage_url: str, study_file: Callable[..., Path]) -> None:
    spec = load_study_file(study_file())
    storage = open_storage(storage_url, create=True, heartbeat=False)
    study = ensure_study(spec, storage).study
    for number in range(2):
        t = study.ask()
        t.set_user_attr("learning_curve", [1.0, 2.0])
        study.tell(t, 10.0 + number)
    tid = study.trials[1]._trial_id
    A = optuna_api.models().TrialUserAttributeModel.__table__
    with storage.engine.begin() as con:  # what another tool, or damage, leaves behind
        con.execute(sa.update(A).where(A.c.trial_id == tid, A.c.key == "learning_curve")
                    .values(value_json="[1.0, 2"))
    found = [d for d in damage.damage(storage.engine) if d.study == spec.name]
    assert [(d.trial, d.where) for d in found] == [(1, "trial_user_attributes 'learning_curve'")]

    r = CliRunner().invoke(app, ["trials", spec.name, "--storage", storage_url])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert (f"study '{spec.name}', trial 1: its stored trial_user_attributes 'learning_curve' = "
            "'[1.0, 2' is not JSON") in lines[0], lines
    m = re.search(r'`(?:sqlite3 \S+ ")?(DELETE FROM [^"`]+)"?`', lines[0])
    assert m is not None, lines[0]
    with storage.engine.begin() as con:  # as the user would paste it into their SQL client
        for statement in m.group(1).split("; "):
            con.execute(sa.text(statement))
    r = CliRunner().invoke(app, ["trials", spec.name, "--storage", storage_url])
    assert r.exit_code == 0 and "11" in r.stdout, r.output  # trial 1's value, readable again
    assert not [d for d in damage.damage(storage.engine) if d.study == spec.name]
    assert optuna.load_study(study_name=spec.name, storage=storage).trials[1].user_attrs == {}
    storage.engine.dispose()


def test_a_value_that_is_no_number_never_ranks_and_is_named(
        storage_url: str, study_file: Callable[..., Path]) -> None:
    """NaN sorts above every number in PostgreSQL: a damaged value ranked first in `best` and
    was exported. A NaN (NULL on SQLite, which stores NaN so) is no result: `best` ranks the
    trials that have one, and `hpo studies` names the damaged row."""
    import pytest

    spec = load_study_file(study_file())
    storage = open_storage(storage_url, create=True, heartbeat=False)
    study = ensure_study(spec, storage).study
    for value in (10.0, 20.0):
        t = study.ask()
        study.tell(t, value)
    V = optuna_api.models().TrialValueModel.__table__
    try:
        with storage.engine.begin() as con:
            con.execute(sa.update(V).where(V.c.trial_id == study.trials[1]._trial_id)
                        .values(value=float("nan")))
    except sa.exc.DBAPIError:
        pytest.skip("this database stores no NaN")  # MySQL refuses it
    r = CliRunner().invoke(app, ["best", spec.name, "--json", "--storage", storage_url])
    assert r.exit_code == 0, r.output
    assert [t["number"] for t in __import__("json").loads(r.stdout)] == [0]
    r = CliRunner().invoke(app, ["studies", "--storage", storage_url])
    assert r.exit_code == 0, r.output
    assert f"study '{spec.name}', trial 1: its stored trial_values value of objective 0 is" in (
        r.stderr), r.stderr
    storage.engine.dispose()
