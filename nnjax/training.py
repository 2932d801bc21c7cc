r"""``train``: minibatch training of a model, whole epochs compiled, gradients by hand or autodiff.

``train`` runs minibatch training of a model (``nnjax.model.Model``; the default is the spec's
fully connected network, ``network.DenseNetwork``) with any ``optax.GradientTransformation``
(nnjax's hand-written Adam by default). One call to the compiled program (``nnjax.program``) runs
several epochs; between calls, Python updates the progress bar, so the number of epochs per call
is chosen to refresh it about twice a second, and changing that number never recompiles (it is a
traced loop bound).

Randomness is a pure function of the key and the epoch number: epoch ``e`` shuffles with
a key split from ``fold_in(key, e)``, and its step ``s`` draws dropout masks from ``fold_in`` of
the other half and ``s``. So the same key and data give bit-identical results on the same
machine, and resuming at epoch ``e`` from a checkpoint gives exactly what an uninterrupted run
would.

Minibatches: each epoch shuffles the training set and cuts it into ``n // batch_size`` batches;
the last ``n % batch_size`` samples of the permutation (different ones every epoch) are left out
of that epoch, so every step has the same shape and cost. With ``shuffle=False`` every epoch takes
the samples in their order, so the same last ``n % batch_size`` samples are never trained on
(choose a ``batch_size`` that divides ``n``, or shuffle the data once beforehand, to use them). A
``batch_size`` larger than the training set is reduced to its size (full-batch training).

Metrics: after each epoch (or every ``eval_every`` epochs, or never), the loss and accuracy on the
whole training set (and validation set) are computed in evaluation mode (no dropout), so they
measure the network, not the noise. Early stopping (``nnjax.early_stopping``) watches one of
them inside the compiled loop and returns the best epoch's parameters.

Divergence: a non-finite loss stops training at the step where it appears, and so do
parameters or optimizer state that end an epoch non-finite (an update that overflowed). The
epoch it happened in does not count: the parameters and optimizer state returned are those after
the last completed epoch (the initial ones if it was the first), every value finite, so a
checkpoint of them resumes exactly. ``TrainResult.diverged`` names the epoch and step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnjax import _validation, diagnostics, distributed, metrics, optimizers, program, steps
from nnjax.early_stopping import EarlyStopping, StopState, checked_rule, starting_state
from nnjax.model import Model
from nnjax.training_loop import (
    MAX_EPOCHS_PER_CALL,
    Divergence,
    History,
    Outcome,
    Progress,
    Run,
    compile_run,
    evaluation_seconds,
    run_chunks,
)

__all__ = [
    "DEFAULT_OPTIMIZER",
    "MAX_EPOCHS_PER_CALL",
    "Divergence",
    "EarlyStopping",
    "History",
    "Progress",
    "StopState",
    "TrainResult",
    "check_optimizer",
    "checked_data",
    "train",
]

DEFAULT_OPTIMIZER = optimizers.adam(1e-3)
"""``train``'s optimizer when given none. One object: the compile cache keys on the optimizer, and
a new ``adam(1e-3)`` per call would recompile every call."""
_DIAGNOSTICS_BATCH = 256
_INT32_MAX = 2**31 - 1  # epoch counters are int32 in the compiled program


class TrainResult(NamedTuple):
    """What ``train`` returns.

    Attributes:
      params: the trained parameters (after the last completed epoch if training diverged);
        with early stopping, those of ``best_epoch`` however training ended.
      opt_state: the optimizer state that goes with them.
      history: per-evaluation ``train_loss``, ``train_accuracy`` and, with validation data,
        ``val_loss`` and ``val_accuracy`` (no accuracy for ``loss="mse"``); unless
        ``eval_every=1``, also ``eval_epoch``, the epoch (counted from 1) of each evaluation.
      epochs_run: how many epochs completed.
      steps_per_second: optimizer steps per second of the compiled calls' wall time (compilation
        excluded), less ``eval_seconds``: with ``time_evaluation``, training alone (unless noise
        on a very short run makes ``eval_seconds`` exceed that time); else the evaluations after
        each epoch are included (``eval_every=0`` leaves them out).
      compile_seconds: time spent compiling the training program.
      diverged: None, or where a non-finite loss appeared.
      best_epoch: with early stopping, the epochs completed (counted from the run's beginning)
        when the watched metric was best, whose parameters are returned; else None.
      stopped_epoch: the epochs completed when early stopping stopped training; None if it did
        not.
      early_stopping_state: early stopping's final ``StopState`` (None without early stopping).
      model_state: the model's state that goes with ``params`` (``()`` for a model without).
      eval_seconds: with ``time_evaluation``, the part of the compiled calls' time spent
        evaluating: the number of evaluations times one evaluation's time, measured by calls of
        the compiled program that only evaluate (``training_loop.evaluation_seconds``); else 0.
    """

    params: Any
    opt_state: Any
    history: History
    epochs_run: int
    steps_per_second: float
    compile_seconds: float
    diverged: Divergence | None
    best_epoch: int | None = None
    stopped_epoch: int | None = None
    early_stopping_state: StopState | None = None
    model_state: Any = ()
    eval_seconds: float = 0.0


def check_optimizer(
    optimizer: Any, learning_rate: Any, *, learning_rate_name: str = "learning_rate"
) -> None:
    """Checks that ``optimizer`` and ``learning_rate`` go together.

    They are checked as ``train`` and ``sweep`` take them: a fixed ``optax.GradientTransformation``
    holds its own learning rate (so none may be given), a factory such as ``nnjax.adam`` is called
    with the one given.
    """
    if isinstance(optimizer, optax.GradientTransformation):
        if learning_rate is not None:
            raise ValueError(
                f"{learning_rate_name} is given, but optimizer {optimizer!r:.60} already holds "
                "its learning rate; pass a factory such as nnjax.adam to set it here"
            )
    elif not callable(optimizer) or learning_rate is None:
        raise TypeError(
            "optimizer must be an optax.GradientTransformation such as nnjax.adam(1e-3), or a "
            f"function from a learning rate to one (such as nnjax.adam) with {learning_rate_name}"
            f"=...; got {optimizer!r:.60} and {learning_rate_name}={learning_rate!r}"
        )


@contextlib.contextmanager
def _naming_targets(name: str) -> Iterator[None]:
    """Prefixes a ValueError about targets with their name (``y`` or ``validation y``)."""
    try:
        yield
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def _targets_of(name: str, targets: Any, loss: str) -> jax.Array:
    """``metrics.prepare_targets``, its errors naming the data set."""
    with _naming_targets(name):
        return metrics.prepare_targets(targets, loss)


def checked_data(
    model: Model,
    params: Any,
    model_state: Any,
    x: jax.Array,
    y: jax.Array,
    validation: tuple[jax.Array, jax.Array] | None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Checks training (and validation) data against one model's parameters, at trace cost.

    Returns ``(x, y, x_val, y_val)`` with targets in the format ``model.loss`` needs. Without
    validation data, ``x_val, y_val`` are one-sample placeholders that are never evaluated.
    """
    shape = model.example_shape(params)
    _validation.check_nonempty("x", x)
    pairs = [(x, y), validation] if validation is not None else [(x, y)]
    checked = []
    for name, (inputs, targets) in zip(("x", "validation x"), pairs, strict=False):
        inputs = _validation.check_float_array(name, inputs)
        if inputs.shape[1:] != shape:
            raise ValueError(
                f"{name} must have shape (n, {', '.join(map(str, shape))}), got {inputs.shape}"
            )
        targets = _targets_of(name[:-1] + "y", targets, model.loss)
        for what, array in ((name, inputs), (f"the targets of {name}", targets)):
            if not np.isfinite(np.asarray(array)).all():  # on the host: no compilation
                raise ValueError(f"{what} hold non-finite values (NaN or inf)")
        if targets.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"{name} has {inputs.shape[0]} samples but its targets have {targets.shape[0]}"
            )
        # Tracing one evaluation runs every shape check of targets against outputs.
        with _naming_targets(name[:-1] + "y"):
            jax.eval_shape(
                lambda p, s, x=inputs, y=targets: metrics.evaluate(p, x, y, model, state=s),
                params,
                model_state,
            )
        checked.append((inputs, targets))
    (x, y), (x_val, y_val) = checked[0], checked[-1] if validation is not None else (x[:1], y[:1])
    return x, y, x_val, y_val


