"""What a run's configuration determines, built for ``runs.Run`` in a few compiled programs.

The seed's key splits in three (``run_data.run_keys``): the data and its split, the initial
parameters, training. The data is read (``run_data.read``), then split and standardized
(``run_data.split``, its key derived in the same program) while a second thread initializes the
dense network (``network.init_network``), the optimizer's state and the training key; a
``--layers`` network (``run_model.build``) is initialized after the data, which it reshapes.
Each step is one compiled program whose results are those of running it operation by operation
(``_staging``), so a run starts from the same bits whichever way it is built.
"""

from __future__ import annotations

import concurrent.futures
import functools
from typing import Any, NamedTuple

import jax

from nnjax import _staging, datasets, network, run_data, run_model
from nnjax.model import Model

__all__ = ["Setup", "build"]


class Setup(NamedTuple):
    """What ``build`` returns: the attributes of ``runs.Run`` of the same names."""

    config: dict[str, Any]
    data: datasets.Dataset
    target_scale: tuple[float, float] | None
    layer_sizes: list[int] | None
    model: Model
    initial_params: Any
    initial_model_state: Any
    initial_opt_state: Any
    train_key: jax.Array


def build(config: dict[str, Any], optimizer: Any) -> Setup:
    """The data, model and initial state of the run of ``config``, trained by ``optimizer``.

    Args:
      config: the run's configuration (``runs.make_config``).
      optimizer: its optax transformation (``runs.build_optimizer``).

    Returns:
      A ``Setup``; its ``config`` gains a data file's ``data_sha256`` and a ``--layers``
      network's ``input_shape``.

    Raises:
      ValueError: for binary cross-entropy on more than two classes, as ``run_data.read``, or
        as ``run_model.build``.
    """
    source = run_data.read(config)
    if source.sha256 is not None:
        config = {**config, "data_sha256": source.sha256}
    if config["loss"] == "binary_cross_entropy" and source.num_classes != 2:
        raise ValueError(
            f"--loss binary_cross_entropy needs a two-class dataset; "
            f"{run_data.name(config)!r} has {source.num_classes} classes"
        )
    n_out = source.num_classes if config["loss"] == "softmax_cross_entropy" else 1
    if config["layers"] is not None:
        data, scale = run_data.split(config, source, config["seed"])
        _, init_key, train_key = run_data.run_keys(config["seed"])
        built = run_model.build(config, data, n_out, init_key)
        config = {**config, "input_shape": list(built.shape)}
        opt_state = _optimizer_init(optimizer, built.params)
        model, params, state = built.model, built.params, built.state
        return Setup(config, built.data, scale, None, model, params, state, opt_state, train_key)
    sizes = [source.num_features, *config["hidden"], n_out]
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="nnjax-init") as pool:
        start = pool.submit(_dense_start, config["seed"], tuple(sizes), config["init"], optimizer)
        data, scale = run_data.split(config, source, config["seed"])
    params, opt_state, train_key = start.result()
    model = network.DenseNetwork(config["activation"], config["loss"])
    return Setup(config, data, scale, sizes, model, params, (), opt_state, train_key)


@functools.partial(jax.jit, static_argnums=0, compiler_options=_staging.RUN_ONCE)
def _optimizer_init(optimizer: Any, params: Any) -> Any:
    """``optimizer.init(params)`` in one compiled program."""
    return optimizer.init(params)


def _initial_params(seed: int, sizes: tuple[int, ...], init: str) -> network.Params:
    """``network.init_network`` of the seed's parameter key (``run_data.run_keys``), traced to
    run in one compiled program with the same bits (``_staging``)."""
    layers = functools.partial(network.init_network, layer_sizes=sizes, init=init)
    return _staging.replay(lambda seed: layers(run_data.run_keys(seed)[1]), seed)


@functools.partial(jax.jit, static_argnums=(1, 2, 3), compiler_options=_staging.RUN_ONCE)
def _dense_start(seed: int, sizes: tuple[int, ...], init: str, optimizer: Any) -> tuple:
    """A dense network's initial parameters (``_initial_params``), the optimizer's state for
    them and the training key, in one compiled program."""
    params = _initial_params(seed, sizes, init)
    return params, optimizer.init(params), run_data.run_keys(seed)[2]
