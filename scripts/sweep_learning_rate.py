"""A learning-rate sweep on two moons: 12 learning rates x 4 seeds, 48 networks in one program.

``nnjax.training.sweep`` vmaps the whole training program over the models: each has its own
seed (initialization and shuffling) and its own learning rate, and the learning rate is a traced
value, not a compiled-in constant, so a second sweep over other rates reuses the compiled program.
The plot shows the final training loss against the learning rate, the median over seeds with a
band from the best to the worst seed: too small a rate has not converged, too large a one is
unstable, and the band widens where the outcome depends on the seed.

Run it with ``python scripts/sweep_learning_rate.py [OUTPUT_DIR]`` (default ``runs/scripts/sweep``).
"""

import sys
from pathlib import Path

import jax
import numpy as np

from nnjax.datasets import load_dataset
from nnjax.plotting import plot_sweep
from nnjax.training import sweep

LEARNING_RATES = np.logspace(-4, 0.5, 12)  # 1e-4 .. 3.2, evenly spaced on a log scale
SEEDS = 4


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: python scripts/sweep_learning_rate.py [OUTPUT_DIR]", file=sys.stderr)
        return 2
    out_dir = Path(argv[0] if argv else "runs/scripts/sweep")
    data = load_dataset("moons", jax.random.key(0))

    # One row per model: every learning rate with every seed.
    rates = np.repeat(LEARNING_RATES, SEEDS)
    seeds = np.tile(np.arange(SEEDS), len(LEARNING_RATES))
    result = sweep(
        data.x_train,
        data.y_train,
        layer_sizes=[2, 16, 16, 2],
        seeds=seeds,
        learning_rates=rates,  # nnjax.adam(rate) for each model
        activation="relu",
        epochs=30,
        batch_size=32,
    )
    final = result.history["train_loss"][:, -1].reshape(len(LEARNING_RATES), SEEDS)
    final = np.where(result.diverged.reshape(final.shape), np.nan, final)

    print(f"{len(rates)} models, {result.model_steps_per_second:,.0f} model-steps/s")
    print("learning rate   final loss (median over seeds)")
    for rate, losses in zip(LEARNING_RATES, final, strict=True):
        print(f"{rate:13.1e}   {np.nanmedian(losses):.2e}")
    best = LEARNING_RATES[np.nanargmin(np.nanmedian(final, axis=1))]
    print(f"best learning rate: {best:.1e}")
    print(f"wrote {plot_sweep(LEARNING_RATES, final, out_dir / 'sweep.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