class _Options(NamedTuple):
    """``train``'s integer options, checked."""

    epochs: int
    batch_size: int
    start_epoch: int
    epochs_per_call: int | None
    diagnostics_every: int
    eval_every: int


def _checked_options(
    epochs, batch_size, start_epoch, epochs_per_call, diagnostics_every, eval_every
) -> _Options:
    epochs = _validation.check_int("epochs", epochs, 1, maximum=_INT32_MAX)
    start_epoch = _validation.check_int("start_epoch", start_epoch, 0, maximum=_INT32_MAX)
    if start_epoch > epochs:
        raise ValueError(f"start_epoch must be in [0, epochs={epochs}], got {start_epoch}")
    if epochs_per_call is not None:
        epochs_per_call = _validation.check_int(
            "epochs_per_call", epochs_per_call, 1, maximum=_INT32_MAX
        )
    return _Options(
        epochs,
        _validation.check_int("batch_size", batch_size, 1),
        start_epoch,
        epochs_per_call,
        _validation.check_int("diagnostics_every", diagnostics_every, 0),
        _validation.check_int("eval_every", eval_every, 0, maximum=_INT32_MAX),
    )


def _layout(devices: int | str | None, batch_size: int) -> distributed.DataParallel | None:
    if devices is None and jax.process_count() > 1:
        devices = "all"
    layout = None if devices is None else distributed.data_parallel(devices)
    if layout is not None and batch_size % layout.num_devices:
        raise ValueError(
            f"batch_size {batch_size} does not divide by the {layout.num_devices} devices of "
            "data-parallel training; choose a multiple"
        )
    return layout


