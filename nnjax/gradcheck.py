r"""Proof that a hand-written gradient is right, three independent ways, in float64.

``check_gradient(f, manual_grad, params)`` compares ``manual_grad(params)`` with

1. reverse mode: ``jax.grad(f)(params)``, every element;
2. forward mode: ``jax.jvp`` of ``f`` along random directions, each supported on one leaf, against
   :math:`\langle \nabla f, v \rangle` computed from the manual gradient;
3. central finite differences :math:`(f(\theta + h e_i) - f(\theta - h e_i)) / 2h` with
   :math:`h = 10^{-5}\max(1, |\theta_i|)`, on every coordinate of each leaf, or on a random sample
   of ``max_coordinates`` coordinates of a leaf larger than that.

It runs in three steps: probes (the forward-mode directions and the finite-difference offsets,
drawn from ``key``), one jitted evaluation of the manual gradient and of the three witnesses, and
a comparison leaf by leaf into a ``LeafReport``.

Everything runs under ``jax.enable_x64(True)`` with the floating-point leaves of ``params`` cast to
float64, so rounding is far below the tolerances. Errors are relative to the size of the leaf's
gradient: :math:`\max_i |g_i - r_i| / \max(\|g\|_\infty, \|r\|_\infty)`. Each leaf is checked on its
own: a wrong or NaN derivative in one leaf fails that leaf only, and an error aggregated over
leaves is NaN if any leaf's is.

Kinks: where ``f`` is not differentiable (ReLU at 0, the BCE clip boundary) the derivative is a
convention and a finite difference straddling the kink measures neither side. Each finite-
difference coordinate also gets one-sided differences; where they disagree by more than
``kink_tolerance`` (relative) the coordinate is near a kink: it is left out of the finite-
difference error and counted in the report (``near_kink``), never passed silently. A leaf whose
coordinates are all near kinks has no finite-difference error (NaN) and fails.

A leaf passes when its three errors are within ``Tolerances`` (relative: 1e-10 for reverse and
forward mode, 1e-6 for finite differences by default). The library's own derivatives are checked
this way by ``nnjax.checks``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = [
    "DEFAULT_TOLERANCES",
    "GradCheckReport",
    "LeafReport",
    "Tolerances",
    "check_gradient",
    "tree_relative_error",
]

# Checks run small functions once: XLA's optimization passes would cost more compile time than
# they save at run time.
_jit_unoptimized = functools.partial(
    jax.jit, compiler_options={"xla_backend_optimization_level": 0}
)

_TINY = np.finfo(np.float64).tiny


class Tolerances(NamedTuple):
    """Largest relative errors a check accepts."""

    reverse: float = 1e-10
    forward: float = 1e-10
    finite_difference: float = 1e-6


DEFAULT_TOLERANCES = Tolerances()


class LeafReport(NamedTuple):
    """The check of one leaf of the gradient."""

    path: str
    reverse_error: float
    forward_error: float
    finite_difference_error: float
    checked: int
    near_kink: int
    passed: bool


def _max_with_nan(values: Any) -> float:
    """The largest of ``values``, NaN if any of them is NaN."""
    return float(np.max(np.asarray(list(values), dtype=np.float64)))


def _format_error(value: float | None) -> str:
    """An error as a table cell: ``1.0e-10``, or ``-`` where a row has none."""
    return "-" if value is None else f"{value:.1e}"


def _format_verdict(passed: bool) -> str:
    """A verdict as a table cell."""
    return "PASS" if passed else "FAIL"


# (title, alignment, least width) of the error columns, shared by every table.
_ERROR_COLUMNS = (("reverse", ">", 8), ("forward", ">", 8), ("fin-diff", ">", 8))


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
        columns = [("leaf", "<", 0), *_ERROR_COLUMNS, ("kinks", ">", 5), ("result", "<", 0)]
        rows = [
            (leaf.path, *_error_cells(leaf), str(leaf.near_kink), _format_verdict(leaf.passed))
            for leaf in self.leaves
        ]
        return _format_columns(columns, rows)


def _to_float64(tree: Any) -> Any:
    def cast(leaf):
        leaf = jnp.asarray(leaf)
        return leaf.astype(jnp.float64) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf

    return jax.tree.map(cast, tree)


def _check_structure(params: Any, grads: Any) -> None:
    p_paths = jax.tree_util.tree_flatten_with_path(params)[0]
    g_paths = jax.tree_util.tree_flatten_with_path(grads)[0]
    if jax.tree.structure(params) != jax.tree.structure(grads):
        raise ValueError(
            "manual gradient has tree structure "
            f"{jax.tree.structure(grads)}, expected that of params {jax.tree.structure(params)}"
        )
    for (path, p), (_, g) in zip(p_paths, g_paths, strict=True):
        if jnp.shape(p) != jnp.shape(g):
            raise ValueError(
                f"manual gradient{jax.tree_util.keystr(path)} has shape {jnp.shape(g)}, "
                f"expected {jnp.shape(p)}"
            )


class _Layout(NamedTuple):
    """Where the leaves lie in the flat parameter vector: leaf ``i`` is ``bounds[i]:bounds[i+1]``."""

    paths: list[str]
    sizes: list[int]
    bounds: np.ndarray


def _layout(params: Any) -> _Layout:
    """Each leaf's path, size and place in ``ravel_pytree(params)``, in ``jax.tree.leaves`` order."""
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    sizes = [int(np.size(leaf)) for leaf in jax.tree.leaves(params)]
    return _Layout(paths, sizes, np.cumsum([0, *sizes]))


