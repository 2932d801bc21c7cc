"""Run folders: the checkpoint and what is derived from it, written as one transaction.

A run folder holds what ``nnjax train`` writes, and nothing else:

- ``checkpoint.safetensors``: the run's state, and its only source of truth: parameters,
  optimizer state, model state (BatchNorm's running statistics), configuration (with every
  change ``--resume`` made to it), the epoch reached and the whole per-epoch history.
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
history of their ``metrics.json`` when both agree on the epoch, and refused otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import filelock
import jax

from nnjax import _validation, checkpoints, run_data, run_model, runs, training
from nnjax._run_history import check_history
from nnjax.files import write_json

__all__ = [
    "CHECKPOINT",
    "LEGACY_CHECKPOINT",
    "METRICS",
    "PLOTS",
    "WRITTEN",
    "Interval",
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
    "sha256",
    "write_run_folder",
]

CHECKPOINT = "checkpoint.safetensors"
LEGACY_CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.json"
PLOTS = (
    "history.png",
    "activations.png",
    "confusion_matrix.png",
    "gradient_norms.png",
    "activation_std.png",
    "decision_boundary.png",
    "predicted_vs_true.png",
)
_LOCK, _OWNER = ".nnjax.lock", ".nnjax.owner"
WRITTEN = (CHECKPOINT, LEGACY_CHECKPOINT, METRICS, *PLOTS, _LOCK, _OWNER)
"""Every name nnjax writes in a run folder: all that ``--overwrite`` may remove."""

# files.atomic_write's temporaries: ".<name>.<12 hex digits>.tmp" beside their target.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{12}\.tmp$")


def sha256(path: Path) -> str:
    """The SHA-256 of a file's content, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_path(folder: Path) -> Path | None:
    """The folder's checkpoint: ``checkpoint.safetensors``, else a legacy ``checkpoint.npz``."""
    for name in (CHECKPOINT, LEGACY_CHECKPOINT):
        if (folder / name).exists():
            return folder / name
    return None


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds a checkpoint or a ``metrics.json``."""
    return checkpoint_path(folder) is not None or (folder / METRICS).exists()


def default_folder(dataset: str, *, resume: bool, root: Path = Path("runs")) -> Path:
    """The folder of a run given no ``--output``: never one that holds a run already.

    A new run takes the first free name of ``runs/DATASET``, ``runs/DATASET-2``, ...; a resumed
    one continues the most recently written of those that hold a checkpoint (``runs/DATASET``
    when none does, for the error to name).
    """
    names = [root / dataset, *(root / f"{dataset}-{i}" for i in range(2, 10_000))]
    if not resume:
        return next(folder for folder in names if not holds_run(folder))
    candidates = [f for f in _numbered(root, dataset) if checkpoint_path(f) is not None]
    if not candidates:
        return root / dataset
    return max(candidates, key=lambda f: checkpoint_path(f).stat().st_mtime_ns)


def _numbered(root: Path, dataset: str) -> list[Path]:
    if not root.is_dir():
        return []
    pattern = re.compile(rf"^{re.escape(dataset)}(-[0-9]+)?$")
    return [entry for entry in root.iterdir() if pattern.match(entry.name)]


def _check_writable(folder: Path) -> None:
    """Creates ``folder`` and a file in it, or raises ValueError naming the reason."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".nnjax.probe.{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)  # a file-size limit below a page shows here, not after training
        probe.unlink()
    except OSError as error:
        raise ValueError(f"cannot write in {folder}: {error.strerror or error}") from None


def _remove_temporaries(folder: Path) -> None:
    """Removes what killed atomic writes of nnjax's files left behind."""
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match and match["name"] in WRITTEN and entry.is_file():
            entry.unlink(missing_ok=True)


def _clear(folder: Path) -> None:
    """Removes nnjax's files from ``folder``; refuses a folder that holds anything else."""
    foreign = sorted(e.name for e in folder.iterdir() if e.name not in WRITTEN)
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ValueError(f"--overwrite: {folder} holds files nnjax did not write ({shown})")
    for name in WRITTEN:
        if name not in (_LOCK, _OWNER):
            (folder / name).unlink(missing_ok=True)