def _optimizer_and_state(optimizer: Any, learning_rate: Any, opt_state: Any, params: Any) -> tuple:
    """``train``'s optimizer (the default for None), checked with its learning rate, and the
    state to start from (``opt_state``, or the optimizer's initial one)."""
    optimizer = DEFAULT_OPTIMIZER if optimizer is None else optimizer
    check_optimizer(optimizer, learning_rate)
    if learning_rate is not None:
        _validation.check_real("learning_rate", learning_rate)
        _validation.check_positive("learning_rate", learning_rate)
    if opt_state is None:
        opt_state = steps.optimizer_at(optimizer, learning_rate).init(params)
    return optimizer, opt_state


def _program_layout(
    n: int, batch_size: int, options: _Options, layout: distributed.DataParallel | None
) -> dict[str, Any]:
    """The ``ProgramConfig`` fields of the data's size, the batches and the epochs' options."""
    return {
        "num_batches": n // batch_size,
        "batch_size": batch_size,
        "max_epochs": MAX_EPOCHS_PER_CALL,
        "vmapped": False,
        "diagnostics_every": options.diagnostics_every,
        "diagnostics_batch": min(n, _DIAGNOSTICS_BATCH),
        "batch_sharding": None if layout is None else layout.batch,
        "eval_every": options.eval_every,
    }


def _hyperparameters(learning_rate, l2, dropout_rate, params, dtype) -> steps.Hyperparameters:
    """The hyperparameters in the data's dtype, checked as the program will hold them."""
    _validation.check_in_range("l2", l2, low=0.0)
    _validation.check_in_range("dropout_rate", dropout_rate, low=0.0, high=1.0)
    _validation.check_below_one_in("dropout_rate", dropout_rate, dtype)
    _validation.check_l2_finite("l2", l2, [w for w in jax.tree.leaves(params) if jnp.ndim(w) >= 2])
    # Rounded to dtype on the host: no compilation.
    return steps.Hyperparameters(
        None if learning_rate is None else np.asarray(learning_rate, dtype),
        *(np.asarray(v, dtype) for v in (l2, dropout_rate)),
    )