class _Probes(NamedTuple):
    """Where ``f`` is evaluated besides ``theta``."""

    directions: jax.Array  # (leaves * num_directions, n), each supported on one leaf
    coords: np.ndarray  # the finite-difference coordinates, sorted within each leaf
    steps: jax.Array  # h of each coordinate
    offsets: jax.Array  # (coordinates, n): h e_i for each coordinate i


def _sample_coordinates(key: jax.Array, size: int, max_coordinates: int) -> np.ndarray:
    """Sorted indices from ``0..size-1``: all of them, or ``max_coordinates`` of them.

    All are taken if ``size <= max_coordinates``, else ``max_coordinates`` of them are drawn
    without replacement.
    """
    if size <= max_coordinates:
        return np.arange(size)
    return np.sort(np.asarray(jax.random.choice(key, size, (max_coordinates,), replace=False)))


def _directions(key: jax.Array, sizes: list[int], num_directions: int) -> jax.Array:
    """``num_directions`` standard normal directions per leaf, zero outside their leaf."""
    n = sum(sizes)
    segment = np.repeat(np.arange(len(sizes)), sizes)
    leaf_masks = jnp.asarray(segment[None, :] == np.arange(len(sizes))[:, None], jnp.float64)
    directions = jax.random.normal(key, (len(sizes), num_directions, n), jnp.float64)
    return (directions * leaf_masks[:, None, :]).reshape(-1, n)


def _make_probes(
    key: jax.Array,
    theta: jax.Array,
    layout: _Layout,
    num_directions: int,
    max_coordinates: int,
    step: float,
) -> _Probes:
    """The forward-mode directions and the finite-difference offsets, drawn from ``key``."""
    dir_key, coord_key = jax.random.split(key)
    leaf_keys = jax.random.split(coord_key, len(layout.sizes))
    coords = np.concatenate(
        [
            lo + _sample_coordinates(k, size, max_coordinates)
            for k, lo, size in zip(leaf_keys, layout.bounds[:-1], layout.sizes, strict=True)
        ]
    )
    h = step * jnp.maximum(1.0, jnp.abs(theta[coords]))
    offsets = jax.nn.one_hot(jnp.asarray(coords), theta.size, dtype=jnp.float64) * h[:, None]
    return _Probes(_directions(dir_key, layout.sizes, num_directions), coords, h, offsets)


