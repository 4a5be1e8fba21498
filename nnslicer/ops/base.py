"""What every op handler shares: the backward step's view of the data, and the two rule
families of SPEC.md's table written once.

* :class:`LinearHandler` -- ops whose output neuron is a weighted sum of input neurons
  (Dense, Conv2D, DepthwiseConv2D, average pooling, Add). A handler says only how output
  neurons are *wired* (which input values, which input neurons, which synapses); candidates,
  the theta rule and the signed counts are computed here for all of them, by the fused numba
  kernel of :mod:`nnslicer.backward.op_kernels` for the window ops (those with ``fused_window``) and by
  vectorised numpy otherwise (and everywhere with ``kernels="numpy"``).
* :class:`RouteHandler` -- ops that hand an output neuron's count on unchanged to the input
  neuron(s) it comes from (activations, batch norm, reshapes, padding, concatenation).
  A handler says only where each output neuron comes from.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


#: The kernels a backward analysis runs when it is not told (``backward(..., kernels=None)``):
#: "numba" (fused, when numba is installed) or "numpy" (vectorised arrays); both give the same
#: counts. The Slicer resolves it when it slices and passes the choice on, to Ray workers too.
KERNELS = None
KERNEL_CHOICES = ("numba", "numpy")


def resolve_kernels(choice=None):
    """``choice`` ("numba" or "numpy") checked, or the process default (:data:`KERNELS`)."""
    global KERNELS
    if choice is None:
        if KERNELS is None:
            KERNELS = "numba" if importlib.util.find_spec("numba") is not None else "numpy"
        choice = KERNELS
    from ..validation import Options, check_param

    return check_param(choice, "kernels", None, Options(KERNEL_CHOICES))


def _select(choice):
    """The theta rules' implementation for the numpy path: numba's batched one when allowed."""
    if choice == "numba":
        from ..backward.rule_kernels import select
    else:
        from ..backward.rules import select
    return select


#: Most candidates held in memory at once by one backward step (rows are processed in chunks).
CHUNK_CANDIDATES = 1 << 22


@dataclass
class Wiring:
    """How a batch of output neurons reads one input: arrays of shape [n, k].

    ``value``: flat index into :meth:`LinearHandler.values` (what the candidate multiplies);
    ``dst``: flat index of the input neuron that a kept candidate's count goes to;
    ``synapse``: flat index into the op's synapse array, or None (weight 1, no synapse);
    ``valid``: False where the candidate does not exist (a tap that reads padding), or None;
    ``partner``: for a product of two tensors, the flat index into the other factor's values.
    """

    value: np.ndarray
    dst: np.ndarray
    synapse: np.ndarray | None = None
    valid: np.ndarray | None = None
    partner: np.ndarray | None = None


class Step:
    """One op's backward step over a batch: its counts, the tape, and the parameters."""

    def __init__(self, graph, op, tape, contrib, rule, theta, propagation, bar, kernels=None):
        self.graph, self.op, self.tape, self.contrib = graph, op, tape, contrib
        self.rule, self.theta, self.propagation, self.bar = rule, theta, propagation, bar
        # "numba" or "numpy" (None: the process default); backward() passes its checked choice
        self.kernels = kernels if kernels in KERNEL_CHOICES else resolve_kernels(kernels)
        self.granularity = graph.granularity

    @property
    def batch(self) -> int:
        return self.contrib.shape[0]

    def act(self, name):
        """Raw activations of tensor ``name`` at element level, [B, *shape]."""
        return self.tape.acts[name]

    def delta(self, name):
        return self.tape.deltas[name]

    def neuron_act(self, name):
        """Activations of ``name``'s neurons (channel means at channel granularity)."""
        return self._view(self.act(name))

    def neuron_delta(self, name):
        return self._view(self.delta(name))

    def source(self, name):
        """What candidates multiply: raw activations for EffectivePath, deltas otherwise."""
        return self.act(name) if self.rule == "effective_path" else self.delta(name)

    def _view(self, arr):
        if self.granularity == "channel" and arr.ndim >= 3:  # [B, *positions, C]: the mean over positions
            return arr.mean(axis=tuple(range(1, arr.ndim - 1)), dtype=np.float64)
        return arr


