r"""The report of a gradient check, and the fixed-width tables it shares with ``nnjax.checks``.

``nnjax.gradcheck`` re-exports the report types. ``str(report)`` of a ``GradCheckReport`` is a
table of each leaf's errors with the tolerances beneath, the worst coordinate of each leaf (the
manual derivative beside the reverse-mode gradient, and beside the central difference where finite
differences were taken), a note per leaf near a kink or computing in float32, and a verdict line
naming the witnesses that failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["DEFAULT_TOLERANCES", "Coordinate", "GradCheckReport", "LeafReport", "Tolerances"]


class Tolerances(NamedTuple):
    """Largest relative errors a check accepts."""

    reverse: float = 1e-10
    forward: float = 1e-10
    finite_difference: float = 1e-6


DEFAULT_TOLERANCES = Tolerances()


class Coordinate(NamedTuple):
    """One coordinate of a leaf: its index within the leaf, the manual and the reference value."""

    index: tuple[int, ...]
    manual: float
    reference: float


class LeafReport(NamedTuple):
    """The check of one leaf of the gradient.

    ``worst`` is the coordinate where the manual gradient is furthest from reverse mode (a NaN
    first), ``worst_finite_difference`` the one furthest from its central difference (None if no
    coordinate was measured); ``float32`` is True where ``f`` has float32 resolution in the leaf.
    """

    path: str
    reverse_error: float
    forward_error: float
    finite_difference_error: float
    checked: int
    near_kink: int
    passed: bool
    worst: Coordinate | None = None
    worst_finite_difference: Coordinate | None = None
    float32: bool = False


def _max_with_nan(values: Any) -> float:
    """The largest of ``values``, NaN if any of them is NaN."""
    return float(np.max(np.asarray(list(values), dtype=np.float64)))


class GradCheckReport(NamedTuple):
    """Per-leaf results of ``check_gradient``."""

    leaves: tuple[LeafReport, ...]
    tolerances: Tolerances

    @property
    def passed(self) -> bool:
        return all(leaf.passed for leaf in self.leaves)

    @property
    def reverse_error(self) -> float:
        """The largest reverse-mode error over leaves; NaN if any leaf's is NaN."""
        return _max_with_nan(leaf.reverse_error for leaf in self.leaves)

    @property
    def forward_error(self) -> float:
        """The largest forward-mode error over leaves; NaN if any leaf's is NaN."""
        return _max_with_nan(leaf.forward_error for leaf in self.leaves)

    @property
    def finite_difference_error(self) -> float:
        """The largest finite-difference error over leaves.

        NaN if any leaf's is NaN (a NaN derivative, or no coordinate away from a kink).
        """
        return _max_with_nan(leaf.finite_difference_error for leaf in self.leaves)

    @property
    def near_kink(self) -> int:
        return sum(leaf.near_kink for leaf in self.leaves)

    def __str__(self) -> str:
        """The errors with their tolerances, each leaf's worst coordinate, notes and a verdict."""
        return _render_report(self)


# (title, alignment, least width) of the error columns, shared by every table.
_ERROR_COLUMNS = (("reverse", ">", 8), ("forward", ">", 8), ("fin-diff", ">", 8))

# The witness of each error, in the order of the error columns.
_WITNESSES = (
    ("reverse_error", "reverse", "reverse mode"),
    ("forward_error", "forward", "forward mode"),
    ("finite_difference_error", "finite_difference", "finite differences"),
)

_FLOAT32_NOTE = "f computes in float32: use float64 inside f for a tight check"


def _format_error(value: float | None) -> str:
    """An error as a table cell: ``1.0e-10``, or ``-`` where a row has none."""
    return "-" if value is None else f"{value:.1e}"


def _format_verdict(passed: bool) -> str:
    """A verdict as a table cell."""
    return "PASS" if passed else "FAIL"


def _error_cells(result: Any) -> tuple[str, str, str]:
    """The reverse, forward and finite-difference errors of a leaf, a report or a table row."""
    errors = (result.reverse_error, result.forward_error, result.finite_difference_error)
    return tuple(_format_error(value) for value in errors)


