"""Load: 16 worker processes share one study of 400 tiny trials (1-2 epochs on 10 curves).

A grid study is the strictest form of the claim: exactly the budget finished, no trial failed
or left behind, every grid point run exactly once, although sixteen processes claim trials at the
same time through the budget lock. It runs on SQLite (one file, WAL, a busy timeout) and on the
real PostgreSQL. On a busy 2-core machine each backend takes a few minutes.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpo.study.parse import load_study_file
from tests.support.backends import backend_url
from tests.support.searchprocs import hpo_env, read_trials, running_search, worker_logs

WORKERS = 16
HIDDEN, SHIFT, EPOCHS = range(4, 44), range(0, 5), range(1, 3)  # 40 x 5 x 2 = 400 points
GRID = {"hidden_size": {"type": "int", "low": 4, "high": 43},
        "shift": {"type": "int", "low": 0, "high": 4},
        "epochs": {"type": "int", "low": 1, "high": 2}}


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sixteen_workers_run_a_400_point_grid_exactly_once(
        backend: str, study_file: Callable[..., Path], tmp_path: Path) -> None:
    url = backend_url(backend, tmp_path)
    points = len(HIDDEN) * len(SHIFT) * len(EPOCHS)
    path = study_file(trials=points, sampler={"type": "grid"}, space=GRID,
                      data={"seed": 0, "train": 10, "val": 10, "test": 10})
    name = load_study_file(path).name
    # Sixteen processes on two cores: a heartbeat thread can starve for seconds, so the grace
    # period is generous; no worker dies here, and none may be declared dead.
    env = hpo_env(HPO_HEARTBEAT_INTERVAL="2", HPO_GRACE_PERIOD="120")
    t0 = time.monotonic()
    with running_search(path, tmp_path, "--workers", str(WORKERS), url=url, env=env) as search:
        code = search.wait(1100)
    seconds = time.monotonic() - t0

    logs = worker_logs(url, tmp_path)
    assert code == 0, search.stderr[-3000:]
    assert f"{points}/{points} trials finished" in search.stdout
    assert len(logs) == WORKERS
    for log_name, text in logs.items():  # every worker ran to the end of the budget, cleanly
        assert "Traceback" not in text, (log_name, text[-2000:])
        assert text.rstrip().splitlines()[-1].startswith("worker done:"), (log_name, text[-500:])

    trials = read_trials(url, name)
    states = Counter(t.state for t in trials)
    assert states == {TrialState.COMPLETE: points}, states  # none failed, running or waiting
    seen = Counter((t.params["hidden_size"], t.params["shift"], t.params["epochs"])
                   for t in trials)
    assert set(seen) == set(itertools.product(HIDDEN, SHIFT, EPOCHS))
    assert max(seen.values()) == 1  # each point exactly once
    assert len({t.user_attrs["pid"] for t in trials}) > WORKERS // 2  # the work was shared
    retried = sum(text.count("storage error while trying to") for text in logs.values())
    print(f"{backend}: {points} trials by {WORKERS} workers in {seconds:.0f} s; "
          f"{retried} storage call(s) retried")
