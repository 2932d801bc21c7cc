"""Tests of nnjax.regularization: the L2 penalty, its gradient and optax transformation; dropout.

References are NumPy formulas (the spec's ``l2_regularization``), ``jax.grad`` and ``jax.vjp``.
Dropout's statistics are checked on one large array (a million entries), where the empirical drop
fraction and mean are within a fraction of a percent of their expectations.
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnjax
from nnjax.regularization import (
    add_l2_penalty,
    dropout_backward,
    dropout_forward,
    l2_regularization,
    l2_regularization_gradient,
)

from helpers import jit_unoptimized


def make_params(dtype, seed: int = 0):
    """A nested pytree: weight matrices (2-D and 3-D), biases (1-D) and a scalar.

    Few distinct shapes, as each costs compilations of its own.
    """
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return jnp.asarray(rng.normal(size=shape), dtype)

    return {
        "layers": [{"W": normal(3, 4), "b": normal(4)}, {"W": normal(3, 4), "b": normal(4)}],
        "extra": (normal(2, 3, 4), normal(4), normal()),
    }


def spec_l2_regularization(weights, lambda_):
    """The spec's function, verbatim: NumPy, float64."""
    reg_term = 0
    for w in weights:
        reg_term += np.sum(w**2)
    return 0.5 * lambda_ * reg_term


# ---------------------------------------------------------------------------------------------
# l2_regularization and its gradient
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lambda_", [0.0, 1e-4, 0.5, 3.0])
def test_l2_regularization_matches_spec_numpy(lambda_):
    with jax.enable_x64(True):
        params = make_params(jnp.float64)
        weights = [params["layers"][0]["W"], params["layers"][1]["W"], params["extra"][0]]
        value = l2_regularization(weights, lambda_)
        expected = spec_l2_regularization([np.asarray(w) for w in weights], lambda_)
        # By hand: lambda / 2 times the sum of squared Frobenius norms.
        by_norms = lambda_ / 2 * sum(np.linalg.norm(np.ravel(w)) ** 2 for w in weights)
        assert jnp.shape(value) == ()
        np.testing.assert_allclose(value, expected, rtol=1e-14, atol=0)
        np.testing.assert_allclose(value, by_norms, rtol=1e-13, atol=0)
        if lambda_ > 0:
            assert float(value) > 0


def test_l2_regularization_keeps_float32():
    params = make_params(jnp.float32)
    weights = [params["layers"][0]["W"], params["layers"][1]["W"]]
    with jax.enable_x64(True):
        value = l2_regularization(weights, 0.1)
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(
        value, spec_l2_regularization([np.asarray(w, np.float64) for w in weights], 0.1), rtol=1e-6
    )


def test_l2_regularization_of_no_weights_is_zero():
    assert float(l2_regularization([], 0.3)) == 0.0
    assert l2_regularization_gradient([], 0.3) == []


# lambda_ is an argument, traced, so both strengths share one compilation.
autodiff_l2_gradient = jit_unoptimized(jax.grad(l2_regularization))


@pytest.mark.parametrize("lambda_", [1e-3, 0.7])
def test_l2_regularization_gradient_matches_jax_grad(lambda_):
    with jax.enable_x64(True):
        params = make_params(jnp.float64, seed=1)
        weights = [params["layers"][0]["W"], params["layers"][1]["W"], params["extra"][0]]
        manual = l2_regularization_gradient(weights, lambda_)
        auto = autodiff_l2_gradient(weights, jnp.asarray(lambda_, jnp.float64))
        assert isinstance(manual, list)
        assert len(manual) == len(weights)
        chex.assert_trees_all_equal_shapes_and_dtypes(manual, weights)
        chex.assert_trees_all_close(manual, auto, rtol=1e-10, atol=0)
        # And the closed form lambda * W.
        chex.assert_trees_all_close(
            manual, [lambda_ * np.asarray(w) for w in weights], rtol=1e-15, atol=0
        )


