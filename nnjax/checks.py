r"""nnjax's own check suite: every hand-written derivative and optimizer, proven in float64.

One row per check:

- each activation's derivative and each loss's derivative (softmax cross-entropy with integer
  and with one-hot labels), by ``nnjax.gradcheck.check_gradient``;
- ``network.backward_pass`` for every hidden activation and every pair of ``OUTPUT_LOSSES``,
  plain, with an L2 penalty and with dropout, by ``check_backward_pass``;
- each optimizer against the optax transformation that computes the same: the parameters after
  100 steps on a fixed objective (``optimizer_trajectory``), to a relative error of 1e-12;
- each layer's backward in each option that changes it, and a small CNN's backward as the
  gradient of its objective (``layercheck.layer_checks``).

``nnjax check`` or ``python -m nnjax.checks`` prints the table a row at a time, as each check
finishes (the checks run on a few threads, so that one traces while another compiles); the exit
code is 1 if any row fails. ``only`` keeps the rows whose name contains one of the given strings.

Each kind of row is a function from a key to a list of ``_Check`` (a name and the thunk that
computes the row), listed in ``_all_checks``. A row draws its point from the key in a compiled
function shared by the rows of its kind, and gives ``check_gradient`` functions that take the
data as ``args`` (built once per configuration, ``functools.cache``): most of the time is
compiling, and a program is compiled once for every row that shares it.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from nnjax import activations, layercheck, losses, network, optimizers
from nnjax._gradcheck_report import (
    CheckRow,
    _check_cells,
    _check_columns,
    _check_summary,
    _format_columns,
    _row_from_report,
    format_table,
)
from nnjax.gradcheck import GradCheckReport, _jit_unoptimized, check_gradient, tree_relative_error

__all__ = [
    "CheckRow",
    "check_backward_pass",
    "check_names",
    "format_table",
    "iter_checks",
    "main",
    "optimizer_references",
    "optimizer_trajectory",
    "run_checks",
]


class _Check(NamedTuple):
    """A row of the table before it runs: its name, and the thunk that computes it."""

    name: str
    run: Callable[[], CheckRow]


@_jit_unoptimized
def _activation_point(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The activation rows' ``x``, magnitudes in [0.1, 4) away from ReLU's kink at 0, and ``c``."""
    k_x, k_c, k_sign = jax.random.split(key, 3)
    x = jax.random.uniform(k_x, (4, 5), jnp.float64, 0.1, 4.0)
    x = x * jnp.where(jax.random.bernoulli(k_sign, 0.5, x.shape), 1.0, -1.0)
    return x, jax.random.normal(k_c, x.shape, jnp.float64)


@functools.cache
def _activation_functions(name: str) -> tuple[Callable, Callable]:
    r""":math:`\sum c \odot f(x)` and its gradient :math:`c \odot f'(x)`, of ``(x, c)``."""
    act = activations.ACTIVATIONS[name]
    return (lambda x, c: jnp.sum(c * act.fn(x))), (lambda x, c: c * act.derivative(x))


def _activation_row(key: jax.Array, name: str) -> CheckRow:
    x, c = _activation_point(key)
    report = check_gradient(*_activation_functions(name), x, key=key, args=(c,))
    return _row_from_report(f"{name}_derivative", report)


def _activation_checks(key: jax.Array) -> list[_Check]:
    return [
        _Check(f"{name}_derivative", functools.partial(_activation_row, key, name))
        for name in activations.ACTIVATIONS
    ]


_LOSS_CASES = (
    ("mse_derivative", "mse_loss", "targets", "logits"),
    ("binary_cross_entropy_derivative", "binary_cross_entropy", "binary", "probs"),
    ("binary_cross_entropy_with_logits_derivative", "binary_cross_entropy_with_logits", "binary"),
    ("softmax_cross_entropy_derivative (labels)", "softmax_cross_entropy", "labels"),
    ("softmax_cross_entropy_derivative (one-hot)", "softmax_cross_entropy", "one_hot"),
)
"""Each loss row: its name (the derivative's, then the targets' kind), the loss's name, and the
names of its target and input (the logits if not given)."""


@_jit_unoptimized
def _loss_point(key: jax.Array) -> dict[str, jax.Array]:
    """Every target and input the loss rows take, by the names in ``_LOSS_CASES``."""
    k1, k2, k3 = jax.random.split(key, 3)
    shape = (6, 3)
    labels = jax.random.randint(k2, (shape[0],), 0, shape[1])
    return {
        "targets": jax.random.normal(k1, shape, jnp.float64),
        "binary": jax.random.bernoulli(k2, 0.5, shape).astype(jnp.float64),
        "probs": jax.random.uniform(k3, shape, jnp.float64, 0.05, 0.95),
        "logits": 3 * jax.random.normal(k3, shape, jnp.float64),
        "labels": labels,
        "one_hot": jax.nn.one_hot(labels, shape[1], dtype=jnp.float64),
    }


@functools.cache
def _loss_functions(loss_name: str, derivative_name: str) -> tuple[Callable, Callable]:
    """The loss and its derivative as functions of ``(prediction, target)``."""
    loss, derivative = getattr(losses, loss_name), getattr(losses, derivative_name)
    return (lambda p, y: loss(y, p)), (lambda p, y: derivative(y, p))


