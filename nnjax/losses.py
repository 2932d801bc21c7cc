r"""Loss functions and their hand-written derivatives.

Every loss takes the target first, as the spec does (``loss(y_true, y_pred)``), returns a scalar
mean over the batch, and has a ``*_derivative`` with the same arguments that returns
:math:`\partial L / \partial \hat{y}` (or :math:`\partial L / \partial z` for the losses on logits)
with the shape of the prediction.

Shapes must match exactly; nnjax never broadcasts a target against a prediction. Note that the
argument order is the spec's, the reverse of optax's ``loss(predictions, targets)``.

Empty arrays (a mean over nothing would be NaN) and complex targets raise an error, as do concrete
targets outside a loss's domain (BCE's [0, 1], negative one-hot entries) and concrete targets
that a cast to the prediction's dtype would overflow.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nnjax import _validation
from nnjax.activations import sigmoid, softmax

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_derivative",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_derivative",
    "mse_derivative",
    "mse_loss",
    "softmax_cross_entropy",
    "softmax_cross_entropy_derivative",
]


def _cast_targets(name: str, y_true: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """``y_true`` in the prediction's dtype, refusing concrete values the cast would make inf."""
    if y_true.dtype != dtype:
        _validation.check_fits_dtype(name, y_true, dtype)
    return y_true.astype(dtype)


def _check_pair(
    y_true: jax.Array, y_pred: jax.Array, pred_name: str = "y_pred", probabilities: bool = False
) -> tuple[jax.Array, jax.Array]:
    """Checks a target and a prediction; ``probabilities``: concrete targets must be in [0, 1]."""
    y_true = jnp.asarray(y_true)
    _validation.check_real_targets("y_true", y_true)
    y_pred = _validation.check_float_array(pred_name, y_pred)
    _validation.check_same_shape("y_true", y_true, pred_name, y_pred)
    _validation.check_nonempty(pred_name, y_pred)
    if probabilities:
        _validation.check_target_range("y_true", y_true, 0.0, 1.0)
    return _cast_targets("y_true", y_true, y_pred.dtype), y_pred


