"""Training runs: a configuration in, a run folder out.

A run is a configuration (``make_config``: dataset, architecture, optimizer and its hyperparameters,
epochs, seed...) and everything it determines (``Run``: the data, the initial parameters, the random
keys, the optimizer). ``train`` trains it from scratch or from where a run folder's checkpoint
stopped (``resume``); ``write_run_folder`` writes the folder that ``nnjax train`` writes:
``checkpoint.npz``, ``metrics.json`` (configuration, per-epoch history, test metrics, timings,
versions) and the PNG plots; ``load_run_folder`` and ``write_plots`` redraw the plots of a folder::

    run = runs.Run(runs.make_config(dataset="xor", hidden=[4], activation="sigmoid", epochs=100))
    trained = runs.train(run)
    runs.write_run_folder(run, trained, "runs/xor")

A run that cannot start or continue (a loss that does not fit the data, a checkpoint that does not
match the configuration) raises ValueError with a one-line message.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

import nnjax
from nnjax import checkpoints, datasets, distributed, metrics, network, optimizers, training
from nnjax._validation import check_choice
from nnjax.files import atomic_write

__all__ = [
    "CLASSIFICATION_LOSSES",
    "DEFAULT_CONFIG",
    "DEFAULT_LEARNING_RATES",
    "Run",
    "Start",
    "Trained",
    "Written",
    "build_optimizer",
    "finite_or_null",
    "is_lead_process",
    "load_run_folder",
    "make_config",
    "process_shares",
    "resolve_devices",
    "resume",
    "train",
    "versions",
    "write_json",
    "write_plots",
    "write_run_folder",
]

_CHECKPOINT = "checkpoint.npz"
_METRICS = "metrics.json"
CLASSIFICATION_LOSSES = ("softmax_cross_entropy", "binary_cross_entropy")
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
}
"""A run's options and defaults, in metrics.json's order. ``init`` None: ``"he"`` for ReLU, else
``"xavier"``; ``learning_rate`` None: ``DEFAULT_LEARNING_RATES``; ``diagnostics``: every N epochs."""


def make_config(**options: Any) -> dict[str, Any]:
    """A run's JSON-serializable config: ``DEFAULT_CONFIG`` updated with ``options`` (its keys).

    E.g. ``dataset="moons", hidden=[16, 16]``; ``init`` and ``learning_rate`` come resolved, ``hidden`` a list.
    """
    unknown = sorted(set(options) - set(DEFAULT_CONFIG))
    if unknown:
        raise TypeError(f"unknown run options: {', '.join(unknown)}")
    config = {**DEFAULT_CONFIG, **options}
    check_choice("optimizer", config["optimizer"], DEFAULT_LEARNING_RATES)
    config["hidden"] = list(config["hidden"])
    config["init"] = config["init"] or ("he" if config["activation"] == "relu" else "xavier")
    config["learning_rate"] = config["learning_rate"] or DEFAULT_LEARNING_RATES[config["optimizer"]]
    return config


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
    """Where training starts: parameters, optimizer state (None: fresh), epoch, earlier history."""

    params: Any
    opt_state: Any
    epoch: int
    history: dict[str, list[float]]


class Run:
    """Everything a run's configuration determines: data, architecture, initial state, keys.

    The seed's key splits in three: the dataset and its split, the initial parameters, training.

    Attributes:
      config: the configuration (``make_config``).
      data: the ``datasets.Dataset``, split and standardized.
      layer_sizes: ``[n_in, *hidden, n_out]``; ``n_out`` is 1 for binary cross-entropy.
      model: the ``network.DenseNetwork`` (hidden activation and output/loss pair).
      optimizer: the optax transformation (``build_optimizer``).
      initial_params: the initialized parameters.
      train_key: the key of shuffling and dropout.

    Raises ValueError for binary cross-entropy on more than two classes, or as ``load_dataset``.
    """

    def __init__(self, config: dict[str, Any]):
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
        self.model = network.DenseNetwork(config["activation"], config["loss"])
        self.optimizer = build_optimizer(config)
        self.initial_params = network.init_network(init_key, self.layer_sizes, config["init"])

    def fresh_start(self) -> Start:
        """The start of a new run: the initial parameters at epoch 0."""
        return Start(self.initial_params, None, 0, {})

    def load_checkpoint(self, path: str | os.PathLike[str]) -> checkpoints.Checkpoint:
        """The checkpoint at ``path``, read with this run's parameters and state as templates."""
        return checkpoints.load_checkpoint(
            path,
            params_like=self.initial_params,
            opt_state_like=self.optimizer.init(self.initial_params),
        )

    def class_predictions(self, params: Any, x: jax.Array) -> jax.Array:
        """The predicted class of each row of ``x``, int32 ``(n,)``."""
        out = network.predict(params, x, activation=self.model.activation, loss=self.model.loss)
        if self.model.loss == "binary_cross_entropy":
            return (out[:, 0] > 0.5).astype(jnp.int32)
        return jnp.argmax(out, axis=-1).astype(jnp.int32)


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


