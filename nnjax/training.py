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
of that epoch, so every step has the same shape and cost. A ``batch_size`` larger than the
training set is reduced to its size (full-batch training).

Metrics: after each epoch, the loss and accuracy on the whole training set (and validation set)
are computed in evaluation mode (no dropout), so they measure the network, not the noise.

Divergence: a non-finite loss stops training at the step where it appears, and so do
parameters or optimizer state that end an epoch non-finite (an update that overflowed). The
epoch it happened in does not count: the parameters and optimizer state returned are those after
the last completed epoch (the initial ones if it was the first), every value finite, so a
checkpoint of them resumes exactly. ``TrainResult.diverged`` names the epoch and step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from nnjax import _validation, diagnostics, distributed, metrics, optimizers, program, steps
from nnjax.model import Model

__all__ = [
    "DEFAULT_OPTIMIZER",
    "Divergence",
    "History",
    "Progress",
    "TrainResult",
    "check_optimizer",
    "checked_data",
    "train",
]

History = dict[str, list[float]]

MAX_EPOCHS_PER_CALL = 256
DEFAULT_OPTIMIZER = optimizers.adam(1e-3)
"""``train``'s optimizer when given none. One object: the compile cache keys on the optimizer, and
a new ``adam(1e-3)`` per call would recompile every call."""
_DIAGNOSTICS_BATCH = 256
_INT32_MAX = 2**31 - 1  # epoch counters are int32 in the compiled program


class Divergence(NamedTuple):
    """Where training met a non-finite loss (both zero-based).

    ``step`` is the epoch's last when every loss was finite but the parameters or optimizer state
    it ended with were not.
    """

    epoch: int
    step: int


class Progress(NamedTuple):
    """What ``train``'s callback sees after each compiled call.

    Attributes:
      epoch: the epochs completed, counted from the run's beginning (``start_epoch`` included).
      history: the history of this call of ``train`` so far (as ``TrainResult.history``).
      params: the parameters after ``epoch`` epochs.
      opt_state: the optimizer state that goes with them.

    ``params`` and ``opt_state`` live on the device until the next compiled call reuses their
    buffers: a callback that keeps them copies them first (``jax.device_get``).
    """

    epoch: int
    history: History
    params: Any
    opt_state: Any


class TrainResult(NamedTuple):
    """What ``train`` returns.

    Attributes:
      params: the trained parameters (after the last completed epoch if training diverged).
      opt_state: the optimizer state that goes with them.
      history: per-epoch ``train_loss``, ``train_accuracy`` and, with validation data,
        ``val_loss`` and ``val_accuracy`` (no accuracy for ``loss="mse"``).
      epochs_run: how many epochs completed.
      steps_per_second: optimizer steps per second of wall time, compilation excluded.
      compile_seconds: time spent compiling the training program.
      diverged: None, or where a non-finite loss appeared.
    """

    params: Any
    opt_state: Any
    history: History
    epochs_run: int
    steps_per_second: float
    compile_seconds: float
    diverged: Divergence | None


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


