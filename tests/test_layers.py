"""The house rules, checked: the light commands and the `hpo search` supervisor never import
torch or matplotlib (in a fresh interpreter, by `python -X importtime`), hpo's modules import
each other without circles and at most 8 floors deep, and no module grows far past ~350 lines."""

from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hpo"
HEAVY = ("torch", "matplotlib")
MAX_FLOORS = 8
MAX_LINES = 400


def imported(argv: list[str], cwd: Path) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HPO_STORAGE", None)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "hpo", *argv], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    mods = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
            if line.startswith("import time:")}
    return mods, proc


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    d = tmp_path_factory.mktemp("layers")
    url = f"sqlite:///{d / 'hpo.db'}"
    mods, proc = imported(["create", str(ROOT / "studies" / "smoke.toml"), "--storage", url], d)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not {m for m in mods if m.split(".")[0] in HEAVY}, "hpo create imported torch"
    return d, url


@pytest.mark.parametrize("argv", [
    ["studies"], ["best", "smoke"], ["trials", "smoke", "--format", "csv"],
    ["fail-stale", "smoke"], ["retry-failed", "smoke"],
    ["artifacts", "prune", "smoke", "--keep-top", "1", "--dry-run"], ["dashboard", "--help"],
    ["create", str(ROOT / "studies" / "smoke.toml")],
], ids=lambda a: "-".join(a[:2]).replace("/", "_")[:30])
def test_light_commands_never_import_torch(made: tuple[Path, str], argv: list[str]) -> None:
    d, url = made
    (d / "artifacts").mkdir(exist_ok=True)
    mods, proc = imported([*argv, "--storage", url], d)
    heavy = sorted(m for m in mods if m.split(".")[0] in HEAVY)
    assert not heavy, f"`hpo {' '.join(argv)}` imported {heavy[:5]}"
    assert "hpo.cli" in mods  # the log is real: it saw hpo itself
    assert proc.returncode in (0, 2), proc.stderr[-1000:]  # 2: "no complete trial yet"


def test_best_and_studies_on_sqlite_import_no_optuna(tmp_path: Path) -> None:
    """On a SQLite file the two commands users run most read it without Optuna, SQLAlchemy or
    numpy (hpo.lightread), and print what the Optuna path prints (a URL with an option takes
    it): same table, same JSON."""
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    mods, proc = imported(["search", str(ROOT / "studies" / "smoke.toml"), "--workers", "1",
                           "--trials", "2", "--storage", url], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for argv in (["studies"], ["studies", "--json"], ["best", "smoke", "--top", "2"],
                 ["best", "smoke", "--json"]):
        light, p = imported([*argv, "--storage", url], tmp_path)
        assert p.returncode == 0, p.stderr[-1000:]
        heavy = sorted(m for m in light if m.split(".")[0] in ("optuna", "sqlalchemy", "numpy",
                                                               *HEAVY))
        assert not heavy, f"`hpo {' '.join(argv)}` imported {heavy[:5]}"
        assert "hpo.lightread" in light
        full, q = imported([*argv, "--storage", f"{url}?timeout=30"], tmp_path)
        assert "optuna" in full and q.returncode == 0, q.stderr[-1000:]
        assert p.stdout == q.stdout and p.stdout.strip(), argv


def test_the_search_supervisor_never_imports_torch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    mods, proc = imported(["search", str(ROOT / "studies" / "smoke.toml"), "--workers", "1",
                           "--trials", "1", "--storage", url], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1/1 trials finished" in proc.stdout
    assert "next:" in proc.stdout and "hpo evaluate smoke" in proc.stdout  # what to do next
    heavy = sorted(m for m in mods if m.split(".")[0] in HEAVY)
    assert not heavy, f"the supervisor imported {heavy[:5]}"
    worker_log = (tmp_path / "logs" / "smoke-worker-0.log").read_text()
    assert "worker done: 1 complete" in worker_log  # its worker, which does train, ran


def _graph() -> dict[str, set[str]]:
    """hpo module -> the hpo modules it imports at module level (not inside functions)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        deps: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hpo"):
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("hpo"))
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_no_import_circles_and_at_most_eight_floors() -> None:
    graph = _graph()
    assert "hpo.studyfile" in graph and "hpo.cli.common" in graph

    @functools.cache
    def floors(m: str, path: tuple[str, ...] = ()) -> int:
        assert m not in path, f"import circle: {' -> '.join((*path, m))}"
        return 1 + max((floors(d, (*path, m)) for d in graph[m] if d != "hpo"), default=0)

    # Floors are counted from the command modules down: `python -m` shims and the package
    # __init__ that only registers the commands add no layer of their own.
    deepest = max((m for m in graph if not m.endswith("__main__") and m not in ("hpo", "hpo.cli")),
                  key=floors)
    assert floors(deepest) <= MAX_FLOORS, f"{deepest} sits {floors(deepest)} floors deep"


def test_no_module_far_past_350_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
