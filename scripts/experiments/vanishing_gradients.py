"""Vanishing gradients: why a deep sigmoid network barely learns and a ReLU one does.

Backpropagation multiplies the error by W^T and by f'(z) once per layer:
δ(l-1) = (δ(l) W(l)) ⊙ f'(z(l-1)). The sigmoid's derivative is at most 1/4, so with Xavier
weights (which keep W's gain near 1) the error shrinks about 4x per layer: after 9 hidden layers,
the first layer's gradient is some 10^6 times smaller than the last's. ReLU's derivative is 1
wherever the unit is active, and He weights make up for the half that is not, so every layer
gets a gradient of the same size.

The script builds two 10-layer networks (9 hidden layers of 32 units and a softmax output), one
sigmoid with Xavier, one ReLU with He, measures each layer's ||dL/dW||_F on the spirals' training
set with ``backward_pass``, trains both briefly with plain SGD (each layer moves in proportion to
its gradient) and measures again.

Run it with ``python scripts/experiments/vanishing_gradients.py [OUTPUT_DIR]``.
"""

import sys

import jax
import numpy as np
from _common import log_axes, new_network, save_axes, train_network
from _common import main as common_main

import nnjax
from nnjax.datasets import load_dataset
from nnjax.diagnostics import weight_norms

CASES = [("sigmoid", "xavier"), ("relu", "he")]


def gradient_norms(params, data, activation: str) -> np.ndarray:
    """||dL/dW(l)||_F of every layer l = 1..L on the whole training split."""
    arch = {"activation": activation, "loss": "softmax_cross_entropy"}
    _, cache = nnjax.forward_pass(params, data.x_train, **arch)
    grads = nnjax.backward_pass(params, data.x_train, data.y_train, cache, **arch)
    return np.asarray(weight_norms(grads))


def run(depth=10, width=32, epochs=30, learning_rate=0.1, seed=0) -> dict:
    data_key, init_key, train_key = jax.random.split(jax.random.key(seed), 3)
    data = load_dataset("spirals", data_key)
    numbers = {"config": {"depth": depth, "width": width, "epochs": epochs, "lr": learning_rate}}
    for activation, init in CASES:
        params = new_network(data, [width] * (depth - 1), init, init_key)
        before = gradient_norms(params, data, activation)
        sgd = {"activation": activation, "optimizer": nnjax.sgd(learning_rate), "epochs": epochs}
        result = train_network(data, params, train_key, **sgd)
        after = gradient_norms(result.params, data, activation)
        numbers[activation] = {
            "grad_norm_init": before,
            "grad_norm_trained": after,
            "first_over_last_init": before[0] / before[-1],
            "first_over_last_trained": after[0] / after[-1],
            "train_accuracy": result.history["train_accuracy"][-1],
            "test_accuracy": result.history["val_accuracy"][-1],
        }
        print(
            f"{activation:8s} layer 1 / layer {depth} gradient norm: {before[0] / before[-1]:.1e} "
            f"at init, {after[0] / after[-1]:.1e} trained; "
            f"test accuracy {numbers[activation]['test_accuracy']:.1%}"
        )
    sigmoid, relu = numbers["sigmoid"], numbers["relu"]
    numbers["claims"] = {
        f"sigmoid: layer 1's gradient is at least 100x smaller than layer {depth}'s at init": (
            sigmoid["first_over_last_init"] <= 1e-2
        ),
        f"ReLU + He: layer 1's gradient is within 100x of layer {depth}'s at init": (
            1e-2 <= relu["first_over_last_init"] <= 1e2
        ),
        "after training, ReLU's test accuracy beats sigmoid's by 20 points": (
            relu["test_accuracy"] >= sigmoid["test_accuracy"] + 0.2
        ),
    }
    return numbers


def plot(numbers: dict, path):
    fig, ax = log_axes()
    for i, (activation, _) in enumerate(CASES):
        norms = numbers[activation]
        layers = np.arange(1, len(norms["grad_norm_init"]) + 1)
        ax.plot(layers, norms["grad_norm_init"], f"C{i}-o", label=f"{activation}, at init")
        ax.plot(layers, norms["grad_norm_trained"], f"C{i}--s", label=f"{activation}, trained")
    return save_axes(
        fig,
        ax,
        path,
        title=f"Gradient flow, {len(layers)}-layer networks on spirals",
        xlabel="layer",
        ylabel="gradient norm ||dL/dW||_F",
    )


def main(argv: list[str] | None = None) -> int:
    return common_main(argv, __file__, run, plot)


if __name__ == "__main__":
    sys.exit(main())
