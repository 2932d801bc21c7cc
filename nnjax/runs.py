"""Training runs: a configuration in, a trained run out.

A run is a configuration (``make_config``: dataset or data file, architecture, optimizer and its
hyperparameters, epochs, seed...) and everything it determines (``Run``: the data, the model
(``nnjax.run_model``) and its initial state, the random keys, the optimizer). ``train`` trains
it from scratch or from where a run folder's checkpoint stopped (``folders.resume``);
``nnjax.folders`` writes and reads the folder::

    run = runs.Run(runs.make_config(dataset="xor", hidden=[4], activation="sigmoid", epochs=100))
    trained = runs.train(run)
    folders.write_run_folder(run, trained, folders.prepare(Path("runs/xor")))

A run that cannot start (a loss that does not fit the data, a malformed data file) raises a
one-line ValueError.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax

from nnjax import (
    _run_setup,
    _validation,
    checkpoints,
    datasets,
    distributed,
    metrics,
    optimizers,
    run_data,
    run_model,
    run_training,
    training,
)
from nnjax.progress import progress_bar
from nnjax.run_plots import prepare as prepare_report
from nnjax.run_plots import write_plots

__all__ = [
    "CLASSIFICATION_LOSSES",
    "DEFAULT_CONFIG",
    "DEFAULT_LEARNING_RATES",
    "LOSSES",
    "OPTION_NAMES",
    "RESUMABLE",
    "Run",
    "Start",
    "Trained",
    "build_optimizer",
    "command_line",
    "is_lead_process",
    "make_config",
    "merge",
    "process_shares",
    "resolve_devices",
    "saved_config",
    "train",
    "versions",
    "write_plots",
]

CLASSIFICATION_LOSSES = ("softmax_cross_entropy", "binary_cross_entropy")
LOSSES = (*CLASSIFICATION_LOSSES, "mse")
"""The losses of a run: the classifiers', and ``"mse"`` for regression on a data file."""
DEFAULT_LEARNING_RATES = {
    "adam": 3e-3,
    "sgd": 0.1,
    "momentum": 0.1,
    "classical_momentum": 0.01,
    "nesterov": 0.01,
}
DEFAULT_CONFIG: dict[str, Any] = {
    "dataset": "digits",
    "hidden": (64, 64),
    "activation": "relu",
    "layers": None,
    "input_shape": None,
    "loss": "softmax_cross_entropy",
    "init": None,
    "optimizer": "adam",
    "learning_rate": None,
    "beta": 0.9,
    "beta1": 0.9,
    "beta2": 0.999,
    "epsilon": 1e-8,
    "l2": 0.0,
    "dropout": 0.0,
    "epochs": 40,
    "batch_size": 32,
    "seed": 0,
    "grad": "manual",
    "test_fraction": 0.2,
    "diagnostics": 0,
    **run_training.DEFAULTS,
    "data": None,
    "label_column": None,
    "n_samples": None,
}
"""A run's options and defaults, in metrics.json's order. ``init`` None: ``"he"`` for ReLU, else
``"xavier"``; ``learning_rate`` None: ``DEFAULT_LEARNING_RATES``; ``diagnostics``: every N epochs.
``data``, ``label_column``, ``n_samples``: see ``nnjax.run_data``; ``layers``, ``input_shape``:
see ``nnjax.run_model``; shuffling, evaluation and early stopping: ``run_training.DEFAULTS``."""


OPTION_NAMES = {"learning_rate": "--lr"}
"""The ``nnjax train`` option of each configuration key that is not ``--`` the key hyphenated."""

RESUMABLE = ("epochs", "learning_rate", "diagnostics")
"""The options ``--resume`` may change between chunks of a run (each change recorded)."""


def make_config(**options: Any) -> dict[str, Any]:
    """A run's JSON-serializable config: ``DEFAULT_CONFIG`` updated with ``options`` (its keys).

    E.g. ``dataset="moons", hidden=[16, 16]``; an option None takes its default. ``init`` and
    ``learning_rate`` come resolved, ``hidden`` a list (None with ``layers``: see
    ``run_model.model_options``, which raises ValueError for options that do not go together).
    A ``data`` file comes as an absolute path, and replaces ``dataset`` (None).
    """
    unknown = sorted(set(options) - set(DEFAULT_CONFIG))
    if unknown:
        raise TypeError(f"unknown run options: {', '.join(unknown)}")
    given = {key: value for key, value in options.items() if value is not None}
    config = {**DEFAULT_CONFIG, **given}
    _validation.check_choice("optimizer", config["optimizer"], DEFAULT_LEARNING_RATES)
    config = run_model.model_options(config, given)
    run_training.check(config)
    config["learning_rate"] = config["learning_rate"] or DEFAULT_LEARNING_RATES[config["optimizer"]]
    if config["data"] is not None:
        config["data"], config["dataset"] = os.path.abspath(config["data"]), None
    return config


