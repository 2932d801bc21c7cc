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
import numpy as np

__all__ = [
    "ARGUMENT_ORDER",
    "check_all_finite",
    "check_below_one_in",
    "check_choice",
    "check_fits_dtype",
    "check_float32",
    "check_float32_values",
    "check_float_array",
    "check_float_dtype",
    "check_host_port",
    "check_in_range",
    "check_instance",
    "check_int",
    "check_int_type",
    "check_l2_finite",
    "check_label_range",
    "check_labels",
    "check_layer_sizes",
    "check_ndim",
    "check_nonempty",
    "check_normal_in",
    "check_number",
    "check_positive",
    "check_positive_int",
    "check_real",
    "check_real_targets",
    "check_same_shape",
    "check_seed",
    "check_target_range",
    "check_tree_like",
    "concrete_array",
    "concrete_float",
]


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
    """Raises ValueError unless ``value`` is a scalar with ``low <(=) value <(=) high``, finite.

    A traced scalar passes unchecked.
    """
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


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """Returns ``value`` as a Python int, raising ValueError unless it is an integer >= minimum.

    Accepted: Python ints and integer scalars of NumPy or JAX (anything ``operator.index``
    takes, e.g. ``np.int64(5)``, ``np.array(5)`` or ``jnp.int32(5)``). Rejected: bools, floats
    (even ``2.0``), arrays that are not 0-d (even ``[5]``) and traced values. With ``maximum``
    (e.g. ``2**31 - 1`` for a count that becomes an int32), larger values are rejected too.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        count = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if count < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {count}")
    if maximum is not None and count > maximum:
        raise ValueError(f"{name} must be an integer in [{minimum}, {maximum}], got {count}")
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


def check_number(name: str, value: Any, *, requirement: str | None = None, **bounds: Any) -> float:
    """Returns ``value`` as a Python float, raising ValueError unless it is a finite number.

    The number must also lie within ``bounds``, the keyword arguments of :func:`check_in_range`
    (``low=``, ``high=``, ...).

    ``requirement`` (e.g. ``"a finite number >= 0"``) words the message as ``"{name} must be
    {requirement}, got ..."``; without it a range error is :func:`check_in_range`'s and a value
    that is not a number says ``"{name} must be a number"``.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {requirement or 'a number'}, got {value!r}") from None
    try:
        check_in_range(name, number, **bounds)
    except ValueError:
        if requirement is None:
            raise
        raise ValueError(f"{name} must be {requirement}, got {number!r}") from None
    return number


def check_int_type(name: str, value: Any, minimum: int) -> int:
    """Returns ``value`` as a Python int as :func:`check_int` does, raising TypeError for non-ints.

    TypeError (not ValueError) is raised for a value that is no integer at all: a bool, a float, an
    array that is not 0-d.
    """
    try:
        is_integer = not isinstance(value, bool) and operator.index(value) is not None
    except TypeError:
        is_integer = False
    if not is_integer:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return check_int(name, value, minimum)


def check_instance(name: str, value: Any, cls: type) -> None:
    """Raises TypeError unless ``value`` is an instance of ``cls``."""
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")


def concrete_array(x: Any) -> np.ndarray | None:
    """Returns ``x`` as a NumPy array, or None when it is traced.

    A traced array's values are unknown until run time.
    """
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_labels(name: str, labels: Any, num_classes: int | None = None) -> None:
    """Raises ValueError unless ``labels`` are class labels.

    Class labels have shape ``(n,)`` and are whole numbers in ``[0, num_classes)``, or any
    non-negative whole numbers when ``num_classes`` is None.

    The dtype must be integer, or floating-point holding only whole numbers; bools are rejected.
    A traced array has no values until run time, so only its shape and dtype are checked.
    """
    values = concrete_array(labels)
    array = labels if values is None else values
    if array.ndim != 1:
        raise ValueError(f"{name} must have shape (n,), got shape {array.shape}")
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integer class labels, got dtype {array.dtype}")
    if values is None:
        return
    if values.dtype.kind == "f" and not np.all(np.isfinite(values) & (values == np.round(values))):
        raise ValueError(f"{name} must hold integer class labels, got non-integer values")
    check_label_range(name, values, num_classes)


def check_label_range(name: str, labels: Any, num_classes: int | None) -> None:
    """Raises ValueError unless class labels lie in ``[0, num_classes)`` (``[0, inf)`` for None).

    A traced array has no values until run time and passes unchecked.
    """
    values = concrete_array(labels)
    if values is None or not values.size:
        return
    low, high = values.min(), values.max()
    if low < 0 or (num_classes is not None and high >= num_classes):
        upper = "inf" if num_classes is None else num_classes
        raise ValueError(f"{name} must lie in [0, {upper}), got values in [{low:g}, {high:g}]")


