"""Structured pruning by unit scores (Ancona et al. 2020, section 4.2): layer by layer from the
output side, each layer's units scored on the network as pruned so far
(:func:`analyses.unit_scores.unit_scores`), the fraction ``ratio`` with the lowest scores
removed, no fine-tuning.

Going from the output side means that a layer's scores (which, but for ``weight`` and
``random``, depend on what follows it) are those of the network its units will serve. The
pruned units are removed for real (:func:`analyses.pruning.remove_units`): their filters and
the synapses that read them leave the model; which layers qualify is
:func:`analyses.pruning.prunable_units` (a unit reaching an ``Add`` or the output does not).

Example
-------
>>> import numpy as np, keras
>>> keras.utils.set_random_seed(0)
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu", name="h"),
...                           keras.layers.Dense(3, activation="softmax", name="out")])
>>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
>>> pruned, report = prune_units(model, x, method="taylor", ratio=0.5)
>>> pruned.get_layer("h").units
4
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from nnslicer.errors import InvalidParameterError
from nnslicer.validation import Interval, Options, check_param

from .layer_importance import _context, _objective
from .pruning import prunable_units, remove_units
from .unit_scores import UNIT_METHODS, _check_layers, unit_scores

__all__ = ["prune_units", "UnitPruneReport", "UnitLayerReport", "lowest_units"]

log = logging.getLogger(__name__)


@dataclass
class UnitLayerReport:
    """One pruned layer: its units, how many were pruned, and the scores' seconds."""

    name: str
    units: int
    pruned: int
    seconds: float
    accuracy: float = None  # on the evaluation data, after this layer (and those after it) were pruned
    loss: float = None


@dataclass
class UnitPruneReport:
    """What :func:`prune_units` did; ``layers`` in the order they were pruned (output side first)."""

    method: str
    ratio: float  # None when pruning by ``below``
    params_before: int
    params_after: int
    accuracy_before: float = None
    loss_before: float = None
    below: float = None
    layers: list = field(default_factory=list)

    @property
    def pruned_units(self):
        return sum(layer.pruned for layer in self.layers)

    @property
    def seconds(self):
        """Seconds spent scoring units."""
        return sum(layer.seconds for layer in self.layers)

    def __repr__(self):
        acc = "" if self.accuracy_before is None else \
            f", accuracy={self.accuracy_before:.2%} -> {self.layers[-1].accuracy:.2%}" if self.layers else ""
        how = f"ratio={self.ratio}" if self.below is None else f"below={self.below}"
        return (f"UnitPruneReport(method={self.method!r}, {how}, units pruned={self.pruned_units}, "
                f"params={self.params_before:,} -> {self.params_after:,}{acc})")

    def table(self):
        """One line per pruned layer, in the order they were pruned."""
        rows = [f"{'layer':<20} {'units':>6} {'pruned':>7} {'scoring s':>10} {'accuracy':>9} {'loss':>8}"]
        for r in self.layers:
            acc = "-" if r.accuracy is None else f"{r.accuracy:.2%}"
            loss = "-" if r.loss is None else f"{r.loss:.4f}"
            rows.append(f"{r.name:<20} {r.units:>6} {r.pruned:>7} {r.seconds:>10.2f} {acc:>9} {loss:>8}")
        return "\n".join(rows)

    def to_dict(self):
        d = {k: getattr(self, k) for k in ("method", "ratio", "below", "params_before", "params_after",
                                           "accuracy_before", "loss_before")}
        d["layers"] = [vars(r).copy() for r in self.layers]
        return d


def lowest_units(scores, ratio=None, below=None):
    """Bool mask of the ``round(ratio * units)`` lowest ``scores``, or of the scores under
    ``below``; at most all but one (the highest stays; exact ties go in index order).

    >>> lowest_units(np.array([0.3, -1.0, 2.0, 0.1]), 0.5).tolist()
    [False, True, False, True]
    >>> lowest_units(np.array([0.3, -1.0, 2.0, -0.1]), below=0.0).tolist()
    [False, True, False, True]
    """
    scores = np.asarray(scores)
    k = int(round(ratio * len(scores))) if below is None else int(np.sum(scores < below))
    drop = np.zeros(len(scores), bool)
    drop[np.argsort(scores, kind="stable")[:min(k, len(scores) - 1)]] = True
    return drop


