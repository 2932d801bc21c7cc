r"""Layers: each one a forward pass that keeps its cache and a backward pass written by hand.

A layer is a frozen dataclass (hashable, compared by value: equal architectures share compiled
programs) holding its static options, with three pure methods:

- ``init(key, input_shape, dtype) -> (params, state, output_shape)``: ``input_shape`` and
  ``output_shape`` are the shapes of one example, without the batch axis;
- ``forward(params, state, x, *, key, train) -> (out, cache, state)``: ``x`` of shape
  ``(batch, *input_shape)``; ``state`` (batch normalization's running statistics) goes in and the
  new state comes out, never mutated; ``key`` is the ``jax.random`` key of a random layer
  (dropout) and ``train`` selects training behaviour;
- ``backward(params, dout, cache) -> (dx, dparams)``: given :math:`\partial L/\partial out`,
  returns :math:`\partial L/\partial x` and :math:`\partial L/\partial \theta` with exactly the
  structure of ``params``, computed by hand from ``jax.lax`` and ``jax.numpy`` primitives, never
  by differentiating ``forward``.

This is ``jax.example_libraries.stax``'s ``(init_fun, apply_fun)`` pair with an explicit backward
and explicit state. Layers without parameters or state have ``{}`` for them.

Layout, one convention everywhere: data is batch-first and features-last, ``(batch, features)``,
``(batch, width, channels)``, ``(batch, height, width, channels)``; a weight is ``W`` of shape
``(n_out, n_in)`` for a dense layer and ``(out_channels, in_channels, *window)`` for a
convolution. Every leaf named ``W`` is a weight the L2 penalty applies to; nothing else is.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from nnjax import _validation
from nnjax.activations import ACTIVATIONS
from nnjax.initializers import INITIALIZERS
from nnjax.regularization import dropout_backward, dropout_forward

Shape = tuple[int, ...]
Params = dict[str, Any]

__all__ = [
    "Activation",
    "Dense",
    "Dropout",
    "Flatten",
    "Layer",
    "Shape",
    "dense_backward",
    "dense_forward",
]


class Layer(Protocol):
    """What every layer provides: ``init``, ``forward`` and a hand-written ``backward``."""

    def init(
        self, key: jax.Array, input_shape: Shape, dtype: Any = jnp.float32
    ) -> tuple[Params, Params, Shape]:
        """``(params, state, output_shape)`` for inputs of one example's shape ``input_shape``."""
        ...

    def forward(
        self,
        params: Params,
        state: Params,
        x: jax.Array,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, Any, Params]:
        """``(out, cache, new_state)`` for a batch ``x`` of shape ``(batch, *input_shape)``."""
        ...

    def backward(self, params: Params, dout: jax.Array, cache: Any) -> tuple[jax.Array, Params]:
        """``(dx, dparams)`` from :math:`\\partial L/\\partial out` and the forward's cache."""
        ...


def dense_forward(params: Params, x: jax.Array) -> jax.Array:
    r""":math:`z = x W^T + b`: ``x`` ``(batch, n_in)``, ``W`` ``(n_out, n_in)``, ``b`` ``(n_out,)``."""
    return x @ params["W"].T + params["b"][None, :]


def dense_backward(params: Params, dz: jax.Array, x: jax.Array) -> tuple[jax.Array, Params]:
    r"""The dense layer's gradients from :math:`\delta = \partial L/\partial z` ``(batch, n_out)``.

    :math:`\partial L/\partial W = \delta^T x`, :math:`\partial L/\partial b = \sum_{batch}
    \delta` and :math:`\partial L/\partial x = \delta W`.

    Returns:
      ``(dx, {"W": dW, "b": db})``.
    """
    return dz @ params["W"], {"W": dz.T @ x, "b": jnp.sum(dz, axis=0)}


