"""One numba pass per linear op: candidates, the theta rule and the signed counts together.

The numpy path of :class:`nnslicer.ops.base.LinearHandler` builds index arrays of shape
``[neurons, candidates]``, gathers, multiplies, selects and scatters in a dozen passes over
memory; here each active neuron's candidate row is built in a small buffer, the rule of
:mod:`nnslicer.backward.rule_kernels` picks the kept ones, and their signs are added where they
go, in one pass. The results are the same integers (candidates are the same float64 products, and the
rules are bit-for-bit those of :mod:`nnslicer.backward.rules`).

Every op it serves is a *window* op over a source ``X[B, S, C]``: output neuron ``(p, q)``
(position ``p``, channel ``q``) reads, through tap ``t``, source position ``taps[p, t]``
(``valid[p, t]`` False: padding). ``mode`` says how channels and weights combine:

* ``CONV``: candidates over ``(t, c)``: ``X[b, taps[p, t], g + c] * W[t, c, q]``; synapse
  ``(t * G + c) * Q + q``, ``c < G``, with ``G = W.shape[1]`` input channels a group and
  ``g = q // (Q / (C / G)) * G`` the first of ``q``'s group (``G = C``: one group, ``g = 0``).
  Dense is a conv with one position and one tap.
* ``DEPTHWISE``: ``q = c * M + m``; candidates over ``t``: ``X[b, taps[p, t], c] * W[t, c, m]``.
* ``POOL``: candidates over ``t``: ``X[b, taps[p, t], q]`` (weight 1, no synapse).

A kept candidate's count goes to input neuron ``taps[p, t] * C + c``, or to channel ``c`` when
``to_channel`` (channel granularity, where ``X`` holds tap means).
"""

from __future__ import annotations

import glob
import logging
import os

import numba as nb
import numpy as np
from numba import prange

from .rule_kernels import (keep_effective_path_into, keep_nnslicer_into, keep_paper_into,
                           row_positive_total_into, row_total_into, scratch)

__all__ = ["window_arrays", "window_backward", "product_backward", "pair_backward", "CONV", "DEPTHWISE", "POOL",
           "RULE_CODES"]

CONV, DEPTHWISE, POOL = 0, 1, 2
RULE_CODES = {"nnslicer": 0, "paper": 1, "effective_path": 2}

log = logging.getLogger(__name__)


def compiled_before(cache_dir=None, source_dir=None):
    """Whether numba's on-disk cache holds these kernels (in ``__pycache__`` beside this file, or
    ``source_dir``, or under ``cache_dir``, default ``NUMBA_CACHE_DIR``): if not, their first
    call compiles them."""
    here = source_dir or os.path.dirname(os.path.abspath(__file__))
    places = [os.path.join(here, "__pycache__", "op_kernels.*.nbi")]
    cache_dir = cache_dir or os.environ.get("NUMBA_CACHE_DIR")
    if cache_dir:
        places.append(os.path.join(cache_dir, "**", "op_kernels.*.nbi"))
    return any(glob.glob(place, recursive=True) for place in places)


if not compiled_before():  # said once, when the first backward analysis imports this module
    log.warning("Compiling nnslicer's slicing kernels: the first run on this machine only, about 20 s.")


@nb.njit(cache=True, inline="always")
def _keep(row, code, theta, one_minus_bar, y_n, keep, ws):
    """The rule ``code`` (:data:`RULE_CODES`) on one row of candidates, into ``keep``."""
    if code == 0:
        keep_nnslicer_into(row, theta, one_minus_bar, row_total_into(row, ws), keep, ws)
    elif code == 1:
        keep_paper_into(row, theta, y_n, keep, ws)
    else:
        keep_effective_path_into(row, theta, row_positive_total_into(row, ws), keep, ws)


@nb.njit(cache=True, inline="always")
def _signed(kept, x, code, direction_n):
    """What a candidate ``x`` adds where it goes: 0 unless kept; 1 for EffectivePath; else
    ``sign(x) * direction`` (``sign(delta_y) * sign(count)`` of its neuron)."""
    if not kept:
        return 0
    if code == 2:
        return 1
    return (1 if x > 0 else (-1 if x < 0 else 0)) * direction_n


