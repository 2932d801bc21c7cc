"""Two moons: a small tanh network learns a curved decision boundary with Adam.

The two interleaving half circles cannot be split by a line; two hidden layers of tanh units
learn a boundary that follows the curve. The script trains on 400 points, tests on 100 held-out
ones, draws the boundary over the plane and the loss and accuracy per epoch, and exits 1 if the
test accuracy is below 99%.

Run it with ``python scripts/two_moons.py [OUTPUT_DIR]`` (default ``runs/scripts/two_moons``);
it writes ``decision_boundary.png`` and ``history.png`` there.
"""

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

import nnjax
from nnjax.datasets import load_dataset
from nnjax.plotting import plot_decision_boundary, plot_history
from nnjax.training import train

SEED = 0
TARGET_ACCURACY = 0.99
# tanh is zero-centred and smooth, so the boundary it draws is smooth too. Two classes with a
# softmax output and cross-entropy: the output error is simply (p - one_hot(y)) / batch.
ARCH = {"activation": "tanh", "loss": "softmax_cross_entropy"}
LEARNING_RATE, EPOCHS, BATCH_SIZE = 1e-2, 100, 32
LAYERS = [2, 16, 16, 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", nargs="?", type=Path, default=Path("runs/scripts/two_moons"))
    args = parser.parse_args(argv)

    # The data: 500 noisy points, 20% held out, standardized with the training split's statistics.
    data_key, init_key, train_key = jax.random.split(jax.random.key(SEED), 3)
    data = load_dataset("moons", data_key)
    # The network: Xavier init keeps the variance of tanh units' inputs steady from layer to layer.
    params = nnjax.init_network(init_key, LAYERS, init="xavier")
    print(f"two moons: {len(data.x_train)} training and {len(data.x_test)} test points")

    # Adam scales each parameter's step by a running estimate of its gradient's size, so one
    # learning rate suits every layer. The test split is only watched (for the plot), not trained on.
    result = train(
        params,
        data.x_train,
        data.y_train,
        model=nnjax.DenseNetwork(**ARCH),
        validation=(data.x_test, data.y_test),
        optimizer=nnjax.adam(LEARNING_RATE),
        epochs=EPOCHS,
        batch_size=BATCH_SIZE,
        key=train_key,
    )
    # The history's last entry evaluates the final network (no dropout) on each whole split.
    history = result.history
    test_accuracy = history["val_accuracy"][-1]
    print(
        f"after {result.epochs_run} epochs ({result.steps_per_second:,.0f} steps/s): "
        f"train accuracy {history['train_accuracy'][-1]:.1%}, "
        f"test loss {history['val_loss'][-1]:.4f}, test accuracy {test_accuracy:.1%}"
    )

    # The predicted class at every point of a grid over the plane shows the learned boundary.
    def predict_class(points: jax.Array) -> jax.Array:
        return jnp.argmax(nnjax.predict(result.params, points, **ARCH), axis=-1)

    x_all = jnp.concatenate([data.x_train, data.x_test])
    y_all = jnp.concatenate([data.y_train, data.y_test])
    for path in (
        plot_decision_boundary(
            predict_class, x_all, y_all, args.output_dir / "decision_boundary.png"
        ),
        plot_history(history, args.output_dir / "history.png"),
    ):
        print(f"wrote {path}")

    if test_accuracy < TARGET_ACCURACY:
        print(f"FAILED: test accuracy below {TARGET_ACCURACY:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
