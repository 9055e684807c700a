"""How long the light commands take in a fresh process, beside a bare `import optuna`.

    python bench/cli_latency.py [--runs 5] [--json]

Each command runs --runs times as a user runs it (`python -m hpo ...`, a new process each time)
against a SQLite study made for the run (studies/smoke.toml, 8 finished trials), after one
untimed run of each (the disk cache and the baselines' cache warm, as on any machine that has
used hpo before). Reported: the median wall time and the median CPU time (user + sys of the
process, from os.wait4). The reference rows are what any Optuna-based tool pays before it does
anything: `python -c "import optuna"`, and opening Optuna's RDBStorage on the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    return wall, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="hpo-latency-") as tmp:
        d = Path(tmp)
        url = f"sqlite:///{d / 'hpo.db'}"
        env = {**os.environ, "HPO_STORAGE": url}
        smoke = str(ROOT / "studies" / "smoke.toml")
        subprocess.run([py, "-m", "hpo", "search", smoke, "--workers", "2"], cwd=d, env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        new_db = d / "new.db"
        commands = {
            "python -c 'import optuna'": [py, "-c", "import optuna"],
            "optuna RDBStorage(url)": [py, "-c", "import optuna; optuna.storages.RDBStorage("
                                       f"{url!r}, skip_table_creation=True)"],
            "hpo --help": [py, "-m", "hpo", "--help"],
            "hpo studies": [py, "-m", "hpo", "studies"],
            "hpo best smoke": [py, "-m", "hpo", "best", "smoke"],
            "hpo create (exists)": [py, "-m", "hpo", "create", smoke],
            "hpo create (new db)": [py, "-m", "hpo", "create", smoke, "--storage",
                                    f"sqlite:///{new_db}"],
        }
        rows = []
        for name, cmd in commands.items():
            timed(cmd, d, env)  # warm
            walls, cpus = [], []
            for _ in range(a.runs):
                if "new db" in name:
                    for f in d.glob("new.db*"):
                        f.unlink()
                wall, cpu, code = timed(cmd, d, env)
                if code != 0:
                    raise SystemExit(f"{name}: exit {code}")
                walls.append(wall)
                cpus.append(cpu)
            rows.append({"command": name, "wall_s": round(statistics.median(walls), 3),
                         "cpu_s": round(statistics.median(cpus), 3), "runs": a.runs})
            if not a.json:
                r = rows[-1]
                print(f"{name:28s} wall {r['wall_s']:6.3f} s   CPU {r['cpu_s']:6.3f} s   "
                      f"(median of {a.runs})", flush=True)
    load = os.getloadavg()
    if a.json:
        print(json.dumps({"bench": "cli_latency", "load": load, "rows": rows}, indent=2))
    else:
        print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
