"""Damaged and crafted checkpoints: every variant of a real checkpoint (truncated, bit-flipped, with
a replaced header, ill-typed metadata, tensors declaring huge shapes or byte ranges, crafted
``.npz`` members) loads as the original or raises a one-line ValueError naming the file, and
loading it never holds more than the file's size plus 1 MiB of memory."""

from __future__ import annotations

import io
import json
import re
import tracemalloc
import zipfile
from typing import Any

import jax
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_checkpoints import join, make_params, save_legacy, split

from nnjax import checkpoints
from nnjax.checkpoints import load_checkpoint, save_checkpoint

PARAMS = [
    {"W": np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), "b": np.ones(4, np.float32)},
    {"W": np.linspace(0, 2, 8, dtype=np.float32).reshape(2, 4), "b": np.zeros(2, np.float32)},
]
STATE = optax.ScaleByAdamState(
    count=np.asarray(3, np.int32),
    mu=jax.tree.map(lambda x: x / 2, PARAMS),
    nu=jax.tree.map(lambda x: x * x, PARAMS),
)
CONFIG = {"sizes": [3, 4, 2], "lr": 0.001, "activation": "relu"}
HISTORY = {"loss": [0.75, float("nan"), float("inf")], "accuracy": [0.25, 0.5, 0.5]}
EPOCH = 3


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Any]:
    """The bytes of the checkpoint in both formats, and a path to write variants to."""
    folder = tmp_path_factory.mktemp("fuzz")
    new, old = folder / "new.safetensors", folder / "old.npz"
    save_checkpoint(
        new, params=PARAMS, opt_state=STATE, config=CONFIG, epoch=EPOCH, history=HISTORY
    )
    save_legacy(old, PARAMS, STATE, CONFIG, EPOCH)
    for path in (new, old):  # the first load imports and initializes more than later ones
        load_checkpoint(path, params_like=PARAMS, opt_state_like=STATE)
    return {"safetensors": new.read_bytes(), "npz": old.read_bytes(), "folder": folder}


def load(originals, blob: bytes, *, kind: str = "safetensors") -> bool:
    """Loads ``blob``; checks it equals the original ``kind`` or raised a one-line ValueError, in
    at most ``len(blob)`` + 1 MiB. Returns whether it loaded."""
    path = originals["folder"] / "variant"
    path.write_bytes(blob)
    tracemalloc.start()
    try:
        ckpt = load_checkpoint(path, params_like=PARAMS, opt_state_like=STATE)
    except ValueError as err:
        ckpt = err
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= len(blob) + 2**20
    if isinstance(ckpt, ValueError):
        assert str(ckpt).startswith(str(path)) and "\n" not in str(ckpt)
        return False
    history = HISTORY if kind == "safetensors" else {}
    assert (ckpt.config, ckpt.epoch, json.dumps(ckpt.history)) == (
        CONFIG,
        EPOCH,
        json.dumps(history),
    )
    got, want = jax.tree.flatten(ckpt[:2]), jax.tree.flatten((PARAMS, STATE))
    assert got[1] == want[1]
    for a, b in zip(got[0], want[0], strict=True):
        a = np.asarray(a)
        assert (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes())
    return True


def test_the_original_loads(originals):
    assert load(originals, originals["safetensors"])
    assert load(originals, originals["npz"], kind="npz")


@settings(max_examples=15, deadline=None, database=None)
@given(data=st.data(), kind=st.sampled_from(["safetensors", "npz"]))
def test_truncated_files_are_refused(originals, data, kind):
    blob = originals[kind]
    assert not load(originals, blob[: data.draw(st.integers(0, len(blob) - 1))], kind=kind)


@settings(max_examples=30, deadline=None, database=None)
@given(data=st.data(), kind=st.sampled_from(["safetensors", "npz"]))
def test_bit_flips_load_the_original_or_are_refused(originals, data, kind):
    blob = bytearray(originals[kind])
    flips = st.tuples(st.integers(0, len(blob) - 1), st.integers(0, 7))
    for index, bit in data.draw(st.lists(flips, min_size=1, max_size=3)):
        blob[index] ^= 1 << bit
    load(originals, bytes(blob), kind=kind)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=10, deadline=None, database=None)
@given(value=JSON)
def test_replaced_headers_are_refused(originals, value):
    _, data = split(originals["safetensors"])
    raw = json.dumps(value).encode()
    assert not load(originals, len(raw).to_bytes(8, "little") + raw + data)


