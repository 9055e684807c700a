"""Operational commands: the dashboard, classical baselines, model export, artifact pruning.

Each is one thin function over library code. `baselines` imports scipy inside itself, so that
the other commands start without it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hpo import resources
from hpo.cli.common import (
    MAX_COUNT,
    MAX_SEED,
    ArtifactsOpt,
    JsonOpt,
    StorageOpt,
    StudyArg,
    app,
    emit_json,
    open_storage_url,
    out,
    warn,
)
from hpo.errors import HpoError, plural
from hpo.paths import atomic_write, check_output, writing
from hpo.results.artifacts import export_model, prune_artifacts, resolve_dir
from hpo.results.dashboard import address, bind, is_loopback, journal_mode, make_app, serve
from hpo.store.studies import load
from hpo.store.urls import mask, parse, sqlite_path
from hpo.task.curves import SPLITS, DataConfig
from hpo.task.source import Source, verify

artifacts_app = typer.Typer(help="Trial artifacts: each complete trial's picture and model file.",
                            no_args_is_help=True)
app.add_typer(artifacts_app, name="artifacts")


def _say(line: str) -> None:
    # Flushed at once: a script (or test) waits for the address before the server blocks.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@app.command()
def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 127.0.0.1 is this machine "
                                           "only (the dashboard has no login).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one.")] = 8080,
    artifacts: ArtifactsOpt = None,
) -> None:
    """Browse the studies in optuna-dashboard: history, trials, pictures, model downloads."""

    url, st = open_storage_url(storage)
    art = resolve_dir(artifacts, url)
    server = bind(make_app(st, art), host, port)
    mode = journal_mode(url)
    _say(f"optuna-dashboard on {mask(url)}" + (f" (SQLite, {mode} mode)" if mode else ""))
    _say(f"artifacts: {art if art is not None else 'off (HPO_ARTIFACTS=none)'}"
         + (" (none uploaded yet)" if art is not None and not art.is_dir() else ""))
    if mode is not None and mode != "wal":
        warn(f"this SQLite file is in {mode} mode, where the dashboard's reads can make workers "
             "wait; databases created by hpo use WAL")
    if not is_loopback(host):
        warn(f"listening on {host}: anyone who can reach this port can read the studies and "
             "delete trials' artifacts (there is no login)")
    _say(f"open {address(host, server.server_port)}   (Ctrl-C stops it)")
    serve(server)


@app.command("baselines")
def baselines_cmd(
    study: Annotated[str | None, typer.Option(
        "--study", help="Use this study's data protocol (from the storage).")] = None,
    storage: StorageOpt = None,
    data_seed: Annotated[int, typer.Option(
        min=0, max=MAX_SEED, help="Data seed (ignored with --study).")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Classical denoisers (Savitzky-Golay, polynomial fit) chosen on validation, scored on test."""
    from hpo.task.baselines import compute_baselines

    source: Source = DataConfig(seed=data_seed)
    if study is not None:
        source = load(study, open_storage_url(storage)[1])[1].source()
        verify(source, study)  # the study's own file, or one line naming it and its hash
    rows = compute_baselines(source)
    if isinstance(source, DataConfig):
        data: dict[str, object] = {"seed": source.seed, "val": source.n_val,
                                   "test": source.n_test, "noise_ratio": source.noise_ratio}
        title = (f"classical baselines, data seed {source.seed}: chosen on {source.n_val} "
                 f"validation curves, scored on {source.n_test} test curves")
    else:
        _, val, test = source.sizes()
        data = {"file": source.path, "sha256": source.sha256, "shape": list(source.shape),
                "seed": source.seed, "val": val, "test": test,
                "noisy_file": source.noisy_path,
                "noise_ratio": None if source.noisy_path else source.noise_ratio}
        title = (f"classical baselines on {source.path} (sha256 {source.sha256[:12]}), data "
                 f"seed {source.seed}: chosen on {val} validation signals, scored on {test} "
                 "test signals (original scale)")
    if as_json:
        emit_json({"data": data, "baselines": [b.to_dict() for b in rows]})
        return
    table = Table(title=title, title_justify="left")
    for c in ("denoiser", "validation % removed", "test % removed"):
        table.add_column(c)
    for b in rows:
        table.add_row(b.describe(), f"{b.val_removed:.2f}", f"{b.test_removed:.2f}")
    out().print(table)


