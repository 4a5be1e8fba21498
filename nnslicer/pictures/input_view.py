"""The input view: which pixels of an image a slice uses, signed, as a heat map over the image.

``input_counts`` gives the numbers (a slice's counts on its model's input, summed over
channels; with a second slice, the difference); ``plot_input`` draws them with matplotlib, the
way Captum's ``visualize_image_attr`` does: it returns the figure and the axes.
"""

from __future__ import annotations

import numpy as np

from .. import datasets
from ..errors import InvalidInputError, require
from .groups import _resolve

__all__ = ["input_counts", "plot_input"]

#: Counts' colours: blue positive, red negative (as the graph views), white zero.
CMAP = "RdBu"


def _image_input(graph, slice_):
    """The graph's one image input op, ``(height, width)`` or ``(height, width, channels)``, and
    the slice's counts on it."""
    inputs = [op for op in graph.ops if op.kind == "input"]
    if len(inputs) != 1:
        raise InvalidInputError(f"The input view draws a model with one input; {graph.name!r} has {len(inputs)}.")
    op = inputs[0]
    counts = np.asarray(slice_.neuron_counts[op.name])
    if len(op.shape) not in (2, 3) or counts.shape != tuple(op.shape):
        raise InvalidInputError(
            f"The input view draws an image input (height, width[, channels]) sliced at element granularity; "
            f"{op.name!r} holds counts shaped {counts.shape} for an input shaped {tuple(op.shape)}.")
    return op, counts


def input_counts(slice_, other=None, *, graph=None, model=None):
    """``(height, width)`` signed counts of ``slice_`` on its model's image input, summed over
    channels; with ``other`` (a slice of the same model), ``slice_``'s minus ``other``'s. The
    slice's graph comes as for :func:`render`: its own, ``graph``, or ``model`` lifted."""
    graph, a, b = _resolve(slice_, other, graph, model)
    op, counts = _image_input(graph, a)
    counts = counts.astype(np.float64)
    if b is not None:
        counts = counts - np.asarray(b.neuron_counts[op.name], np.float64)
    return counts.sum(axis=-1) if counts.ndim == 3 else counts


def plot_input(slice_, x=None, other=None, ax=None, title=None, alpha=0.6, *, graph=None, model=None,
               class_names=None):
    """Draw ``slice_``'s counts on its image input as a heat map (blue positive, red negative,
    white zero, symmetric about zero), over the grey image ``x`` when given.

    Parameters
    ----------
    slice_ : Slice
        A slice of an image model (element granularity).
    x : array, optional
        The image, ``(height, width[, channels])`` or one of a batch ``(1, ...)``, drawn in grey
        under the counts.
    other : Slice, optional
        A second slice of the same model: the view draws ``slice_ - other`` (e.g. a clean input
        against its adversarial twin).
    ax : matplotlib Axes, optional
        Where to draw; default a new figure.
    title : str, optional
    alpha : float, default 0.6
        Opacity of the counts over the image.
    graph, model : optional
        The slice's graph, or its model, for a slice loaded from a file (as :func:`render`).
    class_names : str or sequence of str, optional
        Name the slice's output classes in the default title (see :func:`nnslicer.to_dot`).

    Returns
    -------
    (matplotlib.figure.Figure, matplotlib.axes.Axes)
    """
    graph = _resolve(slice_, other, graph, model)[0]
    counts = input_counts(slice_, other, graph=graph)
    names = None if class_names is None else datasets.class_names(class_names, graph.num_outputs)
    require("matplotlib", "analyses")
    if ax is None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.6, 4))
    else:
        fig = ax.figure
    if x is not None:
        image = np.asarray(x, dtype=np.float64)
        if image.ndim == len(counts.shape) + 2 and image.shape[0] == 1:
            image = image[0]
        if image.shape[:2] != counts.shape:
            raise InvalidInputError(f"x is shaped {np.shape(x)}: the input view draws one image of "
                                    f"{counts.shape[0]}x{counts.shape[1]} (a batch of one at most).")
        ax.imshow(image.mean(axis=-1) if image.ndim == 3 else image, cmap="gray")
    limit = float(np.abs(counts).max()) or 1.0
    shown = ax.imshow(counts, cmap=CMAP, vmin=-limit, vmax=limit, alpha=alpha if x is not None else 1.0)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04,
                 label="count on the input (blue +, red -)" if other is None else "count difference")
    if title is None:
        samples = f"{slice_.samples} sample{'s' * (slice_.samples != 1)}"
        outputs = "" if not slice_.targets else \
            f", output {', '.join(datasets.class_label(t, names) for t in slice_.targets)}"
        title = (f"{slice_.model}: input used by a slice of {samples}{outputs}" if other is None
                 else f"{slice_.model}: input counts, first slice minus second")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return fig, ax
