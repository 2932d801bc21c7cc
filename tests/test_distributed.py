"""Data-parallel training over 4 CPU devices, in a subprocess (the device count is fixed when JAX
starts): the same parameters as on 1 device, replicated parameters, a compiler-inserted all-reduce,
and checkpoints that move between sharded and single-device runs."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, tempfile
    import jax, jax.numpy as jnp, numpy as np
    import nnjax
    from nnjax import checkpoints, datasets, training

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

    layout = training.data_parallel("all")
    step = training.make_train_step(optimizer=optimizer)
    epoch = training.make_train_epoch(step, num_batches=4, batch_size=32, batch_sharding=layout.batch)
    state = training.EpochState(params, optimizer.init(params), jnp.array(True), jnp.array(-1))
    args = (state, data.x_train, data.y_train, training.Hyperparameters(0.0, 0.0, 0.0),
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

    print(json.dumps({
        "devices": jax.device_count(),
        "four_vs_one": max_rel(four.params, one.params),
        "resumed_four_vs_one": max_rel(resumed_four.params, resumed_one.params),
        "param_devices": len(four.params[0]["W"].sharding.device_set),
        "replicated": four.params[0]["W"].sharding.is_fully_replicated,
        "all_reduce": "all-reduce" in hlo,
        "loaded_devices": len(saved.params[0]["W"].devices()),
        "batch_error": batch_error,
    }))
    """
)


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_four_devices_train_the_same_parameters_as_one(report):
    assert report["devices"] == 4
    assert report["four_vs_one"] <= 1e-5


def test_parameters_are_replicated_and_the_compiler_sums_the_gradients(report):
    assert report["param_devices"] == 4 and report["replicated"]
    assert report["all_reduce"]


def test_checkpoints_move_between_sharded_and_single_device_runs(report):
    assert report["loaded_devices"] == 1
    assert report["resumed_four_vs_one"] <= 1e-5


def test_a_batch_that_does_not_divide_is_an_error(report):
    assert "batch_size 30 does not divide by the 4 devices" in report["batch_error"]
