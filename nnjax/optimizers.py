r"""Optimizers written by hand: SGD, momentum (the spec's damped form and the classical form) and Adam.

Each optimizer is a pure ``init``/``update`` pair over any parameter pytree, returned as an
``optax.GradientTransformation``, with its state in an immutable NamedTuple. ``update`` returns
the *updates* (already multiplied by :math:`-\alpha`), so it composes with ``optax.chain``,
``optax.apply_updates`` and optax schedules::

    opt = nnjax.adam(1e-3)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)

A ``learning_rate`` is a positive float, a traced scalar (for vmapped sweeps) or an optax schedule
``count -> rate``, evaluated at the number of updates made before this one.

The two momentum methods differ by a factor: the spec's damped form averages gradients,
:math:`v_t = \beta v_{t-1} + (1-\beta) g_t`, while the classical (heavy-ball) form accumulates
them, :math:`v_t = \beta v_{t-1} + g_t`, so at a constant gradient its steps grow to
:math:`1/(1-\beta)` times the damped form's (10x at :math:`\beta = 0.9`): the same learning rate
means very different step sizes. ``momentum`` is the spec's; ``classical_momentum`` is PyTorch's
and ``optax.sgd``'s.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from nnjax import _validation

__all__ = [
    "OPTIMIZERS",
    "AdamState",
    "MomentumState",
    "ScalarOrSchedule",
    "SgdState",
    "adam",
    "classical_momentum",
    "momentum",
    "sgd",
]

ScalarOrSchedule = float | jax.Array | optax.Schedule


class SgdState(NamedTuple):
    """State of ``sgd``: the number of updates made."""

    count: jax.Array


class MomentumState(NamedTuple):
    """State of ``momentum`` and ``classical_momentum``: update count and velocity :math:`v`."""

    count: jax.Array
    velocity: Any


class AdamState(NamedTuple):
    """State of ``adam``: update count, first moment :math:`m` and second moment :math:`v`."""

    count: jax.Array
    mu: Any
    nu: Any


def _check_learning_rate(learning_rate: ScalarOrSchedule) -> None:
    if not callable(learning_rate):
        _validation.check_real("learning_rate", learning_rate)
        _validation.check_positive("learning_rate", learning_rate)


def _check_decay(name: str, beta: float) -> None:
    _validation.check_real(name, beta)
    _validation.check_in_range(name, beta, low=0.0, high=1.0)


def _float_dtypes(tree: Any) -> set[jnp.dtype]:
    """The floating-point dtypes of a pytree's leaves, where hyperparameters are rounded to."""
    dtypes = {jnp.result_type(leaf) for leaf in jax.tree.leaves(tree)}
    return {dtype for dtype in dtypes if jnp.issubdtype(dtype, jnp.floating)}


def _at_least_float32(dtype: jnp.dtype) -> jnp.dtype:
    """``promote_types(dtype, float32)`` for a float dtype (without strict promotion's error)."""
    return jnp.dtype(jnp.float32) if jnp.finfo(dtype).bits < 32 else jnp.dtype(dtype)


def _update_moment(
    grads: Any, moments: Any, decay: float, order: int = 1, weight: float | None = None
) -> Any:
    r"""The moment :math:`m_t = c\,g_t^{order} + \beta m_{t-1}`, with :math:`c = 1 - \beta` by default.

    As ``optax.tree_utils.tree_update_moment``, leaf by leaf, with :math:`c` and :math:`\beta` cast
    to each gradient's dtype, so a float64 hyperparameter never promotes float32 state.

    Args:
      grads: the gradients :math:`g_t`.
      moments: the previous moments :math:`m_{t-1}`, the same structure.
      decay: :math:`\beta`.
      order: the power of the gradient: 1 for a mean, 2 for a second moment.
      weight: :math:`c`; ``1 - decay`` when None.

    Returns:
      The new moments, in the gradients' dtypes.
    """
    c = 1 - decay if weight is None else weight
    return jax.tree.map(
        lambda g, m: jnp.asarray(c, g.dtype) * g**order + jnp.asarray(decay, g.dtype) * m,
        grads,
        moments,
    )


def _bias_correction(beta: float, t: jax.Array, like: jax.Array) -> jax.Array:
    r""":math:`1 - \beta^t` in ``like``'s dtype, computed in at least float32 (as optax does): in
    bfloat16, 0.999 rounds to 1 and the correction would be 0."""
    dtype = _at_least_float32(like.dtype)
    base = jnp.asarray(beta, dtype)
    # base ** t as jnp.power computes it, without its implicit int-to-float promotion: repeated
    # multiplication for a concrete t (an update run eagerly), XLA's pow for a traced one.
    concrete_t = _validation.concrete_float(t)
    if concrete_t is None:
        return (1 - jax.lax.pow(base, t.astype(dtype))).astype(like.dtype)
    return (1 - jax.lax.integer_pow(base, int(concrete_t))).astype(like.dtype)


