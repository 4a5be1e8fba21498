"""Embedding: a lookup of one row of a table a token (SPEC.md section 3, ops beyond the paper).

Output neuron ``(p, d)`` is ``embeddings[token_p, d]``: it has no candidates to choose from, so
its count goes unchanged to the token's position ``p`` and to the synapse
``embeddings[token_p, d]`` (which synapse depends on the sample's token). At channel
granularity feature ``d`` of the sequence comes from every position: its count goes to each
position and to each position's row. The token ids are the op's input, fed as numbers (an
integer input is fed as float32, exact up to 2**24); their profile means are taken as any
tensor's, and never used as deltas.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedLayerError
from .base import Handler


class Embedding(Handler):
    """``y[..., d] = embeddings[x[...], d]``; synapse ``(v, d)`` is ``embeddings[v, d]``."""

    kind = "embedding"
    synapse_weight = "embeddings"

    def forward(self, op, inputs):
        import tensorflow as tf

        return tf.gather(op.weights["embeddings"], tf.cast(inputs[0], tf.int32))

    def check(self, op, granularity):
        if granularity == "channel" and len(op.input_shapes[0]) != 1:
            raise UnsupportedLayerError(
                f"Layer {op.layer!r} ({op.layer_class}) looks up tokens of shape {op.input_shapes[0]}; at channel "
                "granularity nnslicer reads a sequence of tokens [T]. Use granularity='element' "
                "(--granularity element) for this model.")

    def _rows(self, op, granularity, out):
        """``(rows, position, feature)``: output neuron ``out[rows]`` reads feature ``feature`` of
        the token at input position ``position``."""
        depth = op.weights["embeddings"].shape[1]
        if granularity == "channel":  # feature d of every position
            positions = int(np.prod(op.input_shapes[0]))
            rows = np.repeat(np.arange(len(out)), positions)
            return rows, np.tile(np.arange(positions), len(out)), out[rows]
        return np.arange(len(out)), out // depth, out % depth

    def backward(self, step):
        op = step.op
        batch = step.batch
        counts = step.contrib.reshape(batch, -1)
        b, o = np.nonzero(counts)
        rows, position, feature = self._rows(op, step.granularity, o)
        b, vals = b[rows], counts[b[rows], o[rows]]
        tokens = step.act(op.inputs[0]).reshape(batch, -1).astype(np.int64)[b, position]
        size = int(np.prod(op.input_shapes[0]))
        positions = np.bincount(b * size + position, weights=vals, minlength=batch * size).astype(np.int64)
        vocabulary, depth = op.weights["embeddings"].shape
        synapses = np.bincount(b * (vocabulary * depth) + tokens * depth + feature, weights=vals,
                               minlength=batch * vocabulary * depth).astype(np.int64)
        return ([positions.reshape((batch,) + tuple(op.input_shapes[0]))],
                synapses.reshape((batch, vocabulary, depth)))

    def connections(self, op, granularity, out=None):
        """Position ``p`` to the neurons of its token; which synapse depends on the token (-1)."""
        from .base import _all_outputs

        out = _all_outputs(op, granularity) if out is None else np.asarray(out, dtype=np.int64)
        rows, position, _ = self._rows(op, granularity, out)
        return [(0, position, out[rows], np.full(len(rows), -1))]
