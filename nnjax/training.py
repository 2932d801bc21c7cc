r"""Jitted training: whole epochs compiled, gradients from ``backward_pass`` or from autodiff.

``train`` runs minibatch training of a network from ``nnjax.network`` with any
``optax.GradientTransformation`` (nnjax's hand-written Adam by default). One call to the compiled
program runs several epochs: a ``lax.while_loop`` over epochs, each a ``lax.scan`` over its
minibatches, with no host round-trip per step. Between calls, Python updates the progress bar,
so the number of epochs per call is chosen to refresh it about twice a second, and changing that
number never recompiles (it is a traced loop bound).

Randomness is a pure function of the key and the epoch number: epoch ``e`` shuffles with
a key split from ``fold_in(key, e)``, and its step ``s`` draws dropout masks from ``fold_in`` of
the other half and ``s``. So the
same key and data give bit-identical results on the same machine, and resuming at epoch ``e``
from a checkpoint gives exactly what an uninterrupted run would.

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

import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from nnjax import _validation, diagnostics, network, optimizers
from nnjax.regularization import l2_regularization

History = dict[str, list[float]]

GRADIENT_SOURCES = ("manual", "autodiff")
"""``"manual"``: ``forward_pass`` + ``backward_pass``; ``"autodiff"``: ``jax.grad`` of the loss."""

_MAX_EPOCHS_PER_CALL = 256
# One default optimizer object: the compile cache keys on the optimizer, and a new adam(1e-3)
# per call would recompile every call.
_DEFAULT_OPTIMIZER = optimizers.adam(1e-3)
_DIAGNOSTICS_BATCH = 256


class Divergence(NamedTuple):
    """Where training met a non-finite loss (both zero-based); ``step`` is the epoch's last when
    every loss was finite but the parameters or optimizer state it ended with were not."""

    epoch: int
    step: int


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


def prepare_targets(y: jax.Array, loss: str) -> jax.Array:
    """Converts class labels to the target format ``loss`` needs.

    Integer labels ``(n,)`` stay as they are for ``"softmax_cross_entropy"`` and become float
    ``(n, 1)`` columns for ``"binary_cross_entropy"``; anything else passes through unchanged.
    """
    y = jnp.asarray(y)
    if loss == "binary_cross_entropy" and y.ndim == 1:
        concrete_labels = jnp.issubdtype(y.dtype, jnp.integer) and not isinstance(
            y, jax.core.Tracer
        )
        if concrete_labels and not np.isin(np.asarray(y), (0, 1)).all():
            raise ValueError(
                f"binary_cross_entropy needs labels 0 and 1, got {np.unique(np.asarray(y))}"
            )
        return y.astype(jnp.float32)[:, None]
    return y


def has_accuracy(loss: str) -> bool:
    """Whether classification accuracy is defined for networks trained with ``loss``."""
    return loss != "mse"


def accuracy(output: jax.Array, y: jax.Array, loss: str) -> jax.Array:
    """Fraction of correct predictions.

    Softmax outputs ``(batch, classes)``: the argmax against integer (or one-hot) labels. Sigmoid
    outputs ``(batch, k)``: each output thresholded at 0.5 against its 0/1 target.
    """
    if loss == "softmax_cross_entropy":
        labels = y if y.ndim == 1 else jnp.argmax(y, axis=-1)
        return jnp.mean(jnp.argmax(output, axis=-1) == labels)
    if loss == "binary_cross_entropy":
        _validation.check_same_shape("sigmoid outputs", output, "targets", y)
        return jnp.mean((output > 0.5) == (y > 0.5))
    raise ValueError(f"accuracy is not defined for loss {loss!r}")


def evaluate(
    params: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    activation: str | Sequence[str] = "relu",
    loss: str = "softmax_cross_entropy",
) -> tuple[jax.Array, jax.Array]:
    """Loss and accuracy of the network on ``(x, y)`` in evaluation mode (no dropout, no L2).

    Returns ``(loss, accuracy)`` as scalars; the accuracy is NaN for ``loss="mse"``.
    """
    output, cache = network.forward_pass(params, x, activation=activation, loss=loss)
    value = network.OUTPUT_LOSSES[loss].loss(y, cache[f"z{len(params)}"])
    acc = accuracy(output, y, loss) if has_accuracy(loss) else jnp.full((), jnp.nan)
    return value, acc.astype(value.dtype)


def _int32(value: int) -> jax.Array:
    """Epoch and step counters are int32 whether or not x64 is enabled."""
    return jnp.asarray(value, jnp.int32)


def _checked_data(
    params: Any,
    x: jax.Array,
    y: jax.Array,
    validation: tuple[jax.Array, jax.Array] | None,
    activation: Any,
    loss: str,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Checks training (and validation) data against one network's parameters, at trace cost.

    Returns ``(x, y, x_val, y_val)`` with targets in the format ``loss`` needs. Without
    validation data, ``x_val, y_val`` are one-sample placeholders that are never evaluated.
    """
    sizes = network.layer_sizes(params)
    network.hidden_activations(activation, len(sizes) - 2)
    pairs = [(x, y), validation] if validation is not None else [(x, y)]
    checked = []
    for name, (inputs, targets) in zip(("x", "validation x"), pairs, strict=False):
        inputs = _validation.check_float_array(name, inputs)
        if inputs.ndim != 2 or inputs.shape[1] != sizes[0]:
            raise ValueError(f"{name} must have shape (n, {sizes[0]}), got {inputs.shape}")
        targets = prepare_targets(targets, loss)
        for what, array in ((name, inputs), (f"the targets of {name}", targets)):
            if not bool(jnp.all(jnp.isfinite(array))):  # integer labels are always finite
                raise ValueError(f"{what} hold non-finite values (NaN or inf)")
        if targets.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"{name} has {inputs.shape[0]} samples but its targets have {targets.shape[0]}"
            )
        # Tracing one evaluation runs every shape check of targets against outputs.
        jax.eval_shape(
            lambda p, x=inputs, y=targets: evaluate(p, x, y, activation=activation, loss=loss),
            params,
        )
        checked.append((inputs, targets))
    (x, y), (x_val, y_val) = checked[0], checked[-1] if validation is not None else (x[:1], y[:1])
    return x, y, x_val, y_val


