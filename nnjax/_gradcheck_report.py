"""A gradient check's comparison leaf by leaf, its report, and the tables shared with ``checks``.

``nnjax.gradcheck`` evaluates the witnesses (``_Witnesses``) and re-exports the report types;
``_leaf_report`` compares them with the manual gradient on one leaf. ``str(report)`` of a
``GradCheckReport`` is a table of each leaf's errors with the tolerances beneath, the worst
coordinate of each leaf (the manual derivative beside the reverse-mode gradient, and beside the
central difference where finite differences were taken), a note per leaf near a kink or computing
in float32, and a verdict line naming the witnesses that failed. ``CheckRow`` and
``format_table`` make the table of ``nnjax check``; ``nnjax.checks`` re-exports them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DEFAULT_TOLERANCES",
    "CheckRow",
    "Coordinate",
    "GradCheckReport",
    "LeafReport",
    "Tolerances",
    "format_table",
]


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


_TINY = np.finfo(np.float64).tiny
_EPS = np.finfo(np.float64).eps


class _Layout(NamedTuple):
    """Where the leaves lie in the flat parameter vector: leaf ``i`` is ``bounds[i]:bounds[i+1]``."""

    paths: list[str]
    shapes: list[tuple[int, ...]]
    sizes: list[int]
    bounds: np.ndarray


def _layout(params: Any, root: str) -> _Layout:
    """Each leaf's path, shape, size and place in ``ravel_pytree(params)``, in leaves order.

    A bare array (a leaf with an empty path) is named ``root``.
    """
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    paths = [jax.tree_util.keystr(p) or root for p, _ in flat]
    shapes = [tuple(np.shape(leaf)) for _, leaf in flat]
    sizes = [math.prod(shape) for shape in shapes]
    return _Layout(paths, shapes, sizes, np.cumsum([0, *sizes]))


class _Witnesses(NamedTuple):
    """The manual gradient and what it is compared with, flat over all leaves, in NumPy."""

    manual: np.ndarray
    reverse: np.ndarray
    directions: np.ndarray  # (leaves, num_directions, n)
    jvps: np.ndarray  # (leaves, num_directions)
    coords: np.ndarray
    central: np.ndarray  # central differences at coords
    one_sided_gap: np.ndarray  # |forward - backward difference| at coords
    nudges: np.ndarray  # (leaves, n)
    nudged_change: np.ndarray  # (leaves,): f(theta + nudge) - f(theta)
    f0: np.ndarray  # f(theta), in f's own dtype


def _forward_error(directions: np.ndarray, manual: np.ndarray, jvps: np.ndarray) -> float:
    """Largest :math:`|\\mathrm{jvp} - \\langle g, v \\rangle| / \\max(\\|g\\| \\|v\\|, |\\mathrm{jvp}|)`.

    ``directions`` and ``manual`` are restricted to one leaf: the other leaves' entries (possibly
    NaN) do not enter, even multiplied by the directions' zeros there.
    """
    dots = directions @ manual
    scale = np.maximum(np.linalg.norm(manual) * np.linalg.norm(directions, axis=1), np.abs(jvps))
    return float(np.max(np.abs(jvps - dots) / np.maximum(scale, _TINY)))


def _coordinate(layout: _Layout, i: int, flat: int, manual: float, reference: float) -> Coordinate:
    """Coordinate ``flat`` of the flat parameter vector, indexed within leaf ``i``."""
    index = np.unravel_index(flat - layout.bounds[i], layout.shapes[i])
    return Coordinate(tuple(int(j) for j in index), float(manual), float(reference))


def _finite_difference_error(
    w: _Witnesses, in_leaf: np.ndarray, scale: float, kink_tolerance: float
) -> tuple[float, int, int, int | None]:
    """The leaf's finite-difference error, the coordinates measured and left out, and the worst.

    In order: the error (NaN if every coordinate is near a kink), the number of coordinates it is
    measured on, the number left out as near a kink, and the position in ``w.coords`` of the
    coordinate furthest from its central difference (None if none is measured).
    """
    kink = in_leaf & (w.one_sided_gap > kink_tolerance * max(scale, _TINY))
    ok = in_leaf & ~kink
    if not ok.any():
        return math.nan, 0, int(kink.sum()), None
    fd_diff = np.abs(w.central[ok] - w.manual[w.coords[ok]])
    fd_scale = max(scale, np.max(np.abs(w.central[ok])))
    worst = int(np.flatnonzero(ok)[_argmax_nan_first(fd_diff)])
    error = float(np.max(fd_diff) / max(fd_scale, _TINY))
    return error, int(ok.sum()), int(kink.sum()), worst


def _argmax_nan_first(values: np.ndarray) -> int:
    """The position of the first NaN in ``values``, else of its largest element."""
    return int(np.argmax(np.where(np.isnan(values), np.inf, values)))


def _computes_in_float32(w: _Witnesses, i: int, lo: int, hi: int) -> bool:
    r"""Whether ``f`` has float32 resolution in leaf ``i``.

    True if ``f`` returns a narrower type than float64, or if nudging the leaf by
    :math:`\delta = 2^{-30}\,\theta \odot r` (below float32's resolution) changes ``f`` by
    other than :math:`\langle \nabla f, \delta \rangle` (within 25%), where that change is at
    least :math:`10^4` float64 roundings of :math:`|f(\theta)|`.
    """
    if jnp.finfo(w.f0.dtype).bits < 64:
        return True
    expected = float(w.nudges[i, lo:hi] @ w.reverse[lo:hi])
    resolvable = abs(expected) > 1e4 * _EPS * abs(float(w.f0))
    return resolvable and abs(float(w.nudged_change[i]) - expected) > 0.25 * abs(expected)


def _leaf_report(
    i: int, layout: _Layout, w: _Witnesses, kink_tolerance: float, tolerances: Tolerances
) -> LeafReport:
    """The three errors of leaf ``i``, its worst coordinates and its verdict.

    Where ``f`` computes in float32, rounding noise would pass for kinks: none is left out.
    """
    lo, hi = layout.bounds[i], layout.bounds[i + 1]
    m, r = w.manual[lo:hi], w.reverse[lo:hi]
    scale = max(np.max(np.abs(m), initial=0.0), np.max(np.abs(r), initial=0.0))
    reverse_error = float(np.max(np.abs(m - r), initial=0.0) / max(scale, _TINY))
    forward_error = _forward_error(w.directions[i][:, lo:hi], m, w.jvps[i])
    in_leaf = (w.coords >= lo) & (w.coords < hi)
    float32 = _computes_in_float32(w, i, lo, hi)
    fd_error, checked, near_kink, fd_worst = _finite_difference_error(
        w, in_leaf, scale, math.inf if float32 else kink_tolerance
    )
    passed = (
        reverse_error <= tolerances.reverse
        and forward_error <= tolerances.forward
        and fd_error <= tolerances.finite_difference  # False for NaN
    )
    worst = None
    if hi > lo:
        j = lo + _argmax_nan_first(np.abs(m - r))
        worst = _coordinate(layout, i, j, w.manual[j], w.reverse[j])
    worst_fd = None
    if fd_worst is not None:
        j = w.coords[fd_worst]
        worst_fd = _coordinate(layout, i, j, w.manual[j], w.central[fd_worst])
    errors = (reverse_error, forward_error, fd_error)
    return LeafReport(
        layout.paths[i], *errors, checked, near_kink, passed, worst, worst_fd, float32
    )


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


class CheckRow(NamedTuple):
    """One row of the ``nnjax.checks.run_checks`` table. Errors absent for a row's kind are None."""

    name: str
    reverse_error: float | None
    forward_error: float | None
    finite_difference_error: float | None
    reference_error: float | None
    tolerances: str
    near_kink: int
    passed: bool


def _row_from_report(name: str, report: GradCheckReport) -> CheckRow:
    """The row of a gradient check: its errors, tolerances, kinks and verdict."""
    tol = report.tolerances
    return CheckRow(
        name,
        report.reverse_error,
        report.forward_error,
        report.finite_difference_error,
        None,
        f"{tol.reverse:.0e}/{tol.forward:.0e}/{tol.finite_difference:.0e}",
        report.near_kink,
        report.passed,
    )


def _check_columns(names: Sequence[str]) -> list[tuple[str, str, int]]:
    """The check table's columns, the first as wide as the longest of ``names``."""
    return [
        ("check", "<", max(map(len, names), default=0)),
        *_ERROR_COLUMNS,
        ("optax", ">", 8),
        ("tolerance", "<", 17),
        ("kinks", ">", 5),
        ("result", "<", 0),
    ]


def _check_cells(row: CheckRow) -> tuple[str, ...]:
    """A row as the cells of its line."""
    return (
        row.name,
        *_error_cells(row),
        _format_error(row.reference_error),
        row.tolerances,
        str(row.near_kink),
        _format_verdict(row.passed),
    )


def _check_summary(rows: Sequence[CheckRow]) -> str:
    """The line under the check table: how many rows passed and failed."""
    failed = sum(not row.passed for row in rows)
    return (
        f"{len(rows) - failed} passed, {failed} failed (float64; tolerance = "
        "reverse/forward/fin-diff, relative)"
    )


def format_table(rows: Sequence[CheckRow]) -> str:
    """Renders ``nnjax.checks.run_checks`` rows as a fixed-width table with a summary line."""
    table = _format_columns(
        _check_columns([row.name for row in rows]), [_check_cells(row) for row in rows]
    )
    return f"{table}\n{_check_summary(rows)}"
