r"""Max- and average-pooling over the spatial axes, per channel, with hand-written backward passes.

Inputs are ``(batch, width, channels)`` (1-D) or ``(batch, height, width, channels)`` (2-D). With
window :math:`w`, stride :math:`s` and :math:`\tilde x` the input padded by :math:`p_{lo}` cells
before each spatial axis (none for ``"VALID"``), the window of output :math:`i` (a multi-index)
holds the offsets :math:`k \in W = \prod_d \{0, \dots, w_d - 1\}` and

.. math::

   out^{max}_{n,i,c} = \max_{k \in W} \tilde x_{n, s i + k, c}, \qquad
   out^{avg}_{n,i,c} = \frac{1}{|W_i|} \sum_{k \in W} \tilde x_{n, s i + k, c}.

Backward: average-pooling spreads :math:`\partial L/\partial out_{n,i,c} / |W_i|` over every cell
of window :math:`i`; max-pooling routes :math:`\partial L/\partial out_{n,i,c}` to the window's
first maximum in row-major window order, :math:`k^* = \min \arg\max_k \tilde x_{n,s i+k,c}`, the
cell ``jax.grad`` of ``lax.reduce_window`` picks on ties. Where windows overlap (:math:`s < w`)
the contributions to a cell add up; cells no window covers (a stride leaving inputs over) get 0.

The forwards are ``lax.reduce_window`` (max, or add then divide). Max-pooling's backward takes
one strided view of :math:`\tilde x` per window offset :math:`k` (``lax.slice``) and the first
maximum over the offsets (``jnp.argmax``); both backwards place each offset's contribution back
with ``lax.pad`` (interior padding :math:`s - 1`, cropping the padding) and add them up.

Padding: ``"VALID"`` uses whole windows inside the input; ``"SAME"`` pads so that the output has
:math:`\lceil n / s \rceil` cells per axis, the extra cell after when the padding is odd (as
``lax.padtype_to_pads``). Max-pooling pads with :math:`-\infty`; average-pooling's
``count_include_pad`` says whether padded cells count in :math:`|W_i|` (as in
``flax.linen.avg_pool``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nnjax import _validation

__all__ = ["PADDINGS", "AvgPool1D", "AvgPool2D", "MaxPool1D", "MaxPool2D"]

PADDINGS = ("VALID", "SAME")


class _Geometry(NamedTuple):
    """A pooling's window, stride, ``(low, high)`` padding and spatial shapes, per spatial axis."""

    window: tuple[int, ...]
    stride: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    spatial: tuple[int, ...]
    out: tuple[int, ...]


def _geometry(layer: _Pool, spatial: Sequence[int]) -> _Geometry:
    """The geometry of ``layer`` on inputs of spatial shape ``spatial``, or a ValueError."""
    spatial = tuple(spatial)
    pads = tuple(lax.padtype_to_pads(spatial, layer.window, layer.stride, layer.padding))
    sizes = tuple(n + lo + hi for n, (lo, hi) in zip(spatial, pads, strict=True))
    if any(size < w for size, w in zip(sizes, layer.window, strict=True)):
        raise ValueError(
            f"{type(layer).__name__}'s window {layer.window} is larger than its input's spatial "
            f"shape {spatial} with padding {layer.padding!r}"
        )
    out = tuple(
        (size - w) // s + 1 for size, w, s in zip(sizes, layer.window, layer.stride, strict=True)
    )
    return _Geometry(layer.window, layer.stride, pads, spatial, out)


def _offsets(g: _Geometry) -> list[tuple[int, ...]]:
    """The window offsets :math:`k` in row-major order."""
    return list(itertools.product(*(range(w) for w in g.window)))


def _reduce_window(x: jax.Array, g: _Geometry, init: float, op: Any) -> jax.Array:
    """``op`` over each window of ``x`` padded with ``init``, by ``lax.reduce_window``."""
    dimensions, strides = (1, *g.window, 1), (1, *g.stride, 1)
    pads = ((0, 0), *g.pads, (0, 0))
    return lax.reduce_window(x, np.array(init, x.dtype), op, dimensions, strides, pads)


def _window_views(x: jax.Array, g: _Geometry, fill: float) -> list[jax.Array]:
    r"""The window cells at each offset, one array shaped like the output per offset :math:`k`.

    :math:`v_k[n, i, c] = \tilde x[n, s i + k, c]`, with :math:`\tilde x` the input ``x`` padded
    with ``fill``; the offsets in row-major order.
    """
    config = ((0, 0, 0), *((lo, hi, 0) for lo, hi in g.pads), (0, 0, 0))
    padded = lax.pad(x, np.array(fill, x.dtype), config)
    strides = (1, *g.stride, 1)
    views = []
    for offset in _offsets(g):
        ends = (k + s * (m - 1) + 1 for k, s, m in zip(offset, g.stride, g.out, strict=True))
        limit = (x.shape[0], *ends, x.shape[-1])
        views.append(lax.slice(padded, (0, *offset, 0), limit, strides))
    return views


