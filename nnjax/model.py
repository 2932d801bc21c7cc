"""The model protocol: what the training loop needs of a model, and nothing more.

The step and epoch builders (``nnjax.steps``), the compiled run (``nnjax.program``), ``train`` and
``sweep`` see a model only through these methods, all pure functions of their arguments. State a
model keeps besides its parameters (batch normalization's running statistics) is explicit: it goes
into ``forward`` and the new state comes out of ``next_state``, never mutated. A model
object holds the static description of an architecture (names, not arrays), is hashable and
compares by value, so equal architectures share compiled programs. ``network.DenseNetwork`` is
the first model: the spec's fully connected network with its hand-written ``backward_pass``.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax

__all__ = ["Model"]


class Model(Protocol):
    """A model the training loop can train, with gradients by hand or by autodiff.

    Attributes:
      loss: the output/loss pair the model ends in, a key of ``network.OUTPUT_LOSSES``; it fixes
        the target format (``metrics.prepare_targets``), the accuracy and the history's series.
    """

    loss: str

    def forward(
        self,
        params: Any,
        x: jax.Array,
        *,
        state: Any = (),
        dropout_rate: float | jax.Array = 0.0,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, Any]:
        """The forward pass: ``(output, cache)``, the cache holding what ``backward`` needs.

        ``state`` is the model's state (batch normalization's running statistics), ``()`` for a
        model without; the state after this pass is ``next_state(cache)``.
        """
        ...

    def next_state(self, cache: Any) -> Any:
        """The model's state after the forward pass that returned ``cache`` (``()`` if none)."""
        ...

    def data_loss(self, params: Any, y: jax.Array, cache: Any) -> jax.Array:
        """The data loss :math:`L(y, \\hat y)` from a forward pass's cache (no penalty)."""
        ...

    def penalty(self, params: Any, l2: float | jax.Array) -> jax.Array:
        """The L2 penalty :math:`\\frac{\\lambda}{2}\\sum \\|W\\|^2` the objective adds."""
        ...

    def backward(
        self, params: Any, x: jax.Array, y: jax.Array, cache: Any, *, l2: float | jax.Array = 0.0
    ) -> Any:
        """The hand-written gradient of ``data_loss + penalty``, shaped like ``params``."""
        ...

    def example_shape(self, params: Any) -> tuple[int, ...]:
        """The shape of one input example ``params`` expect (after checking their structure):
        ``(n_in,)`` for a dense network, ``(height, width, channels)`` for images."""
        ...
