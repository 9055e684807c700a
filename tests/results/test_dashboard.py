"""`hpo dashboard`: the JSON API in-process and over a live loopback server, downloads of
artifacts, WAL (readers and workers never wait for each other), and a headless Chromium that
must show the study and a trial's picture to a person.

Chromium is driven over the DevTools protocol through a pipe (--remote-debugging-pipe: fd 3 in,
fd 4 out, NUL-separated JSON), so no browser download and no websocket package are needed.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import numpy as np
import pytest
import tomli_w
from PIL import Image
from typer.testing import CliRunner

from hpo.cli import app
from hpo.results.artifacts import ENV
from hpo.results.dashboard import journal_mode, make_app
from hpo.run import objective
from hpo.store.engines import open_storage
from hpo.store.studies import create_study, load, make_sampler
from hpo.study.parse import load_study_file
from hpo.task.modelfile import load_model

NAME = "dash_study"
STUDY = {
    "name": NAME, "trials": 2, "seed": 0,
    "sampler": {"type": "points", "points": [{"hidden_size": 8, "shift": 2, "epochs": 15},
                                             {"hidden_size": 6, "shift": 3, "epochs": 10}]},
    "space": {"hidden_size": {"type": "int", "low": 4, "high": 12},
              "shift": {"type": "int", "low": 0, "high": 5},
              "epochs": {"type": "int", "low": 5, "high": 20}},
    "train": {"lr": 0.05},
    "data": {"seed": 0, "train": 40, "val": 10, "test": 10},
}
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1100", "--remote-debugging-pipe"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished two-trial study in SQLite with its artifacts beside the database."""
    d = tmp_path_factory.mktemp("dash")
    (d / "study.toml").write_text(tomli_w.dumps(STUDY))
    url = f"sqlite:///{d / 'db' / 'hpo.db'}"
    saved = os.environ.pop(ENV, None)
    try:
        spec = load_study_file(d / "study.toml")
        create_study(spec, open_storage(url, create=True))
        study, spec = load(NAME, open_storage(url, heartbeat=False))
        study.sampler = make_sampler(spec, 0)
        for _ in range(spec.trials):
            trial = study.ask()
            out = objective.run_trial(spec, trial, threads=1, host="t:1",
                                      call=lambda f, w, **_: f())
            study.tell(trial, out.values, state=out.state)
    finally:
        if saved is not None:
            os.environ[ENV] = saved
    best = max(study.trials, key=lambda t: t.value or 0.0)
    return {"url": url, "dir": d / "db" / "artifacts", "study": study, "best": best, "tmp": d}


def wsgi_get(wsgi_app: Any, path: str) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    got: list[Any] = []
    body = b"".join(wsgi_app(environ, lambda status, headers, *a: got.append((status, headers))))
    return got[0][0], dict(got[0][1]), body


def check_api(get: Any, site: dict[str, Any], tmp: Path) -> None:
    """What both the in-process app and the live server must answer (get: path -> bytes)."""
    studies = json.loads(get("/api/studies"))["study_summaries"]
    sid = next(s["study_id"] for s in studies if s["study_name"] == NAME)
    detail = json.loads(get(f"/api/studies/{sid}"))
    assert "Reference numbers" in detail["note"]["body"]
    trials = {t["number"]: t for t in detail["trials"]}
    assert sorted(trials) == [0, 1] and all(t["state"] == "Complete" for t in trials.values())
    for n, t in trials.items():
        files = {a["filename"]: a for a in t["artifacts"]}
        assert set(files) == {f"trial-{n}-curves.png", f"trial-{n}-model.pt",
                              f"trial-{n}-curves.json"}
        base = f"/artifacts/{sid}/{t['trial_id']}/"
        png = get(base + files[f"trial-{n}-curves.png"]["artifact_id"])
        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and im.size == (720, 448)
        assert files[f"trial-{n}-model.pt"]["mimetype"] == "application/octet-stream"
        pt = get(base + files[f"trial-{n}-model.pt"]["artifact_id"])
        (tmp / f"dl-{n}.pt").write_bytes(pt)
        _, meta = load_model(tmp / f"dl-{n}.pt")
        assert meta["scores"]["val_removed"] == pytest.approx(
            site["study"].trials[n].user_attrs["model_val_removed"], abs=1e-4)


def test_wsgi_api_lists_the_study_trials_and_artifacts(site: dict[str, Any],
                                                       tmp_path: Path) -> None:
    wsgi_app = make_app(open_storage(site["url"], heartbeat=False), site["dir"])

    def get(path: str) -> bytes:
        status, _, body = wsgi_get(wsgi_app, path)
        assert status.startswith("200"), (path, status, body[:300])
        return body

    check_api(get, site, tmp_path)


