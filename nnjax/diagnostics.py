r"""Diagnostics of a network's health: activations, dead and saturated units, gradient flow.

Everything here is a pure function of parameters, data and the forward cache, cheap enough to run
inside the compiled training loop (``training.train(..., diagnostics_every=N)``). Layers are
numbered from 1 as in the spec (layer :math:`l` maps :math:`a^{(l-1)}` to :math:`a^{(l)}`).

- activation mean and std of each hidden layer's output :math:`a^{(l)}`;
- dead ReLU units: units whose pre-activation is :math:`\le 0` for every sample of the batch, so
  their gradient is 0 and they cannot recover;
- saturated sigmoid/tanh units: the fraction of (sample, unit) pairs where the derivative is below
  10% of its maximum (:math:`\sigma' < 0.025`, :math:`\tanh' < 0.1`), where almost no gradient
  passes;
- gradient norm :math:`\|\partial L/\partial W^{(l)}\|_F` of each layer, from ``backward_pass``;
- update-to-weight ratio :math:`\|\Delta W^{(l)}\|_F / \|W^{(l)}\|_F` of the update the optimizer
  makes from that gradient (around 1e-3 is the usual healthy range).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nnjax import activations, network

__all__ = [
    "DEAD_FRACTION_WARNING",
    "EXPLODING_RATIO",
    "SATURATION_THRESHOLD",
    "VANISHING_RATIO",
    "LayerStatistics",
    "diagnose",
    "diagnostic_row",
    "history_keys",
    "layer_statistics",
    "update_ratios",
    "weight_norms",
]

SATURATION_THRESHOLD = 0.1
"""A unit is saturated where its derivative is below this fraction of the derivative's maximum."""

VANISHING_RATIO = 1e-2
EXPLODING_RATIO = 1e2
DEAD_FRACTION_WARNING = 0.5


class LayerStatistics(NamedTuple):
    """Per-hidden-layer statistics of one forward pass, each an array of shape ``(L - 1,)``."""

    mean: jax.Array
    std: jax.Array
    dead_fraction: jax.Array
    saturated_fraction: jax.Array


def _saturated(name: str, z: jax.Array) -> jax.Array:
    """Where the derivative of activation ``name`` at ``z`` is below a fraction of its maximum.

    The fraction is ``SATURATION_THRESHOLD``; all False for an activation that does not saturate.
    """
    max_derivative = {"sigmoid": 0.25, "tanh": 1.0}  # sigma'(0) and tanh'(0)
    if name not in max_derivative:
        return jnp.zeros(z.shape, bool)
    derivative = activations.ACTIVATIONS[name].derivative
    return derivative(z) < SATURATION_THRESHOLD * max_derivative[name]


def layer_statistics(
    cache: Mapping[str, jax.Array], activation: str | Sequence[str], num_layers: int
) -> LayerStatistics:
    """Statistics of the hidden layers from a ``forward_pass`` cache.

    Args:
      cache: the cache of ``network.forward_pass`` (evaluation mode: no dropout).
      activation: the hidden activation(s) the forward pass used.
      num_layers: the number of layers :math:`L` (weight matrices).

    Returns:
      ``LayerStatistics`` with one entry per hidden layer ``1 .. L-1``. ``dead_fraction`` is 0 for
      layers that are not ReLU, ``saturated_fraction`` 0 for layers that are not sigmoid or tanh.
    """
    names = network.hidden_activations(activation, num_layers - 1)
    dtype = cache["z1"].dtype
    if not names:
        empty = jnp.zeros((0,), dtype)
        return LayerStatistics(empty, empty, empty, empty)
    means, stds, dead, saturated = [], [], [], []
    for l, name in enumerate(names, start=1):
        a, z = cache[f"a{l}"], cache[f"z{l}"]
        means.append(jnp.mean(a))
        stds.append(jnp.std(a))
        never_active = jnp.all(z <= 0, axis=0)
        dead.append(jnp.mean(never_active) if name == "relu" else jnp.zeros((), a.dtype))
        saturated.append(jnp.mean(_saturated(name, z)))
    return LayerStatistics(
        *(jnp.stack(values).astype(dtype) for values in (means, stds, dead, saturated))
    )


