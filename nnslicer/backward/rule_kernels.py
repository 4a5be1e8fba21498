"""Exact numba kernels for the theta rules (SPEC.md section 3).

Bit-for-bit equal to the vectorised numpy rules of :mod:`nnslicer.backward.rules`, which are the
specification: the same boolean mask on every input (NaN = missing candidate, zeros, exact ties
in ``|c|`` broken by candidate position, infinities, ...), but without sorting whole rows.

Design
------
* ``S`` (and the positive sum of ``effective_path``) is computed as numpy computes
  ``np.where(valid, c, 0.0).sum(axis=1)`` on a C-contiguous matrix: ``0.0 + pairwise_sum(row)``
  with numpy's pairwise algorithm (``numpy/_core/src/umath/loops_utils.h.src``: below 8 elements
  a sequential sum from -0.0; up to 128, 8 interleaved accumulators combined as
  ``((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))``, then the tail; above, split at
  ``n2 = n//2 - (n//2) % 8`` and recurse).  Both selects make their input C-contiguous first.
* The candidates are visited in the rule's order (numpy's stable argsort: ``|c|`` descending or
  ascending, ties by position) only as far as the rule needs (``m*`` for nnslicer): a stable
  counting sort into log-scale buckets of ``|c|`` (bit patterns of non-negative floats are
  monotone), then each bucket reached is ordered on demand by an incremental quicksort over
  ``(key, position)`` pairs, a strict total order, so nothing depends on pivots.  A row costs
  ``O(K)`` plus the ordering of the part visited.
* rule="nnslicer" first tries bands of ``|c|`` (:func:`_band_first`): the largest candidates
  down to a halving of the largest that holds a few, ordered by counting each one's rank; then
  the next halving, and so on. Most rows stop within the first band, at a cost of a few
  branch-free passes over the row; a band too large for that takes the bucketed scan.
* Prefix sums are sequential float64 adds in that order, exactly like ``np.cumsum``.
* Zero candidates are never ordered: they come last (nnslicer, effective_path), where they
  cannot change the first hit, or first (paper), where their running sum is +-0 and they are
  always dropped.

Per-row functions (callable from other ``@njit`` code)
------------------------------------------------------
``keep_nnslicer(c, theta, bar, out)``, ``keep_paper(c, theta, y, out)`` and
``keep_effective_path(c, theta, out)`` fill the bool row ``out`` from the float64 row ``c``
(read as a row of a C-contiguous matrix); they allocate their work arrays.  In hot loops
allocate ``ws = scratch(K)`` once and call ``keep_nnslicer_into(c, theta, 1 - bar,
row_total_into(c, ws), out, ws)``, ``keep_paper_into(c, theta, y, out, ws)``,
``keep_effective_path_into(c, theta, row_positive_total_into(c, ws), out, ws)``.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import prange
from numba.core import types
from numba.extending import intrinsic

from ..errors import InvalidParameterError
from .rules import BAR, check_rule

__all__ = [
    "select", "keep_nnslicer", "keep_paper", "keep_effective_path",
    "keep_nnslicer_into", "keep_paper_into", "keep_effective_path_into",
    "row_total", "row_positive_total", "row_total_into", "row_positive_total_into", "scratch",
]

_ROWS_PER_TASK = 64  # rows handled by one prange task (scratch is allocated once per task)


# --------------------------------------------------------------------------------------------
# numpy's pairwise summation
# --------------------------------------------------------------------------------------------

@nb.njit(cache=True, inline="always")
def _filled(x, positive_only):
    if positive_only:
        return x if x > 0.0 else 0.0
    return x if x == x else 0.0


@nb.njit(cache=True, inline="always")
def _total(c, positive_only, fst, vst):
    """``0.0 + pairwise_sum(filled(c))``: numpy's ``filled.sum(axis=1)`` of a C-contiguous row.

    ``filled`` is ``c`` with NaN -> 0 (or, ``positive_only``, everything not > 0 -> 0).  numpy's
    recursion (split ``n > 128`` at ``n2 = n//2 - (n//2) % 8``, left + right) runs on explicit
    stacks (numba cannot cache recursive functions): ``fst`` int64 frames ``(lo, n, stage)``,
    ``vst`` float64 partial sums; 192 and 64 entries cover any length.
    """
    fst[0] = 0
    fst[1] = c.shape[0]
    fst[2] = 0
    fsp = 3
    vsp = 0
    while fsp > 0:
        lo = fst[fsp - 3]
        m = fst[fsp - 2]
        stage = fst[fsp - 1]
        if m < 8:  # numpy: sequential, from -0.0
            res = -0.0
            for i in range(lo, lo + m):
                res += _filled(c[i], positive_only)
            vst[vsp] = res
            vsp += 1
            fsp -= 3
        elif m <= 128:  # numpy: 8 accumulators, combined pairwise, then the rest
            r0 = _filled(c[lo], positive_only)
            r1 = _filled(c[lo + 1], positive_only)
            r2 = _filled(c[lo + 2], positive_only)
            r3 = _filled(c[lo + 3], positive_only)
            r4 = _filled(c[lo + 4], positive_only)
            r5 = _filled(c[lo + 5], positive_only)
            r6 = _filled(c[lo + 6], positive_only)
            r7 = _filled(c[lo + 7], positive_only)
            end = lo + m - m % 8
            i = lo + 8
            while i < end:
                r0 += _filled(c[i], positive_only)
                r1 += _filled(c[i + 1], positive_only)
                r2 += _filled(c[i + 2], positive_only)
                r3 += _filled(c[i + 3], positive_only)
                r4 += _filled(c[i + 4], positive_only)
                r5 += _filled(c[i + 5], positive_only)
                r6 += _filled(c[i + 6], positive_only)
                r7 += _filled(c[i + 7], positive_only)
                i += 8
            res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
            while i < lo + m:
                res += _filled(c[i], positive_only)
                i += 1
            vst[vsp] = res
            vsp += 1
            fsp -= 3
        else:
            n2 = m // 2
            n2 -= n2 % 8
            if stage == 0:  # left half first
                fst[fsp - 1] = 1
                fst[fsp] = lo
                fst[fsp + 1] = n2
                fst[fsp + 2] = 0
                fsp += 3
            elif stage == 1:  # then the right half
                fst[fsp - 1] = 2
                fst[fsp] = lo + n2
                fst[fsp + 1] = m - n2
                fst[fsp + 2] = 0
                fsp += 3
            else:  # left + right
                vsp -= 1
                vst[vsp - 1] = vst[vsp - 1] + vst[vsp]
                fsp -= 3
    return 0.0 + vst[0]


@nb.njit(cache=True)
def row_total(c):
    """``S`` of one row exactly as ``np.where(valid, cand, 0.0).sum(axis=1)`` (C order)."""
    return _total(c, False, np.empty(192, np.int64), np.empty(64, np.float64))


@nb.njit(cache=True)
def row_positive_total(c):
    """Sum of the positive candidates exactly as ``_effective_path`` computes it (C order)."""
    return _total(c, True, np.empty(192, np.int64), np.empty(64, np.float64))


@nb.njit(cache=True, inline="always")
def row_total_into(c, ws):
    """:func:`row_total` with the work arrays of :func:`scratch`."""
    return _total(c, False, ws[5], ws[6])


@nb.njit(cache=True, inline="always")
def row_positive_total_into(c, ws):
    """:func:`row_positive_total` with the work arrays of :func:`scratch`."""
    return _total(c, True, ws[5], ws[6])


# --------------------------------------------------------------------------------------------
# The ordered scan
# --------------------------------------------------------------------------------------------

_ABS = 0x7FFFFFFFFFFFFFFF


@intrinsic
def _bits(typingctx, x):
    """The IEEE bit pattern of a float64, as an int64."""
    if not isinstance(x, types.Float) or x.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _float(typingctx, u):
    """The float64 whose IEEE bit pattern is the int64 ``u``."""
    if not isinstance(u, types.Integer) or u.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(u), codegen


_MAX_BUCKETS = 4096
_NNSLICER, _PAPER, _EFFECTIVE_PATH = 0, 1, 2


@nb.njit(cache=True)
def scratch(k):
    """Work arrays ``ws`` for the ``*_into`` functions, rows of up to ``k`` candidates."""
    kk = np.empty(max(k, 1), np.float64)
    ii = np.empty(max(k, 1), np.int64)
    kk2 = np.empty(max(k, 1), np.float64)
    ii2 = np.empty(max(k, 1), np.int64)
    cnt = np.empty(max(_MAX_BUCKETS, k), np.int64)
    st = np.empty(max(k + 1, 192), np.int64)
    vst = np.empty(64, np.float64)
    return kk, ii, kk2, ii2, cnt, st, vst


@nb.njit(cache=True, inline="always")
def _scan(mode, c, n, lo, hi, thr, total, limit, out, ws):
    """Visit the pairs ``(kk[j], ii[j])``, ``j < n``, by key then position; run the rule's test.

    ``kk/ii[:n]`` hold the rule's keys (``-|c|`` nnslicer, ``-c`` effective_path, ``|c|``
    paper) and the candidates' positions, in position order.  Returns the rank where the rule
    stops (-1: none); ``kk2/ii2[:rank + 1]`` then hold the pairs in order.  ``lo``/``hi``:
    smallest/largest ``|key|``; ``limit``: how many ranks may be visited.  All in one function:
    a numba call that passes arrays costs atomic reference counts, too much per candidate.

    1. Stable counting sort into log-scale buckets: a pair's bucket is the distance of the bit
       pattern of ``|key|`` (monotone in ``|key|``) to that of ``hi`` (descending rules) or
       ``lo`` (paper), shifted so that ``nbk`` buckets span the range.  Buckets come in the
       final order, never split equal keys, and keep the pairs by position within a bucket.
    2. Each bucket reached is ordered on demand by an incremental quicksort (Paredes & Navarro):
       ``st`` holds fences, positions whose pair is final with everything before it smaller;
       a segment is partitioned (median of 3, branch-free Lomuto) until ``pos`` is final, and
       segments of at most 16 are insertion-sorted.  Pairs compare as ``(key, position)``.
    """
    kk, ii, kk2, ii2, cnt, st, vst = ws
    desc = mode != _PAPER
    # 1. buckets (a short row is one bucket)
    if n <= 16:
        nbk = 1
        cnt[0] = n
        for j in range(n):
            kk2[j] = kk[j]
            ii2[j] = ii[j]
    else:
        lo_b = _bits(lo)
        hi_b = _bits(hi)
        span = hi_b - lo_b
        nbk = 8
        while nbk < _MAX_BUCKETS and 2 * nbk <= n:
            nbk *= 2
        shift = 0
        while (span >> shift) >= nbk:
            shift += 1
        for b in range(nbk):
            cnt[b] = 0
        for j in range(n):
            u = _bits(kk[j]) & _ABS
            d = hi_b - u if desc else u - lo_b
            cnt[d >> shift] += 1
        acc = 0
        for b in range(nbk):  # cnt[b] = start of bucket b
            t = cnt[b]
            cnt[b] = acc
            acc += t
        for j in range(n):  # afterwards cnt[b] = end of bucket b
            u = _bits(kk[j]) & _ABS
            d = hi_b - u if desc else u - lo_b
            b = d >> shift
            p = cnt[b]
            kk2[p] = kk[j]
            ii2[p] = ii[j]
            cnt[b] = p + 1
    # 2. the scan
    run = 0.0
    s = 0
    for b in range(nbk):
        end = cnt[b]
        e = min(end, limit)
        if e <= s:
            continue
        st[0] = end
        sp = 1
        for pos in range(s, e):
            top = st[sp - 1]
            if top == pos:
                sp -= 1
            else:
                while True:  # make pos final
                    hi_ = top - 1
                    if hi_ - pos < 16:
                        for a in range(pos + 1, hi_ + 1):
                            ka = kk2[a]
                            ia = ii2[a]
                            q = a - 1
                            while q >= pos and (kk2[q] > ka or (kk2[q] == ka and ii2[q] > ia)):
                                kk2[q + 1] = kk2[q]
                                ii2[q + 1] = ii2[q]
                                q -= 1
                            kk2[q + 1] = ka
                            ii2[q + 1] = ia
                        for q in range(hi_, pos, -1):
                            st[sp] = q
                            sp += 1
                        break
                    mid = (pos + hi_) >> 1
                    lo_ = pos
                    if kk2[mid] < kk2[lo_] or (kk2[mid] == kk2[lo_] and ii2[mid] < ii2[lo_]):
                        kk2[mid], kk2[lo_] = kk2[lo_], kk2[mid]
                        ii2[mid], ii2[lo_] = ii2[lo_], ii2[mid]
                    if kk2[hi_] < kk2[lo_] or (kk2[hi_] == kk2[lo_] and ii2[hi_] < ii2[lo_]):
                        kk2[hi_], kk2[lo_] = kk2[lo_], kk2[hi_]
                        ii2[hi_], ii2[lo_] = ii2[lo_], ii2[hi_]
                    if kk2[mid] < kk2[hi_] or (kk2[mid] == kk2[hi_] and ii2[mid] < ii2[hi_]):
                        kk2[mid], kk2[hi_] = kk2[hi_], kk2[mid]
                        ii2[mid], ii2[hi_] = ii2[hi_], ii2[mid]
                    pk = kk2[hi_]
                    pi = ii2[hi_]
                    i = lo_
                    for j in range(lo_, hi_):
                        kj = kk2[j]
                        ij = ii2[j]
                        lt = (kj < pk) | ((kj == pk) & (ij < pi))
                        kk2[j] = kk2[i]
                        ii2[j] = ii2[i]
                        kk2[i] = kj
                        ii2[i] = ij
                        i += lt
                    kk2[hi_] = kk2[i]
                    ii2[hi_] = ii2[i]
                    kk2[i] = pk
                    ii2[i] = pi
                    if i == pos:
                        break
                    st[sp] = i
                    sp += 1
                    top = i
            # pos is final: the rule's test, on prefix sums in order (as np.cumsum)
            x = c[ii2[pos]]
            if mode == _NNSLICER:
                run = x if pos == 0 else run + x
                if abs(run - total) < thr:
                    return pos
            elif mode == _PAPER:
                v = x if x == x else 0.0
                run = v if pos == 0 else run + v
                if abs(run) < thr:
                    out[ii2[pos]] = False
                else:
                    return pos
            else:
                run = x if pos == 0 else run + x
                out[ii2[pos]] = True
                if run >= thr:
                    return pos
        s = e
    return -1


# --------------------------------------------------------------------------------------------
# The rules, one row at a time
# --------------------------------------------------------------------------------------------

_INF_BITS = 0x7FF0000000000000
_BINADE = 1 << 52
#: The fast path of rule="nnslicer" orders the candidates by bands of ``|c|``: the first band
#: holds the largest, down to the first halving of ``max |c|`` that takes at least
#: ``_FIRST_BAND`` of them (of ``_HALVINGS``); then one halving a band, then the rest. A band of
#: more than ``_BAND_MAX`` candidates sends the row to the bucketed scan.
_FIRST_BAND, _HALVINGS, _BAND_MAX = 8, 4, 40  # _band_first counts halvings 1 to 3 for the first band


@nb.njit(cache=True, inline="always")
def _band_first(c, uu, nz, mxu, total, thr, gk, gi, order):
    """Step 3 of rule="nnslicer" by bands: ``uu`` holds ``|c|``'s bit patterns (monotone in
    ``|c|``; 0 for NaN and zeros), ``nz`` the nonzero ones, ``mxu`` the largest. A band is
    gathered by position and each of its candidates placed at its rank, the number of larger ones
    and of equal ones before it (``|c|`` descending, ties by position: a strict total order,
    counted branch-free); every candidate of a band comes before those of the next, so the bands
    in turn are the rule's order. Returns the bit pattern of ``|c|`` at the rank where the rule
    stops, 0 when it never stops (the branch dies), or -1 when a band is too large (the caller
    takes the bucketed scan). ``gk``, ``gi``, ``order``: work arrays of the row's length."""
    n_cand = c.shape[0]
    c1 = c2 = c3 = 0  # how many reach each of the first three halvings (else the first band ends at the fourth)
    t1 = max(mxu - _BINADE, 1)
    t2 = max(mxu - 2 * _BINADE, 1)
    t3 = max(mxu - 3 * _BINADE, 1)
    for i in range(n_cand):
        u = uu[i]
        c1 += u >= t1
        c2 += u >= t2
        c3 += u >= t3
    if c1 >= _FIRST_BAND:
        h = 1
    elif c2 >= _FIRST_BAND:
        h = 2
    elif c3 >= _FIRST_BAND:
        h = 3
    else:
        h = 4
    top = _INF_BITS + 1
    run = 0.0
    rank = 0
    while True:
        low = max(mxu - h * _BINADE, 1) if h <= _HALVINGS else 1
        n = 0
        for i in range(n_cand):  # the band's keys and positions, in position order
            u = uu[i]
            gk[n] = u
            gi[n] = i
            n += (u >= low) & (u < top)
        if n > _BAND_MAX:
            return -1
        for a in range(n):  # each one's rank in the band: the larger, and the equal before it
            ka = gk[a]
            r = 0
            for j in range(n):
                kj = gk[j]
                r += (kj > ka) | ((kj == ka) & (j < a))
            order[r] = gi[a]
        for j in range(n):
            x = c[order[j]]
            run = x if rank == 0 else run + x
            rank += 1
            if abs(run - total) < thr:
                return uu[order[j]]
        if rank >= nz:
            return 0
        top = low
        h += 1


