"""Checkpoints of a training run: parameters, optimizer state, model state, early stopping's
state, config, epoch and history in one safetensors file.

Why safetensors:

* **No code execution.** The file is one bounded JSON header followed by raw little-endian tensor
  bytes; loading it, even from an untrusted source, runs nothing. Pickle-based formats (``pickle``,
  ``torch.save``) can execute code.
* **Checked before it is read.** The header declares every tensor's dtype, shape and byte range;
  they are compared with the templates' before any tensor byte is read, so a damaged or crafted
  file is a ``ValueError`` naming the file, never a huge allocation. Nothing is compressed, so
  nothing can inflate.
* **Readable elsewhere.** ``safetensors.numpy.load_file`` (or the JAX and PyTorch bindings) opens
  the file without nnjax; each tensor is named by its pytree key path.

Layout of the file:

* tensors ``params<keystr>`` / ``opt_state<keystr>`` / ``model_state<keystr>``: one per leaf,
  where ``<keystr>`` is ``jax.tree_util.keystr`` of the leaf's key path, e.g. ``params[1]['W']``,
  ``opt_state[0].mu[0]['b']`` or ``model_state[1]['mean']`` (BatchNorm's running statistics; a
  model without state has none); ``early_stopping<keystr>`` for a run with early stopping (its
  state, ``nnjax.run_training``; a run without has none). Dtypes safetensors' NumPy binding lacks (``bfloat16`` and the
  other ``ml_dtypes``) are stored as their raw bits (``U8``/``U16``/...).
* the header's string metadata:

  - ``nnjax.format_version``: ``"2"`` (:data:`FORMAT_VERSION`).
  - ``nnjax.config``: the config as a JSON object.
  - ``nnjax.epoch``: the number of completed epochs, in decimal digits.
  - ``nnjax.history``: the history as a JSON object; NaN and infinities are written as Python's
    ``json`` writes them (``NaN``, ``Infinity``, ``-Infinity``) and read back as such.
  - ``nnjax.dtypes``: JSON ``{tensor name: dtype name}``, the dtype each leaf is restored to.
  - ``nnjax.sha256``: SHA-256 of the other metadata and of every tensor's name, dtype, shape and
    bytes, so a damaged file is refused rather than loaded with different values.

Only arrays travel in the file, not the tree structure: loading takes templates (``params_like``,
``opt_state_like``, ``model_state_like``, ``early_stopping_like``, e.g. freshly initialized
parameters and ``optimizer.init(params)``) that give the structure, and every leaf is checked
against them by key, shape and dtype. Without a template for early stopping's state, its tensors
are checked with the file's digest but not returned.

Checkpoints of format 1 (``.npz`` archives written by earlier versions) still load, read-only;
the reader is chosen by the file's content, whatever its name.

Writes are atomic (:func:`nnjax.files.atomic_write`): the file goes to a temporary file in the
target's directory, is flushed and ``fsync``-ed, then moved onto the target with ``os.replace``. A
crash mid-write leaves the previous checkpoint (if any) intact and no partial file at the target.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pathlib
import re
import stat
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple

import jax
import numpy as np
import safetensors.numpy

from nnjax import _checkpoint_trees, _npz_checkpoints, _validation
from nnjax._npz_checkpoints import _check_leaf, _Expected, _parse_dtype_table, _parse_object, _short
from nnjax._safetensors_header import MAX_HEADER_BYTES, Tensor, check_layout, read_table
from nnjax.files import atomic_write

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointHeader",
    "load_checkpoint",
    "load_params",
    "read_header",
    "read_metadata",
    "save_checkpoint",
    "save_params",
]

FORMAT_VERSION = 2
"""Version of the on-disk layout written by :func:`save_checkpoint` (1: the ``.npz`` layout)."""

_VERSION_KEY = "nnjax.format_version"
_CONFIG_KEY = "nnjax.config"
_EPOCH_KEY = "nnjax.epoch"
_HISTORY_KEY = "nnjax.history"
_DTYPES_KEY = "nnjax.dtypes"
_DIGEST_KEY = "nnjax.sha256"
_METADATA_KEYS = (_VERSION_KEY, _CONFIG_KEY, _EPOCH_KEY, _HISTORY_KEY, _DTYPES_KEY, _DIGEST_KEY)
_SAFETENSORS_DTYPES = _checkpoint_trees.SAFETENSORS_DTYPES


class Checkpoint(NamedTuple):
    """A loaded checkpoint.

    Attributes:
      params: the parameter pytree, with the structure of ``params_like`` and ``jnp`` array leaves.
      opt_state: the optimizer state, with the structure of ``opt_state_like``.
      config: the JSON-decoded config dict.
      epoch: the epoch stored at save time.
      history: the JSON-decoded history dict (``{}`` for a format 1 checkpoint).
      model_state: the model's state, with the structure of ``model_state_like``.
      early_stopping: early stopping's state, with the structure of ``early_stopping_like``
        (None without it).
    """

    params: Any
    opt_state: Any
    config: dict[str, Any]
    epoch: int
    history: dict[str, Any]
    model_state: Any = ()
    early_stopping: Any = None


class CheckpointHeader(NamedTuple):
    """What a checkpoint says about its run, read without its tensors.

    Attributes:
      config: the JSON-decoded config dict.
      epoch: the epoch stored at save time.
      history: the JSON-decoded history dict (``{}`` for a format 1 checkpoint).
    """

    config: dict[str, Any]
    epoch: int
    history: dict[str, Any]


def _digest(metadata: dict[str, Any], tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 of ``metadata`` and of each tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(tensors):
        arr = np.asarray(tensors[name], order="C")
        h.update(json.dumps([name, arr.dtype.str, arr.shape]).encode())
        h.update(arr.data)
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    params: Any,
    opt_state: Any,
    config: dict[str, Any],
    epoch: int,
    history: dict[str, Any] | None = None,
    model_state: Any = (),
    early_stopping: Any = None,
) -> pathlib.Path:
    """Writes a checkpoint atomically to ``path`` as a safetensors file.

    Args:
      path: target file. Written exactly as given (no suffix is appended); its parent directory
        is created if missing; an existing file there is replaced only once the new one is
        complete.
      params: any pytree of arrays, e.g. a list of ``{"W": (n_out, n_in), "b": (n_out,)}`` dicts.
      opt_state: any pytree, e.g. ``optimizer.init(params)`` (tuples of NamedTuples of arrays and
        int32 counts) or ``optax.EmptyState()``.
      config: a JSON-serializable dict (hyperparameters, architecture, ...).
      epoch: the number of completed epochs, an int ``>= 0``.
      history: a JSON-serializable dict, e.g. per-epoch series of floats (NaN and infinities
        round-trip exactly); ``None`` stores ``{}``.
      model_state: any pytree, the model's state (``Sequential.init``'s second result, e.g.
        BatchNorm's running statistics); ``()``, a model without state, stores no tensor.
      early_stopping: any pytree, a run's early stopping state (``nnjax.run_training``); None,
        a run without, stores no tensor.

    Leaves are stored in the dtype JAX holds them in (Python floats and float64 numpy arrays
    become float32 unless ``jax_enable_x64`` is on), so a load gives back exactly what JAX had.

    Returns:
      The path written, as a ``pathlib.Path``.

    Raises:
      TypeError: if ``config`` or ``history`` is not a dict or not JSON-serializable, or ``epoch``
        is not an int.
      ValueError: if ``epoch < 0``, two leaves of one tree share a key path, a leaf's dtype
        cannot be stored, or the metadata exceeds the header's limit.
      OSError: if the file cannot be written. In every error case nothing is left at ``path``
        except the checkpoint that was already there, and no temporary file remains.
    """
    path = pathlib.Path(path)
    history = {} if history is None else history
    _validation.check_instance("config", config, dict)
    _validation.check_instance("history", history, dict)
    epoch = _validation.check_int_type("epoch", epoch, 0)

    trees = (params, opt_state, model_state, early_stopping)
    tensors, dtypes = _checkpoint_trees.stored_tensors(trees)
    metadata = {
        _VERSION_KEY: str(FORMAT_VERSION),
        _CONFIG_KEY: json.dumps(config),  # TypeError if not serializable
        _EPOCH_KEY: str(epoch),
        _HISTORY_KEY: json.dumps(history),
        _DTYPES_KEY: json.dumps(dtypes),
    }
    metadata[_DIGEST_KEY] = _digest(metadata, tensors)
    data = safetensors.numpy.save(tensors, metadata=metadata)
    if int.from_bytes(data[:8], "little") > MAX_HEADER_BYTES:
        raise ValueError(f"checkpoint metadata exceeds {MAX_HEADER_BYTES} bytes")
    with atomic_write(path) as f:
        f.write(data)
    return path


def _decimal(what: str, text: Any) -> int:
    """The non-negative integer written in decimal digits in ``text``, or a ValueError."""
    if not isinstance(text, str) or not re.fullmatch(r"[0-9]{1,18}", text):
        raise ValueError(f"the {what} is {_short(text)}, not a non-negative integer")
    return int(text)


def _parse_metadata(metadata: Any) -> tuple[CheckpointHeader, dict[str, np.dtype], str]:
    """The header, dtype table and digest in a safetensors file's metadata, each checked."""
    if not isinstance(metadata, dict) or _VERSION_KEY not in metadata:
        raise ValueError(f"not an nnjax checkpoint (no {_VERSION_KEY!r} in its metadata)")
    version = _decimal("format version", metadata[_VERSION_KEY])
    if version != FORMAT_VERSION:
        newer = "a newer" if version > FORMAT_VERSION else "an unsupported"
        raise ValueError(
            f"{newer} checkpoint format version {version}; this nnjax reads safetensors "
            f"checkpoints of version {FORMAT_VERSION}"
        )
    if missing := [k for k in _METADATA_KEYS if k not in metadata]:
        raise ValueError(f"metadata lacks {missing}")
    if unexpected := sorted(set(metadata) - set(_METADATA_KEYS)):
        raise ValueError(f"unexpected metadata {_short(unexpected)}")
    header = CheckpointHeader(
        config=_parse_object("the config", metadata[_CONFIG_KEY]),
        epoch=_decimal("epoch", metadata[_EPOCH_KEY]),
        history=_parse_object("the history", metadata[_HISTORY_KEY]),
    )
    digest = metadata[_DIGEST_KEY]
    if not isinstance(digest, str):
        raise ValueError(f"the digest is {_short(digest)}, not a string")
    return header, _parse_dtype_table(metadata[_DTYPES_KEY]), digest