def prepare(folder: Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Checks ``folder`` before anything is loaded or compiled, and readies it for the run.

    The folder must be creatable and writable. Without ``resume`` or ``overwrite`` it must not
    hold a run already; with ``resume`` it must hold a checkpoint; with ``overwrite`` nnjax's files
    are removed, and a folder holding anything else is refused. Temporary files of killed writes
    are removed.

    Raises:
      ValueError: with a one-line message naming the folder and what is wrong.
    """
    folder = Path(folder)
    _check_writable(folder)
    _remove_temporaries(folder)
    if resume and checkpoint_path(folder) is None:
        raise ValueError(f"--resume: no checkpoint in {folder}")
    if overwrite and not resume:
        _clear(folder)
    elif holds_run(folder) and not resume:
        raise ValueError(
            f"{folder} holds a run already: pass --resume to continue it or --overwrite to "
            "replace it"
        )
    return folder


def discard(folder: Path) -> None:
    """Removes ``folder`` if it holds nothing but nnjax's lock: what a run that failed before
    writing anything leaves of a folder it created."""
    if folder.is_dir() and all(entry.name in (_LOCK, _OWNER) for entry in folder.iterdir()):
        for name in (_LOCK, _OWNER):
            (folder / name).unlink(missing_ok=True)
        folder.rmdir()


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Holds ``folder``'s lock while the body runs: a second run on it fails at once.

    Raises:
      ValueError: if another process holds the lock, naming its pid and host.
    """
    lock = filelock.FileLock(folder / _LOCK, timeout=0)
    try:
        lock.acquire()
        (folder / _OWNER).write_text(f"pid {os.getpid()} on {socket.gethostname()}\n")
    except filelock.Timeout:
        holder = _read_owner(folder / _OWNER)
        raise ValueError(f"{folder} is in use by another nnjax process ({holder})") from None
    except OSError as error:
        lock.release()
        raise ValueError(f"cannot write in {folder}: {error.strerror or error}") from None
    try:
        yield
    finally:
        (folder / _OWNER).unlink(missing_ok=True)
        lock.release()


def _read_owner(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


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


def resume(run: runs.Run, folder: Path) -> runs.Start:
    """Where the run in ``folder`` stopped, read from its checkpoint alone.

    Options in ``runs.RESUMABLE`` may differ from the checkpoint's latest configuration; each
    difference is recorded in ``Start.changes``.

    Raises:
      ValueError: if there is no checkpoint, it is damaged, another option differs (or the data
        file's content), or it is at ``epochs`` already.
    """
    try:
        path, config, epoch, history = _read(Path(folder))
        run_data.check_unchanged(config, run.config)
        changes = _config_changes(run.config, config, epoch)
        earlier = config.get("changes", [])
        if not isinstance(earlier, list):
            raise ValueError(f"{path}: the configuration's changes are not a list")
        saved = run.load_checkpoint(path)
    except OSError as error:
        raise ValueError(f"cannot read {folder}: {error.strerror or error}") from None
    changes = (*earlier, *changes)
    return runs.Start(saved.params, saved.opt_state, epoch, history, changes, saved.model_state)


def _save(run: runs.Run, folder: Path, state: tuple, extra: dict[str, Any]) -> dict[str, Any]:
    """Writes the checkpoint of ``state`` (params, opt_state, model_state, epoch, history,
    changes), then returns the metrics.json content derived from it, ``extra`` included (not yet
    written)."""
    params, opt_state, model_state, epoch, history, changes = state
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
    )
    return {
        "config": config,
        "epochs_completed": epoch,
        "history": history,
        **extra,
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "versions": runs.versions(),
        "checkpoint_sha256": sha256(path),
        "plots_epoch": None,
    }


def periodic_saver(
    run: runs.Run, folder: Path, start: runs.Start, every: Interval
) -> Callable[[training.Progress], None]:
    """An ``on_progress`` for ``runs.train`` that saves the checkpoint (and a metrics.json derived
    from it, without test metrics) every ``every``; the plots stay as they were, now stale."""
    last = {"epoch": start.epoch, "time": time.perf_counter()}

    def save(progress: training.Progress) -> None:
        now = time.perf_counter()
        by_epochs = every.epochs and progress.epoch - last["epoch"] >= every.epochs
        by_seconds = every.seconds and now - last["time"] >= every.seconds
        if not (by_epochs or by_seconds):
            return
        trees = jax.device_get((progress.params, progress.opt_state, progress.model_state))
        state = (*trees, progress.epoch, progress.history, start.changes)
        write_json(folder / METRICS, _save(run, folder, state, {"test": None, "complete": False}))
        last.update(epoch=progress.epoch, time=now)

    return save


def write_run_folder(
    run: runs.Run, trained: runs.Trained, folder: Path, *, plots: bool = True
) -> Written:
    """Writes ``runs.train``'s ``trained`` into ``folder``: the checkpoint, the plots (unless
    ``plots`` is False or training diverged), then metrics.json.

    Only process 0 calls it (``runs.is_lead_process``).
    """
    folder = Path(folder)
    result = trained.result
    # On this process's devices only, for the evaluation and plots below.
    params, opt_state, model_state = jax.device_get(
        (result.params, result.opt_state, result.model_state)
    )
    extra = {
        "test": run_model.test_metrics(run.model, run.data, params, model_state),
        "complete": trained.interrupted is None and result.diverged is None,
        "wall_seconds": trained.wall_seconds,
        "compile_seconds": result.compile_seconds,
        "steps_per_second": result.steps_per_second,
        "diverged": None if result.diverged is None else result.diverged._asdict(),
    }
    state = (params, opt_state, model_state, trained.epoch, trained.history, trained.changes)
    payload = _save(run, folder, state, extra)
    drawn = []
    if plots and result.diverged is None:
        drawn = runs.write_plots(run, params, trained.history, folder, model_state)
        payload["plots_epoch"] = trained.epoch
    write_json(folder / METRICS, payload)
    return Written(folder / CHECKPOINT, folder / METRICS, payload, drawn)


def load_run_folder(folder: Path) -> tuple[runs.Run, Any, dict[str, list[float]], int, Any]:
    """The run of a folder nnjax wrote: the run, its saved parameters, history, epoch and model
    state.

    Raises:
      ValueError: naming the folder and what is wrong, if anything in it cannot be read, or if
        its data file changed since.
    """
    folder = Path(folder)
    if not holds_run(folder):
        raise ValueError(f"{folder} is not a run folder: no checkpoint or {METRICS}")
    try:
        path, config, epoch, history = _read(folder)
        run = runs.Run(runs.saved_config(config))
        saved = run.load_checkpoint(path)
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"cannot read the run folder {folder}: {error}") from None
    run_data.check_unchanged(config, run.config)
    return run, saved.params, history, epoch, saved.model_state


def redraw(folder: Path) -> list[Path]:
    """Draws the plots of ``folder`` again from its checkpoint, and records them in metrics.json
    (derived again from the checkpoint if it was stale)."""
    folder = Path(folder)
    run, params, history, epoch, model_state = load_run_folder(folder)
    paths = runs.write_plots(run, params, history, folder, model_state)
    payload = read_metrics(folder)
    path = checkpoint_path(folder)
    if payload is None or payload.get("checkpoint_sha256") != sha256(path):
        payload = {**(payload or {}), "config": run.config, "epochs_completed": epoch}
        test = run_model.test_metrics(run.model, run.data, params, model_state)
        payload |= {"history": history, "test": test}
        payload["checkpoint_sha256"] = sha256(path)
    write_json(folder / METRICS, payload | {"plots_epoch": epoch})
    return paths
