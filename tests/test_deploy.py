"""deploy/k8s-job.yaml, checked without a cluster: the Kubernetes schema, what the pods rely on,
and the `hpo` commands its containers run.

No cluster runs here. Every document is validated against the Kubernetes JSON schemas that the
kubernetes-validate package bundles (offline; strict, so a misspelled field is refused rather
than dropped by the API server). What a schema cannot see is asserted here: the pods run as the
image's user, every pod that mounts the shared volume has the fsGroup that makes it writable,
the study is named in one place, the dashboard reads the workers' Secret and volume, and every
name one document gives another resolves. Each container's command runs as the container would
run it (Kubernetes' $(VAR) expansion, then `sh -c` where it says so) with a stub `hpo` that only
records its arguments, which then parse with the CLI; and where the test PostgreSQL is set
($HPO_TEST_POSTGRES_URL), the create Job, the workers' wait and a worker run with the real hpo.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hpo.study.parse import load_study_file
from tests.test_compose import dockerfile_workdir, parse_with_cli

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy" / "k8s-job.yaml"
# The oldest Kubernetes the manifest is checked against, and the newest the validator ships.
KUBERNETES_VERSIONS = ("1.30", str(kubernetes_validate.utils.latest_version()))
WORKLOADS = ("Job", "Deployment")  # the kinds that carry a pod template here
# What the Secret's key stands for when a command runs here (the stub hpo connects nowhere).
SECRET_PLACEHOLDER = "postgresql+psycopg://hpo:secret@db.invalid:5432/hpo"


class Manifest:
    """The manifest's documents, from its text (the tests below also check broken copies)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.docs = [d for d in yaml.safe_load_all(text) if d]
        assert all(isinstance(d, dict) for d in self.docs)

    def named(self, kind: str) -> dict[str, dict[str, Any]]:
        return {d["metadata"]["name"]: d for d in self.docs if d["kind"] == kind}

    def pods(self) -> list[tuple[str, dict[str, Any]]]:
        """(workload, pod spec) of every Job and Deployment."""
        return [(f"{d['kind']} {d['metadata']['name']}", d["spec"]["template"]["spec"])
                for d in self.docs if d["kind"] in WORKLOADS]

    def study_file(self) -> str:
        (config,) = self.named("ConfigMap").values()
        return str(config["data"]["HPO_STUDY_FILE"])


def manifest() -> Manifest:
    return Manifest(MANIFEST.read_text())


