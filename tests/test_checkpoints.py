"""Tests of nnjax.checkpoints: exact round trips, template mismatches, rejection, atomic writes."""

from __future__ import annotations

import itertools
import json
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nnjax import checkpoints
from nnjax.checkpoints import FORMAT_VERSION, Checkpoint, load_checkpoint, save_checkpoint

from helpers import standard_promotion

CONFIG = {"sizes": [4, 8, 3], "activation": "relu", "lr": 1e-3, "seed": 0, "note": None}


OPT = standard_promotion(optax.adam(1e-3))
UPDATE = jax.jit(OPT.update)  # one compile, reused; eager adam would compile op by op


def make_params(sizes: list[int], seed: int = 0) -> list[dict[str, jax.Array]]:
    """A list of ``{"W": (n_out, n_in), "b": (n_out,)}`` layers with N(0, 1) values.

    All values are slices of one ``jax.random.normal`` draw of a fixed size, so that new layer
    sizes cost no new compilation (each distinct shape would otherwise compile in ~1 s).
    """
    noise = np.asarray(jax.random.normal(jax.random.key(seed), (1024,)))
    params, start = [], 0
    for n_in, n_out in itertools.pairwise(sizes):
        w = noise[start : start + n_out * n_in].reshape(n_out, n_in)
        b = noise[start + n_out * n_in : start + n_out * (n_in + 1)]
        start += n_out * (n_in + 1)
        params.append({"W": jnp.asarray(w), "b": jnp.asarray(b)})
    assert start <= noise.size
    return params


def trained_state() -> tuple[list, optax.OptState, optax.GradientTransformation]:
    """Params and an adam state after one update, so the count is 1 and mu/nu are non-zero."""
    params = make_params([4, 8, 3])
    state = OPT.init(params)
    updates, state = UPDATE(make_params([4, 8, 3], seed=1), state, params)
    params = optax.apply_updates(params, updates)
    return params, state, OPT


def save_good(path, epoch: int = 7):
    params, state, opt = trained_state()
    save_checkpoint(path, params=params, opt_state=state, config=CONFIG, epoch=epoch)
    return params, state, opt


def leftovers(directory, keep):
    """Files in ``directory`` other than ``keep`` (e.g. stray temporary files)."""
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def test_round_trip_is_exact(tmp_path):
    path = tmp_path / "ckpt.npz"
    params, state, opt = trained_state()
    assert int(state[0].count) == 1
    out = save_checkpoint(path, params=params, opt_state=state, config=CONFIG, epoch=7)
    assert out == path
    assert leftovers(tmp_path, {"ckpt.npz"}) == []

    fresh = make_params([4, 8, 3], seed=42)
    ckpt = load_checkpoint(path, params_like=fresh, opt_state_like=opt.init(fresh))
    assert isinstance(ckpt, Checkpoint)
    chex.assert_trees_all_equal(ckpt.params, params, strict=True)
    chex.assert_trees_all_equal(ckpt.opt_state, state, strict=True)
    assert ckpt.opt_state[0].count.dtype == jnp.int32
    assert int(ckpt.opt_state[0].count) == 1
    assert type(ckpt.opt_state[0]) is type(state[0])
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(ckpt[:2]))
    assert ckpt.config == CONFIG
    assert ckpt.epoch == 7 and type(ckpt.epoch) is int

    # The restored state is usable: one more update runs.
    updates, _ = UPDATE(ckpt.params, ckpt.opt_state, ckpt.params)
    chex.assert_trees_all_equal_shapes(updates, params)


def test_empty_state_and_other_dtypes_round_trip(tmp_path):
    path = tmp_path / "sub" / "dir" / "ckpt.npz"  # parent dirs are created
    params = {
        "layers": make_params([3, 2]),
        "bf16": jnp.arange(5, dtype=jnp.bfloat16) / 3,
        "i8": jnp.array([-1, 2], dtype=jnp.int8),
        "flag": jnp.array(True),
    }
    save_checkpoint(path, params=params, opt_state=optax.EmptyState(), config={}, epoch=0)
    ckpt = load_checkpoint(path, params_like=params, opt_state_like=optax.EmptyState())
    chex.assert_trees_all_equal(ckpt.params, params, strict=True)
    assert ckpt.params["bf16"].dtype == jnp.bfloat16
    assert ckpt.opt_state == optax.EmptyState()
    assert (ckpt.config, ckpt.epoch) == ({}, 0)


