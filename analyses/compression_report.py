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

A :class:`CompressionReport` saves as JSON (:meth:`~CompressionReport.save_json`,
:meth:`~CompressionReport.load`) and as one self-contained HTML page with plots
(:meth:`~CompressionReport.save_html`; needs matplotlib).

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

import base64
import html
import io
import json
import logging
import numbers
import os
from dataclasses import dataclass, field, fields

import numpy as np

from nnslicer import check_inputs, check_labels
from nnslicer.errors import FileFormatError, InvalidInputError, InvalidParameterError
from nnslicer.io import is_int, non_finite
from nnslicer.validation import Interval, check_param


__all__ = ["compare", "CompressionReport"]

log = logging.getLogger(__name__)

FORMAT = "nnslicer-compression-report"
#: The confidence-shift histogram: bins of width 0.05 over [-1, 1].
SHIFT_EDGES = np.linspace(-1.0, 1.0, 41)
#: Saliency examples kept for the HTML page (flipped samples first, then the largest deviations).
EXAMPLES = 3


# --------------------------------------------------------------------------- the report
def _pct(value):
    return "n/a" if value is None else f"{100 * value:.2f}%"


@dataclass(repr=False, eq=False)
class CompressionReport:
    """The figures of :func:`compare`; per-class figures are dicts keyed by class index.

    ``survival`` is None (and ``survival_note`` says why) when slices were not compared;
    ``saliency_mad`` is None with ``saliency_samples=0``, and when the gradient of only one of
    the models never reaches the input (``saliency_note`` says so; e.g. a quantizer that rounds
    without a straight-through estimator). ``saliency_examples`` holds a few image inputs with
    both models' saliency maps (channel maximum) for the HTML page.
    """

    name_a: str
    name_b: str
    samples: int
    classes: tuple
    class_samples: dict
    accuracy_a: float
    accuracy_b: float
    class_accuracy_a: dict
    class_accuracy_b: dict
    flipped: float
    confidence_shift: float
    confidence_shift_abs: float
    confidence_shift_flipped: float | None
    confidence_shift_unchanged: float | None
    shift_histogram: dict
    saliency_mad: float | None
    saliency_samples: int
    survival: dict | None = None
    survival_note: str | None = None
    saliency_note: str | None = None
    settings: dict = field(default_factory=dict)
    saliency_examples: list = field(default_factory=list)

    # ------------------------------------------------------------------ derived figures
    @property
    def class_changes(self):
        """Per class: accuracy of b minus accuracy of a, in percentage points."""
        return {c: 100 * (self.class_accuracy_b[c] - self.class_accuracy_a[c]) for c in self.classes}

    @property
    def max_class_change(self):
        """``(class, change in points)`` of the class whose accuracy changed most (signed)."""
        changes = self.class_changes
        worst = max(self.classes, key=lambda c: (abs(changes[c]), -c))
        return worst, changes[worst]

    @property
    def survival_mean(self):
        """Mean slice survival over the classes, or None."""
        return None if self.survival is None else float(np.mean([self.survival[c] for c in self.classes]))

    # ------------------------------------------------------------------ text
    def __repr__(self):
        cls, change = self.max_class_change
        saliency = "n/a" if self.saliency_mad is None else f"{self.saliency_mad:.4f}"
        survival = "n/a" if self.survival is None else f"{self.survival_mean:.4f}"
        return (f"CompressionReport({self.name_a!r} vs {self.name_b!r}, samples={self.samples}, "
                f"accuracy={self.accuracy_a:.4f} -> {self.accuracy_b:.4f}, flipped={self.flipped:.4f}, "
                f"max_class_change={change:+.2f} pp (class {cls}), "
                f"confidence_shift={self.confidence_shift:+.4f}, saliency_mad={saliency}, "
                f"survival={survival})")

    def headline(self):
        """The headline figures as ``(label, text)`` pairs (printed by the CLI, shown in HTML)."""
        cls, change = self.max_class_change
        shift = (f"mean {self.confidence_shift:+.4f}, mean |shift| {self.confidence_shift_abs:.4f} "
                 f"(flipped {_num(self.confidence_shift_flipped)}, "
                 f"unchanged {_num(self.confidence_shift_unchanged)})")
        saliency = (self.saliency_note or "not computed") if self.saliency_mad is None else \
            f"{_pct(self.saliency_mad)} ({self.saliency_samples} samples)"
        survival = (f"not compared: {self.survival_note}" if self.survival is None else
                    f"{_pct(self.survival_mean)} mean over {len(self.classes)} classes")
        return [
            ("accuracy", f"{_pct(self.accuracy_a)} -> {_pct(self.accuracy_b)} "
                         f"({100 * (self.accuracy_b - self.accuracy_a):+.2f} pp)"),
            ("flipped predictions", _pct(self.flipped)),
            ("largest class change", f"{change:+.2f} pp (class {cls})"),
            ("confidence shift", shift),
            ("saliency MAD", saliency),
            ("slice survival", survival),
        ]

    def summary(self):
        """The models, the sample count and the headline figures, as text."""
        rows = [f"A (reference): {self.name_a}   B (compressed): {self.name_b}   {self.samples} samples"]
        width = max(len(label) for label, _ in self.headline())
        rows += [f"{label:<{width}}  {text}" for label, text in self.headline()]
        return "\n".join(rows)

    def table(self):
        """One line per class: samples, accuracy of a and b, change (pp), survival."""
        rows = [f"{'class':>5} {'samples':>8} {'acc A':>8} {'acc B':>8} {'change':>9} {'survival':>9}"]
        for c, change in self.class_changes.items():
            survival = "-" if self.survival is None else _pct(self.survival[c])
            rows.append(f"{c:>5} {self.class_samples[c]:>8} {_pct(self.class_accuracy_a[c]):>8} "
                        f"{_pct(self.class_accuracy_b[c]):>8} {change:>+6.2f} pp {survival:>9}")
        return "\n".join(rows)

    def __eq__(self, other):
        """Equal when both would write the same JSON (saliency examples at its 4 decimals)."""
        if not isinstance(other, CompressionReport):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    # ------------------------------------------------------------------ files
    def to_dict(self):
        """A JSON-ready dict (class keys become strings in JSON; :meth:`from_dict` reads them
        back); ``max_class_change`` and ``survival_mean`` are added for readers."""
        d = {"format": FORMAT, "version": 1}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                value = {str(k): v for k, v in value.items()}
            d[f.name] = value
        d["classes"] = list(self.classes)
        d["saliency_examples"] = [{k: np.round(v, 4).tolist() if isinstance(v, np.ndarray) else v
                                   for k, v in e.items()} for e in self.saliency_examples]
        cls, change = self.max_class_change
        d["max_class_change"] = {"class": cls, "points": change}
        d["survival_mean"] = self.survival_mean
        return d

    @classmethod
    def from_dict(cls, d):
        """The report of :meth:`to_dict` (or of its JSON).

        Raises FileFormatError for anything :meth:`to_dict` cannot have written after
        :func:`compare` (see :func:`_check_report`): another format or version, a missing field, a
        field of the wrong type or out of its range (shares in [0, 1], the confidence shift in
        [-1, 1], counts positive ints, per-class dicts keyed by exactly the report's classes,
        a histogram of 40 bins, saliency examples of finite maps in [0, 1] shaped like their
        image), NaN or infinity anywhere. Unknown top-level keys (and the derived
        ``max_class_change`` and ``survival_mean``) are ignored."""
        return cls(**_check_report(d, {f.name for f in fields(cls)}))

    def save_json(self, path):
        """Write the report to ``path`` as JSON (atomically); returns the path."""
        from nnslicer.io import atomic_path

        path = os.fspath(path)
        with atomic_path(path, ".json") as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)
        return path

    @classmethod
    def load(cls, path):
        """Read a report written by :meth:`save_json`.

        Raises FileFormatError, naming the file and the problem, for anything else: a file that
        is not UTF-8 JSON (or nests too deep, or holds an integer too long to read), or JSON
        that :meth:`from_dict` refuses."""
        from nnslicer.io import check_readable

        path = check_readable(path, "compression report")
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (ValueError, RecursionError) as exc:  # JSON and UTF-8 errors, over-long ints, deep nesting
            raise FileFormatError(f"{path!r} is not a JSON compression report ({type(exc).__name__}: "
                                  f"{str(exc)[:200]}).") from None
        try:
            return cls.from_dict(d)
        except FileFormatError as exc:
            raise FileFormatError(f"{path!r}: {exc}") from None

    def to_html(self):
        """One self-contained HTML page: headline, per-class table and plots (base64 PNG)."""
        return _html(self)

    def save_html(self, path):
        """Write :meth:`to_html` to ``path`` (atomically); returns the path."""
        from nnslicer.io import atomic_path

        path = os.fspath(path)
        page = self.to_html()
        with atomic_path(path, ".html") as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
        return path


