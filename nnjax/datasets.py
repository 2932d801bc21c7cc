"""Datasets for training small networks: synthetic generators, bundled real data, splits, scaling.

Every dataset is batch-first: inputs ``x`` have shape ``(n_samples, n_features)`` and dtype float32,
labels ``y`` have shape ``(n_samples,)`` and dtype int32 and hold class indices ``0 .. K-1``.

* Synthetic, generated with ``jax.random`` only (no NumPy global RNG), bit-identical for the same
  key: :func:`make_xor`, :func:`make_moons`, :func:`make_circles`, :func:`make_spirals`.
* Real, read offline from the copies bundled with scikit-learn (no network access):
  :func:`load_digits`, :func:`load_breast_cancer`, :func:`load_iris`.
* Preparation: :func:`train_test_split` (a random permutation chosen by a key) and
  :func:`standardize` (zero mean, unit variance with the training split's statistics only).
* :func:`load_dataset` builds any of the above by name (see :data:`DATASETS`), splits it and
  standardizes it, returning a :class:`Dataset`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nnjax._validation import check_choice, check_in_range, check_int

__all__ = [
    "DATASETS",
    "Dataset",
    "load_breast_cancer",
    "load_dataset",
    "load_digits",
    "load_iris",
    "make_circles",
    "make_moons",
    "make_spirals",
    "make_xor",
    "standardize",
    "train_test_split",
]

DATASETS: tuple[str, ...] = (
    "xor",
    "moons",
    "circles",
    "spirals",
    "digits",
    "breast_cancer",
    "iris",
)
"""Names accepted by :func:`load_dataset`."""

_SYNTHETIC = ("moons", "circles", "spirals")


class Dataset(NamedTuple):
    """A dataset split into training and test parts, ready for a classifier.

    Attributes:
        name: the dataset's name, one of :data:`DATASETS`.
        x_train: training inputs, float32 of shape ``(n_train, n_features)``.
        y_train: training labels, int32 of shape ``(n_train,)`` in ``[0, num_classes)``.
        x_test: test inputs, float32 of shape ``(n_test, n_features)``.
        y_test: test labels, int32 of shape ``(n_test,)`` in ``[0, num_classes)``.
        num_classes: the number of classes ``K``.
    """

    name: str
    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    num_classes: int


# --------------------------------------------------------------------------------------------------
# Argument checks (plain Python, run before anything is traced)
# --------------------------------------------------------------------------------------------------


def _check_fraction(name: str, value: Any, *, low_inclusive: bool) -> float:
    """Returns ``value`` as a float, raising ValueError unless it lies in ``[0, 1)`` or ``(0, 1)``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    check_in_range(name, number, low=0.0, high=1.0, low_inclusive=low_inclusive)
    return number


def _check_noise(noise: Any) -> float:
    """Returns ``noise`` as a float, raising ValueError unless it is finite and >= 0."""
    try:
        value = float(noise)
    except (TypeError, ValueError):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {value!r}")
    return value


def _check_finite(name: str, x: jax.Array) -> None:
    """Raises ValueError if ``x`` holds NaN or inf, naming every column and the first row with one.

    ``x`` has shape ``(n, ...)``; a column is one position on the axes after the first (for
    ``(n, n_features)``, a feature). The values are read on the host with NumPy; a traced ``x``
    (inside ``jax.jit``) has no values yet and passes unchecked.
    """
    try:
        values = np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return
    if not np.issubdtype(values.dtype, np.inexact):
        return  # integers and bools are always finite
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