class Handler:
    """Base of all op handlers.

    Attributes
    ----------
    kind : str
        Key of the handler in the registry.
    synapse_weight : str or None
        Name of the weight array whose elements are the op's synapses.

    What the op means to the analyses and pictures (so that they need no list of kinds; the
    defaults are the conservative answers, right for any op):

    channelwise : bool, default False
        Output channel ``c`` (last axis) depends on channel ``c`` of the op's single input only,
        so a channel removed before the op is the same one channel removed after it: batch
        norm, element-wise activations, identities, pooling, padding, cropping. Asked through
        :meth:`is_channelwise`, which may look at the op (softmax is an activation that is not).
    channel_weights : tuple of str, default ()
        Names of the op's weights that hold one value per channel (their last axis): cutting a
        channel out of the op cuts them (batch norm's ``gamma``, ``beta`` and statistics).
        A channelwise op with other weights (larger than one value) cannot lose a channel.
    silencing_weights : tuple of str, default ()
        Of ``channel_weights``, those that, set to zero at channel ``c``, make output channel
        ``c`` exactly zero whatever the input (batch norm: ``gamma`` and ``beta``).
    follower : bool, default False
        Pictures draw the op inside its producer's box when it is the producer's only consumer
        and passes its single input's neurons on one to one (activations, batch norm, dropout,
        flatten): it shows nothing its producer's box does not.
    """

    kind = None
    synapse_weight = None
    channelwise = False
    channel_weights = ()
    silencing_weights = ()
    follower = False

    def is_channelwise(self, op):
        """Whether ``op`` is channelwise (see the class's ``channelwise``)."""
        return self.channelwise

    def flattened_channels(self, op):
        """``C`` when ``op`` flattens a feature map of ``C`` channels into a vector, row-major
        (element ``i`` of the output is channel ``i % C``, as Flatten), else None."""
        return None

    def channel_axes(self, op):
        """``(in_axis, out_axis)``: the axes of the op's synapse array along which the synapses
        of one input channel and of one output channel (unit, filter) lie, or None where there
        is no such axis. ``in_axis``: the op reads input channel ``c`` through index ``c`` of
        that axis only, and loses nothing else when the channel goes (Dense's kernel rows,
        Conv2D's kernel axis 2). ``out_axis``: output channel ``k`` is computed from index ``k``
        of that axis only, and can go alone (Dense's and Conv2D's last axis; not a
        DepthwiseConv2D's, whose output channel is an input channel and a multiplier)."""
        return None, None

    def forward(self, op, inputs):
        """The op's output from its inputs (TensorFlow tensors with a batch axis)."""
        raise NotImplementedError

    def backward(self, step):
        """Counts for each input (arrays [B, *input neuron shape]) and the op's synapses
        ([B, *synapse shape], or None)."""
        raise NotImplementedError

    def connections(self, op, granularity, out=None):
        """Neuron-level wiring into output neurons ``out`` (default: all), as
        ``[(input_index, src, dst, synapse)]`` with flat indices (synapse -1: none)."""
        raise NotImplementedError

    def check(self, op, granularity):
        """Raise if the op cannot be sliced at this granularity (checked before any work)."""


def half_sum(step, name):
    """``(base + value) / 2`` of tensor ``name`` at element level, float64: what the other
    factor of a product multiplies in its two-player Shapley share (SPEC.md section 3,
    Multiply); the base is the profile's mean (0 for EffectivePath, which reads raw values)."""
    value = step.act(name).astype(np.float64)
    base = 0.0 if step.rule == "effective_path" else value - step.delta(name).astype(np.float64)
    return (base + value) / 2


def _all_outputs(op, granularity):
    from ..graph import neuron_shape

    return np.arange(int(np.prod(neuron_shape(op.shape, granularity))))


def _sign(x):
    return np.sign(x).astype(np.int8)