def _place_windows(pieces: Sequence[jax.Array], g: _Geometry) -> jax.Array:
    r"""The transpose of ``_window_views``, the padding cropped: contributions added to the input.

    :math:`dx[n, s i + k - p_{lo}, c] \mathrel{+}= u_k[n, i, c]` for every offset :math:`k`.

    Args:
      pieces: one array :math:`u_k` per offset :math:`k` (row-major), each shaped like the output.
      g: the pooling's geometry.

    Returns:
      :math:`dx`, shaped like the input; contributions falling in the padding are dropped.
    """
    zero = np.zeros((), pieces[0].dtype)
    dx = None
    for piece, offset in zip(pieces, _offsets(g), strict=True):
        axes = zip(offset, g.stride, g.out, g.pads, g.spatial, strict=True)
        config = [(0, 0, 0)]
        config += [(k - lo, n + lo - k - s * (m - 1) - 1, s - 1) for k, s, m, (lo, _), n in axes]
        placed = lax.pad(piece, zero, (*config, (0, 0, 0)))
        dx = placed if dx is None else dx + placed
    return dx


def _window_sizes(g: _Geometry, count_include_pad: bool) -> np.ndarray:
    r"""The divisor :math:`|W_i|` of every output cell :math:`i`, an array shaped ``g.out``.

    It is the window's size, or, when padding does not count, its cells inside the input.
    """
    per_axis = []
    for n, w, s, (lo, _), m in zip(g.spatial, g.window, g.stride, g.pads, g.out, strict=True):
        start = s * np.arange(m) - lo
        inside = np.minimum(start + w, n) - np.maximum(start, 0)
        per_axis.append(np.full(m, w) if count_include_pad else inside)
    return functools.reduce(np.multiply.outer, per_axis)


@dataclasses.dataclass(frozen=True)
class _Pool:
    """The fields, validation and interface shared by every pooling layer.

    ``window`` and ``stride`` are stored as tuples with one entry per spatial axis, so that
    ``MaxPool2D(2) == MaxPool2D((2, 2), stride=2)``.
    """

    window: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None = None
    padding: str = "VALID"

    rank: ClassVar[int]
    axes: ClassVar[str]  # the axes of one example, e.g. "width, channels"

    def __post_init__(self) -> None:
        window = _validation.check_positive_int_tuple("window", self.window, self.rank)
        stride = window if self.stride is None else self.stride
        stride = _validation.check_positive_int_tuple("stride", stride, self.rank)
        _validation.check_choice("padding", self.padding, PADDINGS)
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "stride", stride)

    def init(self, key, input_shape, dtype=jnp.float32):
        if len(input_shape) != self.rank + 1:
            raise ValueError(
                f"{type(self).__name__} takes inputs of shape ({self.axes}), "
                f"got {tuple(input_shape)}"
            )
        g = _geometry(self, input_shape[:-1])
        return {}, {}, (*g.out, input_shape[-1])

    def forward(self, params, state, x, *, key=None, train=False):
        x = _validation.check_layer_input(
            type(self).__name__, x, self.rank + 2, f"(batch, {self.axes})"
        )
        return self._pool(x, _geometry(self, x.shape[1:-1])), x, state

    def backward(self, params, dout, cache):
        return self._unpool(dout, cache, _geometry(self, cache.shape[1:-1])), {}


@dataclasses.dataclass(frozen=True)
class _MaxPool(_Pool):
    """Max-pooling for any number of spatial axes."""

    def _pool(self, x: jax.Array, g: _Geometry) -> jax.Array:
        return _reduce_window(x, g, -np.inf, lax.max)

    def _unpool(self, dout: jax.Array, x: jax.Array, g: _Geometry) -> jax.Array:
        views = _window_views(x, g, -np.inf)
        first = jnp.argmax(jnp.stack(views), axis=0)
        zero = jnp.zeros_like(dout)
        return _place_windows([jnp.where(first == k, dout, zero) for k in range(len(views))], g)


@dataclasses.dataclass(frozen=True)
class _AvgPool(_Pool):
    """Average-pooling for any number of spatial axes."""

    count_include_pad: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _validation.check_instance("count_include_pad", self.count_include_pad, bool)

    def _sizes(self, g: _Geometry, dtype: Any) -> jax.Array:
        """:math:`|W_i|` shaped ``(1, *out, 1)`` in ``dtype``."""
        return jnp.asarray(_window_sizes(g, self.count_include_pad)[None, ..., None], dtype)

    def _pool(self, x: jax.Array, g: _Geometry) -> jax.Array:
        return _reduce_window(x, g, 0.0, lax.add) / self._sizes(g, x.dtype)

    def _unpool(self, dout: jax.Array, x: jax.Array, g: _Geometry) -> jax.Array:
        share = dout / self._sizes(g, dout.dtype)
        return _place_windows([share] * math.prod(g.window), g)


