"""Multi-process training: joining JAX's distributed runtime, and each process's share of the data.

nnjax trains on several hosts (or several processes on one host) through JAX's own
multi-controller runtime: every process runs the same program, ``jax.distributed.initialize``
connects them, ``jax.devices()`` then lists the devices of all processes, and a computation over
a mesh of them is one SPMD program whose collectives (the gradient all-reduce) cross processes.

A run of ``P`` processes::

    # in every process, before any other JAX call
    nnjax.distributed.initialize("10.0.0.1:1234", num_processes=P, process_id=i)
    rows = nnjax.distributed.process_rows(len(x_all))     # this process's contiguous share
    result = training.train(params, x_all[rows], y_all[rows], devices="all", ...)

``training.train`` then assembles the process-local rows into one global array split along its
rows over all devices (``jax.make_array_from_process_local_data``), so the program sees the same
dataset, in the same order, as a single process given all of it, and trains the same parameters
(to float32 rounding of the gradient sums). Every process ends with the same, replicated
parameters.

On CPU, the cross-process collectives use gloo (``jax_cpu_collectives_implementation``), which
``initialize`` selects; so two processes on one machine, talking over 127.0.0.1, are a complete
multi-host run for testing. GPU and TPU use their own collectives (NCCL, ICI).

Data parallelism, in one process or many: ``data_parallel`` builds a one-axis mesh and its
shardings (``DataParallel``), and ``place`` puts a run's state (replicated) and data (replicated,
or split by rows across processes) on it; ``training.train(..., devices=N)`` uses both.

A process that dies ends the others, each with one line on stderr and exit status 1: a call
that needs every process (``collective``: each compiled call of ``training.train`` and the
exchanges between them) that fails, or waits more than ``initialize``'s ``heartbeat_timeout``,
ends its process at once. Nothing ends it between two calls, where process 0 writes its
checkpoints, so the last one stands.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator
from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from nnjax import _validation

__all__ = ["DataParallel", "collective", "data_parallel", "initialize", "place", "process_rows"]


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r}") from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    initialization_timeout: int = 60,
    heartbeat_timeout: int | None = None,
) -> None:
    """Joins this process to a multi-process run (``jax.distributed.initialize``).

    Call it once per process, before any other JAX computation. An argument left ``None`` is
    read from the environment: ``JAX_COORDINATOR_ADDRESS`` (which JAX itself reads),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; whatever is still unset, JAX detects on the
    clusters it knows (Slurm, Open MPI, Cloud TPU, Kubernetes) or reports as missing.

    Args:
      coordinator_address: ``"host:port"`` of process 0, where it serves the coordinator; every
        process passes the same one.
      num_processes: the number of processes ``P`` in the run.
      process_id: this process's index, ``0 .. P - 1``.
      initialization_timeout: seconds to wait for all ``P`` processes to connect. Past it, the
        process writes one line to stderr naming the coordinator and exits with status 1 (where
        JAX alone would abort with a stack dump).
      heartbeat_timeout: seconds a call that needs every process (``collective``) may wait for
        the others. Past it, or when such a call fails (a process died), the process writes one
        line to stderr naming the processes it lost and exits with status 1. It must exceed the
        longest any process spends between two such calls (its callback, a checkpoint write)
        and the longest compiled call. Default ``$NNJAX_HEARTBEAT_TIMEOUT``, else 100. JAX's
        own heartbeat, which would end the process with a stack dump, is set well beyond it.

    Raises:
      ValueError: for a malformed argument or environment variable: an address that is not
        ``host:port``, a timeout that is not a positive integer (JAX's own message for the rest).
      RuntimeError: if JAX has already started its backends or is already initialized.
    """
    name = "coordinator_address"
    if coordinator_address is None and os.environ.get("JAX_COORDINATOR_ADDRESS"):
        name, coordinator_address = "JAX_COORDINATOR_ADDRESS", os.environ["JAX_COORDINATOR_ADDRESS"]
    if coordinator_address is not None:
        _validation.check_host_port(name, coordinator_address)
    timeout = _validation.check_positive_int("initialization_timeout", initialization_timeout)
    heartbeat = _heartbeat_timeout(heartbeat_timeout)
    if num_processes is None:
        num_processes = _env_int("JAX_NUM_PROCESSES")
    if process_id is None:
        process_id = _env_int("JAX_PROCESS_ID")
    # The CPU backend has no cross-process collectives unless one is chosen before it starts;
    # GPU and TPU backends ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    watchdog = threading.Timer(timeout, _connection_timed_out, (coordinator_address, timeout))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=timeout + _JAX_TIMEOUT_MARGIN_S,
            # JAX may declare a process dead after half its timeout.
            heartbeat_timeout_seconds=2 * heartbeat + _JAX_TIMEOUT_MARGIN_S,
        )
    finally:
        watchdog.cancel()
    _collective_timeout["seconds"] = heartbeat


_JAX_TIMEOUT_MARGIN_S = 30
"""JAX's own connection timeout is this much later than ``initialize``'s, which ends first."""

_collective_timeout: dict[str, int | None] = {"seconds": None}  # set by initialize


def _heartbeat_timeout(value: int | None) -> int:
    name = "heartbeat_timeout"
    if value is None:
        name, value = "NNJAX_HEARTBEAT_TIMEOUT", _env_int("NNJAX_HEARTBEAT_TIMEOUT")
    return 100 if value is None else _validation.check_positive_int(name, value)


def _connection_timed_out(coordinator_address: str | None, timeout: int) -> None:
    where = "the coordinator" if coordinator_address is None else coordinator_address
    sys.stderr.write(
        f"nnjax: error: the processes did not all connect to {where} within {timeout} s; check "
        "that every process was started with the same address and that process 0 is reachable\n"
    )
    sys.stderr.flush()
    os._exit(1)  # the main thread is blocked inside JAX's connection call


@contextlib.contextmanager
def collective() -> Iterator[None]:
    """Runs a call that every process of a multi-process run takes part in, or ends the process.

    When the call fails (a ``jax.errors.JaxRuntimeError``, or a ValueError with the runtime's
    status, e.g. ``UNKNOWN: ...``: a process died, its connections closed) or has not returned
    after ``initialize``'s ``heartbeat_timeout`` (a process stopped or unreachable), the process
    writes one line to stderr, naming the processes it waited for and what to do, and exits with
    status 1 at once (``os._exit``: no other call of the run can complete). It never exits once
    the call has returned, so a checkpoint written between two calls is written in full. Outside
    a multi-process run joined by ``initialize``, it does nothing.

    Yields:
      None, once the watch is set.
    """
    seconds = _collective_timeout["seconds"]
    if seconds is None or jax.process_count() == 1:
        yield
        return
    lock, waiting = threading.Lock(), [True]

    def expire() -> None:
        with lock:
            if waiting[0]:
                _end_run(
                    f"waited {seconds} s in vain for {_peers()} (stopped, hung or unreachable)"
                )

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except (jax.errors.JaxRuntimeError, ValueError) as error:
        reason = str(error).strip()
        if isinstance(error, ValueError) and not _STATUS.match(reason):
            raise  # the caller's error, not the runtime's
        _end_run(f"lost contact with {_peers()} ({reason.splitlines()[0]})")
    finally:
        with lock:
            waiting[0] = False
        timer.cancel()


_STATUS = re.compile(r"[A-Z]+(_[A-Z]+)*: ")
"""How the runtime's errors begin (``UNKNOWN: ...``); a failed execution raises some as ValueError."""


def _peers() -> str:
    others = [str(i) for i in range(jax.process_count()) if i != jax.process_index()]
    return f"process {others[0]}" if len(others) == 1 else f"one of processes {', '.join(others)}"


_ending = threading.Lock()  # held by the thread that ends the process: one line, once


def _end_run(problem: str) -> None:
    _ending.acquire()
    sys.stderr.write(
        f"nnjax: error: process {jax.process_index()} of {jax.process_count()} {problem}; "
        "restart all the processes (nnjax train --resume continues from the last checkpoint)\n"
    )
    sys.stderr.flush()
    os._exit(1)


def process_rows(n: int) -> slice:
    """The rows of an ``n``-row dataset that this process loads: its contiguous ``1/P`` share.

    Process ``i`` of ``P`` gets rows ``i * n / P .. (i + 1) * n / P``, so the processes' shares,
    concatenated in process order, are the whole dataset in its original order (what
    ``training.train`` assumes). With several processes, ``n`` must divide by the number of
    devices of the run (every device holds as many rows); trim the dataset to a multiple if it
    does not. In a single process this is ``slice(0, n)``.

    Raises:
      ValueError: if ``n`` is not a positive integer, or, with several processes, does not divide
        by ``jax.device_count()``.
    """
    n = _validation.check_positive_int("n", n)
    if jax.process_count() == 1:
        return slice(0, n)
    if n % jax.device_count():
        raise ValueError(
            f"{n} rows do not divide by the {jax.device_count()} devices of this run; use the "
            f"first {n - n % jax.device_count()}"
        )
    share = n // jax.process_count()
    start = jax.process_index() * share
    return slice(start, start + share)


class DataParallel(NamedTuple):
    """Shardings for data-parallel training over a one-axis mesh named ``"data"``."""

    mesh: jax.sharding.Mesh
    replicated: jax.sharding.NamedSharding  # parameters, optimizer state, keys
    batch: jax.sharding.NamedSharding  # each minibatch, split along its first axis
    # The whole dataset: replicated in one process; split along its rows when each of several
    # processes holds its own rows (see nnjax.distributed).
    data: jax.sharding.NamedSharding

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size


def data_parallel(devices: int | str = "all") -> DataParallel:
    """A mesh of the first ``devices`` local devices (or ``"all"``) and its shardings.

    In a multi-process run (``nnjax.distributed.initialize``), the mesh holds the devices of all
    processes, in process order, and ``devices`` must be ``"all"`` or their number: every
    process takes part in every step.

    Raises ValueError for a count that is not a positive integer or exceeds the devices there are.
    """
    multiprocess = jax.process_count() > 1
    available = (
        sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
        if multiprocess
        else jax.local_devices()
    )
    count = (
        len(available)
        if devices == "all"
        else _validation.check_positive_int('devices (or "all")', devices)
    )
    if count > len(available):
        hint = ""
        if available[0].platform == "cpu":
            hint = (
                f"; on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count={count} (set before "
                "JAX starts) splits it into that many devices"
            )
        raise ValueError(f"asked for {count} devices but only {len(available)} are available{hint}")
    if multiprocess and count != len(available):
        raise ValueError(
            f"a run of {jax.process_count()} processes trains on all {len(available)} of their "
            f'devices; got devices={devices!r} (use "all")'
        )
    mesh = jax.sharding.Mesh(np.asarray(available[:count]), ("data",))
    replicated, rows = (
        jax.sharding.NamedSharding(mesh, spec)
        for spec in (jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec("data"))
    )
    return DataParallel(mesh, replicated, rows, rows if multiprocess else replicated)


def place(
    layout: DataParallel | None, state: tuple, data: tuple, with_validation: bool
) -> tuple[tuple, tuple]:
    """Puts ``state`` and ``data`` on the default device, or on the devices of ``layout``.

    ``state`` holds the parameters, optimizer state, hyperparameters, then the key; ``data`` holds
    ``x, y, x_val, y_val``.

    With several processes, ``data`` holds this process's rows only; they become global arrays
    split along their rows (``layout.data``), the processes' rows concatenated in process order.
    """
    if layout is None:
        return jax.device_put((state, data))
    if jax.process_count() == 1:
        return jax.device_put((state, data), layout.replicated)
    # device_put checks that every process passes the same state; it takes arrays, not keys.
    *arrays, key = state
    with collective():
        *arrays, key_data = jax.device_put((*arrays, jax.random.key_data(key)), layout.replicated)
        rows = np.asarray(multihost_utils.process_allgather(np.array([len(a) for a in data[::2]])))
    state = (*arrays, jax.random.wrap_key_data(key_data, impl=jax.random.key_impl(key)))
    local = jax.local_device_count()
    names = ("x", "validation x") if with_validation else ("x",)
    for name, counts in zip(names, rows.T, strict=False):
        if np.any(counts != counts[0]) or counts[0] % local:
            raise ValueError(
                f"every process must hold as many rows of {name}, a multiple of its {local} local "
                f"devices; the processes hold {counts.tolist()} (see nnjax.distributed.process_rows)"
            )
    if not with_validation:  # placeholders, never evaluated: the same zeros in every process
        data = (*data[:2], *(np.zeros_like(np.asarray(a)) for a in data[2:]))
    shardings = (layout.data,) * 2 + ((layout.data if with_validation else layout.replicated),) * 2
    return state, tuple(
        jax.make_array_from_process_local_data(sharding, np.asarray(a))
        for sharding, a in zip(shardings, data, strict=True)
    )