@nb.njit(cache=True, inline="always")
def keep_nnslicer_into(c, theta, one_minus_bar, total, out, ws):
    """rule="nnslicer" on one row; ``total`` = :func:`row_total`, ``one_minus_bar`` = 1 - bar."""
    kk, ii, kk2, ii2, cnt, st, vst = ws
    n_cand = c.shape[0]
    k = 0
    nz = 0
    mxu = 0
    mnu = _INF_BITS
    mnzu = _INF_BITS
    for i in range(n_cand):  # branch-free on bit patterns (vectorised): counts, min/max |c|
        u = _bits(c[i]) & _ABS
        v = u <= _INF_BITS  # not NaN
        nonzero = v & (u != 0)
        k += v
        nz += nonzero
        mxu = max(mxu, u if v else 0)
        mnu = min(mnu, u if v else _INF_BITS)
        mnzu = min(mnzu, u if nonzero else _INF_BITS)
        cnt[i] = u if nonzero else 0
    if k == 1:  # step 1
        for i in range(n_cand):
            out[i] = c[i] == c[i]
        return
    a = abs(total)
    mx = _float(mxu)
    if nz > 0 and not (a < _float(mnu) or a < 1e-3 * mx):  # step 2 (otherwise the branch dies)
        thr = theta * a
        last = _band_first(c, cnt, nz, mxu, total, thr, ii, st, ii2)  # step 3
        if last < 0:
            n = 0
            for i in range(n_cand):  # the nonzero ones to order (zeros come last: no later prefix sum changes)
                kk[n] = -abs(c[i])
                ii[n] = i
                n += cnt[i] != 0
            pos = _scan(_NNSLICER, c, n, _float(mnzu), mx, thr, total, n, out, ws)
            last = _bits(-kk2[pos]) if pos >= 0 else 0
        if last > 0:
            lim = one_minus_bar * _float(last)  # step 4
            for i in range(n_cand):
                out[i] = abs(c[i]) > lim  # False for NaN
            return
    for i in range(n_cand):
        out[i] = False


