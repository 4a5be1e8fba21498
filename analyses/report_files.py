"""The compression report (:func:`analyses.compression_report.compare`) and its JSON file:
what a report holds, how it is written, and the checks that a file read back is one."""

from __future__ import annotations

import json
import numbers
import os
from dataclasses import dataclass, field, fields

import numpy as np

from nnslicer.datasets import class_label
from nnslicer.errors import FileFormatError
from nnslicer.io import is_int, non_finite

__all__ = ["CompressionReport", "FORMAT", "SHIFT_EDGES"]

FORMAT = "nnslicer-compression-report"
#: The confidence-shift histogram: bins of width 0.05 over [-1, 1].
SHIFT_EDGES = np.linspace(-1.0, 1.0, 41)


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.2f}%"


@dataclass(repr=False, eq=False)
class CompressionReport:
    """The figures of :func:`compare`; per-class figures are dicts keyed by class index
    (``class_names``, when known, names every class of the models, for the text and the page).

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
    class_names: tuple | None = None

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
    def label(self, c):
        """How class ``c`` is shown: ``"9 (Ankle boot)"`` with class names, ``"9"`` without."""
        return class_label(c, self.class_names)

    def __repr__(self):
        cls, change = self.max_class_change
        saliency = "n/a" if self.saliency_mad is None else f"{self.saliency_mad:.4f}"
        survival = "n/a" if self.survival is None else f"{self.survival_mean:.4f}"
        return (f"CompressionReport({self.name_a!r} vs {self.name_b!r}, samples={self.samples:,}, "
                f"accuracy={self.accuracy_a:.4f} -> {self.accuracy_b:.4f}, flipped={self.flipped:.4f}, "
                f"max_class_change={change:+.2f} pp (class {self.label(cls)}), "
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
            ("largest class change", f"{change:+.2f} pp (class {self.label(cls)})"),
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
        width = max([5, *(len(self.label(c)) for c in self.classes)])
        rows = [f"{'class':>{width}} {'samples':>8} {'acc A':>8} {'acc B':>8} {'change':>9} {'survival':>9}"]
        for c, change in self.class_changes.items():
            survival = "-" if self.survival is None else _pct(self.survival[c])
            rows.append(f"{self.label(c):>{width}} {self.class_samples[c]:>8} {_pct(self.class_accuracy_a[c]):>8} "
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
        d["class_names"] = None if self.class_names is None else list(self.class_names)
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
        from .report_html import to_html

        return to_html(self)

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
_OPTIONAL = ("settings", "saliency_examples", "survival", "survival_note", "saliency_note", "class_names")
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
    if kw.get("class_names") is not None:
        names = kw["class_names"]
        if not isinstance(names, list) or len(names) <= max(classes) \
                or not all(isinstance(n, str) and n for n in names):
            raise _bad_report(f"'class_names' is {reprlib.repr(names)}, not a name for each class")
        kw["class_names"] = tuple(names)
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
