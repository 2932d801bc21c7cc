"""Tests of nnjax.activations: values vs the spec, hand-written derivatives vs autodiff, stability.

Compilation dominates the run time, so inputs are built in NumPy, references are computed by one
jitted function per dtype (cached), and assertions run in NumPy.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

import nnjax
from nnjax import activations as act

NAMES = ("sigmoid", "relu", "tanh", "identity")


def np_sigmoid(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


# NumPy references, straight from the spec's formulas.
NP_REFERENCE = {
    "sigmoid": np_sigmoid,
    "relu": lambda x: np.maximum(0, x),
    "tanh": np.tanh,
    "identity": lambda x: x,
}
NP_DERIVATIVE = {
    "sigmoid": lambda x: np_sigmoid(x) * (1 - np_sigmoid(x)),
    "relu": lambda x: np.where(x > 0, 1.0, 0.0),
    "tanh": lambda x: 1 - np.tanh(x) ** 2,
    "identity": np.ones_like,
}

# One fixed shape for every derivative comparison. jax.grad's tanh derivative, (1-t)(1+t), cancels
# for large |x| (the hand-written one is sech^2 and does not): an error of one ulp in tanh(x)
# becomes a relative error of ~eps / (1 - tanh(x)**2) in the derivative. XLA's float32 tanh is a few ulps
# off, and differently so eager and jitted (more so at --xla_backend_optimization_level=0, which
# conftest sets), so the relative comparisons stay where the derivative is large: |x| <= 2 in
# float32 (1 - tanh^2 >= 0.07), |x| <= 6 in float64. 0.0 is in both grids (the ReLU kink).
RANGE = {np.float32: 2.0, np.float64: 6.0}
RTOL = {np.float32: 1e-5, np.float64: 1e-10}
EXTREMES = (-1e4, -1e2, 0.0, 1e2, 1e4)


def np_extremes(dtype) -> np.ndarray:
    """EXTREMES repeated into the grid's (7, 7) shape (no new compilation); they come first."""
    return np.resize(np.array(EXTREMES, dtype), 49).reshape(7, 7)


def np_grid(dtype, r: float | None = None) -> np.ndarray:
    """A (7, 7) NumPy grid of 49 points in [-r, r] (row-major), including 0 exactly."""
    r = RANGE[dtype] if r is None else r
    return np.linspace(-r, r, 49).astype(dtype).reshape(7, 7)


def autodiff_derivative(fn):
    """The elementwise derivative of ``fn`` by ``jax.grad``, for an array of any shape."""

    def d(x):
        return jax.vmap(jax.grad(fn))(x.reshape(-1)).reshape(x.shape)

    return d


@jax.jit
def _autodiff_all(x):
    return {n: autodiff_derivative(act.ACTIVATIONS[n].fn)(x) for n in NAMES}


@functools.cache
def autodiff_reference(dtype) -> dict[str, np.ndarray]:
    """jax.grad of every activation on ``np_grid(dtype)``: one compilation per dtype."""
    with jax.enable_x64(dtype == np.float64):
        out = _autodiff_all(jnp.asarray(np_grid(dtype)))
        return {k: np.asarray(v) for k, v in out.items()}


class ActivationTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*NAMES)
    def test_value_matches_spec_formula(self, name):
        x = np_grid(np.float32)
        got = self.variant(act.ACTIVATIONS[name].fn)(jnp.asarray(x))
        assert got.shape == x.shape and got.dtype == jnp.float32
        want = NP_REFERENCE[name](x.astype(np.float64))
        chex.assert_trees_all_close(np.asarray(got, np.float64), want, rtol=1e-6, atol=1e-7)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*NAMES)
    def test_derivative_matches_autodiff_float32(self, name):
        x = jnp.asarray(np_grid(np.float32))
        got = self.variant(act.ACTIVATIONS[name].derivative)(x)
        assert got.shape == x.shape and got.dtype == jnp.float32
        want = autodiff_reference(np.float32)[name]
        chex.assert_trees_all_close(got, want, rtol=RTOL[np.float32], atol=0.0)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*NAMES)
    def test_derivative_matches_autodiff_float64(self, name):
        want = autodiff_reference(np.float64)[name]
        with jax.enable_x64(True):
            x = jnp.asarray(np_grid(np.float64))
            got = self.variant(act.ACTIVATIONS[name].derivative)(x)
            assert got.dtype == jnp.float64
        chex.assert_trees_all_close(got, want, rtol=RTOL[np.float64], atol=0.0)
        # and the spec's closed form, evaluated in NumPy
        spec = NP_DERIVATIVE[name](np_grid(np.float64))
        chex.assert_trees_all_close(np.asarray(got), spec, rtol=1e-10, atol=1e-15)

    @chex.variants(with_jit=True, without_jit=True)
    def test_softmax_matches_jax_nn_and_rows_sum_to_one(self):
        x = jnp.asarray(np_grid(np.float32, 9.0))
        got = np.asarray(self.variant(act.softmax)(x))
        chex.assert_trees_all_close(got, jax.jit(jax.nn.softmax)(x), rtol=1e-6, atol=1e-7)
        chex.assert_trees_all_close(got.sum(axis=-1), np.ones(7), rtol=1e-6, atol=0.0)
        assert (got >= 0).all()

    @chex.variants(with_jit=True, without_jit=True)
    def test_softmax_no_overflow_at_large_logits(self):
        x = np.array(
            [[1e4, 0, -1e4, 0, 0, 0, 0], [1e4] * 7, [-1e4] * 6 + [1e4 - 1]] + [[0.0] * 7] * 4,
            np.float32,
        )
        got = np.asarray(self.variant(act.softmax)(jnp.asarray(x)))
        assert np.isfinite(got).all()
        want = np.full((7, 7), 1 / 7, np.float32)
        want[0] = [1, 0, 0, 0, 0, 0, 0]
        want[2] = [0, 0, 0, 0, 0, 0, 1]
        chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)

    @chex.variants(with_jit=True, without_jit=True)
    def test_sigmoid_stable_at_extremes(self):
        value_fn = self.variant(act.sigmoid)
        deriv_fn = self.variant(act.sigmoid_derivative)
        for dtype in (np.float32, np.float64):
            x_np = np_extremes(dtype)
            with jax.enable_x64(dtype == np.float64):
                x = jnp.asarray(x_np)
                value, deriv = np.asarray(value_fn(x)), np.asarray(deriv_fn(x))
                auto = np.asarray(_autodiff_all(x)["sigmoid"])  # jax.grad(sigmoid)
            for arr in (value, deriv, auto):
                assert arr.dtype == dtype
                assert np.isfinite(arr).all(), (dtype, arr)
            value, deriv, auto = (a.astype(np.float64).ravel()[:5] for a in (value, deriv, auto))
            assert 0.0 <= value[0] < 1e-300  # sigmoid(-1e4) underflows to 0, not NaN
            assert value[-1] == 1.0
            assert value[2] == 0.5 and deriv[2] == 0.25 and auto[2] == 0.25
            assert (deriv[[0, 1, 3, 4]] < 1e-40).all() and (deriv >= 0).all()
            # sigma(x) sigma(-x) is symmetric and exact on both sides; jax.grad's form cancels
            # for x > 0 (it gives 0 at x = 100, where the derivative is 3.7e-44).
            assert deriv[1] == deriv[3] and deriv[0] == deriv[4]
            chex.assert_trees_all_close(deriv[:3], auto[:3], rtol=1e-12, atol=0.0)
            want_deriv = np_sigmoid(-np.abs(EXTREMES)) * np_sigmoid(np.abs(EXTREMES))
            tiny = np.finfo(dtype).tiny
            chex.assert_trees_all_close(deriv, want_deriv, rtol=1e-6, atol=tiny)
            want = np_sigmoid(np.array(EXTREMES, np.float64))
            # atol: float32 sigmoid(-100) = 3.7e-44 is subnormal, and XLA flushes it to 0
            chex.assert_trees_all_close(value, want, rtol=1e-6, atol=np.finfo(dtype).tiny)