@nb.njit(cache=True)
def _rows(X, W, taps, valid, mode, to_channel, mult, b, o, n_q, direction, y, code, theta, one_minus_bar,
          lo, hi, step, inputs, synapses):
    n_taps = taps.shape[1]
    n_c = X.shape[2]
    n_g = W.shape[2] if mode == CONV else n_c  # input channels a group (W is [Q, T, G] here)
    q_g = n_q // (n_c // n_g)  # output channels a group
    k = n_taps * n_g if mode == CONV else n_taps
    row = np.empty(k, np.float64)
    keep = np.empty(k, np.bool_)
    ws = scratch(k)
    for n in range(lo, hi, step):
        bn = b[n]
        p = o[n] // n_q
        q = o[n] % n_q
        if mode == DEPTHWISE:
            ch = q // mult
            wq = q % mult
        elif mode == CONV:
            ch = q // q_g * n_g  # the group's first input channel
            wq = q
        else:
            ch = q
            wq = q
        for t in range(n_taps):
            pos = taps[p, t]
            ok = valid[p, t]
            if mode == CONV:  # on row views: a plain vector product (~10% faster than indexing X, W)
                out_row = row[t * n_g:(t + 1) * n_g]
                if ok:
                    x_row = X[bn, pos, ch:ch + n_g]
                    w_row = W[q, t]
                    for c in range(n_g):
                        out_row[c] = np.float64(x_row[c]) * np.float64(w_row[c])
                else:
                    out_row[:] = np.nan
            elif mode == DEPTHWISE:
                row[t] = np.float64(X[bn, pos, ch]) * np.float64(W[t, ch, wq]) if ok else np.nan
            else:
                row[t] = np.float64(X[bn, pos, ch]) if ok else np.nan
        _keep(row, code, theta, one_minus_bar, y[n], keep, ws)
        for i in range(k):
            s = _signed(keep[i], row[i], code, direction[n])
            if s == 0:
                continue
            if mode == CONV:
                t = i // n_g
                c = ch + i % n_g
                syn = i * n_q + q
            else:
                t = i
                c = ch
                syn = (t * n_c + ch) * mult + wq
            inputs[bn, c if to_channel else taps[p, t] * n_c + c] += s
            if mode != POOL:
                synapses[bn, syn] += s


@nb.njit(cache=True, parallel=True)
def _by_sample(X, W, taps, valid, mode, to_channel, mult, b, o, n_q, direction, y, code, theta, one_minus_bar,
               starts, inputs, synapses):
    # Neurons come sorted by sample; each sample's rows write only that sample's counts.
    for s in prange(starts.shape[0] - 1):
        _rows(X, W, taps, valid, mode, to_channel, mult, b, o, n_q, direction, y, code, theta, one_minus_bar,
              starts[s], starts[s + 1], 1, inputs, synapses)


@nb.njit(cache=True, parallel=True)
def _by_part(X, W, taps, valid, mode, to_channel, mult, b, o, n_q, direction, y, code, theta, one_minus_bar,
             inputs, synapses):
    # Fewer samples than threads: part s takes rows s, s + parts, ... (costs vary along the
    # rows: interleaved parts take equal shares) and adds into its own counts.
    parts = inputs.shape[0]
    for s in prange(parts):
        _rows(X, W, taps, valid, mode, to_channel, mult, b, o, n_q, direction, y, code, theta, one_minus_bar,
              s, b.shape[0], parts, inputs[s], synapses[s])


#: Fewest rows worth a thread of their own when a batch has fewer samples than threads.
MIN_PART_ROWS = 128


def _threads():
    return nb.get_num_threads()


