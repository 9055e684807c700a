"""The house rules, checked: every import of every hpo module (at the top or inside a function)
obeys one dependency rule, foundation < task < study < store < results < run < cli < entry points
(docs/architecture.md); nothing imports in a circle; the light commands and the `hpo search`
supervisor never import torch or matplotlib (in a fresh interpreter, by `python -X importtime`),
and `best`/`studies` on SQLite no Optuna; no module grows far past ~350 lines."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hpo"
HEAVY = ("torch", "matplotlib")
MAX_LINES = 360  # ~350, with room for a docstring line


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
    numpy (hpo.results.sqlite_reader), and print what the Optuna path prints (a URL with an option
    takes
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
        assert "hpo.results.sqlite_reader" in light
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


# The dependency rule: each package's rank. A module imports only its own package and the
# packages below it (ranks lower than its own), at the top or inside a function.
RANKS = {"foundation": 0, "task": 1, "study": 2, "store": 3, "results": 4, "run": 5, "cli": 6,
         "entry": 7}
FOUNDATION = {"hpo", "hpo.errors", "hpo.env", "hpo.resources", "hpo.paths"}
ENTRY_POINTS = {"hpo.__main__", "hpo.warm"}
MAX_TOP_MODULES = 8


def package_of(module: str) -> str:
    if module in FOUNDATION:
        return "foundation"
    if module in ENTRY_POINTS:
        return "entry"
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in RANKS:
        return parts[1]
    raise AssertionError(f"{module} belongs to no package of the rule: put it in one of "
                         f"{', '.join(RANKS)} (or add it to the rule, with a reason)")


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(source: str, known: set[str]) -> set[tuple[int, str]]:
    """(line, hpo module) of every import in `source`: module level, inside functions, under
    TYPE_CHECKING alike (ast.walk). `from hpo.x import y` names module hpo.x.y when that is one,
    else hpo.x."""
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "hpo" or node.module.startswith("hpo.")):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add((node.lineno, sub if sub in known else node.module))
        elif isinstance(node, ast.Import):
            found.update((node.lineno, a.name) for a in node.names
                         if a.name == "hpo" or a.name.startswith("hpo."))
    return found


def graph() -> dict[str, set[tuple[int, str]]]:
    """hpo module -> (line, hpo module) of each of its imports."""
    mods = modules()
    return {m: {(n, d) for n, d in imports_of(p.read_text(), set(mods)) if d != m}
            for m, p in mods.items()}


def violations(edges: dict[str, set[tuple[int, str]]]) -> list[str]:
    """Every import that points up or sideways into another package of equal or higher rank."""
    out = []
    for m, deps in sorted(edges.items()):
        mine = package_of(m)
        for line, d in sorted(deps):
            theirs = package_of(d)
            if theirs != mine and RANKS[theirs] >= RANKS[mine]:
                out.append(f"{m}:{line} imports {d} ({theirs} is not below {mine})")
    return out


def circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for d in sorted(edges.get(n, ())):
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_every_import_obeys_the_dependency_rule() -> None:
    edges = graph()
    assert "hpo.study.parse" in edges and "hpo.cli.common" in edges  # the walk saw the tree
    assert any(d == "hpo.run.objective" for _, d in edges["hpo.warm"])  # inside a function
    assert violations(edges) == []


def test_no_circle_between_modules_or_packages() -> None:
    edges = {m: {d for _, d in deps} for m, deps in graph().items()}
    assert circle(edges) is None, f"import circle: {' -> '.join(circle(edges) or [])}"
    packages: dict[str, set[str]] = {}
    for m, deps in edges.items():
        packages.setdefault(package_of(m), set()).update(
            package_of(d) for d in deps if package_of(d) != package_of(m))
    assert circle(packages) is None, f"package circle: {' -> '.join(circle(packages) or [])}"


def test_the_rule_check_finds_what_it_forbids() -> None:
    """The checks above can fail: an upward import, a sideways one and a circle are found."""
    edges = {"hpo.task.curves": {(3, "hpo.study.spec")}, "hpo.study.spec": {(5, "hpo.errors")},
             "hpo.results.records": {(7, "hpo.results.artifacts")},
             "hpo.store.urls": {(9, "hpo.run.worker")}}
    assert violations(edges) == [
        "hpo.store.urls:9 imports hpo.run.worker (run is not below store)",
        "hpo.task.curves:3 imports hpo.study.spec (study is not below task)"]
    assert circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert circle({"a": {"b"}, "b": {"c"}}) is None
    with pytest.raises(AssertionError, match="no package"):
        package_of("hpo.somewhere")
    source = "import hpo.env\ndef f():\n    from hpo.store import urls\n"
    assert imports_of(source, {"hpo.store.urls"}) == {(1, "hpo.env"), (3, "hpo.store.urls")}


def test_the_top_level_is_the_foundation_and_packages_stay_empty() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top
    assert {f"hpo.{n.removesuffix('.py')}" for n in top} - {"hpo.__init__"} == (
        (FOUNDATION - {"hpo"}) | ENTRY_POINTS)
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent.name != "cli":  # the CLI's package is its entry: `hpo.cli.main`
            assert init.read_text() == "", f"{init.relative_to(ROOT)} must stay empty"


def test_no_module_far_past_350_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
