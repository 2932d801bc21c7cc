"""A run's training options: shuffling, evaluation interval, early stopping, and its state.

``nnjax train``'s ``--no-shuffle``, ``--eval-every``, ``--early-stopping``, ``--patience`` and
``--min-delta`` set these options of a run's configuration (``runs.make_config``), which
``train_options`` turns into ``training.train``'s arguments. None of them may change on
``--resume``: each changes where training goes, or what its history holds. An evaluation of the
metric improves on the best when ``value < best - min_delta`` (a loss; ``value > best +
min_delta`` for an accuracy), and training stops at the first evaluation where ``epoch -
best_epoch >= patience`` (``nnjax.early_stopping``).

With early stopping, a run folder's checkpoint holds the best epoch's parameters, optimizer state
and model state as its own (what the run delivers, and what ``nnjax plot`` and the test metrics
use), and early stopping's state as its ``early_stopping`` tree (``saved_trees``): ``best`` (the
metric's best value), ``best_epoch``, ``stopped``, and ``last_params``, ``last_opt_state`` and
``last_model_state``, the state after the last epoch, which ``--resume`` continues from
(``resumed``). So a resumed run stops at the epoch an uninterrupted one stops at, with the same
parameters.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnjax import early_stopping, metrics
from nnjax.early_stopping import EarlyStopping, StopState

__all__ = [
    "DEFAULTS",
    "check",
    "resumed",
    "rule",
    "saved_trees",
    "summary",
    "summary_line",
    "template",
    "train_options",
]

DEFAULTS = {
    "shuffle": True,
    "eval_every": 1,
    "early_stopping": None,
    "patience": 10,
    "min_delta": 0.0,
}
"""These options and their defaults, part of ``runs.DEFAULT_CONFIG``: shuffle every epoch,
evaluate after every epoch, no early stopping (a patience of 10 epochs and a least improvement of 0
once it is on)."""


def rule(config: dict[str, Any]) -> EarlyStopping | None:
    """The early stopping rule of a run's configuration, its mode resolved; None without one.

    Args:
      config: the run's configuration.

    Returns:
      An ``EarlyStopping`` on ``config["early_stopping"]``, checked
      (``early_stopping.checked_rule``), or None.
    """
    if config["early_stopping"] is None:
        return None
    given = EarlyStopping(config["early_stopping"], config["patience"], None, config["min_delta"])
    recorded = metrics.history_keys(config["loss"], True)
    return early_stopping.checked_rule(given, recorded, config["eval_every"])


def check(config: dict[str, Any]) -> None:
    """Raises ValueError, one line naming the options, if the training options do not go together.

    Args:
      config: the run's configuration.
    """
    metric = config["early_stopping"]
    if metric is None:
        return
    if config["eval_every"] == 0:
        raise ValueError("--early-stopping needs evaluations; --eval-every 0 turns them off")
    recorded = metrics.history_keys(config["loss"], True)
    if metric not in recorded:
        raise ValueError(
            f"--early-stopping {metric}: a run with --loss {config['loss']} records "
            f"{', '.join(recorded)}"
        )
    rule(config)


def train_options(config: dict[str, Any], state: StopState | None = None) -> dict[str, Any]:
    """``training.train``'s ``shuffle``, ``eval_every`` and early stopping for a run.

    Args:
      config: the run's configuration.
      state: early stopping's state to start from (``resumed``); None: a fresh one.

    Returns:
      The keyword arguments ``shuffle``, ``eval_every``, ``early_stopping`` and
      ``early_stopping_state``.
    """
    return {
        "shuffle": config["shuffle"],
        "eval_every": config["eval_every"],
        "early_stopping": rule(config),
        "early_stopping_state": state,
    }


def _tree(best: Any, best_epoch: Any, stopped: Any, last: tuple) -> dict[str, Any]:
    """The ``early_stopping`` tree of a checkpoint."""
    names = ("last_params", "last_opt_state", "last_model_state")
    return {
        "best": best,
        "best_epoch": best_epoch,
        "stopped": stopped,
        **dict(zip(names, last, strict=True)),
    }


def _signed(config: dict[str, Any], best: Any) -> np.ndarray:
    """The metric's value from ``StopState.best`` (negated in ``"max"`` mode), or back."""
    best = np.asarray(best)
    return best if rule(config).mode == "min" else np.negative(best)


