"""Training beyond one device, each configuration in subprocesses (the devices and processes are
fixed when JAX starts).

* Data parallelism over 4 CPU devices of one process: the same parameters as on 1 device,
  replicated parameters, a compiler-inserted all-reduce, and checkpoints that move between
  sharded and single-device runs.
* Two processes on 127.0.0.1 (``nnjax.distributed``, CPU collectives over gloo), each loading its
  own half of the data: both end with identical parameters, equal to one process trained on all
  of it; through the API and through the documented ``nnjax train`` command.
* A process that dies or stops answering: the other ends with one line and status 1, its last
  checkpoint intact.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from subprocess import Popen

import numpy as np
import pytest
import safetensors.numpy

from nnjax import checkpoints, distributed, folders


def _environment(**extra: str) -> dict[str, str]:
    """The test's environment for a subprocess, with strict rank promotion and no proxies (the
    processes must reach each other on 127.0.0.1 directly)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return env | {"JAX_NUMPY_RANK_PROMOTION": "raise"} | extra


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _started(commands: list[list[str]], envs: list[dict[str, str]]) -> Iterator[list[Popen]]:
    """The commands' processes, started at once (the processes of a run wait for each other),
    their output piped; killed on leaving."""
    processes = [
        Popen(c, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c, e in zip(commands, envs, strict=True)
    ]
    try:
        yield processes
    finally:
        for p in processes:
            p.kill()
            p.communicate()


def _run_together(commands: list[list[str]], envs: list[dict[str, str]]) -> list[str]:
    """Runs the commands at once; their stdouts."""
    with _started(commands, envs) as processes:
        outputs = [p.communicate(timeout=300) for p in processes]
    for p, (_, stderr) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, stderr
    return [stdout for stdout, _ in outputs]


SCRIPT = textwrap.dedent(
    """
    import json, tempfile
    import jax, jax.numpy as jnp, numpy as np
    import nnjax
    from nnjax import checkpoints, datasets, distributed, network, steps, training

    def max_rel(a, b):
        return max(
            float(np.max(np.abs(np.asarray(u) - np.asarray(v))) / np.max(np.abs(np.asarray(v))))
            for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        )

    data = datasets.load_dataset("moons", jax.random.key(0))
    params = nnjax.init_network(jax.random.key(1), [2, 16, 16, 2], "he")
    optimizer = nnjax.adam(1e-2)
    common = dict(optimizer=optimizer, batch_size=32, key=jax.random.key(2), dropout_rate=0.1,
                  validation=(data.x_test, data.y_test))
    one = training.train(params, data.x_train, data.y_train, epochs=3, **common)
    four = training.train(params, data.x_train, data.y_train, epochs=3, devices=4, **common)

    layout = distributed.data_parallel("all")
    step = steps.make_train_step(network.DenseNetwork(), optimizer=optimizer)
    seen = {}

    def inspected_step(params, opt_state, x, y, hyper, key, model_state=()):
        # The shardings XLA chose inside the partitioned step, reported at compile time.
        for name, array in (("minibatch", x), ("weights", params[0]["W"])):
            jax.debug.inspect_array_sharding(
                array, callback=lambda s, name=name, ndim=array.ndim: seen.update(
                    {name: (s.is_equivalent_to(layout.batch, ndim),
                            s.is_equivalent_to(layout.replicated, ndim))}
                )
            )
        return step(params, opt_state, x, y, hyper, key, model_state)

    epoch = steps.make_train_epoch(
        inspected_step, num_batches=4, batch_size=32, batch_sharding=layout.batch
    )
    state = steps.EpochState(params, optimizer.init(params), jnp.array(True), jnp.array(-1))
    args = (state, data.x_train, data.y_train, steps.Hyperparameters(None, 0.0, 0.0),
            jax.random.key(0))
    hlo = jax.jit(epoch).lower(*jax.device_put(args, layout.replicated)).compile().as_text()

    # A checkpoint of the 4-device run, resumed on 1 device and on 4.
    path = tempfile.mkdtemp() + "/ckpt.npz"
    checkpoints.save_checkpoint(path, params=four.params, opt_state=four.opt_state, config={},
                                epoch=3)
    saved = checkpoints.load_checkpoint(path, params_like=params,
                                        opt_state_like=optimizer.init(params))
    rest = dict(opt_state=saved.opt_state, epochs=5, start_epoch=3, **common)
    resumed_one = training.train(saved.params, data.x_train, data.y_train, **rest)
    resumed_four = training.train(saved.params, data.x_train, data.y_train, devices=4, **rest)
    try:
        training.train(params, data.x_train, data.y_train, batch_size=30, devices=4,
                       key=jax.random.key(0))
        batch_error = ""
    except ValueError as error:
        batch_error = str(error)

    # Batch normalization over a minibatch split across devices: its statistics are the whole
    # minibatch's, so the run equals one device's.
    # (No bias right before it: its gradient is 0 up to rounding, which Adam would amplify.)
    bn = nnjax.Sequential((nnjax.BatchNorm(), nnjax.Dense(8), nnjax.Activation("relu"),
                           nnjax.Dense(2)), (2,))
    bn_params, bn_state = bn.init(jax.random.key(3))
    bn_runs = [training.train(bn_params, data.x_train, data.y_train, model=bn,
                              model_state=bn_state, epochs=2, devices=d,
                              **{k: v for k, v in common.items() if k != "dropout_rate"})
               for d in (None, 4)]

    print(json.dumps({
        "batch_norm_four_vs_one": max_rel(*(
            (r.params, r.model_state) for r in reversed(bn_runs))),
        "devices": jax.device_count(),
        "four_vs_one": max_rel(four.params, one.params),
        "resumed_four_vs_one": max_rel(resumed_four.params, resumed_one.params),
        "param_devices": len(four.params[0]["W"].sharding.device_set),
        "replicated": four.params[0]["W"].sharding.is_fully_replicated,
        "all_reduce": "all-reduce" in hlo,
        "inside_step": seen,
        "loaded_devices": len(saved.params[0]["W"].devices()),
        "batch_error": batch_error,
    }))
    """
)


@pytest.fixture(scope="module")
def report():
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
    (stdout,) = _run_together([[sys.executable, "-c", SCRIPT]], [_environment(XLA_FLAGS=flags)])
    return json.loads(stdout.strip().splitlines()[-1])


def test_four_devices_train_the_same_parameters_as_one(report):
    assert report["devices"] == 4
    assert report["four_vs_one"] <= 1e-6  # the README states this bound


def test_parameters_are_replicated_and_the_compiler_sums_the_gradients(report):
    assert report["param_devices"] == 4 and report["replicated"]
    assert report["all_reduce"]


def test_inside_the_step_the_minibatch_is_split_and_the_weights_replicated(report):
    # (split along the batch axis, replicated) for each array
    assert report["inside_step"] == {"minibatch": [True, False], "weights": [False, True]}


def test_checkpoints_move_between_sharded_and_single_device_runs(report):
    assert report["loaded_devices"] == 1
    assert report["resumed_four_vs_one"] <= 1e-6


def test_batch_norm_statistics_span_the_whole_minibatch_across_devices(report):
    assert report["batch_norm_four_vs_one"] <= 1e-6


def test_a_batch_that_does_not_divide_is_an_error(report):
    assert "batch_size 30 does not divide by the 4 devices" in report["batch_error"]


# One process of a multi-process run, or, without JAX_COORDINATOR_ADDRESS, a single process.
WORKER = textwrap.dedent(
    """
    import json, os
    import numpy as np
    from nnjax import distributed

    multiprocess = "JAX_COORDINATOR_ADDRESS" in os.environ
    if multiprocess:
        distributed.initialize()  # from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID

    import jax
    import nnjax
    from nnjax import datasets, training

    data = datasets.load_dataset("moons", jax.random.key(0))
    rows, val_rows = (distributed.process_rows(len(a)) for a in (data.x_train, data.x_test))
    params = nnjax.init_network(jax.random.key(1), [2, 16, 16, 2], "he")
    result = training.train(
        params, data.x_train[rows], data.y_train[rows], epochs=3, optimizer=nnjax.adam(1e-2),
        batch_size=32, key=jax.random.key(2), dropout_rate=0.1,
        validation=(data.x_test[val_rows], data.y_test[val_rows]),
    )
    W = result.params[0]["W"]
    report = {
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "rows": [rows.start, rows.stop],
        "params": jax.tree.map(lambda a: np.asarray(a).tolist(), result.params),
        "history": result.history,
        "replicated_over": len(W.sharding.device_set) if W.sharding.is_fully_replicated else 0,
    }

    def error(f):
        try:
            f()
        except ValueError as e:
            return str(e)
        return ""

    if multiprocess:
        mine = slice(0, 10 + 2 * jax.process_index())  # unequal shares
        report["errors"] = {
            "uneven": error(lambda: training.train(params, data.x_train[mine],
                                                   data.y_train[mine], key=jax.random.key(0))),
            "subset": error(lambda: distributed.data_parallel(1)),
            "rows": error(lambda: distributed.process_rows(801)),
        }
        plain = training.train(params, data.x_train[rows], data.y_train[rows], epochs=1,
                               batch_size=400, key=jax.random.key(3))
        report["without_validation"] = plain.history
        # Process 1's callback asks to stop after the first call: both processes stop there.
        stopped = training.train(params, data.x_train[rows], data.y_train[rows], epochs=4,
                                 batch_size=400, key=jax.random.key(3), epochs_per_call=1,
                                 callback=lambda progress: jax.process_index() == 1)
        report["stopped_after"] = stopped.epochs_run
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def two_processes():
    """The reports of the two processes of a run, then of a single process."""
    address = f"127.0.0.1:{_free_port()}"
    envs = [
        _environment(JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
        for i in range(2)
    ]
    stdouts = _run_together([[sys.executable, "-c", WORKER]] * 3, [*envs, _environment()])
    return [json.loads(out.strip().splitlines()[-1]) for out in stdouts]


def _max_relative(a, b) -> float:
    return max(
        float(np.max(np.abs(u - v)) / np.max(np.abs(v)))
        for u, v in zip(map(np.asarray, a), map(np.asarray, b), strict=True)
    )


def _leaves(report):
    return [leaf for layer in report["params"] for leaf in (layer["W"], layer["b"])]


def test_two_processes_end_with_identical_parameters_equal_to_one_process(two_processes):
    first, second, single = two_processes
    assert (first["processes"], first["devices"], single["processes"]) == (2, 2, 1)
    assert first["params"] == second["params"]  # bit for bit
    assert first["replicated_over"] == second["replicated_over"] == 2
    assert _max_relative(_leaves(first), _leaves(single)) <= 1e-6  # as the README states
    assert first["history"] == second["history"]
    for key, values in single["history"].items():
        np.testing.assert_allclose(first["history"][key], values, rtol=1e-6)


def test_training_without_validation_data_agrees_across_processes(two_processes):
    first, second, _ = two_processes
    assert first["without_validation"] == second["without_validation"]
    assert list(first["without_validation"]) == ["train_loss", "train_accuracy"]


def test_a_stop_asked_by_one_process_stops_every_process_after_the_same_call(two_processes):
    first, second, _ = two_processes
    assert first["stopped_after"] == second["stopped_after"] == 1


def test_each_process_loads_its_own_half_of_the_data(two_processes):
    first, second, single = two_processes
    n = single["rows"][1]
    assert first["rows"] == [0, n // 2] and second["rows"] == [n // 2, n]


def test_multiprocess_misuse_is_an_error_in_every_process(two_processes):
    for report in two_processes[:2]:
        errors = report["errors"]
        assert "every process must hold as many rows of x" in errors["uneven"]
        assert "[10, 12]" in errors["uneven"]
        assert 'use "all"' in errors["subset"]
        assert "801 rows do not divide by the 2 devices" in errors["rows"]


def test_two_processes_of_nnjax_train_write_what_one_process_does(tmp_path):
    options = ["train", "--dataset", "moons", "--hidden", "8", "--epochs", "2", "--quiet"]
    address = f"127.0.0.1:{_free_port()}"
    commands = [
        [sys.executable, "-m", "nnjax", *options, "--output", str(tmp_path / folder), *extra]
        for folder, extra in [
            ("p0", ["--coordinator", address, "--num-processes", "2", "--process-id", "0"]),
            ("p1", ["--coordinator", address, "--num-processes", "2", "--process-id", "1"]),
            ("single", []),
        ]
    ]
    with _started(commands, [_environment()] * 3) as processes:
        outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    # Only process 0 speaks: nothing from process 1 could land on its progress bar.
    assert outputs[1] == ("", "")
    assert not (tmp_path / "p1").exists()  # process 0 writes the run folder
    assert json.loads((tmp_path / "p0" / "metrics.json").read_text())["processes"] == 2
    shared, single = (
        safetensors.numpy.load_file(tmp_path / f / "checkpoint.safetensors")
        for f in ("p0", "single")
    )
    names = [name for name in single if name.startswith(("params", "opt_state.m"))]
    assert len(names) == 8
    assert _max_relative([shared[n] for n in names], [single[n] for n in names]) <= 1e-6


def test_process_rows_in_a_single_process_is_everything():
    assert distributed.process_rows(801) == slice(0, 801)
    with pytest.raises(ValueError, match="positive integer"):
        distributed.process_rows(0)


def test_a_malformed_environment_variable_is_named(monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES must be an integer, got 'two'"):
        distributed.initialize("127.0.0.1:1")


@pytest.mark.parametrize("address", ["garbage", "10.0.0.1:", ":1234", "host:port", "host:70000"])
def test_a_malformed_coordinator_address_names_host_port(address):
    """Refused before JAX is touched (JAX's own error for "garbage" is an IndexError)."""
    with pytest.raises(ValueError, match=r"^coordinator_address must read host:port"):
        distributed.initialize(address, 2, 0)


def test_a_malformed_coordinator_address_in_the_environment_is_named(monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1")
    with pytest.raises(ValueError, match=r"^JAX_COORDINATOR_ADDRESS must read host:port"):
        distributed.initialize(None, 2, 0)


@pytest.mark.parametrize("timeout", [0, -5, 2.5])
def test_a_bad_initialization_timeout_is_named(timeout):
    with pytest.raises(ValueError, match="initialization_timeout must be a positive integer"):
        distributed.initialize("127.0.0.1:1", 2, 0, initialization_timeout=timeout)


def test_an_unreachable_coordinator_ends_in_one_line_after_the_timeout():
    """Nothing listens at the port: after the timeout, one line naming it and exit status 1,
    rather than a silent wait and JAX's abort with a stack dump."""
    address = f"127.0.0.1:{_free_port()}"
    code = (
        "from nnjax import distributed; "
        f"distributed.initialize({address!r}, 2, 1, initialization_timeout=2)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_environment(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"nnjax: error: the processes did not all connect to {address} within 2 s; check that "
        "every process was started with the same address and that process 0 is reachable"
    ]


@pytest.mark.parametrize(
    ("value", "message"), [("0", "a positive integer"), ("1.5", "an integer, got '1.5'")]
)
def test_a_bad_heartbeat_timeout_in_the_environment_is_named(monkeypatch, value, message):
    monkeypatch.setenv("NNJAX_HEARTBEAT_TIMEOUT", value)
    with pytest.raises(ValueError, match=f"NNJAX_HEARTBEAT_TIMEOUT must be {message}"):
        distributed.initialize("127.0.0.1:1", 2, 0)


_RESTART = "restart all the processes (nnjax train --resume continues from the last checkpoint)"


def test_a_killed_process_ends_the_other_with_one_line_and_its_checkpoint_intact(tmp_path):
    """SIGKILL process 1 once process 0 has saved a checkpoint: process 0 ends at its next call
    with one line and status 1 (JAX alone aborts later, with a stack dump), between two saves."""
    folder = tmp_path / "run"
    options = ["train", "--dataset", "xor", "--hidden", "8", "--epochs", "100000", "--quiet"]
    options += ["--checkpoint-every", "1", "--output", str(folder), "--num-processes", "2"]
    options += ["--coordinator", f"127.0.0.1:{_free_port()}"]
    commands = [[sys.executable, "-m", "nnjax", *options, "--process-id", i] for i in "01"]
    with _started(commands, [_environment(NNJAX_HEARTBEAT_TIMEOUT="30")] * 2) as processes:
        deadline = time.monotonic() + 120
        while not (folder / folders.CHECKPOINT).exists() and time.monotonic() < deadline:
            if processes[0].poll() is not None:
                break
            time.sleep(0.02)
        processes[1].kill()
        killed = time.monotonic()
        _, stderr = processes[0].communicate(timeout=120)
        waited = time.monotonic() - killed
    assert processes[0].returncode == 1, stderr
    assert waited < 30  # the heartbeat timeout; a closed connection ends it at once
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("nnjax: error: process 0 of 2 lost contact with process 1 (")
    assert lines[0].endswith(f"); {_RESTART}")
    # The checkpoint is whole (metrics.json, written after it, names its digest) and loads.
    checkpoint = folder / folders.CHECKPOINT
    assert folders.read_metrics(folder)["checkpoint_sha256"] == folders.sha256(checkpoint)
    assert not list(folder.glob(".*.tmp"))
    header = checkpoints.read_header(checkpoint)
    assert header.epoch >= 1 and len(header.history["train_loss"]) == header.epoch
    assert len(safetensors.numpy.load_file(checkpoint)) >= 8  # parameters, optimizer state


SILENT_PEER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from nnjax import distributed

    address, process = sys.argv[1], int(sys.argv[2])
    distributed.initialize(address, 2, process, heartbeat_timeout=2)
    from jax.experimental import multihost_utils

    for call in range(2):
        if call == 1 and process == 1:
            time.sleep(120)  # alive, but no longer taking part
        with distributed.collective():
            multihost_utils.process_allgather(np.zeros(1))
    """
)


def test_a_process_that_stops_answering_ends_the_other_after_the_heartbeat_timeout():
    address = f"127.0.0.1:{_free_port()}"
    commands = [[sys.executable, "-c", SILENT_PEER, address, i] for i in "01"]
    with _started(commands, [_environment()] * 2) as processes:
        _, stderr = processes[0].communicate(timeout=120)
    assert processes[0].returncode == 1, stderr
    assert stderr.splitlines() == [
        "nnjax: error: process 0 of 2 waited 2 s in vain for process 1 (stopped, hung or "
        f"unreachable); {_RESTART}"
    ]


def test_asking_for_more_cpu_devices_than_there_are_names_the_xla_flag():
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count=64"):
        distributed.data_parallel(64)
