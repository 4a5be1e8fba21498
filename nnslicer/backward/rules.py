"""The theta rules: which candidates of a neuron are kept (SPEC.md section 3).

Every rule works on a matrix of candidates, one row per output neuron, vectorised over rows.
Missing candidates (a conv tap that reads padding) are NaN. Ties in ``|c|`` are ordered by
candidate position (a stable sort), which is also what the reference implementation does.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameterError
from ..validation import Interval, Options, check_param

__all__ = ["RULES", "DEFAULT_THETA", "select", "check_rule"]

RULES = ("nnslicer", "paper", "effective_path")
#: theta used when none is given: the authors' code for nnslicer, Qiu et al. for EffectivePath.
DEFAULT_THETA = {"nnslicer": 0.2, "paper": 0.2, "effective_path": 0.5}
#: relative width of the near-tie band of rule="nnslicer" (step 4).
BAR = 0.01


def check_rule(rule, theta, owner="Slicer"):
    """Validate ``rule`` and ``theta``; return theta (the rule's default when None)."""
    check_param(rule, "rule", owner, Options(RULES))
    if theta is None:
        return DEFAULT_THETA[rule]
    return check_param(theta, "theta", owner, Interval(float, 0, 1, "neither"))


def select(cand, rule="nnslicer", theta=0.2, y=None, bar=BAR):
    """Boolean mask of the kept candidates, same shape as ``cand`` ``[n_neurons, k]``.

    Parameters
    ----------
    cand : ndarray of float, shape (n, k)
        Candidates ``c_i`` of each neuron (``w_i * delta_x_i``; raw ``w_i * x_i`` for
        ``effective_path``); NaN marks a missing candidate.
    rule : {"nnslicer", "paper", "effective_path"}
    theta : float in (0, 1)
    y : ndarray of float, shape (n,), optional
        The neurons' activations; needed by ``rule="paper"``.
    bar : float
        Near-tie band of ``rule="nnslicer"``.

    Examples
    --------
    >>> select(np.array([[3.0, -1.0, 0.5]]), theta=0.3)
    array([[ True, False, False]])
    >>> select(np.array([[3.0, -1.0, 0.5]]), theta=0.2)  # |3 - 2.5| is not < 0.2 * 2.5
    array([[ True,  True,  True]])
    """
    cand = np.ascontiguousarray(cand, dtype=np.float64)  # row sums in numpy's pairwise order
    if cand.ndim != 2:
        raise InvalidParameterError("cand must be a 2-D array [neurons, candidates].")
    if cand.shape[0] == 0 or cand.shape[1] == 0:
        return np.zeros(cand.shape, dtype=bool)
    if rule == "nnslicer":
        return _nnslicer(cand, theta, bar)
    if rule == "paper":
        if y is None:
            raise InvalidParameterError("rule='paper' needs the neurons' activations y.")
        return _paper(cand, theta, np.asarray(y, dtype=np.float64))
    if rule == "effective_path":
        return _effective_path(cand, theta)
    check_rule(rule, theta)
    raise AssertionError("unreachable")  # pragma: no cover


def _ranks(order):
    """rank[n, i] = position of candidate i in row n's sorted order."""
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(order.shape[1]), order.shape), axis=1)
    return ranks


def _nnslicer(cand, theta, bar):
    valid = ~np.isnan(cand)
    mag = np.abs(cand)
    filled = np.where(valid, cand, 0.0)
    k = valid.sum(axis=1)
    total = filled.sum(axis=1)
    abs_total = np.abs(total)
    min_mag = np.where(valid, mag, np.inf).min(axis=1)
    max_mag = np.where(valid, mag, 0.0).max(axis=1)
    # Step 2: a sum smaller than every candidate, or negligible, kills the branch.
    dead = (abs_total < min_mag) | (abs_total < 1e-3 * max_mag)
    # Step 3: by |c| descending, the first prefix whose sum is within theta*|S| of S.
    order = np.argsort(np.where(valid, -mag, np.inf), axis=1, kind="stable")
    prefix = np.cumsum(np.take_along_axis(filled, order, axis=1), axis=1)
    hit = np.abs(prefix - total[:, None]) < theta * abs_total[:, None]
    hit &= np.arange(cand.shape[1]) < k[:, None]
    found = hit.any(axis=1)
    m_star = hit.argmax(axis=1)
    last = np.take_along_axis(mag, np.take_along_axis(order, m_star[:, None], axis=1), axis=1)
    # Step 4: keep everything at least as large as the last kept one (near-ties included).
    keep = valid & (mag > (1.0 - bar) * last)
    keep &= (found & ~dead)[:, None]
    # Step 1: a single candidate is always kept.
    single = k == 1
    keep[single] = valid[single]
    return keep


def _paper(cand, theta, y):
    valid = ~np.isnan(cand)
    mag = np.abs(cand)
    filled = np.where(valid, cand, 0.0)
    order = np.argsort(np.where(valid, mag, np.inf), axis=1, kind="stable")
    prefix = np.cumsum(np.take_along_axis(filled, order, axis=1), axis=1)
    k = valid.sum(axis=1)
    below = (np.abs(prefix) < theta * np.abs(y)[:, None]) & (np.arange(cand.shape[1]) < k[:, None])
    # The longest prefix (ascending |c|) whose running sum stays below theta*|y| is dropped.
    n_drop = np.where(below.all(axis=1), cand.shape[1], np.argmin(below, axis=1))
    return valid & (_ranks(order) >= n_drop[:, None])


def _effective_path(cand, theta):
    positive = ~np.isnan(cand) & (cand > 0)
    filled = np.where(positive, cand, 0.0)
    order = np.argsort(np.where(positive, -cand, np.inf), axis=1, kind="stable")
    prefix = np.cumsum(np.take_along_axis(filled, order, axis=1), axis=1)
    total = filled.sum(axis=1)
    reach = prefix >= theta * total[:, None]
    m = reach.argmax(axis=1)  # the fewest largest that reach theta of the positive sum
    keep = positive & (_ranks(order) <= m[:, None])
    keep &= (total > 0)[:, None]
    return keep
