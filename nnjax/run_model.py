"""The model a run trains: the dense network of ``--hidden``, or the layers of ``--layers``.

Without ``layers`` a run trains ``network.DenseNetwork`` (``hidden``, ``activation``, ``init``,
``dropout``), on examples ``(n_features,)``. With ``layers``, an architecture as
``architecture.parse_layers`` reads it, the run trains
``Sequential(parse_layers(layers, shape), shape, loss)`` and every ``x`` is reshaped to
``(n, *shape)`` after standardization. The example shape is ``input_shape`` if given (its sizes
must multiply to the number of features), else the first convolution or pooling layer decides:

- a 2-D one (``conv2d``, ``maxpool2d``, ``avgpool2d``; for the digits also ``conv``,
  ``maxpool``, ``avgpool``) takes the digits as 8x8 grey images, ``(8, 8, 1)``;
- a 1-D one (``conv1d``, ``maxpool1d``, ``avgpool1d``; for other data also ``conv``,
  ``maxpool``, ``avgpool``) takes ``n`` features as ``(n, 1)``;
- without one, examples are ``(n_features,)``.

A 2-D layer on other data than the digits needs ``input_shape``.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nnjax import _validation, architecture, datasets, metrics
from nnjax.model import Model
from nnjax.sequential import Sequential, chain_init, is_weight

__all__ = [
    "DENSE_OPTIONS",
    "DIGITS_SHAPE",
    "MODEL_OPTIONS",
    "Built",
    "build",
    "class_predictions",
    "example_shape",
    "model_options",
    "parse_shape",
    "test_metrics",
    "test_predictions",
    "weights",
]

MODEL_OPTIONS = ("layers", "input_shape")
"""The configuration keys of ``--layers`` networks, None for a dense network. Run folders written
before they existed lack them."""
DENSE_OPTIONS = ("hidden", "activation", "init", "dropout", "diagnostics")
"""The options of the dense network alone; with ``layers`` they are None (or 0)."""
DIGITS_SHAPE = (8, 8, 1)
"""The digits' example shape for 2-D layers: 8x8 grey images, each row of 8 pixels in turn."""

# The first convolution or pooling layer of an architecture, and its rank: 1d, 2d or neither.
_SPATIAL = re.compile(r"\b(?:conv|maxpool|avgpool)(1d|2d)?\b")


