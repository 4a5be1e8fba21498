"""Profiling: the mean activation of every tensor over a data set (SPEC.md section 2).

Means are accumulated batch by batch (float64 sums), so the data set's activations are never
held in memory at once. With labels, one mean per class is also kept, over the samples the
model predicts correctly (the authors' code).
"""

from __future__ import annotations

import logging
import numbers

import numpy as np

from .errors import FileFormatError, InvalidInputError
from .forward import as_batch, batch_sums, check_finite
from .io import load_archive, same_arrays, save_archive
from .validation import Interval, check_param

__all__ = ["Profile", "profile", "iter_batches", "check_labels"]

log = logging.getLogger(__name__)

#: Samples of the first profiling batch that :meth:`nnslicer.Slicer.fit` checks the lift on.
CHECK_SAMPLES = 32


class Profile:
    """Mean activations of every tensor of one model.

    Attributes
    ----------
    means : dict of str to ndarray
        Global mean of each tensor (shape without batch).
    class_means : dict of str to ndarray, or None
        ``[num_classes, *shape]`` means over correctly predicted samples of each class; a class
        with no such sample falls back to the global mean.
    class_counts : ndarray or None
        How many samples each class mean is over.
    n_samples : int
    model, fingerprint : str
        The model's name and :attr:`DataFlowGraph.fingerprint`.
    input_range : (float, float) or None
        The smallest and largest input value profiled (None in profile files written before
        nnslicer kept it): the Slicer warns when it is given inputs far outside it (0-255
        pixels against a profile of [0, 1] ones).
    """

    def __init__(self, means, n_samples, model, fingerprint, class_means=None, class_counts=None, input_range=None):
        self.means = means
        self.input_range = None if input_range is None else (float(input_range[0]), float(input_range[1]))
        self.n_samples = int(n_samples)
        self.model = model
        self.fingerprint = fingerprint
        self.class_means = class_means
        self.class_counts = None if class_counts is None else np.asarray(class_counts, dtype=np.int64)

    def __eq__(self, other):
        if not isinstance(other, Profile):
            return NotImplemented
        return (self.n_samples, self.model, self.fingerprint, self.input_range) == \
            (other.n_samples, other.model, other.fingerprint, other.input_range) \
            and same_arrays(self.means, other.means) and same_arrays(self.class_means, other.class_means) \
            and same_arrays({"n": self.class_counts}, {"n": other.class_counts})

    __hash__ = None

    def __repr__(self):
        per_class = "" if self.class_counts is None else f", classes={len(self.class_counts)}"
        return (f"Profile(model={self.model!r}, samples={self.n_samples:,}, "
                f"tensors={len(self.means)}{per_class})")

    def check(self, graph):
        """Raise FileFormatError unless this profile was made for ``graph``'s model."""
        if self.fingerprint != graph.fingerprint:
            raise FileFormatError(
                f"This profile was made for model {self.model!r} (fingerprint {self.fingerprint}), "
                f"not for {graph.name!r} (fingerprint {graph.fingerprint}): profile this model again.")
        k = graph.num_outputs if self.class_means is not None else None
        for op in graph.ops:  # a damaged file can have the right fingerprint and the wrong arrays
            shapes = [("mean", self.means.get(op.name), tuple(op.shape))]
            if k is not None:
                shapes.append(("class mean", self.class_means.get(op.name), (k,) + tuple(op.shape)))
            for what, arr, shape in shapes:
                if arr is None or np.shape(arr) != shape:
                    got = None if arr is None else np.shape(arr)
                    raise FileFormatError(f"This profile's {what} of {op.name!r} has shape {got}, not {shape}: "
                                          "profile the model again.")
        if k is not None and np.shape(self.class_counts) != (k,):
            raise FileFormatError(f"This profile's class counts have shape {np.shape(self.class_counts)}, not ({k},).")

    def save(self, path):
        """Write the profile to ``path`` (.npz); :meth:`load` reads it back exactly."""
        return save_archive(path, "profile", *self.to_arrays())

    def to_arrays(self):
        """``(meta, arrays)``: the profile as JSON-able metadata and named arrays, for files
        that carry a profile (:meth:`save`, detectors); :meth:`from_arrays` reads them back."""
        arrays = {f"mean/{k}": v for k, v in self.means.items()}
        if self.class_means is not None:
            arrays.update({f"class_mean/{k}": v for k, v in self.class_means.items()})
            arrays["class_counts"] = self.class_counts
        meta = {"model": self.model, "fingerprint": self.fingerprint, "n_samples": self.n_samples}
        if self.input_range is not None:
            meta["input_range"] = list(self.input_range)
        return meta, arrays

    @classmethod
    def from_arrays(cls, meta, arrays):
        """The profile of :meth:`to_arrays` (extra arrays are ignored). Raises FileFormatError
        for anything :meth:`to_arrays` cannot have written: a missing or mistyped field, means
        that are not finite floats, class means or counts that do not fit the means."""
        if not isinstance(meta, dict):
            raise FileFormatError(f"its metadata is a {type(meta).__name__}, not a dict.")
        for key, types in (("model", str), ("fingerprint", str), ("n_samples", numbers.Integral)):
            if isinstance(meta.get(key), bool) or not isinstance(meta.get(key), types):
                raise FileFormatError(f"its {key!r} is {meta.get(key)!r}, not a {types.__name__}.")
        if meta["n_samples"] < 1:
            raise FileFormatError(f"it is a profile of {meta['n_samples']} samples.")
        input_range = meta.get("input_range")
        if input_range is not None and not (
                isinstance(input_range, list) and len(input_range) == 2
                and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) for v in input_range)
                and input_range[0] <= input_range[1]):
            raise FileFormatError(f"its input range {input_range!r} is not [smallest, largest] finite numbers.")
        means = {k[5:]: v for k, v in arrays.items() if k.startswith("mean/")}
        class_means = {k[11:]: v for k, v in arrays.items() if k.startswith("class_mean/")} or None
        counts = arrays.get("class_counts")
        if not means:
            raise FileFormatError("it holds no means.")
        _check_means(means, "mean")
        if (class_means is None) != (counts is None):
            raise FileFormatError("it holds class means without class counts, or counts without means.")
        if class_means is not None:
            _check_means(class_means, "class mean")
            _check_class_means(means, class_means, counts, meta["n_samples"])
        return cls(means, meta["n_samples"], meta["model"], meta["fingerprint"], class_means, counts, input_range)

    @classmethod
    def load(cls, path):
        """The profile saved at ``path``; FileFormatError for anything :meth:`save` did not write."""
        meta, arrays = load_archive(path, "profile")
        try:
            return cls.from_arrays(meta, arrays)
        except FileFormatError as exc:
            raise FileFormatError(f"{path!r} is not a valid profile file: {exc}") from None


