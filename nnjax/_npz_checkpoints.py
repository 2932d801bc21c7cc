"""The checks of a checkpoint's leaves against their templates, which both formats share, and
read-only support for format 1 checkpoints: ``.npz`` archives as ``numpy.savez`` wrote them.

Layout of a format 1 archive: one ``<leaf key>.npy`` member per leaf, and the members
``__nnjax_checkpoint_version__`` (0-d int, 1), ``__config__`` (0-d string, JSON), ``__epoch__``
(0-d int) and ``__dtypes__`` (0-d string, JSON ``{leaf key: dtype name}``; ``ml_dtypes`` leaves
are stored as their raw bits).

Nothing is trusted before it is checked: the archive's directory is bounded, compressed or
encrypted members are refused (``numpy.savez`` stores members as they are, so nothing can
inflate), and each member's ``.npy`` header (shape and dtype) and declared size are compared with
what is expected before its data is read. Every member read is read to its end, so its CRC-32 is
checked.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
import zlib
from collections.abc import Callable
from typing import Any, BinaryIO

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["read"]

_PREFIXES = ("params", "opt_state")
_VERSION_KEY = "__nnjax_checkpoint_version__"
_CONFIG_KEY = "__config__"
_EPOCH_KEY = "__epoch__"
_DTYPES_KEY = "__dtypes__"
_METADATA_KEYS = frozenset({_VERSION_KEY, _CONFIG_KEY, _EPOCH_KEY, _DTYPES_KEY})
_END_RECORD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_MAX_DIRECTORY_BYTES = 2**20
_MAX_METADATA_BYTES = 64 * 2**20
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}

_Check = Callable[[str, tuple[int, ...], np.dtype], int]
"""Checks a member's key, declared shape and dtype; returns the bytes its data must take."""


_Expected = dict[str, tuple[tuple[int, ...], np.dtype]]
"""Each leaf's key, with the shape and dtype its template gives it."""


def _as_numpy(leaf: Any) -> np.ndarray:
    """``leaf`` as a numpy array in the dtype JAX would hold it in (float64 -> float32 unless x64)."""
    arr = np.asarray(leaf)
    dtype = jax.dtypes.canonicalize_dtype(arr.dtype)
    return arr.astype(dtype, copy=False)


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


def _templates(params_like: Any, opt_state_like: Any) -> tuple[_Expected, list[tuple[list, Any]]]:
    """Each template leaf's key with its shape and dtype, and each tree's keys and treedef."""
    expected: _Expected = {}
    trees = []
    for prefix, like in zip(_PREFIXES, (params_like, opt_state_like), strict=True):
        keys, leaves, treedef = _flatten(prefix, like)
        expected.update(
            (k, _template_shape_dtype(leaf)) for k, leaf in zip(keys, leaves, strict=True)
        )
        trees.append((keys, treedef))
    return expected, trees


