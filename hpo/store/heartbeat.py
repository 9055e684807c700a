"""The heartbeat contract of a study: how often its workers beat, and how long a trial may go
without a beat before any process may declare it dead.

It is stored with the study when the study is made (from HPO_HEARTBEAT_INTERVAL,
HPO_GRACE_PERIOD and HPO_MAX_RETRY of the process that makes it), and every process that opens
the study judges staleness by the stored values. Judged by each process's own environment, one
`hpo fail-stale` run with a short grace period failed every healthy worker's trial and the
workers dropped their results. A variable that disagrees with the study is reported, not obeyed.
Studies made before the contract existed keep following the variables, as they did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from hpo import env
from hpo.errors import StorageError
from hpo.store import optuna_api
from hpo.store.attrs import HEARTBEAT_ATTR
from hpo.store.engines import RetryStaleTrial

MAX_SECONDS = 10 * 365 * 86400


@dataclass(frozen=True)
class Heartbeat:
    interval: int  # seconds between a worker's beats
    grace: int  # seconds without a beat before a trial may be declared dead
    max_retry: int  # automatic re-queues of one trial's parameters

    def to_dict(self) -> dict[str, int]:
        return {"interval": self.interval, "grace": self.grace, "max_retry": self.max_retry}


def from_env() -> Heartbeat:
    """The contract a new study gets: this process's variables (or their defaults)."""
    return Heartbeat(*env.heartbeat_settings())


def stored(study: optuna.Study) -> Heartbeat | None:
    """The study's contract; None for a study made before contracts were stored. A value that
    is not one (written by another tool, or damaged) is refused in one line."""
    raw = study.user_attrs.get(HEARTBEAT_ATTR)
    if raw is None:
        return None
    try:
        hb = Heartbeat(*(raw[k] for k in ("interval", "grace", "max_retry")))
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in hb.to_dict().values())
        ok = ok and 1 <= hb.interval < hb.grace <= MAX_SECONDS and 0 <= hb.max_retry <= 1000
    except (TypeError, KeyError, IndexError):
        ok = False
    if not ok:
        raise StorageError(f"study '{study.study_name}': its stored heartbeat contract "
                           f"({HEARTBEAT_ATTR} = {raw!r:.120}) is not one hpo wrote; restore it "
                           "or create the study anew")
    return hb


def disagreement(study: optuna.Study, hb: Heartbeat) -> str | None:
    """One line naming each variable that is set and differs from the study's contract."""
    mine = {env.HEARTBEAT: hb.interval, env.GRACE: hb.grace, env.MAX_RETRY: hb.max_retry}
    wanted = dict(zip(mine, env.heartbeat_settings(), strict=True))
    differ = [f"{v.name}={wanted[v]}" for v, n in mine.items()
              if env.raw(v) is not None and wanted[v] != n]
    if not differ:
        return None
    return (f"{', '.join(differ)} differ from study '{study.study_name}''s heartbeat contract "
            f"(every {hb.interval} s, dead after {hb.grace} s, {hb.max_retry} retries), which "
            "every process follows; unset them (the contract is fixed when the study is made)")


def note(study: optuna.Study) -> str | None:
    """The line a command or worker prints when its variables disagree with the study."""
    hb = stored(study)
    return None if hb is None else disagreement(study, hb)


def apply(study: optuna.Study, storage: optuna.storages.BaseStorage) -> Heartbeat | None:
    """Makes this process judge the study by its stored contract (the caller says `note` to
    the user). Storages opened without heartbeats (the queries) are left as they are."""
    hb = stored(study)
    if hb is None:
        return None
    rdb: Any = optuna_api.rdb_of(storage)
    if rdb is not None and rdb.heartbeat_interval:
        rdb.heartbeat_interval, rdb.grace_period = hb.interval, hb.grace
        rdb.heartbeat_stale_trial_callback = rdb.failed_trial_callback = RetryStaleTrial(
            max_retry=hb.max_retry)
    return hb
