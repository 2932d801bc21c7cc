"""Tests of nnjax.run_training: early stopping's state as a checkpoint holds it, and back."""

import numpy as np

from nnjax import checkpoints, run_training, runs
from nnjax.early_stopping import StopState

CONFIG = runs.make_config(dataset="moons", early_stopping="val_accuracy", epochs=9)
# NumPy trees: nothing here compiles.
BEST = ([{"W": np.zeros((2, 2), np.float32)}], (np.int32(4),), ())
LAST = ([{"W": np.ones((2, 2), np.float32)}], (np.int32(6),), ())


def test_an_accuracy_is_saved_as_itself_and_resumed_negated_as_training_holds_it():
    state = StopState(np.float32(-0.75), np.int32(4), np.bool_(False), *BEST)
    trees, tree, summary = run_training.saved_trees(CONFIG, LAST, state, 6)
    np.testing.assert_array_equal(trees[0][0]["W"], BEST[0][0]["W"])  # the best epoch's
    assert tree["best"] == 0.75 and tree["last_opt_state"] == LAST[1]
    assert summary == {
        "metric": "val_accuracy",
        "best": 0.75,
        "best_epoch": 4,
        "stopped_epoch": None,
    }
    line = run_training.summary_line(summary)
    assert line == (
        "early stopping: val_accuracy best (0.7500) at epoch 4, did not stop; the test metrics "
        "and the checkpoint are epoch 4's"
    )
    saved = checkpoints.Checkpoint(trees[0], trees[1], CONFIG, 6, {}, trees[2], tree)
    last, resumed = run_training.resumed(CONFIG, saved)
    np.testing.assert_array_equal(last[0][0]["W"], LAST[0][0]["W"])
    assert resumed.best == np.float32(-0.75) and resumed.best.dtype == np.float32
    assert int(resumed.best_epoch) == 4 and resumed.opt_state == BEST[1]
    assert run_training.saved_trees(CONFIG | {"early_stopping": None}, LAST, None, 6)[1:] == (
        None,
        None,
    )


def test_the_resume_command_of_a_run_without_shuffling_says_no_shuffle(tmp_path):
    from nnjax import cli, runs

    command = runs.command_line(runs.make_config(shuffle=False), tmp_path / "run")
    assert "--no-shuffle" in command.split()
    # The command parses: argparse accepts what it prints.
    cli._parser().parse_args(command.split()[1:])
