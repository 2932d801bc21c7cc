r"""Proof that a hand-written gradient is right, three independent ways, in float64.

``check_gradient(f, manual_grad, params)`` compares ``manual_grad(params)`` with

1. reverse mode: ``jax.grad(f)(params)``, every element;
2. forward mode: ``jax.jvp`` of ``f`` along random directions, each supported on one leaf, against
   :math:`\langle \nabla f, v \rangle` computed from the manual gradient;
3. central finite differences :math:`(f(\theta + h e_i) - f(\theta - h e_i)) / 2h` with
   :math:`h = 10^{-5}\max(1, |\theta_i|)`, on every coordinate of each leaf, or on a random sample
   of ``max_coordinates`` coordinates of a leaf larger than that.

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

``python -m nnjax.gradcheck`` (or ``nnjax check``) runs ``run_checks``: one row per hand-written
derivative in nnjax, printed as a table; the exit code is 1 if any row fails.
"""

from __future__ import annotations

import functools
import itertools
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from nnjax import activations, losses, network, optimizers

# Checks run small functions once: XLA's optimization passes would cost more compile time than
# they save at run time.
_jit_unoptimized = functools.partial(
    jax.jit, compiler_options={"xla_backend_optimization_level": 0}
)


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
        """The largest finite-difference error over leaves; NaN if any leaf's is NaN (a NaN
        derivative, or no coordinate away from a kink)."""
        return _max_with_nan(leaf.finite_difference_error for leaf in self.leaves)

    @property
    def near_kink(self) -> int:
        return sum(leaf.near_kink for leaf in self.leaves)

    def __str__(self) -> str:
        lines = [f"{'leaf':<24} {'reverse':>9} {'forward':>9} {'fin-diff':>9} {'kinks':>6}  result"]
        for leaf in self.leaves:
            lines.append(
                f"{leaf.path:<24} {leaf.reverse_error:9.1e} {leaf.forward_error:9.1e} "
                f"{leaf.finite_difference_error:9.1e} {leaf.near_kink:6d}  "
                f"{'PASS' if leaf.passed else 'FAIL'}"
            )
        return "\n".join(lines)


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


def _sample_coordinates(key: jax.Array, size: int, max_coordinates: int) -> np.ndarray:
    """Indices ``0..size-1`` if ``size <= max_coordinates``, else ``max_coordinates`` of them
    drawn without replacement; sorted."""
    if size <= max_coordinates:
        return np.arange(size)
    return np.sort(np.asarray(jax.random.choice(key, size, (max_coordinates,), replace=False)))


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
        paths = [
            jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]
        ]
        sizes = [int(np.size(leaf)) for leaf in jax.tree.leaves(params)]
        bounds = np.cumsum([0, *sizes])
        n = int(theta.size)

        dir_key, coord_key = jax.random.split(key)
        segment = np.repeat(np.arange(len(sizes)), sizes)
        leaf_masks = jnp.asarray(segment[None, :] == np.arange(len(sizes))[:, None], jnp.float64)
        directions = jax.random.normal(dir_key, (len(sizes), num_directions, n), jnp.float64)
        directions = (directions * leaf_masks[:, None, :]).reshape(-1, n)
        coords = np.concatenate(
            [
                lo + _sample_coordinates(k, size, max_coordinates)
                for k, lo, size in zip(
                    jax.random.split(coord_key, len(sizes)), bounds[:-1], sizes, strict=True
                )
            ]
        )
        h = step * jnp.maximum(1.0, jnp.abs(theta[coords]))
        offsets = jax.nn.one_hot(jnp.asarray(coords), n, dtype=jnp.float64) * h[:, None]

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

        g_manual, g_reverse, jvps, f0, f_plus, f_minus = jax.device_get(
            evaluate(theta, directions, offsets)
        )
        h = np.asarray(h)
        central = (f_plus - f_minus) / (2 * h)
        one_sided_gap = np.abs((f_plus - f0) / h - (f0 - f_minus) / h)
        directions = np.asarray(directions).reshape(len(sizes), num_directions, n)
        jvps = jvps.reshape(len(sizes), num_directions)

    reports = []
    for i, path in enumerate(paths):
        lo, hi = bounds[i], bounds[i + 1]
        m, r = g_manual[lo:hi], g_reverse[lo:hi]
        scale = max(np.max(np.abs(m), initial=0.0), np.max(np.abs(r), initial=0.0))
        tiny = np.finfo(np.float64).tiny
        reverse_error = float(np.max(np.abs(m - r), initial=0.0) / max(scale, tiny))

        # <manual gradient, v> over this leaf only: the other leaves' entries (possibly NaN) do
        # not enter, even multiplied by v's zeros there.
        v = directions[i][:, lo:hi]
        dots = v @ m
        fwd_scale = np.maximum(np.linalg.norm(m) * np.linalg.norm(v, axis=1), np.abs(jvps[i]))
        forward_error = float(np.max(np.abs(jvps[i] - dots) / np.maximum(fwd_scale, tiny)))

        in_leaf = (coords >= lo) & (coords < hi)
        kink = in_leaf & (one_sided_gap > kink_tolerance * max(scale, tiny))
        ok = in_leaf & ~kink
        if ok.any():
            fd_diff = np.abs(central[ok] - g_manual[coords[ok]])
            fd_scale = max(scale, np.max(np.abs(central[ok])))
            fd_error = float(np.max(fd_diff) / max(fd_scale, tiny))
        else:
            fd_error = math.nan
        passed = (
            reverse_error <= tolerances.reverse
            and forward_error <= tolerances.forward
            and fd_error <= tolerances.finite_difference  # False for NaN
        )
        reports.append(
            LeafReport(
                path,
                reverse_error,
                forward_error,
                fd_error,
                int(ok.sum()),
                int(kink.sum()),
                passed,
            )
        )
    return GradCheckReport(tuple(reports), tolerances)


