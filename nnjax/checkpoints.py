"""Checkpoints of a training run: parameters, optimizer state, config and epoch in one ``.npz`` file.

Why ``.npz``:

* **No pickle.** The file is written with ``numpy.savez`` and read with
  ``numpy.load(..., allow_pickle=False)``, so loading a checkpoint, even one from an untrusted
  source, cannot execute code. Pickle-based formats (``pickle``, ``torch.save``) can.
* **Only numpy needed.** Any Python with numpy can open the file; no nnjax, JAX or optax.
* **Human-inspectable keys.** Each array leaf is stored under its pytree key path, e.g.
  ``params[1]['W']`` or ``opt_state[0].mu[0]['b']``, so ``np.load(path).files`` lists exactly what
  is inside.

Layout of the archive:

* ``params<keystr>`` / ``opt_state<keystr>``: one array per leaf, where ``<keystr>`` is
  ``jax.tree_util.keystr`` of the leaf's key path.
* ``__nnjax_checkpoint_version__``: 0-d int64, the format version (:data:`FORMAT_VERSION`).
* ``__config__``: 0-d unicode array holding the config as JSON.
* ``__epoch__``: 0-d int64.
* ``__dtypes__``: 0-d unicode array holding JSON ``{leaf key: dtype name}``. Dtypes numpy cannot
  store natively (``bfloat16`` and the other ``ml_dtypes``) are saved as their raw bits
  (``uint8``/``uint16``/...) and restored from this table.

Only arrays travel in the file, not the tree structure: loading takes templates (``params_like``,
``opt_state_like``, e.g. freshly initialized parameters and ``optimizer.init(params)``) that give the
structure, and every leaf is checked against them by key, shape and dtype.

Writes are atomic (:func:`nnjax.files.atomic_write`): the archive goes to a temporary file in the
target's directory, is flushed and ``fsync``-ed, then moved onto the target with ``os.replace``. A
crash mid-write leaves the previous checkpoint (if any) intact and no partial file at the target.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import zipfile
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nnjax import _validation
from nnjax.files import atomic_write

__all__ = ["FORMAT_VERSION", "Checkpoint", "load_checkpoint", "read_metadata", "save_checkpoint"]

FORMAT_VERSION = 1
"""Version of the on-disk layout written by :func:`save_checkpoint`."""

_VERSION_KEY = "__nnjax_checkpoint_version__"
_CONFIG_KEY = "__config__"
_EPOCH_KEY = "__epoch__"
_DTYPES_KEY = "__dtypes__"
_PREFIXES = ("params", "opt_state")


class Checkpoint(NamedTuple):
    """A loaded checkpoint.

    Attributes:
      params: the parameter pytree, with the structure of ``params_like`` and ``jnp`` array leaves.
      opt_state: the optimizer state, with the structure of ``opt_state_like``.
      config: the JSON-decoded config dict.
      epoch: the epoch stored at save time.
    """

    params: Any
    opt_state: Any
    config: dict[str, Any]
    epoch: int


def _as_numpy(leaf: Any) -> np.ndarray:
    """``leaf`` as a numpy array in the dtype JAX would hold it in (float64 -> float32 unless x64)."""
    arr = np.asarray(leaf)
    dtype = jax.dtypes.canonicalize_dtype(arr.dtype)
    return arr.astype(dtype, copy=False)


def _is_native(dtype: np.dtype) -> bool:
    """Whether ``np.save`` round-trips ``dtype`` (ml_dtypes such as bfloat16 come back as void)."""
    return dtype.kind != "V"


def _flatten(prefix: str, tree: Any) -> tuple[list[str], list[Any], Any]:
    """Leaf keys (``prefix + keystr(path)``), leaves, and treedef of ``tree``.

    Raises:
      ValueError: if two leaves map to the same key.
    """
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    keys = [prefix + jax.tree_util.keystr(path) for path, _ in leaves_with_paths]
    if len(set(keys)) != len(keys):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"{prefix}: several leaves share the key path(s) {dupes}")
    return keys, [leaf for _, leaf in leaves_with_paths], treedef


def _template_shape_dtype(leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and (canonical) dtype of a template leaf: an array, a ShapeDtypeStruct or a scalar."""
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return tuple(leaf.shape), np.dtype(jax.dtypes.canonicalize_dtype(leaf.dtype))
    arr = _as_numpy(leaf)
    return arr.shape, arr.dtype


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    params: Any,
    opt_state: Any,
    config: dict[str, Any],
    epoch: int,
) -> pathlib.Path:
    """Writes a checkpoint atomically to ``path`` as an ``.npz`` archive.

    Args:
      path: target file. Written exactly as given (no ``.npz`` is appended); its parent directory
        is created if missing; an existing file there is replaced only once the new one is
        complete.
      params: any pytree of arrays, e.g. a list of ``{"W": (n_out, n_in), "b": (n_out,)}`` dicts.
      opt_state: any pytree, e.g. ``optimizer.init(params)`` (tuples of NamedTuples of arrays and
        int32 counts) or ``optax.EmptyState()``.
      config: a JSON-serializable dict (hyperparameters, architecture, ...).
      epoch: the number of completed epochs, an int ``>= 0``.

    Leaves are stored in the dtype JAX holds them in (Python floats and float64 numpy arrays
    become float32 unless ``jax_enable_x64`` is on), so a load gives back exactly what JAX had.

    Returns:
      The path written, as a ``pathlib.Path``.

    Raises:
      TypeError: if ``config`` is not a dict or not JSON-serializable, or ``epoch`` is not an int.
      ValueError: if ``epoch < 0`` or two leaves of one tree share a key path.
      OSError: if the file cannot be written. In every error case nothing is left at ``path``
        except the checkpoint that was already there, and no temporary file remains.
    """
    path = pathlib.Path(path)
    _validation.check_instance("config", config, dict)
    epoch = _validation.check_int_type("epoch", epoch, 0)

    arrays: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for prefix, tree in zip(_PREFIXES, (params, opt_state), strict=True):
        keys, leaves, _ = _flatten(prefix, tree)
        for key, leaf in zip(keys, leaves, strict=True):
            arr = _as_numpy(leaf)
            dtypes[key] = arr.dtype.name
            if not _is_native(arr.dtype):
                arr = arr.view(np.dtype(f"u{arr.dtype.itemsize}"))
            arrays[key] = arr
    arrays[_VERSION_KEY] = np.asarray(FORMAT_VERSION, dtype=np.int64)
    arrays[_CONFIG_KEY] = np.asarray(json.dumps(config))  # TypeError if not serializable
    arrays[_EPOCH_KEY] = np.asarray(epoch, dtype=np.int64)
    arrays[_DTYPES_KEY] = np.asarray(json.dumps(dtypes))

    with atomic_write(path) as f:
        np.savez(f, **arrays)
    return path