@nb.njit(cache=True, inline="always")
def keep_paper_into(c, theta, y, out, ws):
    """rule="paper" on one row (``y`` the neuron's activation)."""
    kk, ii, kk2, ii2, cnt, st, vst = ws
    n_cand = c.shape[0]
    thr = theta * abs(y)
    if not thr > 0.0:  # nothing is below thr: keep every valid one
        for i in range(n_cand):
            x = c[i]
            out[i] = x == x
        return
    # Zeros come first; their running sum is +-0 < thr: all dropped.  Then the nonzero ones,
    # ascending.  Missing ones (key inf in numpy) only matter when a valid |c| is inf too.
    n = 0
    mnz = np.inf
    mx = 0.0
    for i in range(n_cand):
        x = c[i]
        v = x == x
        m = abs(x)
        nonzero = v & (m != 0.0)
        out[i] = nonzero
        mnz = min(mnz, m if nonzero else np.inf)
        mx = max(mx, m if v else 0.0)
        kk[n] = m
        ii[n] = i
        n += nonzero
    if n == 0:
        return
    n_nonzero = n  # numpy's positions j < k, past the zeros
    if mx == np.inf:
        n = 0
        for i in range(n_cand):
            x = c[i]
            if x != x:
                kk[n] = np.inf
                ii[n] = i
                n += 1
            elif x != 0.0:
                kk[n] = abs(x)
                ii[n] = i
                n += 1
    _scan(_PAPER, c, n, mnz, mx, thr, 0.0, n_nonzero, out, ws)