# ---------------------------------------------------------------------------------------------
# The library's own checks: one row per hand-written derivative.


class CheckRow(NamedTuple):
    """One row of the ``run_checks`` table. Errors absent for a row's kind are None."""

    name: str
    reverse_error: float | None
    forward_error: float | None
    finite_difference_error: float | None
    reference_error: float | None
    tolerances: str
    near_kink: int
    passed: bool


def _row_from_report(name: str, report: GradCheckReport) -> CheckRow:
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


def _activation_rows(key: jax.Array) -> list[CheckRow]:
    rows = []
    k_x, k_c, k_sign = jax.random.split(key, 3)
    # Magnitudes in [0.1, 4): away from ReLU's kink at 0.
    x = jax.random.uniform(k_x, (4, 5), jnp.float64, 0.1, 4.0)
    x = x * jnp.where(jax.random.bernoulli(k_sign, 0.5, x.shape), 1.0, -1.0)
    c = jax.random.normal(k_c, x.shape, jnp.float64)
    for name, act in activations.ACTIVATIONS.items():
        report = check_gradient(
            lambda x, fn=act.fn: jnp.sum(c * fn(x)),
            lambda x, d=act.derivative: c * d(x),
            x,
            key=key,
        )
        rows.append(_row_from_report(f"{name}_derivative", report))
    return rows


def _loss_rows(key: jax.Array) -> list[CheckRow]:
    k1, k2, k3 = jax.random.split(key, 3)
    shape = (6, 3)
    targets = jax.random.normal(k1, shape, jnp.float64)
    binary = jax.random.bernoulli(k2, 0.5, shape).astype(jnp.float64)
    probs = jax.random.uniform(k3, shape, jnp.float64, 0.05, 0.95)
    logits = 3 * jax.random.normal(k3, shape, jnp.float64)
    labels = jax.random.randint(k2, (shape[0],), 0, shape[1])
    one_hot = jax.nn.one_hot(labels, shape[1], dtype=jnp.float64)
    cases = [
        ("mse_derivative", losses.mse_loss, losses.mse_derivative, targets, logits),
        (
            "binary_cross_entropy_derivative",
            losses.binary_cross_entropy,
            losses.binary_cross_entropy_derivative,
            binary,
            probs,
        ),
        (
            "binary_cross_entropy_with_logits_derivative",
            losses.binary_cross_entropy_with_logits,
            losses.binary_cross_entropy_with_logits_derivative,
            binary,
            logits,
        ),
        (
            "softmax_cross_entropy_derivative (labels)",
            losses.softmax_cross_entropy,
            losses.softmax_cross_entropy_derivative,
            labels,
            logits,
        ),
        (
            "softmax_cross_entropy_derivative (one-hot)",
            losses.softmax_cross_entropy,
            losses.softmax_cross_entropy_derivative,
            one_hot,
            logits,
        ),
    ]
    rows = []
    for name, loss, derivative, y, pred in cases:
        report = check_gradient(
            lambda p, loss=loss, y=y: loss(y, p),
            lambda p, derivative=derivative, y=y: derivative(y, p),
            pred,
            key=key,
        )
        rows.append(_row_from_report(name, report))
    return rows


