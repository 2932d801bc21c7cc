r"""Models composed of layers: a chain of ``nnjax.layers``, residual blocks, and ``Sequential``.

A chain of layers :math:`f_k \circ \dots \circ f_1` runs forward keeping every layer's cache, and
backward by the chain rule, each layer's hand-written ``backward`` turning
:math:`\partial L/\partial a^{(k)}` into :math:`\partial L/\partial a^{(k-1)}` and its parameters'
gradient. Parameters, state and caches are tuples with one entry per layer, so gradients have
exactly the parameters' tree structure.

A residual block :math:`y = x + F(x)` adds its input to its body's output; its backward adds the
gradient of the skip path, :math:`\partial L/\partial x = \partial L/\partial y +
J_F^\top\,\partial L/\partial y`.

``Sequential`` ends a chain in one of ``network.OUTPUT_LOSSES``'s output/loss pairs: the last
layer's output is the logits :math:`z^{(L)}`, and the fused output error
:math:`\partial L/\partial z^{(L)}` starts the backward pass, as in ``network.backward_pass``.
It is a ``nnjax.model.Model``, so ``train``, ``sweep`` and the compiled loop train it with its
hand-written backward or with ``jax.grad``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from nnjax import _validation
from nnjax.layers import Layer, Shape
from nnjax.network import OUTPUT_LOSSES
from nnjax.regularization import l2_regularization, l2_regularization_gradient

__all__ = [
    "Residual",
    "Sequential",
    "chain_backward",
    "chain_forward",
    "chain_init",
    "is_weight",
]


def _layer_key(key: jax.Array | None, index: int) -> jax.Array | None:
    return None if key is None else jax.random.fold_in(key, index)


def chain_init(
    layers: tuple[Layer, ...], key: jax.Array, input_shape: Shape, dtype: Any = jnp.float32
) -> tuple[tuple, tuple, Shape]:
    """``(params, state, output_shape)`` of a chain: one entry per layer, keys folded by index."""
    params, state, shape = [], [], tuple(input_shape)
    for i, layer in enumerate(layers):
        p, s, shape = layer.init(jax.random.fold_in(key, i), shape, dtype)
        params.append(p)
        state.append(s)
    return tuple(params), tuple(state), shape


def chain_forward(
    layers: tuple[Layer, ...],
    params: tuple,
    state: tuple,
    x: jax.Array,
    *,
    key: jax.Array | None = None,
    train: bool = False,
) -> tuple[jax.Array, tuple, tuple]:
    r""":math:`a^{(k)} = f_k(a^{(k-1)})`, :math:`a^{(0)} = x`: ``(a^{(K)}, caches, new_state)``.

    Layer ``k`` (from 0) draws its randomness from ``fold_in(key, k)``.
    """
    _check_entries("params", params, layers)
    _check_entries("state", state, layers)
    caches, new_state = [], []
    for i, layer in enumerate(layers):
        x, cache, s = layer.forward(params[i], state[i], x, key=_layer_key(key, i), train=train)
        caches.append(cache)
        new_state.append(s)
    return x, tuple(caches), tuple(new_state)


def chain_backward(
    layers: tuple[Layer, ...], params: tuple, dout: jax.Array, caches: tuple
) -> tuple[jax.Array, tuple]:
    r"""The chain rule through the layers in reverse: ``(dx, dparams)`` from
    :math:`\partial L/\partial a^{(K)}`, ``dparams`` shaped like ``params``."""
    grads = [None] * len(layers)
    for i in reversed(range(len(layers))):
        dout, grads[i] = layers[i].backward(params[i], dout, caches[i])
    return dout, tuple(grads)


def _check_entries(name: str, entries: Any, layers: tuple) -> None:
    if not isinstance(entries, tuple | list) or len(entries) != len(layers):
        raise ValueError(
            f"{name} must hold one entry per layer ({len(layers)}), got {type(entries).__name__} "
            f"of length {len(entries) if isinstance(entries, tuple | list) else 'none'}"
        )


def _as_layers(layers: Any) -> tuple:
    layers = tuple(layers)
    for layer in layers:
        if not all(callable(getattr(layer, m, None)) for m in ("init", "forward", "backward")):
            raise TypeError(f"{layer!r:.60} is not a layer (init, forward and backward)")
    return layers


@dataclasses.dataclass(frozen=True)
class Residual:
    r"""A residual block :math:`y = x + F(x)`, :math:`F` a chain of layers keeping ``x``'s shape.

    Backward: :math:`\partial L/\partial x = \delta + J_F^\top \delta` with
    :math:`\delta = \partial L/\partial y`: the skip path's gradient adds to the body's.

    Attributes:
      layers: the body :math:`F`, a tuple of layers whose output shape equals their input shape.
    """

    layers: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", _as_layers(self.layers))

    def init(self, key, input_shape, dtype=jnp.float32):
        params, state, shape = chain_init(self.layers, key, input_shape, dtype)
        if shape != tuple(input_shape):
            raise ValueError(
                f"a residual block's body must keep its input's shape {tuple(input_shape)}, "
                f"but it outputs {shape}"
            )
        return params, state, shape

    def forward(self, params, state, x, *, key=None, train=False):
        out, caches, state = chain_forward(self.layers, params, state, x, key=key, train=train)
        return x + out, caches, state

    def backward(self, params, dout, cache):
        dx, grads = chain_backward(self.layers, params, dout, cache)
        return dout + dx, grads


@functools.lru_cache(maxsize=64)
def _empty_state(model: Sequential) -> tuple:
    """The state of a model none of whose layers keeps any; ValueError for one that does."""
    state = jax.eval_shape(lambda: model.init(jax.random.key(0))[1])
    if jax.tree.leaves(state):
        raise ValueError(
            "this model has layers with state (BatchNorm's running statistics): pass the state "
            "model.init returned (train's model_state=..., or state=...)"
        )
    return state


def is_weight(path: tuple) -> bool:
    """Whether a leaf's key path ends in ``"W"``: the weights the L2 penalty applies to."""
    return bool(path) and getattr(path[-1], "key", None) == "W"