def test_shape_dtype_struct_templates(tmp_path):
    path = tmp_path / "ckpt.npz"
    params, state, opt = save_good(path)
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    state_like = jax.eval_shape(opt.init, like)
    assert isinstance(state_like[0].count, jax.ShapeDtypeStruct)
    ckpt = load_checkpoint(path, params_like=like, opt_state_like=state_like)
    chex.assert_trees_all_equal(ckpt.params, params, strict=True)
    chex.assert_trees_all_equal(ckpt.opt_state, state, strict=True)


def test_file_is_plain_npz_with_readable_keys(tmp_path):
    path = tmp_path / "ckpt.npz"
    params, state, _ = save_good(path, epoch=3)
    with np.load(path, allow_pickle=False) as data:
        files = set(data.files)
        assert "params[1]['W']" in files
        assert "opt_state[0].count" in files
        assert "opt_state[0].mu[0]['b']" in files
        assert int(data[checkpoints._VERSION_KEY]) == FORMAT_VERSION
        assert int(data[checkpoints._EPOCH_KEY]) == 3
        config = data[checkpoints._CONFIG_KEY]
        assert config.shape == () and config.dtype.kind == "U"
        assert json.loads(str(config)) == CONFIG
        np.testing.assert_array_equal(data["params[1]['W']"], np.asarray(params[1]["W"]))
        assert data["opt_state[0].count"].dtype == np.int32
    n_leaves = len(jax.tree.leaves(params)) + len(jax.tree.leaves(state))
    assert len(files) == n_leaves + 4  # version, config, epoch, dtype table


def test_overwrite_replaces_previous(tmp_path):
    path = tmp_path / "ckpt.npz"
    params, state, _ = save_good(path, epoch=1)
    save_checkpoint(path, params=params, opt_state=state, config={"a": 1}, epoch=2)
    ckpt = load_checkpoint(path, params_like=params, opt_state_like=state)
    assert (ckpt.config, ckpt.epoch) == ({"a": 1}, 2)
    assert leftovers(tmp_path, {"ckpt.npz"}) == []


def test_shape_mismatch_names_leaf_and_both_shapes(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_good(path)  # sizes [4, 8, 3]
    like = make_params([4, 5, 3])
    opt_like = OPT.init(like)
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, params_like=like, opt_state_like=opt_like)
    msg = str(info.value)
    assert "params[0]['W']" in msg
    assert "(8, 4)" in msg and "(5, 4)" in msg
    assert re.search(r"checkpoint has shape \(8, 4\), expected \(5, 4\)", msg)


def test_dtype_mismatch_names_leaf(tmp_path):
    path = tmp_path / "ckpt.npz"
    params, state, _ = save_good(path)
    like = [dict(layer) for layer in params]
    like[1]["b"] = like[1]["b"].astype(jnp.bfloat16)
    with pytest.raises(ValueError, match=r"params\[1\]\['b'\].*dtype float32, expected bfloat16"):
        load_checkpoint(path, params_like=like, opt_state_like=state)


def test_depth_mismatch_names_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_good(path)  # two layers
    deeper = make_params([4, 8, 6, 3])
    with pytest.raises(ValueError, match="missing") as info:
        load_checkpoint(path, params_like=deeper, opt_state_like=OPT.init(deeper))
    msg = str(info.value)
    assert "params[2]['W']" in msg and "params[2]['b']" in msg
    assert "unexpected" not in msg

    shallower = make_params([4, 3])
    with pytest.raises(ValueError, match="unexpected") as info:
        load_checkpoint(path, params_like=shallower, opt_state_like=OPT.init(shallower))
    msg = str(info.value)
    assert "params[1]['W']" in msg and "params[1]['b']" in msg
    assert "missing" not in msg


