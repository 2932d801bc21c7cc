r"""The plots of a run folder, drawn by ``nnjax train`` and ``nnjax plot``.

Every run: the history (``plotting.plot_history``); a dense network (not ``--layers``): the
activation functions. A classifier: the confusion matrix of the test split and, for data of two
features, the decision boundary. A regression (``loss="mse"``): each test target predicted
against its true value (``plot_predicted_vs_true``), in the units of the data file. With
diagnostics: the per-layer gradient norms and activation spreads.

matplotlib is imported when a plot is drawn, not with this module; ``prepare`` imports it, draws
the activation functions and compiles the test predictions in a background thread while the run
trains.
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nnjax import _validation, metrics, run_model

if TYPE_CHECKING:
    from nnjax.runs import Run

__all__ = ["import_matplotlib", "plot_predicted_vs_true", "prepare", "wait", "write_plots"]

_BACKGROUND = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="nnjax-prepare")

_LAYER_PLOTS = (
    # history entry, file, title, y label
    ("grad_norm", "gradient_norms.png", "Gradient norm per layer", "||dL/dW|| (Frobenius)"),
    ("act_std", "activation_std.png", "Activation std per hidden layer", "std of a"),
)


def write_plots(
    run: Run, params: Any, history: dict[str, list[float]], folder: Path, state: Any = ()
) -> list[Path]:
    """Draws a run's history (if it evaluated), activations and test predictions into ``folder``.

    Also the diagnostics' per-layer series if recorded, and the decision boundary of a classifier
    of data of two features. The activation functions are drawn for a dense network only.

    Args:
      run: the run (``runs.Run``).
      params: its parameters.
      history: its whole history.
      folder: the run folder.
      state: the model's state (BatchNorm's running statistics); ``()`` for a model without.

    Returns:
      The paths of the PNG files written.
    """
    from nnjax import plotting  # deferred: matplotlib takes a while to import

    paths = []
    if history.get("train_loss"):  # none without evaluations (eval_every 0)
        paths.append(plotting.plot_history(history, folder / "history.png"))
    if run.config["layers"] is None:
        paths.append(_write_activations(folder / "activations.png"))
    predicted = run_model.test_predictions(run.model, run.data, params, state)
    if run.target_scale is not None:
        paths.append(_plot_regression(run, predicted, folder / "predicted_vs_true.png"))
    else:
        paths.append(
            plotting.plot_confusion_matrix(
                np.asarray(run.data.y_test),
                predicted,
                run.data.num_classes,
                folder / "confusion_matrix.png",
            )
        )
    for entry, name, title, ylabel in _LAYER_PLOTS:
        # Activations are recorded per hidden layer: none without hidden layers.
        if history.get("diagnostics_epoch") and (entry != "act_std" or run.config["hidden"]):
            paths.append(
                plotting.plot_layer_history(
                    history, entry, folder / name, title=title, ylabel=ylabel
                )
            )
    x, shape = run.data.x_train, run.data.x_train.shape[1:]
    if run.target_scale is None and math.prod(shape) == 2:
        paths.append(
            plotting.plot_decision_boundary(
                lambda grid: run.class_predictions(params, grid.reshape(-1, *shape), state),
                x.reshape(len(x), 2),
                run.data.y_train,
                folder / "decision_boundary.png",
            )
        )
    return paths


def prepare(run: Run) -> None:
    """Starts what ``write_plots`` and the test metrics of ``run`` need, in a background thread.

    The compiled program of ``run_model.test_metrics`` and ``test_predictions``, matplotlib, and
    for a dense network the activation functions' figure (the same for every run: drawn once).
    Training compiles on one core meanwhile; without this, all of it would follow training.
    Nothing is written: a killed run's folder is as it would be without it.

    Args:
      run: the run (``runs.Run``), not yet trained.
    """
    state = run.initial_model_state
    _BACKGROUND.submit(run_model.test_metrics, run.model, run.data, run.initial_params, state)
    if run.config["layers"] is None:
        _activations_png()
    else:
        _BACKGROUND.submit(importlib.import_module, "nnjax.plotting")


def import_matplotlib() -> None:
    """Starts importing matplotlib (``nnjax.plotting``) in the background thread of ``prepare``,
    for a command that will draw plots before it has a run to prepare: it takes about 0.4 s,
    mostly while the main thread waits for XLA."""
    _BACKGROUND.submit(importlib.import_module, "nnjax.plotting")


def wait() -> None:
    """Waits for the background work under way to finish; what has not started never will."""
    _BACKGROUND.shutdown(wait=True, cancel_futures=True)


def _draw_activations() -> bytes:
    """The activation functions' figure (``plotting.activations_figure``) as a PNG."""
    from nnjax import plotting

    return plotting.png_bytes(plotting.activations_figure())


@functools.cache
def _activations_png() -> concurrent.futures.Future[bytes]:
    """The activation functions' figure as a PNG, drawn once, in the background."""
    return _BACKGROUND.submit(_draw_activations)


def _write_activations(path: Path) -> Path:
    """The activation functions' figure at ``path``: drawn by ``prepare``, else drawn now."""
    from nnjax import plotting

    drawn = _activations_png()
    if drawn.exception() is not None:
        return plotting.plot_activations(path)
    return plotting.write_png(drawn.result(), path)


def _plot_regression(run: Run, predicted: np.ndarray, path: Path) -> Path:
    """The test split's predictions against its targets, both in the data file's units."""
    mean, std = run.target_scale
    true = np.asarray(run.data.y_test, np.float64)
    return plot_predicted_vs_true(
        true * std + mean, np.asarray(predicted, np.float64) * std + mean, path
    )


def plot_predicted_vs_true(y_true: Any, y_pred: Any, path: str | Path) -> Path:
    r"""Plots each prediction against its true target, over the line of exact predictions.

    A point on the diagonal :math:`\hat{y} = y` is predicted exactly. The title gives
    :math:`R^2 = 1 - \sum_i (y_i - \hat{y}_i)^2 / \sum_i (y_i - \bar{y})^2`
    (``metrics.r_squared``).

    Args:
      y_true: the true targets, ``(n,)`` or ``(n, 1)``, finite, at least one.
      y_pred: the predictions, the same shape, finite.
      path: where to write the PNG; parent directories are created.

    Returns:
      ``path`` as a ``pathlib.Path``.
    """
    from nnjax import _figures  # deferred, as in write_plots

    y_true = np.asarray(y_true, np.float64)
    y_pred = np.asarray(y_pred, np.float64)
    _validation.check_same_shape("y_true", y_true, "y_pred", y_pred)
    _validation.check_nonempty("y_true", y_true)
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        _validation.check_all_finite(name, values)
    r2 = metrics.r_squared(float(np.mean((y_true - y_pred) ** 2)), y_true)
    low, high = min(y_true.min(), y_pred.min()), max(y_true.max(), y_pred.max())
    fig = _figures.figure(5.5, 5)
    ax = fig.subplots()
    ax.scatter(y_true.ravel(), y_pred.ravel(), s=14, alpha=0.6, edgecolors="none")
    ax.plot([low, high], [low, high], "k--", linewidth=1, label="predicted = true")
    ax.set_title(f"Predicted vs true (R² {r2:.3f})")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.grid(True, alpha=0.4)
    ax.legend(loc="best")
    return _figures.save_figure(fig, path)