def mse_loss(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    r"""Mean squared error :math:`L = \frac{1}{n}\sum_{i=1}^n (y_i - \hat{y}_i)^2`.

    Args:
      y_true: targets, any shape, e.g. ``(batch, outputs)``.
      y_pred: predictions, the same shape.

    Returns:
      The mean over all ``n = y_pred.size`` elements (``optax.squared_error(...).mean()``).
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    return jnp.mean((y_true - y_pred) ** 2)


def mse_derivative(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    r"""Derivative of ``mse_loss``, shape of ``y_pred``.

    :math:`\frac{\partial L}{\partial \hat{y}_i} = -\frac{2}{n}(y_i - \hat{y}_i)`.

    ``n`` is the number of elements averaged by ``mse_loss``. The spec divides by
    ``len(y_true)``, the batch size, which is the derivative of the mean only for one output per
    sample; with ``(batch, k)`` outputs it is ``k`` times too large.
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    return -2 * (y_true - y_pred) / y_pred.size


def _bce_epsilon(dtype: jnp.dtype, epsilon: float | None) -> float:
    if epsilon is None:
        info = jnp.finfo(dtype)
        # 1 - epsilon must stay below 1: the spec's 1e-15 only does in float64.
        return {64: 1e-15, 32: 1e-7}.get(info.bits, float(info.eps))
    _validation.check_real("epsilon", epsilon)
    _validation.check_in_range("epsilon", epsilon, low=0.0, high=0.5, low_inclusive=False)
    _validation.check_normal_in("epsilon", epsilon, dtype)
    eps = _validation.concrete_float(epsilon)
    if eps is not None and float(np.asarray(1 - eps, dtype)) == 1:
        raise ValueError(
            f"epsilon={eps!r} is below {jnp.dtype(dtype)}'s resolution at 1 "
            f"({float(jnp.finfo(dtype).epsneg):g}): 1 - epsilon rounds to 1, and a prediction of "
            "1 would give log(0)"
        )
    return epsilon


def binary_cross_entropy(
    y_true: jax.Array, y_pred: jax.Array, epsilon: float | None = None
) -> jax.Array:
    r"""Binary cross-entropy on probabilities, clipped as in the spec.

    :math:`L = -\frac{1}{n}\sum_{i=1}^n [y_i\log(\hat{y}_i) + (1-y_i)\log(1-\hat{y}_i)]`
    with :math:`\hat{y}` clipped to :math:`[\epsilon, 1-\epsilon]` to prevent :math:`\log(0)`.

    Args:
      y_true: targets in [0, 1], any shape.
      y_pred: predicted probabilities, the same shape.
      epsilon: the clip. The spec's 1e-15 is the default in float64; in float32
        ``1 - 1e-15 == 1`` and ``log(0)`` would return, so the default is 1e-7 in float32 and
        the machine epsilon in float16 and bfloat16. An explicit one must be at least the
        dtype's resolution at 1, so that ``1 - epsilon < 1`` (ValueError otherwise).

    The clip has a flat gradient: a confident wrong prediction outside the clip gets no gradient
    at all. Train on logits with ``binary_cross_entropy_with_logits`` instead.
    """
    y_true, y_pred = _check_pair(y_true, y_pred, probabilities=True)
    eps = _bce_epsilon(y_pred.dtype, epsilon)
    p = jnp.clip(y_pred, eps, 1 - eps)
    return -jnp.mean(y_true * jnp.log(p) + (1 - y_true) * jnp.log(1 - p))


def binary_cross_entropy_derivative(
    y_true: jax.Array, y_pred: jax.Array, epsilon: float | None = None
) -> jax.Array:
    r"""Derivative of ``binary_cross_entropy`` with respect to the probabilities.

    :math:`\frac{\partial L}{\partial \hat{y}_i}
    = \frac{1}{n}\left(-\frac{y_i}{\hat{y}_i} + \frac{1-y_i}{1-\hat{y}_i}\right)`,
    shape of ``y_pred``.

    The spec's formula, divided by ``n = y_pred.size`` because the loss is a mean, and 0 where
    the clip is active (the derivative of the clipped loss). At exactly ``epsilon`` or
    ``1 - epsilon`` the loss has a kink and no derivative.
    """
    y_true, y_pred = _check_pair(y_true, y_pred, probabilities=True)
    eps = _bce_epsilon(y_pred.dtype, epsilon)
    clipped = (y_pred <= eps) | (y_pred >= 1 - eps)  # False for NaN, which stays NaN
    p = jnp.clip(y_pred, eps, 1 - eps)
    grad = (-y_true / p + (1 - y_true) / (1 - p)) / y_pred.size
    return jnp.where(clipped, jnp.zeros_like(grad), grad)


def binary_cross_entropy_with_logits(y_true: jax.Array, logits: jax.Array) -> jax.Array:
    r"""Binary cross-entropy of :math:`\hat{y} = \sigma(z)`, computed from the logits :math:`z`.

    :math:`L = \frac{1}{n}\sum_i [\log(1 + e^{z_i}) - y_i z_i]`, the log-sigmoid form of
    :math:`-[y\log\sigma(z) + (1-y)\log(1-\sigma(z))]`, with :math:`\log(1 + e^z)` computed as
    ``jax.nn.softplus`` (no overflow; its autodiff derivative is exactly :math:`\sigma(z)`, also at
    :math:`z = 0`, where the ``max(z, 0) + log1p(exp(-|z|))`` form's is not). Exact for any finite
    logit, with no clip and so no dead gradient: at logit 40, label 0, each element's gradient is
    1 (before the mean's 1/n), where the clipped loss on probabilities gives 0.
    Equals ``optax.sigmoid_binary_cross_entropy(z, y).mean()``.

    Args:
      y_true: targets in [0, 1], any shape, e.g. ``(batch, 1)``.
      logits: pre-sigmoid outputs, the same shape.
    """
    y_true, logits = _check_pair(y_true, logits, "logits", probabilities=True)
    return jnp.mean(jax.nn.softplus(logits) - y_true * logits)


def binary_cross_entropy_with_logits_derivative(y_true: jax.Array, logits: jax.Array) -> jax.Array:
    r"""Derivative of ``binary_cross_entropy_with_logits`` with respect to the logits.

    :math:`\frac{\partial L}{\partial z_i} = \frac{1}{n}(\sigma(z_i) - y_i)`, shape of ``logits``.
    """
    y_true, logits = _check_pair(y_true, logits, "logits", probabilities=True)
    return (sigmoid(logits) - y_true) / logits.size


def _one_hot_targets(y_true: jax.Array, logits: jax.Array) -> jax.Array:
    """Integer labels ``(batch,)`` become one-hot ``(batch, classes)``; one-hot passes through."""
    logits = _validation.check_float_array("logits", logits)
    if logits.ndim < 1 or logits.shape[-1] == 0:
        raise ValueError(
            f"logits must have shape (batch, classes) with at least one class, got shape "
            f"{logits.shape}"
        )
    _validation.check_nonempty("logits", logits)
    y_true = jnp.asarray(y_true)
    _validation.check_real_targets("y_true", y_true)
    num_classes = logits.shape[-1]
    if jnp.issubdtype(y_true.dtype, jnp.integer):
        if y_true.shape != logits.shape[:-1]:
            raise ValueError(
                f"integer labels must have shape {logits.shape[:-1]} for logits of shape "
                f"{logits.shape}, got shape {y_true.shape} ({_validation.ARGUMENT_ORDER})"
            )
        _validation.check_label_range("integer labels", y_true, num_classes)
        return jax.nn.one_hot(y_true, num_classes, dtype=logits.dtype)
    _validation.check_same_shape("one-hot y_true", y_true, "logits", logits)
    _validation.check_target_range("one-hot y_true", y_true, 0.0)
    return _cast_targets("one-hot y_true", y_true, logits.dtype)


def softmax_cross_entropy(y_true: jax.Array, logits: jax.Array) -> jax.Array:
    r"""Cross-entropy of :math:`\hat{y} = \text{softmax}(z)`, computed from the logits :math:`z`.

    :math:`L = -\frac{1}{B}\sum_{b=1}^B \sum_k y_{bk} \log \text{softmax}(z_b)_k`, with the
    log-sum-exp taken stably. Equals optax's ``softmax_cross_entropy(z, y).mean()`` (one-hot) and
    ``softmax_cross_entropy_with_integer_labels(z, y).mean()`` (integer labels).

    Args:
      y_true: integer class labels of shape ``(batch,)``, or one-hot (or any probability)
        targets of shape ``(batch, classes)``. Concrete labels outside ``[0, classes)`` raise
        ValueError; traced ones (under ``jit``) cannot be checked, and one out of range becomes
        an all-zero row, as in optax (``training.train`` checks its labels before compiling).
      logits: pre-softmax outputs of shape ``(batch, classes)``.
    """
    targets = _one_hot_targets(y_true, logits)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(targets * log_probs) / (targets.size // targets.shape[-1])


def softmax_cross_entropy_derivative(y_true: jax.Array, logits: jax.Array) -> jax.Array:
    r""":math:`\frac{\partial L}{\partial z_{bk}} = \frac{1}{B}(\text{softmax}(z_b)_k - y_{bk})`.

    The spec's form holds for targets whose rows sum to 1 (integer labels, one-hot or
    probability rows). For any other targets (multi-label rows, label smoothing that does not
    sum to 1) the exact derivative is :math:`\frac{1}{B}(\text{softmax}(z_b)_k \sum_j y_{bj} -
    y_{bk})`, which is what this computes; it equals the spec's when the rows sum to 1. Shape of
    ``logits``.
    """
    targets = _one_hot_targets(y_true, logits)
    row_sums = jnp.sum(targets, axis=-1, keepdims=True)
    return (softmax(logits) * row_sums - targets) / (targets.size // targets.shape[-1])
