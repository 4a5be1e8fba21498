"""Weighted ops: Dense, Conv2D, DepthwiseConv2D.

Candidates of an output neuron are ``w_i * delta_x_i`` over its receptive field; a kept
candidate's signed count goes to the input neuron and to the synapse (SPEC.md section 3).
At channel granularity a conv neuron is a channel and the candidate for kernel weight
``(kh, kw, c_in)`` is ``w`` times the mean, over output positions, of what that tap reads.
"""

from __future__ import annotations

import numpy as np

from .base import LinearHandler, Wiring, all_taps, fused_spec, tap_means, window_of


class Dense(LinearHandler):
    """``y = x @ kernel + bias`` on a rank-1 input; synapse ``(i, j)`` is ``kernel[i, j]``."""

    kind = "dense"
    synapse_weight = "kernel"

    def forward(self, op, inputs):
        import tensorflow as tf

        return tf.matmul(inputs[0], op.weights["kernel"]) + op.weights["bias"]

    def fused_window(self, op, granularity):
        from .._fused import CONV

        n_in, n_out = op.weights["kernel"].shape
        return fused_spec(CONV, *all_taps(1), n_in, n_out, op.weights["kernel"].reshape(1, n_in, n_out))

    def wiring(self, op, granularity, out):
        n_in, n_out = op.weights["kernel"].shape
        idx = np.arange(n_in)[None, :]
        return [Wiring(value=idx, dst=idx, synapse=idx * n_out + out[:, None])]


class Conv2D(LinearHandler):
    """2-D convolution (any stride and dilation, same/valid padding); synapses are the
    kernel's weights ``(kh, kw, c_in, c_out)``, each shared by every output position."""

    kind = "conv2d"
    synapse_weight = "kernel"

    def forward(self, op, inputs):
        import tensorflow as tf

        p = op.params
        y = tf.nn.conv2d(inputs[0], op.weights["kernel"], strides=p["strides"],
                         padding=p["padding"].upper(), dilations=p["dilation_rate"])
        return y + op.weights["bias"]

    def values(self, step, index):
        if step.granularity == "channel":
            means = tap_means(step, step.op, step.source(step.op.inputs[0]))
            return means.reshape(step.batch, -1)
        return LinearHandler.values(self, step, index)

    def fused_window(self, op, granularity):
        from .._fused import CONV

        kh, kw, c_in, c_out = op.weights["kernel"].shape
        taps, valid = all_taps(kh * kw) if granularity == "channel" else window_of(op)[1:]
        return fused_spec(CONV, taps, valid, c_in, c_out, op.weights["kernel"].reshape(kh * kw, c_in, c_out),
                          to_channel=granularity == "channel")

    def wiring(self, op, granularity, out):
        kh, kw, c_in, c_out = op.weights["kernel"].shape
        n_taps = kh * kw
        tap_channel = (np.arange(n_taps)[:, None] * c_in + np.arange(c_in)).reshape(1, -1)
        synapse = tap_channel * c_out + (out % c_out)[:, None]
        if granularity == "channel":
            dst = np.tile(np.arange(c_in), n_taps)[None, :]
            return [Wiring(value=tap_channel, dst=dst, synapse=synapse)]
        _, taps, valid = window_of(op)
        pos = taps[out // c_out]  # [n, taps]
        idx = (pos[:, :, None] * c_in + np.arange(c_in)).reshape(len(out), -1)
        return [Wiring(value=idx, dst=idx, synapse=synapse,
                       valid=np.repeat(valid[out // c_out], c_in, axis=1))]


class DepthwiseConv2D(LinearHandler):
    """Depthwise convolution: output channel ``c * multiplier + m`` reads input channel ``c``;
    synapses are the kernel's weights ``(kh, kw, c_in, multiplier)``."""

    kind = "depthwise_conv2d"
    synapse_weight = "kernel"

    def forward(self, op, inputs):
        import tensorflow as tf

        p = op.params
        s = p["strides"]
        y = tf.nn.depthwise_conv2d(inputs[0], op.weights["kernel"], strides=(1, s[0], s[1], 1),
                                   padding=p["padding"].upper(), dilations=p["dilation_rate"])
        return y + op.weights["bias"]

    values = Conv2D.values

    def fused_window(self, op, granularity):
        from .._fused import DEPTHWISE

        kh, kw, c_in, mult = op.weights["kernel"].shape
        taps, valid = all_taps(kh * kw) if granularity == "channel" else window_of(op)[1:]
        return fused_spec(DEPTHWISE, taps, valid, c_in, c_in * mult, op.weights["kernel"].reshape(kh * kw, c_in, mult),
                          mult=mult, to_channel=granularity == "channel")

    def wiring(self, op, granularity, out):
        kh, kw, c_in, mult = op.weights["kernel"].shape
        n_taps = kh * kw
        channel_out = out % (c_in * mult)
        c, m = channel_out // mult, channel_out % mult
        tap = np.arange(n_taps)[None, :]
        synapse = (tap * c_in + c[:, None]) * mult + m[:, None]
        if granularity == "channel":
            dst = np.broadcast_to(c[:, None], (len(out), n_taps))
            return [Wiring(value=tap * c_in + c[:, None], dst=dst, synapse=synapse)]
        _, taps, valid = window_of(op)
        p = out // (c_in * mult)
        idx = taps[p] * c_in + c[:, None]
        return [Wiring(value=idx, dst=idx, synapse=synapse, valid=valid[p])]
