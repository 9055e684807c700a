"""What users made with an earlier hpo still works: a SQLite study with its artifact store, a
model file and a baselines cache, made by hpo before its modules moved into packages
(tests/fixtures/before-packages/README.md says how). Every command reads them as it did and
prints what that hpo printed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "before-packages"


@pytest.fixture
def old(tmp_path: Path) -> Path:
    """A copy: commands may write (a WAL file, a study attr), the fixture must not change."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "old"))


def hpo(d: Path, *argv: str, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HPO_ARTIFACTS": str(d / "artifacts"), "HPO_CACHE_DIR": str(d / "cache")}
    env.pop("HPO_STORAGE", None)
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run([sys.executable, *flags, "-m", "hpo", *argv], cwd=d, env=env,
                          capture_output=True, text=True, timeout=300)


def url(d: Path, options: str = "") -> str:
    return f"sqlite:///{d / 'hpo.db'}{options}"


@pytest.mark.parametrize("argv,expected", [
    (["studies", "--json"], "studies.json"),
    (["best", "smoke", "--top", "3", "--json"], "best.json"),
    (["trials", "smoke", "--format", "csv"], "trials.csv"),
    (["baselines", "--study", "smoke", "--json"], "baselines.json"),
])
@pytest.mark.parametrize("options", ["", "?timeout=30"], ids=["sqlite-reader", "optuna"])
def test_queries_print_what_they_printed(old: Path, argv: list[str], expected: str,
                                         options: str) -> None:
    p = hpo(old, *argv, "--storage", url(old, options))
    assert p.returncode == 0, p.stderr
    before = (FIXTURE / expected).read_text()
    if expected == "studies.json":  # since then, `interrupted` beside `failed`; the rest as is
        rows = json.loads(p.stdout)
        assert [{k: r[k] for k in old_row} for r, old_row in zip(
            rows, json.loads(before), strict=True)] == json.loads(before)
        assert all(r["interrupted"] == 0 for r in rows)
    else:
        assert p.stdout == before


def test_the_baselines_cache_is_still_read(old: Path) -> None:
    before = {f.name: f.read_bytes() for f in (old / "cache" / "hpo").iterdir()}
    p = hpo(old, "baselines", "--study", "smoke", "--json", "--storage", url(old),
            importtime=True)
    assert p.returncode == 0, p.stderr
    assert "scipy" not in {ln.rsplit("|", 1)[-1].strip() for ln in p.stderr.splitlines()}
    assert {f.name: f.read_bytes() for f in (old / "cache" / "hpo").iterdir()} == before


def test_the_stored_study_matches_its_file_and_replays(old: Path) -> None:
    p = hpo(old, "create", str(ROOT / "studies" / "smoke.toml"), "--storage", url(old))
    assert p.returncode == 0 and "ready" in p.stdout, p.stderr  # the same definition
    p = hpo(old, "replay", "smoke", "0", "--json", "--storage", url(old))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == json.loads((FIXTURE / "replay.json").read_text())


def test_old_model_files_load_export_and_denoise_as_before(old: Path) -> None:
    p = hpo(old, "denoise", "--model", "model.pt", "--input", "noisy.csv", "--output", "d.csv")
    assert p.returncode == 0, p.stderr
    assert (old / "d.csv").read_text() == (FIXTURE / "denoised.csv").read_text()
    p = hpo(old, "export", "smoke", "--out", "best.pt", "--storage", url(old))
    assert p.returncode == 0, p.stderr
    p = hpo(old, "denoise", "--model", "best.pt", "--input", "noisy.csv", "--output", "b.csv")
    assert p.returncode == 0, p.stderr
    assert len((old / "b.csv").read_text().splitlines()) == 3