def _shuffle(key: jax.Array, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Applies one random permutation (chosen by ``key``) to the rows of ``x`` and ``y``."""
    perm = jax.random.permutation(key, x.shape[0])
    return x[perm], y[perm]


# --------------------------------------------------------------------------------------------------
# Synthetic datasets
# --------------------------------------------------------------------------------------------------


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
    x = jnp.concatenate([outer, inner], axis=0)
    y = jnp.concatenate([jnp.zeros(n_out, jnp.int32), jnp.ones(n_in, jnp.int32)])
    noise_key, perm_key = jax.random.split(key)
    x = x + noise * jax.random.normal(noise_key, x.shape, dtype=jnp.float32)
    return _shuffle(perm_key, x, y)


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
    noise = _check_noise(noise)
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
    x = jnp.concatenate([outer, inner], axis=0)
    y = jnp.concatenate([jnp.zeros(n_out, jnp.int32), jnp.ones(n_in, jnp.int32)])
    noise_key, perm_key = jax.random.split(key)
    x = x + noise * jax.random.normal(noise_key, x.shape, dtype=jnp.float32)
    return _shuffle(perm_key, x, y)


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
    noise = _check_noise(noise)
    factor = _check_fraction("factor", factor, low_inclusive=True)
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
    noise = _check_noise(noise)
    return _spirals(key, jnp.float32(noise), n_samples, num_classes)


# --------------------------------------------------------------------------------------------------
# Real datasets bundled with scikit-learn
# --------------------------------------------------------------------------------------------------


@functools.cache
def _sklearn_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one of scikit-learn's bundled datasets (once; later calls reuse the arrays)."""
    from sklearn import datasets as skd  # imported lazily: importing sklearn takes a while

    loader = {
        "digits": skd.load_digits,
        "breast_cancer": skd.load_breast_cancer,
        "iris": skd.load_iris,
    }[name]
    x, y = loader(return_X_y=True)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _load_sklearn(name: str) -> tuple[jax.Array, jax.Array]:
    x, y = _sklearn_data(name)
    return jnp.asarray(x, dtype=jnp.float32), jnp.asarray(y, dtype=jnp.int32)


def load_digits() -> tuple[jax.Array, jax.Array]:
    """The UCI handwritten digits bundled with scikit-learn (offline).

    Each sample is an 8x8 image flattened row by row into 64 pixel intensities in ``[0, 16]``.
    Some pixels (at the image border) are 0 in every sample, so their standard deviation is 0.

    Returns:
        ``(x, y)``: ``x`` float32 of shape ``(1797, 64)``, ``y`` int32 of shape ``(1797,)`` with
        the digit ``0 .. 9`` (10 classes).
    """
    return _load_sklearn("digits")


def load_breast_cancer() -> tuple[jax.Array, jax.Array]:
    """The Wisconsin diagnostic breast cancer data bundled with scikit-learn (offline).

    Returns:
        ``(x, y)``: ``x`` float32 of shape ``(569, 30)`` (30 real-valued features of cell nuclei,
        on very different scales), ``y`` int32 of shape ``(569,)`` with 0 = malignant,
        1 = benign (2 classes).
    """
    return _load_sklearn("breast_cancer")


def load_iris() -> tuple[jax.Array, jax.Array]:
    """Fisher's iris data bundled with scikit-learn (offline).

    Returns:
        ``(x, y)``: ``x`` float32 of shape ``(150, 4)`` (sepal length, sepal width, petal length,
        petal width in cm), ``y`` int32 of shape ``(150,)`` with 0 = setosa, 1 = versicolor,
        2 = virginica (3 classes, 50 samples each).
    """
    return _load_sklearn("iris")


# --------------------------------------------------------------------------------------------------
# Splitting and scaling
# --------------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("n_test",))
def _split(
    key: jax.Array, x: jax.Array, y: jax.Array, n_test: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    perm = jax.random.permutation(key, x.shape[0])
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def train_test_split(
    key: jax.Array, x: jax.Array, y: jax.Array, test_fraction: float = 0.2
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Splits rows into a training and a test part by a random permutation chosen by ``key``.

    The test part gets ``ceil(test_fraction * n)`` rows (as scikit-learn rounds), the training
    part the rest. Every row lands in exactly one part; none is lost or repeated.

    Args:
        key: a ``jax.random`` key choosing the permutation; the same key gives the same split.
        x: inputs of shape ``(n, ...)``, usually ``(n, n_features)``.
        y: labels of shape ``(n,)``.
        test_fraction: the fraction of rows put in the test part, strictly between 0 and 1.

    Returns:
        ``(x_train, y_train, x_test, y_test)`` with shapes ``(n_train, ...)``, ``(n_train,)``,
        ``(n_test, ...)``, ``(n_test,)`` where ``n_train + n_test == n``. The dtypes are those of
        ``jnp.asarray(x)`` and ``jnp.asarray(y)``: unchanged for float32 and int32 inputs, but
        float64 and int64 inputs come back as float32 and int32 (JAX's default) unless
        ``jax_enable_x64`` is on.

    Raises:
        ValueError: if ``test_fraction`` is not in ``(0, 1)``, ``y`` is not 1-D, ``x`` and ``y``
            have different numbers of rows, either part would be empty, or ``x`` or ``y`` holds
            NaN or inf (the message names the column of ``x``; checked only for concrete arrays,
            not traced ones inside ``jax.jit``).
    """
    test_fraction = _check_fraction("test_fraction", test_fraction, low_inclusive=False)
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim < 1:
        raise ValueError(f"x must have shape (n_samples, ...), got a scalar of shape {x.shape}")
    if y.ndim != 1:
        raise ValueError(f"y must have shape (n_samples,), got shape {y.shape}")
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(
            f"x and y must have the same number of rows, got {n} rows in x and {y.shape[0]} in y"
        )
    _check_finite("x", x)
    _check_finite("y", y)
    # Rounded first so that float error (0.28 * 25 == 7.000000000000001) does not add a row.
    n_test = math.ceil(round(test_fraction * n, 9))
    n_train = n - n_test
    if n_test == 0 or n_train == 0:
        raise ValueError(
            f"test_fraction={test_fraction} of {n} samples leaves {n_train} training and "
            f"{n_test} test samples; both splits must be non-empty"
        )
    return _split(key, x, y, n_test)


@jax.jit
def _standardize(
    x_train: jax.Array, x_test: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    mean = jnp.mean(x_train, axis=0)
    std = jnp.std(x_train, axis=0)
    # A feature equal in every training row is constant: exactly, not up to rounding (the float
    # mean of equal numbers can differ from them in the last bit, which would leave a tiny nonzero
    # std and blow rounding error up to +-1). Its mean is set to the value and its std to 1.
    constant = jnp.all(x_train == x_train[:1], axis=0) | (std == 0)
    mean = jnp.where(constant, x_train[0], mean)
    std = jnp.where(constant, jnp.ones_like(std), std)
    x_train_std = (x_train - mean[None]) / std[None]
    x_test_std = (x_test - mean[None]) / std[None]
    return x_train_std, x_test_std, mean, std


def standardize(
    x_train: jax.Array, x_test: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Scales each feature to zero mean and unit variance using the training split's statistics.

    ``mean`` and ``std`` (population standard deviation, ``ddof=0``) are computed over the rows of
    ``x_train`` only, then applied to both splits: ``(x - mean) / std``. The test split is never
    looked at, so no information leaks from it into training.

    A constant feature (the same value in every training row, so std 0, e.g. the always-zero
    border pixels of the digits) would give 0/0 = NaN. For it ``std`` is taken to be 1 and
    ``mean`` is that value, so the feature becomes exactly 0 in the training split and is merely
    shifted in the test split: never NaN or inf.

    Args:
        x_train: training inputs of shape ``(n_train, n_features)`` (or ``(n_train, ...)``), at
            least one row. Integer inputs are converted to float32.
        x_test: test inputs of shape ``(n_test, n_features)``, the same trailing shape.

    Returns:
        ``(x_train_std, x_test_std, mean, std)``: the scaled splits with the input shapes, and the
        per-feature ``mean`` and ``std`` of shape ``(n_features,)`` (``std`` 1 for constant
        features).

    Raises:
        ValueError: if ``x_train`` has no rows, the splits' feature shapes differ, or either split
            holds NaN or inf (one NaN would otherwise make its column's mean, and so the whole
            column of both splits, NaN). The message names the split and the column; the check
            runs only for concrete arrays, not traced ones inside ``jax.jit``.
    """
    x_train = jnp.asarray(x_train)
    x_test = jnp.asarray(x_test)
    if not jnp.issubdtype(x_train.dtype, jnp.floating):
        x_train = x_train.astype(jnp.float32)
    if not jnp.issubdtype(x_test.dtype, jnp.floating):
        x_test = x_test.astype(jnp.float32)
    if x_train.ndim < 1 or x_train.shape[0] == 0:
        raise ValueError(
            f"x_train must have at least one row to compute statistics, got shape {x_train.shape}"
        )
    if x_test.ndim != x_train.ndim or x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(
            f"x_train has shape {x_train.shape} but x_test has shape {x_test.shape}; "
            "their feature shapes (all but the first axis) must match"
        )
    _check_finite("x_train", x_train)
    _check_finite("x_test", x_test)
    return _standardize(x_train, x_test)


# --------------------------------------------------------------------------------------------------
# By name
# --------------------------------------------------------------------------------------------------


def load_dataset(
    name: str,
    key: jax.Array,
    *,
    test_fraction: float = 0.2,
    n_samples: int | None = None,
) -> Dataset:
    """Builds a dataset by name, splits it by ``key`` and standardizes it with train statistics.

    ``key`` is split in two: one half generates the synthetic data, the other chooses the
    train/test permutation (:func:`train_test_split`); the inputs are then scaled by
    :func:`standardize`.

    XOR is the exception: its four points are both the training and the test split (there is
    nothing to hold out), they are not standardized (they stay 0/1), and ``key`` is not used.

    Args:
        name: one of :data:`DATASETS`: ``"xor"``, ``"moons"``, ``"circles"``, ``"spirals"``,
            ``"digits"``, ``"breast_cancer"``, ``"iris"``.
        key: a ``jax.random`` key; the same key gives the same dataset and split.
        test_fraction: the fraction of samples held out for testing, strictly between 0 and 1.
        n_samples: the total number of points for the synthetic datasets (``"moons"``,
            ``"circles"``, ``"spirals"``); None uses each generator's default. The other
            datasets have a fixed size and accept only None.

    Returns:
        A :class:`Dataset` with float32 inputs of shape ``(n, n_features)``, int32 labels of
        shape ``(n,)`` and ``num_classes``.

    Raises:
        ValueError: for an unknown ``name`` (the message lists the choices), ``test_fraction``
            outside ``(0, 1)``, a bad ``n_samples``, or ``n_samples`` given for a fixed-size
            dataset.
    """
    check_choice("dataset name", name, DATASETS)
    test_fraction = _check_fraction("test_fraction", test_fraction, low_inclusive=False)
    if n_samples is not None and name not in _SYNTHETIC:
        raise ValueError(
            f"n_samples applies only to the synthetic datasets {', '.join(_SYNTHETIC)}; "
            f"{name!r} has a fixed size, so n_samples must be None, got {n_samples!r}"
        )

    if name == "xor":
        x, y = make_xor()
        return Dataset(name, x, y, x, y, 2)

    data_key, split_key = jax.random.split(key)
    kwargs = {} if n_samples is None else {"n_samples": n_samples}
    if name == "moons":
        x, y = make_moons(data_key, **kwargs)
        num_classes = 2
    elif name == "circles":
        x, y = make_circles(data_key, **kwargs)
        num_classes = 2
    elif name == "spirals":
        num_classes = 3
        x, y = make_spirals(data_key, num_classes=num_classes, **kwargs)
    elif name == "digits":
        x, y = load_digits()
        num_classes = 10
    elif name == "breast_cancer":
        x, y = load_breast_cancer()
        num_classes = 2
    else:  # iris
        x, y = load_iris()
        num_classes = 3

    x_train, y_train, x_test, y_test = train_test_split(split_key, x, y, test_fraction)
    x_train, x_test, _, _ = standardize(x_train, x_test)
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes)
