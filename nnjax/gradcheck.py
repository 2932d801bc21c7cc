r"""Proof that a hand-written gradient is right, three independent ways, in float64.

``check_gradient(f, manual_grad, params)`` compares ``manual_grad(params)`` with

1. reverse mode: ``jax.grad(f)(params)``, every element;
2. forward mode: ``jax.jvp`` of ``f`` along random directions, each supported on one leaf, against
   :math:`\langle \nabla f, v \rangle` computed from the manual gradient;
3. central finite differences :math:`(f(\theta + h e_i) - f(\theta - h e_i)) / 2h` with
   :math:`h = 10^{-5}\max(1, |\theta_i|)`, on every coordinate of each leaf, or on a random sample
   of ``max_coordinates`` coordinates of a leaf larger than that.

It runs in three steps: probes (the forward-mode directions and the points of the finite
differences, drawn from ``key``), one compiled evaluation of the manual gradient and of the three
witnesses, and a comparison leaf by leaf into a ``LeafReport``. Both programs are compiled
cheaply, XLA's optimizations off, once per shape (the evaluation once per ``f`` and
``manual_grad`` too). The data ``f`` needs besides ``params`` can be passed as ``args``: traced,
not baked into the program as constants, so that a check of the same functions at another point
reuses the program.

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
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from nnjax._gradcheck_report import (
    DEFAULT_TOLERANCES,
    Coordinate,
    GradCheckReport,
    LeafReport,
    Tolerances,
    _layout,
    _leaf_report,
    _max_with_nan,
    _Witnesses,
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

_COMPILER_OPTIONS = {
    "xla_backend_optimization_level": 0,
    "xla_cpu_use_fusion_emitters": False,
    "xla_cpu_parallel_codegen_split_count": 1,
}
"""For small programs run once: XLA's optimization passes, its newer CPU fusion emitters and its
parallel code generation cost more compile time than they save."""


@functools.cache
def _compiler_options() -> dict[str, Any]:
    """``_COMPILER_OPTIONS``, or only the optimization level if this XLA rejects one of them."""
    try:
        jax.jit(lambda: 0, compiler_options=_COMPILER_OPTIONS).lower().compile()
    except jax.errors.JaxRuntimeError:
        return {"xla_backend_optimization_level": 0}
    return _COMPILER_OPTIONS


def _jit_unoptimized(fun: Callable, **jit_kwargs: Any) -> Callable:
    """``jax.jit(fun, **jit_kwargs)`` compiled with ``_compiler_options()``, chosen on first use."""
    jitted = functools.cache(
        lambda: jax.jit(fun, compiler_options=_compiler_options(), **jit_kwargs)
    )

    @functools.wraps(fun)
    def call(*args, **kwargs):
        return jitted()(*args, **kwargs)

    return call


def _memoized(factory: Callable, *fns: Callable) -> Any:
    """``factory(*fns)`` from ``factory``'s cache, or built afresh if a function is unhashable."""
    if all(isinstance(fn, Hashable) for fn in fns):
        return factory(*fns)
    return factory.__wrapped__(*fns)


# Relative size of the nudge that tells float32 arithmetic inside f: far below float32's
# resolution (6e-8), far above float64's (1.1e-16).
_NUDGE = 2.0**-30


def _to_float64(tree: Any) -> Any:
    def cast(leaf):
        leaf = jnp.asarray(leaf)
        return leaf.astype(jnp.float64) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf

    return jax.tree.map(cast, tree)


class _Probes(NamedTuple):
    """Where ``f`` is evaluated, and along which directions."""

    directions: jax.Array  # (leaves * num_directions, n), each supported on one leaf
    coords: jax.Array  # the finite-difference coordinates, sorted within each leaf
    steps: jax.Array  # h of each coordinate
    nudges: jax.Array  # (leaves, n): _NUDGE theta_i r_i on one leaf, r its first direction
    points: jax.Array  # theta, theta + h e_i and theta - h e_i per coordinate, theta + each nudge


def _sample_coordinates(key: jax.Array, size: int, max_coordinates: int) -> jax.Array:
    """Sorted indices from ``0..size-1``: all of them, or ``max_coordinates`` of them.

    All are taken if ``size <= max_coordinates``, else ``max_coordinates`` of them are drawn
    without replacement.
    """
    if size <= max_coordinates:
        return jnp.arange(size)
    return jnp.sort(jax.random.choice(key, size, (max_coordinates,), replace=False))


