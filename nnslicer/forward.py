"""Forward analysis: run the lifted graph on a batch and take every tensor's delta from the
profile (SPEC.md section 2). Also the TensorFlow executor that profiling shares."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError, require

__all__ = ["Tape", "execute", "forward", "as_batch", "check_inputs", "check_finite"]


@dataclass
class Tape:
    """Activations and deltas of every tensor for a batch, element level, ``[B, *shape]``.

    ``predictions`` are the model's predicted classes (argmax of the logits)."""

    acts: dict
    deltas: dict
    predictions: np.ndarray

    def __len__(self):
        return len(self.predictions)


def check_inputs(x, input_shape, what="x", one=False, dtype=None, model=None):
    """``x`` as a numpy batch of model inputs: real numbers (bool read as 0/1), a batch of
    ``input_shape`` (None in it matches any size), not empty, finite.

    ``one``: a single input (of ``input_shape``) is accepted too and gains a batch axis;
    ``dtype``: the array's dtype (default: kept, bool as float32); ``model``: a name for the
    messages. Raises InvalidInputError saying what is wrong (in one message format).
    """
    if np.iscomplexobj(x):
        raise InvalidInputError(f"{what} must be an array of real numbers; it holds complex numbers (give x.real "
                                "or abs(x) if that is what you mean).")
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} is not numeric: it must be an array of real numbers ({exc}).") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InvalidInputError(f"{what} is not numeric: it must be an array of real numbers. Got dtype {arr.dtype} "
                                "instead.")
    shape = tuple(input_shape)
    fits = lambda dims: len(dims) == len(shape) and all(w is None or w == d for w, d in zip(shape, dims))  # noqa: E731
    if one and fits(arr.shape):
        arr = arr[None]
    if arr.ndim != len(shape) + 1 or not fits(arr.shape[1:]):
        of = f" of model {model!r}" if model else ""
        single = " (or one input of that shape)" if one else ""
        raise InvalidInputError(f"{what} must be a batch of inputs shaped {shape}{of}{single}; got shape {arr.shape}.")
    if len(arr) == 0:
        raise InvalidInputError(f"{what} is empty: give at least one sample.")
    if dtype is not None or arr.dtype == bool:
        arr = arr.astype(np.float32 if dtype is None else dtype)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).reshape(len(arr), -1).any(axis=1).sum())
        raise InvalidInputError(f"{what} holds NaN or infinite values (in {bad} sample(s)).")
    return arr


def as_batch(graph, x, what="x"):
    """``x`` as a float32 batch for ``graph`` (:func:`check_inputs`): a single sample gains a
    batch axis."""
    return check_inputs(x, graph.input_shape, what, one=True, dtype=np.float32, model=graph.name)


def check_finite(graph, values):
    """Raise InvalidInputError naming the first op (in graph order) whose values (name -> array
    with a batch axis, or a sum over one) hold NaN or inf: the model overflows there, or its
    weights are not finite. Deltas of such values would silently make a wrong slice."""
    for op in graph.ops:
        value = values.get(op.name)
        if value is not None and not np.isfinite(value).all():
            where = f"op {op.name!r} (layer {op.layer!r})" if op.layer and op.layer != op.name else f"op {op.name!r}"
            raise InvalidInputError(
                f"The model's values at {where} are NaN or inf: the input overflows the model there "
                "(check its range and scaling), or the model's weights are not finite.")


def _executor(graph):
    run = graph.__dict__.setdefault("_tf", {}).get("executor")
    if run is not None:
        return run
    tf = require("tensorflow", "tf")
    from dataclasses import replace

    ops = [replace(op, weights={k: tf.constant(v) for k, v in op.weights.items()}) for op in graph.ops]

    @tf.function(reduce_retracing=True)
    def run(x):
        values = {ops[0].name: x}
        for op in ops[1:]:
            values[op.name] = op.handler.forward(op, [values[name] for name in op.inputs])
        return values

    graph.__dict__["_tf"]["executor"] = run
    return run


def execute(graph, x):
    """All tensors of ``graph`` for the batch ``x`` (already checked), as numpy arrays."""
    tf = require("tensorflow", "tf")
    values = _executor(graph)(tf.convert_to_tensor(x))
    return {name: v.numpy() for name, v in values.items()}


def _summer(graph):
    run = graph.__dict__.setdefault("_tf", {}).get("summer")
    if run is not None:
        return run
    tf = require("tensorflow", "tf")
    executor = _executor(graph)
    k = graph.num_outputs

    @tf.function(reduce_retracing=True)
    def run(x, y, labelled):
        values = executor(x)
        sums = {name: tf.reduce_sum(tf.cast(v, tf.float64), axis=0) for name, v in values.items()}
        if not labelled:
            return sums, {}, tf.zeros([k], tf.int64)
        pred = tf.argmax(tf.reshape(values[graph.logits], [tf.shape(x)[0], -1]), axis=1, output_type=tf.int64)
        segment = tf.where(pred == y, y, k)  # wrongly predicted samples go to an extra, dropped segment
        per_class = {name: tf.math.unsorted_segment_sum(tf.cast(v, tf.float64), segment, k + 1)[:k]
                     for name, v in values.items()}
        counts = tf.math.unsorted_segment_sum(tf.ones_like(y), segment, k + 1)[:k]
        return sums, per_class, counts

    graph.__dict__["_tf"]["summer"] = run
    return run


def batch_sums(graph, x, y=None):
    """Sums over the batch ``x`` of every tensor, computed where TensorFlow runs (the GPU when
    there is one), so only the sums travel back: ``(sums, class_sums, class_counts)``; with
    labels ``y``, per-class sums over the correctly predicted samples too."""
    tf = require("tensorflow", "tf")
    labels = np.zeros(len(x), np.int64) if y is None else np.asarray(y, np.int64)
    sums, per_class, counts = _summer(graph)(tf.convert_to_tensor(x), tf.convert_to_tensor(labels),
                                            y is not None)
    return ({k: v.numpy() for k, v in sums.items()}, {k: v.numpy() for k, v in per_class.items()},
            counts.numpy())


def forward(graph, profile, x, baseline="global", batch_size=256):
    """The :class:`Tape` of ``x``: activations minus the profile's means.

    ``baseline="class"`` takes each sample's deltas from the mean of its predicted class."""
    x = as_batch(graph, x)
    parts = [execute(graph, x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    acts = {name: np.concatenate([p[name] for p in parts]) if len(parts) > 1 else parts[0][name]
            for name in parts[0]}
    check_finite(graph, acts)
    logits = acts[graph.logits].reshape(len(x), -1)
    predictions = logits.argmax(axis=1)
    deltas = {}
    for name, value in acts.items():
        if baseline == "class":
            deltas[name] = value - profile.class_means[name][predictions]
        else:
            deltas[name] = value - profile.means[name]
    return Tape(acts, deltas, predictions)
