"""Tests of nnjax.losses: values vs optax and the spec, derivatives vs jax.grad, clipping, bad input.

nnjax's losses take ``(y_true, y_pred)``, the spec's order; optax's take ``(predictions, targets)``.
Compilation dominates the run time, so every comparison uses one shape, ``(B, K) = (8, 3)``, and the
references (optax values, ``jax.grad`` of each loss) are computed by one jitted call per dtype.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

from nnjax import losses

B, K = 8, 3
N = B * K
RTOL = {np.float32: 1e-5, np.float64: 1e-10}
ATOL = {np.float32: 1e-9, np.float64: 0.0}  # float32: for entries that cancel to ~0

_rng = np.random.default_rng(0)
Y_REG = _rng.normal(size=(B, K))
P_REG = _rng.normal(size=(B, K))
Y_BIN = _rng.integers(0, 2, size=(B, K)).astype(np.float64)
Y_BIN[0] = [0.25, 0.5, 0.9]  # soft labels are allowed
P_PROB = _rng.uniform(0.05, 0.95, size=(B, K))
LOGITS = 3.0 * _rng.normal(size=(B, K))
LABELS = np.array([0, 1, 2, 2, 1, 0, 1, 2], np.int32)
ONE_HOT = np.eye(K)[LABELS]

# name -> (loss, derivative, y_true, prediction); the prediction is the differentiated argument.
CASES = {
    "mse": (losses.mse_loss, losses.mse_derivative, Y_REG, P_REG),
    "bce": (losses.binary_cross_entropy, losses.binary_cross_entropy_derivative, Y_BIN, P_PROB),
    "bce_logits": (
        losses.binary_cross_entropy_with_logits,
        losses.binary_cross_entropy_with_logits_derivative,
        Y_BIN,
        LOGITS,
    ),
    "softmax_ce_one_hot": (
        losses.softmax_cross_entropy,
        losses.softmax_cross_entropy_derivative,
        ONE_HOT,
        LOGITS,
    ),
    "softmax_ce_int": (
        losses.softmax_cross_entropy,
        losses.softmax_cross_entropy_derivative,
        LABELS,
        LOGITS,
    ),
}
NAMES = tuple(CASES)
FUNCTIONS = [f for loss, deriv, _, _ in CASES.values() for f in (loss, deriv)][:-2]  # 8 distinct


def as_inputs(name: str, dtype) -> tuple[jax.Array, jax.Array]:
    """The case's ``(y_true, prediction)`` as arrays; call inside ``enable_x64`` for float64."""
    _, _, y, p = CASES[name]
    y = jnp.asarray(y) if y.dtype == np.int32 else jnp.asarray(y.astype(dtype))
    return y, jnp.asarray(p.astype(dtype))


def optax_value(name: str, y: jax.Array, p: jax.Array) -> jax.Array:
    """The same loss computed by optax (argument order: predictions, targets)."""
    if name == "mse":
        return optax.squared_error(p, y).mean()
    if name == "bce":  # probabilities -> logits, then optax's stable logit form
        return optax.sigmoid_binary_cross_entropy(jnp.log(p) - jnp.log1p(-p), y).mean()
    if name == "bce_logits":
        return optax.sigmoid_binary_cross_entropy(p, y).mean()
    if name == "softmax_ce_one_hot":
        return optax.softmax_cross_entropy(p, y).mean()
    return optax.softmax_cross_entropy_with_integer_labels(p, y).mean()


@jax.jit
def _references(inputs):
    """For every case: (optax's value, jax.grad of nnjax's loss)."""
    out = {}
    for name, (y, p) in inputs.items():
        loss = CASES[name][0]
        out[name] = (
            optax_value(name, y, p),
            jax.grad(lambda q, y=y, loss=loss: loss(y, q))(p),
        )
    return out


@functools.cache
def references(dtype) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with jax.enable_x64(dtype == np.float64):
        out = _references({n: as_inputs(n, dtype) for n in NAMES})
        return jax.tree.map(np.asarray, out)


