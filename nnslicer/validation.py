"""Parameter checks in one format: a constraints table, checked by :func:`check_params`.

Every check of a parameter's type and range, in nnslicer and in the analyses, says the same
thing the same way (as scikit-learn does)::

    The 'theta' parameter of Slicer must be a float in (0, 1). Got 1.5 instead.

A function or class keeps its constraints beside it, name -> the constraints a value may meet
(any one of them): an :class:`Interval` of ints or floats, :class:`Options`, or None (None is
accepted).

>>> PARAMS = {"q": [Interval(float, 0, 100)], "steps": [Interval(int, 1)],
...           "reduction": [Options(("mean", "l2"))], "seed": [None, Interval(int)]}
>>> check_params("rank", PARAMS, q=50, steps=3, reduction="l2", seed=None)
{'q': 50.0, 'steps': 3, 'reduction': 'l2', 'seed': None}
>>> check_params("rank", PARAMS, steps=0)
Traceback (most recent call last):
...
nnslicer.errors.InvalidParameterError: The 'steps' parameter of rank must be a positive int. Got 0 instead.
>>> check_param(True, "q", "rank", Interval(float, 0, 100))
Traceback (most recent call last):
...
nnslicer.errors.InvalidParameterError: The 'q' parameter of rank must be a float in [0, 100]. Got True instead.
"""

from __future__ import annotations

import math
import numbers

from .errors import InvalidParameterError

__all__ = ["Interval", "Options", "check_param", "check_params"]


class Interval:
    """Numbers of one kind (``int`` or ``float``) between ``left`` and ``right`` (None: no
    bound); ``closed`` says which ends belong to it: "both", "left", "right" or "neither".
    Booleans, NaN and infinities are never in it; an accepted value comes back as the kind
    (``int(v)``, ``float(v)``)."""

    def __init__(self, kind, left=None, right=None, closed="both"):
        if kind not in (int, float):
            raise TypeError(f"Interval takes int or float, not {kind!r}")
        self.kind, self.left, self.right, self.closed = kind, left, right, closed

    def __contains__(self, value):
        base = numbers.Integral if self.kind is int else numbers.Real
        if isinstance(value, bool) or not isinstance(value, base) or not math.isfinite(value):
            return False
        open_left, open_right = self.closed in ("right", "neither"), self.closed in ("left", "neither")
        if self.left is not None and (value < self.left or (value == self.left and open_left)):
            return False
        return self.right is None or not (value > self.right or (value == self.right and open_right))

    def convert(self, value):
        return self.kind(value)

    def __str__(self):
        name = "int" if self.kind is int else "float"
        article = "an" if self.kind is int else "a"
        lo, hi = self.left, self.right
        if hi is None:
            if lo is None:
                return f"{article} {name}"
            if (self.kind is int and lo == 1 and self.closed in ("both", "left")) or \
                    (lo == 0 and self.closed in ("right", "neither")):
                return f"a positive {name}"
            return f"{article} {name} {'>=' if self.closed in ('both', 'left') else '>'} {lo}"
        if lo is None:
            return f"{article} {name} {'<=' if self.closed in ('both', 'right') else '<'} {hi}"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"{article} {name} in {left}{lo}, {hi}{right}"


class Options(tuple):
    """One of a few values (compared with ``==``)."""

    def convert(self, value):
        return value

    def __str__(self):
        return f"one of {', '.join(map(repr, self))}"


def _accepts(constraint, value):
    if constraint is None:
        return value is None
    try:
        return value in constraint
    except TypeError:  # an unhashable value against Options of strings, say
        return False


def check_param(value, name, owner, *constraints, note=""):
    """``value`` if it meets one of ``constraints`` (converted as that constraint says), else
    InvalidParameterError in the one format. ``owner`` names the function or class (None: not
    named); ``note`` is added after what the value must be."""
    for constraint in constraints:
        if _accepts(constraint, value):
            return None if constraint is None else constraint.convert(value)
    what = " or ".join("None" if c is None else str(c) for c in constraints)
    of = f" of {owner}" if owner else ""
    raise InvalidParameterError(f"The {name!r} parameter{of} must be {what}{note}. Got {value!r} instead.")


def check_params(owner, table, **values):
    """Each of ``values`` checked against its constraints in ``table`` (name -> list of
    constraints); the checked values, by name."""
    return {name: check_param(value, name, owner, *table[name]) for name, value in values.items()}
