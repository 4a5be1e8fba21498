"""What compression changes beyond test accuracy (Schwaiger et al., "Beyond test accuracy",
SAFEAI 2022; SPEC.md section 7).

:func:`compare` runs a reference model ``a`` and its compressed version ``b`` (pruned,
quantized) on the same labelled samples and reports:

* accuracy of both, overall and per class, and the largest per-class change in points (the
  paper saw up to 15 pp);
* ``flipped``: the share of samples whose predicted class differs (up to 7.5% there);
* the confidence shift ``p_b[pred_a] - p_a[pred_a]``, ``p`` the probabilities (softmax applied
  when a model's output is not probabilities already): its mean, its mean absolute value, and
  the mean absolute value over the flipped and over the unchanged samples;
* the saliency-map mean absolute deviation: a sample's map is ``|d p[pred_a] / d x|`` (the same
  class for both models) divided by its own maximum, so in [0, 1]; the mean absolute difference
  of the two maps, averaged over the first ``saliency_samples`` samples, as a fraction (the
  paper saw ~0.075); None, with ``saliency_note``, when the gradient of only one model never
  reaches the input (a quantizer rounding without a straight-through estimator);
* slice survival, NNSlicer's view: per class, the share of the synapses of ``a``'s class slice
  (:func:`analyses.synapse_scores.class_slices`, the same samples sliced on both models) that
  are also in ``b``'s class slice (1.0 when ``a``'s slice is empty). It compares synapse by
  synapse, so both models need the same weighted layers with kernels of the same shapes
  (masked pruning, quantization); when they differ (channels removed for real) or nnslicer
  cannot lift a model, survival is None and ``survival_note`` says why.

A :class:`CompressionReport` (:mod:`analyses.report_files`) saves as JSON
(:meth:`~CompressionReport.save_json`, :meth:`~CompressionReport.load`) and as one
self-contained HTML page with plots (:meth:`~CompressionReport.save_html`, drawn by
:mod:`analyses.report_html`; needs matplotlib).

Examples
--------
>>> import numpy as np, keras
>>> from analyses.compression_report import compare
>>> def mlp():
...     keras.utils.set_random_seed(0)
...     return keras.Sequential([keras.Input((4,), name="x"),
...                              keras.layers.Dense(6, activation="relu", name="h"),
...                              keras.layers.Dense(3, activation="softmax", name="out")], name="mlp")
>>> a, b = mlp(), mlp()
>>> x = np.random.default_rng(0).normal(size=(30, 4)).astype("float32")
>>> y = a.predict(x, verbose=0).argmax(1)
>>> report = compare(a, b, x, y, max_per_class=5, saliency_samples=10)
>>> report.flipped, report.confidence_shift_abs, report.saliency_mad, report.survival_mean
(0.0, 0.0, 0.0, 1.0)
"""

from __future__ import annotations

import logging

import numpy as np

from nnslicer import check_inputs, check_labels
from nnslicer.datasets import class_names as read_class_names
from nnslicer.errors import InvalidInputError, InvalidParameterError
from nnslicer.validation import Interval, check_param

from .report_files import SHIFT_EDGES, CompressionReport

__all__ = ["compare", "CompressionReport"]

log = logging.getLogger(__name__)

#: Saliency examples kept for the HTML page (flipped samples first, then the largest deviations).
EXAMPLES = 3


# --------------------------------------------------------------------------- checks
def _check_int(value, name, low=1):
    return check_param(value, name, "compare", Interval(int, low))


