"""Tests of nnjax.convolution: forward against NumPy loops, backward against autodiff, init."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnjax.convolution import Conv1D, Conv2D
from nnjax.layercheck import check_layer

KEY = jax.random.key(0)


def numpy_pads(padding, spatial_shape, window, stride):
    """Each axis's ``(low, high)`` padding, ``"SAME"`` from its definition (extra at the end)."""
    if padding == "VALID":
        return [(0, 0)] * len(window)
    if padding == "SAME":
        totals = [
            max((-(-n // s) - 1) * s + k - n, 0)
            for n, k, s in zip(spatial_shape, window, stride, strict=True)
        ]
        return [(total // 2, total - total // 2) for total in totals]
    return padding


def numpy_conv(x, W, b, stride, pads):
    """The convolution from its formula, a loop over the output positions."""
    x = np.pad(x, [(0, 0), *pads, (0, 0)])
    window = W.shape[2:]
    out_shape = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:-1], window, stride, strict=True)]
    y = np.empty((x.shape[0], *out_shape, W.shape[0]))
    contracted = (range(1, x.ndim), (*range(2, W.ndim), 1))  # the window and in_channels
    for t in np.ndindex(*out_shape):
        rows = [slice(i * s, i * s + k) for i, s, k in zip(t, stride, window, strict=True)]
        y[(slice(None), *t)] = np.tensordot(x[(slice(None), *rows)], W, axes=contracted)
    return y + b


# 1-D and 2-D; strides 1 and 2, and one that does not divide the input (VALID leaving the last row
# to no window, SAME padding one more zero at the end); SAME, VALID, explicit pairs padding at least
# a window's width and an int.
CASES = [
    (Conv1D(3, 4, stride=2, padding="SAME"), (7, 2), (4, 3)),
    (Conv2D(3, (2, 3), stride=(2, 1)), (5, 6, 2), (2, 4, 3)),
    (Conv2D(3, (2, 3), stride=(1, 2), padding=((2, 0), (3, 1))), (5, 6, 2), (6, 4, 3)),
    (Conv2D(3, (2, 3), stride=2, padding=1), (5, 6, 2), (3, 3, 3)),
]


@pytest.mark.parametrize(("layer", "input_shape", "output_shape"), CASES)
def test_forward_matches_a_numpy_loop_over_the_output_positions(layer, input_shape, output_shape):
    *spatial_shape, in_channels = input_shape
    x = np.random.default_rng(0).normal(size=(2, *input_shape))
    pads = numpy_pads(layer.padding, spatial_shape, layer.kernel_size, layer.stride)
    with jax.enable_x64(True):
        params, state, out_shape = layer.init(KEY, input_shape, jnp.float64)
        params["b"] = jnp.arange(1.0, layer.features + 1.0)
        y, _, new_state = jax.jit(layer.forward)(params, state, x)
    W, b = np.asarray(params["W"]), np.asarray(params["b"])
    assert W.shape == (3, in_channels, *layer.kernel_size) and W.dtype == np.float64
    assert out_shape == output_shape and y.shape == (2, *output_shape)
    np.testing.assert_allclose(np.asarray(y), numpy_conv(x, W, b, layer.stride, pads), rtol=1e-12)
    assert state == new_state == {}


def check(layer, input_shape):
    """``check_layer`` on a batch of 2, with finite differences on at most 40 coordinates a leaf.

    Reverse and forward mode still cover every coordinate; finite differences evaluate the
    convolution once per coordinate, in one vmapped program whose run time grows with their number.
    """
    return check_layer(layer, input_shape, key=KEY, batch=2, max_coordinates=40)


@pytest.mark.parametrize(("layer", "input_shape", "_"), CASES[:3])
def test_backward_matches_autodiff_and_finite_differences(layer, input_shape, _):
    report = check(layer, input_shape)
    assert report.passed, str(report)
    assert report.reverse_error <= 1e-10


@dataclasses.dataclass(frozen=True)
class UnflippedConv2D(Conv2D):
    """A wrong backward: ``dx`` correlates with the kernel as it is, not flipped."""

    def backward(self, params, dout, cache):
        flipped = {**params, "W": jnp.flip(params["W"], axis=(2, 3))}
        return super().backward(flipped, dout, cache)


def test_the_check_catches_a_backward_that_does_not_flip_the_kernel():
    layer, input_shape = CASES[1][:2]
    report = check(UnflippedConv2D(**dataclasses.asdict(layer)), input_shape)
    assert not report.passed
    assert [leaf.path for leaf in report.leaves if not leaf.passed] == ["['x']"]


@pytest.mark.parametrize(
    ("weight_init", "std"), [("he", math.sqrt(2 / 144)), ("xavier", math.sqrt(2 / 720))]
)
def test_init_draws_the_kernel_with_the_fans_of_the_receptive_field(weight_init, std):
    # fan_in = 16 channels * 3 * 3 = 144, fan_out = 64 * 3 * 3 = 576; 9216 draws: std within 5 %.
    layer = Conv2D(64, 3, weight_init=weight_init)
    params, state, out_shape = layer.init(KEY, (8, 8, 16))
    assert params["W"].shape == (64, 16, 3, 3) and params["W"].dtype == jnp.float32
    W = np.asarray(params["W"])
    assert abs(W.std() / std - 1) < 0.05 and abs(W.mean()) < 0.05 * std
    np.testing.assert_array_equal(params["b"], np.zeros(64, np.float32))
    assert state == {} and out_shape == (6, 6, 64)


def test_forward_and_backward_run_under_jit_in_float32():
    layer, input_shape = CASES[1][:2]
    params, state, _ = layer.init(KEY, input_shape)
    x = np.random.default_rng(0).normal(size=(2, *input_shape)).astype(np.float32)

    @jax.jit
    def step(params, x):
        y, cache, _ = layer.forward(params, state, x)
        return y, layer.backward(params, y, cache)

    y, (dx, dparams) = step(params, x)
    assert y.dtype == dx.dtype == dparams["W"].dtype == dparams["b"].dtype == jnp.float32
    assert dx.shape == x.shape and dparams["W"].shape == params["W"].shape
    W, b = (np.asarray(params[name], np.float64) for name in ("W", "b"))
    expected = numpy_conv(x.astype(np.float64), W, b, layer.stride, [(0, 0), (0, 0)])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_options_become_tuples_and_equal_layers_compare_equal():
    layer = Conv2D(3, [2, 3], stride=2, padding=[(1, 0), [0, 2]])
    assert layer.kernel_size == (2, 3) and layer.stride == (2, 2)
    assert layer.padding == ((1, 0), (0, 2))
    assert layer == Conv2D(3, (2, 3), stride=(2, 2), padding=((1, 0), (0, 2)))
    assert hash(layer) == hash(Conv2D(3, (2, 3), stride=(2, 2), padding=((1, 0), (0, 2))))
    assert Conv1D(3, 2, padding=1).padding == ((1, 1),)
    assert Conv1D(3, 2) != Conv2D(3, 2)


@pytest.mark.parametrize(
    "options",
    [
        {"features": 0},
        {"kernel_size": (2, 3, 1)},
        {"kernel_size": 0},
        {"stride": (1, 0)},
        {"padding": "same"},
        {"padding": -1},
        {"padding": ((1, 1),)},
        {"padding": ((1, 1), (1, 2, 3))},
        {"weight_init": "lecun"},
    ],
)
def test_invalid_options_raise(options):
    with pytest.raises(ValueError):
        Conv2D(**{"features": 3, "kernel_size": (2, 3), **options})


def test_inputs_of_the_wrong_rank_or_too_small_for_the_window_raise():
    layer = Conv2D(3, (2, 3))
    with pytest.raises(ValueError, match=r"\(height, width, in_channels\)"):
        layer.init(KEY, (5, 2))
    with pytest.raises(ValueError, match="does not fit"):
        layer.init(KEY, (5, 2, 1))
    with pytest.raises(ValueError, match=r"\(batch, height, width, in_channels\)"):
        layer.forward({}, {}, jnp.zeros((5, 5, 2)))
