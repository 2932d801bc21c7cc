"""XOR: the spec's 2-4-1 sigmoid network, trained with the spec's damped momentum.

XOR is the smallest problem a single neuron cannot solve: no line separates {01, 10} from
{00, 11}. One hidden layer of four sigmoid units bends the boundary enough. This script

1. checks the hand-written ``backward_pass`` against ``jax.grad`` of the same loss,
2. trains full batch with ``nnjax.momentum`` (v = βv + (1-β)g, θ = θ - αv),
3. prints the predicted probabilities and the accuracy, and exits 1 below 100%.

Run it with ``python scripts/xor.py``.
"""

import sys

import jax
import jax.numpy as jnp

import nnjax
from nnjax.datasets import load_dataset
from nnjax.metrics import evaluate, prepare_targets
from nnjax.training import train

SEED = 0
# A sigmoid hidden layer, and a sigmoid output trained with binary cross-entropy (from the logits).
ARCH = {"activation": "sigmoid", "loss": "binary_cross_entropy"}
# The damped velocity averages gradients, so its steps are small: a large α makes up for it.
LEARNING_RATE, BETA, EPOCHS = 2.0, 0.9, 2000


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        print("usage: python scripts/xor.py", file=sys.stderr)
        return 2
    data_key, init_key, train_key = jax.random.split(jax.random.key(SEED), 3)

    # The data: the four corners of the unit square, labelled with the XOR of their coordinates.
    data = load_dataset("xor", data_key)
    x, y = data.x_train, prepare_targets(data.y_train, ARCH["loss"])  # y as a (4, 1) column

    # The network: Xavier init, N(0, sqrt(2 / (n_in + n_out))), suits sigmoid units.
    params = nnjax.init_network(init_key, [2, 4, 1], init="xavier")

    # Backpropagation by hand (the chain rule layer by layer) against reverse-mode autodiff.
    _, cache = nnjax.forward_pass(params, x, **ARCH)
    manual = nnjax.backward_pass(params, x, y, cache, **ARCH)
    auto = jax.grad(nnjax.network_loss)(params, x, y, **ARCH)
    diffs = jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), manual, auto)
    print(f"backward_pass vs jax.grad, max abs difference: {max(jax.tree.leaves(diffs)):.1e}")

    # Training: every step sees all four points (batch_size=4), so the gradient is exact.
    result = train(
        params,
        x,
        y,
        model=nnjax.DenseNetwork(**ARCH),
        optimizer=nnjax.momentum(learning_rate=LEARNING_RATE, beta=BETA),
        epochs=EPOCHS,
        batch_size=4,
        key=train_key,
    )
    loss, accuracy = (float(v) for v in evaluate(result.params, x, y, nnjax.DenseNetwork(**ARCH)))

    # The output is a probability; above 0.5 counts as class 1.
    probabilities = nnjax.predict(result.params, x, **ARCH)[:, 0]
    print("x1 x2  target  p(y=1)")
    for point, target, p in zip(x.tolist(), y[:, 0].tolist(), probabilities.tolist(), strict=True):
        print(f" {point[0]:.0f}  {point[1]:.0f}    {target:.0f}     {p:.3f}")
    print(f"after {result.epochs_run} epochs: loss {loss:.4f}, accuracy {accuracy:.0%}")

    if accuracy < 1.0:
        print("FAILED: XOR was not learned (accuracy below 100%)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
