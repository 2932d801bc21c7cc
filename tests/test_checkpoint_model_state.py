"""Tests of the model state in checkpoints: saved beside the parameters, checked by its template,
absent from checkpoints of models without state."""

from __future__ import annotations

import chex
import numpy as np
import pytest
import safetensors.numpy
from test_checkpoints import CONFIG, save_legacy

from nnjax.checkpoints import load_checkpoint, save_checkpoint

# NumPy leaves: nothing here compiles.
PARAMS = ({"W": np.ones((3, 2), np.float32), "b": np.zeros(3, np.float32)}, {}, {})
OPT_STATE = (np.asarray(1, np.int32),)
# BatchNorm's running statistics as Sequential keeps them: one entry per layer.
MODEL_STATE = ({}, {"mean": np.arange(3, dtype=np.float32), "var": np.full(3, 0.5, np.float32)}, {})
LIKE = {"params_like": PARAMS, "opt_state_like": OPT_STATE}


def test_model_state_round_trips_beside_the_parameters(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    trees = {"params": PARAMS, "opt_state": OPT_STATE, "model_state": MODEL_STATE}
    save_checkpoint(path, **trees, config=CONFIG, epoch=1)
    stored = safetensors.numpy.load_file(path)
    assert {"model_state[1]['mean']", "model_state[1]['var']"} <= set(stored)
    ckpt = load_checkpoint(path, **LIKE, model_state_like=MODEL_STATE)
    chex.assert_trees_all_equal(ckpt.model_state, MODEL_STATE)
    chex.assert_trees_all_equal(ckpt.params, PARAMS)
    with pytest.raises(ValueError, match=r"model_state: .*unexpected in checkpoint: \[\"model_"):
        load_checkpoint(path, **LIKE)


def test_checkpoints_without_model_state_load_for_models_without_and_only_for_them(tmp_path):
    save_checkpoint(
        tmp_path / "dense.safetensors", params=PARAMS, opt_state=OPT_STATE, config=CONFIG, epoch=0
    )
    save_legacy(tmp_path / "legacy.npz", PARAMS, OPT_STATE, CONFIG, 4)
    for name, message in (
        ("dense.safetensors", r"model_state: .*missing from checkpoint: \[\"model_state\[1\]"),
        ("legacy.npz", r"a format 1 \(\.npz\) checkpoint holds no model state"),
    ):
        assert load_checkpoint(tmp_path / name, **LIKE).model_state == ()
        with pytest.raises(ValueError, match=message):
            load_checkpoint(tmp_path / name, **LIKE, model_state_like=MODEL_STATE)
