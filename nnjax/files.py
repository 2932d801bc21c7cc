"""Atomic file writes: a crash or an error never leaves a half-written file at the target path.

``write_json`` writes JSON that way, every NaN or infinity written as null (JSON has no NaN).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["atomic_write", "finite_or_null", "write_json"]


def _create_temporary(path: Path) -> tuple[int, Path]:
    """Creates an empty file with a random name beside ``path``; returns its descriptor and path."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory so a rename in it is durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Opens a temporary file beside ``path`` for binary writing; on success it replaces ``path``.

    The data is flushed and fsynced before ``os.replace``, and the directory is fsynced after it,
    so ``path`` holds either its old content or the complete new one, even across a power loss.
    On any exception the temporary file is removed and the exception propagates. Parent
    directories are created. The file is created with mode 0o666, so the umask applies as to any
    new file.

    Args:
      path: the file to write.

    Returns:
      A context manager yielding the open binary file to write into.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def finite_or_null(value: Any) -> Any:
    """``value`` as plain JSON values, NaN and infinite floats replaced by None (JSON has no NaN).

    Dicts (keys as strings), lists for tuples and arrays, Python scalars for NumPy and JAX ones.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    array = np.asarray(value)
    if array.ndim:
        return finite_or_null(array.tolist())
    item = array.item()
    return None if isinstance(item, float) and not math.isfinite(item) else item


def write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Writes ``finite_or_null(payload)`` to ``path`` as indented JSON, atomically."""
    with atomic_write(path) as f:
        f.write(json.dumps(finite_or_null(payload), indent=2, allow_nan=False).encode())