class LinearHandler(Handler):
    """Ops whose output neuron is ``sum_i coef_i * x_i`` (SPEC.md: weighted sum, Add, average)."""

    def wiring(self, op, granularity, out):
        """One :class:`Wiring` per input for the output neurons ``out`` (flat indices)."""
        raise NotImplementedError

    def values(self, step, index):
        """The values that candidates of input ``index`` multiply, flat per sample [B, V]."""
        return step._view(step.source(step.op.inputs[index])).reshape(step.batch, -1)

    def terms(self, step, index, values, rows, wire):
        """The candidates ``[n, k]`` of input ``index`` for a chunk of output neurons, before
        their synapses' weights: ``values`` are :meth:`values` of every input, ``rows`` the
        chunk's samples and ``wire`` its :class:`Wiring` of that input."""
        return values[index][rows[:, None], wire.value].astype(np.float64)

    def fused_pair(self, op, granularity):
        """For an element-wise op of two inputs whose :meth:`values` are in the output's layout
        (one candidate per input and output neuron): ``(dst0, dst1)``, the input neuron each output
        neuron's candidate of that input counts to (flat), for the fused kernel; or None."""
        return None

    def fused_window(self, op, granularity):
        """The op as a window op for the fused kernel (see :mod:`nnslicer.backward.op_kernels`):
        ``dict(taps, valid, weights, mode, channels, n_q, mult, to_channel)``, or None to take
        the numpy path."""
        return None

    def backward(self, step):
        op, graph = step.op, step.graph
        batch = step.batch
        counts = step.contrib.reshape(batch, -1)
        b, o = np.nonzero(counts)
        in_sizes = [graph.neuron_size(t) for t in op.inputs]
        direction = None
        if step.rule != "effective_path":
            direction = _sign(step.neuron_delta(op.name).reshape(batch, -1)[b, o]) * _sign(counts[b, o])
        y = step.neuron_act(op.name).reshape(batch, -1)[b, o] if step.rule == "paper" else None
        if step.kernels == "numba":
            done = self.fused_backward(step, b, o, np.zeros(len(b), np.int8) if direction is None else direction, y,
                                       in_sizes)
            if done is not None:
                return done
        return self._numpy_backward(step, b, o, in_sizes, direction, y)

    def fused_backward(self, step, b, o, direction, y, in_sizes):
        """``(inputs, synapses)`` from the fused numba kernels (:mod:`nnslicer.backward.op_kernels`) for the
        active neurons ``(b, o)``, or None to take the numpy path: an element-wise pair
        (:meth:`fused_pair`) or a window op (:meth:`fused_window`)."""
        from ..backward.op_kernels import pair_backward, window_arrays, window_backward

        op, graph = step.op, step.graph
        batch = step.batch
        pair = graph.memo(("fused_pair", op.name), lambda: self.fused_pair(op, step.granularity))
        if pair is not None:
            ins = pair_backward([self.values(step, j) for j in range(2)], pair, b, o, direction, y, step.rule,
                                step.theta, step.bar, in_sizes)
            return [arr.reshape((batch,) + graph.neuron_shape(t)) for arr, t in zip(ins, op.inputs)], None

        def prepared():  # the spec, its arrays laid out for the kernel once
            spec = self.fused_window(op, step.granularity)
            return spec and dict(spec, arrays=window_arrays(spec["weights"], spec["taps"], spec["valid"],
                                                            spec["mode"]))

        spec = graph.memo(("fused_window", op.name), prepared)
        if spec is None:
            return None
        values = self.values(step, 0).reshape(batch, -1, spec["channels"])
        ins, syn = window_backward(
            values, spec["arrays"], spec["mode"], b, o, spec["n_q"], direction, y, step.rule, step.theta, step.bar,
            in_sizes[0], op.n_synapses, spec["mult"], spec["to_channel"])
        inputs = [ins.reshape((batch,) + graph.neuron_shape(op.inputs[0]))]
        return inputs, syn.reshape((batch,) + op.synapse_shape) if op.n_synapses else None

    def _numpy_backward(self, step, b, o, in_sizes, direction, y):
        op, graph = step.op, step.graph
        batch = step.batch
        out_inputs = [np.zeros(batch * n, dtype=np.int64) for n in in_sizes]
        syn_size = op.n_synapses
        kernel = op.weights[self.synapse_weight].reshape(-1) if self.synapse_weight else None
        values = [self.values(step, j) for j in range(len(op.inputs))]
        ep = step.rule == "effective_path"
        syn_parts = []
        k_total = max(1, sum(w.dst.shape[1] for w in self.wiring(op, graph.granularity, o[:1])) if len(o) else 1)
        rows = max(1, CHUNK_CANDIDATES // k_total)
        for lo in range(0, len(o), rows):
            sl = slice(lo, lo + rows)
            bs, os_ = b[sl], o[sl]
            wires = self.wiring(op, graph.granularity, os_)
            cands = []
            for j, w in enumerate(wires):
                cand = self.terms(step, j, values, bs, w)
                if w.synapse is not None:
                    cand = cand * kernel[w.synapse]
                if w.valid is not None:
                    cand = np.where(w.valid, cand, np.nan)
                cands.append(cand)
            cand = np.concatenate(cands, axis=1) if len(cands) > 1 else cands[0]
            keep = _select(step.kernels)(cand, step.rule, step.theta, y=None if y is None else y[sl], bar=step.bar)
            if ep:
                signed = keep.astype(np.int8)
            else:
                signed = np.where(keep, np.sign(np.nan_to_num(cand)), 0).astype(np.int8)
                signed *= direction[sl, None]
            col = 0
            for j, w in enumerate(wires):
                part = signed[:, col:col + w.dst.shape[1]]
                col += w.dst.shape[1]
                nr, nc = np.nonzero(part)
                if not len(nr):
                    continue
                vals = part[nr, nc]
                dst = np.broadcast_to(w.dst, part.shape)[nr, nc]
                out_inputs[j] += np.bincount(bs[nr] * in_sizes[j] + dst, weights=vals,
                                             minlength=batch * in_sizes[j]).astype(np.int64)
                if w.synapse is not None:
                    syn = np.broadcast_to(w.synapse, part.shape)[nr, nc]
                    syn_parts.append((bs[nr] * syn_size + syn, vals))
        shapes = [graph.neuron_shape(t) for t in op.inputs]
        inputs = [arr.reshape((batch,) + shape) for arr, shape in zip(out_inputs, shapes)]
        synapses = None
        if syn_size:
            synapses = np.zeros(batch * syn_size, dtype=np.int64)
            if syn_parts:
                idx = np.concatenate([p[0] for p in syn_parts])
                val = np.concatenate([p[1] for p in syn_parts])
                synapses += np.bincount(idx, weights=val, minlength=batch * syn_size).astype(np.int64)
            synapses = synapses.reshape((batch,) + op.synapse_shape)
        return inputs, synapses

    def connections(self, op, granularity, out=None):
        out = _all_outputs(op, granularity) if out is None else np.asarray(out, dtype=np.int64)
        result = []
        if not len(out):
            return result
        for j, w in enumerate(self.wiring(op, granularity, out)):
            shape = np.broadcast_shapes(w.dst.shape, (len(out), 1))
            dst = np.broadcast_to(w.dst, shape)
            src_out = np.broadcast_to(out[:, None], shape)
            syn = np.broadcast_to(w.synapse, shape) if w.synapse is not None else np.full(shape, -1)
            valid = np.ones(shape, bool) if w.valid is None else np.broadcast_to(w.valid, shape)
            result.append((j, dst[valid], src_out[valid], syn[valid]))
        return result


class RouteHandler(Handler):
    """Ops that pass an output neuron's count on unchanged to the neuron(s) it comes from."""

    def route(self, op, granularity, out):
        """For output neurons ``out``: ``[(input_index, rows, dst)]``, meaning output neuron
        ``out[rows]`` comes from neuron ``dst`` of that input."""
        raise NotImplementedError

    def paper_factor(self, step, index, rows, dst, b):
        """``propagation="paper"``: what replaces the count (None keeps it), for the handlers
        whose paper rule differs from a pass-through."""
        return None

    def backward(self, step):
        op, graph = step.op, step.graph
        batch = step.batch
        counts = step.contrib.reshape(batch, -1)
        b, o = np.nonzero(counts)
        result = []
        for j, t in enumerate(op.inputs):
            size = graph.neuron_size(t)
            result.append(np.zeros(batch * size, dtype=np.int64))
        for j, rows, dst in self.route(op, graph.granularity, o):
            vals = counts[b[rows], o[rows]]
            if step.propagation == "paper":
                factor = self.paper_factor(step, j, rows, dst, b[rows])
                if factor is not None:
                    vals = factor(vals, o[rows])
            size = result[j].size // batch
            result[j] += np.bincount(b[rows] * size + dst, weights=vals, minlength=batch * size).astype(np.int64)
        return [r.reshape((batch,) + graph.neuron_shape(t)) for r, t in zip(result, op.inputs)], None

    def connections(self, op, granularity, out=None):
        out = _all_outputs(op, granularity) if out is None else np.asarray(out, dtype=np.int64)
        return [(j, dst, out[rows], np.full(len(rows), -1)) for j, rows, dst in self.route(op, granularity, out)]


# --------------------------------------------------------------------------- windows
@lru_cache(maxsize=256)
def window(in_hw, kernel, strides, dilation, padding):
    """Receptive fields of a 2-D window op, as TensorFlow computes them.

    Returns ``(out_hw, taps, valid)``: ``taps[p, t]`` is the flat input position (``h * W + w``)
    that output position ``p`` reads through tap ``t`` (0 where it reads padding), ``valid``
    is False there.
    """
    (h, w), (kh, kw), (sh, sw), (dh, dw) = in_hw, kernel, strides, dilation
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if padding == "same":
        oh, ow = -(-h // sh), -(-w // sw)
        ph = max((oh - 1) * sh + ekh - h, 0) // 2
        pw = max((ow - 1) * sw + ekw - w, 0) // 2
    else:
        oh, ow = (h - ekh) // sh + 1, (w - ekw) // sw + 1
        ph = pw = 0
    rows = (np.arange(oh) * sh - ph)[:, None] + np.arange(kh) * dh  # [oh, kh]
    cols = (np.arange(ow) * sw - pw)[:, None] + np.arange(kw) * dw  # [ow, kw]
    r = rows[:, None, :, None]
    c = cols[None, :, None, :]
    valid = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    flat = np.where(valid, r * w + c, 0).reshape(oh * ow, kh * kw)
    valid = np.broadcast_to(valid, (oh, ow, kh, kw)).reshape(oh * ow, kh * kw)
    flat.setflags(write=False)
    valid.setflags(write=False)
    return (oh, ow), flat, valid


def spatial(shape):
    """``(H, W)`` of a tensor with channels: a feature map's, or ``(1, T)`` for a sequence
    ``[T, C]``, which the window ops (Conv1D, pooling 1D, padding 1D) read as a map of one row."""
    positions = tuple(shape)[:-1]
    return (1,) * (2 - len(positions)) + positions


def on_map(op, x, fn):
    """``fn`` (a TensorFlow op on ``[B, H, W, C]`` maps) applied to ``x`` of the op's input
    shape, a sequence read as a map of one row, and its result in the op's output shape."""
    import tensorflow as tf

    shape = op.input_shapes[0]
    y = fn(tf.reshape(x, (-1,) + spatial(shape) + (shape[-1],)))
    return tf.reshape(y, (-1,) + tuple(op.shape))


def window_of(op):
    """``window(...)`` for a conv or pooling op from its params."""
    p = op.params
    return window(spatial(op.input_shapes[0]), tuple(p["kernel_size"]), tuple(p["strides"]),
                  tuple(p.get("dilation_rate", (1, 1))), p["padding"])


def fused_spec(mode, taps, valid, channels, n_q, weights=None, mult=1, to_channel=False):
    """The arguments of :func:`nnslicer.backward.op_kernels.window_backward` that depend on the op only."""
    return {"mode": mode, "taps": taps, "valid": valid, "channels": channels, "n_q": n_q,
            "weights": weights, "mult": mult, "to_channel": to_channel}


def all_taps(n):
    """One output position reading source positions ``0..n-1`` (a global window)."""
    return np.arange(n)[None, :], np.ones((1, n), dtype=bool)


def tap_means(step, op, source):
    """Channel-granularity inputs of a conv: for each tap and input channel, the mean over
    output positions of what the tap reads (padding reads 0). Returns [B, taps, C_in]."""
    _, taps, valid = window_of(op)
    x = source.reshape(source.shape[0], -1, source.shape[-1])  # [B, H*W, C]
    out = np.empty((x.shape[0], taps.shape[1], x.shape[2]), dtype=np.float64)
    for t in range(taps.shape[1]):
        out[:, t] = (x[:, taps[:, t], :] * valid[None, :, t, None]).mean(axis=1, dtype=np.float64)
    return out
