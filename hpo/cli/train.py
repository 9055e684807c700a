"""`hpo train` and `hpo denoise`: one model, outside any study. Both need torch, so they import
the training modules inside the command (the other commands never load torch).

`hpo train --data-file` trains on the user's own signals with a study file's rules: the rows
shuffled by --data-seed, --train-curves/--val-curves/--test-curves all three or none (then 60/20/20
% of the file), noise drawn by --noise-ratio unless --noisy-file pairs measured inputs, and
--normalize to scale each signal by its noisy input. The model file records all of it, and
`hpo denoise` applies the same normalization."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpo import resources
from hpo.cli.common import (
    MAX_COUNT,
    MAX_SEED,
    JsonOpt,
    ThreadsOpt,
    app,
    emit_json,
    threads_or_env,
    warn,
)
from hpo.errors import HpoError
from hpo.paths import check_output, writing
from hpo.task.config import ConfigValueError, TrainConfig
from hpo.task.curves import DataConfig
from hpo.task.datafile import FLAG_KEYS, FileData, describe_file
from hpo.task.signals import load_signals_file
from hpo.task.source import Source, describe, sizes

SYNTHETIC_COUNTS = (200, 50, 1000)  # the protocol's training, validation and test curves
FLAGS = {"n_train": "--train-curves", "n_val": "--val-curves", "n_test": "--test-curves",
         "noise_ratio": "--noise-ratio", "seed": "--data-seed"}  # DataConfig field -> flag


@app.command()
def train(
    hidden_size: Annotated[int, typer.Option(min=1, max=MAX_COUNT, help="LSTM hidden size.")] = 40,
    shift: Annotated[int, typer.Option(min=0, max=MAX_COUNT, help="Look-ahead steps.")] = 10,
    epochs: Annotated[int, typer.Option(min=1, max=1_000_000,
                                        help="Epochs (cosine schedule length).")] = 100,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED,
                                      help="Seed of the initial weights.")] = 0,
    lr: Annotated[float, typer.Option(min=1e-9, help="Adam learning rate.")] = 0.01,
    batch_size: Annotated[int, typer.Option(min=1, max=MAX_COUNT, help="Curves per step.")] = 10,
    train_curves: Annotated[int | None, typer.Option(
        min=1, max=MAX_COUNT,
        help="Training curves (default 200, or 60 % of --data-file).")] = None,
    val_curves: Annotated[int | None, typer.Option(
        min=1, max=MAX_COUNT,
        help="Validation curves (default 50, or 20 % of --data-file).")] = None,
    test_curves: Annotated[int | None, typer.Option(
        min=1, max=MAX_COUNT,
        help="Held-out test curves (default 1000, or 20 % of --data-file).")] = None,
    data_seed: Annotated[int, typer.Option(
        min=0, max=MAX_SEED,
        help="Seed of the curves (of a data file: its row shuffle and drawn noise).")] = 0,
    noise_ratio: Annotated[float | None, typer.Option(
        min=0, max=10, help="Noise std / each clean signal's peak-to-peak (default 0.05).")
    ] = None,
    data_file: Annotated[Path | None, typer.Option(
        "--data-file", help="Train on your own clean signals: a 2-D .npy or a CSV, one signal "
                            "per row.")] = None,
    noisy_file: Annotated[Path | None, typer.Option(
        "--noisy-file", help="Measured noisy inputs for --data-file, row by row (same shape); "
                             "default: noise is drawn.")] = None,
    normalize: Annotated[bool, typer.Option(
        "--normalize", metavar="", help="With --data-file: the model reads each signal "
                                        "normalized by its noisy input's mean and std.")] = False,
    fresh: Annotated[bool, typer.Option(
        "--fresh", metavar="", help="Draw new training curves every epoch (deterministic from "
                                    "--data-seed and the epoch; not with --data-file).")] = False,
    threads: ThreadsOpt = None,
    save: Annotated[Path | None, typer.Option(help="Write the trained model here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train one denoiser with the exercise's protocol (or on your own signals) and score it."""
    try:
        cfg = TrainConfig(hidden_size=hidden_size, shift=shift, epochs=epochs, lr=lr,
                          batch_size=batch_size, seed=seed, threads=threads_or_env(threads))
    except ConfigValueError as e:  # e.g. --lr inf: typer's range check lets infinity through
        raise HpoError(f"--{e.field.replace('_', '-')}: {e.message}") from e
    counts = (train_curves, val_curves, test_curves)
    data = _source(data_file, noisy_file, normalize, counts, data_seed, noise_ratio, fresh)
    if save is not None:
        check_output(save, "--save")
    _check_memory(cfg, data)
    from hpo.cli.progress import epoch_bar
    from hpo.task.fit import train_and_test
    from hpo.task.modelfile import save_model

    with epoch_bar(epochs, enabled=not as_json) as on_epoch:
        result, test = train_and_test(cfg, data, on_epoch, keys=FLAG_KEYS)
    tr, va, te = sizes(data)
    out = {
        "status": result.status,
        "reason": result.reason,
        "val_removed": round(result.val_removed, 4),
        "test_removed": round(test, 4),
        "train_seconds": round(result.seconds, 3),
        "epochs_run": result.epochs_run,
        "n_params": result.model.n_params(),
        "params": {"hidden_size": hidden_size, "shift": shift, "epochs": epochs, "lr": lr,
                   "batch_size": batch_size, "train_curves": tr},
        "seed": seed,
        "data_seed": data_seed,
        "fresh": fresh,
    }
    if isinstance(data, FileData):
        out["data"] = {"file": data.path, "sha256": data.sha256, "shape": list(data.shape),
                       "splits": [tr, va, te], "noisy_file": data.noisy_path,
                       "noise_ratio": None if data.noisy_path else data.noise_ratio,
                       "normalize": data.normalize}
    if save is not None and result.status != "diverged":
        scores = {"val_removed": result.val_removed, "test_removed": test}
        with writing(save, "--save"):
            out["saved"] = str(save_model(save, result.model, cfg, data, scores))
    if as_json:
        emit_json(out)
    else:
        if isinstance(data, FileData):
            typer.echo(f"data: {describe(data)}")
        typer.echo(f"validation: {result.val_removed:.2f} % removed   "
                   f"held-out test: {test:.2f} % removed   {result.seconds:.1f} s   "
                   f"({result.epochs_run} epochs, {out['n_params']} parameters)")
        if result.status != "completed":
            typer.echo(f"status: {result.status}: {result.reason}")
        if "saved" in out:
            typer.echo(f"model saved to {out['saved']}")
    if result.status == "diverged":
        raise typer.Exit(1)


