"""A learning-rate sweep on two moons: 12 learning rates x 4 seeds, 48 networks in one program.

``nnjax.sweeps.sweep`` vmaps the whole training program over the models: each has its own
seed (initialization and shuffling) and its own learning rate, and the learning rate is a traced
value, not a compiled-in constant, so a second sweep over other rates reuses the compiled program.
The sweep is ``nnjax.sweeps.sweep_learning_rates``, as in the learning-rate experiment (in
scripts/experiments/, there with SGD on the spirals), here with Adam on two moons. The plot shows
the final training loss against the learning rate, the median over seeds with a band from the
best to the worst seed: too small a rate has not converged, too large a one is unstable, and the
band widens where the outcome depends on the seed.

Run it with ``python scripts/sweep_learning_rate.py [OUTPUT_DIR]`` (default ``runs/scripts/sweep``).
"""

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

from nnjax.datasets import load_dataset
from nnjax.plotting import plot_sweep
from nnjax.sweeps import sweep_learning_rates

LEARNING_RATES = np.logspace(-4, 0.5, 12)  # 1e-4 .. 3.2, evenly spaced on a log scale
SEEDS = 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", nargs="?", type=Path, default=Path("runs/scripts/sweep"))
    out_dir = parser.parse_args(argv).output_dir
    data = load_dataset("moons", jax.random.key(0))

    # Every learning rate with every seed: a 16-16 ReLU network, nnjax.adam(rate) for each.
    final, median, best, speed = sweep_learning_rates(
        data.x_train,
        data.y_train,
        layer_sizes=[2, 16, 16, data.num_classes],
        learning_rates=LEARNING_RATES,
        num_seeds=SEEDS,
        epochs=30,
        batch_size=32,
    )

    print(f"{final.size} models, {speed:,.0f} model-steps/s")
    print("learning rate   final loss (median over seeds)")
    for rate, loss in zip(LEARNING_RATES, median, strict=True):
        print(f"{rate:13.1e}   {loss:.2e}")
    if best is None:
        print("best learning rate: none, every run diverged")
    else:
        print(f"best learning rate: {LEARNING_RATES[best]:.1e}")
    print(f"wrote {plot_sweep(LEARNING_RATES, final, out_dir / 'sweep.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
