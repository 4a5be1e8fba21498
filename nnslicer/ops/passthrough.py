"""Pass-through ops: the count of an output neuron goes unchanged to its source neuron.

Element-wise activations, batch normalization and dropout keep the index; Flatten, Reshape,
ZeroPadding2D and Cropping2D remap it. With ``propagation="paper"`` (the paper's Table 2),
ReLU passes only where its input is > 0 and batch norm and other activations send
``sign(CONTRIB[n] * delta_y_n * delta_x)``.
"""

from __future__ import annotations

import operator

import numpy as np

from ..errors import UnsupportedLayerError
from ..graph import has_channels
from .base import RouteHandler, on_map, spatial


def paper_sign(step, dst, b):
    """The paper's rule for scale-like ops: ``sign(count * delta_y * delta_x)``."""
    batch = step.batch
    dx = step.neuron_delta(step.op.inputs[0]).reshape(batch, -1)[b, dst]

    def factor(vals, out):
        dy = step.neuron_delta(step.op.name).reshape(batch, -1)[b, out]
        return np.sign(vals) * np.sign(dy) * np.sign(dx)

    return factor


class _SameIndex(RouteHandler):
    def route(self, op, granularity, out):
        return [(0, np.arange(len(out)), out)]


class Activation(_SameIndex):
    """Element-wise activations (relu, linear, sigmoid, tanh, elu, selu, gelu, softplus,
    softsign, swish/silu, leaky_relu, relu6, hard_sigmoid) and softmax at the output."""

    kind = "activation"
    channelwise = True
    follower = True

    def is_channelwise(self, op):
        return op.params.get("activation") != "softmax"  # softmax mixes the last axis

    def forward(self, op, inputs):
        import keras

        params = dict(op.params)
        name = params.pop("activation")
        if name == "softmax":
            return keras.activations.softmax(inputs[0], axis=-1)
        return keras.activations.get(name)(inputs[0], **params)

    def paper_factor(self, step, index, rows, dst, b):
        if step.op.params["activation"] == "relu" and len(step.op.params) == 1:
            x = step.neuron_act(step.op.inputs[0]).reshape(step.batch, -1)[b, dst]
            return lambda vals, out: vals * (x > 0)
        return paper_sign(step, dst, b)


class _ScaleLike(_SameIndex):
    """Element-wise rescalings (normalizations, operations with a constant): the paper's rule is
    the sign rule, ``sign(count * delta_y * delta_x)``."""

    def paper_factor(self, step, index, rows, dst, b):
        return paper_sign(step, dst, b)


class BatchNormalization(_ScaleLike):
    """Inference-mode batch normalization over the last axis."""

    kind = "batch_norm"
    channelwise = True
    channel_weights = ("gamma", "beta", "moving_mean", "moving_variance")
    silencing_weights = ("gamma", "beta")
    follower = True

    def forward(self, op, inputs):
        import tensorflow as tf

        w = op.weights
        inv = tf.math.rsqrt(w["moving_variance"] + op.params["epsilon"]) * w["gamma"]
        return inputs[0] * inv + (w["beta"] - w["moving_mean"] * inv)


def _subtract_from(x, c):
    return c - x


class Constant(_ScaleLike):
    """An element-wise operation with a constant, as Keras computes it: ``x + c``, ``x - c``,
    ``c - x``, ``x * c``, ``x / c`` (Keras op layers such as ``x + 3.0``, ``x * (1 / 6)``) and
    Rescaling's ``x * scale + offset``. The constants (``weights``, broadcast over the op's
    shape) are not synapses: like batch norm, it routes each neuron's count to the same neuron."""

    kind = "constant"
    channelwise = True
    follower = True  # its constants may be scalars, per channel or per element: none is a channel weight
    #: The operations, from the input ``x`` and the op's weights ``w`` (applied in order).
    OPERATIONS = {"add": operator.add, "subtract": operator.sub, "subtract_from": _subtract_from,
                  "multiply": operator.mul, "divide": operator.truediv}

    def forward(self, op, inputs):
        x = inputs[0]
        for name, key in op.params["steps"]:
            x = self.OPERATIONS[name](x, op.weights[key])
        return x


class LayerNormalization(_ScaleLike):
    """Layer normalization over the last axis, as Keras computes it: a per-sample rescaling,
    whose counts go to the same neuron (as batch norm's)."""

    kind = "layer_norm"
    follower = True  # routes one to one as batch norm, but each output mixes every channel of its position

    def forward(self, op, inputs):
        import keras

        return keras.ops.layer_normalization(inputs[0], op.weights["gamma"], op.weights["beta"], axis=-1,
                                             epsilon=op.params["epsilon"], rms_scaling=op.params["rms_scaling"])