def _directions(key: jax.Array, sizes: list[int], num_directions: int) -> jax.Array:
    """``num_directions`` standard normal directions per leaf, zero outside their leaf."""
    n = sum(sizes)
    segment = np.repeat(np.arange(len(sizes)), sizes)
    leaf_masks = jnp.asarray(segment[None, :] == np.arange(len(sizes))[:, None], jnp.float64)
    directions = jax.random.normal(key, (len(sizes), num_directions, n), jnp.float64)
    return (directions * leaf_masks[:, None, :]).reshape(-1, n)


@functools.partial(_jit_unoptimized, static_argnums=(2, 3, 4))
def _make_probes(
    key: jax.Array, params: Any, num_directions: int, max_coordinates: int, step: float
) -> _Probes:
    """The forward-mode directions and the points of the finite differences, drawn from ``key``.

    One compiled program per shape of ``params``, shared by every check at that shape.
    """
    theta, _ = ravel_pytree(params)
    sizes = [math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(params)]
    dir_key, coord_key = jax.random.split(key)
    leaf_keys = jax.random.split(coord_key, len(sizes))
    starts = np.cumsum([0, *sizes[:-1]])
    coords = jnp.concatenate(
        [
            lo + _sample_coordinates(k, size, max_coordinates)
            for k, lo, size in zip(leaf_keys, starts, sizes, strict=True)
        ]
    )
    h = step * jnp.maximum(1.0, jnp.abs(theta[coords]))
    offsets = jax.nn.one_hot(coords, theta.size, dtype=jnp.float64) * h[:, None]
    directions = _directions(dir_key, sizes, num_directions)
    nudges = _NUDGE * theta[None, :] * directions[::num_directions]
    shifts = jnp.concatenate([jnp.zeros_like(theta)[None, :], offsets, -offsets, nudges])
    return _Probes(directions, coords, h, nudges, theta[None, :] + shifts)


@functools.lru_cache(maxsize=64)
def _evaluator(f: Callable[..., jax.Array], manual_grad: Callable[..., Any]) -> Callable:
    """The compiled evaluation of ``f`` and ``manual_grad``: one program per shape of the inputs.

    ``evaluate(params, args, directions, points)`` returns, flat over all leaves, the manual and
    reverse-mode gradients, the JVPs along ``directions``, and ``f`` at each of ``points``.
    """

    def evaluate(params, args, directions, points):
        manual = _to_float64(manual_grad(params, *args))
        check_tree_like("manual gradient", manual, "params", params)
        theta, unravel = ravel_pytree(params)

        def f_flat(t):
            return f(unravel(t), *args)

        jvps = jax.vmap(lambda v: jax.jvp(f_flat, (theta,), (v,))[1])(directions)
        return ravel_pytree(manual)[0], jax.grad(f_flat)(theta), jvps, jax.vmap(f_flat)(points)

    return _jit_unoptimized(evaluate)


def _witnesses(
    values: tuple[np.ndarray, ...], probes: _Probes, num_leaves: int, num_directions: int
) -> _Witnesses:
    """Central and one-sided differences from the evaluation; directions and JVPs by leaf."""
    g_manual, g_reverse, jvps, f_values = values
    m = len(probes.coords)
    f0, f_plus, f_minus = f_values[0], f_values[1 : m + 1], f_values[m + 1 : 2 * m + 1]
    h = probes.steps
    central = (f_plus - f_minus) / (2 * h)
    one_sided_gap = np.abs((f_plus - f0) / h - (f0 - f_minus) / h)
    shape = (num_leaves, num_directions)
    directions = probes.directions.reshape(*shape, g_manual.size)
    nudged_change = f_values[2 * m + 1 :].astype(np.float64) - np.float64(f0)
    w = (g_manual, g_reverse, directions, jvps.reshape(shape), probes.coords, central)
    return _Witnesses(*w, one_sided_gap, probes.nudges, nudged_change, f0)