def spec_value(name: str) -> float:
    """The loss from the spec's formulas in float64 NumPy (a log-sum-exp for the softmax ones)."""
    _, _, y, p = CASES[name]
    if name == "mse":
        return np.mean((y - p) ** 2)
    if name == "bce":
        return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    if name == "bce_logits":
        s = 1 / (1 + np.exp(-p))
        return -np.mean(y * np.log(s) + (1 - y) * np.log(1 - s))
    log_softmax = p - np.log(np.exp(p).sum(-1, keepdims=True))
    return -np.mean(np.sum(ONE_HOT * log_softmax, axis=-1))


def spec_derivative(name: str) -> np.ndarray:
    """The derivative from the spec's formulas, divided by what the loss averages over."""
    _, _, y, p = CASES[name]
    if name == "mse":
        return -2 * (y - p) / N
    if name == "bce":
        return (-y / p + (1 - y) / (1 - p)) / N
    if name == "bce_logits":
        return (1 / (1 + np.exp(-p)) - y) / N
    e = np.exp(p)
    return (e / e.sum(-1, keepdims=True) - ONE_HOT) / B


class LossTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*NAMES)
    def test_value_matches_optax_float32(self, name):
        y, p = as_inputs(name, np.float32)
        got = self.variant(CASES[name][0])(y, p)
        assert got.shape == () and got.dtype == jnp.float32
        chex.assert_trees_all_close(got, references(np.float32)[name][0], rtol=1e-6, atol=0.0)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*NAMES)
    def test_value_matches_optax_and_spec_float64(self, name):
        with jax.enable_x64(True):
            y, p = as_inputs(name, np.float64)
            got = self.variant(CASES[name][0])(y, p)
        assert got.dtype == jnp.float64
        chex.assert_trees_all_close(got, references(np.float64)[name][0], rtol=1e-12, atol=0.0)
        chex.assert_trees_all_close(np.asarray(got), spec_value(name), rtol=1e-12, atol=0.0)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*NAMES)
    def test_derivative_matches_autodiff_float32(self, name):
        y, p = as_inputs(name, np.float32)
        got = self.variant(CASES[name][1])(y, p)
        assert got.shape == p.shape and got.dtype == jnp.float32
        _, autodiff = references(np.float32)[name]
        chex.assert_trees_all_close(got, autodiff, rtol=RTOL[np.float32], atol=ATOL[np.float32])

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*NAMES)
    def test_derivative_matches_autodiff_float64(self, name):
        with jax.enable_x64(True):
            y, p = as_inputs(name, np.float64)
            got = self.variant(CASES[name][1])(y, p)
        assert got.shape == p.shape and got.dtype == jnp.float64
        _, autodiff = references(np.float64)[name]
        chex.assert_trees_all_close(got, autodiff, rtol=RTOL[np.float64], atol=0.0)
        chex.assert_trees_all_close(np.asarray(got), spec_derivative(name), rtol=1e-10, atol=1e-16)

    @chex.variants(with_jit=True, without_jit=True)
    def test_bce_with_logits_keeps_gradient_where_clipped_bce_has_none(self):
        """Label 0, logit 40: sigmoid(40) rounds to 1, the clip is active, its gradient is 0."""
        y = jnp.asarray(np.zeros((B, K), np.float32))
        z = jnp.asarray(np.full((B, K), 40.0, np.float32))
        g_logits, g_prob, p = references_at_40()
        d_logits = np.asarray(
            self.variant(losses.binary_cross_entropy_with_logits_derivative)(y, z)
        )
        chex.assert_trees_all_close(d_logits, np.full((B, K), 1 / N), rtol=1e-6, atol=0.0)
        chex.assert_trees_all_close(d_logits, g_logits, rtol=1e-6, atol=0.0)  # jax.grad
        assert (p == 1.0).all()  # sigmoid(40) in float32
        p = jnp.asarray(p)
        d_prob = np.asarray(self.variant(losses.binary_cross_entropy_derivative)(y, p))
        np.testing.assert_array_equal(d_prob, 0.0)
        np.testing.assert_array_equal(g_prob, 0.0)  # jax.grad agrees: the gradient is dead
        loss = float(self.variant(losses.binary_cross_entropy)(y, p))
        chex.assert_trees_all_close(loss, -np.log(np.float32(2**-23)), rtol=1e-6, atol=0.0)
        loss_logits = float(self.variant(losses.binary_cross_entropy_with_logits)(y, z))
        chex.assert_trees_all_close(loss_logits, 40.0, rtol=1e-6, atol=0.0)