def containers(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def image_user() -> tuple[str, int]:
    """The Dockerfile's runtime user and its uid."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users, "the Dockerfile sets no USER"
    made = re.search(rf"useradd\b[^\n]*--uid (\d+)[^\n]*\b{re.escape(users[-1])}\b", dockerfile)
    assert made, f"the Dockerfile creates no user {users[-1]} with a fixed --uid"
    return users[-1], int(made[1])


# --- Kubernetes' own rules ---------------------------------------------------------------------

def schema_errors(m: Manifest, version: str) -> list[str]:
    """Each document that the schema refuses, with the reason; strict: an unknown field is an
    error, and so is an unknown kind or apiVersion (no schema to check it by)."""
    out = []
    for doc in m.docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
            out.append(f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}: {e}")
    return out


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_document_is_valid_kubernetes(version: str) -> None:
    m = manifest()
    assert {d["kind"] for d in m.docs} == {"ConfigMap", "PersistentVolumeClaim", "Job",
                                           "Deployment", "Service"}
    assert schema_errors(m, version) == []


def test_the_validator_refuses_a_broken_manifest() -> None:
    """The schema check can fail: a misspelled field, a wrong type, an unknown kind."""
    text = MANIFEST.read_text()
    version = KUBERNETES_VERSIONS[-1]
    misspelled = Manifest(text.replace("fsGroup: 10001", "fsGrup: 10001", 1))
    (reason,) = schema_errors(misspelled, version)
    assert "'fsGrup' was unexpected" in reason
    # Without strict mode the misspelling passes (unknown fields are allowed, and a server
    # that does not validate fields drops them: the volume would stay unwritable), hence strict.
    for doc in misspelled.docs:
        kubernetes_validate.validate(doc, version, strict=False)
    for old, new in [("parallelism: 8", "parallelism: eight"),
                     ("readOnly: true", "readOnly: yes please"),
                     ("kind: Deployment", "kind: Deploymnet"),
                     ("apiVersion: batch/v1", "apiVersion: batch/v2")]:
        assert old in text
        assert len(schema_errors(Manifest(text.replace(old, new, 1)), version)) == 1, new


def test_the_schemas_ship_with_the_validator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline: the schemas are files inside the package, and validating opens no socket."""
    import importlib.resources

    version = KUBERNETES_VERSIONS[-1]
    schemas = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    major, minor = version.split(".")[:2]
    assert (schemas / f"v{major}.{minor}.0-local-strict" / "job-batch-v1.json").is_file()

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the validator tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    assert schema_errors(manifest(), version) == []


# --- what a schema cannot see ------------------------------------------------------------------
# Each check takes a manifest, so that test_each_check_catches_its_break can run it on a broken
# copy.

def check_names_resolve(m: Manifest) -> None:
    """Every ConfigMap key, claim, volume, selector and port a document names exists, and the
    Secret is the one the header tells you to create."""
    configmaps = {n: d["data"] for n, d in m.named("ConfigMap").items()}
    claims = m.named("PersistentVolumeClaim")
    header = m.text.split("\napiVersion:")[0]
    secret = re.search(r"kubectl create secret generic (\S+) \\\s*#\s*--from-literal=(\w+)=",
                       header)
    assert secret, "the header no longer shows how to create the Secret"
    for where, pod in m.pods():
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, where
        for c in containers(pod):
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{where}/{c['name']}: no {mount['name']}"
            for e in c.get("env", []):
                ref = e.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    r = ref["configMapKeyRef"]
                    assert r["key"] in configmaps.get(r["name"], {}), f"{where}: {r}"
                if "secretKeyRef" in ref:
                    r = ref["secretKeyRef"]
                    assert (r["name"], r["key"]) == (secret[1], secret[2]), f"{where}: {r}"
    templates = []
    for name, d in m.named("Deployment").items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        templates.append(d["spec"]["template"])
    for name, svc in m.named("Service").items():
        selected = [t for t in templates
                    if svc["spec"]["selector"].items() <= t["metadata"]["labels"].items()]
        assert len(selected) == 1, f"Service {name} selects {len(selected)} pod templates"
        ports = {p["name"]: p["containerPort"] for c in selected[0]["spec"]["containers"]
                 for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            assert target in ports or target in ports.values(), f"Service {name}: {target}"


def check_containers_run_as_the_image_user(m: Manifest) -> None:
    _, uid = image_user()
    for where, pod in m.pods():
        for c in containers(pod):
            ctx = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
            who = f"{where}/{c['name']}"
            assert ctx.get("runAsUser") == uid, f"{who}: not the image's uid {uid}"
            assert ctx.get("runAsGroup") == uid, f"{who}: not group {uid}"
            assert ctx.get("runAsNonRoot") is True, who
            assert ctx.get("allowPrivilegeEscalation") is False, who
            assert c.get("resources", {}).get("requests"), f"{who}: no resource requests"
            assert c["resources"].get("limits", {}).get("memory"), f"{who}: no memory limit"


def check_pods_that_mount_the_volume_can_write_it(m: Manifest) -> None:
    """fsGroup on every pod that mounts the ReadWriteMany claim; the mount is where
    HPO_ARTIFACTS points; only the dashboard's is read-only."""
    _, uid = image_user()
    (claim, pvc), = m.named("PersistentVolumeClaim").items()
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    mounting = 0
    for where, pod in m.pods():
        volumes = {v["name"] for v in pod.get("volumes", [])
                   if v.get("persistentVolumeClaim", {}).get("claimName") == claim}
        if not volumes:
            continue
        mounting += 1
        assert pod.get("securityContext", {}).get("fsGroup") == uid, f"{where}: no fsGroup {uid}"
        for c in containers(pod):
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            for mount in c.get("volumeMounts", []):
                if mount["name"] in volumes:
                    assert env.get("HPO_ARTIFACTS") == mount["mountPath"], f"{where}/{c['name']}"
                    writes = c["command"][:2] != ["hpo", "dashboard"]
                    assert mount.get("readOnly", False) is not writes, f"{where}/{c['name']}"
    assert mounting == 2  # the workers and the dashboard


def check_workers_are_a_work_queue(m: Manifest) -> None:
    workers = m.named("Job")["hpo-workers"]["spec"]
    assert workers["parallelism"] > 1
    assert "completions" not in workers, "workers end the Job themselves"
    assert workers["template"]["spec"]["restartPolicy"] == "OnFailure"


def check_the_study_is_named_in_one_place(m: Manifest) -> None:
    """The ConfigMap's HPO_STUDY_FILE is the only mention of the study: the manifest neither
    repeats the file nor spells out the name that `hpo create` takes from inside it."""
    study_file = m.study_file()
    assert not Path(study_file).is_absolute(), "relative to the image's WORKDIR"
    assert dockerfile_workdir() == "/app" and (ROOT / study_file).is_file()
    name = load_study_file(ROOT / study_file).name
    assert m.text.count(study_file) == 1
    assert len(re.findall(rf"(?<![\w-]){re.escape(name)}(?![\w-])", m.text)) == 1, \
        f"the study's name {name!r} appears beyond HPO_STUDY_FILE"
    for where, pod in m.pods():
        for c in containers(pod):
            env = {e["name"]: e for e in c.get("env", [])}
            assert "HPO_STUDY_NAME" not in env, f"{where}/{c['name']}"
            if "HPO_STUDY_FILE" in env:
                assert "configMapKeyRef" in env["HPO_STUDY_FILE"].get("valueFrom", {})


def check_the_dashboard_serves_the_workers_storage_and_volume(m: Manifest) -> None:
    (dash,) = m.named("Deployment").values()
    pod = dash["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    cmd = c["command"]
    assert cmd[:2] == ["hpo", "dashboard"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0", "a Service cannot reach 127.0.0.1"
    port = int(cmd[cmd.index("--port") + 1])
    assert [p["containerPort"] for p in c["ports"]] == [port]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] in (port, c["ports"][0]["name"])
    (svc,) = m.named("Service").values()
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", "the dashboard has no login"

    workers = m.named("Job")["hpo-workers"]["spec"]["template"]["spec"]
    worker = workers["containers"][0]

    def storage(container: Mapping[str, Any]) -> Any:
        return next(e["valueFrom"] for e in container["env"] if e["name"] == "HPO_STORAGE")

    def claims(p: Mapping[str, Any]) -> set[str]:
        return {v["persistentVolumeClaim"]["claimName"] for v in p.get("volumes", [])
                if "persistentVolumeClaim" in v}

    assert storage(c) == storage(worker)
    assert claims(pod) == claims(workers) != set()
    assert [x["mountPath"] for x in c["volumeMounts"]] == \
        [x["mountPath"] for x in worker["volumeMounts"]]


CHECKS = [check_names_resolve, check_containers_run_as_the_image_user,
          check_pods_that_mount_the_volume_can_write_it, check_workers_are_a_work_queue,
          check_the_study_is_named_in_one_place,
          check_the_dashboard_serves_the_workers_storage_and_volume]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
def test_the_manifest(check: Any) -> None:
    check(manifest())


def shell_commands(text: str) -> set[str]:
    """Command lines of a shell block: continuations joined, comments and spacing dropped."""
    joined = re.sub(r"\\\n", " ", text)
    lines = (re.sub(r"(^|\s+)#.*$", "", line) for line in joined.splitlines())
    return {" ".join(line.split()) for line in lines if line.strip()}


def test_the_docs_show_the_manifest() -> None:
    """docs/many-machines.md, "Kubernetes": its commands are the manifest header's, and its
    short workers' Job is the manifest's."""
    doc = (ROOT / "docs" / "many-machines.md").read_text()
    section = doc.split("## Kubernetes\n", 1)[1].split("\n## ", 1)[0]
    bash = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    short = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert bash and short
    m = manifest()
    header = "\n".join(line.removeprefix("#")
                       for line in m.text.split("\napiVersion:")[0].splitlines())
    assert shell_commands(bash[1]) <= shell_commands(header)

    job = yaml.safe_load(short[1])
    real = m.named("Job")[job["metadata"]["name"]]
    for key, value in job["spec"].items():
        if key != "template":
            assert real["spec"][key] == value, key
    pod, real_pod = job["spec"]["template"]["spec"], real["spec"]["template"]["spec"]
    for key in ("restartPolicy", "terminationGracePeriodSeconds", "volumes"):
        assert pod[key] == real_pod[key], key
    assert pod["securityContext"].items() <= real_pod["securityContext"].items()
    (c,) = pod["containers"]
    (real_c,) = real_pod["containers"]
    for key in ("name", "image", "command", "resources", "volumeMounts"):
        assert c[key] == real_c[key], key
    assert all(e in real_c["env"] for e in c["env"])


# --- the commands -----------------------------------------------------------------------------

# Kubernetes expands $(VAR) in command and args from the container's env, leaves a reference to
# an undefined variable as written, and turns $$ into $.
_K8S_REF = re.compile(r"\$(\$|\(([^)]*)\))")


def expand_k8s(arg: str, env: Mapping[str, str]) -> str:
    return _K8S_REF.sub(lambda m: "$" if m[1] == "$" else env.get(m[2], m[0]), arg)


def container_env(m: Manifest, c: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment as Kubernetes builds it (a value may use earlier ones)."""
    configmaps = {n: d["data"] for n, d in m.named("ConfigMap").items()}
    out: dict[str, str] = {}
    for e in c.get("env", []):
        ref = e.get("valueFrom", {})
        if "value" in e:
            out[e["name"]] = expand_k8s(str(e["value"]), out)
        elif "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            out[e["name"]] = configmaps[r["name"]][r["key"]]
        elif "secretKeyRef" in ref:
            out[e["name"]] = SECRET_PLACEHOLDER
        else:
            raise AssertionError(f"{c['name']}: env {e['name']} comes from {ref}")
    return out


def run_container(m: Manifest, c: Mapping[str, Any], tmp: Path,
                  overrides: Mapping[str, str] | None = None) -> list[list[str]]:
    """Runs the container's command in the repository (the image's WORKDIR) with a stub `hpo`
    on PATH; returns the `hpo` command lines it ran."""
    bin_dir, log = tmp / "bin", tmp / "hpo-calls.jsonl"
    if not bin_dir.exists():
        bin_dir.mkdir()
        stub = bin_dir / "hpo"
        stub.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                        "with open(os.environ['HPO_STUB_LOG'], 'a') as f:\n"
                        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n")
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
        (bin_dir / "python").symlink_to(sys.executable)  # the image's python
    log.unlink(missing_ok=True)
    env = {**container_env(m, c), **(overrides or {})}
    args = [expand_k8s(a, env) for a in [*c["command"], *c.get("args", [])]]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**env, "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin",
                               "HPO_STUB_LOG": str(log), "HOME": str(tmp)})
    assert done.returncode == 0, f"{c['name']} exited {done.returncode}: {done.stderr}"
    if not log.exists():
        return []
    return [["hpo", *json.loads(line)] for line in log.read_text().splitlines()]


def check_every_hpo_command_parses(m: Manifest, tmp: Path) -> None:
    ran: dict[str, list[list[str]]] = {}
    for where, pod in m.pods():
        for c in containers(pod):
            cmds = run_container(m, c, tmp)
            assert cmds, f"{where}/{c['name']} runs no hpo command"
            for cmd in cmds:
                parse_with_cli(cmd, f"k8s {where}/{c['name']}")
            ran[c["name"]] = cmds
    assert ran == {
        "create": [["hpo", "create", m.study_file()]],
        "wait-for-study": [["hpo", "best", m.study_file(), "--json"]],
        "worker": [["hpo", "worker", m.study_file()]],
        "wait-for-storage": [["hpo", "studies"]],
        "dashboard": [["hpo", "dashboard", "--host", "0.0.0.0", "--port", "8080"]],
    }


def test_every_hpo_command_parses_with_the_cli(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the image's WORKDIR: study files are relative to it
    check_every_hpo_command_parses(manifest(), tmp_path)


@pytest.mark.parametrize("study_file", sorted(p.relative_to(ROOT).as_posix()
                                              for p in (ROOT / "studies").glob("*.toml")))
def test_workers_join_the_study_that_create_makes(study_file: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever file the ConfigMap names, the workers join the study `hpo create` makes of it
    (the `name` inside the file): they pass the same file, which the CLI reads for its name."""
    monkeypatch.chdir(ROOT)
    m = manifest()
    name = load_study_file(ROOT / study_file).name
    assert tomllib.loads((ROOT / study_file).read_text())["name"] == name
    pod = m.named("Job")["hpo-workers"]["spec"]["template"]["spec"]
    seen = {c["name"]: run_container(m, c, tmp_path, {"HPO_STUDY_FILE": study_file})
            for c in containers(pod)}
    assert seen == {"wait-for-study": [["hpo", "best", study_file, "--json"]],
                    "worker": [["hpo", "worker", study_file]]}
    for (cmd,) in seen.values():
        assert parse_with_cli(cmd, study_file)["study"] == name


def test_a_worker_pod_without_its_study_file_fails_at_once(tmp_path: Path) -> None:
    """A wrong HPO_STUDY_FILE fails the pod's containers, instead of waiting forever or joining
    a study named ''."""
    m = manifest()
    pod = m.named("Job")["hpo-workers"]["spec"]["template"]["spec"]
    wait, worker = pod["initContainers"][0], pod["containers"][0]
    with pytest.raises(AssertionError, match="No such file"):
        run_container(m, wait, tmp_path, {"HPO_STUDY_FILE": "studies/missing.toml"})
    (cmd,) = run_container(m, worker, tmp_path, {"HPO_STUDY_FILE": "studies/missing.toml"})
    # Not a file, so a name: the worker stops at once on the storage's "no study named" line.
    assert parse_with_cli(cmd, "worker")["study"] == "studies/missing.toml"


def test_the_worker_pods_run_for_real(tmp_path: Path) -> None:
    """The create Job, the workers' wait and a worker, run with the real hpo against the test
    PostgreSQL: the wait holds until the study exists, then the worker finishes the budget."""
    url = os.environ.get("HPO_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("needs $HPO_TEST_POSTGRES_URL (a PostgreSQL URL); .ci/run sets it")
    import tomli_w

    m = manifest()
    name = f"k8s-{uuid.uuid4().hex[:10]}"  # the test database is shared
    study = tomllib.loads((ROOT / m.study_file()).read_text())
    study_file = tmp_path / f"{name}.toml"
    study_file.write_text(tomli_w.dumps({**study, "name": name, "trials": 2}))
    hpo_dir = Path(sys.executable).parent  # the image has hpo and python on its PATH
    assert (hpo_dir / "hpo").exists()

    def start(c: Mapping[str, Any]) -> subprocess.Popen[str]:
        env = {**container_env(m, c), "HPO_STORAGE": url, "HPO_STUDY_FILE": str(study_file)}
        if "HPO_ARTIFACTS" in env:
            env["HPO_ARTIFACTS"] = str(tmp_path / "artifacts")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("HPO_", "OPTUNA_"))}
        args = [expand_k8s(a, env) for a in [*c["command"], *c.get("args", [])]]
        return subprocess.Popen(args, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT,
                                env={**base, **env, "PATH": f"{hpo_dir}{os.pathsep}/usr/bin:/bin"})

    workers = m.named("Job")["hpo-workers"]["spec"]["template"]["spec"]
    (create,) = m.named("Job")["hpo-create"]["spec"]["template"]["spec"]["containers"]
    (wait,) = workers["initContainers"]
    (worker,) = workers["containers"]
    waiting = start(wait)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=3)  # no study yet: it keeps waiting
        out = start(create).communicate(timeout=300)[0]
        assert f"study '{name}' ready" in out, out
        assert waiting.wait(timeout=60) == 0
        running = start(worker)
        out = running.communicate(timeout=300)[0]
        assert running.returncode == 0 and "worker done:" in out, out
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    import optuna

    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    assert len([t for t in trials if t.state.is_finished()]) == 2  # the budget
    optuna.delete_study(study_name=name, storage=url)  # keep the shared database tidy


# --- the checks can fail -----------------------------------------------------------------------

def _study_named_twice(text: str) -> str:
    name = load_study_file(ROOT / Manifest(text).study_file()).name
    return text.replace("            - name: HPO_ARTIFACTS\n",
                        f"            - name: HPO_STUDY_NAME\n              value: {name}\n"
                        "            - name: HPO_ARTIFACTS\n", 1)


BREAKS = {
    "fsGroup dropped": (check_pods_that_mount_the_volume_can_write_it,
                        lambda t: t.replace("        fsGroup: 10001\n        fsGroupChangePolicy",
                                            "        fsGroupChangePolicy")),
    "another uid": (check_containers_run_as_the_image_user,
                    lambda t: t.replace("runAsUser: 10001", "runAsUser: 1000", 1)),
    "root allowed": (check_containers_run_as_the_image_user,
                     lambda t: t.replace("runAsNonRoot: true", "runAsNonRoot: false", 1)),
    "study named twice": (check_the_study_is_named_in_one_place, _study_named_twice),
    "dashboard published": (check_the_dashboard_serves_the_workers_storage_and_volume,
                            lambda t: t.replace("type: ClusterIP", "type: LoadBalancer")),
    "dashboard writes": (check_pods_that_mount_the_volume_can_write_it,
                         lambda t: t.replace(", readOnly: true}", "}")),
    "dangling port": (check_names_resolve,
                      lambda t: t.replace("targetPort: http", "targetPort: web")),
    "dangling key": (check_names_resolve,
                     lambda t: t.replace("key: HPO_STUDY_FILE}", "key: STUDY_FILE}", 1)),
    "completions set": (check_workers_are_a_work_queue,
                        lambda t: t.replace("  parallelism: 8\n",
                                            "  parallelism: 8\n  completions: 8\n")),
}


@pytest.mark.parametrize("brk", BREAKS)
def test_each_check_catches_its_break(brk: str) -> None:
    check, edit = BREAKS[brk]
    text = MANIFEST.read_text()
    broken = edit(text)
    assert broken != text, f"{brk}: the edit no longer applies to the manifest"
    assert schema_errors(Manifest(broken), KUBERNETES_VERSIONS[-1]) == []  # the schema is blind
    with pytest.raises(AssertionError):
        check(Manifest(broken))


DRIFTS = [('"worker", "$(HPO_STUDY_FILE)"', '"worker", "--study", "$(HPO_STUDY_FILE)"'),
          ('until hpo best', 'until hpo best --name'),
          ('"--port", "8080"', '"--prot", "8080"')]


@pytest.mark.parametrize("old,new", DRIFTS)
def test_a_drifted_command_fails_the_cli_check(old: str, new: str, tmp_path: Path) -> None:
    """A flag the CLI does not have, inside a shell script or an exec-form command, fails."""
    text = MANIFEST.read_text()
    assert old in text
    with pytest.raises(Exception, match="No such option|unexpected extra argument"):
        check_every_hpo_command_parses(Manifest(text.replace(old, new, 1)), tmp_path)