@dataclasses.dataclass(frozen=True)
class Dense:
    r"""A fully connected layer, :math:`z = x W^T + b`, on inputs ``(batch, n_in)``.

    Attributes:
      features: :math:`n_{out}`, the number of outputs.
      weight_init: the weight initializer, a name in ``initializers.INITIALIZERS``.
      bias_init: ``"zeros"`` or a constant for every bias (as ``network.init_network`` takes).
    """

    features: int
    weight_init: str = "he"
    bias_init: str | float = "zeros"

    def __post_init__(self) -> None:
        _validation.check_positive_int("features", self.features)
        _validation.check_choice("weight_init", self.weight_init, INITIALIZERS)

    def init(self, key, input_shape, dtype=jnp.float32):
        if len(input_shape) != 1:
            raise ValueError(
                f"Dense takes inputs of shape (n_in,), got {input_shape}: flatten first"
            )
        (n_in,) = input_shape
        W = INITIALIZERS[self.weight_init](key, n_in, self.features, dtype)
        b = _validation.check_bias_init(self.bias_init)(key, self.features, dtype)
        return {"W": W, "b": b}, {}, (self.features,)

    def forward(self, params, state, x, *, key=None, train=False):
        x = _validation.check_layer_input("Dense", x, 2, "(batch, n_in)")
        return dense_forward(params, x), x, state

    def backward(self, params, dout, cache):
        return dense_backward(params, dout, cache)


@dataclasses.dataclass(frozen=True)
class Activation:
    r"""An elementwise activation :math:`a = f(z)`; backward :math:`\partial L/\partial z =
    \partial L/\partial a \odot f'(z)`, with :math:`f'` from ``activations.ACTIVATIONS``.

    Attributes:
      name: a name in ``activations.ACTIVATIONS`` (``"relu"``, ``"sigmoid"``, ``"tanh"``, ...).
    """

    name: str

    def __post_init__(self) -> None:
        _validation.check_choice("activation", self.name, ACTIVATIONS)

    def init(self, key, input_shape, dtype=jnp.float32):
        return {}, {}, tuple(input_shape)

    def forward(self, params, state, x, *, key=None, train=False):
        return ACTIVATIONS[self.name].fn(x), x, state

    def backward(self, params, dout, cache):
        return dout * ACTIVATIONS[self.name].derivative(cache), {}


@dataclasses.dataclass(frozen=True)
class Flatten:
    """Reshapes ``(batch, *shape)`` to ``(batch, prod(shape))``; backward reshapes back."""

    def init(self, key, input_shape, dtype=jnp.float32):
        return {}, {}, (math.prod(input_shape),)

    def forward(self, params, state, x, *, key=None, train=False):
        return x.reshape(x.shape[0], -1), x.shape, state

    def backward(self, params, dout, cache):
        return dout.reshape(cache), {}


@dataclasses.dataclass(frozen=True)
class Dropout:
    r"""Inverted dropout in training: :math:`out = x \odot m`, :math:`m = \mathrm{Bernoulli}(1-p)/(1-p)`.

    At evaluation (``train=False``) it is the identity. Backward: :math:`\partial L/\partial x =
    \partial L/\partial out \odot m` (``regularization.dropout_forward``/``dropout_backward``;
    the spec's dropout does not rescale, see there).

    Attributes:
      rate: :math:`p`, the probability of dropping each unit, in ``[0, 1)``.
    """

    rate: float

    def __post_init__(self) -> None:
        _validation.check_in_range("rate", self.rate, low=0.0, high=1.0)

    def init(self, key, input_shape, dtype=jnp.float32):
        return {}, {}, tuple(input_shape)

    def forward(self, params, state, x, *, key=None, train=False):
        if not train or self.rate == 0.0:
            return x, None, state
        if key is None:
            raise ValueError("Dropout in training needs a PRNG key: pass key=...")
        out, mask = dropout_forward(key, x, self.rate)
        return out, mask, state

    def backward(self, params, dout, cache):
        return (dout if cache is None else dropout_backward(dout, cache)), {}
