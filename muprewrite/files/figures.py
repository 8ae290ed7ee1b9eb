"""Figures as bytes and files: matplotlib (imported here only, on first use, with the Agg
backend), the image format a file name asks for, a figure drawn into memory, and bytes
written with ``write_file`` so that a failure never leaves half an image.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from . import OutputError, write_file

__all__ = ["figure_bytes", "image_format", "pyplot", "save_figure"]


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install matplotlib") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_format(path: str | Path) -> str:
    """The image format ``path``'s suffix names ("png" without one); OutputError if
    matplotlib cannot write it."""
    fmt = Path(path).suffix[1:].lower() or "png"
    pyplot()  # ImportError with the fix if matplotlib is missing
    from matplotlib.backend_bases import FigureCanvasBase

    supported = FigureCanvasBase.get_supported_filetypes()
    if fmt not in supported:
        raise OutputError(f"cannot draw {path}: matplotlib writes {', '.join(sorted(supported))}"
                          f", not {fmt!r}", fix=f"name the figure {Path(path).stem}.png")
    return fmt


def figure_bytes(fig: Any, plt: Any, fmt: str) -> bytes:
    """The figure drawn into ``fmt`` bytes (110 dpi), closed after."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=fmt, dpi=110)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def save_figure(data: bytes, path: str | Path, force: bool) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_file(path, data, force=force)
