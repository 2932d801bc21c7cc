"""Early stopping: stop training when a metric stops improving, and keep the best parameters.

The rule (``EarlyStopping``) is static, part of the compiled program; its state (``StopState``)
is carried by the program's epoch loop and from one compiled call to the next, so where training
stops does not depend on how many epochs a call holds. Patience counts epochs: after an
evaluation that does not improve on the best value by more than ``min_delta``, training stops
once ``patience`` epochs have passed since the best one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from nnjax import _validation

__all__ = [
    "EarlyStopping",
    "StopState",
    "checked_rule",
    "initial_state",
    "starting_state",
    "update",
]

MODES = ("min", "max")


class EarlyStopping(NamedTuple):
    """Stop when ``metric`` has not improved for ``patience`` epochs; keep the best parameters.

    Attributes:
      metric: a history series evaluated during training: ``"val_loss"`` (the default),
        ``"val_accuracy"``, ``"train_loss"`` or ``"train_accuracy"``.
      patience: epochs without improvement after which training stops (at least 1).
      mode: ``"min"`` (lower is better) or ``"max"``; None: ``"max"`` for an accuracy,
        ``"min"`` otherwise.
      min_delta: the least change over the best value that counts as an improvement.
    """

    metric: str = "val_loss"
    patience: int = 5
    mode: str | None = None
    min_delta: float = 0.0


class StopState(NamedTuple):
    """Early stopping's state, carried through the compiled epochs.

    Attributes:
      best: the best value so far, negated in ``"max"`` mode (inf before any evaluation).
      best_epoch: the epochs completed when the best value was measured (int32; the starting
        epoch before any improvement).
      stopped: whether training has stopped.
      params: the parameters of ``best_epoch``.
      opt_state: the optimizer state that goes with them.
      model_state: the model's state that goes with them (``()`` for a model without).
    """

    best: jax.Array
    best_epoch: jax.Array
    stopped: jax.Array
    params: Any
    opt_state: Any
    model_state: Any = ()


def checked_rule(rule: Any, available: tuple[str, ...], eval_every: int) -> EarlyStopping:
    """``rule`` checked against the series a run records, with its mode resolved."""
    _validation.check_instance("early_stopping", rule, EarlyStopping)
    if eval_every == 0:
        raise ValueError("early_stopping needs evaluations; eval_every=0 turns them off")
    _validation.check_choice("early_stopping.metric", rule.metric, available)
    patience = _validation.check_int("early_stopping.patience", rule.patience, 1)
    mode = rule.mode or ("max" if rule.metric.endswith("accuracy") else "min")
    _validation.check_choice("early_stopping.mode", mode, MODES)
    _validation.check_in_range("early_stopping.min_delta", rule.min_delta, low=0.0)
    return EarlyStopping(rule.metric, patience, mode, float(rule.min_delta))


def initial_state(
    params: Any, opt_state: Any, epoch: int, dtype: Any, model_state: Any = ()
) -> StopState:
    """The state before any evaluation, at ``epoch`` epochs completed; copies the arrays."""
    return StopState(
        jnp.full((), jnp.inf, dtype),
        jnp.asarray(epoch, jnp.int32),
        jnp.array(False),
        *jax.tree.map(jnp.array, (params, opt_state, model_state)),
    )


def starting_state(
    rule: EarlyStopping | None,
    state: StopState | None,
    params,
    opt_state,
    epoch: int,
    dtype,
    model_state: Any = (),
) -> StopState | None:
    """The state a run starts from: ``state`` (resuming; copied), or a fresh one at ``epoch``.

    None without a ``rule``.
    """
    if rule is None:
        if state is not None:
            raise ValueError("early_stopping_state is given without early_stopping")
        return None
    if state is None:
        return initial_state(params, opt_state, epoch, dtype, model_state)
    _validation.check_instance("early_stopping_state", state, StopState)
    return StopState(
        jnp.asarray(state.best, dtype),
        jnp.asarray(state.best_epoch, jnp.int32),
        jnp.asarray(state.stopped, bool),
        *jax.tree.map(jnp.array, (state.params, state.opt_state, state.model_state)),
    )


def update(
    rule: EarlyStopping,
    state: StopState,
    value: jax.Array,
    epochs_done: jax.Array,
    evaluated: jax.Array,
    params: Any,
    opt_state: Any,
    model_state: Any = (),
) -> StopState:
    """The state after an epoch: ``value`` counts only where ``evaluated``; NaN never improves."""
    score = value if rule.mode == "min" else -value
    improved = evaluated & (score < state.best - rule.min_delta)
    best_epoch = jnp.where(improved, epochs_done, state.best_epoch)
    stopped = state.stopped | (evaluated & (epochs_done - best_epoch >= rule.patience))
    kept = optax.tree.where(
        improved,
        (params, opt_state, model_state),
        (state.params, state.opt_state, state.model_state),
    )
    return StopState(jnp.where(improved, score, state.best), best_epoch, stopped, *kept)
