"""Data files for ``nnjax train --data``: ``.npz`` and ``.csv``, read safely.

A ``.npz`` file holds two arrays: ``x``, the inputs ``(n, n_features)``, and ``y``, the labels
or targets ``(n,)``. A ``.csv`` file starts with a header row naming its columns; one column (the
last, or the one ``label_column`` names) holds the labels or targets, the others the inputs.

Reading is safe for files from elsewhere: a file (and a ``.npz``'s arrays once decompressed)
holds at most ``MAX_BYTES``, ``.npz`` arrays are read without pickle
(``np.load(allow_pickle=False)``), and the bytes parsed are the bytes hashed
(``DataFile.sha256``), so a run records exactly the content it trained on. A malformed file
raises a one-line ValueError that names it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import zipfile
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from nnjax import _validation

__all__ = ["MAX_BYTES", "SUFFIXES", "DataFile", "read_data_file"]

MAX_BYTES = 1 << 30
"""The largest data file read, and the largest a ``.npz``'s arrays may be decompressed: 1 GiB."""

SUFFIXES = (".npz", ".csv")
"""The data files ``read_data_file`` reads, by suffix."""

_NPY_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class DataFile(NamedTuple):
    """A data file's arrays and the SHA-256 of its content.

    Attributes:
      x: the inputs, ``(n, n_features)``, a real dtype, every value finite.
      y: the labels or targets, ``(n,)``, a real dtype, every value finite.
      sha256: the SHA-256 of the file's bytes, in hex.
    """

    x: np.ndarray
    y: np.ndarray
    sha256: str


def read_data_file(
    path: str | Path, label_column: str | None = None, *, max_bytes: int = MAX_BYTES
) -> DataFile:
    """Reads a ``.npz`` or ``.csv`` data file.

    Args:
      path: the file; its suffix (``SUFFIXES``) says how to read it.
      label_column: the ``.csv`` column of the labels or targets; None: the last column. A
        ``.npz`` file names its arrays, so it takes None.
      max_bytes: the largest file, and the largest decompressed ``.npz`` arrays, read.

    Returns:
      A ``DataFile``.

    Raises:
      ValueError: one line naming the file and what is wrong with it.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: expected a .npz or .csv data file")
    if suffix == ".npz" and label_column is not None:
        raise ValueError(f"{path}: a .npz file holds arrays x and y, it has no label column")
    try:
        content = _read_bounded(path, max_bytes)
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        if suffix == ".npz":
            x, y = _npz_arrays(content, max_bytes)
        else:
            x, y = _csv_arrays(content, label_column)
        _check_arrays(x, y)
    except ValueError as error:
        raise ValueError(f"{path}: {' '.join(str(error).split())}") from None
    return DataFile(x, y, hashlib.sha256(content).hexdigest())


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, or ValueError if it holds more than ``max_bytes``."""
    with open(path, "rb") as f:
        content = f.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise ValueError(f"{path} is larger than the limit of {max_bytes:,} bytes")
    return content


def _npz_arrays(content: bytes, max_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``x`` and ``y`` of a ``.npz`` file's content, their sizes checked before reading."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            members = {info.filename: info for info in archive.infolist()}
            names = sorted(name.removesuffix(".npy") for name in members)
            missing = [name for name in ("x", "y") if f"{name}.npy" not in members]
            if missing:
                raise ValueError(f"no array named {' or '.join(missing)}; it holds {names}")
            unpacked = sum(members[f"{name}.npy"].file_size for name in ("x", "y"))
            if unpacked > max_bytes:
                raise ValueError(
                    f"x and y take {unpacked:,} bytes decompressed, beyond the limit of "
                    f"{max_bytes:,}"
                )
            for name in ("x", "y"):
                with archive.open(members[f"{name}.npy"]) as member:
                    _check_npy_header(name, member, members[f"{name}.npy"].file_size)
        with np.load(io.BytesIO(content), allow_pickle=False) as arrays:
            return arrays["x"], arrays["y"]
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"not a readable .npz file ({error})") from None


def _check_npy_header(name: str, member: Any, size: int) -> None:
    """Raises ValueError unless an ``.npy`` member's header declares a numeric array that fits
    in the member's ``size`` bytes (never Python objects, never more than the file holds)."""
    version = np.lib.format.read_magic(member)
    if version not in _NPY_HEADERS:
        raise ValueError(f"array {name} has the unsupported .npy format version {version}")
    shape, _, dtype = _NPY_HEADERS[version](member)
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ValueError(f"array {name} has dtype {dtype}; only numbers are read (no pickle)")
    if math.prod(shape) * dtype.itemsize > size:
        raise ValueError(f"array {name} declares shape {shape}, more than its {size:,} bytes")


def _csv_arrays(content: bytes, label_column: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels of a ``.csv`` file's content: a header row, then rows of numbers."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text (byte {error.start})") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = [name.strip() for name in next(reader, [])]
        rows = [(reader.line_num, row) for row in reader if row]
    except csv.Error as error:
        raise ValueError(f"line {reader.line_num}: {error}") from None
    label = _label_index(header, label_column)
    for line, row in rows:
        if len(row) != len(header):
            raise ValueError(f"line {line} has {len(row)} columns, the header {len(header)}")
    if not rows:
        raise ValueError("no rows of data after the header")
    try:
        values = np.array([row for _, row in rows], dtype=np.float64)
    except ValueError:
        raise ValueError(_first_non_number(header, rows)) from None
    return np.delete(values, label, axis=1), values[:, label]


def _label_index(header: list[str], label_column: str | None) -> int:
    """The index of the label column in a ``.csv`` header, which must name every column."""
    if not header:
        raise ValueError("empty: expected a header row naming the columns")
    if all(_is_number(name) for name in header):
        raise ValueError(f"the first row must name the columns, got {', '.join(header[:5])}")
    if len(header) < 2:
        raise ValueError(f"only one column ({header[0]!r}): no inputs beside the labels")
    if label_column is None:
        return len(header) - 1
    if header.count(label_column) != 1:
        found = "twice" if label_column in header else f"not among {header[:10]}"
        raise ValueError(f"the label column {label_column!r} is {found}")
    return header.index(label_column)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _first_non_number(header: list[str], rows: list[tuple[int, list[str]]]) -> str:
    """Where the first cell that is not a number is, in words."""
    for line, row in rows:
        for name, cell in zip(header, row, strict=True):
            if not _is_number(cell):
                return f"line {line}, column {name!r}: {cell!r} is not a number"
    return "a cell is not a number"


def _check_arrays(x: np.ndarray, y: np.ndarray) -> None:
    """Raises ValueError unless ``x`` is ``(n, n_features)`` and ``y`` is ``(n,)``, both real
    and finite."""
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"x must have shape (n_samples, n_features), got shape {x.shape}")
    if y.ndim != 1:
        raise ValueError(f"y must have shape (n_samples,), got shape {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    for name, values in (("x", x), ("y", y)):
        if values.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold numbers, got dtype {values.dtype}")
        _validation.check_all_finite(name, values)