def _gradient_fn(
    grad: str, activation: Any, loss: str, use_l2: bool, use_dropout: bool
) -> Callable:
    """``(params, x, y, l2, dropout_rate, key) -> (loss, grads)`` from either source.

    Without ``use_l2`` / ``use_dropout`` the program has no L2 or dropout code at all; with them,
    their strengths are traced, so changing them does not recompile.
    """
    _validation.check_choice("grad", grad, GRADIENT_SOURCES)
    arch = {"activation": activation, "loss": loss}

    def options(l2, dropout_rate, key):
        return {
            "l2": l2 if use_l2 else 0.0,
            "dropout_rate": dropout_rate if use_dropout else 0.0,
            "key": key if use_dropout else None,
            "train": use_dropout,
        }

    def manual(params, x, y, l2, dropout_rate, key):
        opts = options(l2, dropout_rate, key)
        l2 = opts.pop("l2")
        _, cache = network.forward_pass(params, x, **arch, **opts)
        value = network.OUTPUT_LOSSES[loss].loss(y, cache[f"z{len(params)}"])
        if use_l2:
            value = value + l2_regularization([p["W"] for p in params], l2)
        return value, network.backward_pass(params, x, y, cache, **arch, l2=l2)

    def autodiff(params, x, y, l2, dropout_rate, key):
        return jax.value_and_grad(network.network_loss)(
            params, x, y, **arch, **options(l2, dropout_rate, key)
        )

    return manual if grad == "manual" else autodiff


class Hyperparameters(NamedTuple):
    """The float hyperparameters of a training program: traced, so changing them never recompiles
    (and a sweep can vmap over them)."""

    learning_rate: jax.Array | float
    l2: jax.Array | float
    dropout_rate: jax.Array | float


OptimizerFn = Callable[[Any], optax.GradientTransformation]


def _optimizer_fn(optimizer: optax.GradientTransformation | OptimizerFn) -> OptimizerFn:
    """A fixed optimizer ignores the traced learning rate; a factory is called with it."""
    if isinstance(optimizer, optax.GradientTransformation):
        return lambda learning_rate: optimizer
    return optimizer


