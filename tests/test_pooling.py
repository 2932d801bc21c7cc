"""Tests of nnjax.pooling: forwards against NumPy loops, backwards against autodiff."""

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from nnjax.layercheck import check_layer
from nnjax.pooling import AvgPool1D, AvgPool2D, MaxPool1D, MaxPool2D

# Every case has 80 input numbers (batch 2), so check_layer's probes compile once.
SHAPE_1D = (10, 4)
SHAPE_2D = (5, 4, 2)

CASES = [
    # Overlapping windows (stride < window), the last input left over.
    (MaxPool1D(3, stride=2), SHAPE_1D),
    # Non-overlapping windows, the last row left over.
    (MaxPool2D(2), SHAPE_2D),
    (MaxPool2D((3, 2), stride=(2, 1), padding="SAME"), SHAPE_2D),
    (AvgPool1D(3, stride=2, padding="SAME"), SHAPE_1D),
    # Non-overlapping windows, the last row and column left over.
    (AvgPool2D((2, 3)), SHAPE_2D),
    (AvgPool2D(3, stride=2, padding="SAME", count_include_pad=False), SHAPE_2D),
]


def numpy_pool(layer, x):
    """The pooling formula with loops: padded cells are NaN, left out of max and of the count."""
    x = np.asarray(x, np.float64)
    spatial = x.shape[1:-1]
    if layer.padding == "SAME":
        outs = [-(-n // s) for n, s in zip(spatial, layer.stride, strict=True)]
        totals = [
            max((m - 1) * s + w - n, 0)
            for m, s, w, n in zip(outs, layer.stride, layer.window, spatial, strict=True)
        ]
        pads = [(t // 2, t - t // 2) for t in totals]
    else:
        pads = [(0, 0)] * len(spatial)
        outs = [
            (n - w) // s + 1 for n, w, s in zip(spatial, layer.window, layer.stride, strict=True)
        ]
    padded = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=np.nan)
    out = np.empty((x.shape[0], *outs, x.shape[-1]))
    for i in itertools.product(*map(range, outs)):
        box = tuple(
            slice(s * j, s * j + w) for j, s, w in zip(i, layer.stride, layer.window, strict=True)
        )
        cells = padded[(slice(None), *box)].reshape(x.shape[0], -1, x.shape[-1])
        if isinstance(layer, MaxPool1D | MaxPool2D):
            value = np.nanmax(cells, axis=1)
        elif layer.count_include_pad:
            value = np.nansum(cells, axis=1) / math.prod(layer.window)
        else:
            value = np.nanmean(cells, axis=1)
        out[(slice(None), *i)] = value
    return out


def test_forwards_match_numpy_loops_under_jit_in_float32():
    inputs = [jax.random.normal(jax.random.key(1), (2, *shape), jnp.float32) for _, shape in CASES]

    @jax.jit
    def forwards_and_backwards(inputs):
        results = []
        for (layer, _), x in zip(CASES, inputs, strict=True):
            out, cache, _ = layer.forward({}, {}, x)
            results.append((out, layer.backward({}, jnp.ones_like(out), cache)[0]))
        return results

    results = forwards_and_backwards(inputs)
    for (layer, shape), x, (out, dx) in zip(CASES, inputs, results, strict=True):
        _, _, out_shape = layer.init(jax.random.key(0), shape)
        assert out.shape == (2, *out_shape) and out.dtype == jnp.float32, layer
        assert dx.shape == x.shape and dx.dtype == jnp.float32, layer
        np.testing.assert_allclose(
            out, numpy_pool(layer, x), rtol=1e-6, atol=1e-6, err_msg=str(layer)
        )


@pytest.mark.parametrize(("layer", "shape"), CASES)
def test_backward_matches_autodiff_and_finite_differences(layer, shape):
    report = check_layer(layer, shape, batch=2)
    assert report.passed, str(report)
    assert report.reverse_error <= 1e-10


def reduce_window_max(x, window, stride):
    """The max-pooling forward as ``lax.reduce_window``, whose ``jax.grad`` fixes the ties."""
    dims, strides = (1, *window, 1), (1, *stride, 1)
    return lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, "VALID")


# Two examples with ties: all equal, and 3 at (0, 1) and (1, 0) of the first window, where
# row-major order picks (0, 1) and column-major order would pick (1, 0).
TIED = np.array(
    [
        np.full((3, 4), 2.0),
        [[1.0, 3.0, 3.0, 0.0], [3.0, 3.0, 1.0, 3.0], [2.0, 3.0, 3.0, 3.0]],
    ]
)[..., None]


def test_max_pool_routes_ties_to_the_first_maximum_as_jax_grad_does():
    layer = MaxPool2D(2, stride=1)

    @jax.jit
    def manual_and_autodiff(x):
        out, cache, _ = layer.forward({}, {}, x)
        dout = jnp.arange(1.0, out.size + 1.0, dtype=x.dtype).reshape(out.shape)
        _, vjp = jax.vjp(lambda x: reduce_window_max(x, (2, 2), (1, 1)), x)
        return dout, layer.backward({}, dout, cache), vjp(dout)[0]

    dout, (dx, dparams), expected = manual_and_autodiff(jnp.asarray(TIED, jnp.float32))
    np.testing.assert_array_equal(dx, expected)
    assert dparams == {}
    np.testing.assert_array_equal(dx[0, :2, :3], dout[0])
    assert dx[1, 0, 1, 0] == dout[1, 0, 0, 0] + dout[1, 0, 1, 0]


def scatter_max_backward(x, dout, window, stride, *, accumulate):
    """A 1-D max-pool backward by index arithmetic; ``accumulate=False`` overwrites overlaps."""
    cells = stride * np.arange(dout.shape[1])[:, None] + np.arange(window)
    patches = x[:, cells, :]
    first = jax.nn.one_hot(jnp.argmax(patches, axis=2), window, axis=2, dtype=x.dtype)
    routed = first * dout[:, :, None, :]
    target = jnp.zeros_like(x).at[:, cells, :]
    return target.add(routed) if accumulate else target.set(routed)


@dataclasses.dataclass(frozen=True)
class OverwritingMaxPool1D(MaxPool1D):
    """A planted bug: overlapping windows overwrite each other's gradient instead of adding up."""

    def backward(self, params, dout, cache):
        return scatter_max_backward(cache, dout, 3, 2, accumulate=False), {}


def test_checker_catches_a_max_pool_backward_that_overwrites_overlaps():
    layer = MaxPool1D(3, stride=2)
    x = jax.random.normal(jax.random.key(2), (2, *SHAPE_1D), jnp.float32)

    @jax.jit
    def library_and_scatter(x):
        out, cache, _ = layer.forward({}, {}, x)
        dout = jnp.arange(1.0, out.size + 1.0, dtype=x.dtype).reshape(out.shape)
        expected = scatter_max_backward(x, dout, 3, 2, accumulate=True)
        return layer.backward({}, dout, cache)[0], expected

    np.testing.assert_array_equal(*library_and_scatter(x))
    report = check_layer(OverwritingMaxPool1D(3, stride=2), SHAPE_1D, batch=2)
    assert not report.passed
    assert report.reverse_error > 1e-3


def test_equal_options_make_equal_hashable_layers():
    assert MaxPool2D(2) == MaxPool2D((2, 2), stride=2)
    assert hash(AvgPool1D([3], 1)) == hash(AvgPool1D(3, stride=(1,)))
    assert MaxPool2D(2) != AvgPool2D(2)
    assert AvgPool2D(2, padding="SAME") != AvgPool2D(2, padding="SAME", count_include_pad=False)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: MaxPool2D((2, 2, 2)), "window must be an integer or 2 integers"),
        (lambda: MaxPool1D(0), "window must be a positive integer"),
        (lambda: AvgPool1D(2.0), "window must be a positive integer"),
        (lambda: AvgPool2D(2, stride=(1, 0)), "stride must be a positive integer"),
        (lambda: MaxPool1D(2, padding="same"), "unknown padding 'same'"),
        (lambda: AvgPool1D(2, count_include_pad=1), "count_include_pad must be a bool"),
    ],
)
def test_invalid_options_are_named_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_inputs_of_the_wrong_shape_are_named_errors():
    with pytest.raises(ValueError, match=r"MaxPool2D takes inputs of shape \(height, width"):
        MaxPool2D(2).init(jax.random.key(0), (4, 4))
    with pytest.raises(ValueError, match=r"window \(3,\) is larger than its input"):
        AvgPool1D(3).init(jax.random.key(0), (2, 1))
    with pytest.raises(ValueError, match=r"AvgPool1D takes x of shape \(batch, width, channels\)"):
        AvgPool1D(2).forward({}, {}, jnp.zeros((2, 4)))
    assert MaxPool1D(3, padding="SAME").init(jax.random.key(0), (2, 1))[2] == (1, 1)
