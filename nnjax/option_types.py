"""The types of ``nnjax train``'s options: argparse ``type`` functions that parse and check.

Each raises ``argparse.ArgumentTypeError``, which argparse reports as a one-line usage error
naming the option; the checks themselves are those of ``nnjax._validation``.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import Any

from nnjax import _validation

__all__ = [
    "NONNEGATIVE_INT",
    "POSITIVE_INT",
    "SEED",
    "devices",
    "float_type",
    "hidden_sizes",
    "option_type",
]


def option_type(
    parse: Callable[[str], Any], expected: str, *validators: Callable[[str, Any], Any]
) -> Callable[[str], Any]:
    """An argparse ``type``: ``parse`` the text, then call each ``validator(text, value)``.

    Args:
      parse: text to value, raising ValueError (reported as ``expected {expected}, got TEXT``).
      expected: what the option takes, e.g. ``"a positive integer"``.
      *validators: checks of ``nnjax._validation``; their ValueError is the option's error.

    Returns:
      The type function, which raises ``argparse.ArgumentTypeError``.
    """

    def parsed(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        try:
            for validate in validators:
                validate(text, value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value

    return parsed


def float_type(
    low: float,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = False,
) -> Callable[[str], float]:
    """A float option in a range, representable in float32 (training would round it to 0 or inf).

    Args:
      low: the lowest value, as ``_validation.check_in_range`` takes it.
      high: the highest value; None: no bound.
      low_inclusive: whether ``low`` itself is allowed.
      high_inclusive: whether ``high`` itself is allowed.

    Returns:
      The type function (``option_type``).
    """
    in_range = functools.partial(
        _validation.check_in_range,
        low=low,
        high=high,
        low_inclusive=low_inclusive,
        high_inclusive=high_inclusive,
    )
    return option_type(float, "a number", in_range, _validation.check_float32)


POSITIVE_INT = option_type(int, "a positive integer", _validation.check_positive_int)
NONNEGATIVE_INT = option_type(
    int, "an integer >= 0", functools.partial(_validation.check_int, minimum=0)
)
SEED = option_type(int, "an integer >= 0", _validation.check_seed)
"""Integer options: >= 1, >= 0, and a seed ``0 .. 2**32-1``."""


def devices(text: str) -> int | str:
    """``--devices``: ``"all"`` or a positive number of devices.

    Args:
      text: the option's text.

    Returns:
      ``"all"`` or the number.
    """
    return "all" if text == "all" else POSITIVE_INT(text)


def hidden_sizes(text: str) -> list[int]:
    """``--hidden``: comma-separated positive layer sizes; ``none`` (or nothing) for none.

    Args:
      text: the option's text, e.g. ``"64,64"``.

    Returns:
      The sizes, e.g. ``[64, 64]``.
    """
    if text.strip() in ("", "none"):
        return []
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer sizes like 64,64, got {text!r}"
        ) from None
    try:
        return [_validation.check_positive_int("hidden size", n) for n in sizes]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"every hidden size must be positive, got {text!r}"
        ) from None
