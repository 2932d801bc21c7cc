"""The table of a safetensors file's header, read and checked before any tensor byte is.

A safetensors file is an 8-byte little-endian header length, a JSON header (string metadata under
``__metadata__``, then each tensor's ``dtype``, ``shape`` and ``data_offsets``) and the tensors'
bytes. ``read_table`` reads the header and checks its types and bounds; ``check_layout`` checks
that the byte ranges tile the data to the end of the file.
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from nnjax._checkpoint_trees import SAFETENSORS_DTYPES
from nnjax._npz_checkpoints import _short

__all__ = ["MAX_HEADER_BYTES", "Tensor", "check_layout", "read_table"]

MAX_HEADER_BYTES = 16 * 2**20
"""Largest header read or written: the metadata (config, history, dtype table) and tensor table."""


class Tensor(NamedTuple):
    """One tensor of a safetensors header: stored dtype, shape and byte range in the data."""

    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's dict, or a ValueError if it names a key twice."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("the header names a key twice")
    return result


def _is_index_list(value: Any) -> bool:
    """Whether ``value`` is a JSON list of non-negative integers."""
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def _parse_tensor(name: str, spec: Any) -> Tensor:
    """One tensor's entry of a safetensors header, checked for its types."""
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"tensor {_short(name)}: not a {{dtype, shape, data_offsets}} object")
    code, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(code, str) or code not in SAFETENSORS_DTYPES:
        raise ValueError(f"tensor {_short(name)}: unknown dtype {_short(code)}")
    if not _is_index_list(shape):
        raise ValueError(f"tensor {_short(name)}: shape {_short(shape)} is not a list of sizes")
    if not _is_index_list(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
        raise ValueError(f"tensor {_short(name)}: bad byte range {_short(offsets)}")
    return Tensor(SAFETENSORS_DTYPES[code], tuple(shape), offsets[0], offsets[1])


def read_table(f: BinaryIO, size: int, prefix: bytes) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The metadata and tensor table of a safetensors file whose first 8 bytes are ``prefix``.

    Args:
      f: the file, read from byte 8 on.
      size: the file's size in bytes.
      prefix: its first 8 bytes, the header's length.

    Returns:
      ``(metadata, tensors)``: the ``__metadata__`` object (None if absent) and each tensor's
      ``Tensor``, by name.

    Raises:
      ValueError: if the header runs past the file or the limit, or is malformed.
    """
    length = int.from_bytes(prefix, "little")
    if length > size - 8:
        raise ValueError(f"header length {length} runs past the end of the file ({size} bytes)")
    if length > MAX_HEADER_BYTES:
        raise ValueError(f"header length {length} exceeds the limit of {MAX_HEADER_BYTES}")
    f.seek(8)
    raw = f.read(length)
    if len(raw) != length:
        raise ValueError("the file is truncated")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"the header is not valid JSON: {err}") from None
    if not isinstance(header, dict):
        raise ValueError(f"the header is {_short(header)}, not a JSON object")
    metadata = header.pop("__metadata__", None)
    tensors = {name: _parse_tensor(name, spec) for name, spec in header.items()}
    return metadata, tensors


def check_layout(tensors: dict[str, Tensor], data_start: int, size: int) -> int:
    """Checks that the byte ranges tile the data and end with the file.

    Args:
      tensors: the tensor table (``read_table``).
      data_start: where the data begins: 8 bytes and the header's length.
      size: the file's size in bytes.

    Returns:
      The size of the data, in bytes.

    Raises:
      ValueError: if two ranges overlap, leave a gap, or the data does not end with the file.
    """
    position = 0
    for name, t in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if t.begin != position:
            raise ValueError(
                f"tensor {name}: byte range {t.begin}..{t.end} overlaps or leaves a gap"
            )
        position = t.end
    if data_start + position != size:
        raise ValueError(
            f"the header declares {position} bytes of tensor data, but the file holds "
            f"{size - data_start}"
        )
    return position
