"""``sweep``: ``K`` networks trained as one compiled program, vmapped over seeds and hyperparameters.

Model ``k`` is initialized and shuffled from ``jax.random.key(seeds[k])`` and trained with its own
learning rate, L2 strength and dropout rate. The hyperparameters are traced, not compiled in:
another sweep of the same shapes reuses the compiled program. Otherwise it is ``train``, ``K``
times at once: the same epochs, minibatches and metrics (``nnjax.program``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnjax import _validation, metrics, network, optimizers, program, steps, training
from nnjax.model import Model

__all__ = ["LearningRateSweep", "SweepResult", "sweep", "sweep_learning_rates"]


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
      model_state: the models' state (batch normalization's statistics), every leaf with a
        leading axis of ``K``; ``()`` for models without.
    """

    params: Any
    history: dict[str, np.ndarray]
    diverged: np.ndarray
    model_steps_per_second: float
    compile_seconds: float
    model_state: Any = ()


def _checked_seeds(seeds: Sequence[int]) -> jax.Array:
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
    return jnp.asarray(seeds, jnp.uint32)


def _per_model(name: str, value: Any, num_models: int, dtype: jnp.dtype) -> jax.Array:
    """One value per model: a scalar is used by every model; a sequence must have one per model.

    Each value is range-checked as ``train`` checks its own.
    """
    array = jnp.asarray(value, dtype)
    if array.ndim == 0:
        array = jnp.full((num_models,), array)
    elif array.shape != (num_models,):
        raise ValueError(
            f"{name} must be a scalar or have one value per model ({num_models},), "
            f"got shape {array.shape}"
        )
    for v in np.asarray(array):
        if name == "learning_rates":
            _validation.check_positive(name, v)
        else:
            _validation.check_in_range(
                name, v, low=0.0, high=1.0 if name == "dropout_rates" else None
            )
    return array


def _hyperparameters(
    learning_rates: Any, l2: Any, dropout_rates: Any, num_models: int, dtype: jnp.dtype
) -> steps.Hyperparameters:
    return steps.Hyperparameters(
        None
        if learning_rates is None
        else _per_model("learning_rates", learning_rates, num_models, dtype),
        _per_model("l2", l2, num_models, dtype),
        _per_model("dropout_rates", dropout_rates, num_models, dtype),
    )


def _initial(model: Model, layer_sizes, init: str, dtype, keys: jax.Array) -> tuple[Any, Any]:
    """Every model's parameters and state, vmapped over ``keys``."""
    if layer_sizes is None:
        if not callable(getattr(model, "init", None)):
            raise ValueError("layer_sizes is needed for a model without its own init")
        return jax.vmap(lambda k: model.init(k, dtype))(keys)
    sizes = _validation.check_layer_sizes(layer_sizes)
    return jax.vmap(lambda k: network.init_network(k, sizes, init, dtype))(keys), ()


