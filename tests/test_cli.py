"""Tests of the nnjax command line."""

import re
import subprocess
import sys

import pytest
import safetensors.numpy

from nnjax import checks, cli, compilation_cache


def test_check_exits_with_the_result_of_the_checks(monkeypatch, capsys):
    row = checks.CheckRow("sigmoid_derivative", 0.0, 0.0, 1e-11, None, "1e-10", 0, False)
    monkeypatch.setattr(checks, "iter_checks", lambda **_: iter([row]))
    assert cli.main(["check"]) == 1
    assert "sigmoid_derivative" in capsys.readouterr().out
    assert cli.main(["check", "--only", "sigmoid", "--only", "no such check"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_help_names_every_command_and_has_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["check", "--help"])
    assert exit_info.value.code == 0
    assert "example:" in capsys.readouterr().out


def test_unknown_command_exits_2():
    result = subprocess.run(
        [sys.executable, "-m", "nnjax", "fly"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


XOR_OPTIONS = [
    "--dataset",
    "xor",
    "--hidden",
    "4",
    "--activation",
    "sigmoid",
    "--loss",
    "binary_cross_entropy",
    "--optimizer",
    "momentum",
    "--lr",
    "2",
    "--batch-size",
    "4",
    "--seed",
    "3",
    "--quiet",
]


def test_train_writes_a_complete_run_folder_and_plot_redraws_it(tmp_path, capsys):
    import json

    folder = tmp_path / "xor"
    options = [*XOR_OPTIONS, "--epochs", "2000", "--diagnostics", "500", "--output", str(folder)]
    assert cli.main(["train", *options]) == 0
    out = capsys.readouterr().out
    assert "test accuracy 1.0000" in out and "steps/s" in out
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["config"]["optimizer"] == "momentum"
    assert metrics["test"]["accuracy"] == 1.0
    assert len(metrics["history"]["train_loss"]) == 2000
    assert {"jax", "nnjax", "optax"} <= set(metrics["versions"])
    assert metrics["steps_per_second"] > 0
    assert metrics["eval_seconds"] > 0  # left out of the steps per second
    assert metrics["history"]["diagnostics_epoch"] == [500, 1000, 1500, 2000]
    pngs = {"history.png", "activations.png", "confusion_matrix.png", "decision_boundary.png"}
    pngs |= {"gradient_norms.png", "activation_std.png"}
    assert pngs <= {p.name for p in folder.iterdir()}

    (folder / "history.png").unlink()
    assert cli.main(["plot", str(folder)]) == 0
    assert (folder / "history.png").exists()


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    import numpy as np

    from nnjax import checkpoints

    def params_after(folder):
        return safetensors.numpy.load_file(folder / "checkpoint.safetensors")

    options = ["train", "--dataset", "moons", "--hidden", "8", "--quiet", "--dropout", "0.1"]
    assert cli.main([*options, "--epochs", "4", "--output", str(tmp_path / "straight")]) == 0
    resumed = str(tmp_path / "resumed")
    assert cli.main([*options, "--epochs", "2", "--output", resumed]) == 0
    assert cli.main([*options, "--epochs", "4", "--output", resumed, "--resume"]) == 0
    straight, again = params_after(tmp_path / "straight"), params_after(tmp_path / "resumed")
    for key in straight:
        np.testing.assert_array_equal(straight[key], again[key], err_msg=key)
    assert checkpoints.read_metadata(tmp_path / "resumed" / "checkpoint.safetensors")[1] == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--hidden", "16"], "options differ from the checkpoint's: {'hidden': ([8], [16])}"),
        (["--optimizer", "sgd"], "options differ from the checkpoint's: {'optimizer'"),
        (["--epochs", "2"], "--epochs 2 is not past the checkpoint's epoch 2: nothing to train"),
        (["--damage"], "is damaged (its SHA-256 digest does not match its content)"),
    ],
)
def test_a_resume_that_cannot_continue_is_a_one_line_usage_error(tmp_path, capsys, change, message):
    folder = str(tmp_path / "run")
    options = ["train", "--dataset", "moons", "--hidden", "8", "--quiet", "--output", folder]
    assert cli.main([*options, "--epochs", "2"]) == 0
    if change == ["--damage"]:
        path = tmp_path / "run" / "checkpoint.safetensors"
        data = bytearray(path.read_bytes())
        data[-64:] = bytes(b ^ 0xFF for b in data[-64:])  # flipped bits in the last tensor
        path.write_bytes(bytes(data))
        change = []
    capsys.readouterr()
    arguments = [*options, "--epochs", "4", *change, "--resume"]
    assert cli.main(arguments) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("nnjax: error: --resume: "), err
    assert message in err


def test_divergence_exits_1_and_keeps_the_last_completed_epoch(tmp_path, capsys):
    import numpy as np

    from nnjax import checkpoints

    folder = tmp_path / "boom"
    options = ["train", "--dataset", "moons", "--optimizer", "sgd", "--lr", "1e38", "--quiet"]
    assert cli.main([*options, "--output", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "diverged (non-finite loss or parameters) at epoch 1" in err
    assert "learning rate (1e+38) is likely too high" in err
    assert "after the last completed epoch (0)" in err
    assert (
        f"nnjax train --dataset moons --optimizer sgd --lr 1e+37 --output {folder} --resume" in err
    )
    saved = safetensors.numpy.load_file(folder / "checkpoint.safetensors")
    assert all(np.isfinite(saved[k]).all() for k in saved if k.startswith("params"))
    # The checkpoint is epoch 0's state: the initial parameters and a fresh optimizer state.
    assert checkpoints.read_metadata(folder / "checkpoint.safetensors")[1] == 0
    assert int(saved["opt_state.count"]) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--dataset", "mnist"], "invalid choice: 'mnist'"),
        (["--epochs", "-3"], "must be a positive integer, got -3"),
        (["--hidden", "64,0"], "every hidden size must be positive"),
        (["--lr", "0"], r"must be in \(0, inf\), got 0"),
        (["--dropout", "1"], r"must be in \[0, 1\), got 1"),
        (["--batch-size", "zero"], "expected a positive integer, got 'zero'"),
        (["--diagnostics", "-1"], "must be an integer >= 0, got -1"),
        (["--num-processes", "2"], "--num-processes and --process-id need --coordinator"),
        (["--process-id", "-1"], "must be an integer >= 0, got -1"),
        (["--lr", "1e39"], "1e39 is not representable in float32"),
        (["--epsilon", "1e-50"], "1e-50 is not representable in float32"),
        (["--seed", str(2**32)], "must be below 2\\*\\*32"),
    ],
)
def test_bad_options_fail_with_one_line_and_exit_2(options, message):
    result = subprocess.run(
        [sys.executable, "-m", "nnjax", "train", *options],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(message, lines[0])
    assert result.stdout == ""


def test_the_api_names_of_options_are_aliases_of_the_short_ones():
    short = cli._parser().parse_args(["train", "--lr", "0.5", "--dropout", "0.25"])
    long = cli._parser().parse_args(["train", "--learning-rate", "0.5", "--dropout-rate", "0.25"])
    assert vars(short) == vars(long)
    assert (long.learning_rate, long.dropout) == (0.5, 0.25)


def test_binary_loss_on_a_multiclass_dataset_is_a_usage_error(capsys):
    assert cli.main(["train", "--dataset", "iris", "--loss", "binary_cross_entropy"]) == 2
    assert "needs a two-class dataset; 'iris' has 3 classes" in capsys.readouterr().err


def test_train_help_is_complete():
    result = subprocess.run(
        [sys.executable, "-m", "nnjax", "train", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for option in ("--dataset", "--hidden", "--optimizer", "--grad", "--resume", "examples:"):
        assert option in result.stdout


def test_diagnostics_of_a_network_without_hidden_layers(tmp_path):
    folder = tmp_path / "linear"
    options = ["--dataset", "xor", "--hidden", "none", "--diagnostics", "1", "--epochs", "1"]
    assert cli.main(["train", *options, "--quiet", "--output", str(folder)]) == 0
    written = {p.name for p in folder.iterdir()}
    assert "gradient_norms.png" in written and "activation_std.png" not in written
    assert cli.main(["plot", str(folder)]) == 0


def test_plot_of_a_damaged_run_folder_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text("{not json")
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert "cannot read the run folder" in capsys.readouterr().err


def test_a_folder_holding_a_run_is_replaced_only_when_asked(tmp_path, capsys):
    folder = tmp_path / "xor"
    options = ["train", *XOR_OPTIONS, "--epochs", "2", "--output", str(folder)]
    assert cli.main(options) == 0
    (folder / "history.png").unlink()
    capsys.readouterr()
    assert cli.main(options) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "holds a run already: pass --resume to continue it or --overwrite to replace it"
    )
    assert len(err.splitlines()) == 1 and not (folder / "history.png").exists()
    assert cli.main([*options, "--overwrite"]) == 0
    assert (folder / "history.png").exists()


def test_default_folders_are_numbered_and_resume_continues_the_latest(tmp_path, monkeypatch):
    from nnjax import checkpoints

    monkeypatch.chdir(tmp_path)
    options = ["train", *XOR_OPTIONS, "--epochs", "2"]
    assert cli.main(options) == 0 and cli.main(options) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["xor", "xor-2"]
    assert cli.main([*options[:-1], "3", "--lr", "1", "--resume"]) == 0
    config, epoch = checkpoints.read_metadata(tmp_path / "runs/xor-2/checkpoint.safetensors")
    assert epoch == 3 and config["learning_rate"] == 1.0
    assert config["changes"] == [{"epoch": 2, "option": "learning_rate", "old": 2.0, "new": 1.0}]
    assert checkpoints.read_metadata(tmp_path / "runs/xor/checkpoint.safetensors")[1] == 2


def test_sigint_saves_the_checkpoint_and_prints_the_command_that_resumes(tmp_path):
    import json
    import signal
    import time

    folder = tmp_path / "long"
    command = [sys.executable, "-m", "nnjax", "train", *XOR_OPTIONS, "--epochs", "1000000"]
    command += ["--checkpoint-every", "1", "--output", str(folder)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (folder / "checkpoint.safetensors").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=120)[1]
    assert process.returncode == 130, err
    assert "SIGINT: stopped after epoch" in err and "--resume" in err.splitlines()[-1]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["complete"] is False and 0 < metrics["epochs_completed"] < 1000000
    assert len(metrics["history"]["train_loss"]) == metrics["epochs_completed"]


def test_a_write_that_fails_late_is_one_line_and_keeps_the_last_checkpoint(
    tmp_path, capsys, monkeypatch
):
    import errno

    from nnjax import checkpoints, files

    folder = tmp_path / "xor"
    options = ["train", *XOR_OPTIONS, "--output", str(folder)]
    assert cli.main([*options, "--epochs", "2"]) == 0
    before = (folder / "checkpoint.safetensors").read_bytes()

    def disk_full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_create_temporary", disk_full)
    capsys.readouterr()
    assert cli.main([*options, "--epochs", "3", "--resume"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err
    assert (folder / "checkpoint.safetensors").read_bytes() == before
    assert checkpoints.read_metadata(folder / "checkpoint.safetensors")[1] == 2


def test_the_command_line_keeps_compiled_programs_in_a_capped_cache_unless_turned_off(
    tmp_path, monkeypatch, capsys
):
    import jax

    names = ("jax_compilation_cache_dir", "jax_compilation_cache_max_size")
    before = {name: getattr(jax.config, name) for name in names}
    monkeypatch.setenv("NNJAX_CACHE_DIR", str(tmp_path / "cache"))
    try:
        monkeypatch.setenv("NNJAX_COMPILATION_CACHE", "0")
        compilation_cache.use()
        assert jax.config.jax_compilation_cache_dir == before["jax_compilation_cache_dir"]
        monkeypatch.setenv("NNJAX_COMPILATION_CACHE", "1")
        missing = str(tmp_path / "missing")
        assert cli.main(["plot", "--no-compilation-cache", missing]) == 2  # not a run folder
        assert jax.config.jax_compilation_cache_dir == before["jax_compilation_cache_dir"]
        assert cli.main(["plot", missing]) == 2
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
        assert jax.config.jax_compilation_cache_max_size == compilation_cache.LIMIT_BYTES == 2**29
    finally:
        for name, value in before.items():
            jax.config.update(name, value)


def test_version_and_every_default_are_shown(capsys):
    import nnjax

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"nnjax {nnjax.__version__}"
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for shown in ("Adam beta1 (default: 0.9)", "(default: 0.999)", "(default: 1e-08)"):
        assert shown in out


def test_regression_on_a_data_file_records_r2_and_refuses_the_file_changed(
    tmp_path, capsys, monkeypatch
):
    import hashlib
    import json

    from test_run_data import write_line  # its shapes: the compiled split and scaling are shared

    from nnjax import folders, plotting, runs

    # The activation functions' figure is the same for every run (and tested on its own).
    monkeypatch.setattr(plotting, "plot_activations", lambda path: path)
    data, folder = tmp_path / "line.csv", tmp_path / "line"
    write_line(data)
    options = ["train", "--data", str(data), "--label-column", "target", "--loss", "mse"]
    options += ["--hidden", "4", "--quiet", "--output", str(folder)]
    assert cli.main([*options, "--epochs", "2"]) == 0
    assert "line: test R^2 " in capsys.readouterr().out
    metrics = json.loads((folder / "metrics.json").read_text())
    config = metrics["config"]
    assert config["data"] == str(data) and config["dataset"] is None
    assert config["data_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    history, test = metrics["history"], metrics["test"]
    assert set(history) == {"train_loss", "val_loss", "val_r2"} and set(test) == {"loss", "r2"}
    # R² = 1 - MSE / Var(y) for every epoch and the test split (the validation data here).
    ratios = [
        (1 - r2) / mse for r2, mse in zip(history["val_r2"], history["val_loss"], strict=True)
    ]
    assert ratios == pytest.approx([(1 - test["r2"]) / test["loss"]] * 2, rel=1e-5)
    assert (folder / "predicted_vs_true.png").exists()
    assert not (folder / "confusion_matrix.png").exists()

    further = runs.Run(runs.saved_config({**config, "epochs": 3}))
    assert folders.resume(further, folder).epoch == 2  # the same file: it continues
    data.write_text(data.read_text().replace("10.0\n", "10.5\n", 1))
    assert cli.main([*options, "--epochs", "4", "--resume"]) == 2
    assert cli.main(["plot", str(folder)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2
    assert all("line.csv changed since the run trained on it" in e for e in errors)
    assert errors[0].startswith("nnjax: error: --resume: the data file")


def test_a_malformed_data_file_is_a_one_line_usage_error_and_leaves_no_folder(tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("a,label\n1,0\n2,zero\n")
    folder = tmp_path / "run"
    assert cli.main(["train", "--data", str(tmp_path / "bad.csv"), "--output", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"nnjax: error: {tmp_path / 'bad.csv'}: line 3, column 'label': 'zero' is not a number"
    )
    assert not folder.exists()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--data", "bad.csv", "--dataset", "moons"])
    assert exit_info.value.code == 2
    assert "not allowed with argument --data" in capsys.readouterr().err


def test_the_data_options_and_their_defaults_are_shown_once(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for shown in (
        "--data FILE",
        "(default: the last column)",
        "500 for moons",
        "{softmax_cross_entropy,",
    ):
        assert shown in out
    assert "600 for spirals" in out and "mse}" in out and "(default: None)" not in out


CNN = "conv2d(4,3),batchnorm,relu,maxpool(2),flatten,dense(10)"


def test_a_batch_norm_cnn_resumes_exactly_and_plots_what_it_has(tmp_path, capsys, monkeypatch):
    import json

    import numpy as np

    from nnjax import plotting

    # The figures are tested on their own; here, which ones a run has.
    for name in ("plot_history", "plot_confusion_matrix"):
        monkeypatch.setattr(plotting, name, lambda *args: args[-1])

    def train(folder, epochs, *more):
        options = ["--epochs", str(epochs), "--quiet", "--output", str(tmp_path / folder)]
        return cli.main(["train", "--layers", CNN, *options, *more])

    assert train("straight", 4) == 0
    assert train("resumed", 2) == 0 and train("resumed", 4, "--resume") == 0
    straight, resumed = (
        safetensors.numpy.load_file(tmp_path / name / "checkpoint.safetensors")
        for name in ("straight", "resumed")
    )
    assert straight.keys() == resumed.keys() and "model_state[1]['var']" in straight
    for key in straight:
        np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert metrics["config"]["input_shape"] == [8, 8, 1] and metrics["config"]["hidden"] is None
    # The test split is the validation data: evaluated with the running statistics both times.
    assert metrics["test"]["loss"] == pytest.approx(metrics["history"]["val_loss"][-1], rel=1e-5)
    wrote = capsys.readouterr().out.splitlines()[-1]
    assert cli.main(["plot", str(tmp_path / "resumed")]) == 0
    for out in (wrote, capsys.readouterr().out):
        assert re.findall(r"\w+\.png", out) == ["history.png", "confusion_matrix.png"], out
    other = ["--layers", CNN.replace("batchnorm,", ""), "--epochs", "5", "--resume"]
    assert cli.main(["train", *other, "--output", str(tmp_path / "resumed")]) == 2
    assert "options differ from the checkpoint's: {'layers'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--layers", "dense(10)", "--hidden", "16"], "so --hidden cannot go with it"),
        (["--layers", "dense(10)", "--dropout", "0.5"], "so --dropout cannot go with it"),
        (["--input-shape", "8,8,1"], "--input-shape shapes the examples of --layers"),
        (["--layers", "conv2d(4,3),,dense(10)"], "expected a layer name, got ','"),
        (["--layers", "flatten,dense(10)", "--input-shape", "8,4,1"], "holds 32 values per"),
        (["--layers", "conv2d(4,9),flatten,dense(10)"], r"the window \(9, 9\) does not fit"),
        (["--layers", "conv2d(4,3),flatten,dense(5)"], r"but the loss needs \(10,\)"),
    ],
)
def test_layers_that_cannot_train_are_a_one_line_usage_error(tmp_path, capsys, options, message):
    folder = tmp_path / "run"
    assert cli.main(["train", *options, "--quiet", "--output", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("nnjax: error: "), err
    assert re.search(message, err) and not folder.exists()
