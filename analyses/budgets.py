"""From a layer ranking to compression budgets (SAFER, SPEC.md section 6).

A ranking (:func:`analyses.layer_importance.layer_importance`: layer -> score, most important
first) becomes

* per-layer pruning rates at a global rate (:func:`pruning_rates`), SAFER's eq. 12
  ``gamma_l = alpha * gamma * C_l`` with ``alpha`` chosen so that the rates remove
  ``gamma`` of all the weights, and
* per-layer bit-widths at an average bit-width (:func:`bit_widths`): the least important third
  of the layers at ``b - 1`` bits, the most important third at ``b + 1``, the rest at ``b``.

Which way eq. 12 points. Read literally, ``gamma_l = alpha * gamma * C_l`` prunes the *most*
important layers hardest. ``direction="paper"`` does that; ``direction="inverse"`` uses
``1 / C_l`` instead, so that the least important layers lose the most.
``benchmarks/compression.py`` measures both; the default is the one that measured better there
(see docs/analyses.md).

>>> rates = pruning_rates({"a": 3.0, "b": 1.0}, {"a": 100, "b": 100}, 0.4, direction="paper")
>>> {k: round(v, 3) for k, v in rates.items()}
{'a': 0.6, 'b': 0.2}
>>> bit_widths(["first", "second", "third"], 4)
{'first': 5, 'second': 4, 'third': 3}
"""

from __future__ import annotations

import numbers

import numpy as np

from nnslicer.errors import InvalidParameterError

__all__ = ["pruning_rates", "bit_widths", "DIRECTIONS"]

#: How eq. 12's weighting is read: rates grow with ``C_l`` ("paper") or with ``1 / C_l``.
DIRECTIONS = ("inverse", "paper")


def _fraction(name, value, caller, high=1.0):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < high:
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be a float in [0, {high:g}). Got {value!r} instead.")
    return float(value)


def pruning_rates(scores, sizes, rate, direction="inverse", max_rate=0.9):
    """Per-layer pruning rates at the global rate ``rate`` (SAFER eq. 12).

    Parameters
    ----------
    scores : dict of str to float
        Layer importance ``C_l`` (non-negative), e.g. from ``layer_importance``.
    sizes : dict of str to int
        The number of weights of each layer to prune (its keys are the layers budgeted; a
        layer missing from ``scores`` is an error).
    rate : float in [0, max_rate]
        The share of all the weights to remove.
    direction : {"inverse", "paper"}
        ``"paper"``: ``gamma_l`` proportional to ``C_l``; ``"inverse"``: to ``1 / C_l`` (a layer
        scored 0 then gets ``max_rate``).
    max_rate : float in (0, 1)
        No layer loses more than this share (the rest is spread over the others).

    Returns
    -------
    dict of str to float
        Layer -> rate, such that ``sum(rate_l * size_l) == rate * sum(size_l)`` (to float
        precision; the rates are continuous, rounding to whole units happens where they are
        applied).
    """
    if direction not in DIRECTIONS:
        raise InvalidParameterError(f"The 'direction' parameter of pruning_rates must be one of "
                                    f"{DIRECTIONS}. Got {direction!r} instead.")
    max_rate = _fraction("max_rate", max_rate, "pruning_rates")
    if max_rate == 0:
        raise InvalidParameterError("The 'max_rate' parameter of pruning_rates must be > 0. Got 0 instead.")
    rate = _fraction("rate", rate, "pruning_rates", high=1.0)
    if rate > max_rate:
        raise InvalidParameterError(f"rate={rate:g} cannot be reached when no layer may lose more "
                                    f"than max_rate={max_rate:g} of its weights (--prune at most {max_rate:g}).")
    names = list(sizes)
    if not names:
        raise InvalidParameterError("pruning_rates needs at least one layer in 'sizes'.")
    missing = [n for n in names if n not in scores]
    if missing:
        raise InvalidParameterError(f"No importance score for layer(s) {missing}.")
    c = np.array([float(scores[n]) for n in names])
    n = np.array([int(sizes[k]) for k in names], dtype=np.float64)
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise InvalidParameterError("Layer scores must be finite and non-negative for pruning budgets.")
    if np.any(n < 0):
        raise InvalidParameterError("Layer sizes must be non-negative.")
    if rate == 0:
        return {k: 0.0 for k in names}
    if direction == "inverse":
        with np.errstate(divide="ignore"):
            weight = np.where(c > 0, 1.0 / np.where(c > 0, c, 1.0), np.inf)
    else:
        weight = c
    if not np.any(weight > 0) or np.all(np.isinf(weight)):  # nothing to tell layers apart
        weight = np.ones_like(c)
    weight = weight / np.max(weight[np.isfinite(weight)], initial=1.0)

    target = rate * n.sum()

    def removed(alpha):
        return np.sum(np.minimum(alpha * weight, max_rate) * n)

    lo, hi = 0.0, 1.0
    while removed(hi) < target and hi < 1e300:
        hi *= 2.0
    for _ in range(200):  # bisection: removed() is continuous and non-decreasing in alpha
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if removed(mid) < target else (lo, mid)
    rates = np.minimum(hi * weight, max_rate)
    return {k: float(r) for k, r in zip(names, rates)}


def bit_widths(ranking, bits):
    """Bit-widths from a ranking at the average bit-width ``bits`` (SAFER): the least important
    ``len // 3`` layers get ``bits - 1``, the most important ``len // 3`` get ``bits + 1``, the
    others ``bits``; the average is exactly ``bits``.

    Parameters
    ----------
    ranking : dict or sequence of str
        Layer names, most important first (a ``layer_importance`` result).
    bits : int in [3, 15]
    """
    from .quantization import MAX_BITS

    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not 3 <= bits < MAX_BITS:
        raise InvalidParameterError(f"The 'bits' parameter of bit_widths must be an int in [3, {MAX_BITS - 1}] "
                                    f"(layers get bits - 1 to bits + 1). Got {bits!r} instead.")
    names = list(ranking)
    third = len(names) // 3
    out = {}
    for i, name in enumerate(names):
        out[name] = int(bits) + (1 if i < third else -1 if i >= len(names) - third else 0)
    return out
