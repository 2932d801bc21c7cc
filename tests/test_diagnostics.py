"""Tests of nnjax.diagnostics: the statistics against NumPy, and warnings that fire when they should."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnjax
from nnjax import diagnostics, training


def network(seed, sizes, init="he"):
    return nnjax.init_network(jax.random.key(seed), sizes, init)


def inputs(n=128, features=4, seed=0):
    return jax.random.normal(jax.random.key(100 + seed), (n, features))


def history_of(params, x, y, activation, optimizer=None):
    """A one-record history, as train(..., diagnostics_every=1) would hold after one epoch."""
    optimizer = optimizer or nnjax.sgd(0.1)
    row = jax.jit(
        lambda p: diagnostics.diagnostic_row(
            p, x, y, optimizer.update, optimizer.init(p), activation=activation, loss="mse"
        )
    )(params)
    keys = diagnostics.history_keys(len(params))
    return {"diagnostics_epoch": [1]} | {k: [float(v)] for k, v in zip(keys, row, strict=True)}


def test_layer_statistics_match_numpy():
    params = network(0, [4, 6, 5, 2])
    params[0]["b"] = params[0]["b"].at[:3].set(-50.0)  # three units of layer 1 never activate
    x = inputs()
    _, cache = nnjax.forward_pass(params, x, activation=("relu", "tanh"), loss="mse")
    stats = diagnostics.layer_statistics(cache, ("relu", "tanh"), 3)
    a1, z2 = np.asarray(cache["a1"]), np.asarray(cache["z2"])
    np.testing.assert_allclose(stats.mean, [a1.mean(), np.tanh(z2).mean()], rtol=1e-5)
    np.testing.assert_allclose(stats.std, [a1.std(), np.tanh(z2).std()], rtol=1e-5)
    np.testing.assert_allclose(stats.dead_fraction, [0.5, 0.0])
    saturated = np.mean(1 - np.tanh(z2) ** 2 < 0.1)
    np.testing.assert_allclose(stats.saturated_fraction, [0.0, saturated], rtol=1e-6)


def test_sigmoid_units_saturate_where_the_derivative_is_below_a_tenth_of_its_maximum():
    params = network(0, [4, 6, 5, 2])
    _, cache = nnjax.forward_pass(params, 3.0 * inputs(), activation="sigmoid", loss="mse")
    stats = diagnostics.layer_statistics(cache, "sigmoid", 3)
    z = [np.asarray(cache[f"z{l}"], np.float64) for l in (1, 2)]
    derivatives = [np.exp(-np.abs(v)) / (1 + np.exp(-np.abs(v))) ** 2 for v in z]
    expected = np.array([np.mean(d < 0.025) for d in derivatives])  # sigma'(0) = 0.25
    np.testing.assert_allclose(stats.saturated_fraction, expected, rtol=1e-6)
    # The inputs tell the threshold apart: at 4 times it, other units would count.
    assert all(np.array([np.mean(d < 0.1) for d in derivatives]) > expected + 0.05)


def test_update_ratio_of_sgd_is_lr_times_gradient_over_weight():
    params = network(1, [4, 3, 2])
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = nnjax.sgd(0.1).update(grads, nnjax.sgd(0.1).init(params), params)
    expected = [0.1 * np.sqrt(p["W"].size) / np.linalg.norm(p["W"]) for p in params]
    np.testing.assert_allclose(diagnostics.update_ratios(params, updates), expected, rtol=1e-5)


def test_vanishing_gradients_warning_fires_on_a_deep_sigmoid_network():
    params = network(2, [4] + [32] * 10 + [2], "xavier")
    x = inputs()
    y = jax.random.normal(jax.random.key(3), (128, 2))
    warnings = diagnostics.diagnose(history_of(params, x, y, "sigmoid"))
    assert len(warnings) == 1
    assert warnings[0].startswith("vanishing gradients: layer 1's gradient norm is")
    assert "layer 11's" in warnings[0]


def test_exploding_gradients_warning_fires_above_its_ratio():
    def history(first):
        norms = {"grad_norm_layer1": [1.0, first], "grad_norm_layer2": [1.0, 2.0]}
        return norms | {"dead_fraction_layer1": [0.0, 0.0]}

    assert diagnostics.diagnose(history(500.0)) == [
        "exploding gradients: layer 1's gradient norm is 2.5e+02 times layer 2's"
    ]
    assert diagnostics.diagnose(history(100.0)) == []  # 50 times: below EXPLODING_RATIO


def test_dead_relu_warning_names_the_layer():
    params = network(3, [4, 16, 16, 2])
    params[1]["b"] = params[1]["b"] - 100.0  # layer 2 is dead for any input
    x = inputs()
    y = jax.random.normal(jax.random.key(4), (128, 2))
    warnings = diagnostics.diagnose(history_of(params, x, y, "relu"))
    assert "dead ReLUs: 100% of layer 2's units never activate" in warnings


def test_a_healthy_network_gets_no_warning():
    params = network(4, [4, 16, 16, 2])
    x = inputs()
    y = jax.random.normal(jax.random.key(5), (128, 2))
    assert diagnostics.diagnose(history_of(params, x, y, "relu")) == []
    assert diagnostics.diagnose({"train_loss": [1.0]}) == []


def independent_row(params, opt_state, x, y):
    """``diagnostic_row`` of a one-hidden-layer ReLU network trained by ``adam(1e-3)``, from
    ``jax.grad`` and NumPy."""
    arch = {"activation": "relu", "loss": "softmax_cross_entropy"}
    grads = jax.grad(nnjax.network_loss)(params, x, y, **arch)
    updates, _ = nnjax.adam(1e-3).update(grads, opt_state, params)
    norms = [[np.linalg.norm(np.asarray(layer["W"])) for layer in t] for t in (grads, updates)]
    weights = [np.linalg.norm(np.asarray(layer["W"])) for layer in params]
    z1 = np.asarray(x) @ np.asarray(params[0]["W"]).T + np.asarray(params[0]["b"])
    a1 = np.maximum(z1, 0)
    dead = np.mean(np.all(z1 <= 0, axis=0))
    return [*norms[0], *np.divide(norms[1], weights), a1.mean(), a1.std(), dead, 0.0]


def test_train_records_diagnostics_at_the_interval():
    x = inputs(64, 2)
    y = (x[:, 0] > 0).astype(jnp.int32)
    result = training.train(
        network(5, [2, 8, 2]),
        x,
        y,
        epochs=5,
        batch_size=16,
        key=jax.random.key(0),
        diagnostics_every=2,
    )
    assert result.history["diagnostics_epoch"] == [2, 4]
    for key in diagnostics.history_keys(2):
        assert len(result.history[key]) == 2
        assert all(np.isfinite(result.history[key]))
    # The record of epoch 4 is diagnostic_row of the network after 4 epochs (same trajectory).
    four = training.train(
        network(5, [2, 8, 2]), x, y, epochs=4, batch_size=16, key=jax.random.key(0)
    )
    row = diagnostics.diagnostic_row(
        four.params,
        x,
        y,
        nnjax.adam(1e-3).update,
        four.opt_state,
        activation="relu",
        loss="softmax_cross_entropy",
    )
    recorded = [result.history[key][1] for key in diagnostics.history_keys(2)]
    np.testing.assert_allclose(recorded, np.asarray(row), rtol=1e-5, atol=1e-7)
    independent = independent_row(four.params, four.opt_state, x, y)
    np.testing.assert_allclose(np.asarray(row), independent, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="diagnostics_every must be an integer >= 0"):
        training.train(network(5, [2, 8, 2]), x, y, key=jax.random.key(0), diagnostics_every=-1)


def test_non_finite_gradient_norms_are_reported_from_the_latest_record():
    history = {
        "grad_norm_layer1": [1.0, np.inf],
        "grad_norm_layer2": [1.0, 1.0],
        "dead_fraction_layer1": [0.0, 0.0],
    }
    assert diagnostics.diagnose(history) == [
        "non-finite gradient norms (inf or NaN) in layer(s) 1 at the latest record"
    ]
