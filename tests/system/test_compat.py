"""What users made with an earlier hpo still works: a SQLite study with its artifact store, a
model file and a baselines cache, made by hpo before its modules moved into packages
(tests/fixtures/before-packages/README.md says how). Every command reads them as it did and
prints what that hpo printed, in today's vocabulary: TODAY maps each renamed key of its output
to today's, and nothing else may differ."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "before-packages"
METRIC = "% noise removed on validation"  # the smoke study's metric name, as Optuna stores it


def _same(v: Any) -> Any:
    return v


# The one vocabulary since (Optuna's names across table, JSON, CSV and Optuna's own CLI): each
# old key of `hpo best/trials/studies/replay` output -> (today's key, today's value of it).
TODAY: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "state": ("state", str.upper),  # "complete" -> "COMPLETE", as Optuna spells states
    "values": ("values", lambda v: dict(zip([METRIC], v, strict=True))),  # keyed by metric name
    "value_0": (f"values_{METRIC}", _same),  # CSV: as Optuna's trials_dataframe flattens it
    "param_hidden_size": ("params_hidden_size", _same),
    "param_shift": ("params_shift", _same),
    "param_epochs": ("params_epochs", _same),
    "status": ("training_ended", _same),  # how training ended, not a second state
    "best_value": ("best_values", lambda v: {METRIC: v}),
    "hpo": ("made_by_hpo", _same),
}
# Fields `hpo studies` has gained since, with what they are for the old study.
ADDED = {"interrupted": 0, "metric_names": [METRIC]}


def today(old: dict[str, Any]) -> dict[str, Any]:
    """An old output row in today's vocabulary (TODAY), its keys in the order they had."""
    out = {}
    for k, v in old.items():
        key, value = TODAY.get(k, (k, _same))
        out[key] = value(v)
    return out


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
    if expected == "studies.json":  # since then, also `interrupted` and `metric_names`
        rows = json.loads(p.stdout)
        olds = [today(r) for r in json.loads(before)]
        assert [{k: r[k] for k in old_row} for r, old_row in zip(rows, olds, strict=True)] == olds
        assert [{k: v for k, v in r.items() if k not in old_row} for r, old_row in zip(
            rows, olds, strict=True)] == [ADDED] * len(rows)
    elif expected == "best.json":  # the very text, renamed
        assert p.stdout == json.dumps([today(r) for r in json.loads(before)], indent=2) + "\n"
    elif expected == "trials.csv":
        head, *rows = list(csv.reader(io.StringIO(p.stdout)))
        old_head, *old_rows = list(csv.reader(io.StringIO(before)))
        assert head == [TODAY.get(k, (k,))[0] for k in old_head]
        assert [today(dict(zip(old_head, r, strict=True))) for r in old_rows] == [
            dict(zip(head, r, strict=True)) for r in rows]
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
    assert json.loads(p.stdout) == today(json.loads((FIXTURE / "replay.json").read_text()))


def test_old_model_files_load_export_and_denoise_as_before(old: Path) -> None:
    p = hpo(old, "denoise", "--model", "model.pt", "--input", "noisy.csv", "--output", "d.csv")
    assert p.returncode == 0, p.stderr
    # Numerically the same: the last printed digit may move with the CPU's float kernels (the
    # fixture was made on another machine's vector unit), never more.
    got, want = (np.loadtxt(f, delimiter=",", ndmin=2) for f in (old / "d.csv",
                                                                  FIXTURE / "denoised.csv"))
    assert got.shape == want.shape and np.allclose(got, want, rtol=1e-5, atol=1e-6)
    p = hpo(old, "export", "smoke", "--out", "best.pt", "--storage", url(old))
    assert p.returncode == 0, p.stderr
    p = hpo(old, "denoise", "--model", "best.pt", "--input", "noisy.csv", "--output", "b.csv")
    assert p.returncode == 0, p.stderr
    assert len((old / "b.csv").read_text().splitlines()) == 3
