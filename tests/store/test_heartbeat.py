"""hpo.store.heartbeat: the heartbeat contract belongs to the study. Every process judges a
trial dead by the study's stored grace period; a variable that disagrees is reported, never
obeyed, so one impatient `hpo fail-stale` or worker cannot fail a healthy worker's trial."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from hpo.cli import app
from hpo.errors import StorageError
from hpo.store import heartbeat
from hpo.store.attrs import HEARTBEAT_ATTR
from hpo.store.engines import open_storage
from hpo.store.studies import create_study, load
from hpo.study.parse import load_study_file
from tests.support.searchprocs import age_heartbeat


def test_a_new_study_keeps_the_contract_of_the_process_that_made_it(
        storage_url: str, study_file: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", "3")
    monkeypatch.setenv("HPO_GRACE_PERIOD", "45")
    study = create_study(load_study_file(study_file()), open_storage(storage_url, create=True))
    assert study.user_attrs[HEARTBEAT_ATTR] == {"interval": 3, "grace": 45, "max_retry": 3}


def test_an_impatient_fail_stale_is_reported_and_not_obeyed(
        storage_url: str, study_file: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = study_file()
    name = load_study_file(path).name
    study = create_study(load_study_file(path), open_storage(storage_url, create=True))
    assert study.user_attrs[HEARTBEAT_ATTR]["grace"] == 30
    healthy = study.ask()  # its heartbeat came with the claim
    age_heartbeat(storage_url, healthy._trial_id, 10)  # 10 s old: fine by the study's 30 s
    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPO_GRACE_PERIOD", "2")
    r = CliRunner().invoke(app, ["fail-stale", name, "--storage", storage_url])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"failed 0 of 1 running trial of '{name}'")
    assert "HPO_HEARTBEAT_INTERVAL=1, HPO_GRACE_PERIOD=2 differ from study" in r.stderr
    storage = open_storage(storage_url)
    assert load(name, storage)[0].trials[healthy.number].state == TrialState.RUNNING
    assert storage.grace_period == 30  # this process follows the study
    age_heartbeat(storage_url, healthy._trial_id, 3600)  # dead by the study's contract too
    r = CliRunner().invoke(app, ["fail-stale", name, "--storage", storage_url])
    assert r.stdout.startswith(f"failed 1 of 1 running trial of '{name}'"), r.output


@pytest.mark.parametrize("value", ["many", {"interval": 5, "grace": 5, "max_retry": 3},
                                   {"interval": 5, "grace": True, "max_retry": 3},
                                   {"interval": 5}, [5, 30, 3]])
def test_a_contract_hpo_did_not_write_is_one_line(value: object) -> None:
    study = SimpleNamespace(study_name="s", user_attrs={HEARTBEAT_ATTR: value})
    with pytest.raises(StorageError) as info:
        heartbeat.stored(study)  # type: ignore[arg-type]
    assert HEARTBEAT_ATTR in str(info.value) and len(str(info.value).splitlines()) == 1


def test_a_study_made_before_contracts_follows_the_variables_as_it_did() -> None:
    study = SimpleNamespace(study_name="old", user_attrs={})
    assert heartbeat.stored(study) is None  # type: ignore[arg-type]


def test_a_trial_another_client_started_without_heartbeats_is_judged_like_any_other(
        storage_url: str, study_file: Callable[..., Path]) -> None:
    """A plain Optuna client's ask() leaves a RUNNING trial with no heartbeat row: workers would
    wait for it for ever (the tester's hang). hpo gives it a first beat by the database's
    clock; the study's grace period then judges it, and fail-stale fails it once that passed."""
    import optuna

    path = study_file()
    name = load_study_file(path).name
    create_study(load_study_file(path), open_storage(storage_url, create=True))
    plain = optuna.load_study(study_name=name, storage=storage_url).ask()  # no heartbeat
    r = CliRunner().invoke(app, ["fail-stale", name, "--storage", storage_url])
    assert r.stdout.startswith(f"failed 0 of 1 running trial of '{name}'"), r.output
    assert re.search(r"heartbeat \d+ s old, under the study's 30 s grace period", r.stdout), (
        r.output)  # its first beat, given now (seconds ago on a loaded machine)
    age_heartbeat(storage_url, plain._trial_id, 31)  # its first beat, past the grace period
    r = CliRunner().invoke(app, ["fail-stale", name, "--storage", storage_url])
    assert r.stdout.startswith(f"failed 1 of 1 running trial of '{name}'"), r.output
    storage = open_storage(storage_url)
    assert load(name, storage)[0].trials[plain.number].state == TrialState.FAIL
