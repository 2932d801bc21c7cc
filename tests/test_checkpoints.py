"""Tests of nnjax.checkpoints: exact round trips, template mismatches, rejection, atomic writes,
format 1 (``.npz``) checkpoints."""

from __future__ import annotations

import itertools
import json
import os
import re
import tracemalloc

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import safetensors
import safetensors.numpy

from nnjax import checkpoints
from nnjax.checkpoints import (
    FORMAT_VERSION,
    Checkpoint,
    CheckpointHeader,
    load_checkpoint,
    read_header,
    read_metadata,
    save_checkpoint,
)

from helpers import compile_count, standard_promotion

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


def split(blob: bytes) -> tuple[dict, bytes]:
    """A safetensors file's header as a dict, and its tensor data."""
    length = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + length]), blob[8 + length :]


def join(header: dict, data: bytes, *, resign: bool = True) -> bytes:
    """A safetensors file of ``header`` and ``data``; ``resign`` recomputes nnjax's digest, as a
    forger would, so that only the checks under test can refuse the file."""
    if resign:
        metadata = dict(header["__metadata__"])
        metadata.pop(checkpoints._DIGEST_KEY, None)
        tensors = {
            name: np.frombuffer(
                data,
                checkpoints._SAFETENSORS_DTYPES[t["dtype"]],
                offset=t["data_offsets"][0],
                count=int(np.prod(t["shape"])),
            ).reshape(t["shape"])
            for name, t in header.items()
            if name != "__metadata__"
        }
        header["__metadata__"][checkpoints._DIGEST_KEY] = checkpoints._digest(metadata, tensors)
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


def save_legacy(path, params, opt_state, config, epoch, **replace) -> None:
    """Writes a format 1 checkpoint as earlier versions of nnjax did (``numpy.savez``)."""
    arrays, dtypes = {}, {}
    for prefix, tree in (("params", params), ("opt_state", opt_state)):
        for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            key, arr = prefix + jax.tree_util.keystr(key_path), np.asarray(leaf)
            dtypes[key] = arr.dtype.name
            arrays[key] = arr.view(f"u{arr.itemsize}") if arr.dtype.kind == "V" else arr
    arrays["__nnjax_checkpoint_version__"] = np.asarray(1, dtype=np.int64)
    arrays["__config__"] = np.asarray(json.dumps(config))
    arrays["__epoch__"] = np.asarray(epoch, dtype=np.int64)
    arrays["__dtypes__"] = np.asarray(json.dumps(dtypes))
    with open(path, "wb") as f:
        np.savez(f, **(arrays | replace))


