"""docker-compose.yml, checked without Docker: its structure, its commands against the CLI, and
one full run of its services as local processes against the local PostgreSQL.

No Docker engine runs here, so the compose file could silently drift from the CLI (a renamed
command or flag, a study default that no longer exists). These tests read the file, resolve its
`${VAR:-default}` interpolation the way compose does, and run the very commands with the very
environment of each service: the study-creating step, three workers and the dashboard. Only what
Docker itself provides is substituted: the PostgreSQL server (HPO_TEST_POSTGRES_URL), container
paths (the image's WORKDIR is the repository, named volumes are temporary directories) and the
dashboard's port (a free loopback port instead of 8080 in the container).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import typer.core
import typer.main
import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
HPO_SERVICES = ("create", "worker", "dashboard")
N_WORKERS = 3  # the test's `--scale worker=3`

# --- compose interpolation ---------------------------------------------------------------------
# ${VAR}, ${VAR:-default} (unset or empty), ${VAR-default} (unset), ${VAR:?err}, ${VAR?err},
# ${VAR:+alt}, ${VAR+alt}, $VAR, and $$ for a literal $, as in the compose specification.
_VAR = re.compile(r"\$(?:(?P<esc>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)"
                  r"(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        if m["esc"]:
            return "$"
        name = m["braced"] or m["plain"]
        value, op, arg = env.get(name), m["op"], m["arg"] or ""
        present = value is not None and (value != "" or not (op or "").startswith(":"))
        if op in ("-", ":-"):
            return value if present and value is not None else interpolate(arg, env)
        if op in ("?", ":?"):
            if not present:
                raise ValueError(f"required variable {name} is missing: {arg}")
            return value or ""
        if op in ("+", ":+"):
            return interpolate(arg, env) if present else ""
        return value or ""

    return _VAR.sub(one, text)


def resolve(obj: Any, env: Mapping[str, str]) -> Any:
    """Interpolates every string of a parsed compose file (keys stay as written)."""
    if isinstance(obj, str):
        return interpolate(obj, env)
    if isinstance(obj, list):
        return [resolve(x, env) for x in obj]
    if isinstance(obj, dict):
        return {k: resolve(v, env) for k, v in obj.items()}
    return obj


def variables(obj: Any) -> set[str]:
    """Names of the variables a compose file interpolates."""
    if isinstance(obj, str):
        return {m["braced"] or m["plain"] for m in _VAR.finditer(obj) if not m["esc"]}
    if isinstance(obj, list):
        return set().union(*(variables(x) for x in obj))
    if isinstance(obj, dict):
        return set().union(*(variables(v) for v in obj.values()))
    return set()


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file as compose sees it, with `env` as the only variables (no .env, no shell),
    so that the defaults written in the file are what gets tested."""
    raw = yaml.safe_load(COMPOSE.read_text())  # SafeLoader resolves the `<<: *hpo` merge keys
    return resolve(raw, env or {})


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the ["KEY=value", ...] form
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command(service: Mapping[str, Any]) -> list[str]:
    cmd = service["command"]
    assert isinstance(cmd, list), "use the exec (list) form of `command`, no shell in between"
    return [str(x) for x in cmd]


