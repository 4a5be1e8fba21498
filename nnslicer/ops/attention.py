"""Attention's own ops: the product of two computed tensors and the softmax over keys.

MultiHeadAttention lifts into its primitives (SPEC.md section 3, ops beyond the paper): the
query, key and value projections and the output projection are Dense ops at each position;
between them, for ``heads`` heads of ``depth`` features each (a projection's ``heads * depth``
features, head-major, as Keras lays them out):

* ``scores`` (:class:`Product`, ``contract="features"``): query ``[Tq, heads*depth]`` and key
  ``[Tk, heads*depth]`` into ``[Tq, Tk, heads]``, ``y[q, k, h] = sum_d Q[q, h, d] K[k, h, d]``;
* ``softmax`` (:class:`Softmax`) over the keys (axis 1), a route;
* ``context`` (:class:`Product`, ``contract="keys"``): probabilities ``[Tq, Tk, heads]`` and
  value ``[Tk, heads*depth]`` into ``[Tq, heads*depth]``, ``y[q, h, d] = sum_k P[q, k, h] V[k, h, d]``;
  with Keras masks of the queries and keys (its later inputs), the terms of masked pairs are no
  candidates.

Heads are the last axis of the scores and probabilities, so that at channel granularity a
neuron of theirs is a head (the mean over query and key positions).
"""

from __future__ import annotations

import numpy as np

from .base import LinearHandler, RouteHandler, Wiring, half_sum
from .passthrough import paper_sign


class Softmax(RouteHandler):
    """Softmax over ``params["axis"]`` (of the tensor without its batch axis), inside the model
    (attention's over keys): a route, each neuron's count to the same neuron of its input
    (``propagation="paper"``: the sign rule of activations). With ``weights["mask"]`` (1 where
    a score is kept, broadcast over the scores; a causal mask), masked scores take no part; so
    with Keras masks of the queries and keys, the op's later inputs, ``params["mask_axes"]``
    saying the axis of the scores each runs along (0 queries, 1 keys)."""

    kind = "softmax"
    follower = True

    def is_channelwise(self, op):
        return op.params["axis"] != len(op.shape) - 1

    def forward(self, op, inputs):
        import tensorflow as tf

        x = inputs[0]
        mask = op.weights.get("mask")
        for axis, m in zip(op.params.get("mask_axes", ()), inputs[1:]):  # [B, T] -> [B, Tq, 1, 1] or [B, 1, Tk, 1]
            m = tf.reshape(m, (-1, op.shape[0], 1, 1) if axis == 0 else (-1, 1, op.shape[1], 1))
            mask = m if mask is None else mask * m
        if mask is not None:  # as Keras masks a softmax: a large negative number where masked
            x = x + (1.0 - mask) * -1e9
        return tf.nn.softmax(x, axis=op.params["axis"] + 1)

    def route(self, op, granularity, out):
        return [(0, np.arange(len(out)), out)]

    def paper_factor(self, step, index, rows, dst, b):
        return paper_sign(step, dst, b)


