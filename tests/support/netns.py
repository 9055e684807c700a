"""A private lab of "hosts" for multi-host tests: Linux network namespaces on one machine.

Not a test module (no test_ prefix): tests/system/test_hosts.py imports it.

The lab is one switch namespace holding a bridge, and one namespace per host joined to it by a
veth pair (`eth0` in the host, `p-NAME` on the bridge), all in 10.213.0.0/24. Nothing is added to
the machine's own namespace: no link leads out of the lab, so no packet of a test can reach any
other network, and no address of the lab can clash with the machine's. The "db" host runs a
private PostgreSQL (its own data directory, port and socket directory, trust auth on the lab's
subnet only); each worker host runs its commands under its own host name (a UTS namespace).

Everything the lab makes (namespaces, links, processes, the PostgreSQL data directory) is
removed by `Lab.close()`, which never stops at the first error. Namespaces are named after the
pid of the process that made them (`hpot<pid>-<host>`), so a lab whose test process was killed
outright (SIGKILL, no finalizer) is swept away by the next one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

SUBNET = "10.213.0"  # a /24 used only inside namespaces this module creates
PREFIX = "hpot"
PG_PORT = 55432  # inside the db namespace; another port than the machine's own server anyway
DB_NAME = DB_USER = "hpo"


class LabUnavailable(Exception):
    """Namespaces (or the tools to build the lab) are not available here: tests skip."""


@dataclass(frozen=True)
class Host:
    name: str  # its host name, as `socket.gethostname()` tells it to hpo
    ns: str  # its network namespace
    addr: str


def _run(cmd: Sequence[str], *, timeout: float = 60, check: bool = True,
         **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc


def pg_bin() -> Path | None:
    """The newest PostgreSQL server binaries installed (Debian layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(re.findall(r"/(\d+)/bin", p)[0]))
    return Path(found[-1]).parent if found else None