def leftovers(directory, keep):
    """Files in ``directory`` other than ``keep`` (e.g. stray temporary files)."""
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def test_round_trip_is_exact(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    params, state, opt = trained_state()
    assert int(state[0].count) == 1
    out = save_checkpoint(path, params=params, opt_state=state, config=CONFIG, epoch=7)
    assert out == path
    assert leftovers(tmp_path, {"ckpt.safetensors"}) == []

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
    assert ckpt.history == {}

    # The restored state is usable: one more update runs.
    updates, _ = UPDATE(ckpt.params, ckpt.opt_state, ckpt.params)
    chex.assert_trees_all_equal_shapes(updates, params)


def test_empty_state_and_other_dtypes_round_trip(tmp_path):
    path = tmp_path / "sub" / "dir" / "ckpt.safetensors"  # parent dirs are created
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
    path = tmp_path / "ckpt.safetensors"
    params, state, opt = save_good(path)
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    state_like = jax.eval_shape(opt.init, like)
    assert isinstance(state_like[0].count, jax.ShapeDtypeStruct)
    ckpt = load_checkpoint(path, params_like=like, opt_state_like=state_like)
    chex.assert_trees_all_equal(ckpt.params, params, strict=True)
    chex.assert_trees_all_equal(ckpt.opt_state, state, strict=True)


def test_loading_compiles_nothing(tmp_path):
    # Leaf shapes no other test uses: a program per leaf (as jnp.asarray compiles) would show.
    path = tmp_path / "ckpt.safetensors"
    params = {
        "w": jnp.ones((7, 11)),
        "n": jnp.arange(13, dtype=jnp.int32),
        "flag": jnp.array([True, False, True]),
    }
    save_checkpoint(path, params=params, opt_state=optax.EmptyState(), config={}, epoch=0)
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    loaded = []

    def load():
        loaded.append(load_checkpoint(path, params_like=like, opt_state_like=optax.EmptyState()))

    assert compile_count(load) == 0
    chex.assert_trees_all_equal(loaded[0].params, params, strict=True)


def test_file_is_plain_safetensors_with_readable_keys(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    params, state, _ = save_good(path, epoch=3)
    with safetensors.safe_open(path, framework="np") as f:
        names, metadata = set(f.keys()), f.metadata()
        np.testing.assert_array_equal(f.get_tensor("params[1]['W']"), np.asarray(params[1]["W"]))
        assert f.get_tensor("opt_state[0].count").dtype == np.int32
    assert "params[1]['W']" in names
    assert "opt_state[0].count" in names
    assert "opt_state[0].mu[0]['b']" in names
    assert len(names) == len(jax.tree.leaves(params)) + len(jax.tree.leaves(state))
    assert metadata[checkpoints._VERSION_KEY] == str(FORMAT_VERSION) == "2"
    assert metadata[checkpoints._EPOCH_KEY] == "3"
    assert json.loads(metadata[checkpoints._CONFIG_KEY]) == CONFIG
    assert json.loads(metadata[checkpoints._DTYPES_KEY])["params[0]['b']"] == "float32"


def test_history_round_trips_exactly_and_header_reads_alone(tmp_path):
    path = tmp_path / "ckpt"
    history = {"loss": [0.1, float("nan"), float("inf"), -float("inf"), 5e-324], "epoch": [0, 1]}
    params, state, _ = trained_state()
    save_checkpoint(path, params=params, opt_state=state, config=CONFIG, epoch=2, history=history)
    header = read_header(path)
    assert isinstance(header, CheckpointHeader)
    assert (header.config, header.epoch) == (CONFIG, 2)
    assert read_metadata(path) == (CONFIG, 2)
    for got in (header.history, load_checkpoint(path, params_like=params, opt_state_like=state)[4]):
        assert json.dumps(got) == json.dumps(history)  # NaN == NaN, and every float bit for bit


def test_read_header_does_not_read_the_tensors(tmp_path):
    path = tmp_path / "big.safetensors"
    big = {"W": jnp.zeros((1024, 1024))}  # 4 MiB
    save_checkpoint(path, params=big, opt_state=(), config={}, epoch=0)
    tracemalloc.start()
    try:
        assert read_header(path).epoch == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_overwrite_replaces_previous(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    params, state, _ = save_good(path, epoch=1)
    save_checkpoint(path, params=params, opt_state=state, config={"a": 1}, epoch=2)
    ckpt = load_checkpoint(path, params_like=params, opt_state_like=state)
    assert (ckpt.config, ckpt.epoch) == ({"a": 1}, 2)
    assert leftovers(tmp_path, {"ckpt.safetensors"}) == []


def test_shape_mismatch_names_leaf_and_both_shapes(tmp_path):
    path = tmp_path / "ckpt.safetensors"
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
    path = tmp_path / "ckpt.safetensors"
    params, state, _ = save_good(path)
    like = [dict(layer) for layer in params]
    like[1]["b"] = like[1]["b"].astype(jnp.bfloat16)
    with pytest.raises(ValueError, match=r"params\[1\]\['b'\].*dtype float32, expected bfloat16"):
        load_checkpoint(path, params_like=like, opt_state_like=state)


def test_depth_mismatch_names_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "ckpt.safetensors"
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
    path = tmp_path / "ckpt.safetensors"
    params, _, _ = save_good(path)  # adam state
    with pytest.raises(ValueError, match=r"opt_state.*unexpected.*opt_state\[0\]\.nu"):
        load_checkpoint(path, params_like=params, opt_state_like=optax.sgd(0.1, 0.9).init(params))


def test_non_checkpoint_npz_is_rejected(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.arange(3), y=np.ones((2, 2)))
    params = make_params([4, 8, 3])
    with pytest.raises(ValueError, match="not an nnjax checkpoint"):
        load_checkpoint(path, params_like=params, opt_state_like=optax.EmptyState())


@pytest.mark.parametrize("kind", ["text", "npy", "pickle", "safetensors", "empty"])
def test_other_files_are_rejected(tmp_path, kind):
    path = tmp_path / "bad.safetensors"
    if kind == "text":
        path.write_text("definitely not a checkpoint\n")
    elif kind == "npy":
        with path.open("wb") as f:
            np.save(f, np.arange(4))
    elif kind == "pickle":
        with path.open("wb") as f:
            np.save(f, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    elif kind == "safetensors":
        path.write_bytes(safetensors.numpy.save({"x": np.ones(3)}, metadata={"a": "b"}))
    else:
        path.write_bytes(b"")
    with pytest.raises(ValueError, match="not an nnjax checkpoint"):
        load_checkpoint(path, params_like=[], opt_state_like=optax.EmptyState())


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.safetensors"))):
        load_checkpoint(path, params_like=[], opt_state_like=optax.EmptyState())


def test_newer_version_is_rejected(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    params, state, _ = save_good(path)
    header, data = split(path.read_bytes())
    header["__metadata__"][checkpoints._VERSION_KEY] = str(FORMAT_VERSION + 1)
    path.write_bytes(join(header, data))
    with pytest.raises(ValueError, match="newer checkpoint format version 3"):
        load_checkpoint(path, params_like=params, opt_state_like=state)
    legacy = tmp_path / "old.npz"
    save_legacy(legacy, params, state, CONFIG, 1, __nnjax_checkpoint_version__=np.asarray(2))
    with pytest.raises(ValueError, match="version 2"):
        read_header(legacy)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"epoch": -1}, ValueError),
        ({"epoch": 1.0}, TypeError),
        ({"epoch": True}, TypeError),
        ({"config": [1, 2]}, TypeError),
        ({"history": [1.0]}, TypeError),
    ],
)
def test_bad_arguments_are_rejected(tmp_path, kwargs, error):
    path = tmp_path / "ckpt.safetensors"
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
    path = tmp_path / "ckpt.safetensors"
    params, state, _ = save_good(path, epoch=5)
    before = path.read_bytes()
    new_params = make_params([4, 8, 3], seed=9)
    with pytest.raises(TypeError):
        save_checkpoint(path, params=new_params, opt_state=state, config={"f": object()}, epoch=6)
    assert path.read_bytes() == before
    assert leftovers(tmp_path, {"ckpt.safetensors"}) == []
    ckpt = load_checkpoint(path, params_like=params, opt_state_like=state)
    assert ckpt.epoch == 5
    chex.assert_trees_all_equal(ckpt.params, params, strict=True)


def test_crash_midway_keeps_previous_checkpoint_and_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    params, state, _ = save_good(path, epoch=5)
    before = path.read_bytes()
    calls = []

    def crashing_fsync(fd):
        calls.append(fd)
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crashing_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(
            path, params=make_params([4, 8, 3], seed=3), opt_state=state, config={}, epoch=6
        )
    monkeypatch.undo()

    assert calls, "the fake fsync was not used, so this test checks nothing"
    assert path.read_bytes() == before
    assert leftovers(tmp_path, {"ckpt.safetensors"}) == []
    ckpt = load_checkpoint(path, params_like=params, opt_state_like=state)
    assert (ckpt.epoch, ckpt.config) == (5, CONFIG)
    chex.assert_trees_all_equal(ckpt.params, params, strict=True)


def test_crash_on_first_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"

    def crashing_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.os, "replace", crashing_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, params=make_params([2, 2]), opt_state=(), config={}, epoch=0)
    monkeypatch.undo()
    assert leftovers(tmp_path, set()) == []


