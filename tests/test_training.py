"""Tests of nnjax.training: compiled epochs, manual vs autodiff, determinism, resume, targets."""

import gc

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnjax
from nnjax import checkpoints, datasets, metrics, network, program, steps, sweeps, training

from helpers import tree_relative_error


def keys(seed):
    data_key, init_key, train_key = jax.random.split(jax.random.key(seed), 3)
    return data_key, init_key, train_key


@pytest.fixture(scope="module")
def moons():
    data_key, init_key, train_key = keys(0)
    return datasets.load_dataset("moons", data_key), init_key, train_key


@pytest.fixture(scope="module")
def digits_runs():
    """A full digits run (64-64 ReLU, Adam), once with each gradient source."""
    data_key, init_key, train_key = keys(0)
    data = datasets.load_dataset("digits", data_key)
    params = nnjax.init_network(init_key, [64, 64, 64, 10], "he")
    runs = {
        grad: training.train(
            params,
            data.x_train,
            data.y_train,
            optimizer=nnjax.adam(3e-3),
            epochs=40,
            batch_size=32,
            key=train_key,
            grad=grad,
            validation=(data.x_test, data.y_test),
        )
        for grad in steps.GRADIENT_SOURCES
    }
    return data, runs


def test_digits_reaches_97_percent(digits_runs):
    data, runs = digits_runs
    _, accuracy = metrics.evaluate(runs["manual"].params, data.x_test, data.y_test)
    assert float(accuracy) >= 0.97
    assert runs["manual"].history["val_accuracy"][-1] == pytest.approx(float(accuracy))
    assert len(runs["manual"].history["train_loss"]) == 40


def test_manual_and_autodiff_training_agree(digits_runs):
    _, runs = digits_runs
    assert tree_relative_error(runs["manual"].params, runs["autodiff"].params) <= 1e-4
    np.testing.assert_allclose(
        runs["manual"].history["train_loss"], runs["autodiff"].history["train_loss"], rtol=1e-3
    )


def test_same_seed_gives_bit_identical_results(moons):
    data, init_key, train_key = moons
    params = nnjax.init_network(init_key, [2, 8, 2], "he")

    def run():
        return training.train(
            params,
            data.x_train,
            data.y_train,
            epochs=5,
            batch_size=64,
            key=train_key,
            dropout_rate=0.2,
            l2=1e-3,
        )

    first, second = run(), run()
    chex.assert_trees_all_equal(first.params, second.params)
    assert first.history == second.history
    # The caller's parameters survive: training works on copies (its buffers are donated).
    assert np.isfinite(np.asarray(params[0]["W"])).all()


def test_resuming_from_a_checkpoint_equals_an_uninterrupted_run(moons, tmp_path):
    data, init_key, train_key = moons
    params = nnjax.init_network(init_key, [2, 8, 2], "he")
    optimizer = nnjax.momentum(0.1, 0.9)
    common = {
        "optimizer": optimizer,
        "batch_size": 50,
        "key": train_key,
        "dropout_rate": 0.1,
        "model": network.DenseNetwork("tanh"),
    }
    straight = training.train(params, data.x_train, data.y_train, epochs=6, **common)

    first = training.train(params, data.x_train, data.y_train, epochs=2, **common)
    path = checkpoints.save_checkpoint(
        tmp_path / "ckpt.npz", params=first.params, opt_state=first.opt_state, config={}, epoch=2
    )
    saved = checkpoints.load_checkpoint(
        path, params_like=params, opt_state_like=optimizer.init(params)
    )
    resumed = training.train(
        saved.params,
        data.x_train,
        data.y_train,
        opt_state=saved.opt_state,
        epochs=6,
        start_epoch=saved.epoch,
        **common,
    )
    chex.assert_trees_all_equal(resumed.params, straight.params)
    assert (
        first.history["train_loss"] + resumed.history["train_loss"]
        == (straight.history["train_loss"])
    )