def _restore_tree(
    data: Any, prefix: str, like: Any, dtypes: dict[str, str], stored_keys: set[str]
) -> Any:
    """Places the archive's ``prefix`` leaves into the structure of ``like``, checking each one."""
    keys, template_leaves, treedef = _flatten(prefix, like)
    ours = {k for k in stored_keys if k.startswith(prefix) and not k.startswith("__")}
    # "params" is not a prefix of "opt_state" and vice versa, so the two sets are disjoint.
    missing = sorted(set(keys) - ours)
    unexpected = sorted(ours - set(keys))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing from checkpoint: {missing}")
        if unexpected:
            parts.append(f"unexpected in checkpoint: {unexpected}")
        raise ValueError(
            f"{prefix}: checkpoint leaves do not match the template ({'; '.join(parts)})"
        )

    leaves = []
    for key, template in zip(keys, template_leaves, strict=True):
        arr = data[key]
        dtype_name = dtypes.get(key, arr.dtype.name)
        dtype = np.dtype(jnp.dtype(dtype_name))
        if arr.dtype != dtype:
            if _is_native(dtype) or arr.dtype.itemsize != dtype.itemsize:
                raise ValueError(
                    f"{key}: stored array has dtype {arr.dtype}, but the checkpoint's dtype table "
                    f"says {dtype_name}; the file is corrupt"
                )
            arr = arr.view(dtype)
        want_shape, want_dtype = _template_shape_dtype(template)
        if arr.shape != want_shape:
            raise ValueError(
                f"{key}: checkpoint has shape {arr.shape}, expected {want_shape}"
                f" (template dtype {want_dtype}, checkpoint dtype {arr.dtype})"
            )
        if arr.dtype != want_dtype:
            raise ValueError(
                f"{key}: checkpoint has dtype {arr.dtype}, expected {want_dtype}"
                f" (checkpoint shape {arr.shape}, expected {want_shape})"
            )
        leaves.append(jnp.asarray(arr))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _load_archive(path: pathlib.Path) -> Any:
    """Opens ``path`` as an ``.npz`` archive (``np.load`` without pickle), or raises naming it."""
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "checkpoint file not found", str(path))
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, IsADirectoryError | PermissionError):
            raise
        raise ValueError(f"{path} is not an nnjax checkpoint (not an .npz archive): {err}") from err
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is not an nnjax checkpoint (a single .npy array, not an archive)")
    return loaded


