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

from typing import Any

import jax
import jax.numpy as jnp

from nnjax.gradcheck import GradCheckReport, check_vjp
from nnjax.layers import Layer, Shape

__all__ = ["check_layer", "layer_inputs"]


def layer_inputs(
    layer: Layer, key: jax.Array, input_shape: Shape, batch: int = 4
) -> tuple[Any, Any, jax.Array]:
    """A float64 point to check ``layer`` at: ``(params, state, x)``, ``x`` standard normal.

    Call it under ``jax.enable_x64(True)``. Parameters and state come from ``layer.init``, with
    every leaf moved by a standard normal draw times 0.1 so that no bias or scale sits at a
    special value (a zero bias, a unit scale) where a wrong gradient could vanish.
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
