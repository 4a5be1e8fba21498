"""How much each unit of a layer matters: Shapley values (Ancona et al. 2020), the heuristics
they are compared with, and NNSlicer's slice counts, one score per unit (a Dense unit, a
convolution's filter) of the layers whose units pruning can remove
(:func:`analyses.pruning.prunable_units`).

A unit is *removed* by zeroing its channel where it is last a channel of its own (after its
activation, batch norm and pooling: the op ``at`` of :func:`~analyses.pruning.prunable_units`);
every activation-based score is read there. Higher scores mean more important: pruning removes
the lowest first.

=================  ==================================================================================
method             score of unit ``i``
=================  ==================================================================================
``shapley``        Shapley value in the game whose value is minus the loss with only a coalition of
                   the layer's units kept (the paper's eq. 5), per sample, by ``permutations``
                   sampled orders (every order when the layer has few units); the forward restarts
                   at the layer's output (:func:`analyses.layer_importance.coalition_values`).
                   Aggregated over samples as ``mean + 2 std`` (``aggregation="conservative"``, the
                   paper's section 3.3) or the signed ``mean``. The values of a layer sum to the loss
                   with none of its units minus the loss with all (efficiency).
``taylor``         ``mean_x |1/M sum_p dL/dz_ip * z_ip|`` (Molchanov et al. 2017; the paper's eq. 3)
``sensitivity``    ``mean_x sum_p |dL/dz_ip|`` (Mittal et al.)
``apoz``           ``1 -`` the share of samples and positions where ``z_i <= 0`` (Hu et al. 2016)
``weight``         L1 norm of the unit's filter (its kernel's slice); needs no data
``slice``          the unit's NNSlicer neuron count, summed ``|.|`` over the samples' slices (each for
                   its label, or its predicted class without labels)
``slice_signed``   the same counts summed with their signs
``random``         uniform draws (seeded)
=================  ==================================================================================

``L`` is the cross-entropy of the labels (the predicted classes without labels) or the given
``loss``; ``z_ip`` is unit ``i``'s output at position ``p`` (``M`` positions).

Example
-------
>>> import numpy as np, keras
>>> keras.utils.set_random_seed(0)
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu", name="h"),
...                           keras.layers.Dense(3, activation="softmax", name="out")])
>>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
>>> scores = unit_scores(model, x, method="shapley", permutations=4)
>>> scores["h"].shape
(6,)
"""

from __future__ import annotations

import numbers

import numpy as np

from nnslicer.errors import InvalidParameterError
from nnslicer.validation import Interval, Options, check_param

from .layer_importance import (_context, _evaluate, _objective, coalition_values, order_prefixes,
                               shapley_contributions)

__all__ = ["unit_scores", "removal_losses", "UNIT_METHODS", "AGGREGATIONS"]

#: The ways units are scored (see the module's docstring).
UNIT_METHODS = ("shapley", "taylor", "sensitivity", "apoz", "weight", "slice", "slice_signed", "random")
#: How Shapley values per sample become one score: mean + 2 std (the paper's), or the mean.
AGGREGATIONS = ("conservative", "mean")
#: Samples per gradient pass of taylor, sensitivity and apoz.
CHUNK = 256


def _check_layers(units, layers, caller):
    """The chosen layers of ``units`` (``prunable_units``), in model order."""
    if layers is None:
        return list(units)
    layers = [layers] if isinstance(layers, str) else list(layers)
    unknown = [n for n in layers if n not in units]
    if unknown:
        raise InvalidParameterError(f"{caller}: {unknown} are not layers whose units can be pruned; "
                                    f"those are {list(units)}.")
    return [n for n in units if n in set(layers)]


def _activity(ctx, at):
    """Per layer op -> ``(taylor, sensitivity, zeros)``, each ``(samples, units)``: the mean over
    positions of ``dL/dz * z``, the sum over positions of ``|dL/dz|``, and the share of
    positions where ``z <= 0``, read at the Keras layers ``at`` (op -> layer name)."""
    import tensorflow as tf

    parts = {name: [] for name in at}
    for i in range(0, len(ctx.target), CHUNK):
        seen = {}
        with tf.GradientTape() as tape:
            def hook(layer, out):
                tape.watch(out)
                seen[layer] = out
                return out
            out = _evaluate(ctx, hook=hook, x=ctx.x[i:i + CHUNK], names=set(at.values()))
            loss = tf.reduce_sum(_objective(ctx, out, "loss", per_sample=True, target=ctx.target[i:i + CHUNK]))
        layers = sorted(seen)
        grads = dict(zip(layers, tape.gradient(loss, [seen[k] for k in layers])))
        for name, layer in at.items():
            z = seen[layer].numpy().astype(np.float64)
            g = grads[layer].numpy().astype(np.float64)
            n, u = z.shape[0], z.shape[-1]
            z, g = z.reshape(n, -1, u), g.reshape(n, -1, u)
            parts[name].append(((g * z).mean(1), np.abs(g).sum(1), (z <= 0).mean(1)))
    return {name: tuple(np.concatenate(p) for p in zip(*chunks)) for name, chunks in parts.items()}


