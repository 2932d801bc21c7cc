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

Float32 inside ``f``: its rounding noise, :math:`\epsilon_{32}|f|/h`, would pass for kinks. A nudge
:math:`\delta = 2^{-30}\theta \odot r` of each leaf, far below float32's resolution, must change
``f`` by :math:`\langle \nabla f, \delta \rangle`; where it does not (or ``f`` returns float32),
the leaf is reported as computed in float32, with no coordinate left out as a kink.

A leaf passes when its three errors are within ``Tolerances`` (relative: 1e-10 for reverse and
forward mode, 1e-6 for finite differences by default). ``str(report)`` shows the errors beside the
tolerances, each leaf's worst coordinate and a verdict naming the witnesses that failed. The
library's own derivatives are checked this way by ``nnjax.checks``.

``check_vjp(f, manual_vjp, x)`` checks a non-scalar ``f``: ``manual_vjp(x, u)`` against the
gradient of :math:`\langle u, f(x) \rangle`, :math:`J_f^\top u`, for a standard normal cotangent
:math:`u`. ``check_elementwise(f, df)`` checks an elementwise derivative, :math:`J_f^\top u = u
\odot f'(x)`, in one call: ``check_elementwise(softplus, softplus_derivative)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from nnjax import _gradcheck_report
from nnjax._gradcheck_report import (
    DEFAULT_TOLERANCES,
    Coordinate,
    GradCheckReport,
    LeafReport,
    Tolerances,
    _max_with_nan,
)
from nnjax._validation import check_same_shape, check_tree_like

__all__ = [
    "DEFAULT_TOLERANCES",
    "Coordinate",
    "GradCheckReport",
    "LeafReport",
    "Tolerances",
    "check_elementwise",
    "check_gradient",
    "check_vjp",
    "tree_relative_error",
]

# Checks run small functions once: XLA's optimization passes would cost more compile time than
# they save at run time.
_jit_unoptimized = functools.partial(
    jax.jit, compiler_options={"xla_backend_optimization_level": 0}
)

# The table helpers ``nnjax.checks`` shares.
_ERROR_COLUMNS = _gradcheck_report._ERROR_COLUMNS
_error_cells = _gradcheck_report._error_cells
_format_columns = _gradcheck_report._format_columns
_format_error = _gradcheck_report._format_error
_format_verdict = _gradcheck_report._format_verdict

_TINY = np.finfo(np.float64).tiny
_EPS = np.finfo(np.float64).eps

# Relative size of the nudge that tells float32 arithmetic inside f: far below float32's
# resolution (6e-8), far above float64's (1.1e-16).
_NUDGE = 2.0**-30


def _to_float64(tree: Any) -> Any:
    def cast(leaf):
        leaf = jnp.asarray(leaf)
        return leaf.astype(jnp.float64) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf

    return jax.tree.map(cast, tree)


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


class _Probes(NamedTuple):
    """Where ``f`` is evaluated besides ``theta``."""

    directions: jax.Array  # (leaves * num_directions, n), each supported on one leaf
    coords: np.ndarray  # the finite-difference coordinates, sorted within each leaf
    steps: jax.Array  # h of each coordinate
    offsets: jax.Array  # (coordinates, n): h e_i for each coordinate i
    nudges: jax.Array  # (leaves, n): _NUDGE theta_i r_i on one leaf, r its first direction


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
    directions = _directions(dir_key, layout.sizes, num_directions)
    nudges = _NUDGE * theta[None, :] * directions[::num_directions]
    return _Probes(directions, coords, h, offsets, nudges)


def _evaluate(
    f: Callable[[Any], jax.Array],
    manual_grad: Callable[[Any], Any],
    unravel: Callable[[jax.Array], Any],
    theta: jax.Array,
    probes: _Probes,
) -> tuple[np.ndarray, ...]:
    """One jitted program computing the gradients, JVPs and values of ``f``, as NumPy arrays.

    These are the manual and reverse-mode gradients, the JVPs along the directions, and ``f`` at
    ``theta``, at ``theta`` plus and minus each offset and at ``theta`` plus each nudge.
    """

    def f_flat(t):
        return f(unravel(t))

    @_jit_unoptimized
    def evaluate(theta, directions, offsets, nudges):
        g_manual, _ = ravel_pytree(_to_float64(manual_grad(unravel(theta))))
        g_reverse = jax.grad(f_flat)(theta)
        jvps = jax.vmap(lambda v: jax.jvp(f_flat, (theta,), (v,))[1])(directions)
        f0 = f_flat(theta)
        f_plus = jax.vmap(f_flat)(theta[None, :] + offsets)
        f_minus = jax.vmap(f_flat)(theta[None, :] - offsets)
        f_nudged = jax.vmap(f_flat)(theta[None, :] + nudges)
        return g_manual, g_reverse, jvps, f0, f_plus, f_minus, f_nudged

    return jax.device_get(evaluate(theta, probes.directions, probes.offsets, probes.nudges))


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


