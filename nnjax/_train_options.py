"""The options of ``nnjax train`` about the run itself, in four argparse groups.

Data and network (``add_model_options``), optimizer and training (``add_training_options``),
evaluation and early stopping (``add_evaluation_options``), parallel and multi-process training
(``add_parallel_options``); each option's ``dest`` is its key in ``runs.DEFAULT_CONFIG``, or an
argument of the run's processes.
"""

from __future__ import annotations

from typing import Any

from nnjax import activations, datafiles, datasets, initializers, metrics, run_model, runs, steps
from nnjax.option_types import (
    NONNEGATIVE_INT,
    POSITIVE_INT,
    SEED,
    devices,
    float_type,
    hidden_sizes,
    option_type,
)

__all__ = [
    "add_data_options",
    "add_evaluation_options",
    "add_model_options",
    "add_parallel_options",
    "add_training_options",
]

_LEARNING_RATES = ", ".join(
    f"{lr:g} for {name}" for name, lr in runs.DEFAULT_LEARNING_RATES.items()
)
_HYPERPARAMETERS = (
    # flags, the key of runs.DEFAULT_CONFIG they set, type, help
    (
        ("--lr", "--learning-rate"),
        "learning_rate",
        float_type(0.0, low_inclusive=False),
        f"learning rate > 0 (default: {_LEARNING_RATES})",
    ),
    (("--beta",), "beta", float_type(0.0, 1.0), "momentum decay"),
    (("--beta1",), "beta1", float_type(0.0, 1.0), "Adam beta1"),
    (("--beta2",), "beta2", float_type(0.0, 1.0), "Adam beta2"),
    (("--epsilon",), "epsilon", float_type(0.0, low_inclusive=False), "Adam epsilon"),
    (("--l2",), "l2", float_type(0.0), "L2 strength"),
    (
        ("--dropout", "--dropout-rate"),
        "dropout",
        float_type(0.0, 1.0),
        "dropout rate on the dense network's hidden layers, in [0, 1) (default: 0)",
    ),
    (("--epochs",), "epochs", POSITIVE_INT, "default: %(default)s"),
    (("--batch-size",), "batch_size", POSITIVE_INT, "default: %(default)s"),
    (("--seed",), "seed", SEED, "seed of every random choice, 0 .. 2**32-1 (default: 0)"),
)


_SIZES = ", ".join(f"{n} for {name}" for name, n in datasets.SYNTHETIC_DATASETS.items())


def add_data_options(group: Any) -> None:
    """Adds ``--dataset`` or ``--data``, ``--label-column`` and ``--n-samples`` to ``group``.

    Args:
      group: an argparse argument group.
    """
    add = group.add_mutually_exclusive_group().add_argument
    add(
        "--dataset",
        choices=datasets.DATASETS,
        default=runs.DEFAULT_CONFIG["dataset"],
        help="a built-in dataset (default: %(default)s)",
    )
    add(
        "--data",
        metavar="FILE",
        help="your own data instead, split and standardized as a dataset's: a .npz file with "
        "arrays x (samples, features) and y (samples,), or a .csv file with a header row "
        f"(at most {datafiles.MAX_BYTES >> 20} MiB; default: none)",
    )
    group.add_argument(
        "--label-column",
        metavar="NAME",
        help="the --data .csv column of the labels, or of the targets with --loss mse "
        "(default: the last column)",
    )
    group.add_argument(
        "--n-samples",
        type=POSITIVE_INT,
        metavar="N",
        help=f"the number of points of a synthetic dataset (default: {_SIZES})",
    )


def add_model_options(group: Any) -> None:
    """Adds the data options, ``--test-fraction``, the network (``--hidden``, ``--activation``
    or ``--layers``, ``--input-shape``), ``--loss`` and ``--init`` to ``group``.

    Args:
      group: an argparse argument group.
    """
    default = runs.DEFAULT_CONFIG
    add = group.add_argument
    add_data_options(group)
    add(
        "--test-fraction",
        type=float_type(0.0, 1.0, low_inclusive=False),
        default=default["test_fraction"],
        help="fraction of the data held out for testing (default: %(default)s)",
    )
    # None when not given: they may not go with --layers (runs.make_config fills them in).
    add(
        "--hidden",
        type=hidden_sizes,
        metavar="SIZES",
        help="hidden layer sizes, comma-separated (default: "
        f"{','.join(map(str, default['hidden']))})",
    )
    add(
        "--activation",
        choices=tuple(activations.ACTIVATIONS),
        help=f"hidden activation (default: {default['activation']})",
    )
    add(
        "--layers",
        metavar="TEXT",
        help="the network as layers instead of --hidden and --activation, e.g. "
        '"conv2d(16,3),relu,maxpool(2),flatten,dense(10)" (see nnjax.architecture; dropout as '
        "dropout(p); end in dense(number of classes); default: none)",
    )
    add(
        "--input-shape",
        type=option_type(run_model.parse_shape, "comma-separated positive sizes like 8,8,1"),
        metavar="SHAPE",
        help="the shape of one example for --layers, e.g. 8,8,1 (default: the first convolution "
        "or pooling layer decides: 2-D takes the digits as 8,8,1 images, 1-D takes N features "
        "as N,1; none: N)",
    )
    add(
        "--loss",
        choices=runs.LOSSES,
        default=default["loss"],
        help="output and loss: softmax + cross-entropy, sigmoid + binary cross-entropy "
        "from logits for two-class data, or identity + mean squared error for regression on "
        "the --data targets, standardized (default: %(default)s)",
    )
    add(
        "--init",
        choices=tuple(initializers.INITIALIZERS),
        default=default["init"],
        help="the dense network's weight initializer (default: he for relu, xavier otherwise)",
    )


