"""Optimizers: SGD, the spec's momentum, classical momentum and Adam on one task, one budget.

All four start from the same weights and see the same minibatches, so only the update differs:

- SGD: θ ← θ - α g.
- The spec's momentum, v ← β v + (1 - β) g, θ ← θ - α v: an average of recent gradients. Its
  steady step is α g, the same as SGD's, so at the same α it follows SGD, only smoother.
- Classical (heavy-ball) momentum, v ← β v + g: its steady step is α g / (1 - β), ten times
  SGD's for β = 0.9, so at the same α it goes faster.
- Adam divides each parameter's averaged gradient by the root of its averaged square: every
  parameter moves about α per step, however small its gradient.

The task is the three-armed spirals with a 64-64 ReLU network, 32 samples a batch.

Run it with ``python scripts/experiments/optimizers.py [OUTPUT_DIR]``.
"""

import sys

import jax
from _common import main as common_main
from _common import new_network, plot_loss_curves, train_network

import nnjax
from nnjax.datasets import load_dataset

LEARNING_RATE, BETA, ADAM_LEARNING_RATE = 0.05, 0.9, 3e-3


def optimizers() -> dict:
    return {
        "SGD": nnjax.sgd(LEARNING_RATE),
        "momentum (spec, damped)": nnjax.momentum(LEARNING_RATE, BETA),
        "classical momentum": nnjax.classical_momentum(LEARNING_RATE, BETA),
        "Adam": nnjax.adam(ADAM_LEARNING_RATE),
    }


def run(hidden=(64, 64), epochs=100, seed=0) -> dict:
    data_key, init_key, train_key = jax.random.split(jax.random.key(seed), 3)
    data = load_dataset("spirals", data_key)
    params = new_network(data, hidden, "he", init_key)
    losses, final, accuracy = {}, {}, {}
    for name, optimizer in optimizers().items():
        result = train_network(data, params, train_key, optimizer=optimizer, epochs=epochs)
        losses[name] = result.history["train_loss"]
        final[name], accuracy[name] = losses[name][-1], result.history["val_accuracy"][-1]
        print(
            f"{name:24s} final training loss {final[name]:.4f}, test accuracy {accuracy[name]:.1%}"
        )
    sgd, damped = final["SGD"], final["momentum (spec, damped)"]
    claims = {
        "the spec's damped momentum ends within 25% of SGD's loss at the same learning rate": (
            abs(damped - sgd) <= 0.25 * sgd
        ),
        "classical momentum ends below SGD at the same learning rate": (
            final["classical momentum"] < sgd
        ),
        "Adam ends below SGD": final["Adam"] < sgd,
    }
    config = {"hidden": list(hidden), "epochs": epochs, "batch_size": 32, "lr": LEARNING_RATE}
    config.update(beta=BETA, adam_lr=ADAM_LEARNING_RATE)
    numbers = {"config": config, "final_train_loss": final, "test_accuracy": accuracy}
    return numbers | {"train_loss": losses, "claims": claims}


def plot(numbers: dict, path):
    curves = {
        f"{name} ({losses[-1]:.3f})": losses for name, losses in numbers["train_loss"].items()
    }
    hidden = "-".join(str(n) for n in numbers["config"]["hidden"])
    title = f"Spirals, {hidden} ReLU network: same start, same minibatches"
    return plot_loss_curves(curves, path, title=title)


def main(argv: list[str] | None = None) -> int:
    return common_main(argv, __file__, run, plot)


if __name__ == "__main__":
    sys.exit(main())