def weight_norms(tree: Any) -> jax.Array:
    """:math:`\\|W^{(l)}\\|_F` of every layer of a parameter-shaped tree, shape ``(L,)``."""
    return jnp.stack([jnp.linalg.norm(layer["W"]) for layer in tree])


def update_ratios(params: Any, updates: Any) -> jax.Array:
    """:math:`\\|\\Delta W^{(l)}\\|_F / \\|W^{(l)}\\|_F` for every layer, shape ``(L,)``."""
    return weight_norms(updates) / jnp.maximum(weight_norms(params), jnp.finfo(jnp.float32).tiny)


def history_keys(num_layers: int) -> list[str]:
    """The history entries ``train(..., diagnostics_every=N)`` records, in order."""
    keys = [f"grad_norm_layer{l}" for l in range(1, num_layers + 1)]
    keys += [f"update_ratio_layer{l}" for l in range(1, num_layers + 1)]
    for name in ("act_mean", "act_std", "dead_fraction", "saturated_fraction"):
        keys += [f"{name}_layer{l}" for l in range(1, num_layers)]
    return keys


def diagnostic_row(
    params: Any,
    x: jax.Array,
    y: jax.Array,
    optimizer_update: Any,
    opt_state: Any,
    *,
    activation: str | Sequence[str],
    loss: str,
) -> jax.Array:
    """Every diagnostic of one batch, as a flat vector in the order of ``history_keys``.

    The gradient comes from ``backward_pass`` on ``(x, y)`` in evaluation mode; the update is
    what ``optimizer_update(grads, opt_state, params)`` would make of it (not applied).
    """
    num_layers = len(params)
    _, cache = network.forward_pass(params, x, activation=activation, loss=loss)
    grads = network.backward_pass(params, x, y, cache, activation=activation, loss=loss)
    updates, _ = optimizer_update(grads, opt_state, params)
    stats = layer_statistics(cache, activation, num_layers)
    return jnp.concatenate([weight_norms(grads), update_ratios(params, updates), *stats]).astype(
        x.dtype
    )


def diagnose(history: Mapping[str, Sequence[float]]) -> list[str]:
    """Warnings about the last recorded diagnostics of a run, one line each; empty if healthy.

    - vanishing gradients: the first layer's gradient norm below ``VANISHING_RATIO`` times the
      last layer's; exploding: above ``EXPLODING_RATIO`` times;
    - dead ReLUs: more than ``DEAD_FRACTION_WARNING`` of a layer's units dead.
    """
    layers = sorted(
        int(key.removeprefix("grad_norm_layer"))
        for key in history
        if key.startswith("grad_norm_layer")
    )
    if not layers:
        return []

    def last(key: str) -> float:  # the latest record: every key has one per recorded epoch
        return float(history[key][-1]) if history[key] else float("nan")

    warnings = []
    first, final = last(f"grad_norm_layer{layers[0]}"), last(f"grad_norm_layer{layers[-1]}")
    broken = [l for l in layers if not np.isfinite(last(f"grad_norm_layer{l}"))]
    if broken:
        warnings.append(
            "non-finite gradient norms (inf or NaN) in layer(s) "
            f"{', '.join(map(str, broken))} at the latest record"
        )
    elif final > 0:
        ratio = first / final
        if ratio < VANISHING_RATIO:
            warnings.append(
                f"vanishing gradients: layer {layers[0]}'s gradient norm is {ratio:.1e} times "
                f"layer {layers[-1]}'s"
            )
        elif ratio > EXPLODING_RATIO:
            warnings.append(
                f"exploding gradients: layer {layers[0]}'s gradient norm is {ratio:.1e} times "
                f"layer {layers[-1]}'s"
            )
    for l in layers[:-1]:
        dead = last(f"dead_fraction_layer{l}")
        if dead > DEAD_FRACTION_WARNING:
            warnings.append(f"dead ReLUs: {dead:.0%} of layer {l}'s units never activate")
    return warnings