def check_all_finite(name: str, x: Any) -> None:
    """Raises ValueError if ``x`` holds NaN or inf, naming every column and the first row with one.

    ``x`` has shape ``(n, ...)``; a column is one position on the axes after the first (for
    ``(n, n_features)``, a feature). The values are read on the host with NumPy; a traced ``x``
    (inside ``jax.jit``) has no values yet and passes unchecked.
    """
    values = concrete_array(x)
    if values is None or not np.issubdtype(values.dtype, np.inexact):
        return  # traced, or integers and bools, which are always finite
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    rows = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))
    if values.ndim == 1:
        where = f"row {rows[0]} (value {values[rows[0]]})"
    else:
        columns = np.argwhere(bad.any(axis=0))
        names = [str(c[0]) if len(c) == 1 else str(tuple(c.tolist())) for c in columns]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        where = f"column{'s' if len(names) > 1 else ''} {shown} (first in row {rows[0]})"
    raise ValueError(
        f"{name} holds non-finite values (NaN or inf) in {where}; remove or impute them first"
    )


def check_positive_int(name: str, value: Any) -> int:
    """Returns ``value`` as a Python int, raising ValueError unless it is an integer >= 1."""
    try:
        return check_int(name, value, 1)
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None


def check_seed(name: str, value: Any) -> int:
    """Returns ``value`` as a Python int, raising ValueError unless ``0 <= value < 2**32``.

    These are the seeds ``jax.random.key`` takes.
    """
    seed = check_int(name, value, 0)
    if seed >= 2**32:
        raise ValueError(f"{name} must be below 2**32, got {seed}")
    return seed


def check_float32(name: str, value: float) -> None:
    """Raises ValueError for a value float32 would round to 0 or to inf.

    The value must be 0, or ``tiny <= |value| <= max`` (float32's smallest normal and largest
    finite numbers).

    The message reads ``"{name} is not representable in float32"``: ``name`` names the value
    itself (the command line passes the text typed).
    """
    tiny, largest = 1.1754944e-38, 3.4028235e38
    if value != 0 and not tiny <= abs(value) <= largest:
        raise ValueError(f"{name} is not representable in float32")


def _is_real_dtype(dtype: Any) -> bool:
    return jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)


def check_real(name: str, value: Any) -> None:
    """Raises TypeError unless ``value`` is a real number: an int or float, or a numeric array.

    Arrays (NumPy, JAX, traced) must have an integer or floating-point dtype; bools, strings and
    complex numbers are rejected.
    """
    dtype = getattr(value, "dtype", None)
    if dtype is not None:
        real = _is_real_dtype(dtype)
    else:
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not real:
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r:.40}")


def check_below_one_in(name: str, value: Any, dtype: Any) -> None:
    """Raises ValueError if a concrete ``value`` rounds to 1 or more in ``dtype``.

    For a decay rate or probability that must stay below 1 where it is used: 0.99999999 is 1.0 in
    float32 and 0.999 is 1.0 in bfloat16. A traced value passes unchecked.
    """
    v = concrete_float(value)
    dtype = jnp.dtype(dtype)
    if v is not None and (v >= 1 or float(np.asarray(v, dtype)) >= 1):
        largest = 1 - float(jnp.finfo(dtype).epsneg)
        raise ValueError(
            f"{name}={v!r} rounds to 1.0 in {dtype}, where it must stay below 1; "
            f"use at most {largest!r}, or a wider dtype"
        )


def check_normal_in(name: str, value: Any, dtype: Any) -> None:
    """Raises ValueError if a concrete, non-zero ``value`` is no normal number in ``dtype``.

    That is, if it rounds to 0, to a subnormal number (which XLA flushes to 0 on CPUs and GPUs) or
    to inf. A traced value passes unchecked.
    """
    v = concrete_float(value)
    if v is None or v == 0:
        return
    info = jnp.finfo(dtype)
    # Beyond the largest finite number, the cast would warn of the overflow.
    rounded = abs(float(np.asarray(v, info.dtype))) if abs(v) <= float(info.max) else math.inf
    if not float(info.tiny) <= rounded <= float(info.max):
        raise ValueError(
            f"{name}={v!r} is not representable in {info.dtype}: it rounds to 0, a subnormal "
            f"number or inf there; use a magnitude in [{info.tiny}, {info.max}]"
        )


def check_l2_finite(name: str, l2: Any, weights: Iterable[Any]) -> None:
    r"""Raises ValueError if the L2 penalty :math:`\frac{\lambda}{2}\sum\|w\|^2` overflows.

    Checked for concrete ``l2`` and weights (a traced one passes): ``l2`` itself and the penalty
    must be finite in the weights' dtype (the narrowest, if they differ).
    """
    lam = concrete_float(l2)
    arrays = [concrete_array(w) for w in weights] if lam else []
    if not arrays or any(a is None or not jnp.issubdtype(a.dtype, jnp.floating) for a in arrays):
        return
    dtype = min((a.dtype for a in arrays), key=lambda d: float(jnp.finfo(d).max))
    largest = float(jnp.finfo(dtype).max)
    squares = sum(float(np.sum(np.square(a.astype(np.float64)))) for a in arrays)
    if lam > largest or lam * squares / 2 > largest:
        bound = min(largest, 2 * largest / squares) if squares else largest
        raise ValueError(
            f"{name}={lam!r} makes the L2 penalty ({name} / 2 * {squares:.3g}, the weights' "
            f"squared norm) overflow {dtype}; use {name} below {bound:.3g}"
        )