def _network_targets(key: jax.Array, loss: str, batch: int, n_out: int) -> jax.Array:
    if loss == "mse":
        return jax.random.normal(key, (batch, n_out), jnp.float64)
    if loss == "binary_cross_entropy":
        return jax.random.bernoulli(key, 0.5, (batch, n_out)).astype(jnp.float64)
    return jax.random.randint(key, (batch,), 0, n_out)


def check_backward_pass(
    key: jax.Array,
    *,
    layer_sizes: Sequence[int],
    activation: str | Sequence[str],
    loss: str,
    batch: int = 6,
    l2: float = 0.0,
    dropout_rate: float = 0.0,
    **check_kwargs: Any,
) -> GradCheckReport:
    """``check_gradient`` of ``network.backward_pass`` against ``network.network_loss``.

    Builds a network (He init, small random biases) and data from ``key``; with ``dropout_rate``
    the masks come from a fixed key shared by the loss and the forward pass.
    """
    k_params, k_bias, k_x, k_y, k_drop, k_check = jax.random.split(key, 6)
    with jax.enable_x64(True):
        params = network.init_network(k_params, layer_sizes, "he", jnp.float64)
        bias_keys = jax.random.split(k_bias, len(params))
        params = [
            {"W": p["W"], "b": 0.1 * jax.random.normal(k, p["b"].shape, jnp.float64)}
            for p, k in zip(params, bias_keys, strict=True)
        ]
        x = jax.random.normal(k_x, (batch, layer_sizes[0]), jnp.float64)
        y = _network_targets(k_y, loss, batch, layer_sizes[-1])
    arch = {"activation": activation, "loss": loss}
    dropout = {"dropout_rate": dropout_rate, "key": k_drop, "train": dropout_rate > 0}

    def f(p):
        return network.network_loss(p, x, y, **arch, l2=l2, **dropout)

    def manual(p):
        _, cache = network.forward_pass(p, x, **arch, **dropout)
        return network.backward_pass(p, x, y, cache, **arch, l2=l2)

    return check_gradient(f, manual, params, key=k_check, **check_kwargs)


def _backward_rows(key: jax.Array) -> list[CheckRow]:
    rows = []
    variants = [("", {}), (" +L2", {"l2": 0.1}), (" +dropout", {"dropout_rate": 0.3})]
    for (suffix, options), activation, loss in itertools.product(
        variants, ("sigmoid", "relu", "tanh", "identity"), network.OUTPUT_LOSSES
    ):
        report = check_backward_pass(
            key, layer_sizes=(3, 5, 4, 3), activation=activation, loss=loss, **options
        )
        rows.append(_row_from_report(f"backward_pass {activation}/{loss}{suffix}", report))
    return rows


