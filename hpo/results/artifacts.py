"""Trial artifacts: each complete trial's picture and model file, in an Optuna artifact store.

The store is a directory (Optuna's FileSystemArtifactStore): --artifacts, else $HPO_ARTIFACTS,
else `artifacts/` beside a SQLite database file, else storage/artifacts under the current
directory. Workers on many machines point HPO_ARTIFACTS at one shared directory; the dashboard,
`hpo export` and `hpo artifacts prune` must be given the same one. HPO_ARTIFACTS=none turns
uploads off.

Uploads happen while the trial is still running because Optuna refuses them afterwards. The
store keeps files by artifact id only; which trial owns a file is recorded in the database (trial
system attrs `artifacts:<id>`, Optuna's own format, which the dashboard reads).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from hpo import env
from hpo.env import DEFAULT_DIR
from hpo.errors import ArtifactError, HpoError, one_line
from hpo.paths import expand_home
from hpo.store import optuna_api, queries, stored
from hpo.store.attrs import ARTIFACT_ERROR_ATTR, ARTIFACT_PREFIX, PRUNE_ATTR, dashboard_trial
from hpo.store.queries import ARTIFACT_ID
from hpo.store.urls import parse, sqlite_path

ENV = env.ARTIFACTS.name
OFF = ("none", "off")
MODEL_SUFFIX = "-model.pt"
PICTURE_SUFFIX = "-curves.png"
CURVES_SUFFIX = "-curves.json"  # every epoch's validation score and training loss


def resolve_dir(flag: str | None, storage_url: str | None) -> Path | None:
    """The artifact directory for this storage (absolute), or None when uploads are off."""
    value = flag or env.artifacts()
    if value:
        if value.strip().lower() in OFF:
            return None
        return Path(expand_home(value, "--artifacts" if flag else env.ARTIFACTS.name)).resolve()
    db = sqlite_path(parse(storage_url)) if storage_url else None
    if db is not None:
        return db.expanduser().resolve().parent / "artifacts"
    return (DEFAULT_DIR / "artifacts").resolve()


def open_store(path: Path | None, *, create: bool, flag: str = "--artifacts") -> \
        FileSystemArtifactStore:
    if path is None:
        raise ArtifactError(f"{flag}: artifacts are turned off ({ENV}=none); set {flag} or "
                            f"{ENV} to the directory the workers wrote to")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ArtifactError(f"artifact store {path}: cannot create it ({e.strerror}); set "
                                f"{ENV} to a writable (shared) directory") from e
    elif not path.is_dir():
        raise ArtifactError(f"artifact store {path} does not exist; pass {flag} (or set {ENV}) "
                            "to the directory the workers wrote to")
    return FileSystemArtifactStore(path)


def storage_url_of(storage: optuna.storages.BaseStorage) -> str | None:
    """The database URL behind a (possibly cached) storage, password included: never print it."""
    rdb = optuna_api.rdb_of(storage)
    return None if rdb is None else str(rdb.engine.url.render_as_string(hide_password=False))


def trial_artifacts(storage: optuna.storages.BaseStorage, trial: FrozenTrial
                    ) -> list[dict[str, Any]]:
    """The trial's live artifacts (Optuna's metadata dicts); removed ones are skipped."""
    attrs = storage.get_trial_system_attrs(optuna_api.trial_id(trial))
    metas = [json.loads(v) if isinstance(v, str) else v
             for k, v in attrs.items() if k.startswith(ARTIFACT_PREFIX)]
    return [m for m in metas if isinstance(m, dict) and "artifact_id" in m]


def pick_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """Trial `number`, or the best complete one; only complete trials carry a model."""
    from hpo.results.optuna_reader import best_trials

    if number is None:
        best = best_trials(study, 1)
        if not best:
            raise ArtifactError(f"study '{study.study_name}' has no complete trial yet; run "
                                f"`hpo worker {study.study_name}` or wait for one")
        return best[0]
    trials = study.get_trials(deepcopy=False)
    found = [t for t in trials if t.number == number]
    if not found:
        raise ArtifactError(f"--trial {number}: study '{study.study_name}' has trials 0 to "
                            f"{len(trials) - 1}; pick one of them")
    if found[0].state != TrialState.COMPLETE:
        raise ArtifactError(f"--trial {number} is {found[0].state.name.lower()}; only complete "
                            "trials have a model file (omit --trial for the best one)")
    return found[0]


def export_model(study: optuna.Study, storage: optuna.storages.BaseStorage,
                 store_dir: Path | None, number: int | None, out: Path,
                 force: bool = False) -> tuple[FrozenTrial, dict[str, Any]]:
    """Copies a trial's model file from the store to `out` and checks that it loads."""
    from hpo.task.modelfile import load_model

    if out.exists() and not force:
        raise ArtifactError(f"--out {out} already exists; remove it, choose another path or "
                            "pass --force")
    trial = pick_trial(study, number)
    models = [m for m in trial_artifacts(storage, trial)
              if str(m.get("filename", "")).endswith(MODEL_SUFFIX)]
    if not models:
        why = trial.user_attrs.get(ARTIFACT_ERROR_ATTR)
        foreign = stored.foreign_params(stored.spec(study.study_name, study.user_attrs),
                                        trial.params)
        why = (f"its upload failed: {one_line(str(why))[:300]}" if why else
               f"another client told it: its parameters {', '.join(foreign)} are not the "
               "study's" if foreign else
               "pruned by `hpo artifacts prune`, or it ran with uploads off")
        raise ArtifactError(f"trial {trial.number} of '{study.study_name}' has no model file "
                            f"({why}); retrain its parameters with `hpo train ... --save`")
    store = open_store(store_dir, create=False)
    artifact_id = models[-1]["artifact_id"]
    src = optuna_api.artifact_dir(store) / artifact_id
    if not ARTIFACT_ID.match(artifact_id) or not src.is_file():
        raise ArtifactError(f"the model file of trial {trial.number} ({artifact_id}) is not in "
                            f"{store_dir}; pass --artifacts (or {ENV}) the directory the workers "
                            "wrote to")
    if out.parent != Path():
        out.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a failed copy never leaves half a model at --out.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        with store.open_reader(artifact_id) as reader:
            tmp.write_bytes(reader.read())
        try:
            _, meta = load_model(tmp)
        except HpoError as e:
            raise ArtifactError(f"the model file of trial {trial.number} ({src}) does not load: "
                                f"{str(e).split(': ', 1)[-1]}") from e
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return trial, meta


