"""The `hpo` command line: one thin function per command; the work lives in the library."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from hpo.errors import HpoError

app = typer.Typer(
    help="Parallel hyperparameter search for an LSTM denoiser on shared Optuna studies.",
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
            err.print(f"[red]error:[/red] {e}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None

    return wrapper  # type: ignore[return-value]


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
