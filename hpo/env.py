"""Every environment variable hpo reads, parsed in one place with its unit rules.

Values are read when first needed (never at import), so a bad value reaches the CLI's error
handler as one line naming the variable, instead of a traceback before any command runs.
Durations take plain seconds or a unit suffix (`30`, `30s`, `1.5m`, `2h`); counts take whole
numbers. Tests set variables per process; nothing here caches, because a test (or a worker's
parent) may change them between calls.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from hpo.errors import EnvError, undecodable

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([smh]?)\s*$")


@dataclass(frozen=True)
class Var:
    name: str
    help: str  # what it sets, for `hpo --help`-style listings and error messages


STORAGE = Var("HPO_STORAGE", "database URL of the studies")
ARTIFACTS = Var("HPO_ARTIFACTS", "artifact directory (or 'none')")
HEARTBEAT = Var("HPO_HEARTBEAT_INTERVAL", "seconds between a worker's heartbeats")
GRACE = Var("HPO_GRACE_PERIOD", "seconds without a heartbeat before a trial is declared dead")
MAX_RETRY = Var("HPO_MAX_RETRY", "automatic re-queues of one trial's parameters")
STORAGE_RETRY = Var("HPO_STORAGE_RETRY_SECONDS", "how long a worker waits out a storage outage")
DEADLINE = Var("HPO_DEADLINE", "Unix time after which workers start no new trial")
THREADS = Var("HPO_THREADS", "torch threads per process")
CACHE_DIR = Var("HPO_CACHE_DIR", "cache directory of the classical baselines")
PICTURES = Var("HPO_PICTURES", "which complete trials get a picture: top, all or none")
SUPERVISOR = Var("HPO_SUPERVISOR_PID", "pid of the `hpo search` that started this worker")
LAST_WORDS = Var("HPO_LAST_WORDS_FD", "descriptor of the pipe to the `hpo search` that started "
                 "this worker")


def raw(var: Var) -> str | None:
    """The variable's value; empty counts as unset, as a shell's `VAR=` means 'no value'."""
    value = os.environ.get(var.name)
    if value is None or value.strip() == "":
        return None
    if (shown := undecodable(value)) is not None:
        raise EnvError(f"{var.name}='{shown}': not UTF-8 text; set it again")
    return value


def duration(var: Var, default: float, *, minimum: float = 0.0,
             maximum: float = 10 * 365 * 86400.0) -> float:
    """Seconds, from `30`, `30s`, `1.5m` or `2h`."""
    value = raw(var)
    if value is None:
        return default
    m = _DURATION.match(value)
    if m is None:
        raise EnvError(f"{var.name}={value!r}: not a duration; give seconds such as 30, or "
                       "30s, 1.5m, 2h")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(seconds) or not minimum <= seconds <= maximum:
        raise EnvError(f"{var.name}={value!r}: must be between {minimum:g} and {maximum:g} "
                       "seconds")
    return seconds


def whole_seconds(var: Var, default: int, *, minimum: int = 1) -> int:
    """A duration that Optuna's heartbeat settings need as whole seconds (rounded up)."""
    return max(minimum, math.ceil(duration(var, default, minimum=minimum)))


def count(var: Var, default: int, *, minimum: int = 0, maximum: int = 1_000_000) -> int:
    value = raw(var)
    if value is None:
        return default
    try:
        n = int(value.strip())
    except ValueError:
        raise EnvError(f"{var.name}={value!r}: not a whole number; e.g. {var.name}={default}"
                       ) from None
    if not minimum <= n <= maximum:
        raise EnvError(f"{var.name}={value!r}: must be between {minimum} and {maximum}")
    return n


def heartbeat_settings() -> tuple[int, int, int]:
    """(heartbeat interval, grace period, max retry), checked together: a grace period no longer
    than the interval would declare every healthy worker dead between two beats."""
    interval = whole_seconds(HEARTBEAT, 5)
    grace = whole_seconds(GRACE, 30)
    if grace <= interval:
        raise EnvError(f"{GRACE.name}={grace}: must be longer than {HEARTBEAT.name} "
                       f"({interval} s), or every healthy worker would be declared dead; "
                       f"e.g. {GRACE.name}={max(30, 3 * interval)}")
    return interval, grace, count(MAX_RETRY, 3, maximum=1000)


def storage_retry_seconds() -> float:
    return duration(STORAGE_RETRY, 300.0)


MAX_UNIX_TIME = 1e18


def deadline() -> float:
    """Unix time set by `hpo search --timeout`; infinity when unset."""
    value = raw(DEADLINE)
    if value is None:
        return math.inf
    try:
        t = float(value)
    except ValueError:
        raise EnvError(f"{DEADLINE.name}={value!r}: not a Unix time; unset it (`hpo search "
                       "--timeout SECONDS` sets it for its workers)") from None
    # +inf reads as "no deadline"; anything else must be a Unix time a clock can reach (about
    # 3e10 years either way), so a typo such as a stray minus or an exponent is not obeyed.
    if math.isnan(t) or (t != math.inf and abs(t) > MAX_UNIX_TIME):
        raise EnvError(f"{DEADLINE.name}={value!r}: not a Unix time (seconds since 1970, within "
                       f"{-MAX_UNIX_TIME:.0e} to {MAX_UNIX_TIME:.0e}); unset it")
    return t


def threads(default: int = 1) -> int:
    return count(THREADS, default, minimum=1, maximum=1024)


def storage_url() -> str | None:
    return raw(STORAGE)


# Without --storage or HPO_STORAGE: a SQLite file under storage/ of the current directory.
DEFAULT_DIR = Path("storage")
DEFAULT_DB = "hpo.db"


def default_url() -> str:
    return f"sqlite:///{(DEFAULT_DIR / DEFAULT_DB).resolve()}"


def resolve_url(flag: str | None) -> str:
    """The storage a command uses: its --storage flag, else HPO_STORAGE, else the default."""
    return flag or storage_url() or default_url()


def artifacts() -> str | None:
    return raw(ARTIFACTS)


def cache_dir() -> Path:
    from hpo.paths import expand_home

    value, name = raw(CACHE_DIR), CACHE_DIR.name
    if not value:
        value, name = os.environ.get("XDG_CACHE_HOME"), "XDG_CACHE_HOME"
    return Path(expand_home(value, name)) / "hpo" if value else Path.home() / ".cache" / "hpo"


PICTURE_CHOICES = ("top", "all", "none")


def pictures() -> str:
    """'top' (default): a picture for a trial that ranks among the study's best three when it
    completes; drawing one costs about half a second of a worker's time, and the pictures a
    user opens are the best trials'. 'all' draws every complete trial; 'none' draws none."""
    value = (raw(PICTURES) or "top").strip().lower()
    if value not in PICTURE_CHOICES:
        raise EnvError(f"{PICTURES.name}={raw(PICTURES)!r}: must be one of "
                       f"{', '.join(PICTURE_CHOICES)}")
    return value


def supervisor_pid() -> int | None:
    value = raw(SUPERVISOR)
    return None if value is None else count(SUPERVISOR, 0, minimum=1, maximum=2**31)


def last_words_fd() -> int | None:
    value = raw(LAST_WORDS)
    return None if value is None else count(LAST_WORDS, 0, minimum=3, maximum=2**20)


def check_all() -> None:
    """Parses every variable hpo reads, so that a bad one stops any command at once with its
    one line, rather than a worker later (the CLI calls this before each command)."""
    heartbeat_settings()
    storage_retry_seconds()
    deadline()
    threads()
    pictures()
    supervisor_pid()
    last_words_fd()
