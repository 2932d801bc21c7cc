"""The ``nnjax`` command line: ``train``, ``plot`` and ``check``.

``nnjax train`` trains a network on a dataset (or a data file, ``--data``) and writes a run
folder: ``metrics.json`` (configuration, per-epoch history, test metrics, timings, versions),
``checkpoint.npz``, and the plots (``history.png``, ``activations.png``, ``confusion_matrix.png``
and, for 2-D data, ``decision_boundary.png``; for regression, ``predicted_vs_true.png``).
``nnjax plot RUN`` redraws the plots from a run folder. ``nnjax check`` proves every hand-written
derivative (see ``nnjax.checks``). The runs themselves are ``nnjax.runs``; this module parses the
options and reports.

Exit codes: 0 success, 1 training diverged or a check failed, 2 bad command-line options.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import nnjax
from nnjax import (
    activations,
    checks,
    compilation_cache,
    datafiles,
    datasets,
    diagnostics,
    distributed,
    folders,
    initializers,
    run_data,
    runs,
    steps,
)
from nnjax.option_types import (
    NONNEGATIVE_INT,
    POSITIVE_INT,
    SEED,
    devices,
    float_type,
    hidden_sizes,
    option_type,
)

__all__ = ["main"]

EXAMPLES = """examples:
  nnjax train                                   # digits, 64-64 ReLU, Adam: about 98% test accuracy
  nnjax train --dataset moons --hidden 16,16 --epochs 200 --output runs/moons
  nnjax train --dataset xor --hidden 4 --activation sigmoid --loss binary_cross_entropy \\
      --optimizer momentum --lr 2 --epochs 2000 --batch-size 4
  nnjax train --dataset breast_cancer --loss binary_cross_entropy --grad autodiff
  nnjax train --data houses.csv --label-column price --loss mse   # regression on your data
"""


class _Parser(argparse.ArgumentParser):
    """Reports a usage error in one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# ---------------------------------------------------------------------------------------------
# The parser

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
        "dropout rate on hidden layers, in [0, 1) (default: 0)",
    ),
    (("--epochs",), "epochs", POSITIVE_INT, "default: %(default)s"),
    (("--batch-size",), "batch_size", POSITIVE_INT, "default: %(default)s"),
    (("--seed",), "seed", SEED, "seed of every random choice, 0 .. 2**32-1 (default: 0)"),
)


_SIZES = ", ".join(f"{n} for {name}" for name, n in datasets.SYNTHETIC_DATASETS.items())


def _add_data_options(group: Any) -> None:
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


def _add_model_options(group: Any) -> None:
    default = runs.DEFAULT_CONFIG
    add = group.add_argument
    _add_data_options(group)
    add(
        "--test-fraction",
        type=float_type(0.0, 1.0, low_inclusive=False),
        default=default["test_fraction"],
        help="fraction of the data held out for testing (default: %(default)s)",
    )
    add(
        "--hidden",
        type=hidden_sizes,
        default=default["hidden"],
        metavar="SIZES",
        help="hidden layer sizes, comma-separated (default: "
        f"{','.join(map(str, default['hidden']))})",
    )
    add(
        "--activation",
        choices=tuple(activations.ACTIVATIONS),
        default=default["activation"],
        help="hidden activation (default: %(default)s)",
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
        help="weight initializer (default: he for relu, xavier otherwise)",
    )


def _add_training_options(group: Any) -> None:
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
        "exploding gradients and dead ReLUs (0: off)",
    )


def _add_parallel_options(group: Any) -> None:
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