@functools.cache
def references_at_40() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """jax.grad of both BCE forms at label 0, logit 40 (probability sigmoid(40)), float32; and
    the probability itself, ``jax.nn.sigmoid(40)``."""

    @jax.jit
    def grads(y, z):
        g_logits = jax.grad(lambda q: losses.binary_cross_entropy_with_logits(y, q))(z)
        p = jax.nn.sigmoid(z)
        g_prob = jax.grad(lambda q: losses.binary_cross_entropy(y, q))(p)
        return g_logits, g_prob, p

    out = grads(np.zeros((B, K), np.float32), np.full((B, K), 40.0, np.float32))
    return tuple(np.asarray(a) for a in out)


def test_mse_derivative_divides_by_all_elements_not_batch():
    """With (batch, k) outputs n = batch * k; the spec's ``/ len(y_true)`` is k times too large."""
    y, p = as_inputs("mse", np.float32)
    got = np.asarray(losses.mse_derivative(y, p))
    chex.assert_trees_all_close(got, -2 * (Y_REG - P_REG) / (B * K), rtol=1e-5, atol=1e-8)
    spec_code = -2 * (Y_REG - P_REG) / len(Y_REG)
    chex.assert_trees_all_close(spec_code, K * got, rtol=1e-5, atol=1e-8)
    chex.assert_trees_all_close(got, references(np.float32)["mse"][1], rtol=1e-5, atol=1e-9)


def test_softmax_ce_integer_and_one_hot_agree():
    y_int, z = as_inputs("softmax_ce_int", np.float32)
    y_hot, _ = as_inputs("softmax_ce_one_hot", np.float32)
    chex.assert_trees_all_close(
        losses.softmax_cross_entropy(y_int, z),
        losses.softmax_cross_entropy(y_hot, z),
        rtol=1e-7,
        atol=0.0,
    )
    chex.assert_trees_all_close(
        losses.softmax_cross_entropy_derivative(y_int, z),
        losses.softmax_cross_entropy_derivative(y_hot, z),
        rtol=1e-7,
        atol=0.0,
    )


def test_softmax_ce_stable_at_huge_logits():
    """Logits of 1e4 neither overflow the loss nor its derivative; values as optax's."""
    z = np.zeros((B, K), np.float32)
    z[:, 0] = 1e4
    z = jnp.asarray(z)
    y, _ = as_inputs("softmax_ce_int", np.float32)
    loss = float(jax.jit(losses.softmax_cross_entropy)(y, z))
    want = float(jax.jit(optax_value, static_argnums=0)("softmax_ce_int", y, z))
    chex.assert_trees_all_close(loss, want, rtol=1e-6, atol=0.0)
    chex.assert_trees_all_close(loss, 1e4 * np.mean(LABELS != 0), rtol=1e-6, atol=0.0)
    d = np.asarray(jax.jit(losses.softmax_cross_entropy_derivative)(y, z))
    assert np.isfinite(d).all()
    want_d = (np.eye(K)[np.zeros(B, int)] - ONE_HOT) / B
    chex.assert_trees_all_close(d, want_d, rtol=0.0, atol=1e-7)