@nb.njit(cache=True, inline="always")
def keep_effective_path_into(c, theta, total, out, ws):
    """rule="effective_path" on one row; ``total`` = :func:`row_positive_total`."""
    kk, ii, kk2, ii2, cnt, st, vst = ws
    n_cand = c.shape[0]
    n = 0
    mnp = np.inf
    mxp = 0.0
    for i in range(n_cand):
        x = c[i]
        positive = x > 0.0
        out[i] = False
        mnp = min(mnp, x if positive else np.inf)
        mxp = max(mxp, x if positive else 0.0)
        kk[n] = -x
        ii[n] = i
        n += positive
    if not total > 0.0 or n == 0:
        return
    pos = _scan(_EFFECTIVE_PATH, c, n, mnp, mxp, theta * total, 0.0, n, out, ws)
    if pos < 0:  # never reached (pairwise total vs sequential prefix): numpy keeps the largest
        for q in range(1, n):
            out[ii2[q]] = False


@nb.njit(cache=True)
def keep_nnslicer(c, theta, bar, out):
    """rule="nnslicer" on one row ``c`` (float64, NaN = missing) into the bool row ``out``."""
    ws = scratch(c.shape[0])
    keep_nnslicer_into(c, theta, 1.0 - bar, _total(c, False, ws[5], ws[6]), out, ws)


