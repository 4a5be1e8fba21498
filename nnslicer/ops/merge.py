"""Ops that merge tensors: Add (a weighted sum with weight 1 per input) and Concatenate
(counts split back to the inputs along the axis)."""

from __future__ import annotations

import numpy as np

from .base import LinearHandler, RouteHandler, Wiring


class Add(LinearHandler):
    """Residual addition: the candidates of neuron ``n`` are ``delta_x_j[n]`` of each input."""

    kind = "add"

    def forward(self, op, inputs):
        import tensorflow as tf

        return tf.add_n(list(inputs))

    def wiring(self, op, granularity, out):
        idx = out[:, None]
        return [Wiring(value=idx, dst=idx) for _ in op.inputs]


class Concatenate(RouteHandler):
    kind = "concatenate"

    def forward(self, op, inputs):
        import tensorflow as tf

        return tf.concat(list(inputs), axis=op.params["axis"] + 1)

    def route(self, op, granularity, out):
        from ..graph import neuron_shape

        axis = op.params["axis"]
        shape = tuple(op.shape)
        if granularity == "channel" and len(shape) == 3:
            if axis != 2:  # spatial concatenation: every input has every channel
                return [(j, np.arange(len(out)), out) for j in range(len(op.inputs))]
            shape, axis = neuron_shape(shape, granularity), 0
        coords = np.unravel_index(out, shape)
        along = coords[axis]
        result, start = [], 0
        for j, in_shape in enumerate(op.input_shapes):
            in_shape = neuron_shape(in_shape, granularity) if granularity == "channel" and len(in_shape) == 3 \
                else tuple(in_shape)
            size = in_shape[axis]
            rows = np.flatnonzero((along >= start) & (along < start + size))
            local = [c[rows] for c in coords]
            local[axis] = local[axis] - start
            result.append((j, rows, np.ravel_multi_index(local, in_shape)))
            start += size
        return result