class Identity(_SameIndex):
    """Dropout (and other inference-time identities)."""

    kind = "identity"
    channelwise = True
    follower = True

    def forward(self, op, inputs):
        return inputs[0]


class Reshape(RouteHandler):
    """Flatten and Reshape (row-major, as Keras). At channel granularity a reshape that keeps
    the channel axis ([H, W, C] to [H*W, C], a vector to [1, 1, C]) keeps each channel, and the
    counts that reach the elements of a flattened map or sequence are summed per channel."""

    kind = "reshape"
    follower = True

    def is_channelwise(self, op):
        """Row-major: a reshape that keeps the last axis keeps every element's channel."""
        return len(op.shape) > 0 and len(op.input_shapes[0]) > 0 and op.shape[-1] == op.input_shapes[0][-1]

    def flattened_channels(self, op):
        return op.input_shapes[0][-1] if has_channels(op.input_shapes[0]) and len(op.shape) == 1 else None

    def forward(self, op, inputs):
        import tensorflow as tf

        return tf.reshape(inputs[0], (-1,) + tuple(op.shape))

    def check(self, op, granularity):
        if granularity == "channel" and has_channels(op.shape) and not self.is_channelwise(op):
            raise UnsupportedLayerError(
                f"Layer {op.layer!r} ({op.layer_class}) reshapes {op.input_shapes[0]} into {op.shape}, another "
                "number of channels; its counts cannot be mapped to channels. Use granularity='element' "
                "(--granularity element) for this model.")

    def route(self, op, granularity, out):
        rows = np.arange(len(out))
        if granularity == "channel" and has_channels(op.input_shapes[0]) and not has_channels(op.shape):
            return [(0, rows, out % op.input_shapes[0][-1])]
        return [(0, rows, out)]


class Mask(RouteHandler):
    """A Keras mask: 1.0 where the input differs from ``params["value"]`` (a padding token),
    else 0.0 (``Embedding(mask_zero=True)``'s). Ops that read it (a masked average, a recurrent
    layer's steps, attention's softmax) take it as a per-sample constant: no count reaches it."""

    kind = "mask"

    def forward(self, op, inputs):
        import tensorflow as tf

        return tf.cast(tf.not_equal(inputs[0], op.params["value"]), tf.float32)

    def route(self, op, granularity, out):
        return []


class Select(RouteHandler):
    """``where(mask, a, b)``: ``a`` where the per-sample mask (its first input, ``[1]``) is 1,
    else ``b`` (zeros without a third input): a masked step of a recurrent layer keeps its state.
    Counts go to the input the sample took; none to the mask."""

    kind = "select"

    def forward(self, op, inputs):
        import tensorflow as tf

        b = inputs[2] if len(inputs) > 2 else tf.zeros_like(inputs[1])
        return tf.where(inputs[0] > 0.5, inputs[1], b)

    def route(self, op, granularity, out):  # pragma: no cover - backward reads each sample's mask
        raise NotImplementedError

    def backward(self, step):
        op = step.op
        batch = step.batch
        counts = step.contrib.reshape(batch, -1)
        taken = step.act(op.inputs[0]).reshape(batch, -1)[:, 0] > 0.5
        result = [np.zeros((batch,) + step.graph.neuron_shape(op.inputs[0]), np.int64)]
        for j, chosen in ((1, taken), (2, ~taken)):
            if j < len(op.inputs):
                result.append((counts * chosen[:, None]).reshape((batch,) + step.graph.neuron_shape(op.inputs[j])))
        return result, None

    def connections(self, op, granularity, out=None):
        """Neuron ``n`` may come from ``a[n]`` or ``b[n]``, as the sample's mask says."""
        from .base import _all_outputs

        out = _all_outputs(op, granularity) if out is None else np.asarray(out, dtype=np.int64)
        return [(j, out, out, np.full(len(out), -1)) for j in range(1, len(op.inputs))]


