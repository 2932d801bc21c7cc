"""Tests of nnjax.layers (dense, activation, flatten, dropout) and nnjax.layercheck."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnjax import layercheck, layers, network


@pytest.mark.parametrize(
    ("layer", "input_shape", "train"),
    [
        (layers.Dense(3), (4,), False),
        (layers.Activation("tanh"), (2, 3), False),
        (layers.Activation("sigmoid"), (5,), False),
        (layers.Flatten(), (2, 3), False),
        (layers.Dropout(0.3), (6,), True),
    ],
    ids=str,
)
def test_every_layers_backward_agrees_with_autodiff_and_finite_differences(
    layer, input_shape, train
):
    report = layercheck.check_layer(layer, input_shape, train=train)
    assert report.passed, str(report)


@dataclasses.dataclass(frozen=True)
class _DoubledBiasDense(layers.Dense):
    """A dense layer whose backward doubles the bias gradient."""

    def backward(self, params, dout, cache):
        dx, grads = super().backward(params, dout, cache)
        return dx, {**grads, "b": grads["b"] * 2}


def test_the_layer_check_catches_a_wrong_bias_gradient():
    report = layercheck.check_layer(_DoubledBiasDense(3), (4,))
    assert not report.passed


def test_dense_layer_is_the_networks_layer_bit_for_bit():
    rng = np.random.default_rng(0)
    params = [
        {
            "W": jnp.asarray(rng.normal(size=(n_out, n_in)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=n_out), jnp.float32),
        }
        for n_in, n_out in ((4, 5), (5, 3))
    ]
    x = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    y = jnp.asarray([0, 1, 2, 0, 1, 2])
    _, cache = network.forward_pass(params, x, activation="identity")
    grads = network.backward_pass(params, x, y, cache, activation="identity")
    z1 = x @ params[0]["W"].T + params[0]["b"][None, :]
    np.testing.assert_array_equal(cache["z1"], z1)
    dz2 = network.OUTPUT_LOSSES["softmax_cross_entropy"].output_error(y, cache["z2"])
    np.testing.assert_array_equal(grads[1]["W"], dz2.T @ cache["a1"])
    np.testing.assert_array_equal(grads[0]["b"], jnp.sum(dz2 @ params[1]["W"], axis=0))


def test_dense_init_follows_its_initializer_and_needs_flat_inputs():
    params, state, shape = layers.Dense(5, weight_init="xavier").init(jax.random.key(0), (3,))
    assert shape == (5,) and state == {}
    assert params["W"].shape == (5, 3) and not params["b"].any()
    with pytest.raises(ValueError, match="flatten first"):
        layers.Dense(5).init(jax.random.key(0), (3, 2))
    with pytest.raises(ValueError, match="activation"):
        layers.Activation("swish")


def test_dropout_is_the_identity_at_evaluation_and_needs_a_key_in_training():
    x = jnp.ones((2, 3))
    out, cache, _ = layers.Dropout(0.5).forward({}, {}, x)
    assert out is x and cache is None
    with pytest.raises(ValueError, match="PRNG key"):
        layers.Dropout(0.5).forward({}, {}, x, train=True)
