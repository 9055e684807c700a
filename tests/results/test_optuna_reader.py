"""Queries that answer from the database without loading every trial, and the objective's
lighter storage traffic (issue 7): same answers as the load-everything path, fewer writes."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
import pytest
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

import hpo.results.optuna_reader as q
from hpo.results.records import to_csv
from hpo.run.objective import progress_steps, pruning_marks, set_user_attrs
from hpo.store.engines import open_storage
from hpo.store.studies import create_study
from hpo.study.parse import load_study_file
from hpo.study.strategies import PrunerSpec

DIST: dict[str, BaseDistribution] = {"x": FloatDistribution(0, 1)}


def add(study: optuna.Study, state: TrialState, values: list[float] | None = None,
        attrs: dict[str, Any] | None = None) -> None:
    study.add_trial(create_trial(state=state, values=values, params={"x": 0.5},
                                 distributions=DIST, user_attrs=attrs or {},
                                 intermediate_values={5: 1.0} if values is None else {}))


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_best_trials_match_the_load_everything_path(
        storage_url: str, direction: Literal["maximize", "minimize"]) -> None:
    storage = open_storage(storage_url, create=True, heartbeat=False)
    name = f"q-{direction}-{np.random.default_rng().integers(1 << 40):x}"
    study = optuna.create_study(study_name=name, storage=storage, direction=direction)
    rng = np.random.default_rng(0)
    for v in [*rng.integers(0, 5, 30).astype(float), math.inf, -math.inf, 2.0, 2.0]:
        add(study, TrialState.COMPLETE, [float(v)], {"curve": [1.0] * 50})
    add(study, TrialState.PRUNED)
    add(study, TrialState.FAIL)
    try:
        for top in (1, 3, 10, 100):
            fast = [t.number for t in q.best_trials(study, top)]
            slow = [t.number for t in q._best_trials_loaded(study, top)]
            assert fast == slow, top
        best = q.best_trials(study, 1)[0]
        assert best.user_attrs == {"curve": [1.0] * 50} and best.params == {"x": 0.5}
    finally:
        optuna.delete_study(study_name=name, storage=storage)


def test_pareto_front_matches_optuna(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'p.db'}", create=True, heartbeat=False)
    study = optuna.create_study(study_name="p", storage=storage,
                                directions=["maximize", "minimize"])
    rng = np.random.default_rng(1)
    for a, b in rng.integers(0, 6, (60, 2)).astype(float):
        add(study, TrialState.COMPLETE, [float(a), float(b)])
    add(study, TrialState.COMPLETE, [math.inf, 3.0])
    for top in (1, 5, 100):
        assert ([t.number for t in q.best_trials(study, top)]
                == [t.number for t in q._best_trials_loaded(study, top)])


def test_studies_counts_match_a_full_load(storage_url: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    storage = open_storage(storage_url, create=True, heartbeat=False)
    name = f"q-studies-{np.random.default_rng().integers(1 << 40):x}"
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.ask()  # one running (before the waiting one, which ask would pop)
    for state, values in [(TrialState.COMPLETE, [3.0]), (TrialState.COMPLETE, [5.0]),
                          (TrialState.PRUNED, None), (TrialState.FAIL, None),
                          (TrialState.WAITING, None)]:
        add(study, state, values)
    # Stopped by Ctrl-C: failed and re-queued, shown as interrupted, not as a failure.
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={
        "fail_reason": "interrupted (Ctrl-C or SIGTERM); its parameters were re-queued"}))
    lowest = f"{name}-min"
    other = optuna.create_study(study_name=lowest, storage=storage, direction="minimize")
    for v in (4.0, -math.inf, 2.0):
        add(other, TrialState.COMPLETE, [v])
    try:
        rows = {r["name"]: r for r in q.studies(storage) if r["name"] in (name, lowest)}
        assert rows[lowest]["best_values"] == {"0": -math.inf}  # no metric names: Optuna's 0
        # The load-everything path.
        monkeypatch.setattr(q.optuna_api, "rdb_of", lambda storage: None)
        assert rows == {r["name"]: r for r in q.studies(storage) if r["name"] in rows}
        row = rows[name]
        assert {k: row[k] for k in ("finished", "complete", "pruned", "running", "waiting",
                                    "failed", "interrupted", "best_values", "metric_names",
                                    "made_by_hpo")} == {
            "finished": 3, "complete": 2, "pruned": 1, "running": 1, "waiting": 1,
            "failed": 1, "interrupted": 1, "best_values": {"0": 5.0}, "metric_names": ["0"],
            "made_by_hpo": False}
    finally:
        optuna.delete_study(study_name=name, storage=storage)
        optuna.delete_study(study_name=lowest, storage=storage)


def test_hpo_best_and_studies_do_not_import_torch(tmp_path: Path,
                                                  study_file: Callable[..., Path]) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    spec = load_study_file(study_file())
    study = create_study(spec, open_storage(url, create=True))
    add(study, TrialState.COMPLETE, [42.0], {"epochs_run": 3})
    code = ("import sys\nfrom hpo.cli import app\ntry:\n    app(args=sys.argv[1:])\n"
            "finally:\n    print('torch imported:', 'torch' in sys.modules, file=sys.stderr)")
    for args in (["best", spec.name, "--json"], ["studies"]):
        r = subprocess.run([sys.executable, "-c", code, *args, "--storage", url],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "torch imported: False" in r.stderr
    r = subprocess.run([sys.executable, "-m", "hpo", "best", spec.name, "--json", "--storage",
                        url], capture_output=True, text=True, timeout=120)
    assert json.loads(r.stdout)[0]["values"] == {"% noise removed on validation": 42.0}
    r = subprocess.run([sys.executable, "-m", "hpo", "best", "nope", "--storage", url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "no study named 'nope'" in r.stderr


def test_pruner_is_asked_from_its_warm_up_until_the_last_report(
        study_file: Callable[..., Path]) -> None:
    spec = load_study_file(study_file(pruner={"type": "median", "n_warmup_steps": 30}))
    assert sorted(progress_steps(100).values()) == list(range(10, 101, 10))
    assert sorted(pruning_marks(spec, progress_steps(100).values())) == [30, 40, 50, 60, 70,
                                                                         80, 90]
    # Short runs report once per epoch (the last mark reached): each one past the warm-up counts.
    assert sorted(pruning_marks(spec, progress_steps(7).values())) == [40, 50, 70, 80]
    assert pruning_marks(dataclasses.replace(spec, pruner=PrunerSpec("none")),
                         progress_steps(100).values()) == frozenset()


def test_user_attrs_are_written_in_one_transaction(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'a.db'}", create=True, heartbeat=False)
    study = optuna.create_study(study_name="a", storage=storage)
    trial = study.ask()
    calls: list[str] = []

    def call(fn: Callable[[], Any], what: str, **kind: Any) -> Any:
        calls.append(what)
        return fn()

    attrs = {"seeds": [1, 2], "host": "h", "curve": [0.5] * 100, "n": 3}
    set_user_attrs(trial, attrs, call, "record")
    set_user_attrs(trial, {"n": 4}, call, "record")  # an existing key is updated
    assert calls == ["record", "record"]
    assert storage.get_trial(trial._trial_id).user_attrs == {**attrs, "n": 4}
    assert trial.user_attrs == {**attrs, "n": 4}
    study.tell(trial, 1.0)
    with pytest.raises(RuntimeError):  # finished trials refuse writes, as set_user_attr does
        set_user_attrs(trial, {"late": 1}, call, "record")


def test_csv_columns_do_not_follow_the_state_filter(tmp_path: Path) -> None:
    """`hpo trials --format csv` keeps one column set whatever --state selects."""
    storage = open_storage(f"sqlite:///{tmp_path / 'c.db'}", create=True, heartbeat=False)
    study = optuna.create_study(study_name="csv", storage=storage)
    add(study, TrialState.COMPLETE, [1.0], {"train_seconds": 2.0, "n_params": 7})
    add(study, TrialState.PRUNED, None, {"pruned_at_epoch": 3})
    heads = {to_csv([q.trial_record(t, ["0"]) for t in study.get_trials(states=states)], ["x"],
                    ["0"]).splitlines()[0]
             for states in ((TrialState.COMPLETE,), (TrialState.PRUNED,), (TrialState.FAIL,),
                            None)}
    assert len(heads) == 1
    head = heads.pop().split(",")
    assert head[:4] == ["number", "state", "values_0", "params_x"]  # Optuna's default names
    assert "model_val_removed" in head and "cpu_seconds" in head