def _evaluation(model, data, loss):
    """``(accuracy, mean loss)`` of ``model`` on ``data = (x, y)`` (accuracy None with ``loss``)."""
    import tensorflow as tf

    x, y = data
    ctx = _context(model, x, y, 0, loss=loss)
    mean_loss = float(_objective(ctx, tf.constant(ctx.output), "loss").numpy())
    accuracy = None if loss is not None else float(np.mean(ctx.output.argmax(1) == ctx.target))
    return accuracy, mean_loss


def prune_units(model, x, y=None, method="shapley", ratio=0.5, layers=None, keep_first=0, loss=None,
                evaluate=None, remove=True, seed=0, progress=None, below=None, **options):
    """Prune the fraction ``ratio`` of the units of each prunable layer, the lowest-scored first
    (or, with ``below``, every unit scoring under it).

    Parameters
    ----------
    model : keras.Model
        Never modified.
    x, y : arrays
        The samples (and labels, or ``loss``'s targets) the units are scored on; ``y``
        defaults to the model's predicted classes.
    method : str
        One of :data:`analyses.unit_scores.UNIT_METHODS`.
    ratio : float in (0, 1), or None with ``below``
        Fraction of each layer's units that goes (``round(ratio * units)``, at least one kept).
    layers : list of str, optional
        The ops to prune (default: every one of :func:`analyses.pruning.prunable_units` but the
        first ``keep_first``).
    keep_first : int, default 0
        Leave the first prunable layers whole (the paper keeps VGG16's first four convolutions).
    loss : callable, optional
        ``loss(y_true, y_pred)`` per sample; default the cross-entropy.
    evaluate : (x, y), optional
        Data to measure accuracy and loss on before pruning and after each layer.
    remove : bool, default True
        Cut the pruned units out; False returns the masked model of the original shape.
    seed : int
        Seed of the scores' random draws (Shapley's orders, ``random``); layer ``j`` uses ``seed + j``.
    progress : callable, optional
        Called with the number of layers pruned so far.
    below : float, optional
        Instead of a ratio: prune the units scoring under this (the paper's negative units:
        ``method="shapley", aggregation="mean", below=0.0``; at least one unit a layer stays).
    **options
        The scores' options (:func:`analyses.unit_scores.unit_scores`: ``permutations``,
        ``aggregation``, ``slicer_options``).

    Returns
    -------
    pruned : keras.Model
    report : UnitPruneReport
    """
    from nnslicer import lift

    caller = "prune_units"
    check_param(method, "method", caller, Options(UNIT_METHODS))
    if below is None:
        ratio = check_param(ratio, "ratio", caller, Interval(float, 0, 1, "neither"))
    elif ratio is not None:
        raise InvalidParameterError(f"{caller} prunes by a ratio or by scores below a value: give ratio=None "
                                    f"with below={below!r}.")
    else:
        below = check_param(below, "below", caller, Interval(float))
    keep_first = check_param(keep_first, "keep_first", caller, Interval(int, 0))
    graph = lift(model)
    units = prunable_units(model, graph)
    if layers is None:
        names = list(units)[keep_first:]
    else:
        names = _check_layers(units, layers, caller)
    if not names:
        raise InvalidParameterError(f"{caller}: no layer left to prune (prunable: {list(units)}, "
                                    f"keep_first={keep_first}).")
    report = UnitPruneReport(method=method, ratio=ratio, params_before=int(model.count_params()), params_after=0,
                             below=below)
    if evaluate is not None:
        report.accuracy_before, report.loss_before = _evaluation(model, evaluate, loss)
    drop, current = {}, model
    for j, name in enumerate(reversed(names)):
        start = time.perf_counter()
        scores = unit_scores(current, x, y, method, layers=[name], loss=loss, seed=seed + j, **options)[name]
        seconds = time.perf_counter() - start
        drop[name] = lowest_units(scores, ratio, below)
        current, _ = remove_units(model, graph, drop)  # scored cut (faster; it computes what the masked one does)
        layer = UnitLayerReport(name=name, units=units[name][0], pruned=int(drop[name].sum()), seconds=seconds)
        if evaluate is not None:
            layer.accuracy, layer.loss = _evaluation(current, evaluate, loss)
        report.layers.append(layer)
        log.info("%s: %d of %d units pruned by %s", name, layer.pruned, layer.units, method)
        if progress is not None:
            progress(j + 1)
    if not remove:
        current, _ = remove_units(model, graph, drop, remove=False)
    report.params_after = int(current.count_params())
    return current, report