def test_sigmoid_matches_spec_formula_over_wide_range_float64():
    x = np_grid(np.float64, 700.0)
    with jax.enable_x64(True):
        got = np.asarray(act.sigmoid(jnp.asarray(x)))
    chex.assert_trees_all_close(got, np_sigmoid(x), rtol=1e-13, atol=1e-300)
    assert got.dtype == np.float64


def test_spec_sigmoid_autodiff_pitfall_is_avoided():
    """The spec's ``1 / (1 + exp(-x))`` has a NaN autodiff gradient at -100 in float32."""

    @jax.jit
    def grads(x):
        return jax.grad(lambda t: 1 / (1 + jnp.exp(-t)))(x), jax.grad(act.sigmoid)(x)

    naive, ours = grads(jnp.float32(-100.0))
    assert np.isnan(naive)
    assert np.isfinite(ours) and ours >= 0.0


@jax.jit
def _at_the_kink(x):
    """(relu_derivative, jax.grad of nnjax's relu, jax.grad of jnp.maximum(0, x)) at scalar x."""
    return (
        act.relu_derivative(x),
        jax.grad(act.relu)(x),
        jax.grad(lambda t: jnp.maximum(0.0, t))(x),
    )


def test_relu_derivative_is_zero_at_the_kink():
    for zero in (0.0, -0.0):
        manual, auto, _ = _at_the_kink(jnp.float32(zero))
        assert manual.dtype == jnp.float32
        assert float(manual) == 0.0
        assert float(auto) == 0.0  # nnjax.relu is a where: autodiff agrees with the spec
    assert float(act.relu_derivative(jnp.float32(0.0))) == 0.0  # eager too
    manual, auto, _ = _at_the_kink(jnp.float32(1e-30))
    assert float(manual) == float(auto) == 1.0


def test_maximum_relu_autodiff_pitfall():
    """``jax.grad`` of ``jnp.maximum(0, x)`` splits the kink and gives 0.5 at 0, not the spec's 0."""
    *_, pitfall = _at_the_kink(jnp.float32(0.0))
    assert float(pitfall) == 0.5


def test_softmax_normalizes_last_axis_for_any_rank():
    x3 = np.stack([np_grid(np.float32), -np_grid(np.float32)])  # (2, 7, 7)
    softmax = jax.jit(act.softmax)
    for x in (x3[0, 0], x3):
        got = np.asarray(softmax(jnp.asarray(x)))
        assert got.shape == x.shape
        e = np.exp(x.astype(np.float64))
        chex.assert_trees_all_close(got, e / e.sum(-1, keepdims=True), rtol=1e-6, atol=1e-7)


def test_softmax_shift_invariance_and_jacobian():
    """Shift by a constant leaves softmax unchanged; its Jacobian is diag(s) - s s^T (spec math)."""
    x = np.array([0.3, -1.2, 2.0, 0.0])
    with jax.enable_x64(True):
        f = jax.jit(lambda v: (act.softmax(v), jax.jacobian(act.softmax)(v)))
        s, jac = (np.asarray(a) for a in f(jnp.asarray(x)))
        s_shift, _ = f(jnp.asarray(x + 1000.0))
        _, jac_big = f(jnp.asarray(x * 1e4))
    chex.assert_trees_all_close(s_shift, s, rtol=1e-12, atol=0.0)
    chex.assert_trees_all_close(jac, np.diag(s) - np.outer(s, s), rtol=1e-12, atol=1e-15)
    # at huge logits the stop_gradient'd max shift keeps the Jacobian finite (and ~0: saturated)
    assert np.isfinite(jac_big).all()
    chex.assert_trees_all_close(jac_big, np.zeros((4, 4)), rtol=0.0, atol=1e-12)


