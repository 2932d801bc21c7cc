"""The compiled training program: many epochs per call, their metrics, and the compile cache.

One call runs a traced number of epochs from a traced first epoch: a ``lax.while_loop`` over
epochs, each a ``lax.scan`` over its minibatches (``nnjax.steps``), with no host round-trip per
step. After each epoch (or every ``eval_every`` epochs, or never) the program evaluates the model
on the whole training set (and the validation set) in evaluation mode, so the metrics measure the
model, not the dropout noise, and records them as ``EpochMetrics``. It stops early at the first
epoch that meets a non-finite loss or ends with non-finite parameters or optimizer state (that
epoch does not count), and where an ``early_stopping.EarlyStopping`` rule says so.

``compiled_program`` compiles a ``ProgramConfig`` for the shapes of its arguments at most once
per process (an LRU cache keyed by the configuration and the arguments' shapes, dtypes and
shardings), so later calls of ``train`` or ``sweep`` with equal settings reuse it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnjax import diagnostics, early_stopping, metrics, steps
from nnjax.model import Model

__all__ = [
    "EpochMetrics",
    "ProgramConfig",
    "build_program",
    "compiled_program",
    "int32",
]


class EpochMetrics(NamedTuple):
    """Per-epoch metrics of a program call, each of shape ``(max_epochs,)``.

    Each is NaN where absent (validation without validation data, accuracy for ``mse``, epochs not
    run).

    ``diagnostics`` maps each name of ``diagnostics.history_keys`` to its series, NaN in the
    epochs not recorded; it is empty without diagnostics.
    """

    train_loss: jax.Array
    train_accuracy: jax.Array
    val_loss: jax.Array
    val_accuracy: jax.Array
    diagnostics: dict[str, jax.Array]


class ProgramConfig(NamedTuple):
    """Everything static about a training program (hashable: the key of the compile cache)."""

    model: Model
    optimizer: optax.GradientTransformation | steps.OptimizerFactory
    grad: str
    use_l2: bool
    use_dropout: bool
    num_batches: int
    batch_size: int
    with_validation: bool
    max_epochs: int
    vmapped: bool  # one model per leading index of params, opt_state, hyper and key
    diagnostics_every: int = 0
    diagnostics_batch: int = 0
    batch_sharding: jax.sharding.Sharding | None = None  # see distributed.data_parallel
    shuffle: bool = True  # False: every epoch takes the samples in their order
    eval_every: int = 1  # evaluate after epoch e (from 0) where (e + 1) % eval_every == 0; 0: never
    early_stopping: early_stopping.EarlyStopping | None = None  # with its mode resolved
    timed_evaluation: bool = False  # with num_epochs 0, evaluate (``_evaluated_first``)


def int32(value: int) -> jax.Array:
    """Epoch and step counters are int32 whether or not x64 is enabled (put on the device from
    the host: no conversion to compile)."""
    return jax.device_put(np.int32(value))


def _guarded_epoch(config: ProgramConfig) -> Callable:
    """An epoch that does not count when it meets a non-finite loss or ends non-finite.

    ``guarded(start, x, y, hyper, key) -> state``: where the epoch's losses were all finite but
    the parameters or optimizer state it ended with are not (an update can overflow while its
    loss is finite), ``state.finite`` is False and ``bad_step`` the epoch's last step; in both
    cases the state stays where the epoch started, so the result is always a completed epoch's.
    """
    step = steps.make_train_step(
        config.model,
        optimizer=config.optimizer,
        grad=config.grad,
        use_l2=config.use_l2,
        use_dropout=config.use_dropout,
    )
    epoch_fn = steps.make_train_epoch(
        step,
        num_batches=config.num_batches,
        batch_size=config.batch_size,
        batch_sharding=config.batch_sharding,
        shuffle=config.shuffle,
    )

    def guarded(start: steps.EpochState, x, y, hyper, key) -> steps.EpochState:
        state, _ = epoch_fn(start, x, y, hyper, key)
        carried = (state.params, state.opt_state, state.model_state)
        ends_finite = steps.all_finite(carried)
        finite = state.finite & ends_finite
        params, opt_state, model_state = optax.tree.where(
            finite, carried, (start.params, start.opt_state, start.model_state)
        )
        bad_step = jnp.where(state.finite & ~ends_finite, config.num_batches - 1, state.bad_step)
        return steps.EpochState(params, opt_state, finite, bad_step, model_state)

    return guarded


def _diagnostics(config: ProgramConfig, state: steps.EpochState, x, y, hyper, epoch, keys):
    """``diagnostics.diagnostic_row`` every ``diagnostics_every`` epochs, a dict named by ``keys``.

    It is taken on the first ``diagnostics_batch`` samples, NaN in the other epochs.
    """
    model = config.model

    def compute():
        return diagnostics.diagnostic_row(
            state.params,
            x[: config.diagnostics_batch],
            y[: config.diagnostics_batch],
            steps.optimizer_at(config.optimizer, hyper.learning_rate).update,
            state.opt_state,
            activation=model.activation,
            loss=model.loss,
        )

    skip = jnp.full((len(keys),), jnp.nan, x.dtype)
    row = jax.lax.cond((epoch + 1) % config.diagnostics_every == 0, compute, lambda: skip)
    return dict(zip(keys, row, strict=True))


def _evaluate_all(
    model: Model, with_validation: bool, params, model_state, x, y, x_val, y_val
) -> tuple:
    """The four metrics of ``EpochMetrics``: training loss and accuracy, then validation's.

    ``params`` and ``model_state`` are those evaluated.
    """
    nan = jnp.full((), jnp.nan, x.dtype)

    def on(inputs, targets):
        return metrics.evaluate(params, inputs, targets, model, state=model_state)

    train = on(x, y)
    val = on(x_val, y_val) if with_validation else (nan, nan)
    return tuple(v.astype(x.dtype) for v in (*train, *val))


def _evaluation(config: ProgramConfig, state, x, y, x_val, y_val, epoch):
    """``(evaluated, row)``: whether ``epoch`` is evaluated, and its four metrics (else NaN)."""
    args = (config.model, config.with_validation, state.params, state.model_state)
    args += (x, y, x_val, y_val)
    if config.eval_every == 1:
        return jnp.array(True), _evaluate_all(*args)
    skip = (jnp.full((), jnp.nan, x.dtype),) * 4
    if config.eval_every == 0:
        return jnp.array(False), skip
    evaluated = (epoch + 1) % config.eval_every == 0
    return evaluated, jax.lax.cond(evaluated, lambda: _evaluate_all(*args), lambda: skip)


def _record(history: EpochMetrics, i: jax.Array, row: EpochMetrics) -> EpochMetrics:
    """``history`` with epoch ``i`` of every series set to ``row``'s value."""
    return jax.tree.map(lambda series, value: series.at[i].set(value), history, row)