def _witnesses(
    values: tuple[np.ndarray, ...], probes: _Probes, num_leaves: int, num_directions: int
) -> _Witnesses:
    """Central and one-sided differences from the evaluation; directions and JVPs by leaf."""
    g_manual, g_reverse, jvps, f0, f_plus, f_minus, f_nudged = values
    h = np.asarray(probes.steps)
    central = (f_plus - f_minus) / (2 * h)
    one_sided_gap = np.abs((f_plus - f0) / h - (f0 - f_minus) / h)
    shape = (num_leaves, num_directions)
    directions = np.asarray(probes.directions).reshape(*shape, g_manual.size)
    jvps = jvps.reshape(shape)
    nudged_change = f_nudged.astype(np.float64) - np.float64(f0)
    w = (g_manual, g_reverse, directions, jvps, probes.coords, central, one_sided_gap)
    return _Witnesses(*w, np.asarray(probes.nudges), nudged_change, f0)


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
    name: str = "params",
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
      name: the leaf's name in the report where ``params`` is a bare array.

    Returns:
      A ``GradCheckReport`` with one ``LeafReport`` per leaf, in ``jax.tree.leaves`` order.
    """
    key = jax.random.key(0) if key is None else key
    with jax.enable_x64(True):
        params = _to_float64(params)
        check_tree_like("manual gradient", jax.eval_shape(manual_grad, params), "params", params)
        theta, unravel = ravel_pytree(params)
        layout = _layout(params, name)
        probes = _make_probes(key, theta, layout, num_directions, max_coordinates, step)
        values = _evaluate(f, manual_grad, unravel, theta, probes)
        w = _witnesses(values, probes, len(layout.sizes), num_directions)
    reports = [
        _leaf_report(i, layout, w, kink_tolerance, tolerances) for i in range(len(layout.paths))
    ]
    return GradCheckReport(tuple(reports), tolerances)


def _normal_like(key: jax.Array, tree: Any) -> Any:
    """Standard normal float64 draws shaped like each leaf of ``tree``, one key per leaf."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    draws = [
        jax.random.normal(k, jnp.shape(leaf), jnp.float64)
        for k, leaf in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, draws)


def check_vjp(
    f: Callable[[Any], Any],
    manual_vjp: Callable[[Any, Any], Any],
    x: Any,
    *,
    key: jax.Array | None = None,
    cotangent: Any = None,
    **check_kwargs: Any,
) -> GradCheckReport:
    r"""Checks a hand-written vector-Jacobian product of a non-scalar ``f``.

    With a cotangent :math:`u` shaped like ``f(x)``, ``manual_vjp(x, u)`` must be
    :math:`J_f(x)^\top u = \nabla_x \langle u, f(x) \rangle`: ``check_gradient`` compares it
    with reverse mode (``jax.vjp``), forward mode and finite differences of the scalar
    :math:`\langle u, f(x) \rangle`. The default :math:`u` is standard normal: with
    :math:`u = \mathbf{1}` an output of constant sum (a mean subtraction, a softmax) has
    :math:`J_f^\top \mathbf{1} = 0`, and any ``manual_vjp`` vanishing there would pass.

    Args:
      f: a function of ``x`` returning an array or a pytree of arrays.
      manual_vjp: the hand-written VJP, ``manual_vjp(x, u)`` shaped like ``x``.
      x: the point to check at: an array or any pytree of floating-point arrays.
      key: ``jax.random`` key for the cotangent and the check.
      cotangent: :math:`u`, shaped like ``f(x)``; drawn from ``key`` if None.
      **check_kwargs: passed on to ``check_gradient``.

    Returns:
      The ``GradCheckReport`` of :math:`\nabla_x \langle u, f(x) \rangle`, a bare ``x`` named
      ``x``.
    """
    key = jax.random.key(0) if key is None else key
    cotangent_key, check_key = jax.random.split(key)
    with jax.enable_x64(True):
        x = _to_float64(x)
        if cotangent is None:
            cotangent = _normal_like(cotangent_key, jax.eval_shape(f, x))
        u = _to_float64(cotangent)

    def contraction(x):
        pairs = zip(jax.tree.leaves(u), jax.tree.leaves(f(x)), strict=True)
        return sum(jnp.vdot(a, jnp.asarray(b, jnp.float64)) for a, b in pairs)

    check_kwargs = {"name": "x", **check_kwargs}
    return check_gradient(contraction, lambda x: manual_vjp(x, u), x, key=check_key, **check_kwargs)


def check_elementwise(
    f: Callable[[jax.Array], jax.Array],
    df: Callable[[jax.Array], jax.Array],
    x: Any = None,
    *,
    key: jax.Array | None = None,
    **check_kwargs: Any,
) -> GradCheckReport:
    r"""Checks the hand-written derivative ``df`` of an elementwise function ``f`` in one call.

    An elementwise :math:`f` has the Jacobian :math:`\mathrm{diag}(f'(x))`, so its VJP is
    :math:`u \odot f'(x)`: ``check_vjp(f, lambda x, u: u * df(x), x)`` with a standard normal
    :math:`u`. The default ``x`` is a float64 grid of 64 points, :math:`\pm` 32 magnitudes evenly
    spaced in :math:`[0.1, 5]`, away from the kink many activations have at 0.

    Args:
      f: the elementwise function, e.g. ``softplus``.
      df: its derivative, e.g. ``softplus_derivative``, shaped like ``x``.
      x: the points to check at; the default grid if None.
      key: ``jax.random`` key for the cotangent and the check.
      **check_kwargs: passed on to ``check_gradient``.

    Returns:
      The ``GradCheckReport`` of ``x``, named ``x``.
    """
    with jax.enable_x64(True):
        if x is None:
            magnitudes = jnp.linspace(0.1, 5.0, 32, dtype=jnp.float64)
            x = jnp.concatenate([-magnitudes[::-1], magnitudes])
        x = _to_float64(x)
        check_same_shape("f(x)", jax.eval_shape(f, x), "x", x)

    def manual_vjp(x, u):
        return u * _to_float64(df(x))

    return check_vjp(f, manual_vjp, x, key=key, **check_kwargs)


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