def saved_config(saved: dict[str, Any]) -> dict[str, Any]:
    """The configuration (``make_config``) of the options a run folder saved.

    Args:
      saved: the saved configuration. Folders older than ``run_data.DATA_OPTIONS``,
        ``run_model.MODEL_OPTIONS`` or ``run_training.DEFAULTS`` lack them (their defaults).

    Returns:
      The configuration, to build the run again (``Run``).
    """
    later = (*run_data.DATA_OPTIONS, *run_model.MODEL_OPTIONS, *run_training.DEFAULTS)
    options = {key: saved.get(key) for key in later}
    return make_config(**options, **{k: saved[k] for k in DEFAULT_CONFIG if k not in options})


def build_optimizer(config: dict[str, Any]) -> Any:
    """The optax transformation a configuration names, with its hyperparameters."""
    name, lr = config["optimizer"], config["learning_rate"]
    if name == "adam":
        return optimizers.adam(lr, config["beta1"], config["beta2"], config["epsilon"])
    if name == "sgd":
        return optimizers.sgd(lr)
    if name == "momentum":
        return optimizers.momentum(lr, config["beta"])
    return optimizers.classical_momentum(lr, config["beta"], nesterov=name == "nesterov")


class Start(NamedTuple):
    """Where training starts.

    Attributes:
      params: the parameters.
      opt_state: the optimizer state; None for a fresh one.
      epoch: the epochs completed before.
      history: the history of those epochs.
      changes: the options ``--resume`` changed so far, each ``{"epoch", "option", "old",
        "new"}``, oldest first.
      model_state: the model's state (BatchNorm's running statistics); ``()`` for none.
    """

    params: Any
    opt_state: Any
    epoch: int
    history: dict[str, list[float]]
    changes: tuple[dict[str, Any], ...] = ()
    model_state: Any = ()


class Run:
    """Everything a run's configuration determines: data, architecture, initial state, keys.

    The seed's key splits in three: the dataset and its split, the initial parameters, training.
    They are built in a few compiled programs (``_run_setup``); then, in a background thread, what
    the run's report needs (``run_plots.prepare``).

    Attributes:
      config: the configuration (``make_config``); with a data file, its ``data_sha256`` too;
        with ``layers``, the ``input_shape`` of its examples (``run_model.example_shape``).
      data: the ``datasets.Dataset``, split and standardized (``run_data.load``), reshaped
        with ``layers`` (``run_model.build``).
      target_scale: for regression, the training targets' ``(mean, std)``; else None.
      layer_sizes: ``[n_in, *hidden, n_out]``; ``n_out`` is 1 but for softmax cross-entropy.
        None with ``layers``, whose model is a ``sequential.Sequential``.
      model: the ``network.DenseNetwork`` (hidden activation and output/loss pair).
      optimizer: the optax transformation (``build_optimizer``).
      initial_params: the initialized parameters.
      initial_model_state: the model's initial state; ``()`` for a model without.
      initial_opt_state: the optimizer's state for them (``optimizer.init``).
      train_key: the key of shuffling and dropout.

    Raises ValueError for binary cross-entropy on more than two classes, as ``run_data.load``,
    or as ``run_model.build``.
    """

    def __init__(self, config: dict[str, Any]):
        self.optimizer = build_optimizer(config)
        # Hyperparameters invalid in the parameters' dtype fail here, before training compiles.
        (
            self.config,
            self.data,
            self.target_scale,
            self.layer_sizes,
            self.model,
            self.initial_params,
            self.initial_model_state,
            self.initial_opt_state,
            self.train_key,
        ) = _run_setup.build(config, self.optimizer)
        dtype = self.data.x_train.dtype
        _validation.check_below_one_in("--dropout", config["dropout"], dtype)
        weights = run_model.weights(self.initial_params)
        _validation.check_l2_finite("--l2", config["l2"], weights)
        _validation.check_int("--epochs", config["epochs"], 1, maximum=2**31 - 1)
        prepare_report(self)

    def fresh_start(self) -> Start:
        """The start of a new run: the initial parameters and state at epoch 0."""
        return Start(
            self.initial_params, self.initial_opt_state, 0, {}, model_state=self.initial_model_state
        )

    def load_checkpoint(self, path: str | os.PathLike[str]) -> checkpoints.Checkpoint:
        """The checkpoint at ``path``, read with this run's parameters and states as templates."""
        return checkpoints.load_checkpoint(
            path,
            params_like=self.initial_params,
            opt_state_like=self.initial_opt_state,
            model_state_like=self.initial_model_state,
        )

    def class_predictions(self, params: Any, x: jax.Array, state: Any = ()) -> jax.Array:
        """The predicted class of each example of ``x``, int32 ``(n,)``; ``state``: the model's."""
        return run_model.class_predictions(self.model, params, state, x)