def test_optimizer_mismatch_is_reported(tmp_path):
    path = tmp_path / "ckpt.npz"
    params, _, _ = save_good(path)  # adam state
    with pytest.raises(ValueError, match=r"opt_state.*unexpected.*opt_state\[0\]\.nu"):
        load_checkpoint(path, params_like=params, opt_state_like=optax.sgd(0.1, 0.9).init(params))


def test_non_checkpoint_npz_is_rejected(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.arange(3), y=np.ones((2, 2)))
    params = make_params([4, 8, 3])
    with pytest.raises(ValueError, match="not an nnjax checkpoint"):
        load_checkpoint(path, params_like=params, opt_state_like=optax.EmptyState())


@pytest.mark.parametrize("kind", ["text", "npy", "pickle"])
def test_non_npz_files_are_rejected(tmp_path, kind):
    path = tmp_path / "bad.npz"
    if kind == "text":
        path.write_text("definitely not a zip archive\n")
    elif kind == "npy":
        with path.open("wb") as f:
            np.save(f, np.arange(4))
    else:
        with path.open("wb") as f:
            np.save(f, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not an nnjax checkpoint"):
        load_checkpoint(path, params_like=[], opt_state_like=optax.EmptyState())


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.npz"))):
        load_checkpoint(path, params_like=[], opt_state_like=optax.EmptyState())


def test_newer_version_is_rejected(tmp_path):
    path = tmp_path / "ckpt.npz"
    params, state, _ = save_good(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = dict(data)
    arrays[checkpoints._VERSION_KEY] = np.asarray(FORMAT_VERSION + 1)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="version"):
        load_checkpoint(path, params_like=params, opt_state_like=state)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"epoch": -1}, ValueError),
        ({"epoch": 1.0}, TypeError),
        ({"epoch": True}, TypeError),
        ({"config": [1, 2]}, TypeError),
    ],
)
def test_bad_arguments_are_rejected(tmp_path, kwargs, error):
    path = tmp_path / "ckpt.npz"
    args = {
        "params": make_params([2, 2]),
        "opt_state": optax.EmptyState(),
        "config": {},
        "epoch": 0,
    }
    with pytest.raises(error):
        save_checkpoint(path, **(args | kwargs))
    assert leftovers(tmp_path, set()) == []


def test_unserializable_config_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    params, state, _ = save_good(path, epoch=5)
    before = path.read_bytes()
    new_params = make_params([4, 8, 3], seed=9)
    with pytest.raises(TypeError):
        save_checkpoint(path, params=new_params, opt_state=state, config={"f": object()}, epoch=6)
    assert path.read_bytes() == before
    assert leftovers(tmp_path, {"ckpt.npz"}) == []
    ckpt = load_checkpoint(path, params_like=params, opt_state_like=state)
    assert ckpt.epoch == 5
    chex.assert_trees_all_equal(ckpt.params, params, strict=True)


def test_crash_midway_keeps_previous_checkpoint_and_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    params, state, _ = save_good(path, epoch=5)
    before = path.read_bytes()
    calls = []

    def crashing_savez(file, *args, **kwargs):
        calls.append(file)
        file.write(b"PK\x03\x04 half a zip archive")
        file.flush()
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crashing_savez)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(
            path, params=make_params([4, 8, 3], seed=3), opt_state=state, config={}, epoch=6
        )
    monkeypatch.undo()

    assert calls, "the fake savez was not used, so this test checks nothing"
    assert path.read_bytes() == before
    assert leftovers(tmp_path, {"ckpt.npz"}) == []
    ckpt = load_checkpoint(path, params_like=params, opt_state_like=state)
    assert (ckpt.epoch, ckpt.config) == (5, CONFIG)
    chex.assert_trees_all_equal(ckpt.params, params, strict=True)


def test_crash_on_first_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"

    def crashing_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.os, "replace", crashing_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, params=make_params([2, 2]), opt_state=(), config={}, epoch=0)
    monkeypatch.undo()
    assert leftovers(tmp_path, set()) == []
