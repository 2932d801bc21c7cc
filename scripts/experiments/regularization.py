"""Regularization: a big network memorizes 100 noisy points; L2 and dropout make it generalize.

Two moons with heavy noise overlap, so no smooth boundary separates the 100 training points. A
256-256 ReLU network still fits every one by bending its boundary around each noisy point: 100%
training accuracy, and a test accuracy well below it. That gap is overfitting.

- L2 adds (λ/2) Σ ||W||² to the loss: large weights cost, and a boundary bent around single
  points needs large weights.
- Dropout zeroes each hidden unit with probability p at every step (nnjax scales the kept ones by
  1/(1-p)), so no unit can rely on a few others to memorize a point.

Both give up some training accuracy for test accuracy, narrowing the gap. All three networks
start from the same weights and train full-batch with Adam for the same number of epochs (as
one vmapped program); the test set has 1000 fresh points from the same distribution.

Run it with ``python scripts/experiments/regularization.py [OUTPUT_DIR]``.
"""

import sys

import jax
import numpy as np
from _common import main as common_main
from _common import save_figure
from matplotlib.figure import Figure

from nnjax.datasets import Dataset, make_moons, standardize, train_test_split
from nnjax.sweeps import sweep


def noisy_moons(key, n_train: int, n_test: int, noise: float) -> Dataset:
    data_key, split_key = jax.random.split(key)
    x, y = make_moons(data_key, n_train + n_test, noise=noise)
    fraction = n_test / (n_train + n_test)
    x_train, y_train, x_test, y_test = train_test_split(split_key, x, y, fraction)
    x_train, x_test, _, _ = standardize(x_train, x_test)
    return Dataset("noisy moons", x_train, y_train, x_test, y_test, 2)


def run(n_train=100, noise=0.3, hidden=(256, 256), epochs=500, l2=1e-2, dropout=0.5, seed=0):
    data = noisy_moons(jax.random.key(seed), n_train, 1000, noise)
    # The three networks train side by side as one vmapped program (sweeps.sweep): one seed
    # gives them the same initial weights; the L2 and dropout strengths are per model.
    history = sweep(
        data.x_train,
        data.y_train,
        layer_sizes=[2, *hidden, 2],
        seeds=[seed + 1] * 3,
        learning_rates=1e-2,  # nnjax.adam(1e-2) for each
        l2=[0.0, l2, 0.0],
        dropout_rates=[0.0, 0.0, dropout],
        epochs=epochs,
        batch_size=n_train,  # full batch
        validation=(data.x_test, data.y_test),
    ).history
    results, curves = {}, {}
    for i, name in enumerate(["none", "L2", "dropout"]):
        train, test = history["train_accuracy"][i], history["val_accuracy"][i]
        gap = train[-1] - test[-1]
        results[name] = {"train_accuracy": train[-1], "test_accuracy": test[-1], "gap": gap}
        curves[name] = {"train": train, "test": test}
        print(f"{name:8s} train accuracy {train[-1]:.1%}, test {test[-1]:.1%}, gap {gap:.1%}")
    fits = results["none"]["train_accuracy"] >= 0.98
    none, with_l2, with_dropout = (results[name]["gap"] for name in ["none", "L2", "dropout"])
    claims = {
        "unregularized, the network fits the training set (>= 98%)": fits,
        f"L2 (λ = {l2}) narrows the train-test gap": with_l2 < none,
        f"dropout (p = {dropout}) narrows the train-test gap": with_dropout < none,
    }
    config = {"n_train": n_train, "n_test": 1000, "noise": noise, "hidden": list(hidden)}
    config.update(epochs=epochs, l2=l2, dropout_rate=dropout, optimizer="adam(1e-2), full batch")
    return {"config": config, "results": results, "accuracy": curves, "claims": claims}


def plot(numbers: dict, path):
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    bars, curves = fig.subplots(1, 2)
    names, config = list(numbers["results"]), numbers["config"]
    labels = ["none", f"L2 λ={config['l2']}", f"dropout p={config['dropout_rate']}"]
    for offset, split in ((-0.2, "train"), (0.2, "test")):
        values = [numbers["results"][name][f"{split}_accuracy"] for name in names]
        bars.bar(np.arange(len(names)) + offset, values, width=0.4, label=split)
    for i, name in enumerate(names):
        bars.annotate(f"gap {numbers['results'][name]['gap']:.1%}", (i, 1.015), ha="center")
    bars.set_xticks(np.arange(len(names)), labels)
    title = f"{config['n_train']} noisy training points, {config['n_test']} test points"
    bars.set(ylim=(0.5, 1.08), ylabel="accuracy", title=title)
    bars.legend(loc="lower right")
    for i, (label, curve) in enumerate(zip(labels, numbers["accuracy"].values(), strict=True)):
        epochs = np.arange(1, len(curve["train"]) + 1)
        curves.plot(epochs, curve["train"], f"C{i}--", alpha=0.6)
        curves.plot(epochs, curve["test"], f"C{i}-", label=label)
    curves.set(xlabel="epoch", ylabel="accuracy (dashed: train, solid: test)", title="Per epoch")
    curves.grid(True, alpha=0.3)
    curves.legend()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    return common_main(argv, __file__, run, plot)


if __name__ == "__main__":
    sys.exit(main())
