"""Tests of nnjax.runs: runs built and trained from Python, without argparse."""

import os
import signal

import numpy as np
import pytest

from nnjax import run_data, runs

from helpers import XOR_RUN

# The XOR network of test_cli.py: the same shapes share its compiled programs.
XOR = XOR_RUN


def test_make_config_fills_in_the_defaults_that_depend_on_other_options():
    config = runs.make_config(optimizer="sgd", activation="tanh", hidden=(8,))
    assert list(config) == list(runs.DEFAULT_CONFIG)
    assert (config["learning_rate"], config["init"], config["hidden"]) == (0.1, "xavier", [8])
    assert runs.make_config()["init"] == "he"
    with pytest.raises(TypeError, match="unknown run options: lr"):
        runs.make_config(lr=0.1)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        runs.make_config(optimizer="rmsprop")


def test_a_signal_stops_training_at_the_end_of_a_compiled_call():
    run = runs.Run(runs.make_config(**XOR, epochs=50))
    calls = []

    def interrupt_once(progress):
        calls.append(progress.epoch)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    trained = runs.train(run, on_progress=interrupt_once)
    assert trained.interrupted == signal.SIGTERM
    assert trained.epoch == calls[-1] < 50  # the call the signal arrived in completed
    assert len(trained.history["train_loss"]) == trained.epoch
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are restored


def test_command_line_names_the_options_that_differ_from_the_defaults():
    config = runs.make_config(**XOR, epochs=20)
    line = runs.command_line(config, "runs/my xor", learning_rate=0.5)
    assert line.startswith("nnjax train --dataset xor --hidden 4 --activation sigmoid")
    assert "--lr 0.5" in line and "--seed 3" in line and "--epochs 20" in line
    assert line.endswith("--output 'runs/my xor' --resume")
    assert "--beta1" not in line  # at its default
    np.testing.assert_equal(runs.merge({"a": [1.0]}, {"a": [2.0]}), {"a": [1.0, 2.0]})


def test_the_progress_bar_starts_after_compiling_and_fits_80_columns(capsys):
    runs.train(runs.Run(runs.make_config(**XOR, epochs=3)), quiet=False)
    err = capsys.readouterr().err
    assert err.startswith("xor: compiling the training program...\n")
    lines = [line for line in err.replace("\r", "\n").splitlines() if "%|" in line]
    assert lines and all(len(line) <= 80 for line in lines)
    assert "loss=" in lines[-1] and "acc=" in lines[-1] and "3/3" in lines[-1]


def test_a_data_run_resumes_with_its_file_and_old_folders_lack_the_data_options():
    config = runs.make_config(data="my data.csv", label_column="price", loss="mse", epochs=3)
    assert config["data"] == os.path.abspath("my data.csv") and config["dataset"] is None
    line = runs.command_line(config, "runs/my data")
    assert line.startswith(f"nnjax train --loss mse --epochs 3 --data '{config['data']}'")
    assert "--label-column price --output" in line and "--dataset" not in line
    assert "--n-samples 30" in runs.command_line(runs.make_config(n_samples=30), "runs/x")
    old = {k: v for k, v in runs.make_config(**XOR).items() if k not in run_data.DATA_OPTIONS}
    assert runs.saved_config(old) == runs.make_config(**XOR)


def test_the_progress_bar_of_a_regression_shows_both_losses(capsys):
    from nnjax import progress, training

    close, show = progress.progress_bar(runs.make_config(data="line.csv", loss="mse"), 0, False)
    show(training.Progress(1, {"train_loss": [0.5], "val_loss": [0.25]}, None, None))
    close()
    err = capsys.readouterr().err
    assert err.startswith("line: compiling the training program...\n")
    assert "loss=0.500 val_loss=0.250" in err
