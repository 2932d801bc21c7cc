"""The experiments in scripts/experiments: their claims hold on small, fast versions, and they
write their figure and numbers.

The scripts are not a package: each is imported from its file (``_common`` first, under the
name the scripts import it by). Each exposes ``run(...)`` with size parameters whose defaults
are the full experiment; the tests pass smaller sizes to ``_common.main``, which is what each
script's ``main`` calls with the defaults. Only vanishing_gradients runs at full size here.
"""

import functools
import importlib.util
import json
import sys
from pathlib import Path

import jax
import pytest

from nnjax.datasets import load_dataset

from helpers import PNG_SIGNATURE

EXPERIMENTS = Path(__file__).resolve().parent.parent / "scripts" / "experiments"


def load(name: str):
    """Imports ``scripts/experiments/NAME.py`` (once) and returns the module."""
    module_name = name if name == "_common" else f"experiment_{name}"
    if module_name not in sys.modules:
        if name != "_common":
            load("_common")  # the scripts do `from _common import ...`
        spec = importlib.util.spec_from_file_location(module_name, EXPERIMENTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def check_outputs(out_dir: Path, name: str) -> dict:
    """The PNG and the JSON the experiment ``name`` wrote; returns the JSON."""
    assert (out_dir / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)
    numbers = json.loads((out_dir / f"{name}.json").read_text())
    assert numbers["claims"] and numbers["wall_seconds"] > 0
    return numbers


def test_he_keeps_deep_relu_activations_at_scale_and_xavier_shrinks_them(tmp_path):
    common, initialization = load("_common"), load("initialization")
    # 30 layers of 128 units, a batch of 256, 4 seeds: the full experiment is 256 units wide.
    sizes = {"depth": 30, "width": 128, "batch": 256, "seeds": (0, 1, 2, 3)}
    run = functools.partial(initialization.run, **sizes, cases=[("relu", "he"), ("relu", "xavier")])
    assert common.main([str(tmp_path)], initialization.__file__, run, initialization.plot) == 0
    numbers = check_outputs(tmp_path, "initialization")
    ratio = numbers["last_over_first"]
    assert 0.5 <= ratio["relu/he"] <= 2, ratio
    assert ratio["relu/xavier"] < 0.01, ratio
    # About 1/sqrt(2) per layer, as halving E[a²] at every layer predicts.
    assert abs(numbers["factor_per_layer"]["relu/xavier"] - 2**-0.5) < 0.05, numbers


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deep_sigmoid_gradient_vanishes_and_relu_does_not(seed):
    common, vanishing = load("_common"), load("vanishing_gradients")
    data = load_dataset("spirals", jax.random.key(seed))
    init_key = jax.random.key(seed + 100)
    # 10 layers: 9 hidden layers of 32 units and the output layer.
    sigmoid = common.new_network(data, [32] * 9, "xavier", init_key)
    norms = vanishing.gradient_norms(sigmoid, data, "sigmoid")
    assert norms.shape == (10,)
    assert norms[0] * 100 <= norms[-1], norms
    relu = common.new_network(data, [32] * 9, "he", init_key)
    norms = vanishing.gradient_norms(relu, data, "relu")
    assert norms[-1] / 100 < norms[0] < norms[-1] * 100, norms


def test_l2_and_dropout_narrow_the_gap_of_an_overfitting_network(tmp_path):
    common, regularization = load("_common"), load("regularization")
    # 60 noisy points and a 64-64 network: small enough to be fast, big enough to memorize.
    run = functools.partial(regularization.run, n_train=60, hidden=(64, 64), epochs=200)
    assert common.main([str(tmp_path)], regularization.__file__, run, regularization.plot) == 0
    results = check_outputs(tmp_path, "regularization")["results"]
    assert results["none"]["train_accuracy"] >= 0.98, results
    assert results["L2"]["gap"] < results["none"]["gap"], results
    assert results["dropout"]["gap"] < results["none"]["gap"], results


def test_vanishing_gradients_runs_end_to_end_and_its_claims_hold(tmp_path, capsys):
    vanishing = load("vanishing_gradients")
    assert vanishing.main([str(tmp_path)]) == 0
    numbers = check_outputs(tmp_path, "vanishing_gradients")
    assert all(numbers["claims"].values()), numbers["claims"]
    assert numbers["sigmoid"]["first_over_last_init"] < 1e-2
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'vanishing_gradients.png'}" in out and "FAILED" not in out


