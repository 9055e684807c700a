"""`hpo train` and `hpo denoise`: one model, outside any study. Both need torch, so they import
the training modules inside the command (the other commands never load torch).

`hpo train --data-file` trains on the user's own signals with a study file's rules: the rows
shuffled by --data-seed, --train-curves/--val-curves/--test-curves all three or none (then 60/20/20
% of the file), noise drawn by --noise-ratio unless --noisy-file pairs measured inputs, and
--normalize to scale each signal by its noisy input. The model file records all of it, and
`hpo denoise` applies the same normalization."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
from hpo.errors import HpoError, plural
from hpo.paths import check_output
from hpo.task.config import ConfigValueError, TrainConfig
from hpo.task.curves import NOISE_RATIO
from hpo.task.datafile import FLAG_KEYS, FileData
from hpo.task.signals import load_signals_file
from hpo.task.source import Source, describe, memory_parts, sizes, source_from


@app.command(epilog="With --json: training_ended is how training ended (completed, stopped or "
                     "diverged: the training loss became inf or nan), not an Optuna trial state; "
                     "val_removed and test_removed are % of the noise removed on the validation "
                     "and held-out test curves; train_seconds is wall-clock seconds.")
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
        min=0, max=10,
        help=f"Noise std / each clean signal's peak-to-peak (default {NOISE_RATIO:g}).")
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
    resources.check_threads(1, cfg.threads)
    from hpo.cli.progress import epoch_bar, wanted
    from hpo.task.fit import train_and_test
    from hpo.task.modelfile import save_model

    with epoch_bar(epochs, enabled=wanted(as_json)) as on_epoch:
        result, test = train_and_test(cfg, data, on_epoch, keys=FLAG_KEYS)
    tr, va, te = sizes(data)
    n_params = result.model.n_params()
    out = {
        "training_ended": result.status,  # completed, stopped or diverged: not a trial state
        "reason": result.reason,
        "val_removed": round(result.val_removed, 4),
        "test_removed": round(test, 4),
        "train_seconds": round(result.seconds, 3),
        "epochs_run": result.epochs_run,
        "n_params": n_params,
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
        # Written atomically: a full disk leaves no file and names its cause (hpo.paths).
        out["saved"] = str(save_model(save, result.model, cfg, data, scores, flag="--save"))
    if as_json:
        emit_json(out)
    else:
        if isinstance(data, FileData):
            typer.echo(f"data: {describe(data)}")
        typer.echo(f"validation: {result.val_removed:.2f} % removed   "
                   f"held-out test: {test:.2f} % removed   {result.seconds:.1f} s   "
                   f"({plural(result.epochs_run, 'epoch')}, "
                   f"{plural(n_params, 'parameter')})")
        if result.status != "completed":
            typer.echo(f"training {result.status}: {result.reason}")
        if "saved" in out:
            typer.echo(f"model saved to {out['saved']}")
    if result.status == "diverged":
        raise typer.Exit(1)


def _source(data_file: Path | None, noisy_file: Path | None, normalize: bool,
            counts: tuple[int | None, int | None, int | None], seed: int,
            noise_ratio: float | None, fresh: bool = False) -> Source:
    """The synthetic curves, or the described data file: a study file's [data] rules, named by
    flag."""
    return source_from(FLAG_KEYS, seed=seed, noise_ratio=noise_ratio, counts=counts,
                       file=None if data_file is None else str(data_file.absolute()),
                       noisy_file=None if noisy_file is None else str(noisy_file.absolute()),
                       normalize=normalize, fresh=fresh)


# The flag that sets each part of the memory estimate (hpo.task.source.memory_parts).
MEMORY_FLAGS = {"train": "--train-curves", "val": "--val-curves", "test": "--test-curves",
                "file": "--data-file", "model": "--hidden-size"}


def _check_memory(cfg: TrainConfig, data: Source) -> None:
    parts = memory_parts(cfg, data)
    est = resources.Estimate(sum(parts.values()), MEMORY_FLAGS[max(parts, key=parts.__getitem__)])
    if not est.fits():
        raise HpoError(f"{est.what}: this run {resources.too_big(est)}; use a smaller value")


@app.command()
def denoise(
    model: Annotated[Path, typer.Option(help="A model file from `hpo train --save` or "
                                             "`hpo export`.")],
    input: Annotated[Path, typer.Option("--input", help="CSV (or 2-D .npy), one noisy signal "
                                                        "per row.")],
    output: Annotated[Path, typer.Option(help="Where to write the denoised CSV.")],
    force: Annotated[bool, typer.Option("--force", metavar="",
                                        help="Overwrite --output.")] = False,
) -> None:
    """Denoise your own signals with a saved model (normalized as it was trained)."""
    check_output(output, "--output", inputs=(input, model), overwrite=force)
    import numpy as np

    from hpo.task.modelfile import apply_model, load_model, trained_length
    from hpo.task.signals import read_signals, write_signals

    net, meta = load_model(model)
    signals = (load_signals_file(input, what="--input") if input.suffix.lower() == ".npy"
               else read_signals(input))
    need = resources.Estimate(resources.inference_bytes(
        int(meta["hidden_size"]), int(meta["shift"]), signals.shape[1], len(signals)), "--input")
    if not need.fits():
        raise HpoError(f"--input {input}: denoising {plural(len(signals), 'signal')} of "
                       f"{plural(signals.shape[1], 'point')} with {model} (hidden "
                       f"{meta['hidden_size']}, shift {meta['shift']}) {resources.too_big(need)}; "
                       "split the input")
    trained = trained_length(meta)
    if trained is not None and signals.shape[1] != trained:
        # The LSTM runs on any length, so this is allowed; but it never saw such signals.
        warn(f"--input {input}: signals of {plural(signals.shape[1], 'point')}, but {model} was "
             f"trained on {trained}-point signals; denoising anyway (quality may differ)")
    denoised = apply_model(net, meta, signals)
    if not np.isfinite(denoised).all():  # finite weights can still overflow float32
        row = int(np.argwhere(~np.isfinite(denoised))[0][0]) + 1
        raise HpoError(f"--model {model}: its output for signal {row} of --input {input} is not "
                       "finite (the weights overflow float32); nothing was written")
    # Written atomically: a failed write leaves no partial --output to block the rerun.
    write_signals(output, denoised, flag="--output", what="the denoised signals")
    how = ", each normalized by its own mean and std" if meta.get("normalize") else ""
    typer.echo(f"denoised {plural(len(signals), 'signal')} of {plural(signals.shape[1], 'point')} "
               f"with {model} (hidden {meta['hidden_size']}, shift {meta['shift']}{how}) -> "
               f"{output}")


def _read(path: Path, flag: str) -> Any:
    return load_signals_file(path, what=flag)  # messages name the flag and the path


@app.command()
def score(
    clean: Annotated[Path, typer.Option("--clean", help="The clean signals (CSV or .npy), one "
                                                        "per row.")],
    noisy: Annotated[Path, typer.Option("--noisy", help="The noisy signals given to the "
                                                        "denoiser, row by row.")],
    denoised: Annotated[Path, typer.Option("--denoised", help="What the denoiser made of them "
                                                              "(e.g. `hpo denoise --output`).")],
    as_json: JsonOpt = False,
) -> None:
    """Score denoised signals against the clean ones: percent of the noise removed."""
    from hpo.task.metric import percent_removed

    arrays = {flag: _read(path, flag) for flag, path in
              (("--clean", clean), ("--noisy", noisy), ("--denoised", denoised))}
    shapes = {flag: a.shape for flag, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        got = ", ".join(f"{k} {v}" for k, v in shapes.items())
        raise HpoError("--clean, --noisy and --denoised must have the same shape (one signal "
                       f"per row, same length), got {got}")
    removed = percent_removed(arrays["--clean"], arrays["--noisy"], arrays["--denoised"])
    n, points = shapes["--clean"]
    if as_json:
        emit_json({"removed": round(removed, 4), "signals": n, "points": points})
    else:
        typer.echo(f"{removed:.2f} % of the noise removed ({plural(n, 'signal')} of "
                   f"{plural(points, 'point')})")