@pytest.mark.parametrize(
    ("learning_rate", "bad_epoch"),
    [(1e4, 0), (1e38, 0), (60.0, 1)],
    ids=["large", "overflowing", "second_epoch"],
)
def test_divergence_returns_the_last_completed_epoch(moons, learning_rate, bad_epoch):
    """A diverged run returns the state after its last completed epoch: every value finite, and
    exactly what a run stopped at that epoch returns (so a checkpoint of it resumes exactly).
    With lr = 1e38 the first update overflows float32 while its loss is finite; with lr = 60 the
    loss diverges in the second epoch, in the middle of a compiled call, so the state returned is
    not the one the call began with."""
    data, init_key, train_key = moons
    params = nnjax.init_network(init_key, [2, 16, 2], "he")
    common = dict(
        optimizer=nnjax.sgd,
        learning_rate=learning_rate,
        batch_size=32,
        key=train_key,
        epochs_per_call=20,
    )
    result = training.train(params, data.x_train, data.y_train, epochs=20, **common)
    assert result.diverged is not None
    assert result.diverged.epoch == result.epochs_run == bad_epoch
    assert len(result.history["train_loss"]) == result.epochs_run
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(result.params))
    if result.epochs_run:
        stopped = training.train(
            params, data.x_train, data.y_train, epochs=result.epochs_run, **common
        )
        expected = (stopped.params, stopped.opt_state)
    else:
        expected = (params, nnjax.sgd(learning_rate).init(params))
    chex.assert_trees_all_equal((result.params, result.opt_state), expected)


def test_two_moons_reaches_99_percent(moons):
    data, init_key, train_key = moons
    params = nnjax.init_network(init_key, [2, 16, 16, 2], "he")
    result = training.train(
        params,
        data.x_train,
        data.y_train,
        optimizer=nnjax.adam(1e-2),
        epochs=60,
        batch_size=32,
        key=train_key,
        validation=(data.x_test, data.y_test),
    )
    assert result.history["val_accuracy"][-1] >= 0.99


def test_xor_with_the_spec_network_and_damped_momentum():
    x, y = datasets.make_xor()
    params = nnjax.init_network(jax.random.key(3), [2, 4, 1], "xavier")
    result = training.train(
        params,
        x,
        y,
        model=network.DenseNetwork("sigmoid", "binary_cross_entropy"),
        optimizer=nnjax.momentum(2.0, 0.9),
        epochs=2000,
        batch_size=4,
        key=jax.random.key(0),
    )
    assert result.history["train_accuracy"][-1] == 1.0


def test_breast_cancer_with_sigmoid_and_bce_from_logits():
    data_key, init_key, train_key = keys(0)
    data = datasets.load_dataset("breast_cancer", data_key)
    params = nnjax.init_network(init_key, [30, 32, 1], "xavier")
    result = training.train(
        params,
        data.x_train,
        data.y_train,
        model=network.DenseNetwork("relu", "binary_cross_entropy"),
        optimizer=nnjax.adam(1e-3),
        epochs=30,
        batch_size=32,
        key=train_key,
        l2=1e-2,
        validation=(data.x_test, data.y_test),
    )
    assert result.history["val_accuracy"][-1] >= 0.96


def test_remainder_batches_and_full_batch(moons):
    data, init_key, train_key = moons
    x, y = data.x_train[:10], data.y_train[:10]
    params = nnjax.init_network(init_key, [2, 4, 2], "he")
    for batch_size in (4, 64):  # 10 = 2 * 4 + 2 dropped; 64 > 10 becomes full batch
        result = training.train(
            params, x, y, epochs=3, batch_size=batch_size, key=train_key, epochs_per_call=2
        )
        assert result.epochs_run == 3
        assert len(result.history["train_loss"]) == 3
        # Optimizer steps: 2 batches of 4 per epoch (the remainder of 2 left out), or 1 of 10.
        assert int(result.opt_state.count) == 3 * (2 if batch_size == 4 else 1)


