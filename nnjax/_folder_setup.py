"""A run folder's names, and the folder made ready for a run: checked, cleared, locked.

``prepare`` checks a folder before anything is loaded or compiled, ``default_folder`` picks one
that holds no run, ``locked`` holds the folder's lock (``.nnjax.lock``, its holder named in
``.nnjax.owner``) while a run writes there, so that a second run on it fails at once, and
``discard`` removes a folder a failed run created. ``nnjax.folders`` reads and writes the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import filelock

__all__ = [
    "CHECKPOINT",
    "LEGACY_CHECKPOINT",
    "LOCK",
    "METRICS",
    "OWNER",
    "PLOTS",
    "WRITTEN",
    "checkpoint_path",
    "default_folder",
    "discard",
    "holds_run",
    "locked",
    "prepare",
    "sha256",
]

LOCK, OWNER = ".nnjax.lock", ".nnjax.owner"
"""The names of the lock file and of the file naming its holder."""


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
WRITTEN = (CHECKPOINT, LEGACY_CHECKPOINT, METRICS, *PLOTS, LOCK, OWNER)
"""Every name nnjax writes in a run folder: all that ``--overwrite`` may remove."""

# files.atomic_write's temporaries: ".<name>.<12 hex digits>.tmp" beside their target.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{12}\.tmp$")


def sha256(path: Path) -> str:
    """The SHA-256 of a file's content, in hex.

    Args:
      path: the file.

    Returns:
      Its 64 hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_path(folder: Path) -> Path | None:
    """The folder's checkpoint: ``checkpoint.safetensors``, else a legacy ``checkpoint.npz``.

    Args:
      folder: a run folder.

    Returns:
      The checkpoint's path; None if the folder holds neither.
    """
    for name in (CHECKPOINT, LEGACY_CHECKPOINT):
        if (folder / name).exists():
            return folder / name
    return None


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds a checkpoint or a ``metrics.json``.

    Args:
      folder: a folder.

    Returns:
      True if it holds either.
    """
    return checkpoint_path(folder) is not None or (folder / METRICS).exists()


def default_folder(dataset: str, *, resume: bool, root: Path = Path("runs")) -> Path:
    """The folder of a run given no ``--output``: never one that holds a run already.

    A new run takes the first free name of ``runs/DATASET``, ``runs/DATASET-2``, ...; a resumed
    one continues the most recently written of those that hold a checkpoint (``runs/DATASET``
    when none does, for the error to name).

    Args:
      dataset: the run's name (``run_data.name``).
      resume: whether the run continues one.
      root: the folder of the numbered folders.

    Returns:
      The folder.
    """
    names = [root / dataset, *(root / f"{dataset}-{i}" for i in range(2, 10_000))]
    if not resume:
        return next(folder for folder in names if not holds_run(folder))
    candidates = [f for f in _numbered(root, dataset) if checkpoint_path(f) is not None]
    if not candidates:
        return root / dataset
    return max(candidates, key=lambda f: checkpoint_path(f).stat().st_mtime_ns)


def _numbered(root: Path, dataset: str) -> list[Path]:
    """The folders ``root/DATASET`` and ``root/DATASET-N`` that exist."""
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
        if name not in (LOCK, OWNER):
            (folder / name).unlink(missing_ok=True)


def prepare(folder: Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Checks ``folder`` before anything is loaded or compiled, and readies it for the run.

    The folder must be creatable and writable. Without ``resume`` or ``overwrite`` it must not
    hold a run already; with ``resume`` it must hold a checkpoint; with ``overwrite`` nnjax's files
    are removed, and a folder holding anything else is refused. Temporary files of killed writes
    are removed.

    Args:
      folder: the run folder.
      resume: whether the run continues the folder's.
      overwrite: whether the run replaces the folder's.

    Returns:
      ``folder`` as a ``Path``.

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
    """Removes ``folder`` if it holds nothing but nnjax's lock.

    That is what a run that failed before writing anything leaves of a folder it created.

    Args:
      folder: the folder.
    """
    if folder.is_dir() and all(entry.name in (LOCK, OWNER) for entry in folder.iterdir()):
        for name in (LOCK, OWNER):
            (folder / name).unlink(missing_ok=True)
        folder.rmdir()


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Holds ``folder``'s lock while the body runs: a second run on it fails at once.

    Args:
      folder: the run folder, which exists.

    Raises:
      ValueError: if another process holds the lock, naming its pid and host.
    """
    lock = filelock.FileLock(folder / LOCK, timeout=0)
    try:
        lock.acquire()
        (folder / OWNER).write_text(f"pid {os.getpid()} on {socket.gethostname()}\n")
    except filelock.Timeout:
        holder = _read_owner(folder / OWNER)
        raise ValueError(f"{folder} is in use by another nnjax process ({holder})") from None
    except OSError as error:
        lock.release()
        raise ValueError(f"cannot write in {folder}: {error.strerror or error}") from None
    try:
        yield
    finally:
        (folder / OWNER).unlink(missing_ok=True)
        lock.release()


def _read_owner(path: Path) -> str:
    """Who holds the lock, as the owner file says; ``"unknown"`` if it cannot be read."""
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"
