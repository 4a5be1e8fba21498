"""Weighted ops: Dense, Conv2D, DepthwiseConv2D, and a learned per-channel scale.

Candidates of an output neuron are ``w_i * delta_x_i`` over its receptive field; a kept
candidate's signed count goes to the input neuron and to the synapse (SPEC.md section 3).
At channel granularity a conv neuron is a channel and the candidate for kernel weight
``(kh, kw, c_in)`` is ``w`` times the mean, over output positions, of what that tap reads.
"""

from __future__ import annotations

import functools

import numpy as np

from .base import LinearHandler, Wiring, all_taps, fused_spec, on_map, tap_means, window_of


def _positions(op, granularity):
    """How many neurons of the op's input share one channel axis: 1 for a vector, or for a
    feature map at channel granularity; its positions otherwise (a sequence, a map)."""
    from ..graph import neuron_shape

    return int(np.prod(neuron_shape(op.input_shapes[0], granularity)[:-1]))


def kernel_4d(op):
    """The op's kernel as a 2-D window's ``[kh, kw, ...]``: a 1-D convolution's ``[k, ...]``
    (as Keras holds it, and as its synapses are indexed) is a window of one row."""
    kernel = op.weights["kernel"]
    shape = tuple(kernel.shape)
    if len(shape) == 4:
        return kernel
    if isinstance(kernel, np.ndarray):
        return kernel.reshape((1,) * (4 - len(shape)) + shape)
    import tensorflow as tf  # the executor's constants

    return tf.reshape(kernel, (1,) * (4 - len(shape)) + shape)


def _each_position(op, granularity):
    """``(taps, valid)`` of an op applied at each position alone: position ``p`` reads ``p``."""
    n = _positions(op, granularity)
    return np.arange(n)[:, None], np.ones((n, 1), dtype=bool)


def _columns(op):
    """``(start, stop)`` of the kernel's columns that a Dense op computes (all but for a block of
    a recurrent kernel, ``params["columns"]``), and the kernel's number of columns."""
    total = op.weights["kernel"].shape[1]
    start, stop = op.params.get("columns", (0, total))
    return start, stop, total


