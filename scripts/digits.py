"""Handwritten digits: a 64-64 ReLU network with Adam, hand-written gradients against autodiff.

Each 8x8 image is 64 pixel intensities; ten softmax outputs give the digit's probabilities. The
script trains the network twice from the same start on the same minibatches, once with
``backward_pass`` and once with ``jax.grad``, and compares the final parameters (equal up to
float32 rounding) and the speed of each. It writes the test set's confusion matrix and the
training history, and exits 1 if the test accuracy is below 97%.

Run it with ``python scripts/digits.py [OUTPUT_DIR]`` (default ``runs/scripts/digits``); it
writes ``confusion_matrix.png`` and ``history.png`` there.
"""

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import nnjax
from nnjax.datasets import load_dataset
from nnjax.gradcheck import tree_relative_error
from nnjax.plotting import plot_confusion_matrix, plot_history
from nnjax.training import train

SEED = 0
TARGET_ACCURACY = 0.97
# Softmax + cross-entropy: the output error is (p - one_hot(y)) / batch, no Jacobian needed.
ARCH = {"activation": "relu", "loss": "softmax_cross_entropy"}
HIDDEN = [64, 64]
LEARNING_RATE, EPOCHS, BATCH_SIZE = 3e-3, 40, 32


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", nargs="?", type=Path, default=Path("runs/scripts/digits"))
    out_dir = parser.parse_args(argv).output_dir
    data_key, init_key, train_key = jax.random.split(jax.random.key(SEED), 3)

    # The data: 1797 images, 20% held out; pixels standardized with the training statistics.
    data = load_dataset("digits", data_key)
    print(f"digits: {len(data.x_train)} training and {len(data.x_test)} test images")

    # The network: He init, N(0, sqrt(2 / n_in)), keeps ReLU activations' variance from shrinking
    # layer after layer (ReLU zeroes half of its inputs, hence the 2).
    n_in = data.x_train.shape[1]
    params = nnjax.init_network(init_key, [n_in, *HIDDEN, data.num_classes], init="he")

    # The same training twice: the key fixes the shuffling, so only the gradient source differs.
    results = {}
    for grad in ("manual", "autodiff"):
        start = time.perf_counter()
        results[grad] = train(
            params,
            data.x_train,
            data.y_train,
            model=nnjax.DenseNetwork(**ARCH),
            optimizer=nnjax.adam(LEARNING_RATE),
            epochs=EPOCHS,
            batch_size=BATCH_SIZE,
            key=train_key,
            grad=grad,
            validation=(data.x_test, data.y_test),
        )
        seconds = time.perf_counter() - start
        print(
            f"{grad:>8} gradients: {seconds:.1f} s wall time "
            f"({results[grad].compile_seconds:.1f} s compiling), "
            f"{results[grad].steps_per_second:,.0f} steps/s"
        )
    result = results["manual"]
    difference = tree_relative_error(result.params, results["autodiff"].params)
    print(f"final parameters, manual vs autodiff: max relative difference {difference:.1e}")

    # The predicted digit is the most probable class.
    predicted = jnp.argmax(nnjax.predict(result.params, data.x_test, **ARCH), axis=-1)
    test_accuracy = float(jnp.mean(predicted == data.y_test))
    print(f"test accuracy after {result.epochs_run} epochs: {test_accuracy:.1%}")

    # Rows are true digits, columns predicted ones: off-diagonal cells are the mistakes.
    matrix = plot_confusion_matrix(data.y_test, predicted, 10, out_dir / "confusion_matrix.png")
    for path in (matrix, plot_history(result.history, out_dir / "history.png")):
        print(f"wrote {path}")

    passed = test_accuracy >= TARGET_ACCURACY
    if not passed:
        print(f"FAILED: test accuracy below {TARGET_ACCURACY:.0%}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