@dataclasses.dataclass(frozen=True)
class Sequential:
    r"""A chain of layers ending in an output/loss pair: a ``nnjax.model.Model``.

    The last layer outputs the logits :math:`z^{(L)}`; the output is
    :math:`f^{(L)}(z^{(L)})` (softmax, sigmoid or identity, by ``loss``). The objective is
    :math:`L(y, z^{(L)}) + \frac{\lambda}{2}\sum \|W\|^2` over every leaf named ``W``.

    Attributes:
      layers: the layers, a tuple (residual blocks may appear among them).
      input_shape: the shape of one example, e.g. ``(8, 8, 1)`` for 8x8 grey images.
      loss: a key of ``network.OUTPUT_LOSSES``.
    """

    layers: tuple
    input_shape: Shape
    loss: str = "softmax_cross_entropy"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", _as_layers(self.layers))
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        for n in self.input_shape:
            _validation.check_positive_int("input_shape", n)
        _validation.check_choice("loss", self.loss, OUTPUT_LOSSES)

    def init(self, key: jax.Array, dtype: Any = jnp.float32) -> tuple[tuple, tuple]:
        """``(params, state)``, one entry per layer."""
        params, state, _ = chain_init(self.layers, key, self.input_shape, dtype)
        return params, state

    def apply(
        self,
        params: tuple,
        state: tuple,
        x: jax.Array,
        *,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, dict, tuple]:
        """``(output, cache, new_state)``: the forward pass with explicit state.

        ``x`` has shape ``(batch, *input_shape)``; the cache holds every layer's cache under
        ``"layers"`` and the logits under ``"logits"``.
        """
        x = _validation.check_float_array("x", x)
        if x.shape[1:] != self.input_shape:
            raise ValueError(
                f"x must have shape (batch, {', '.join(map(str, self.input_shape))}), "
                f"got shape {x.shape}"
            )
        logits, caches, state = chain_forward(self.layers, params, state, x, key=key, train=train)
        output = OUTPUT_LOSSES[self.loss].activation(logits)
        return output, {"layers": caches, "logits": logits}, state

    def forward(self, params, x, *, state=(), dropout_rate=0.0, key=None, train=False):
        """``apply`` for the training loop: ``(output, cache)``, the new state in the cache.

        ``state`` is ``init``'s state (or a later one); ``()`` stands for it where no layer
        keeps state. Dropout comes from the model's ``Dropout`` layers, not ``dropout_rate``.
        """
        if _validation.concrete_float(dropout_rate) != 0.0:
            raise ValueError(
                "a Sequential model takes dropout as Dropout layers among its layers, not as a "
                f"dropout rate (got {dropout_rate!r})"
            )
        given = state
        if not jax.tree.leaves(state):
            state = _empty_state(self)
        output, cache, new_state = self.apply(params, state, x, key=key, train=train)
        cache["state"] = new_state if jax.tree.leaves(new_state) else given
        return output, cache

    def next_state(self, cache):
        """The state after the forward pass that returned ``cache``."""
        return cache["state"]

    def data_loss(self, params, y, cache):
        """The data loss :math:`L(y, z^{(L)})` from the cached logits."""
        return OUTPUT_LOSSES[self.loss].loss(y, cache["logits"])

    def penalty(self, params, l2):
        r""":math:`\frac{\lambda}{2}\sum \|W\|^2` over every leaf named ``W``."""
        weights = [w for path, w in jax.tree.leaves_with_path(params) if is_weight(path)]
        return l2_regularization(weights, l2)

    def backward(self, params, x, y, cache, *, l2=0.0):
        r"""The hand-written gradient of ``data_loss + penalty``, shaped like ``params``.

        :math:`\delta^{(L)} = \partial L/\partial z^{(L)}` is the fused output error of
        ``OUTPUT_LOSSES``; the layers' backward functions carry it to the first layer, and
        :math:`\lambda W` is added to every weight's gradient.
        """
        dlogits = OUTPUT_LOSSES[self.loss].output_error(y, cache["logits"])
        _, grads = chain_backward(self.layers, params, dlogits, cache["layers"])
        if _validation.concrete_float(l2) == 0.0:
            return grads

        def add_penalty(path, g, w):
            return g + l2_regularization_gradient([w], l2)[0] if is_weight(path) else g

        return jax.tree.map_with_path(add_penalty, grads, params)

    def example_shape(self, params) -> Shape:
        """The shape of one example: ``input_shape``."""
        return self.input_shape