def _loss_row(key: jax.Array, case: tuple) -> CheckRow:
    name, loss_name, y_name, pred_name = (*case, "logits")[:4]
    data = _loss_point(key)
    functions = _loss_functions(loss_name, name.split()[0])
    report = check_gradient(*functions, data[pred_name], key=key, args=(data[y_name],))
    return _row_from_report(name, report)


def _loss_checks(key: jax.Array) -> list[_Check]:
    return [_Check(case[0], functools.partial(_loss_row, key, case)) for case in _LOSS_CASES]


@functools.partial(_jit_unoptimized, static_argnums=(1, 2, 3))
def _network_targets(key: jax.Array, loss: str, batch: int, n_out: int) -> jax.Array:
    if loss == "mse":
        return jax.random.normal(key, (batch, n_out), jnp.float64)
    if loss == "binary_cross_entropy":
        return jax.random.bernoulli(key, 0.5, (batch, n_out)).astype(jnp.float64)
    return jax.random.randint(key, (batch,), 0, n_out)


@functools.partial(_jit_unoptimized, static_argnums=(1, 2))
def _network_point(key: jax.Array, layer_sizes: tuple[int, ...], batch: int) -> tuple:
    """``check_backward_pass``'s parameters, inputs, and keys of the targets, the dropout masks and
    the check, drawn from ``key``; one compiled program for every loss."""
    k_params, k_bias, k_x, k_y, k_drop, k_check = jax.random.split(key, 6)
    params = network.init_network(k_params, layer_sizes, "he", jnp.float64)
    bias_keys = jax.random.split(k_bias, len(params))
    params = [
        {"W": p["W"], "b": 0.1 * jax.random.normal(k, p["b"].shape, jnp.float64)}
        for p, k in zip(params, bias_keys, strict=True)
    ]
    x = jax.random.normal(k_x, (batch, layer_sizes[0]), jnp.float64)
    return params, x, k_y, k_drop, k_check


@functools.cache
def _network_functions(
    activation: str | tuple[str, ...], loss: str, l2: float, dropout_rate: float
) -> tuple[Callable, Callable]:
    """``network_loss`` and ``backward_pass`` as functions of ``(params, x, y, dropout key)``."""
    arch = {"activation": activation, "loss": loss}
    dropout = {"dropout_rate": dropout_rate, "train": dropout_rate > 0}

    def f(p, x, y, key):
        return network.network_loss(p, x, y, **arch, l2=l2, key=key, **dropout)

    def manual(p, x, y, key):
        _, cache = network.forward_pass(p, x, **arch, key=key, **dropout)
        return network.backward_pass(p, x, y, cache, **arch, l2=l2)

    return f, manual


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
    the masks come from a fixed key shared by the loss and the forward pass. Checks of the same
    activation, loss, ``l2`` and ``dropout_rate`` at the same sizes share compiled programs.

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
    activation = activation if isinstance(activation, str) else tuple(activation)
    with jax.enable_x64(True):
        params, x, k_y, k_drop, k_check = _network_point(key, tuple(layer_sizes), batch)
        y = _network_targets(k_y, loss, batch, layer_sizes[-1])
    functions = _network_functions(activation, loss, float(l2), float(dropout_rate))
    return check_gradient(*functions, params, key=k_check, args=(x, y, k_drop), **check_kwargs)


def _backward_row(key: jax.Array, activation: str, loss: str, variant: tuple) -> CheckRow:
    suffix, options = variant
    report = check_backward_pass(
        key, layer_sizes=(3, 5, 4, 3), activation=activation, loss=loss, **options
    )
    return _row_from_report(f"backward_pass {activation}/{loss}{suffix}", report)


def _backward_checks(key: jax.Array) -> list[_Check]:
    variants = [("", {}), (" +L2", {"l2": 0.1}), (" +dropout", {"dropout_rate": 0.3})]
    return [
        _Check(
            f"backward_pass {activation}/{loss}{variant[0]}",
            functools.partial(_backward_row, key, activation, loss, variant),
        )
        for variant, activation, loss in itertools.product(
            variants, ("sigmoid", "relu", "tanh", "identity"), network.OUTPUT_LOSSES
        )
    ]


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


@_jit_unoptimized
def _optimizer_start(key: jax.Array) -> Any:
    """The optimizer rows' starting point: a nested pytree of float64 arrays."""
    k1, k2 = jax.random.split(key)
    return {
        "layers": [{"W": jax.random.normal(k1, (3, 4), jnp.float64)}],
        "b": (jax.random.normal(k2, (4,), jnp.float64),),
    }


def _optimizer_row(key: jax.Array, name: str, tolerance: float = 1e-12) -> CheckRow:
    params = _optimizer_start(key)
    mine, reference = optimizer_references()[name]
    # optax.adam raises a Python float to its int32 count: not clean under strict promotion.
    with jax.numpy_dtype_promotion("standard"):
        expected = optimizer_trajectory(reference, params)
    error = tree_relative_error(optimizer_trajectory(mine, params), expected)
    return CheckRow(
        f"{name} vs optax, 100 steps",
        None,
        None,
        None,
        error,
        f"{tolerance:.0e}",
        0,
        error <= tolerance,
    )