@pytest.mark.parametrize("bad", [-1e-8, -1.0, math.nan])
@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda lam: l2_regularization([jnp.ones((2, 2))], lam), "lambda_"),
        (lambda lam: l2_regularization_gradient([jnp.ones((2, 2))], lam), "lambda_"),
        (lambda lam: add_l2_penalty(lam), "l2"),
    ],
    ids=["l2_regularization", "l2_regularization_gradient", "add_l2_penalty"],
)
def test_negative_lambda_raises_value_error_naming_it(call, name, bad):
    with pytest.raises(ValueError, match=name):
        call(bad)


# ---------------------------------------------------------------------------------------------
# add_l2_penalty: an optax transformation adding lambda * W to the gradients
# ---------------------------------------------------------------------------------------------


LAM = 0.25

MASKS = {
    "default": None,
    "everything": lambda p: jax.tree.map(lambda _: True, p),
    # Only the first layer's bias: the reverse of the default.
    "only_b0": lambda p: {
        "layers": [{"W": False, "b": True}, {"W": False, "b": False}],
        "extra": (False, False, False),
    },
    "nothing": lambda p: jax.tree.map(lambda _: False, p),
}


@functools.cache
def masked_updates():
    """(params, grads, {mask name: (updates, state)}) in float64, all in one compilation."""
    with jax.enable_x64(True):
        params = make_params(jnp.float64)
        grads = make_params(jnp.float64, seed=2)

        @jit_unoptimized
        def run(grads, params):
            out = {}
            for name, mask in MASKS.items():
                tx = add_l2_penalty(LAM, mask=mask)
                out[name] = tx.update(grads, tx.init(params), params)
            tx = add_l2_penalty(0.0)
            out["zero_lambda"] = tx.update(grads, tx.init(params), params)
            return out

        out = run(grads, params)
    return jax.tree.map(np.asarray, (params, grads, out))


def penalized(grads, params, which):
    """grads + LAM * params on the leaves where ``which(path)`` holds, in NumPy."""
    return jax.tree_util.tree_map_with_path(
        lambda path, g, w: g + LAM * w if which(jax.tree_util.keystr(path)) else g, grads, params
    )


def test_add_l2_penalty_default_mask_penalizes_only_leaves_with_two_or_more_dims():
    params, grads, out = masked_updates()
    updates, state = out["default"]
    assert isinstance(state, optax.EmptyState)
    assert isinstance(add_l2_penalty(LAM).init(params), optax.EmptyState)
    chex.assert_trees_all_equal_structs(updates, grads)
    # The two W and the 3-D kernel are penalized; the biases and the scalar are untouched.
    weights = {"['layers'][0]['W']", "['layers'][1]['W']", "['extra'][0]"}
    expected = penalized(grads, params, lambda path: path in weights)
    chex.assert_trees_all_close(updates, expected, rtol=1e-15, atol=0)
    for i in range(2):
        chex.assert_trees_all_equal(updates["layers"][i]["b"], grads["layers"][i]["b"])
    chex.assert_trees_all_equal(updates["extra"][1:], grads["extra"][1:])
    assert not np.allclose(updates["layers"][0]["W"], grads["layers"][0]["W"])


def test_add_l2_penalty_custom_mask():
    params, grads, out = masked_updates()
    chex.assert_trees_all_close(
        out["everything"][0], penalized(grads, params, lambda _: True), rtol=1e-15, atol=0
    )
    only_b0 = penalized(grads, params, lambda path: path == "['layers'][0]['b']")
    chex.assert_trees_all_close(out["only_b0"][0], only_b0, rtol=1e-15, atol=0)
    assert not np.allclose(out["only_b0"][0]["layers"][0]["b"], grads["layers"][0]["b"])
    chex.assert_trees_all_equal(out["nothing"][0], grads)


def test_add_l2_penalty_zero_lambda_is_identity():
    _, grads, out = masked_updates()
    chex.assert_trees_all_equal(out["zero_lambda"][0], grads)


def test_add_l2_penalty_needs_params():
    tx = add_l2_penalty(0.1)
    grads = make_params(jnp.float32)
    with pytest.raises(ValueError, match="params"):
        tx.update(grads, tx.init(grads))