def test_bce_with_logits_stable_at_large_logits():
    z = jnp.asarray(np.where(Y_BIN > 0.5, -100.0, 100.0).astype(np.float32))  # confidently wrong
    y = jnp.asarray(Y_BIN.astype(np.float32))
    loss = float(jax.jit(losses.binary_cross_entropy_with_logits)(y, z))
    want = float(jax.jit(optax_value, static_argnums=0)("bce_logits", y, z))
    assert np.isfinite(loss)
    chex.assert_trees_all_close(loss, want, rtol=1e-6, atol=0.0)
    d = np.asarray(jax.jit(losses.binary_cross_entropy_with_logits_derivative)(y, z))
    chex.assert_trees_all_close(d, (np.asarray(z) > 0) / N - Y_BIN / N, rtol=1e-5, atol=1e-9)


# --------------------------------------------------------------------------------------------------
# Probability BCE: the clip
# --------------------------------------------------------------------------------------------------

EDGE_Y = np.array([[0, 0, 1, 1, 0, 1]] * 4, np.float32).reshape(B, K)
EDGE_P = np.array([[0, 1, 0, 1, 1e-9, 1 - 1e-9]] * 4, np.float32).reshape(B, K)


def test_bce_default_epsilon_keeps_float32_finite_at_0_and_1():
    y, p = jnp.asarray(EDGE_Y), jnp.asarray(EDGE_P)
    loss = float(losses.binary_cross_entropy(y, p))
    d = np.asarray(losses.binary_cross_entropy_derivative(y, p))
    assert np.isfinite(loss) and np.isfinite(d).all()
    # the spec's formula with the float32 clip [1e-7, 1 - 1e-7], as rounded to float32
    eps = np.float32(1e-7)
    q = np.clip(EDGE_P, eps, np.float32(1) - eps).astype(np.float64)
    want = -np.mean(EDGE_Y * np.log(q) + (1 - EDGE_Y) * np.log(1 - q))
    chex.assert_trees_all_close(loss, want, rtol=1e-5, atol=0.0)
    assert 4.0 < loss < 7.0  # a third of the entries are confidently wrong: -log(~1e-7) / 3
    np.testing.assert_array_equal(d, 0.0)  # every entry is outside the clip: flat


def test_bce_float32_with_spec_epsilon_would_be_infinite():
    """Why float32 does not use the spec's 1e-15: 1 - 1e-15 rounds to 1 and log(0) would return,
    so an explicit epsilon that small is refused."""
    y, p = jnp.asarray(EDGE_Y), jnp.asarray(EDGE_P)
    assert np.float32(1 - 1e-15) == 1
    with pytest.raises(ValueError, match=r"epsilon=1e-15 is below float32's resolution at 1"):
        losses.binary_cross_entropy(y, p, epsilon=1e-15)


def test_bce_default_epsilon_float64_is_the_spec_value():
    with jax.enable_x64(True):
        y = jnp.asarray(EDGE_Y.astype(np.float64))
        p = jnp.asarray(EDGE_P.astype(np.float64))
        loss = float(losses.binary_cross_entropy(y, p))
    q = np.clip(EDGE_P.astype(np.float64), 1e-15, 1 - 1e-15)
    want = -np.mean(EDGE_Y * np.log(q) + (1 - EDGE_Y) * np.log(1 - q))
    chex.assert_trees_all_close(loss, want, rtol=1e-12, atol=0.0)
    assert loss > 11.0  # a third confidently wrong: -log(1e-15) / 3 ~ 11.5