def _format_columns(columns: Sequence[tuple[str, str, int]], rows: Sequence[Sequence[str]]) -> str:
    """A fixed-width table: the titles, a rule, then one line per row, columns two spaces apart.

    Args:
      columns: ``(title, alignment, least width)`` of each column, alignment ``"<"`` or ``">"``;
        a column is as wide as its least width, its title and its widest cell.
      rows: the cells of each row, one per column.

    Returns:
      The table's lines joined by newlines, without trailing spaces.
    """
    widths = [
        max(least, len(title), *(len(row[j]) for row in rows))
        for j, (title, _, least) in enumerate(columns)
    ]

    def line(values: Sequence[str]) -> str:
        parts = zip(values, columns, widths, strict=True)
        return "  ".join(f"{v:{align}{w}}" for v, (_, align, _), w in parts).rstrip()

    header = line([title for title, _, _ in columns])
    return "\n".join([header, "-" * len(header), *(line(row) for row in rows)])


def _failed_witnesses(leaf: Any, tolerances: Any) -> list[str]:
    """The witnesses whose error exceeds its tolerance (or is NaN) on ``leaf``."""
    return [
        name
        for attribute, tolerance, name in _WITNESSES
        if not getattr(leaf, attribute) <= getattr(tolerances, tolerance)
    ]


def _error_table(report: Any) -> str:
    """One row per leaf (errors, kinks, result), then the tolerances."""
    columns = [("leaf", "<", 0), *_ERROR_COLUMNS, ("kinks", ">", 5), ("result", "<", 0)]
    rows = [
        (
            leaf.path,
            *_error_cells(leaf),
            "float32" if leaf.float32 else str(leaf.near_kink),
            _format_verdict(leaf.passed),
        )
        for leaf in report.leaves
    ]
    tolerances = [f"{getattr(report.tolerances, name):.0e}" for _, name, _ in _WITNESSES]
    return _format_columns(columns, [*rows, ("tolerance", *tolerances, "", "")])


def _coordinate_name(path: str, index: tuple[int, ...]) -> str:
    """A coordinate as ``path[i, j]``; a scalar leaf as its path."""
    return f"{path}[{', '.join(map(str, index))}]" if index else path


def _worst_table(report: Any) -> str:
    """The worst coordinate of each leaf under each witness that compares coordinates."""
    columns = [("worst coordinate", "<", 0), ("against", "<", 0)]
    columns += [("manual", ">", 0), ("reference", ">", 0)]
    rows = []
    for leaf in report.leaves:
        pairs = (("reverse mode", leaf.worst), ("central difference", leaf.worst_finite_difference))
        rows += [
            (
                _coordinate_name(leaf.path, c.index),
                against,
                f"{c.manual:.12g}",
                f"{c.reference:.12g}",
            )
            for against, c in pairs
            if c is not None
        ]
    return _format_columns(columns, rows)


def _notes(report: Any) -> list[str]:
    """A line per leaf computed in float32 or with coordinates near a kink."""
    notes = []
    for leaf in report.leaves:
        if leaf.float32:
            notes.append(f"{leaf.path}: {_FLOAT32_NOTE}")
        elif leaf.near_kink and not leaf.checked:
            notes.append(f"{leaf.path}: every coordinate is near a kink: no finite differences")
        elif leaf.near_kink:
            notes.append(
                f"{leaf.path}: {leaf.near_kink} coordinate(s) near a kink, left out of the "
                "finite differences"
            )
    return notes


def _verdict(report: Any) -> str:
    """``PASS``, or ``FAIL`` and the witnesses each failing leaf fails."""
    if report.passed:
        return f"PASS: {len(report.leaves)} leaf(s) within tolerance"
    failures = [
        f"{leaf.path} ({', '.join(_failed_witnesses(leaf, report.tolerances))})"
        for leaf in report.leaves
        if not leaf.passed
    ]
    return f"FAIL: {'; '.join(failures)}"


def _render_report(report: Any) -> str:
    """The text of a ``GradCheckReport``: errors and tolerances, worst coordinates, notes, verdict.

    Args:
      report: a ``nnjax.gradcheck.GradCheckReport``.

    Returns:
      The lines joined by newlines, the verdict last.
    """
    parts = [_error_table(report)]
    if any(leaf.worst is not None for leaf in report.leaves):
        parts.append(_worst_table(report))
    return "\n\n".join([*parts, "\n".join([*_notes(report), _verdict(report)])])
