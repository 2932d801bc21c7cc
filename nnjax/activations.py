r"""Activation functions and their hand-written derivatives.

Every function is elementwise on an array of any shape, except ``softmax``, which normalizes over
the last axis. Each derivative takes the pre-activation ``z`` (as the spec's
``activation_derivative(cache['z'])`` does) and returns :math:`f'(z)` with the shape of ``z``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from nnjax._validation import check_choice

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "ArrayFn",
    "get_activation",
    "identity",
    "identity_derivative",
    "relu",
    "relu_derivative",
    "sigmoid",
    "sigmoid_derivative",
    "softmax",
    "tanh",
    "tanh_derivative",
]

ArrayFn = Callable[[jax.Array], jax.Array]


def sigmoid(x: jax.Array) -> jax.Array:
    r"""Logistic sigmoid :math:`\sigma(x) = \frac{1}{1 + e^{-x}}`.

    Computed with ``jax.lax.logistic``, which never overflows: the spec's ``1 / (1 + exp(-x))``
    is finite in value, but its autodiff derivative is ``inf / inf = nan`` for ``x`` below about
    -89 in float32. This form is finite in value and gradient for any finite ``x``.
    """
    return jax.lax.logistic(x)


def sigmoid_derivative(x: jax.Array) -> jax.Array:
    r""":math:`\sigma'(x) = \sigma(x)(1 - \sigma(x))`, finite for any finite ``x``.

    Computed as :math:`\sigma(x)\,\sigma(-x)` (equal, since :math:`1 - \sigma(x) = \sigma(-x)`):
    ``1 - sigmoid(x)`` cancels for large ``x`` (17% off at ``x = 15`` in float32, and 0 from
    ``x = 17`` on), while ``sigmoid(-x)`` keeps full relative precision on both sides.
    """
    return sigmoid(x) * sigmoid(-x)


def relu(x: jax.Array) -> jax.Array:
    r""":math:`\text{ReLU}(x) = \max(0, x)`.

    Written as a ``where`` so that ``jax.grad`` gives 0 at ``x == 0``, the same as
    ``relu_derivative`` (``jax.grad`` of ``jnp.maximum(0, x)`` gives 0.5 there). NaN stays NaN,
    as with ``jnp.maximum``, so a broken network shows in its loss instead of being zeroed.
    """
    return jnp.where(x <= 0, jnp.zeros_like(x), x)


def relu_derivative(x: jax.Array) -> jax.Array:
    r""":math:`\text{ReLU}'(x) = 1` if :math:`x > 0`, else 0 (0 at the kink, as in the spec)."""
    return (x > 0).astype(x.dtype)


def tanh(x: jax.Array) -> jax.Array:
    r""":math:`\tanh(x) = \frac{e^x - e^{-x}}{e^x + e^{-x}}`."""
    return jnp.tanh(x)


def tanh_derivative(x: jax.Array) -> jax.Array:
    r""":math:`\tanh'(x) = 1 - \tanh^2(x)`.

    Computed as :math:`1 / \cosh^2(x)` (equal): ``1 - tanh(x)**2`` cancels to 0 from about
    ``|x| = 9`` in float32, where the derivative is still about 1e-7.
    """
    return jnp.square(1 / jnp.cosh(x))


def identity(x: jax.Array) -> jax.Array:
    r""":math:`f(x) = x`, the output activation of a regression network."""
    return x


def identity_derivative(x: jax.Array) -> jax.Array:
    r""":math:`f'(x) = 1`."""
    return jnp.ones_like(x)


def softmax(x: jax.Array) -> jax.Array:
    r""":math:`\text{softmax}(x)_k = \frac{e^{x_k}}{\sum_j e^{x_j}}` over the last axis.

    The maximum of each row is subtracted first (the value is unchanged), so no ``exp`` overflows.
    ``x`` has shape ``(..., classes)``; so does the result, whose rows sum to 1.
    """
    shifted = x - jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))
    e = jnp.exp(shifted)
    return e / jnp.sum(e, axis=-1, keepdims=True)


class Activation(NamedTuple):
    """An activation function together with its hand-written derivative."""

    fn: ArrayFn
    derivative: ArrayFn


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(sigmoid, sigmoid_derivative),
    "relu": Activation(relu, relu_derivative),
    "tanh": Activation(tanh, tanh_derivative),
    "identity": Activation(identity, identity_derivative),
}
"""Elementwise activations by name: the hidden activations a network may use."""


def get_activation(name: str) -> Activation:
    """Looks up an elementwise activation by name, with a clear error for an unknown one."""
    check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]