def check_float_dtype(name: str, dtype: Any) -> jnp.dtype:
    """Returns ``dtype`` as a dtype, raising TypeError unless it is a floating-point one."""
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be a floating-point dtype, got {dtype!r}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point dtype, got {dtype}")
    if dtype.itemsize == 8 and not jax.config.jax_enable_x64:
        raise TypeError(
            f"{name}={dtype} needs 64-bit JAX, which is off: call "
            "jax.config.update('jax_enable_x64', True) first, or work inside "
            "`with jax.enable_x64(True):`"
        )
    return dtype


def check_nonempty(name: str, x: Any) -> None:
    """Raises ValueError if the array ``x`` has no elements (a mean over it would be NaN)."""
    if 0 in jnp.shape(x):
        raise ValueError(f"{name} is empty (shape {jnp.shape(x)}); it needs at least one element")


ARGUMENT_ORDER = (
    "nnjax losses take loss(y_true, y_pred), targets first: the reverse of optax's order"
)


def check_target_range(name: str, y_true: Any, low: float, high: float | None = None) -> None:
    """Raises ValueError unless concrete targets lie in ``[low, high]`` (``[low, inf)`` for None).

    The message names the argument order, since a prediction passed as the target is the usual
    cause. A traced array passes unchecked; NaN is left to the loss.
    """
    values = concrete_array(y_true)
    if values is None or not values.size:
        return
    lo, hi = np.nanmin(values), np.nanmax(values)
    if lo < low or (high is not None and hi > high):
        upper = "inf)" if high is None else f"{high:g}]"
        raise ValueError(
            f"{name} must lie in [{low:g}, {upper}, got values in [{lo:g}, {hi:g}] "
            f"({ARGUMENT_ORDER})"
        )


def check_real_targets(name: str, y_true: jax.Array) -> None:
    """Raises TypeError for complex targets, which a cast to a real dtype would truncate."""
    if jnp.issubdtype(y_true.dtype, jnp.complexfloating):
        raise TypeError(
            f"{name} must be real, got dtype {y_true.dtype}: a cast would drop its imaginary part"
        )


def check_fits_dtype(name: str, x: Any, dtype: Any) -> None:
    """Raises ValueError if concrete ``x`` holds finite values that overflow ``dtype``.

    For a cast that would turn them into inf. A traced array passes unchecked.
    """
    values = concrete_array(x)
    if values is None or not values.size or not _is_real_dtype(values.dtype):
        return
    largest = float(jnp.finfo(dtype).max)
    finite = values[np.isfinite(values)]
    if finite.size and float(np.max(np.abs(finite))) > largest:
        raise ValueError(
            f"{name} holds values up to {float(np.max(np.abs(finite))):g}, beyond "
            f"{jnp.dtype(dtype)}'s largest {largest:g}; cast the prediction to {values.dtype}"
        )


def check_host_port(name: str, address: Any) -> None:
    """Raises ValueError unless ``address`` reads ``"host:port"``, port an integer in [1, 65535].

    An IPv6 host is written in brackets: ``"[::1]:1234"``.
    """
    host, _, port = str(address).rpartition(":")
    if not isinstance(address, str) or not host or not port.isdigit() or not 0 < int(port) < 2**16:
        raise ValueError(
            f"{name} must read host:port (e.g. 10.0.0.1:1234), port in [1, 65535], got {address!r}"
        )


def check_tree_like(name: str, tree: Any, like_name: str, like: Any) -> None:
    """Raises ValueError unless ``tree`` has the tree structure and leaf shapes of ``like``."""
    if jax.tree.structure(tree) != jax.tree.structure(like):
        raise ValueError(
            f"{name} has tree structure {jax.tree.structure(tree)}, "
            f"expected that of {like_name} {jax.tree.structure(like)}"
        )
    expected = jax.tree_util.tree_flatten_with_path(like)[0]
    for (path, e), leaf in zip(expected, jax.tree.leaves(tree), strict=True):
        if jnp.shape(leaf) != jnp.shape(e):
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}, "
                f"expected {jnp.shape(e)}"
            )


def check_float32_values(name: str, values: Any) -> np.ndarray:
    """Returns finite real ``values`` as a float32 NumPy array.

    Raises ValueError if one is too large for float32, where it would become inf.
    """
    values = np.asarray(values)
    with np.errstate(over="ignore"):
        cast = values.astype(np.float32)
    if not np.isfinite(cast).all():
        largest = float(np.max(np.abs(values)))
        raise ValueError(f"{name} holds values up to {largest:g}, beyond float32's largest")
    return cast
