"""Tests of nnjax.initializers: layout, dtype, determinism, the spec's scales, untruncated normals."""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnjax
from nnjax import initializers as init

KEY = jax.random.key(0)
OTHER_KEY = jax.random.key(1)
NAMES = ("xavier", "xavier_uniform", "he")

# A large matrix for the statistics: 256 inputs, 512 outputs, 131072 samples. The standard error
# of an empirical std over n samples is ~ std / sqrt(2n) (0.2 %), so 2 % is a loose bound.
N_IN, N_OUT = 256, 512
SAMPLES = N_IN * N_OUT
STD = {
    "xavier": math.sqrt(2 / (N_IN + N_OUT)),
    "xavier_uniform": math.sqrt(2 / (N_IN + N_OUT)),
    "he": math.sqrt(2 / N_IN),
}


@functools.cache
def draw(name: str, n_in: int = N_IN, n_out: int = N_OUT) -> np.ndarray:
    """``INITIALIZERS[name](KEY, n_in, n_out)`` as a read-only NumPy array, drawn once."""
    w = np.asarray(init.INITIALIZERS[name](KEY, n_in, n_out))
    w.flags.writeable = False
    return w


class InitializerTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_shape_dtype_and_determinism_by_key(self):
        fn = self.variant(lambda k: {name: init.INITIALIZERS[name](k, 3, 5) for name in NAMES})
        first, again, other = fn(KEY), fn(KEY), fn(OTHER_KEY)
        for name in NAMES:
            w = first[name]
            assert w.shape == (5, 3), name  # (n_out, n_in)
            assert w.dtype == jnp.float32, name
            w = np.asarray(w)
            np.testing.assert_array_equal(np.asarray(again[name]), w)  # same key, same weights
            assert not np.array_equal(np.asarray(other[name]), w), name
            assert np.unique(w).size == w.size, name  # no repeated values
            # jit and eager agree (up to an ulp: XLA may fuse the scaling differently)
            eager = np.asarray(init.INITIALIZERS[name](KEY, 3, 5))
            chex.assert_trees_all_close(w, eager, rtol=1e-6, atol=1e-7)


def test_registry():
    assert set(init.INITIALIZERS) == set(NAMES)
    assert nnjax.INITIALIZERS is init.INITIALIZERS
    assert init.INITIALIZERS["xavier"] is init.xavier_init
    assert init.INITIALIZERS["xavier_uniform"] is init.xavier_uniform_init
    assert init.INITIALIZERS["he"] is init.he_init


@pytest.mark.parametrize("name", NAMES)
def test_float64_dtype(name):
    with jax.enable_x64(True):
        w = init.INITIALIZERS[name](KEY, 3, 5, jnp.float64)
    assert w.shape == (5, 3) and w.dtype == jnp.float64


@pytest.mark.parametrize("name", NAMES)
def test_legacy_uint32_key_works_too(name):
    w = np.asarray(init.INITIALIZERS[name](jax.random.PRNGKey(0), 3, 5))
    assert w.shape == (5, 3) and np.isfinite(w).all()


@pytest.mark.parametrize("name", NAMES)
def test_empirical_std_and_mean_match_the_spec(name):
    w = draw(name)
    assert w.shape == (N_OUT, N_IN)
    assert np.isfinite(w).all()
    std = STD[name]
    assert w.std() == pytest.approx(std, rel=0.02)
    assert abs(w.mean()) < 5 * std / math.sqrt(SAMPLES)


def test_he_uses_fan_in_only_and_xavier_both_fans():
    """Swapping n_in and n_out changes He's std by sqrt(n_out / n_in); Xavier's not at all."""
    he_swapped = draw("he", n_in=N_OUT, n_out=N_IN)
    assert he_swapped.shape == (N_IN, N_OUT)
    assert he_swapped.std() == pytest.approx(math.sqrt(2 / N_OUT), rel=0.02)
    assert draw("he").std() / he_swapped.std() == pytest.approx(math.sqrt(2), rel=0.03)
    xa_swapped = draw("xavier", n_in=N_OUT, n_out=N_IN)
    assert xa_swapped.std() == pytest.approx(STD["xavier"], rel=0.02)


@pytest.mark.parametrize("name", ["xavier", "he"])
def test_normal_scale_is_exactly_the_spec_std(name):
    """Same key, standard normal draw times the spec's std: pins the constant, not just ~2 %."""
    w = draw(name)
    z = np.asarray(jax.random.normal(KEY, (N_OUT, N_IN), jnp.float32))
    chex.assert_trees_all_close(w, STD[name] * z, rtol=1e-6, atol=0.0)


def test_xavier_uniform_bounds_and_variance():
    w = draw("xavier_uniform")
    limit = math.sqrt(6 / (N_IN + N_OUT))
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.999 * limit  # fills the interval
    assert w.var() == pytest.approx(2 / (N_IN + N_OUT), rel=0.02)
    # uniform: each tenth of [-limit, limit] holds ~10 % of the samples
    counts, _ = np.histogram(w, bins=10, range=(-limit, limit))
    np.testing.assert_allclose(counts / SAMPLES, 0.1, rtol=0.05)


def test_xavier_uniform_same_distribution_as_jax_glorot_uniform():
    """Same limit and variance as jax.nn.initializers.glorot_uniform (fans of a (n_in, n_out) kernel)."""
    ours = np.sort(draw("xavier_uniform").ravel())
    theirs = np.asarray(jax.nn.initializers.glorot_uniform()(OTHER_KEY, (N_IN, N_OUT)))
    assert theirs.shape == (N_IN, N_OUT)
    theirs = np.sort(theirs.ravel())
    # two-sample quantile comparison: every quantile within a small fraction of the limit
    limit = math.sqrt(6 / (N_IN + N_OUT))
    np.testing.assert_allclose(ours, theirs, rtol=0.0, atol=0.02 * limit)


@pytest.mark.parametrize("name", ["xavier", "he"])
def test_normal_is_untruncated(name):
    """The spec draws from N(0, std): tails beyond 2.5 std exist (~1.2 % of samples), unlike
    jax.nn.initializers' truncated normal, which never exceeds 2 / 0.8796 ~ 2.27 std."""
    w = draw(name)
    std = STD[name]
    beyond = np.mean(np.abs(w) > 2.5 * std)
    assert beyond == pytest.approx(0.0124, rel=0.15)  # 2 * (1 - Phi(2.5)) = 0.01242
    assert np.mean(np.abs(w) > 3.5 * std) > 0  # ~61 expected of 131072
    assert np.mean(np.abs(w) < std) == pytest.approx(0.6827, abs=0.01)  # Gaussian, not uniform

    reference = {
        "xavier": jax.nn.initializers.glorot_normal(),
        "he": jax.nn.initializers.he_normal(),
    }[name]
    truncated = np.asarray(reference(KEY, (N_IN, N_OUT)))
    assert truncated.std() == pytest.approx(std, rel=0.02)  # same variance ...
    assert np.abs(truncated).max() <= 2.28 * std  # ... but no tail
    assert not (np.abs(truncated) > 2.5 * std).any()


BAD_FANS = [0, -1, 2.5, 3.0, "3", None, True]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", BAD_FANS, ids=repr)
def test_bad_fans_raise(name, bad):
    fn = init.INITIALIZERS[name]
    with pytest.raises(ValueError, match="must be a positive integer"):
        fn(KEY, bad, 4)
    with pytest.raises(ValueError, match="must be a positive integer"):
        fn(KEY, 4, bad)
