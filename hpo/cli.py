"""The `hpo` command line: one thin function per command; the work lives in the library."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from typer._click.exceptions import UsageError  # typer >= 0.2x vendors click here

from hpo.errors import HpoError


class OneLineUsageErrors(typer.core.TyperGroup):
    """Typer shows a bad flag (`--workers 0`, an unknown option) as a framed box of five lines;
    here it is one line naming the flag, like every other user mistake."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        kw = {"args": args, "prog_name": prog_name, "complete_var": complete_var,
              "windows_expand_args": windows_expand_args, **extra}
        if not standalone_mode:
            return super().main(standalone_mode=False, **kw)
        try:  # non-standalone: usage errors come back to us instead of being printed
            rv = super().main(standalone_mode=False, **kw)
        except UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # plain `hpo`: the help was printed
                sys.exit(0)
            ctx = getattr(e, "ctx", None)
            where = ctx.command_path if ctx is not None else "hpo"
            err.print(f"[red]error:[/red] {escape(e.format_message())} (see `{where} --help`)",
                      highlight=False, soft_wrap=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            err.print("aborted")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)  # an int is typer.Exit's code


app = typer.Typer(
    help="Parallel hyperparameter search for an LSTM denoiser on shared Optuna studies.",
    cls=OneLineUsageErrors,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turns a user mistake (HpoError) into one line on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HpoError as e:
            err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None

    return wrapper  # type: ignore[return-value]


def out() -> Console:
    """Tables on stdout; in a pipe or a log, rich would squeeze them into 80 columns."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


@app.command()
@friendly
def train(
    hidden_size: Annotated[int, typer.Option(min=1, help="LSTM hidden size.")] = 40,
    shift: Annotated[int, typer.Option(min=0, help="Look-ahead steps.")] = 10,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs (cosine schedule length).")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights.")] = 0,
    lr: Annotated[float, typer.Option(min=1e-9, help="Adam learning rate.")] = 0.01,
    batch_size: Annotated[int, typer.Option(min=1, help="Curves per step.")] = 10,
    train_curves: Annotated[int, typer.Option(min=1, help="Training curves.")] = 200,
    data_seed: Annotated[int, typer.Option(help="Seed of the curves.")] = 0,
    threads: Annotated[int, typer.Option(min=1, help="Torch threads.", envvar="HPO_THREADS")] = 1,
    save: Annotated[Path | None, typer.Option(help="Write the trained model here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Train one denoiser with the exercise's protocol and score it."""
    from hpo.data import DataConfig
    from hpo.modelfile import save_model
    from hpo.progress import epoch_bar
    from hpo.train import TrainConfig, train_on_data

    cfg = TrainConfig(hidden_size=hidden_size, shift=shift, epochs=epochs, lr=lr,
                      batch_size=batch_size, seed=seed, threads=threads)
    data = DataConfig(seed=data_seed, n_train=train_curves)
    with epoch_bar(epochs, enabled=not as_json) as on_epoch:
        result, test = train_on_data(cfg, data, on_epoch)
    out = {
        "status": result.status,
        "reason": result.reason,
        "val_removed": round(result.val_removed, 4),
        "test_removed": round(test, 4),
        "seconds": round(result.seconds, 3),
        "epochs_run": result.epochs_run,
        "params": result.model.n_params(),
        "config": {"hidden_size": hidden_size, "shift": shift, "epochs": epochs, "lr": lr,
                   "batch_size": batch_size, "seed": seed, "train_curves": train_curves,
                   "data_seed": data_seed},
    }
    if save is not None and result.status != "diverged":
        scores = {"val_removed": result.val_removed, "test_removed": test}
        out["saved"] = str(save_model(save, result.model, cfg, data, scores))
    if as_json:
        emit_json(out)
    else:
        typer.echo(f"validation: {result.val_removed:.2f} % removed   "
                   f"held-out test: {test:.2f} % removed   {result.seconds:.1f} s   "
                   f"({result.epochs_run} epochs, {out['params']} parameters)")
        if result.status != "completed":
            typer.echo(f"status: {result.status}: {result.reason}")
        if "saved" in out:
            typer.echo(f"model saved to {out['saved']}")
    if result.status == "diverged":
        raise typer.Exit(1)


@app.command()
@friendly
def denoise(
    model: Annotated[Path, typer.Option(help="A model file from `hpo train --save` or "
                                             "`hpo export`.")],
    input: Annotated[Path, typer.Option("--input", help="CSV, one noisy signal per row.")],
    output: Annotated[Path, typer.Option(help="Where to write the denoised CSV.")],
) -> None:
    """Denoise your own signals with a saved model."""
    from hpo.modelfile import load_model
    from hpo.signals import read_signals, write_signals
    from hpo.train import predict

    net, meta = load_model(model)
    signals = read_signals(input)
    write_signals(output, predict(net, signals))
    typer.echo(f"denoised {len(signals)} signals of {signals.shape[1]} points with "
               f"{model} (hidden {meta['hidden_size']}, shift {meta['shift']}) -> {output}")


StorageOpt = Annotated[str | None, typer.Option(
    "--storage", envvar="HPO_STORAGE", show_envvar=True,
    help="Database URL (sqlite:///..., postgresql://..., mysql://...). "
         "Default: sqlite file storage/hpo.db under the current directory.")]
StudyArg = Annotated[str, typer.Argument(help="Name of a study in the storage.")]
Format = Annotated[str, typer.Option("--format", help="table, json or csv.")]


def _open(storage: str | None, create: bool = False) -> tuple[str, Any]:
    from hpo.storage import open_storage, resolve_url

    url = resolve_url(storage)
    return url, open_storage(url, create=create, heartbeat=False)


def _load(name: str, storage: str | None) -> tuple[Any, Any]:
    from hpo.study import load

    return load(name, _open(storage)[1])


@app.command()
@friendly
def create(
    study_file: Annotated[Path, typer.Argument(help="A study file, e.g. studies/smoke.toml.")],
    storage: StorageOpt = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Budget of the whole study.")] = None,
) -> None:
    """Create the study (idempotent) so that workers anywhere can join it."""
    from hpo.storage import mask
    from hpo.study import create_study
    from hpo.studyfile import load_study_file

    spec = load_study_file(study_file)
    url, st = _open(storage, create=True)
    study = create_study(spec, st, trials)
    typer.echo(f"study '{study.study_name}' ready on {mask(url)} "
               f"(budget {study.user_attrs['hpo:budget']} trials)")


@app.command()
@friendly
def search(
    study_file: Annotated[Path, typer.Argument(help="A study file, e.g. studies/smoke.toml.")],
    workers: Annotated[int, typer.Option(min=1, help="Worker processes on this machine.")] = 2,
    trials: Annotated[int | None, typer.Option(
        min=1, help="Budget of the whole study (finished trials, all workers, all runs).")] = None,
    storage: StorageOpt = None,
    timeout: Annotated[float | None, typer.Option(
        min=0, help="Start no new trial after this many seconds.")] = None,
    threads: Annotated[int, typer.Option(min=1, help="Torch threads per worker.")] = 1,
    top: Annotated[int, typer.Option(min=1, help="Best trials to print at the end.")] = 5,
) -> None:
    """Run a parallel search: create the study once, start workers, show progress."""
    from hpo.queries import best_trials, trial_record, trials_table
    from hpo.search import supervise
    from hpo.storage import DEFAULT_DIR
    from hpo.study import create_study
    from hpo.studyfile import load_study_file

    spec = load_study_file(study_file)
    url, st = _open(storage, create=True)
    study = create_study(spec, st, trials)
    console = Console(stderr=True)
    outcome = supervise(study, url, workers, threads, DEFAULT_DIR / "logs", timeout, console)
    records = [trial_record(t) for t in best_trials(study, top)]
    if records:
        out().print(trials_table(f"best trials of '{study.study_name}'", records,
                                     list(spec.metrics)))
    typer.echo(f"{outcome.finished}/{outcome.budget} trials finished")
    for line in outcome.worker_errors:
        err.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
    if outcome.interrupted:
        typer.echo("interrupted: run the same command again to resume toward the budget")
        raise typer.Exit(130)
    if outcome.worker_errors:
        raise typer.Exit(1)


@app.command()
@friendly
def worker(
    study: StudyArg,
    storage: StorageOpt = None,
    threads: Annotated[int, typer.Option(min=1, envvar="HPO_THREADS")] = 1,
    worker_index: Annotated[int | None, typer.Option(help="Seeds this worker's sampler.")] = None,
) -> None:
    """Join an existing study from any machine; stop when its budget is reached."""
    import logging

    from hpo.storage import resolve_url
    from hpo.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        s = run_worker(resolve_url(storage), study, worker_index=worker_index, threads=threads)
    except KeyboardInterrupt:
        err.print("worker interrupted; its running trial was failed and re-queued")
        raise typer.Exit(130) from None
    typer.echo(f"worker done: {s.completed} complete, {s.pruned} pruned, {s.failed} failed")


@app.command()
@friendly
def studies(
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the studies in the storage."""
    from rich.table import Table

    from hpo.queries import fmt
    from hpo.queries import studies as list_studies

    rows = list_studies(_open(storage)[1])
    if as_json:
        emit_json(rows)
        return
    table = Table(title_justify="left")
    cols = ["name", "directions", "finished", "budget", "running", "failed", "best_value"]
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*(fmt(",".join(r[c]) if c == "directions" else r[c]) for c in cols))
    out().print(table)


@app.command()
@friendly
def best(
    study: StudyArg,
    storage: StorageOpt = None,
    top: Annotated[int, typer.Option(min=1, help="How many trials.")] = 1,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The best trials (the Pareto front for two objectives)."""
    from hpo.queries import best_trials, open_study, trial_record, trials_table

    # open_study, not _load: hpo.study imports torch, seconds of start-up for a quick query.
    s, metrics = open_study(study, _open(storage)[1])
    records = [trial_record(t) for t in best_trials(s, top)]
    if as_json:
        emit_json(records)
        return
    if not records:
        raise HpoError(f"study '{study}' has no complete trial yet")
    out().print(trials_table(f"best of '{study}'", records, metrics))


@app.command()
@friendly
def trials(
    study: StudyArg,
    storage: StorageOpt = None,
    state: Annotated[str | None, typer.Option(help="complete, pruned, fail, running, "
                                                   "waiting.")] = None,
    fmt_: Format = "table",
) -> None:
    """All trials of a study, as a table, JSON or CSV."""
    from hpo.queries import parse_state, to_csv, to_json, trial_record, trials_table

    if fmt_ not in ("table", "json", "csv"):
        raise HpoError(f"--format: unknown format {fmt_!r}; use table, json or csv")
    states = parse_state(state)
    s, spec = _load(study, storage)
    records = [trial_record(t) for t in s.get_trials(deepcopy=False, states=states)]
    if fmt_ == "json":
        sys.stdout.write(to_json(records) + "\n")
    elif fmt_ == "csv":
        sys.stdout.write(to_csv(records))
    else:
        out().print(trials_table(f"trials of '{study}'", records, list(spec.metrics)))


@app.command("evaluate")
@friendly
def evaluate_cmd(
    study: StudyArg,
    storage: StorageOpt = None,
    top: Annotated[int, typer.Option(min=1)] = 3,
    seeds: Annotated[int, typer.Option(min=1, help="Retrainings per configuration.")] = 3,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Retrain the top configurations on several seeds; report held-out test % removed."""
    from rich.table import Table

    from hpo.evaluate import evaluate_top

    s, spec = _load(study, storage)
    rows = evaluate_top(s, spec, top, seeds, workers)
    if as_json:
        emit_json(rows)
        return
    table = Table(title=f"'{study}': held-out test over {seeds} seeds", title_justify="left")
    for c in ("#", "params", "search val", "val mean ± std", "test mean ± std", "s/seed"):
        table.add_column(c, no_wrap=c != "params")
    for r in rows:
        table.add_row(str(r["number"]), " ".join(f"{k}={v:.4g}" if isinstance(v, float) else
                                                 f"{k}={v}" for k, v in r["params"].items()),
                      f"{r['search_value']:.2f}", f"{r['val_mean']:.2f} ± {r['val_std']:.2f}",
                      f"{r['test_mean']:.2f} ± {r['test_std']:.2f}",
                      f"{r['seconds_per_seed']:.1f}")
    out().print(table)


@app.command("replay")
@friendly
def replay_cmd(
    study: StudyArg,
    trial: Annotated[int, typer.Argument(help="Trial number.")],
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Retrain one trial from its recorded seeds and compare with its recorded score."""
    from hpo.evaluate import replay

    s, spec = _load(study, storage)
    r = replay(s, spec, trial)
    if as_json:
        emit_json(r)
        return
    typer.echo(f"trial {trial} {r['params']}: recorded {r['recorded']}, replayed "
               f"{r['replayed']} -> {'identical' if r['identical'] else 'DIFFERENT'}")


# Commands of other areas register themselves on `app` (keeps this module thin).
from hpo import cli_maint, cli_ops  # noqa: E402,F401


def main() -> None:
    app()


if __name__ == "__main__":
    main()
