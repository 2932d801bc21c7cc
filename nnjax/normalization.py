r"""Batch and layer normalization, each with its backward pass written by hand.

Both normalize with a mean :math:`\mu` and a biased variance :math:`\sigma^2`, then scale and
shift each feature (the last axis) by learned :math:`\gamma` and :math:`\beta`. The variance is
the mean of squared deviations from the mean, as PyTorch computes it: Flax's default,
:math:`E[x^2] - E[x]^2`, is one pass fewer but loses the digits of :math:`\sigma^2` where
:math:`|\mu| \gg \sigma`.

.. math:: \hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}, \qquad y = \gamma \hat x + \beta.

``BatchNorm`` takes :math:`\mu, \sigma^2` per channel over the batch and every spatial axis,
``LayerNorm`` per example over its features. Where the statistics come from ``x``, the gradient
flows through them too: with :math:`g = \gamma \odot \partial L/\partial y` and :math:`N` the
number of values sharing one mean (the sums run over them),

.. math::
    \frac{\partial L}{\partial x} = \frac{1}{N\sqrt{\sigma^2+\epsilon}}
    \left(N\,g - \sum g - \hat x \sum g\,\hat x\right),

which for ``BatchNorm`` (:math:`\gamma` constant over the sums) is
:math:`\frac{\gamma}{N\sqrt{\sigma^2+\epsilon}}\left(N\,\delta - \sum\delta - \hat x \sum
\delta\hat x\right)`, :math:`\delta = \partial L/\partial y`. The :math:`\sum g` term is the path
through :math:`\mu`, the :math:`\hat x \sum g\hat x` term the path through :math:`\sigma^2`; a check
with the cotangent :math:`\delta = \mathbf{1}` cannot see the second missing, since there
:math:`\sum g\,\hat x = \gamma \sum \hat x = 0`. Also
:math:`\partial L/\partial\gamma = \sum \delta \odot \hat x` and :math:`\partial L/\partial\beta =
\sum \delta`, summed over every axis but the last.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from nnjax import _validation

Params = dict[str, Any]

__all__ = ["BatchNorm", "LayerNorm"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _Cache:
    r"""What the backward needs from the forward.

    Attributes:
      xhat: :math:`\hat x`, shaped like ``x``.
      inv_std: :math:`1/\sqrt{\sigma^2+\epsilon}`, broadcastable to ``x`` (size 1 on ``axes``).
      axes: the axes the statistics were taken over; empty where they are constants (running
        statistics), so no gradient flows through them.
    """

    xhat: jax.Array
    inv_std: jax.Array
    axes: tuple[int, ...] = dataclasses.field(metadata={"static": True})


def _per_feature(v: jax.Array, ndim: int) -> jax.Array:
    """A ``(C,)`` vector as ``(1, ..., 1, C)``, to scale a rank-``ndim`` array explicitly."""
    return v.reshape((1,) * (ndim - 1) + (-1,))


def _features_init(input_shape: tuple[int, ...], dtype: Any) -> tuple[int, Params]:
    """The number of features ``C`` (the last axis) and ``{"gamma": ones, "beta": zeros}``."""
    _validation.check_positive_int("len(input_shape)", len(input_shape))
    c = _validation.check_positive_int("input_shape[-1]", input_shape[-1])
    return c, {"gamma": jnp.ones((c,), dtype), "beta": jnp.zeros((c,), dtype)}


def _moments(x: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """The mean and the biased variance of ``x`` over ``axes``, dimensions kept."""
    mean = jnp.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    return mean, jnp.mean(centered * centered, axis=axes, keepdims=True)


def _normalize(
    params: Params,
    x: jax.Array,
    mean: jax.Array,
    var: jax.Array,
    epsilon: float,
    axes: tuple[int, ...],
) -> tuple[jax.Array, _Cache]:
    r""":math:`y = \gamma \hat x + \beta` and the cache, from statistics broadcastable to ``x``."""
    _validation.check_normal_in("epsilon", epsilon, x.dtype)
    inv_std = lax.rsqrt(var + jnp.asarray(epsilon, x.dtype))
    xhat = (x - mean) * inv_std
    y = _per_feature(params["gamma"], x.ndim) * xhat + _per_feature(params["beta"], x.ndim)
    return y, _Cache(xhat, inv_std, axes)


def _backward(params: Params, dout: jax.Array, cache: _Cache) -> tuple[jax.Array, Params]:
    r"""``(dx, {"gamma": dgamma, "beta": dbeta})`` from :math:`\delta = \partial L/\partial y`.

    The module's formula, through the statistics on ``cache.axes`` (none for running ones).
    """
    xhat, axes = cache.xhat, cache.axes
    param_axes = tuple(range(dout.ndim - 1))
    dparams = {
        "gamma": jnp.sum(dout * xhat, axis=param_axes),
        "beta": jnp.sum(dout, axis=param_axes),
    }
    g = dout * _per_feature(params["gamma"], dout.ndim)
    if axes:
        g_mean = jnp.mean(g, axis=axes, keepdims=True)
        g = g - g_mean - xhat * jnp.mean(g * xhat, axis=axes, keepdims=True)
    return g * cache.inv_std, dparams


@dataclasses.dataclass(frozen=True)
class BatchNorm:
    r"""Batch normalization: each channel (the last axis) over the batch and every spatial axis.

    Inputs are ``(batch, C)``, ``(batch, W, C)`` or ``(batch, H, W, C)``; params are
    ``{"gamma": (C,), "beta": (C,)}`` (ones and zeros), state ``{"mean": (C,), "var": (C,)}``
    (zeros and ones).

    Training (``train=True``): :math:`\mu` and the biased :math:`\sigma^2` of the batch, over its
    :math:`N` = batch :math:`\times` spatial positions per channel, normalize
    (:math:`\hat x = (x-\mu)/\sqrt{\sigma^2+\epsilon}`, :math:`y = \gamma \hat x + \beta`), with the
    gradient through them; the state returned is the running average
    ``momentum * old + (1 - momentum) * batch`` of both, outside any gradient
    (``lax.stop_gradient``). The running variance keeps the biased variance that normalized the
    batch, as Flax and Keras do; PyTorch keeps the unbiased one, :math:`N/(N-1)` times larger.
    The batch mean is over the whole batch axis, so under a sharded ``jax.jit`` it is global.

    Evaluation (``train=False``): the running statistics normalize, the state is returned
    unchanged and the backward is the affine chain
    :math:`\partial L/\partial x = \gamma\,\delta/\sqrt{\sigma^2+\epsilon}`.

    Attributes:
      momentum: the weight of the old running statistics, in ``[0, 1)``. Flax's ``momentum`` means
        the same (its default 0.99 averages over more batches); PyTorch's ``momentum=0.1`` is the
        weight of the new batch, the same average as 0.9 here.
      epsilon: :math:`\epsilon > 0`, added to the variance (1e-5, as PyTorch and Flax).
    """

    momentum: float = 0.9
    epsilon: float = 1e-5

    def __post_init__(self) -> None:
        _validation.check_in_range("momentum", self.momentum, low=0.0, high=1.0)
        _validation.check_positive("epsilon", self.epsilon)

    def init(self, key, input_shape, dtype=jnp.float32):
        c, params = _features_init(input_shape, dtype)
        state = {"mean": jnp.zeros((c,), dtype), "var": jnp.ones((c,), dtype)}
        return params, state, tuple(input_shape)

    def forward(self, params, state, x, *, key=None, train=False):
        ndim = jnp.ndim(x)
        axes = tuple(range(ndim - 1)) if train else ()
        x = _validation.check_features_last("BatchNorm", x, params["gamma"].shape[0], axes)
        if not train:
            mean, var = (_per_feature(state[k], ndim) for k in ("mean", "var"))
            y, cache = _normalize(params, x, mean, var, self.epsilon, ())
            return y, cache, state
        mean, var = _moments(x, axes)
        y, cache = _normalize(params, x, mean, var, self.epsilon, axes)
        batch = {"mean": mean.reshape(-1), "var": var.reshape(-1)}
        return y, cache, lax.stop_gradient(jax.tree.map(self._running_average, state, batch))

    def _running_average(self, old: jax.Array, batch: jax.Array) -> jax.Array:
        momentum = jnp.asarray(self.momentum, old.dtype)
        return momentum * old + (1 - momentum) * batch

    def backward(self, params, dout, cache):
        return _backward(params, dout, cache)


@dataclasses.dataclass(frozen=True)
class LayerNorm:
    r"""Layer normalization: each example over its features (the last axis).

    Inputs are ``(batch, ..., C)``; params ``{"gamma": (C,), "beta": (C,)}`` (ones and zeros), no
    state. :math:`\mu` and the biased :math:`\sigma^2` are over the :math:`C` features of each
    position, in training and evaluation alike, with the gradient through them. This is
    PyTorch's ``LayerNorm(C)`` and Flax's ``LayerNorm()`` (whose default epsilon is 1e-6).

    Attributes:
      epsilon: :math:`\epsilon > 0`, added to the variance (1e-5, as PyTorch).
    """

    epsilon: float = 1e-5

    def __post_init__(self) -> None:
        _validation.check_positive("epsilon", self.epsilon)

    def init(self, key, input_shape, dtype=jnp.float32):
        c, params = _features_init(input_shape, dtype)
        if c < 2:
            raise ValueError(f"LayerNorm needs 2 or more features to normalize over, got {c}")
        return params, {}, tuple(input_shape)

    def forward(self, params, state, x, *, key=None, train=False):
        axes = (jnp.ndim(x) - 1,)
        x = _validation.check_features_last("LayerNorm", x, params["gamma"].shape[0], axes)
        mean, var = _moments(x, axes)
        y, cache = _normalize(params, x, mean, var, self.epsilon, axes)
        return y, cache, state

    def backward(self, params, dout, cache):
        return _backward(params, dout, cache)
