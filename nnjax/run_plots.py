r"""The plots of a run folder, drawn by ``nnjax train`` and ``nnjax plot``.

Every run: the history (``plotting.plot_history``); a dense network (not ``--layers``): the
activation functions. A classifier: the confusion matrix of the test split and, for data of two
features, the decision boundary. A regression (``loss="mse"``): each test target predicted
against its true value (``plot_predicted_vs_true``), in the units of the data file. With
diagnostics: the per-layer gradient norms and activation spreads.

matplotlib is imported when a plot is drawn, not with this module.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from nnjax import _validation, metrics
from nnjax.model import Model

if TYPE_CHECKING:
    from nnjax.runs import Run

__all__ = ["plot_predicted_vs_true", "write_plots"]

_LAYER_PLOTS = (
    # history entry, file, title, y label
    ("grad_norm", "gradient_norms.png", "Gradient norm per layer", "||dL/dW|| (Frobenius)"),
    ("act_std", "activation_std.png", "Activation std per hidden layer", "std of a"),
)


def write_plots(
    run: Run, params: Any, history: dict[str, list[float]], folder: Path, state: Any = ()
) -> list[Path]:
    """Draws a run's history, activations and test predictions into ``folder``.

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

    paths = [plotting.plot_history(history, folder / "history.png")]
    if run.config["layers"] is None:
        paths.append(plotting.plot_activations(folder / "activations.png"))
    if run.target_scale is not None:
        paths.append(_plot_regression(run, params, state, folder / "predicted_vs_true.png"))
    else:
        paths.append(
            plotting.plot_confusion_matrix(
                np.asarray(run.data.y_test),
                np.asarray(run.class_predictions(params, run.data.x_test, state)),
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


@functools.partial(jax.jit, static_argnums=0)
def _outputs(model: Model, params: Any, state: Any, x: jax.Array) -> jax.Array:
    return model.forward(params, x, state=state)[0]


def _plot_regression(run: Run, params: Any, state: Any, path: Path) -> Path:
    """The test split's predictions against its targets, both in the data file's units."""
    mean, std = run.target_scale
    predicted = np.asarray(_outputs(run.model, params, state, run.data.x_test), np.float64)
    true = np.asarray(run.data.y_test, np.float64)
    return plot_predicted_vs_true(true * std + mean, predicted * std + mean, path)


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
    from matplotlib.figure import Figure  # deferred, as in write_plots

    from nnjax.plotting import save_figure

    y_true = np.asarray(y_true, np.float64)
    y_pred = np.asarray(y_pred, np.float64)
    _validation.check_same_shape("y_true", y_true, "y_pred", y_pred)
    _validation.check_nonempty("y_true", y_true)
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        _validation.check_all_finite(name, values)
    r2 = metrics.r_squared(float(np.mean((y_true - y_pred) ** 2)), y_true)
    low, high = min(y_true.min(), y_pred.min()), max(y_true.max(), y_pred.max())
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(y_true.ravel(), y_pred.ravel(), s=14, alpha=0.6, edgecolors="none")
    ax.plot([low, high], [low, high], "k--", linewidth=1, label="predicted = true")
    ax.set_title(f"Predicted vs true (R² {r2:.3f})")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.grid(True, alpha=0.4)
    ax.legend(loc="best")
    return save_figure(fig, path)
