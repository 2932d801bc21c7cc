r"""Regularization: the L2 penalty and dropout, each with its hand-written derivative.

L2 penalizes weight matrices only: biases shift a unit without making the function any less
smooth, so penalizing them only costs fit (the usual convention, as in ``optax.add_decayed_weights``
with a mask). Dropout draws its mask from an explicit ``jax.random`` key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnjax import _validation

__all__ = [
    "add_l2_penalty",
    "dropout_backward",
    "dropout_forward",
    "l2_regularization",
    "l2_regularization_gradient",
]


def l2_regularization(weights: Sequence[jax.Array], lambda_: float) -> jax.Array:
    r"""The L2 penalty :math:`L_{\text{reg}} = \frac{\lambda}{2}\sum_{l=1}^L \|w^{(l)}\|_2^2`.

    Args:
      weights: the weight matrices :math:`w^{(l)}` (any shapes), biases excluded.
      lambda_: the strength :math:`\lambda \ge 0`.

    Returns:
      A scalar; add it to the data loss.

    Raises:
      ValueError: if ``lambda_`` and the weights are concrete and the penalty overflows their
        dtype (it would be inf).
    """
    _validation.check_in_range("lambda_", lambda_, low=0.0)
    _validation.check_l2_finite("lambda_", lambda_, weights)
    # lambda_ in each weight's dtype: a float64 lambda_ never promotes float32 weights.
    return sum(0.5 * jnp.asarray(lambda_, w.dtype) * jnp.sum(w**2) for w in weights)


def l2_regularization_gradient(weights: Sequence[jax.Array], lambda_: float) -> list[jax.Array]:
    r"""Gradient of ``l2_regularization``: :math:`\partial L_{\text{reg}} / \partial w^{(l)} = \lambda w^{(l)}`.

    Returns one array per weight matrix, each of its shape. Raises ValueError as
    ``l2_regularization`` does for a penalty that overflows.
    """
    _validation.check_in_range("lambda_", lambda_, low=0.0)
    _validation.check_l2_finite("lambda_", lambda_, weights)
    return [jnp.asarray(lambda_, w.dtype) * w for w in weights]


def _is_weight_matrix(leaf: jax.Array) -> bool:
    return jnp.ndim(leaf) >= 2


def add_l2_penalty(
    l2: float, mask: Callable[[Any], Any] | None = None
) -> optax.GradientTransformation:
    r"""An optax transformation that adds the L2 gradient :math:`\lambda w` to the gradients.

    Put it first in a chain so the optimizer sees the regularized gradient, as if
    ``l2_regularization`` had been added to the loss::

        optax.chain(nnjax.add_l2_penalty(1e-4), nnjax.adam(1e-3))

    Args:
      l2: the strength :math:`\lambda \ge 0` (a float, or a traced scalar in a sweep).
      mask: a function from the parameters to a pytree of booleans, True where the penalty
        applies. By default every leaf with two or more dimensions (weight matrices) and no bias.

    ``update`` raises ValueError where ``l2`` and the parameters are concrete and
    :math:`\frac{\lambda}{2}\sum\|w\|^2` overflows their dtype.
    """
    _validation.check_real("l2", l2)
    _validation.check_in_range("l2", l2, low=0.0)

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "add_l2_penalty needs the parameters: call update(grads, state, params)"
            )
        selected = mask(params) if mask is not None else jax.tree.map(_is_weight_matrix, params)
        penalized = jax.tree.leaves(jax.tree.map(lambda w, on: w if on else None, params, selected))
        _validation.check_l2_finite("l2", l2, penalized)
        updates = jax.tree.map(
            lambda g, w, on: g + jnp.asarray(l2, g.dtype) * w if on else g,
            updates,
            params,
            selected,
        )
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


def dropout_forward(
    key: jax.Array, x: jax.Array, p_drop: float, *, inverted: bool = True
) -> tuple[jax.Array, jax.Array]:
    r"""Dropout: zero each unit of ``x`` with probability ``p_drop``.

    ``out = x * mask`` with ``mask = Bernoulli(1 - p_drop) / (1 - p_drop)``. The division (inverted
    dropout, the default) keeps the expected output equal to ``x``, so at evaluation time the
    network is used as it is, with no dropout and no scaling.

    ``inverted=False`` is the spec's form, ``mask = Bernoulli(1 - p_drop)`` with no division: the
    expected output is then ``(1 - p_drop) * x``, and at evaluation the activations (or the next
    layer's weights) must be multiplied by ``1 - p_drop`` to match what training saw.

    Args:
      key: a ``jax.random`` key for the mask.
      x: activations, any shape, e.g. ``(batch, units)``.
      p_drop: probability of dropping a unit, in ``[0, 1)``. The keep probability ``1 - p_drop``
        is formed before rounding to ``x``'s dtype: in Python's float64 for a float, in
        ``promote_types(x.dtype, float32)`` for a traced rate (a traced rate that was rounded to 1
        before it came here drops every unit: check it where it is cast).
      inverted: scale kept units by ``1 / (1 - p_drop)``.

    Returns:
      ``(out, cache)``: the output, shape of ``x``, and the (scaled) mask for ``dropout_backward``.
    """
    _validation.check_in_range("p_drop", p_drop, low=0.0, high=1.0)
    x = _validation.check_float_array("x", x)
    # 1 - p_drop before rounding to x's dtype (in bfloat16, 1 - bf16(0.999) would be 0): in
    # Python's float64 for a concrete rate, in promote_types(x.dtype, float32) for a traced one,
    # so float64 is exact either way.
    p = _validation.concrete_float(p_drop)
    if p is None:
        wide = jnp.float32 if jnp.finfo(x.dtype).bits < 32 else x.dtype
        keep = (1 - jnp.asarray(p_drop, wide)).astype(x.dtype)
    else:
        keep = jnp.asarray(1 - p, x.dtype)
    if p is not None and np.asarray(1 - p, x.dtype) == 0:
        raise ValueError(f"p_drop={p!r} leaves a keep probability that is 0 in {x.dtype}")
    # Bernoulli(keep) as jax.random.bernoulli draws it, with typed bounds so that no float64
    # constant enters a float32 program under x64.
    zero, one = jnp.zeros((), x.dtype), jnp.ones((), x.dtype)
    mask = (jax.random.uniform(key, x.shape, x.dtype, zero, one) < keep).astype(x.dtype)
    if inverted:
        mask = mask / keep
    return x * mask, mask


def dropout_backward(dout: jax.Array, cache: jax.Array) -> jax.Array:
    r"""Backward pass of dropout: :math:`\partial L/\partial x = \partial L/\partial out \cdot mask`.

    Args:
      dout: the gradient with respect to the dropout output, shape of ``x``.
      cache: the mask returned by ``dropout_forward``.
    """
    _validation.check_same_shape("dout", dout, "dropout mask", cache)
    return dout * cache
