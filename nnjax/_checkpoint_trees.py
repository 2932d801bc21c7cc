"""The trees a checkpoint holds, as tensors: parameters, optimizer state, model state and early
stopping's state.

Each leaf of a tree is one tensor, named by the tree and the leaf's key path
(``jax.tree_util.keystr``): ``params[1]['W']``, ``opt_state[0].mu[0]['b']``,
``model_state[1]['mean']``, ``early_stopping['best']``. A tree without leaves adds no tensor: the
checkpoint of a model that keeps no state (``()``), or of a run without early stopping (None),
holds exactly the tensors it held before those trees were saved.
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
    "EARLY_STOPPING",
    "MODEL_STATE",
    "SAFETENSORS_DTYPES",
    "TREES",
    "check_names",
    "format_1_expected",
    "stored_tensors",
    "templates",
]

MODEL_STATE = "model_state"
EARLY_STOPPING = "early_stopping"
TREES = ("params", "opt_state", MODEL_STATE, EARLY_STOPPING)
"""The trees of a checkpoint, in the order their tensors' names start with."""
_OPTIONAL = {MODEL_STATE: "model state", EARLY_STOPPING: "early stopping state"}
"""The trees a checkpoint may lack, with what they hold."""

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
    params_like: Any, opt_state_like: Any, model_state_like: Any, early_stopping_like: Any = None
) -> tuple[_Expected, list[tuple[list[str], Any]]]:
    """Each template leaf's name with its shape and dtype, and each tree's names and treedef.

    Args:
      params_like: the parameters' template.
      opt_state_like: the optimizer state's template.
      model_state_like: the model state's template, ``()`` for a model without.
      early_stopping_like: early stopping's state's template, None for a run without.

    Returns:
      ``(expected, trees)``: ``trees`` holds ``(names, treedef)`` for each of ``TREES``.
    """
    expected, trees = _templates(params_like, opt_state_like)
    for name, like in zip(_OPTIONAL, (model_state_like, early_stopping_like), strict=True):
        keys, leaves, treedef = _flatten(name, like)
        expected.update((k, _template_shape_dtype(v)) for k, v in zip(keys, leaves, strict=True))
        trees.append((keys, treedef))
    return expected, trees


def check_names(stored: set[str], expected: _Expected) -> None:
    """Raises ValueError unless the file's tensor names are exactly the templates'.

    Early stopping's tensors are the exception: without a template for them, the file may hold
    them (they are then read, for its digest, but not returned).

    Args:
      stored: the names of the file's tensors.
      expected: the templates' leaves (``templates``).
    """
    optional = {name: {k for k in stored if k.startswith(name)} for name in _OPTIONAL}
    wanted = {name: {k for k in expected if k.startswith(name)} for name in _OPTIONAL}
    main = {k: v for k, v in expected.items() if not k.startswith(tuple(_OPTIONAL))}
    _check_names(stored - set().union(*optional.values()), main)
    for name, ours in optional.items():
        want = wanted[name]
        if ours != want and (want or name != EARLY_STOPPING):
            raise ValueError(
                f"{name}: checkpoint leaves do not match the template (missing from "
                f"checkpoint: {_short(sorted(want - ours))}; unexpected in checkpoint: "
                f"{_short(sorted(ours - want))})"
            )


def format_1_expected(expected: _Expected | None) -> _Expected | None:
    """``expected`` for a format 1 (``.npz``) checkpoint: no model state, no early stopping.

    Args:
      expected: the templates' leaves (``templates``), or None to read the header alone.

    Returns:
      ``expected``, unchanged.

    Raises:
      ValueError: if the templates have model state or early stopping's state.
    """
    for name, what in _OPTIONAL.items():
        if expected is not None and any(k.startswith(name) for k in expected):
            raise ValueError(f"a format 1 (.npz) checkpoint holds no {what}")
    return expected