def test_add_l2_penalty_keeps_float32_under_x64():
    with jax.enable_x64(True):
        params = make_params(jnp.float32)
        tx = add_l2_penalty(0.1)
        shapes = jax.eval_shape(lambda g, p: tx.update(g, tx.init(p), p)[0], params, params)
    chex.assert_trees_all_equal_dtypes(shapes, params)


def test_chain_with_sgd_equals_sgd_on_regularized_loss():
    """chain(add_l2_penalty, sgd) steps like sgd on loss + l2_regularization (via jax.grad)."""
    lam, lr = 0.2, 0.1

    def loss(p):
        return sum(jnp.sum((w - 0.3) ** 2 * (i + 1)) for i, w in enumerate(jax.tree.leaves(p)))

    def weights(p):
        return [w for w in jax.tree.leaves(p) if w.ndim >= 2]

    chained = optax.chain(add_l2_penalty(lam), nnjax.sgd(lr))

    @jit_unoptimized
    def run(params):
        plain = jax.grad(loss)(params)
        updates, _ = chained.update(plain, chained.init(params), params)
        regularized = jax.grad(lambda p: loss(p) + l2_regularization(weights(p), lam))(params)
        return updates, plain, regularized

    with jax.enable_x64(True):
        updates, plain, regularized = jax.tree.map(np.asarray, run(make_params(jnp.float64)))
    chex.assert_trees_all_close(
        updates, jax.tree.map(lambda g: -lr * g, regularized), rtol=1e-13, atol=1e-15
    )
    # The biases' updates did not see the penalty, the weights' did.
    chex.assert_trees_all_close(
        updates["layers"][0]["b"], -lr * plain["layers"][0]["b"], rtol=1e-15, atol=0
    )
    assert not np.allclose(updates["layers"][0]["W"], -lr * plain["layers"][0]["W"])


def test_add_l2_penalty_with_traced_lambda_in_jit_and_vmap():
    """A vmapped sweep over lambda: each result equals g + lambda_i * W."""
    params = make_params(jnp.float32)
    grads = make_params(jnp.float32, seed=4)
    lams = jnp.asarray([0.0, 0.1, 1.0], jnp.float32)

    @jax.jit
    @jax.vmap
    def sweep(lam):
        tx = add_l2_penalty(lam)
        return tx.update(grads, tx.init(params), params)[0]

    swept = sweep(lams)
    for i, lam in enumerate([0.0, 0.1, 1.0]):
        one = jax.tree.map(lambda x, i=i: x[i], swept)
        expected = jax.tree.map(
            lambda g, w, lam=lam: np.asarray(g) + (lam * np.asarray(w) if w.ndim >= 2 else 0),
            grads,
            params,
        )
        chex.assert_trees_all_close(one, expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(swept["layers"][0]["W"][1], swept["layers"][0]["W"][2])


# ---------------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------------

KEY = jax.random.key(42)
BIG = (1000, 1000)


def big_x():
    """Positive activations, uniform in [0.5, 1.5], so the mean is far from zero."""
    return jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, size=BIG), jnp.float32)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_inverted_dropout_statistics_and_values(p):
    x = big_x()
    out, mask = dropout_forward(KEY, x, p)
    out, mask, x = np.asarray(out), np.asarray(mask), np.asarray(x)
    assert out.shape == x.shape
    assert out.dtype == mask.dtype == np.float32
    kept = mask != 0
    # Kept entries are x / (1 - p), dropped entries exactly 0.
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-6)
    assert np.all(out[~kept] == 0)
    np.testing.assert_allclose(mask[kept], 1 / (1 - p), rtol=1e-6)
    np.testing.assert_array_equal(out, x * mask)
    # About a fraction p dropped (std ~ 5e-4 here), and the mean preserved (std < 0.2%).
    assert abs((~kept).mean() - p) < 0.005
    np.testing.assert_allclose(out.mean(), x.mean(), rtol=0.02)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_spec_dropout_is_unscaled(p):
    """inverted=False is the spec's form: out = x * Bernoulli(1 - p), mean (1 - p) mean(x)."""
    x = big_x()
    out, mask = dropout_forward(KEY, x, p, inverted=False)
    out, mask, x = np.asarray(out), np.asarray(mask), np.asarray(x)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    kept = mask == 1
    np.testing.assert_array_equal(out[kept], x[kept])
    assert np.all(out[~kept] == 0)
    assert abs((~kept).mean() - p) < 0.005
    np.testing.assert_allclose(out.mean(), (1 - p) * x.mean(), rtol=0.02)
    # The same key drops the same units in both forms; only the scale differs.
    _, inverted_mask = dropout_forward(KEY, jnp.asarray(x), p)
    np.testing.assert_array_equal(np.asarray(inverted_mask) != 0, kept)