def _add_train(commands: Any, error: Callable[[str], NoReturn]) -> None:
    train = _subcommand(
        commands,
        "train",
        error,
        help="train a network and write its metrics, plots and checkpoint",
        description=(
            "Train a fully connected network with minibatch gradient descent, whole epochs "
            "compiled, gradients from the hand-written backward_pass (or autodiff), and write "
            "metrics.json, checkpoint.npz and PNG plots into the output folder."
        ),
        epilog=EXAMPLES,
    )
    train.set_defaults(handler=_train)
    _add_model_options(train.add_argument_group("data and network"))
    _add_training_options(train.add_argument_group("optimizer and training"))
    _add_parallel_options(train.add_argument_group("parallel and multi-process training"))
    output = train.add_argument_group("output")
    output.add_argument(
        "--output",
        type=Path,
        help="run folder (default: the first free of runs/DATASET, runs/DATASET-2, ...; with "
        "--resume, the most recent of them)",
    )
    output.add_argument(
        "--resume",
        action="store_true",
        help="continue from the folder's checkpoint; "
        f"{', '.join('--' + k.replace('_', '-') for k in runs.RESUMABLE)} may change",
    )
    output.add_argument(
        "--overwrite", action="store_true", help="replace the run in --output (nnjax's files only)"
    )
    output.add_argument(
        "--checkpoint-every",
        type=option_type(folders.parse_interval, "a number of epochs (10) or of seconds (30s)"),
        default=folders.parse_interval("30s"),
        metavar="N|Ts",
        help="save the checkpoint every N epochs or every T seconds, e.g. 10 or 30s (default: "
        "30s); SIGINT and SIGTERM save it too",
    )
    output.add_argument("--quiet", action="store_true", help="no progress bar")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples as written, and every option's default in its help, once."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help and "default" in action.help:
            return action.help
        return super()._get_help_string(action)


def _subcommand(
    commands: Any, name: str, error: Callable[[str], NoReturn], **options: Any
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, formatter_class=_Formatter, **options)
    parser.error = error  # one-line errors, "nnjax: error: ...", for the subcommand too
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nnjax",
        description="The mathematics of neural networks in JAX, with proven hand-written gradients.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {nnjax.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(commands, parser.error)
    plot = _subcommand(
        commands,
        "plot",
        parser.error,
        help="redraw the plots of a run folder",
        description="Redraw the PNG plots of a run folder from its metrics.json and checkpoint."
        "\n\nexample:\n  nnjax plot runs/digits",
    )
    plot.add_argument("run", type=Path, help="a folder written by nnjax train")
    plot.set_defaults(handler=_plot)
    check = _subcommand(
        commands,
        "check",
        parser.error,
        help="verify every hand-written derivative against jax.grad, jax.jvp and finite differences",
        description=(
            "Check each hand-written derivative in nnjax (activations, losses, backward_pass for "
            "every hidden activation and output/loss pair, with L2 and dropout) against reverse "
            "mode, forward mode and central finite differences in float64, and each optimizer "
            "against its optax reference over 100 steps. Prints one row per check; exits 1 if "
            "any fails.\n\nexample:\n  nnjax check\n  nnjax check --only backward_pass"
        ),
    )
    check.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only the checks whose name contains NAME; repeatable or comma-separated, "
        "e.g. --only relu,adam (default: every check)",
    )
    check.set_defaults(handler=lambda args: checks.main(args.only))
    return parser


def _join_processes(args: argparse.Namespace) -> None:
    if args.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    elif args.num_processes is not None or args.process_id is not None:
        raise ValueError("--num-processes and --process-id need --coordinator")


def _prepare(args: argparse.Namespace, config: dict[str, Any], folder: Path) -> Any:
    """Everything that can fail on bad input, before training: the folder is checked (and
    locked, by process 0) before any data is loaded. Returns the run and where it starts."""
    _join_processes(args)
    if runs.is_lead_process():
        folders.prepare(folder, resume=args.resume, overwrite=args.overwrite)
    run = runs.Run(config)
    return run, runs.resolve_devices(run, args.devices)


