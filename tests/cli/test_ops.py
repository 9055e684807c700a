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
from tests.support.fullfs import FullFs, full_fs_fixture  # noqa: F401 (the full_fs fixture)

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


def test_split_and_export_never_overwrite_what_they_read_nor_leave_half(
        tmp_path: Path, full_fs: FullFs) -> None:
    """The tester's three: one path for both outputs kept only the noisy signals; --force let
    split and export overwrite the SQLite file they read; a failed second write left the first
    file, which then blocked the rerun."""
    db = tmp_path / "x.db"
    shutil.copy(ROOT / "tests" / "fixtures" / "before-packages" / "hpo.db", db)
    url = f"sqlite:///{db}"
    before = db.read_bytes()

    def run(*argv: str) -> str:
        r = CliRunner().invoke(app, [*argv, "--storage", url])
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.exit_code == 2 and len(lines) == 1, r.output
        return lines[0]

    same = str(tmp_path / "same.csv")
    assert "is the same file as --clean" in run("split", "smoke", "test", "--clean", same,
                                                "--noisy", same)
    assert "input file itself" in run("split", "smoke", "test", "--clean", str(db), "--noisy",
                                      str(tmp_path / "n.csv"), "--force")
    assert "input file itself" in run("export", "smoke", "--out", str(db), "--force")
    assert db.read_bytes() == before and not (tmp_path / "same.csv").exists()
    full_fs.fill(leave=4 * 1024)  # room for a few rows, not for a split of 100 signals
    line = run("split", "smoke", "test", "--clean", str(tmp_path / "c.csv"), "--noisy",
               str(full_fs.root / "n.csv"))
    assert line.startswith(f"error: --noisy {full_fs.root / 'n.csv'}: cannot write the noisy "
                           "signals (No space left on device)"), line
    assert not (tmp_path / "c.csv").exists() and full_fs.files() == []
    full_fs.free()
    r = CliRunner().invoke(app, ["split", "smoke", "test", "--clean", str(tmp_path / "c.csv"),
                                 "--noisy", str(full_fs.root / "n.csv"), "--storage", url])
    assert r.exit_code == 0, r.output  # the rerun needs no --force