def _evaluate(
    f: Callable[[Any], jax.Array],
    manual_grad: Callable[[Any], Any],
    unravel: Callable[[jax.Array], Any],
    theta: jax.Array,
    probes: _Probes,
) -> tuple[np.ndarray, ...]:
    """One jitted program computing the gradients, JVPs and values of ``f``, as NumPy arrays.

    These are the manual and reverse-mode gradients, the JVPs along the directions, and ``f`` at
    ``theta`` and at ``theta`` plus and minus each offset.
    """

    def f_flat(t):
        return f(unravel(t))

    @_jit_unoptimized
    def evaluate(theta, directions, offsets):
        g_manual, _ = ravel_pytree(_to_float64(manual_grad(unravel(theta))))
        g_reverse = jax.grad(f_flat)(theta)
        jvps = jax.vmap(lambda v: jax.jvp(f_flat, (theta,), (v,))[1])(directions)
        f0 = f_flat(theta)
        f_plus = jax.vmap(f_flat)(theta[None, :] + offsets)
        f_minus = jax.vmap(f_flat)(theta[None, :] - offsets)
        return g_manual, g_reverse, jvps, f0, f_plus, f_minus

    return jax.device_get(evaluate(theta, probes.directions, probes.offsets))


class _Witnesses(NamedTuple):
    """The manual gradient and what it is compared with, flat over all leaves, in NumPy."""

    manual: np.ndarray
    reverse: np.ndarray
    directions: np.ndarray  # (leaves, num_directions, n)
    jvps: np.ndarray  # (leaves, num_directions)
    coords: np.ndarray
    central: np.ndarray  # central differences at coords
    one_sided_gap: np.ndarray  # |forward - backward difference| at coords


def _witnesses(
    values: tuple[np.ndarray, ...], probes: _Probes, num_leaves: int, num_directions: int
) -> _Witnesses:
    """Central and one-sided differences from the evaluation; directions and JVPs by leaf."""
    g_manual, g_reverse, jvps, f0, f_plus, f_minus = values
    h = np.asarray(probes.steps)
    central = (f_plus - f_minus) / (2 * h)
    one_sided_gap = np.abs((f_plus - f0) / h - (f0 - f_minus) / h)
    shape = (num_leaves, num_directions)
    directions = np.asarray(probes.directions).reshape(*shape, g_manual.size)
    jvps = jvps.reshape(shape)
    return _Witnesses(g_manual, g_reverse, directions, jvps, probes.coords, central, one_sided_gap)


def _forward_error(directions: np.ndarray, manual: np.ndarray, jvps: np.ndarray) -> float:
    """Largest :math:`|\\mathrm{jvp} - \\langle g, v \\rangle| / \\max(\\|g\\| \\|v\\|, |\\mathrm{jvp}|)`.

    ``directions`` and ``manual`` are restricted to one leaf: the other leaves' entries (possibly
    NaN) do not enter, even multiplied by the directions' zeros there.
    """
    dots = directions @ manual
    scale = np.maximum(np.linalg.norm(manual) * np.linalg.norm(directions, axis=1), np.abs(jvps))
    return float(np.max(np.abs(jvps - dots) / np.maximum(scale, _TINY)))


def _finite_difference_error(
    w: _Witnesses, in_leaf: np.ndarray, scale: float, kink_tolerance: float
) -> tuple[float, int, int]:
    """The leaf's finite-difference error and the numbers of coordinates measured and left out.

    In order: the error (NaN if every coordinate is near a kink), the number of coordinates it is
    measured on and the number left out as near a kink.
    """
    kink = in_leaf & (w.one_sided_gap > kink_tolerance * max(scale, _TINY))
    ok = in_leaf & ~kink
    if not ok.any():
        return math.nan, 0, int(kink.sum())
    fd_diff = np.abs(w.central[ok] - w.manual[w.coords[ok]])
    fd_scale = max(scale, np.max(np.abs(w.central[ok])))
    return float(np.max(fd_diff) / max(fd_scale, _TINY)), int(ok.sum()), int(kink.sum())


