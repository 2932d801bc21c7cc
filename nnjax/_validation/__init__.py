"""Trace-time checks of shapes and static arguments.

Everything here looks only at shapes, dtypes and Python values, so under ``jax.jit`` it runs once
while tracing and costs nothing in compiled code. A hyperparameter passed as a traced array (as in a
vmapped sweep) has no concrete value; its range check is then skipped, never guessed.
"""

from nnjax._validation.core import *  # noqa: F403
from nnjax._validation.core import __all__ as _core
from nnjax._validation.layers import *  # noqa: F403
from nnjax._validation.layers import __all__ as _layers

__all__ = [*_core, *_layers]
