"""Op handlers, one per rule family, in a registry keyed by op kind.

Each handler states its backward rule once (see :mod:`nnslicer.ops.base`). Register a
handler for a new kind with :func:`register_handler`, and teach the lifter which Keras
layer makes it with :func:`nnslicer.register_layer`.
"""

from __future__ import annotations

from ..errors import InvalidParameterError
from .attention import Product, Softmax
from .base import Handler, LinearHandler, RouteHandler, Step, Wiring
from .lookup import Embedding
from .merge import Add, Concatenate, Multiply, Subtract
from .passthrough import (Activation, BatchNormalization, Constant, Cropping2D, Identity, LayerNormalization,
                          Mask, Reshape, Select, Slice, Stack, UpSampling,
                          ZeroPadding2D)
from .pooling import AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPooling2D
from .weighted import Conv2D, Dense, DepthwiseConv2D, Scale

__all__ = ["Handler", "LinearHandler", "RouteHandler", "Step", "Wiring", "register_handler",
           "get_handler", "HANDLERS"]


class Input(Handler):
    kind = "input"

    def forward(self, op, inputs):  # pragma: no cover - the input is fed, never computed
        return inputs[0]

    def connections(self, op, granularity, out=None):
        return []


HANDLERS = {}


def register_handler(handler, replace=False):
    """Register a :class:`Handler` instance under ``handler.kind``."""
    if not replace and handler.kind in HANDLERS:
        raise InvalidParameterError(f"A handler for kind {handler.kind!r} is already registered.")
    HANDLERS[handler.kind] = handler
    return handler


def get_handler(kind):
    try:
        return HANDLERS[kind]
    except KeyError:
        raise InvalidParameterError(f"No handler is registered for op kind {kind!r}.") from None


for _cls in (Input, Dense, Conv2D, DepthwiseConv2D, AveragePooling2D, GlobalAveragePooling2D,
             MaxPooling2D, GlobalMaxPooling2D, Activation, BatchNormalization, LayerNormalization, Constant,
             Identity, Reshape, ZeroPadding2D, Cropping2D, UpSampling, Add, Subtract, Multiply, Concatenate, Scale,
             Product, Softmax, Slice, Stack, Embedding, Mask, Select):
    register_handler(_cls())
