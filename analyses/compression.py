"""Compress a model with budgets set by a layer ranking (SAFER, SPEC.md section 6).

:func:`compress` ranks the layers (:func:`analyses.layer_importance.layer_importance`), turns
the ranking into budgets (:mod:`analyses.budgets`) and applies them:

* **structured pruning** (:func:`structured_prune`) of whole output units (Dense) and filters
  (Conv2D): in each layer the ``round(rate_l * units)`` units with the smallest L1 norm of their
  weights go. A pruned unit's kernel column and bias become zero, and so do the per-channel
  weights that silence a channel-wise layer reading the layer directly (its op handler's
  ``silencing_weights``: a BatchNormalization's ``gamma`` and ``beta``), so the unit outputs
  exactly zero, as if it had been removed (the model keeps its shapes, so it can be compared and
  sliced against the original). Which layers read which is the lifted graph's word
  (:func:`nnslicer.lift`), so the model must be one nnslicer lifts. The classifier (the last
  weighted layer) is never pruned.
* **mixed-precision quantization** (:func:`analyses.quantization.quantize`): weights at the
  bit-widths of :func:`analyses.budgets.bit_widths`, activations at 8 bits.

Faults and duplicate-checking are in :mod:`analyses.faults`; what compression changes beyond
accuracy is reported by :mod:`analyses.compression_report`.

Examples
--------
>>> import numpy as np, keras
>>> keras.utils.set_random_seed(0)
>>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu", name="h"),
...                       keras.layers.Dense(8, activation="relu", name="g"), keras.layers.Dense(3, name="o")])
>>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
>>> small, info = compress(m, x, criterion="gradient", prune=0.25, bits=4)
>>> info["bits"]                 # most important layer first
{'o': 5, 'g': 4, 'h': 3}
>>> round(info["pruned_fraction"], 2)   # whole units: near 0.25
0.29
"""

from __future__ import annotations

import logging

import numpy as np

from nnslicer import check_inputs
from nnslicer.errors import InvalidInputError, InvalidParameterError

from .budgets import bit_widths, pruning_rates
from .quantization import quantize, quantized_layers, register_keras_objects

__all__ = ["compress", "structured_prune", "prunable_layers", "unit_norms", "register_keras_objects"]

log = logging.getLogger(__name__)

PRUNABLE = ("Dense", "Conv2D")


def prunable_layers(model):
    """Dense and Conv2D layers in model order, less the classifier (the last weighted layer)."""
    weighted = quantized_layers(model)
    return [layer for layer in weighted[:-1] if type(layer).__name__ in PRUNABLE]


def unit_norms(layer):
    """L1 norm of each output unit's (filter's) kernel weights."""
    kernel = np.asarray(layer.get_weights()[0])
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)


def _readers(graph, layer):
    """The ops of the lifted ``graph`` that read an output of Keras layer ``layer`` (a name)
    and belong to another layer, in topological order."""
    mine = {op.name for op in graph.ops if op.layer == layer}
    return [op for op in graph.ops if op.layer != layer and mine.intersection(op.inputs)]


def _variable_of(layer, op, key):
    """Which of ``layer``'s variables holds ``op``'s weight ``key``: the one of that name (the
    lift keeps Keras' names: ``gamma``, ``beta``), else the only one equal to it; or None."""
    named = [i for i, v in enumerate(layer.weights) if v.name == key]
    if named:
        return named[0]
    same = [i for i, a in enumerate(layer.get_weights())
            if np.shape(a) == np.shape(op.weights[key]) and np.array_equal(a, op.weights[key])]
    return same[0] if len(same) == 1 else None


def _silence(model, reader, gone, arrays):
    """``arrays`` (the weights of ``reader``'s layer) with the reader op's silencing weights zero
    at the ``gone`` channels, when its handler says that silences them (a channel-wise op)."""
    handler = reader.handler
    if not handler.silencing_weights or not handler.is_channelwise(reader) or len(reader.inputs) != 1:
        return arrays
    layer = model.get_layer(reader.layer)
    which = {_variable_of(layer, reader, key) for key in handler.silencing_weights} - {None}
    return [np.where(gone, 0, w).astype(w.dtype) if i in which else w for i, w in enumerate(arrays)]