def _short(value: Any) -> str:
    """``repr(value)``, cut to 60 characters for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _storage(dtype: np.dtype) -> np.dtype:
    """The dtype a ``dtype`` leaf's bytes are stored in: itself, or raw bits for ``ml_dtypes``.

    Raises:
      ValueError: if ``dtype`` is an ``ml_dtypes`` type of a size no unsigned int has.
    """
    if dtype.kind != "V":
        return dtype
    if dtype.itemsize not in (1, 2, 4, 8):
        raise ValueError(f"dtype {dtype} cannot be stored in a checkpoint")
    return np.dtype(f"u{dtype.itemsize}")


def _check_names(stored: set[str], expected: _Expected) -> None:
    """Raises ValueError unless the file's leaf keys ``stored`` are exactly the templates'."""
    for prefix in _PREFIXES:
        want = {k for k in expected if k.startswith(prefix)}
        ours = {k for k in stored if k.startswith(prefix)}
        parts = []
        if missing := sorted(want - ours):
            parts.append(f"missing from checkpoint: {missing}")
        if unexpected := sorted(ours - want):
            parts.append(f"unexpected in checkpoint: {unexpected}")
        if parts:
            raise ValueError(
                f"{prefix}: checkpoint leaves do not match the template ({'; '.join(parts)})"
            )
    if others := sorted(k for k in stored if not k.startswith(_PREFIXES)):
        raise ValueError(f"unexpected tensors in checkpoint: {_short(others)}")


def _check_leaf(
    key: str, logical: np.dtype, stored: np.dtype, shape: tuple[int, ...], expected: _Expected
) -> int:
    """Checks one leaf's dtypes and shape against its template; returns its size in bytes.

    Args:
      key: the leaf's key.
      logical: the dtype the dtype table gives it.
      stored: the dtype its bytes are stored in.
      shape: its declared shape.
      expected: the templates' shapes and dtypes.

    Returns:
      The number of bytes the leaf's data takes.
    """
    want_shape, want_dtype = expected[key]
    if stored != _storage(logical):
        raise ValueError(
            f"{key}: stored array has dtype {stored}, but the checkpoint's dtype table says "
            f"{logical}; the file is corrupt"
        )
    if shape != want_shape:
        raise ValueError(
            f"{key}: checkpoint has shape {_short(shape)}, expected {want_shape}"
            f" (template dtype {want_dtype}, checkpoint dtype {logical})"
        )
    if logical != want_dtype:
        raise ValueError(
            f"{key}: checkpoint has dtype {logical}, expected {want_dtype}"
            f" (checkpoint shape {shape}, expected {want_shape})"
        )
    return math.prod(shape) * stored.itemsize


def _parse_object(what: str, text: Any) -> dict[str, Any]:
    """``text`` decoded as a JSON object, or a ValueError naming ``what``."""
    if not isinstance(text, str):
        raise ValueError(f"{what} is {_short(text)}, not a JSON string")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{what} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is {_short(value)}, not a JSON object")
    return value


def _logical_dtype(key: str, name: Any) -> np.dtype:
    """The dtype named ``name`` in the dtype table, or a ValueError."""
    try:
        dtype = np.dtype(jnp.dtype(name)) if isinstance(name, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.name != name or dtype.kind not in "biufcV" or not dtype.itemsize:
        raise ValueError(f"the dtype table names an unknown dtype {_short(name)} for {key}")
    return dtype


def _parse_dtype_table(text: Any) -> dict[str, np.dtype]:
    """The checkpoint's dtype table, ``{leaf key: dtype}``, from its JSON ``text``."""
    table = _parse_object("the dtype table", text)
    return {key: _logical_dtype(key, name) for key, name in table.items()}


def _check_epoch(epoch: int) -> int:
    """``epoch`` if it is a non-negative int, or a ValueError."""
    if type(epoch) is not int or epoch < 0:
        raise ValueError(f"the epoch is {_short(epoch)}, not a non-negative integer")
    return epoch


def _open_archive(f: BinaryIO, size: int) -> zipfile.ZipFile:
    """Opens ``f`` (``size`` bytes) as a zip archive after checking its end record and members."""
    if size < 42:
        raise ValueError("the .npz archive is truncated")
    f.seek(size - 42)
    tail = f.read(42)
    if tail[20:24] != _END_RECORD or tail[:4] == _ZIP64_LOCATOR:
        raise ValueError(
            "not an .npz archive as numpy.savez writes it (no end record at its end: "
            "truncated, appended to, or zip64)"
        )
    if int.from_bytes(tail[32:36], "little") > _MAX_DIRECTORY_BYTES:
        raise ValueError(f"the archive's directory exceeds {_MAX_DIRECTORY_BYTES} bytes")
    archive = zipfile.ZipFile(f)
    names = archive.namelist()
    if len(set(names)) != len(names):
        raise ValueError("the archive names a member twice")
    for info in archive.infolist():
        name = _short(info.filename)
        if not info.filename.endswith(".npy"):
            raise ValueError(f"member {name} is not a .npy file")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise ValueError(
                f"member {name} is compressed or encrypted; numpy.savez stores members"
            )
        if info.file_size > size:
            raise ValueError(
                f"member {name} declares {info.file_size} bytes, more than the archive"
            )
    return archive