def _read_header(
    path: pathlib.Path, data: Any, stored_keys: set[str]
) -> tuple[dict[str, Any], int]:
    """Checks an open archive's format version and returns its ``(config, epoch)``."""
    if _VERSION_KEY not in stored_keys:
        raise ValueError(
            f"{path} is not an nnjax checkpoint (no {_VERSION_KEY!r} key; keys: "
            f"{sorted(stored_keys)[:10]})"
        )
    version = int(data[_VERSION_KEY])
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {version}; this nnjax reads up to "
            f"{FORMAT_VERSION}"
        )
    for key in (_CONFIG_KEY, _EPOCH_KEY):
        if key not in stored_keys:
            raise ValueError(f"{path} is not a valid nnjax checkpoint (no {key!r} key)")
    return json.loads(str(data[_CONFIG_KEY])), int(data[_EPOCH_KEY])


@contextlib.contextmanager
def _opened(path: pathlib.Path) -> Iterator[tuple[Any, set[str], dict[str, Any], int]]:
    """Opens a checkpoint and checks its format: yields ``(data, keys, config, epoch)``.

    Every way a file can fail to be a readable checkpoint, here or while the caller reads its
    arrays (a truncated or corrupted archive), raises ValueError naming the file.
    """
    with _load_archive(path) as data:
        stored_keys = set(data.files)
        try:
            config, epoch = _read_header(path, data, stored_keys)
            yield data, stored_keys, config, epoch
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: corrupt JSON metadata in checkpoint: {err}") from err
        except (zipfile.BadZipFile, EOFError) as err:
            raise ValueError(f"{path} is a damaged checkpoint: {err}") from err


def read_metadata(path: str | os.PathLike[str]) -> tuple[dict[str, Any], int]:
    """The ``(config, epoch)`` saved in a checkpoint, without reading its arrays.

    Use it to compare a run's options with the checkpoint's before building templates for
    ``load_checkpoint``.

    Raises FileNotFoundError and ValueError as :func:`load_checkpoint` does for the file itself.
    """
    with _opened(pathlib.Path(path)) as (_, _, config, epoch):
        return config, epoch


def load_checkpoint(
    path: str | os.PathLike[str], *, params_like: Any, opt_state_like: Any
) -> Checkpoint:
    """Reads a checkpoint written by :func:`save_checkpoint`.

    The file is opened with ``numpy.load(..., allow_pickle=False)``: nothing in it is executed.

    Args:
      path: the checkpoint file.
      params_like: a pytree with the structure, shapes and dtypes of the saved parameters, e.g.
        freshly initialized parameters. Leaves may be arrays, ``jax.ShapeDtypeStruct``s (as
        from ``jax.eval_shape``) or scalars; their values are not used.
      opt_state_like: likewise for the optimizer state, e.g. ``optimizer.init(params_like)``.

    Returns:
      ``Checkpoint(params, opt_state, config, epoch)``: the two trees have the structure of their
      templates and ``jnp.ndarray`` leaves with the stored dtype and shape.

    Raises:
      FileNotFoundError: if ``path`` does not exist (the message names it).
      ValueError: if the file is not an nnjax checkpoint (not an ``.npz`` archive, no version
        key, or holding pickled objects), is damaged (truncated, or an array fails its
        checksum), is of a newer format version, if its set of leaf keys differs from the
        templates' (the message lists missing and unexpected keys), or if a leaf's shape or
        dtype differs (the message names the leaf's key path, e.g. ``params[1]['W']``, and
        both shapes).
    """
    with _opened(pathlib.Path(path)) as (data, stored_keys, config, epoch):
        dtypes = json.loads(str(data[_DTYPES_KEY])) if _DTYPES_KEY in stored_keys else {}
        params = _restore_tree(data, "params", params_like, dtypes, stored_keys)
        opt_state = _restore_tree(data, "opt_state", opt_state_like, dtypes, stored_keys)
    return Checkpoint(params=params, opt_state=opt_state, config=config, epoch=epoch)