def _check_means(means, what):
    """Means are finite float arrays (an integer, complex or NaN mean changes every slice)."""
    for name, value in means.items():
        if value.dtype.kind != "f":
            raise FileFormatError(f"its {what} of {name!r} is an array of {value.dtype}, not of floats.")
        if not np.isfinite(value).all():
            raise FileFormatError(f"its {what} of {name!r} holds NaN or inf values.")


def _check_class_means(means, class_means, counts, n_samples):
    """Per-class means cover the same tensors as the means, one row per class, and the class
    counts are as many non-negative integers, adding up to at most ``n_samples``."""
    if counts.dtype.kind not in "iu" or counts.ndim != 1 or len(counts) < 1 \
            or (counts < 0).any() or counts.sum() > n_samples:
        raise FileFormatError(f"its class counts {counts!r} are not one count per class of at most "
                              f"{n_samples} samples.")
    if set(class_means) != set(means):
        raise FileFormatError("its class means and its means are of different tensors.")
    for name, value in class_means.items():
        if value.shape != (len(counts),) + means[name].shape:
            raise FileFormatError(f"its class mean of {name!r} has shape {value.shape}, not "
                                  f"{(len(counts),) + means[name].shape}.")


def check_batch_size(batch_size, owner):
    """Refuse a batch size that is not a positive int."""
    return check_param(batch_size, "batch_size", owner, Interval(int, 1))


def _is_array(data):
    return isinstance(data, np.ndarray) or (hasattr(data, "__len__") and hasattr(data, "shape"))


def first_batch(graph, x, y=None):
    """``(x, batch)``: the first :data:`CHECK_SAMPLES` samples of the profiling data ``x`` as
    a float32 batch, and an ``x`` that still yields every sample (a generator's first batch is
    put back in front). ``batch`` is None where profiling will refuse ``x`` anyway (it then says
    why, as without the check)."""
    if _is_array(x) or (y is not None and isinstance(x, (list, tuple))):
        try:
            arr = x if _is_array(x) else np.asarray(x)
            head = arr if tuple(np.shape(arr)) == tuple(graph.input_shape) else arr[:CHECK_SAMPLES]
        except (TypeError, ValueError, IndexError):
            return x, None
    elif y is not None:  # profiling refuses labels beside a stream
        return x, None
    else:
        try:
            items = iter(x)
        except TypeError:
            return x, None
        first = next(items, _END)
        if first is _END:
            return items, None
        x = _chain(first, items)
        head = first[0] if isinstance(first, (tuple, list)) and len(first) == 2 else first
    try:
        return x, as_batch(graph, head, what="data")[:CHECK_SAMPLES]
    except InvalidInputError:
        return x, None


_END = object()


def _chain(first, rest):
    yield first
    yield from rest


