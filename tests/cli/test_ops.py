"""`hpo split`: a study's split written out, as the study itself scores on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from hpo.cli import app
from hpo.study.parse import load_study_file
from hpo.task.signals import read_signals
from hpo.task.source import model_split

ROOT = Path(__file__).resolve().parents[2]


def test_split_writes_the_signals_the_study_scores_on(tmp_path: Path) -> None:
    shutil.copy(ROOT / "tests" / "fixtures" / "before-packages" / "hpo.db", tmp_path / "x.db")
    url = f"sqlite:///{tmp_path / 'x.db'}"
    r = CliRunner().invoke(app, ["split", "smoke", "test", "--clean", str(tmp_path / "c.csv"),
                                 "--noisy", str(tmp_path / "n.csv"), "--storage", url])
    assert r.exit_code == 0, r.output
    want = model_split(load_study_file(ROOT / "studies" / "smoke.toml").source(), "test").raw
    np.testing.assert_allclose(read_signals(tmp_path / "c.csv"), want.clean, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(read_signals(tmp_path / "n.csv"), want.noisy, rtol=1e-5,
                               atol=1e-5)
    again = CliRunner().invoke(app, ["split", "smoke", "val", "--clean", str(tmp_path / "c.csv"),
                                     "--noisy", str(tmp_path / "n2.csv"), "--storage", url])
    assert again.exit_code == 2 and "--force" in again.stderr
    bad = CliRunner().invoke(app, ["split", "smoke", "holdout", "--clean", "a.csv", "--noisy",
                                   "b.csv", "--storage", url])
    assert bad.exit_code == 2 and "train, val, test" in bad.stderr