def _leaf_report(
    i: int, layout: _Layout, w: _Witnesses, kink_tolerance: float, tolerances: Tolerances
) -> LeafReport:
    """The three errors of leaf ``i`` and its verdict."""
    lo, hi = layout.bounds[i], layout.bounds[i + 1]
    m, r = w.manual[lo:hi], w.reverse[lo:hi]
    scale = max(np.max(np.abs(m), initial=0.0), np.max(np.abs(r), initial=0.0))
    reverse_error = float(np.max(np.abs(m - r), initial=0.0) / max(scale, _TINY))
    forward_error = _forward_error(w.directions[i][:, lo:hi], m, w.jvps[i])
    in_leaf = (w.coords >= lo) & (w.coords < hi)
    fd_error, checked, near_kink = _finite_difference_error(w, in_leaf, scale, kink_tolerance)
    passed = (
        reverse_error <= tolerances.reverse
        and forward_error <= tolerances.forward
        and fd_error <= tolerances.finite_difference  # False for NaN
    )
    return LeafReport(
        layout.paths[i], reverse_error, forward_error, fd_error, checked, near_kink, passed
    )


def check_gradient(
    f: Callable[[Any], jax.Array],
    manual_grad: Callable[[Any], Any],
    params: Any,
    *,
    key: jax.Array | None = None,
    num_directions: int = 4,
    max_coordinates: int = 512,
    step: float = 1e-5,
    kink_tolerance: float = 1e-3,
    tolerances: Tolerances = DEFAULT_TOLERANCES,
) -> GradCheckReport:
    """Checks ``manual_grad`` against reverse mode, forward mode and finite differences of ``f``.

    Args:
      f: a scalar function of ``params`` (closing over any data it needs).
      manual_grad: the hand-written gradient, returning a pytree shaped like ``params``.
      params: the point to check at: any pytree of floating-point arrays.
      key: ``jax.random`` key for the forward-mode directions and the coordinate sample.
      num_directions: random directions per leaf for forward mode.
      max_coordinates: finite differences on every coordinate of a leaf with at most this many
        elements, else on this many coordinates of the leaf, sampled without replacement.
      step: relative finite-difference step.
      kink_tolerance: relative disagreement of one-sided differences that marks a kink.
      tolerances: the largest errors that pass.

    Returns:
      A ``GradCheckReport`` with one ``LeafReport`` per leaf, in ``jax.tree.leaves`` order.
    """
    key = jax.random.key(0) if key is None else key
    with jax.enable_x64(True):
        params = _to_float64(params)
        _check_structure(params, jax.eval_shape(manual_grad, params))
        theta, unravel = ravel_pytree(params)
        layout = _layout(params)
        probes = _make_probes(key, theta, layout, num_directions, max_coordinates, step)
        values = _evaluate(f, manual_grad, unravel, theta, probes)
        w = _witnesses(values, probes, len(layout.sizes), num_directions)
    reports = [
        _leaf_report(i, layout, w, kink_tolerance, tolerances) for i in range(len(layout.paths))
    ]
    return GradCheckReport(tuple(reports), tolerances)


def tree_relative_error(actual: Any, expected: Any) -> float:
    """Largest leafwise :math:`\\|a - e\\|_\\infty / \\|e\\|_\\infty` over two matching pytrees.

    NaN if any leaf's is NaN. Computed in NumPy at the arrays' own precision, so it needs no
    compilation and holds float64 leaves whether or not x64 is enabled.
    """

    def leaf_error(a: Any, e: Any) -> float:
        a, e = np.asarray(a), np.asarray(e)
        scale = np.maximum(np.max(np.abs(e)), jnp.finfo(e.dtype).tiny)
        return float(np.max(np.abs(a - e)) / scale)

    leaves = zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True)
    return _max_with_nan(leaf_error(a, e) for a, e in leaves)
