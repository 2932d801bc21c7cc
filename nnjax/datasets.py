"""Datasets for training small networks: synthetic generators, bundled real data, splits, scaling.

Every dataset is batch-first: inputs ``x`` have shape ``(n_samples, n_features)`` and dtype float32,
labels ``y`` have shape ``(n_samples,)`` and dtype int32 and hold class indices ``0 .. K-1``.

* Synthetic, generated with ``jax.random`` only (no NumPy global RNG), bit-identical for the same
  key: :func:`make_xor`, :func:`make_moons`, :func:`make_circles`, :func:`make_spirals` (defined in
  :mod:`nnjax.synthetic`, re-exported here).
* Real, read offline from the copies bundled with scikit-learn (no network access):
  :func:`load_digits`, :func:`load_breast_cancer`, :func:`load_iris`.
* Preparation: :func:`train_test_split` (a random permutation chosen by a key) and
  :func:`standardize` (zero mean, unit variance with the training split's statistics only).
* :func:`load_dataset` builds any of the above by name (see :data:`DATASETS`), splits it and
  standardizes it, returning a :class:`Dataset`, in one compiled program with the bits of those
  steps run one by one (``nnjax._staging``); :func:`dimensions` tells its sizes beforehand.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import math
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nnjax import _staging
from nnjax._validation import check_all_finite, check_choice, check_number
from nnjax.synthetic import make_circles, make_moons, make_spirals, make_xor

__all__ = [
    "DATASETS",
    "SYNTHETIC_DATASETS",
    "Dataset",
    "dimensions",
    "load_breast_cancer",
    "load_dataset",
    "load_digits",
    "load_iris",
    "make_circles",
    "make_moons",
    "make_spirals",
    "make_xor",
    "source_arrays",
    "split_arrays",
    "standardize",
    "train_test_split",
]

_NUM_CLASSES = {
    "xor": 2,
    "moons": 2,
    "circles": 2,
    "spirals": 3,
    "digits": 10,
    "breast_cancer": 2,
    "iris": 3,
}

DATASETS: tuple[str, ...] = tuple(_NUM_CLASSES)
"""Names accepted by :func:`load_dataset`."""

_SYNTHETIC = {
    "moons": make_moons,
    "circles": make_circles,
    "spirals": functools.partial(make_spirals, num_classes=_NUM_CLASSES["spirals"]),
}
"""The generators whose size ``load_dataset(..., n_samples=...)`` chooses."""

SYNTHETIC_DATASETS: dict[str, int] = {
    name: inspect.signature(make).parameters["n_samples"].default
    for name, make in _SYNTHETIC.items()
}
"""The synthetic datasets, whose size ``load_dataset`` takes as ``n_samples``, and their default
sizes."""


class Dataset(NamedTuple):
    """A dataset split into training and test parts, ready for a classifier.

    Regression data (``nnjax.run_data``) holds float32 targets ``(n, 1)`` in place of the labels,
    and ``num_classes`` 0.

    Attributes:
      name: the dataset's name, one of :data:`DATASETS` (or a data file's).
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
# Real datasets bundled with scikit-learn
# --------------------------------------------------------------------------------------------------


_BUNDLED = {"digits": "digits.csv.gz", "breast_cancer": "breast_cancer.csv", "iris": "iris.csv"}