def _check_tensors(
    tensors: dict[str, Tensor], dtypes: dict[str, np.dtype], expected: _Expected
) -> None:
    """Checks the tensor table and dtype table against the templates, before any data is read."""
    _checkpoint_trees.check_names(set(tensors), expected)
    if set(dtypes) != set(tensors):
        raise ValueError("the dtype table does not name the same tensors as the file holds")
    for key in expected:
        t = tensors[key]
        nbytes = _check_leaf(key, dtypes[key], t.dtype, t.shape, expected)
        if t.end - t.begin != nbytes:
            raise ValueError(
                f"{key}: byte range holds {t.end - t.begin} bytes, its shape and dtype take {nbytes}"
            )


def _read_safetensors(
    f: BinaryIO, size: int, prefix: bytes, expected: _Expected | None
) -> tuple[CheckpointHeader, dict[str, np.ndarray]]:
    """A safetensors checkpoint's header and, when ``expected`` is given, its leaves."""
    metadata, tensors = read_table(f, size, prefix)
    header, dtypes, digest = _parse_metadata(metadata)
    data_size = check_layout(tensors, 8 + int.from_bytes(prefix, "little"), size)
    if expected is None:
        return header, {}
    _check_tensors(tensors, dtypes, expected)
    data = f.read(data_size)
    if len(data) != data_size:
        raise ValueError("the file is truncated")
    stored = {
        key: np.frombuffer(data, t.dtype, math.prod(t.shape), t.begin).reshape(t.shape)
        for key, t in tensors.items()
    }
    del metadata[_DIGEST_KEY]
    if _digest(metadata, stored) != digest:
        raise ValueError("the file is damaged (its SHA-256 digest does not match its content)")
    return header, {key: arr.view(dtypes[key]) for key, arr in stored.items()}