def _check_models(model_a, model_b):
    """``(input shape, number of classes)`` shared by both models, or a clear error."""
    shapes = []
    for label, model in (("model_a", model_a), ("model_b", model_b)):
        try:
            inputs, outputs = model.inputs, model.outputs
        except (AttributeError, ValueError):
            raise InvalidInputError(
                f"{label} must be a built Keras model. Got {type(model).__name__} instead.") from None
        if len(inputs) != 1 or len(outputs) != 1:
            raise InvalidInputError(f"{label} must have one input and one output; it has {len(inputs)} "
                                    f"and {len(outputs)}.")
        out = tuple(outputs[0].shape[1:])
        if len(out) != 1 or out[0] is None:
            raise InvalidInputError(f"{label} must be a classifier with outputs shaped (batch, classes); "
                                    f"its outputs are shaped {(None, *out)}.")
        shapes.append((tuple(inputs[0].shape[1:]), out[0]))
    (in_a, n_a), (in_b, n_b) = shapes
    if in_a != in_b:
        raise InvalidInputError(f"The models take inputs of different shapes: {in_a} (model_a) and {in_b} (model_b).")
    if n_a != n_b:
        raise InvalidInputError(f"The models have different numbers of classes: {n_a} (model_a) and {n_b} (model_b).")
    return in_a, n_a


def _check_data(x, y, input_shape, n_classes):
    x = check_inputs(x, input_shape)
    return x, check_labels(y, len(x), n_classes)


# --------------------------------------------------------------------------- figures
def _probabilities(out):
    """``(p, softmax_applied)``: the outputs when they are probabilities, else their softmax."""
    out = np.asarray(out, dtype=np.float64)
    if np.all(out >= 0) and np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
        return out, False
    z = np.exp(out - out.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True), True


def _saliency(model, x, target, softmax, batch_size):
    """``|d p[target] / d x|`` per sample, each map divided by its maximum (zero maps stay zero)."""
    import tensorflow as tf

    maps = []
    for start in range(0, len(x), batch_size):
        xb = tf.constant(x[start:start + batch_size], dtype=tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(xb)
            out = model(xb, training=False)
            p = tf.nn.softmax(out, axis=-1) if softmax else out
            picked = tf.reduce_sum(tf.gather(p, target[start:start + batch_size], axis=1, batch_dims=1))
        grad = tape.gradient(picked, xb)
        maps.append(np.zeros(xb.shape) if grad is None else np.abs(grad.numpy()))
    maps = np.concatenate(maps).astype(np.float64)
    peak = maps.reshape(len(maps), -1).max(axis=1)
    return maps / np.where(peak > 0, peak, 1.0).reshape((-1,) + (1,) * (maps.ndim - 1))


def _is_image(shape):
    return len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3))


def _examples(x, y, pred_a, pred_b, maps_a, maps_b, deviation):
    """A few samples for the HTML page: flipped ones first, then the largest deviations."""
    flipped = pred_a[:len(deviation)] != pred_b[:len(deviation)]
    order = np.lexsort((-deviation, ~flipped))[:EXAMPLES]
    squeeze = (lambda a: a[..., 0]) if x.ndim == 4 and x.shape[-1] == 1 else (lambda a: a)
    flat = (lambda m: m.max(axis=-1)) if x.ndim == 4 else (lambda m: m)
    return [{"index": int(i), "label": int(y[i]), "pred_a": int(pred_a[i]), "pred_b": int(pred_b[i]),
             "image": squeeze(np.asarray(x[i], dtype=np.float64)), "saliency_a": flat(maps_a[i]),
             "saliency_b": flat(maps_b[i])} for i in order]


def _synapse_shapes(graph):
    return {name: graph[name].synapse_shape for name in graph.weighted_ops}


def _layer_difference(graph_a, graph_b):
    """Why slices of the two graphs cannot be compared synapse by synapse, or None."""
    a, b = _synapse_shapes(graph_a), _synapse_shapes(graph_b)
    if a == b:
        return None
    parts = []
    if sorted(set(a) - set(b)):
        parts.append(f"only model_a has {sorted(set(a) - set(b))}")
    if sorted(set(b) - set(a)):
        parts.append(f"only model_b has {sorted(set(b) - set(a))}")
    parts += [f"{n}: kernel {a[n]} vs {b[n]}" for n in a if n in b and a[n] != b[n]]
    return ("the models' weighted layers differ (" + "; ".join(parts) + "), so their slices cannot "
            "be compared synapse by synapse (were channels or units removed?)")