def optimizer_trajectory(
    optimizer: optax.GradientTransformation, params: Any, steps: int = 100
) -> Any:
    """Parameters after ``steps`` updates of ``optimizer`` on a fixed smooth objective.

    The objective, :math:`\\sum \\log\\cosh(\\theta - 1/2) + \\theta^2/10`, has gradients that vary
    from step to step, so every part of the optimizer's state matters.
    """

    def objective(p):
        return sum(jnp.sum(jnp.log(jnp.cosh(w - 0.5)) + 0.1 * w**2) for w in jax.tree.leaves(p))

    def step(carry, _):
        p, state = carry
        updates, state = optimizer.update(jax.grad(objective)(p), state, p)
        return (optax.apply_updates(p, updates), state), None

    @_jit_unoptimized
    def run(params):
        (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
        return params

    return run(params)


def optimizer_references() -> dict[
    str, tuple[optax.GradientTransformation, optax.GradientTransformation]
]:
    """Each hand-written optimizer paired with the optax transformation that computes the same."""
    return {
        "sgd": (optimizers.sgd(0.1), optax.sgd(0.1)),
        "momentum (damped)": (
            optimizers.momentum(0.1, 0.9),
            optax.chain(optax.ema(0.9, debias=False), optax.scale(-0.1)),
        ),
        "classical_momentum": (
            optimizers.classical_momentum(0.05, 0.9),
            optax.sgd(0.05, momentum=0.9),
        ),
        "classical_momentum nesterov": (
            optimizers.classical_momentum(0.05, 0.9, nesterov=True),
            optax.sgd(0.05, momentum=0.9, nesterov=True),
        ),
        "adam": (optimizers.adam(0.05), optax.adam(0.05)),
        "adam schedule eps_root": (
            optimizers.adam(optax.exponential_decay(0.05, 10, 0.8), eps_root=1e-8),
            optax.adam(optax.exponential_decay(0.05, 10, 0.8), eps_root=1e-8),
        ),
    }


def tree_relative_error(actual: Any, expected: Any) -> float:
    """Largest leafwise :math:`\\|a - e\\|_\\infty / \\|e\\|_\\infty` over two matching pytrees; NaN if
    any leaf's is NaN."""
    return _max_with_nan(
        float(jnp.max(jnp.abs(a - e)) / jnp.maximum(jnp.max(jnp.abs(e)), jnp.finfo(e.dtype).tiny))
        for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True)
    )


def _optimizer_rows(key: jax.Array, tolerance: float = 1e-12) -> list[CheckRow]:
    rows = []
    with jax.enable_x64(True):
        k1, k2 = jax.random.split(key)
        params = {
            "layers": [{"W": jax.random.normal(k1, (3, 4), jnp.float64)}],
            "b": (jax.random.normal(k2, (4,), jnp.float64),),
        }
        for name, (mine, reference) in optimizer_references().items():
            error = tree_relative_error(
                optimizer_trajectory(mine, params), optimizer_trajectory(reference, params)
            )
            rows.append(
                CheckRow(
                    f"{name} vs optax, 100 steps",
                    None,
                    None,
                    None,
                    error,
                    f"{tolerance:.0e}",
                    0,
                    error <= tolerance,
                )
            )
    return rows


def run_checks(key: jax.Array | None = None) -> list[CheckRow]:
    """Checks every hand-written derivative and optimizer in nnjax; returns one row for each."""
    key = jax.random.key(0) if key is None else key
    k_act, k_loss, k_net, k_opt = jax.random.split(key, 4)
    with jax.enable_x64(True):
        return [
            *_activation_rows(k_act),
            *_loss_rows(k_loss),
            *_backward_rows(k_net),
            *_optimizer_rows(k_opt),
        ]


def format_table(rows: Sequence[CheckRow]) -> str:
    """Renders ``run_checks`` rows as a fixed-width table with a summary line."""

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.1e}"

    width = max(len(row.name) for row in rows)
    header = (
        f"{'check':<{width}}  {'reverse':>8}  {'forward':>8}  {'fin-diff':>8}  {'optax':>8}  "
        f"{'tolerance':<17}  {'kinks':>5}  result"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.name:<{width}}  {fmt(row.reverse_error):>8}  {fmt(row.forward_error):>8}  "
            f"{fmt(row.finite_difference_error):>8}  {fmt(row.reference_error):>8}  "
            f"{row.tolerances:<17}  {row.near_kink:>5}  {'PASS' if row.passed else 'FAIL'}"
        )
    failed = sum(not row.passed for row in rows)
    lines.append(
        f"{len(rows) - failed} passed, {failed} failed (float64; tolerance = "
        "reverse/forward/fin-diff, relative)"
    )
    return "\n".join(lines)


def main() -> int:
    """Prints the check table; returns 1 if any row fails."""
    rows = run_checks()
    print(format_table(rows))
    return 0 if all(row.passed for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