def checked_data(
    model: Model,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    validation: tuple[jax.Array, jax.Array] | None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Checks training (and validation) data against one model's parameters, at trace cost.

    Returns ``(x, y, x_val, y_val)`` with targets in the format ``model.loss`` needs. Without
    validation data, ``x_val, y_val`` are one-sample placeholders that are never evaluated.
    """
    width = model.input_width(params)
    _validation.check_nonempty("x", x)
    pairs = [(x, y), validation] if validation is not None else [(x, y)]
    checked = []
    for name, (inputs, targets) in zip(("x", "validation x"), pairs, strict=False):
        inputs = _validation.check_float_array(name, inputs)
        if inputs.ndim != 2 or inputs.shape[1] != width:
            raise ValueError(f"{name} must have shape (n, {width}), got {inputs.shape}")
        targets = metrics.prepare_targets(targets, model.loss)
        for what, array in ((name, inputs), (f"the targets of {name}", targets)):
            if not bool(jnp.all(jnp.isfinite(array))):  # integer labels are always finite
                raise ValueError(f"{what} hold non-finite values (NaN or inf)")
        if targets.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"{name} has {inputs.shape[0]} samples but its targets have {targets.shape[0]}"
            )
        # Tracing one evaluation runs every shape check of targets against outputs.
        jax.eval_shape(lambda p, x=inputs, y=targets: metrics.evaluate(p, x, y, model), params)
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


def _checked_options(
    epochs, batch_size, start_epoch, epochs_per_call, diagnostics_every, l2, dropout_rate
) -> _Options:
    epochs = _validation.check_int("epochs", epochs, 1, maximum=_INT32_MAX)
    start_epoch = _validation.check_int("start_epoch", start_epoch, 0, maximum=_INT32_MAX)
    if start_epoch > epochs:
        raise ValueError(f"start_epoch must be in [0, epochs={epochs}], got {start_epoch}")
    if epochs_per_call is not None:
        epochs_per_call = _validation.check_int(
            "epochs_per_call", epochs_per_call, 1, maximum=_INT32_MAX
        )
    _validation.check_in_range("l2", l2, low=0.0)
    _validation.check_in_range("dropout_rate", dropout_rate, low=0.0, high=1.0)
    return _Options(
        epochs,
        _validation.check_int("batch_size", batch_size, 1),
        start_epoch,
        epochs_per_call,
        _validation.check_int("diagnostics_every", diagnostics_every, 0),
    )


class _Run(NamedTuple):
    """A prepared run: the compiled program and its arguments, on their devices."""

    compiled: Any
    compile_seconds: float
    params: Any
    opt_state: Any
    data: tuple[jax.Array, jax.Array, jax.Array, jax.Array]  # x, y, x_val, y_val
    hyper: steps.Hyperparameters
    key: jax.Array
    num_batches: int


def _compile_run(config: program.ProgramConfig, params, opt_state, data, hyper, key) -> _Run:
    start = time.perf_counter()
    compiled = program.compiled_program(
        config, params, opt_state, *data, hyper, key, program.int32(0), program.int32(1)
    )
    seconds = time.perf_counter() - start
    return _Run(compiled, seconds, params, opt_state, data, hyper, key, config.num_batches)


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


def _chunk_history(chunk: program.EpochMetrics, done: int, first_epoch: int) -> History:
    """The history of the first ``done`` epochs of a program call that began at ``first_epoch``.

    Every ``HISTORY_KEYS`` series, and the diagnostics of the epochs that recorded them.
    """
    history = {
        name: [float(v) for v in getattr(chunk, name)[:done]] for name in metrics.HISTORY_KEYS
    }
    if chunk.diagnostics:
        recorded = [
            i for i in range(done) if any(np.isfinite(s[i]) for s in chunk.diagnostics.values())
        ]
        history["diagnostics_epoch"] = [first_epoch + i + 1 for i in recorded]
        for name, series in chunk.diagnostics.items():
            history[name] = [float(series[i]) for i in recorded]
    return history


def _run_chunks(
    run: _Run, options: _Options, callback: Callable[[Progress], Any] | None, public
) -> tuple[Any, Any, History, int, float, Divergence | None]:
    """Calls the compiled program until ``options.epochs``, a divergence or the callback's stop.

    Each call runs about half a second of epochs (or ``options.epochs_per_call``).
    """
    params, opt_state, history = run.params, run.opt_state, {}
    epoch, chunk, seconds, diverged = options.start_epoch, options.epochs_per_call or 1, 0.0, None
    while epoch < options.epochs and diverged is None:
        chunk = max(1, min(chunk, options.epochs - epoch, MAX_EPOCHS_PER_CALL))
        t0 = time.perf_counter()
        state, bad_epoch, done, chunk_metrics = run.compiled(
            params,
            opt_state,
            *run.data,
            run.hyper,
            run.key,
            program.int32(epoch),
            program.int32(chunk),
        )
        done, chunk_metrics, finite = jax.device_get((done, chunk_metrics, state.finite))
        elapsed = time.perf_counter() - t0
        seconds += elapsed
        params, opt_state, done = state.params, state.opt_state, int(done)
        if not finite:
            diverged = Divergence(int(bad_epoch), int(state.bad_step))
            done -= 1  # the epoch where the loss diverged did not complete
        for name, values in _chunk_history(chunk_metrics, done, epoch).items():
            history.setdefault(name, []).extend(values)
        epoch += done
        stop = callback is not None and bool(
            callback(Progress(epoch, public(history), params, opt_state))
        )
        if options.epochs_per_call is None:
            chunk = int(np.clip(0.5 / max(elapsed / max(done, 1), 1e-6), 1, MAX_EPOCHS_PER_CALL))
        chunk, stop = _agreed(chunk, stop)
        if stop:
            break
    return params, opt_state, history, epoch, seconds, diverged


def _agreed(chunk: int, stop: bool) -> tuple[int, bool]:
    """What every process of a multi-process run does next: process 0's epochs per call, and a
    stop if any process's callback asked for one, so that all run the same calls."""
    if jax.process_count() == 1:
        return chunk, stop
    votes = multihost_utils.process_allgather(np.array([chunk, stop], np.int32))
    votes = np.asarray(votes).reshape(jax.process_count(), 2)
    return int(votes[0, 0]), bool(votes[:, 1].any())


def train(
    params: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    model: Model = metrics.DEFAULT_MODEL,
    optimizer: optax.GradientTransformation | steps.OptimizerFactory | None = None,
    learning_rate: float | None = None,
    opt_state: Any = None,
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
      epochs: the epoch to stop at: trains epochs ``start_epoch .. epochs - 1``.
      batch_size: samples per minibatch (see the module docstring for the remainder).
      key: ``jax.random`` key for shuffling and dropout.
      grad: ``"manual"`` (the model's ``backward``) or ``"autodiff"`` (``jax.grad`` of the same
        loss).
      l2: L2 strength added to the loss (weights only).
      dropout_rate: dropout on hidden layers during training; evaluation never drops.
      validation: optional ``(x_val, y_val)``, evaluated after every epoch.
      start_epoch: the first epoch to run, for resuming.
      epochs_per_call: epochs per compiled call; default adapts to about two calls a second.
      callback: called after each compiled call with a ``Progress`` (e.g. to show progress or
        save a checkpoint); when it returns something true, training stops there and the result
        holds the state it saw. In a multi-process run, every process stops when any one's
        callback asks to.
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

    Returns:
      A ``TrainResult``.
    """
    data = checked_data(model, params, x, y, validation)
    options = _checked_options(
        epochs, batch_size, start_epoch, epochs_per_call, diagnostics_every, l2, dropout_rate
    )
    optimizer = DEFAULT_OPTIMIZER if optimizer is None else optimizer
    check_optimizer(optimizer, learning_rate)
    if learning_rate is not None:
        _validation.check_real("learning_rate", learning_rate)
        _validation.check_positive("learning_rate", learning_rate)
    if opt_state is None:
        opt_state = steps.optimizer_at(optimizer, learning_rate).init(params)
    batch_size = min(options.batch_size, data[0].shape[0])
    layout = _layout(devices, batch_size)

    # Place everything on the device(s) once; copies let the caller keep its own arrays, which
    # donation would otherwise invalidate.
    params, opt_state = jax.tree.map(jnp.array, (params, opt_state))
    dtype = data[0].dtype
    # Checked as the program will hold them: in the data's dtype.
    _validation.check_below_one_in("dropout_rate", dropout_rate, dtype)
    _validation.check_l2_finite("l2", l2, [w for w in jax.tree.leaves(params) if jnp.ndim(w) >= 2])
    hyper = steps.Hyperparameters(
        None if learning_rate is None else jnp.asarray(learning_rate, dtype),
        *(jnp.asarray(v, dtype) for v in (l2, dropout_rate)),
    )
    (params, opt_state, hyper, key), data = distributed.place(
        layout, (params, opt_state, hyper, key), data, validation is not None
    )
    config = program.ProgramConfig(
        model=model,
        optimizer=optimizer,
        grad=grad,
        use_l2=_validation.concrete_float(l2) != 0.0,
        use_dropout=_validation.concrete_float(dropout_rate) != 0.0,
        num_batches=data[0].shape[0] // batch_size,
        batch_size=batch_size,
        with_validation=validation is not None,
        max_epochs=MAX_EPOCHS_PER_CALL,
        vmapped=False,
        diagnostics_every=options.diagnostics_every,
        diagnostics_batch=min(data[0].shape[0], _DIAGNOSTICS_BATCH),
        batch_sharding=None if layout is None else layout.batch,
    )
    run = _compile_run(config, params, opt_state, data, hyper, key)
    keys = metrics.history_keys(model.loss, validation is not None)
    if options.diagnostics_every:
        keys += ("diagnostics_epoch", *diagnostics.history_keys(len(params)))

    def public(history: History) -> History:
        return {k: list(history.get(k, [])) for k in keys}

    params, opt_state, history, epoch, seconds, diverged = _run_chunks(
        run, options, callback, public
    )
    steps_run = (epoch - options.start_epoch) * run.num_batches
    return TrainResult(
        params,
        opt_state,
        public(history),
        epoch - options.start_epoch,
        steps_run / seconds if seconds > 0 else 0.0,
        run.compile_seconds,
        diverged,
    )