class Slice(RouteHandler):
    """``x[..., start:stop, ...]`` along ``params["axis"]`` (of the tensor without its batch
    axis), the axis dropped when ``params["squeeze"]`` (one time step of a sequence): a
    recurrent layer's step reads ``x[t]``, and its gates are blocks of one vector."""

    kind = "slice"
    follower = False

    def is_channelwise(self, op):
        return len(op.shape) == len(op.input_shapes[0]) and op.params["axis"] != len(op.shape) - 1

    def forward(self, op, inputs):
        p = op.params
        index = [slice(None)] * (len(op.input_shapes[0]) + 1)
        index[p["axis"] + 1] = p["start"] if p.get("squeeze") else slice(p["start"], p["stop"])
        return inputs[0][tuple(index)]

    def route(self, op, granularity, out):
        p = op.params
        in_shape = tuple(op.input_shapes[0])
        rows = np.arange(len(out))
        last = p["axis"] == len(in_shape) - 1
        if granularity == "channel" and has_channels(in_shape):  # to the channel of the element or channel
            channel = out % op.shape[-1] if len(op.shape) else out
            return [(0, rows, channel + (p["start"] if last else 0))]
        shape = tuple(op.shape)
        if p.get("squeeze"):
            shape = shape[:p["axis"]] + (1,) + shape[p["axis"]:]
        coords = list(np.unravel_index(out, shape))
        coords[p["axis"]] = coords[p["axis"]] + p["start"]
        return [(0, rows, np.ravel_multi_index(coords, in_shape))]


class Stack(RouteHandler):
    """Its inputs (of one shape) stacked along a new first axis: a recurrent layer's outputs
    over time, ``[T, units]``. At channel granularity every input has every channel."""

    kind = "stack"

    def forward(self, op, inputs):
        import tensorflow as tf

        return tf.stack(list(inputs), axis=1)

    def route(self, op, granularity, out):
        if granularity == "channel":
            return [(j, np.arange(len(out)), out) for j in range(len(op.inputs))]
        size = int(np.prod(op.shape[1:]))
        step, rest = np.divmod(out, size)
        return [(j, np.flatnonzero(step == j), rest[step == j]) for j in range(len(op.inputs))]


class _Offset(RouteHandler):
    """Shared by padding and cropping (2-D, and 1-D over a sequence read as a map of one row):
    an output (h, w, c) reads input (h + dh, w + dw, c), where that lies inside the input."""

    channelwise = True

    def offsets(self, op):
        raise NotImplementedError

    def route(self, op, granularity, out):
        if granularity == "channel":
            return [(0, np.arange(len(out)), out)]
        (_, w), c = spatial(op.shape), op.shape[-1]
        ih, iw = spatial(op.input_shapes[0])
        dh, dw = self.offsets(op)
        oh, rest = np.divmod(out, w * c)
        ow, oc = np.divmod(rest, c)
        r, s = oh + dh, ow + dw
        inside = (r >= 0) & (r < ih) & (s >= 0) & (s < iw)
        rows = np.flatnonzero(inside)
        return [(0, rows, (r[rows] * iw + s[rows]) * c + oc[rows])]


class ZeroPadding2D(_Offset):
    """``params["padding"] = [[top, bottom], [left, right]]`` (ZeroPadding1D: ``[[0, 0], [left, right]]``)."""

    kind = "zero_padding"

    def forward(self, op, inputs):
        import tensorflow as tf

        (t, b), (l, r) = op.params["padding"]
        return on_map(op, inputs[0], lambda x: tf.pad(x, [[0, 0], [t, b], [l, r], [0, 0]]))

    def offsets(self, op):
        (t, _), (l, _) = op.params["padding"]
        return -t, -l


class Cropping2D(_Offset):
    """``params["cropping"] = [[top, bottom], [left, right]]`` (Cropping1D: ``[[0, 0], [left, right]]``)."""

    kind = "cropping"

    def forward(self, op, inputs):
        (t, _), (l, _) = op.params["cropping"]
        h, w = spatial(op.shape)
        return on_map(op, inputs[0], lambda x: x[:, t:t + h, l:l + w, :])

    def offsets(self, op):
        (t, _), (l, _) = op.params["cropping"]
        return t, l


class UpSampling(RouteHandler):
    """Nearest-neighbour upsampling by ``params["size"] = [sh, sw]`` (UpSampling1D: ``[1, s]``):
    output (h, w, c) is input (h // sh, w // sw, c)."""

    kind = "upsample"
    channelwise = True

    def forward(self, op, inputs):
        import tensorflow as tf

        sh, sw = op.params["size"]
        return on_map(op, inputs[0], lambda x: tf.repeat(tf.repeat(x, sh, axis=1), sw, axis=2))

    def route(self, op, granularity, out):
        rows = np.arange(len(out))
        if granularity == "channel":
            return [(0, rows, out)]
        (_, w), c = spatial(op.shape), op.shape[-1]
        _, iw = spatial(op.input_shapes[0])
        sh, sw = op.params["size"]
        oh, rest = np.divmod(out, w * c)
        ow, oc = np.divmod(rest, c)
        return [(0, rows, ((oh // sh) * iw + ow // sw) * c + oc)]
