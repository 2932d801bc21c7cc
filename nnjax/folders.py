"""Run folders: the checkpoint and what is derived from it, written as one transaction.

A run folder holds what ``nnjax train`` writes, and nothing else:

- ``checkpoint.safetensors``: the run's state, and its only source of truth: parameters,
  optimizer state, model state (BatchNorm's running statistics), configuration (with every
  change ``--resume`` made to it), the epoch reached and the whole per-epoch history. With early
  stopping, the parameters and states are the best epoch's, and early stopping's state goes with
  them (``nnjax.run_training``).
- ``metrics.json``: derived from the checkpoint (its history, the test metrics of its
  parameters, timings, versions), naming the checkpoint it was derived from by its SHA-256.
- the PNG plots, derived too; ``metrics.json`` records the epoch they show (``plots_epoch``),
  so plots older than the checkpoint read as stale until ``nnjax plot`` redraws them.
- ``.nnjax.lock`` and ``.nnjax.owner``: the lock a run holds while it writes the folder, and the
  process that holds it.

Each file is replaced atomically (``files.atomic_write``), the checkpoint first. A kill at any
moment leaves the previous checkpoint or the new one; a ``metrics.json`` that names another
checkpoint is stale and is derived again from the checkpoint, never trusted for the history.
Folders written before the checkpoint held the history (``checkpoint.npz``) are read with the
history of their ``metrics.json`` when both agree on the epoch, and refused otherwise. The names,
the checks before a run and the lock are ``nnjax._folder_setup``'s.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax

from nnjax import _validation, checkpoints, run_data, run_model, run_training, runs, training
from nnjax._folder_setup import (
    CHECKPOINT,
    LEGACY_CHECKPOINT,
    METRICS,
    PLOTS,
    WRITTEN,
    checkpoint_path,
    default_folder,
    discard,
    holds_run,
    locked,
    prepare,
    sha256,
)
from nnjax._run_history import check_history
from nnjax.files import write_json

__all__ = [
    "CHECKPOINT",
    "LEGACY_CHECKPOINT",
    "METRICS",
    "PLOTS",
    "WRITTEN",
    "Interval",
    "Resumed",
    "Saver",
    "Written",
    "check_history",
    "checkpoint_path",
    "default_folder",
    "discard",
    "holds_run",
    "legacy_history",
    "load_run_folder",
    "locked",
    "parse_interval",
    "periodic_saver",
    "prepare",
    "read_metrics",
    "redraw",
    "resume",
    "resume_run",
    "sha256",
    "write_run_folder",
]


def read_metrics(folder: Path) -> dict[str, Any] | None:
    """``folder``'s ``metrics.json`` if it is a JSON object, else None (missing or damaged)."""
    try:
        payload = json.loads((folder / METRICS).read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def legacy_history(folder: Path, epoch: int) -> dict[str, list[float]]:
    """The history of a legacy folder's ``metrics.json``, checked against the checkpoint's epoch.

    Raises:
      ValueError: if metrics.json is missing, damaged or at another epoch than the checkpoint.
    """
    payload = read_metrics(folder)
    if payload is None or payload.get("epochs_completed") != epoch:
        raise ValueError(
            f"{folder / METRICS} is missing, damaged or not at the epoch of "
            f"{folder / LEGACY_CHECKPOINT} ({epoch}): the folder cannot be resumed"
        )
    return check_history(payload.get("history"), epoch, str(folder / METRICS))


class Interval(NamedTuple):
    """How often a run saves its checkpoint: every ``epochs`` epochs or ``seconds`` seconds
    (0: not by that measure; both 0: only at the end)."""

    epochs: int = 0
    seconds: float = 0.0


def parse_interval(text: str) -> Interval:
    """``"10"``: every 10 epochs; ``"30s"``: every 30 seconds; ``"0"``: only at the end."""
    try:
        if text.endswith("s"):
            return Interval(seconds=_validation.check_number(text, text[:-1], low=0.0))
        return Interval(epochs=_validation.check_int(text, int(text), 0))
    except ValueError:
        raise ValueError(
            f"expected a number of epochs (10) or of seconds (30s), got {text!r}"
        ) from None


class Written(NamedTuple):
    """What ``write_run_folder`` wrote: the checkpoint, metrics.json and its content, the plots."""

    checkpoint: Path
    metrics_json: Path
    metrics: dict[str, Any]
    plots: list[Path]


def _config_changes(config: dict[str, Any], saved: Any, epoch: int) -> list[dict[str, Any]]:
    """The options of ``config`` that differ from the checkpoint's, recorded as changes.

    Raises:
      ValueError: if an option other than ``runs.RESUMABLE`` differs, or nothing is left to train.
    """
    if not isinstance(saved, dict):
        raise ValueError("the checkpoint's configuration is not a JSON object")
    saved = {**run_training.DEFAULTS, **saved}  # options a folder may be older than
    different = {k: (saved.get(k), v) for k, v in config.items() if saved.get(k) != v}
    fixed = {k: pair for k, pair in different.items() if k not in runs.RESUMABLE}
    if fixed:
        raise ValueError(
            f"options differ from the checkpoint's: {fixed}; only "
            f"{', '.join(runs.RESUMABLE)} may change on --resume"
        )
    if config["epochs"] <= epoch:
        raise ValueError(
            f"--epochs {config['epochs']} is not past the checkpoint's epoch {epoch}: "
            "nothing to train"
        )
    return [
        {"epoch": epoch, "option": key, "old": old, "new": new}
        for key, (old, new) in different.items()
        if key != "epochs"
    ]


def _read(folder: Path) -> tuple[Path, dict[str, Any], int, Any]:
    """The folder's checkpoint, its configuration, epoch and (unchecked) history."""
    path = checkpoint_path(folder)
    if path is None:
        raise ValueError(f"no checkpoint in {folder}")
    if path.name == CHECKPOINT:
        config, epoch, history = checkpoints.read_header(path)
    else:
        config, epoch = checkpoints.read_metadata(path)
        history = legacy_history(folder, epoch)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: the configuration is not a JSON object")
    return path, config, epoch, check_history(history, epoch, str(path))


def _load(run: runs.Run, path: Path) -> checkpoints.Checkpoint:
    """The checkpoint at ``path`` of ``run``, early stopping's state included."""
    trees = (run.initial_params, run.initial_opt_state, run.initial_model_state)
    return checkpoints.load_checkpoint(
        path,
        params_like=trees[0],
        opt_state_like=trees[1],
        model_state_like=trees[2],
        early_stopping_like=run_training.template(run.config, trees, run.data.x_train.dtype),
    )


class Resumed(NamedTuple):
    """Where a run continues: its ``runs.Start``, and early stopping's state (None without)."""

    start: runs.Start
    early_stopping_state: training.StopState | None


def resume_run(run: runs.Run, folder: Path) -> Resumed:
    """Where the run in ``folder`` stopped, read from its checkpoint alone.

    Options in ``runs.RESUMABLE`` may differ from the checkpoint's latest configuration; each
    difference is recorded in ``Start.changes``. Pass both to ``runs.train``.

    Args:
      run: the run, as configured now.
      folder: its folder.

    Returns:
      The ``Resumed`` start and early stopping's state.

    Raises:
      ValueError: if there is no checkpoint, it is damaged, another option differs (or the data
        file's content), it is at ``epochs`` already, or early stopping stopped it.
    """
    try:
        path, config, epoch, history = _read(Path(folder))
        run_data.check_unchanged(config, run.config)
        changes = _config_changes(run.config, config, epoch)
        earlier = config.get("changes", [])
        if not isinstance(earlier, list):
            raise ValueError(f"{path}: the configuration's changes are not a list")
        saved = _load(run, path)
    except OSError as error:
        raise ValueError(f"cannot read {folder}: {error.strerror or error}") from None
    (params, opt_state, model_state), stopper = run_training.resumed(run.config, saved)
    changes = (*earlier, *changes)
    start = runs.Start(params, opt_state, epoch, history, changes, model_state)
    return Resumed(start, stopper)


def resume(run: runs.Run, folder: Path) -> runs.Start:
    """``resume_run``'s start alone, for a run without early stopping.

    Args:
      run: the run, as configured now.
      folder: its folder.

    Returns:
      The ``runs.Start``.
    """
    return resume_run(run, folder).start


def _save(run: runs.Run, folder: Path, state: tuple, extra: dict[str, Any]) -> dict[str, Any]:
    """Writes the checkpoint of ``state`` (``run_training.saved_trees``' three results, epoch,
    history, changes), then returns the metrics.json content derived from it, ``extra`` included
    (not yet written)."""
    (params, opt_state, model_state), stopping, summary, epoch, history, changes = state
    config = {**run.config, "changes": list(changes)}
    path = folder / CHECKPOINT
    checkpoints.save_checkpoint(
        path,
        params=params,
        opt_state=opt_state,
        config=config,
        epoch=epoch,
        history=history,
        model_state=model_state,
        early_stopping=stopping,
    )
    return {
        "config": config,
        "epochs_completed": epoch,
        "history": history,
        **({} if summary is None else {"early_stopping": summary}),
        **extra,
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "versions": runs.versions(),
        "checkpoint_sha256": sha256(path),
        "plots_epoch": None,
    }


def _saved_trees(run: runs.Run, last: Any, stopper: Any, epoch: int) -> tuple:
    """``run_training.saved_trees`` of the state in ``last`` (a Progress or a TrainResult)."""
    trees = (last.params, last.opt_state, last.model_state)
    return run_training.saved_trees(run.config, trees, stopper, epoch)


class Saver:
    """An ``on_progress`` for ``runs.train`` that saves the checkpoint (and a metrics.json derived
    from it, without test metrics) every ``every``; the plots stay as they were, now stale.

    Attributes:
      last: the latest ``training.Progress`` seen (None before the first), for
        ``write_run_folder``: with early stopping, the state ``--resume`` continues from.
    """

    def __init__(self, run: runs.Run, folder: Path, start: runs.Start, every: Interval):
        self.run, self.folder, self.changes, self.every = run, folder, start.changes, every
        self.saved = {"epoch": start.epoch, "time": time.perf_counter()}
        self.last: training.Progress | None = None

    def __call__(self, progress: training.Progress) -> None:
        """Keeps ``progress`` as ``last``; saves it if ``every`` has passed since the last save."""
        self.last = progress
        now = time.perf_counter()
        by_epochs = self.every.epochs and progress.epoch - self.saved["epoch"] >= self.every.epochs
        by_seconds = self.every.seconds and now - self.saved["time"] >= self.every.seconds
        if not (by_epochs or by_seconds):
            return
        saved = _saved_trees(self.run, progress, progress.early_stopping_state, progress.epoch)
        state = (*saved, progress.epoch, progress.history, self.changes)
        extra = {"test": None, "complete": False}
        write_json(self.folder / METRICS, _save(self.run, self.folder, state, extra))
        self.saved.update(epoch=progress.epoch, time=now)


def periodic_saver(run: runs.Run, folder: Path, start: runs.Start, every: Interval) -> Saver:
    """The ``Saver`` of ``run`` in ``folder`` from ``start``, saving every ``every``.

    Args:
      run: the run.
      folder: its folder.
      start: where it starts (``runs.Run.fresh_start`` or ``resume_run``).
      every: how often to save.

    Returns:
      The ``Saver``, to pass to ``runs.train`` as ``on_progress``.
    """
    return Saver(run, folder, start, every)


def write_run_folder(
    run: runs.Run,
    trained: runs.Trained,
    folder: Path,
    *,
    plots: bool = True,
    last: training.Progress | None = None,
) -> Written:
    """Writes ``runs.train``'s ``trained`` into ``folder``: the checkpoint, the plots (unless
    ``plots`` is False or training diverged; the history's only if it evaluated), then
    metrics.json.

    Only process 0 calls it (``runs.is_lead_process``).

    Args:
      run: the run.
      trained: what ``runs.train`` returned.
      folder: its folder.
      plots: whether to draw the plots.
      last: with early stopping, the run's last ``training.Progress`` (``Saver.last``), whose
        state ``--resume`` continues from; without it, a resumed run continues from the best
        epoch's state.

    Returns:
      What was ``Written``.
    """
    folder = Path(folder)
    result = trained.result
    stopper = result.early_stopping_state
    source = result if last is None or stopper is None else last
    # On this process's devices only, for the evaluation and plots below.
    saved = _saved_trees(run, source, stopper, trained.epoch)
    params, _, model_state = saved[0]
    extra = {
        "test": run_model.test_metrics(run.model, run.data, params, model_state),
        "complete": trained.interrupted is None and result.diverged is None,
        "wall_seconds": trained.wall_seconds,
        "compile_seconds": result.compile_seconds,
        "steps_per_second": result.steps_per_second,
        "eval_seconds": result.eval_seconds,
        "diverged": None if result.diverged is None else result.diverged._asdict(),
    }
    state = (*saved, trained.epoch, trained.history, trained.changes)
    payload = _save(run, folder, state, extra)
    drawn = []
    if plots and result.diverged is None:
        drawn = runs.write_plots(run, params, trained.history, folder, model_state)
        payload["plots_epoch"] = trained.epoch
    write_json(folder / METRICS, payload)
    return Written(folder / CHECKPOINT, folder / METRICS, payload, drawn)


def _loaded(folder: Path) -> tuple[runs.Run, checkpoints.Checkpoint, dict[str, list[float]], int]:
    """The run of a folder nnjax wrote, its checkpoint, history and epoch (``load_run_folder``)."""
    folder = Path(folder)
    if not holds_run(folder):
        raise ValueError(f"{folder} is not a run folder: no checkpoint or {METRICS}")
    try:
        path, config, epoch, history = _read(folder)
        run = runs.Run(runs.saved_config(config))
        saved = _load(run, path)
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"cannot read the run folder {folder}: {error}") from None
    run_data.check_unchanged(config, run.config)
    return run, saved, history, epoch