def _check_resumable(config: dict[str, Any], saved_config: dict[str, Any], epoch: int) -> None:
    different = {k: (saved_config.get(k), v) for k, v in config.items() if k != "epochs"}
    different = {k: pair for k, pair in different.items() if pair[0] != pair[1]}
    if different:
        raise ValueError(f"options differ from the checkpoint's: {different}")
    if config["epochs"] <= epoch:
        raise ValueError(
            f"--epochs {config['epochs']} is not past the checkpoint's epoch {epoch}: "
            "nothing to train"
        )


def resume(run: Run, folder: str | os.PathLike[str]) -> Start:
    """Where the run in ``folder`` stopped: its checkpoint and the history in its metrics.json.

    Raises ValueError if there is no checkpoint, it is damaged or unreadable, its configuration
    differs from ``run.config`` in anything but ``epochs``, or it is at ``epochs`` already.
    """
    checkpoint_path, metrics_path = Path(folder) / _CHECKPOINT, Path(folder) / _METRICS
    if not checkpoint_path.exists():
        raise ValueError(f"no checkpoint at {checkpoint_path}")
    try:
        saved_config, saved_epoch = checkpoints.read_metadata(checkpoint_path)
        _check_resumable(run.config, saved_config, saved_epoch)
        saved = run.load_checkpoint(checkpoint_path)
        history = json.loads(metrics_path.read_text())["history"] if metrics_path.exists() else {}
    except (OSError, KeyError) as error:
        raise ValueError(str(error)) from error
    return Start(saved.params, saved.opt_state, saved.epoch, history)


class Trained(NamedTuple):
    """What ``train`` returns.

    Attributes:
      result: ``training.train``'s ``TrainResult`` (its history: the epochs of this call).
      history: the whole run's history, the epochs before the start included.
      epoch: the epochs completed, counted from the run's beginning.
      wall_seconds: the time ``training.train`` took, compilation included.
    """

    result: training.TrainResult
    history: dict[str, list[float]]
    epoch: int
    wall_seconds: float


def _progress_bar(config: dict[str, Any], initial: int, quiet: bool) -> tuple[Any, Any]:
    from tqdm import tqdm  # deferred, as matplotlib below: importing nnjax.runs loads neither

    bar = tqdm(
        total=config["epochs"],
        initial=initial,
        unit="epoch",
        disable=quiet,
        dynamic_ncols=True,
        desc=f"{config['dataset']}",
    )

    def progress(epoch: int, history: dict[str, list[float]]) -> None:
        bar.update(epoch - bar.n)
        shown = {k: f"{v[-1]:.4f}" for k, v in history.items() if v}
        bar.set_postfix(shown, refresh=True)

    return bar, progress


def train(
    run: Run,
    start: Start | None = None,
    *,
    shares: tuple[tuple, tuple] | None = None,
    devices: int | str | None = None,
    quiet: bool = True,
) -> Trained:
    """Trains ``run`` from ``start`` to ``run.config["epochs"]``, testing after every epoch.

    Args:
      run: the run.
      start: where to start (``resume``); default ``run.fresh_start()``.
      shares: this process's training and test data; default ``process_shares(run.data)``.
      devices: ``training.train``'s data parallelism (``resolve_devices``).
      quiet: no progress bar.

    Returns:
      A ``Trained``, its parameters on the devices ``training.train`` left them on.
    """
    start = run.fresh_start() if start is None else start
    if shares is None:
        shares = process_shares(run.data, quiet=quiet)
    (x_train, y_train), validation = shares
    config = run.config
    bar, progress = _progress_bar(config, start.epoch, quiet)
    began = time.perf_counter()
    result = training.train(
        start.params,
        x_train,
        y_train,
        model=run.model,
        optimizer=run.optimizer,
        opt_state=start.opt_state,
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        key=run.train_key,
        grad=config["grad"],
        l2=config["l2"],
        dropout_rate=config["dropout"],
        validation=validation,
        start_epoch=start.epoch,
        callback=progress,
        diagnostics_every=config["diagnostics"],
        devices=devices,
    )
    wall = time.perf_counter() - began
    bar.close()
    history = {k: start.history.get(k, []) + v for k, v in result.history.items()}
    return Trained(result, history, start.epoch + result.epochs_run, wall)