def test_bce_custom_epsilon_clips_value_and_zeroes_derivative():
    eps = 0.1
    y, p = as_inputs("bce", np.float32)
    q = np.clip(P_PROB, eps, 1 - eps)
    want = -np.mean(Y_BIN * np.log(q) + (1 - Y_BIN) * np.log(1 - q))

    @jax.jit
    def value_derivative_autodiff(y, p):
        def loss(q):
            return losses.binary_cross_entropy(y, q, epsilon=eps)

        d = losses.binary_cross_entropy_derivative(y, p, epsilon=eps)
        return loss(p), d, jax.grad(loss)(p)

    value, d, auto = (np.asarray(a) for a in value_derivative_autodiff(y, p))
    chex.assert_trees_all_close(value, want, rtol=1e-5, atol=0.0)
    chex.assert_trees_all_close(d, auto, rtol=1e-5, atol=1e-9)
    probs = P_PROB
    inside = (probs > eps) & (probs < 1 - eps)
    assert inside.any() and (~inside).any()
    np.testing.assert_array_equal(d[~inside], 0.0)
    chex.assert_trees_all_close(d[inside], spec_derivative("bce")[inside], rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("eps", [0.0, -1e-7, 0.5, 0.7, 1.0, float("nan")])
@pytest.mark.parametrize(
    "fn", [losses.binary_cross_entropy, losses.binary_cross_entropy_derivative]
)
def test_bce_bad_epsilon_raises(fn, eps):
    y, p = jnp.asarray(EDGE_Y), jnp.asarray(EDGE_P)
    with pytest.raises(ValueError, match="epsilon must be in"):
        fn(y, p, epsilon=eps)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_bce_default_epsilon_keeps_half_precision_finite(dtype):
    y = jnp.zeros(2, dtype)
    p = jnp.ones(2, dtype)  # label 0, prediction exactly 1
    assert np.isfinite(float(jax.jit(losses.binary_cross_entropy)(y, p)))


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------

ELEMENTWISE = [f for f in FUNCTIONS if "softmax" not in f.__name__]


@pytest.mark.parametrize("fn", ELEMENTWISE, ids=lambda f: f.__name__)
@pytest.mark.parametrize("shapes", [((4, 1), (4,)), ((4,), (4, 1)), ((4, 3), (3, 4))])
def test_shape_mismatch_raises_naming_both_shapes(fn, shapes):
    y = np.zeros(shapes[0], np.float32)
    p = np.full(shapes[1], 0.5, np.float32)
    with pytest.raises(ValueError, match="must match exactly") as info:
        fn(y, p)
    assert str(shapes[0]) in str(info.value) and str(shapes[1]) in str(info.value)
    with pytest.raises(ValueError, match="must match exactly"):  # also at trace time under jit
        jax.jit(fn)(y, p)


@pytest.mark.parametrize(
    "fn", [losses.softmax_cross_entropy, losses.softmax_cross_entropy_derivative]
)
def test_softmax_ce_bad_targets_raise(fn):
    z = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(4, 3\)") as info:  # one-hot of the wrong width
        fn(np.zeros((4, 2), np.float32), z)
    assert "(4, 2)" in str(info.value)
    with pytest.raises(ValueError, match=r"integer labels must have shape \(4,\)"):
        fn(np.zeros((4, 1), np.int32), z)
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\), got values in \[0, 3\]"):
        fn(np.array([0, 1, 2, 3], np.int32), z)
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\), got values in \[-1, 2\]"):
        fn(np.array([-1, 0, 1, 2], np.int32), z)
    with pytest.raises(ValueError, match=r"shape \(batch, classes\)"):
        fn(np.int32(0), np.float32(1.0))


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_integer_predictions_raise_type_error(fn):
    y = np.zeros((4, 3), np.int32)
    with pytest.raises(TypeError, match="must be a floating-point array, got dtype int32"):
        fn(y, np.ones((4, 3), np.int32))


def test_integer_targets_are_cast_to_prediction_dtype():
    y = np.round(Y_BIN).astype(np.int32)
    p = jnp.asarray(P_PROB.astype(np.float32))
    value = jax.jit(losses.mse_loss)(y, p)
    d = jax.jit(losses.mse_derivative)(y, p)
    assert value.dtype == d.dtype == jnp.float32
    chex.assert_trees_all_close(float(value), np.mean((y - P_PROB) ** 2), rtol=1e-6, atol=0.0)
    chex.assert_trees_all_close(d, -2 * (y - P_PROB) / N, rtol=1e-5, atol=1e-9)


# --------------------------------------------------------------------------------------------------
# Property test: one compilation, reused for every example.
# --------------------------------------------------------------------------------------------------


