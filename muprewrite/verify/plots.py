"""Figures for coordinate checks and LR sweeps. matplotlib is imported here only.

Each figure is drawn into memory (``*_image``: bytes in the format the file name asks for,
PNG by default) and written with ``muprewrite.files.figures.save_figure``, so a failure never leaves
half an image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..files.figures import figure_bytes, image_format, pyplot, save_figure
from .coordcheck import OUTPUT, SLOPE_THRESHOLD, CoordCheck

if TYPE_CHECKING:
    from .sweep import Sweep

__all__ = ["coord_checks_image", "panel_steps", "plot_coord_checks", "plot_sweeps", "sweeps_image"]


MAX_PANELS = 6  # steps drawn per row of a coordinate-check figure


def panel_steps(steps: int) -> list[int]:
    """The steps drawn: all of 0..steps, or MAX_PANELS of them evenly spaced."""
    if steps + 1 <= MAX_PANELS:
        return list(range(steps + 1))
    return sorted({round(k * steps / (MAX_PANELS - 1)) for k in range(MAX_PANELS)})


def plot_coord_checks(checks: Sequence[CoordCheck], path: str | Path, title: str = "",
                      threshold: float = SLOPE_THRESHOLD, *, force: bool = False) -> Path:
    """Draw ``coord_checks_image`` to ``path`` (its format from the suffix); ``force``
    overwrites a read-only file."""
    data = coord_checks_image(checks, title, threshold, fmt=image_format(path))
    return save_figure(data, path, force)


def coord_checks_image(checks: Sequence[CoordCheck], title: str = "",
                       threshold: float = SLOPE_THRESHOLD, fmt: str = "png") -> bytes:
    """One row per check (rule), one panel per step; x = width or depth (log2, the checks'
    axis), y = RMS (log).

    Every module is a thin grey line, flagged modules (slope > threshold at the last step)
    are red, and the model output is the thick black line. Of more than
    ``MAX_PANELS`` steps, ``MAX_PANELS`` evenly spaced ones are drawn (the first and the last
    among them).
    """
    plt = pyplot()
    shown = panel_steps(checks[0].steps)
    cols = len(shown)
    fig, axes = plt.subplots(len(checks), cols, figsize=(2.6 * cols, 2.4 * len(checks)),
                             squeeze=False, sharex=True)
    for row, check in zip(axes, checks):
        flagged = {m for m, _ in check.flagged(threshold)}
        for step, ax in zip(shown, row):
            for module in check.rms:
                values = check.at(module, step)
                if not all(values):
                    continue
                if module == OUTPUT:
                    style = dict(color="black", lw=2.2, zorder=3)
                elif module in flagged:
                    style = dict(color="tab:red", lw=0.9, alpha=0.8, zorder=2)
                else:
                    style = dict(color="tab:gray", lw=0.6, alpha=0.5, zorder=1)
                ax.plot(check.sizes, values, **style)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(check.sizes, [str(w) for w in check.sizes], fontsize=7)
            ax.minorticks_off()
            own = " (own base)" if check.own_base else ""
            ax.set_title(f"{check.rule}{own}: step {step}", fontsize=9)
            if step == 0:
                ax.set_ylabel("activation RMS")
        row[-1].text(0.98, 0.02, f"{len(flagged)} flagged", transform=row[-1].transAxes,
                     ha="right", va="bottom", fontsize=8,
                     color="tab:red" if flagged else "tab:green")
    for ax in axes[-1]:
        ax.set_xlabel(checks[-1].axis)
    handles = [plt.Line2D([], [], color="black", lw=2.2, label="model output"),
               plt.Line2D([], [], color="tab:red", lw=0.9, label=f"flagged (slope > {threshold:g})"),
               plt.Line2D([], [], color="tab:gray", lw=0.6, label="other modules")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title or "coordinate check", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    return figure_bytes(fig, plt, fmt)


def plot_sweeps(sweeps: Sequence[Sweep], path: str | Path, title: str = "", *,
                force: bool = False) -> Path:
    """Draw ``sweeps_image`` to ``path`` (its format from the suffix)."""
    return save_figure(sweeps_image(sweeps, title, fmt=image_format(path)), path, force)


def sweeps_image(sweeps: Sequence[Sweep], title: str = "", fmt: str = "png") -> bytes:
    """One panel per parametrization: loss against log2 learning rate, one line per width
    (or depth), each one's optimum marked. The y range starts just below the best loss and stops at
    1.5x it, so the region around the optima is readable; worse or diverged runs leave the
    top of the panel."""
    plt = pyplot()
    finite = [v for sw in sweeps for row in sw.loss for v in row if math.isfinite(v)]
    low = min(finite) if finite else 1.0
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4.2 * len(sweeps), 3.4), squeeze=False,
                             sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, sweep in zip(axes[0], sweeps):
        xs = [math.log2(lr) for lr in sweep.lrs]
        for i, size in enumerate(sweep.sizes):
            color = cmap(i / max(1, len(sweep.sizes) - 1))
            ax.plot(xs, sweep.loss[i], color=color, marker="o", ms=3, label=f"{sweep.axis} {size}")
            best = sweep.best_index(i)
            ax.plot(xs[best], sweep.loss[i][best], marker="*", ms=12, color=color,
                    markeredgecolor="black")
        own = " (own base)" if sweep.own_base else ""
        ax.set(xlabel="log2 learning rate" if sweep.hyper == "lr" else f"log2 {sweep.hyper}",
               title=f"{sweep.rule}{own}: optimum moves "
               f"{sweep.drift()} grid step(s)")
        ax.set_ylim(low * 0.97, low * 1.5)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(sweeps[0].metric)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title or "learning-rate transfer", fontsize=10)
    fig.tight_layout()
    return figure_bytes(fig, plt, fmt)
