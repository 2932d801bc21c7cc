"""Activations: sigmoid, tanh and ReLU hidden layers on the same task with plain SGD.

Each layer passes the error back through f'(z), so the derivative sets how fast a layer learns:

- sigmoid: σ'(z) = σ(z)(1 - σ(z)) is at most 1/4, and its outputs are all positive (mean 1/2),
  so (for one sample) all the weights of a unit in the next layer get gradients of one sign,
  and the updates zig-zag;
- tanh: tanh'(z) = 1 - tanh(z)² reaches 1 at 0, and its outputs are zero-centred;
- ReLU: the derivative is exactly 1 wherever the unit is active: no shrinking at all.

Each network gets the initialization meant for its activation (Xavier for sigmoid and tanh, He
for ReLU), the same minibatches and the same learning rate. Plain SGD shows the derivatives as
they are (Adam would rescale each parameter's step and hide part of the difference).

Run it with ``python scripts/experiments/activations.py [OUTPUT_DIR]``.
"""

import sys

import jax
from _common import main as common_main
from _common import new_network, plot_loss_curves, train_network

import nnjax
from nnjax.datasets import load_dataset

INITS = {"sigmoid": "xavier", "tanh": "xavier", "relu": "he"}
LEARNING_RATE = 0.1


def run(hidden=(64, 64), epochs=100, seed=0) -> dict:
    data_key, init_key, train_key = jax.random.split(jax.random.key(seed), 3)
    data = load_dataset("spirals", data_key)
    losses, final, accuracy = {}, {}, {}
    for activation, init in INITS.items():
        params = new_network(data, hidden, init, init_key)
        sgd = {"activation": activation, "optimizer": nnjax.sgd(LEARNING_RATE), "epochs": epochs}
        history = train_network(data, params, train_key, **sgd).history
        losses[activation] = history["train_loss"]
        final[activation], accuracy[activation] = (
            losses[activation][-1],
            history["val_accuracy"][-1],
        )
        print(f"{activation:8s} final training loss {final[activation]:.4f}, ", end="")
        print(f"test accuracy {accuracy[activation]:.1%}")
    claims = {
        "ReLU ends with a lower training loss than tanh": final["relu"] < final["tanh"],
        "tanh ends with a lower training loss than sigmoid": final["tanh"] < final["sigmoid"],
    }
    config = {"hidden": list(hidden), "epochs": epochs, "batch_size": 32, "lr": LEARNING_RATE}
    return {
        "config": config,
        "final_train_loss": final,
        "test_accuracy": accuracy,
        "train_loss": losses,
        "claims": claims,
    }


def plot(numbers: dict, path):
    accuracy = numbers["test_accuracy"]
    curves = {
        f"{activation} + {INITS[activation]} (test accuracy {accuracy[activation]:.0%})": losses
        for activation, losses in numbers["train_loss"].items()
    }
    return plot_loss_curves(curves, path, title=f"Spirals, SGD with learning rate {LEARNING_RATE}")


def main(argv: list[str] | None = None) -> int:
    return common_main(argv, __file__, run, plot)


if __name__ == "__main__":
    sys.exit(main())