def is_lead_process() -> bool:
    """Whether this process reports and writes the run folder: process 0, or the only one."""
    return jax.process_index() == 0


def resolve_devices(run: Run, requested: int | str | None) -> int | str | None:
    """``train``'s ``devices``: ``requested``, or ``"all"`` in a multi-process run.

    Raises ValueError if the devices do not exist (``distributed.data_parallel``) or the batch
    size does not divide by their number.
    """
    devices = "all" if requested is None and jax.process_count() > 1 else requested
    if devices is not None:
        layout = distributed.data_parallel(devices)
        batch_size = min(run.config["batch_size"], len(run.data.x_train))  # as train takes it
        if batch_size % layout.num_devices:
            raise ValueError(
                f"the batch size {batch_size} does not divide by {layout.num_devices} devices"
            )
    return devices


def process_shares(data: datasets.Dataset, *, quiet: bool = True) -> tuple[tuple, tuple]:
    """This process's ``(x_train, y_train)`` and ``(x_test, y_test)``: all of them in one process.

    Else its rows (``distributed.process_rows``), trimmed to a multiple of the devices (noted unless ``quiet``).
    """
    if jax.process_count() == 1:
        return (data.x_train, data.y_train), (data.x_test, data.y_test)
    shares = []
    for name, x, y in (
        ("training", data.x_train, data.y_train),
        ("test", data.x_test, data.y_test),
    ):
        n = len(x) - len(x) % jax.device_count()
        if n < len(x) and not quiet:
            print(
                f"note: {name} data trimmed to {n} of {len(x)} samples, a multiple of the "
                f"{jax.device_count()} devices"
            )
        rows = distributed.process_rows(n)
        shares.append((x[rows], y[rows]))
    return shares[0], shares[1]


class Trained(NamedTuple):
    """What ``train`` returns.

    Attributes:
      result: ``training.train``'s ``TrainResult`` (its history: the epochs of this call).
      history: the whole run's history, the epochs before the start included.
      epoch: the epochs completed, counted from the run's beginning.
      wall_seconds: the time ``training.train`` took, compilation included.
      changes: every option ``--resume`` changed, as in ``Start.changes``.
      interrupted: the signal (SIGINT or SIGTERM) that stopped training early, or None.
    """

    result: training.TrainResult
    history: dict[str, list[float]]
    epoch: int
    wall_seconds: float
    changes: tuple[dict[str, Any], ...]
    interrupted: int | None