class Written(NamedTuple):
    """What ``write_run_folder`` wrote: the checkpoint, metrics.json and its content, the plots."""

    checkpoint: Path
    metrics_json: Path
    metrics: dict[str, Any]
    plots: list[Path]


def _metrics(run: Run, trained: Trained, params: Any) -> dict[str, Any]:
    """The content of metrics.json."""
    result = trained.result
    targets = metrics.prepare_targets(run.data.y_test, run.model.loss)
    test = metrics.evaluate(params, run.data.x_test, targets, run.model)
    test_loss, test_accuracy = jax.device_get(test)
    return {
        "config": run.config,
        "epochs_completed": trained.epoch,
        "history": trained.history,
        "test": {"loss": float(test_loss), "accuracy": float(test_accuracy)},
        "wall_seconds": trained.wall_seconds,
        "compile_seconds": result.compile_seconds,
        "steps_per_second": result.steps_per_second,
        "diverged": None if result.diverged is None else result.diverged._asdict(),
        "processes": jax.process_count(),
        "versions": versions(),
    }


def write_run_folder(run: Run, trained: Trained, folder: str | os.PathLike[str]) -> Written:
    """Writes ``train``'s ``trained`` into ``folder``: the checkpoint, metrics.json and the plots.

    ``folder`` is created if missing; no plots if training diverged. Only process 0 calls it (``is_lead_process``).
    """
    folder = Path(folder)
    # On this process's devices only, for the evaluation and plots below.
    params, opt_state = jax.device_get((trained.result.params, trained.result.opt_state))
    checkpoint_path, metrics_path = folder / _CHECKPOINT, folder / _METRICS
    checkpoints.save_checkpoint(
        checkpoint_path,
        params=params,
        opt_state=opt_state,
        config=run.config,
        epoch=trained.epoch,
    )
    payload = _metrics(run, trained, params)
    write_json(metrics_path, payload)
    diverged = trained.result.diverged is not None
    plots = [] if diverged else write_plots(run, params, trained.history, folder)
    return Written(checkpoint_path, metrics_path, payload, plots)


def load_run_folder(folder: str | os.PathLike[str]) -> tuple[Run, Any, dict[str, Any]]:
    """The run of a folder ``write_run_folder`` wrote, its saved parameters and its metrics.

    Raises ValueError if the folder has no metrics.json, or it or the checkpoint cannot be read.
    """
    folder = Path(folder)
    metrics_path = folder / _METRICS
    if not metrics_path.exists():
        raise ValueError(f"{folder} is not a run folder: no {_METRICS}")
    try:
        payload = json.loads(metrics_path.read_text())
        run = Run(payload["config"])
        saved = run.load_checkpoint(folder / _CHECKPOINT)
    except (OSError, ValueError, KeyError) as error:  # JSONDecodeError is a ValueError
        raise ValueError(f"cannot read the run folder {folder}: {error}") from error
    return run, saved.params, payload


_LAYER_PLOTS = (
    # history entry, file, title, y label
    ("grad_norm", "gradient_norms.png", "Gradient norm per layer", "||dL/dW|| (Frobenius)"),
    ("act_std", "activation_std.png", "Activation std per hidden layer", "std of a"),
)


def write_plots(run: Run, params: Any, history: dict[str, list[float]], folder: Path) -> list[Path]:
    """Draws a run's history, activations and confusion matrix into ``folder``; returns the paths.

    Also the diagnostics' per-layer series if recorded, and the decision boundary of 2-D data.
    """
    from nnjax import plotting  # deferred: matplotlib takes a while to import

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
    for entry, name, title, ylabel in _LAYER_PLOTS:
        # Activations are recorded per hidden layer: none without hidden layers.
        if history.get("diagnostics_epoch") and (entry != "act_std" or run.config["hidden"]):
            paths.append(
                plotting.plot_layer_history(
                    history, entry, folder / name, title=title, ylabel=ylabel
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


def versions() -> dict[str, str]:
    """The versions of nnjax, JAX, jaxlib, optax and Python, and the first device."""
    return {
        "nnjax": nnjax.__version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
        "device": str(jax.devices()[0]),
    }


def finite_or_null(value: Any) -> Any:
    """``value`` as plain JSON values, NaN and infinite floats replaced by None (JSON has no NaN).

    Dicts (keys as strings), lists for tuples and arrays, Python scalars for NumPy and JAX ones.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    array = np.asarray(value)
    if array.ndim:
        return finite_or_null(array.tolist())
    item = array.item()
    return None if isinstance(item, float) and not math.isfinite(item) else item


def write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Writes ``finite_or_null(payload)`` to ``path`` as indented JSON, atomically."""
    with atomic_write(path) as f:
        f.write(json.dumps(finite_or_null(payload), indent=2, allow_nan=False).encode())
