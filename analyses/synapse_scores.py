"""How much each synapse matters for some classes: the scores pruning and protection rank by.

NNSlicer's score of a synapse for target classes ``T`` is its aggregated ``|count|`` over the
slices of samples of ``T`` (SPEC.md section 5; ``aggregate="abs"``), each sample sliced for its
own class. Because ``abs`` aggregation is a sum over samples, the class-level slice of a set of
classes is the sum of the per-class slices: :func:`class_slices` slices each class once, and
any subset's scores are sums of those (which is how the benchmarks try many class subsets
for the price of slicing every class once).

Methods (the paper's baselines share them):

=================  ==========================================================================
``nnslicer``       aggregated |count| over samples of the target classes
``nnslicer_all``   the same over samples of every class in the data
``effective_path`` EffectivePath (Qiu et al. 2019): a Slicer with ``rule="effective_path"``
                   over samples of the target classes
``magnitude``      ``|w|``
``channel``        L1 norm of the whole filter (conv) or unit (dense) the synapse feeds
``random``         uniform random numbers (``random_state``)
=================  ==========================================================================
"""

from __future__ import annotations

import numbers

import numpy as np

from nnslicer import check_labels
from nnslicer.errors import InvalidInputError, InvalidParameterError, NotFittedError

__all__ = ["METHODS", "check_classes", "class_slices", "synapse_scores", "rank_mask"]

METHODS = ("nnslicer", "nnslicer_all", "magnitude", "effective_path", "channel", "random")


def check_classes(classes, y, num_classes, caller):
    """``classes`` as a sorted tuple of ints, refused unless each is an output of the model
    and has samples in ``y``."""
    if isinstance(classes, (numbers.Integral, np.integer)) and not isinstance(classes, bool):
        classes = [classes]
    try:
        items = list(classes)
    except TypeError:
        raise InvalidParameterError(
            f"The 'classes' parameter of {caller} must be a list of class indices. Got {classes!r} instead.") from None
    if not items:
        raise InvalidParameterError(f"The 'classes' parameter of {caller} must name at least one class. Got [] instead.")
    out = []
    for c in items:
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (numbers.Integral, np.integer)):
            raise InvalidParameterError(f"The 'classes' parameter of {caller} must hold ints. Got {c!r}.")
        if not 0 <= int(c) < num_classes:
            raise InvalidParameterError(
                f"Class {int(c)} does not exist: the model has {num_classes} classes (0..{num_classes - 1}).")
        out.append(int(c))
    if y is not None:
        present = set(np.unique(np.asarray(y)).tolist())  # y: class indices (check_labels)
        missing = [c for c in out if c not in present]
        if missing:
            raise InvalidInputError(f"No sample of class(es) {missing} in the data: they cannot be sliced.")
    return tuple(sorted(set(out)))


def class_slices(slicer, x, y, classes, max_per_class=None, n_jobs=None, progress=None):
    """One ``abs``-aggregated Slice per class: samples of class ``c`` in ``x``, criterion ``c``.

    Parameters
    ----------
    slicer : nnslicer.Slicer
        A fitted slicer.
    x, y : arrays
        Samples and their integer labels.
    classes : iterable of int
    max_per_class : int, optional
        Slice at most this many samples of each class (the first ones).
    n_jobs : int, optional
        Ray workers (see :meth:`nnslicer.Slicer.slice`).
    progress : callable, optional
        Called with the number of samples sliced so far, over all the classes.

    Returns
    -------
    dict of int to Slice
    """
    if not hasattr(slicer, "graph_"):
        raise NotFittedError("The slicer is not fitted yet: call slicer.fit(x) first.")
    if max_per_class is not None and (isinstance(max_per_class, bool) or not isinstance(max_per_class, numbers.Integral)
                                      or max_per_class < 1):
        raise InvalidParameterError(f"The 'max_per_class' parameter must be a positive int or None. "
                                    f"Got {max_per_class!r} instead.")
    y = check_labels(y, len(x), slicer.graph_.num_outputs)
    out, done = {}, 0
    for c in check_classes(classes, y, slicer.graph_.num_outputs, "class_slices"):
        xc = np.asarray(x)[y == c][:max_per_class]
        report = None if progress is None else (lambda n, before=done: progress(before + n))
        out[c] = slicer.slice(xc, target=c, aggregate="abs", n_jobs=n_jobs, progress=report)
        done += len(xc)
    return out


