"""What the experiments share: the command line, building and training a network, the output.

Each experiment exposes ``run(...)``, which computes its numbers (a JSON-ready dict with a
``"claims"`` entry: each claim it tests, and whether it held) with size parameters whose defaults
are the full experiment, and ``plot(numbers, path)``, which draws them. ``main`` here parses
``[OUTPUT_DIR]``, runs both, writes ``NAME.png`` and ``NAME.json`` and exits 1 if a claim failed.
"""

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from matplotlib.figure import Figure

import nnjax
from nnjax.datasets import Dataset
from nnjax.files import write_json
from nnjax.plotting import save_figure
from nnjax.training import TrainResult, train

__all__ = [
    "log_axes",
    "main",
    "new_network",
    "plot_final_losses",
    "plot_loss_curves",
    "save_axes",
    "save_figure",
    "sgd_config",
    "train_network",
]

DEFAULT_OUTPUT_DIR = Path("runs/experiments")


def new_network(data: Dataset, hidden: Sequence[int], init: str, key: jax.Array) -> list:
    """Fresh parameters for ``[n_in, *hidden, num_classes]``, the sizes ``data`` needs."""
    return nnjax.init_network(key, [data.x_train.shape[1], *hidden, data.num_classes], init=init)


def train_network(
    data: Dataset, params: list, key: jax.Array, *, activation: str = "relu", **options: Any
) -> TrainResult:
    """``training.train`` on ``data``'s training split, evaluating on its test split every epoch.

    ``options`` go to ``train`` (``optimizer``, ``epochs``, ``l2``...); the batch
    size defaults to 32 and the loss is softmax cross-entropy.
    """
    options = {"batch_size": 32, **options}
    validation = (data.x_test, data.y_test)
    model = nnjax.DenseNetwork(activation)
    return train(
        params, data.x_train, data.y_train, model=model, key=key, validation=validation, **options
    )


def log_axes() -> tuple[Figure, Any]:
    """A one-panel figure with a logarithmic y axis, for ``save_axes`` to finish."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.set_yscale("log")
    return fig, ax


def save_axes(fig: Figure, ax: Any, path: Path, *, title: str, xlabel: str, ylabel: str) -> Path:
    """Labels, grid and legend on ``ax``, then ``fig`` written to ``path`` as a PNG."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_loss_curves(curves: dict[str, Sequence[float]], path: Path, *, title: str) -> Path:
    """One training-loss curve per entry of ``curves`` (label -> loss per epoch), log scale."""
    fig, ax = log_axes()
    for label, losses in curves.items():
        ax.plot(np.arange(1, len(losses) + 1), losses, label=label)
    return save_axes(
        fig, ax, path, title=title, xlabel="epoch", ylabel="training loss (cross-entropy)"
    )


def plot_final_losses(numbers: dict, path: Path, *, compared: str) -> Path:
    """``plot_loss_curves`` of ``numbers["train_loss"]``, each labelled with its final loss, for
    the deep networks on the spirals that ``sgd_config`` describes."""
    curves = {
        f"{name} ({losses[-1]:.3f})": losses for name, losses in numbers["train_loss"].items()
    }
    config = numbers["config"]
    layers = f"{config['depth']} {config['activation']} layers of {config['width']}"
    return plot_loss_curves(curves, path, title=f"Spirals, {layers}: {compared}")


def sgd_config(depth, width, activation, init, epochs, batch_size, learning_rate, seed) -> dict:
    """The JSON config of a deep network trained by SGD."""
    return {
        "depth": depth,
        "width": width,
        "activation": activation,
        "init": init,
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": f"sgd({learning_rate})",
        "seed": seed,
    }


def main(argv: list[str] | None, script: str, run: Callable[[], dict], plot: Callable) -> int:
    """The command line of the experiment in file ``script``: ``python SCRIPT [OUTPUT_DIR]``;
    ``argv`` None reads ``sys.argv``."""
    argv = sys.argv[1:] if argv is None else argv
    name = Path(script).stem
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print(f"usage: python scripts/experiments/{name}.py [OUTPUT_DIR]", file=sys.stderr)
        return 2
    out_dir = Path(argv[0]) if argv else DEFAULT_OUTPUT_DIR

    start = time.perf_counter()
    numbers = run()
    numbers["wall_seconds"] = round(time.perf_counter() - start, 2)
    for claim, held in numbers["claims"].items():
        print(f"{'held' if held else 'FAILED'}: {claim}")

    json_path = out_dir / f"{name}.json"
    write_json(json_path, numbers)
    for path in (plot(numbers, out_dir / f"{name}.png"), json_path):
        print(f"wrote {path}")
    print(f"{name}: {numbers['wall_seconds']:.1f} s")
    return 0 if all(numbers["claims"].values()) else 1
