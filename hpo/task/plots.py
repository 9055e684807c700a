"""A trial's picture: what its denoiser does to a few validation curves, and how it learned.

Drawn with matplotlib's object API on the Agg canvas, never pyplot: no global figure state and
no display are involved, so a worker on a headless machine (or in a thread) draws safely. Small
and low-resolution on purpose: one picture per trial is uploaded while the trial still holds its
worker, so it has to cost a fraction of a second.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np

# The same validation curves in every trial's picture, so that pictures compare side by side.
CURVES = (0, 1, 2)
COLORS = {"clean": "#2b7bba", "noisy": "#9a9a9a", "denoised": "#d9480f", "loss": "#6b4fbb"}
# The learning curve's axis names the objective with its unit, in the words the dashboard uses
# for it (hpo.study.metrics.METRIC_LABELS["val_removed"], the study's metric name; a test keeps
# the two equal: this package sits below hpo.study and cannot import it).
VAL_LABEL = "% noise removed on validation"
LOSS_LABEL = "training MSE (log10)"


def trial_png(
    x: np.ndarray,
    clean: np.ndarray,
    noisy: np.ndarray,
    denoised: np.ndarray,
    val_curve: Sequence[float],
    loss_curve: Sequence[float],
    title: str,
    *,
    item: str = "curve",
    x_label: str | None = None,
) -> bytes:
    """PNG bytes: up to three curves (clean, noisy, denoised) above the learning curve.
    `item` names them in the panel titles ("validation signal 0"); `x_label` labels their x
    axis (e.g. "sample" for a file's signals, drawn over their index)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    picks = [i for i in CURVES if i < len(clean)]
    fig = Figure(figsize=(9.0, 5.6), dpi=80)
    fig.suptitle(title, fontsize=11)
    grid = fig.add_gridspec(2, max(len(picks), 1), height_ratios=(1.0, 0.9), hspace=0.38,
                            wspace=0.22, left=0.07, right=0.92, top=0.88, bottom=0.09)
    for col, i in enumerate(picks):
        ax = fig.add_subplot(grid[0, col])
        ax.plot(x, noisy[i], ".", ms=3, color=COLORS["noisy"], label="noisy")
        ax.plot(x, clean[i], lw=1.6, color=COLORS["clean"], label="clean")
        ax.plot(x, denoised[i], lw=1.4, color=COLORS["denoised"], label="denoised")
        ax.set_title(f"validation {item} {i}", fontsize=9)
        ax.tick_params(labelsize=7)
        if x_label is not None:
            ax.set_xlabel(x_label, fontsize=7)
        if col == 0:
            ax.legend(fontsize=7, loc="best", frameon=False)
    ax = fig.add_subplot(grid[1, :])
    epochs = np.arange(1, len(val_curve) + 1)
    ax.plot(epochs, val_curve, color=COLORS["denoised"], lw=1.5)
    ax.set_xlabel("epoch", fontsize=8)
    ax.set_ylabel(VAL_LABEL, fontsize=8, color=COLORS["denoised"])
    ax.tick_params(labelsize=7)
    # log10 of the loss on a plain axis: a log-scale axis labels a narrow range with unreadable
    # minor ticks, and short runs have narrow ranges.
    logs = [math.log10(v) if isinstance(v, int | float) and math.isfinite(v) and v > 0
            else np.nan for v in loss_curve]
    if any(not math.isnan(v) for v in logs):
        twin = ax.twinx()
        twin.plot(np.arange(1, len(logs) + 1), logs, color=COLORS["loss"], lw=1.0, alpha=0.8)
        twin.set_ylabel(LOSS_LABEL, fontsize=8, color=COLORS["loss"])
        twin.tick_params(labelsize=7)
    ax.set_title("learning curve", fontsize=9)
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()