def test_saturating_derivatives_keep_relative_precision_over_wide_range():
    """In float32, the hand-written sigmoid and tanh derivatives stay within 1e-5 relative of the
    exact ones far into saturation, where the spec's sigma(1 - sigma) and 1 - tanh^2 cancel
    (sigma' at x = 17 and tanh' beyond |x| ~ 9 come out 0); jax.grad's tanh derivative has that
    cancellation, and stays only within a few float32 ulps of 1 (~1e-7 each) in absolute terms."""
    x_np = np_grid(np.float32, 20.0)
    x = jnp.asarray(x_np)
    wide = x_np.astype(np.float64)
    exact = {
        "sigmoid": np_sigmoid(wide) * np_sigmoid(-wide),
        "tanh": 1 / np.cosh(wide) ** 2,
    }
    for name, want in exact.items():
        got = np.asarray(nnjax.ACTIVATIONS[name].derivative(x))
        chex.assert_trees_all_close(got, want, rtol=1e-5, atol=0.0, custom_message=name)
        assert ((got > 0) & (got <= 1)).all(), name
    chex.assert_trees_all_close(_autodiff_all(x)["tanh"], exact["tanh"], rtol=0.0, atol=1e-6)


def test_identity_and_derivative_preserve_shape_and_dtype():
    x = jnp.asarray(np_grid(np.float32))
    assert act.identity(x) is x
    d = act.identity_derivative(x)
    assert d.shape == x.shape and d.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(d), 1.0)


def test_get_activation_and_registry():
    assert set(act.ACTIVATIONS) == set(NAMES)
    assert nnjax.ACTIVATIONS is act.ACTIVATIONS
    for name in NAMES:
        pair = act.get_activation(name)
        assert pair is act.ACTIVATIONS[name]
        assert pair.fn is getattr(act, name)
        assert pair.derivative is getattr(act, f"{name}_derivative")
    assert "softmax" not in act.ACTIVATIONS  # not elementwise: no per-element derivative


@pytest.mark.parametrize("bad", ["softmax", "Relu", "", "leaky_relu"])
def test_get_activation_unknown_name_raises(bad):
    with pytest.raises(ValueError, match=r"unknown activation .*expected one of sigmoid"):
        act.get_activation(bad)


# --------------------------------------------------------------------------------------------------
# Property tests: compiled once (fixed shape, one per dtype), reused for every example.
# --------------------------------------------------------------------------------------------------


@jax.jit
def _manual_and_autodiff(x):
    manual = jnp.stack([act.ACTIVATIONS[n].derivative(x) for n in NAMES])
    auto = jnp.stack([jax.vmap(jax.grad(act.ACTIVATIONS[n].fn))(x) for n in NAMES])
    return manual, auto, act.sigmoid(x)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-6.0, 6.0), min_size=8, max_size=8))
def test_property_derivatives_match_autodiff_float64(values):
    with jax.enable_x64(True):
        manual, auto, _ = _manual_and_autodiff(jnp.asarray(values, jnp.float64))
    assert manual.dtype == jnp.float64
    chex.assert_trees_all_close(manual, auto, rtol=1e-10, atol=0.0)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=8, max_size=8))
def test_property_all_finite_and_sigmoid_in_unit_interval_float32(values):
    manual, auto, s = (
        np.asarray(a) for a in _manual_and_autodiff(jnp.asarray(values, jnp.float32))
    )
    assert np.isfinite(manual).all() and np.isfinite(auto).all()
    assert ((s >= 0) & (s <= 1)).all()
    # sigmoid: against the exact derivative (jax.grad's form cancels for large positive x)
    x64 = np.asarray(values, np.float32).astype(np.float64)
    exact = np_sigmoid(x64) * np_sigmoid(-x64)
    chex.assert_trees_all_close(manual[0], exact, rtol=1e-5, atol=np.finfo(np.float32).tiny)
    chex.assert_trees_all_close(manual[1], auto[1], rtol=0.0, atol=0.0)  # relu, 0 at the kink


def test_nan_propagates_through_every_activation():
    """NaN in, NaN out (as jnp.maximum and torch.relu do): a broken network shows in its loss."""
    x = jnp.array([jnp.nan, -1.0, 1.0])
    for name in NAMES:
        assert np.isnan(np.asarray(nnjax.ACTIVATIONS[name].fn(x))[0]), name
