"""The loop around the compiled training program: its calls, their history, and when to stop.

``run_chunks`` calls a compiled program (``nnjax.program``) several epochs at a time until the
last epoch, a divergence, the callback's stop or early stopping's; between calls it gathers the
history and calls the callback. ``train`` (``nnjax.training``) prepares the program and its
arguments (``compile_run``) and turns the ``Outcome`` into its result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from nnjax import distributed, metrics, program, steps
from nnjax.early_stopping import StopState

__all__ = [
    "MAX_EPOCHS_PER_CALL",
    "Divergence",
    "History",
    "Outcome",
    "Progress",
    "Run",
    "chunk_history",
    "compile_run",
    "evaluation_seconds",
    "run_chunks",
]

History = dict[str, list[float]]

MAX_EPOCHS_PER_CALL = 256


class Divergence(NamedTuple):
    """Where training met a non-finite loss (both zero-based).

    ``step`` is the epoch's last when every loss was finite but the parameters or optimizer state
    it ended with were not.
    """

    epoch: int
    step: int


class Progress(NamedTuple):
    """What ``train``'s callback sees after each compiled call.

    Attributes:
      epoch: the epochs completed, counted from the run's beginning (``start_epoch`` included).
      history: the history of this call of ``train`` so far (as ``TrainResult.history``).
      params: the parameters after ``epoch`` epochs.
      opt_state: the optimizer state that goes with them.
      early_stopping_state: early stopping's ``StopState`` (None without early stopping), to
        save with a checkpoint and pass back to ``train`` when resuming.
      model_state: the model's state after ``epoch`` epochs (``()`` for a model without).

    ``params`` and ``opt_state`` live on the device until the next compiled call reuses their
    buffers: a callback that keeps them copies them first (``jax.device_get``).
    """

    epoch: int
    history: History
    params: Any
    opt_state: Any
    early_stopping_state: StopState | None = None
    model_state: Any = ()


class Run(NamedTuple):
    """A prepared run: the compiled program and its arguments, on their devices."""

    compiled: Any
    compile_seconds: float
    config: program.ProgramConfig
    params: Any
    opt_state: Any
    stopper: StopState | None
    model_state: Any
    data: tuple[jax.Array, jax.Array, jax.Array, jax.Array]  # x, y, x_val, y_val
    hyper: steps.Hyperparameters
    key: jax.Array


def compile_run(config: program.ProgramConfig, state: tuple, data: tuple) -> Run:
    """Compiles the program for ``state = (params, opt_state, stopper, model_state, hyper, key)``."""
    params, opt_state, stopper, model_state, hyper, key = state
    start = time.perf_counter()
    compiled = program.compiled_program(
        config,
        params,
        opt_state,
        *data,
        hyper,
        key,
        program.int32(0),
        program.int32(1),
        stopper,
        model_state,
    )
    seconds = time.perf_counter() - start
    return Run(compiled, seconds, config, params, opt_state, stopper, model_state, data, hyper, key)


def chunk_history(
    chunk: program.EpochMetrics, done: int, first_epoch: int, eval_every: int
) -> History:
    """The history of the first ``done`` epochs of a program call that began at ``first_epoch``.

    Every ``HISTORY_KEYS`` series at the epochs evaluated (with their ``eval_epoch`` unless
    ``eval_every`` is 1), and the diagnostics of the epochs that recorded them.
    """
    evaluated = [i for i in range(done) if eval_every and (first_epoch + i + 1) % eval_every == 0]
    history = {
        name: [float(getattr(chunk, name)[i]) for i in evaluated] for name in metrics.HISTORY_KEYS
    }
    if eval_every != 1:
        history["eval_epoch"] = [first_epoch + i + 1 for i in evaluated]
    if chunk.diagnostics:
        recorded = [
            i for i in range(done) if any(np.isfinite(s[i]) for s in chunk.diagnostics.values())
        ]
        history["diagnostics_epoch"] = [first_epoch + i + 1 for i in recorded]
        for name, series in chunk.diagnostics.items():
            history[name] = [float(series[i]) for i in recorded]
    return history


class Outcome(NamedTuple):
    """Where ``run_chunks`` left training."""

    params: Any
    opt_state: Any
    stopper: StopState | None
    model_state: Any
    history: History
    epoch: int
    seconds: float
    diverged: Divergence | None


def run_chunks(
    run: Run, options: Any, callback: Callable[[Progress], Any] | None, public
) -> Outcome:
    """Calls the compiled program until ``options.epochs``, a divergence or a stop.

    A stop is the callback's, or early stopping's. Each call runs about half a second of epochs
    (or ``options.epochs_per_call``). In a multi-process run, a call that fails or outlasts the
    heartbeat timeout ends the process (``distributed.collective``), never the callback.
    """
    params, opt_state, stopper, history = run.params, run.opt_state, run.stopper, {}
    model_state = run.model_state
    epoch, chunk, seconds, diverged = options.start_epoch, options.epochs_per_call or 1, 0.0, None
    stop = False
    while epoch < options.epochs and diverged is None and not stop:
        chunk = max(1, min(chunk, options.epochs - epoch, MAX_EPOCHS_PER_CALL))
        t0 = time.perf_counter()
        with distributed.collective():
            state, bad_epoch, done, chunk_metrics, stopper = run.compiled(
                params,
                opt_state,
                *run.data,
                run.hyper,
                run.key,
                program.int32(epoch),
                program.int32(chunk),
                stopper,
                model_state,
            )
            done, chunk_metrics, finite, stopped = jax.device_get(
                (done, chunk_metrics, state.finite, stopper is not None and stopper.stopped)
            )
        elapsed = time.perf_counter() - t0
        seconds += elapsed
        params, opt_state, model_state = state.params, state.opt_state, state.model_state
        done = int(done)
        if not finite:
            diverged = Divergence(int(bad_epoch), int(state.bad_step))
            done -= 1  # the epoch where the loss diverged did not complete
        for name, values in chunk_history(chunk_metrics, done, epoch, options.eval_every).items():
            history.setdefault(name, []).extend(values)
        epoch += done
        stop = callback is not None and bool(
            callback(Progress(epoch, public(history), params, opt_state, stopper, model_state))
        )
        if options.epochs_per_call is None:
            chunk = int(np.clip(0.5 / max(elapsed / max(done, 1), 1e-6), 1, MAX_EPOCHS_PER_CALL))
        chunk, stop = _agreed(chunk, stop or bool(stopped))
    return Outcome(params, opt_state, stopper, model_state, history, epoch, seconds, diverged)


def evaluation_seconds(run: Run, outcome: Outcome, repeats: int = 3) -> float:
    """The seconds one of the program's evaluations takes, with ``outcome``'s parameters.

    Timed as the fastest of ``repeats`` calls of the compiled program that train no epoch and
    evaluate (``program.build_program``), on a copy of ``outcome``'s state, which they take.
    """
    state = (outcome.params, outcome.opt_state, outcome.stopper, outcome.model_state)
    state = jax.tree.map(lambda a: jax.device_put(a, a.sharding, may_alias=False), state)
    epoch, none = program.int32(outcome.epoch), program.int32(0)
    fastest = float("inf")
    for _ in range(repeats):
        params, opt_state, stopper, model_state = state
        t0 = time.perf_counter()
        with distributed.collective():
            ended, _, _, history, stopper = run.compiled(
                params, opt_state, *run.data, run.hyper, run.key, epoch, none, stopper, model_state
            )
            jax.block_until_ready(history)
        fastest = min(fastest, time.perf_counter() - t0)
        state = (ended.params, ended.opt_state, stopper, ended.model_state)
    return fastest


def _agreed(chunk: int, stop: bool) -> tuple[int, bool]:
    """What every process of a multi-process run does next: process 0's epochs per call, and a
    stop if any process's callback asked for one, so that all run the same calls."""
    if jax.process_count() == 1:
        return chunk, stop
    with distributed.collective():
        votes = multihost_utils.process_allgather(np.array([chunk, stop], np.int32))
    votes = np.asarray(votes).reshape(jax.process_count(), 2)
    return int(votes[0, 0]), bool(votes[:, 1].any())