@contextlib.contextmanager
def _interruptible() -> Iterator[dict[str, Any]]:
    """SIGINT and SIGTERM stop training at the end of the compiled call they arrive in.

    Yields a dict: set ``"training"`` once a call has completed; ``"signal"`` then holds the
    signal received. Before that (while compiling), a signal interrupts at once
    (``KeyboardInterrupt``), so that nothing is written. Only the main thread can catch signals;
    elsewhere the default handlers stay.
    """
    state: dict[str, Any] = {"training": False, "signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handle(signum: int, frame: Any) -> None:
        if not state["training"]:
            raise KeyboardInterrupt(signal.Signals(signum).name)
        state["signal"] = signum

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def train(
    run: Run,
    start: Start | None = None,
    *,
    shares: tuple[tuple, tuple] | None = None,
    devices: int | str | None = None,
    quiet: bool = True,
    on_progress: Callable[[training.Progress], None] | None = None,
    early_stopping_state: training.StopState | None = None,
) -> Trained:
    """Trains ``run`` from ``start`` to ``run.config["epochs"]`` or early stopping's stop.

    SIGINT or SIGTERM end training after the compiled call they arrive in (``interrupted``); one
    that arrives while the program compiles raises ``KeyboardInterrupt``.

    Args:
      run: the run.
      start: where to start (``folders.resume``); default ``run.fresh_start()``.
      shares: this process's training and test data; default ``process_shares(run.data)``.
      devices: ``training.train``'s data parallelism (``resolve_devices``).
      quiet: no progress bar.
      on_progress: called after each compiled call with the run's ``training.Progress``, its
        history the whole run's (e.g. ``folders.periodic_saver``).
      early_stopping_state: early stopping's state at ``start`` (``folders.resume_run``).

    Returns:
      A ``Trained``, its parameters on the devices ``training.train`` left them on.
    """
    start = run.fresh_start() if start is None else start
    (x_train, y_train), validation = shares or process_shares(run.data, quiet=quiet)
    config = run.config
    close_bar, show = progress_bar(config, start.epoch, quiet)

    def whole(history: dict[str, list[float]]) -> dict[str, list[float]]:
        """The run's history: the epochs before ``start`` and ``history``, R² derived."""
        merged = merge(start.history, history)
        return metrics.with_r_squared(merged, config["loss"], run.data.y_test)

    began = time.perf_counter()
    with _interruptible() as interrupt:

        def callback(progress: training.Progress) -> bool:
            interrupt["training"] = True
            show(progress)
            if on_progress is not None:
                on_progress(progress._replace(history=whole(progress.history)))
            return interrupt["signal"] is not None

        result = training.train(
            start.params,
            x_train,
            y_train,
            model=run.model,
            optimizer=run.optimizer,
            opt_state=start.opt_state,
            model_state=start.model_state,
            epochs=config["epochs"],
            batch_size=config["batch_size"],
            key=run.train_key,
            grad=config["grad"],
            l2=config["l2"],
            dropout_rate=config["dropout"],
            validation=validation,
            start_epoch=start.epoch,
            callback=callback,
            diagnostics_every=config["diagnostics"],
            devices=devices,
            time_evaluation=True,  # steps per second of training alone
            **run_training.train_options(config, early_stopping_state),
        )
    close_bar()
    history = whole(result.history)
    epoch = start.epoch + result.epochs_run
    wall = time.perf_counter() - began
    # Stopped short without a signal or early stopping: another process was interrupted.
    stopped = epoch < config["epochs"] and result.diverged is result.stopped_epoch is None
    interrupted = interrupt["signal"] or (signal.SIGINT if stopped else None)
    return Trained(result, history, epoch, wall, start.changes, interrupted)


def merge(earlier: dict[str, list[float]], later: dict[str, list[float]]) -> dict[str, list[float]]:
    """A run's history: the series of ``earlier`` epochs followed by those of ``later`` ones."""
    return {k: earlier.get(k, []) + v for k, v in later.items()}


def command_line(config: dict[str, Any], folder: Path, **changes: Any) -> str:
    """The ``nnjax train`` command that resumes the run of ``config`` in ``folder``.

    ``changes`` override options by configuration key (e.g. ``learning_rate=1e-3``).
    """
    config = {**config, **changes}
    # init and learning_rate default to values that depend on the activation and the optimizer.
    resolved = make_config(activation=config["activation"], optimizer=config["optimizer"])
    defaults = {
        **make_config(),
        "init": resolved["init"],
        "learning_rate": resolved["learning_rate"],
    }
    words = ["nnjax", "train"]
    for key, value in config.items():
        # None: an option not given (dataset, with a data file instead).
        if (
            key in DEFAULT_CONFIG
            and value is not None
            and (value != defaults[key] or key in changes)
        ):
            if value is False:  # a flag such as --no-shuffle
                words.append("--no-" + key.replace("_", "-"))
                continue
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            words += [
                OPTION_NAMES.get(key, "--" + key.replace("_", "-")),
                shlex.quote(text or "none"),
            ]
    return " ".join([*words, "--output", shlex.quote(str(folder)), "--resume"])


def versions() -> dict[str, str]:
    """The versions of nnjax, JAX, jaxlib, optax and Python, and the first device."""
    import jaxlib  # deferred with the rest: only a written run folder needs versions
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
