"""The ``nnjax`` command line: ``train``, ``plot`` and ``check``.

``nnjax train`` trains a network on a dataset and writes a run folder: ``metrics.json``
(configuration, per-epoch history, test metrics, timings, versions), ``checkpoint.npz``, and the
plots (``history.png``, ``activations.png``, ``confusion_matrix.png`` and, for 2-D data,
``decision_boundary.png``). ``nnjax plot RUN`` redraws the plots from a run folder.
``nnjax check`` proves every hand-written derivative (see ``nnjax.gradcheck``).

Exit codes: 0 success, 1 training diverged or a check failed, 2 bad command-line options.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

DEFAULT_LEARNING_RATES = {
    "adam": 3e-3,
    "sgd": 0.1,
    "momentum": 0.1,
    "classical_momentum": 0.01,
    "nesterov": 0.01,
}
CLASSIFICATION_LOSSES = ("softmax_cross_entropy", "binary_cross_entropy")
EXAMPLES = """examples:
  nnjax train                                   # digits, 64-64 ReLU, Adam: about 98% test accuracy
  nnjax train --dataset moons --hidden 16,16 --epochs 200 --output runs/moons
  nnjax train --dataset xor --hidden 4 --activation sigmoid --loss binary_cross_entropy \\
      --optimizer momentum --lr 2 --epochs 2000 --batch-size 4
  nnjax train --dataset breast_cancer --loss binary_cross_entropy --grad autodiff
"""


_FLOAT32_TINY, _FLOAT32_MAX = 1.1754944e-38, 3.4028235e38  # smallest normal, largest finite


class _Parser(argparse.ArgumentParser):
    """Reports a usage error in one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    value = _nonnegative_int(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"must be below 2**32, got {value}")
    return value


def _devices(text: str) -> int | str:
    return "all" if text == "all" else _positive_int(text)


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def _float_in(low: float, high: float | None, *, low_open: bool, high_open: bool = True):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high or not math.isfinite(value):
            lo = "(" if low_open else "["
            hi = "inf)" if high is None else f"{high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be in {lo}{low:g}, {hi}, got {text}")
        # Training runs in float32: a value it would round to 0 or to inf is an error here.
        if value != 0 and not _FLOAT32_TINY <= abs(value) <= _FLOAT32_MAX:
            raise argparse.ArgumentTypeError(f"{text} is not representable in float32")
        return value

    return parse


def _hidden_sizes(text: str) -> list[int]:
    if text.strip() in ("", "none"):
        return []
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer sizes like 64,64, got {text!r}"
        ) from None
    if any(n <= 0 for n in sizes):
        raise argparse.ArgumentTypeError(f"every hidden size must be positive, got {text!r}")
    return sizes


