"""nnjax: the mathematics of neural networks as pure, jit-compiled JAX functions.

Every formula of the spec (forward pass, activations, losses, backpropagation, initialization,
optimizers, regularization) is a pure function over arrays and parameter pytrees, with its
derivative written by hand and proven against ``jax.grad``, ``jax.jvp`` and finite differences
(``nnjax.gradcheck``).

Shape convention, used everywhere: data is batch-first ``(batch, features)``; a layer's weight
matrix ``W`` is ``(n_out, n_in)`` and its bias ``b`` is ``(n_out,)``, as in the spec and PyTorch's
``Linear``; ``z = x @ W.T + b``. A network's parameters are a list of ``{"W", "b"}`` dicts.
Randomness comes only from explicit ``jax.random`` keys.

The formulas are re-exported here; every module is reachable as an attribute (``nnjax.training``,
``nnjax.datasets``, ...), imported on first use, so ``import nnjax`` loads neither matplotlib,
tqdm nor scikit-learn.
"""

import importlib
from typing import Any

from nnjax.activations import (
    ACTIVATIONS,
    identity,
    identity_derivative,
    relu,
    relu_derivative,
    sigmoid,
    sigmoid_derivative,
    softmax,
    tanh,
    tanh_derivative,
)
from nnjax.convolution import Conv1D, Conv2D
from nnjax.initializers import INITIALIZERS, he_init, xavier_init, xavier_uniform_init
from nnjax.layers import Activation, Dense, Dropout, Flatten
from nnjax.losses import (
    binary_cross_entropy,
    binary_cross_entropy_derivative,
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_derivative,
    mse_derivative,
    mse_loss,
    softmax_cross_entropy,
    softmax_cross_entropy_derivative,
)
from nnjax.network import (
    LOSSES,
    OUTPUT_LOSSES,
    DenseNetwork,
    backward_pass,
    forward_neuron,
    forward_pass,
    init_network,
    network_loss,
    predict,
)
from nnjax.normalization import BatchNorm, LayerNorm
from nnjax.optimizers import (
    OPTIMIZERS,
    AdamState,
    MomentumState,
    SgdState,
    adam,
    classical_momentum,
    momentum,
    sgd,
)
from nnjax.pooling import AvgPool1D, AvgPool2D, MaxPool1D, MaxPool2D
from nnjax.regularization import (
    add_l2_penalty,
    dropout_backward,
    dropout_forward,
    l2_regularization,
    l2_regularization_gradient,
)
from nnjax.sequential import Residual, Sequential

__version__ = "0.1.0"

SUBMODULES = (
    "activations",
    "architecture",
    "checkpoints",
    "checks",
    "cli",
    "compilation_cache",
    "convolution",
    "datafiles",
    "datasets",
    "diagnostics",
    "distributed",
    "early_stopping",
    "files",
    "folders",
    "gradcheck",
    "initializers",
    "layercheck",
    "layers",
    "losses",
    "metrics",
    "model",
    "network",
    "normalization",
    "optimizers",
    "option_types",
    "plotting",
    "pooling",
    "program",
    "progress",
    "regularization",
    "run_data",
    "run_model",
    "run_plots",
    "run_training",
    "runs",
    "sequential",
    "steps",
    "sweeps",
    "synthetic",
    "training",
    "training_loop",
)
"""The public submodules, each an attribute of ``nnjax`` once first used (PEP 562)."""


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f"nnjax.{name}")
    raise AttributeError(f"module 'nnjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *SUBMODULES})


__all__ = [
    "ACTIVATIONS",
    "INITIALIZERS",
    "LOSSES",
    "OPTIMIZERS",
    "OUTPUT_LOSSES",
    "SUBMODULES",
    "Activation",
    "AdamState",
    "AvgPool1D",
    "AvgPool2D",
    "BatchNorm",
    "Conv1D",
    "Conv2D",
    "Dense",
    "DenseNetwork",
    "Dropout",
    "Flatten",
    "LayerNorm",
    "MaxPool1D",
    "MaxPool2D",
    "MomentumState",
    "Residual",
    "Sequential",
    "SgdState",
    "__version__",
    "adam",
    "add_l2_penalty",
    "backward_pass",
    "binary_cross_entropy",
    "binary_cross_entropy_derivative",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_derivative",
    "classical_momentum",
    "dropout_backward",
    "dropout_forward",
    "forward_neuron",
    "forward_pass",
    "he_init",
    "identity",
    "identity_derivative",
    "init_network",
    "l2_regularization",
    "l2_regularization_gradient",
    "momentum",
    "mse_derivative",
    "mse_loss",
    "network_loss",
    "predict",
    "relu",
    "relu_derivative",
    "sgd",
    "sigmoid",
    "sigmoid_derivative",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_derivative",
    "tanh",
    "tanh_derivative",
    "xavier_init",
    "xavier_uniform_init",
]
