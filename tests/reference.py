"""A slow, literal reference implementation of Algorithm 1 (SPEC.md section 3), for one sample.

This module is the independent check that the vectorised engine (``nnslicer.backward`` with
``nnslicer.ops`` and ``nnslicer.select``) must equal, neuron by neuron and synapse by synapse.
It deliberately shares no code with the engine: it reads only the lifted graph's ops (kind,
inputs, shapes, params, weight arrays) and the tape's per-tensor activations and deltas, and
walks every neuron and every candidate in plain Python loops, in the words of the SPEC.

Conventions (SPEC.md sections 1-3, and the lead's reading where the SPEC is silent):

* A neuron of a tensor of rank >= 2 (``[H, W, C]``, ``[T, C]``) at ``granularity="channel"``
  is a channel (its last axis); its activation and delta are the means of the element values
  over the other axes. Rank-1 tensors are elements at both granularities.
* Candidates are float64 products of float64(weight) and float64(delta) (raw activations for
  ``rule="effective_path"``). Candidate order: Dense by input index; Conv2D by
  ``(kh, kw, c_in)`` row-major; DepthwiseConv2D by ``(kh, kw)``; pooling by window position
  ``(kh, kw)`` row-major; global average pooling by ``(h, w)``; Add by input order. A conv tap
  that reads padding is no candidate at element granularity (at channel granularity the tap's
  mean over output positions reads padding as 0). Ties in ``|c|`` keep candidate order.
* A kept candidate ``i`` of neuron ``n`` adds ``s_i = sign(c_i) * sign(delta_y_n) *
  sign(CONTRIB[n])`` to its input neuron and (weighted ops) to its synapse; ``+1`` for
  ``effective_path``, whose final counts are 0/1 membership.
"""

from __future__ import annotations

import itertools

import numpy as np

BAR = 0.01

WEIGHTED = ("dense", "conv2d", "depthwise_conv2d", "scale", "embedding")


def synapse_table(op):
    """The weight array whose elements are the op's synapses."""
    return op.weights["embeddings" if op.kind == "embedding" else "kernel"]


# --------------------------------------------------------------------------- small helpers
def sign(v) -> int:
    """Sign of a number as a Python int (-1, 0 or 1)."""
    v = float(v)
    return (v > 0) - (v < 0)


def fsum_seq(values) -> float:
    """Left-to-right float64 sum (what 'the sum of the candidates' reads as)."""
    total = 0.0
    for v in values:
        total += float(v)
    return total


