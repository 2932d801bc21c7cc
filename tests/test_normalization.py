"""Batch and layer normalization: forward passes against NumPy, backward passes against autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnjax.layercheck import check_layer, layer_inputs
from nnjax.normalization import BatchNorm, LayerNorm

EPS = 1e-5


def _random_point(dtype, shape):
    """``x`` of ``shape`` and non-trivial ``(C,)`` params and running statistics, in NumPy."""
    rng = np.random.default_rng(0)
    c = shape[-1]
    x = rng.normal(1.0, 2.0, shape).astype(dtype)
    gamma, beta, mean, var = (rng.uniform(0.5, 2.0, c).astype(dtype) for _ in range(4))
    return x, {"gamma": gamma, "beta": beta - 1}, {"mean": mean - 1, "var": var}


def _normalized(x, mean, var, params):
    """The formula in NumPy: ``gamma * (x - mean) / sqrt(var + eps) + beta``, per channel."""
    return params["gamma"] * (x - mean) / np.sqrt(var + EPS) + params["beta"]


@jax.jit(static_argnums=(0, 4))
def _forward(layer, params, state, x, train):
    out, _, new_state = layer.forward(params, state, x, train=train)
    return out, new_state


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_forward_matches_the_formulas_in_training_and_evaluation(dtype):
    x, params, state = _random_point(dtype, (3, 2, 2, 2))
    layer = BatchNorm(momentum=0.8)
    with jax.enable_x64(dtype == np.float64):
        train_out, train_state = _forward(layer, params, state, x, True)
        eval_out, eval_state = _forward(layer, params, state, x, False)
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=(0, 1, 2)), x64.var(axis=(0, 1, 2))  # the biased variance
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert train_out.dtype == eval_out.dtype == train_state["var"].dtype == dtype
    np.testing.assert_allclose(train_out, _normalized(x64, mean, var, params), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(train_state["mean"], 0.8 * state["mean"] + 0.2 * mean, rtol=rtol)
    np.testing.assert_allclose(train_state["var"], 0.8 * state["var"] + 0.2 * var, rtol=rtol)
    expected = _normalized(x64, state["mean"], state["var"], params)
    np.testing.assert_allclose(eval_out, expected, rtol=rtol, atol=rtol)
    for k in state:
        np.testing.assert_array_equal(eval_state[k], state[k])


def test_layer_norm_normalizes_each_position_over_its_features():
    x, params, _ = _random_point(np.float32, (2, 3, 4))
    out, state = _forward(LayerNorm(), params, {}, x, True)
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=-1, keepdims=True), x64.var(axis=-1, keepdims=True)
    np.testing.assert_allclose(out, _normalized(x64, mean, var, params), rtol=1e-5, atol=1e-5)
    assert state == {}


def test_the_running_statistics_are_outside_the_gradient():
    x, params, state = _random_point(np.float32, (4, 3))

    def running_sum(x):
        _, _, new_state = BatchNorm().forward(params, state, x, train=True)
        return jnp.sum(new_state["mean"]) + jnp.sum(new_state["var"])

    np.testing.assert_array_equal(jax.jit(jax.grad(running_sum))(x), np.zeros_like(x))


@pytest.mark.parametrize(
    ("layer", "input_shape", "train"),
    [
        (BatchNorm(), (3,), True),
        (BatchNorm(), (2, 2, 2), True),
        (BatchNorm(), (3,), False),
        (BatchNorm(), (2, 2, 2), False),
        (LayerNorm(), (2, 2, 2), False),
    ],
)
def test_the_hand_written_backward_matches_autodiff(layer, input_shape, train):
    report = check_layer(layer, input_shape, key=jax.random.key(1), train=train)
    assert report.passed, str(report)
    assert report.reverse_error <= 1e-10


class _WithoutVariancePath(BatchNorm):
    """Batch norm whose backward treats the batch variance as a constant; ``(batch, C)`` only."""

    def backward(self, params, dout, cache):
        g = dout * params["gamma"][None, :]
        dx = (g - jnp.mean(g, axis=cache.axes, keepdims=True)) * cache.inv_std
        return dx, super().backward(params, dout, cache)[1]


class _WithoutMeanPath(BatchNorm):
    """Batch norm whose backward treats the batch mean as a constant; ``(batch, C)`` only."""

    def backward(self, params, dout, cache):
        g = dout * params["gamma"][None, :]
        g_xhat = jnp.mean(g * cache.xhat, axis=cache.axes, keepdims=True)
        dx = (g - cache.xhat * g_xhat) * cache.inv_std
        return dx, super().backward(params, dout, cache)[1]


@jax.jit(static_argnums=0)
def _gradients_of_the_sum(layer, params, state, x):
    """``layer.backward`` with the cotangent 1, and ``jax.grad`` of ``sum(y)``, in training."""

    def loss(x, params):
        return jnp.sum(layer.forward(params, state, x, train=True)[0])

    y, cache, _ = layer.forward(params, state, x, train=True)
    manual = layer.backward(params, jnp.ones_like(y), cache)
    return manual, jax.grad(loss, argnums=(0, 1))(x, params)


def _passes_a_ones_cotangent_check(layer):
    """Whether the manual gradient of ``sum(y)`` matches autodiff's, elementwise to 1e-12."""
    with jax.enable_x64(True):
        params, state, x = layer_inputs(layer, jax.random.key(1), (3,))
        manual, autodiff = _gradients_of_the_sum(layer, params, state, x)
    pairs = zip(jax.tree.leaves(manual), jax.tree.leaves(autodiff), strict=True)
    return all(np.allclose(m, a, rtol=1e-7, atol=1e-12) for m, a in pairs)


