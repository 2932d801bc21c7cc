"""Architectures written as text, as ``nnjax train --layers`` takes them.

An architecture is a comma-separated list of layers, each a name with optional arguments in
parentheses, positional then ``key=value``::

    conv2d(16,3),relu,maxpool(2),flatten,dense(10)
    conv2d(16,3,padding=same),batchnorm,relu,residual(conv2d(16,3,padding=same),relu),flatten,dense(10)

Names: ``dense(features)``, ``conv1d``/``conv2d(features, kernel_size, stride, padding)``,
``conv`` (the one matching the input's rank), ``maxpool``/``avgpool(window, stride)`` (and their
``1d``/``2d`` forms), ``flatten``, ``dropout(rate)``, ``batchnorm``, ``layernorm``,
``residual(layers...)`` and the activations ``relu``, ``sigmoid``, ``tanh``, ``identity``.
Arguments are integers, floats or words (``same``, ``valid``). The last layer gives the logits:
end in ``dense(number of classes)``.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from nnjax.activations import ACTIVATIONS
from nnjax.layers import Layer, Shape

__all__ = ["LAYER_NAMES", "parse_layers"]

# name -> (module, class), or (module, (1-D class, 2-D class)) where the input's rank decides.
_LAYERS: dict[str, tuple[str, Any]] = {
    "dense": ("layers", "Dense"),
    "flatten": ("layers", "Flatten"),
    "dropout": ("layers", "Dropout"),
    "conv1d": ("convolution", "Conv1D"),
    "conv2d": ("convolution", "Conv2D"),
    "conv": ("convolution", ("Conv1D", "Conv2D")),
    "maxpool1d": ("pooling", "MaxPool1D"),
    "maxpool2d": ("pooling", "MaxPool2D"),
    "maxpool": ("pooling", ("MaxPool1D", "MaxPool2D")),
    "avgpool1d": ("pooling", "AvgPool1D"),
    "avgpool2d": ("pooling", "AvgPool2D"),
    "avgpool": ("pooling", ("AvgPool1D", "AvgPool2D")),
    "batchnorm": ("normalization", "BatchNorm"),
    "layernorm": ("normalization", "LayerNorm"),
}

LAYER_NAMES = (*_LAYERS, "residual", *ACTIVATIONS)
"""Every name an architecture may use."""

_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)|(.))")


def _tokens(text: str) -> list[str]:
    out = []
    for match in _TOKEN.finditer(text):
        token = match.group(0).strip()
        if token:
            out.append(token)
    return out


def _value(token: str) -> Any:
    if re.fullmatch(r"[-+]?[0-9]+", token):
        return int(token)
    try:
        return float(token)
    except ValueError:
        return token.upper() if token.lower() in ("same", "valid") else token


class _Parser:
    """Recursive descent over the tokens: ``items := item ("," item)*``,
    ``item := name ["(" [args] ")"]``, an argument being a value, ``key=value`` or an item."""

    def __init__(self, text: str) -> None:
        self.tokens, self.i, self.text = _tokens(text), 0, text

    def fail(self, what: str) -> ValueError:
        return ValueError(f"architecture {self.text!r}: {what}")

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise self.fail(f"expected {expected or 'more'} but got {token or 'the end'}")
        self.i += 1
        return token

    def items(self, end: str | None) -> list[tuple[str, list, dict]]:
        found = [self.item()]
        while self.peek() == ",":
            self.take(",")
            found.append(self.item())
        if self.peek() != end:
            raise self.fail(f"unexpected {self.peek()!r}")
        return found

    def item(self) -> tuple[str, list, dict]:
        name = self.take().lower()
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise self.fail(f"expected a layer name, got {name!r}")
        args, kwargs = [], {}
        if self.peek() == "(":
            self.take("(")
            if name == "residual":
                args = self.items(")")
            else:
                while self.peek() != ")":
                    if self.peek() is None:
                        raise self.fail(f"{name}( is never closed")
                    self.argument(args, kwargs)
                    if self.peek() == ",":
                        self.take(",")
            self.take(")")
        return name, args, kwargs

    def argument(self, args: list, kwargs: dict) -> None:
        token = self.take()
        if self.peek() == "=":
            self.take("=")
            kwargs[token] = _value(self.take())
        else:
            args.append(_value(token))


def _build(item: tuple[str, list, dict], rank: int) -> tuple[Layer, int]:
    """The layer an item names, and the spatial rank of its output (0: flat features)."""
    name, args, kwargs = item
    if name in ACTIVATIONS:
        from nnjax.layers import Activation

        return Activation(name, *args, **kwargs), rank
    if name == "residual":
        from nnjax.sequential import Residual

        return Residual(_build_all(args, rank)), rank
    if name not in _LAYERS:
        raise ValueError(f"unknown layer {name!r}; choose from {', '.join(LAYER_NAMES)}")
    module, cls = _LAYERS[name]
    if isinstance(cls, tuple):
        if rank not in (1, 2):
            raise ValueError(f"{name} needs inputs with 1 or 2 spatial axes, but they have {rank}")
        cls = cls[rank - 1]
    layer = getattr(importlib.import_module(f"nnjax.{module}"), cls)(*args, **kwargs)
    return layer, 0 if name in ("dense", "flatten") else rank


def _build_all(items: list, rank: int) -> tuple:
    layers = []
    for item in items:
        layer, rank = _build(item, rank)
        layers.append(layer)
    return tuple(layers)


def parse_layers(text: str, input_shape: Shape) -> tuple:
    """The layers ``text`` describes, for examples of shape ``input_shape``.

    Args:
      text: the architecture, e.g. ``"conv2d(16,3),relu,maxpool(2),flatten,dense(10)"``.
      input_shape: one example's shape, e.g. ``(8, 8, 1)``: its rank resolves ``conv``,
        ``maxpool`` and ``avgpool`` to their 1-D or 2-D layer.

    Raises:
      ValueError: naming the part of ``text`` that is malformed or the layer whose arguments are
        wrong.
    """
    parser = _Parser(text)
    items = parser.items(None)
    try:
        return _build_all(items, len(input_shape) - 1)
    except (TypeError, ValueError) as error:
        raise ValueError(f"architecture {text!r}: {error}") from None
