"""Tests of nnjax train's evaluation interval, shuffling and early stopping, and of early
stopping's state in run folders: a resumed run stops where an uninterrupted one does."""

import json

import numpy as np
import pytest
import safetensors.numpy

from nnjax import cli, folders, plotting, runs

# A run that stops at epoch 22 (best at 18) of 30; 20 epochs leave it going, its best not its last.
OPTIONS = {"dataset": "moons", "hidden": [8], "early_stopping": "val_loss", "patience": 3}
OPTIONS |= {"min_delta": 0.02, "eval_every": 2, "shuffle": False}
ARGUMENTS = ["--dataset", "moons", "--hidden", "8", "--early-stopping", "val_loss"]
ARGUMENTS += ["--patience", "3", "--min-delta", "0.02", "--eval-every", "2", "--no-shuffle"]


FIGURES = ("plot_history", "plot_activations", "plot_confusion_matrix", "plot_decision_boundary")


def without_figures(monkeypatch):
    """The figures are tested on their own; here, the run folders."""
    for name in FIGURES:
        monkeypatch.setattr(plotting, name, lambda *args: args[-1])


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    without_figures(monkeypatch)


def train(folder, epochs, *more):
    options = ["--epochs", str(epochs), "--quiet", "--output", str(folder), *more]
    return cli.main(["train", *ARGUMENTS, *options])


def tensors(folder):
    return safetensors.numpy.load_file(folder / folders.CHECKPOINT)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The folder of the uninterrupted run."""
    folder = tmp_path_factory.mktemp("straight") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        without_figures(monkeypatch)
        assert train(folder, 30) == 0
    return folder


def assert_same_run(folder, straight):
    expected, saved = tensors(straight), tensors(folder)
    assert saved.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(saved[key], expected[key], err_msg=key)
    metrics, reference = (json.loads((f / folders.METRICS).read_text()) for f in (folder, straight))
    for entry in ("history", "early_stopping", "test", "epochs_completed"):
        assert metrics[entry] == reference[entry], entry


def test_a_resumed_run_stops_where_an_uninterrupted_one_does(straight, tmp_path, capsys):
    metrics = json.loads((straight / folders.METRICS).read_text())
    assert metrics["early_stopping"] == {
        "metric": "val_loss",
        "best": pytest.approx(metrics["history"]["val_loss"][8]),
        "best_epoch": 18,
        "stopped_epoch": 22,
    }
    assert metrics["epochs_completed"] == 22 and metrics["complete"] is True
    assert metrics["history"]["eval_epoch"] == list(range(2, 23, 2))
    assert metrics["test"]["loss"] == pytest.approx(metrics["early_stopping"]["best"], rel=1e-5)
    assert metrics["config"]["shuffle"] is False and metrics["config"]["eval_every"] == 2
    saved = tensors(straight)
    assert not np.array_equal(
        saved["params[0]['W']"], saved["early_stopping['last_params'][0]['W']"]
    )

    folder = tmp_path / "resumed"
    assert train(folder, 20) == 0
    capsys.readouterr()
    assert train(folder, 30, "--patience", "4", "--resume") == 2
    assert "options differ from the checkpoint's: {'patience': (3, 4)}" in capsys.readouterr().err
    assert train(folder, 30, "--resume") == 0
    out = capsys.readouterr().out
    assert "after 22 epochs\nearly stopping: val_loss best (" in out
    assert (
        "at epoch 18, stopped at epoch 22; the test metrics and the checkpoint are epoch 18's"
        in out
    )
    assert_same_run(folder, straight)
    assert train(folder, 40, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "early stopping stopped the run at epoch 22 (its best epoch: 18): nothing to train"
    )
    written = json.loads((folder / folders.METRICS).read_text())
    (folder / folders.METRICS).unlink()  # nnjax plot derives it again from the checkpoint
    assert cli.main(["plot", str(folder)]) == 0
    derived = json.loads((folder / folders.METRICS).read_text())
    assert derived["early_stopping"] == written["early_stopping"]


def test_a_periodic_checkpoint_resumes_early_stopping_exactly(straight, tmp_path):
    folder = folders.prepare(tmp_path / "run")
    run = runs.Run(runs.make_config(**OPTIONS, epochs=20))
    saver = folders.periodic_saver(run, folder, run.fresh_start(), folders.Interval(epochs=1))
    assert runs.train(run, on_progress=saver).epoch == 20  # saved after its last call
    further = runs.Run(runs.make_config(**OPTIONS, epochs=30))
    start, state = folders.resume_run(further, folder)
    assert start.epoch == 20 and int(state.best_epoch) == 18
    trained = runs.train(further, start, early_stopping_state=state, on_progress=saver)
    folders.write_run_folder(further, trained, folder, last=saver.last)
    assert_same_run(folder, straight)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--eval-every", "0"],
            "--early-stopping needs evaluations; --eval-every 0 turns them off",
        ),
        (["--loss", "mse", "--early-stopping", "val_accuracy"], "records train_loss, val_loss"),
    ],
)
def test_early_stopping_without_its_metric_is_a_one_line_usage_error(
    tmp_path, capsys, options, message
):
    folder = tmp_path / "run"
    arguments = ["train", "--early-stopping", "val_loss", *options, "--output", str(folder)]
    assert cli.main(arguments) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"nnjax: error: {message}" or (len(err.splitlines()) == 1 and message in err)
    assert not folder.exists()


def test_the_training_options_reach_training_and_show_their_defaults(monkeypatch, capsys):
    from nnjax import training

    class CapturedError(Exception):
        pass

    def capture(*args, **options):
        raise CapturedError(options)

    monkeypatch.setattr(training, "train", capture)
    with pytest.raises(CapturedError) as captured:
        runs.train(runs.Run(runs.make_config(**OPTIONS)))
    options = captured.value.args[0]
    assert options["shuffle"] is False and options["eval_every"] == 2
    assert options["early_stopping"] == training.EarlyStopping("val_loss", 3, "min", 0.02)
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for shown in ("then never used; default: shuffle)", "(default: off)", "(default: 10)"):
        assert shown in out
    assert (
        "as eval_epoch) (default: 1)" in out
        and "improvement for --early-stopping (default: 0.0)" in out
    )


def test_a_run_that_never_evaluates_draws_every_plot_but_the_history(tmp_path, capsys):
    folder = tmp_path / "run"
    options = ["--dataset", "moons", "--hidden", "8", "--eval-every", "0", "--epochs", "2"]
    assert cli.main(["train", *options, "--quiet", "--output", str(folder)]) == 0
    written = capsys.readouterr().out.splitlines()[-1]
    redrawn = [path.name for path in folders.redraw(folder)]
    assert redrawn == ["activations.png", "confusion_matrix.png", "decision_boundary.png"]
    assert all(name in written for name in redrawn) and "history.png" not in written