def structured_prune(model, rates):
    """A copy of ``model`` with the fraction ``rates[layer]`` of units removed from each layer
    (smallest L1 norm first; the input model is not changed).

    Parameters
    ----------
    model : keras.Model
    rates : dict of str to float in [0, 1)
        Layers of :func:`prunable_layers` and their pruning rates.

    Returns
    -------
    new_model : keras.Model
        The pruned copy.
    report : dict
        ``"layers"``: per pruned layer the units, the units removed and the weights zeroed;
        ``"pruned_fraction"``: the share of the prunable layers' kernel weights removed.

    Raises
    ------
    nnslicer.UnsupportedLayerError
        When nnslicer cannot lift the model (its graph says which layers read a pruned one).
    """
    from nnslicer import lift

    from .pruning import rebuild
    from .synapse_scores import rank_mask

    layers = {layer.name: layer for layer in prunable_layers(model)}
    unknown = sorted(set(rates) - set(layers))
    if unknown:
        raise InvalidParameterError(f"Cannot prune {unknown}: prunable layers are {sorted(layers)} "
                                    "(Dense and Conv2D, not the classifier).")
    weights = {layer.name: layer.get_weights() for layer in model.layers}
    graph = None
    report, removed, total = {}, 0, 0
    for name, layer in layers.items():
        kernel = weights[name][0]
        total += kernel.size
        rate = float(rates.get(name, 0.0))
        if not 0 <= rate < 1:
            raise InvalidParameterError(f"The pruning rate of {name!r} must be in [0, 1). Got {rate!r} instead.")
        gone = rank_mask(unit_norms(layer), rate, largest=False)
        if not gone.any():
            continue
        weights[name] = [np.where(gone, 0, w).astype(w.dtype) for w in weights[name]]
        graph = lift(model) if graph is None else graph
        for reader in _readers(graph, name):
            weights[reader.layer] = _silence(model, reader, gone, weights[reader.layer])
        zeroed = int(gone.sum()) * (kernel.size // kernel.shape[-1])
        removed += zeroed
        report[name] = {"units": int(kernel.shape[-1]), "removed_units": int(gone.sum()), "removed_weights": zeroed}
    new = rebuild(model, weights)
    return new, {"layers": report, "pruned_fraction": removed / total if total else 0.0}


def compress(model, x, y=None, criterion="fit", reduction="linf", prune=None, bits=None,
             activation_bits=8, direction="inverse", max_rate=0.9, ranking=None, **options):
    """Rank the layers, then prune and/or quantize with budgets from the ranking.

    Parameters
    ----------
    model : keras.Model
    x : array
        Calibration inputs (ranking, activation ranges).
    y : array of int, optional
        Labels for the ranking; default: the model's predictions.
    criterion, reduction : str
        The layer criterion (see :func:`analyses.layer_importance.layer_importance`), or
        ``"uniform"`` for the same budget in every layer (no ranking).
    prune : float in [0, max_rate], optional
        Global structured pruning rate (share of the prunable layers' weights).
    bits : int in [3, 15], optional
        Average weight bit-width of mixed-precision quantization.
    activation_bits : int or None
        Activation bits when quantizing (default 8).
    direction : {"inverse", "paper"}
        How the ranking sets pruning rates (:func:`analyses.budgets.pruning_rates`).
    max_rate : float
        Largest pruning rate of one layer.
    ranking : dict, optional
        A ready ranking (layer -> score, most important first) instead of computing one.
    **options
        Passed to ``layer_importance`` when it ranks the layers (``progress=`` among them).

    Returns
    -------
    model : keras.Model
        A new model.
    info : dict
        The ranking, rates, bits and the share of weights pruned.
    """
    from .layer_importance import layer_importance

    if not prune and bits is None:  # prune=0 alone would write the model unchanged
        raise InvalidParameterError("compress needs prune=RATE > 0, bits=B or both (--prune R, --bits B).")
    x = check_inputs(x, model.inputs[0].shape[1:])
    if ranking is not None:
        if not isinstance(ranking, dict):
            raise InvalidParameterError(f"The 'ranking' parameter of compress must be a dict of layer -> score (a "
                                        f"layer_importance result). Got {type(ranking).__name__} instead.")
        unknown = sorted(set(ranking) - {layer.name for layer in model.layers})
        if unknown:
            raise InvalidParameterError(f"The ranking names layers the model does not have: {unknown}.")
    uniform = criterion == "uniform"
    if ranking is None and not uniform:
        ranking = layer_importance(model, x, criterion=criterion, reduction=reduction, y=y, **options)
    info = {"criterion": criterion, "reduction": None if uniform else reduction,
            "ranking": None if uniform else {k: float(v) for k, v in ranking.items()}}
    out = model
    if prune is not None:
        layers = prunable_layers(model)
        if not layers:
            raise InvalidInputError("The model has no Dense or Conv2D layer to prune besides its classifier.")
        sizes = {layer.name: int(np.prod(layer.get_weights()[0].shape)) for layer in layers}
        scores = {k: 1.0 for k in sizes} if uniform else ranking
        rates = pruning_rates(scores, sizes, prune, direction=direction, max_rate=max_rate)
        out, pruning = structured_prune(out, rates)
        info.update(rates=rates, direction=direction, pruned_fraction=pruning["pruned_fraction"])
    if bits is not None:
        names = [layer.name for layer in quantized_layers(model)]
        widths = {name: bits for name in names} if uniform else \
            bit_widths([k for k in ranking if k in set(names)], bits)
        out, _ = quantize(out, widths, x, activation_bits=activation_bits)
        info.update(bits=widths, activation_bits=activation_bits)
    return out, info