def _survival(models, x, y, classes, max_per_class, theta, granularity, batch_size, progress=None):
    """``(survival per class, None)``, or ``(None, why)`` when the slices cannot be compared."""
    from nnslicer.errors import UnsupportedLayerError
    from nnslicer import lift
    from nnslicer import Slicer

    from .synapse_scores import class_slices

    graphs = []
    for label, model in zip(("model_a", "model_b"), models):
        try:
            graphs.append(lift(model, granularity))
        except UnsupportedLayerError as exc:
            return None, f"nnslicer cannot lift {label}: {exc}"
    why = _layer_difference(*graphs)
    if why:
        return None, why
    slices, done = [], 0
    for model in models:
        slicer = Slicer(model, theta=theta, granularity=granularity, batch_size=batch_size).fit(x)
        report = None if progress is None else (lambda n, before=done: progress(before + n))
        slices.append(class_slices(slicer, x, y, classes, max_per_class, progress=report))
        done += sum(s.samples for s in slices[-1].values())
    survival = {}
    for c in classes:
        names = list(slices[0][c].synapse_counts)
        in_a = slices[0][c].to_vector(names) != 0
        in_b = slices[1][c].to_vector(names) != 0
        n = np.count_nonzero(in_a)
        survival[c] = 1.0 if n == 0 else float(np.count_nonzero(in_a & in_b) / n)
    return survival, None


def _mean_or_none(values):
    return float(np.mean(values)) if len(values) else None


