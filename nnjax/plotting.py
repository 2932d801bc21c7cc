"""Figures for the spec's "Visualizing the Concepts", saved as PNG files.

Every figure is a ``matplotlib.figure.Figure`` built directly, never through ``pyplot``: no GUI
backend is needed, no global figure list grows, and ``matplotlib.use`` is never called, so a
user's own plotting setup is left as it was. PNG output goes through matplotlib's Agg renderer.

Each ``plot_*`` function takes the output ``path``, creates its parent directories, writes the PNG
atomically (to a temporary file in the same directory, then ``os.replace``, so an error never
leaves a half-written image behind) and returns the path as a ``pathlib.Path``. The file is
always PNG, whatever suffix ``path`` has. A figure can also be drawn into memory
(``png_bytes``, e.g. in another thread) and written later (``write_png``). Figures are laid out
once, with fixed margins: a layout engine would cost more than the drawing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib import colormaps
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nnjax import _figures, _validation, activations
from nnjax._figures import DPI, PathLike, png_bytes, save_figure, write_png
from nnjax.metrics import DERIVED_KEYS, HISTORY_KEYS

__all__ = [
    "DPI",
    "activations_figure",
    "confusion_matrix",
    "plot_activations",
    "plot_confusion_matrix",
    "plot_decision_boundary",
    "plot_history",
    "plot_layer_history",
    "plot_sweep",
    "png_bytes",
    "save_figure",
    "write_png",
]


def _as_labels(name: str, labels: Any, num_classes: int | None = None) -> np.ndarray:
    """Returns ``labels`` as a 1-D int64 NumPy array of class labels in ``[0, num_classes)``, or
    raises ValueError (see ``_validation.check_labels``)."""
    _validation.check_labels(name, labels, num_classes)
    return np.asarray(labels).astype(np.int64)


_ACTIVATION_PANELS: tuple[tuple[str, str, str], ...] = (
    ("sigmoid", "Sigmoid", "σ"),
    ("relu", "ReLU", "ReLU"),
    ("tanh", "Tanh", "tanh"),
)


@functools.partial(jax.jit, static_argnums=2)
def _activation_curves(
    low: float, high: float, num: int
) -> tuple[jax.Array, dict[str, tuple[jax.Array, jax.Array, jax.Array]]]:
    """``x`` and each panel's f(x), hand-written f'(x) and autodiff f'(x), in one program."""
    x = jnp.linspace(low, high, num, dtype=jnp.float32)
    return x, {
        name: (fn(x), derivative(x), jax.vmap(jax.grad(fn))(x))
        for name, (fn, derivative) in activations.ACTIVATIONS.items()
    }


def activations_figure(x_range: tuple[float, float] = (-5.0, 5.0), num: int = 201) -> Figure:
    r"""Sigmoid, ReLU and tanh side by side with their derivatives, proven against autodiff.

    The spec's activation figure (one row of three panels), extended: each panel draws the
    function :math:`f(x)`, its hand-written derivative from ``nnjax.activations`` (e.g.
    :math:`\sigma'(x) = \sigma(x)(1 - \sigma(x))`) and, dashed over it,
    ``jax.vmap(jax.grad(f))(x)``, so the reader sees the two derivatives coincide. The largest
    absolute difference between them is written in each panel's legend.

    Args:
      x_range: ``(low, high)``, the finite interval of ``x`` to plot, ``low < high``.
      num: the number of evenly spaced points on the interval, at least 2.

    Returns:
      The figure, not yet drawn (``save_figure``, ``png_bytes``).
    """
    if len(x_range) != 2:
        raise ValueError(f"x_range must be (low, high), got {x_range!r}")
    low, high = float(x_range[0]), float(x_range[1])
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"x_range must be finite with low < high, got {x_range!r}")
    num = _validation.check_int("num", num, 2)

    x, curves = jax.device_get(_activation_curves(low, high, num))
    fig = _figures.figure(13, 4.2, left=0.5, wspace=0.15)
    for ax, (name, title, symbol) in zip(fig.subplots(1, 3), _ACTIVATION_PANELS, strict=True):
        value, hand, auto = curves[name]
        max_diff = float(np.max(np.abs(hand - auto)))
        ax.plot(x, value, color="C0", linewidth=2, label=f"{symbol}(x)")
        ax.plot(x, hand, color="C1", linewidth=4, alpha=0.6, label=f"hand-written {symbol}'(x)")
        ax.plot(x, auto, color="k", linewidth=1.5, linestyle="--", label="jax.grad (autodiff)")
        ax.plot([], [], linestyle="none", label=f"max |hand − autodiff| = {max_diff:.1e}")
        ax.set_title(title)
        ax.set_xlabel("x")
        ax.grid(True)
        ax.legend(loc="best", fontsize=8)
    return fig