def test_more_epochs_leave_no_more_cyclic_garbage(moons):
    """The command line runs with Python's cyclic garbage collector off (``nnjax.__main__``): the host
    loop between compiled calls must leave no reference cycles behind."""
    data, init_key, train_key = moons
    x, y = data.x_train[:10], data.y_train[:10]
    params = nnjax.init_network(init_key, [2, 4, 2], "he")

    def cycles(epochs):
        gc.collect()
        gc.disable()
        try:
            training.train(
                params, x, y, epochs=epochs, batch_size=4, key=train_key, epochs_per_call=2
            )
            return gc.collect()
        finally:
            gc.enable()

    cycles(2)  # compiles
    assert cycles(40) <= cycles(2)  # 20 compiled calls, then 1


def test_every_epoch_shuffles_with_a_key_folded_from_its_number(moons):
    """Epoch 1 of a run is not epoch 0's batch order again, and resuming at epoch 1 gives it.

    Without dropout the shuffling is the only randomness: two epochs from the same start that
    reused one key would end with the same parameters.
    """
    data, init_key, train_key = moons
    x, y = data.x_train[:10], data.y_train[:10]
    params = nnjax.init_network(init_key, [2, 4, 2], "he")
    common = dict(batch_size=4, key=train_key, epochs_per_call=2)
    both = training.train(params, x, y, epochs=2, **common)
    first = training.train(params, x, y, epochs=1, **common)
    after = dict(opt_state=first.opt_state, **common)
    again = training.train(first.params, x, y, epochs=1, **after)  # epoch 0's order again
    second = training.train(first.params, x, y, epochs=2, start_epoch=1, **after)
    chex.assert_trees_all_equal(second.params, both.params)
    assert not np.array_equal(again.params[0]["W"], both.params[0]["W"])


