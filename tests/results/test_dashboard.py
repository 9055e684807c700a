"""`hpo dashboard`: the JSON API in-process and over a live loopback server, downloads of
artifacts, WAL (readers and workers never wait for each other), what the study sets for a person
to read (the objective's name, a note with the settings rounded and narrow, pictures whose axes
name the objective), and a headless Chromium that must show the study, its note, the objective's
name on History and a trial's picture to a person.

Chromium is driven over the DevTools protocol through a pipe (--remote-debugging-pipe: fd 3 in,
fd 4 out, NUL-separated JSON), so no browser download and no websocket package are needed.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
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
from hpo.study.metrics import METRIC_LABELS
from hpo.study.note import study_note
from hpo.study.parse import load_study_file
from hpo.task.modelfile import load_model
from hpo.task.plots import VAL_LABEL, trial_png

NAME = "dash_study"
STUDY: dict[str, Any] = {
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
    # Optuna's metric names, stored with the study: the dashboard names the objective with them
    # (History's axis, every objective menu).
    assert detail["objective_names"] == [METRIC_LABELS["val_removed"]]
    check_note(detail["note"]["body"])
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


NUMBER = re.compile(r"\d+\.\d+(?:e[-+]?\d+)?")


def unrounded(text: str) -> list[str]:
    """Numbers shown with more than 5 significant digits, like the 56.92992523719329 a person
    saw: 58.51 % and 0.0001235 are rounded, 56.92992 is not."""
    return [n for n in NUMBER.findall(text)
            if len(n.split("e")[0].replace(".", "").lstrip("0")) > 5]


TABLE_ROW_MAX = 120  # characters of a markdown table row: the note's tables stay narrow


def check_note(body: str) -> None:
    """The stored study note of STUDY: its settings (what `hpo:spec` holds as JSON) readable,
    rounded, in narrow tables, and the key to the dashboard's own labels."""
    assert body.startswith(f"# {NAME}\n") and "Reference numbers" in body
    for needle in ("## Settings", "| budget | 2 finished trials at creation (now: `hpo:budget`) |",
                   "| seeds | study seed 0; 1 training seed per trial |",
                   "| sampler | points, 2 points, listed below |", "| pruner | none |",
                   "lr 0.05 (study file)", "Adam (lr 0.05)",
                   "| point | hidden_size | shift | epochs |", "| 0 | 8 | 2 | 15 |",
                   "| 1 | 6 | 3 | 10 |", "| hidden_size | 4 to 12 |",
                   "## Reading the dashboard", '"Objective Value"',
                   f"**{METRIC_LABELS['val_removed']}**", "`hpo:spec`", f"`hpo best {NAME}`"):
        assert needle in body, needle
    assert not unrounded(body), unrounded(body)
    wide = [line for line in body.splitlines()
            if line.startswith("|") and len(line) > TABLE_ROW_MAX]
    assert not wide, wide


def test_the_note_rounds_every_setting_for_reading(tmp_path: Path) -> None:
    """Floats as a study file may spell them (0.1 + 0.2, a log range's ends) reach the note to 4
    significant digits; the definition stored for programs keeps them exactly."""
    study = {**STUDY, "name": "rounded", "sampler": {"type": "random"},
             "pruner": {"type": "median", "n_startup_trials": 2},
             "train": {"lr": 0.1 + 0.2},
             "space": {**STUDY["space"],
                       "weight_decay": {"type": "float", "low": 1.23456789e-6,
                                        "high": 0.000123456789, "log": True},
                       "grad_clip": {"type": "categorical", "choices": [0.5, 1.0 / 3]}}}
    (tmp_path / "s.toml").write_text(tomli_w.dumps(study))
    spec = load_study_file(tmp_path / "s.toml")
    body = study_note(spec, baselines=())
    for needle in ("lr 0.3 (study file)", "Adam (lr 0.3)", "| weight_decay | 1.235e-06 to "
                   "0.0001235 (log) |", "| grad_clip | one of 0.5, 0.3333 |",
                   "| sampler | random |",
                   "| pruner | median: n_startup_trials 2 (steps are percent of each trial's "
                   "schedule) |", "fixed training | batch_size 10, lr 0.3 (study file) |"):
        assert needle in body, needle
    assert not unrounded(body), unrounded(body)
    assert spec.to_dict()["train"]["lr"] == 0.1 + 0.2  # what hpo:spec stores: unrounded


def test_a_two_objective_note_names_both_and_no_intermediate_values(tmp_path: Path) -> None:
    study = {**STUDY, "name": "two", "objective": {"metric": "val_removed",
                                                   "second": "train_seconds"}}
    (tmp_path / "s.toml").write_text(tomli_w.dumps(study))
    body = study_note(load_study_file(tmp_path / "s.toml"), baselines=())
    assert "- **Intermediate values**: none: they are validation scores" in body
    assert (f"**{METRIC_LABELS['val_removed']}** or **{METRIC_LABELS['train_seconds']}**"
            in body)


