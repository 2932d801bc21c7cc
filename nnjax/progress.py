"""The progress bar of ``nnjax train``: compiling first, then epochs and the latest metrics."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from typing import Any

from nnjax import metrics, run_data, training

__all__ = ["progress_bar"]

_SHOWN = {"train_loss": "loss", "train_accuracy": "acc", "val_accuracy": "val_acc"}
_SHOWN_WITHOUT_ACCURACY = {"train_loss": "loss", "val_loss": "val_loss"}
_BAR = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}"


def progress_bar(
    config: dict[str, Any], initial: int, quiet: bool
) -> tuple[Callable[[], Any], Callable[[training.Progress], None]]:
    """A progress bar for a run of ``config`` that starts at epoch ``initial``.

    It says it is compiling until the first compiled call has run, then starts, so its rate and
    time left count training alone; within 80 columns, the bar takes what the count, the times
    and the numbers (loss and accuracy, or training and validation loss) leave.

    Args:
      config: the run's configuration (``runs.make_config``).
      initial: the epochs completed before.
      quiet: no bar, no message.

    Returns:
      ``(close, show)``: ``show`` takes each ``training.Progress``, ``close`` ends the bar.
    """
    from tqdm import tqdm  # deferred, as matplotlib in nnjax.folders: importing runs loads neither

    name = run_data.name(config)
    if not quiet:
        print(f"{name}: compiling the training program...", file=sys.stderr)
    shown = _SHOWN if metrics.has_accuracy(config["loss"]) else _SHOWN_WITHOUT_ACCURACY
    bars = []

    def show(progress: training.Progress) -> None:
        if not quiet and not bars:  # the first call has run: compilation is over
            width = min(80, shutil.get_terminal_size().columns)
            bars.append(tqdm(total=config["epochs"], initial=initial, bar_format=_BAR, ncols=width))
            bars[0].set_description(name, refresh=False)
        for bar in bars:
            bar.update(progress.epoch - bar.n)
            latest = {
                s: progress.history[k][-1] for k, s in shown.items() if progress.history.get(k)
            }
            bar.set_postfix_str(" ".join(f"{s}={v:.3f}" for s, v in latest.items()), refresh=True)

    return (lambda: [bar.close() for bar in bars]), show