def _read_npy_header(key: str, stream: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """The shape, Fortran order and dtype an ``.npy`` member declares, refusing object arrays."""
    try:
        version = np.lib.format.read_magic(stream)
        if version not in _NPY_HEADER_READERS:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran_order, dtype = _NPY_HEADER_READERS[version](stream)
    except ValueError as err:
        raise ValueError(f"{key}: not a valid .npy member ({err})") from None
    if dtype.hasobject:
        raise ValueError(f"{key}: an array of Python objects, which nnjax never stores")
    return shape, fortran_order, dtype


def _read_member(archive: zipfile.ZipFile, key: str, check: _Check) -> np.ndarray:
    """The array in member ``key``, its header passed through ``check`` before its data is read."""
    info = archive.getinfo(key + ".npy")
    with archive.open(info) as stream:
        shape, fortran_order, dtype = _read_npy_header(key, stream)
        nbytes = check(key, shape, dtype)
        held = info.file_size - stream.tell()
        if held != nbytes:
            raise ValueError(
                f"{key}: member holds {held} bytes of data, its header declares {nbytes}"
            )
        data = stream.read(nbytes)
        if len(data) != nbytes or stream.read(1):  # reading to the end checks the CRC-32
            raise ValueError(f"{key}: the member is truncated")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")


def _scalar(archive: zipfile.ZipFile, key: str, kinds: str) -> Any:
    """The Python value of the 0-d metadata member ``key``, whose dtype kind must be in ``kinds``."""
    what = "a string" if kinds == "U" else "an integer"

    def check(name: str, shape: tuple[int, ...], dtype: np.dtype) -> int:
        if shape != () or dtype.kind not in kinds or dtype.itemsize > _MAX_METADATA_BYTES:
            raise ValueError(f"{name} is a {dtype} array of shape {_short(shape)}, not {what}")
        return dtype.itemsize

    return _read_member(archive, key, check).item()


def _read_header(archive: zipfile.ZipFile, keys: set[str]) -> tuple[dict[str, Any], int]:
    """The config and epoch of an archive whose member keys are ``keys``, checked."""
    if _VERSION_KEY not in keys:
        raise ValueError(
            f"not an nnjax checkpoint (no {_VERSION_KEY!r} member; members: {_short(sorted(keys))})"
        )
    version = _scalar(archive, _VERSION_KEY, "iu")
    if version != 1:
        raise ValueError(f"unsupported checkpoint format version {version} in an .npz archive")
    for key in (_CONFIG_KEY, _EPOCH_KEY):
        if key not in keys:
            raise ValueError(f"not a valid nnjax checkpoint (no {key!r} member)")
    config = _parse_object("the config", _scalar(archive, _CONFIG_KEY, "U"))
    epoch = _check_epoch(_scalar(archive, _EPOCH_KEY, "iu"))
    return config, epoch


def _leaf_check(dtypes: dict[str, np.dtype] | None, expected: _Expected) -> _Check:
    """The check of a leaf member: its dtype (restored through ``dtypes``) and shape."""

    def check(key: str, shape: tuple[int, ...], dtype: np.dtype) -> int:
        logical = dtype if dtypes is None else dtypes[key]
        return _check_leaf(key, logical, dtype, shape, expected)

    return check


def _read(
    archive: zipfile.ZipFile, expected: _Expected | None
) -> tuple[tuple[dict[str, Any], int], dict[str, np.ndarray]]:
    """``read`` on an open archive."""
    keys = {name.removesuffix(".npy") for name in archive.namelist()}
    header = _read_header(archive, keys)
    if expected is None:
        return header, {}
    leaves = keys - _METADATA_KEYS
    _check_names(leaves, expected)
    dtypes = None
    if _DTYPES_KEY in keys:
        dtypes = _parse_dtype_table(_scalar(archive, _DTYPES_KEY, "U"))
        if set(dtypes) != leaves:
            raise ValueError("the dtype table does not name the same arrays as the archive")
    check = _leaf_check(dtypes, expected)
    arrays = {key: _read_member(archive, key, check) for key in expected}
    if dtypes is None:
        return header, arrays
    return header, {key: arr.view(dtypes[key]) for key, arr in arrays.items()}


def read(
    f: BinaryIO, size: int, expected: _Expected | None
) -> tuple[tuple[dict[str, Any], int], dict[str, np.ndarray]]:
    """A format 1 checkpoint's config and epoch and, when ``expected`` is given, its leaves.

    Args:
      f: the open file, ``size`` bytes long.
      size: its size in bytes.
      expected: each template leaf's key with its shape and dtype, or None to read the header
        only.

    Returns:
      ``((config, epoch), {leaf key: array in its restored dtype})``.

    Raises:
      ValueError: whatever is wrong with the archive, in one line.
    """
    try:
        with _open_archive(f, size) as archive:
            return _read(archive, expected)
    except (
        EOFError,
        NotImplementedError,
        OSError,
        OverflowError,
        struct.error,
        zipfile.BadZipFile,
        zlib.error,
    ) as err:
        raise ValueError(f"the archive is damaged or unreadable: {err}") from err
