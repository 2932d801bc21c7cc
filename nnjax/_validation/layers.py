"""Checks of layers' options, initial values and inputs (see ``nnjax._validation``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from nnjax._validation.core import check_choice, check_float_array, check_positive_int, check_real

__all__ = [
    "check_bias_init",
    "check_features_last",
    "check_layer_init",
    "check_layer_input",
    "check_positive_int_tuple",
]


def check_bias_init(value: Any) -> Callable[[jax.Array, int, Any], jax.Array]:
    """``init_network``'s ``bias_init`` checked, as a function of a layer's key, width and dtype.

    ``"zeros"`` and a finite constant fill the biases with it (the key unused); a function
    ``value(key, n_out, dtype)`` is called with ``fold_in(layer's key, 1)``. Raises ValueError
    for another name or a non-finite constant, TypeError for anything else.
    """
    if callable(value):
        return lambda key, n_out, dtype: value(jax.random.fold_in(key, 1), n_out, dtype)
    if isinstance(value, str):
        check_choice("bias_init", value, ("zeros",))
        value = 0.0
    check_real("bias_init", value)
    if jnp.ndim(value) != 0 or not math.isfinite(float(value)):
        raise ValueError(f"a constant bias_init must be a finite scalar, got {value!r:.40}")
    return lambda key, n_out, dtype: jnp.full((n_out,), value, dtype)


def check_layer_init(W: Any, b: Any, n_in: int, n_out: int, dtype: Any, layer: int) -> None:
    """Raises ValueError unless a layer's initial ``W`` (from ``init``) is ``(n_out, n_in)`` and
    its ``b`` (from ``bias_init``) ``(n_out,)``, both of ``dtype``."""
    for name, what, array, shape, layout in (
        ("init", "weights", W, (n_out, n_in), "(n_out, n_in)"),
        ("bias_init", "biases", b, (n_out,), "(n_out,)"),
    ):
        if jnp.shape(array) != shape or jnp.result_type(array) != jnp.dtype(dtype):
            raise ValueError(
                f"{name} returned {what} of shape {jnp.shape(array)} and dtype "
                f"{jnp.result_type(array)} for layer {layer}; expected {shape} {layout} and "
                f"{jnp.dtype(dtype)}"
            )


def check_positive_int_tuple(name: str, value: Any, length: int) -> tuple[int, ...]:
    """Returns ``value`` as a tuple of ``length`` Python ints >= 1; a single integer is repeated.

    Raises ValueError for a sequence of another length or any entry that is not an integer >= 1
    (see :func:`check_positive_int`).
    """
    items = tuple(value) if isinstance(value, tuple | list) else (value,) * length
    if len(items) != length:
        raise ValueError(f"{name} must be an integer or {length} integers, got {value!r}")
    return tuple(check_positive_int(name, item) for item in items)


def check_features_last(layer: str, x: Any, features: int, axes: tuple[int, ...]) -> jax.Array:
    """``x`` as a float array ``(batch, ..., features)``, 2+ values on ``axes`` if any, or ValueError."""
    x = check_float_array("x", x)
    if x.ndim < 2 or x.shape[-1] != features:
        raise ValueError(f"{layer} takes x of shape (batch, ..., {features}), got shape {x.shape}")
    if axes and math.prod(x.shape[a] for a in axes) < 2:
        raise ValueError(f"{layer} needs 2 or more values to normalize over, got x of {x.shape}")
    return x


def check_layer_input(layer: str, x: jax.Array, ndim: int, layout: str) -> jax.Array:
    """``x`` as a float array of ``ndim`` dimensions (batch included), or a ValueError naming it."""
    x = check_float_array("x", x)
    if x.ndim != ndim:
        raise ValueError(f"{layer} takes x of shape {layout}, got shape {x.shape}")
    return x