def model_options(config: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its model's options resolved (``runs.make_config``).

    Args:
      config: the options, defaults filled in.
      given: the options given (not None).

    Returns:
      For a dense network: ``hidden`` a list, ``init`` ``"he"`` for ReLU (else ``"xavier"``) if
      None. With ``layers``: its text without whitespace, ``input_shape`` a list or None, and the
      dense network's ``hidden``, ``activation`` and ``init`` None.

    Raises:
      ValueError: ``input_shape`` without ``layers``; ``layers`` with a dense network's option
        (``DENSE_OPTIONS`` given, ``dropout`` or ``diagnostics`` not 0).
    """
    if config["layers"] is None:
        if config["input_shape"] is not None:
            raise ValueError("--input-shape shapes the examples of --layers; give --layers too")
        init = config["init"] or ("he" if config["activation"] == "relu" else "xavier")
        return {**config, "hidden": list(config["hidden"]), "init": init}
    _validation.check_instance("layers", config["layers"], str)
    dense = [name for name in DENSE_OPTIONS if given.get(name) not in (None, 0)]
    if dense:
        raise ValueError(
            f"--layers gives the whole network, so {', '.join('--' + name for name in dense)} "
            "cannot go with it (write dropout(p) and weight_init=NAME in the layers)"
        )
    shape = config["input_shape"]
    if shape is not None:
        shape = list(_validation.check_positive_int_tuple("input_shape", shape, len(shape)))
    layers = "".join(config["layers"].split())
    dense_options = {"hidden": None, "activation": None, "init": None}
    return {**config, **dense_options, "layers": layers, "input_shape": shape}


def parse_shape(text: str) -> list[int]:
    """``--input-shape``: comma-separated positive sizes, e.g. ``"8,8,1"``.

    Args:
      text: the option's text.

    Returns:
      The sizes, e.g. ``[8, 8, 1]``.

    Raises:
      ValueError: if a size is not a positive integer.
    """
    sizes = [int(part) for part in text.split(",")]
    return list(_validation.check_positive_int_tuple("--input-shape", sizes, len(sizes)))


def example_shape(config: dict[str, Any], n_features: int) -> tuple[int, ...]:
    """The shape of one example of a ``layers`` run (see the module docstring for the rule).

    Args:
      config: the run's configuration, with ``layers`` and ``input_shape``.
      n_features: the number of features of the data.

    Returns:
      The shape, e.g. ``(8, 8, 1)``.

    Raises:
      ValueError: if ``input_shape`` does not hold ``n_features`` values, or a 2-D layer comes
        first on data other than the digits without ``input_shape``.
    """
    if config["input_shape"] is not None:
        shape = tuple(config["input_shape"])
        if math.prod(shape) != n_features:
            raise ValueError(
                f"--input-shape {','.join(map(str, shape))} holds {math.prod(shape)} values per "
                f"example, but the data has {n_features} features"
            )
        return shape
    first = _SPATIAL.search(config["layers"].lower())
    if first is None:
        return (n_features,)
    if config["dataset"] == "digits" and first[1] != "1d":
        return DIGITS_SHAPE
    if first[1] != "2d":
        return (n_features, 1)
    raise ValueError(
        f"{first[0]} takes examples with two spatial axes: give their shape as --input-shape "
        f"H,W,C (H*W*C = {n_features})"
    )


class Built(NamedTuple):
    """What ``build`` returns.

    Attributes:
      data: the dataset, ``x_train`` and ``x_test`` reshaped to ``(n, *shape)``.
      model: the ``sequential.Sequential``.
      params: its initial parameters.
      state: its initial state (BatchNorm's running statistics).
      shape: the shape of one example.
    """

    data: datasets.Dataset
    model: Sequential
    params: Any
    state: Any
    shape: tuple[int, ...]


def build(config: dict[str, Any], data: datasets.Dataset, n_out: int, key: jax.Array) -> Built:
    """The ``Sequential`` model of ``config["layers"]`` for ``data``, initialized by ``key``.

    Args:
      config: the run's configuration (``runs.make_config``), with ``layers``.
      data: the dataset, split and standardized, ``x`` ``(n, n_features)``.
      n_out: the number of outputs the loss needs: the classes for softmax, else 1.
      key: the key of the initial parameters.

    Returns:
      A ``Built``.

    Raises:
      ValueError: one line, for a malformed architecture, an example shape that does not fit
        (``example_shape``) or layers that do not fit it, or a last layer of other than
        ``n_out`` outputs.
    """
    text = config["layers"]
    shape = example_shape(config, data.x_train.shape[1])
    layers = architecture.parse_layers(text, shape)
    try:
        params, state, out = chain_init(layers, key, shape, data.x_train.dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"--layers {text!r}: {' '.join(str(error).split())}") from None
    if out != (n_out,):
        raise ValueError(
            f"--layers {text!r} outputs {out} per example, but the loss needs ({n_out},): end "
            f"in dense({n_out})"
        )
    data = data._replace(
        x_train=data.x_train.reshape(len(data.x_train), *shape),
        x_test=data.x_test.reshape(len(data.x_test), *shape),
    )
    return Built(data, Sequential(layers, shape, config["loss"]), params, state, shape)


def weights(params: Any) -> list[jax.Array]:
    """The leaves of ``params`` named ``W``: the weights the L2 penalty applies to."""
    return [w for path, w in jax.tree.leaves_with_path(params) if is_weight(path)]


def _classes(model: Model, out: jax.Array) -> jax.Array:
    """The class each row of a classifier's outputs predicts, int32 ``(n,)``."""
    if model.loss == "binary_cross_entropy":
        return (out[:, 0] > 0.5).astype(jnp.int32)
    return jnp.argmax(out, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=0)
def class_predictions(model: Model, params: Any, state: Any, x: jax.Array) -> jax.Array:
    """The predicted class of each example of ``x``, int32 ``(n,)``.

    Args:
      model: the run's model.
      params: its parameters.
      state: its state, ``()`` for a model without.
      x: the examples, ``(n, *example shape)``.

    Returns:
      The argmax of the softmax outputs, or sigmoid outputs above 0.5 for binary cross-entropy.
    """
    return _classes(model, model.forward(params, x, state=state)[0])


@functools.partial(jax.jit, static_argnums=0)
def _test_report(
    model: Model, params: Any, state: Any, x: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The test split's loss, accuracy and predictions, in one compiled program."""
    targets = metrics.prepare_targets(y, model.loss)
    loss, accuracy = metrics.evaluate(params, x, targets, model, state=state)
    out, _ = model.forward(params, x, state=state)
    return loss, accuracy, out if model.loss == "mse" else _classes(model, out)


def test_metrics(
    model: Model, data: datasets.Dataset, params: Any, state: Any = ()
) -> dict[str, float]:
    """The test metrics of ``model`` with ``params`` and ``state`` on ``data``'s test split.

    The program that computes them also gives ``test_predictions``: one compilation for both.

    Args:
      model: the run's model.
      data: its dataset.
      params: the parameters.
      state: the model's state, ``()`` for a model without.

    Returns:
      ``metrics.test_metrics`` of ``metrics.evaluate``'s loss and accuracy.
    """
    report = _test_report(model, params, state, data.x_test, data.y_test)
    test_loss, test_accuracy = jax.device_get(report[:2])
    return metrics.test_metrics(float(test_loss), float(test_accuracy), model.loss, data.y_test)


def test_predictions(
    model: Model, data: datasets.Dataset, params: Any, state: Any = ()
) -> np.ndarray:
    """What ``model`` predicts for each example of ``data``'s test split.

    Args:
      model, data, params, state: as ``test_metrics`` takes them.

    Returns:
      A classifier's classes, int32 ``(n,)`` (``class_predictions``); a regression's outputs,
      ``(n, 1)``.
    """
    return np.asarray(_test_report(model, params, state, data.x_test, data.y_test)[2])
