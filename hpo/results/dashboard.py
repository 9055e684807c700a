"""`hpo dashboard`: optuna-dashboard on the workers' storage and artifact store.

The server binds before it says anything, so a taken port is a clear error rather than a stack
trace, `--port 0` works (the kernel picks), and the printed address is the real one. Requests
are served on threads: the page fires several at once, and one slow study listing must not stall
a picture. Reading never blocks the workers: SQLite files are in WAL mode (set when hpo creates
them), where readers and the single writer do not wait for each other, and every request's
transaction is short.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import signal
import socket
import sqlite3
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from hpo.errors import DashboardError, one_line
from hpo.store.urls import parse, sqlite_path


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # Ctrl-C must not wait for a browser's keep-alive request


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request (dozens per page) would bury the address to open


def make_app(storage: optuna.storages.BaseStorage, artifact_dir: Path | None) -> Any:
    """The dashboard's WSGI app; artifacts are viewable only when their directory is given.
    A study whose stored rows do not read is named at once, one warning line each (its pages
    will fail), and a failing request is one line on the console, not a traceback."""
    import optuna_dashboard
    from optuna.artifacts import FileSystemArtifactStore

    warn_damaged(storage)
    store = FileSystemArtifactStore(artifact_dir) if artifact_dir is not None else None
    return one_line_errors(optuna_dashboard.wsgi(storage, artifact_store=store))


def warn_damaged(storage: optuna.storages.BaseStorage) -> list[str]:
    """One warning line (stderr) per study with a damaged row: its first, with the fix."""
    from hpo.store import damage, optuna_api, stored

    rdb = optuna_api.rdb_of(storage)
    if rdb is None:
        return []
    first: dict[str, stored.Damage] = {}
    for d in damage.damage(rdb.engine):
        first.setdefault(d.study, d)
    lines = [f"{d.line()}; its dashboard pages will fail until then" for d in first.values()]
    for line in lines:
        stored.tolerate(line)
    return lines


class _OneLineLog:
    """The app's error stream (bottle writes a failing request's traceback there): one line per
    failing request, its last line (the error), on stderr."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.text: list[str] = []

    def write(self, text: str) -> None:
        self.text.append(text)

    def writelines(self, lines: Any) -> None:
        self.text.extend(lines)

    def flush(self) -> None:
        lines = [ln for ln in "".join(self.text).splitlines() if ln.strip()]
        self.text = []
        if lines:
            sys.stderr.write(f"warning: {one_line(self.where)} failed: {one_line(lines[-1])[:300]}"
                             "\n")
            sys.stderr.flush()


class _FirstLine(logging.Filter):
    """optuna-dashboard logs a failing API request's error with its whole traceback: kept to
    the error's line, so that one failing page is one line on the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage().strip().splitlines()
        first = one_line(text[0] if text else "")[:300]
        record.msg = f"warning: a dashboard request failed: {first}"
        record.args = ()
        record.exc_info = record.exc_text = None
        return True


def one_line_errors(app: Any) -> Any:
    logger = logging.getLogger("optuna_dashboard._bottle_util")
    if not any(isinstance(f, _FirstLine) for f in logger.filters):
        logger.addFilter(_FirstLine())

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        log = _OneLineLog(f"{environ.get('REQUEST_METHOD', '')} {environ.get('PATH_INFO', '')}")
        environ["wsgi.errors"] = log
        try:
            return app(environ, start_response)
        finally:
            log.flush()

    return wrapped


def journal_mode(url: str) -> str | None:
    """SQLite's journal mode of the storage's file (None for a database server)."""
    path = sqlite_path(parse(url))
    if path is None or not path.exists():
        return None
    # As a URI, with the path quoted: a '#' or '%' in a file name would otherwise cut it short.
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as con:
        return str(con.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address(host: str, port: int) -> str:
    """The address to open on this machine; on all interfaces, loopback is one of them."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/dashboard/"


def bind(app: Any, host: str, port: int) -> WSGIServer:
    server_cls: type[WSGIServer] = _ThreadingServer
    if ":" in host:
        server_cls = type("_ThreadingServer6", (_ThreadingServer,),
                          {"address_family": socket.AF_INET6})
    try:
        return make_server(host, port, app, server_class=server_cls,
                           handler_class=_QuietHandler)
    except socket.gaierror as e:
        raise DashboardError(f"--host {host}: unknown host ({e.strerror}); use 127.0.0.1 (this "
                             "machine only) or an address of this machine") from e
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise DashboardError(f"--port {port}: already in use on {host}; choose another "
                                 "port (--port 0 picks a free one)") from e
        if e.errno == errno.EACCES:
            raise DashboardError(f"--port {port}: permission denied (ports below 1024 need "
                                 "root); use e.g. --port 8080") from e
        if e.errno == errno.EADDRNOTAVAIL:
            raise DashboardError(f"--host {host} is not an address of this machine; use "
                                 "127.0.0.1, or 0.0.0.0 for every interface") from e
        raise DashboardError(f"--host {host} --port {port}: cannot listen ({e.strerror})") from e


def serve(server: WSGIServer, on_stop: Callable[[], None] | None = None) -> None:
    """Serves until Ctrl-C (or SIGTERM, as from `docker stop`), then closes the socket."""
    if threading.current_thread() is threading.main_thread():
        # Set explicitly: a process started in the background by a non-interactive shell (CI,
        # nohup, some supervisors) inherits SIGINT as *ignored*, and Python then never raises.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.default_int_handler)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if on_stop is not None:
            on_stop()