def _source(data_file: Path | None, noisy_file: Path | None, normalize: bool,
            counts: tuple[int | None, int | None, int | None], seed: int,
            noise_ratio: float | None, fresh: bool = False) -> Source:
    """The synthetic curves, or the described data file: a study file's [data] rules, named by
    flag."""
    if data_file is None:
        for flag, used in (("--noisy-file", noisy_file is not None), ("--normalize", normalize)):
            if used:
                raise HpoError(f"{flag}: applies to your own signals only; add --data-file PATH "
                               "(a .npy or .csv of clean signals) or drop it")
        tr, va, te = (c if c is not None else d
                      for c, d in zip(counts, SYNTHETIC_COUNTS, strict=True))
        try:
            return DataConfig(seed=seed, n_train=tr, n_val=va, n_test=te,
                              noise_ratio=0.05 if noise_ratio is None else noise_ratio,
                              fresh=fresh)
        except ConfigValueError as e:
            raise HpoError(f"{FLAGS.get(e.field, e.field)}: {e.message}") from e
    if fresh:
        raise HpoError("--fresh: fresh curves come from the exercise's generator; --data-file "
                       "trains on the file's fixed training signals: drop one of the two")
    if noisy_file is not None and noise_ratio is not None:
        raise HpoError("--noise-ratio: the noisy inputs come from --noisy-file, so no noise is "
                       "drawn; drop one of the two")
    n_train, n_val, n_test = counts
    full = None
    if n_train is not None and n_val is not None and n_test is not None:
        full = (n_train, n_val, n_test)
    elif counts != (None, None, None):
        missing = FLAG_KEYS.counts[counts.index(None)]
        raise HpoError(f"{missing}: missing: with --data-file give --train-curves, --val-curves "
                       "and --test-curves together, or none of them (60/20/20 % of the file)")
    return describe_file(data_file.absolute(),
                         noisy_path=None if noisy_file is None else noisy_file.absolute(),
                         counts=full,
                         noise_ratio=0.05 if noise_ratio is None else noise_ratio,
                         normalize=normalize, seed=seed, keys=FLAG_KEYS)


def _check_memory(cfg: TrainConfig, data: Source) -> None:
    if isinstance(data, FileData):
        splits, length, n_val = data.estimate_bytes(), data.shape[1], data.sizes(FLAG_KEYS)[1]
        flag = "--data-file"
    else:
        splits = sum(resources.curves_bytes(data.count(s), data.length, data.max_sines)
                     for s in ("train", "val", "test"))
        length, n_val, flag = data.length, data.n_val, "--train-curves"
    model = resources.training_bytes(cfg.hidden_size, cfg.shift, length, cfg.batch_size, n_val)
    flag = flag if splits > model else "--hidden-size"
    est = resources.Estimate(splits + model, flag)
    if not est.fits():
        raise HpoError(f"{flag}: this run {resources.too_big(est)}; use a smaller value")


@app.command()
def denoise(
    model: Annotated[Path, typer.Option(help="A model file from `hpo train --save` or "
                                             "`hpo export`.")],
    input: Annotated[Path, typer.Option("--input", help="CSV (or 2-D .npy), one noisy signal "
                                                        "per row.")],
    output: Annotated[Path, typer.Option(help="Where to write the denoised CSV.")],
) -> None:
    """Denoise your own signals with a saved model (normalized as it was trained)."""
    check_output(output, "--output", inputs=(input, model))
    from hpo.task.modelfile import apply_model, load_model, trained_length
    from hpo.task.signals import read_signals, write_signals

    net, meta = load_model(model)
    signals = (load_signals_file(input, what="--input") if input.suffix.lower() == ".npy"
               else read_signals(input))
    trained = trained_length(meta)
    if trained is not None and signals.shape[1] != trained:
        # The LSTM runs on any length, so this is allowed; but it never saw such signals.
        warn(f"--input {input}: signals of {signals.shape[1]} points, but {model} was trained "
             f"on {trained}-point signals; denoising anyway (quality may differ)")
    denoised = apply_model(net, meta, signals)
    with writing(output, "--output"):
        write_signals(output, denoised)
    how = ", each normalized by its own mean and std" if meta.get("normalize") else ""
    typer.echo(f"denoised {len(signals)} signals of {signals.shape[1]} points with "
               f"{model} (hidden {meta['hidden_size']}, shift {meta['shift']}{how}) -> {output}")