def _sum_counts(slices):
    total = None
    for s in slices:
        if total is None:
            total = {k: v.astype(np.float64) for k, v in s.synapse_counts.items()}
        else:
            for k, v in s.synapse_counts.items():
                total[k] += v
    return total


def synapse_scores(model, slicer, x, y, classes, method="nnslicer", random_state=0,
                   max_per_class=None, slices=None, progress=None):
    """Score of every synapse of every weighted layer: layer name -> array shaped as its kernel.

    Parameters
    ----------
    model : keras.Model
    slicer : nnslicer.Slicer or None
        Fitted; needed by the slicing methods.
    x, y : arrays
        Samples and labels; the slicing methods slice the samples of ``classes`` (or all).
    classes : tuple of int
        Target classes (already checked with :func:`check_classes`).
    method : str
        One of :data:`METHODS`.
    max_per_class : int, optional
        At most this many samples per class are sliced.
    slices : dict of int to Slice, optional
        Per-class slices from :func:`class_slices` made with the right rule (``nnslicer`` for
        the nnslicer methods, ``effective_path`` for that one); when given nothing is sliced.
    progress : callable, optional
        Called with the number of samples sliced so far (:func:`class_slices`).
    """
    if method not in METHODS:
        raise InvalidParameterError(
            f"The 'method' parameter must be one of {', '.join(map(repr, METHODS))}. Got {method!r} instead.")
    from nnslicer import lift

    graph = slicer.graph_ if slicer is not None and hasattr(slicer, "graph_") else lift(model)
    kernels = {name: graph[name].weights[graph[name].handler.synapse_weight] for name in graph.weighted_ops}
    if method == "magnitude":
        return {k: np.abs(w).astype(np.float64) for k, w in kernels.items()}
    if method == "channel":
        return {k: np.broadcast_to(np.abs(w).reshape(-1, w.shape[-1]).sum(axis=0), w.shape).astype(np.float64)
                for k, w in kernels.items()}
    if method == "random":
        rng = np.random.default_rng(random_state)
        return {k: rng.random(w.shape) for k, w in kernels.items()}
    wanted = tuple(range(graph.num_outputs)) if method == "nnslicer_all" else classes
    if slices is None:
        if slicer is None or not hasattr(slicer, "graph_"):
            raise NotFittedError(f"method={method!r} needs a fitted Slicer.")
        if y is None:
            raise InvalidInputError(f"method={method!r} needs the labels y of x.")
        use = slicer
        if method == "effective_path" and slicer.rule != "effective_path":
            from nnslicer import Slicer

            use = Slicer(model, rule="effective_path", granularity=slicer.granularity,
                         batch_size=slicer.batch_size).fit(profile=slicer.profile_)
        present = set(np.unique(check_labels(y, len(x), graph.num_outputs)).tolist())
        slices = class_slices(use, x, y, [c for c in wanted if c in present], max_per_class, progress=progress)
    missing = [c for c in wanted if c not in slices]
    if method != "nnslicer_all" and missing:
        raise InvalidInputError(f"No slice of class(es) {missing} among the given slices.")
    return _sum_counts([slices[c] for c in wanted if c in slices])


def rank_mask(score, fraction, largest, tie=None):
    """Boolean mask of exactly ``round(fraction * score.size)`` positions: those with the
    smallest (``largest=False``) or largest scores. Ties are broken by ``tie`` (e.g. ``|w|``,
    same order as the score), then by position."""
    flat = np.asarray(score, dtype=np.float64).ravel()
    k = int(round(fraction * flat.size))
    keys = [np.arange(flat.size)]
    if tie is not None:
        keys.insert(0, np.asarray(tie, dtype=np.float64).ravel())
    keys.insert(0, flat)
    if largest:
        keys = [-k_ for k_ in keys[:-1]] + [keys[-1]]
    order = np.lexsort(tuple(reversed(keys)))
    mask = np.zeros(flat.size, dtype=bool)
    mask[order[:k]] = True
    return mask.reshape(np.shape(score))
