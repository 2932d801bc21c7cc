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

A non-finite loss stops training at the step where it appears: the parameters and optimizer
state returned are the last ones with a finite loss, and ``TrainResult.diverged`` names the epoch
and step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnjax import _validation, network, optimizers
from nnjax.regularization import l2_regularization

History = dict[str, list[float]]

GRADIENT_SOURCES = ("manual", "autodiff")
"""``"manual"``: ``forward_pass`` + ``backward_pass``; ``"autodiff"``: ``jax.grad`` of the loss."""

_MAX_EPOCHS_PER_CALL = 256


class Divergence(NamedTuple):
    """Where training met a non-finite loss (both zero-based)."""

    epoch: int
    step: int


class TrainResult(NamedTuple):
    """What ``train`` returns.

    Attributes:
      params: the trained parameters (the last finite ones if training diverged).
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
    value = network.LOSSES[loss].loss(y, cache[f"z{len(params)}"])
    acc = accuracy(output, y, loss) if has_accuracy(loss) else jnp.full((), jnp.nan)
    return value, acc.astype(value.dtype)


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
        value = network.LOSSES[loss].loss(y, cache[f"z{len(params)}"])
        if use_l2:
            value = value + l2_regularization([p["W"] for p in params], l2)
        return value, network.backward_pass(params, x, y, cache, **arch, l2=l2)

    def autodiff(params, x, y, l2, dropout_rate, key):
        return jax.value_and_grad(network.network_loss)(
            params, x, y, **arch, **options(l2, dropout_rate, key)
        )

    return manual if grad == "manual" else autodiff


class _Carry(NamedTuple):
    params: Any
    opt_state: Any
    finite: jax.Array  # no non-finite loss seen yet
    bad_epoch: jax.Array
    bad_step: jax.Array


def _build_program(
    *,
    activation: Any,
    loss: str,
    optimizer: optax.GradientTransformation,
    grad: str,
    use_l2: bool,
    use_dropout: bool,
    num_batches: int,
    batch_size: int,
    with_validation: bool,
    max_epochs: int,
) -> Callable:
    """The compiled training program: ``num_epochs`` (traced) epochs from ``first_epoch``."""
    value_and_grad = _gradient_fn(grad, activation, loss, use_l2, use_dropout)
    arch = {"activation": activation, "loss": loss}

    def train_step(carry: _Carry, inputs, *, x, y, l2, dropout_rate, epoch, epoch_key):
        step, batch_index = inputs
        value, grads = value_and_grad(
            carry.params,
            x[batch_index],
            y[batch_index],
            l2,
            dropout_rate,
            jax.random.fold_in(epoch_key, step),
        )
        updates, opt_state = optimizer.update(grads, carry.opt_state, carry.params)
        params = optax.apply_updates(carry.params, updates)
        ok = carry.finite & jnp.isfinite(value)
        newly_bad = carry.finite & ~ok
        carry = _Carry(
            *jax.lax.cond(
                ok,
                lambda: (params, opt_state),
                lambda: (carry.params, carry.opt_state),
            ),
            ok,
            jnp.where(newly_bad, epoch, carry.bad_epoch),
            jnp.where(newly_bad, step, carry.bad_step),
        )
        return carry, None

    def run(params, opt_state, x, y, x_val, y_val, l2, dropout_rate, key, first_epoch, num_epochs):
        metrics = jnp.full((max_epochs, 4), jnp.nan, x.dtype)

        def one_epoch(state):
            i, carry, metrics = state
            epoch = first_epoch + i
            shuffle_key, epoch_key = jax.random.split(jax.random.fold_in(key, epoch))
            order = jax.random.permutation(shuffle_key, x.shape[0])
            batches = order[: num_batches * batch_size].reshape(num_batches, batch_size)

            def step(carry, inputs):
                return train_step(
                    carry,
                    inputs,
                    x=x,
                    y=y,
                    l2=l2,
                    dropout_rate=dropout_rate,
                    epoch=epoch,
                    epoch_key=epoch_key,
                )

            carry, _ = jax.lax.scan(step, carry, (jnp.arange(num_batches), batches))
            row = jnp.stack(
                [
                    *evaluate(carry.params, x, y, **arch),
                    *(
                        evaluate(carry.params, x_val, y_val, **arch)
                        if with_validation
                        else (jnp.full((), jnp.nan, x.dtype),) * 2
                    ),
                ]
            ).astype(x.dtype)
            return i + 1, carry, metrics.at[i].set(row)

        def keep_going(state):
            i, carry, _ = state
            return (i < num_epochs) & carry.finite

        start = _Carry(params, opt_state, jnp.array(True), jnp.array(-1), jnp.array(-1))
        epochs_done, carry, metrics = jax.lax.while_loop(
            keep_going, one_epoch, (jnp.array(0), start, metrics)
        )
        return carry, epochs_done, metrics

    # Parameters and optimizer state are donated: the new ones reuse their buffers.
    return jax.jit(run, donate_argnums=(0, 1))


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

    Returns:
      A ``TrainResult``.
    """
    sizes = network.layer_sizes(params)
    x = _validation.check_float_array("x", x)
    if x.ndim != 2 or x.shape[1] != sizes[0]:
        raise ValueError(f"x must have shape (n, {sizes[0]}), got {x.shape}")
    y = prepare_targets(y, loss)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0 <= start_epoch <= epochs:
        raise ValueError(f"start_epoch must be in [0, epochs={epochs}], got {start_epoch}")
    _validation.check_in_range("l2", l2, low=0.0)
    _validation.check_in_range("dropout_rate", dropout_rate, low=0.0, high=1.0)
    network.hidden_activations(activation, len(sizes) - 2)
    # One evaluation traces every shape check (targets against outputs) before any work.
    jax.eval_shape(lambda p: evaluate(p, x, y, activation=activation, loss=loss), params)
    if validation is not None:
        x_val = _validation.check_float_array("validation x", validation[0])
        y_val = prepare_targets(validation[1], loss)
        jax.eval_shape(
            lambda p: evaluate(p, x_val, y_val, activation=activation, loss=loss), params
        )
    else:
        x_val, y_val = x[:1], y[:1]  # placeholders of the right rank; never evaluated

    optimizer = optimizers.adam(1e-3) if optimizer is None else optimizer
    opt_state = optimizer.init(params) if opt_state is None else opt_state
    batch_size = min(batch_size, x.shape[0])
    num_batches = x.shape[0] // batch_size
    program = _build_program(
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
    )

    # Place everything on the device once; copies let the caller keep its own arrays, which
    # donation would otherwise invalidate.
    params, opt_state = jax.tree.map(jnp.array, (params, opt_state))
    x, y, x_val, y_val = jax.device_put((x, y, x_val, y_val))
    hyper = (jnp.asarray(l2, x.dtype), jnp.asarray(dropout_rate, x.dtype))

    start = time.perf_counter()
    compiled = program.lower(
        params, opt_state, x, y, x_val, y_val, *hyper, key, jnp.array(0), jnp.array(1)
    ).compile()
    compile_seconds = time.perf_counter() - start

    history: History = {"train_loss": [], "train_accuracy": [], "val_loss": [], "val_accuracy": []}
    epoch, chunk, run_seconds, diverged = start_epoch, epochs_per_call or 1, 0.0, None
    while epoch < epochs and diverged is None:
        chunk = max(1, min(chunk, epochs - epoch, _MAX_EPOCHS_PER_CALL))
        t0 = time.perf_counter()
        carry, done, metrics = compiled(
            params, opt_state, x, y, x_val, y_val, *hyper, key, jnp.array(epoch), jnp.array(chunk)
        )
        done, metrics, finite = jax.device_get((done, metrics, carry.finite))
        done = int(done)
        elapsed = time.perf_counter() - t0
        run_seconds += elapsed
        params, opt_state = carry.params, carry.opt_state
        if not finite:
            diverged = Divergence(int(carry.bad_epoch), int(carry.bad_step))
            done -= 1  # the epoch where the loss diverged did not complete
        for row in metrics[:done]:
            for name, value in zip(history, row, strict=True):
                history[name].append(float(value))
        epoch += done
        if callback is not None:
            callback(epoch, _public_history(history, loss, validation is not None))
        if epochs_per_call is None:
            per_epoch = elapsed / max(done, 1)
            chunk = int(np.clip(0.5 / max(per_epoch, 1e-6), 1, _MAX_EPOCHS_PER_CALL))

    steps = (epoch - start_epoch) * num_batches
    return TrainResult(
        params,
        opt_state,
        _public_history(history, loss, validation is not None),
        epoch - start_epoch,
        steps / run_seconds if run_seconds > 0 else 0.0,
        compile_seconds,
        diverged,
    )


def _public_history(history: History, loss: str, with_validation: bool) -> History:
    keys = ["train_loss"]
    if has_accuracy(loss):
        keys.append("train_accuracy")
    if with_validation:
        keys += ["val_loss", "val_accuracy"] if has_accuracy(loss) else ["val_loss"]
    return {k: list(history[k]) for k in keys}