def postgres_service(compose: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    found = [(name, s) for name, s in compose["services"].items()
             if str(s.get("image", "")).startswith("postgres")]
    assert len(found) == 1, "docker-compose.yml needs exactly one postgres service"
    return found[0]


def dockerfile_workdir() -> str:
    workdirs = re.findall(r"^WORKDIR\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert workdirs, "the Dockerfile sets no WORKDIR"
    return workdirs[-1]


def env_example() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


# --- structure: what `docker compose up --scale worker=8` relies on -------------------------

def test_services_start_in_order_and_scale() -> None:
    compose = load_compose()
    services = compose["services"]
    pg_name, pg = postgres_service(compose)
    assert set(HPO_SERVICES) <= set(services)

    # postgres: a health check that the create step waits for, data on a named volume.
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    pg_volumes = [v.split(":")[0] for v in pg["volumes"]]
    assert any(v in compose["volumes"] for v in pg_volumes), "postgres data needs a named volume"
    assert services["create"]["depends_on"][pg_name]["condition"] == "service_healthy"
    assert services["create"].get("restart", "no") == "no", "create is a one-shot step"
    for name in ("worker", "dashboard"):
        assert services[name]["depends_on"]["create"]["condition"] == \
            "service_completed_successfully"

    # --scale needs replicas that do not claim a fixed name or host port.
    assert "container_name" not in services["worker"]
    assert "ports" not in services["worker"]

    # Artifacts: one named volume, mounted where HPO_ARTIFACTS points, in workers and dashboard.
    for name in ("worker", "dashboard"):
        svc = services[name]
        target = environment(svc)["HPO_ARTIFACTS"]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
        assert mounts.get(target) in compose["volumes"], f"{name}: HPO_ARTIFACTS not on a volume"


def test_dashboard_is_published_on_loopback_only() -> None:
    dash = load_compose()["services"]["dashboard"]
    cmd = command(dash)
    port = cmd[cmd.index("--port") + 1]
    # Inside the container it must listen on every interface or the published port is dead.
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert dash["ports"] == [f"127.0.0.1:8080:{port}"]


def test_no_password_beyond_the_documented_default() -> None:
    text = COMPOSE.read_text()
    # Every password is the POSTGRES_PASSWORD variable, with one documented local default.
    defaults = set(re.findall(r"\$\{POSTGRES_PASSWORD:-([^}]*)\}", text))
    assert len(defaults) == 1
    (default,) = defaults
    assert text.count(default) == text.count("${POSTGRES_PASSWORD:-")
    assert re.search(r"POSTGRES_PASSWORD:\s*\$\{POSTGRES_PASSWORD", text)
    # .env.example documents every variable the compose file reads, and the default password.
    documented = env_example()
    missing = variables(yaml.safe_load(text)) - set(documented)
    assert not missing, f"variables used by docker-compose.yml but not in .env.example: {missing}"
    assert default in (ROOT / ".env.example").read_text()
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_default_study_file_matches_default_study_name() -> None:
    services = load_compose()["services"]
    file_arg = command(services["create"])[-1]
    name_arg = command(services["worker"])[-1]
    spec = tomllib.loads((ROOT / file_arg).read_text())
    assert spec["name"] == name_arg


def test_image_defaults_to_cpu_torch_and_ignores_local_state() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", dockerfile, re.MULTILINE)
    assert "https://download.pytorch.org/whl/${TORCH_VARIANT}" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {".venv", "storage", ".git", ".env"} <= set(ignored)
    # The compose commands run `hpo` by name: the image must not prepend an entrypoint.
    assert not re.search(r"^ENTRYPOINT", dockerfile, re.MULTILINE)


def parse_with_cli(cmd: list[str], where: str) -> dict[str, Any]:
    """Parses `hpo ...` with the CLI's own click command, as running it would, but runs nothing:
    an unknown command, flag or extra argument raises. Returns the parsed parameters."""
    from hpo.cli import app

    cli = typer.main.get_command(app)
    assert isinstance(cli, typer.core.TyperGroup)
    assert cmd[0] == "hpo", f"{where}: the command must run `hpo` from the image"
    ctx = cli.make_context("hpo", cmd[1:])
    sub = cli.get_command(ctx, cmd[1])
    assert sub is not None, f"{where}: `hpo {cmd[1]}` is not a command of the CLI"
    return sub.make_context(cmd[1], cmd[2:], parent=ctx).params


def test_every_command_parses_with_the_cli() -> None:
    """The cheap drift check (no database): each service's arguments parse with `hpo`, so a
    renamed command or flag fails here even where PostgreSQL is absent."""
    for name in HPO_SERVICES:
        parse_with_cli(command(load_compose()["services"][name]), f"service {name}")


# --- the full run ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hpo_executable() -> list[str]:
    script = Path(sys.executable).parent / "hpo"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hpo"]


class Local:
    """Turns one compose service into a local process: what Docker provides is substituted."""

    def __init__(self, compose: Mapping[str, Any], server_url: str, tmp: Path) -> None:
        self.compose, self.server, self.tmp = compose, make_url(server_url), tmp
        self.pg_name, pg = postgres_service(compose)
        self.pg_env = environment(pg)
        self.workdir = dockerfile_workdir()

    def paths(self, service: Mapping[str, Any]) -> dict[str, Path]:
        """Container path -> local path: the image's WORKDIR is the repository; named volumes
        are directories under tmp; bind mounts are the host paths they name."""
        out = {self.workdir: ROOT}
        for v in service.get("volumes", []):
            src, target = v.split(":")[:2]
            local = self.tmp / "volumes" / src if src in self.compose["volumes"] else ROOT / src
            local.mkdir(parents=True, exist_ok=True)
            out[target] = local.resolve()
        return out

    def storage(self, url: str) -> str:
        """The compose URL must point at the postgres service with its user, password and
        database; the local server replaces exactly those parts."""
        u = make_url(url)
        assert u.host == self.pg_name and u.port in (None, 5432), f"storage host in {u!r}"
        assert (u.username, u.password, u.database) == (
            self.pg_env["POSTGRES_USER"], self.pg_env["POSTGRES_PASSWORD"],
            self.pg_env["POSTGRES_DB"]), "HPO_STORAGE does not match the postgres service"
        s = self.server
        return u.set(username=s.username, password=s.password, host=s.host, port=s.port,
                     database=s.database).render_as_string(hide_password=False)

    def process(self, name: str, overrides: Mapping[str, str] | None = None
                ) -> tuple[list[str], dict[str, str]]:
        service = self.compose["services"][name]
        paths = self.paths(service)

        def local(value: str) -> str:
            for target in sorted(paths, key=len, reverse=True):
                if value == target or value.startswith(target.rstrip("/") + "/"):
                    return str(paths[target]) + value[len(target.rstrip("/")):]
            return value

        env = {k: local(v) for k, v in environment(service).items()}
        env["HPO_STORAGE"] = self.storage(env["HPO_STORAGE"])
        cmd = [local(a) for a in command(service)]
        for flag, value in (overrides or {}).items():
            cmd[cmd.index(flag) + 1] = value
        # The container's environment is the service's, not this shell's HPO_* settings.
        base = {k: v for k, v in os.environ.items() if not k.startswith(("HPO_", "OPTUNA_"))}
        return hpo_executable() + cmd[1:], {**base, **env, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def server_url() -> str:
    url = os.environ.get("HPO_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("the compose run needs $HPO_TEST_POSTGRES_URL (a PostgreSQL URL); "
                    ".ci/run sets it")
    return url


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in started:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def wait_for_api(url: str, dashboard: subprocess.Popen[bytes], log: Path,
                 timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get_json(url)
        except (urllib.error.URLError, ConnectionError):
            if dashboard.poll() is not None:
                pytest.fail(f"the dashboard exited with {dashboard.returncode}:\n"
                            f"{log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard did not answer {url} within {timeout:.0f} s")
            time.sleep(0.5)


@pytest.mark.timeout(900)
def test_compose_services_run_as_local_processes(
        server_url: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    # The compose file's own default study, under a unique name: the test database is shared.
    default_file = command(load_compose()["services"]["create"])[-1]
    study = tomllib.loads((ROOT / default_file).read_text())
    name = f"compose-{uuid.uuid4().hex[:10]}"
    study_file = tmp_path / f"{name}.toml"
    study_file.write_text(tomli_w.dumps({**study, "name": name}))
    compose = load_compose({"HPO_STUDY_FILE": str(study_file), "HPO_STUDY_NAME": name})
    local = Local(compose, server_url, tmp_path)

    # 1. The one-shot step, twice: every `docker compose up` runs it again on the same study.
    cmd, env = local.process("create")
    for _ in range(2):
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"study '{name}' ready" in done.stdout

    # 2. The dashboard and three workers, started together as compose starts them.
    port = free_port()
    dash_cmd, dash_env = local.process("dashboard", {"--host": "127.0.0.1", "--port": str(port)})
    dash_log = tmp_path / "dashboard.log"
    with dash_log.open("wb") as f:
        dashboard = subprocess.Popen(dash_cmd, env=dash_env, cwd=ROOT, stdout=f,
                                     stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(dashboard)
    worker_cmd, worker_env = local.process("worker")
    logs = [tmp_path / f"worker-{i}.log" for i in range(N_WORKERS)]
    workers = []
    for log in logs:
        with log.open("wb") as f:
            workers.append(subprocess.Popen(worker_cmd, env=worker_env, cwd=ROOT, stdout=f,
                                            stderr=subprocess.STDOUT, start_new_session=True))
    procs.extend(workers)

    # 3. Each worker stops by itself at the end of the budget, successfully.
    for p, log in zip(workers, logs, strict=True):
        rc = p.wait(timeout=600)
        assert rc == 0, f"worker exited with {rc}:\n{log.read_text()[-3000:]}"
        assert "worker done:" in log.read_text()

    # The study ends with exactly its budget, nothing left running or failed.
    from hpo.store.engines import open_storage
    from hpo.store.studies import counts, load

    opened, spec = load(name, open_storage(server_url, heartbeat=False))
    c = counts(opened)
    assert c.budget == spec.trials == study["trials"]
    assert (c.finished, c.running, c.waiting, c.failed) == (c.budget, 0, 0, 0)

    # 4. The dashboard answers and lists the study.
    api = wait_for_api(f"http://127.0.0.1:{port}/api/studies", dashboard, dash_log)
    names = [s["study_name"] for s in api["study_summaries"]]
    assert name in names
    study_id = next(s["study_id"] for s in api["study_summaries"] if s["study_name"] == name)
    detail = get_json(f"http://127.0.0.1:{port}/api/studies/{study_id}")
    assert len(detail["trials"]) == c.budget

    # 5. Workers and dashboard share the artifacts volume: a file a worker uploaded lies in the
    # volume's directory and the dashboard serves it.
    uploaded = [(t["trial_id"], a) for t in detail["trials"] for a in t["artifacts"]]
    assert uploaded, "no trial has artifacts: is HPO_ARTIFACTS set for the workers?"
    trial_id, artifact = uploaded[0]
    assert (tmp_path / "volumes" / "artifacts" / artifact["artifact_id"]).is_file()
    url = f"http://127.0.0.1:{port}/artifacts/{study_id}/{trial_id}/{artifact['artifact_id']}"
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200 and r.read()

    import optuna

    optuna.delete_study(study_name=name, storage=server_url)  # keep the shared database tidy


@pytest.mark.parametrize("tool", [["docker-compose"], ["docker", "compose"]],
                         ids=["compose-v1", "compose-v2"])
def test_the_real_compose_accepts_the_file(tool: list[str], tmp_path: Path) -> None:
    """Debian 12's docker-compose 1.29 (v1) and `docker compose` (v2), where installed, read
    the file with .env.example as its .env (.ci/run installs v1)."""
    import shutil
    import subprocess

    if shutil.which(tool[0]) is None:
        pytest.skip(f"{' '.join(tool)} is not installed (Debian: apt-get install docker-compose)")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    p = subprocess.run([*tool, "config"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    if tool == ["docker", "compose"] and ("is not a docker command" in p.stderr
                                          or "unknown command" in p.stderr):
        pytest.skip("docker has no compose plugin here")
    assert p.returncode == 0, p.stderr
    assert "worker" in p.stdout and "postgres" in p.stdout