def pg_tool(name: str) -> str:
    binaries = pg_bin()
    if binaries is None:
        raise LabUnavailable("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return str(binaries / name)


def unavailable_reason() -> str | None:
    """Why a lab cannot be built on this machine, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    for tool in ("ip", "unshare", "runuser"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    if pg_bin() is None:
        return "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "no `postgres` user to run initdb/postgres as (they refuse root)"
    return None


def ns_pids(ns: str) -> list[int]:
    proc = _run(["ip", "netns", "pids", ns], check=False, timeout=20)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lab_namespaces(pid: int | None = None) -> list[str]:
    """Namespaces named by this module (of process `pid`, or of any process)."""
    names = [line.split()[0] for line in _run(["ip", "netns", "list"]).stdout.splitlines()
             if line.strip()]
    pat = re.compile(rf"^{PREFIX}(\d+)-")
    return [n for n in names if (m := pat.match(n)) and (pid is None or int(m[1]) == pid)]


def sweep_abandoned() -> list[str]:
    """Removes the namespaces (and what runs in them) of labs whose process is gone."""
    swept = []
    abandoned = []
    for name in glob.glob(os.path.join(tempfile.gettempdir(), "hpo-hosts-*")):
        m = re.search(r"hpo-hosts-(\d+)-", name)
        if m and int(m[1]) != os.getpid() and not pid_alive(int(m[1])):
            abandoned.append(Path(name))
    for d in abandoned:  # stopped, not killed: a SIGKILLed postmaster leaves its SysV segment
        if (d / "pg" / "postmaster.pid").exists():
            _run(["runuser", "-u", "postgres", "--", pg_tool("pg_ctl"), "-D", str(d / "pg"),
                  "-m", "immediate", "-w", "-t", "30", "stop"], check=False, cwd=d)
    for ns in lab_namespaces():
        owner = int(re.match(rf"^{PREFIX}(\d+)-", ns)[1])  # type: ignore[index]
        if pid_alive(owner):
            continue  # a live test process's lab (maybe another engineer's): not to touch
        kill_pids(ns_pids(ns))
        _run(["ip", "netns", "del", ns], check=False)
        swept.append(ns)
    for d in abandoned:
        shutil.rmtree(d, ignore_errors=True)
        swept.append(str(d))
    return swept


@dataclass
class Lab:
    workers: list[Host]
    db: Host
    switch: str
    root: Path  # the lab's own temp dir: PostgreSQL data, socket, logs
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    # --- URLs -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """What the worker hosts use: TCP over the lab's links."""
        return f"postgresql+psycopg://{DB_USER}@{self.db.addr}:{PG_PORT}/{DB_NAME}"

    @property
    def observer_url(self) -> str:
        """What the test process itself reads with: the server's Unix socket, a file in the
        lab's directory. The test process lives in the machine's own namespace, which has no
        route into the lab (by design), and a link cut between hosts must not blind it."""
        return (f"postgresql+psycopg://{DB_USER}@/{DB_NAME}?host={self.root / 'sock'}"
                f"&port={PG_PORT}")

    @property
    def pg_data(self) -> Path:
        return self.root / "pg"

    @property
    def pg_log(self) -> Path:
        return self.root / "log" / "postgresql.log"

    def host(self, name: str) -> Host:
        return next(h for h in self.workers if h.name == name)

    # --- commands on a host ---------------------------------------------------------------
    def argv(self, host: Host, cmd: Sequence[str]) -> list[str]:
        """cmd run on `host`: in its network namespace, under its own host name."""
        return ["ip", "netns", "exec", host.ns, "unshare", "--uts", "--", "sh", "-c",
                'hostname "$0" && exec "$@"', host.name, *cmd]

    def spawn(self, host: Host, cmd: Sequence[str], env: dict[str, str], log: Path,
              cwd: Path) -> subprocess.Popen[bytes]:
        """Starts cmd on host (its own session, so close() can kill its whole group)."""
        with log.open("ab") as f:
            proc = subprocess.Popen(self.argv(host, cmd), env=env, cwd=cwd, stdout=f,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def run(self, host: Host, cmd: Sequence[str], env: dict[str, str], cwd: Path,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return _run(self.argv(host, cmd), env=env, cwd=cwd, timeout=timeout, check=False)

    # --- faults ---------------------------------------------------------------------------
    def cut(self, host: Host) -> None:
        _run(["ip", "-n", host.ns, "link", "set", "eth0", "down"])

    def heal(self, host: Host) -> None:
        _run(["ip", "-n", host.ns, "link", "set", "eth0", "up"])

    def kill_host(self, host: Host) -> list[int]:
        """SIGKILLs every process on the host at once (a power cut); returns their pids."""
        pids = ns_pids(host.ns)
        kill_pids(pids)
        return pids

    def pg_ctl(self, *args: str, timeout: float = 120, check: bool = True
               ) -> subprocess.CompletedProcess[str]:
        # pg_ctl runs in the db namespace, so that a restarted postmaster listens there again.
        return _run(["ip", "netns", "exec", self.db.ns, "runuser", "-u", "postgres", "--",
                     pg_tool("pg_ctl"), "-D", str(self.pg_data), *args],
                    timeout=timeout, cwd=self.root, check=check)

    def pg_restart(self) -> None:
        self.pg_ctl("-m", "fast", "-w", "-t", "60", "-l", str(self.pg_log), "restart")

    def pg_start_time(self) -> str:
        return self.psql("SELECT pg_postmaster_start_time()").strip()

    def superuser(self) -> psycopg.Connection[Any]:
        """A superuser session on the lab's server over its Unix socket (pg_stat_activity shows
        client addresses only to superusers)."""
        return psycopg.connect(host=str(self.root / "sock"), port=PG_PORT, user="postgres",
                               dbname=DB_NAME, autocommit=True)

    def psql(self, sql: str, db: str = "postgres") -> str:
        return _run(["runuser", "-u", "postgres", "--", pg_tool("psql"),
                     "-h", str(self.root / "sock"), "-p", str(PG_PORT), "-d", db, "-XAtq",
                     "-v", "ON_ERROR_STOP=1", "-c", sql], cwd=self.root).stdout

    # --- teardown -------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Removes everything the lab made; returns what could not be removed."""
        problems: list[str] = []
        for proc in self.procs:  # each in its own session: its group is its pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if self.pg_data.exists():
            # An immediate stop still removes the server's shared memory segment, which a
            # SIGKILLed postmaster would leave behind.
            with contextlib.suppress(Exception):
                self.pg_ctl("-m", "immediate", "-w", "-t", "30", "stop", timeout=40)
        for ns in self.namespaces:  # whatever still runs there (a backend, a straggler)
            kill_pids(ns_pids(ns))
        deadline = time.monotonic() + 10
        while any(ns_pids(ns) for ns in self.namespaces) and time.monotonic() < deadline:
            time.sleep(0.1)
        for ns in reversed(self.namespaces):  # deleting a namespace deletes its veth ends
            gone = _run(["ip", "netns", "del", ns], check=False)
            if gone.returncode != 0:
                problems.append(f"ip netns del {ns}: {gone.stderr.strip()}")
        shutil.rmtree(self.root, ignore_errors=True)
        if self.root.exists():
            problems.append(f"could not remove {self.root}")
        left = lab_namespaces(os.getpid())
        if left:
            problems.append(f"namespaces left: {left}")
        return problems


def build(workers: Sequence[str] = ("h1", "h2", "h3")) -> Lab:
    """Builds the lab and starts its PostgreSQL; on any error removes what it had made."""
    reason = unavailable_reason()
    if reason:
        raise LabUnavailable(reason)
    sweep_abandoned()
    tag = f"{PREFIX}{os.getpid()}"
    root = Path(tempfile.mkdtemp(prefix=f"hpo-hosts-{os.getpid()}-"))
    root.chmod(0o755)  # the postgres user must reach its data directory inside
    db = Host("db", f"{tag}-db", f"{SUBNET}.1")
    hosts = [Host(n, f"{tag}-{n}", f"{SUBNET}.{11 + i}") for i, n in enumerate(workers)]
    lab = Lab(hosts, db, f"{tag}-sw", root)
    try:
        try:
            _run(["ip", "netns", "add", lab.switch])
        except RuntimeError as e:  # no CAP_SYS_ADMIN (an unprivileged container), no netns
            raise LabUnavailable(f"cannot create a network namespace: {e}") from e
        lab.namespaces.append(lab.switch)
        _net(lab)
        _postgres(lab)
    except BaseException:
        lab.close()
        raise
    return lab


def _net(lab: Lab) -> None:
    sw = lab.switch
    for cmd in (["link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"],
                ["link", "set", "br0", "up"], ["link", "set", "lo", "up"]):
        _run(["ip", "-n", sw, *cmd])
    for h in (lab.db, *lab.workers):
        _run(["ip", "netns", "add", h.ns])
        lab.namespaces.append(h.ns)
        # Created inside the namespaces directly: no link ever appears in the machine's own.
        _run(["ip", "link", "add", "eth0", "netns", h.ns, "type", "veth", "peer", "name",
              f"p-{h.name}", "netns", sw])
        _run(["ip", "-n", sw, "link", "set", f"p-{h.name}", "master", "br0", "up"])
        _run(["ip", "-n", h.ns, "addr", "add", f"{h.addr}/24", "dev", "eth0"])
        _run(["ip", "-n", h.ns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", h.ns, "link", "set", "lo", "up"])
    for ns in lab.namespaces:  # no IPv6 chatter (router solicitations, DAD) on the lab's links
        _run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
             check=False)


def _postgres(lab: Lab) -> None:
    sock = lab.root / "sock"
    # Owned by postgres: initdb and the server run as it.
    for d in (sock, lab.pg_data, lab.root / "log"):
        d.mkdir(mode=0o700)
        shutil.chown(d, "postgres", "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    # initdb refuses root; --no-sync: a throwaway cluster need not survive a power cut.
    _run([*as_pg, pg_tool("initdb"), "-D", str(lab.pg_data), "-A", "trust", "-U",
          "postgres", "-E", "UTF8", "--locale=C", "--no-sync"], cwd=lab.root, timeout=120)
    with (lab.pg_data / "postgresql.conf").open("a") as f:
        f.write(f"listen_addresses = '{lab.db.addr}'\nport = {PG_PORT}\n"
                f"unix_socket_directories = '{sock}'\n"
                # Durability is not under test (restarts are clean); fsync would only slow
                # a shared 2-core machine.
                "fsync = off\nmax_connections = 60\nshared_buffers = 32MB\n")
    (lab.pg_data / "pg_hba.conf").write_text(
        "local all all trust\n"
        f"host all all {SUBNET}.0/24 trust\n")  # the lab's subnet only
    lab.pg_ctl("-w", "-t", "60", "-l", str(lab.pg_log), "start")
    lab.psql(f"CREATE ROLE {DB_USER} LOGIN")
    lab.psql(f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}")