@pytest.mark.parametrize("inverted", [True, False])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.9])
def test_dropout_backward_equals_vjp(p, inverted):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(8, 16)), jnp.float32)
    dout = jnp.asarray(rng.normal(size=(8, 16)), jnp.float32)
    key = jax.random.key(7)
    out, cache = dropout_forward(key, x, p, inverted=inverted)
    vjp_out, vjp = jax.vjp(lambda x: dropout_forward(key, x, p, inverted=inverted)[0], x)
    (expected,) = vjp(dout)
    dx = dropout_backward(dout, cache)
    # Both are dout * mask, the same float32 products: equal to the last bit.
    chex.assert_trees_all_equal(vjp_out, out)
    chex.assert_trees_all_equal(dx, expected)
    assert dx.dtype == jnp.float32
    # Gradient flows only through kept units.
    np.testing.assert_array_equal(np.asarray(dx) == 0, np.asarray(cache) == 0)


def test_p_zero_is_identity():
    x = big_x()[:8, :16]
    dout = big_x()[8:16, :16]
    for inverted in (True, False):
        out, cache = dropout_forward(KEY, x, 0.0, inverted=inverted)
        chex.assert_trees_all_equal(out, x)
        chex.assert_trees_all_equal(cache, jnp.ones_like(x))
        chex.assert_trees_all_equal(dropout_backward(dout, cache), dout)


def test_dropout_is_deterministic_by_key():
    x = big_x()[:8, :16]
    out1, mask1 = dropout_forward(KEY, x, 0.5)
    out2, mask2 = dropout_forward(KEY, x, 0.5)
    chex.assert_trees_all_equal((out1, mask1), (out2, mask2))
    _, other = dropout_forward(jax.random.key(43), x, 0.5)
    assert not np.array_equal(np.asarray(other), np.asarray(mask1))
    # The mask depends on the key and shape only, not on the values of x.
    _, mask_of_y = dropout_forward(KEY, 2.0 * x + 1.0, 0.5)
    chex.assert_trees_all_equal(mask_of_y, mask1)


def test_dropout_under_jit_with_traced_p_matches_eager():
    x = big_x()[:8, :16]
    jitted = jax.jit(dropout_forward, static_argnames="inverted")
    for p in (0.2, 0.6):
        chex.assert_trees_all_close(
            jitted(KEY, x, jnp.asarray(p, jnp.float32)), dropout_forward(KEY, x, p), rtol=1e-6
        )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16, jnp.float16])
def test_dropout_keeps_dtype(dtype):
    with jax.enable_x64(True):
        x = jax.ShapeDtypeStruct((8, 16), dtype)
        out, cache = jax.eval_shape(lambda x: dropout_forward(KEY, x, 0.3), x)
        dx = jax.eval_shape(dropout_backward, out, cache)
    assert out.dtype == cache.dtype == dx.dtype == jnp.dtype(dtype)
    assert out.shape == cache.shape == dx.shape == (8, 16)


@pytest.mark.parametrize(("p", "dtype"), [(0.999, jnp.bfloat16), (1 - 1e-9, jnp.float32)])
def test_dropout_keep_probability_is_taken_before_rounding(p, dtype):
    """1 - p_drop is formed before rounding to x's dtype (1 - bf16(0.999) would be 0: NaN)."""
    x = jnp.ones((64, 64), dtype)
    out, mask = dropout_forward(KEY, x, p)
    values = np.unique(np.asarray(mask, np.float64))
    assert np.isfinite(np.asarray(out, np.float64)).all()
    assert values[0] == 0.0 and (len(values) == 1 or values[1] > 1e2)


