"""Tests of nnjax.sequential: chains of layers, residual blocks and the Sequential model."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnjax
from nnjax import layercheck, sweeps, training
from nnjax.architecture import parse_layers
from nnjax.layers import Activation, Dense, Dropout, Flatten
from nnjax.normalization import BatchNorm
from nnjax.sequential import Residual, Sequential

from helpers import tree_relative_error

MODEL = Sequential(
    (Flatten(), Dense(8), Activation("tanh"), Residual((Dense(8), Activation("relu"))), Dense(3)),
    input_shape=(2, 3),
)


def _problem(model, dtype):
    params, _ = model.init(jax.random.key(0), dtype)
    params = jax.tree.map(lambda p: p + 0.1, params)  # no zero bias to hide a bias bug
    x = jax.random.normal(jax.random.key(1), (5, *model.input_shape), dtype)
    return params, x, jnp.array([0, 1, 2, 1, 0])


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse"])
def test_the_models_backward_is_the_gradient_of_its_objective(loss):
    model = dataclasses.replace(MODEL, loss=loss)
    with jax.enable_x64(True):
        params, x, labels = _problem(model, jnp.float64)
        y = labels if loss != "mse" else jax.nn.one_hot(labels, 3, dtype=jnp.float64)

        def manual_gradient(p):
            return model.backward(p, x, y, model.forward(p, x)[1], l2=0.1)

        def objective(p):
            return model.data_loss(p, y, model.forward(p, x)[1]) + model.penalty(p, 0.1)

        manual = jax.jit(manual_gradient)(params)
        assert tree_relative_error(manual, jax.jit(jax.grad(objective))(params)) < 1e-12
    assert jax.tree.structure(manual) == jax.tree.structure(params)


@dataclasses.dataclass(frozen=True)
class _NoSkipGradient(Residual):
    def backward(self, params, dout, cache):
        dx, grads = super().backward(params, dout, cache)
        return dx - dout, grads


def test_a_residual_block_adds_the_skip_paths_gradient():
    body = (Dense(4), Activation("tanh"))
    assert layercheck.check_layer(Residual(body), (4,)).passed
    assert not layercheck.check_layer(_NoSkipGradient(body), (4,)).passed
    with pytest.raises(ValueError, match="keep its input's shape"):
        Residual((Dense(3),)).init(jax.random.key(0), (4,))


def test_dropout_layers_drop_in_training_only():
    model = Sequential((Dense(16), Dropout(0.5), Dense(2)), input_shape=(4,))
    params, _ = model.init(jax.random.key(0))
    x = jnp.ones((3, 4))
    evaluated, _ = jax.jit(model.forward)(params, x)
    trained, _ = jax.jit(model.forward, static_argnames="train")(
        params, x, key=jax.random.key(1), train=True
    )
    assert not jnp.allclose(evaluated, trained)
    with pytest.raises(ValueError, match="Dropout layers"):
        model.forward(params, x, dropout_rate=0.1, train=True)


CNN = Sequential(
    parse_layers(
        "conv2d(4,3,padding=same),relu,residual(conv2d(4,3,padding=same),tanh),maxpool(2),"
        "flatten,dense(3)",
        (4, 4, 1),
    ),
    input_shape=(4, 4, 1),
)


def test_a_cnn_trained_200_steps_by_hand_written_backward_matches_autodiff():
    x = jax.random.normal(jax.random.key(2), (64, 4, 4, 1))
    y = (x[:, :2].sum((1, 2, 3)) > x[:, 2:].sum((1, 2, 3))).astype(jnp.int32)
    params, _ = CNN.init(jax.random.key(0))
    results = {
        grad: training.train(
            params,
            x,
            y,
            model=CNN,
            optimizer=nnjax.adam(1e-2),
            grad=grad,
            epochs=50,
            batch_size=16,
            key=jax.random.key(0),
            l2=1e-3,
        )
        for grad in ("manual", "autodiff")
    }
    manual, autodiff = results["manual"], results["autodiff"]
    assert manual.epochs_run * 4 == 200
    assert tree_relative_error(manual.params, autodiff.params) < 1e-4
    assert manual.history["train_accuracy"][-1] > 0.9
    with pytest.raises(ValueError, match=r"x must have shape \(n, 4, 4, 1\)"):
        training.train(
            params,
            x[..., 0],
            y,
            model=CNN,
            optimizer=optax.sgd(0.1),
            epochs=1,
            key=jax.random.key(0),
        )


def test_batch_norm_statistics_travel_through_the_compiled_training_loop():
    model = Sequential((Dense(8), BatchNorm(momentum=0.0), Activation("relu"), Dense(3)), (4,))
    params, state = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (32, 4))
    y = jnp.arange(32) % 3
    # One step on the whole set in order: with momentum 0 the running statistics become the
    # batch statistics of the first layer's output at the initial parameters.
    result = training.train(
        params,
        x,
        y,
        model=model,
        model_state=state,
        optimizer=nnjax.adam(1e-2),
        epochs=1,
        batch_size=32,
        shuffle=False,
        key=jax.random.key(0),
    )
    z = x @ params[0]["W"].T + params[0]["b"][None, :]
    chex.assert_trees_all_close(
        result.model_state[1], {"mean": z.mean(0), "var": z.var(0)}, rtol=1e-5, atol=1e-6
    )
    assert jax.tree.structure(result.model_state) == jax.tree.structure(state)
    with pytest.raises(ValueError, match=r"pass the state model\.init returned"):
        training.train(
            params, x, y, model=model, optimizer=nnjax.adam(1e-2), epochs=1, key=jax.random.key(0)
        )


_BLOCKS = (
    "conv2d({c},3,padding=same)",
    "conv2d({c},2,stride=2)",
    "maxpool(2,stride=1)",
    "avgpool(2)",
    "batchnorm",
    "layernorm",
    "tanh",
    "relu",
    "residual(conv2d({c},3,padding=same),tanh)",
)


@settings(max_examples=5, deadline=None)
@given(
    size=st.integers(4, 6),
    channels=st.integers(1, 2),
    blocks=st.lists(st.sampled_from(_BLOCKS), min_size=1, max_size=3),
    features=st.integers(1, 3),
    loss=st.sampled_from(["softmax_cross_entropy", "mse"]),
)
def test_any_stack_of_layers_has_the_gradient_of_its_loss(size, channels, blocks, features, loss):
    """Random shapes and layer stacks: the composed backward equals jax.grad of the objective."""
    text = ",".join(b.format(c=features + 1) for b in blocks) + ",flatten,dense(3)"
    try:
        layers = parse_layers(text, (size, size, channels))
        model = Sequential(layers, (size, size, channels), loss)
        model.init(jax.random.key(0))
    except ValueError:  # a window that no longer fits the shrunken input: not a model
        return
    with jax.enable_x64(True):
        params, state, x = layercheck.model_inputs(model, jax.random.key(size))
        y = jnp.arange(4) % 3 if loss != "mse" else jnp.ones((4, 3), jnp.float64)

        def cache(p):
            return model.forward(p, x, state=state, train=True)[1]

        manual = jax.jit(lambda p: model.backward(p, x, y, cache(p), l2=0.1))(params)
        autodiff = jax.jit(
            jax.grad(lambda p: model.data_loss(p, y, cache(p)) + model.penalty(p, 0.1))
        )(params)
    chex.assert_trees_all_close(manual, autodiff, rtol=1e-10, atol=1e-13)


def test_a_sweep_of_batch_norm_models_trains_each_as_train_would():
    model = Sequential((Dense(4), BatchNorm(), Activation("relu"), Dense(2)), (3,))
    x = jax.random.normal(jax.random.key(1), (32, 3))
    y = (x[:, 0] > 0).astype(jnp.int32)
    options = {"epochs": 3, "batch_size": 8}
    swept = sweeps.sweep(x, y, model=model, seeds=[0, 1], learning_rates=[1e-2, 3e-2], **options)
    init_key, train_key = jax.random.split(jax.random.key(1))
    params, state = model.init(init_key)
    alone = training.train(
        params,
        x,
        y,
        model=model,
        model_state=state,
        optimizer=nnjax.adam,
        learning_rate=3e-2,
        key=train_key,
        **options,
    )
    second = jax.tree.map(lambda leaf: leaf[1], (swept.params, swept.model_state))
    chex.assert_trees_all_close(second, (alone.params, alone.model_state), rtol=1e-5, atol=1e-6)
    assert not jnp.allclose(swept.model_state[1]["mean"][0], swept.model_state[1]["mean"][1])