def template(config: dict[str, Any], like: tuple, dtype: Any) -> dict[str, Any] | None:
    """The template of a run's ``early_stopping`` tree (``checkpoints.load_checkpoint``).

    Args:
      config: the run's configuration.
      like: templates of its parameters, optimizer state and model state.
      dtype: its data's dtype, that of the metric.

    Returns:
      The template; None for a run without early stopping.
    """
    if config["early_stopping"] is None:
        return None
    scalars = (jax.ShapeDtypeStruct((), t) for t in (dtype, jnp.int32, jnp.bool_))
    return _tree(*scalars, like)


def saved_trees(
    config: dict[str, Any], last: tuple, state: StopState | None, epoch: int
) -> tuple[tuple, dict[str, Any] | None, dict[str, Any] | None]:
    """What a run's checkpoint holds after ``epoch`` epochs, on the host.

    Args:
      config: the run's configuration.
      last: the parameters, optimizer state and model state after epoch ``epoch``.
      state: early stopping's state then (``training.Progress.early_stopping_state``), or None.
      epoch: the epochs completed.

    Returns:
      ``(trees, tree, summary)``: the checkpoint's parameters, optimizer state and model state
      (the best epoch's with early stopping, else ``last``), its ``early_stopping`` tree and the
      ``early_stopping`` entry of metrics.json (``summary``); both None without early stopping.
    """
    if state is None:
        return jax.device_get(last), None, None
    state, last = jax.device_get((state, last))
    tree = _tree(_signed(config, state.best), state.best_epoch, state.stopped, last)
    trees = (state.params, state.opt_state, state.model_state)
    return trees, tree, summary(config, tree, epoch)


def summary(config: dict[str, Any], tree: dict[str, Any], epoch: int) -> dict[str, Any]:
    """The ``early_stopping`` entry of metrics.json, from a checkpoint's tree.

    Args:
      config: the run's configuration.
      tree: the checkpoint's ``early_stopping`` tree.
      epoch: the checkpoint's epoch.

    Returns:
      ``metric``, ``best`` (its best value; None if not finite), ``best_epoch`` and
      ``stopped_epoch`` (None if training did not stop).
    """
    best = float(tree["best"])
    return {
        "metric": config["early_stopping"],
        "best": best if math.isfinite(best) else None,
        "best_epoch": int(tree["best_epoch"]),
        "stopped_epoch": epoch if tree["stopped"] else None,
    }


def resumed(config: dict[str, Any], checkpoint: Any) -> tuple[tuple, StopState | None]:
    """Where a run continues from its checkpoint (``checkpoints.Checkpoint``).

    Args:
      config: the run's configuration.
      checkpoint: the checkpoint, read with ``template``'s tree.

    Returns:
      ``(trees, state)``: the parameters, optimizer state and model state to continue from, and
      early stopping's state (None without early stopping).

    Raises:
      ValueError: if early stopping stopped the run.
    """
    trees = (checkpoint.params, checkpoint.opt_state, checkpoint.model_state)
    tree = checkpoint.early_stopping
    if tree is None:
        return trees, None
    if tree["stopped"]:
        raise ValueError(
            f"early stopping stopped the run at epoch {checkpoint.epoch} (its best epoch: "
            f"{int(tree['best_epoch'])}): nothing to train"
        )
    best = _signed(config, tree["best"])
    last = (tree["last_params"], tree["last_opt_state"], tree["last_model_state"])
    return last, StopState(best, tree["best_epoch"], tree["stopped"], *trees)


def summary_line(summary: dict[str, Any]) -> str:
    """The printed line of metrics.json's ``early_stopping`` entry (``summary``).

    Args:
      summary: the entry.

    Returns:
      E.g. ``early stopping: val_loss best (0.2612) at epoch 7, stopped at epoch 10; the test
      metrics and the checkpoint are epoch 7's``.
    """
    best = "none" if summary["best"] is None else f"{summary['best']:.4f}"
    stopped = summary["stopped_epoch"]
    ended = "did not stop" if stopped is None else f"stopped at epoch {stopped}"
    return (
        f"early stopping: {summary['metric']} best ({best}) at epoch {summary['best_epoch']}, "
        f"{ended}; the test metrics and the checkpoint are epoch {summary['best_epoch']}'s"
    )
