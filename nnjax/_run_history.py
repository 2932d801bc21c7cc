"""A run folder's history as it is read back: per-epoch series of numbers, checked.

``folders`` reads the history from a checkpoint (or a legacy ``metrics.json``) and checks it
here before a run resumes from it or plots it.
"""

from __future__ import annotations

import math
from typing import Any

from nnjax.metrics import DERIVED_KEYS, HISTORY_KEYS

__all__ = ["check_history"]

_EPOCH_LISTS = ("eval_epoch", "diagnostics_epoch")


def check_history(history: Any, epoch: int, source: str) -> dict[str, list[float]]:
    """``history`` as per-epoch lists of floats (null read as NaN), checked against ``epoch``.

    Each ``metrics.HISTORY_KEYS`` and ``metrics.DERIVED_KEYS`` series present has one value per
    epoch, or, where the history has ``eval_epoch`` (a run that did not evaluate after every
    epoch), one per entry of it; every diagnostics series has one value per entry of
    ``diagnostics_epoch``. Both list epochs of ``1 .. epoch``, rising, read as ints.

    Args:
      history: the history read (a JSON object).
      epoch: the epochs completed.
      source: the file it was read from, for the error messages.

    Returns:
      The history, checked.

    Raises:
      ValueError: naming ``source`` and what is wrong.
    """
    if not isinstance(history, dict):
        raise ValueError(f"{source}: the history is not a JSON object")
    checked = {}
    for name, series in history.items():
        numbers = isinstance(series, list) and all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in series
        )
        if not numbers:
            raise ValueError(f"{source}: history entry {name!r} is not a list of numbers")
        checked[name] = [math.nan if v is None else float(v) for v in series]
    for name in _EPOCH_LISTS:
        epochs = checked.get(name, [])
        if any(not 1 <= e <= epoch or e != int(e) for e in epochs) or epochs != sorted(set(epochs)):
            raise ValueError(f"{source}: history entry {name!r} is not a rising list of epochs")
        if name in checked:
            checked[name] = [int(e) for e in epochs]
    evaluated = len(checked["eval_epoch"]) if "eval_epoch" in checked else epoch
    recorded = len(checked.get("diagnostics_epoch", []))
    for name, series in checked.items():
        expected = evaluated if name in (*HISTORY_KEYS, *DERIVED_KEYS) else recorded
        if name not in _EPOCH_LISTS and len(series) != expected:
            raise ValueError(
                f"{source}: history entry {name!r} has {len(series)} values, expected {expected}"
            )
    return checked
