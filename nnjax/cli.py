"""The ``nnjax`` command line: ``train``, ``plot`` and ``check``.

``nnjax train`` trains a network on a dataset (or a data file, ``--data``): the dense network of
``--hidden``, or any architecture written as ``--layers``. It writes a run folder:
``metrics.json`` (configuration, per-epoch history, test metrics, timings, versions),
``checkpoint.safetensors``, and the plots: ``history.png``; ``activations.png`` for a dense
network; ``confusion_matrix.png`` and, for data of two features, ``decision_boundary.png`` for a
classifier; ``predicted_vs_true.png`` for regression. ``nnjax plot RUN`` redraws a run folder's
plots. ``nnjax check`` proves every hand-written derivative (see ``nnjax.checks``). The runs
themselves are ``nnjax.runs``; this module parses the options and reports.

Exit codes: 0 success, 1 training diverged or a check failed, 2 bad command-line options.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import nnjax
from nnjax import (
    checks,
    compilation_cache,
    diagnostics,
    distributed,
    folders,
    run_data,
    run_plots,
    run_training,
    runs,
)
from nnjax._train_options import (
    add_evaluation_options,
    add_model_options,
    add_parallel_options,
    add_training_options,
)
from nnjax.option_types import option_type

__all__ = ["main", "run"]

EXAMPLES = """examples:
  nnjax train                                   # digits, 64-64 ReLU, Adam: about 98% test accuracy
  nnjax train --dataset moons --hidden 16,16 --epochs 200 --output runs/moons
  nnjax train --dataset xor --hidden 4 --activation sigmoid --loss binary_cross_entropy \\
      --optimizer momentum --lr 2 --epochs 2000 --batch-size 4
  nnjax train --dataset breast_cancer --loss binary_cross_entropy --grad autodiff
  nnjax train --data houses.csv --label-column price --loss mse   # regression on your data
  nnjax train --layers "conv2d(16,3),relu,maxpool(2),flatten,dense(10)"  # a CNN on the digits
"""


class _Parser(argparse.ArgumentParser):
    """Reports a usage error in one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


# ---------------------------------------------------------------------------------------------
# The parser


def _add_train(commands: Any, error: Callable[[str], NoReturn]) -> None:
    train = _subcommand(
        commands,
        "train",
        error,
        help="train a network and write its metrics, plots and checkpoint",
        description=(
            "Train a fully connected network (or the layers of --layers) with minibatch "
            "gradient descent, whole epochs compiled, gradients from the hand-written backward "
            "passes (or autodiff), and write metrics.json, checkpoint.safetensors and PNG plots "
            "into the output folder."
        ),
        epilog=EXAMPLES,
    )
    train.set_defaults(handler=_train)
    add_model_options(train.add_argument_group("data and network"))
    add_training_options(train.add_argument_group("optimizer and training"))
    add_evaluation_options(train.add_argument_group("evaluation and early stopping"))
    add_parallel_options(train.add_argument_group("parallel and multi-process training"))
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
    _add_cache_option(output)


def _add_cache_option(group: Any) -> None:
    group.add_argument(
        "--no-compilation-cache",
        dest="compilation_cache",
        action="store_false",
        help="compile afresh, without the persistent compilation cache (default: use it, in "
        "$NNJAX_CACHE_DIR, else $XDG_CACHE_HOME/nnjax or ~/.cache/nnjax; "
        "NNJAX_COMPILATION_CACHE=0 turns it off too)",
    )


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
        description="Redraw the PNG plots of a run folder from its checkpoint: history.png; "
        "activations.png for a dense network; confusion_matrix.png and, for two features, "
        "decision_boundary.png for a classifier; predicted_vs_true.png for regression."
        "\n\nexample:\n  nnjax plot runs/digits",
    )
    plot.add_argument("run", type=Path, help="a folder written by nnjax train")
    _add_cache_option(plot)
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
    try:
        config = runs.make_config(**{key: getattr(args, key) for key in runs.DEFAULT_CONFIG})
    except ValueError as error:
        return _usage_error(str(error))
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
            fresh = folders.Resumed(run.fresh_start(), None)
            resumed = folders.resume_run(run, folder) if args.resume else fresh
        except ValueError as error:
            return _usage_error(f"--resume: {error}")
        return _train_prepared(args, run, resumed, devices, folder)