@dataclasses.dataclass(frozen=True)
class MaxPool1D(_MaxPool):
    r"""Max-pooling over the width, per channel: ``(batch, width, channels)`` inputs.

    :math:`out_{n,i,c} = \max_{0 \le k < w} \tilde x_{n, s i + k, c}`, of shape ``(batch,
    out_width, channels)``; no parameters. Backward routes :math:`\partial L/\partial out_{n,i,c}`
    to the first maximum of window :math:`i`.

    Attributes:
      window: :math:`w`, an int or a 1-tuple.
      stride: :math:`s`; defaults to the window, so that windows tile the input (as PyTorch's
        ``MaxPool1d``; ``flax.linen.max_pool`` defaults to 1).
      padding: ``"VALID"`` (whole windows only) or ``"SAME"`` (:math:`-\infty` padding,
        :math:`\lceil width / s \rceil` outputs).
    """

    rank: ClassVar[int] = 1
    axes: ClassVar[str] = "width, channels"


@dataclasses.dataclass(frozen=True)
class MaxPool2D(_MaxPool):
    r"""Max-pooling over height and width, per channel: ``(batch, height, width, channels)`` inputs.

    :math:`out_{n,i,j,c} = \max_{k,l} \tilde x_{n, s_0 i + k, s_1 j + l, c}` over
    :math:`0 \le k < w_0`, :math:`0 \le l < w_1`, of shape ``(batch, out_height, out_width,
    channels)``; no parameters. Backward routes :math:`\partial L/\partial out_{n,i,j,c}` to the
    first maximum of window :math:`(i, j)` in row-major order.

    Attributes:
      window: :math:`(w_0, w_1)`, or an int for a square window.
      stride: :math:`(s_0, s_1)` or an int; defaults to the window, so that windows tile the input
        (as PyTorch's ``MaxPool2d``; ``flax.linen.max_pool`` defaults to 1).
      padding: ``"VALID"`` (whole windows only) or ``"SAME"`` (:math:`-\infty` padding,
        :math:`\lceil n / s \rceil` outputs per axis of size :math:`n`).
    """

    rank: ClassVar[int] = 2
    axes: ClassVar[str] = "height, width, channels"


@dataclasses.dataclass(frozen=True)
class AvgPool1D(_AvgPool):
    r"""Average-pooling over the width, per channel: ``(batch, width, channels)`` inputs.

    :math:`out_{n,i,c} = \frac{1}{|W_i|} \sum_{0 \le k < w} \tilde x_{n, s i + k, c}`, of shape
    ``(batch, out_width, channels)``; no parameters. Backward spreads
    :math:`\partial L/\partial out_{n,i,c} / |W_i|` over window :math:`i`.

    Attributes:
      window: :math:`w`, an int or a 1-tuple.
      stride: :math:`s`; defaults to the window (as PyTorch's ``AvgPool1d``;
        ``flax.linen.avg_pool`` defaults to 1).
      padding: ``"VALID"`` (whole windows only) or ``"SAME"`` (zero padding,
        :math:`\lceil width / s \rceil` outputs).
      count_include_pad: with ``"SAME"``, True makes :math:`|W_i| = w` everywhere (padded zeros
        count, the default of ``flax.linen.avg_pool`` and PyTorch), False the window's cells
        inside the input.
    """

    rank: ClassVar[int] = 1
    axes: ClassVar[str] = "width, channels"


@dataclasses.dataclass(frozen=True)
class AvgPool2D(_AvgPool):
    r"""Average-pooling over height and width, per channel: ``(batch, height, width, channels)`` inputs.

    :math:`out_{n,i,j,c} = \frac{1}{|W_{ij}|} \sum_{k,l} \tilde x_{n, s_0 i + k, s_1 j + l, c}` over
    :math:`0 \le k < w_0`, :math:`0 \le l < w_1`, of shape ``(batch, out_height, out_width,
    channels)``; no parameters. Backward spreads :math:`\partial L/\partial out_{n,i,j,c} /
    |W_{ij}|` over window :math:`(i, j)`.

    Attributes:
      window: :math:`(w_0, w_1)`, or an int for a square window.
      stride: :math:`(s_0, s_1)` or an int; defaults to the window (as PyTorch's ``AvgPool2d``;
        ``flax.linen.avg_pool`` defaults to 1).
      padding: ``"VALID"`` (whole windows only) or ``"SAME"`` (zero padding,
        :math:`\lceil n / s \rceil` outputs per axis of size :math:`n`).
      count_include_pad: with ``"SAME"``, True makes :math:`|W_{ij}| = w_0 w_1` everywhere (padded
        zeros count, the default of ``flax.linen.avg_pool`` and PyTorch), False the window's cells
        inside the input.
    """

    rank: ClassVar[int] = 2
    axes: ClassVar[str] = "height, width, channels"