def _dispatch(by_sample, by_part, args, b, batch, n_ins, n_syn):
    """Run a kernel over the active neurons: by sample (in parallel), or, for a batch with fewer
    samples than threads, by interleaved parts of the rows, each counting apart, added up
    (integers: the same counts in any order). Returns the counts of each input and of the
    synapses, ``[B, n]`` each."""
    threads = _threads()
    parts = min(threads, len(b) // MIN_PART_ROWS) if batch < threads else 1
    if parts <= batch:
        outs = [np.zeros((batch, max(n, 1)), np.int64) for n in n_ins + [n_syn]]
        by_sample(*args, np.searchsorted(b, np.arange(batch + 1)).astype(np.int64), *outs)
    else:
        outs = [np.zeros((parts, batch, max(n, 1)), np.int64) for n in n_ins + [n_syn]]
        by_part(*args, *outs)
        outs = [o.sum(axis=0) for o in outs]
    return [o[:, :n] for o, n in zip(outs, n_ins + [n_syn])]


def window_arrays(W, taps, valid, mode):
    """The op's own arrays of :func:`window_backward`, laid out for the kernel (once an op):
    ``(W, taps, valid)``, the weights of a ``CONV`` as ``[Q, T, C]`` (an output neuron's weights
    contiguous), a placeholder for ``POOL``."""
    if W is None:
        W = np.zeros((1, 1, 1), np.float32)
    elif mode == CONV:
        W = np.asarray(W).transpose(2, 0, 1)
    return (np.ascontiguousarray(W), np.ascontiguousarray(taps, dtype=np.int64),
            np.ascontiguousarray(valid, dtype=np.bool_))


def window_backward(X, arrays, mode, b, o, n_q, direction, y, rule, theta, bar, n_in, n_syn, mult=1,
                    to_channel=False):
    """Counts ``(inputs [B, n_in], synapses [B, n_syn])`` from the active neurons ``(b, o)``
    (``b`` sorted), as :class:`~nnslicer.ops.base.LinearHandler` defines them; ``arrays`` are
    the op's :func:`window_arrays`.

    ``direction[n] = sign(delta_y_n) * sign(count_n)``; ``y[n]`` the activation (rule "paper").
    Samples run in parallel; a batch with fewer samples than threads splits its rows into
    parts that count apart and are added up (integers: the same counts in any order).
    """
    batch = X.shape[0]
    if y is None:
        y = np.zeros(len(b), np.float64)
    args = (np.ascontiguousarray(X), *arrays, mode, to_channel, mult, b.astype(np.int64),
            o.astype(np.int64), n_q, direction.astype(np.int64), y.astype(np.float64), RULE_CODES[rule],
            float(theta), 1.0 - float(bar))
    inputs, synapses = _dispatch(_by_sample, _by_part, args, b, batch, [n_in], n_syn)
    return inputs, synapses


# --------------------------------------------------------------------------- products
FEATURES, KEYS = 0, 1


@nb.njit(cache=True)
def _product_rows(own0, half0, own1, half1, contract, channel, tk, heads, depth, b, o, direction, y, code, theta,
                  one_minus_bar, lo, hi, step, in0, in1):
    width = heads * depth
    k = depth if contract == FEATURES else tk
    row = np.empty(2 * k, np.float64)
    keep = np.empty(2 * k, np.bool_)
    dst0 = np.empty(k, np.int64)
    dst1 = np.empty(k, np.int64)
    ws = scratch(2 * k)
    for n in range(lo, hi, step):
        bn = b[n]
        if contract == FEATURES:  # y[q, k, h] = sum_d A[q, h*depth + d] B[k, h*depth + d]
            h = o[n] % heads
            qa = 0 if channel else (o[n] // (tk * heads)) * width
            kb = 0 if channel else ((o[n] // heads) % tk) * width
            for d in range(depth):
                ia = qa + h * depth + d
                ib = kb + h * depth + d
                row[d] = own0[bn, ia] * half1[bn, ib]
                row[k + d] = own1[bn, ib] * half0[bn, ia]
                dst0[d] = ia
                dst1[d] = ib
        else:  # y[q, c] = sum_k P[q, k, h] V[k, c], h = c // depth
            c = o[n] % width
            h = c // depth
            q = 0 if channel else o[n] // width
            for j in range(tk):
                ip = (j * heads + h) if channel else ((q * tk + j) * heads + h)
                iv = j * width + c
                row[j] = own0[bn, ip] * half1[bn, iv]
                row[k + j] = own1[bn, iv] * half0[bn, ip]
                dst0[j] = h if channel else ip
                dst1[j] = c if channel else iv
        _keep(row, code, theta, one_minus_bar, y[n], keep, ws)
        for i in range(2 * k):
            s = _signed(keep[i], row[i], code, direction[n])
            if s == 0:
                continue
            if i < k:
                in0[bn, dst0[i]] += s
            else:
                in1[bn, dst1[i - k]] += s


@nb.njit(cache=True, parallel=True)
def _product_by_sample(own0, half0, own1, half1, contract, channel, tk, heads, depth, b, o, direction, y, code,
                       theta, one_minus_bar, starts, in0, in1, synapses):
    for s in prange(starts.shape[0] - 1):
        _product_rows(own0, half0, own1, half1, contract, channel, tk, heads, depth, b, o, direction, y, code, theta,
                      one_minus_bar, starts[s], starts[s + 1], 1, in0, in1)


@nb.njit(cache=True, parallel=True)
def _product_by_part(own0, half0, own1, half1, contract, channel, tk, heads, depth, b, o, direction, y, code,
                     theta, one_minus_bar, in0, in1, synapses):
    parts = in0.shape[0]
    for s in prange(parts):
        _product_rows(own0, half0, own1, half1, contract, channel, tk, heads, depth, b, o, direction, y, code, theta,
                      one_minus_bar, s, b.shape[0], parts, in0[s], in1[s])


def product_backward(values, contract, channel, tk, heads, depth, b, o, direction, y, rule, theta, bar, n_ins):
    """Counts ``[inputs 0 and 1, each [B, n]]`` of a product of two tensors
    (:class:`nnslicer.ops.attention.Product`) from the active neurons ``(b, o)`` (``b`` sorted):
    ``values`` are its ``((own0, half0), (own1, half1))``, flat per sample, float64."""
    (own0, half0), (own1, half1) = values
    batch = own0.shape[0]
    if y is None:
        y = np.zeros(len(b), np.float64)
    args = tuple(np.ascontiguousarray(v, dtype=np.float64) for v in (own0, half0, own1, half1)) + (
        FEATURES if contract == "features" else KEYS, bool(channel), int(tk), int(heads), int(depth),
        b.astype(np.int64), o.astype(np.int64), direction.astype(np.int64), y.astype(np.float64), RULE_CODES[rule],
        float(theta), 1.0 - float(bar))
    in0, in1, _ = _dispatch(_product_by_sample, _product_by_part, args, b, batch, list(n_ins), 0)
    return in0, in1


# --------------------------------------------------------------------------- element-wise pairs
@nb.njit(cache=True)
def _pair_rows(v0, v1, d0, d1, b, o, direction, y, code, theta, one_minus_bar, lo, hi, step, in0, in1):
    row = np.empty(2, np.float64)
    keep = np.empty(2, np.bool_)
    ws = scratch(2)
    for n in range(lo, hi, step):
        bn = b[n]
        on = o[n]
        row[0] = v0[bn, on]
        row[1] = v1[bn, on]
        _keep(row, code, theta, one_minus_bar, y[n], keep, ws)
        for i in range(2):
            s = _signed(keep[i], row[i], code, direction[n])
            if s == 0:
                continue
            if i == 0:
                in0[bn, d0[on]] += s
            else:
                in1[bn, d1[on]] += s


@nb.njit(cache=True, parallel=True)
def _pair_by_sample(v0, v1, d0, d1, b, o, direction, y, code, theta, one_minus_bar, starts, in0, in1, synapses):
    for s in prange(starts.shape[0] - 1):
        _pair_rows(v0, v1, d0, d1, b, o, direction, y, code, theta, one_minus_bar, starts[s], starts[s + 1], 1,
                   in0, in1)


@nb.njit(cache=True, parallel=True)
def _pair_by_part(v0, v1, d0, d1, b, o, direction, y, code, theta, one_minus_bar, in0, in1, synapses):
    parts = in0.shape[0]
    for s in prange(parts):
        _pair_rows(v0, v1, d0, d1, b, o, direction, y, code, theta, one_minus_bar, s, b.shape[0], parts, in0[s], in1[s])


def pair_backward(values, dst, b, o, direction, y, rule, theta, bar, n_ins):
    """Counts ``[inputs 0 and 1, each [B, n]]`` of an element-wise op of two inputs (Add,
    Subtract, Multiply): output neuron ``o`` has the candidates ``values[0][b, o]`` and
    ``values[1][b, o]`` (flat per sample, in the output's layout), whose counts go to input
    neurons ``dst[0][o]`` and ``dst[1][o]``."""
    batch = values[0].shape[0]
    if y is None:
        y = np.zeros(len(b), np.float64)
    args = tuple(np.ascontiguousarray(v, dtype=np.float64) for v in values) + tuple(
        np.ascontiguousarray(d, dtype=np.int64) for d in dst) + (
        b.astype(np.int64), o.astype(np.int64), direction.astype(np.int64), y.astype(np.float64), RULE_CODES[rule],
        float(theta), 1.0 - float(bar))
    in0, in1, _ = _dispatch(_pair_by_sample, _pair_by_part, args, b, batch, list(n_ins), 0)
    return in0, in1
