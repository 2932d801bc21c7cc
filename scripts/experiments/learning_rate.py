"""The learning rate: too small crawls, too large diverges; the best lies in between.

Gradient descent steps θ ← θ - α ∇L. On a quadratic bowl of curvature c, the error along that
direction is multiplied by (1 - α c) each step: a tiny α barely moves, α c near 1 converges
fastest, and α c > 2 overshoots further every step and diverges. A network's loss has many
curvatures at once, so the final loss against α is a U on a log scale: slow convergence on the
left, instability on the right, the best rate close to where training starts to break.

``sweeps.sweep`` trains every (learning rate, seed) pair as one vmapped program (the learning
rate is traced, not compiled in) with plain SGD, on the spirals. The plot shows the median final
training loss over seeds with a min-max band; diverged runs are left out and counted.

Run it with ``python scripts/experiments/learning_rate.py [OUTPUT_DIR]``.
"""

import sys

import jax
import numpy as np
from _common import main as common_main

import nnjax
from nnjax.datasets import load_dataset
from nnjax.plotting import plot_sweep
from nnjax.sweeps import sweep_learning_rates

RATES = np.logspace(-3, 1.5, 12)  # 1e-3 .. 31.6, evenly spaced on a log scale


def run(rates=RATES, num_seeds=4, hidden=(32, 32), epochs=50) -> dict:
    data = load_dataset("spirals", jax.random.key(0))
    rates = np.asarray(rates)
    sizes = [data.x_train.shape[1], *hidden, data.num_classes]
    final, median, best, speed = sweep_learning_rates(
        data.x_train,
        data.y_train,
        layer_sizes=sizes,
        learning_rates=rates,
        num_seeds=num_seeds,
        optimizer=nnjax.sgd,
        epochs=epochs,
    )
    print(f"{final.size} models, {speed:,.0f} model-steps/s")
    for rate, loss, diverged in zip(rates, median, np.isnan(final).sum(axis=1), strict=True):
        print(f"learning rate {rate:8.2e}: median final loss {loss:.3e}, {diverged} diverged")
    if best is None:
        print("every learning rate diverged")
        best_loss = np.nan  # no claim can hold
    else:
        best_loss = median[best]
        print(f"best learning rate: {rates[best]:.2e}")
    claims = {
        "the best rate lies inside the range, not at either end": (
            best is not None and 0 < best < len(rates) - 1
        ),
        "the smallest rate ends at least 10x above the best": median[0] >= 10 * best_loss,
        "the largest rate diverges or ends at least 10x above the best": bool(
            np.isnan(final[-1]).any() or median[-1] >= 10 * best_loss
        ),
    }
    config = {"hidden": list(hidden), "epochs": epochs, "batch_size": 32, "optimizer": "sgd"}
    return {
        "config": config,
        "learning_rates": rates,
        "final_train_loss": final,  # (rates, seeds), null where diverged
        "median_final_loss": median,
        "best_learning_rate": None if best is None else rates[best],
        "diverged_runs": int(np.isnan(final).sum()),
        "claims": claims,
    }


def plot(numbers: dict, path):
    return plot_sweep(numbers["learning_rates"], numbers["final_train_loss"], path)


def main(argv: list[str] | None = None) -> int:
    return common_main(argv, __file__, run, plot)


if __name__ == "__main__":
    sys.exit(main())