def plot_activations(
    path: PathLike, x_range: tuple[float, float] = (-5.0, 5.0), num: int = 201
) -> Path:
    """Plots ``activations_figure(x_range, num)``: the activation functions and derivatives.

    Args:
      path: where to write the PNG; parent directories are created.
      x_range: ``(low, high)``, the finite interval of ``x`` to plot, ``low < high``.
      num: the number of evenly spaced points on the interval, at least 2.

    Returns:
      ``path`` as a ``pathlib.Path``.
    """
    return save_figure(activations_figure(x_range, num), path)


def _history_series(history: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    """Returns the known keys of ``history`` as equal-length float arrays, or raises."""
    if "train_loss" not in history:
        raise ValueError(f"history needs a 'train_loss' key, got keys {sorted(history)}")
    series: dict[str, np.ndarray] = {}
    for key in (*HISTORY_KEYS, *DERIVED_KEYS):
        if key not in history:
            continue
        values = np.asarray(history[key], dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"history[{key!r}] must be a list of floats, got shape {values.shape}")
        series[key] = values
    lengths = {key: len(v) for key, v in series.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"history lists must all have the same length, got {lengths}")
    if lengths["train_loss"] == 0:
        raise ValueError("history lists are empty: nothing to plot")
    return series


def plot_history(history: Mapping[str, Sequence[float]], path: PathLike) -> Path:
    """Plots loss and accuracy (or R²) per epoch, training and validation, as two panels.

    The loss panel uses a log-scale y axis when every loss value is positive and finite. The
    accuracy panel is left out when ``history`` has no accuracy at all (regression), and a
    regression's validation R² (``val_r2``) is drawn in its place. Epochs are numbered from 1.
    Keys other than the five below are ignored.

    Args:
      history: a mapping of equal-length lists of floats, one value per evaluation:
        ``train_loss`` (required), ``train_accuracy``, ``val_loss``, ``val_accuracy`` and
        ``val_r2`` (each optional), and ``eval_epoch``, the epoch of each (default 1, 2, ...).
      path: where to write the PNG; parent directories are created.

    Returns:
      ``path`` as a ``pathlib.Path``.
    """
    series = _history_series(history)
    epochs = np.asarray(history.get("eval_epoch", range(1, len(series["train_loss"]) + 1)))
    if epochs.shape != series["train_loss"].shape:
        raise ValueError(
            f"history's eval_epoch has {epochs.size} epochs for {len(series['train_loss'])} values"
        )
    has_accuracy = "train_accuracy" in series or "val_accuracy" in series
    panels = [("loss", "Loss")] + ([("accuracy", "Accuracy")] if has_accuracy else [])
    panels += [("r2", "R²")] if "val_r2" in series else []

    fig = _figures.figure(5.5 * len(panels), 4, wspace=0.3)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (metric, title) in zip(axes, panels, strict=True):
        drawn = []
        for split, style in (("train", "-"), ("val", "--")):
            key = f"{split}_{metric}"
            if key in series:
                label = "train" if split == "train" else "validation"
                marker = "o" if len(epochs) == 1 else None
                ax.plot(epochs, series[key], linestyle=style, marker=marker, label=label)
                drawn.append(series[key])
        values = np.concatenate(drawn)
        if metric == "loss" and np.all(np.isfinite(values)) and np.all(values > 0):
            _figures.log_scale(ax)
        if metric == "accuracy" and np.all((values >= 0) & (values <= 1)):
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, which="both", alpha=0.4)
        ax.legend()
    return save_figure(fig, path)


