"""Synthetic classification datasets, generated with ``jax.random`` only.

No NumPy global RNG is used: the same key gives bit-identical arrays. Every generator returns
``(x, y)`` batch-first: ``x`` float32 of shape ``(n_samples, 2)`` and ``y`` int32 class indices of
shape ``(n_samples,)``. :mod:`nnjax.datasets` re-exports them next to the real datasets.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from nnjax._validation import check_int, check_number

__all__ = ["make_circles", "make_moons", "make_spirals", "make_xor"]

_NOISE_REQUIREMENT = "a finite number >= 0"


def _shuffle(key: jax.Array, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Applies one random permutation (chosen by ``key``) to the rows of ``x`` and ``y``."""
    perm = jax.random.permutation(key, x.shape[0])
    return x[perm], y[perm]


def _two_classes(
    key: jax.Array, noise: jax.Array, outer: jax.Array, inner: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Class 0 (the ``outer`` points) then class 1 (``inner``), rows shuffled.

    Gaussian noise of standard deviation ``noise`` is added to every coordinate.
    """
    x = jnp.concatenate([outer, inner], axis=0)
    y = jnp.concatenate([jnp.zeros(len(outer), jnp.int32), jnp.ones(len(inner), jnp.int32)])
    noise_key, perm_key = jax.random.split(key)
    x = x + noise * jax.random.normal(noise_key, x.shape, dtype=jnp.float32)
    return _shuffle(perm_key, x, y)


def make_xor() -> tuple[jax.Array, jax.Array]:
    """The four points of the XOR problem.

    Returns:
      ``(x, y)``: ``x`` float32 of shape ``(4, 2)`` is ``[[0, 0], [0, 1], [1, 0], [1, 1]]`` and
      ``y`` int32 of shape ``(4,)`` is ``[0, 1, 1, 0]`` (the XOR of the two inputs).
    """
    x = jnp.asarray([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=jnp.float32)
    y = jnp.asarray([0, 1, 1, 0], dtype=jnp.int32)
    return x, y


@functools.partial(jax.jit, static_argnames=("n_samples",))
def _moons(key: jax.Array, noise: jax.Array, n_samples: int) -> tuple[jax.Array, jax.Array]:
    n_out = n_samples // 2
    n_in = n_samples - n_out
    t_out = jnp.linspace(0.0, jnp.pi, n_out, dtype=jnp.float32)
    t_in = jnp.linspace(0.0, jnp.pi, n_in, dtype=jnp.float32)
    outer = jnp.stack([jnp.cos(t_out), jnp.sin(t_out)], axis=1)
    inner = jnp.stack([1.0 - jnp.cos(t_in), 0.5 - jnp.sin(t_in)], axis=1)
    return _two_classes(key, noise, outer, inner)


def make_moons(
    key: jax.Array, n_samples: int = 500, noise: float = 0.1
) -> tuple[jax.Array, jax.Array]:
    """Two interleaving half circles, the geometry of scikit-learn's ``make_moons``.

    Class 0 (``n_samples // 2`` points) lies evenly spaced in angle on the upper half of the unit
    circle, ``(cos t, sin t)`` for ``t`` in ``[0, pi]``; class 1 (the other
    ``n_samples - n_samples // 2``) on the lower half circle ``(1 - cos t, 0.5 - sin t)``. Gaussian
    noise of standard deviation ``noise`` is added to every coordinate, and the rows are shuffled.

    Args:
      key: a ``jax.random`` key; the same key gives bit-identical arrays.
      n_samples: total number of points, an integer >= 2 (so both classes are present).
      noise: standard deviation of the Gaussian noise added to each coordinate, >= 0.

    Returns:
      ``(x, y)``: ``x`` float32 of shape ``(n_samples, 2)``, ``y`` int32 of shape
      ``(n_samples,)`` with values in ``{0, 1}``.

    Raises:
      ValueError: if ``n_samples`` is not an integer >= 2 or ``noise`` is negative or not finite.
    """
    n_samples = check_int("n_samples", n_samples, 2)
    noise = check_number("noise", noise, low=0.0, requirement=_NOISE_REQUIREMENT)
    return _moons(key, jnp.float32(noise), n_samples)


@functools.partial(jax.jit, static_argnames=("n_samples",))
def _circles(
    key: jax.Array, noise: jax.Array, factor: jax.Array, n_samples: int
) -> tuple[jax.Array, jax.Array]:
    n_out = n_samples // 2
    n_in = n_samples - n_out
    # endpoint=False so that the first and last points of a circle do not coincide.
    t_out = jnp.linspace(0.0, 2 * jnp.pi, n_out, endpoint=False, dtype=jnp.float32)
    t_in = jnp.linspace(0.0, 2 * jnp.pi, n_in, endpoint=False, dtype=jnp.float32)
    outer = jnp.stack([jnp.cos(t_out), jnp.sin(t_out)], axis=1)
    inner = factor * jnp.stack([jnp.cos(t_in), jnp.sin(t_in)], axis=1)
    return _two_classes(key, noise, outer, inner)


def make_circles(
    key: jax.Array, n_samples: int = 500, noise: float = 0.05, factor: float = 0.5
) -> tuple[jax.Array, jax.Array]:
    """Two concentric circles, the geometry of scikit-learn's ``make_circles``.

    Class 0 (``n_samples // 2`` points) lies evenly spaced on the unit circle, class 1 (the other
    ``n_samples - n_samples // 2``) on the circle of radius ``factor``. Gaussian noise of standard
    deviation ``noise`` is added to every coordinate, and the rows are shuffled.

    Args:
      key: a ``jax.random`` key; the same key gives bit-identical arrays.
      n_samples: total number of points, an integer >= 2 (so both classes are present).
      noise: standard deviation of the Gaussian noise added to each coordinate, >= 0.
      factor: radius of the inner circle relative to the outer one, in ``[0, 1)``.

    Returns:
      ``(x, y)``: ``x`` float32 of shape ``(n_samples, 2)``, ``y`` int32 of shape
      ``(n_samples,)`` with values in ``{0, 1}`` (0 = outer circle, 1 = inner circle).

    Raises:
      ValueError: if ``n_samples`` is not an integer >= 2, ``noise`` is negative or not finite,
        or ``factor`` is outside ``[0, 1)``.
    """
    n_samples = check_int("n_samples", n_samples, 2)
    noise = check_number("noise", noise, low=0.0, requirement=_NOISE_REQUIREMENT)
    factor = check_number("factor", factor, low=0.0, high=1.0)
    return _circles(key, jnp.float32(noise), jnp.float32(factor), n_samples)


@functools.partial(jax.jit, static_argnames=("n_samples", "num_classes"))
def _spirals(
    key: jax.Array, noise: jax.Array, n_samples: int, num_classes: int
) -> tuple[jax.Array, jax.Array]:
    noise_key, perm_key = jax.random.split(key)
    base, extra = divmod(n_samples, num_classes)
    sizes = [base + (1 if j < extra else 0) for j in range(num_classes)]
    # Each arm: radius from 0 to 1, angle sweeping 4 radians, offset by 4 radians per class.
    r = jnp.concatenate([jnp.linspace(0.0, 1.0, n, dtype=jnp.float32) for n in sizes])
    t = jnp.concatenate(
        [jnp.linspace(4.0 * j, 4.0 * (j + 1), n, dtype=jnp.float32) for j, n in enumerate(sizes)]
    )
    t = t + noise * jax.random.normal(noise_key, t.shape, dtype=jnp.float32)
    x = jnp.stack([r * jnp.sin(t), r * jnp.cos(t)], axis=1)
    y = jnp.concatenate([jnp.full(n, j, dtype=jnp.int32) for j, n in enumerate(sizes)])
    return _shuffle(perm_key, x, y)


def make_spirals(
    key: jax.Array, n_samples: int = 600, num_classes: int = 3, noise: float = 0.2
) -> tuple[jax.Array, jax.Array]:
    """Interleaved spiral arms, one per class (the classic CS231n spiral dataset).

    Class ``j`` has ``n_samples // num_classes`` points (the first ``n_samples % num_classes``
    classes get one more). Along its arm the radius grows evenly from 0 to 1 while the angle
    sweeps from ``4 j`` to ``4 (j + 1)`` radians; the point is ``(r sin t, r cos t)``. The noise
    is Gaussian with standard deviation ``noise`` added to the angle ``t`` (as in CS231n), not to
    the coordinates. The rows are shuffled.

    Args:
      key: a ``jax.random`` key; the same key gives bit-identical arrays.
      n_samples: total number of points, an integer >= ``num_classes`` (every class non-empty).
      num_classes: number of arms (classes), an integer >= 2.
      noise: standard deviation of the Gaussian noise added to each point's angle, >= 0.

    Returns:
      ``(x, y)``: ``x`` float32 of shape ``(n_samples, 2)`` inside the unit disc, ``y`` int32 of
      shape ``(n_samples,)`` with values in ``[0, num_classes)``.

    Raises:
      ValueError: if ``num_classes`` is not an integer >= 2, ``n_samples`` is not an integer
        >= ``num_classes``, or ``noise`` is negative or not finite.
    """
    num_classes = check_int("num_classes", num_classes, 2)
    n_samples = check_int("n_samples", n_samples, num_classes)
    noise = check_number("noise", noise, low=0.0, requirement=_NOISE_REQUIREMENT)
    return _spirals(key, jnp.float32(noise), n_samples, num_classes)
