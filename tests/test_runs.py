"""Tests of nnjax.runs: runs built, trained, written and resumed from Python, without argparse."""

import json
import math

import numpy as np
import pytest

from nnjax import runs

# The XOR network of test_cli.py: the same shapes share its compiled programs.
XOR = {
    "dataset": "xor",
    "hidden": [4],
    "activation": "sigmoid",
    "loss": "binary_cross_entropy",
    "optimizer": "momentum",
    "learning_rate": 2.0,
    "batch_size": 4,
    "seed": 3,
}


def test_make_config_fills_in_the_defaults_that_depend_on_other_options():
    config = runs.make_config(optimizer="sgd", activation="tanh", hidden=(8,))
    assert list(config) == list(runs.DEFAULT_CONFIG)
    assert (config["learning_rate"], config["init"], config["hidden"]) == (0.1, "xavier", [8])
    assert runs.make_config()["init"] == "he"
    with pytest.raises(TypeError, match="unknown run options: lr"):
        runs.make_config(lr=0.1)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        runs.make_config(optimizer="rmsprop")


def test_a_run_trains_writes_its_folder_and_resumes_from_it(tmp_path):
    config = runs.make_config(**XOR, epochs=20, diagnostics=10)
    run = runs.Run(config)
    trained = runs.train(run)
    written = runs.write_run_folder(run, trained, tmp_path)

    metrics = json.loads(written.metrics_json.read_text())
    assert metrics["config"] == config and metrics["epochs_completed"] == trained.epoch == 20
    assert metrics["history"] == trained.history and len(trained.history["train_loss"]) == 20
    assert metrics["test"] == written.metrics["test"]
    plots = {"history.png", "activations.png", "confusion_matrix.png", "decision_boundary.png"}
    plots |= {"gradient_norms.png", "activation_std.png"}
    assert {p.name for p in written.plots} == plots
    assert {p.name for p in tmp_path.iterdir()} == plots | {"checkpoint.npz", "metrics.json"}

    further = runs.Run(runs.make_config(**XOR, epochs=30, diagnostics=10))
    start = runs.resume(further, tmp_path)
    assert start.epoch == 20 and start.history == trained.history
    np.testing.assert_array_equal(start.params[0]["W"], trained.result.params[0]["W"])

    with pytest.raises(ValueError, match=r"options differ from the checkpoint's: \{'seed'"):
        runs.resume(runs.Run(runs.make_config(**{**XOR, "seed": 4}, epochs=30)), tmp_path)
    with pytest.raises(ValueError, match="is not past the checkpoint's epoch 20"):
        runs.resume(runs.Run(runs.make_config(**XOR, epochs=20, diagnostics=10)), tmp_path)

    (tmp_path / "history.png").unlink()
    loaded, params, payload = runs.load_run_folder(tmp_path)
    runs.write_plots(loaded, params, payload["history"], tmp_path)
    assert (tmp_path / "history.png").exists()


def test_folders_that_are_no_runs_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match=r"is not a run folder: no metrics\.json"):
        runs.load_run_folder(tmp_path)
    with pytest.raises(ValueError, match="no checkpoint at"):
        runs.resume(runs.Run(runs.make_config(**XOR)), tmp_path)


def test_finite_or_null_gives_plain_json_without_nan():
    value = {1: (np.float32(0.5), math.nan), "a": np.array([1.0, np.inf]), "b": [None, True]}
    converted = runs.finite_or_null(value)
    assert converted == {"1": [0.5, None], "a": [1.0, None], "b": [None, True]}
    assert json.loads(json.dumps(converted, allow_nan=False)) == converted