def _parser() -> argparse.ArgumentParser:
    from nnjax import datasets, initializers, network, training

    parser = _Parser(
        prog="nnjax",
        description="The mathematics of neural networks in JAX, with proven hand-written gradients.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a network and write its metrics, plots and checkpoint",
        description=(
            "Train a fully connected network with minibatch gradient descent, whole epochs "
            "compiled, gradients from the hand-written backward_pass (or autodiff), and write "
            "metrics.json, checkpoint.npz and PNG plots into the output folder."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.error = parser.error  # one-line errors for the subcommand too
    add = train.add_argument
    add("--dataset", choices=datasets.DATASETS, default="digits", help="default: %(default)s")
    add(
        "--hidden",
        type=_hidden_sizes,
        default=[64, 64],
        metavar="SIZES",
        help="hidden layer sizes, comma-separated (default: 64,64)",
    )
    add(
        "--activation",
        choices=tuple(network.ACTIVATIONS),
        default="relu",
        help="hidden activation (default: %(default)s)",
    )
    add(
        "--loss",
        choices=CLASSIFICATION_LOSSES,
        default="softmax_cross_entropy",
        help="output and loss: softmax + cross-entropy, or sigmoid + binary cross-entropy "
        "from logits for two-class data (default: %(default)s)",
    )
    add(
        "--init",
        choices=tuple(initializers.INITIALIZERS),
        default=None,
        help="weight initializer (default: he for relu, xavier otherwise)",
    )
    add(
        "--optimizer",
        choices=tuple(DEFAULT_LEARNING_RATES),
        default="adam",
        help="momentum is the spec's damped form; classical_momentum and nesterov are the "
        "heavy-ball forms (default: %(default)s)",
    )
    add(
        "--lr",
        type=_float_in(0.0, None, low_open=True),
        default=None,
        help="learning rate > 0 (default: 3e-3 for adam, 0.1 for sgd and momentum, "
        "0.01 for classical_momentum and nesterov)",
    )
    add("--beta", type=_float_in(0.0, 1.0, low_open=False), default=0.9, help="momentum decay")
    add("--beta1", type=_float_in(0.0, 1.0, low_open=False), default=0.9, help="Adam beta1")
    add("--beta2", type=_float_in(0.0, 1.0, low_open=False), default=0.999, help="Adam beta2")
    add("--epsilon", type=_float_in(0.0, None, low_open=True), default=1e-8, help="Adam epsilon")
    add("--l2", type=_float_in(0.0, None, low_open=False), default=0.0, help="L2 strength")
    add(
        "--dropout",
        type=_float_in(0.0, 1.0, low_open=False),
        default=0.0,
        help="dropout rate on hidden layers, in [0, 1) (default: 0)",
    )
    add("--epochs", type=_positive_int, default=40, help="default: %(default)s")
    add("--batch-size", type=_positive_int, default=32, help="default: %(default)s")
    add(
        "--seed",
        type=_seed,
        default=0,
        help="seed of every random choice, 0 .. 2**32-1 (default: 0)",
    )
    add(
        "--grad",
        choices=training.GRADIENT_SOURCES,
        default="manual",
        help="gradients from backward_pass (manual) or jax.grad (autodiff)",
    )
    add(
        "--test-fraction",
        type=_float_in(0.0, 1.0, low_open=True),
        default=0.2,
        help="fraction of the data held out for testing (default: %(default)s)",
    )
    add(
        "--diagnostics",
        type=_nonnegative_int,
        default=0,
        metavar="EVERY",
        help="record activation statistics, dead and saturated units, per-layer gradient norms "
        "and update/weight ratios every EVERY epochs, plot them and warn about vanishing or "
        "exploding gradients and dead ReLUs (default: 0, off)",
    )
    add(
        "--devices",
        type=_devices,
        default=None,
        metavar="N|all",
        help="data-parallel training over N local devices (or all): each minibatch is split "
        "over them, parameters replicated; --batch-size must divide by N (default: one device)",
    )
    add(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="join a multi-process run whose process 0 serves at HOST:PORT "
        "(jax.distributed; default: $JAX_COORDINATOR_ADDRESS, else one process). Every process "
        "runs the same command with its own --process-id and loads its share of the data; "
        "process 0 writes the run folder",
    )
    add(
        "--num-processes",
        type=_positive_int,
        default=None,
        metavar="P",
        help="processes in the run (default: $JAX_NUM_PROCESSES)",
    )
    add(
        "--process-id",
        type=_nonnegative_int,
        default=None,
        metavar="I",
        help="this process's index, 0 .. P-1 (default: $JAX_PROCESS_ID)",
    )
    add("--output", type=Path, default=None, help="run folder (default: runs/DATASET)")
    add("--resume", action="store_true", help="continue from the run folder's checkpoint")
    add("--quiet", action="store_true", help="no progress bar")

    plot = commands.add_parser(
        "plot",
        help="redraw the plots of a run folder",
        description="Redraw the PNG plots of a run folder from its metrics.json and checkpoint."
        "\n\nexample:\n  nnjax plot runs/digits",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plot.error = parser.error
    plot.add_argument("run", type=Path, help="a folder written by nnjax train")

    check = commands.add_parser(
        "check",
        help="verify every hand-written derivative against jax.grad, jax.jvp and finite differences",
        description=(
            "Check each hand-written derivative in nnjax (activations, losses, backward_pass for "
            "every hidden activation and output/loss pair, with L2 and dropout) against reverse "
            "mode, forward mode and central finite differences in float64, and each optimizer "
            "against its optax reference over 100 steps. Prints one row per check; exits 1 if "
            "any fails.\n\nexample:\n  nnjax check"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.error = parser.error
    return parser


# ---------------------------------------------------------------------------------------------
# Runs


def _config(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON-serializable configuration of a training run."""
    return {
        "dataset": args.dataset,
        "hidden": list(args.hidden),
        "activation": args.activation,
        "loss": args.loss,
        "init": args.init or ("he" if args.activation == "relu" else "xavier"),
        "optimizer": args.optimizer,
        "learning_rate": args.lr or DEFAULT_LEARNING_RATES[args.optimizer],
        "beta": args.beta,
        "beta1": args.beta1,
        "beta2": args.beta2,
        "epsilon": args.epsilon,
        "l2": args.l2,
        "dropout": args.dropout,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "grad": args.grad,
        "test_fraction": args.test_fraction,
        "diagnostics": args.diagnostics,
    }


def _optimizer(config: dict[str, Any]):
    from nnjax import optimizers

    name, lr = config["optimizer"], config["learning_rate"]
    if name == "adam":
        return optimizers.adam(lr, config["beta1"], config["beta2"], config["epsilon"])
    if name == "sgd":
        return optimizers.sgd(lr)
    if name == "momentum":
        return optimizers.momentum(lr, config["beta"])
    return optimizers.classical_momentum(lr, config["beta"], nesterov=name == "nesterov")


class _Run:
    """Everything a run's configuration determines: data, architecture, initial state, keys."""

    def __init__(self, config: dict[str, Any]):
        import jax

        from nnjax import datasets, network

        self.config = config
        data_key, init_key, self.train_key = jax.random.split(jax.random.key(config["seed"]), 3)
        self.data = datasets.load_dataset(
            config["dataset"], data_key, test_fraction=config["test_fraction"]
        )
        binary = config["loss"] == "binary_cross_entropy"
        if binary and self.data.num_classes != 2:
            raise ValueError(
                f"--loss binary_cross_entropy needs a two-class dataset; {config['dataset']!r} "
                f"has {self.data.num_classes} classes"
            )
        n_out = 1 if binary else self.data.num_classes
        self.layer_sizes = [self.data.x_train.shape[1], *config["hidden"], n_out]
        self.arch = {"activation": config["activation"], "loss": config["loss"]}
        self.optimizer = _optimizer(config)
        self.initial_params = network.init_network(init_key, self.layer_sizes, config["init"])

    def class_predictions(self, params: Any, x: Any) -> Any:
        import jax.numpy as jnp

        from nnjax import network

        out = network.predict(params, x, **self.arch)
        if self.config["loss"] == "binary_cross_entropy":
            return (out[:, 0] > 0.5).astype(jnp.int32)
        return jnp.argmax(out, axis=-1).astype(jnp.int32)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    from nnjax._files import atomic_write

    with atomic_write(path) as f:
        f.write(json.dumps(_finite_or_null(payload), indent=2, allow_nan=False).encode())


def _finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None: JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(v) for v in value]
    return value


def _versions() -> dict[str, str]:
    import jax
    import jaxlib
    import optax

    import nnjax

    return {
        "nnjax": nnjax.__version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
        "device": str(jax.devices()[0]),
    }


def _write_plots(
    run: _Run, params: Any, history: dict[str, list[float]], folder: Path
) -> list[Path]:
    import numpy as np

    from nnjax import plotting

    paths = [
        plotting.plot_history(history, folder / "history.png"),
        plotting.plot_activations(folder / "activations.png"),
        plotting.plot_confusion_matrix(
            np.asarray(run.data.y_test),
            np.asarray(run.class_predictions(params, run.data.x_test)),
            run.data.num_classes,
            folder / "confusion_matrix.png",
        ),
    ]
    if history.get("diagnostics_epoch"):
        paths += [
            plotting.plot_layer_history(
                history,
                "grad_norm",
                folder / "gradient_norms.png",
                title="Gradient norm per layer",
                ylabel="||dL/dW|| (Frobenius)",
            ),
        ]
        if run.config["hidden"]:
            paths.append(
                plotting.plot_layer_history(
                    history,
                    "act_std",
                    folder / "activation_std.png",
                    title="Activation std per hidden layer",
                    ylabel="std of a",
                )
            )
    if run.data.x_train.shape[1] == 2:
        paths.append(
            plotting.plot_decision_boundary(
                lambda grid: run.class_predictions(params, grid),
                run.data.x_train,
                run.data.y_train,
                folder / "decision_boundary.png",
            )
        )
    return paths


def _process_share(name: str, x: Any, y: Any, *, quiet: bool) -> tuple[Any, Any]:
    """This process's rows of ``x`` and ``y`` (all of them in a single-process run), after
    trimming the data to a multiple of the devices of a multi-process run."""
    import jax

    from nnjax import distributed

    if jax.process_count() == 1:
        return x, y
    n = len(x) - len(x) % jax.device_count()
    if n < len(x) and not quiet:
        print(
            f"note: {name} data trimmed to {n} of {len(x)} samples, a multiple of the "
            f"{jax.device_count()} devices"
        )
    rows = distributed.process_rows(n)
    return x[rows], y[rows]


def _train(args: argparse.Namespace) -> int:
    import jax
    from tqdm import tqdm

    from nnjax import checkpoints, diagnostics, distributed, training

    config = _config(args)
    folder = args.output or Path("runs") / config["dataset"]
    try:
        if args.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS"):
            distributed.initialize(args.coordinator, args.num_processes, args.process_id)
        elif args.num_processes is not None or args.process_id is not None:
            raise ValueError("--num-processes and --process-id need --coordinator")
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--output {folder} is a file, not a folder")
        run = _Run(config)
        devices = "all" if args.devices is None and jax.process_count() > 1 else args.devices
        if devices is not None:
            layout = training.data_parallel(devices)
            batch_size = min(config["batch_size"], len(run.data.x_train))  # as train takes it
            if batch_size % layout.num_devices:
                raise ValueError(
                    f"the batch size {batch_size} does not divide by {layout.num_devices} devices"
                )
    except ValueError as error:
        return _usage_error(str(error))
    # In a multi-process run, every process trains on its share of the data; process 0 reports.
    lead = jax.process_index() == 0
    (x_train, y_train), (x_test, y_test) = (
        _process_share(name, *pair, quiet=args.quiet or not lead)
        for name, pair in (
            ("training", (run.data.x_train, run.data.y_train)),
            ("test", (run.data.x_test, run.data.y_test)),
        )
    )
    checkpoint_path, metrics_path = folder / "checkpoint.npz", folder / "metrics.json"

    params, opt_state, start_epoch = run.initial_params, None, 0
    earlier: dict[str, list[float]] = {}
    if args.resume:
        if not checkpoint_path.exists():
            return _usage_error(f"--resume: no checkpoint at {checkpoint_path}")
        try:
            saved_config, saved_epoch = checkpoints.read_metadata(checkpoint_path)
            different = {k: (saved_config.get(k), v) for k, v in config.items() if k != "epochs"}
            different = {k: pair for k, pair in different.items() if pair[0] != pair[1]}
            if different:
                raise ValueError(f"options differ from the checkpoint's: {different}")
            if config["epochs"] <= saved_epoch:
                raise ValueError(
                    f"--epochs {config['epochs']} is not past the checkpoint's epoch "
                    f"{saved_epoch}: nothing to train"
                )
            saved = checkpoints.load_checkpoint(
                checkpoint_path,
                params_like=run.initial_params,
                opt_state_like=run.optimizer.init(run.initial_params),
            )
            if metrics_path.exists():
                earlier = json.loads(metrics_path.read_text())["history"]
        except (OSError, ValueError, KeyError) as error:
            return _usage_error(f"--resume: {error}")
        params, opt_state, start_epoch = saved.params, saved.opt_state, saved.epoch

    bar = tqdm(
        total=config["epochs"],
        initial=start_epoch,
        unit="epoch",
        disable=args.quiet or not lead,
        dynamic_ncols=True,
        desc=f"{config['dataset']}",
    )

    def progress(epoch: int, history: dict[str, list[float]]) -> None:
        bar.update(epoch - bar.n)
        shown = {k: f"{v[-1]:.4f}" for k, v in history.items() if v}
        bar.set_postfix(shown, refresh=True)

    start = time.perf_counter()
    result = training.train(
        params,
        x_train,
        y_train,
        **run.arch,
        optimizer=run.optimizer,
        opt_state=opt_state,
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        key=run.train_key,
        grad=config["grad"],
        l2=config["l2"],
        dropout_rate=config["dropout"],
        validation=(x_test, y_test),
        start_epoch=start_epoch,
        callback=progress,
        diagnostics_every=config["diagnostics"],
        devices=devices,
    )
    wall = time.perf_counter() - start
    bar.close()
    if not lead:
        return 1 if result.diverged is not None else 0
    # On this process's devices only, for the evaluation and plots below.
    result = result._replace(
        **jax.device_get({"params": result.params, "opt_state": result.opt_state})
    )

    history = {k: earlier.get(k, []) + v for k, v in result.history.items()}
    epoch = start_epoch + result.epochs_run
    checkpoints.save_checkpoint(
        checkpoint_path,
        params=result.params,
        opt_state=result.opt_state,
        config=config,
        epoch=epoch,
    )
    test_loss, test_accuracy = jax.device_get(
        training.evaluate(
            result.params,
            run.data.x_test,
            training.prepare_targets(run.data.y_test, run.arch["loss"]),
            **run.arch,
        )
    )
    metrics = {
        "config": config,
        "epochs_completed": epoch,
        "history": history,
        "test": {"loss": float(test_loss), "accuracy": float(test_accuracy)},
        "wall_seconds": wall,
        "compile_seconds": result.compile_seconds,
        "steps_per_second": result.steps_per_second,
        "diverged": None if result.diverged is None else result.diverged._asdict(),
        "processes": jax.process_count(),
        "versions": _versions(),
    }
    _write_json(metrics_path, metrics)

    if result.diverged is not None:
        print(
            f"nnjax train: error: training diverged (non-finite loss or parameters) at epoch "
            f"{result.diverged.epoch + 1}, step {result.diverged.step + 1}; the learning rate "
            f"({config['learning_rate']:g}) is likely too high. The parameters after the last "
            f"completed epoch ({epoch}) are in {checkpoint_path}.",
            file=sys.stderr,
        )
        return 1

    paths = _write_plots(run, result.params, history, folder)
    for warning in diagnostics.diagnose(history):
        print(f"warning: {warning}")
    print(
        f"{config['dataset']}: test accuracy {test_accuracy:.4f}, test loss {test_loss:.4f} "
        f"after {epoch} epochs\n"
        f"wall time {wall:.1f} s (compile {result.compile_seconds:.1f} s), "
        f"{result.steps_per_second:,.0f} steps/s, gradients: {config['grad']}\n"
        f"wrote {metrics_path}, {checkpoint_path}, " + ", ".join(str(p) for p in paths)
    )
    return 0


def _plot(args: argparse.Namespace) -> int:
    from nnjax import checkpoints

    metrics_path = args.run / "metrics.json"
    if not metrics_path.exists():
        return _usage_error(f"{args.run} is not a run folder: no metrics.json")
    try:
        metrics = json.loads(metrics_path.read_text())
        run = _Run(metrics["config"])
        saved = checkpoints.load_checkpoint(
            args.run / "checkpoint.npz",
            params_like=run.initial_params,
            opt_state_like=run.optimizer.init(run.initial_params),
        )
    except (OSError, ValueError, KeyError) as error:  # JSONDecodeError is a ValueError
        return _usage_error(f"cannot read the run folder {args.run}: {error}")
    paths = _write_plots(run, saved.params, metrics["history"], args.run)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _usage_error(message: str) -> int:
    print(f"nnjax: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``nnjax`` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "train":
        return _train(args)
    if args.command == "plot":
        return _plot(args)
    from nnjax import gradcheck

    return gradcheck.main()


if __name__ == "__main__":
    sys.exit(main())