def add_training_options(group: Any) -> None:
    """Adds the optimizer, its hyperparameters, ``--grad`` and ``--diagnostics`` to ``group``.

    Args:
      group: an argparse argument group.
    """
    default = runs.DEFAULT_CONFIG
    group.add_argument(
        "--optimizer",
        choices=tuple(runs.DEFAULT_LEARNING_RATES),
        default=default["optimizer"],
        help="momentum is the spec's damped form; classical_momentum and nesterov are the "
        "heavy-ball forms (default: %(default)s)",
    )
    for flags, key, parse, help_text in _HYPERPARAMETERS:
        group.add_argument(*flags, dest=key, type=parse, default=default[key], help=help_text)
    group.add_argument(
        "--grad",
        choices=steps.GRADIENT_SOURCES,
        default=default["grad"],
        help="gradients from backward_pass (manual) or jax.grad (autodiff)",
    )
    group.add_argument(
        "--diagnostics",
        type=NONNEGATIVE_INT,
        default=default["diagnostics"],
        metavar="EVERY",
        help="record activation statistics, dead and saturated units, per-layer gradient norms "
        "and update/weight ratios every EVERY epochs, plot them and warn about vanishing or "
        "exploding gradients and dead ReLUs (0: off; dense networks only)",
    )


def add_evaluation_options(group: Any) -> None:
    """Adds ``--eval-every``, ``--no-shuffle``, ``--early-stopping``, ``--patience`` and
    ``--min-delta`` to ``group``.

    Args:
      group: an argparse argument group.
    """
    default = runs.DEFAULT_CONFIG
    add = group.add_argument
    add(
        "--eval-every",
        type=NONNEGATIVE_INT,
        default=default["eval_every"],
        metavar="N",
        help="evaluate the loss and accuracy of the training and test sets after every N-th "
        "epoch, counted from the run's first (0: never; unless 1, the history records the "
        "epochs evaluated as eval_epoch)",
    )
    add(
        "--no-shuffle",
        dest="shuffle",
        action="store_false",
        help="take the training set in its order every epoch instead of shuffling it (the last "
        "samples that do not fill a batch are then never used; default: shuffle)",
    )
    add(
        "--early-stopping",
        choices=metrics.HISTORY_KEYS,
        metavar="METRIC",
        help="stop once METRIC (val_loss, val_accuracy, train_loss or train_accuracy; the test "
        "set is the validation set) has not improved for --patience epochs, and keep the best "
        "epoch's parameters: the test metrics and checkpoint are that epoch's; an accuracy must "
        "rise, a loss fall (default: off)",
    )
    add(
        "--patience",
        type=POSITIVE_INT,
        default=default["patience"],
        metavar="N",
        help="epochs without improvement after which --early-stopping stops",
    )
    add(
        "--min-delta",
        type=float_type(0.0),
        default=default["min_delta"],
        metavar="D",
        help="the least change of the metric that counts as an improvement for --early-stopping",
    )


def add_parallel_options(group: Any) -> None:
    """Adds ``--devices`` and the multi-process options to ``group``.

    Args:
      group: an argparse argument group.
    """
    add = group.add_argument
    add(
        "--devices",
        type=devices,
        metavar="N|all",
        help="data-parallel training over N local devices (or all): each minibatch is split "
        "over them, parameters replicated; --batch-size must divide by N (default: one device)",
    )
    add(
        "--coordinator",
        metavar="HOST:PORT",
        help="join a multi-process run whose process 0 serves at HOST:PORT "
        "(jax.distributed; default: $JAX_COORDINATOR_ADDRESS, else one process). Every process "
        "runs the same command with its own --process-id and loads its share of the data; "
        "process 0 writes the run folder",
    )
    add(
        "--num-processes",
        type=POSITIVE_INT,
        metavar="P",
        help="processes in the run (default: $JAX_NUM_PROCESSES)",
    )
    add(
        "--process-id",
        type=NONNEGATIVE_INT,
        metavar="I",
        help="this process's index, 0 .. P-1 (default: $JAX_PROCESS_ID)",
    )