def check_gradient(
    f: Callable[..., jax.Array],
    manual_grad: Callable[..., Any],
    params: Any,
    *,
    key: jax.Array | None = None,
    num_directions: int = 4,
    max_coordinates: int = 512,
    step: float = 1e-5,
    kink_tolerance: float = 1e-3,
    tolerances: Tolerances = DEFAULT_TOLERANCES,
    name: str = "params",
    args: tuple = (),
) -> GradCheckReport:
    """Checks ``manual_grad`` against reverse mode, forward mode and finite differences of ``f``.

    Args:
      f: a scalar function ``f(params, *args)``.
      manual_grad: the hand-written gradient ``manual_grad(params, *args)``, returning a pytree
        shaped like ``params``.
      params: the point to check at: any pytree of floating-point arrays.
      key: ``jax.random`` key for the forward-mode directions and the coordinate sample.
      num_directions: random directions per leaf for forward mode.
      max_coordinates: finite differences on every coordinate of a leaf with at most this many
        elements, else on this many coordinates of the leaf, sampled without replacement.
      step: relative finite-difference step.
      kink_tolerance: relative disagreement of one-sided differences that marks a kink.
      tolerances: the largest errors that pass.
      name: the leaf's name in the report where ``params`` is a bare array.
      args: the data ``f`` and ``manual_grad`` take after ``params``: arrays or pytrees of them,
        floating-point leaves cast to float64. They are traced: a later check of the same two
        functions on data of the same shapes reuses the compiled program.

    Returns:
      A ``GradCheckReport`` with one ``LeafReport`` per leaf, in ``jax.tree.leaves`` order.
    """
    key = jax.random.key(0) if key is None else key
    with jax.enable_x64(True):
        params = _to_float64(params)
        layout = _layout(params, name)
        probes = _make_probes(key, params, num_directions, max_coordinates, step)
        evaluate = _memoized(_evaluator, f, manual_grad)
        values = evaluate(params, _to_float64(tuple(args)), probes.directions, probes.points)
        values, probes = jax.device_get((values, probes))
        w = _witnesses(values, probes, len(layout.sizes), num_directions)
    reports = [
        _leaf_report(i, layout, w, kink_tolerance, tolerances) for i in range(len(layout.paths))
    ]
    return GradCheckReport(tuple(reports), tolerances)


@functools.partial(_jit_unoptimized, static_argnums=(1, 2))
def _normal_like(key: jax.Array, treedef: Any, shapes: tuple[tuple[int, ...], ...]) -> Any:
    """Standard normal float64 draws of ``shapes`` in the tree ``treedef``, one key per leaf."""
    keys = jax.random.split(key, len(shapes))
    draws = [jax.random.normal(k, s, jnp.float64) for k, s in zip(keys, shapes, strict=True)]
    return jax.tree.unflatten(treedef, draws)


@functools.lru_cache(maxsize=64)
def _contraction(f: Callable[..., Any]) -> Callable[..., jax.Array]:
    r""":math:`\langle u, f(x) \rangle` as a function of ``(x, u, *args)``."""

    def contraction(x, u, *args):
        pairs = zip(jax.tree.leaves(u), jax.tree.leaves(f(x, *args)), strict=True)
        return sum(jnp.vdot(a, jnp.asarray(b, jnp.float64)) for a, b in pairs)

    return contraction


def check_vjp(
    f: Callable[..., Any],
    manual_vjp: Callable[..., Any],
    x: Any,
    *,
    key: jax.Array | None = None,
    cotangent: Any = None,
    args: tuple = (),
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
      f: a function ``f(x, *args)`` returning an array or a pytree of arrays.
      manual_vjp: the hand-written VJP, ``manual_vjp(x, u, *args)`` shaped like ``x``.
      x: the point to check at: an array or any pytree of floating-point arrays.
      key: ``jax.random`` key for the cotangent and the check.
      cotangent: :math:`u`, shaped like ``f(x)``; drawn from ``key`` if None.
      args: the data ``f`` and ``manual_vjp`` take last, traced, as in ``check_gradient``.
      **check_kwargs: passed on to ``check_gradient``.

    Returns:
      The ``GradCheckReport`` of :math:`\nabla_x \langle u, f(x) \rangle`, a bare ``x`` named
      ``x``.
    """
    key = jax.random.key(0) if key is None else key
    cotangent_key, check_key = jax.random.split(key)
    with jax.enable_x64(True):
        x, args = _to_float64((x, tuple(args)))
        if cotangent is None:
            leaves, treedef = jax.tree.flatten(jax.eval_shape(f, x, *args))
            shapes = tuple(tuple(leaf.shape) for leaf in leaves)
            cotangent = _normal_like(cotangent_key, treedef, shapes)
        u = _to_float64(cotangent)
    contraction = _memoized(_contraction, f)
    check_kwargs = {"name": "x", **check_kwargs}
    return check_gradient(
        contraction, manual_vjp, x, key=check_key, args=(u, *args), **check_kwargs
    )


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