def _train_prepared(
    args: argparse.Namespace, run: Any, resumed: folders.Resumed, devices: Any, folder: Path
) -> int:
    # In a multi-process run, every process trains on its share of the data; process 0 reports.
    lead = runs.is_lead_process()
    quiet = args.quiet or not lead
    start = resumed.start
    saver = folders.periodic_saver(run, folder, start, args.checkpoint_every) if lead else None
    if not lead:
        _discard_stdout()
    try:
        trained = runs.train(
            run,
            start,
            shares=runs.process_shares(run.data, quiet=quiet),
            devices=devices,
            quiet=quiet,
            on_progress=saver,
            early_stopping_state=resumed.early_stopping_state,
        )
        if not lead:
            if trained.interrupted is not None:
                return 128 + trained.interrupted
            return 1 if trained.result.diverged is not None else 0
        plots = trained.interrupted is None
        written = folders.write_run_folder(run, trained, folder, plots=plots, last=saver.last)
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


def _discard_stdout() -> None:
    """From now on, standard output (file descriptor 1) goes nowhere. For the processes of a
    multi-process run other than process 0: the terminal shows process 0's progress and report,
    not the others' library chatter (such as Gloo's connection notice). Their errors still reach
    standard error."""
    sys.stdout.flush()
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)


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
        kept = f"after the last completed epoch ({trained.epoch})"
        if result.best_epoch is not None:
            kept = f"of the best epoch ({result.best_epoch})"
        print(
            f"nnjax train: error: training diverged (non-finite loss or parameters) at epoch "
            f"{result.diverged.epoch + 1}, step {result.diverged.step + 1}; the learning rate "
            f"({config['learning_rate']:g}) is likely too high. The parameters {kept} are in "
            f"{written.checkpoint}. Continue with a lower learning rate:\n  {lower}",
            file=sys.stderr,
        )
        return 1
    for warning in diagnostics.diagnose(trained.history):
        print(f"warning: {warning}")
    scores = ", ".join(f"test {name} {test[key]:.4f}" for key, name in _SCORES if key in test)
    stopping = written.metrics.get("early_stopping")
    stopped = "" if stopping is None else run_training.summary_line(stopping) + "\n"
    paths = (written.metrics_json, written.checkpoint, *written.plots)
    print(
        f"{run_data.name(config)}: {scores} after {trained.epoch} epochs\n{stopped}"
        f"wall time {trained.wall_seconds:.1f} s (compile {result.compile_seconds:.1f} s), "
        f"{result.steps_per_second:,.0f} steps/s, gradients: {config['grad']}\n"
        f"wrote {', '.join(map(str, paths))}"
    )
    return 0


def _plot(args: argparse.Namespace) -> int:
    if args.run.is_dir():
        run_plots.import_matplotlib()  # while the run is loaded
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
    if args.handler in (_train, _plot) and args.compilation_cache:
        compilation_cache.use()
    return args.handler(args)


def run() -> NoReturn:
    """The ``nnjax`` command (and ``python -m nnjax``, through ``nnjax.__main__``): ``main``, then
    a prompt exit.

    When ``main`` returns, every file it wrote is complete and closed. Python's teardown of JAX,
    XLA and matplotlib would then spend about 0.4 s freeing memory the exit frees anyway, so the
    process waits for its background work (``run_plots.wait``), runs the exit handlers (JAX's
    distributed shutdown among them), flushes its output and ends.
    """
    status = main()
    run_plots.wait()
    atexit._run_exitfuncs()  # what interpreter shutdown would run, without the rest of it
    with contextlib.suppress(OSError):  # a closed pipe: nothing more can be said
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(status)
