"""The training loop of the exercise; it knows nothing of Optuna.

Defaults are the protocol's (docs/protocol.md): Adam at lr 0.01, cosine annealing over the run's
epochs, MSE against the clean curve, batches of 10 curves taken in order, validation after every
epoch. A caller watches the run through `on_epoch`, which may return True to stop early or raise
(a search raises its own "pruned" exception there and catches it itself). A caller whose model
works in other units than its scores (a normalized file study, hpo.task.source) passes `score`,
which then replaces the per-epoch validation score.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from hpo.task.config import TrainConfig
from hpo.task.curves import Split
from hpo.task.metric import percent_removed
from hpo.task.model import Denoiser


@dataclass(frozen=True)
class EpochReport:
    epoch: int  # 1-based
    val_removed: float  # percent of noise removed on the validation split
    train_loss: float  # mean MSE over the epoch's batches


@dataclass
class TrainResult:
    status: str  # "completed", "stopped" (by the callback) or "diverged" (non-finite loss)
    reason: str
    model: Denoiser
    epochs_run: int
    val_removed: float  # after the last epoch run
    seconds: float  # wall-clock seconds of the training loop
    cpu_seconds: float  # CPU seconds of this process meanwhile (wall minus time lost to load)
    val_curve: list[float] = field(default_factory=list)
    loss_curve: list[float] = field(default_factory=list)


EpochCallback = Callable[[EpochReport], "bool | None"]


def set_seed(seed: int) -> None:
    """The one place every source of randomness is seeded."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def as_tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float32, device=device).unsqueeze(-1)


@torch.no_grad()
def predict(model: Denoiser, noisy: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Denoises (n, length) signals; batched so a large test split needs little memory."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [
        model(as_tensor(noisy[i : i + batch], device)).squeeze(-1).cpu().numpy()
        for i in range(0, len(noisy), batch)
    ]
    model.train(was_training)
    return np.concatenate(out) if out else np.empty_like(noisy)


def evaluate(model: Denoiser, split: Split) -> float:
    return percent_removed(split.clean, split.noisy, predict(model, split.noisy))


def train(
    cfg: TrainConfig,
    train_split: Split,
    val_split: Split,
    on_epoch: EpochCallback | None = None,
    score: Callable[[Denoiser], float] | None = None,
    fresh: Callable[[int], Split] | None = None,
) -> TrainResult:
    """`score(model)`: the validation score after each epoch (default: evaluate on val_split).
    `fresh(epoch)`: the training curves of each epoch after the first (hpo.task.curves's fresh
    curves;
    default: train_split every epoch)."""
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    set_seed(cfg.seed)
    model = Denoiser(cfg.hidden_size, cfg.shift).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    x, y = as_tensor(train_split.noisy, device), as_tensor(train_split.clean, device)
    n, bs = len(x), cfg.batch_size
    val_curve: list[float] = []
    loss_curve: list[float] = []
    status, reason = "completed", ""
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(1, cfg.epochs + 1):
        if fresh is not None and epoch > 1:
            drawn = fresh(epoch)
            x, y = as_tensor(drawn.noisy, device), as_tensor(drawn.clean, device)
        # Summing losses as a tensor avoids a device sync per step; one check per epoch is
        # enough because a non-finite loss poisons every step after it.
        total = torch.zeros((), device=device)
        try:
            for i in range(0, n, bs):
                loss = torch.nn.functional.mse_loss(model(x[i : i + bs]), y[i : i + bs])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                total += loss.detach()
        except RuntimeError as e:
            if "overflow" not in str(e):
                raise
            total = torch.tensor(math.inf)  # Adam's update overflowed float32: diverged
        sched.step()
        mean_loss = total.item() / math.ceil(n / bs)
        if not math.isfinite(mean_loss):
            status = "diverged"
            reason = f"training loss became {mean_loss} at epoch {epoch} (lr={cfg.lr})"
            loss_curve.append(mean_loss)
            val_curve.append(0.0)
            break
        val = evaluate(model, val_split) if score is None else score(model)
        val_curve.append(val)
        loss_curve.append(mean_loss)
        if on_epoch is not None and on_epoch(EpochReport(epoch, val, mean_loss)):
            status, reason = "stopped", f"stopped by the caller after epoch {epoch}"
            break
    return TrainResult(
        status=status,
        reason=reason,
        model=model,
        epochs_run=len(val_curve),
        val_removed=val_curve[-1] if val_curve else 0.0,
        seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu_start,
        val_curve=val_curve,
        loss_curve=loss_curve,
    )