@dataclass
class PruneReport:
    kept: list[int]  # trial numbers whose artifacts stay (the best K)
    trials: list[int]  # trial numbers whose artifacts were (or, dry run, would be) removed
    removed: int = 0
    freed_bytes: int = 0
    missing: int = 0  # recorded, but no file in this store: left alone
    shared: int = 0  # also referenced by a trial or study not being pruned: left alone
    dry_run: bool = False


def prune_artifacts(study: optuna.Study, rdb: optuna.storages.RDBStorage,
                    store_dir: Path | None, keep_top: int, dry_run: bool = False) -> PruneReport:
    """Removes the artifacts of every finished trial outside the best `keep_top`.

    Only files that provably belong to this study's pruned trials go: an id must be a uuid (so
    it names exactly one file in the store) recorded on such a trial and on nothing else in the
    database, and the file must be in the given store. Running and waiting trials are skipped
    (they may be uploading), and trials that finish meanwhile are not in the snapshot; a trial
    outside the best K now can never enter it later, because new trials only raise the bar.
    """
    from hpo.results.optuna_reader import best_trials

    store = open_store(store_dir, create=False)
    base = optuna_api.artifact_dir(store)
    kept = [t.number for t in best_trials(study, keep_top)] if keep_top > 0 else []
    cands = {optuna_api.trial_id(t): t.number for t in study.get_trials(deepcopy=False)
             if t.state.is_finished() and t.number not in kept}
    refs = queries.artifact_references(rdb, queries.artifact_ids(
        rdb, optuna_api.study_id(study), set(cands)))

    def ours(ref: tuple[str, int, str, str]) -> bool:
        table, owner, key, _ = ref
        if table == "trial":
            return owner in cands
        return owner == optuna_api.study_id(study) and dashboard_trial(key) in cands

    entries = [r for r in refs if ours(r)]
    shared = {r[3] for r in refs if not ours(r)}
    report = PruneReport(kept=kept, trials=[], dry_run=dry_run, shared=len(shared))
    todo: list[tuple[str, int, str, str]] = []
    sizes: dict[str, int] = {}  # artifact id -> bytes
    for e in entries:
        path = base / e[3]
        if e[3] in shared:
            continue
        if not path.is_file():
            report.missing += 1
            continue
        todo.append(e)
        if e[3] not in sizes:
            sizes[e[3]] = path.stat().st_size
            report.removed += 1
            report.freed_bytes += sizes[e[3]]
    if report.missing and not todo:
        raise ArtifactError(f"none of the {report.missing} artifacts to prune of study "
                            f"'{study.study_name}' is in {base}; pass --artifacts (or {ENV}) "
                            "the directory the workers wrote to")
    report.trials = sorted({cands[o] if t == "trial" else cands[dashboard_trial(k)]
                            for t, o, k, _ in todo})
    if dry_run or not todo:
        return report
    # Files first, then the metadata of exactly the files that went: a store that refuses
    # (read-only, gone) leaves every reference it kept pointing at a file that is still there.
    gone: set[str] = set()
    failure: OSError | None = None
    for aid in dict.fromkeys(e[3] for e in todo):
        try:
            (base / aid).unlink(missing_ok=True)
        except OSError as e:
            failure = e
            break
        gone.add(aid)
    done = [e for e in todo if e[3] in gone]
    if done:
        queries.mark_removed(rdb, done)
    if len(done) < len(todo):
        report.removed = len({e[3] for e in done})
        report.freed_bytes = sum(sizes[a] for a in gone)
        report.trials = sorted({cands[o] if t == "trial" else cands[dashboard_trial(k)]
                                for t, o, k, _ in done})
    history = list(study.user_attrs.get(PRUNE_ATTR, []))[-19:]
    history.append({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "keep_top": keep_top, "removed": report.removed,
                    "freed_bytes": report.freed_bytes, "trials": report.trials})
    study.set_user_attr(PRUNE_ATTR, history)
    if failure is not None:
        raise ArtifactError(f"artifact store {base}: cannot remove its files "
                            f"({failure.strerror}); removed {report.removed} of "
                            f"{len({e[3] for e in todo})} (recorded), the rest are untouched: make "
                            "it writable and run the prune again")
    return report