def _train(args: argparse.Namespace) -> int:
    config = runs.make_config(**{key: getattr(args, key) for key in runs.DEFAULT_CONFIG})
    folder = args.output or folders.default_folder(run_data.name(config), resume=args.resume)
    created = not folder.exists()
    with contextlib.ExitStack() as stack:
        try:
            run, devices = _prepare(args, config, folder)
            if runs.is_lead_process():
                stack.enter_context(folders.locked(folder))
        except ValueError as error:
            stack.close()
            if created:
                folders.discard(folder)
            return _usage_error(str(error))
        try:
            start = folders.resume(run, folder) if args.resume else run.fresh_start()
        except ValueError as error:
            return _usage_error(f"--resume: {error}")
        return _train_prepared(args, run, start, devices, folder)


def _train_prepared(
    args: argparse.Namespace, run: Any, start: Any, devices: Any, folder: Path
) -> int:
    # In a multi-process run, every process trains on its share of the data; process 0 reports.
    lead = runs.is_lead_process()
    quiet = args.quiet or not lead
    saver = folders.periodic_saver(run, folder, start, args.checkpoint_every) if lead else None
    try:
        trained = runs.train(
            run,
            start,
            shares=runs.process_shares(run.data, quiet=quiet),
            devices=devices,
            quiet=quiet,
            on_progress=saver,
        )
        if not lead:
            if trained.interrupted is not None:
                return 128 + trained.interrupted
            return 1 if trained.result.diverged is not None else 0
        written = folders.write_run_folder(run, trained, folder, plots=trained.interrupted is None)
    except KeyboardInterrupt as stop:
        print(f"nnjax train: {stop or 'SIGINT'} while compiling: nothing written", file=sys.stderr)
        return 143 if str(stop) == "SIGTERM" else 130
    except OSError as error:  # disk full, a file-size limit: the last complete write stands
        print(
            f"nnjax train: error: cannot write {folder}: {error.strerror or error}; it holds the "
            "last checkpoint written in full",
            file=sys.stderr,
        )
        return 1
    return _report(trained, written, folder)


_SCORES = (("accuracy", "accuracy"), ("r2", "R^2"), ("loss", "loss"))


def _report(trained: runs.Trained, written: folders.Written, folder: Path) -> int:
    result, config, test = trained.result, written.metrics["config"], written.metrics["test"]
    if trained.interrupted is not None:
        name = signal.Signals(trained.interrupted).name
        print(
            f"nnjax train: {name}: stopped after epoch {trained.epoch}, saved in "
            f"{written.checkpoint}. Continue with:\n  {runs.command_line(config, folder)}",
            file=sys.stderr,
        )
        return 128 + trained.interrupted
    if result.diverged is not None:
        lower = runs.command_line(config, folder, learning_rate=config["learning_rate"] / 10)
        print(
            f"nnjax train: error: training diverged (non-finite loss or parameters) at epoch "
            f"{result.diverged.epoch + 1}, step {result.diverged.step + 1}; the learning rate "
            f"({config['learning_rate']:g}) is likely too high. The parameters after the last "
            f"completed epoch ({trained.epoch}) are in {written.checkpoint}. Continue with a "
            f"lower learning rate:\n  {lower}",
            file=sys.stderr,
        )
        return 1
    for warning in diagnostics.diagnose(trained.history):
        print(f"warning: {warning}")
    scores = ", ".join(f"test {name} {test[key]:.4f}" for key, name in _SCORES if key in test)
    print(
        f"{run_data.name(config)}: {scores} after {trained.epoch} epochs\n"
        f"wall time {trained.wall_seconds:.1f} s (compile {result.compile_seconds:.1f} s), "
        f"{result.steps_per_second:,.0f} steps/s, gradients: {config['grad']}\n"
        f"wrote {written.metrics_json}, {written.checkpoint}, "
        + ", ".join(str(p) for p in written.plots)
    )
    return 0


def _plot(args: argparse.Namespace) -> int:
    try:
        with folders.locked(args.run) if args.run.is_dir() else contextlib.nullcontext():
            paths = folders.redraw(args.run)
    except ValueError as error:
        return _usage_error(str(error))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _usage_error(message: str) -> int:
    print(f"nnjax: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``nnjax`` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.handler in (_train, _plot):
        compilation_cache.use()
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
