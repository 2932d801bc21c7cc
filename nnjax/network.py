r"""Neurons and networks: the forward pass with its cache, and a hand-written ``backward_pass``.

Shape convention (the same everywhere in nnjax): data is batch-first, ``x`` of shape
``(batch, n_in)``; layer :math:`l` has a weight matrix ``W`` of shape ``(n_out, n_in)``, as in the
spec and PyTorch's ``Linear``, and a bias ``b`` of shape ``(n_out,)``;
:math:`z^{(l)} = a^{(l-1)} W^{(l)T} + b^{(l)}` and :math:`a^{(l)} = f(z^{(l)})`, with
:math:`a^{(0)} = x`.

A network's parameters are a pytree: a list with one ``{"W": ..., "b": ...}`` dict per layer.
Its architecture beyond the shapes is two static arguments:

- ``activation``: the hidden activation, one name for every hidden layer or a tuple with one
  name per hidden layer, among ``"sigmoid"``, ``"relu"``, ``"tanh"`` and ``"identity"``;
- ``loss``: the output and its loss, one of the canonical pairs in ``OUTPUT_LOSSES``:
  ``"mse"`` (identity output, mean squared error; targets ``(batch, n_out)``),
  ``"binary_cross_entropy"`` (sigmoid output, BCE from the logits; targets ``(batch, n_out)`` in
  [0, 1]) and ``"softmax_cross_entropy"`` (softmax output, cross-entropy from the logits; integer
  labels ``(batch,)`` or one-hot targets ``(batch, n_out)``).

Under ``jax.jit`` pass ``activation``, ``loss`` and ``train`` as static arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from nnjax import _validation, losses
from nnjax.activations import ACTIVATIONS, get_activation, identity, sigmoid, softmax
from nnjax.initializers import INITIALIZERS, Initializer
from nnjax.layers import dense_backward, dense_forward
from nnjax.regularization import (
    dropout_backward,
    dropout_forward,
    l2_regularization,
    l2_regularization_gradient,
)

Params = list[dict[str, jax.Array]]
Cache = dict[str, jax.Array]

__all__ = [
    "LOSSES",
    "OUTPUT_LOSSES",
    "DenseNetwork",
    "OutputLoss",
    "backward_pass",
    "cached_loss",
    "forward_neuron",
    "forward_pass",
    "hidden_activations",
    "init_network",
    "layer_sizes",
    "network_loss",
    "predict",
    "weight_penalty",
]


class OutputLoss(NamedTuple):
    """An output activation paired with the loss computed from its logits, and its derivative.

    The derivative is that loss's with respect to the logits (the output error
    :math:`\\partial L / \\partial z^{(L)}`).
    """

    activation: Callable[[jax.Array], jax.Array]
    loss: Callable[[jax.Array, jax.Array], jax.Array]
    output_error: Callable[[jax.Array, jax.Array], jax.Array]


OUTPUT_LOSSES: dict[str, OutputLoss] = {
    "mse": OutputLoss(identity, losses.mse_loss, losses.mse_derivative),
    "binary_cross_entropy": OutputLoss(
        sigmoid,
        losses.binary_cross_entropy_with_logits,
        losses.binary_cross_entropy_with_logits_derivative,
    ),
    "softmax_cross_entropy": OutputLoss(
        softmax, losses.softmax_cross_entropy, losses.softmax_cross_entropy_derivative
    ),
}
"""The output/loss pairs a network may end in, by name."""

LOSSES = OUTPUT_LOSSES
"""Former name of ``OUTPUT_LOSSES``, kept so that existing code keeps working."""


def _get_loss(name: str) -> OutputLoss:
    _validation.check_choice("loss", name, OUTPUT_LOSSES)
    return OUTPUT_LOSSES[name]


def forward_neuron(
    x: jax.Array, w: jax.Array, b: jax.Array | float, activation_fn: Callable | str
) -> jax.Array:
    r"""One neuron: :math:`z = \sum_{i=1}^n w_i x_i + b`, :math:`a = f(z)`.

    Args:
      x: inputs of shape ``(n,)``, or a batch ``(batch, n)``.
      w: weights of shape ``(n,)``.
      b: the scalar bias.
      activation_fn: :math:`f`, a function or the name of an activation in ``ACTIVATIONS``
        (TypeError for anything else).

    Returns:
      :math:`a`: a scalar for one input, ``(batch,)`` for a batch.
    """
    x = _validation.check_float_array("x", x)
    w = _validation.check_float_array("w", w)
    _validation.check_ndim("w", w, 1, "(n,)")
    if jnp.ndim(b) != 0:
        raise ValueError(f"a neuron's bias b must be a scalar, got shape {jnp.shape(b)}")
    if x.ndim not in (1, 2) or x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"x must have shape ({w.shape[0]},) or (batch, {w.shape[0]}), got {x.shape}"
        )
    if isinstance(activation_fn, str):
        activation_fn = get_activation(activation_fn).fn
    elif not callable(activation_fn):
        raise TypeError(
            "activation_fn must be a function or an activation name "
            f"({', '.join(ACTIVATIONS)}), got {type(activation_fn).__name__} {activation_fn!r:.40}"
        )
    return activation_fn(x @ w + b)


def init_network(
    key: jax.Array,
    layer_sizes: Sequence[int],
    init: str | Initializer = "xavier",
    dtype: jnp.dtype = jnp.float32,
    bias_init: str | float | Callable[..., jax.Array] = "zeros",
) -> Params:
    """Initializes the parameters of a fully connected network.

    Args:
      key: a ``jax.random`` key, split once per layer.
      layer_sizes: ``[n_in, hidden_1, ..., n_out]``, at least two positive sizes.
      init: a name in ``INITIALIZERS`` (``"xavier"``, ``"xavier_uniform"``, ``"he"``) or a function
        ``init(key, n_in, n_out, dtype)`` returning ``(n_out, n_in)`` weights.
      dtype: floating-point dtype of every parameter (TypeError for any other).
      bias_init: ``"zeros"``, a constant for every bias, or a function ``bias_init(key, n_out,
        dtype)`` returning ``(n_out,)`` biases (its key is ``fold_in(layer's key, 1)``).

    Returns:
      A list with one ``{"W": (n_out, n_in), "b": (n_out,)}`` dict per layer.
    """
    sizes = _validation.check_layer_sizes(layer_sizes)
    dtype = _validation.check_float_dtype("dtype", dtype)
    if isinstance(init, str):
        _validation.check_choice("init", init, INITIALIZERS)
        init = INITIALIZERS[init]
    bias = _validation.check_bias_init(bias_init)
    keys = jax.random.split(key, len(sizes) - 1)
    params = []
    for l, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True), start=1):
        W = init(k, n_in, n_out, dtype)
        b = bias(k, n_out, dtype)
        _validation.check_layer_init(W, b, n_in, n_out, dtype, l)
        params.append({"W": W, "b": b})
    return params


def layer_sizes(params: Params) -> tuple[int, ...]:
    """Returns ``(n_in, hidden_1, ..., n_out)`` after checking every layer's shapes fit together."""
    if not isinstance(params, Sequence) or not params:
        raise ValueError("params must be a non-empty list of {'W', 'b'} dicts, one per layer")
    sizes = [None]
    for l, layer in enumerate(params, start=1):
        if not isinstance(layer, dict) or set(layer) != {"W", "b"}:
            raise ValueError(f"layer {l} must be a dict with keys 'W' and 'b', got {layer!r:.80}")
        W, b = layer["W"], layer["b"]
        if jnp.ndim(W) != 2 or jnp.shape(b) != (jnp.shape(W)[0],):
            raise ValueError(
                f"layer {l}: W must be (n_out, n_in) and b (n_out,), "
                f"got W {jnp.shape(W)} and b {jnp.shape(b)}"
            )
        n_out, n_in = jnp.shape(W)
        if sizes[-1] is not None and n_in != sizes[-1]:
            raise ValueError(
                f"layer {l}: W has shape {jnp.shape(W)}, so n_in={n_in}, but layer {l - 1} "
                f"has {sizes[-1]} outputs"
            )
        sizes[-1] = n_in
        sizes.append(n_out)
    return tuple(sizes)


def hidden_activations(activation: str | Sequence[str], num_hidden: int) -> tuple[str, ...]:
    """Expands ``activation`` to one checked name per hidden layer."""
    one = isinstance(activation, str) or not isinstance(activation, Sequence)  # e.g. jnp.tanh
    names = (activation,) * num_hidden if one else tuple(activation)
    if len(names) != num_hidden:
        raise ValueError(
            f"got {len(names)} activations {names} for a network with {num_hidden} hidden layers"
        )
    for name in names:
        _validation.check_choice("activation", name, ACTIVATIONS)
    return names


def _parameter_dtype(params: Params) -> jnp.dtype:
    """The one floating-point dtype of every ``W`` and ``b``; TypeError for a mix or a non-float."""
    dtype = jnp.result_type(params[0]["W"])
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"parameters must be floating-point, got layer 1's W of dtype {dtype}")
    for l, layer in enumerate(params, start=1):
        for name in ("W", "b"):
            if jnp.result_type(layer[name]) != dtype:
                raise TypeError(
                    f"every parameter must have one dtype, but layer {l}'s {name} has "
                    f"{jnp.result_type(layer[name])} and layer 1's W {dtype}"
                )
    return dtype


def _check_input(params: Params, x: jax.Array) -> tuple[int, ...]:
    sizes = layer_sizes(params)
    x = _validation.check_float_array("x", x)
    if x.ndim != 2 or x.shape[1] != sizes[0]:
        raise ValueError(
            f"x must have shape (batch, {sizes[0]}) for a network with {sizes[0]} inputs, "
            f"got shape {x.shape}"
        )
    dtype = _parameter_dtype(params)
    if x.dtype != dtype:  # no silent promotion: float64 inputs would make the whole pass float64
        raise TypeError(f"x has dtype {x.dtype} but the parameters have {dtype}; cast one of them")
    return sizes


def _dropout_active(train: bool, dropout_rate: Any) -> bool:
    return train and _validation.concrete_float(dropout_rate) != 0.0


def forward_pass(
    params: Params,
    x: jax.Array,
    *,
    activation: str | Sequence[str] = "relu",
    loss: str = "softmax_cross_entropy",
    dropout_rate: float | jax.Array = 0.0,
    key: jax.Array | None = None,
    train: bool = False,
) -> tuple[jax.Array, Cache]:
    r"""The forward pass, keeping every :math:`z^{(l)}` and :math:`a^{(l)}` for ``backward_pass``.

    :math:`z^{(l)} = a^{(l-1)} W^{(l)T} + b^{(l)}`, :math:`a^{(l)} = f^{(l)}(z^{(l)})` for
    :math:`l = 1..L`, :math:`a^{(0)} = x`; the output activation :math:`f^{(L)}` is fixed by ``loss``.

    Args:
      params: the network's parameters (see ``init_network``).
      x: inputs of shape ``(batch, n_in)``.
      activation: hidden activation name, or a tuple of one name per hidden layer.
      loss: the output/loss pair, a key of ``OUTPUT_LOSSES``; fixes the output activation.
      dropout_rate: probability of dropping each hidden unit during training (inverted dropout
        on every hidden layer's output; never on the inputs or outputs). May be traced.
      key: the ``jax.random`` key for the dropout masks; needed when dropout is active.
      train: dropout is applied only when True; evaluation uses the full network unscaled.

    Returns:
      ``(a_L, cache)``: the output of shape ``(batch, n_out)`` (probabilities for the sigmoid and
      softmax outputs), and a dict with ``"z1"..."zL"``, ``"a1"..."aL"`` (the spec's names; ``a0``
      is ``x``) and, with dropout, the masks ``"mask1"..."mask{L-1}"``. A hidden ``a`` is the value
      after dropout, as the next layer sees it.
    """
    sizes = _check_input(params, x)
    num_layers = len(sizes) - 1
    names = hidden_activations(activation, num_layers - 1)
    output = _get_loss(loss)
    use_dropout = _dropout_active(train, dropout_rate)
    if use_dropout:
        _validation.check_in_range("dropout_rate", dropout_rate, low=0.0, high=1.0)
        if key is None:
            raise ValueError("dropout during training needs a PRNG key: pass key=...")
        keys = jax.random.split(key, max(num_layers - 1, 1))

    cache: Cache = {}
    a = x
    for l, layer in enumerate(params, start=1):
        z = dense_forward(layer, a)
        if l < num_layers:
            a = ACTIVATIONS[names[l - 1]].fn(z)
            if use_dropout:
                a, cache[f"mask{l}"] = dropout_forward(keys[l - 1], a, dropout_rate)
        else:
            a = output.activation(z)
        cache[f"z{l}"], cache[f"a{l}"] = z, a
    return a, cache


def network_loss(
    params: Params,
    x: jax.Array,
    y: jax.Array,
    *,
    activation: str | Sequence[str] = "relu",
    loss: str = "softmax_cross_entropy",
    l2: float | jax.Array = 0.0,
    dropout_rate: float | jax.Array = 0.0,
    key: jax.Array | None = None,
    train: bool = False,
) -> jax.Array:
    r"""The training objective :math:`L(y, z^{(L)}) + \frac{\lambda}{2}\sum_l \|W^{(l)}\|^2`.

    The data loss is computed from the logits :math:`z^{(L)}` (stable; see ``OUTPUT_LOSSES``), the L2 term
    over weight matrices only. ``jax.grad`` of this function is what ``backward_pass`` computes by
    hand. Arguments as in ``forward_pass``; ``y`` is the target (shape set by ``loss``) and ``l2``
    the strength :math:`\lambda \ge 0`.
    """
    _, cache = forward_pass(
        params,
        x,
        activation=activation,
        loss=loss,
        dropout_rate=dropout_rate,
        key=key,
        train=train,
    )
    data_loss = cached_loss(params, y, cache, loss=loss)
    if _validation.concrete_float(l2) == 0.0:
        return data_loss
    return data_loss + weight_penalty(params, l2)


def cached_loss(params: Params, y: jax.Array, cache: Cache, *, loss: str) -> jax.Array:
    r"""The data loss :math:`L(y, z^{(L)})` from the logits a ``forward_pass`` cached.

    Computed from the logits rather than the output probabilities, for stability (see
    ``OUTPUT_LOSSES``). ``params`` only tells the number of layers :math:`L`.
    """
    return _get_loss(loss).loss(y, cache[f"z{len(params)}"])


def weight_penalty(params: Params, l2: float | jax.Array) -> jax.Array:
    r"""The L2 penalty :math:`\frac{\lambda}{2}\sum_l \|W^{(l)}\|^2` over weight matrices only."""
    return l2_regularization([layer["W"] for layer in params], l2)


def _check_cache(cache: Cache, sizes: tuple[int, ...], batch: int) -> None:
    """Raises ValueError unless ``cache`` holds what ``backward_pass`` reads, in these shapes."""
    num_layers = len(sizes) - 1
    needed = (f"z{num_layers}", *(f"a{l}" for l in range(1, num_layers)))
    for name in (*needed, *(f"z{l}" for l in range(1, num_layers))):
        if name not in cache:
            raise ValueError(f"cache has no {name!r}: pass the cache forward_pass returned")
    for l, n in enumerate(sizes[1:], start=1):
        for name in (f"z{l}", f"a{l}", f"mask{l}"):
            if name in cache and jnp.shape(cache[name]) != (batch, n):
                raise ValueError(
                    f"cache[{name!r}] has shape {jnp.shape(cache[name])}, but these parameters "
                    f"and x need ({batch}, {n}): pass the cache forward_pass returned for them"
                )


def backward_pass(
    params: Params,
    x: jax.Array,
    y: jax.Array,
    cache: Cache,
    *,
    activation: str | Sequence[str] = "relu",
    loss: str = "softmax_cross_entropy",
    l2: float | jax.Array = 0.0,
) -> Params:
    r"""Gradients of ``network_loss`` by the chain rule, written by hand.

    :math:`\frac{\partial L}{\partial W^{(l)}} = \frac{\partial L}{\partial a^{(l)}}
    \cdot \frac{\partial a^{(l)}}{\partial z^{(l)}} \cdot \frac{\partial z^{(l)}}{\partial W^{(l)}}`:
    with :math:`\delta^{(l)} = \partial L / \partial z^{(l)}` of shape ``(batch, n_l)``,

    - output error: :math:`\delta^{(L)} = c\,(a^{(L)} - y)`. This fused form holds only for the
      canonical pairs in ``OUTPUT_LOSSES``, where the output activation's Jacobian cancels against the
      loss's derivative: identity + MSE (:math:`c = 2/n`, ``n`` the number of output elements),
      sigmoid + BCE (:math:`c = 1/n`) and softmax + cross-entropy (:math:`c = 1/B`, ``B`` the
      batch); the spec writes it with :math:`c = 1`. For any other pairing it is wrong.
    - :math:`\partial L/\partial W^{(l)} = \delta^{(l)T} a^{(l-1)} + \lambda W^{(l)}` and
      :math:`\partial L/\partial b^{(l)} = \sum_{batch} \delta^{(l)}`;
    - :math:`\delta^{(l-1)} = (\delta^{(l)} W^{(l)}) \odot m^{(l-1)} \odot f'(z^{(l-1)})`, with
      :math:`m` the dropout mask (1 without dropout).

    The spec's version has two indexing bugs, fixed here: it multiplies by ``cache['a' + str(l-1)]``
    for the zero-based layer ``l`` (that is :math:`a^{(l-1)}` two layers back, and ``'a-1'`` for the
    first layer) where :math:`a^{(l-1)}` of the one-based layer is meant, and it takes the
    derivative at ``z`` of the wrong layer.

    Args:
      params: the parameters the forward pass used.
      x: the inputs ``(batch, n_in)`` of that forward pass (:math:`a^{(0)}`).
      y: the targets, as for ``network_loss``.
      cache: the cache returned by ``forward_pass`` (with its dropout masks, if any).
      activation, loss: as given to ``forward_pass``.
      l2: the L2 strength :math:`\lambda`; adds :math:`\lambda W` to each weight gradient.

    Returns:
      Gradients with exactly the structure and shapes of ``params``.
    """
    sizes = _check_input(params, x)
    num_layers = len(sizes) - 1
    names = hidden_activations(activation, num_layers - 1)
    _check_cache(cache, sizes, x.shape[0])
    use_l2 = _validation.concrete_float(l2) != 0.0
    if use_l2:
        _validation.check_in_range("l2", l2, low=0.0)

    dz = _get_loss(loss).output_error(y, cache[f"z{num_layers}"])
    grads: Params = [{} for _ in range(num_layers)]
    for l in range(num_layers, 0, -1):
        a_prev = x if l == 1 else cache[f"a{l - 1}"]
        da, grads[l - 1] = dense_backward(params[l - 1], dz, a_prev)
        if use_l2:
            (penalty,) = l2_regularization_gradient([params[l - 1]["W"]], l2)
            grads[l - 1]["W"] = grads[l - 1]["W"] + penalty
        if l > 1:
            if f"mask{l - 1}" in cache:
                da = dropout_backward(da, cache[f"mask{l - 1}"])
            dz = da * ACTIVATIONS[names[l - 2]].derivative(cache[f"z{l - 1}"])
    return type(params)(grads)


def predict(
    params: Params,
    x: jax.Array,
    *,
    activation: str | Sequence[str] = "relu",
    loss: str = "softmax_cross_entropy",
) -> jax.Array:
    """The network's output ``(batch, n_out)`` at evaluation: no dropout, no cache kept."""
    output, _ = forward_pass(params, x, activation=activation, loss=loss)
    return output


@dataclasses.dataclass(frozen=True)
class DenseNetwork:
    """The fully connected network as a model for the training loop (see ``nnjax.model.Model``).

    It holds the architecture beyond the parameters' shapes: the hidden ``activation`` (one name,
    or one per hidden layer) and the output/``loss`` pair, as ``forward_pass`` takes them. Frozen,
    hashable and compared by value: two equal ``DenseNetwork`` share compiled programs.
    """

    activation: str | tuple[str, ...] = "relu"
    loss: str = "softmax_cross_entropy"

    def __post_init__(self) -> None:
        if not isinstance(self.activation, str):  # a list would make the model unhashable
            object.__setattr__(self, "activation", tuple(self.activation))

    def forward(
        self,
        params: Params,
        x: jax.Array,
        *,
        state: Any = (),
        dropout_rate: float | jax.Array = 0.0,
        key: jax.Array | None = None,
        train: bool = False,
    ) -> tuple[jax.Array, Cache]:
        """``forward_pass`` with this architecture; a dense network has no ``state`` (``()``)."""
        if jax.tree.leaves(state):
            raise ValueError("a DenseNetwork has no model state: pass state=()")
        arch = {"activation": self.activation, "loss": self.loss}
        return forward_pass(params, x, **arch, dropout_rate=dropout_rate, key=key, train=train)

    def next_state(self, cache: Cache) -> tuple:
        """``()``: a dense network keeps no state."""
        return ()

    def data_loss(self, params: Params, y: jax.Array, cache: Cache) -> jax.Array:
        """``cached_loss`` of this network's output/loss pair."""
        return cached_loss(params, y, cache, loss=self.loss)

    def penalty(self, params: Params, l2: float | jax.Array) -> jax.Array:
        """``weight_penalty``: L2 over the weight matrices only."""
        return weight_penalty(params, l2)

    def backward(
        self, params: Params, x: jax.Array, y: jax.Array, cache: Cache, *, l2: Any = 0.0
    ) -> Params:
        """``backward_pass`` with this architecture."""
        return backward_pass(params, x, y, cache, activation=self.activation, loss=self.loss, l2=l2)

    def example_shape(self, params: Params) -> tuple[int]:
        """``(n_in,)``, after checking the layers and that ``activation`` names one per hidden
        layer."""
        sizes = layer_sizes(params)
        hidden_activations(self.activation, len(sizes) - 2)
        return (sizes[0],)
