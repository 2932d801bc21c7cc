"""Tests of nnjax.datasets: shapes, determinism, geometry, splitting, scaling and bad input."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.datasets as skd

from nnjax import datasets as ds

KEY = jax.random.key(0)
OTHER_KEY = jax.random.key(1)
N = 101  # odd, so the two-class generators split it unevenly (50 / 51)

GENERATORS = {
    "moons": ds.make_moons,
    "circles": ds.make_circles,
    "spirals": ds.make_spirals,
}
LOADERS = {
    "digits": ds.load_digits,
    "breast_cancer": ds.load_breast_cancer,
    "iris": ds.load_iris,
}


def assert_same_points(x, y, x_ref, y_ref, atol: float = 1e-5) -> None:
    """Asserts two labelled point sets are equal up to row order (one-to-one, within ``atol``)."""
    x, y = np.asarray(x, np.float64), np.asarray(y)
    x_ref, y_ref = np.asarray(x_ref, np.float64), np.asarray(y_ref)
    assert x.shape == x_ref.shape
    np.testing.assert_array_equal(np.bincount(y), np.bincount(y_ref))
    for label in np.unique(y_ref):
        a, b = x[y == label], x_ref[y_ref == label]
        dist = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
        nearest = dist.argmin(axis=1)
        assert dist.min(axis=1).max() < atol
        np.testing.assert_array_equal(np.sort(nearest), np.arange(len(b)))  # one-to-one


# --------------------------------------------------------------------------------------------------
# Synthetic datasets
# --------------------------------------------------------------------------------------------------


def test_make_xor_points_and_labels():
    x, y = ds.make_xor()
    assert x.dtype == jnp.float32 and y.dtype == jnp.int32
    x, y = np.asarray(x), np.asarray(y)
    np.testing.assert_array_equal(x, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(y, [0, 1, 1, 0])
    np.testing.assert_array_equal(y, np.logical_xor(x[:, 0], x[:, 1]).astype(np.int32))


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_shapes_dtypes_labels_and_determinism(name):
    make = GENERATORS[name]
    x, y = make(KEY, N)
    num_classes = 3 if name == "spirals" else 2
    assert x.shape == (N, 2) and x.dtype == jnp.float32
    assert y.shape == (N,) and y.dtype == jnp.int32
    assert np.all(np.isfinite(x))
    assert set(np.asarray(y).tolist()) == set(range(num_classes))

    x_again, y_again = make(KEY, N)
    np.testing.assert_array_equal(x, x_again)  # bit-identical
    np.testing.assert_array_equal(y, y_again)

    x_other, y_other = make(OTHER_KEY, N)
    assert not np.array_equal(x, x_other)
    assert not np.array_equal(y, y_other)  # a different shuffle


@pytest.mark.parametrize("name", ["moons", "circles"])
def test_two_class_generators_are_balanced(name):
    _, y = GENERATORS[name](KEY, N)
    np.testing.assert_array_equal(np.bincount(np.asarray(y), minlength=2), [N // 2, N - N // 2])


def test_spirals_classes_are_balanced():
    _, y = ds.make_spirals(KEY, N, num_classes=3)
    np.testing.assert_array_equal(np.bincount(np.asarray(y)), [34, 34, 33])


def test_moons_geometry_matches_sklearn_without_noise():
    x, y = ds.make_moons(KEY, N, noise=0.0)
    x_sk, y_sk = skd.make_moons(N, noise=0.0, shuffle=False)
    assert_same_points(x, y, x_sk, y_sk)


def test_circles_geometry_matches_sklearn_without_noise():
    x, y = ds.make_circles(KEY, N, noise=0.0, factor=0.5)
    x_sk, y_sk = skd.make_circles(N, noise=0.0, factor=0.5, shuffle=False)
    assert_same_points(x, y, x_sk, y_sk)
    radius = np.linalg.norm(np.asarray(x), axis=1)
    np.testing.assert_allclose(radius[np.asarray(y) == 0], 1.0, rtol=1e-5)
    np.testing.assert_allclose(radius[np.asarray(y) == 1], 0.5, rtol=1e-5)


def test_spirals_geometry_matches_cs231n_without_noise():
    x, y = ds.make_spirals(KEY, N, num_classes=3, noise=0.0)
    expected_x, expected_y = [], []
    for j, per_class in enumerate([34, 34, 33]):  # CS231n's construction, randn * 0 for noise
        r = np.linspace(0.0, 1.0, per_class)
        t = np.linspace(j * 4, (j + 1) * 4, per_class)
        expected_x.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        expected_y.append(np.full(per_class, j))
    assert_same_points(x, y, np.concatenate(expected_x), np.concatenate(expected_y))


@pytest.mark.parametrize("name", ["moons", "circles"])
def test_noise_is_gaussian_with_the_requested_scale(name):
    # The same key gives the same shuffle whatever the noise, so the difference is the noise.
    noise = 0.3
    x_clean, y_clean = GENERATORS[name](KEY, N, noise=0.0)
    x_noisy, y_noisy = GENERATORS[name](KEY, N, noise=noise)
    np.testing.assert_array_equal(y_clean, y_noisy)
    residual = np.asarray(x_noisy - x_clean) / noise
    assert abs(residual.mean()) < 0.2
    assert 0.8 < residual.std() < 1.2


def test_spirals_noise_perturbs_the_angle_not_the_radius():
    x_clean, _ = ds.make_spirals(KEY, N, noise=0.0)
    x_noisy, _ = ds.make_spirals(KEY, N, noise=0.5)
    assert not np.allclose(x_clean, x_noisy)
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(x_clean), axis=1),
        np.linalg.norm(np.asarray(x_noisy), axis=1),
        atol=1e-5,
    )


@pytest.mark.parametrize(
    ("make", "kwargs", "match"),
    [
        (ds.make_moons, {"n_samples": 0}, r"n_samples must be an integer >= 2, got 0"),
        (ds.make_moons, {"n_samples": -5}, r"n_samples must be an integer >= 2, got -5"),
        (ds.make_moons, {"n_samples": 1}, r"n_samples must be an integer >= 2, got 1"),
        (ds.make_moons, {"n_samples": 2.5}, r"n_samples must be an integer"),
        (ds.make_moons, {"n_samples": True}, r"n_samples must be an integer"),
        (ds.make_moons, {"noise": -0.1}, r"noise must be a finite number >= 0, got -0\.1"),
        (ds.make_moons, {"noise": math.nan}, r"noise must be a finite number >= 0"),
        (ds.make_moons, {"noise": math.inf}, r"noise must be a finite number >= 0"),
        (ds.make_circles, {"n_samples": 0}, r"n_samples must be an integer >= 2"),
        (ds.make_circles, {"noise": -1.0}, r"noise must be a finite number >= 0"),
        (ds.make_circles, {"factor": 1.0}, r"factor must be in \[0, 1\), got 1\.0"),
        (ds.make_circles, {"factor": -0.1}, r"factor must be in \[0, 1\)"),
        (ds.make_circles, {"factor": None}, r"factor must be a number, got None"),
        (ds.make_spirals, {"num_classes": 1}, r"num_classes must be an integer >= 2, got 1"),
        (ds.make_spirals, {"n_samples": 2}, r"n_samples must be an integer >= 3, got 2"),
        (ds.make_spirals, {"noise": -0.2}, r"noise must be a finite number >= 0"),
    ],
)
def test_generators_reject_bad_arguments(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(KEY, **kwargs)


@pytest.mark.parametrize("n", [7, np.int64(7), np.array(7), jnp.int32(7)])
def test_counts_accept_integer_scalars_of_python_numpy_and_jax(n):
    x, y = ds.make_moons(KEY, n)
    assert x.shape == (7, 2) and y.shape == (7,)


@pytest.mark.parametrize("n", [np.True_, jnp.bool_(True), 7.0, np.float64(7.0), jnp.float32(7.0)])
def test_counts_reject_bools_and_floats(n):
    with pytest.raises(ValueError, match=r"n_samples must be an integer >= 2"):
        ds.make_moons(KEY, n)


# --------------------------------------------------------------------------------------------------
# Real datasets
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("load", "n", "features", "num_classes"),
    [
        (ds.load_digits, 1797, 64, 10),
        (ds.load_breast_cancer, 569, 30, 2),
        (ds.load_iris, 150, 4, 3),
    ],
)
def test_real_datasets_shapes_dtypes_and_labels(load, n, features, num_classes):
    x, y = load()
    assert x.shape == (n, features) and x.dtype == jnp.float32
    assert y.shape == (n,) and y.dtype == jnp.int32
    assert np.all(np.isfinite(x))
    assert set(np.asarray(y).tolist()) == set(range(num_classes))


def test_real_datasets_match_sklearn():
    x, y = ds.load_iris()
    x_sk, y_sk = skd.load_iris(return_X_y=True)
    np.testing.assert_array_equal(x, x_sk.astype(np.float32))
    np.testing.assert_array_equal(y, y_sk)


def test_digits_pixels_are_in_range_and_some_are_constant():
    x, _ = ds.load_digits()
    x = np.asarray(x)
    assert x.min() == 0.0 and x.max() == 16.0
    assert np.any(np.asarray(x).std(axis=0) == 0)  # the case standardize must handle


# --------------------------------------------------------------------------------------------------
# train_test_split
# --------------------------------------------------------------------------------------------------


def _indexed_data(n: int) -> tuple[jax.Array, jax.Array]:
    """Rows that name themselves: x[i] = [i, -i], y[i] = i."""
    i = np.arange(n, dtype=np.float32)
    return np.stack([i, -i], axis=1), np.arange(n, dtype=np.int32)


def test_split_sizes_and_dtypes():
    x, y = _indexed_data(N)
    x_tr, y_tr, x_te, y_te = ds.train_test_split(KEY, x, y, test_fraction=0.2)
    n_test = math.ceil(0.2 * N)  # 21
    assert x_te.shape == (n_test, 2) and y_te.shape == (n_test,)
    assert x_tr.shape == (N - n_test, 2) and y_tr.shape == (N - n_test,)
    assert x_tr.dtype == jnp.float32 and y_tr.dtype == jnp.int32


def test_split_dtypes_follow_jax_defaults():
    x, y = _indexed_data(N)
    x_tr, y_tr, x_te, y_te = ds.train_test_split(KEY, x.astype(np.float64), y.astype(np.int64))
    wide = jax.config.jax_enable_x64
    assert x_tr.dtype == x_te.dtype == (jnp.float64 if wide else jnp.float32)
    assert y_tr.dtype == y_te.dtype == (jnp.int64 if wide else jnp.int32)


def test_split_is_a_permutation_keeping_rows_paired():
    x, y = _indexed_data(N)
    x_tr, y_tr, x_te, y_te = ds.train_test_split(KEY, x, y, test_fraction=0.2)
    all_y = np.concatenate([np.asarray(y_tr), np.asarray(y_te)])
    np.testing.assert_array_equal(np.sort(all_y), np.arange(N))  # none lost, none repeated
    x_tr, y_tr, x_te, y_te = (np.asarray(a) for a in (x_tr, y_tr, x_te, y_te))
    np.testing.assert_array_equal(x_tr[:, 0], y_tr)
    np.testing.assert_array_equal(x_tr[:, 1], -y_tr)
    np.testing.assert_array_equal(x_te[:, 0], y_te)
    assert not np.array_equal(np.sort(np.asarray(y_te)), np.arange(N - 21, N))  # shuffled


def test_split_is_deterministic_by_key():
    x, y = _indexed_data(N)
    first = ds.train_test_split(KEY, x, y, test_fraction=0.2)
    again = ds.train_test_split(KEY, x, y, test_fraction=0.2)
    other = ds.train_test_split(OTHER_KEY, x, y, test_fraction=0.2)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])


def test_split_size_ignores_float_rounding():
    assert 0.28 * 25 > 7  # 7.000000000000001: a plain ceil would give 8 test rows
    x, y = _indexed_data(25)
    _, y_tr, _, y_te = ds.train_test_split(KEY, x, y, test_fraction=0.28)
    assert y_te.shape == (7,) and y_tr.shape == (18,)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_split_rejects_fraction_outside_open_unit_interval(fraction):
    x, y = _indexed_data(10)
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        ds.train_test_split(KEY, x, y, test_fraction=fraction)


def test_split_rejects_non_numeric_fraction():
    x, y = _indexed_data(10)
    with pytest.raises(ValueError, match=r"test_fraction must be a number, got 'half'"):
        ds.train_test_split(KEY, x, y, test_fraction="half")


def test_split_rejects_mismatched_rows():
    x, _ = _indexed_data(10)
    _, y = _indexed_data(9)
    with pytest.raises(ValueError, match=r"same number of rows, got 10 rows in x and 9 in y"):
        ds.train_test_split(KEY, x, y)


def test_split_rejects_non_vector_labels():
    x, y = _indexed_data(10)
    with pytest.raises(ValueError, match=r"y must have shape \(n_samples,\), got shape \(10, 1\)"):
        ds.train_test_split(KEY, x, y[:, None])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_split_rejects_non_finite_inputs_naming_the_column(bad):
    x, y = _indexed_data(10)
    x[6, 1] = bad
    with pytest.raises(
        ValueError, match=r"x holds non-finite values .* column 1 \(first in row 6\)"
    ):
        ds.train_test_split(KEY, x, y)
    x, _ = _indexed_data(10)
    y = y.astype(np.float32)
    y[2] = bad
    with pytest.raises(ValueError, match=r"y holds non-finite values .* row 2"):
        ds.train_test_split(KEY, x, y)


@pytest.mark.parametrize(("n", "fraction"), [(1, 0.5), (3, 0.9)])
def test_split_rejects_an_empty_training_split(n, fraction):
    x, y = _indexed_data(n)
    with pytest.raises(ValueError, match=r"leaves 0 training .* both splits must be non-empty"):
        ds.train_test_split(KEY, x, y, test_fraction=fraction)


# --------------------------------------------------------------------------------------------------
# standardize
# --------------------------------------------------------------------------------------------------


def _scaled_data() -> tuple[np.ndarray, np.ndarray]:
    """Train (64 rows) and test (16 rows) inputs with five features.

    Features 0-2 vary, with very different means and scales (and other statistics in the test
    split); feature 3 is 0 and feature 4 is 0.1 in every training row. 0.1 is not exactly
    representable, so the float32 mean of 64 copies of it need not equal it.
    """
    rng = np.random.default_rng(0)
    scale = np.array([1.0, 10.0, 0.01])
    offset = np.array([5.0, -20.0, 0.3])
    x_train = np.zeros((64, 5), np.float32)
    x_train[:, :3] = rng.normal(size=(64, 3)) * scale + offset
    x_train[:, 4] = 0.1
    x_test = np.zeros((16, 5), np.float32)
    x_test[:, :3] = 3.0 * rng.normal(size=(16, 3)) * scale + 2.0 * offset
    x_test[:, 3] = 1.0
    x_test[:, 4] = 0.1
    return x_train, x_test


def test_standardize_gives_train_zero_mean_unit_std():
    x_train, x_test = _scaled_data()
    x_tr, x_te, mean, std = ds.standardize(x_train, x_test)
    assert x_tr.shape == x_train.shape and x_te.shape == x_test.shape
    assert x_tr.dtype == jnp.float32 and x_te.dtype == jnp.float32
    assert mean.shape == (5,) and std.shape == (5,)
    x_tr = np.asarray(x_tr, np.float64)
    np.testing.assert_allclose(x_tr.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_tr[:, :3].std(axis=0), 1.0, rtol=1e-4)


def test_standardize_uses_train_statistics_only():
    x_train, x_test = _scaled_data()
    _, x_te, mean, std = ds.standardize(x_train, x_test)
    x_te, mean, std = np.asarray(x_te), np.asarray(mean), np.asarray(std)
    train64 = np.asarray(x_train[:, :3], np.float64)
    np.testing.assert_allclose(mean[:3], train64.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(std[:3], train64.std(axis=0), rtol=1e-4)
    expected_test = (np.asarray(x_test[:, :3], np.float64) - train64.mean(0)) / train64.std(0)
    np.testing.assert_allclose(x_te[:, :3], expected_test, rtol=1e-4, atol=1e-4)
    # The test split has other statistics, and changing it changes nothing about the scaling.
    assert np.all(np.abs(x_te[:, :3].mean(axis=0)) > 0.5)
    _, _, mean2, std2 = ds.standardize(x_train, x_test * 100.0)
    np.testing.assert_array_equal(mean, mean2)
    np.testing.assert_array_equal(std, std2)


def test_standardize_constant_features_give_no_nan():
    x_train, x_test = _scaled_data()
    x_tr, x_te, mean, std = ds.standardize(x_train, x_test)
    x_tr, x_te, mean, std = (np.asarray(a) for a in (x_tr, x_te, mean, std))
    assert np.all(np.isfinite(x_tr)) and np.all(np.isfinite(x_te))
    np.testing.assert_array_equal(std[3:], [1.0, 1.0])
    np.testing.assert_array_equal(mean[3:], x_train[0, 3:])
    np.testing.assert_array_equal(x_tr[:, 3:], 0.0)  # exactly, not rounding noise
    np.testing.assert_array_equal(x_te[:, 3], 1.0)  # shifted by the train value, not scaled
    np.testing.assert_array_equal(x_te[:, 4], 0.0)


def test_standardize_digits_has_no_nan():
    data = ds.load_dataset("digits", KEY)
    x_tr, x_te = np.asarray(data.x_train), np.asarray(data.x_test)
    assert np.all(np.isfinite(x_tr)) and np.all(np.isfinite(x_te))
    constant = x_tr.std(axis=0) == 0
    assert constant.any()  # the always-zero border pixels
    np.testing.assert_array_equal(x_tr[:, constant], 0.0)


def test_standardize_rejects_empty_train():
    with pytest.raises(ValueError, match=r"x_train must have at least one row"):
        ds.standardize(np.zeros((0, 3), np.float32), np.zeros((4, 3), np.float32))


@pytest.mark.parametrize("split", ["x_train", "x_test"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_standardize_rejects_non_finite_inputs_naming_split_and_columns(split, bad):
    data = dict(zip(("x_train", "x_test"), _scaled_data(), strict=True))
    data[split][3, 2] = bad
    data[split][5, 0] = bad
    with pytest.raises(
        ValueError, match=rf"{split} holds non-finite .* columns 0, 2 \(first in row 3\)"
    ):
        ds.standardize(**data)


def test_standardize_under_jit_matches_eager():
    # Traced inputs cannot be checked for NaN on the host; the check is skipped, not an error.
    x_train, x_test = _scaled_data()
    eager = ds.standardize(x_train, x_test)
    traced = jax.jit(ds.standardize)(x_train, x_test)
    for a, b in zip(eager, traced, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_standardize_rejects_mismatched_features():
    with pytest.raises(ValueError, match=r"feature shapes .* must match"):
        ds.standardize(np.zeros((5, 3), np.float32), np.zeros((4, 2), np.float32))


# --------------------------------------------------------------------------------------------------
# load_dataset
# --------------------------------------------------------------------------------------------------

EXPECTED = {  # name: (total samples at n_samples=N for synthetic, features, classes)
    "moons": (N, 2, 2),
    "circles": (N, 2, 2),
    "spirals": (N, 2, 3),
    "digits": (1797, 64, 10),
    "breast_cancer": (569, 30, 2),
    "iris": (150, 4, 3),
}


def test_dataset_names():
    assert ds.DATASETS == (
        "xor",
        "moons",
        "circles",
        "spirals",
        "digits",
        "breast_cancer",
        "iris",
    )
    assert set(EXPECTED) | {"xor"} == set(ds.DATASETS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_dataset_splits_and_standardizes(name):
    total, features, num_classes = EXPECTED[name]
    n_samples = N if name in GENERATORS else None
    data = ds.load_dataset(name, KEY, test_fraction=0.2, n_samples=n_samples)
    assert isinstance(data, ds.Dataset)
    assert data.name == name and data.num_classes == num_classes
    n_test = math.ceil(0.2 * total)
    assert data.x_train.shape == (total - n_test, features)
    assert data.x_test.shape == (n_test, features)
    assert data.y_train.shape == (total - n_test,) and data.y_test.shape == (n_test,)
    assert data.x_train.dtype == jnp.float32 and data.y_train.dtype == jnp.int32
    assert data.x_test.dtype == jnp.float32 and data.y_test.dtype == jnp.int32
    for y in (np.asarray(data.y_train), np.asarray(data.y_test)):
        assert y.min() >= 0 and y.max() < num_classes
    assert np.all(np.isfinite(data.x_train)) and np.all(np.isfinite(data.x_test))
    x_tr = np.asarray(data.x_train, np.float64)
    varying = x_tr.std(axis=0) > 0
    np.testing.assert_allclose(x_tr.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(x_tr.std(axis=0)[varying], 1.0, rtol=1e-3)

    # The raw split, rebuilt as documented: one half of the key makes the data, the other splits.
    data_key, split_key = jax.random.split(KEY)
    x, y = GENERATORS[name](data_key, n_samples) if name in GENERATORS else LOADERS[name]()
    raw_tr, y_tr, raw_te, y_te = (
        np.asarray(a) for a in ds.train_test_split(split_key, x, y, test_fraction=0.2)
    )
    np.testing.assert_array_equal(data.y_train, y_tr)
    np.testing.assert_array_equal(data.y_test, y_te)
    # Train statistics in float64; a constant training column keeps std 1, mean its value.
    raw_tr, raw_te = raw_tr.astype(np.float64), raw_te.astype(np.float64)
    constant = np.all(raw_tr == raw_tr[:1], axis=0)
    mean_train = np.where(constant, raw_tr[0], raw_tr.mean(axis=0))
    std_train = np.where(constant, 1.0, raw_tr.std(axis=0))
    expected_test = (raw_te - mean_train) / std_train
    x_te = np.asarray(data.x_test, np.float64)
    np.testing.assert_allclose(x_te, expected_test, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(x_tr, (raw_tr - mean_train) / std_train, rtol=1e-4, atol=1e-4)
    # The test split's own statistics differ enough that using them would fail the check above.
    own_std = np.where(raw_te.std(axis=0) > 0, raw_te.std(axis=0), 1.0)
    leaked = (raw_te - raw_te.mean(axis=0)) / own_std
    assert np.abs(leaked - expected_test).max() > 1e-2


def test_load_dataset_gives_the_bits_of_its_steps_run_one_by_one():
    # One compiled program: jitted whole, XLA would fold the noise's scale into the normal draw's.
    data_key, split_key = jax.random.split(KEY)
    x, y = ds.make_moons(data_key, N)
    x_train, y_train, x_test, y_test = ds.train_test_split(split_key, x, y, test_fraction=0.2)
    x_train, x_test, _, _ = ds.standardize(x_train, x_test)
    data = ds.load_dataset("moons", KEY, test_fraction=0.2, n_samples=N)
    for got, expected in zip(data[1:5], (x_train, y_train, x_test, y_test), strict=True):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", ds.DATASETS)
def test_dimensions_are_known_before_the_dataset_is_built(name):
    features, num_classes = (2, 2) if name == "xor" else EXPECTED[name][1:]
    assert ds.dimensions(name) == (features, num_classes)


def test_load_dataset_xor_is_unsplit_and_unscaled():
    data = ds.load_dataset("xor", KEY)
    x, y = ds.make_xor()
    assert data.num_classes == 2
    for got, want in [(data.x_train, x), (data.x_test, x), (data.y_train, y), (data.y_test, y)]:
        np.testing.assert_array_equal(got, want)


def test_load_dataset_is_deterministic_by_key():
    first = ds.load_dataset("iris", KEY)
    again = ds.load_dataset("iris", KEY)
    other = ds.load_dataset("iris", OTHER_KEY)
    for a, b in zip(first[1:5], again[1:5], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.y_test, other.y_test)


def test_load_dataset_rejects_unknown_name():
    with pytest.raises(
        ValueError, match=r"unknown dataset name 'mnist'; expected one of xor, moons"
    ):
        ds.load_dataset("mnist", KEY)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("iris", {"n_samples": 100}, r"n_samples applies only to the synthetic datasets"),
        ("xor", {"n_samples": 4}, r"'xor' has a fixed size"),
        ("moons", {"n_samples": 0}, r"n_samples must be an integer >= 2, got 0"),
        ("spirals", {"n_samples": -3}, r"n_samples must be an integer >= 3, got -3"),
        ("iris", {"test_fraction": 1.0}, r"test_fraction must be in \(0, 1\), got 1\.0"),
        ("xor", {"test_fraction": 0.0}, r"test_fraction must be in \(0, 1\), got 0\.0"),
    ],
)
def test_load_dataset_rejects_bad_arguments(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ds.load_dataset(name, KEY, **kwargs)


def test_bundled_datasets_are_read_as_scikit_learn_reads_them_without_importing_it():
    import subprocess
    import sys

    from sklearn import datasets as skd

    for name, loader in (
        ("digits", skd.load_digits),
        ("breast_cancer", skd.load_breast_cancer),
        ("iris", skd.load_iris),
    ):
        x, y = loader(return_X_y=True)
        ours = ds._sklearn_data(name)
        np.testing.assert_array_equal(ours[0], x, err_msg=name)
        np.testing.assert_array_equal(ours[1], y, err_msg=name)
    code = "import sys; from nnjax import datasets; datasets.load_digits(); print('sklearn' in sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "False"