@app.command("export")
def export_cmd(
    study: StudyArg,
    out: Annotated[Path, typer.Option("--out", help="Where to write the model file.")],
    trial: Annotated[int | None, typer.Option(
        "--trial", min=0, max=MAX_COUNT,
        help="Trial number (default: the best complete trial).")] = None,
    storage: StorageOpt = None,
    artifacts: ArtifactsOpt = None,
    force: Annotated[bool, typer.Option("--force", metavar="", help="Overwrite --out.")] = False,
) -> None:
    """Download a trial's model file (the best trial's by default) for `hpo denoise`."""
    url, st = open_storage_url(storage)
    check_output(out, "--out", _database(url), overwrite=force)
    s, _ = load(study, st)
    with writing(out, "--out"):
        t, meta = export_model(s, st, resolve_dir(artifacts, url), trial, out, force)
    score = meta.get("scores", {}).get("val_removed")
    typer.echo(f"exported trial {t.number} of '{study}' (hidden {meta['hidden_size']}, shift "
               f"{meta['shift']}; its model removes "
               + (f"{score:.2f} %" if isinstance(score, float) else "?")
               + f" of the noise on the study's validation curves) -> {out}")


def _database(url: str) -> tuple[Path, ...]:
    """The SQLite file a command reads, which no output may overwrite."""
    path = sqlite_path(parse(url))
    return () if path is None else (path,)


@app.command("split")
def split_cmd(
    study: StudyArg,
    split: Annotated[str, typer.Argument(help="train, val or test.", metavar="SPLIT")],
    clean: Annotated[Path, typer.Option("--clean", help="Where to write its clean signals "
                                                        "(CSV).")],
    noisy: Annotated[Path, typer.Option("--noisy", help="Where to write its noisy signals "
                                                        "(CSV).")],
    storage: StorageOpt = None,
    force: Annotated[bool, typer.Option("--force", metavar="", help="Overwrite the files.")
                     ] = False,
) -> None:
    """Write a study's split (its signals on their original scale) for your own checks."""
    if split not in SPLITS:
        raise HpoError(f"SPLIT: unknown split {split!r}; use one of {', '.join(SPLITS)}")
    url, st = open_storage_url(storage)
    for path, flag in ((clean, "--clean"), (noisy, "--noisy")):
        check_output(path, flag, _database(url), overwrite=force)
    if Path(os.path.abspath(clean)) == Path(os.path.abspath(noisy)) or (
            clean.exists() and noisy.exists() and os.path.samefile(clean, noisy)):
        raise HpoError(f"--noisy {noisy} is the same file as --clean {clean}: the noisy signals "
                       "would replace the clean ones; give two paths")
    from hpo.task.signals import write_signals
    from hpo.task.source import model_split

    s, spec = load(study, st)
    source = spec.source()
    verify(source, study)
    raw = model_split(source, split, study).raw
    # Both or neither: each is written beside its path and renamed only when both are whole,
    # so a failed second write leaves no first file to block the rerun.
    with atomic_write(clean, "--clean", "the clean signals") as c, \
            atomic_write(noisy, "--noisy", "the noisy signals") as n:
        write_signals(c, raw.clean)
        write_signals(n, raw.noisy)
    typer.echo(f"wrote the {split} split of '{s.study_name}' ({len(raw)} signals of "
               f"{raw.clean.shape[1]} points) -> {clean}, {noisy}")


@artifacts_app.command("prune")
def prune_cmd(
    study: StudyArg,
    keep_top: Annotated[int, typer.Option(
        "--keep-top", min=0, max=MAX_COUNT, help="Keep the artifacts of the best K trials.")],
    storage: StorageOpt = None,
    artifacts: ArtifactsOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", metavar="",
                                          help="Only say what would go.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove the artifacts of all but the best K finished trials (never running ones)."""

    url, st = open_storage_url(storage)
    s, _ = load(study, st)
    r = prune_artifacts(s, st, resolve_dir(artifacts, url), keep_top, dry_run)
    if as_json:
        emit_json(asdict(r))
        return
    verb = "would remove" if dry_run else "removed"
    trials = ", ".join(map(str, r.trials)) if r.trials else "none"
    typer.echo(f"{verb} {plural(r.removed, 'artifact')} of {plural(len(r.trials), 'trial')} "
               f"({trials}), "
               f"{'would free' if dry_run else 'freed'} {resources.human(r.freed_bytes)} "
               f"({r.freed_bytes} bytes)")
    typer.echo(f"kept the artifacts of the best {len(r.kept)}: "
               + (", ".join(map(str, r.kept)) or "none"))
    if r.missing:
        typer.echo(f"left alone: {plural(r.missing, 'recorded artifact')} with no file in this "
                   "store")
    if r.shared:
        typer.echo(f"left alone: {plural(r.shared, 'artifact')} also used by another trial or "
                   "study (e.g. a copied study)")

