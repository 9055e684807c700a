"""The boundary for what comes back from storage: every stored value hpo reads is parsed here.

A study's attributes and trials are written by hpo, but also by other versions of hpo, by
Optuna's own CLI and clients, by the dashboard, and by whatever damaged them. Each reader
(Optuna's path, the SQLite reader without Optuna, the workers, the retraining commands) takes
them through these functions, which return a typed value, tolerate what they safely can, and
refuse the rest in one line naming the study and the key. Nothing behind them re-checks. No
Optuna and no numpy here: the light commands use this boundary too.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpo.errors import StorageError, one_line
from hpo.store.attrs import BUDGET_ATTR, RESCORE_ATTR, SPEC_ATTR

if TYPE_CHECKING:
    from hpo.study.spec import StudySpec

MAX_BUDGET = 10**9
RESCORE_FIELDS = ("number", "val_mean", "val_std", "seeds", "val_curves")


# What a user can do about each damaged study attribute: the budget is written again by
# `hpo create` (it replaces a value it cannot read); the definition cannot be, trials ran under it.
RESTORE = "restore the database from a copy"
FIXES = {
    BUDGET_ATTR: "set it again with `hpo create STUDY_FILE` (add --trials N to choose it), "
                 "which replaces the unreadable value",
    SPEC_ATTR: f"{RESTORE}: hpo will not guess the definition its trials ran under",
    RESCORE_ATTR: f"run `hpo rescore` again, which rewrites it, or {RESTORE}",
}


def fix_of(key: str) -> str:
    """What works for a damaged study attribute `key` (a sub-key such as hpo:spec.metrics is
    its attribute's)."""
    return FIXES.get(key.split(".", 1)[0], RESTORE)


def shown(value: Any) -> str:
    """A stored value as a message quotes it: its repr, cut to 80 characters."""
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _refuse(study: str, key: str, value: Any, want: str, fix: str | None = None) -> StorageError:
    return StorageError(f"study '{study}': its stored {key} = {shown(value)} is not {want}; it "
                        f"was written by another tool or damaged: {fix or fix_of(key)}")


def attr_json(study: str, key: str, value_json: str | None) -> Any:
    """A stored attribute's JSON text, parsed (the SQLite reader reads the text itself)."""
    try:
        return json.loads(value_json)  # type: ignore[arg-type]  # None: refused below
    except (ValueError, TypeError) as e:
        raise StorageError(f"study '{study}': its stored {key} is not JSON ({e}); it was "
                           f"damaged: {fix_of(key)}") from e


@dataclass(frozen=True)
class Damage:
    """One stored row that Optuna or hpo cannot read (hpo.store.damage finds them):
    where it is, what is wrong with it, and what the user can do."""

    study: str
    trial: int | None  # the trial's number; None for a row of the study itself
    where: str  # e.g. "trial_user_attributes 'seeds'"
    problem: str  # e.g. "is not JSON (Expecting value...)"
    fix: str

    def line(self) -> str:
        who = f"study '{self.study}'" + ("" if self.trial is None else f", trial {self.trial}")
        return one_line(f"{who}: its stored {self.where} {self.problem}; it was damaged or "
                        f"written by another tool: {self.fix}")


def tolerate(message: str) -> None:
    """One warning line on stderr for stored data a command reads around (it goes on)."""
    sys.stderr.write(f"warning: {one_line(message)}\n")
    sys.stderr.flush()


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def budget(study: str, attrs: Mapping[str, Any]) -> int | None:
    """The study's budget (finished trials it asks for); None when it has none stored."""
    value = attrs.get(BUDGET_ATTR)
    if value is None:
        return None
    if not _whole(value) or not 1 <= value <= MAX_BUDGET:
        raise _refuse(study, BUDGET_ATTR, value, f"a number of trials (1 to {MAX_BUDGET})")
    return int(value)


def metrics(study: str, attrs: Mapping[str, Any]) -> list[str]:
    """The names of the study's objectives, from its stored definition without parsing the
    rest of it (the light commands only show them)."""
    raw = attrs.get(SPEC_ATTR)
    found = raw.get("metrics") if isinstance(raw, dict) else None
    if (not isinstance(found, list) or not 1 <= len(found) <= 2
            or not all(isinstance(m, str) and m for m in found)):
        raise _refuse(study, f"{SPEC_ATTR}.metrics", found, "a list of one or two metric names")
    return list(found)


def rescores(study: str, attrs: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
    """`hpo rescore`'s results (trial number as text -> its mean, std, seeds, curves)."""
    raw = attrs.get(RESCORE_ATTR)
    if raw is None:
        return None
    ok = isinstance(raw, dict) and all(
        isinstance(k, str) and k.isdigit() and isinstance(v, dict)
        and all(isinstance(v.get(f), int | float) and not isinstance(v.get(f), bool)
                and math.isfinite(v[f]) for f in RESCORE_FIELDS)
        for k, v in raw.items())
    if not ok:
        raise _refuse(study, RESCORE_ATTR, raw, "what `hpo rescore` writes")
    return raw


def spec(study: str, attrs: Mapping[str, Any]) -> StudySpec:
    """The study's definition. A key this hpo does not know (a newer hpo wrote it) is named and
    refused: training by a definition half understood would train another study."""
    from hpo.study.spec import StudySpec

    raw = attrs.get(SPEC_ATTR)
    if raw is None:
        raise StorageError(f"study '{study}' was not created by hpo (no stored definition); "
                           "create it with `hpo create STUDY_FILE`")
    if not isinstance(raw, dict):
        raise _refuse(study, SPEC_ATTR, raw, "a study definition")
    unknown = sorted(set(raw) - StudySpec.STORED_KEYS)
    if unknown:
        raise StorageError(f"study '{study}': its stored definition ({SPEC_ATTR}) has "
                           f"{', '.join(map(repr, unknown))}, which this hpo does not know: it was "
                           "made by a newer hpo; run that version (or upgrade this one)")
    try:
        return StudySpec.from_stored(raw)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise StorageError(f"study '{study}': its stored definition ({SPEC_ATTR}) does not "
                           f"read ({type(e).__name__}: {str(e)[:160]}); it was written by "
                           f"another tool or damaged: {fix_of(SPEC_ATTR)}") from e


def check_directions(study: str, spec_: StudySpec, stored: list[str]) -> None:
    """The study's stored directions (lower case, by objective) are its definition's: a row
    deleted or flipped by another tool would rank the worst trial best, or fail deep inside a
    command."""
    want = spec_.directions
    if stored != want:
        metrics = ", ".join(f"{d} {m}" for d, m in zip(want, spec_.metrics, strict=True))
        raise StorageError(f"study '{study}': its stored directions {stored} are not its "
                           f"definition's ({metrics}); they were damaged or written by another "
                           f"tool: {RESTORE}, or set them back (`hpo studies` prints the "
                           "statement)")


def foreign_params(spec_: StudySpec, params: Mapping[str, Any]) -> list[str]:
    """What keeps hpo from training a trial's parameters as its study would: a name the study
    does not search or lacks (another client told or enqueued it), or a value outside the
    study's space or of the wrong type (its memory was never checked). Empty when it can."""
    names = {p.name for p in spec_.space}
    problems = sorted(set(params) ^ names)
    for p in spec_.space:
        if p.name not in params:
            continue
        v = params[p.name]
        if p.type == "categorical":
            ok = v in p.choices
        else:
            number = isinstance(v, int | float) and not isinstance(v, bool)
            ok = (number and (p.type == "float" or isinstance(v, int) or float(v).is_integer())
                  and p.low is not None and p.high is not None and p.low <= v <= p.high)
        if not ok:
            problems.append(f"{p.name}={v!r} (outside [space.{p.name}])")
    return problems


def seeds(study: str, number: int, attrs: Mapping[str, Any]) -> list[int]:
    """The training seeds a trial recorded, each a seed torch and numpy take."""
    raw = attrs.get("seeds")
    if not isinstance(raw, list) or not raw or not all(
            _whole(s) and 0 <= s < 2**63 for s in raw):
        raise _refuse(study, f"seeds of trial {number}", raw,
                      "a list of training seeds (whole numbers from 0 to 2**63 - 1)",
                      f"this trial cannot be retrained with its own seeds; pick another trial, "
                      f"or {RESTORE}")
    return [int(s) for s in raw]