def _result(
    run: Run, options: _Options, outcome: Outcome, history: History, time_evaluation: bool
) -> TrainResult:
    """The ``TrainResult`` of a run; with early stopping, of its best epoch."""
    evaluations = len(outcome.history.get("train_loss", []))
    eval_seconds = 0.0
    if time_evaluation and evaluations:
        eval_seconds = evaluations * evaluation_seconds(run, outcome)
    params, opt_state, stopper = outcome.params, outcome.opt_state, outcome.stopper
    model_state, seconds = outcome.model_state, outcome.seconds
    best_epoch = stopped_epoch = None
    if stopper is not None:
        params, opt_state, model_state = stopper.params, stopper.opt_state, stopper.model_state
        best, stopped = jax.device_get((stopper.best_epoch, stopper.stopped))
        best_epoch, stopped_epoch = int(best), outcome.epoch if stopped else None
    steps_run = (outcome.epoch - options.start_epoch) * run.config.num_batches
    if seconds > eval_seconds:
        seconds -= eval_seconds
    return TrainResult(
        params,
        opt_state,
        history,
        outcome.epoch - options.start_epoch,
        steps_run / seconds if seconds > 0 else 0.0,
        run.compile_seconds,
        outcome.diverged,
        best_epoch,
        stopped_epoch,
        stopper,
        model_state,
        eval_seconds,
    )


