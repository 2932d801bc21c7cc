"""Code written to run operation by operation, compiled as one program with the same results.

Run outside ``jax.jit``, each operation (or call of a jitted function) is compiled and run on
its own, so XLA never optimizes across two of them. Inside one program it does: it folds
``(x * c1) * c2`` into ``x * (c1 * c2)`` and so rounds otherwise, e.g. when an initializer
scales ``jax.random.normal``'s draw. ``replay(fn, *args)`` traces ``fn`` and replays each of its
operations, passing every floating-point value from one to the next (and every constant)
through an optimization barrier, which XLA cannot see through: each operation is optimized as
it was alone, and the program computes what running ``fn`` op by op computes, bit for bit, in
one compilation. Integer and key values need no barrier: their operations are exact however
they are fused.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["RUN_ONCE", "replay"]


def _run_once_options() -> dict[str, int]:
    """``RUN_ONCE``: level 1, unless ``XLA_FLAGS`` chooses a level for every program."""
    if "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
        return {}
    return {"xla_backend_optimization_level": 1}


RUN_ONCE = _run_once_options()
"""XLA's compiler options for the programs a run calls once to build its data and its initial
state: LLVM optimizes their machine code at level 1 of 3. XLA's own optimizations, and so the
operations computed, are unchanged; such a program compiles in about 60% of the CPU time of the
default level and gives the same bits (tested on the default run's programs, and checked on
every built-in dataset and initializer). Not for every program: elsewhere (the training
program's sigmoid, tanh and exp) code optimized otherwise rounds otherwise."""


def replay(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, its operations replayed one by one behind optimization barriers.

    Args:
      fn: a function of arrays (and pytrees of them) to arrays, written to run outside
        ``jax.jit``; other arguments it takes are bound first (``functools.partial``).
      *args: its array arguments.

    Returns:
      ``fn(*args)``: inside ``jax.jit``, the values running ``fn`` outside would give.
    """
    closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    jaxpr = closed.jaxpr
    values = dict(zip(jaxpr.constvars, map(_opaque, closed.consts), strict=True))
    values |= zip(jaxpr.invars, jax.tree.leaves(args), strict=True)

    def read(var: Any) -> Any:
        # A literal carries its value (jax.extend.core.Literal, whose import takes 0.1 s).
        return _opaque(var.val) if hasattr(var, "val") else values[var]

    for eqn in jaxpr.eqns:
        params = eqn.primitive.get_bind_params(eqn.params)
        with eqn.ctx.manager:
            outs = eqn.primitive.bind(*map(read, eqn.invars), **params)
        outs = outs if eqn.primitive.multiple_results else [outs]
        values |= zip(eqn.outvars, map(_opaque, outs), strict=True)
    results = [read(var) for var in jaxpr.outvars]
    return jax.tree.unflatten(jax.tree.structure(shapes), results)


def _opaque(value: Any) -> Any:
    """``value`` behind an optimization barrier if it is floating point."""
    if jnp.issubdtype(jnp.result_type(value), jnp.floating):
        return jax.lax.optimization_barrier(value)
    return value
