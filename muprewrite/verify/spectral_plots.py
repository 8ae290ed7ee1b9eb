"""The spectral check's figure: spectral ratio against width, one panel per role.

Drawn into memory (``spectra_image``: bytes in the format the file name asks for, PNG by
default) and written with ``muprewrite.files.write_file``, like the figures of ``plots.py``
(whose helpers it shares; matplotlib is imported there only).
"""

from __future__ import annotations

from pathlib import Path

from ..files.figures import figure_bytes, image_format, pyplot, save_figure
from .coordcheck import SLOPE_THRESHOLD
from .spectral import EXPECT, QUANTITIES, Spectra

__all__ = ["plot_spectra", "spectra_image"]

_COLOR = {"weight": "tab:blue", "update": "tab:orange"}
_LABEL = {"weight": "||W|| (final)", "update": "||dW|| (mean over steps)"}


def plot_spectra(spectra: Spectra, path: str | Path, title: str = "",
                 threshold: float = SLOPE_THRESHOLD, *, force: bool = False) -> Path:
    """Draw ``spectra_image`` to ``path`` (its format from the suffix); ``force``
    overwrites a read-only file."""
    return save_figure(spectra_image(spectra, title, threshold, fmt=image_format(path)), path, force)


def spectra_image(spectra: Spectra, title: str = "", threshold: float = SLOPE_THRESHOLD,
                  fmt: str = "png") -> bytes:
    """One panel per role (input, hidden, output); x = width (log2), y = spectral norm over
    sqrt(fan_out / fan_in) (log).

    Per quantity (weight in blue, update in orange), each matrix is a thin line and the
    role's geometric mean a thick one, dashed with red markers where it is flagged. A dotted line at the
    narrowest width's value shows what flat would be. Each panel's title gives the slopes.
    """
    plt = pyplot()
    roles = spectra.roles or ("hidden",)
    flagged = {(r, q) for r, q, _ in spectra.flagged(threshold)}
    fig, axes = plt.subplots(1, len(roles), figsize=(3.6 * len(roles), 3.3), squeeze=False)
    for ax, role in zip(axes[0], roles):
        slopes = []
        for quantity in QUANTITIES:
            color = _COLOR[quantity]
            for series in spectra.matrices.values():
                values = series.ratio(quantity)
                if series.role == role and all(v > 0 for v in values):
                    ax.plot(spectra.widths, values, color=color, lw=0.6, alpha=0.35)
            mean = spectra.ratio(role, quantity)
            bad = (role, quantity) in flagged
            ax.plot(spectra.widths, mean, color=color, lw=2.2, ls="--" if bad else "-",
                    marker="o", ms=6 if bad else 3, mfc="tab:red" if bad else color,
                    mec="tab:red" if bad else color, zorder=3)
            ax.axhline(mean[0], color=color, lw=0.8, ls=":", zorder=1)
            expect = "flat" if EXPECT[role, quantity] == "flat" else "not growing"
            slopes.append(f"{quantity} {spectra.slope(role, quantity):+.2f}"
                          f"{' FLAGGED' if bad else ''} ({expect})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(spectra.widths, [str(w) for w in spectra.widths], fontsize=7)
        ax.minorticks_off()
        ax.set_title(f"{role}\n" + "\n".join(slopes), fontsize=8)
        ax.set_xlabel("width")
    axes[0][0].set_ylabel("spectral norm / sqrt(fan_out/fan_in)")
    handles = [plt.Line2D([], [], color=_COLOR[q], lw=2.2, label=_LABEL[q]) for q in QUANTITIES]
    handles += [plt.Line2D([], [], color="tab:gray", lw=2.2, ls="--", marker="o", mfc="tab:red",
                           mec="tab:red", label=f"flagged (slope beyond {threshold:g})"),
                plt.Line2D([], [], color="tab:gray", lw=0.6, label="thin: one matrix")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title or f"spectral check: rule {spectra.rule!r}, {spectra.optimizer}",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    return figure_bytes(fig, plt, fmt)