def _optimizer_checks(key: jax.Array) -> list[_Check]:
    return [
        _Check(f"{name} vs optax, 100 steps", functools.partial(_optimizer_row, key, name))
        for name in optimizer_references()
    ]


@_jit_unoptimized
def _family_keys(key: jax.Array) -> tuple[jax.Array, ...]:
    """The keys of the activation, loss, backward-pass and optimizer rows."""
    return tuple(jax.random.split(key, 4))


def _layer_checks(key: jax.Array) -> list[_Check]:
    def row(name: str, check: Callable[[], GradCheckReport]) -> CheckRow:
        return _row_from_report(name, check())

    return [
        _Check(name, functools.partial(row, name, check))
        for name, check in layercheck.layer_checks(key)
    ]


def _all_checks(key: jax.Array | None) -> list[_Check]:
    """Every check, in the table's order; nothing runs yet."""
    key = jax.random.key(0) if key is None else key
    k_act, k_loss, k_net, k_opt = _family_keys(key)
    return [
        *_activation_checks(k_act),
        *_loss_checks(k_loss),
        *_backward_checks(k_net),
        *_optimizer_checks(k_opt),
        *_layer_checks(jax.random.fold_in(key, 4)),
    ]


def _select(checks: Sequence[_Check], only: str | Sequence[str] | None) -> list[_Check]:
    """The checks whose name contains one of ``only``'s comma-separated parts (all for None).

    Raises ValueError for a part that no name contains.
    """
    if only is None:
        return list(checks)
    parts = [
        p.strip() for item in ([only] if isinstance(only, str) else only) for p in item.split(",")
    ]
    parts = [p for p in parts if p]
    for part in parts:
        if not any(part in check.name for check in checks):
            raise ValueError(
                f"no check's name contains {part!r} (names look like 'relu_derivative', "
                "'backward_pass tanh/mse +L2', 'adam vs optax, 100 steps')"
            )
    return [check for check in checks if any(part in check.name for part in parts)]


def check_names(only: str | Sequence[str] | None = None) -> list[str]:
    """The names of the rows ``run_checks(only=only)`` computes, in order, without running them.

    Args:
      only: None for every check, else a name filter as in ``iter_checks``.

    Returns:
      The row names. Raises ValueError if a part of ``only`` matches no check.
    """
    return [check.name for check in _select(_all_checks(None), only)]


def _run_one(check: _Check) -> CheckRow:
    with jax.enable_x64(True):
        return check.run()


def iter_checks(
    key: jax.Array | None = None,
    *,
    only: str | Sequence[str] | None = None,
    workers: int | None = None,
) -> Iterator[CheckRow]:
    """Runs the checks on ``workers`` threads and yields each row in the table's order.

    A row is yielded as soon as it and every row before it are done.

    Args:
      key: ``jax.random`` key for every check's data and probes; ``jax.random.key(0)`` if None.
      only: keeps the checks whose name contains one of these strings (substrings; each string
        may hold several, comma-separated); None keeps every check.
      workers: the number of threads; None for the number of CPUs, at most 4.

    Returns:
      An iterator over the ``CheckRow`` of each selected check. Raises ValueError (on the first
      ``next``) if a part of ``only`` matches no check.
    """
    selected = _select(_all_checks(key), only)
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    if workers <= 1:
        yield from map(_run_one, selected)
        return
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_run_one, check) for check in selected]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def run_checks(
    key: jax.Array | None = None,
    *,
    only: str | Sequence[str] | None = None,
    on_row: Callable[[CheckRow], Any] | None = None,
) -> list[CheckRow]:
    """Checks every hand-written derivative and optimizer in nnjax; returns one row for each.

    Args:
      key: ``jax.random`` key for every check's data and probes; ``jax.random.key(0)`` if None.
      only: keeps the checks whose name contains one of these strings, as in ``iter_checks``.
      on_row: called with each row as soon as it and the rows before it are done.

    Returns:
      The rows in the table's order.
    """
    rows = []
    for row in iter_checks(key, only=only):
        if on_row is not None:
            on_row(row)
        rows.append(row)
    return rows


def main(only: str | Sequence[str] | None = None) -> int:
    """Prints the check table a row at a time as the checks finish.

    Args:
      only: keeps the checks whose name contains one of these strings, as in ``iter_checks``.

    Returns:
      The exit status: 0 if every row passes, 1 if one fails, 2 (after a one-line error) if a part
      of ``only`` matches no check.
    """
    try:
        columns = _check_columns(check_names(only))
    except ValueError as error:
        print(f"nnjax check: error: {error}", file=sys.stderr)
        return 2
    print(_format_columns(columns, []), flush=True)
    rows = []
    for row in iter_checks(only=only):
        print(_format_columns(columns, [_check_cells(row)]).splitlines()[-1], flush=True)
        rows.append(row)
    print(_check_summary(rows))
    return 0 if all(row.passed for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