def _num(value):
    return "n/a" if value is None else f"{value:.4f}"


# --------------------------------------------------------------------------- reading reports
#: Fields a report may lack (they have defaults).
_OPTIONAL = ("settings", "saliency_examples", "survival", "survival_note", "saliency_note")
_EXAMPLE_KEYS = {"index", "label", "pred_a", "pred_b", "image", "saliency_a", "saliency_b"}


def _is_share(value, low=0.0):
    """A finite real number in [low, 1] (a bool is not a number here)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and low <= value <= 1


def _bad_report(what):
    return FileFormatError(f"The compression report's {what}.")


def _grid(value, what):
    """A rectangular nest of lists of real numbers as a float64 array, or FileFormatError."""
    shape, level = [], [value]
    while level and all(isinstance(v, list) for v in level):
        lengths = {len(v) for v in level}
        if len(lengths) != 1:
            raise _bad_report(f"{what} is ragged")
        shape.append(lengths.pop())
        level = [x for v in level for x in v]
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in level):
        raise _bad_report(f"{what} holds values that are not numbers")
    try:
        array = np.array(level, dtype=np.float64).reshape(shape)
    except OverflowError:
        raise _bad_report(f"{what} holds numbers too large for a float") from None
    if not np.isfinite(array).all():
        raise _bad_report(f"{what} holds NaN or infinity")
    return array


def _class_dict(d, key, classes, check, what):
    """``{class: value}`` from a JSON dict keyed by exactly ``classes`` (as ``str(c)``), each value
    passing ``check``."""
    import reprlib

    value = d[key]
    if not isinstance(value, dict):
        raise _bad_report(f"{key!r} is a {type(value).__name__}, not a dict of classes")
    names = {str(c): int(c) for c in classes}
    if set(value) != set(names):
        raise _bad_report(f"{key!r} is keyed by {reprlib.repr(sorted(map(str, value)))}, not by its classes "
                          f"{sorted(names)}")
    for k, v in value.items():
        if not check(v):
            raise _bad_report(f"{key!r} of class {k} is {reprlib.repr(v)}, not {what}")
    return {names[k]: v for k, v in value.items()}


def _check_report(d, names):
    """The keyword arguments of a :class:`CompressionReport` (``names``: its fields) from the dict
    of :meth:`CompressionReport.to_dict`, every field checked; FileFormatError otherwise."""
    import reprlib

    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise FileFormatError("Not a compression report (no 'format': 'nnslicer-compression-report').")
    version = d.get("version")
    if not is_int(version) or version != 1:
        raise FileFormatError(f"A compression report of format version {reprlib.repr(version)}; this nnslicer "
                              "reads version 1.")
    missing = sorted(n for n in names if n not in d and n not in _OPTIONAL)
    if missing:
        raise FileFormatError(f"The compression report lacks {missing}.")
    bad = non_finite(d, "report")
    if bad:
        raise _bad_report(f"holds NaN or infinity at {bad}")
    kw = {k: d[k] for k in names if k in d}

    def field(key, check, what):
        if not check(kw[key]):
            raise _bad_report(f"{key!r} is {reprlib.repr(kw[key])}, not {what}")

    for key in ("name_a", "name_b"):
        field(key, lambda v: isinstance(v, str), "a string")
    field("samples", lambda v: is_int(v) and v >= 1, "a positive int")
    classes = kw["classes"]
    if not isinstance(classes, list) or not classes or not all(is_int(c) and c >= 0 for c in classes) \
            or len(set(classes)) != len(classes):
        raise _bad_report(f"'classes' is {reprlib.repr(classes)}, not a list of distinct class indices")
    kw["classes"] = tuple(int(c) for c in classes)
    kw["class_samples"] = _class_dict(d, "class_samples", classes, lambda v: is_int(v) and v >= 1,
                                      "a positive int")
    if sum(kw["class_samples"].values()) > kw["samples"]:
        raise _bad_report(f"classes hold {sum(kw['class_samples'].values())} samples, more than its {kw['samples']}")
    for key in ("class_accuracy_a", "class_accuracy_b"):
        kw[key] = _class_dict(d, key, classes, _is_share, "a share in [0, 1]")
    if kw.get("survival") is not None:
        kw["survival"] = _class_dict(d, "survival", classes, _is_share, "a share in [0, 1]")
    for key in ("accuracy_a", "accuracy_b", "flipped", "confidence_shift_abs"):
        field(key, _is_share, "a share in [0, 1]")
    field("confidence_shift", lambda v: _is_share(v, -1.0), "a number in [-1, 1]")
    for key in ("confidence_shift_flipped", "confidence_shift_unchanged", "saliency_mad"):
        field(key, lambda v: v is None or _is_share(v), "None or a share in [0, 1]")
    bins = len(SHIFT_EDGES) - 1
    field("shift_histogram", lambda h: isinstance(h, dict) and set(h) == {"flipped", "unchanged"} and all(
        isinstance(c, list) and len(c) == bins and all(is_int(n) and n >= 0 for n in c) for c in h.values()),
        f"'flipped' and 'unchanged' counts in {bins} bins")
    field("saliency_samples", lambda v: is_int(v) and 0 <= v <= kw["samples"],
          f"an int in [0, {kw['samples']}] (the samples)")
    for key in ("survival_note", "saliency_note"):
        if key in kw:
            field(key, lambda v: v is None or isinstance(v, str), "None or a string")
    if "settings" in kw:
        s = kw["settings"]
        if not isinstance(s, dict) \
                or "theta" in s and not (_is_share(s["theta"]) and 0 < s["theta"] < 1) \
                or "granularity" in s and s["granularity"] not in ("element", "channel") \
                or "max_per_class" in s and not (is_int(s["max_per_class"]) and s["max_per_class"] >= 1):
            raise _bad_report(f"'settings' is {reprlib.repr(s)}, not a dict of theta in (0, 1), granularity "
                              "'element' or 'channel' and a positive max_per_class")
    examples = kw.get("saliency_examples", [])
    if not isinstance(examples, list):
        raise _bad_report(f"'saliency_examples' is a {type(examples).__name__}, not a list")
    kw["saliency_examples"] = [_check_example(e, i, kw["samples"]) for i, e in enumerate(examples)]
    return kw


def _check_example(e, i, samples):
    """One saliency example: sample index, label and both predictions (ints), the image (2-D, or
    3-D with 3 channels) and both saliency maps (shaped like the image's first two axes, in [0, 1])."""
    what = f"saliency example {i}"
    if not isinstance(e, dict) or set(e) != _EXAMPLE_KEYS:
        raise _bad_report(f"{what} is not a dict of {sorted(_EXAMPLE_KEYS)}")
    for key in ("index", "label", "pred_a", "pred_b"):
        if not is_int(e[key]) or e[key] < 0:
            raise _bad_report(f"{what}'s {key!r} is not a non-negative int")
    if e["index"] >= samples:
        raise _bad_report(f"{what} is of sample {e['index']}, beyond its {samples} samples")
    out = dict(e)
    for key in ("image", "saliency_a", "saliency_b"):
        out[key] = _grid(e[key], f"{what}'s {key!r}")
    image = out["image"]
    if not (image.ndim == 2 or image.ndim == 3 and image.shape[-1] == 3) or not image.size:
        raise _bad_report(f"{what}'s image is shaped {image.shape}, not (height, width) or (height, width, 3)")
    for key in ("saliency_a", "saliency_b"):
        m = out[key]
        if m.shape != image.shape[:2] or (m < 0).any() or (m > 1).any():
            raise _bad_report(f"{what}'s {key!r} is not a map in [0, 1] shaped {image.shape[:2]} like its image")
    return out


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


def _survival(models, x, y, classes, max_per_class, theta, granularity, batch_size):
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
    slices = []
    for model in models:
        slicer = Slicer(model, theta=theta, granularity=granularity, batch_size=batch_size).fit(x)
        slices.append(class_slices(slicer, x, y, classes, max_per_class))
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
            theta=None, granularity="element", batch_size=256, names=None):
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
        survival, note = _survival((model_a, model_b), x, y, classes, max_per_class, theta, granularity, batch_size)
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
        settings={"theta": theta, "granularity": granularity, "max_per_class": max_per_class})
    log.info("%r", report)
    return report