@jax.jit
def _manual_and_autodiff(y_reg, y_bin, labels, pred):
    manual, auto = [], []
    for fn, deriv, y in (
        (losses.mse_loss, losses.mse_derivative, y_reg),
        (
            losses.binary_cross_entropy_with_logits,
            losses.binary_cross_entropy_with_logits_derivative,
            y_bin,
        ),
        (losses.softmax_cross_entropy, losses.softmax_cross_entropy_derivative, labels),
    ):
        manual.append(deriv(y, pred))
        auto.append(jax.grad(lambda q, fn=fn, y=y: fn(y, q))(pred))
    return jnp.stack(manual), jnp.stack(auto)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-30.0, 30.0), min_size=N, max_size=N))
def test_property_derivatives_match_autodiff_float64(values):
    with jax.enable_x64(True):
        pred = jnp.asarray(np.reshape(values, (B, K)), jnp.float64)
        manual, auto = _manual_and_autodiff(
            jnp.asarray(Y_REG), jnp.asarray(Y_BIN), jnp.asarray(LABELS), pred
        )
    assert manual.dtype == jnp.float64
    # atol: softmax(z) - 1 cancels when one logit dominates, and the two forms round softmax
    # differently, by an ulp of 1 (2.2e-16) each; divided by B that is ~3e-17 per entry
    chex.assert_trees_all_close(manual, auto, rtol=1e-10, atol=4 * np.finfo(np.float64).eps / B)


def test_softmax_ce_derivative_is_exact_for_targets_whose_rows_do_not_sum_to_one():
    """Multi-label rows, an all-zero row: the derivative is softmax(z) * sum(y) - y (over B), which
    is jax.grad of the loss; the spec's softmax(z) - y holds only for rows summing to 1."""
    y = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    z = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -1.0], [0.1, 0.2, 0.3]])
    with jax.enable_x64(True):
        manual = losses.softmax_cross_entropy_derivative(jnp.asarray(y), jnp.asarray(z))
        auto = jax.grad(losses.softmax_cross_entropy, argnums=1)(jnp.asarray(y), jnp.asarray(z))
    chex.assert_trees_all_close(manual, auto, rtol=1e-12, atol=1e-15)


def test_bce_derivative_passes_nan_on():
    y_pred = jnp.array([jnp.nan, 0.5, 0.0])
    grad = np.asarray(losses.binary_cross_entropy_derivative(jnp.ones(3), y_pred))
    assert np.isnan(grad[0]) and np.isfinite(grad[1:]).all() and grad[2] == 0.0


# --------------------------------------------------------------------------------------------------
# Numeric domains: clip epsilons, empty arrays, targets outside a loss's domain
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn", [losses.binary_cross_entropy, losses.binary_cross_entropy_derivative]
)
@pytest.mark.parametrize(
    ("dtype", "eps"), [(jnp.float32, 2e-8), (jnp.float16, 1e-4), (jnp.bfloat16, 1e-3)]
)
def test_bce_epsilon_below_the_resolution_at_one_is_refused(fn, dtype, eps):
    """1 - epsilon must stay below 1 in the prediction's dtype, or a perfect prediction is NaN."""
    assert float(np.asarray(1 - eps, dtype)) == 1
    y, p = jnp.zeros(2, dtype), jnp.ones(2, dtype)
    with pytest.raises(
        ValueError, match=f"epsilon={eps!r} is below {jnp.dtype(dtype)}'s resolution"
    ):
        fn(y, p, epsilon=eps)


def test_bce_epsilon_at_the_resolution_keeps_a_perfect_prediction_finite():
    y, p = jnp.asarray([0.0, 1.0]), jnp.asarray([1.0, 1.0])
    value = losses.binary_cross_entropy(y, p, epsilon=6e-8)
    assert np.isfinite(float(value)) and float(value) > 7.0  # -log(6e-8) / 2