class Dense(LinearHandler):
    """``y = x @ kernel + bias`` over the last axis; synapse ``(i, j)`` is ``kernel[i, j]``.
    On a rank > 1 input it applies at each position with the one kernel (a 1x1 convolution),
    so a synapse's counts add up over positions (SPEC.md section 3, ops beyond the paper).
    With ``params["columns"] = [start, stop]`` it computes that block of the kernel's columns
    (a GRU's candidate state reads one block of its recurrent kernel); its synapses are still
    indexed in the whole kernel."""

    kind = "dense"
    synapse_weight = "kernel"

    def channel_axes(self, op):
        return 0, 1

    def forward(self, op, inputs):
        import tensorflow as tf

        start, stop, total = _columns(op)
        kernel = op.weights["kernel"] if (start, stop) == (0, total) else op.weights["kernel"][:, start:stop]
        return tf.matmul(inputs[0], kernel) + op.weights["bias"]

    def fused_window(self, op, granularity):
        from ..backward.op_kernels import CONV

        n_in, n_out = op.weights["kernel"].shape
        if "columns" in op.params:  # the fused kernel indexes synapses in the block: numpy's wiring does not
            return None
        return fused_spec(CONV, *_each_position(op, granularity), n_in, n_out,
                          op.weights["kernel"].reshape(1, n_in, n_out))

    def wiring(self, op, granularity, out):
        start, stop, total = _columns(op)
        n_in, n_out = op.weights["kernel"].shape[0], stop - start
        i = np.arange(n_in)[None, :]
        idx = (out // n_out)[:, None] * n_in + i  # the input at the output's position
        return [Wiring(value=idx, dst=idx, synapse=i * total + start + (out % n_out)[:, None])]


class Conv2D(LinearHandler):
    """2-D convolution (any stride and dilation, same/valid padding); synapses are the
    kernel's weights ``(kh, kw, c_in / groups, c_out)``, each shared by every output position.
    With ``params["groups"] = g`` (default 1), output channel ``q`` reads only the input
    channels of its group ``q // (c_out / g)``. Conv1D is this op over a sequence read as a map
    of one row, with its kernel ``(k, c_in, c_out)`` as Keras holds it."""

    kind = "conv2d"
    synapse_weight = "kernel"

    def channel_axes(self, op):
        if op.params.get("groups", 1) != 1:  # a group's channels come and go together
            return None, None
        return -2, -1  # (kh, kw, c_in, c_out); a 1-D kernel (k, c_in, c_out)

    def forward(self, op, inputs):
        return on_map(op, inputs[0], functools.partial(self._conv, op)) + op.weights["bias"]

    @staticmethod
    def _conv(op, x):
        import tensorflow as tf

        p = op.params
        kernel, groups = kernel_4d(op), p.get("groups", 1)
        conv = functools.partial(tf.nn.conv2d, strides=p["strides"], padding=p["padding"].upper(),
                                 dilations=p["dilation_rate"])
        if groups == 1:
            return conv(x, kernel)
        if kernel.shape[2] == 1:  # one input channel a group: a depthwise convolution
            kh, kw, _, c_out = kernel.shape
            s = p["strides"]
            return tf.nn.depthwise_conv2d(x, tf.reshape(kernel, (kh, kw, groups, c_out // groups)),
                                          strides=(1, s[0], s[1], 1), padding=p["padding"].upper(),
                                          dilations=p["dilation_rate"])
        # TensorFlow has no grouped convolution on CPU: group by group
        parts = tf.split(x, groups, axis=-1)
        kernels = tf.split(kernel, groups, axis=-1)
        return tf.concat([conv(a, k) for a, k in zip(parts, kernels)], axis=-1)

    def values(self, step, index):
        if step.granularity == "channel":
            means = tap_means(step, step.op, step.source(step.op.inputs[0]))
            return means.reshape(step.batch, -1)
        return LinearHandler.values(self, step, index)

    def fused_window(self, op, granularity):
        from ..backward.op_kernels import CONV

        kh, kw, c_group, c_out = kernel_4d(op).shape
        taps, valid = all_taps(kh * kw) if granularity == "channel" else window_of(op)[1:]
        return fused_spec(CONV, taps, valid, op.input_shapes[0][-1], c_out,
                          kernel_4d(op).reshape(kh * kw, c_group, c_out), to_channel=granularity == "channel")

    def wiring(self, op, granularity, out):
        kh, kw, c_group, c_out = kernel_4d(op).shape
        c_in = op.input_shapes[0][-1]
        n_taps = kh * kw
        q = out % c_out
        first = (q // (c_out // (c_in // c_group)) * c_group)[:, None, None]  # of the group's input channels
        channels = first + np.arange(c_group)  # [n, 1, c_group]
        synapse = (np.arange(n_taps)[:, None] * c_group + np.arange(c_group)).reshape(1, -1) * c_out + q[:, None]
        if granularity == "channel":
            tap_channel = (np.arange(n_taps)[None, :, None] * c_in + channels).reshape(len(out), -1)
            dst = np.broadcast_to(channels, (len(out), n_taps, c_group)).reshape(len(out), -1)
            return [Wiring(value=tap_channel, dst=dst, synapse=synapse)]
        _, taps, valid = window_of(op)
        pos = taps[out // c_out]  # [n, taps]
        idx = (pos[:, :, None] * c_in + channels).reshape(len(out), -1)
        return [Wiring(value=idx, dst=idx, synapse=synapse,
                       valid=np.repeat(valid[out // c_out], c_group, axis=1))]


class DepthwiseConv2D(LinearHandler):
    """Depthwise convolution: output channel ``c * multiplier + m`` reads input channel ``c``;
    synapses are the kernel's weights ``(kh, kw, c_in, multiplier)`` (DepthwiseConv1D: this op
    over a sequence, with its kernel ``(k, c_in, multiplier)``)."""

    kind = "depthwise_conv2d"
    synapse_weight = "kernel"

    def forward(self, op, inputs):
        import tensorflow as tf

        p = op.params
        s = p["strides"]
        conv = functools.partial(tf.nn.depthwise_conv2d, filter=kernel_4d(op), strides=(1, s[0], s[1], 1),
                                 padding=p["padding"].upper(), dilations=p["dilation_rate"])
        return on_map(op, inputs[0], conv) + op.weights["bias"]

    values = Conv2D.values

    def fused_window(self, op, granularity):
        from ..backward.op_kernels import DEPTHWISE

        kh, kw, c_in, mult = kernel_4d(op).shape
        taps, valid = all_taps(kh * kw) if granularity == "channel" else window_of(op)[1:]
        return fused_spec(DEPTHWISE, taps, valid, c_in, c_in * mult, kernel_4d(op).reshape(kh * kw, c_in, mult),
                          mult=mult, to_channel=granularity == "channel")

    def wiring(self, op, granularity, out):
        kh, kw, c_in, mult = kernel_4d(op).shape
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


class Scale(LinearHandler):
    """A learned per-channel scale (LayerScale): ``y = x * kernel`` over the last axis. An output
    neuron has one candidate, ``kernel[c] * delta_x``, always kept (SPEC.md section 3); its count
    goes to the input neuron and to the synapse ``kernel[c]``."""

    kind = "scale"
    synapse_weight = "kernel"
    channelwise = True
    channel_weights = ("kernel",)
    silencing_weights = ("kernel",)

    def forward(self, op, inputs):
        return inputs[0] * op.weights["kernel"]

    def fused_window(self, op, granularity):
        from ..backward.op_kernels import DEPTHWISE

        c = op.weights["kernel"].shape[0]
        return fused_spec(DEPTHWISE, *_each_position(op, granularity), c, c, op.weights["kernel"].reshape(1, c, 1))

    def wiring(self, op, granularity, out):
        idx = out[:, None]
        return [Wiring(value=idx, dst=idx, synapse=idx % op.weights["kernel"].shape[0])]
