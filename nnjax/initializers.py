r"""Weight initialization: Xavier/Glorot and He, exactly as the spec writes them.

Every initializer has the signature ``init(key, n_in, n_out, dtype=jnp.float32)`` and returns a
weight matrix of shape ``(n_out, n_in)``, the spec's (and PyTorch ``Linear``'s) layout, for
``z = x @ W.T + b``. Randomness comes only from the explicit ``key``.

How these differ from ``jax.nn.initializers``: ``glorot_normal`` and ``he_normal`` there draw from a
*truncated* normal rescaled to the same variance and take fans from a ``(n_in, n_out)`` kernel;
the spec's initializers, kept here, draw from an untruncated normal with the standard deviation
below, and return ``(n_out, n_in)``. ``xavier_uniform_init`` is the same distribution as
``jax.nn.initializers.glorot_uniform`` (transposed layout).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from nnjax import _validation

__all__ = [
    "INITIALIZERS",
    "Initializer",
    "he_init",
    "xavier_init",
    "xavier_uniform_init",
]

Initializer = Callable[..., jax.Array]


def _check_fans(n_in: int, n_out: int) -> None:
    _validation.check_layer_sizes((n_in, n_out))


def xavier_init(key: jax.Array, n_in: int, n_out: int, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    r"""Xavier/Glorot normal: :math:`w \sim \mathcal{N}\left(0, \sqrt{\frac{2}{n_{in} + n_{out}}}\right)`.

    The second argument of :math:`\mathcal{N}` is the standard deviation, as in the spec's code.

    Args:
      key: a ``jax.random`` key.
      n_in: fan-in, the number of inputs of the layer.
      n_out: fan-out, the number of neurons of the layer.
      dtype: floating-point dtype of the result.

    Returns:
      Weights of shape ``(n_out, n_in)``.
    """
    _check_fans(n_in, n_out)
    std = math.sqrt(2.0 / (n_in + n_out))
    return std * jax.random.normal(key, (n_out, n_in), dtype)


def xavier_uniform_init(
    key: jax.Array, n_in: int, n_out: int, dtype: jnp.dtype = jnp.float32
) -> jax.Array:
    r"""Glorot uniform: :math:`w \sim \mathcal{U}(-l, l)`, :math:`l = \sqrt{\frac{6}{n_{in} + n_{out}}}`.

    The variance, :math:`l^2/3 = \frac{2}{n_{in} + n_{out}}`, equals ``xavier_init``'s. Shape
    ``(n_out, n_in)``.
    """
    _check_fans(n_in, n_out)
    limit = math.sqrt(6.0 / (n_in + n_out))
    return jax.random.uniform(key, (n_out, n_in), dtype, minval=-limit, maxval=limit)


def he_init(key: jax.Array, n_in: int, n_out: int, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    r"""He normal, for ReLU networks: :math:`w \sim \mathcal{N}\left(0, \sqrt{\frac{2}{n_{in}}}\right)`.

    The standard deviation :math:`\sqrt{2/n_{in}}` keeps the mean square of ReLU activations
    constant from layer to layer (He et al., 2015). Shape ``(n_out, n_in)``.
    """
    _check_fans(n_in, n_out)
    std = math.sqrt(2.0 / n_in)
    return std * jax.random.normal(key, (n_out, n_in), dtype)


INITIALIZERS: dict[str, Initializer] = {
    "xavier": xavier_init,
    "xavier_uniform": xavier_uniform_init,
    "he": he_init,
}
"""Weight initializers by name."""
