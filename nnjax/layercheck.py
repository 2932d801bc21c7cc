r"""Checking a layer's hand-written backward pass, with respect to its parameters and its input.

A layer's ``backward(params, dout, cache)`` is the vector-Jacobian product of its ``forward``:
with a cotangent :math:`u` shaped like the output,
:math:`(\partial L/\partial x, \partial L/\partial \theta) = J^\top u` for
:math:`L = \langle u, \mathrm{forward}(\theta, x) \rangle`. ``check_layer`` gives that to
``gradcheck.check_vjp``, which compares it with reverse mode (``jax.vjp``), forward mode
(``jax.jvp``) and central finite differences in float64. The cotangent is random and non-uniform:
with :math:`u = \mathbf{1}` a batch normalization's backward that drops the gradient through the
batch variance would pass, since its outputs sum to a constant.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from nnjax.convolution import Conv1D, Conv2D
from nnjax.gradcheck import GradCheckReport, _jit_unoptimized, check_gradient, check_vjp
from nnjax.layers import Activation, Dense, Dropout, Flatten, Layer, Shape
from nnjax.normalization import BatchNorm, LayerNorm
from nnjax.pooling import AvgPool1D, AvgPool2D, MaxPool1D, MaxPool2D
from nnjax.sequential import Residual, Sequential

__all__ = [
    "CHECKED_CNN",
    "LAYER_CASES",
    "LayerCase",
    "check_layer",
    "check_model",
    "layer_checks",
    "layer_inputs",
]


class LayerCase(NamedTuple):
    """A layer with the options ``nnjax check`` proves it in: one row of the table."""

    name: str
    layer: Layer
    input_shape: Shape
    train: bool = False


LAYER_CASES = (
    LayerCase("layer dense", Dense(3), (4,)),
    LayerCase("layer conv1d stride 2 SAME", Conv1D(3, 3, stride=2, padding="SAME"), (7, 2)),
    LayerCase("layer conv2d (2,3) VALID", Conv2D(3, (2, 3)), (5, 5, 2)),
    LayerCase("layer conv2d stride 2 SAME", Conv2D(2, 3, stride=2, padding="SAME"), (5, 5, 2)),
    LayerCase("layer maxpool1d", MaxPool1D(2), (7, 2)),
    LayerCase("layer maxpool2d overlapping", MaxPool2D(2, stride=1), (4, 4, 2)),
    LayerCase("layer avgpool1d stride 1", AvgPool1D(3, stride=1), (7, 2)),
    LayerCase("layer avgpool2d SAME", AvgPool2D(2, padding="SAME"), (5, 5, 2)),
    LayerCase("layer batchnorm train", BatchNorm(), (3, 3, 2), train=True),
    LayerCase("layer batchnorm eval", BatchNorm(), (3, 3, 2)),
    LayerCase("layer layernorm", LayerNorm(), (5,)),
    LayerCase("layer dropout train", Dropout(0.3), (6,), train=True),
    LayerCase("layer residual", Residual((Dense(4), Activation("tanh"))), (4,)),
    LayerCase("layer flatten", Flatten(), (2, 3)),
)
"""The layer rows of ``nnjax check``: every layer, and each option that changes its backward."""


@functools.partial(_jit_unoptimized, static_argnums=(0, 2, 3))
def layer_inputs(
    layer: Layer, key: jax.Array, input_shape: Shape, batch: int = 4
) -> tuple[Any, Any, jax.Array]:
    """A float64 point to check ``layer`` at: ``(params, state, x)``, ``x`` standard normal.

    Call it under ``jax.enable_x64(True)``. Parameters and state come from ``layer.init``, with
    every leaf moved by a standard normal draw times 0.1 so that no bias or scale sits at a
    special value (a zero bias, a unit scale) where a wrong gradient could vanish. One compiled
    program per layer and shape (``layer`` and the shapes are static).
    """
    init_key, x_key, nudge_key = jax.random.split(key, 3)
    params, state, _ = layer.init(init_key, input_shape, jnp.float64)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(nudge_key, max(len(leaves), 1))
    params = treedef.unflatten(
        [
            p + 0.1 * jax.random.normal(k, p.shape, p.dtype)
            for p, k in zip(leaves, keys, strict=False)
        ]
    )
    x = jax.random.normal(x_key, (batch, *input_shape), jnp.float64)
    return params, state, x


def check_layer(
    layer: Layer,
    input_shape: Shape,
    *,
    key: jax.Array | None = None,
    batch: int = 4,
    train: bool = False,
    **check_kwargs: Any,
) -> GradCheckReport:
    """Checks ``layer.backward`` against autodiff and finite differences of ``layer.forward``.

    Args:
      layer: the layer to check.
      input_shape: the shape of one example, without the batch axis.
      key: ``jax.random`` key for the point, the layer's own randomness (a dropout mask, fixed
        for the whole check) and the check.
      batch: the batch size of ``x``.
      train: checks the training behaviour (batch statistics, dropout) when True.
      **check_kwargs: passed on to ``gradcheck.check_vjp`` (a ``cotangent``, tolerances...).

    Returns:
      The report, with leaves ``x`` and ``params/...``, in float64.
    """
    key = jax.random.key(0) if key is None else key
    point_key, layer_key, check_key = jax.random.split(key, 3)
    with jax.enable_x64(True):
        params, state, x = layer_inputs(layer, point_key, input_shape, batch)

        def forward(inputs):
            out, _, _ = layer.forward(
                inputs["params"], state, inputs["x"], key=layer_key, train=train
            )
            return out

        def manual_vjp(inputs, u):
            _, cache, _ = layer.forward(
                inputs["params"], state, inputs["x"], key=layer_key, train=train
            )
            dx, dparams = layer.backward(inputs["params"], u, cache)
            return {"params": dparams, "x": dx}

        return check_vjp(
            forward, manual_vjp, {"params": params, "x": x}, key=check_key, **check_kwargs
        )


def model_inputs(model: Sequential, key: jax.Array, batch: int = 4) -> tuple[Any, Any, jax.Array]:
    """``layer_inputs`` for a whole ``Sequential`` model: ``(params, state, x)`` in float64."""
    return layer_inputs(_ModelLayer(model), key, model.input_shape, batch)


def check_model(
    model: Sequential, *, key: jax.Array | None = None, batch: int = 4, **check_kwargs: Any
) -> GradCheckReport:
    """Checks a ``Sequential`` model's ``backward`` as the gradient of its training objective.

    The objective is ``data_loss + penalty`` with L2 strength 0.1, in training mode (batch
    statistics, dropout masks fixed by ``key``), on a float64 point from ``layer_inputs``, the
    targets integer labels for softmax cross-entropy and standard normal otherwise.
    """
    key = jax.random.key(0) if key is None else key
    point_key, y_key, layer_key, check_key = jax.random.split(key, 4)
    with jax.enable_x64(True):
        params, state, x = model_inputs(model, point_key, batch)
        out_shape = jax.eval_shape(lambda p: model.forward(p, x, state=state)[0], params).shape
        if model.loss == "softmax_cross_entropy":
            y = jax.random.randint(y_key, (batch,), 0, out_shape[-1])
        else:
            y = jax.random.normal(y_key, out_shape, jnp.float64)

        def cache(p):
            return model.forward(p, x, state=state, key=layer_key, train=True)[1]

        def objective(p):
            return model.data_loss(p, y, cache(p)) + model.penalty(p, 0.1)

        def manual(p):
            return model.backward(p, x, y, cache(p), l2=0.1)

        return check_gradient(objective, manual, params, key=check_key, **check_kwargs)


class _ModelLayer(NamedTuple):
    """A model seen as a layer by ``layer_inputs``: its ``init`` with the input shape fixed."""

    model: Sequential

    def init(self, key, input_shape, dtype=jnp.float32):
        params, state = self.model.init(key, dtype)
        return params, state, None


CHECKED_CNN = Sequential(
    (
        Conv2D(2, 3, padding="SAME"),
        Activation("relu"),
        BatchNorm(),
        MaxPool2D(2),
        Flatten(),
        Dense(3),
    ),
    input_shape=(4, 4, 1),
)
"""The model ``nnjax check`` proves whole: convolution, batch norm, pooling and a dense output."""


def layer_checks(key: jax.Array) -> list[tuple[str, Callable[[], GradCheckReport]]]:
    """``nnjax check``'s layer rows: a name and a thunk for each of ``LAYER_CASES``, then
    ``CHECKED_CNN``'s ``check_model``; finite differences on 40 coordinates of each leaf."""
    checks = [
        (
            case.name,
            functools.partial(
                check_layer,
                case.layer,
                case.input_shape,
                key=key,
                train=case.train,
                max_coordinates=40,
            ),
        )
        for case in LAYER_CASES
    ]
    model = functools.partial(check_model, CHECKED_CNN, key=key, max_coordinates=40)
    return [*checks, ("Sequential cnn backward", model)]