def make_train_step(
    *,
    activation: str | Sequence[str] = "relu",
    loss: str = "softmax_cross_entropy",
    optimizer: optax.GradientTransformation | OptimizerFn,
    grad: str = "manual",
    use_l2: bool = False,
    use_dropout: bool = False,
) -> Callable:
    """One optimizer step: ``step(params, opt_state, x, y, hyper, key) -> (params, opt_state, loss)``.

    Args:
      activation, loss: the architecture, as in ``network.forward_pass``.
      optimizer: an ``optax.GradientTransformation``, or a function from a (traced) learning rate
        to one, such as ``nnjax.adam``; then ``hyper.learning_rate`` is used.
      grad: ``"manual"`` (``forward_pass`` + ``backward_pass``) or ``"autodiff"`` (``jax.grad``).
      use_l2, use_dropout: whether the program contains L2 and dropout at all (static); their
        strengths come from ``hyper`` (traced).

    The step is pure: jit it (donating ``params`` and ``opt_state``), scan it, or vmap it.
    ``loss`` returned is the training objective on the batch (with L2, with dropout).
    """
    value_and_grad = _gradient_fn(grad, activation, loss, use_l2, use_dropout)
    optimizer_fn = _optimizer_fn(optimizer)

    def step(params, opt_state, x, y, hyper: Hyperparameters, key):
        value, grads = value_and_grad(params, x, y, hyper.l2, hyper.dropout_rate, key)
        updates, opt_state = optimizer_fn(hyper.learning_rate).update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def _all_finite(tree: Any) -> jax.Array:
    """True where every element of every leaf of ``tree`` is finite (integer leaves always are)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


class EpochState(NamedTuple):
    """What an epoch carries: parameters, optimizer state, and whether every loss was finite.

    ``bad_step`` is the step (within the epoch) of the first non-finite loss, or -1.
    """

    params: Any
    opt_state: Any
    finite: jax.Array
    bad_step: jax.Array


_FEISTEL_ROUNDS = 8


def _constrain(arrays: tuple, sharding: jax.sharding.Sharding | None) -> tuple:
    if sharding is None:
        return arrays
    return tuple(jax.lax.with_sharding_constraint(a, sharding) for a in arrays)


def _mix32(x: jax.Array) -> jax.Array:
    """A 32-bit integer hash (the "lowbias32" xor-shift-multiply mixer)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def shuffle_indices(key: jax.Array, n: int) -> jax.Array:
    """A pseudo-random permutation of ``0 .. n-1`` chosen by ``key``, computed without sorting.

    ``jax.random.permutation`` sorts random keys, and a sort is the slowest part of a small
    network's epoch on a CPU (about 7 ms for 12,800 indices, ten times this). Here each index is
    encrypted instead: a balanced 8-round Feistel network over the ``2k`` bits that cover ``n``,
    with round keys drawn from ``key`` and the mixer ``_mix32`` as its round function, is a
    bijection of ``[0, 4^k)``; re-encrypting every value that falls outside ``[0, n)`` until it
    falls inside ("cycle walking") restricts it to a bijection of ``[0, n)``. The cost is O(n)
    elementwise integer work. Each index lands in every position with frequency ``1/n`` up to
    sampling noise (a test checks it), which is what minibatch shuffling needs; it is not a
    uniform draw from all ``n!`` permutations.

    Returns int32 indices of shape ``(n,)``.
    """
    half = max(1, (max(1, math.ceil(math.log2(n))) + 1) // 2)
    mask = jnp.uint32((1 << half) - 1)
    round_keys = jax.random.bits(key, (_FEISTEL_ROUNDS,), jnp.uint32)

    def encrypt(v):
        left, right = v >> half, v & mask
        for r in range(_FEISTEL_ROUNDS):
            left, right = right, left ^ (_mix32(right ^ round_keys[r]) & mask)
        return (left << half) | right

    v = encrypt(jnp.arange(n, dtype=jnp.uint32))
    v = jax.lax.while_loop(lambda v: jnp.any(v >= n), lambda v: jnp.where(v >= n, encrypt(v), v), v)
    return v.astype(jnp.int32)


def make_train_epoch(
    step: Callable,
    *,
    num_batches: int,
    batch_size: int,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> Callable:
    """A whole epoch as one ``lax.scan``: ``epoch(state, x, y, hyper, key) -> (state, losses)``.

    The epoch shuffles ``x`` and ``y`` (``shuffle_indices``) with a key split from ``key``, cuts the first
    ``num_batches * batch_size`` samples of the permutation into minibatches, and runs ``step``
    on each, with dropout keys folded from the other half of ``key`` and the step number. At the
    first non-finite loss the state stops changing (the parameters stay the last finite ones)
    and ``state.finite`` becomes False. ``losses`` has shape ``(num_batches,)``.

    With ``batch_sharding`` (data parallelism, see ``data_parallel``), each minibatch is laid out
    by it, normally split along the batch axis over the devices of a mesh; with parameters and
    optimizer state replicated, XLA partitions the step and inserts the all-reduce that sums
    the gradient's per-device parts.
    """

    def epoch(state: EpochState, x, y, hyper: Hyperparameters, key):
        shuffle_key, step_key = jax.random.split(key)
        order = shuffle_indices(shuffle_key, x.shape[0])
        batches = order[: num_batches * batch_size].reshape(num_batches, batch_size)

        def body(state: EpochState, inputs):
            i, index = inputs
            params, opt_state, value = step(
                state.params,
                state.opt_state,
                *_constrain((x[index], y[index]), batch_sharding),
                hyper,
                jax.random.fold_in(step_key, i),
            )
            ok = state.finite & jnp.isfinite(value)
            # A select, not a lax.cond: XLA fuses it into the update (a cond costs a copy of
            # every parameter and a branch per step).
            params, opt_state = jax.tree.map(
                lambda new, old: jnp.where(ok, new, old),
                (params, opt_state),
                (state.params, state.opt_state),
            )
            bad_step = jnp.where(state.finite & ~ok, i, state.bad_step)
            return EpochState(params, opt_state, ok, bad_step), value

        return jax.lax.scan(body, state, (jnp.arange(num_batches, dtype=jnp.int32), batches))

    return epoch


def _build_program(
    *,
    activation: Any,
    loss: str,
    optimizer: optax.GradientTransformation | OptimizerFn,
    grad: str,
    use_l2: bool,
    use_dropout: bool,
    num_batches: int,
    batch_size: int,
    with_validation: bool,
    max_epochs: int,
    diagnostics_every: int = 0,
    diagnostics_batch: int = 0,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> Callable:
    """The training program, not yet compiled: ``num_epochs`` (traced) epochs from
    ``first_epoch``, with the metrics of each epoch, stopping early at a non-finite loss.

    ``run(params, opt_state, x, y, x_val, y_val, hyper, key, first_epoch, num_epochs)`` returns
    ``(state, bad_epoch, epochs_done, metrics)`` with ``metrics`` of shape ``(max_epochs, 4 + D)``:
    train loss and accuracy, validation loss and accuracy (NaN where absent), then, every
    ``diagnostics_every`` epochs, the ``D`` entries of ``diagnostics.history_keys`` computed on
    the first ``diagnostics_batch`` training samples (NaN in the other epochs).
    """
    step = make_train_step(
        activation=activation,
        loss=loss,
        optimizer=optimizer,
        grad=grad,
        use_l2=use_l2,
        use_dropout=use_dropout,
    )
    epoch_fn = make_train_epoch(
        step, num_batches=num_batches, batch_size=batch_size, batch_sharding=batch_sharding
    )
    arch = {"activation": activation, "loss": loss}
    optimizer_fn = _optimizer_fn(optimizer)

    def run(params, opt_state, x, y, x_val, y_val, hyper, key, first_epoch, num_epochs):
        nan = jnp.full((), jnp.nan, x.dtype)
        width = 4 + (len(diagnostics.history_keys(len(params))) if diagnostics_every else 0)

        def diagnostic_row(state, epoch):
            def compute():
                return diagnostics.diagnostic_row(
                    state.params,
                    x[:diagnostics_batch],
                    y[:diagnostics_batch],
                    optimizer_fn(hyper.learning_rate).update,
                    state.opt_state,
                    **arch,
                )

            skip = jnp.full((width - 4,), jnp.nan, x.dtype)
            return jax.lax.cond((epoch + 1) % diagnostics_every == 0, compute, lambda: skip)

        def one_epoch(loop):
            i, start, bad_epoch, metrics = loop
            epoch = first_epoch + i
            state, _ = epoch_fn(start, x, y, hyper, jax.random.fold_in(key, epoch))
            # An epoch that met a non-finite loss, or ended with non-finite parameters or optimizer
            # state (an update can overflow while every loss was finite), does not count: the
            # state stays where the epoch started, so the result is always a completed epoch's.
            ends_finite = _all_finite((state.params, state.opt_state))
            finite = state.finite & ends_finite
            state = EpochState(
                *jax.tree.map(
                    lambda new, old: jnp.where(finite, new, old),
                    (state.params, state.opt_state),
                    (start.params, start.opt_state),
                ),
                finite,
                jnp.where(state.finite & ~ends_finite, num_batches - 1, state.bad_step),
            )
            validation = evaluate(state.params, x_val, y_val, **arch) if with_validation else ()
            row = jnp.stack(
                [
                    *evaluate(state.params, x, y, **arch),
                    *validation,
                    *(nan,) * (2 - len(validation)),
                ]
            )
            if diagnostics_every:
                row = jnp.concatenate([row, diagnostic_row(state, epoch)])
            bad_epoch = jnp.where(state.finite, bad_epoch, epoch)
            return i + 1, state, bad_epoch, metrics.at[i].set(row.astype(x.dtype))

        def keep_going(loop):
            i, state, _, _ = loop
            return (i < num_epochs) & state.finite

        start = EpochState(params, opt_state, jnp.array(True), _int32(-1))
        metrics = jnp.full((max_epochs, width), jnp.nan, x.dtype)
        epochs_done, state, bad_epoch, metrics = jax.lax.while_loop(
            keep_going, one_epoch, (_int32(0), start, _int32(-1), metrics)
        )
        return state, bad_epoch, epochs_done, metrics

    return run


class DataParallel(NamedTuple):
    """Shardings for data-parallel training over a one-axis mesh named ``"data"``."""

    mesh: jax.sharding.Mesh
    replicated: jax.sharding.NamedSharding  # parameters, optimizer state, keys
    batch: jax.sharding.NamedSharding  # each minibatch, split along its first axis
    # The whole dataset: replicated in one process; split along its rows when each of several
    # processes holds its own rows (see nnjax.distributed).
    data: jax.sharding.NamedSharding

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size


def data_parallel(devices: int | str = "all") -> DataParallel:
    """A mesh of the first ``devices`` local devices (or ``"all"``) and its shardings.

    In a multi-process run (``nnjax.distributed.initialize``), the mesh holds the devices of all
    processes, in process order, and ``devices`` must be ``"all"`` or their number: every
    process takes part in every step.

    Raises ValueError for a count that is not a positive integer or exceeds the devices there are.
    """
    multiprocess = jax.process_count() > 1
    available = (
        sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
        if multiprocess
        else jax.local_devices()
    )
    if devices == "all":
        count = len(available)
    elif isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        count = devices
    else:
        raise ValueError(f'devices must be a positive integer or "all", got {devices!r}')
    if count > len(available):
        raise ValueError(f"asked for {count} devices but only {len(available)} are available")
    if multiprocess and count != len(available):
        raise ValueError(
            f"a run of {jax.process_count()} processes trains on all {len(available)} of their "
            f'devices; got devices={devices!r} (use "all")'
        )
    mesh = jax.sharding.Mesh(np.asarray(available[:count]), ("data",))
    replicated, rows = (
        jax.sharding.NamedSharding(mesh, spec)
        for spec in (jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec("data"))
    )
    return DataParallel(mesh, replicated, rows, rows if multiprocess else replicated)


def _place(
    layout: DataParallel | None, state: tuple, data: tuple, with_validation: bool
) -> tuple[tuple, tuple]:
    """Puts ``state`` (parameters, optimizer state, hyperparameters, then the key) and ``data``
    (``x, y, x_val, y_val``) on the default device, or on the devices of ``layout``.

    With several processes, ``data`` holds this process's rows only; they become global arrays
    split along their rows (``layout.data``), the processes' rows concatenated in process order.
    """
    if layout is None:
        return jax.device_put((state, data))
    if jax.process_count() == 1:
        return jax.device_put((state, data), layout.replicated)
    # device_put checks that every process passes the same state; it takes arrays, not keys.
    *arrays, key = state
    *arrays, key_data = jax.device_put((*arrays, jax.random.key_data(key)), layout.replicated)
    state = (*arrays, jax.random.wrap_key_data(key_data, impl=jax.random.key_impl(key)))
    rows = np.asarray(multihost_utils.process_allgather(np.array([len(a) for a in data[::2]])))
    local = jax.local_device_count()
    names = ("x", "validation x") if with_validation else ("x",)
    for name, counts in zip(names, rows.T, strict=False):
        if np.any(counts != counts[0]) or counts[0] % local:
            raise ValueError(
                f"every process must hold as many rows of {name}, a multiple of its {local} local "
                f"devices; the processes hold {counts.tolist()} (see nnjax.distributed.process_rows)"
            )
    if not with_validation:  # placeholders, never evaluated: the same zeros in every process
        data = (*data[:2], *(np.zeros_like(np.asarray(a)) for a in data[2:]))
    shardings = (layout.data,) * 2 + ((layout.data if with_validation else layout.replicated),) * 2
    return state, tuple(
        jax.make_array_from_process_local_data(sharding, np.asarray(a))
        for sharding, a in zip(shardings, data, strict=True)
    )


class _ProgramConfig(NamedTuple):
    """Everything static about a training program (hashable: the key of the compile cache)."""

    activation: str | tuple[str, ...]
    loss: str
    optimizer: optax.GradientTransformation | OptimizerFn
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
    batch_sharding: jax.sharding.Sharding | None = None  # data parallelism: see data_parallel


def _compiled_program(config: _ProgramConfig, *args: Any) -> Any:
    """The compiled program for ``config`` and the shapes of ``args``, compiled at most once."""
    leaves, treedef = jax.tree.flatten(args)
    signature = (
        treedef,
        tuple(
            jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding if x.committed else None)
            for x in leaves
        ),
    )
    return _compile(config, signature)


@functools.lru_cache(maxsize=16)
def _compile(config: _ProgramConfig, signature: tuple) -> Any:
    treedef, structs = signature
    options = config._asdict()
    vmapped = options.pop("vmapped")
    program = _build_program(**options)
    if vmapped:
        program = jax.vmap(program, in_axes=(0, 0, None, None, None, None, 0, 0, None, None))
    # Data parallel: every output replicated, so that every process can read all of it.
    outputs = None
    if config.batch_sharding is not None:
        outputs = jax.sharding.NamedSharding(
            config.batch_sharding.mesh, jax.sharding.PartitionSpec()
        )
    # Parameters and optimizer state are donated: the new ones reuse their buffers.
    jitted = jax.jit(program, donate_argnums=(0, 1), out_shardings=outputs)
    return jitted.lower(*jax.tree.unflatten(treedef, structs)).compile()


def train(
    params: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    activation: str | Sequence[str] = "relu",
    loss: str = "softmax_cross_entropy",
    optimizer: optax.GradientTransformation | None = None,
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
    callback: Callable[[int, History], None] | None = None,
    diagnostics_every: int = 0,
    devices: int | str | None = None,
) -> TrainResult:
    """Trains a network by minibatch gradient descent, whole epochs at a time, compiled.

    Args:
      params: initial parameters (``network.init_network``), or a checkpoint's.
      x: training inputs ``(n, n_in)``, floating point.
      y: training targets: integer labels ``(n,)`` (converted by ``prepare_targets``) or targets in
        the shape ``loss`` needs.
      activation, loss: the architecture, as in ``network.forward_pass``.
      optimizer: any ``optax.GradientTransformation``; default ``nnjax.adam(1e-3)``.
      opt_state: the optimizer's state to start from (a checkpoint's); default ``optimizer.init``.
      epochs: the epoch to stop at: trains epochs ``start_epoch .. epochs - 1``.
      batch_size: samples per minibatch (see the module docstring for the remainder).
      key: ``jax.random`` key for shuffling and dropout.
      grad: ``"manual"`` (``backward_pass``) or ``"autodiff"`` (``jax.grad`` of the same loss).
      l2: L2 strength added to the loss (weights only).
      dropout_rate: dropout on hidden layers during training; evaluation never drops.
      validation: optional ``(x_val, y_val)``, evaluated after every epoch.
      start_epoch: the first epoch to run, for resuming.
      epochs_per_call: epochs per compiled call; default adapts to about two calls a second.
      callback: called after each call as ``callback(epochs_done, history)``, e.g. for progress.
      diagnostics_every: every this many epochs (0: never), record ``nnjax.diagnostics`` of the
        network on the first 256 training samples: the history gains ``diagnostics_epoch`` (the
        epochs recorded, counted from 1) and one list per entry of ``diagnostics.history_keys``.
      devices: data parallelism over this many local devices (or ``"all"``): each minibatch is
        split along the batch axis over a mesh of them, parameters and optimizer state are
        replicated, and the compiler sums the gradients (see ``data_parallel``). ``batch_size``
        must divide by the device count. None: the default device only, or, in a multi-process
        run (``nnjax.distributed``), ``"all"``: there ``x``, ``y`` and the validation data are
        this process's rows only (``distributed.process_rows``), every process holding as many,
        and the returned parameters are global arrays, replicated on every device.

    Returns:
      A ``TrainResult``.
    """
    x, y, x_val, y_val = _checked_data(params, x, y, validation, activation, loss)
    epochs = _validation.check_int("epochs", epochs, 1)
    batch_size = _validation.check_int("batch_size", batch_size, 1)
    start_epoch = _validation.check_int("start_epoch", start_epoch, 0)
    if start_epoch > epochs:
        raise ValueError(f"start_epoch must be in [0, epochs={epochs}], got {start_epoch}")
    if epochs_per_call is not None:
        epochs_per_call = _validation.check_int("epochs_per_call", epochs_per_call, 1)
    diagnostics_every = _validation.check_int("diagnostics_every", diagnostics_every, 0)
    _validation.check_in_range("l2", l2, low=0.0)
    _validation.check_in_range("dropout_rate", dropout_rate, low=0.0, high=1.0)

    optimizer = _DEFAULT_OPTIMIZER if optimizer is None else optimizer
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation such as nnjax.adam(1e-3), got "
            f"{optimizer!r} (sweep takes a factory of one; train takes the transformation)"
        )
    opt_state = optimizer.init(params) if opt_state is None else opt_state
    if devices is None and jax.process_count() > 1:
        devices = "all"
    layout = None if devices is None else data_parallel(devices)

    # Place everything on the device(s) once; copies let the caller keep its own arrays, which
    # donation would otherwise invalidate.
    params, opt_state = jax.tree.map(jnp.array, (params, opt_state))
    hyper = Hyperparameters(*(jnp.asarray(v, x.dtype) for v in (0.0, l2, dropout_rate)))
    (params, opt_state, hyper, key), (x, y, x_val, y_val) = _place(
        layout, (params, opt_state, hyper, key), (x, y, x_val, y_val), validation is not None
    )

    batch_size = min(batch_size, x.shape[0])
    num_batches = x.shape[0] // batch_size
    if layout is not None and batch_size % layout.num_devices:
        raise ValueError(
            f"batch_size {batch_size} does not divide by the {layout.num_devices} devices of "
            "data-parallel training; choose a multiple"
        )
    config = _ProgramConfig(
        activation=activation if isinstance(activation, str) else tuple(activation),
        loss=loss,
        optimizer=optimizer,
        grad=grad,
        use_l2=_validation.concrete_float(l2) != 0.0,
        use_dropout=_validation.concrete_float(dropout_rate) != 0.0,
        num_batches=num_batches,
        batch_size=batch_size,
        with_validation=validation is not None,
        max_epochs=_MAX_EPOCHS_PER_CALL,
        vmapped=False,
        diagnostics_every=diagnostics_every,
        diagnostics_batch=min(x.shape[0], _DIAGNOSTICS_BATCH),
        batch_sharding=None if layout is None else layout.batch,
    )

    start = time.perf_counter()
    compiled = _compiled_program(
        config, params, opt_state, x, y, x_val, y_val, hyper, key, _int32(0), _int32(1)
    )
    compile_seconds = time.perf_counter() - start

    history: History = {"train_loss": [], "train_accuracy": [], "val_loss": [], "val_accuracy": []}
    diagnostic_keys = diagnostics.history_keys(len(params)) if diagnostics_every else []
    diagnostic_history: History = {k: [] for k in ["diagnostics_epoch", *diagnostic_keys]}

    def published() -> History:
        public = _public_history(history, loss, validation is not None)
        return public | {k: list(v) for k, v in diagnostic_history.items() if diagnostic_keys}

    epoch, chunk, run_seconds, diverged = start_epoch, epochs_per_call or 1, 0.0, None
    while epoch < epochs and diverged is None:
        chunk = max(1, min(chunk, epochs - epoch, _MAX_EPOCHS_PER_CALL))
        t0 = time.perf_counter()
        state, bad_epoch, done, metrics = compiled(
            params, opt_state, x, y, x_val, y_val, hyper, key, _int32(epoch), _int32(chunk)
        )
        done, metrics, finite = jax.device_get((done, metrics, state.finite))
        done = int(done)
        elapsed = time.perf_counter() - t0
        run_seconds += elapsed
        params, opt_state = state.params, state.opt_state
        if not finite:
            diverged = Divergence(int(bad_epoch), int(state.bad_step))
            done -= 1  # the epoch where the loss diverged did not complete
        for i, row in enumerate(metrics[:done]):
            for name, value in zip(history, row[:4], strict=True):
                history[name].append(float(value))
            if diagnostic_keys and np.isfinite(row[4:]).any():
                diagnostic_history["diagnostics_epoch"].append(epoch + i + 1)
                for name, value in zip(diagnostic_keys, row[4:], strict=True):
                    diagnostic_history[name].append(float(value))
        epoch += done
        if callback is not None:
            callback(epoch, published())
        if epochs_per_call is None:
            per_epoch = elapsed / max(done, 1)
            chunk = int(np.clip(0.5 / max(per_epoch, 1e-6), 1, _MAX_EPOCHS_PER_CALL))

    steps = (epoch - start_epoch) * num_batches
    return TrainResult(
        params,
        opt_state,
        published(),
        epoch - start_epoch,
        steps / run_seconds if run_seconds > 0 else 0.0,
        compile_seconds,
        diverged,
    )


def _history_keys(loss: str, with_validation: bool) -> list[str]:
    keys = ["train_loss", "train_accuracy"] if has_accuracy(loss) else ["train_loss"]
    if with_validation:
        keys += [key.replace("train", "val") for key in keys]
    return keys


def _public_history(history: History, loss: str, with_validation: bool) -> History:
    return {k: list(history[k]) for k in _history_keys(loss, with_validation)}


class SweepResult(NamedTuple):
    """What ``sweep`` returns; model ``k`` used ``seeds[k]``, ``learning_rates[k]`` and so on.

    Attributes:
      params: the trained parameters, every leaf with a leading axis of ``K`` models.
      history: ``train_loss``, ``train_accuracy`` (and ``val_*`` with validation data), each a
        NumPy array ``(K, epochs)``; NaN after a model's loss diverged.
      diverged: ``(K,)`` booleans, True where a model diverged (see ``train``; its parameters
        are those after its last completed epoch).
      model_steps_per_second: ``K`` times the optimizer steps per second, compilation excluded.
      compile_seconds: time spent compiling the program.
    """

    params: Any
    history: dict[str, np.ndarray]
    diverged: np.ndarray
    model_steps_per_second: float
    compile_seconds: float


def _per_model(name: str, value: Any, num_models: int, dtype: jnp.dtype) -> jax.Array:
    """A scalar is used by every model; a sequence must have one entry per model."""
    array = jnp.asarray(value, dtype)
    if array.ndim == 0:
        return jnp.full((num_models,), array)
    if array.shape != (num_models,):
        raise ValueError(
            f"{name} must be a scalar or have one value per model ({num_models},), "
            f"got shape {array.shape}"
        )
    return array


def sweep(
    x: jax.Array,
    y: jax.Array,
    *,
    layer_sizes: Sequence[int],
    seeds: Sequence[int],
    learning_rates: Any,
    l2: Any = 0.0,
    dropout_rates: Any = 0.0,
    optimizer: OptimizerFn = optimizers.adam,
    activation: str | Sequence[str] = "relu",
    loss: str = "softmax_cross_entropy",
    init: str = "he",
    epochs: int = 10,
    batch_size: int = 32,
    grad: str = "manual",
    validation: tuple[jax.Array, jax.Array] | None = None,
) -> SweepResult:
    """Trains ``K`` networks in one compiled program, vmapped over seeds and hyperparameters.

    Model ``k`` is initialized and shuffled from ``jax.random.key(seeds[k])`` and trained with
    ``optimizer(learning_rates[k])``, L2 strength ``l2[k]`` and dropout rate ``dropout_rates[k]``
    (a scalar applies to every model). The hyperparameters are traced, not compiled in: another
    sweep of the same shapes reuses the compiled program. Otherwise it is ``train``, ``K`` times
    at once: the same epochs, minibatches and metrics.

    Args:
      x, y: the training data, shared by all models (as for ``train``).
      layer_sizes: ``[n_in, hidden..., n_out]``.
      seeds: ``K`` integer seeds.
      learning_rates, l2, dropout_rates: scalars or ``(K,)`` arrays.
      optimizer: a function from a learning rate to an ``optax.GradientTransformation``, such as
        ``nnjax.adam`` (the default), ``nnjax.sgd`` or
        ``lambda lr: nnjax.momentum(lr, beta=0.9)``.
      activation, loss, init, epochs, batch_size, grad, validation: as for ``train``.
    """
    seeds = np.asarray(seeds)
    if seeds.ndim != 1 or seeds.size == 0 or not np.issubdtype(seeds.dtype, np.integer):
        raise ValueError(
            f"seeds must be a non-empty 1-D sequence of integers, got {seeds.dtype} of shape "
            f"{seeds.shape}"
        )
    if seeds.min() < 0 or seeds.max() >= 2**32:
        raise ValueError(
            f"seeds must lie in [0, 2**32), got values in [{seeds.min()}, {seeds.max()}]"
        )
    seeds = jnp.asarray(seeds, jnp.uint32)
    num_models = seeds.shape[0]
    epochs = _validation.check_int("epochs", epochs, 1)
    batch_size = _validation.check_int("batch_size", batch_size, 1)
    sizes = _validation.check_layer_sizes(layer_sizes)
    dtype = _validation.check_float_array("x", x).dtype
    keys = jax.vmap(jax.random.key)(seeds)
    init_keys, train_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    params = jax.vmap(lambda k: network.init_network(k, sizes, init, dtype))(init_keys)
    template = jax.tree.map(lambda leaf: leaf[0], params)
    x, y, x_val, y_val = _checked_data(template, x, y, validation, activation, loss)
    hyper = Hyperparameters(
        *(
            _per_model(name, value, num_models, x.dtype)
            for name, value in (
                ("learning_rates", learning_rates),
                ("l2", l2),
                ("dropout_rates", dropout_rates),
            )
        )
    )
    for value in np.asarray(hyper.learning_rate):
        _validation.check_positive("learning_rates", value)
    for value in np.asarray(hyper.l2):
        _validation.check_in_range("l2", value, low=0.0)
    for value in np.asarray(hyper.dropout_rate):
        _validation.check_in_range("dropout_rates", value, low=0.0, high=1.0)
    opt_state = jax.vmap(lambda p, lr: optimizer(lr).init(p))(params, hyper.learning_rate)

    batch_size = min(batch_size, x.shape[0])
    config = _ProgramConfig(
        activation=activation if isinstance(activation, str) else tuple(activation),
        loss=loss,
        optimizer=optimizer,
        grad=grad,
        use_l2=bool(np.any(np.asarray(hyper.l2) != 0)),
        use_dropout=bool(np.any(np.asarray(hyper.dropout_rate) != 0)),
        num_batches=x.shape[0] // batch_size,
        batch_size=batch_size,
        with_validation=validation is not None,
        max_epochs=epochs,
        vmapped=True,
    )
    args = (params, opt_state, x, y, x_val, y_val, hyper, train_keys, _int32(0))
    start = time.perf_counter()
    compiled = _compiled_program(config, *args, _int32(epochs))
    compile_seconds = time.perf_counter() - start

    start = time.perf_counter()
    state, _, _, metrics = jax.block_until_ready(compiled(*args, _int32(epochs)))
    seconds = time.perf_counter() - start
    metrics = np.asarray(metrics)
    names = ["train_loss", "train_accuracy", "val_loss", "val_accuracy"]
    keys = _history_keys(loss, validation is not None)
    history = {name: metrics[:, :, i] for i, name in enumerate(names) if name in keys}
    steps = num_models * epochs * (x.shape[0] // batch_size)
    return SweepResult(
        state.params, history, ~np.asarray(state.finite), steps / seconds, compile_seconds
    )