def load_run_folder(folder: Path) -> tuple[runs.Run, Any, dict[str, list[float]], int, Any]:
    """The run of a folder nnjax wrote: the run, its saved parameters, history, epoch and model
    state.

    Raises:
      ValueError: naming the folder and what is wrong, if anything in it cannot be read, or if
        its data file changed since.
    """
    run, saved, history, epoch = _loaded(folder)
    return run, saved.params, history, epoch, saved.model_state


def redraw(folder: Path) -> list[Path]:
    """Draws the plots of ``folder`` again from its checkpoint, and records them in metrics.json
    (derived again from the checkpoint if it was stale)."""
    folder = Path(folder)
    run, saved, history, epoch = _loaded(folder)
    params, model_state = saved.params, saved.model_state
    paths = runs.write_plots(run, params, history, folder, model_state)
    payload = read_metrics(folder)
    path = checkpoint_path(folder)
    if payload is None or payload.get("checkpoint_sha256") != sha256(path):
        payload = {**(payload or {}), "config": run.config, "epochs_completed": epoch}
        test = run_model.test_metrics(run.model, run.data, params, model_state)
        payload |= {"history": history, "test": test}
        if saved.early_stopping is not None:
            stopping = run_training.summary(run.config, saved.early_stopping, epoch)
            payload["early_stopping"] = stopping
        payload["checkpoint_sha256"] = sha256(path)
    write_json(folder / METRICS, payload | {"plots_epoch": epoch})
    return paths