def test_format_1_npz_checkpoints_still_load_whatever_their_name(tmp_path):
    params, state, _ = trained_state()
    params = [*params, {"bf16": jnp.arange(3, dtype=jnp.bfloat16) / 3}]
    state = OPT.init(params)
    for name in ("checkpoint.npz", "checkpoint.safetensors"):
        save_legacy(tmp_path / name, params, state, CONFIG, 4)
        assert read_header(tmp_path / name) == (CONFIG, 4, {})
        ckpt = load_checkpoint(tmp_path / name, params_like=params, opt_state_like=state)
        chex.assert_trees_all_equal(ckpt.params, params, strict=True)
        chex.assert_trees_all_equal(ckpt.opt_state, state, strict=True)
        assert (ckpt.config, ckpt.epoch, ckpt.history) == (CONFIG, 4, {})
    save_good(tmp_path / "new.npz", epoch=2)  # a safetensors file under an .npz name
    assert read_metadata(tmp_path / "new.npz") == (CONFIG, 2)


@pytest.mark.parametrize(
    ("leaf", "code", "dtype"),
    [("params[0]['W']", "I32", "float32"), ("params[1]['b']", "F16", "bfloat16")],
)
def test_dtype_table_disagreeing_with_arrays_is_refused(tmp_path, leaf, code, dtype):
    path = tmp_path / "ckpt.safetensors"
    params = make_params([2, 3, 2])
    params[1]["b"] = params[1]["b"].astype(jnp.bfloat16)
    save_checkpoint(path, params=params, opt_state=(), config={}, epoch=0)
    header, data = split(path.read_bytes())
    assert json.loads(header["__metadata__"][checkpoints._DTYPES_KEY])[leaf] == dtype
    header[leaf]["dtype"] = code  # same item size: only the dtype table tells them apart
    path.write_bytes(join(header, data))
    with pytest.raises(ValueError, match=re.escape(leaf) + r": stored array .* dtype table says"):
        load_checkpoint(path, params_like=params, opt_state_like=())


