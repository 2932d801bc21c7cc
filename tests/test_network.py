"""Tests of nnjax.network: the neuron, the forward pass with its cache, and backward_pass."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnjax
from nnjax import _run_setup, _validation, metrics, network, run_data, steps

from helpers import tree_relative_error

HIDDEN = ("sigmoid", "relu", "tanh", "identity")
PAIRS = tuple(network.OUTPUT_LOSSES)
ARCH_ARGS = ("activation", "loss", "train")


def make_problem(seed, sizes, loss, batch, dtype=jnp.float32):
    """He-scaled weights, non-zero biases (so a bias bug cannot hide), inputs and targets.

    Drawn with NumPy: test data of many shapes then costs no XLA compilation.
    """
    rng = np.random.default_rng(seed)
    params = [
        {
            "W": jnp.asarray(rng.normal(0, np.sqrt(2 / n_in), (n_out, n_in)), dtype),
            "b": jnp.asarray(0.1 * rng.normal(size=n_out), dtype),
        }
        for n_in, n_out in itertools.pairwise(sizes)
    ]
    x = jnp.asarray(rng.normal(size=(batch, sizes[0])), dtype)
    n_out = sizes[-1]
    if loss == "mse":
        y = jnp.asarray(rng.normal(size=(batch, n_out)), dtype)
    elif loss == "binary_cross_entropy":
        y = jnp.asarray(rng.integers(0, 2, (batch, n_out)), dtype)
    else:
        y = jnp.asarray(rng.integers(0, n_out, batch), jnp.int32)
    return params, x, y


def manual_and_autodiff(params, x, y, *, l2=0.0, dropout_rate=0.0, key=None, **arch):
    train = dropout_rate > 0
    _, cache = nnjax.forward_pass(
        params, x, **arch, dropout_rate=dropout_rate, key=key, train=train
    )
    manual = nnjax.backward_pass(params, x, y, cache, **arch, l2=l2)
    reference = jax.grad(nnjax.network_loss)(
        params, x, y, **arch, l2=l2, dropout_rate=dropout_rate, key=key, train=train
    )
    return manual, reference


# One compilation per architecture; XLA's optimizations would cost more than they save here.
jit_manual_and_autodiff = jax.jit(
    manual_and_autodiff,
    static_argnames=("activation", "loss"),
    compiler_options={"xla_backend_optimization_level": 0},
)


# --- the neuron -------------------------------------------------------------------------------


def test_forward_neuron_is_the_spec_formula():
    x = np.array([0.5, -1.0, 2.0], np.float32)
    w = np.array([0.1, 0.4, -0.3], np.float32)
    expected = 1 / (1 + np.exp(-(np.dot(w, x) + 0.2)))
    np.testing.assert_allclose(nnjax.forward_neuron(x, w, 0.2, nnjax.sigmoid), expected, rtol=1e-6)
    batch = np.stack([x, 2 * x])
    np.testing.assert_allclose(
        nnjax.forward_neuron(batch, w, 0.2, "tanh"), np.tanh(batch @ w + 0.2), rtol=1e-6
    )


def test_forward_neuron_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"x must have shape \(3,\)"):
        nnjax.forward_neuron(jnp.ones(4), jnp.ones(3), 0.0, nnjax.relu)
    with pytest.raises(ValueError, match="bias b must be a scalar"):
        nnjax.forward_neuron(jnp.ones(3), jnp.ones(3), jnp.ones(3), nnjax.relu)


# --- parameters -------------------------------------------------------------------------------


def test_init_network_shapes_and_zero_biases():
    params = nnjax.init_network(jax.random.key(0), [4, 8, 3], "xavier")
    chex.assert_shape([params[0]["W"], params[0]["b"]], [(8, 4), (8,)])
    chex.assert_shape([params[1]["W"], params[1]["b"]], [(3, 8), (3,)])
    assert all(float(jnp.abs(p["b"]).max()) == 0.0 for p in params)
    assert network.layer_sizes(params) == (4, 8, 3)


@pytest.mark.parametrize(
    ("sizes", "message"),
    [([3], "at least two"), ([3, 0, 2], r"layer_sizes\[1\]"), ([3, -2], r"layer_sizes\[1\]")],
)
def test_init_network_rejects_bad_sizes(sizes, message):
    with pytest.raises(ValueError, match=message):
        nnjax.init_network(jax.random.key(0), sizes)


def test_init_network_rejects_unknown_initializer():
    with pytest.raises(ValueError, match="unknown init 'glorot'"):
        nnjax.init_network(jax.random.key(0), [2, 2], "glorot")


@pytest.mark.parametrize(
    ("init", "message"),
    [
        # jax.nn.initializers' (n_in, n_out) layout (only a non-square layer can show it)
        (
            lambda k, n_in, n_out, dtype: nnjax.he_init(k, n_in, n_out, dtype).T,
            r"shape \(4, 3\) and dtype float32 for layer 2; expected \(3, 4\)",
        ),
        (
            lambda k, n_in, n_out, dtype: jnp.ones((n_out, n_in), jnp.int32),
            r"dtype int32 for layer 1; expected \(4, 4\) \(n_out, n_in\) and float32",
        ),
    ],
    ids=["transposed", "integer"],
)
def test_init_network_checks_what_a_custom_init_returns(init, message):
    with pytest.raises(ValueError, match=message):
        nnjax.init_network(jax.random.key(0), [4, 4, 3], init)


def test_a_run_initializes_its_network_in_one_program_with_init_network_s_bits():
    # He on 3 inputs: jitted whole, XLA folds the scale into the draw's and rounds otherwise.
    seed, sizes = 4, (3, 2)
    compiled, _, _ = _run_setup._dense_start(seed, sizes, "he", nnjax.sgd(0.1))
    eager = nnjax.init_network(run_data.run_keys(seed)[1], sizes, "he")
    for got, expected in zip(jax.tree.leaves(compiled), jax.tree.leaves(eager), strict=True):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


# --- forward pass -----------------------------------------------------------------------------


class ForwardPassTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_numpy_and_keeps_the_cache(self):
        params, x, _ = make_problem(0, (3, 5, 4, 2), "softmax_cross_entropy", 6)
        forward = self.variant(nnjax.forward_pass, static_argnames=ARCH_ARGS)
        out, cache = forward(params, x, activation=("tanh", "relu"), loss="softmax_cross_entropy")

        a = np.asarray(x, np.float64)
        for l, (layer, fn) in enumerate(
            zip(params, (np.tanh, lambda z: np.maximum(z, 0), None), strict=True), start=1
        ):
            z = a @ np.asarray(layer["W"], np.float64).T + np.asarray(layer["b"], np.float64)
            if fn is None:
                e = np.exp(z - z.max(axis=1, keepdims=True))
                a = e / e.sum(axis=1, keepdims=True)
            else:
                a = fn(z)
            np.testing.assert_allclose(cache[f"z{l}"], z, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(cache[f"a{l}"], a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out, a, rtol=1e-5, atol=1e-6)
        assert set(cache) == {"z1", "a1", "z2", "a2", "z3", "a3"}


def test_dropout_is_off_at_evaluation_and_on_in_training():
    params, x, _ = make_problem(1, (3, 16, 2), "mse", 8)
    kw = {"activation": "relu", "loss": "mse", "dropout_rate": 0.5, "key": jax.random.key(1)}
    plain, _ = nnjax.forward_pass(params, x, activation="relu", loss="mse")
    evaluation, eval_cache = nnjax.forward_pass(params, x, **kw, train=False)
    training, cache = nnjax.forward_pass(params, x, **kw, train=True)
    chex.assert_trees_all_equal(evaluation, plain)
    assert "mask1" not in eval_cache
    assert set(np.unique(np.asarray(cache["mask1"]))) <= {0.0, 2.0}
    assert not np.allclose(training, plain)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"activation": "swish"}, ValueError, "unknown activation 'swish'"),
        ({"loss": "hinge"}, ValueError, "unknown loss 'hinge'"),
        ({"activation": ("relu",)}, ValueError, "1 activations"),
        ({"dropout_rate": 0.5, "train": True}, ValueError, "needs a PRNG key"),
        (
            {"dropout_rate": 1.0, "train": True, "key": jax.random.key(0)},
            ValueError,
            r"dropout_rate must be in \[0, 1\)",
        ),
    ],
)
def test_forward_pass_rejects_bad_arguments(kwargs, error, message):
    params, x, _ = make_problem(0, (3, 4, 4, 2), "mse", 2)
    with pytest.raises(error, match=message):
        nnjax.forward_pass(params, x, **kwargs)


def test_forward_pass_rejects_wrong_feature_count():
    params, _, _ = make_problem(0, (3, 4, 2), "mse", 2)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\).*got shape \(2, 5\)"):
        nnjax.forward_pass(params, jnp.ones((2, 5)))
    with pytest.raises(TypeError, match="floating-point"):
        nnjax.forward_pass(params, jnp.ones((2, 3), jnp.int32))
    with jax.enable_x64(True), pytest.raises(TypeError, match="x has dtype float64 but the"):
        nnjax.forward_pass(params, jnp.ones((2, 3), jnp.float64))  # would promote every layer


def test_mismatched_layers_are_named():
    params, x, _ = make_problem(0, (3, 4, 2), "mse", 2)
    params[1]["W"] = jnp.ones((2, 5))
    with pytest.raises(ValueError, match="layer 2: W has shape \\(2, 5\\), so n_in=5"):
        nnjax.forward_pass(params, x)


# --- backward pass ----------------------------------------------------------------------------


@pytest.mark.parametrize(("activation", "loss"), list(itertools.product(HIDDEN, PAIRS)))
def test_backward_pass_equals_autodiff_float64(activation, loss):
    with jax.enable_x64(True):
        params, x, y = make_problem(2, (3, 5, 4, 3), loss, 6, jnp.float64)
        for options in ({}, {"l2": 0.1}, {"dropout_rate": 0.3, "key": jax.random.key(5)}):
            manual, reference = manual_and_autodiff(
                params, x, y, activation=activation, loss=loss, **options
            )
            chex.assert_trees_all_equal_structs(manual, params)
            assert tree_relative_error(manual, reference) <= 1e-10, options


class BackwardPassFloat32Test(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.filterwarnings("ignore::DeprecationWarning")
    def test_equals_autodiff_float32(self):
        params, x, y = make_problem(3, (4, 16, 8, 3), "softmax_cross_entropy", 10)
        arch = {"activation": ("relu", "tanh"), "loss": "softmax_cross_entropy"}

        def both(params, x, y):
            return manual_and_autodiff(params, x, y, l2=1e-2, **arch)

        manual, reference = self.variant(both)(params, x, y)
        chex.assert_trees_all_close(manual, reference, rtol=1e-5, atol=1e-7)
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(manual))


def test_backward_pass_keeps_the_container_type():
    params, x, y = make_problem(4, (2, 3, 1), "mse", 4)
    params = tuple(params)
    _, cache = nnjax.forward_pass(params, x, activation="tanh", loss="mse")
    grads = nnjax.backward_pass(params, x, y, cache, activation="tanh", loss="mse")
    assert isinstance(grads, tuple)
    chex.assert_trees_all_equal_shapes(grads, params)


def test_backward_pass_rejects_bad_targets_and_caches():
    params, x, y = make_problem(4, (2, 3, 2), "mse", 4)
    _, cache = nnjax.forward_pass(params, x, activation="tanh", loss="mse")
    with pytest.raises(ValueError, match=r"y_true has shape \(4,\) but y_pred has shape \(4, 2\)"):
        nnjax.backward_pass(params, x, y[:, 0], cache, activation="tanh", loss="mse")
    with pytest.raises(ValueError, match="cache has no 'a1'"):
        nnjax.backward_pass(params, x, y, {"z2": cache["z2"]}, activation="tanh", loss="mse")
    with pytest.raises(ValueError, match=r"integer labels must lie in \[0, 2\)"):
        labels = jnp.array([0, 1, 2, 1])
        nnjax.backward_pass(
            params, x, labels, cache, activation="tanh", loss="softmax_cross_entropy"
        )


def test_output_error_is_fused_a_minus_y():
    """For each canonical pair, dL/dz_L = c * (a_L - y): the output bias gradient shows it."""
    batch, n_out = 5, 3
    for loss, scale in (
        ("mse", 2 / (batch * n_out)),
        ("binary_cross_entropy", 1 / (batch * n_out)),
        ("softmax_cross_entropy", 1 / batch),
    ):
        params, x, y = make_problem(6, (4, 6, n_out), loss, batch)
        out, cache = nnjax.forward_pass(params, x, activation="sigmoid", loss=loss)
        grads = nnjax.backward_pass(params, x, y, cache, activation="sigmoid", loss=loss)
        target = jax.nn.one_hot(y, n_out) if loss == "softmax_cross_entropy" else y
        expected_db = scale * jnp.sum(out - target, axis=0)
        chex.assert_trees_all_close(grads[-1]["b"], expected_db, rtol=1e-5, atol=1e-7)


def test_predict_is_the_evaluation_forward_pass():
    params, x, _ = make_problem(7, (3, 4, 2), "binary_cross_entropy", 5)
    out, _ = nnjax.forward_pass(params, x, activation="relu", loss="binary_cross_entropy")
    predicted = nnjax.predict(params, x, activation="relu", loss="binary_cross_entropy")
    chex.assert_trees_all_equal(predicted, out)
    assert float(out.min()) > 0 and float(out.max()) < 1
    (W1, b1), (W2, b2) = ((np.asarray(p["W"]), np.asarray(p["b"])) for p in params)
    hidden = np.maximum(np.asarray(x) @ W1.T + b1, 0)
    np.testing.assert_allclose(predicted, 1 / (1 + np.exp(-(hidden @ W2.T + b2))), rtol=1e-5)


@settings(max_examples=12, deadline=None)
@given(
    widths=st.lists(st.integers(1, 64), min_size=2, max_size=6),
    batch=st.integers(1, 32),
    activations=st.lists(st.sampled_from(HIDDEN), min_size=4, max_size=4),
    loss=st.sampled_from(PAIRS),
    seed=st.integers(0, 2**16),
)
def test_backward_pass_equals_autodiff_for_any_architecture(widths, batch, activations, loss, seed):
    """1-5 layers of width 1-64, batch 1-32, any activations and output/loss: float64."""
    if loss == "softmax_cross_entropy" and widths[-1] < 2:
        widths = [*widths[:-1], 2]
    activation = tuple(activations[: len(widths) - 2])
    with jax.enable_x64(True):
        params, x, y = make_problem(seed, widths, loss, batch, jnp.float64)
        manual, reference = jit_manual_and_autodiff(params, x, y, activation=activation, loss=loss)
    assert tree_relative_error(manual, reference) <= 1e-10


def test_backward_pass_vmaps_over_a_stack_of_networks():
    """K networks at once: jax.vmap over stacked parameters equals K separate calls."""
    problems = [make_problem(seed, (3, 6, 2), "softmax_cross_entropy", 5) for seed in range(3)]
    x, y = problems[0][1], problems[0][2]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(p for p, _, _ in problems))
    arch = {"activation": "relu", "loss": "softmax_cross_entropy"}

    def grads(params):
        _, cache = nnjax.forward_pass(params, x, **arch)
        return nnjax.backward_pass(params, x, y, cache, **arch)

    batched = jax.jit(jax.vmap(grads))(stacked)
    for k, (params, _, _) in enumerate(problems):
        chex.assert_trees_all_close(
            jax.tree.map(lambda leaf, k=k: leaf[k], batched), grads(params), rtol=1e-6, atol=1e-7
        )


# --- refused networks, caches and inputs ------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.complex64, jnp.int32, jnp.bool_, "text"])
def test_init_network_refuses_a_dtype_that_is_not_floating_point(dtype):
    with pytest.raises(TypeError, match="dtype must be a floating-point dtype"):
        nnjax.init_network(jax.random.key(0), [3, 4, 2], dtype=dtype)


@pytest.mark.parametrize(
    ("layer", "name", "dtype"),
    [(1, "b", jnp.int32), (1, "W", jnp.float16), (0, "b", jnp.bfloat16)],
)
def test_forward_pass_refuses_parameters_of_mixed_dtypes(layer, name, dtype):
    params, x, _ = make_problem(0, (3, 4, 2), "mse", 2)
    params[layer][name] = params[layer][name].astype(dtype)
    with pytest.raises(TypeError, match=f"layer {layer + 1}'s {name} has {jnp.dtype(dtype)}"):
        nnjax.forward_pass(params, x, activation="tanh", loss="mse")


def test_forward_pass_refuses_integer_parameters():
    params, _, _ = make_problem(0, (3, 4, 2), "mse", 2)
    params = [{k: v.astype(jnp.int32) for k, v in layer.items()} for layer in params]
    with pytest.raises(TypeError, match=r"parameters must be floating-point.*int32"):
        nnjax.forward_pass(params, jnp.ones((2, 3)), loss="mse")


def test_backward_pass_with_another_networks_cache_names_the_entry_and_shape():
    params, x, y = make_problem(4, (2, 3, 2), "mse", 4)
    other, _, _ = make_problem(4, (2, 5, 2), "mse", 4)
    _, cache = nnjax.forward_pass(other, x, activation="tanh", loss="mse")
    with pytest.raises(ValueError, match=r"cache\['z1'\] has shape \(4, 5\).*need \(4, 3\)"):
        nnjax.backward_pass(params, x, y, cache, activation="tanh", loss="mse")
    _, cache = nnjax.forward_pass(params, x[:3], activation="tanh", loss="mse")
    with pytest.raises(ValueError, match=r"cache\['z1'\] has shape \(3, 3\).*need \(4, 3\)"):
        nnjax.backward_pass(params, x, y, cache, activation="tanh", loss="mse")


def test_forward_neuron_refuses_an_activation_that_is_neither_function_nor_name():
    with pytest.raises(TypeError, match="activation_fn must be a function or an activation name"):
        nnjax.forward_neuron(jnp.ones(3), jnp.ones(3), 0.0, 5)


def test_evaluate_on_empty_arrays_raises_instead_of_returning_nan():
    params, _, _ = make_problem(0, (3, 4, 2), "softmax_cross_entropy", 2)
    with pytest.raises(ValueError, match=r"x is empty \(shape \(0, 3\)\)"):
        metrics.evaluate(params, jnp.ones((0, 3)), jnp.zeros((0,), jnp.int32))


def test_shuffle_indices_of_nothing_is_a_value_error():
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        steps.shuffle_indices(jax.random.key(0), 0)
    np.testing.assert_array_equal(steps.shuffle_indices(jax.random.key(0), 1), [0])


def test_check_int_with_a_maximum_names_the_bound():
    """A count that becomes an int32 (epochs) gets an upper bound, not an OverflowError later."""
    with pytest.raises(ValueError, match=r"epochs must be an integer in \[1, 2147483647\]"):
        _validation.check_int("epochs", 2**40, 1, maximum=2**31 - 1)
    assert _validation.check_int("epochs", 2**31 - 1, 1, maximum=2**31 - 1) == 2**31 - 1
    assert _validation.check_int("epochs", 2**40, 1) == 2**40


def test_bias_init_choices():
    key, sizes = jax.random.key(0), [3, 5, 2]
    zeros = network.init_network(key, sizes, "he")
    chex.assert_trees_all_equal(zeros, network.init_network(key, sizes, "he", bias_init="zeros"))
    assert all(not np.asarray(layer["b"]).any() for layer in zeros)
    constant = network.init_network(key, sizes, "he", bias_init=0.1)
    np.testing.assert_array_equal(constant[1]["b"], np.full((2,), 0.1, np.float32))
    drawn = network.init_network(
        key, sizes, "he", bias_init=lambda k, n, dtype: jax.random.uniform(k, (n,), dtype)
    )
    for layer, reference in zip(drawn, zeros, strict=True):
        np.testing.assert_array_equal(layer["W"], reference["W"])  # weights keep their keys
        assert layer["b"].shape == reference["b"].shape and np.asarray(layer["b"]).all()
    for bad, error in (("ones", ValueError), (float("inf"), ValueError), ([0.0], TypeError)):
        with pytest.raises(error, match="bias_init"):
            network.init_network(key, sizes, bias_init=bad)
    with pytest.raises(ValueError, match=r"bias_init returned biases of shape \(6,\)"):
        network.init_network(key, sizes, bias_init=lambda k, n, dtype: jnp.zeros((n + 1,), dtype))


def test_an_activation_function_instead_of_its_name_is_named_in_the_error():
    params = nnjax.init_network(jax.random.key(0), [2, 3, 2])
    with pytest.raises(ValueError, match=r"unknown activation <PjitFunction.*expected one of"):
        nnjax.forward_pass(params, jnp.ones((1, 2)), activation=jnp.tanh)
