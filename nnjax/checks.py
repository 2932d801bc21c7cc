r"""nnjax's own check suite: every hand-written derivative and optimizer, proven in float64.

One row per check:

- each activation's derivative and each loss's derivative (softmax cross-entropy with integer
  and with one-hot labels), by ``nnjax.gradcheck.check_gradient``;
- ``network.backward_pass`` for every hidden activation and every pair of ``OUTPUT_LOSSES``,
  plain, with an L2 penalty and with dropout, by ``check_backward_pass``;
- each optimizer against the optax transformation that computes the same: the parameters after
  100 steps on a fixed objective (``optimizer_trajectory``), to a relative error of 1e-12.

``nnjax check`` or ``python -m nnjax.checks`` prints the table; the exit code is 1 if any row
fails.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from nnjax import activations, losses, network, optimizers
from nnjax.gradcheck import (
    _ERROR_COLUMNS,
    GradCheckReport,
    _error_cells,
    _format_columns,
    _format_error,
    _format_verdict,
    _jit_unoptimized,
    check_gradient,
    tree_relative_error,
)

__all__ = [
    "CheckRow",
    "check_backward_pass",
    "format_table",
    "main",
    "optimizer_references",
    "optimizer_trajectory",
    "run_checks",
]


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

    Args:
      key: ``jax.random`` key for the parameters, the data, the dropout masks and the check.
      layer_sizes: the widths of the layers, input first.
      activation: the hidden activation, or one per hidden layer.
      loss: the output/loss pair, a key of ``network.OUTPUT_LOSSES``.
      batch: the number of examples.
      l2: the L2 penalty's coefficient.
      dropout_rate: the probability of dropping a hidden unit.
      **check_kwargs: passed on to ``check_gradient``.

    Returns:
      The ``GradCheckReport``: one leaf per ``W`` and ``b`` of each layer.
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

    Args:
      optimizer: the transformation to run.
      params: the starting point: any pytree of floating-point arrays.
      steps: the number of updates.

    Returns:
      The parameters after the last update.
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


def _optimizer_rows(key: jax.Array, tolerance: float = 1e-12) -> list[CheckRow]:
    rows = []
    with jax.enable_x64(True):
        k1, k2 = jax.random.split(key)
        params = {
            "layers": [{"W": jax.random.normal(k1, (3, 4), jnp.float64)}],
            "b": (jax.random.normal(k2, (4,), jnp.float64),),
        }
        for name, (mine, reference) in optimizer_references().items():
            # optax.adam raises a Python float to its int32 count: not clean under strict promotion.
            with jax.numpy_dtype_promotion("standard"):
                expected = optimizer_trajectory(reference, params)
            error = tree_relative_error(optimizer_trajectory(mine, params), expected)
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
    columns = [
        ("check", "<", 0),
        *_ERROR_COLUMNS,
        ("optax", ">", 8),
        ("tolerance", "<", 17),
        ("kinks", ">", 5),
        ("result", "<", 0),
    ]
    cells = [
        (
            row.name,
            *_error_cells(row),
            _format_error(row.reference_error),
            row.tolerances,
            str(row.near_kink),
            _format_verdict(row.passed),
        )
        for row in rows
    ]
    failed = sum(not row.passed for row in rows)
    summary = (
        f"{len(rows) - failed} passed, {failed} failed (float64; tolerance = "
        "reverse/forward/fin-diff, relative)"
    )
    return f"{_format_columns(columns, cells)}\n{summary}"


def main() -> int:
    """Prints the check table; returns 1 if any row fails."""
    rows = run_checks()
    print(format_table(rows))
    return 0 if all(row.passed for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