BAD_METADATA = [
    ("config", "[]"),
    ("config", "null"),
    ("config", "{"),
    ("config", 7),
    ("dtypes", "[]"),
    ("dtypes", '{"params[0][\'W\']": "float99"}'),
    ("dtypes", "{\"params[0]['W']\": 5}"),
    ("epoch", "-1"),
    ("epoch", "[1, 2]"),
    ("epoch", "2.7"),
    ("epoch", "true"),
    ("epoch", 7),
    ("format_version", "[1, 1]"),
    ("format_version", "1"),
    ("history", "[]"),
    ("history", "NaN"),
    ("sha256", None),
]


@pytest.mark.parametrize(("field", "value"), BAD_METADATA)
def test_malformed_metadata_is_a_one_line_error(tmp_path, field, value):
    path = tmp_path / "ckpt.safetensors"
    params, state, _ = save_good(path)
    header, data = split(path.read_bytes())
    header["__metadata__"]["nnjax." + field] = value
    path.write_bytes(join(header, data, resign=field != "sha256"))
    for read in (
        read_header,
        lambda p: load_checkpoint(p, params_like=params, opt_state_like=state),
    ):
        if field in ("dtypes", "sha256") and read is read_header:
            continue  # the header alone does not need them
        with pytest.raises(ValueError, match=re.escape(str(path))) as info:
            read(path)
        assert "\n" not in str(info.value)


def test_fifo_directory_truncated_and_padded_files_are_refused(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    params, state, _ = save_good(path)
    blob = path.read_bytes()
    fifo, folder = tmp_path / "fifo", tmp_path / "folder"
    os.mkfifo(fifo)  # opened for reading, a FIFO without a writer would block
    folder.mkdir()
    for bad in (fifo, folder):
        with pytest.raises(ValueError, match="not a regular file"):
            read_header(bad)
    for bad in (blob[:-1], blob + b"\0", blob[: len(blob) // 2]):
        path.write_bytes(bad)
        with pytest.raises(ValueError, match=re.escape(str(path))):
            load_checkpoint(path, params_like=params, opt_state_like=state)


def test_save_params_and_load_params_round_trip(tmp_path):
    params = [
        {"W": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones((2,))},
        {"W": jnp.full((1, 2), -0.5), "b": jnp.zeros((1,))},
    ]
    path = checkpoints.save_params(tmp_path / "params.safetensors", params)
    chex.assert_trees_all_equal(checkpoints.load_params(path, params), params)
    assert set(safetensors.numpy.load_file(path)) == {
        "params[0]['W']",
        "params[0]['b']",
        "params[1]['W']",
        "params[1]['b']",
    }
    wider = [{"W": jnp.zeros((3, 3)), "b": jnp.zeros((3,))}, params[1]]
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\]"):
        checkpoints.load_params(path, wider)
