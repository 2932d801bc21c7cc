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
"""

from __future__ import annotations

import os

import jax

__all__ = ["initialize", "process_rows"]


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

    Raises:
      ValueError: for a malformed environment variable or argument (JAX's own message).
      RuntimeError: if JAX has already started its backends or is already initialized.
    """
    if num_processes is None:
        num_processes = _env_int("JAX_NUM_PROCESSES")
    if process_id is None:
        process_id = _env_int("JAX_PROCESS_ID")
    # The CPU backend has no cross-process collectives unless one is chosen before it starts;
    # GPU and TPU backends ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )


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
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
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
