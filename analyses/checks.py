"""Checks of user data shared by the analyses: a batch of model inputs and its labels
(:func:`nnslicer.profile.check_labels`, the engine's own)."""

from __future__ import annotations

import numpy as np

from nnslicer import check_labels
from nnslicer.errors import InvalidInputError

__all__ = ["check_inputs", "check_labels"]


def check_inputs(x, input_shape):
    """``x`` as a numpy array: real numbers (bool is read as 0/1), finite, not empty, a batch of
    ``input_shape`` (None in the shape matches anything)."""
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) \
            or np.iscomplexobj(x):
        raise InvalidInputError(f"x must be an array of real numbers. Got dtype {x.dtype} instead.")
    input_shape = tuple(input_shape)
    if x.ndim != len(input_shape) + 1 or any(w is not None and w != s for w, s in zip(input_shape, x.shape[1:])):
        raise InvalidInputError(f"x must be a batch of inputs shaped {input_shape}; got shape {x.shape}.")
    if len(x) == 0:
        raise InvalidInputError("x is empty: give at least one sample.")
    if not np.all(np.isfinite(x)):
        raise InvalidInputError("x holds NaN or infinite values.")
    return x.astype(np.float32) if x.dtype == bool else x