def _scaled(learning_rate: ScalarOrSchedule, count: jax.Array, direction: Any) -> Any:
    r"""Returns :math:`-\alpha_t \cdot` direction, leaf by leaf, in each leaf's dtype."""
    alpha = learning_rate(count) if callable(learning_rate) else learning_rate
    return jax.tree.map(lambda d: jnp.asarray(-alpha, d.dtype) * d, direction)


def _reused(constructor: Callable[..., optax.GradientTransformation]) -> Callable:
    """``constructor``, returning the same transformation again for equal plain arguments.

    ``train`` compiles once per optimizer object: so ``adam(1e-2)`` built twice reuses the
    program. Arguments that are not Python scalars, strings or functions (arrays, traced values
    in a sweep) build a new transformation every time and are never kept.
    """
    cached = functools.lru_cache(maxsize=64)(constructor)

    @functools.wraps(constructor)
    def build(*args: Any, **kwargs: Any) -> optax.GradientTransformation:
        plain = (bool, int, float, str, type(None))
        if all(isinstance(v, plain) or callable(v) for v in (*args, *kwargs.values())):
            return cached(*args, **kwargs)
        return constructor(*args, **kwargs)

    return build


@_reused
def sgd(learning_rate: ScalarOrSchedule) -> optax.GradientTransformation:
    r"""Plain gradient descent: :math:`\theta_t = \theta_{t-1} - \alpha \nabla_\theta J(\theta)`.

    Args:
      learning_rate: :math:`\alpha > 0`, or a schedule.
    """
    _check_learning_rate(learning_rate)

    def init_fn(params):
        del params
        return SgdState(jnp.zeros([], jnp.int32))

    def update_fn(grads, state, params=None):
        del params
        updates = _scaled(learning_rate, state.count, grads)
        return updates, SgdState(optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def _momentum(
    learning_rate: ScalarOrSchedule, beta: float, gradient_weight: float, nesterov: bool
) -> optax.GradientTransformation:
    r""":math:`v_t = \beta v_{t-1} + c\,g_t`, step :math:`-\alpha v_t` (or Nesterov's
    :math:`-\alpha(g_t + \beta v_t)`): ``c = 1 - beta`` is the damped form, ``c = 1`` the classical.
    """
    _check_learning_rate(learning_rate)
    _check_decay("beta", beta)
    _validation.check_instance("nesterov", nesterov, bool)

    def check_dtypes(tree):
        for dtype in _float_dtypes(tree):
            _validation.check_below_one_in("beta", beta, dtype)

    def init_fn(params):
        check_dtypes(params)
        return MomentumState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update_fn(grads, state, params=None):
        del params
        check_dtypes(grads)
        v = _update_moment(grads, state.velocity, beta, weight=gradient_weight)
        direction = v
        if nesterov:
            direction = jax.tree.map(lambda g, v_t: g + jnp.asarray(beta, g.dtype) * v_t, grads, v)
        updates = _scaled(learning_rate, state.count, direction)
        return updates, MomentumState(optax.safe_increment(state.count), v)

    return optax.GradientTransformation(init_fn, update_fn)


@_reused
def momentum(
    learning_rate: ScalarOrSchedule = 0.01, beta: float = 0.9
) -> optax.GradientTransformation:
    r"""Gradient descent with momentum in the spec's damped form.

    :math:`v_t = \beta v_{t-1} + (1-\beta)\nabla_\theta J(\theta)`,
    :math:`\theta_t = \theta_{t-1} - \alpha v_t`, with :math:`v_0 = 0`.

    The velocity is an exponential moving average of the gradients, not bias-corrected, so the first
    steps are :math:`(1-\beta)` times a plain SGD step. The same as
    ``optax.chain(optax.ema(beta, debias=False), optax.scale(-learning_rate))``.

    Args:
      learning_rate: :math:`\alpha > 0`, or a schedule.
      beta: :math:`\beta \in [0, 1)`, also after rounding to the parameters' dtype (checked by
        ``init`` and ``update``: 0.99999999 is 1.0 in float32).
    """
    _check_decay("beta", beta)
    return _momentum(learning_rate, beta, gradient_weight=1 - beta, nesterov=False)


@_reused
def classical_momentum(
    learning_rate: ScalarOrSchedule, beta: float = 0.9, nesterov: bool = False
) -> optax.GradientTransformation:
    r"""Classical (heavy-ball, undamped) momentum, optionally Nesterov's.

    :math:`v_t = \beta v_{t-1} + \nabla_\theta J(\theta)`, :math:`\theta_t = \theta_{t-1} - \alpha v_t`;
    with ``nesterov=True`` the step is :math:`\alpha(\nabla_\theta J(\theta) + \beta v_t)`.

    Not the spec's ``momentum``: the gradient enters undamped, so the first step is a full SGD step,
    :math:`1/(1-\beta)` times the damped form's. The same as
    ``optax.sgd(learning_rate, momentum=beta, nesterov=nesterov)`` and PyTorch's ``SGD``.

    Args:
      learning_rate: :math:`\alpha > 0`, or a schedule.
      beta: :math:`\beta \in [0, 1)`, also after rounding to the parameters' dtype.
      nesterov: use Nesterov's look-ahead step.
    """
    return _momentum(learning_rate, beta, gradient_weight=1.0, nesterov=nesterov)


@_reused
def adam(
    learning_rate: ScalarOrSchedule = 0.001,
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float | None = None,
    eps_root: float = 0.0,
) -> optax.GradientTransformation:
    r"""Adam, as in the spec, with bias correction.

    .. math::
       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,
       \hat{m}_t = \frac{m_t}{1-\beta_1^t}, \quad \hat{v}_t = \frac{v_t}{1-\beta_2^t},
       \theta_t = \theta_{t-1} - \alpha\frac{\hat{m}_t}{\sqrt{\hat{v}_t + \epsilon_{root}}+\epsilon}

    :math:`\epsilon` is outside the square root, as in the spec; ``eps_root`` (0 by default, so
    the spec's formula) adds a term inside it, which keeps the gradient of the update finite when
    differentiating through the optimizer. The same as ``optax.adam``.

    ``init`` and ``update`` check the hyperparameters in the parameters' dtype, where they are used:
    :math:`\beta_1` and :math:`\beta_2` must stay below 1 in the dtype of the bias correction
    (at least float32; in the moments, bfloat16 rounds 0.999 to 1, as in optax) and an explicit
    :math:`\epsilon` must be a normal number (float16 rounds 1e-8 to 0).

    Args:
      learning_rate: :math:`\alpha > 0`, or a schedule.
      beta1: :math:`\beta_1 \in [0, 1)`, decay of the first moment.
      beta2: :math:`\beta_2 \in [0, 1)`, decay of the second moment.
      epsilon: :math:`\epsilon > 0`. None (the default) is 1e-8, raised to the dtype's smallest
        normal number where 1e-8 is below it: 1e-8 in float32, float64 and bfloat16, about
        6.1e-5 in float16, where 1e-8 would round to 0 and a zero gradient divide 0 by 0.
      eps_root: :math:`\epsilon_{root} \ge 0`.
    """
    _check_learning_rate(learning_rate)
    _check_decay("beta1", beta1)
    _check_decay("beta2", beta2)
    if epsilon is not None:
        _validation.check_real("epsilon", epsilon)
        _validation.check_positive("epsilon", epsilon)
    _validation.check_real("eps_root", eps_root)
    _validation.check_in_range("eps_root", eps_root, low=0.0)

    def check_dtypes(tree):
        for dtype in _float_dtypes(tree):
            _validation.check_below_one_in("beta1", beta1, _at_least_float32(dtype))
            _validation.check_below_one_in("beta2", beta2, _at_least_float32(dtype))
            if epsilon is not None:
                _validation.check_normal_in("epsilon", epsilon, dtype)

    def effective_epsilon(dtype):
        if epsilon is not None:
            return jnp.asarray(epsilon, dtype)
        return jnp.asarray(max(1e-8, float(jnp.finfo(dtype).tiny)), dtype)

    def init_fn(params):
        check_dtypes(params)
        m, v = jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params)
        return AdamState(jnp.zeros([], jnp.int32), m, v)

    def update_fn(grads, state, params=None):
        del params
        check_dtypes(grads)
        m = _update_moment(grads, state.mu, beta1, order=1)
        v = _update_moment(grads, state.nu, beta2, order=2)
        t = optax.safe_increment(state.count)

        def step(m, v):
            # In the moments' dtype: no float64 enters a float32 program, even under x64.
            m_hat = m / _bias_correction(beta1, t, m)
            v_hat = v / _bias_correction(beta2, t, v)
            sqrt_v_hat = jnp.sqrt(v_hat + jnp.asarray(eps_root, v.dtype))
            return m_hat / (sqrt_v_hat + effective_epsilon(v.dtype))

        updates = _scaled(learning_rate, state.count, jax.tree.map(step, m, v))
        return updates, AdamState(t, m, v)

    return optax.GradientTransformation(init_fn, update_fn)


OPTIMIZERS = {
    "sgd": sgd,
    "momentum": momentum,
    "classical_momentum": classical_momentum,
    "adam": adam,
}
"""The hand-written optimizers by name."""