def _slice_counts(model, graph, x, y, at, how, slicer_options):
    """Per layer op: its units' NNSlicer neuron counts at ``at``, summed over the slices of
    ``x`` (each sample's for its label, or its predicted class), ``|.|`` or signed."""
    from nnslicer import Slicer

    slicer = Slicer(model, **(slicer_options or {})).fit(x)
    groups = [(x, None)] if y is None else [(x[y == c], int(c)) for c in np.unique(y)]
    totals = {name: 0.0 for name in at}
    for xs, target in groups:
        sl = slicer.slice(xs, target=target, aggregate=how)
        for name, op in at.items():
            counts = np.asarray(sl.neuron_counts[op], np.float64)
            totals[name] = totals[name] + counts.reshape(-1, counts.shape[-1]).sum(0)
    return totals


def _filter_l1(op):
    """Each output unit's L1 norm of the synapses producing it."""
    kernel = op.weights[op.handler.synapse_weight]
    kernel = np.moveaxis(np.asarray(kernel, np.float64), op.handler.channel_axes(op)[1], -1)
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(0)


def unit_scores(model, x, y=None, method="shapley", layers=None, loss=None, permutations=5,
                aggregation="conservative", seed=0, slicer_options=None, progress=None):
    """One score per unit of each layer whose units can be pruned (higher: more important).

    Parameters
    ----------
    model : keras.Model
        A functional or Sequential model with one input and one output ``(batch, outputs)``.
    x : array
        The samples the scores are computed on (the paper: 100 held-out images).
    y : array, optional
        Their labels (integers) or, with ``loss``, that loss's targets; default: the model's
        predicted classes.
    method : str
        One of :data:`UNIT_METHODS`.
    layers : str or list of str, optional
        Ops to score (default: all of :func:`analyses.pruning.prunable_units`).
    loss : callable, optional
        ``loss(y_true, y_pred)``, one value per sample (e.g. ``keras.losses.mean_squared_error``);
        default: the cross-entropy.
    permutations : int, default 5
        Sampled orders of Shapley values (the paper's K = 5).
    aggregation : {"conservative", "mean"}
        Shapley values over samples: ``mean + 2 std`` or the signed mean.
    seed : int
        Seed of the sampled orders and of ``random``.
    slicer_options : dict, optional
        Options of the :class:`nnslicer.Slicer` of ``slice`` methods (fitted on ``x``).
    progress : callable, optional
        Called with the number of layers scored so far.

    Returns
    -------
    dict of str to ndarray
        Op name -> ``(units,)`` float64 scores, in model order.
    """
    from nnslicer import lift

    from .pruning import prunable_units

    check_param(method, "method", "unit_scores", Options(UNIT_METHODS))
    check_param(aggregation, "aggregation", "unit_scores", Options(AGGREGATIONS))
    permutations = check_param(permutations, "permutations", "unit_scores", Interval(int, 1))
    if not isinstance(seed, numbers.Integral):
        raise InvalidParameterError(f"The 'seed' parameter of unit_scores must be an int. Got {seed!r} instead.")
    graph = lift(model)
    units = prunable_units(model, graph)
    names = _check_layers(units, layers, "unit_scores")
    at = {name: units[name][1] for name in names}
    ctx = _context(model, x, y, seed, loss=loss)
    rng = np.random.default_rng(seed)
    out = {}
    if method in ("taylor", "sensitivity", "apoz"):
        activity = _activity(ctx, {name: graph[op].layer for name, op in at.items()})
        which = {"taylor": lambda a: np.abs(a[0]).mean(0), "sensitivity": lambda a: a[1].mean(0),
                 "apoz": lambda a: 1.0 - a[2].mean(0)}[method]
        out = {name: which(activity[name]) for name in names}
    elif method in ("slice", "slice_signed"):
        labels = None if y is None or loss is not None else ctx.target
        out = _slice_counts(model, graph, np.asarray(x), labels, at, "abs" if method == "slice" else "sum",
                            slicer_options)
    elif method == "weight":
        out = {name: _filter_l1(graph[name]) for name in names}
    elif method == "random":
        out = {name: rng.random(units[name][0]) for name in names}
    if method != "shapley":
        if progress is not None:
            progress(len(names))
        return {name: np.asarray(out[name], np.float64) for name in names}
    for i, name in enumerate(names):
        per_sample = shapley_contributions(ctx, graph[at[name]].layer, units[name][0], permutations, rng,
                                           kind="loss").mean(0)
        out[name] = per_sample.mean(0) + (2.0 * per_sample.std(0) if aggregation == "conservative" else 0.0)
        if progress is not None:
            progress(i + 1)
    return out


def removal_losses(model, x, y, layer, order, loss=None):
    """The mean loss on ``x`` as the units of ``layer`` are removed one at a time in ``order``
    (the first unit of ``order`` first): ``(units + 1,)``, entry ``k`` with the first ``k``
    removed (entry 0: the model as it is). The forward restarts at the layer's output. This is
    the curve of the paper's layer-wise pruning experiment (its Figure 2 and the AUC of its
    Table 2)."""
    from nnslicer import lift

    from .pruning import prunable_units

    graph = lift(model)
    units = prunable_units(model, graph)
    name = _check_layers(units, [layer], "removal_losses")[0]
    u, at = units[name]
    order = np.asarray(order)
    if sorted(order.tolist()) != list(range(u)):
        raise InvalidParameterError(f"order must be a permutation of the {u} units of {layer!r}.")
    ctx = _context(model, x, y, 0, loss=loss)
    return coalition_values(ctx, graph[at].layer, 1.0 - order_prefixes(order), kind="loss").mean(1)
