"""The trees a checkpoint holds, as tensors: parameters, optimizer state and model state.

Each leaf of a tree is one tensor, named by the tree and the leaf's key path
(``jax.tree_util.keystr``): ``params[1]['W']``, ``opt_state[0].mu[0]['b']``,
``model_state[1]['mean']``. A tree without leaves adds no tensor: the checkpoint of a model that
keeps no state (``()``) holds exactly the tensors it held before model state was saved.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnjax._npz_checkpoints import (
    _as_numpy,
    _check_names,
    _Expected,
    _flatten,
    _short,
    _storage,
    _template_shape_dtype,
    _templates,
)

__all__ = [
    "MODEL_STATE",
    "SAFETENSORS_DTYPES",
    "TREES",
    "check_names",
    "format_1_expected",
    "stored_tensors",
    "templates",
]

MODEL_STATE = "model_state"
TREES = ("params", "opt_state", MODEL_STATE)
"""The trees of a checkpoint, in the order their tensors' names start with."""

_NUMPY_DTYPES = (
    "bool uint8 int8 uint16 int16 float16 uint32 int32 float32 uint64 int64 float64 complex64"
)
SAFETENSORS_DTYPES = {
    "BOOL" if d.kind == "b" else f"{d.kind.upper()}{8 * d.itemsize}": d
    for d in map(np.dtype, _NUMPY_DTYPES.split())
}
"""The safetensors dtype codes safetensors' NumPy binding reads, with their NumPy dtypes."""
_STORABLE = frozenset(SAFETENSORS_DTYPES.values())


def stored_tensors(trees: tuple[Any, ...]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every leaf of ``trees`` as the tensor a checkpoint stores, and the dtype it restores to.

    Args:
      trees: one pytree per name of ``TREES``.

    Returns:
      ``(tensors, dtypes)``, both keyed by the leaves' names; ``ml_dtypes`` leaves are stored as
      their raw bits.

    Raises:
      ValueError: if two leaves of one tree share a key path, or a leaf's dtype cannot be stored.
    """
    tensors: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for name, tree in zip(TREES, trees, strict=True):
        keys, leaves, _ = _flatten(name, tree)
        for key, leaf in zip(keys, leaves, strict=True):
            arr = _as_numpy(leaf)
            dtypes[key] = arr.dtype.name
            storage = _storage(arr.dtype)
            if storage not in _STORABLE:
                raise ValueError(f"{key}: dtype {arr.dtype} cannot be stored in a checkpoint")
            tensors[key] = np.asarray(arr.view(storage), order="C")
    return tensors, dtypes


def templates(
    params_like: Any, opt_state_like: Any, model_state_like: Any
) -> tuple[_Expected, list[tuple[list[str], Any]]]:
    """Each template leaf's name with its shape and dtype, and each tree's names and treedef.

    Args:
      params_like: the parameters' template.
      opt_state_like: the optimizer state's template.
      model_state_like: the model state's template, ``()`` for a model without.

    Returns:
      ``(expected, trees)``: ``trees`` holds ``(names, treedef)`` for each of ``TREES``.
    """
    expected, trees = _templates(params_like, opt_state_like)
    keys, leaves, treedef = _flatten(MODEL_STATE, model_state_like)
    expected.update((k, _template_shape_dtype(v)) for k, v in zip(keys, leaves, strict=True))
    return expected, [*trees, (keys, treedef)]


def check_names(stored: set[str], expected: _Expected) -> None:
    """Raises ValueError unless the file's tensor names are exactly the templates'.

    Args:
      stored: the names of the file's tensors.
      expected: the templates' leaves (``templates``).
    """
    ours = {k for k in stored if k.startswith(MODEL_STATE)}
    want = {k for k in expected if k.startswith(MODEL_STATE)}
    _check_names(stored - ours, {k: v for k, v in expected.items() if k not in want})
    if ours != want:
        raise ValueError(
            f"{MODEL_STATE}: checkpoint leaves do not match the template (missing from "
            f"checkpoint: {_short(sorted(want - ours))}; unexpected in checkpoint: "
            f"{_short(sorted(ours - want))})"
        )


def format_1_expected(expected: _Expected | None) -> _Expected | None:
    """``expected`` for a format 1 (``.npz``) checkpoint, which holds no model state.

    Args:
      expected: the templates' leaves (``templates``), or None to read the header alone.

    Returns:
      ``expected``, unchanged.

    Raises:
      ValueError: if the templates have model state.
    """
    if expected is not None and any(k.startswith(MODEL_STATE) for k in expected):
        raise ValueError("a format 1 (.npz) checkpoint holds no model state")
    return expected