def _evaluated_first(
    config: ProgramConfig, history: EpochMetrics, num_epochs, params, model_state, data: tuple
) -> EpochMetrics:
    """``history``, its first entry the evaluation of ``params`` if ``num_epochs`` is 0."""

    def evaluated(history: EpochMetrics) -> EpochMetrics:
        values = _evaluate_all(config.model, config.with_validation, params, model_state, *data)
        nan = jnp.full((), jnp.nan, data[0].dtype)
        return _record(history, 0, EpochMetrics(*values, dict.fromkeys(history.diagnostics, nan)))

    return jax.lax.cond(num_epochs == 0, evaluated, lambda history: history, history)


def build_program(config: ProgramConfig) -> Callable:
    """The training program for ``config``, not yet compiled (nor vmapped).

    ``run(params, opt_state, x, y, x_val, y_val, hyper, key, first_epoch, num_epochs, stopper,
    model_state)`` trains epochs ``first_epoch .. first_epoch + num_epochs - 1`` (epoch ``e`` with the key
    ``fold_in(key, e)``), stopping early at a non-finite loss or where ``config.early_stopping``
    says so, and returns ``(state, bad_epoch, epochs_done, metrics, stopper)``: the final
    ``steps.EpochState``, the epoch that diverged (or -1), the number of epochs run (the diverged
    one included), ``EpochMetrics`` and the final ``early_stopping.StopState`` (``stopper``, None
    without early stopping).

    With ``num_epochs`` 0 it trains nothing; with ``config.timed_evaluation`` (and evaluations)
    it then evaluates ``params`` as an epoch does, into the first entry of each ``EpochMetrics``
    series, for ``training_loop.evaluation_seconds`` to time. The second copy of the evaluation
    this compiles costs up to about 6% more compile time.
    """
    guarded = _guarded_epoch(config)
    rule = config.early_stopping

    def run(
        params,
        opt_state,
        x,
        y,
        x_val,
        y_val,
        hyper,
        key,
        first_epoch,
        num_epochs,
        stopper=None,
        model_state=(),
    ):
        keys = diagnostics.history_keys(len(params)) if config.diagnostics_every else []

        def one_epoch(loop):
            i, start, bad_epoch, history, stopper = loop
            epoch = first_epoch + i
            state = guarded(start, x, y, hyper, jax.random.fold_in(key, epoch))
            evaluated, values = _evaluation(config, state, x, y, x_val, y_val, epoch)
            extra = _diagnostics(config, state, x, y, hyper, epoch, keys) if keys else {}
            row = EpochMetrics(*values, extra)
            if rule is not None:
                stopper = early_stopping.update(
                    rule,
                    stopper,
                    getattr(row, rule.metric),
                    epoch + 1,
                    evaluated & state.finite,
                    state.params,
                    state.opt_state,
                    state.model_state,
                )
            bad_epoch = jnp.where(state.finite, bad_epoch, epoch)
            return i + 1, state, bad_epoch, _record(history, i, row), stopper

        def keep_going(loop):
            i, state, _, _, stopper = loop
            going = (i < num_epochs) & state.finite
            return going if rule is None else going & ~stopper.stopped

        series = jnp.full((config.max_epochs,), jnp.nan, x.dtype)
        history = EpochMetrics(series, series, series, series, dict.fromkeys(keys, series))
        if config.timed_evaluation and config.eval_every:
            data = (x, y, x_val, y_val)
            history = _evaluated_first(config, history, num_epochs, params, model_state, data)
        start = steps.EpochState(params, opt_state, jnp.array(True), int32(-1), model_state)
        epochs_done, state, bad_epoch, history, stopper = jax.lax.while_loop(
            keep_going, one_epoch, (int32(0), start, int32(-1), history, stopper)
        )
        return state, bad_epoch, epochs_done, history, stopper

    return run