def window_geometry(n_in, k, stride, dilation, padding):
    """Output length and padding before, as TensorFlow computes them for one spatial axis."""
    span = (k - 1) * dilation + 1
    if padding == "same":
        n_out = -(-n_in // stride)
        pad_total = max((n_out - 1) * stride + span - n_in, 0)
        return n_out, pad_total // 2
    if padding == "valid":
        return (n_in - span) // stride + 1, 0
    raise ValueError(f"unknown padding {padding!r}")


def hw(shape):
    """Rows and columns of a tensor with channels: a sequence ``[T, C]`` is one row of ``T``
    (the 1-D window ops are their 2-D forms over one axis, SPEC.md section 3)."""
    return (1, shape[0]) if len(shape) == 2 else tuple(shape[:2])


def at(shape, h, w, c):
    """The index of element (row h, column w, channel c) of a map or sequence of ``shape``."""
    return (w, c) if len(shape) == 2 else (h, w, c)


def split(shape, n):
    """``(row, column, channel)`` of index ``n`` of a map or sequence of ``shape``."""
    return (0,) + tuple(n) if len(shape) == 2 else tuple(n)


def kernel4(op):
    """A convolution's kernel as ``[kh, kw, ...]`` (a 1-D kernel ``[k, ...]`` is one row)."""
    k = op.weights["kernel"]
    return k.reshape((1,) * (4 - k.ndim) + k.shape)


def synapse_at(op, index):
    """The synapse index of a 4-D kernel index in the op's own kernel (of rank 3 for 1-D)."""
    return tuple(index[4 - op.weights["kernel"].ndim:])


def receptive_field(op, oh, ow):
    """Taps of output position ``(oh, ow)`` of a conv/pool op, row-major ``(kh, kw)``.

    Yields ``(th, tw, ih, iw, inside)``: tap, the input position it reads, and whether that
    position lies inside the input (False: it reads padding).
    """
    p = op.params
    h_in, w_in = hw(op.input_shapes[0])
    kh, kw = p["kernel_size"]
    sh, sw = p["strides"]
    dh, dw = p.get("dilation_rate", (1, 1))
    _, ph = window_geometry(h_in, kh, sh, dh, p["padding"])
    _, pw = window_geometry(w_in, kw, sw, dw, p["padding"])
    for th in range(kh):
        for tw in range(kw):
            ih = oh * sh - ph + th * dh
            iw = ow * sw - pw + tw * dw
            yield th, tw, ih, iw, (0 <= ih < h_in and 0 <= iw < w_in)


def output_hw(op):
    p = op.params
    h_in, w_in = hw(op.input_shapes[0])
    kh, kw = p["kernel_size"]
    sh, sw = p["strides"]
    dh, dw = p.get("dilation_rate", (1, 1))
    return (window_geometry(h_in, kh, sh, dh, p["padding"])[0],
            window_geometry(w_in, kw, sw, dw, p["padding"])[0])


# --------------------------------------------------------------------------- the theta rules
def select_nnslicer(cands, theta, bar=BAR):
    """Kept candidate positions under rule="nnslicer" (SPEC.md section 3, steps 1-4)."""
    k = len(cands)
    if k == 0:
        return []
    if k == 1:  # step 1
        return [0]
    mags = [abs(c) for c in cands]
    total = fsum_seq(cands)
    if abs(total) < min(mags) or abs(total) < 1e-3 * max(mags):  # step 2
        return []
    order = sorted(range(k), key=lambda i: (-mags[i], i))  # step 3, stable by position
    prefix = 0.0
    last = None
    for i in order:
        prefix += cands[i]
        if abs(prefix - total) < theta * abs(total):
            last = i
            break
    if last is None:
        return []
    band = (1.0 - bar) * mags[last]  # step 4: near-ties of the last kept one stay
    return [i for i in range(k) if mags[i] > band]


def select_paper(cands, theta, y):
    """rule="paper": ascending |c|, drop the longest prefix whose running signed sum stays
    strictly below theta*|y| in magnitude; keep the rest."""
    order = sorted(range(len(cands)), key=lambda i: (abs(cands[i]), i))
    limit = theta * abs(float(y))
    running = 0.0
    dropped = 0
    for i in order:
        running += cands[i]
        if abs(running) < limit:
            dropped += 1
        else:
            break
    return sorted(order[dropped:])


def select_effective_path(cands, theta):
    """rule="effective_path": the fewest largest positive candidates whose running sum
    reaches theta times the sum of the positive ones."""
    positive = [i for i in range(len(cands)) if cands[i] > 0]
    if not positive:
        return []
    total = fsum_seq(cands[i] for i in positive)
    kept = []
    running = 0.0
    for i in sorted(positive, key=lambda i: (-cands[i], i)):
        running += cands[i]
        kept.append(i)
        if running >= theta * total:
            break
    return kept


# --------------------------------------------------------------------------- the walk
class _Sample:
    """One sample's values, and its neurons' values at the graph's granularity."""

    def __init__(self, graph, tape, b):
        self.graph = graph
        self.channel = graph.granularity == "channel"
        self.acts = {k: np.asarray(v[b]) for k, v in tape.acts.items()}
        self.deltas = {k: np.asarray(v[b]) for k, v in tape.deltas.items()}
        self._cache = {}

    def is_map(self, name):
        return len(self.graph[name].shape) >= 2

    def channel_mean(self, arr, c):
        positions = list(itertools.product(*(range(d) for d in arr.shape[:-1])))
        return fsum_seq(arr[p + (c,)] for p in positions) / len(positions)

    def neuron_values(self, table, name):
        """Activations/deltas of ``name``'s neurons as a float64 array (channel means at
        channel granularity for a feature map)."""
        key = (id(table), name)
        if key not in self._cache:
            arr = table[name]
            if self.channel and self.is_map(name):
                out = np.zeros(arr.shape[-1], dtype=np.float64)
                for c in range(arr.shape[-1]):
                    out[c] = self.channel_mean(arr, c)
            else:
                out = arr.astype(np.float64)
            self._cache[key] = out
        return self._cache[key]

    def act(self, name, index):
        return float(self.neuron_values(self.acts, name)[index])

    def delta(self, name, index):
        return float(self.neuron_values(self.deltas, name)[index])


class ReferenceSlicer:
    """Algorithm 1 for one sample, one neuron at a time."""

    def __init__(self, graph, tape, b, rule="nnslicer", theta=0.2, propagation="code", bar=BAR):
        if rule not in ("nnslicer", "paper", "effective_path"):
            raise ValueError(rule)
        if propagation not in ("code", "paper"):
            raise ValueError(propagation)
        self.graph = graph
        self.s = _Sample(graph, tape, b)
        self.rule, self.theta, self.propagation, self.bar = rule, theta, propagation, bar
        self.channel = graph.granularity == "channel"
        self.contrib = {}
        self.synapses = {}
        self._tap_means = {}

    # ------------------------------------------------------------------ table
    def table(self, name):
        if name not in self.contrib:
            self.contrib[name] = np.zeros(self.graph.neuron_shape(name), dtype=np.int64)
        return self.contrib[name]

    def add(self, name, index, value):
        self.table(name)[index] += int(value)

    def add_synapse(self, op, index, value):
        owner = op.params.get("shares", op.name)  # a recurrent kernel's steps share its synapses
        if owner not in self.synapses:
            self.synapses[owner] = np.zeros(synapse_table(op).shape, dtype=np.int64)
        self.synapses[owner][index] += int(value)

    # ------------------------------------------------------------------ values
    def source(self, name, index):
        """What a candidate multiplies: a delta, or the raw activation for EffectivePath."""
        if self.rule == "effective_path":
            return self.s.act(name, index)
        return self.s.delta(name, index)

    def source_element(self, name, index):
        """Element-level value of ``name`` (no channel mean)."""
        table = self.s.acts if self.rule == "effective_path" else self.s.deltas
        return float(table[name][index])

    def tap_mean(self, op, th, tw, c):
        """Mean over all output positions of what tap ``(th, tw)`` reads of input channel
        ``c`` (padding reads 0)."""
        key = (op.name, th, tw, c)
        if key in self._tap_means:
            return self._tap_means[key]
        oh_n, ow_n = output_hw(op)
        table = self.s.acts if self.rule == "effective_path" else self.s.deltas
        x = table[op.inputs[0]]
        shape = op.input_shapes[0]
        values = []
        for oh in range(oh_n):
            for ow in range(ow_n):
                for t_h, t_w, ih, iw, inside in receptive_field(op, oh, ow):
                    if (t_h, t_w) == (th, tw):
                        values.append(float(x[at(shape, ih, iw, c)]) if inside else 0.0)
        self._tap_means[key] = fsum_seq(values) / (oh_n * ow_n)
        return self._tap_means[key]

    def broadcast_index(self, op, j, index):
        """The element of input ``j`` that output element ``index`` reads (numpy broadcasting)."""
        shape = op.input_shapes[j]
        skip = len(op.shape) - len(shape)
        return tuple(index[skip + d] % shape[d] for d in range(len(shape)))

    def product_share(self, op, j, n):
        """Input ``j``'s two-player Shapley share of the product's change at output neuron ``n``:
        ``delta_j * (base_k + x_k) / 2`` for the other input ``k`` (base: the profile mean, 0 for
        EffectivePath, which reads raw values); a channel's is the mean over its positions."""
        def share(index):
            mine, other = self.broadcast_index(op, j, index), self.broadcast_index(op, 1 - j, index)
            x = float(self.s.acts[op.inputs[1 - j]][other])
            base = 0.0 if self.rule == "effective_path" else x - float(self.s.deltas[op.inputs[1 - j]][other])
            return self.source_element(op.inputs[j], mine) * ((base + x) / 2)

        if self.channel and len(op.shape) >= 2:
            positions = list(itertools.product(*(range(d) for d in op.shape[:-1])))
            return fsum_seq(share(p + (n[0],)) for p in positions) / len(positions)
        return share(n)

    # ------------------------------------------------------------------ run
    def run(self, targets):
        graph = self.graph
        logits = graph.logits
        seed = self.table(logits)
        shape = graph.neuron_shape(logits)
        for o in targets:
            seed[np.unravel_index(int(o), shape)] = 1
        ops = graph.ops
        position = {op.name: i for i, op in enumerate(ops)}
        for i, op in enumerate(ops):  # reverse order visits an op after all its consumers
            assert all(position[t] < i for t in op.inputs), f"{op.name} comes before an input"
        for op in reversed(ops):
            if op.kind == "input" or op.name not in self.contrib:
                continue
            counts = self.contrib[op.name]
            for n in itertools.product(*(range(d) for d in counts.shape)):
                count = int(counts[n])
                if count != 0:
                    self.visit(op, n, count)
        neurons = {op.name: self.table(op.name).copy() for op in graph.ops}
        synapses = {}
        for op in graph.ops:
            if op.kind in WEIGHTED and "shares" not in op.params:
                synapses[op.name] = self.synapses.get(
                    op.name, np.zeros(synapse_table(op).shape, dtype=np.int64)).copy()
        if self.rule == "effective_path":
            neurons = {k: (v != 0).astype(np.int64) for k, v in neurons.items()}
            synapses = {k: (v != 0).astype(np.int64) for k, v in synapses.items()}
        return neurons, synapses

    def visit(self, op, n, count):
        kind = op.kind
        if kind in ("dense", "conv2d", "depthwise_conv2d", "add", "subtract", "multiply", "scale"):
            return self.linear(op, n, count, self.candidates(op, n))
        if kind in ("avg_pool", "global_avg_pool"):
            if self.channel:
                return self.pass_on(op, 0, n, count)
            return self.linear(op, n, count, self.candidates(op, n))
        if kind in ("max_pool", "global_max_pool"):
            return self.max_pool(op, n, count)
        if kind == "activation":
            return self.activation(op, n, count)
        if kind in ("batch_norm", "layer_norm", "constant", "softmax"):
            return self.scale_like(op, n, count)
        if kind == "matmul":
            return self.linear(op, n, count, self.product_candidates(op, n))
        if kind == "identity":
            return self.pass_on(op, 0, n, count)
        if kind == "reshape":
            return self.reshape(op, n, count)
        if kind in ("zero_padding", "cropping"):
            return self.offset(op, n, count)
        if kind == "upsample":
            return self.upsample(op, n, count)
        if kind == "slice":
            return self.take(op, n, count)
        if kind == "select":  # the input the sample took (its mask: the first input); none to the mask
            taken = float(self.s.acts[op.inputs[0]].reshape(-1)[0]) > 0.5
            if taken or len(op.inputs) > 2:
                self.pass_on(op, 1 if taken else 2, n, count)
            return None
        if kind == "mask":  # a per-sample constant: nothing reaches it
            return None
        if kind == "embedding":  # (p, d): to position p and row token_p; a channel d: every position
            tokens = self.s.acts[op.inputs[0]]
            for p in ([n[0]] if not self.channel else range(len(tokens))):
                self.pass_on(op, 0, (p,), count)
                self.add_synapse(op, (int(tokens[p]), n[-1]), count)
            return None
        if kind == "stack":
            return self.stack(op, n, count)
        if kind == "concatenate":
            return self.concatenate(op, n, count)
        raise NotImplementedError(f"reference has no rule for op kind {kind!r}")

    # ------------------------------------------------------------------ weighted sums
    def candidates(self, op, n):
        """``[(c_i, input_index, input_neuron, synapse_or_None)]`` of output neuron ``n``."""
        kind = op.kind
        x = op.inputs[0]
        out = []
        if kind == "dense":  # at each position of a rank > 1 input, with the one kernel
            *pos, j = n
            kernel = op.weights["kernel"]
            j += op.params.get("columns", (0,))[0]  # a block of a recurrent kernel's columns
            for i in range(kernel.shape[0]):
                dst = (*pos, i)
                out.append((float(kernel[i, j]) * self.source(x, dst), 0, dst, (i, j)))
        elif kind == "scale":
            c = n[-1]
            out.append((float(op.weights["kernel"][c]) * self.source(x, n), 0, n, (c,)))
        elif kind == "conv2d":  # groups: output channel co reads its group's input channels
            kernel = kernel4(op)
            shape = op.input_shapes[0]
            kh, kw, c_group, c_out = kernel.shape
            per_group = c_out // op.params.get("groups", 1)
            co = n[-1]
            first = co // per_group * c_group
            if self.channel:
                for th in range(kh):
                    for tw in range(kw):
                        for ci in range(c_group):
                            c = float(kernel[th, tw, ci, co]) * self.tap_mean(op, th, tw, first + ci)
                            out.append((c, 0, (first + ci,), synapse_at(op, (th, tw, ci, co))))
            else:
                oh, ow, co = split(op.shape, n)
                for th, tw, ih, iw, inside in receptive_field(op, oh, ow):
                    if not inside:
                        continue
                    for ci in range(c_group):
                        src = at(shape, ih, iw, first + ci)
                        c = float(kernel[th, tw, ci, co]) * self.source(x, src)
                        out.append((c, 0, src, synapse_at(op, (th, tw, ci, co))))
        elif kind == "depthwise_conv2d":
            kernel = kernel4(op)
            shape = op.input_shapes[0]
            kh, kw, c_in, mult = kernel.shape
            if self.channel:
                (co,) = n
                ci, m = divmod(co, mult)
                for th in range(kh):
                    for tw in range(kw):
                        c = float(kernel[th, tw, ci, m]) * self.tap_mean(op, th, tw, ci)
                        out.append((c, 0, (ci,), synapse_at(op, (th, tw, ci, m))))
            else:
                oh, ow, co = split(op.shape, n)
                ci, m = divmod(co, mult)
                for th, tw, ih, iw, inside in receptive_field(op, oh, ow):
                    if inside:
                        src = at(shape, ih, iw, ci)
                        c = float(kernel[th, tw, ci, m]) * self.source(x, src)
                        out.append((c, 0, src, synapse_at(op, (th, tw, ci, m))))
        elif kind == "avg_pool":  # element granularity only
            oh, ow, ch = split(op.shape, n)
            for _, _, ih, iw, inside in receptive_field(op, oh, ow):
                if inside:
                    src = at(op.input_shapes[0], ih, iw, ch)
                    out.append((self.source(x, src), 0, src, None))
        elif kind == "global_avg_pool":  # element granularity only; with a mask, unmasked positions only
            (ch,) = n
            h, w = hw(op.input_shapes[0])
            mask = self.s.acts[op.inputs[1]] if len(op.inputs) > 1 else None
            for ih in range(h):
                for iw in range(w):
                    if mask is not None and float(mask[iw]) < 0.5:
                        continue
                    src = at(op.input_shapes[0], ih, iw, ch)
                    out.append((self.source(x, src), 0, src, None))
        elif kind == "add":
            for j, name in enumerate(op.inputs):
                out.append((self.source(name, n), j, n, None))
        elif kind == "subtract":
            out.append((self.source(op.inputs[0], n), 0, n, None))
            out.append((-self.source(op.inputs[1], n), 1, n, None))
        elif kind == "multiply":
            for j in range(2):
                dst = (n[0] % op.input_shapes[j][-1],) if self.channel and len(op.shape) >= 2 \
                    else self.broadcast_index(op, j, n)
                out.append((self.product_share(op, j, n), j, dst, None))
        else:  # pragma: no cover
            raise NotImplementedError(kind)
        return out

    def half(self, name, index):
        """``(base + value) / 2`` of element ``index`` of tensor ``name``: what the other factor
        of a product multiplies in a term's share (base: the profile mean, 0 for EffectivePath)."""
        x = float(self.s.acts[name][index])
        base = 0.0 if self.rule == "effective_path" else x - float(self.s.deltas[name][index])
        return (base + x) / 2

    def product_candidates(self, op, n):
        """Attention's products (SPEC.md: a product of two computed tensors): every term's two
        Shapley shares, the first factor's terms first; at channel granularity a share is its
        mean over the output positions of the channel, computed literally."""
        a, b = op.inputs[:2]
        heads = op.params["heads"]
        scores = op.params["contract"] == "features"
        masks = [(axis, self.s.acts[name]) for axis, name in zip(op.params.get("mask_axes", ()), op.inputs[2:])]

        def attended(q, k):
            """Whether query q attends to key k by the sample's Keras masks (else the term is none)."""
            return all(float(m[q if axis == 0 else k]) > 0.5 for axis, m in masks)

        def terms(q, k, c):
            """The shares of the terms of output element (q, k, h) (scores, c = h) or (q, c)
            (context): ``[(share, input, element)]`` in candidate order."""
            if scores:
                depth = op.input_shapes[0][1] // heads
                idx = [((q, c * depth + d), (k, c * depth + d)) for d in range(depth)]
            else:
                h = c // (op.input_shapes[1][1] // heads)
                idx = [((q, j, h), (j, c)) for j in range(op.input_shapes[0][1])]
            live = [scores or attended(ia[0], ia[1]) for ia, _ in idx]  # a masked pair's term: None
            return ([(self.source_element(a, ia) * self.half(b, ib) if ok else None, 0, ia)
                     for (ia, ib), ok in zip(idx, live)]
                    + [(self.source_element(b, ib) * self.half(a, ia) if ok else None, 1, ib)
                       for (ia, ib), ok in zip(idx, live)])

        if not self.channel:
            q, k, c = (n[0], n[1], n[2]) if scores else (n[0], None, n[1])
            return [(v, j, dst, None) for v, j, dst in terms(q, k, c) if v is not None]
        (c,) = n
        tq = op.shape[0]
        grid = [(q, k) for q in range(tq) for k in range(op.shape[1])] if scores else [(q, None) for q in range(tq)]
        per_position = [terms(q, k, c) for q, k in grid]
        out = []
        for i, (_, j, element) in enumerate(per_position[0]):  # a masked pair's term counts 0 in the mean
            mean = fsum_seq(0.0 if t[i][0] is None else t[i][0] for t in per_position) / len(grid)
            out.append((mean, j, (element[-1],), None))  # the factor's channel
        return out

    def linear(self, op, n, count, cands):
        values = [c for c, _, _, _ in cands]
        if self.rule == "nnslicer":
            kept = select_nnslicer(values, self.theta, self.bar)
        elif self.rule == "paper":
            kept = select_paper(values, self.theta, self.s.act(op.name, n))
        else:
            kept = select_effective_path(values, self.theta)
        direction = sign(self.s.delta(op.name, n)) * sign(count)
        for i in kept:
            c, j, dst, syn = cands[i]
            s = 1 if self.rule == "effective_path" else sign(c) * direction
            if s == 0:
                continue
            self.add(op.inputs[j], dst, s)
            if syn is not None:
                self.add_synapse(op, syn, s)

    # ------------------------------------------------------------------ pass-through family
    def pass_on(self, op, j, dst, value):
        if value != 0:
            self.add(op.inputs[j], dst, value)

    def paper_sign(self, op, n, count, dst):
        """The paper's Table 2 for scale-like ops: sign(CONTRIB[n] * delta_y_n * delta_x)."""
        return sign(count) * sign(self.s.delta(op.name, n)) * sign(self.s.delta(op.inputs[0], dst))

    def activation(self, op, n, count):
        if self.propagation == "code":
            return self.pass_on(op, 0, n, count)
        if op.params.get("activation") == "relu" and len(op.params) == 1:
            if self.s.act(op.inputs[0], n) > 0:
                self.pass_on(op, 0, n, count)
            return None
        return self.pass_on(op, 0, n, self.paper_sign(op, n, count, n))

    def scale_like(self, op, n, count):  # batch and layer norm, an operation with a constant
        if self.propagation == "code":
            return self.pass_on(op, 0, n, count)
        return self.pass_on(op, 0, n, self.paper_sign(op, n, count, n))

    def max_pool(self, op, n, count):
        if self.channel:  # channel c of the pooled map comes from channel c
            if self.propagation == "code":
                return self.pass_on(op, 0, n, count)
            return self.pass_on(op, 0, n, self.paper_sign(op, n, count, n))
        x = self.s.acts[op.inputs[0]]
        y = self.s.acts[op.name]
        shape = op.input_shapes[0]
        if op.kind == "max_pool":
            oh, ow, ch = split(op.shape, n)
            window = [(ih, iw) for _, _, ih, iw, inside in receptive_field(op, oh, ow) if inside]
        else:
            (ch,) = n
            h, w = hw(shape)
            window = [(ih, iw) for ih in range(h) for iw in range(w)]
        for ih, iw in window:
            dst = at(shape, ih, iw, ch)
            if x[dst] == y[n]:  # every argmax (ties: all)
                if self.propagation == "code":
                    self.pass_on(op, 0, dst, count)
                else:
                    self.pass_on(op, 0, dst, self.paper_sign(op, n, count, dst))

    def reshape(self, op, n, count):
        in_shape = tuple(op.input_shapes[0])
        out_shape = tuple(op.shape)
        if self.channel and len(in_shape) >= 2:
            if len(out_shape) >= 2:  # the same channels (the engine refuses other reshapes into maps)
                assert in_shape[-1] == out_shape[-1]
                return self.pass_on(op, 0, n, count)
            # Flatten of a map: element (..., c) of the row-major order goes to channel c.
            flat = int(np.ravel_multi_index(n, out_shape))
            element = np.unravel_index(flat, in_shape)
            return self.pass_on(op, 0, (int(element[-1]),), count)
        flat = int(np.ravel_multi_index(n, self.graph.neuron_shape(op.name)))
        dst = tuple(int(v) for v in np.unravel_index(flat, self.graph.neuron_shape(op.inputs[0])))
        return self.pass_on(op, 0, dst, count)

    def offset(self, op, n, count):
        if self.channel:
            return self.pass_on(op, 0, n, count)
        if op.kind == "zero_padding":
            (top, _), (left, _) = op.params["padding"]
            dh, dw = -top, -left
        else:
            (top, _), (left, _) = op.params["cropping"]
            dh, dw = top, left
        oh, ow, c = split(op.shape, n)
        ih, iw = oh + dh, ow + dw
        h, w = hw(op.input_shapes[0])
        if 0 <= ih < h and 0 <= iw < w:  # a padded element comes from no input neuron
            self.pass_on(op, 0, at(op.input_shapes[0], ih, iw, c), count)

    def upsample(self, op, n, count):
        if self.channel:
            return self.pass_on(op, 0, n, count)
        oh, ow, c = split(op.shape, n)
        sh, sw = op.params["size"]
        self.pass_on(op, 0, at(op.input_shapes[0], oh // sh, ow // sw, c), count)

    def take(self, op, n, count):
        """``x[..., start:stop, ...]`` along an axis (dropped when ``squeeze``)."""
        p = op.params
        in_shape = op.input_shapes[0]
        if self.channel and len(in_shape) >= 2:  # the channel of the element (or channel) n
            last = p["axis"] == len(in_shape) - 1
            return self.pass_on(op, 0, (n[-1] + (p["start"] if last else 0),), count)
        index = list(n)
        if p.get("squeeze"):
            index.insert(p["axis"], 0)
        index[p["axis"]] += p["start"]
        return self.pass_on(op, 0, tuple(index), count)

    def stack(self, op, n, count):
        """Inputs stacked along a new first axis; at channel granularity each has every channel."""
        if self.channel:
            for j in range(len(op.inputs)):
                self.pass_on(op, j, n, count)
            return
        self.pass_on(op, n[0], tuple(n[1:]), count)

    def concatenate(self, op, n, count):
        axis = op.params["axis"]
        out_shape = tuple(op.shape)
        if self.channel and len(out_shape) >= 2:
            if axis != len(out_shape) - 1:  # along positions: every input has every channel
                for j in range(len(op.inputs)):
                    self.pass_on(op, j, n, count)
                return
            along, axis = n[0], 0
        else:
            along = n[axis]
        start = 0
        for j, in_shape in enumerate(op.input_shapes):
            size = in_shape[-1] if (self.channel and len(out_shape) >= 2) else in_shape[axis]
            if start <= along < start + size:
                dst = list(n)
                dst[axis] = along - start
                return self.pass_on(op, j, tuple(dst), count)
            start += size
        raise AssertionError("index beyond the concatenation")  # pragma: no cover


def reference_backward(graph, tape, b, targets, rule="nnslicer", theta=0.2, propagation="code", bar=BAR):
    """Counts of every neuron and synapse for sample ``b`` of ``tape`` (Algorithm 1).

    Returns ``(neurons, synapses)``: dicts tensor name -> int64 array of the tensor's neuron
    shape, and weighted op name -> int64 array of its kernel's shape.
    """
    return ReferenceSlicer(graph, tape, b, rule, theta, propagation, bar).run(targets)
