"""Running a Keras model op by op with hooks on chosen layers (Keras' own graph walk).

The analyses that perturb or observe layers (fault injection, quantization, layer importance,
batch-norm calibration) run a functional or Sequential model through Keras' functional graph,
replacing chosen layers' calls: this is the one place that does it (a Keras internal).
"""

from __future__ import annotations

from ..errors import InvalidInputError

__all__ = ["functional_graph", "run_with_hooks"]


def functional_graph(model, caller):
    """The functional graph of a functional or Sequential Keras model; InvalidInputError naming
    ``caller`` for anything else (a subclassed model, a Sequential without an input shape)."""
    graph = getattr(model, "_functional", None) or model
    if not hasattr(graph, "_run_through_graph"):
        raise InvalidInputError(f"{caller} needs a functional or Sequential Keras model with a known input "
                                f"shape; got {type(model).__name__}.")
    return graph


def run_with_hooks(model, inputs, hook, caller="run_with_hooks"):
    """``model``'s outputs on the list of tensors ``inputs``, run layer by layer, where
    ``hook(layer)`` returns what to call instead of ``layer`` (a callable taking the layer's
    arguments), or None to call the layer itself. A nested model is one layer to the hook.

    >>> import keras, numpy as np
    >>> from nnslicer.keras import run_with_hooks
    >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, name="d"), keras.layers.ReLU(name="r")])
    >>> negate = lambda layer: (lambda x: -layer(x)) if layer.name == "d" else None
    >>> x = np.ones((1, 2), "float32")
    >>> bool(np.allclose(run_with_hooks(m, [x], negate), np.maximum(-m.layers[0](x), 0)))
    True
    """
    graph = functional_graph(model, caller)

    def wrap(layer):
        replacement = hook(layer)
        return layer if replacement is None else replacement

    return graph._run_through_graph(inputs, operation_fn=wrap)