def sweep(
    x: jax.Array,
    y: jax.Array,
    *,
    layer_sizes: Sequence[int] | None = None,
    seeds: Sequence[int],
    learning_rates: Any = None,
    l2: Any = 0.0,
    dropout_rates: Any = 0.0,
    optimizer: optax.GradientTransformation | steps.OptimizerFactory = optimizers.adam,
    model: Model = metrics.DEFAULT_MODEL,
    init: str = "he",
    epochs: int = 10,
    batch_size: int = 32,
    grad: str = "manual",
    validation: tuple[jax.Array, jax.Array] | None = None,
    shuffle: bool = True,
) -> SweepResult:
    """Trains ``K`` models in one compiled program, vmapped over seeds and hyperparameters.

    Model ``k`` is initialized (``network.init_network(key, layer_sizes, init)`` for a dense
    network, ``model.init(key)`` for a ``sequential.Sequential``, with its state) and shuffled
    from ``jax.random.key(seeds[k])`` and trained with ``optimizer(learning_rates[k])``, L2
    strength ``l2[k]`` and dropout rate ``dropout_rates[k]`` (a scalar applies to every model).

    Args:
      x, y: the training data, shared by all models (as for ``train``).
      layer_sizes: ``[n_in, hidden..., n_out]`` of a dense network; None for a model with its
        own ``init`` (a ``sequential.Sequential``).
      seeds: ``K`` integer seeds.
      learning_rates: a scalar or ``(K,)`` array, for an optimizer factory; None with a fixed
        ``optax.GradientTransformation``, which holds its own (as for ``train``).
      l2, dropout_rates: scalars or ``(K,)`` arrays.
      optimizer: a function from a learning rate to an ``optax.GradientTransformation``, such as
        ``nnjax.adam`` (the default), ``nnjax.sgd`` or
        ``lambda lr: nnjax.momentum(lr, beta=0.9)``; or one fixed transformation for every model.
      model, init, epochs, batch_size, grad, validation, shuffle: as for ``train`` (``init`` as
        for ``network.init_network``).
    """
    seeds = _checked_seeds(seeds)
    training.check_optimizer(optimizer, learning_rates, learning_rate_name="learning_rates")
    epochs = _validation.check_int("epochs", epochs, 1)
    batch_size = _validation.check_int("batch_size", batch_size, 1)
    _validation.check_instance("shuffle", shuffle, bool)
    dtype = _validation.check_float_array("x", x).dtype
    init_keys, train_keys = jax.vmap(jax.random.split, out_axes=1)(jax.vmap(jax.random.key)(seeds))
    params, model_state = _initial(model, layer_sizes, init, dtype, init_keys)
    first = jax.tree.map(lambda leaf: leaf[0], (params, model_state))
    data = training.checked_data(model, *first, x, y, validation)
    hyper = _hyperparameters(learning_rates, l2, dropout_rates, seeds.shape[0], data[0].dtype)
    opt_state = jax.vmap(lambda p, lr: steps.optimizer_at(optimizer, lr).init(p))(
        params, hyper.learning_rate
    )
    batch_size = min(batch_size, data[0].shape[0])
    config = program.ProgramConfig(
        model=model,
        optimizer=optimizer,
        grad=grad,
        use_l2=bool(np.any(np.asarray(hyper.l2) != 0)),
        use_dropout=bool(np.any(np.asarray(hyper.dropout_rate) != 0)),
        num_batches=data[0].shape[0] // batch_size,
        batch_size=batch_size,
        with_validation=validation is not None,
        max_epochs=epochs,
        vmapped=True,
        shuffle=shuffle,
    )
    args = (params, opt_state, *data, hyper, train_keys, program.int32(0), program.int32(epochs))
    if jax.tree.leaves(model_state):
        args = (*args, None, model_state)
    start = time.perf_counter()
    compiled = program.compiled_program(config, *args)
    compile_seconds = time.perf_counter() - start

    start = time.perf_counter()
    state, _, _, history, _ = jax.block_until_ready(compiled(*args))
    seconds = time.perf_counter() - start
    keys = metrics.history_keys(model.loss, validation is not None)
    steps_run = seeds.shape[0] * epochs * config.num_batches
    return SweepResult(
        state.params,
        {name: np.asarray(getattr(history, name)) for name in keys},
        ~np.asarray(state.finite),
        steps_run / seconds,
        compile_seconds,
        state.model_state,
    )


class LearningRateSweep(NamedTuple):
    """What ``sweep_learning_rates`` returns.

    Attributes:
      final_loss: the final training loss of each run, ``(rates, seeds)``; NaN where it diverged.
      median: each rate's median over its runs that did not diverge (NaN if all did).
      best: the index of the rate with the lowest median; None if every run diverged.
      model_steps_per_second: the sweep's speed (see ``SweepResult``).
    """

    final_loss: np.ndarray
    median: np.ndarray
    best: int | None
    model_steps_per_second: float


def sweep_learning_rates(
    x: jax.Array,
    y: jax.Array,
    *,
    layer_sizes: Sequence[int],
    learning_rates: Any,
    num_seeds: int,
    **options: Any,
) -> LearningRateSweep:
    """One ``sweep`` over every (learning rate, seed) pair, summarized per learning rate.

    Seeds ``0 .. num_seeds - 1`` are used with every rate; ``options`` go to ``sweep``
    (``optimizer``, ``epochs``, ...).
    """
    rates = np.asarray(learning_rates)
    # One model per (rate, seed) pair: rates repeat, seeds cycle.
    result = sweep(
        x,
        y,
        layer_sizes=layer_sizes,
        seeds=np.tile(np.arange(num_seeds), len(rates)),
        learning_rates=np.repeat(rates, num_seeds),
        **options,
    )
    final = result.history["train_loss"][:, -1].reshape(len(rates), num_seeds)
    final = np.where(result.diverged.reshape(final.shape), np.nan, final)
    finite = [row[np.isfinite(row)] for row in final]
    median = np.array([np.median(row) if row.size else np.nan for row in finite])
    best = None if np.isnan(median).all() else int(np.nanargmin(median))
    return LearningRateSweep(final, median, best, result.model_steps_per_second)