def train(
    params: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    model: Model = metrics.DEFAULT_MODEL,
    optimizer: optax.GradientTransformation | steps.OptimizerFactory | None = None,
    learning_rate: float | None = None,
    opt_state: Any = None,
    model_state: Any = (),
    epochs: int = 10,
    batch_size: int = 32,
    key: jax.Array,
    grad: str = "manual",
    l2: float = 0.0,
    dropout_rate: float = 0.0,
    validation: tuple[jax.Array, jax.Array] | None = None,
    start_epoch: int = 0,
    epochs_per_call: int | None = None,
    callback: Callable[[Progress], Any] | None = None,
    diagnostics_every: int = 0,
    devices: int | str | None = None,
    shuffle: bool = True,
    eval_every: int = 1,
    early_stopping: EarlyStopping | None = None,
    early_stopping_state: StopState | None = None,
    time_evaluation: bool = False,
) -> TrainResult:
    """Trains a model by minibatch gradient descent, whole epochs at a time, compiled.

    Args:
      params: initial parameters (``network.init_network``), or a checkpoint's.
      x: training inputs ``(n, n_in)``, floating point.
      y: training targets: integer labels ``(n,)`` (converted by ``metrics.prepare_targets``) or
        targets in the shape ``model.loss`` needs.
      model: the architecture (``nnjax.model.Model``); default ``network.DenseNetwork()``, ReLU
        hidden layers and softmax cross-entropy.
      optimizer: an ``optax.GradientTransformation`` (default ``nnjax.adam(1e-3)``), or a function
        from a learning rate to one, such as ``nnjax.adam``, called with ``learning_rate``.
      learning_rate: the learning rate for an optimizer factory (traced: changing it does not
        recompile); must be None with a transformation, which holds its own.
      opt_state: the optimizer's state to start from (a checkpoint's); default ``optimizer.init``.
      model_state: the model's state to start from, for a model that keeps one (``init``'s
        second result for a ``sequential.Sequential`` with batch normalization); ``()`` for none.
      epochs: the epoch to stop at: trains epochs ``start_epoch .. epochs - 1``.
      batch_size: samples per minibatch (see the module docstring for the remainder).
      key: ``jax.random`` key for shuffling and dropout.
      grad: ``"manual"`` (the model's ``backward``) or ``"autodiff"`` (``jax.grad`` of the same
        loss).
      l2: L2 strength added to the loss (weights only).
      dropout_rate: dropout on hidden layers during training; evaluation never drops.
      validation: optional ``(x_val, y_val)``, evaluated with the training set (``eval_every``).
      start_epoch: the first epoch to run, for resuming.
      epochs_per_call: epochs per compiled call; default adapts to about two calls a second.
      callback: called after each compiled call with a ``Progress`` (e.g. to show progress or
        save a checkpoint); when it returns something true, training stops there and the result
        holds the state it saw (with early stopping, the best epoch's). In a multi-process run,
        every process stops when any one's callback asks to.
      diagnostics_every: every this many epochs (0: never), record ``nnjax.diagnostics`` of a
        ``DenseNetwork`` on the first 256 training samples: the history gains
        ``diagnostics_epoch`` (the epochs recorded, counted from 1) and one list per entry of
        ``diagnostics.history_keys``.
      devices: data parallelism over this many local devices (or ``"all"``): each minibatch is
        split along the batch axis over a mesh of them, parameters and optimizer state are
        replicated, and the compiler sums the gradients (see ``distributed.data_parallel``).
        ``batch_size`` must divide by the device count. None: the default device only, or, in a
        multi-process run (``nnjax.distributed``), ``"all"``: there ``x``, ``y`` and the
        validation data are this process's rows only (``distributed.process_rows``), every
        process holding as many, and the returned parameters are global arrays, replicated on
        every device.
      shuffle: whether each epoch shuffles the training set; False takes it in its order every
        epoch (the last ``n % batch_size`` samples are then never used: see the module docstring).
      eval_every: evaluate (and record in the history) after every this many epochs, counted
        from the run's beginning: after epoch ``e`` (from 1) where ``e % eval_every == 0``; 0:
        never. Unless 1, the history gains ``eval_epoch``, the epochs evaluated.
      early_stopping: an ``EarlyStopping`` rule (``nnjax.early_stopping``): training stops once
        its metric has not improved for ``patience`` epochs, and the result holds the best
        epoch's parameters and optimizer state (``TrainResult.best_epoch``, ``stopped_epoch``).
        Checked inside the compiled loop, so the result does not depend on ``epochs_per_call``.
      early_stopping_state: the ``StopState`` to resume from (``Progress.early_stopping_state``
        or ``TrainResult.early_stopping_state`` saved with a checkpoint); default a fresh one.
      time_evaluation: also time the evaluations, so that ``steps_per_second`` counts training
        alone (``TrainResult.eval_seconds``). The program then holds a second copy of the
        evaluation, which it runs when called for no epoch: up to about 6% more compile time
        (none measurable for the digits network, 6% for a 16-16 one on two moons).

    Returns:
      A ``TrainResult``.
    """
    data = checked_data(model, params, model_state, x, y, validation)
    options = _checked_options(
        epochs, batch_size, start_epoch, epochs_per_call, diagnostics_every, eval_every
    )
    _validation.check_instance("shuffle", shuffle, bool)
    keys = metrics.history_keys(model.loss, validation is not None)
    if early_stopping is not None:
        early_stopping = checked_rule(early_stopping, keys, options.eval_every)
    optimizer, opt_state = _optimizer_and_state(optimizer, learning_rate, opt_state, params)
    batch_size = min(options.batch_size, data[0].shape[0])
    layout = _layout(devices, batch_size)

    # Place everything on the device(s) once; copies let the caller keep its own arrays, which
    # donation would otherwise invalidate.
    params, opt_state, model_state = jax.device_put(
        (params, opt_state, model_state), may_alias=False
    )
    dtype = data[0].dtype
    hyper = _hyperparameters(learning_rate, l2, dropout_rate, params, dtype)
    stopper = starting_state(
        early_stopping,
        early_stopping_state,
        params,
        opt_state,
        options.start_epoch,
        dtype,
        model_state,
    )
    state, data = distributed.place(
        layout, (params, opt_state, stopper, model_state, hyper, key), data, validation is not None
    )
    config = program.ProgramConfig(
        model=model,
        optimizer=optimizer,
        grad=grad,
        use_l2=_validation.concrete_float(l2) != 0.0,
        use_dropout=_validation.concrete_float(dropout_rate) != 0.0,
        with_validation=validation is not None,
        shuffle=shuffle,
        early_stopping=early_stopping,
        timed_evaluation=time_evaluation,
        **_program_layout(data[0].shape[0], batch_size, options, layout),
    )
    run = compile_run(config, state, data)
    if options.eval_every != 1:
        keys += ("eval_epoch",)
    if options.diagnostics_every:
        keys += ("diagnostics_epoch", *diagnostics.history_keys(len(params)))

    def public(history: History) -> History:
        return {k: list(history.get(k, [])) for k in keys}

    outcome = run_chunks(run, options, callback, public)
    return _result(run, options, outcome, public(outcome.history), time_evaluation)
