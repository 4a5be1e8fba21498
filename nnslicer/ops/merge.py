"""Ops that merge tensors: Add (a weighted sum with weight 1 per input), Subtract (weights +1
and -1), Multiply (each factor's Shapley share of the product's change) and Concatenate
(counts split back to the inputs along the axis)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..graph import has_channels, neuron_shape
from .base import LinearHandler, RouteHandler, Wiring, half_sum


class Add(LinearHandler):
    """Residual addition: the candidates of neuron ``n`` are ``delta_x_j[n]`` of each input."""

    kind = "add"

    def forward(self, op, inputs):
        import tensorflow as tf

        return tf.add_n(list(inputs))

    def wiring(self, op, granularity, out):
        idx = out[:, None]
        return [Wiring(value=idx, dst=idx) for _ in op.inputs]

    def fused_pair(self, op, granularity):
        if len(op.inputs) != 2:
            return None
        identity = _identity(int(np.prod(neuron_shape(op.shape, granularity))))
        return identity, identity


class Subtract(Add):
    """``a - b``: as Add with weights +1 and -1, the candidates are ``delta_a`` and ``-delta_b``."""

    kind = "subtract"

    def forward(self, op, inputs):
        return inputs[0] - inputs[1]

    def values(self, step, index):
        values = super().values(step, index)
        return -values if index == 1 else values


@lru_cache(maxsize=64)
def _identity(n):
    """``arange(n)``, read-only (shared by the ops of one size)."""
    out = np.arange(n, dtype=np.int64)
    out.setflags(write=False)
    return out


def _aligned(arr, rank):
    """``arr`` ([B, *shape]) with size-1 axes after the batch axis up to ``rank`` axes of shape,
    so that it broadcasts as numpy aligns shapes (from the right)."""
    return arr.reshape(arr.shape[:1] + (1,) * (rank - arr.ndim + 1) + arr.shape[1:])


class Multiply(LinearHandler):
    """The element-wise product of two tensors, with broadcasting (a squeeze-and-excite gate):
    output neuron ``n`` has one candidate per factor, its two-player Shapley share of the
    product's change, ``c_a = delta_a * (base_b + b) / 2`` and ``c_b = delta_b * (base_a + a) / 2``
    (``c_a + c_b = a*b - base_a*base_b``), the base being the profile's mean (EffectivePath reads
    raw values: base 0). At channel granularity a share is its mean over the channel's positions.
    A broadcast input neuron receives the counts of every output neuron it feeds."""

    kind = "multiply"

    def forward(self, op, inputs):
        return inputs[0] * inputs[1]

    def values(self, step, index):
        a, b = step.op.inputs[index], step.op.inputs[1 - index]
        rank = len(step.op.shape)
        share = _aligned(step.source(a).astype(np.float64), rank) * _aligned(half_sum(step, b), rank)
        share = np.broadcast_to(share, (step.batch,) + tuple(step.op.shape))
        return step._view(share).reshape(step.batch, -1)

    def fused_pair(self, op, granularity):
        out = _identity(int(np.prod(neuron_shape(op.shape, granularity))))
        return tuple(w.dst[:, 0] for w in self.wiring(op, granularity, out))

    def wiring(self, op, granularity, out):
        shape = neuron_shape(op.shape, granularity)
        coords = np.unravel_index(out, shape)
        wires = []
        for in_shape in op.input_shapes:
            in_shape = neuron_shape(in_shape, granularity)
            mine = [c % size for c, size in zip(coords[len(shape) - len(in_shape):], in_shape)]
            wires.append(Wiring(value=out[:, None], dst=np.ravel_multi_index(mine, in_shape)[:, None]))
        return wires


class Concatenate(RouteHandler):
    kind = "concatenate"

    def forward(self, op, inputs):
        import tensorflow as tf

        return tf.concat(list(inputs), axis=op.params["axis"] + 1)

    def route(self, op, granularity, out):
        axis = op.params["axis"]
        shape = tuple(op.shape)
        channels = granularity == "channel" and has_channels(shape)
        if channels:
            if axis != len(shape) - 1:  # along positions: every input has every channel
                return [(j, np.arange(len(out)), out) for j in range(len(op.inputs))]
            shape, axis = neuron_shape(shape, granularity), 0
        coords = np.unravel_index(out, shape)
        along = coords[axis]
        result, start = [], 0
        for j, in_shape in enumerate(op.input_shapes):
            in_shape = neuron_shape(in_shape, granularity) if channels else tuple(in_shape)
            size = in_shape[axis]
            rows = np.flatnonzero((along >= start) & (along < start + size))
            local = [c[rows] for c in coords]
            local[axis] = local[axis] - start
            result.append((j, rows, np.ravel_multi_index(local, in_shape)))
            start += size
        return result
