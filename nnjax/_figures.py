"""What every figure of ``nnjax.plotting`` shares: its layout, its resolution, its PNG output.

A figure is laid out once, with fixed margins (``figure``), and saved as a PNG atomically
(``save_figure``), or drawn into memory first (``png_bytes``, e.g. in another thread) and
written later (``write_png``). A log axis (``log_scale``) is labelled in plain text.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatterSciNotation

from nnjax.files import atomic_write

__all__ = ["DPI", "PathLike", "figure", "log_scale", "png_bytes", "save_figure", "write_png"]

DPI = 110
"""Resolution of every saved PNG, in dots per inch."""

_PNG = {"format": "png", "dpi": DPI, "pil_kwargs": {"compress_level": 1}}
"""How every figure is saved: zlib's fastest level makes the files about 15% larger than its
default and saves about 15 ms a figure."""

PathLike = str | os.PathLike[str]


def figure(
    width: float,
    height: float,
    *,
    left: float = 0.75,
    right: float = 0.2,
    bottom: float = 0.55,
    top: float = 0.4,
    wspace: float = 0.25,
) -> Figure:
    """A ``width`` x ``height`` inch figure whose axes leave fixed margins, in inches.

    Fixed margins, not constrained layout: laying a small figure out again at every draw costs
    more than drawing it.

    Args:
      width, height: the figure's size.
      left, right, bottom, top: the margins around its grid of axes.
      wspace: the space between axes side by side, a fraction of their mean width.

    Returns:
      The figure; ``fig.subplots`` places its axes within the margins.
    """
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=wspace,
    )
    return fig


def png_bytes(fig: Figure) -> bytes:
    """``fig`` as the PNG ``save_figure`` writes, in memory (e.g. drawn in another thread).

    Args:
      fig: the figure, at :data:`DPI` dots per inch.

    Returns:
      The PNG file's content.
    """
    buffer = io.BytesIO()
    fig.canvas.print_figure(buffer, **_PNG)
    return buffer.getvalue()


def write_png(png: bytes, path: PathLike) -> Path:
    """Writes ``png`` (``png_bytes``) to ``path`` atomically and returns ``Path(path)``.

    Args:
      png: the PNG file's content.
      path: where to write it; parent directories are created.

    Returns:
      ``path`` as a ``pathlib.Path``.
    """
    with atomic_write(path) as f:
        f.write(png)
    return Path(path)


def save_figure(fig: Figure, path: PathLike) -> Path:
    """Writes ``fig`` as a PNG to ``path`` atomically and returns ``Path(path)``.

    Args:
      fig: the figure to save, at :data:`DPI` dots per inch.
      path: where to write the PNG; parent directories are created. The file is PNG whatever
        suffix ``path`` has.

    Returns:
      ``path`` as a ``pathlib.Path``.
    """
    with atomic_write(path) as f:
        fig.savefig(f, **_PNG)
    return Path(path)


_SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


class _LogLabels(LogFormatterSciNotation):
    """matplotlib's labels of a log axis (10⁻², 2×10⁻¹) in plain text, not mathtext: mathtext's
    parser takes about 0.1 s to build, in the first figure of a process that draws one."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        label = super().__call__(x, pos)
        math = re.fullmatch(r"\$\\mathdefault\{(.*)\}\$", label)
        if math is None:
            return label
        text = math.group(1).replace(r"\times", "×")
        return re.sub(r"\^\{(-?\d+)\}", lambda power: power[1].translate(_SUPERSCRIPTS), text)


def log_scale(ax: Axes, axis: str = "y") -> None:
    """Puts the ``"x"`` or ``"y"`` axis of ``ax`` on a log scale, its ticks labelled as
    matplotlib labels them (``_LogLabels``)."""
    scale, labelled = (ax.set_xscale, ax.xaxis) if axis == "x" else (ax.set_yscale, ax.yaxis)
    scale("log")
    labelled.set_major_formatter(_LogLabels())
    labelled.set_minor_formatter(_LogLabels(labelOnlyBase=False))
