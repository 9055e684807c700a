"""`hpo studies`, `hpo best` and `hpo trials` speak one vocabulary: the objective named by the
study's metric name (as Optuna's own CLI keys it) in CSV headers, JSON keys and table headers;
states as Optuna spells them; every field explained in the command's --help; counts in the right
number."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from hpo.cli import app
from hpo.results.records import TRIAL_FIELDS
from hpo.store.attrs import RESCORE_ATTR
from hpo.store.engines import open_storage
from hpo.store.studies import create_study
from hpo.study.parse import load_study_file

METRIC = "% noise removed on validation"
SPACE = {"hidden_size": IntDistribution(4, 8), "shift": IntDistribution(0, 5),
         "epochs": IntDistribution(2, 4)}


def invoke(*args: str) -> Any:
    r = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture
def made(tmp_path: Path, study_file: Callable[..., Path]) -> tuple[str, str]:
    """A study made by hpo (so Optuna holds its metric name), with a complete, a diverged (PRUNED)
    and a failed trial, and one trial rescored."""
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    spec = load_study_file(study_file())
    study = create_study(spec, open_storage(url, create=True))
    params = {"hidden_size": 6, "shift": 2, "epochs": 3}
    for state, values, attrs in [
            (TrialState.COMPLETE, [42.5], {"epochs_run": 3, "train_seconds": 1.5,
                                           "cpu_seconds": 1.4, "seeds": [7]}),
            (TrialState.PRUNED, None, {"status": "diverged", "reason": "loss became nan",
                                       "epochs_run": 1}),
            (TrialState.FAIL, None, {"fail_reason": "killed"})]:
        study.add_trial(create_trial(state=state, values=values, params=params,
                                     distributions=SPACE, user_attrs=attrs))
    study.set_user_attr(RESCORE_ATTR, {"0": {"number": 0, "val_mean": 41.0, "val_std": 0.5,
                                             "seeds": 1, "val_curves": 500}})
    return spec.name, url


def header_of(table: str) -> str:
    """The header row of a rich table as printed (a wide one: one line)."""
    return next(line for line in table.splitlines() if line.startswith("┃"))


@pytest.mark.parametrize("options", ["", "?timeout=30"], ids=["sqlite-reader", "optuna"])
def test_the_objective_is_named_by_its_metric_name_everywhere(made: tuple[str, str],
                                                              options: str) -> None:
    name, url = made
    url += options
    best = json.loads(invoke("best", name, "--storage", url, "--json").stdout)
    assert best[0]["values"] == {METRIC: 42.5} and best[0]["state"] == "COMPLETE"
    trials = json.loads(invoke("trials", name, "--storage", url, "--format", "json").stdout)
    assert [t["values"] for t in trials] == [{METRIC: 42.5}, {METRIC: None}, {METRIC: None}]
    assert [t["state"] for t in trials] == ["COMPLETE", "PRUNED", "FAIL"]
    assert trials[1]["training_ended"] == "diverged" and "status" not in trials[1]
    rows = list(csv.DictReader(io.StringIO(
        invoke("trials", name, "--storage", url, "--format", "csv").stdout)))
    assert [r[f"values_{METRIC}"] for r in rows] == ["42.5", "", ""]
    assert rows[0]["params_hidden_size"] == "6" and rows[1]["training_ended"] == "diverged"
    assert [r["state"] for r in rows] == ["COMPLETE", "PRUNED", "FAIL"]
    for table in (invoke("best", name, "--storage", url).stdout,
                  invoke("trials", name, "--storage", url).stdout):
        assert f" {METRIC} " in header_of(table) and " epochs_run " in header_of(table)
    studies = json.loads(invoke("studies", "--storage", url, "--json").stdout)
    assert studies[0]["best_values"] == {METRIC: 42.5}
    assert studies[0]["metric_names"] == [METRIC] and studies[0]["made_by_hpo"] is True
    table = invoke("studies", "--storage", url).stdout
    assert " best_values " in header_of(table) and " metric_names " in header_of(table)
    assert METRIC in table and "42.50" in table


def test_hpo_agrees_with_optunas_cli(made: tuple[str, str]) -> None:
    """Optuna keys the value by the same name (`optuna best-trial -f json`)."""
    name, url = made
    study = optuna.load_study(study_name=name, storage=url)
    assert study.metric_names == [METRIC]
    best = json.loads(invoke("best", name, "--storage", url, "--json").stdout)[0]
    assert best["values"] == {METRIC: study.best_trial.value}
    assert best["state"] == study.best_trial.state.name


def test_state_takes_any_case(made: tuple[str, str]) -> None:
    name, url = made
    for spelled in ("PRUNED", "pruned", "Pruned"):
        rows = json.loads(invoke("trials", name, "--storage", url, "--format", "json",
                                 "--state", spelled).stdout)
        assert [r["state"] for r in rows] == ["PRUNED"]
    r = CliRunner().invoke(app, ["trials", name, "--storage", url, "--state", "done"])
    assert r.exit_code != 0 and "COMPLETE, PRUNED, FAIL" in r.stderr


def help_of(command: str) -> str:
    return " ".join(invoke(command, "--help").stdout.split())


def test_every_field_is_explained_in_help(made: tuple[str, str]) -> None:
    name, url = made
    for command in ("best", "trials"):
        text = help_of(command)
        for field in TRIAL_FIELDS:
            assert f"{field}:" in text, (command, field)
    assert "rescored:" in help_of("best")
    # Every JSON key, CSV column and table header a command printed here.
    shown = {"best": set(), "trials": set(), "studies": set()}
    for r in json.loads(invoke("best", name, "--storage", url, "--json").stdout):
        shown["best"] |= set(r)
    for r in json.loads(invoke("trials", name, "--storage", url, "--format", "json").stdout):
        shown["trials"] |= set(r)
    csv_head = invoke("trials", name, "--storage", url, "--format", "csv").stdout.splitlines()[0]
    shown["trials"] |= {re.sub(r"^(values|params)_.*", r"\1", c) for c in csv_head.split(",")}
    for command, args in (("best", [name]), ("trials", [name]), ("studies", [])):
        table = invoke(command, *args, "--storage", url).stdout
        shown[command] |= {h for h in re.split(r"\s*[┃│]\s*", header_of(table)) if h} - {
            "#", METRIC, *SPACE}
    shown["studies"] |= set(json.loads(invoke("studies", "--storage", url, "--json").stdout)[0])
    for command, fields in shown.items():
        text = help_of(command)
        missing = sorted(f for f in fields if f"{f}:" not in text)
        assert not missing, (command, missing)
    assert "# in the table" in help_of("best")


def test_counts_read_in_the_right_number(made: tuple[str, str]) -> None:
    name, url = made
    out = invoke("best", name, "--storage", url).stdout
    assert "best on 1 seed x 500 validation curves" in out and "1 trial rescored" in out
    assert "(s)" not in out
