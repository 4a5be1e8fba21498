"""Pooling ops.

Average pooling is a weighted sum with weight 1 over the window (padding excluded, as
TensorFlow averages); max pooling hands the count unchanged to the window's argmax input(s),
ties included. At channel granularity every pooling op passes channel counts through. The 1-D
forms (over a sequence ``[T, C]``) are these ops over a map of one row.
"""

from __future__ import annotations

import numpy as np

from .base import LinearHandler, RouteHandler, Wiring, all_taps, fused_spec, on_map, spatial, window_of
from .passthrough import paper_sign


def _positions(op):
    """The axes of the op's input, batch axis included, that a global pooling reduces."""
    return tuple(range(1, len(op.input_shapes[0])))


class _Pool(LinearHandler, RouteHandler):
    """Linear at element granularity, a channel pass-through at channel granularity."""

    channelwise = True

    def backward(self, step):
        if step.granularity == "channel":
            return RouteHandler.backward(self, step)
        return self.element_backward(step)

    def element_backward(self, step):
        return LinearHandler.backward(self, step)

    def connections(self, op, granularity, out=None):
        if granularity == "channel":
            return RouteHandler.connections(self, op, granularity, out)
        return LinearHandler.connections(self, op, granularity, out)

    def route(self, op, granularity, out):
        return [(0, np.arange(len(out)), out)]

    def window(self, op, out):
        """Flat input indices and validity of the windows of output neurons ``out``."""
        c = op.shape[-1]
        if self.is_global:
            h, w = spatial(op.input_shapes[0])
            idx = np.arange(h * w)[None, :] * c + (out % c)[:, None]
            return idx, None
        _, taps, valid = window_of(op)
        p = out // c
        return taps[p] * c + (out % c)[:, None], valid[p]

    def fused_window(self, op, granularity):
        from ..backward.op_kernels import POOL

        c = op.shape[-1]
        h, w = spatial(op.input_shapes[0])
        taps, valid = all_taps(h * w) if self.is_global else window_of(op)[1:]
        return fused_spec(POOL, taps, valid, c, c)

    def wiring(self, op, granularity, out):
        idx, valid = self.window(op, out)
        return [Wiring(value=idx, dst=idx, valid=valid)]


class AveragePooling2D(_Pool):
    kind = "avg_pool"
    is_global = False

    def forward(self, op, inputs):
        import tensorflow as tf

        p = op.params
        return on_map(op, inputs[0], lambda x: tf.nn.avg_pool2d(x, p["kernel_size"], p["strides"],
                                                                p["padding"].upper()))


class GlobalAveragePooling2D(_Pool):
    """The mean over positions; with a Keras mask of a sequence's positions (a second input,
    ``[T]``), over the unmasked ones, which alone are candidates (a masked position's value is
    a missing candidate)."""

    kind = "global_avg_pool"
    is_global = True

    def forward(self, op, inputs):
        import tensorflow as tf

        if len(inputs) == 1:
            return tf.reduce_mean(inputs[0], axis=_positions(op))
        mask = inputs[1][..., None]  # as Keras computes it: masked values zeroed, then sum / count
        return tf.reduce_sum(tf.where(mask > 0.5, inputs[0], 0.0), axis=1) / tf.reduce_sum(mask, axis=1)

    def values(self, step, index):
        values = super().values(step, index)
        if index == 0 and len(step.op.inputs) == 2 and step.granularity == "element":
            masked = step.act(step.op.inputs[1]).reshape(step.batch, -1, 1) < 0.5  # [B, T, 1]
            values = np.where(masked, np.nan, values.reshape(masked.shape[:2] + (-1,))).reshape(step.batch, -1)
        return values


class MaxPooling2D(_Pool):
    kind = "max_pool"
    is_global = False

    def forward(self, op, inputs):
        import tensorflow as tf

        p = op.params
        return on_map(op, inputs[0], lambda x: tf.nn.max_pool2d(x, p["kernel_size"], p["strides"],
                                                                p["padding"].upper()))

    def element_backward(self, step):
        op = step.op
        batch = step.batch
        counts = step.contrib.reshape(batch, -1)
        b, o = np.nonzero(counts)
        x = step.act(op.inputs[0]).reshape(batch, -1)
        y = step.act(op.name).reshape(batch, -1)
        idx, valid = self.window(op, o)
        hit = x[b[:, None], idx] == y[b, o][:, None]
        if valid is not None:
            hit &= valid
        vals = np.broadcast_to(counts[b, o][:, None], idx.shape)
        if step.propagation == "paper":
            dx = step.delta(op.inputs[0]).reshape(batch, -1)[b[:, None], idx]
            dy = step.delta(op.name).reshape(batch, -1)[b, o][:, None]
            vals = np.sign(vals) * np.sign(dy) * np.sign(dx)
        rows, cols = np.nonzero(hit)
        size = x.shape[1]
        out = np.bincount(b[rows] * size + idx[rows, cols], weights=vals[rows, cols],
                          minlength=batch * size).astype(np.int64)
        return [out.reshape((batch,) + tuple(op.input_shapes[0]))], None

    def paper_factor(self, step, index, rows, dst, b):
        return paper_sign(step, dst, b)


class GlobalMaxPooling2D(MaxPooling2D):
    kind = "global_max_pool"
    is_global = True

    def forward(self, op, inputs):
        import tensorflow as tf

        return tf.reduce_max(inputs[0], axis=_positions(op))
