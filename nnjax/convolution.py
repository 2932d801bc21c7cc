r"""Convolution layers, 1-D and 2-D, with a backward pass written by hand.

One spatial-rank-generic core serves ``Conv1D`` (inputs ``(batch, width, in_channels)``) and
``Conv2D`` (inputs ``(batch, height, width, in_channels)``); the kernel ``W`` is
``(out_channels, in_channels, *window)`` and the bias ``b`` is ``(out_channels,)``. Along each
spatial axis, with window :math:`K`, stride :math:`s`, padding :math:`(p_{lo}, p_{hi})` and
:math:`\tilde x` the input zero-padded by it (a cross-correlation, as in every deep-learning
library):

.. math::
    y_{n,t,o} = b_o + \sum_{k=0}^{K-1} \sum_i W_{o,i,k} \, \tilde x_{n,\,st+k,\,i},
    \qquad t = 0, \dots, T-1, \quad T = \left\lfloor \frac{N + p_{lo} + p_{hi} - K}{s} \right\rfloor + 1

for an input of width :math:`N` (2-D: the same sum over both window axes). The last
:math:`r = N + p_{lo} + p_{hi} - K - (T-1)s` padded rows (``"VALID"`` with a stride that does not
divide) are read by no window. With :math:`\delta = \partial L/\partial y` and :math:`\hat\delta`
it dilated by the stride (:math:`s-1` zeros between entries):

.. math::
    \frac{\partial L}{\partial b_o} = \sum_{n,t} \delta_{n,t,o}, \qquad
    \frac{\partial L}{\partial W_{o,i,k}} = \sum_{n,t} \delta_{n,t,o} \, \tilde x_{n,\,st+k,\,i}, \qquad
    \frac{\partial L}{\partial x_{n,j,i}} = \sum_{m,o} \hat\delta_{n,\,j+p_{lo}-(K-1)+m,\,o} \, W_{o,i,K-1-m}

:math:`\partial L/\partial W` is the correlation of the input, padded by
:math:`(p_{lo}, p_{hi} - r)`, with :math:`\hat\delta` (the batch axis contracted);
:math:`\partial L/\partial x` is the correlation of :math:`\hat\delta`, padded by
:math:`(K-1-p_{lo}, K-1-p_{hi}+r)`, with the spatially flipped kernel, in and out channels swapped
(a negative padding crops). Both are ``lax.conv_general_dilated`` calls.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax import lax

from nnjax import _validation
from nnjax.layers import Params, Shape

__all__ = ["Conv1D", "Conv2D", "conv_backward", "conv_forward"]

Pads = tuple[tuple[int, int], ...]

# Standard deviation of the initial kernel from its fans (see nnjax.initializers).
_WEIGHT_STD = {
    "he": lambda fan_in, fan_out: math.sqrt(2.0 / fan_in),
    "xavier": lambda fan_in, fan_out: math.sqrt(2.0 / (fan_in + fan_out)),
}


def _spatial(rank: int) -> str:
    """The letters of ``rank`` spatial axes in ``lax`` dimension numbers: ``W``, ``HW``, ``DHW``."""
    return "DHW"[3 - rank :]


def _check_padding(padding: Any, rank: int) -> str | Pads:
    """``padding`` as ``"VALID"``, ``"SAME"`` or ``rank`` ``(low, high)`` pairs of ints >= 0."""
    if isinstance(padding, str):
        _validation.check_choice("padding", padding, ("VALID", "SAME"))
        return padding
    if not isinstance(padding, tuple | list):
        p = _validation.check_int("padding", padding, 0)
        return ((p, p),) * rank
    pairs = tuple(tuple(pair) if isinstance(pair, tuple | list) else () for pair in padding)
    if len(pairs) != rank or any(len(pair) != 2 for pair in pairs):
        raise ValueError(
            f"padding must be 'VALID', 'SAME', an integer or {rank} (low, high) pairs, "
            f"got {padding!r}"
        )
    return tuple(
        (_validation.check_int("padding", lo, 0), _validation.check_int("padding", hi, 0))
        for lo, hi in pairs
    )


def _output_shape(spatial_shape: Shape, window: Shape, stride: Shape, pads: Pads) -> Shape:
    """:math:`T` of each spatial axis, or a ValueError where the window does not fit."""
    out = tuple(
        (n + lo + hi - k) // s + 1
        for n, k, s, (lo, hi) in zip(spatial_shape, window, stride, pads, strict=True)
    )
    if min(out) < 1:
        raise ValueError(
            f"the window {window} does not fit the padded input {spatial_shape} (padding {pads})"
        )
    return out


def _numbers(rank: int) -> tuple[str, str, str]:
    """Dimension numbers of a channels-last input and a ``(*window, in, out)`` kernel."""
    spatial = _spatial(rank)
    return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"


def conv_forward(params: Params, x: jax.Array, stride: Shape, pads: Pads) -> jax.Array:
    r""":math:`y = W \star \tilde x + b` (module docstring), for any number of spatial axes.

    Args:
      params: ``{"W": (out_channels, in_channels, *window), "b": (out_channels,)}``.
      x: the input, ``(batch, *spatial, in_channels)``.
      stride: the stride of each spatial axis.
      pads: the ``(low, high)`` zero padding of each spatial axis.

    Returns:
      :math:`y`, ``(batch, *outputs, out_channels)``.
    """
    W = params["W"]
    # The kernel as (*window, in, out): XLA:CPU's fast convolution takes this layout, and it
    # does not transpose an (out, in, *window) kernel itself inside a compiled loop.
    kernel = jnp.transpose(W, (*range(2, W.ndim), 1, 0))
    y = lax.conv_general_dilated(x, kernel, stride, pads, dimension_numbers=_numbers(x.ndim - 2))
    return y + params["b"].reshape((1,) * (y.ndim - 1) + (-1,))


def conv_backward(
    params: Params, dout: jax.Array, x: jax.Array, stride: Shape, pads: Pads
) -> tuple[jax.Array, Params]:
    r"""The gradients of ``conv_forward`` from :math:`\delta = \partial L/\partial y`.

    :math:`\partial L/\partial b` sums :math:`\delta` over the batch and spatial axes;
    :math:`\partial L/\partial W` correlates :math:`x` padded by :math:`(p_{lo}, p_{hi} - r)`
    with :math:`\delta` dilated by :math:`s`; :math:`\partial L/\partial x` correlates
    :math:`\delta` dilated by :math:`s` and padded by :math:`(K-1-p_{lo}, K-1-p_{hi}+r)` with the
    flipped, transposed kernel :math:`W_{o,i,K-1-k}` (formulas in the module docstring).

    Args:
      params: the forward's ``{"W", "b"}``.
      dout: :math:`\delta`, ``(batch, *outputs, out_channels)``.
      x: the forward's input, ``(batch, *spatial, in_channels)``.
      stride: the stride of each spatial axis.
      pads: the forward's ``(low, high)`` zero padding of each spatial axis.

    Returns:
      ``(dx, {"W": dW, "b": db})``, shaped like ``x`` and ``params``.
    """
    W = params["W"]
    rank = x.ndim - 2
    ones = (1,) * rank
    dx_pads, dW_pads = [], []
    for n, k, s, (lo, hi), t in zip(
        x.shape[1:-1], W.shape[2:], stride, pads, dout.shape[1:-1], strict=True
    ):
        leftover = n + lo + hi - k - (t - 1) * s
        dx_pads.append((k - 1 - lo, k - 1 - hi + leftover))
        dW_pads.append((lo, hi - leftover))
    axes = tuple(range(2, W.ndim))
    flipped = jnp.transpose(lax.rev(W, axes), (*axes, 0, 1))  # (*window, out, in)
    numbers = _numbers(rank)
    dx = lax.conv_general_dilated(
        dout, flipped, ones, dx_pads, lhs_dilation=stride, dimension_numbers=numbers
    )
    # The weight gradient as a convolution over the batch: in_channels play the batch, the
    # batch the input channels, and the result is (in, *window, out).
    last = x.ndim - 1
    xt = jnp.transpose(x, (last, *range(1, last), 0))  # (in, *spatial, batch)
    dt = jnp.transpose(dout, (*range(1, last), 0, last))  # (*outputs, batch, out)
    g = lax.conv_general_dilated(
        xt, dt, ones, dW_pads, rhs_dilation=stride, dimension_numbers=numbers
    )
    dW = jnp.transpose(g, (last, 0, *range(1, last)))
    db = jnp.sum(dout, axis=tuple(range(dout.ndim - 1)))
    return dx, {"W": dW, "b": db}


@dataclasses.dataclass(frozen=True)
class _Conv:
    """The convolution of ``_rank`` spatial axes; ``Conv1D`` and ``Conv2D`` name the rank."""

    features: int
    kernel_size: int | Sequence[int]
    stride: int | Sequence[int] = 1
    padding: Any = "VALID"
    weight_init: str = "he"

    _rank: ClassVar[int]
    _axes: ClassVar[str]  # one example's axes

    def __post_init__(self) -> None:
        # Sequences become tuples: the layer stays hashable, and equal options compare equal.
        set_field = object.__setattr__
        set_field(self, "features", _validation.check_positive_int("features", self.features))
        for name in ("kernel_size", "stride"):
            value = _validation.check_positive_int_tuple(name, getattr(self, name), self._rank)
            set_field(self, name, value)
        set_field(self, "padding", _check_padding(self.padding, self._rank))
        _validation.check_choice("weight_init", self.weight_init, _WEIGHT_STD)

    def _pads(self, spatial_shape: Shape) -> Pads:
        """The ``(low, high)`` zero padding of each spatial axis for inputs of this shape."""
        if isinstance(self.padding, str):
            pads = lax.padtype_to_pads(spatial_shape, self.kernel_size, self.stride, self.padding)
            return tuple(map(tuple, pads))
        return self.padding

    def init(self, key, input_shape, dtype=jnp.float32):
        name = type(self).__name__
        if len(input_shape) != self._rank + 1:
            raise ValueError(f"{name} takes examples of shape ({self._axes}), got {input_shape}")
        *spatial_shape, in_channels = input_shape
        pads = self._pads(tuple(spatial_shape))
        out = _output_shape(spatial_shape, self.kernel_size, self.stride, pads)
        window = math.prod(self.kernel_size)
        std = _WEIGHT_STD[self.weight_init](in_channels * window, self.features * window)
        shape = (self.features, in_channels, *self.kernel_size)
        W = std * jax.random.normal(key, shape, dtype)
        b = jnp.zeros((self.features,), dtype)
        return {"W": W, "b": b}, {}, (*out, self.features)

    def forward(self, params, state, x, *, key=None, train=False):
        x = _validation.check_layer_input(
            type(self).__name__, x, self._rank + 2, f"(batch, {self._axes})"
        )
        pads = self._pads(x.shape[1:-1])
        _output_shape(x.shape[1:-1], self.kernel_size, self.stride, pads)
        return conv_forward(params, x, self.stride, pads), x, state

    def backward(self, params, dout, cache):
        return conv_backward(params, dout, cache, self.stride, self._pads(cache.shape[1:-1]))


@dataclasses.dataclass(frozen=True)
class Conv1D(_Conv):
    """A 1-D convolution: inputs ``(batch, width, in_channels)``, outputs ``(batch, T, features)``.

    Parameters: ``W`` ``(features, in_channels, kernel_width)`` and ``b`` ``(features,)``.
    """

    _rank: ClassVar[int] = 1
    _axes: ClassVar[str] = "width, in_channels"


@dataclasses.dataclass(frozen=True)
class Conv2D(_Conv):
    """A 2-D convolution: inputs ``(batch, height, width, in_channels)``, outputs ``(batch, T_h, T_w,
    features)``.

    Parameters: ``W`` ``(features, in_channels, kernel_height, kernel_width)`` and ``b``
    ``(features,)``.
    """

    _rank: ClassVar[int] = 2
    _axes: ClassVar[str] = "height, width, in_channels"


_ATTRIBUTES = r"""
    The formulas are in the module docstring. The layouts are nnjax's: channels last as in Flax
    and TensorFlow (PyTorch's inputs are ``(batch, channels, *spatial)``), and the kernel
    ``(out_channels, in_channels, *window)`` as PyTorch's, like the dense ``W`` ``(n_out, n_in)``
    (Flax's is ``(*window, in_channels, out_channels)``).

    Attributes:
      features: the number of output channels.
      kernel_size: the window: an int per spatial axis, or one int for every axis.
      stride: the step between windows: an int per spatial axis, or one int for every axis.
      padding: ``"VALID"`` (none), ``"SAME"`` (:math:`\lceil N/s \rceil` outputs per axis; an
        odd total puts the extra zero at the high end, as TensorFlow and Flax do), an int (that
        many zeros on both sides of every axis) or one ``(low, high)`` pair of ints per spatial
        axis, as ``lax.conv_general_dilated`` takes them. The default is PyTorch's, no padding
        (Flax's is ``"SAME"``).
      weight_init: ``"he"``, :math:`\mathcal N(0, \sqrt{2/f_{in}})`, or ``"xavier"``,
        :math:`\mathcal N(0, \sqrt{2/(f_{in} + f_{out})})`: untruncated normals of that standard
        deviation, as ``nnjax.initializers`` draws for dense layers, with the fans of the
        receptive field, :math:`f_{in} = C_{in} \prod K` and :math:`f_{out} = C_{out} \prod K`.
        PyTorch draws a uniform and Flax a truncated LeCun normal by default; He suits the ReLU
        networks nnjax trains. The bias starts at zero.
"""
Conv1D.__doc__ += _ATTRIBUTES
Conv2D.__doc__ += _ATTRIBUTES
