"""nnjax: the mathematics of neural networks as pure, jit-compiled JAX functions.

Every formula of the spec (forward pass, activations, losses, backpropagation, initialization,
optimizers, regularization) is a pure function over arrays and parameter pytrees, with its
derivative written by hand and proven against ``jax.grad``, ``jax.jvp`` and finite differences
(``nnjax.gradcheck``).

Shape convention, used everywhere: data is batch-first ``(batch, features)``; a layer's weight
matrix ``W`` is ``(n_out, n_in)`` and its bias ``b`` is ``(n_out,)``, as in the spec and PyTorch's
``Linear``; ``z = x @ W.T + b``. A network's parameters are a list of ``{"W", "b"}`` dicts.
Randomness comes only from explicit ``jax.random`` keys.

The formulas are re-exported here, and every module is reachable as an attribute
(``nnjax.training``, ``nnjax.datasets``, ...), each imported on first use: ``import nnjax``
alone imports neither JAX, matplotlib, tqdm nor scikit-learn.
"""

import importlib
from typing import Any

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

_EXPORTS: dict[str, str] = {
    "activations": (
        "ACTIVATIONS identity identity_derivative relu relu_derivative sigmoid sigmoid_derivative "
        "softmax tanh tanh_derivative"
    ),
    "convolution": "Conv1D Conv2D",
    "initializers": "INITIALIZERS he_init xavier_init xavier_uniform_init",
    "layers": "Activation Dense Dropout Flatten",
    "losses": (
        "binary_cross_entropy binary_cross_entropy_derivative binary_cross_entropy_with_logits "
        "binary_cross_entropy_with_logits_derivative mse_derivative mse_loss "
        "softmax_cross_entropy softmax_cross_entropy_derivative"
    ),
    "network": (
        "LOSSES OUTPUT_LOSSES DenseNetwork backward_pass forward_neuron forward_pass init_network "
        "network_loss predict"
    ),
    "normalization": "BatchNorm LayerNorm",
    "optimizers": (
        "OPTIMIZERS AdamState MomentumState SgdState adam classical_momentum momentum sgd"
    ),
    "pooling": "AvgPool1D AvgPool2D MaxPool1D MaxPool2D",
    "regularization": (
        "add_l2_penalty dropout_backward dropout_forward l2_regularization "
        "l2_regularization_gradient"
    ),
    "sequential": "Residual Sequential",
}
"""The formulas re-exported here (their names, space-separated), by the module that defines
them: each is imported with its module on first use (PEP 562), so ``import nnjax`` imports
nothing else, JAX included, until then."""

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names.split()}


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f"nnjax.{_MODULE_OF[name]}"), name)
        globals()[name] = value  # found directly from now on
        return value
    if name in SUBMODULES:
        return importlib.import_module(f"nnjax.{name}")
    raise AttributeError(f"module 'nnjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF, *SUBMODULES})


__all__ = ["SUBMODULES", "__version__", *_MODULE_OF]