def _bundled_file(name: str) -> pathlib.Path | None:
    """scikit-learn's copy of a dataset's file, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = pathlib.Path(spec.submodule_search_locations[0]) / "datasets" / "data" / _BUNDLED[name]
    return path if path.is_file() else None


@functools.cache
def _sklearn_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one of scikit-learn's bundled datasets (once; later calls reuse the arrays).

    The CSV files are parsed as scikit-learn's loaders parse them (float64 features, the label
    in the last column; iris and breast cancer start with a header row), without importing
    scikit-learn, which takes about a second; its loaders are the fallback.
    """
    path = _bundled_file(name)
    if path is not None:
        data = np.loadtxt(path, delimiter=",", skiprows=0 if name == "digits" else 1)
        x, y = data[:, :-1], data[:, -1].astype(np.int64)
    else:
        from sklearn import datasets as skd  # imported lazily: importing sklearn takes a while

        loaders = {"digits": skd.load_digits, "breast_cancer": skd.load_breast_cancer}
        x, y = (loaders | {"iris": skd.load_iris})[name](return_X_y=True)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _sklearn_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A bundled dataset as float32 inputs and int32 labels, cast on the host."""
    x, y = _sklearn_data(name)
    return x.astype(np.float32), y.astype(np.int32)


def _load_sklearn(name: str) -> tuple[jax.Array, jax.Array]:
    x, y = _sklearn_arrays(name)
    return jnp.asarray(x), jnp.asarray(y)


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


def _check_test_fraction(test_fraction: float) -> float:
    """Returns ``test_fraction`` as a float, raising ValueError unless it lies in ``(0, 1)``."""
    return check_number("test_fraction", test_fraction, low=0.0, high=1.0, low_inclusive=False)


@functools.partial(jax.jit, static_argnames=("n_test",))
@functools.partial(jax.jit, static_argnums=3)  # one program, not one per operation
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
    test_fraction = _check_test_fraction(test_fraction)
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
    check_all_finite("x", x)
    check_all_finite("y", y)
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
    check_all_finite("x_train", x_train)
    check_all_finite("x_test", x_test)
    return _standardize(x_train, x_test)


# --------------------------------------------------------------------------------------------------
# By name
# --------------------------------------------------------------------------------------------------


def dimensions(name: str) -> tuple[int, int]:
    """The number of features and of classes of the dataset ``name``, before it is built.

    Args:
      name: one of :data:`DATASETS`.

    Returns:
      ``(n_features, num_classes)``, e.g. ``(64, 10)`` for ``"digits"``.
    """
    check_choice("dataset name", name, DATASETS)
    n_features = _sklearn_data(name)[0].shape[1] if name in _BUNDLED else 2
    return n_features, _NUM_CLASSES[name]


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
    test_fraction = _check_test_fraction(test_fraction)
    if n_samples is not None and name not in _SYNTHETIC:
        raise ValueError(
            f"n_samples applies only to the synthetic datasets {', '.join(_SYNTHETIC)}; "
            f"{name!r} has a fixed size, so n_samples must be None, got {n_samples!r}"
        )

    arrays = split_arrays(key, *source_arrays(name), name, test_fraction, n_samples)
    return Dataset(name, *arrays, _NUM_CLASSES[name])


def source_arrays(name: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """What ``split_arrays`` splits: a bundled dataset's ``(x, y)``, float32 and int32 NumPy
    arrays, or ``(None, None)`` for XOR and the synthetic datasets, which it builds itself."""
    return _sklearn_arrays(name) if name in _BUNDLED else (None, None)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def split_arrays(
    key: jax.Array,
    x: np.ndarray | None,
    y: np.ndarray | None,
    name: str,
    test_fraction: float,
    n_samples: int | None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``load_dataset``'s arrays, in one compiled program that may be part of a larger one.

    Unchecked: ``load_dataset`` checks its arguments first. Its operations are replayed behind
    optimization barriers (``_staging``), so they give the bits they give one by one.

    Args:
      key: the ``jax.random`` key of ``load_dataset``.
      x, y: ``source_arrays(name)``.
      name, test_fraction, n_samples: as ``load_dataset``'s.

    Returns:
      ``(x_train, y_train, x_test, y_test)``.
    """
    arrays = functools.partial(_split_arrays, name, test_fraction, n_samples)
    return _staging.replay(arrays, key, x, y)


def _split_arrays(
    name: str,
    test_fraction: float,
    n_samples: int | None,
    key: jax.Array,
    x: jax.Array | None,
    y: jax.Array | None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """A bundled ``(x, y)``, or the synthetic data of one half of ``key``, split by the other
    half and standardized; XOR's four points, twice."""
    if name == "xor":
        x, y = make_xor()
        return x, y, x, y
    data_key, split_key = jax.random.split(key)
    if name in _SYNTHETIC:
        kwargs = {} if n_samples is None else {"n_samples": n_samples}
        x, y = _SYNTHETIC[name](data_key, **kwargs)
    x_train, y_train, x_test, y_test = train_test_split(split_key, x, y, test_fraction)
    x_train, x_test, _, _ = standardize(x_train, x_test)
    return x_train, y_train, x_test, y_test