def compare(model_a, model_b, x, y, classes=None, slices=True, max_per_class=20, saliency_samples=100,
            theta=None, granularity="element", batch_size=256, names=None, progress=None, class_names=None):
    """Compare a model with its compressed version on labelled samples.

    Parameters
    ----------
    model_a : keras.Model
        The reference (original) classifier.
    model_b : keras.Model
        The compressed one: same input shape and number of classes.
    x : array
        Samples, shaped as the models' input (a batch), numeric and finite.
    y : array of int
        One label per sample (one-hot rows are accepted).
    classes : list of int, optional
        Classes of the per-class figures (default: every class in ``y``); each needs samples.
    slices : bool, default True
        Compute slice survival (False skips the slicing, the slow part).
    max_per_class : int, default 20
        Slice at most this many samples of each class (the first ones).
    saliency_samples : int, default 100
        Saliency maps of the first this many samples (0 skips them).
    theta : float in (0, 1), optional
        The Slicer's theta (default: its default); ``granularity`` "element" or "channel".
    batch_size : int, default 256
    names : (str, str), optional
        What to call the models in the report (default: their Keras names).
    progress : callable, optional
        Called with the number of samples sliced so far (both models' class slices).
    class_names : str or sequence of str, optional
        The classes' names, for the report's text and page (anything
        :func:`nnslicer.datasets.class_names` reads: ``"fashion_mnist"``, a file, the names).

    Returns
    -------
    CompressionReport

    Raises
    ------
    InvalidInputError
        The models or data do not fit together (input shapes, classes, labels).
    InvalidParameterError
        A parameter is out of range.
    """
    from nnslicer import check_rule

    from .synapse_scores import check_classes

    input_shape, n_classes = _check_models(model_a, model_b)
    if class_names is not None:
        class_names = read_class_names(class_names, n_classes)
    x, y = _check_data(x, y, input_shape, n_classes)
    max_per_class = _check_int(max_per_class, "max_per_class")
    saliency_samples = _check_int(saliency_samples, "saliency_samples", low=0)
    batch_size = _check_int(batch_size, "batch_size")
    if not isinstance(slices, (bool, np.bool_)):
        raise InvalidParameterError(f"The 'slices' parameter of compare must be True or False. Got {slices!r} instead.")
    if granularity not in ("element", "channel"):
        raise InvalidParameterError(
            f"The 'granularity' parameter of compare must be 'element' or 'channel'. Got {granularity!r} instead.")
    theta = check_rule("nnslicer", theta, "compare")
    if names is None:
        names = (model_a.name, model_b.name)
    elif isinstance(names, str) or len(names) != 2 or not all(isinstance(n, str) for n in names):
        raise InvalidParameterError(f"The 'names' parameter of compare must be two strings. Got {names!r} instead.")
    classes = tuple(int(c) for c in np.unique(y)) if classes is None else \
        check_classes(classes, y, n_classes, "compare")

    log.info("compare: predicting %d samples with %s and %s", len(x), *names)
    p_a, soft_a = _probabilities(model_a.predict(x, batch_size=batch_size, verbose=0))
    p_b, soft_b = _probabilities(model_b.predict(x, batch_size=batch_size, verbose=0))
    pred_a, pred_b = p_a.argmax(axis=1), p_b.argmax(axis=1)
    flipped = pred_a != pred_b
    rows = np.arange(len(x))
    shift = p_b[rows, pred_a] - p_a[rows, pred_a]
    histogram = {"flipped": np.histogram(shift[flipped], SHIFT_EDGES)[0].tolist(),
                 "unchanged": np.histogram(shift[~flipped], SHIFT_EDGES)[0].tolist()}

    m = min(saliency_samples, len(x))
    mad, saliency_note, examples = None, None, []
    if m:
        log.info("compare: saliency maps of %d samples", m)
        maps_a = _saliency(model_a, x[:m], pred_a[:m], soft_a, batch_size)
        maps_b = _saliency(model_b, x[:m], pred_a[:m], soft_b, batch_size)
        blind = [label for label, maps in (("model_a", maps_a), ("model_b", maps_b)) if not maps.any()]
        if len(blind) == 1:
            saliency_note = (f"not comparable: every saliency map of {blind[0]} is zero (its gradient does not "
                             "reach the input, e.g. rounding without a straight-through estimator)")
            log.warning("compare: saliency MAD %s", saliency_note)
        else:
            deviation = np.abs(maps_a - maps_b).reshape(m, -1).mean(axis=1)
            mad = float(deviation.mean())
            if _is_image(input_shape):
                examples = _examples(x, y, pred_a, pred_b, maps_a, maps_b, deviation)

    survival, note = None, "not computed (slices=False)"
    if slices:
        log.info("compare: slicing classes %s on both models", list(classes))
        survival, note = _survival((model_a, model_b), x, y, classes, max_per_class, theta, granularity, batch_size,
                                   progress)
        if note:
            log.warning("compare: no slice survival: %s", note)

    def accuracy(pred, c):
        return float(np.mean(pred[y == c] == c))

    report = CompressionReport(
        name_a=str(names[0]), name_b=str(names[1]), samples=len(x), classes=classes,
        class_samples={c: int(np.count_nonzero(y == c)) for c in classes},
        accuracy_a=float(np.mean(pred_a == y)), accuracy_b=float(np.mean(pred_b == y)),
        class_accuracy_a={c: accuracy(pred_a, c) for c in classes},
        class_accuracy_b={c: accuracy(pred_b, c) for c in classes},
        flipped=float(np.mean(flipped)), confidence_shift=float(shift.mean()),
        confidence_shift_abs=float(np.abs(shift).mean()),
        confidence_shift_flipped=_mean_or_none(np.abs(shift[flipped])),
        confidence_shift_unchanged=_mean_or_none(np.abs(shift[~flipped])),
        shift_histogram=histogram, saliency_mad=mad, saliency_samples=m, saliency_note=saliency_note,
        survival=survival, survival_note=note, saliency_examples=examples,
        settings={"theta": theta, "granularity": granularity, "max_per_class": max_per_class},
        class_names=class_names)
    log.info("%r", report)
    return report