def _signature(args: tuple) -> tuple:
    """The tree structure of ``args`` and their leaves' shapes, dtypes and shardings: a cache key."""
    leaves, treedef = jax.tree.flatten(args)
    return (
        treedef,
        tuple(
            jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding if x.committed else None)
            for x in leaves
        ),
    )


def compiled_program(config: ProgramConfig, *args: Any) -> Any:
    """The compiled program for ``config`` and the shapes of ``args``, compiled at most once."""
    return _compile(config, _signature(args))


@functools.lru_cache(maxsize=16)
def _compile(config: ProgramConfig, signature: tuple) -> Any:
    treedef, structs = signature
    program = build_program(config)
    if config.vmapped:
        # One model per leading index of params, opt_state, hyper, key and the model's state.
        in_axes = (0, 0, None, None, None, None, 0, 0, None, None, None, 0)
        program = jax.vmap(program, in_axes=in_axes[: len(treedef.children())])
    # Data parallel: every output replicated, so that every process can read all of it.
    outputs = None
    if config.batch_sharding is not None:
        outputs = jax.sharding.NamedSharding(
            config.batch_sharding.mesh, jax.sharding.PartitionSpec()
        )
    # Parameters, optimizer state and early stopping's copies are donated: the new ones reuse
    # their buffers.
    donated = (0, 1, 10) if config.early_stopping is not None else (0, 1)
    jitted = jax.jit(program, donate_argnums=donated, out_shardings=outputs)
    return jitted.lower(*jax.tree.unflatten(treedef, structs)).compile()