def test_a_random_cotangent_catches_a_backward_a_ones_cotangent_lets_through():
    # The outputs of each channel sum to N beta whatever x is, so the true gradient of sum(y)
    # is 0, and so is this wrong backward's: only a non-uniform cotangent tells them apart.
    wrong = _WithoutVariancePath()
    assert _passes_a_ones_cotangent_check(wrong)
    report = check_layer(wrong, (3,), key=jax.random.key(1), train=True)
    assert not report.passed
    assert [leaf.path for leaf in report.leaves if not leaf.passed] == ["['x']"]


def test_a_backward_without_the_path_through_the_batch_mean_fails_either_check():
    wrong = _WithoutMeanPath()
    assert not _passes_a_ones_cotangent_check(wrong)
    report = check_layer(wrong, (3,), key=jax.random.key(1), train=True)
    assert [leaf.path for leaf in report.leaves if not leaf.passed] == ["['x']"]


def _apply(layer, features, x_shape, train=False):
    """``layer`` initialized for ``features`` features, applied to ones of ``x_shape``."""
    params, state, _ = layer.init(None, (features,))
    return layer.forward(params, state, np.ones(x_shape, np.float32), train=train)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: BatchNorm(momentum=1.0), "momentum"),
        (lambda: BatchNorm(epsilon=0.0), "epsilon"),
        (lambda: LayerNorm(epsilon=-1.0), "epsilon"),
        (lambda: BatchNorm().init(None, ()), "input_shape"),
        (lambda: _apply(BatchNorm(), 3, (4, 2)), r"\(batch, ..., 3\)"),
        (lambda: _apply(BatchNorm(), 3, (3,)), r"\(batch, ..., 3\)"),
        (lambda: _apply(BatchNorm(), 3, (1, 3), train=True), "2 or more"),
        (lambda: _apply(LayerNorm(), 1, (4, 1)), "2 or more"),
        (lambda: _apply(BatchNorm(epsilon=1e-50), 3, (4, 3)), "epsilon"),
    ],
)
def test_invalid_options_and_inputs_raise_value_errors_naming_them(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_batch_of_one_is_normalized_by_the_running_statistics_in_evaluation():
    out, _, _ = _apply(BatchNorm(), 3, (1, 3))
    np.testing.assert_allclose(out, np.full((1, 3), 1 / np.sqrt(1 + EPS)), rtol=1e-6)
