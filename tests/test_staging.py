"""Tests of nnjax._staging's compiler options for the programs a run calls once."""

import jax
import numpy as np

from nnjax import _run_setup, _staging, datasets, run_data, runs

DEFAULT_LEVEL = {"xla_backend_optimization_level": 3}


def run_once(monkeypatch):
    """``RUN_ONCE`` as a run outside this suite (whose XLA_FLAGS choose level 0) gets it."""
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    return _staging._run_once_options()


def bits(tree):
    keys = jax.dtypes.prng_key
    leaves = jax.tree.leaves(tree)
    return [
        np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, keys) else x).tobytes()
        for x in leaves
    ]


def test_the_default_run_s_setup_programs_give_the_default_level_s_bits(monkeypatch):
    config = runs.make_config()
    sizes = (*datasets.dimensions("digits")[:1], *config["hidden"], 10)
    x, y = datasets.source_arrays("digits")
    optimizer = runs.build_optimizer(config)
    start = _run_setup._dense_start.lower(0, sizes, config["init"], optimizer)
    split = run_data._split_dataset.lower(0, x, y, "digits", config["test_fraction"], None)
    options = run_once(monkeypatch)
    for lowered, args in ((start, (0,)), (split, (0, x, y))):
        expected = bits(lowered.compile(DEFAULT_LEVEL)(*args))
        assert bits(lowered.compile(options)(*args)) == expected


def test_run_once_gives_way_to_a_level_xla_flags_chooses(monkeypatch):
    assert run_once(monkeypatch) == {"xla_backend_optimization_level": 1}
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    assert _staging._run_once_options() == {}
