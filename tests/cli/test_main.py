"""hpo.cli.main, the process entry: a command's process ends at once when it is done (no
interpreter teardown), yet nothing is lost: its output is all there, its exit code is the
command's, and every database connection was closed first, so SQLite leaves no -wal or -shm
file beside the database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _hpo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    return subprocess.run([sys.executable, "-m", "hpo", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=300)


def _side_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("hpo.db") and
                  p.name != "hpo.db")


def test_a_search_and_a_query_leave_no_side_files_and_lose_no_output(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    search = _hpo(tmp_path, "search", str(ROOT / "studies" / "smoke.toml"), "--workers", "2",
                  "--trials", "3", "--storage", url)
    assert search.returncode == 0, search.stderr[-2000:]
    assert "3/3 trials finished" in search.stdout and "next:" in search.stdout  # the last lines
    assert _side_files(tmp_path) == []
    logs = sorted((tmp_path / "logs").glob("*.log"))
    assert len(logs) == 2
    for log in logs:  # each worker's last line made it to its log before the process ended
        assert log.read_text().rstrip().splitlines()[-1].startswith("worker done:"), log
    best = _hpo(tmp_path, "best", "smoke", "--storage", url, "--json")
    assert best.returncode == 0 and best.stdout.lstrip().startswith("[")
    assert _side_files(tmp_path) == []


def test_the_exit_code_and_the_error_line_are_the_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    assert _hpo(tmp_path, "create", str(ROOT / "studies" / "smoke.toml"), "--storage",
                url).returncode == 0
    missing = _hpo(tmp_path, "best", "nosuch", "--storage", url)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "error: no study named 'nosuch' in this storage; existing studies: smoke"]
    usage = _hpo(tmp_path, "best")
    assert usage.returncode == 2 and "Missing argument" in usage.stderr
    assert _hpo(tmp_path, "--help").returncode == 0
    assert _side_files(tmp_path) == []


def test_each_command_is_loaded_from_the_sibling_that_registers_it() -> None:
    import hpo.cli
    from hpo.cli.common import COMMANDS

    app = hpo.cli.load()  # every sibling
    registered = {c.name or c.callback.__name__.replace("_", "-"): c.callback.__module__
                  for c in app.registered_commands if c.callback is not None}
    registered.update({g.name: g.typer_instance.registered_commands[0].callback.__module__
                       for g in app.registered_groups})
    assert registered == {name: f"hpo.cli.{home}" for name, home in COMMANDS.items()}
    per_home = {home: sum(h == home for h in COMMANDS.values()) for home in COMMANDS.values()}
    assert min(per_home.values()) >= 2, per_home  # one alone would become the whole app


def test_a_command_runs_with_only_its_sibling_loaded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    assert _hpo(tmp_path, "create", str(ROOT / "studies" / "smoke.toml"), "--storage",
                url).returncode == 0
    # The entry ends the process with os._exit: report the loaded siblings just before.
    probe = ("import os, sys\n"
             "real = os._exit\n"
             "def leave(code):\n"
             "    print('siblings:', sorted(m for m in sys.modules if m.startswith('hpo.cli.')),"
             " file=sys.stderr); sys.stderr.flush(); real(code)\n"
             "os._exit = leave\n"
             "sys.argv = ['hpo', *sys.argv[1:]]\n"
             "import hpo.cli\n"
             "hpo.cli.main()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    for argv, siblings in ((["studies", "--storage", url], ["common", "lookup"]),
                           (["fail-stale", "smoke", "--storage", url], ["common", "recover"]),
                           (["--help"], ["common", "lookup", "ops", "progress", "recover",
                                         "retrain", "search", "train"])):
        p = subprocess.run([sys.executable, "-c", probe, *argv], cwd=tmp_path, env=env,
                           text=True, capture_output=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        assert f"siblings: {[f'hpo.cli.{s}' for s in siblings]}" in p.stderr, p.stderr[-500:]
    unknown = _hpo(tmp_path, "bogus")
    assert unknown.returncode == 2 and "No such command 'bogus'" in unknown.stderr