def test_classical_momentum_and_adam_beat_sgd_and_damped_momentum_tracks_it(tmp_path):
    common, optimizers = load("_common"), load("optimizers")
    # A 16-16 network for 20 epochs (seeds 0-3 all hold the claims; Adam needs more than 2 epochs
    # to pass SGD). Compiling the four programs costs more than training them.
    run = functools.partial(optimizers.run, hidden=(16, 16), epochs=20)
    assert common.main([str(tmp_path)], optimizers.__file__, run, optimizers.plot) == 0
    final = check_outputs(tmp_path, "optimizers")["final_train_loss"]
    sgd = final["SGD"]
    assert abs(final["momentum (spec, damped)"] - sgd) <= 0.25 * sgd, final
    assert final["classical momentum"] < sgd and final["Adam"] < sgd, final


def test_relu_trains_faster_than_tanh_and_tanh_than_sigmoid(tmp_path):
    common, activations = load("_common"), load("activations")
    run = functools.partial(activations.run, hidden=(16, 16), epochs=20)
    assert common.main([str(tmp_path)], activations.__file__, run, activations.plot) == 0
    final = check_outputs(tmp_path, "activations")["final_train_loss"]
    assert final["relu"] < final["tanh"] < final["sigmoid"], final


def test_the_best_learning_rate_lies_between_a_crawling_and_a_diverging_one(tmp_path):
    common, learning_rate = load("_common"), load("learning_rate")
    # Three rates, two seeds, 20 epochs: each seed alone ends 10x lower at 0.3 than at 1e-3.
    run = functools.partial(learning_rate.run, rates=[1e-3, 0.3, 30.0], num_seeds=2, epochs=20)
    assert common.main([str(tmp_path)], learning_rate.__file__, run, learning_rate.plot) == 0
    numbers = check_outputs(tmp_path, "learning_rate")
    assert numbers["best_learning_rate"] == 0.3, numbers
    smallest, best, largest = numbers["final_train_loss"]  # null where a run diverged
    assert min(smallest) >= 10 * max(best), numbers
    assert None in largest or min(largest) >= 10 * max(best), numbers


def test_a_sweep_in_which_every_rate_diverges_has_no_best_rate():
    learning_rate = load("learning_rate")
    numbers = learning_rate.run(rates=[1e3, 1e4], num_seeds=1, hidden=(8,), epochs=1)
    assert numbers["best_learning_rate"] is None
    assert numbers["diverged_runs"] == 2
    assert not numbers["claims"]["the best rate lies inside the range, not at either end"]


def test_bad_arguments_exit_2_before_any_work(capsys):
    experiment = load("initialization")
    assert experiment.main(["a", "b"]) == 2
    assert experiment.main(["--help"]) == 2
    assert "usage: python scripts/experiments/initialization.py" in capsys.readouterr().err


def test_residual_blocks_train_a_deep_tanh_network_the_plain_chain_cannot(tmp_path):
    common, residual = load("_common"), load("residual")
    # Full depth (at depth 10 the residual network too takes over 10 epochs), a third of the epochs.
    run = functools.partial(residual.run, epochs=10)
    assert common.main([str(tmp_path)], residual.__file__, run, residual.plot) == 0
    results = check_outputs(tmp_path, "residual")["results"]
    assert results["residual"]["epochs_to_loss_below_0.1"] <= 10, results
    assert results["plain"]["epochs_to_loss_below_0.1"] is None, results


def test_a_convolution_finds_shifted_patterns_that_an_mlp_of_its_size_misses(tmp_path):
    common, weight_sharing = load("_common"), load("weight_sharing")
    # A quarter of the epochs, 300 test signals, no wide MLP: the CNN is at 99% by epoch 5.
    run = functools.partial(weight_sharing.run, n_test=300, wide=0, epochs=10)
    assert common.main([str(tmp_path)], weight_sharing.__file__, run, weight_sharing.plot) == 0
    results = check_outputs(tmp_path, "weight_sharing")["results"]
    cnn, mlp = results["CNN"], results["MLP, as many parameters"]
    assert cnn["test_accuracy"] >= 0.95 > 0.8 > mlp["test_accuracy"], results
    assert abs(mlp["parameters"] - cnn["parameters"]) <= 0.1 * cnn["parameters"], results


def test_batch_norm_lets_the_deep_sigmoid_network_learn():
    batch_norm = load("batch_norm")
    # Full depth, 12 of the 30 epochs: batch normalization is at 82% where the plain network is
    # at chance (36%); at 30 epochs 84-93% against 32-36%.
    numbers = batch_norm.run(epochs=12)
    results, claims = numbers["results"], numbers["claims"]
    assert claims["the plain sigmoid network stays below 50% test accuracy"], results
    gradient = (
        "at init, the first layer's gradient is at least 1000x larger with batch normalization"
    )
    assert claims[gradient], results
    assert results["batch norm"]["test_accuracy"] > results["plain"]["test_accuracy"] + 0.3
