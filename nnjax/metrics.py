"""What training measures: targets, accuracy, ``evaluate`` and the history series' names.

The targets are in the format a loss needs; the history series are per-epoch.

``HISTORY_KEYS`` is the one list of history names: ``train`` records them, ``plot_history`` draws
them, run folders store them. ``DERIVED_KEYS`` are computed from them after training (R² from the
validation MSE), drawn and stored as well.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnjax import _validation
from nnjax.model import Model
from nnjax.network import DenseNetwork

__all__ = [
    "DEFAULT_MODEL",
    "DERIVED_KEYS",
    "HISTORY_KEYS",
    "accuracy",
    "evaluate",
    "has_accuracy",
    "history_keys",
    "prepare_targets",
    "r_squared",
    "test_metrics",
    "with_r_squared",
]

DEFAULT_MODEL = DenseNetwork()
"""The architecture ``evaluate``, ``train`` and ``sweep`` assume when given none."""

HISTORY_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
"""The per-epoch series of a training history: loss and accuracy on the training set, then on
the validation set."""


DERIVED_KEYS = ("val_r2",)
"""The per-epoch series computed from ``HISTORY_KEYS`` after training: ``val_r2``, the validation
R² of a regression (``with_r_squared``)."""


def history_keys(loss: str, with_validation: bool) -> tuple[str, ...]:
    """The entries of ``HISTORY_KEYS`` a run records.

    No accuracy for ``loss="mse"``, no ``val_*`` without validation data.
    """
    return tuple(
        key
        for key in HISTORY_KEYS
        if (has_accuracy(loss) or not key.endswith("accuracy"))
        and (with_validation or not key.startswith("val"))
    )


def prepare_targets(y: jax.Array, loss: str) -> jax.Array:
    """Converts class labels to the target format ``loss`` needs.

    Integer labels ``(n,)`` stay as they are for ``"softmax_cross_entropy"`` and become float
    ``(n, 1)`` columns for ``"binary_cross_entropy"``; anything else passes through unchanged.
    """
    y = jnp.asarray(y)
    if loss == "binary_cross_entropy" and y.ndim == 1:
        concrete_labels = jnp.issubdtype(y.dtype, jnp.integer) and not isinstance(
            y, jax.core.Tracer
        )
        if concrete_labels and not np.isin(np.asarray(y), (0, 1)).all():
            raise ValueError(
                f"binary_cross_entropy needs labels 0 and 1, got {np.unique(np.asarray(y))}"
            )
        return y.astype(jnp.float32)[:, None]
    return y


def has_accuracy(loss: str) -> bool:
    """Whether classification accuracy is defined for networks trained with ``loss``."""
    return loss != "mse"


def accuracy(output: jax.Array, y: jax.Array, loss: str) -> jax.Array:
    """Fraction of correct predictions.

    Softmax outputs ``(batch, classes)``: the argmax against integer (or one-hot) labels. Sigmoid
    outputs ``(batch, k)``: each output thresholded at 0.5 against its 0/1 target.
    """
    if loss == "softmax_cross_entropy":
        labels = y if y.ndim == 1 else jnp.argmax(y, axis=-1)
        return jnp.mean(jnp.argmax(output, axis=-1) == labels)
    if loss == "binary_cross_entropy":
        _validation.check_same_shape("sigmoid outputs", output, "targets", y)
        return jnp.mean((output > 0.5) == (y > 0.5))
    raise ValueError(f"accuracy is not defined for loss {loss!r}")


def evaluate(
    params: Any, x: jax.Array, y: jax.Array, model: Model = DEFAULT_MODEL, *, state: Any = ()
) -> tuple[jax.Array, jax.Array]:
    """Loss and accuracy of ``model`` on ``(x, y)`` in evaluation mode (no dropout, no L2).

    Args:
      params: the model's parameters.
      x: inputs ``(n, n_in)``.
      y: targets in the format ``model.loss`` needs (see ``prepare_targets``).
      model: the architecture (``nnjax.model.Model``); default a ReLU ``DenseNetwork`` ending in
        softmax cross-entropy.
      state: the model's state (batch normalization's running statistics), ``()`` if none.

    Returns:
      ``(loss, accuracy)`` as scalars; the accuracy is NaN for ``loss="mse"``.

    Raises:
      ValueError: if ``x`` or ``y`` is empty (the means would be NaN).
    """
    _validation.check_nonempty("x", x)
    _validation.check_nonempty("y", y)
    output, cache = model.forward(params, x, state=state)
    value = model.data_loss(params, y, cache)
    acc = accuracy(output, y, model.loss) if has_accuracy(model.loss) else jnp.full((), jnp.nan)
    return value, acc.astype(value.dtype)


def r_squared(mse: Any, targets: Any) -> Any:
    r"""The coefficient of determination of predictions whose mean squared error is ``mse``.

    :math:`R^2 = 1 - \frac{\sum_i (y_i - \hat{y}_i)^2}{\sum_i (y_i - \bar{y})^2}
    = 1 - \mathrm{MSE} / \mathrm{Var}(y)`, the variance over the samples (per output column,
    then averaged). 1 is exact, 0 no better than predicting the mean.

    Args:
      mse: the mean squared error of the predictions of ``targets``; or a list of them.
      targets: the true targets ``y``, ``(n,)`` or ``(n, outputs)``.

    Returns:
      :math:`R^2` as a float (a list of floats for a list); NaN when the targets do not vary.
    """
    variance = float(np.mean(np.var(np.asarray(targets, np.float64), axis=0)))
    mse = np.asarray(mse, np.float64)
    r2 = 1.0 - mse / variance if variance > 0 else np.full_like(mse, math.nan)
    return r2.tolist()


def with_r_squared(
    history: dict[str, list[float]], loss: str, targets: Any
) -> dict[str, list[float]]:
    """``history`` with ``val_r2``, the R² of each ``val_loss``, for ``loss="mse"``.

    Args:
      history: a training history (``HISTORY_KEYS``).
      loss: the loss it was trained with; other than ``"mse"`` (or without ``val_loss``),
        ``history`` is returned as it is.
      targets: the validation targets the ``val_loss`` was measured on.

    Returns:
      The history, ``val_r2`` (re)computed for a regression.
    """
    if loss != "mse" or "val_loss" not in history:
        return history
    return {**history, "val_r2": r_squared(history["val_loss"], targets)}


def test_metrics(loss_value: float, accuracy_value: float, loss: str, targets: Any) -> dict:
    """A run's test metrics from ``evaluate``'s loss and accuracy on the test targets.

    Args:
      loss_value: the test loss (``evaluate``).
      accuracy_value: the test accuracy (``evaluate``; NaN for ``"mse"``).
      loss: the loss the run trains with.
      targets: the test targets.

    Returns:
      ``{"loss", "accuracy"}`` for a classifier, ``{"loss", "r2"}`` (``r_squared``) for ``"mse"``.
    """
    if has_accuracy(loss):
        return {"loss": loss_value, "accuracy": accuracy_value}
    return {"loss": loss_value, "r2": r_squared(loss_value, targets)}