# --------------------------------------------------------------------------- HTML
def _png(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _bars(report, series, ylabel, title):
    """Per-class bars, one group per class; ``series`` is ``[(label, {class: value})]``."""
    from matplotlib.figure import Figure

    classes = list(report.classes)
    fig = Figure(figsize=(max(6.0, 0.35 * len(classes) * len(series)), 3.2))
    ax = fig.subplots()
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        pos = np.arange(len(classes)) + (i - (len(series) - 1) / 2) * width
        ax.bar(pos, [values[c] for c in classes], width, label=label)
    ax.set_xticks(np.arange(len(classes)), [str(c) for c in classes])
    ax.set_xlabel("class")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(loc="lower right", fontsize="small")
    return _png(fig)


def _shift_plot(report):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.2))
    ax = fig.subplots()
    for key, color in (("unchanged", "tab:blue"), ("flipped", "tab:red")):
        counts = np.asarray(report.shift_histogram[key], dtype=np.float64)
        if counts.sum():
            ax.stairs(counts / counts.sum(), SHIFT_EDGES, fill=True, alpha=0.5, color=color,
                      label=f"{key} ({int(counts.sum())} samples)")
    ax.set_xlabel("confidence shift p_B[pred_A] - p_A[pred_A]")
    ax.set_ylabel("share of the group")
    ax.set_title("Confidence shift, flipped vs unchanged samples")
    ax.legend(fontsize="small")
    return _png(fig)


