"""Tests of train's options: shuffling, evaluation every N epochs, early stopping."""

import chex
import jax
import numpy as np
import pytest

import nnjax
from nnjax import datasets, metrics, program, training


@pytest.fixture(scope="module")
def moons():
    data_key, init_key, train_key = jax.random.split(jax.random.key(0), 3)
    return datasets.load_dataset("moons", data_key), init_key, train_key


def test_without_shuffling_every_epoch_takes_the_samples_in_order(moons):
    """The key no longer matters (no dropout), and the last 10 % 4 = 2 samples are never used."""
    data, init_key, train_key = moons
    x, y = data.x_train[:10], data.y_train[:10]
    params = nnjax.init_network(init_key, [2, 4, 2], "he")
    common = dict(epochs=3, batch_size=4, epochs_per_call=2, shuffle=False)
    first = training.train(params, x, y, key=train_key, **common)
    other_key = training.train(params, x, y, key=jax.random.key(7), **common)
    swapped_tail = training.train(params, x.at[8:].set(9.0), y, key=train_key, **common)
    chex.assert_trees_all_equal(first.params, other_key.params)
    chex.assert_trees_all_equal(first.params, swapped_tail.params)
    shuffled = training.train(params, x, y, key=train_key, **{**common, "shuffle": True})
    assert not np.array_equal(shuffled.params[0]["W"], first.params[0]["W"])
    with pytest.raises(TypeError, match="shuffle"):
        training.train(params, x, y, key=train_key, shuffle="no")


def test_eval_every_records_the_epochs_evaluated_and_trains_alike(moons):
    data, init_key, train_key = moons
    x, y = data.x_train[:64], data.y_train[:64]
    params = nnjax.init_network(init_key, [2, 4, 2], "he")
    common = dict(epochs=7, batch_size=16, key=train_key, epochs_per_call=2)
    every = training.train(params, x, y, validation=(x, y), **common)
    third = training.train(params, x, y, validation=(x, y), eval_every=3, **common)
    never = training.train(params, x, y, eval_every=0, **common)
    assert "eval_epoch" not in every.history
    assert third.history["eval_epoch"] == [3, 6]
    for name, series in every.history.items():
        assert third.history[name] == [series[2], series[5]]
    assert never.history == {"train_loss": [], "train_accuracy": [], "eval_epoch": []}
    chex.assert_trees_all_equal(every.params, third.params)
    chex.assert_trees_all_equal(every.params, never.params)
    assert never.steps_per_second > 0 and every.steps_per_second > 0


def test_steps_per_second_leaves_out_the_evaluations_timed_by_the_program(moons, monkeypatch):
    data, init_key, train_key = moons
    x, y = data.x_train[:64], data.y_train[:64]  # the shapes and options of the test above
    params = nnjax.init_network(init_key, [2, 4, 2], "he")
    common = dict(epochs=7, batch_size=16, key=train_key, epochs_per_call=2, validation=(x, y))
    assert training.train(params, x, y, **common).eval_seconds == 0  # not timed
    common["time_evaluation"] = True
    assert training.train(params, x, y, **common).eval_seconds > 0
    timed = []

    def evaluation_seconds(run, outcome):
        timed.append((run, outcome))
        return 0.25

    monkeypatch.setattr(training, "evaluation_seconds", evaluation_seconds)
    every = training.train(params, x, y, **common)
    third = training.train(params, x, y, eval_every=3, **common)
    assert (every.eval_seconds, third.eval_seconds) == (7 * 0.25, 2 * 0.25)
    # What is timed is what an epoch evaluates: a call of no epoch evaluates the parameters given.
    run, outcome = timed[0]
    state = jax.device_put((outcome.params, outcome.opt_state), may_alias=False)  # it takes them
    none = program.int32(0)
    args = (*state, *run.data, run.hyper, run.key, none, none, outcome.stopper, ())
    _, _, done, history, _ = run.compiled(*args)
    names = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
    evaluated = [float(getattr(history, name)[0]) for name in names]
    assert int(done) == 0 and np.isnan(history.train_loss[1])
    np.testing.assert_allclose(evaluated, [every.history[n][-1] for n in names], rtol=1e-6)


def test_early_stopping_does_not_depend_on_the_epochs_per_call(moons):
    data, init_key, train_key = moons
    params = nnjax.init_network(init_key, [2, 8, 2], "he")
    rule = training.EarlyStopping("val_loss", patience=3, min_delta=1e-3)
    common = dict(optimizer=nnjax.adam(1e-2), epochs=200, batch_size=64, key=train_key)
    common.update(validation=(data.x_test, data.y_test), early_stopping=rule)
    one, seven = (
        training.train(params, data.x_train, data.y_train, epochs_per_call=n, **common)
        for n in (1, 7)
    )
    chex.assert_trees_all_equal(one.params, seven.params)
    assert one.history == seven.history
    assert (one.best_epoch, one.stopped_epoch) == (seven.best_epoch, seven.stopped_epoch)
    assert one.stopped_epoch == one.epochs_run < 200
    assert one.stopped_epoch - one.best_epoch == 3
    val_loss = np.array(one.history["val_loss"])
    # No later epoch beats the best one by more than min_delta.
    assert (val_loss[one.best_epoch :] >= val_loss[one.best_epoch - 1] - 1e-3).all()
    loss, _ = metrics.evaluate(one.params, data.x_test, data.y_test)
    assert float(loss) == pytest.approx(one.history["val_loss"][one.best_epoch - 1], rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"early_stopping": training.EarlyStopping("val_loss")}, "one of train_loss"),
        ({"early_stopping": training.EarlyStopping("train_loss"), "eval_every": 0}, "eval_every"),
        ({"early_stopping": training.EarlyStopping("train_loss", patience=0)}, "patience"),
        ({"early_stopping": training.EarlyStopping("train_loss", mode="up")}, "mode"),
        ({"early_stopping": "val_loss"}, "EarlyStopping"),
        ({"early_stopping_state": object()}, "without early_stopping"),
        ({"eval_every": -1}, "eval_every"),
    ],
)
def test_bad_early_stopping_and_eval_every_fail_before_training(moons, kwargs, message):
    data, init_key, train_key = moons
    params = nnjax.init_network(init_key, [2, 4, 2], "he")
    with pytest.raises((TypeError, ValueError), match=message):
        training.train(params, data.x_train, data.y_train, key=train_key, **kwargs)
