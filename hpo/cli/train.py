"""`hpo train` and `hpo denoise`: one model, outside any study. Both need torch, so they import
the training modules inside the command (the other commands never load torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpo import resources
from hpo.cli.common import JsonOpt, ThreadsOpt, app, emit_json, threads_or_env
from hpo.config import TrainConfig
from hpo.data import DataConfig
from hpo.errors import HpoError
from hpo.paths import check_output


@app.command()
def train(
    hidden_size: Annotated[int, typer.Option(min=1, help="LSTM hidden size.")] = 40,
    shift: Annotated[int, typer.Option(min=0, help="Look-ahead steps.")] = 10,
    epochs: Annotated[int, typer.Option(min=1, max=1_000_000,
                                        help="Epochs (cosine schedule length).")] = 100,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the initial weights.")] = 0,
    lr: Annotated[float, typer.Option(min=1e-9, help="Adam learning rate.")] = 0.01,
    batch_size: Annotated[int, typer.Option(min=1, help="Curves per step.")] = 10,
    train_curves: Annotated[int, typer.Option(min=1, help="Training curves.")] = 200,
    data_seed: Annotated[int, typer.Option(min=0, help="Seed of the curves.")] = 0,
    threads: ThreadsOpt = None,
    save: Annotated[Path | None, typer.Option(help="Write the trained model here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train one denoiser with the exercise's protocol and score it."""
    cfg = TrainConfig(hidden_size=hidden_size, shift=shift, epochs=epochs, lr=lr,
                      batch_size=batch_size, seed=seed, threads=threads_or_env(threads))
    data = DataConfig(seed=data_seed, n_train=train_curves)
    if save is not None:
        check_output(save, "--save")
    _check_memory(cfg, data)
    from hpo.modelfile import save_model
    from hpo.progress import epoch_bar
    from hpo.train import train_on_data

    with epoch_bar(epochs, enabled=not as_json) as on_epoch:
        result, test = train_on_data(cfg, data, on_epoch)
    out = {
        "status": result.status,
        "reason": result.reason,
        "val_removed": round(result.val_removed, 4),
        "test_removed": round(test, 4),
        "train_seconds": round(result.seconds, 3),
        "epochs_run": result.epochs_run,
        "n_params": result.model.n_params(),
        "params": {"hidden_size": hidden_size, "shift": shift, "epochs": epochs, "lr": lr,
                   "batch_size": batch_size, "train_curves": train_curves},
        "seed": seed,
        "data_seed": data_seed,
    }
    if save is not None and result.status != "diverged":
        scores = {"val_removed": result.val_removed, "test_removed": test}
        out["saved"] = str(save_model(save, result.model, cfg, data, scores))
    if as_json:
        emit_json(out)
    else:
        typer.echo(f"validation: {result.val_removed:.2f} % removed   "
                   f"held-out test: {test:.2f} % removed   {result.seconds:.1f} s   "
                   f"({result.epochs_run} epochs, {out['n_params']} parameters)")
        if result.status != "completed":
            typer.echo(f"status: {result.status}: {result.reason}")
        if "saved" in out:
            typer.echo(f"model saved to {out['saved']}")
    if result.status == "diverged":
        raise typer.Exit(1)


def _check_memory(cfg: TrainConfig, data: DataConfig) -> None:
    splits = sum(resources.curves_bytes(data.count(s), data.length, data.max_sines)
                 for s in ("train", "val", "test"))
    model = resources.training_bytes(cfg.hidden_size, cfg.shift, data.length, cfg.batch_size,
                                     data.n_val)
    flag = "--train-curves" if splits > model else "--hidden-size"
    est = resources.Estimate(splits + model, flag)
    if not est.fits():
        raise HpoError(f"{flag}: this run {resources.too_big(est)}; use a smaller value")


@app.command()
def denoise(
    model: Annotated[Path, typer.Option(help="A model file from `hpo train --save` or "
                                             "`hpo export`.")],
    input: Annotated[Path, typer.Option("--input", help="CSV, one noisy signal per row.")],
    output: Annotated[Path, typer.Option(help="Where to write the denoised CSV.")],
) -> None:
    """Denoise your own signals with a saved model."""
    check_output(output, "--output", inputs=(input, model))
    from hpo.modelfile import load_model
    from hpo.signals import read_signals, write_signals
    from hpo.train import predict

    net, meta = load_model(model)
    signals = read_signals(input)
    write_signals(output, predict(net, signals))
    typer.echo(f"denoised {len(signals)} signals of {signals.shape[1]} points with "
               f"{model} (hidden {meta['hidden_size']}, shift {meta['shift']}) -> {output}")