FILL_ALPHA = 0.35
"""Opacity of the predicted-class regions in ``plot_decision_boundary`` (the points are opaque)."""


def _class_colors(num_classes: int) -> list[tuple[float, ...]]:
    """One distinct color per class: tab10, then tab20, then evenly spaced on turbo."""
    if num_classes <= 10:
        return list(colormaps["tab10"].colors[:num_classes])
    if num_classes <= 20:
        return list(colormaps["tab20"].colors[:num_classes])
    return [tuple(c) for c in colormaps["turbo"](np.linspace(0, 1, num_classes))]


def _check_points(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``x`` as float64 ``(n, 2)`` and ``y`` as int64 ``(n,)``, raising ValueError unless
    there is at least one point, ``x`` is finite and ``y`` holds non-negative class labels."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (n, 2), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one point")
    _validation.check_all_finite("x", x)
    y = _as_labels("y", y)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y has {y.shape[0]} labels but x has {x.shape[0]} points")
    return x, y


def _grid_axes(x: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """``resolution`` evenly spaced coordinates along each axis, over the bounding box of the
    points ``x`` padded by 10% of its span on each side (by 0.5 where the span is 0)."""
    low, high = x.min(axis=0), x.max(axis=0)
    span = high - low
    pad = np.where(span > 0, 0.1 * span, 0.5)
    g0 = np.linspace(low[0] - pad[0], high[0] + pad[0], resolution)
    g1 = np.linspace(low[1] - pad[1], high[1] + pad[1], resolution)
    return g0, g1


def _predict_grid(
    predict_fn: Callable[[jax.Array], Any], g0: np.ndarray, g1: np.ndarray
) -> np.ndarray:
    """The classes ``predict_fn`` gives the grid ``g0 x g1`` in one call, shape ``(len(g1),
    len(g0))`` (row ``i`` is ``g1[i]``)."""
    mesh0, mesh1 = np.meshgrid(g0, g1)
    grid = jnp.asarray(np.stack([mesh0.ravel(), mesh1.ravel()], axis=1), dtype=jnp.float32)
    predicted = _as_labels("predict_fn's output", predict_fn(grid))
    if predicted.shape != (grid.shape[0],):
        raise ValueError(
            f"predict_fn must return shape ({grid.shape[0]},) for {grid.shape[0]} points, "
            f"got shape {predicted.shape}"
        )
    return predicted.reshape(mesh0.shape)


def plot_decision_boundary(
    predict_fn: Callable[[jax.Array], Any],
    x: Any,
    y: Any,
    path: PathLike,
    *,
    resolution: int = 200,
) -> Path:
    """Plots the class a model predicts over the plane, with the labelled data on top.

    The grid covers the data's bounding box padded by 10% of its span on each side (by 0.5 along
    an axis where all points coincide); ``predict_fn`` is called once on all grid points. Each
    grid point's predicted class fills the cell around it in that class's color (at opacity
    :data:`FILL_ALPHA`), without interpolation, so only predicted classes are ever drawn.

    Args:
      predict_fn: maps a float32 array of points ``(m, 2)`` to integer class predictions
        ``(m,)``, e.g. ``lambda p: jnp.argmax(forward(params, p), axis=-1)``.
      x: the data points, shape ``(n, 2)``, finite.
      y: their integer class labels, shape ``(n,)``, non-negative.
      path: where to write the PNG; parent directories are created.
      resolution: the number of grid points along each axis, at least 2.

    Returns:
      ``path`` as a ``pathlib.Path``.
    """
    x, y = _check_points(x, y)
    resolution = _validation.check_int("resolution", resolution, 2)
    g0, g1 = _grid_axes(x, resolution)
    predicted = _predict_grid(predict_fn, g0, g1)

    num_classes = int(max(y.max(), predicted.max())) + 1
    cmap = ListedColormap(_class_colors(num_classes))
    norm = BoundaryNorm(np.arange(num_classes + 1) - 0.5, num_classes)
    fig = _figures.figure(6, 5)
    ax = fig.subplots()
    # One flat cell per grid point, centred on it: no interpolation between class indices, which
    # would paint strips of a class never predicted where two other classes meet (0 | 1 | 2).
    ax.pcolormesh(g0, g1, predicted, shading="nearest", cmap=cmap, norm=norm, alpha=FILL_ALPHA)
    scatter = ax.scatter(
        x[:, 0], x[:, 1], c=y, cmap=cmap, norm=norm, edgecolors="k", linewidths=0.5, s=20
    )
    ax.legend(*scatter.legend_elements(), title="class", loc="best", fontsize=8)
    ax.set_title("Decision boundary")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    return save_figure(fig, path)


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Counts how often each true class was predicted as each class.

    ``C[i, j]`` is the number of samples with true class ``i`` predicted as class ``j``; the
    diagonal holds the correct predictions and ``C.sum() == n``.

    Args:
      y_true: the true integer labels, shape ``(n,)``, each in ``[0, num_classes)``.
      y_pred: the predicted integer labels, shape ``(n,)``, each in ``[0, num_classes)``.
      num_classes: the number of classes, a positive integer.

    Returns:
      The counts, an int64 NumPy array of shape ``(num_classes, num_classes)``; rows are true
      classes, columns predicted classes.
    """
    num_classes = _validation.check_int("num_classes", num_classes, 1)
    y_true = _as_labels("y_true", y_true, num_classes)
    y_pred = _as_labels("y_pred", y_pred, num_classes)
    _validation.check_same_shape("y_true", y_true, "y_pred", y_pred)
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def plot_confusion_matrix(y_true: Any, y_pred: Any, num_classes: int, path: PathLike) -> Path:
    """Draws the confusion matrix as a heat map with the count written in every cell.

    Args:
      y_true: the true integer labels, shape ``(n,)``, each in ``[0, num_classes)``.
      y_pred: the predicted integer labels, shape ``(n,)``, each in ``[0, num_classes)``.
      num_classes: the number of classes, a positive integer.
      path: where to write the PNG; parent directories are created.

    Returns:
      ``path`` as a ``pathlib.Path``.
    """
    counts = confusion_matrix(y_true, y_pred, num_classes)
    size = min(3.0 + 0.5 * num_classes, 14.0)
    fig = _figures.figure(size + 1.0, size, left=0.6, right=0.1)
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues", vmin=0, vmax=max(int(counts.max()), 1))
    fig.colorbar(image, ax=ax, label="count")
    threshold = counts.max() / 2
    fontsize = max(5, 12 - num_classes // 3)
    for (i, j), count in np.ndenumerate(counts):
        color = "white" if count > threshold else "black"
        ax.text(j, i, str(count), ha="center", va="center", fontsize=fontsize, color=color)
    ticks = np.arange(num_classes)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(counts) / counts.sum() if counts.sum() else float("nan")
    ax.set_title(f"Confusion matrix (accuracy {accuracy:.1%})")
    return save_figure(fig, path)


def plot_sweep(
    values: Any,
    final_losses: Any,
    path: PathLike,
    *,
    xlabel: str = "learning rate",
    log_x: bool = True,
) -> Path:
    """Final loss against a swept hyperparameter, the median over seeds with a min-max band.

    Non-finite losses (runs that diverged) are left out of the median and the band, and counted
    in the legend; a value whose runs all diverged gets no point. When some runs diverged, the
    band's label says over how many finite seeds (of all seeds) each value's min and max were
    taken.

    Args:
      values: the hyperparameter values, shape ``(v,)``, finite; positive when ``log_x``.
      final_losses: the final loss of each run, shape ``(v, seeds)``.
      path: where to write the PNG.
      xlabel: the hyperparameter's name.
      log_x: a logarithmic x axis (for learning rates and other scales).

    Returns:
      ``path`` as a ``pathlib.Path``.

    Raises:
      ValueError: if the shapes are not ``(v,)`` and ``(v, seeds)``, a value is not finite, a
        value is ``<= 0`` with ``log_x`` (a log axis cannot show it), or no run has a finite
        loss (there is nothing to plot).
    """
    values = np.asarray(values, dtype=float)
    losses = np.asarray(final_losses, dtype=float)
    if values.ndim != 1 or losses.ndim != 2 or losses.shape[0] != values.shape[0]:
        raise ValueError(
            f"values must be (v,) and final_losses (v, seeds); got {values.shape} and {losses.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"values must be finite, got {values.tolist()}")
    if log_x and np.any(values <= 0):
        raise ValueError(
            f"values must be positive for a logarithmic x axis, got {values[values <= 0].tolist()} "
            f"among the {xlabel} values; pass log_x=False for a linear axis"
        )
    finite = np.isfinite(losses)
    if not finite.any():
        raise ValueError(
            f"no run has a finite final loss (all {losses.size} runs diverged or none were "
            "given): there is nothing to plot"
        )
    seeds = losses.shape[1]
    masked = np.where(finite, losses, np.nan)
    shown = finite.any(axis=1)
    fig = _figures.figure(6.5, 4.5, left=1.05)
    ax = fig.subplots()
    median = np.nanmedian(masked[shown], axis=1)
    ax.fill_between(
        values[shown],
        np.nanmin(masked[shown], axis=1),
        np.nanmax(masked[shown], axis=1),
        alpha=0.3,
        label=_band_label(finite[shown].sum(axis=1), seeds),
    )
    ax.plot(values[shown], median, marker="o", label="median")
    diverged = int((~finite).sum())
    if diverged:
        ax.plot([], [], " ", label=f"{diverged} runs diverged (left out)")
    if log_x:
        _figures.log_scale(ax, "x")
    if np.all(median > 0):
        _figures.log_scale(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("final training loss")
    ax.set_title(f"Final loss against {xlabel}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def _band_label(finite_counts: np.ndarray, seeds: int) -> str:
    """The legend label of ``plot_sweep``'s band, given each shown value's number of finite runs."""
    low, high = int(finite_counts.min()), int(finite_counts.max())
    if low == seeds:
        return f"min-max over {seeds} seeds"
    counts = str(low) if low == high else f"{low}-{high}"
    return f"min-max over the {counts} finite of {seeds} seeds"


def plot_layer_history(
    history: Mapping[str, Sequence[float]],
    prefix: str,
    path: PathLike,
    *,
    title: str,
    ylabel: str,
    log_y: bool = True,
) -> Path:
    """One curve per layer of a per-layer diagnostic over training.

    Args:
      history: a run's history with ``diagnostics_epoch`` and entries ``{prefix}_layer{l}``, as
        ``training.train(..., diagnostics_every=N)`` records them.
      prefix: which diagnostic, e.g. ``"grad_norm"`` or ``"act_std"``.
      path: where to write the PNG.
      title, ylabel: the figure's title and y label.
      log_y: a logarithmic y axis (where every value is positive).
    """
    keys = sorted(
        (k for k in history if k.startswith(f"{prefix}_layer")),
        key=lambda k: int(k.rsplit("layer", 1)[1]),
    )
    if not keys or "diagnostics_epoch" not in history:
        raise ValueError(f"history has no diagnostics named {prefix!r}_layer*")
    epochs = np.asarray(history["diagnostics_epoch"], dtype=float)
    fig = _figures.figure(7, 4.5, left=1.05)
    ax = fig.subplots()
    colors = colormaps["viridis"](np.linspace(0, 0.9, len(keys)))
    values = [np.asarray(history[k], dtype=float) for k in keys]
    for key, series, color in zip(keys, values, colors, strict=True):
        ax.plot(epochs, series, color=color, marker=".", label=f"layer {key.rsplit('layer', 1)[1]}")
    if log_y and all(np.all(v > 0) for v in values):
        _figures.log_scale(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", ncol=2 if len(keys) > 6 else 1)
    return save_figure(fig, path)
