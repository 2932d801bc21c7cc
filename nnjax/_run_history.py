"""A run folder's history as it is read back: per-epoch series of numbers, checked.

``folders`` reads the history from a checkpoint (or a legacy ``metrics.json``) and checks it
here before a run resumes from it or plots it.
"""

from __future__ import annotations

import math
from typing import Any

from nnjax.metrics import DERIVED_KEYS, HISTORY_KEYS

__all__ = ["check_history"]


def check_history(history: Any, epoch: int, source: str) -> dict[str, list[float]]:
    """``history`` as per-epoch lists of floats (null read as NaN), checked against ``epoch``.

    Each ``metrics.HISTORY_KEYS`` and ``metrics.DERIVED_KEYS`` series present has one value per
    epoch; every diagnostics series has one value per entry of ``diagnostics_epoch``.

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
    recorded = len(checked.get("diagnostics_epoch", []))
    for name, series in checked.items():
        expected = epoch if name in (*HISTORY_KEYS, *DERIVED_KEYS) else recorded
        if len(series) != expected:
            raise ValueError(
                f"{source}: history entry {name!r} has {len(series)} values, expected {expected}"
            )
    return checked