def iter_batches(data, labels=None, batch_size=256):
    """Yield ``(x, y)`` batches from arrays, or from an iterable of ``x`` or ``(x, y)`` batches
    (a generator or a ``tf.data.Dataset``), so that a data set larger than memory streams."""
    check_batch_size(batch_size, "profile")
    if _is_array(data):
        data = np.asarray(data)
        if labels is not None:
            labels = np.asarray(labels)
            if labels.ndim not in (1, 2) or len(labels) != len(data):
                raise InvalidInputError(
                    f"labels have shape {labels.shape}; expected ({len(data)},), one per sample "
                    "(or one-hot rows).")
        for i in range(0, len(data), batch_size):
            yield data[i:i + batch_size], None if labels is None else labels[i:i + batch_size]
        return
    if labels is not None:
        raise InvalidInputError("Give labels inside the batches ((x, y) tuples) when data is an iterable.")
    for item in data:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            x, y = item
            yield np.asarray(x), np.asarray(y)
        else:
            yield np.asarray(item), None


def profile(graph, data, labels=None, batch_size=256, progress=None):
    """Profile ``graph`` over ``data`` (see :func:`iter_batches` for what data can be).

    Parameters
    ----------
    graph : DataFlowGraph or keras.Model
        A lifted model (:func:`nnslicer.lift`), or a Keras model to lift here.
    data : array or iterable of batches
    labels : array of int, optional
        Class labels (or one-hot rows); with them, per-class means are kept too.
    batch_size : int, default 256
    progress : callable, optional
        Called with the number of samples done after each batch.
    """
    from .frontends import as_graph

    graph = as_graph(graph, caller="profile")
    if labels is not None and isinstance(data, (list, tuple)):  # samples with their labels, not batches
        data = np.asarray(data)
    sums, class_sums = None, None
    class_counts = None
    low, high = np.inf, -np.inf
    n = 0
    labelled = None
    num_classes = graph.num_outputs
    if labels is not None and _is_array(data):  # check them whole, not batch by batch
        labels = check_labels(labels, len(data), num_classes)
    for x, y in iter_batches(data, labels, batch_size):
        if labelled is None:
            labelled = y is not None
        elif labelled != (y is not None):
            raise InvalidInputError("Some batches have labels and some do not.")
        x = as_batch(graph, x, what="data")
        if y is not None:
            y = check_labels(y, len(x), num_classes)
        low, high = min(low, float(np.min(x))), max(high, float(np.max(x)))
        batch, batch_class, batch_counts = batch_sums(graph, x, y)
        check_finite(graph, batch)
        if sums is None:
            sums = batch
        else:
            for k, v in batch.items():
                sums[k] += v
        if y is not None:
            if class_sums is None:
                class_sums, class_counts = batch_class, batch_counts
            else:
                for k, v in batch_class.items():
                    class_sums[k] += v
                class_counts += batch_counts
        n += len(x)
        if progress is not None:
            progress(n)
    if n == 0:
        raise InvalidInputError("data is empty: profiling needs at least one sample.")
    means = {k: (v / n).astype(np.float32) for k, v in sums.items()}
    class_means = None
    if class_sums is not None:
        class_means = {}
        empty = class_counts == 0
        if empty.any():
            log.warning("No correctly predicted sample for class(es) %s: their class means are the "
                        "global means.", np.flatnonzero(empty).tolist())
        for k, v in class_sums.items():
            cm = v / np.maximum(class_counts, 1).reshape((-1,) + (1,) * (v.ndim - 1))
            cm[empty] = means[k]
            class_means[k] = cm.astype(np.float32)
    return Profile(means, n, graph.name, graph.fingerprint, class_means, class_counts, (low, high))


def check_labels(y, n, num_classes):
    """``y`` as ``n`` int64 class indices in ``[0, num_classes)``, from a vector, a column or
    one-hot rows (integral floats are accepted); anything else is refused with
    :class:`InvalidInputError`.

    >>> check_labels(np.eye(3)[[2, 0]], 2, 3)       # one-hot rows become class indices
    array([2, 0])
    """
    y = np.asarray(y)
    if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise InvalidInputError(f"labels must be integer class indices; got an array of {y.dtype}.")
    if y.ndim == 2 and y.shape[1] == num_classes and num_classes > 1:  # one-hot
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise InvalidInputError(f"labels of shape {y.shape} are read as one-hot rows, but not every row is "
                                    "a single 1 among 0s (soft labels or probabilities?): give class indices "
                                    "(e.g. y.argmax(axis=1), if that is what you mean).")
        y = y.argmax(axis=1)
    elif y.ndim == 2 and y.shape[1] == 1:  # a column
        y = y[:, 0]
    if y.shape != (n,):
        raise InvalidInputError(f"labels must be one integer label per sample ({n}) or one-hot rows "
                                f"({n}, {num_classes}); got shape {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(np.equal(np.mod(y, 1), 0)):
            raise InvalidInputError(f"labels must be integer class indices; got non-integral {y.dtype} values.")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise InvalidInputError(f"labels outside [0, {num_classes}): got values from {y.min():g} to {y.max():g}; "
                                f"the model has {num_classes} classes.")
    return y.astype(np.int64)