@contextlib.contextmanager
def _open_regular(path: pathlib.Path) -> Iterator[tuple[BinaryIO, int]]:
    """Opens ``path`` for reading if it is a regular file; yields the file and its size."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError(f"{path} is not a checkpoint (not a regular file)")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(fd, "rb") as f:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise ValueError(f"{path} is not a checkpoint (not a regular file)")
        yield f, status.st_size


def _read(
    path: str | os.PathLike[str], expected: _Expected | None
) -> tuple[CheckpointHeader, dict[str, np.ndarray]]:
    """Reads the checkpoint at ``path`` of either format; every damage is a one-line ValueError."""
    path = pathlib.Path(path)
    with _open_regular(path) as (f, size):
        prefix = f.read(9)
        try:
            if prefix[8:] == b"{":
                return _read_safetensors(f, size, prefix[:8], expected)
            if prefix[:4] == b"PK\x03\x04":
                expected = _checkpoint_trees.format_1_expected(expected)
                (config, epoch), arrays = _npz_checkpoints.read(f, size, expected)
                return CheckpointHeader(config, epoch, {}), arrays
        except (ValueError, RecursionError) as err:
            raise ValueError(f"{path}: {' '.join(str(err).splitlines())}") from err
    raise ValueError(f"{path} is not an nnjax checkpoint (neither safetensors nor an .npz archive)")


def read_header(path: str | os.PathLike[str]) -> CheckpointHeader:
    """The config, epoch and history saved in a checkpoint, read without its tensors.

    Use it to compare a run's options with the checkpoint's before building templates for
    :func:`load_checkpoint`. Only the header is read; the digest over the whole file is checked by
    :func:`load_checkpoint`.

    Args:
      path: the checkpoint file.

    Returns:
      ``CheckpointHeader(config, epoch, history)``.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: as :func:`load_checkpoint` does for the file itself.
    """
    return _read(path, None)[0]


def read_metadata(path: str | os.PathLike[str]) -> tuple[dict[str, Any], int]:
    """The ``(config, epoch)`` saved in a checkpoint, without reading its arrays.

    Args:
      path: the checkpoint file.

    Returns:
      ``(config, epoch)`` as :func:`read_header` reads them.
    """
    header = read_header(path)
    return header.config, header.epoch


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    params_like: Any,
    opt_state_like: Any,
    model_state_like: Any = (),
    early_stopping_like: Any = None,
) -> Checkpoint:
    """Reads a checkpoint written by :func:`save_checkpoint` (or a format 1 ``.npz`` one).

    Nothing in the file is executed, and every tensor's declared dtype, shape and byte range is
    checked against the templates before any tensor data is read.

    Args:
      path: the checkpoint file.
      params_like: a pytree with the structure, shapes and dtypes of the saved parameters, e.g.
        freshly initialized parameters. Leaves may be arrays, ``jax.ShapeDtypeStruct``s (as
        from ``jax.eval_shape``) or scalars; their values are not used.
      opt_state_like: likewise for the optimizer state, e.g. ``optimizer.init(params_like)``.
      model_state_like: likewise for the model's state; ``()`` (the default) for a model without,
        as every checkpoint written before model state was saved.
      early_stopping_like: likewise for early stopping's state; None (the default): the file's
        tensors of one, if any, are checked with its digest and not returned.

    Returns:
      ``Checkpoint(params, opt_state, config, epoch, history, model_state, early_stopping)``:
      the trees have the structure of their templates and ``jnp.ndarray`` leaves with the stored dtype and
      shape.

    Raises:
      FileNotFoundError: if ``path`` does not exist (the message names it).
      ValueError: with a one-line message naming the file, if it is not an nnjax checkpoint (not a
        regular file, neither format, no version), is damaged or crafted (truncated, a digest
        or checksum that does not match, malformed metadata, byte ranges that overlap or pass the
        end, a dtype table that disagrees with the stored arrays), is of a newer format version,
        if its set of leaf keys differs from the templates' (the message lists missing and
        unexpected keys), or if a leaf's shape or dtype differs (the message names the leaf's
        key path, e.g. ``params[1]['W']``, and both shapes).
    """
    expected, trees = _checkpoint_trees.templates(
        params_like, opt_state_like, model_state_like, early_stopping_like
    )
    header, arrays = _read(path, expected)
    params, opt_state, model_state, early_stopping = (
        # device_put: jnp.asarray would compile a program per leaf shape.
        jax.tree_util.tree_unflatten(treedef, [jax.device_put(arrays[k]) for k in keys])
        for keys, treedef in trees
    )
    return Checkpoint(
        params, opt_state, header.config, header.epoch, header.history, model_state, early_stopping
    )


def save_params(path: str | os.PathLike[str], params: Any) -> pathlib.Path:
    """Writes parameters alone to ``path``: a checkpoint without optimizer state or run data.

    Args:
      path: target file, written atomically (as by :func:`save_checkpoint`).
      params: any pytree of arrays, e.g. ``network.init_network``'s or ``TrainResult.params``.

    Returns:
      The path written, as a ``pathlib.Path``.
    """
    return save_checkpoint(path, params=params, opt_state=(), config={}, epoch=0)


def load_params(path: str | os.PathLike[str], params_like: Any) -> Any:
    """Reads parameters written by :func:`save_params`, checked as :func:`load_checkpoint` does.

    Args:
      path: the file.
      params_like: a pytree with the structure, shapes and dtypes of the saved parameters.

    Returns:
      The parameters, with the structure of ``params_like`` and ``jnp`` array leaves.
    """
    return load_checkpoint(path, params_like=params_like, opt_state_like=()).params