def test_readers_and_workers_never_wait_for_each_other(site: dict[str, Any]) -> None:
    assert journal_mode(site["url"]) == "wal"
    db = site["url"].removeprefix("sqlite:///")
    wsgi_app = make_app(open_storage(site["url"], heartbeat=False), site["dir"])
    writer = sqlite3.connect(db, timeout=0.1, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # a worker in the middle of a write
    try:
        start = time.monotonic()
        status, _, _ = wsgi_get(wsgi_app, f"/api/studies/{site['study']._study_id}")
        assert status.startswith("200") and time.monotonic() - start < 10
    finally:
        writer.execute("ROLLBACK")
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM trials").fetchone()  # a dashboard request mid-read
    try:
        start = time.monotonic()
        site["study"].set_user_attr("written_while_read", True)  # a worker's write
        assert time.monotonic() - start < 10
    finally:
        reader.execute("COMMIT")


@pytest.fixture(scope="module")
def live(site: dict[str, Any]) -> Any:
    """`hpo dashboard --port 0` as a real process; yields its base URL."""
    env = {**os.environ, "HPO_STORAGE": site["url"], "PYTHONUNBUFFERED": "1"}
    env.pop(ENV, None)
    proc = subprocess.Popen([sys.executable, "-m", "hpo", "dashboard", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("open http://127.0.0.1:"):
            break
    url = lines[-1].split()[1] if lines and lines[-1].startswith("open ") else None
    assert url, f"no address printed: {lines} {proc.stderr.read() if proc.poll() else ''}"
    assert f"artifacts: {site['dir']}" in "".join(lines) and "wal mode" in lines[0]
    yield url.removesuffix("/dashboard/")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    assert "Traceback" not in proc.stderr.read()


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        return bytes(r.read())


def test_live_server_on_loopback_serves_the_api_and_downloads(live: str, site: dict[str, Any],
                                                              tmp_path: Path) -> None:
    assert live.startswith("http://127.0.0.1:")
    check_api(lambda path: http_get(live + path), site, tmp_path)
    assert b"<html" in http_get(live + "/dashboard/").lower()


def test_port_in_use_is_one_line(site: dict[str, Any]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = CliRunner().invoke(app, ["dashboard", "--storage", site["url"], "--port", str(port)])
    assert r.exit_code == 2 and r.stdout == "", r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--port {port}: already in use" in lines[0]


# --- a person's view: headless Chromium over the DevTools protocol ------------------------------

TRAMPOLINE = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
              "os.execv(sys.argv[3], sys.argv[3:])")


class Chrome:
    """Just enough of the DevTools protocol over --remote-debugging-pipe."""

    def __init__(self, exe: str, profile: Path, log: Path) -> None:
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        # The protocol wants the pipes at fds 3 and 4 exactly; a tiny Python trampoline moves
        # them there and execs the browser (dash cannot redirect fds above 9).
        with log.open("wb") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", TRAMPOLINE, str(to_chrome_r), str(from_chrome_w), exe,
                 *CHROME_FLAGS, f"--user-data-dir={profile}"],
                pass_fds=(to_chrome_r, from_chrome_w), stdout=f, stderr=subprocess.STDOUT)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf, self._n = b"", 0

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60) -> dict[str, Any]:
        self._n += 1
        msg: dict[str, Any] = {"id": self._n, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._r], [], [], left)[0]:
                    raise TimeoutError(f"no answer to {method} in {timeout} s")
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited (code {self.proc.poll()})")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._n:  # everything else is an event
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply["result"])

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            self.call("Browser.close", timeout=10)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._w)
        os.close(self._r)


FIND_PICTURE = """(() => {
  const text = document.body ? document.body.innerText : "";
  const img = [...document.images].find(i => i.src.includes(%(aid)s));
  if (!img) return {ok: false, why: "no picture yet", study: text.includes(%(name)s)};
  img.scrollIntoView({block: "center"});
  const r = img.getBoundingClientRect();
  const inView = r.width > 50 && r.top >= 0 && r.bottom <= innerHeight;
  return {ok: img.complete && img.naturalWidth > 0 && inView && text.includes(%(name)s),
          natural: [img.naturalWidth, img.naturalHeight], rect: [r.left, r.top, r.width, r.height],
          scale: devicePixelRatio};
})()"""


def test_browser_shows_the_study_and_a_trial_picture(
        live: str, site: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
        capsys: pytest.CaptureFixture[str]) -> None:
    exe = next((p for p in map(shutil.which, BROWSERS) if p), None)
    if exe is None:
        pytest.skip(f"no headless browser ({', '.join(BROWSERS)}) on PATH; install Debian's "
                    "`chromium` (.ci/run does)")
    out = tmp_path_factory.mktemp("browser")
    best, study = site["best"], site["study"]
    aid = best.user_attrs["artifact_picture"]
    page = f"{live}/dashboard/studies/{study._study_id}/trials?numbers={best.number}"
    chrome = Chrome(exe, out / "profile", out / "chromium.log")
    try:
        target = chrome.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = chrome.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]
        chrome.call("Page.navigate", {"url": page}, session)
        expr = FIND_PICTURE % {"aid": json.dumps(aid), "name": json.dumps(NAME)}
        seen: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not seen.get("ok"):
            time.sleep(0.5)
            seen = chrome.call("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                               session)["result"].get("value") or {}
        assert seen.get("ok"), f"the study and trial {best.number}'s picture never showed: {seen}"
        assert seen["natural"] == [720, 448]  # our PNG, decoded by the browser
        time.sleep(0.5)  # let the scroll settle before the picture is taken
        shot = base64.b64decode(chrome.call("Page.captureScreenshot", {"format": "png"},
                                            session)["data"])
    finally:
        chrome.close()
    path = out / "dashboard.png"
    path.write_bytes(shot)
    shutil.copyfile(path, "/tmp/dashboard-screenshot.png")
    with capsys.disabled():
        print(f"\ndashboard screenshot: {path} (copy: /tmp/dashboard-screenshot.png)")
    # On the screenshot itself, where the page says the picture is, are the picture's colours:
    # the clean curve's blue and the denoised curve's orange (hpo.task.plots.COLORS).
    with Image.open(io.BytesIO(shot)) as im:
        s = seen["scale"]
        left, top, w, h = (int(v * s) for v in seen["rect"])
        px = np.asarray(im.convert("RGB").crop((left, top, left + w, top + h))).astype(int)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    # A thumbnail: thin lines, the orange mostly drawn over the blue; a broken-image icon or a
    # blank card has neither.
    assert ((b > r + 60) & (b > 130)).sum() >= 10, "no blue clean curve where the picture is"
    assert ((r > 170) & (g < 140) & (b < 100)).sum() >= 20, "no orange denoised curve there"
