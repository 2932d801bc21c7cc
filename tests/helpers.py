"""Helpers shared by the test modules: ``from helpers import jit_unoptimized``.

``tests/`` has no ``__init__.py``, so pytest puts it on ``sys.path`` (the default ``prepend``
import mode) before importing a test module, in every xdist worker too.
"""

from __future__ import annotations

import functools

import jax
import optax

from nnjax.gradcheck import tree_relative_error

__all__ = [
    "PNG_SIGNATURE",
    "XOR_RUN",
    "compile_count",
    "jit_unoptimized",
    "standard_promotion",
    "tree_relative_error",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
"""The eight bytes every PNG file starts with."""

XOR_RUN = {
    "dataset": "xor",
    "hidden": [4],
    "activation": "sigmoid",
    "loss": "binary_cross_entropy",
    "optimizer": "momentum",
    "learning_rate": 2.0,
    "batch_size": 4,
    "seed": 3,
}
"""The run options of the XOR tests (``runs.make_config``): test_cli's XOR_OPTIONS as a
configuration, so that the tests of runs, folders and the CLI share compiled programs."""

jit_unoptimized = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
"""``jax.jit`` without XLA's backend optimizations: a test runs a small program a few times, and
the optimization passes would cost more compile time than they save."""


def standard_promotion(
    transformation: optax.GradientTransformation,
) -> optax.GradientTransformation:
    """``transformation`` with its ``init`` and ``update`` traced under standard dtype promotion.

    For an optax reference that is not clean under strict promotion (``optax.adam`` raises a
    Python float to its int32 count), so the nnjax code it is compared with still runs strict.
    """

    def standard(fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with jax.numpy_dtype_promotion("standard"):
                return fn(*args, **kwargs)

        return wrapped

    return optax.GradientTransformation(
        standard(transformation.init), standard(transformation.update)
    )


def compile_count(thunk):
    """The number of XLA compilations ``thunk()`` runs."""
    events = []

    def listener(event, *_, **__):
        events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        thunk()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return events.count("/jax/core/compile/backend_compile_duration")
