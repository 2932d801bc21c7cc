"""Tests of early stopping's state in checkpoints: saved beside the parameters, returned for its
template only, checked with the file's digest either way."""

from __future__ import annotations

import chex
import numpy as np
import pytest
import safetensors.numpy
from test_checkpoint_model_state import LIKE, OPT_STATE, PARAMS
from test_checkpoints import CONFIG, join, save_legacy, split

from nnjax.checkpoints import load_checkpoint, save_checkpoint

TREES = {"params": PARAMS, "opt_state": OPT_STATE}
# As nnjax.run_training stores it: NumPy leaves, nothing here compiles.
STOPPING = {
    "best": np.float32(0.25),
    "best_epoch": np.int32(6),
    "stopped": np.bool_(False),
    "last_params": PARAMS,
    "last_opt_state": OPT_STATE,
}


def test_early_stopping_state_round_trips_and_loads_only_for_its_template(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, **TREES, early_stopping=STOPPING, config=CONFIG, epoch=8)
    assert {"early_stopping['best']", "early_stopping['last_params'][0]['W']"} <= set(
        safetensors.numpy.load_file(path)
    )
    loaded = load_checkpoint(path, **LIKE, early_stopping_like=STOPPING)
    chex.assert_trees_all_equal(loaded.early_stopping, STOPPING)
    assert loaded.early_stopping["stopped"].dtype == bool
    without = load_checkpoint(path, **LIKE)
    assert without.early_stopping is None
    chex.assert_trees_all_equal(without.params, PARAMS)

    # Read without a template, early stopping's tensors are still covered by the digest.
    header, data = split(path.read_bytes())
    damaged = bytearray(data)
    damaged[header["early_stopping['best']"]["data_offsets"][0]] ^= 0xFF
    path.write_bytes(join(header, bytes(damaged), resign=False))
    with pytest.raises(ValueError, match="is damaged"):
        load_checkpoint(path, **LIKE)


def test_checkpoints_without_early_stopping_refuse_its_template(tmp_path):
    save_checkpoint(tmp_path / "plain.safetensors", **TREES, config=CONFIG, epoch=0)
    save_legacy(tmp_path / "legacy.npz", PARAMS, OPT_STATE, CONFIG, 4)
    for name, message in (
        ("plain.safetensors", r"early_stopping: .*missing from checkpoint: \[\"early_stopping\["),
        ("legacy.npz", r"a format 1 \(\.npz\) checkpoint holds no early stopping state"),
    ):
        assert load_checkpoint(tmp_path / name, **LIKE).early_stopping is None
        with pytest.raises(ValueError, match=message):
            load_checkpoint(tmp_path / name, **LIKE, early_stopping_like=STOPPING)