def test_dropout_rejects_a_keep_probability_that_rounds_to_zero():
    with pytest.raises(ValueError, match="keep probability that is 0 in float16"):
        dropout_forward(KEY, jnp.ones((2, 3), jnp.float16), 1 - 2**-53)


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, -1e-12, math.nan])
def test_dropout_rejects_p_outside_unit_interval(p):
    with pytest.raises(ValueError, match="p_drop"):
        dropout_forward(KEY, jnp.ones((2, 3)), p)


@pytest.mark.parametrize(
    "x",
    [np.ones((2, 3), np.int32), np.ones((2, 3), np.bool_), [[1, 2], [3, 4]]],
    ids=["int32", "bool", "int list"],
)
def test_dropout_rejects_non_float_x(x):
    with pytest.raises(TypeError, match="floating"):
        dropout_forward(KEY, x, 0.5)


@pytest.mark.parametrize(
    ("dout_shape", "cache_shape"),
    [((8, 16), (16, 8)), ((8, 1), (8, 16)), ((16,), (8, 16)), ((8, 16), (1, 8, 16))],
)
def test_dropout_backward_rejects_mismatched_shapes(dout_shape, cache_shape):
    """No silent broadcasting, even where the shapes would broadcast."""
    with pytest.raises(ValueError, match="shape"):
        dropout_backward(jnp.ones(dout_shape), jnp.ones(cache_shape))


def test_float64_dropout_is_exact_for_a_traced_rate():
    """The keep probability 1 - p is formed in float64 for float64 activations, eagerly and under
    jit: kept units scaled by exactly 1 / (1 - p), and the same mask for a float and a traced p."""
    with jax.enable_x64(True):
        x = jnp.ones((32, 64), jnp.float64)
        eager = dropout_forward(KEY, x, 0.3)[1]
        traced = jax.jit(dropout_forward)(KEY, x, jnp.asarray(0.3, jnp.float64))[1]
    chex.assert_trees_all_equal(traced, eager)
    assert set(np.unique(np.asarray(traced)).tolist()) == {0.0, 1 / (1 - 0.3)}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("p", [0.3, 0.999])
def test_traced_dropout_below_float64_keeps_its_float32_keep_probability(dtype, p):
    """Below float64 a traced rate's keep probability is 1 - float32(p), cast: the same program."""
    x = jnp.ones((32, 64), dtype)
    _, mask = jax.jit(dropout_forward)(KEY, x, jnp.asarray(p, jnp.float32))
    keep = (1 - jnp.float32(p)).astype(dtype)
    zero, one = jnp.zeros((), dtype), jnp.ones((), dtype)
    kept = jax.random.uniform(KEY, x.shape, dtype, zero, one) < keep
    chex.assert_trees_all_equal(mask, kept.astype(dtype) / keep)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda w, lam: l2_regularization(w, lam), "lambda_"),
        (lambda w, lam: l2_regularization_gradient(w, lam), "lambda_"),
        (
            lambda w, lam: add_l2_penalty(lam).update(w, optax.EmptyState(), w),
            "l2",
        ),
    ],
    ids=["l2_regularization", "l2_regularization_gradient", "add_l2_penalty"],
)
def test_an_l2_penalty_that_overflows_the_weights_dtype_is_refused(call, name):
    """3e38 is a float32, but 3e38 / 2 times the weights' squared norm is not: refused by name."""
    weights = [jnp.full((4, 4), 0.5), jnp.full((2, 4), 0.5)]  # squared norm 6
    with pytest.raises(ValueError, match=rf"^{name}=3e\+38 makes the L2 penalty .* float32"):
        call(weights, 3e38)
    with pytest.raises(ValueError, match=rf"^{name}=1e\+39 makes the L2 penalty"):
        call(weights, 1e39)  # inf in float32 itself
    call(weights, 1e37)  # 3e37: finite


def test_add_l2_penalty_refuses_a_strength_of_the_wrong_type():
    with pytest.raises(TypeError, match=r"^l2 must be a real number, got str"):
        add_l2_penalty("0.1")