NOT_AN_OBJECT = (JSON.filter(lambda v: not isinstance(v, dict)).map(json.dumps)) | st.text(
    max_size=8
)
NOT_A_NUMBER = st.text(max_size=8).filter(lambda t: not re.fullmatch("[0-9]+", t))
BAD_VALUES = {
    "config": NOT_AN_OBJECT,
    "history": NOT_AN_OBJECT,
    "dtypes": NOT_AN_OBJECT
    | st.dictionaries(st.text(max_size=4), JSON, max_size=2).map(json.dumps),
    "epoch": NOT_A_NUMBER,
    "format_version": NOT_A_NUMBER,
    "sha256": st.text(max_size=64),
}


@settings(max_examples=20, deadline=None, database=None)
@given(data=st.data(), field=st.sampled_from(sorted(BAD_VALUES)))
def test_ill_typed_metadata_is_refused(originals, data, field):
    header, tensors = split(originals["safetensors"])
    value = data.draw(BAD_VALUES[field] | JSON.filter(lambda v: not isinstance(v, str)))
    header["__metadata__"]["nnjax." + field] = value
    assert not load(originals, join(header, tensors, resign=field != "sha256"))


HUGE = st.integers(0, 2**64) | st.sampled_from([2**31, 2**32, 2**40, 2**62, 2**63])


@settings(max_examples=20, deadline=None, database=None)
@given(data=st.data())
def test_crafted_tensor_entries_are_refused(originals, data):
    header, tensors = split(originals["safetensors"])
    entry = header[data.draw(st.sampled_from(sorted(set(header) - {"__metadata__"})))]
    field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
    entry[field] = data.draw(
        {
            "dtype": st.sampled_from(sorted(checkpoints._SAFETENSORS_DTYPES)) | JSON,
            "shape": st.lists(HUGE, max_size=3) | JSON,
            "data_offsets": st.lists(HUGE, min_size=2, max_size=2) | JSON,
        }[field]
    )
    load(originals, join(header, tensors, resign=False))


LEGACY_BAD_MEMBERS = {
    "config []": {"__config__": np.asarray("[]")},
    "config null": {"__config__": np.asarray("null")},
    "config int": {"__config__": np.asarray(3)},
    "dtypes []": {"__dtypes__": np.asarray("[]")},
    "dtypes unknown": {"__dtypes__": np.asarray('{"params[0][\'W\']": "float99"}')},
    "epoch -1": {"__epoch__": np.asarray(-1)},
    "epoch [1, 2]": {"__epoch__": np.asarray([1, 2])},
    "epoch 2.7": {"__epoch__": np.asarray(2.7)},
    "epoch true": {"__epoch__": np.asarray(True)},
    "version [1, 1]": {"__nnjax_checkpoint_version__": np.asarray([1, 1])},
    "object array": {"params[0]['b']": np.asarray([{"evil": 1}], dtype=object)},
    "huge shape": {"params[0]['b']": np.lib.format.header_data_from_array_1_0},
    "not npy": {"params[0]['b']": b"PK not an array"},
    "compressed": {"params[0]['W']": zipfile.ZIP_DEFLATED},
}


@pytest.mark.parametrize("case", LEGACY_BAD_MEMBERS)
def test_malformed_format_1_checkpoint_is_a_one_line_error(tmp_path, case):
    path = tmp_path / "ckpt.npz"
    params = make_params([3, 2])
    replace = LEGACY_BAD_MEMBERS[case]
    arrays = {k: v for k, v in replace.items() if isinstance(v, np.ndarray)}
    save_legacy(path, params, (), {}, 0, **arrays)
    if arrays != replace:  # rewrite one member by hand
        rewrite_member(path, *next(iter(replace.items())))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=re.escape(str(path))) as info:
            load_checkpoint(path, params_like=params, opt_state_like=())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(info.value)
    assert peak < path.stat().st_size + 2**20


def rewrite_member(path, key: str, how) -> None:
    """Rewrites member ``key`` of an archive: a (2**40,) float32 header, raw bytes, or compressed."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    name = key + ".npy"
    if how is np.lib.format.header_data_from_array_1_0:
        header = {"descr": "<f4", "fortran_order": False, "shape": (2**40,)}
        stream = io.BytesIO()
        np.lib.format.write_array_header_1_0(stream, header)
        members[name] = stream.getvalue() + bytes(64)
    elif isinstance(how, bytes):
        members[name] = how
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            compress = how if member == name and isinstance(how, int) else zipfile.ZIP_STORED
            archive.writestr(member, content, compress_type=compress)
