"""Initialization: He keeps a deep ReLU network's signal alive; Xavier lets it fade.

A layer computes z = W a + b. With weights of variance σ² and n inputs, Var(z) = n σ² E[a²].
ReLU zeroes the negative half of z, so E[relu(z)²] = Var(z) / 2: to keep the scale from layer to
layer, n σ² must be 2, which is He's σ = sqrt(2 / n_in). Xavier's σ = sqrt(2 / (n_in + n_out))
is sqrt(1 / n) for square layers, so each ReLU layer halves E[a²] and the activations' std
shrinks by about sqrt(2) per layer (He et al. 2015): 2^-14.5 ≈ 4e-5 after 30 layers. (With zero
biases relu(c z) = c relu(z) for c > 0, so from the same key the Xavier network is exactly the He
network scaled by 1/sqrt(2) per layer.) tanh is linear near 0 and loses less; He's larger
weights push it into saturation instead.

No training here: a batch of standard-normal inputs goes through 30-layer networks of width 256
at initialization, for a few seeds, and the plot shows each hidden layer's activation std.

Run it with ``python scripts/experiments/initialization.py [OUTPUT_DIR]``.
"""

import sys

import jax
import numpy as np
from _common import log_axes, save_axes
from _common import main as common_main

import nnjax
from nnjax.diagnostics import layer_statistics

CASES = [("relu", "he"), ("relu", "xavier"), ("tanh", "he"), ("tanh", "xavier")]


def activation_stds(key, activation, init, depth, width, batch) -> np.ndarray:
    """The std of each hidden layer's activations, layers 1..depth, at initialization."""
    init_key, data_key = jax.random.split(key)
    # depth hidden layers of `width` units, then one linear output the statistics ignore.
    params = nnjax.init_network(init_key, [width] * (depth + 1) + [1], init=init)
    x = jax.random.normal(data_key, (batch, width))
    _, cache = nnjax.forward_pass(params, x, activation=activation, loss="mse")
    return np.asarray(layer_statistics(cache, activation, depth + 1).std)


def run(depth=30, width=256, batch=256, seeds=(0, 1, 2, 3), cases=CASES) -> dict:
    stds, ratio = {}, {}
    for activation, init in cases:
        name = f"{activation}/{init}"
        keys = [jax.random.key(seed) for seed in seeds]
        runs = np.stack([activation_stds(k, activation, init, depth, width, batch) for k in keys])
        # One network's scale drifts by a random factor (its width is finite); the geometric
        # mean over seeds shows the trend that the variance argument predicts.
        geomean = np.exp(np.log(runs).mean(axis=0))
        stds[name] = {"geomean": geomean, "min": runs.min(axis=0), "max": runs.max(axis=0)}
        ratio[name] = float(geomean[-1] / geomean[0])
        print(f"{name:12s} std: layer 1 {geomean[0]:.3f}, layer {depth} {geomean[-1]:.2e}")
    per_layer = {name: r ** (1 / (depth - 1)) for name, r in ratio.items()}
    claims = {}
    if "relu/he" in ratio:
        claims["He: the last ReLU layer's std is within 0.5x-2x of the first's"] = (
            0.5 <= ratio["relu/he"] <= 2
        )
    if "relu/xavier" in ratio:
        off = abs(per_layer["relu/xavier"] - 2**-0.5)
        claims["Xavier: the last ReLU layer's std is below 1% of the first's"] = (
            ratio["relu/xavier"] < 0.01
        )
        claims["Xavier: ReLU std shrinks by 1/sqrt(2) ± 0.05 per layer"] = off < 0.05
    config = {"depth": depth, "width": width, "batch": batch, "seeds": list(seeds)}
    numbers = {"std": stds, "last_over_first": ratio, "factor_per_layer": per_layer}
    return {"config": config, **numbers, "claims": claims}


def plot(numbers: dict, path):
    fig, ax = log_axes()
    for i, (name, std) in enumerate(numbers["std"].items()):
        layers = np.arange(1, len(std["geomean"]) + 1)
        ax.plot(layers, std["geomean"], color=f"C{i}", marker=".", label=name)
        ax.fill_between(layers, std["min"], std["max"], color=f"C{i}", alpha=0.2)
    if "relu/xavier" in numbers["std"]:
        start = numbers["std"]["relu/xavier"]["geomean"][0]
        ax.plot(layers, start * 2 ** (-(layers - 1) / 2), "k:", label="× 1/√2 per layer")
    return save_axes(
        fig,
        ax,
        path,
        title=f"Activation scale at initialization, width {numbers['config']['width']}",
        xlabel="hidden layer",
        ylabel="activation std (geometric mean, min-max over seeds)",
    )


def main(argv: list[str] | None = None) -> int:
    return common_main(argv, __file__, run, plot)


if __name__ == "__main__":
    sys.exit(main())