def test_the_trial_picture_names_the_objective_on_its_axis(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The uploaded picture's learning curve is labelled with the objective's name and unit,
    the words the dashboard uses for it (the study's metric name)."""
    from matplotlib.axes import Axes

    assert METRIC_LABELS["val_removed"] == VAL_LABEL
    labels: list[str] = []
    real = Axes.set_ylabel

    def spy(self: Axes, label: str, *args: Any, **kwargs: Any) -> Any:
        labels.append(label)
        return real(self, label, *args, **kwargs)

    monkeypatch.setattr(Axes, "set_ylabel", spy)
    x = np.linspace(0, 5, 20)
    curves = np.sin(x)[None, :].repeat(3, axis=0)
    png = trial_png(x, curves, curves, curves, [10.0, 40.0, 50.0], [1.0, 0.1, 0.01], "t")
    assert png.startswith(b"\x89PNG") and VAL_LABEL in labels


def test_wsgi_api_lists_the_study_trials_and_artifacts(site: dict[str, Any],
                                                       tmp_path: Path) -> None:
    wsgi_app = make_app(open_storage(site["url"], heartbeat=False), site["dir"])

    def get(path: str) -> bytes:
        status, _, body = wsgi_get(wsgi_app, path)
        assert status.startswith("200"), (path, status, body[:300])
        return body

    check_api(get, site, tmp_path)
    sid, best = site["study"]._study_id, site["best"]
    _, headers, _ = wsgi_get(wsgi_app, f"/artifacts/{sid}/{best._trial_id}/"
                                       f"{best.user_attrs['artifact_model']}")
    assert headers["Content-Type"] == "application/octet-stream"  # not a SNES page table


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
    best = site["best"]
    url = (f"{live}/artifacts/{site['study']._study_id}/{best._trial_id}/"
           f"{best.user_attrs['artifact_model']}")
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.headers["Content-Type"] == "application/octet-stream"


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


# The note is shown, and nothing on its page is wider than the window or scrolls sideways inside
# its box (the note's card has scroll bars: a wide table would hide behind one).
NOTE_SHOWN = """(() => {
  const text = document.body ? document.body.innerText : "";
  const sideways = [...document.querySelectorAll("body *")].filter(e =>
      e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0 &&
      ["auto", "scroll"].includes(getComputedStyle(e).overflowX))
    .map(e => (e.innerText || "").slice(0, 60));
  return {ok: text.includes("Reading the dashboard") && text.includes("fixed training"),
          width: innerWidth, page: document.documentElement.scrollWidth, sideways};
})()"""

# Plotly draws an axis title as an SVG <text> of class ytitle: History's names the objective.
HISTORY_NAMED = """(() => {
  const titles = [...document.querySelectorAll("svg text.ytitle")].map(t => t.textContent);
  return {ok: titles.includes(%(label)s), titles};
})()"""


def _until(chrome: Chrome, session: str, expr: str, what: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not seen.get("ok"):
        time.sleep(0.5)
        seen = chrome.call("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                           session)["result"].get("value") or {}
    assert seen.get("ok"), f"{what} never showed: {seen}"
    return seen


def test_browser_shows_the_note_readable_and_the_objective_named(
        live: str, site: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
        capsys: pytest.CaptureFixture[str]) -> None:
    """What a person sees of what the study sets: its note (the settings table and the key to
    the dashboard's labels) within the page's width, on a wide and a narrow window, and the
    objective's name on History's axis. optuna-dashboard's own fixed labels ("Objective Value"
    on the slice and intermediate-values plots) and its trial page (one line per user attr, as
    wide as the longest) are not the study's to set, and are not checked here."""
    exe = next((p for p in map(shutil.which, BROWSERS) if p), None)
    if exe is None:
        pytest.skip(f"no headless browser ({', '.join(BROWSERS)}) on PATH; install Debian's "
                    "`chromium` (.ci/run does)")
    out = tmp_path_factory.mktemp("browser-note")
    sid = site["study"]._study_id
    chrome = Chrome(exe, out / "profile", out / "chromium.log")
    shots: dict[str, bytes] = {}
    try:
        target = chrome.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = chrome.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]
        for width in (1400, 900):
            chrome.call("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": 1100, "deviceScaleFactor": 1,
                         "mobile": False}, session)
            chrome.call("Page.navigate", {"url": f"{live}/dashboard/studies/{sid}/note"},
                        session)
            seen = _until(chrome, session, NOTE_SHOWN, f"the study note at {width} px")
            assert seen["page"] <= seen["width"] and not seen["sideways"], \
                f"the note overflows sideways: {seen}"
            shots[f"note-{width}"] = base64.b64decode(chrome.call(
                "Page.captureScreenshot", {"format": "png"}, session)["data"])
        chrome.call("Page.navigate", {"url": f"{live}/dashboard/studies/{sid}"}, session)
        _until(chrome, session,
               HISTORY_NAMED % {"label": json.dumps(METRIC_LABELS["val_removed"])},
               "the objective's name on History's axis")
        shots["history"] = base64.b64decode(chrome.call(
            "Page.captureScreenshot", {"format": "png"}, session)["data"])
    finally:
        chrome.close()
    for name, png in shots.items():
        (out / f"{name}.png").write_bytes(png)
    with capsys.disabled():
        print(f"\ndashboard screenshots: {', '.join(f'{out}/{n}.png' for n in shots)}")
