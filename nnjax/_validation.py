"""Trace-time checks of shapes and static arguments.

Everything here looks only at shapes, dtypes and Python values, so under ``jax.jit`` it runs once
while tracing and costs nothing in compiled code. A hyperparameter passed as a traced array (as in a
vmapped sweep) has no concrete value; its range check is then skipped, never guessed.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp


def concrete_float(value: Any) -> float | None:
    """Returns ``value`` as a Python float, or None when it is traced (unknown until run time)."""
    if callable(value):
        return None
    try:
        return float(value)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError, TypeError):
        return None


def check_in_range(
    name: str,
    value: Any,
    *,
    low: float,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = False,
) -> None:
    """Raises ValueError unless ``value`` is a scalar with ``low <(=) value <(=) high``, finite;
    a traced scalar passes unchecked."""
    if not callable(value) and jnp.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(value)}")
    v = concrete_float(value)
    if v is None:
        return
    below = v < low if low_inclusive else v <= low
    above = high is not None and (v > high if high_inclusive else v >= high)
    if below or above or not math.isfinite(v):
        lo = "[" if low_inclusive else "("
        hi = "]" if high_inclusive else ")"
        upper = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{name} must be in {lo}{low:g}, {upper}{hi}, got {v!r}")


def check_positive(name: str, value: Any) -> None:
    """Raises ValueError unless ``value > 0`` (traced values pass unchecked)."""
    check_in_range(name, value, low=0.0, low_inclusive=False)


def check_int(name: str, value: Any, minimum: int) -> int:
    """Returns ``value`` as a Python int, raising ValueError unless it is an integer >= minimum.

    Accepted: Python ints and integer scalars of NumPy or JAX (anything ``operator.index``
    takes, e.g. ``np.int64(5)``, ``np.array(5)`` or ``jnp.int32(5)``). Rejected: bools, floats
    (even ``2.0``), arrays that are not 0-d (even ``[5]``) and traced values.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        count = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if count < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {count}")
    return count


def check_choice(name: str, value: str, choices: Iterable[str]) -> None:
    """Raises ValueError unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")


def check_float_array(name: str, x: Any) -> jax.Array:
    """Returns ``x`` as an array, raising TypeError unless it holds floating-point numbers."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    return x


def check_same_shape(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
    """Raises ValueError unless two arrays have exactly the same shape (no broadcasting)."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; "
            "they must match exactly (nnjax never broadcasts silently)"
        )


def check_ndim(name: str, x: jax.Array, ndim: int, what: str) -> None:
    """Raises ValueError unless ``x`` has rank ``ndim``; ``what`` names the expected axes."""
    if x.ndim != ndim:
        raise ValueError(f"{name} must have shape {what}, got shape {x.shape}")


def check_layer_sizes(layer_sizes: Iterable[int]) -> tuple[int, ...]:
    """Returns layer sizes as a tuple of ints; at least two, all positive integers."""
    sizes = tuple(
        int(n) if isinstance(n, numbers.Integral) and not isinstance(n, bool) else n
        for n in layer_sizes
    )
    if len(sizes) < 2:
        raise ValueError(
            f"layer_sizes needs at least two entries (inputs and outputs), got {list(sizes)}"
        )
    for i, n in enumerate(sizes):
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"layer_sizes[{i}] must be a positive integer, got {n!r}")
    return sizes