@nb.njit(cache=True)
def keep_paper(c, theta, y, out):
    """rule="paper" on one row ``c`` with activation ``y`` into the bool row ``out``."""
    keep_paper_into(c, theta, y, out, scratch(c.shape[0]))


@nb.njit(cache=True)
def keep_effective_path(c, theta, out):
    """rule="effective_path" on one row ``c`` into the bool row ``out``."""
    ws = scratch(c.shape[0])
    keep_effective_path_into(c, theta, _total(c, True, ws[5], ws[6]), out, ws)


# --------------------------------------------------------------------------------------------
# Batched, parallel over rows
# --------------------------------------------------------------------------------------------

@nb.njit(cache=True, parallel=True)
def _batch(cand, code, theta, param, y, out):
    n_rows, n_cand = cand.shape
    n_tasks = (n_rows + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    for t in prange(n_tasks):
        ws = scratch(n_cand)
        for r in range(t * _ROWS_PER_TASK, min(n_rows, (t + 1) * _ROWS_PER_TASK)):
            c = cand[r]
            if code == _NNSLICER:
                keep_nnslicer_into(c, theta, param, _total(c, False, ws[5], ws[6]), out[r], ws)
            elif code == _PAPER:
                keep_paper_into(c, theta, y[r], out[r], ws)
            else:
                keep_effective_path_into(c, theta, _total(c, True, ws[5], ws[6]), out[r], ws)


def select(cand, rule="nnslicer", theta=0.2, y=None, bar=BAR):
    """Same as :func:`nnslicer.backward.rules.select` (same arguments, same mask), computed by numba."""
    cand = np.ascontiguousarray(cand, dtype=np.float64)  # rows summed pairwise, as numpy's select
    if cand.ndim != 2:
        raise InvalidParameterError("cand must be a 2-D array [neurons, candidates].")
    if cand.shape[0] == 0 or cand.shape[1] == 0:
        return np.zeros(cand.shape, dtype=bool)
    if rule not in ("nnslicer", "paper", "effective_path"):
        check_rule(rule, theta)
        raise AssertionError("unreachable")  # pragma: no cover
    n = cand.shape[0]
    yv = np.empty(0)
    param = 0.0
    if rule == "nnslicer":
        code = 0
        param = float(1.0 - bar)  # as numpy evaluates it (a float32 bar stays float32 here)
    elif rule == "paper":
        if y is None:
            raise InvalidParameterError("rule='paper' needs the neurons' activations y.")
        code = 1
        yv = np.ascontiguousarray(np.broadcast_to(np.asarray(y, dtype=np.float64), (n,)))
    else:
        code = 2
    out = np.empty(cand.shape, dtype=bool)
    _batch(cand, code, float(theta), param, yv, out)
    return out