def _saliency_plot(report):
    from matplotlib.figure import Figure

    examples = report.saliency_examples
    fig = Figure(figsize=(8.0, 2.2 * len(examples)))
    axes = fig.subplots(len(examples), 4, squeeze=False)
    for row, e in zip(axes, examples):
        image = np.asarray(e["image"], dtype=np.float64)
        span = image.max() - image.min()
        image = (image - image.min()) / (span if span > 0 else 1.0)
        a, b = np.asarray(e["saliency_a"]), np.asarray(e["saliency_b"])
        flip = " (flipped)" if e["pred_a"] != e["pred_b"] else ""
        panels = [(image, f"sample {e['index']}, label {e['label']}", "gray"),
                  (a, f"A: predicts {e['pred_a']}", "inferno"),
                  (b, f"B: predicts {e['pred_b']}{flip}", "inferno"),
                  (np.abs(a - b), "|A - B|", "inferno")]
        for ax, (data, title, cmap) in zip(row, panels):
            ax.imshow(data, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize="small")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Saliency |d p[pred_A] / d x| (normalised), class pred_A for both")
    return _png(fig)


STYLE = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}figure{margin:1.5em 0}img{max-width:100%}"""


def _html(report):
    from nnslicer.errors import require

    require("matplotlib", "analyses")
    esc = html.escape
    title = f"Compression report: {report.name_a} vs {report.name_b}"
    head = "".join(f'<tr><th class="l">{esc(label)}</th><td class="l">{esc(text)}</td></tr>'
                   for label, text in report.headline())
    rows = []
    for c, change in report.class_changes.items():
        survival = "-" if report.survival is None else _pct(report.survival[c])
        rows.append(f"<tr><td>{c}</td><td>{report.class_samples[c]}</td><td>{_pct(report.class_accuracy_a[c])}</td>"
                    f"<td>{_pct(report.class_accuracy_b[c])}</td><td>{change:+.2f} pp</td><td>{survival}</td></tr>")
    plots = [(_bars(report, [(f"A: {report.name_a}", report.class_accuracy_a),
                             (f"B: {report.name_b}", report.class_accuracy_b)], "accuracy", "Accuracy per class"),
              "Per-class accuracy of A (reference) and B (compressed)."),
             (_shift_plot(report), "Histogram of the confidence shift of A's predicted class, each group "
                                   "normalised to sum to 1.")]
    if report.survival is not None:
        plots.append((_bars(report, [("survival", report.survival)], "share of A's slice kept",
                            "Slice survival per class"),
                      "Share of the synapses of A's class slice that are also in B's."))
    if report.saliency_examples:
        plots.append((_saliency_plot(report), "Example saliency maps: flipped samples first, then the "
                                              "largest deviations."))
    figures = "\n".join(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
                        f"<figcaption>{esc(caption)}</figcaption></figure>" for data, caption in plots)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title><style>{STYLE}</style></head>
<body>
<h1>Compression report</h1>
<p><b>A</b> (reference): {esc(report.name_a)} &nbsp; <b>B</b> (compressed): {esc(report.name_b)} &nbsp;
{report.samples} samples, {len(report.classes)} classes</p>
<table>{head}</table>
<h2>Per class</h2>
<table><tr><th>class</th><th>samples</th><th>accuracy A</th><th>accuracy B</th><th>change</th><th>survival</th></tr>
{"".join(rows)}</table>
<h2>Plots</h2>
{figures}
</body></html>
"""