EMPTY_CASES = [
    (losses.mse_loss, np.zeros((0, 3), np.float32), "y_pred is empty"),
    (losses.mse_derivative, np.zeros((0, 3), np.float32), "y_pred is empty"),
    (losses.binary_cross_entropy, np.zeros((0, 1), np.float32), "y_pred is empty"),
    (losses.binary_cross_entropy_with_logits, np.zeros((0, 1), np.float32), "logits is empty"),
    (losses.softmax_cross_entropy, np.zeros((0,), np.int32), "logits is empty"),
    (losses.softmax_cross_entropy_derivative, np.zeros((0, 3), np.float32), "logits is empty"),
]


@pytest.mark.parametrize(
    ("fn", "y", "message"), EMPTY_CASES, ids=[fn.__name__ for fn, _, _ in EMPTY_CASES]
)
def test_empty_arrays_raise_instead_of_returning_nan(fn, y, message):
    logits = np.zeros((0, 3) if y.ndim == 1 else y.shape, np.float32)
    with pytest.raises(ValueError, match=message):
        fn(y, logits)
    with pytest.raises(ValueError, match=message):  # shapes are static: also under jit
        jax.jit(fn)(y, logits)


@pytest.mark.parametrize(
    "fn", [losses.softmax_cross_entropy, losses.softmax_cross_entropy_derivative]
)
def test_softmax_ce_over_zero_classes_raises(fn):
    with pytest.raises(ValueError, match="at least one class, got shape \\(4, 0\\)"):
        fn(np.zeros((4,), np.int32), np.zeros((4, 0), np.float32))


BCE_FUNCTIONS = [
    losses.binary_cross_entropy,
    losses.binary_cross_entropy_derivative,
    losses.binary_cross_entropy_with_logits,
    losses.binary_cross_entropy_with_logits_derivative,
]


@pytest.mark.parametrize("fn", BCE_FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad", [-0.5, 1.5, 3.0])
def test_bce_targets_outside_the_unit_interval_name_the_argument_order(fn, bad):
    """A swapped call (optax's loss(predictions, targets)) is the usual cause: say so."""
    y = np.array([0.0, 1.0, bad, 0.5], np.float32)
    p = np.full(4, 0.5, np.float32)
    with pytest.raises(ValueError, match=r"y_true must lie in \[0, 1\].*loss\(y_true, y_pred\)"):
        fn(y, p)
    fn(np.clip(y, 0.0, 1.0), p)  # the boundaries are targets too


@pytest.mark.parametrize(
    "fn", [losses.softmax_cross_entropy, losses.softmax_cross_entropy_derivative]
)
def test_one_hot_rows_with_negative_entries_raise(fn):
    y = np.array([[1.0, 0.0, 0.0], [0.2, -0.1, 0.9]], np.float32)
    with pytest.raises(ValueError, match=r"one-hot y_true must lie in \[0, inf\).*-0\.1"):
        fn(y, np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_complex_targets_raise_instead_of_dropping_the_imaginary_part(fn):
    y = np.zeros((4, 3), np.complex64)
    with pytest.raises(TypeError, match="y_true must be real, got dtype complex64"):
        fn(y, np.full((4, 3), 0.5, np.float32))


@pytest.mark.parametrize("fn", [losses.mse_loss, losses.mse_derivative])
def test_targets_that_overflow_the_prediction_dtype_raise(fn):
    y = np.array([1.0, 7e4], np.float32)  # float16's largest finite number is 65504
    with pytest.raises(ValueError, match="y_true holds values up to 70000, beyond float16"):
        fn(y, jnp.zeros(2, jnp.float16))
    in_range = np.array([1.0, 100.0], np.float32)
    assert np.isfinite(np.asarray(fn(in_range, jnp.zeros(2, jnp.float16)), np.float32)).all()


def test_integer_labels_of_the_wrong_shape_name_the_argument_order():
    logits = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match=r"loss\(y_true, y_pred\), targets first"):
        losses.softmax_cross_entropy(logits.argmax(axis=0), logits)
