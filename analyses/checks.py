"""Checks of user data shared by the analyses: a model that can be run op by op, a batch of
model inputs and its labels.

>>> import numpy as np
>>> check_labels(np.eye(3)[[2, 0]], 2, 3)       # one-hot rows become class indices
array([2, 0])
"""

from __future__ import annotations

import numpy as np

from nnslicer.errors import InvalidInputError

__all__ = ["check_inputs", "check_labels", "runnable_graph"]


def check_inputs(x, input_shape):
    """``x`` as a numpy array: numeric, finite, not empty, a batch of ``input_shape`` (None in
    the shape matches anything)."""
    x = np.asarray(x)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise InvalidInputError(f"x must be a numeric array. Got dtype {x.dtype} instead.")
    input_shape = tuple(input_shape)
    if x.ndim != len(input_shape) + 1 or any(w is not None and w != s for w, s in zip(input_shape, x.shape[1:])):
        raise InvalidInputError(f"x must be a batch of inputs shaped {input_shape}; got shape {x.shape}.")
    if len(x) == 0:
        raise InvalidInputError("x is empty: give at least one sample.")
    if not np.all(np.isfinite(x)):
        raise InvalidInputError("x holds NaN or infinite values.")
    return x


def check_labels(y, n, n_classes):
    """``y`` as int64 class indices: one per sample (``n``), in ``[0, n_classes)``; one-hot rows
    are accepted."""
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape == (n, n_classes):
        labels = labels.argmax(axis=1)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise InvalidInputError(f"y must hold one integer label per sample ({n}); got shape "
                                f"{np.shape(y)} and dtype {labels.dtype}.")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        raise InvalidInputError(f"y holds labels outside [0, {n_classes}): the model has {n_classes} classes.")
    return labels.astype(np.int64)


def runnable_graph(model, caller):
    """The functional graph of a functional or Sequential Keras model, which the analyses run
    op by op (hooking layer outputs); a clear error for anything else."""
    graph = getattr(model, "_functional", None) or model
    if not hasattr(graph, "_run_through_graph"):
        raise InvalidInputError(f"{caller} needs a functional or Sequential Keras model with a known input "
                                f"shape; got {type(model).__name__}.")
    return graph
