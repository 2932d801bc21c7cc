"""Tests of nnjax.folders: a run folder is one transaction, checked before the run, locked."""

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnjax import folders, runs

from helpers import XOR_RUN

# The XOR network of test_cli.py and test_runs.py: the same shapes share compiled programs.
XOR = XOR_RUN


def xor_run(**options):
    return runs.Run(runs.make_config(**{**XOR, **options}))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A 20-epoch XOR run folder with diagnostics, and the run that wrote it."""
    folder = folders.prepare(tmp_path_factory.mktemp("xor"))
    run = xor_run(epochs=20, diagnostics=10)
    trained = runs.train(run)
    return folder, run, trained, folders.write_run_folder(run, trained, folder)


def test_the_folder_holds_a_checkpoint_metrics_derived_from_it_and_current_plots(written):
    folder, run, trained, result = written
    metrics = json.loads(result.metrics_json.read_text())
    assert metrics["config"] == {**run.config, "changes": []}
    assert metrics["epochs_completed"] == trained.epoch == 20
    assert metrics["history"] == trained.history and len(trained.history["train_loss"]) == 20
    assert metrics["checkpoint_sha256"] == folders.sha256(folder / folders.CHECKPOINT)
    assert metrics["plots_epoch"] == 20 and metrics["complete"] is True
    plots = {"history.png", "activations.png", "confusion_matrix.png", "decision_boundary.png"}
    plots |= {"gradient_norms.png", "activation_std.png"}
    assert {p.name for p in result.plots} == plots
    assert {p.name for p in folder.iterdir()} <= {*plots, folders.CHECKPOINT, folders.METRICS}


def test_resume_reads_the_checkpoint_alone_and_records_what_changed(written, tmp_path):
    folder, _, trained, _ = written
    further = xor_run(epochs=30, diagnostics=10, learning_rate=1.0)
    start = folders.resume(further, folder)
    assert start.epoch == 20 and start.history == trained.history
    assert start.changes == ({"epoch": 20, "option": "learning_rate", "old": 2.0, "new": 1.0},)
    np.testing.assert_array_equal(start.params[0]["W"], trained.result.params[0]["W"])
    with pytest.raises(ValueError, match=r"options differ from the checkpoint's: \{'seed'"):
        folders.resume(xor_run(seed=4, epochs=30), folder)
    with pytest.raises(ValueError, match="is not past the checkpoint's epoch 20"):
        folders.resume(xor_run(epochs=20, diagnostics=10), folder)
    with pytest.raises(ValueError, match="no checkpoint in"):
        folders.resume(further, tmp_path)


def test_a_kill_between_checkpoint_and_metrics_leaves_a_resumable_folder(tmp_path, monkeypatch):
    """The checkpoint of epoch 8 beside the metrics.json of epoch 5: resume trusts the former,
    and nnjax plot derives metrics.json from it again."""
    folder = folders.prepare(tmp_path / "run")
    first = xor_run(epochs=5)
    folders.write_run_folder(first, runs.train(first), folder, plots=False)
    second = xor_run(epochs=8)
    trained = runs.train(second, folders.resume(second, folder))

    def killed(path, payload):
        raise KeyboardInterrupt("killed after the checkpoint's rename")

    monkeypatch.setattr(folders, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        folders.write_run_folder(second, trained, folder, plots=False)
    monkeypatch.undo()

    stale = folders.read_metrics(folder)
    assert stale["epochs_completed"] == 5
    assert stale["checkpoint_sha256"] != folders.sha256(folder / folders.CHECKPOINT)
    start = folders.resume(xor_run(epochs=9), folder)
    assert start.epoch == 8 and len(start.history["train_loss"]) == 8
    folders.redraw(folder)
    derived = folders.read_metrics(folder)
    assert derived["epochs_completed"] == 8 and derived["history"] == start.history
    assert derived["checkpoint_sha256"] == folders.sha256(folder / folders.CHECKPOINT)


def test_periodic_saves_write_a_consistent_checkpoint_during_training(tmp_path):
    folder = folders.prepare(tmp_path / "run")
    run = xor_run(epochs=12)
    start = run.fresh_start()
    seen = []
    saver = folders.periodic_saver(run, folder, start, folders.Interval(epochs=1))

    def save_and_look(progress):
        saver(progress)
        seen.append((progress.epoch, folders.resume(xor_run(epochs=13), folder).epoch))

    runs.train(run, start, on_progress=save_and_look)
    assert seen and all(saved == epoch for epoch, saved in seen)
    metrics = folders.read_metrics(folder)
    assert metrics["complete"] is False and metrics["test"] is None


def test_periodic_saves_hold_the_model_state(tmp_path):
    import safetensors.numpy

    from nnjax import training

    folder = folders.prepare(tmp_path / "run")
    run = xor_run(epochs=3)
    start = run.fresh_start()
    saver = folders.periodic_saver(run, folder, start, folders.Interval(epochs=1))
    state = ({"mean": np.arange(2, dtype=np.float32)},)  # as BatchNorm's running statistics
    saver(training.Progress(1, {"train_loss": [0.5]}, start.params, start.opt_state, None, state))
    saved = safetensors.numpy.load_file(folder / folders.CHECKPOINT)
    np.testing.assert_array_equal(saved["model_state[0]['mean']"], state[0]["mean"])


def test_parse_interval():
    assert folders.parse_interval("10") == folders.Interval(epochs=10)
    assert folders.parse_interval("2.5s") == folders.Interval(seconds=2.5)
    assert folders.parse_interval("0") == folders.Interval()
    for text in ("-1", "x", "10m", "-3s"):
        with pytest.raises(ValueError, match="expected a number of epochs"):
            folders.parse_interval(text)


def test_prepare_refuses_a_run_folder_unless_resumed_or_overwritten(written, tmp_path):
    folder = written[0]
    with pytest.raises(ValueError, match=r"holds a run already: pass --resume .* or --overwrite"):
        folders.prepare(folder)
    assert folders.prepare(folder, resume=True) == folder
    with pytest.raises(ValueError, match="--resume: no checkpoint in"):
        folders.prepare(tmp_path / "empty", resume=True)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        folders.prepare(blocker)
    with pytest.raises(ValueError, match="cannot write in"):
        folders.prepare(blocker / "sub")


def test_overwrite_removes_only_what_nnjax_wrote(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for name in (folders.CHECKPOINT, folders.METRICS, "history.png"):
        (folder / name).write_text("old")
    (folder / f".{folders.CHECKPOINT}.0123456789ab.tmp").write_text("left by a killed write")
    folders.prepare(folder, overwrite=True)
    assert list(folder.iterdir()) == []
    (folder / "notes.txt").write_text("mine")
    (folder / folders.METRICS).write_text("{}")
    with pytest.raises(ValueError, match=r"holds files nnjax did not write \(notes\.txt\)"):
        folders.prepare(folder, overwrite=True)
    assert (folder / "notes.txt").exists()


def test_default_folders_never_replace_a_run(tmp_path):
    root = tmp_path / "runs"
    assert folders.default_folder("xor", resume=False, root=root) == root / "xor"
    for name in ("xor", "xor-2"):
        (root / name).mkdir(parents=True)
        (root / name / folders.CHECKPOINT).write_text("")
    assert folders.default_folder("xor", resume=False, root=root) == root / "xor-3"
    assert folders.default_folder("xor", resume=True, root=root) == root / "xor-2"
    assert folders.default_folder("moons", resume=True, root=root) == root / "moons"


def test_a_second_process_cannot_lock_a_folder_in_use(tmp_path):
    code = (
        "import sys; from pathlib import Path; from nnjax import folders\n"
        "try:\n"
        "    with folders.locked(Path(sys.argv[1])): pass\n"
        "except ValueError as error: print(error)\n"
    )
    with folders.locked(tmp_path):
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
        ).stdout
    assert "is in use by another nnjax process (pid" in out
    with folders.locked(tmp_path):  # released: it can be taken again
        pass


def test_damaged_histories_are_named(tmp_path):
    good = {"train_loss": [1.0, None], "diagnostics_epoch": [2], "grad_norm_layer1": [0.5]}
    assert folders.check_history(good, 2, "f")["train_loss"][0] == 1.0
    for history, message in (
        ([], "not a JSON object"),
        ({"train_loss": [1.0, "x"]}, "'train_loss' is not a list of numbers"),
        ({"train_loss": [1.0]}, "'train_loss' has 1 values, expected 2"),
        ({"diagnostics_epoch": [2], "grad_norm_layer1": []}, "expected 1"),
    ):
        with pytest.raises(ValueError, match=message):
            folders.check_history(history, 2, "f")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    history=JSON | st.dictionaries(st.sampled_from(["train_loss", "val_accuracy"]), JSON),
    epochs=JSON,
    noise=st.binary(max_size=40),
)
def test_a_damaged_or_crafted_legacy_metrics_json_is_a_value_error_or_a_checked_history(
    tmp_path_factory, history, epochs, noise
):
    folder = tmp_path_factory.mktemp("legacy")
    text = json.dumps({"epochs_completed": epochs, "history": history})
    (folder / folders.METRICS).write_bytes(text.encode() + noise)
    try:
        checked = folders.legacy_history(folder, 2)
    except ValueError:
        return
    assert all(len(v) == 2 for k, v in checked.items() if k in ("train_loss", "val_accuracy"))
    assert all(isinstance(x, float) for series in checked.values() for x in series)


def test_histories_of_runs_that_evaluate_every_few_epochs_are_checked_by_eval_epoch():
    good = {"train_loss": [1.0, 0.5], "eval_epoch": [2.0, 4], "diagnostics_epoch": [3]}
    assert folders.check_history(good, 4, "f")["eval_epoch"] == [2, 4]
    assert folders.check_history({"train_loss": [], "eval_epoch": []}, 4, "f")["train_loss"] == []
    for history, message in (
        ({"train_loss": [1.0], "eval_epoch": [2, 4]}, "'train_loss' has 1 values, expected 2"),
        ({"eval_epoch": [4, 2]}, "'eval_epoch' is not a rising list of epochs"),
        ({"eval_epoch": [2, 6]}, "'eval_epoch' is not a rising list"),
        ({"diagnostics_epoch": [1.5]}, "'diagnostics_epoch' is not a rising list"),
    ):
        with pytest.raises(ValueError, match=message):
            folders.check_history(history, 4, "f")


def test_folders_older_than_the_training_options_resume_with_their_defaults(written, tmp_path):
    from nnjax import checkpoints, run_training

    folder, run, _, _ = written
    saved = run.load_checkpoint(folder / folders.CHECKPOINT)
    old = {k: v for k, v in saved.config.items() if k not in run_training.DEFAULTS}
    assert runs.saved_config(old) == runs.make_config(**XOR, epochs=20, diagnostics=10)
    trees = {"params": saved.params, "opt_state": saved.opt_state}
    path = folders.prepare(tmp_path / "old") / folders.CHECKPOINT
    checkpoints.save_checkpoint(path, **trees, config=old, epoch=20, history=saved.history)
    start = folders.resume(xor_run(epochs=21, diagnostics=10), path.parent)
    assert start.epoch == 20 and start.changes == ()
    with pytest.raises(ValueError, match=r"differ from the checkpoint's: \{'shuffle': \(True, F"):
        folders.resume(xor_run(epochs=21, diagnostics=10, shuffle=False), path.parent)