class Product(LinearHandler):
    """A product of two computed tensors, ``y = sum_k a_k * b_k`` over a contracted axis (see the
    module's docstring for the two layouts, ``params["contract"]``: ``"features"`` for attention
    scores, ``"keys"`` for the context; ``params["heads"]``).

    Each term's change is split between its two factors as Multiply splits a product (the exact
    two-player Shapley split): ``c_a = delta_a * (base_b + b) / 2``, ``c_b = delta_b * (base_a +
    a) / 2``, the base being the profile's mean. A neuron has ``2K`` candidates (K terms), one
    theta rule over all of them; a kept one's count goes to its factor's neuron.

    At channel granularity an output channel's candidate is the term's share averaged over the
    output positions; a factor that does not vary along an averaged axis factors out of the
    mean, so each input is averaged over the output axis it alone carries (the query over
    query positions for scores, the probabilities over query positions for the context).
    """

    kind = "matmul"

    def forward(self, op, inputs):
        import tensorflow as tf

        a, b = inputs[:2]  # later inputs: the Keras masks of the context's terms (its backward reads them)
        heads = op.params["heads"]
        if op.params["contract"] == "features":  # [B, Tq, H, d] x [B, Tk, H, d] -> [B, Tq, Tk, H]
            q = tf.reshape(a, (-1, op.input_shapes[0][0], heads, op.input_shapes[0][1] // heads))
            k = tf.reshape(b, (-1, op.input_shapes[1][0], heads, op.input_shapes[1][1] // heads))
            return tf.einsum("bqhd,bkhd->bqkh", q, k)
        v = tf.reshape(b, (-1, op.input_shapes[1][0], heads, op.input_shapes[1][1] // heads))
        y = tf.einsum("bqkh,bkhd->bqhd", a, v)  # [B, Tq, Tk, H] x [B, Tk, H, d] -> [B, Tq, H, d]
        return tf.reshape(y, (-1,) + tuple(op.shape))

    def _dims(self, op):
        """``(Tq, Tk, heads, depth)``."""
        heads = op.params["heads"]
        if op.params["contract"] == "features":
            return op.input_shapes[0][0], op.input_shapes[1][0], heads, op.input_shapes[0][1] // heads
        return op.input_shapes[0][0], op.input_shapes[0][1], heads, op.input_shapes[1][1] // heads

    def _averaged(self, op, index, granularity):
        """The axis of input ``index`` (without batch) that a channel's mean averages out, or None."""
        if granularity != "channel":
            return None
        if op.params["contract"] == "features":
            return 0  # the query over query positions, the key over key positions
        return 0 if index == 0 else None  # the probabilities over query positions; the value is not

    def _attended(self, step):
        """The sample's attention mask ``[B, Tq, Tk, 1]`` (1: the query attends to the key) from
        the Keras masks among the op's later inputs (``params["mask_axes"]``), or None."""
        op = step.op
        mask = None
        for axis, name in zip(op.params.get("mask_axes", ()), op.inputs[2:]):
            m = step.act(name).reshape((step.batch, -1, 1, 1) if axis == 0 else (step.batch, 1, -1, 1)) > 0.5
            mask = m if mask is None else mask & m
        return mask

    def values(self, step, index):
        """``(delta, half)`` of input ``index``, flat per sample: what its candidates multiply
        (its delta, raw values for EffectivePath) and what the other factor's candidates multiply
        (``(base + value) / 2``), averaged as the granularity asks. The context's terms of a
        masked query and key (Keras masks: the sample's padding) are no candidates: at element
        granularity they are missing (NaN), in a channel's mean they count 0."""
        op = step.op
        name = op.inputs[index]
        own, half = step.source(name).astype(np.float64), half_sum(step, name)
        attended = self._attended(step) if index == 0 else None
        if attended is not None:
            own, half = (np.where(attended, v, 0.0 if step.granularity == "channel" else np.nan) for v in (own, half))
        axis = self._averaged(op, index, step.granularity)
        if axis is not None:
            own, half = own.mean(axis=axis + 1), half.mean(axis=axis + 1)
        return own.reshape(step.batch, -1), half.reshape(step.batch, -1)

    def fused_backward(self, step, b, o, direction, y, in_sizes):
        from ..backward.op_kernels import product_backward

        op, graph = step.op, step.graph
        _, tk, heads, depth = self._dims(op)
        ins = product_backward([self.values(step, j) for j in range(2)], op.params["contract"],
                               step.granularity == "channel", tk, heads, depth, b, o, direction, y, step.rule,
                               step.theta, step.bar, in_sizes[:2])  # the masks get no counts
        return [arr.reshape((step.batch,) + graph.neuron_shape(t)) for arr, t in zip(ins, op.inputs)], None

    def terms(self, step, index, values, rows, wire):
        own, _ = values[index]
        _, partner = values[1 - index]
        return own[rows[:, None], wire.value] * partner[rows[:, None], wire.partner]

    def wiring(self, op, granularity, out):
        tq, tk, heads, depth = self._dims(op)
        width = heads * depth
        channel = granularity == "channel"
        if op.params["contract"] == "features":
            h = out % heads
            feature = (h * depth)[:, None] + np.arange(depth)  # [n, depth]: the head's features
            if channel:
                return [Wiring(value=feature, dst=feature, partner=feature),
                        Wiring(value=feature, dst=feature, partner=feature)]
            q, k = out // (tk * heads), (out // heads) % tk
            at_q, at_k = q[:, None] * width + feature, k[:, None] * width + feature
            return [Wiring(value=at_q, dst=at_q, partner=at_k), Wiring(value=at_k, dst=at_k, partner=at_q)]
        c = out % width
        h = c // depth
        keys = np.arange(tk)[None, :]
        at_v = keys * width + c[:, None]  # [n, Tk]
        if channel:
            at_p = keys * heads + h[:, None]  # into the probabilities averaged over queries
            return [Wiring(value=at_p, dst=np.broadcast_to(h[:, None], at_p.shape), partner=at_v),
                    Wiring(value=at_v, dst=np.broadcast_to(c[:, None], at_v.shape), partner=at_p)]
        q = out // width
        at_p = (q[:, None] * tk + keys) * heads + h[:, None]
        return [Wiring(value=at_p, dst=at_p, partner=at_v), Wiring(value=at_v, dst=at_v, partner=at_p)]