def test_regression_history_has_no_accuracy(moons):
    data, init_key, train_key = moons
    targets = data.x_train[:, :1] * 2.0
    params = nnjax.init_network(init_key, [2, 4, 1], "xavier")
    result = training.train(
        params,
        data.x_train,
        targets,
        model=network.DenseNetwork("tanh", "mse"),
        epochs=2,
        key=train_key,
    )
    assert set(result.history) == {"train_loss"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"dropout_rate": 1.0}, r"dropout_rate must be in \[0, 1\)"),
        ({"l2": -1.0}, r"l2 must be in \[0, inf\)"),
        ({"grad": "numeric"}, "unknown grad 'numeric'"),
        ({"model": network.DenseNetwork("swish")}, "unknown activation 'swish'"),
        ({"start_epoch": 5}, r"start_epoch must be in \[0, epochs=2\]"),
        ({"start_epoch": 1.5}, "start_epoch must be an integer >= 0, got 1.5"),
        ({"epochs_per_call": 0}, "epochs_per_call must be an integer >= 1, got 0"),
        ({"diagnostics_every": True}, "diagnostics_every must be an integer >= 0, got True"),
        ({"optimizer": nnjax.adam}, "optimizer must be an optax.GradientTransformation"),
    ],
)
def test_bad_arguments_fail_before_training(moons, kwargs, message):
    data, init_key, train_key = moons
    params = nnjax.init_network(init_key, [2, 4, 2], "he")
    options = {"epochs": 2, "key": train_key, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        training.train(params, data.x_train, data.y_train, **options)


def test_non_finite_data_and_bad_binary_labels_fail_before_training(moons):
    data, init_key, train_key = moons
    params = nnjax.init_network(init_key, [2, 4, 2], "he")
    x_bad = data.x_train.at[3, 1].set(jnp.nan)
    with pytest.raises(ValueError, match="validation x hold non-finite values"):
        training.train(
            params, data.x_train, data.y_train, key=train_key, validation=(x_bad, data.y_train)
        )
    with pytest.raises(ValueError, match="the targets of x hold non-finite values"):
        targets = jnp.full((data.x_train.shape[0], 2), jnp.inf)
        training.train(
            params, data.x_train, targets, model=network.DenseNetwork(loss="mse"), key=train_key
        )
    binary = nnjax.init_network(init_key, [2, 4, 1], "xavier")
    with pytest.raises(ValueError, match=r"needs labels 0 and 1, got \[0 2\]"):
        training.train(
            binary,
            data.x_train,
            data.y_train * 2,
            model=network.DenseNetwork(loss="binary_cross_entropy"),
            key=train_key,
        )


def test_the_default_optimizer_compiles_once_and_integer_scalars_are_accepted(moons):
    data, init_key, train_key = moons
    params = nnjax.init_network(init_key, [2, 4, 2], "he")
    common = dict(batch_size=np.int64(400), key=train_key)
    training.train(params, data.x_train, data.y_train, epochs=np.int32(1), **common)
    compiled = program._compile.cache_info().misses
    result = training.train(params, data.x_train, data.y_train, epochs=2, **common)
    assert program._compile.cache_info().misses == compiled
    assert result.epochs_run == 2


def test_mismatched_data_is_named(moons):
    data, init_key, train_key = moons
    params = nnjax.init_network(init_key, [2, 4, 2], "he")
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        training.train(params, data.x_train[:, :1], data.y_train, key=train_key)
    with pytest.raises(ValueError, match="x has 400 samples but its targets have 399"):
        training.train(params, data.x_train, data.y_train[:-1], key=train_key)
    with pytest.raises(ValueError, match="integer labels must have shape"):
        training.train(params, data.x_train, jnp.zeros((400, 2), jnp.int32), key=train_key)
    bad_labels = data.y_test.at[0].set(5)
    with pytest.raises(ValueError, match=r"^validation y: integer labels must lie in \[0, 2\)"):
        training.train(
            params, data.x_train, data.y_train, key=train_key, validation=(data.x_test, bad_labels)
        )
    with pytest.raises(TypeError, match="dtype=float64 needs 64-bit JAX"):
        nnjax.init_network(init_key, [2, 4, 2], dtype=jnp.float64)


def test_binary_accuracy_never_broadcasts():
    with pytest.raises(ValueError, match=r"shape \(3, 1\) but targets has shape \(3,\)"):
        metrics.accuracy(jnp.ones((3, 1)), jnp.ones(3), "binary_cross_entropy")


def test_accuracy_definitions():
    probs = jnp.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert float(metrics.accuracy(probs, jnp.array([0, 1, 1]), "softmax_cross_entropy")) == (
        pytest.approx(2 / 3)
    )
    sig = jnp.array([[0.7], [0.2], [0.51]])
    assert float(
        metrics.accuracy(sig, jnp.array([[1.0], [1.0], [1.0]]), "binary_cross_entropy")
    ) == (pytest.approx(2 / 3))
    with pytest.raises(ValueError, match="not defined for loss 'mse'"):
        metrics.accuracy(sig, sig, "mse")


def test_sweep_trains_each_model_as_train_would(moons):
    data, _, _ = moons
    learning_rates = np.array([1e-3, 1e-2, 3e-2])
    seeds = [0, 1, 2]
    common = {"epochs": 3, "batch_size": 50, "validation": (data.x_test, data.y_test)}
    result = sweeps.sweep(
        data.x_train,
        data.y_train,
        layer_sizes=[2, 8, 2],
        seeds=seeds,
        learning_rates=learning_rates,
        l2=1e-3,
        dropout_rates=[0.0, 0.1, 0.2],
        **common,
    )
    assert result.history["val_accuracy"].shape == (3, 3)
    assert not result.diverged.any()
    k = 2
    init_key, train_key = jax.random.split(jax.random.key(seeds[k]))
    single = training.train(
        nnjax.init_network(init_key, [2, 8, 2], "he"),
        data.x_train,
        data.y_train,
        optimizer=nnjax.adam(float(learning_rates[k])),
        key=train_key,
        l2=1e-3,
        dropout_rate=0.2,
        **common,
    )
    chex.assert_trees_all_close(
        jax.tree.map(lambda leaf: leaf[k], result.params), single.params, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        result.history["train_loss"][k], single.history["train_loss"], rtol=1e-5
    )


def test_sweep_hyperparameters_are_traced_not_compiled_in(moons):
    data, _, _ = moons
    options = {"layer_sizes": [2, 4, 2], "seeds": [0, 1], "epochs": 1, "batch_size": 100}
    sweeps.sweep(data.x_train, data.y_train, learning_rates=[1e-3, 1e-2], **options)
    compiled = program._compile.cache_info().misses
    again = sweeps.sweep(data.x_train, data.y_train, learning_rates=[5e-3, 0.2], **options)
    assert program._compile.cache_info().misses == compiled
    assert again.history["train_loss"].shape == (2, 1)


def test_sweep_rejects_mismatched_hyperparameters(moons):
    data, _, _ = moons
    with pytest.raises(
        ValueError, match=r"learning_rates must be a scalar or have one value per model \(2,\)"
    ):
        sweeps.sweep(
            data.x_train,
            data.y_train,
            layer_sizes=[2, 4, 2],
            seeds=[0, 1],
            learning_rates=[1e-3] * 3,
        )
    with pytest.raises(ValueError, match=r"dropout_rates must be in \[0, 1\)"):
        sweeps.sweep(
            data.x_train,
            data.y_train,
            layer_sizes=[2, 4, 2],
            seeds=[0],
            learning_rates=1e-3,
            dropout_rates=1.0,
        )
    for seeds, message in (([0.7], "sequence of integers, got float64"), ([-1], r"\[-1, -1\]")):
        with pytest.raises(ValueError, match=message):
            sweeps.sweep(
                data.x_train, data.y_train, layer_sizes=[2, 4, 2], seeds=seeds, learning_rates=0.1
            )


@pytest.mark.parametrize("n", [1, 2, 5, 64, 1000, 4097])
def test_shuffle_indices_is_a_permutation(n):
    order = np.asarray(jax.jit(steps.shuffle_indices, static_argnums=1)(jax.random.key(n), n))
    assert order.dtype == np.int32
    np.testing.assert_array_equal(np.sort(order), np.arange(n))


def test_shuffle_indices_puts_every_index_everywhere_alike():
    """Over 20,000 keys, each index lands in each of 10 positions about 1/10 of the time."""
    n, draws = 10, 20_000
    orders = np.asarray(
        jax.jit(jax.vmap(lambda k: steps.shuffle_indices(k, n)))(
            jax.random.split(jax.random.key(0), draws)
        )
    )
    counts = np.stack([np.bincount(orders[:, position], minlength=n) for position in range(n)])
    expected = draws / n
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    # 81 degrees of freedom: the 99.9% quantile of the chi-square distribution is about 126.
    assert chi_square < 126, counts
    different = steps.shuffle_indices(jax.random.key(1), 1000)
    assert not np.array_equal(different, steps.shuffle_indices(jax.random.key(2), 1000))
    np.testing.assert_array_equal(different, steps.shuffle_indices(jax.random.key(1), 1000))


@pytest.mark.parametrize("grad", steps.GRADIENT_SOURCES)
def test_no_float64_enters_the_float32_program_even_under_x64(moons, grad):
    """Python scalars and hyperparameters must not promote a float32 step to float64."""
    data, init_key, _ = moons
    with jax.enable_x64(True):
        params = nnjax.init_network(init_key, [2, 8, 2], "he", jnp.float32)
        optimizer = nnjax.adam(1e-3)
        step = steps.make_train_step(
            network.DenseNetwork(), optimizer=optimizer, grad=grad, use_l2=True, use_dropout=True
        )
        epoch = steps.make_train_epoch(step, num_batches=4, batch_size=16)
        state = steps.EpochState(
            params, optimizer.init(params), jnp.array(True), jnp.array(-1, jnp.int32)
        )
        hyper = steps.Hyperparameters(*(jnp.float32(v) for v in (1e-3, 1e-4, 0.1)))
        jaxpr = jax.make_jaxpr(epoch)(state, data.x_train, data.y_train, hyper, jax.random.key(0))
    assert "f64" not in str(jaxpr)
    assert "f32" in str(jaxpr)
