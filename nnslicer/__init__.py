"""nnslicer: dynamic slicing of neural networks (NNSlicer, Zhang et al., ESEC/FSE 2020).

Given a trained Keras model and some inputs, nnslicer answers "which neurons and synapses
made this output?"::

    slicer = nnslicer.Slicer(model).fit(x_train)        # lift + profile
    s = slicer.slice(x_test[0])                          # forward + backward analysis
    print(s.summary())

``import nnslicer`` needs only numpy and networkx; TensorFlow is imported when a model is
lifted or profiled.
"""

from .backward.rules import check_rule
from .errors import (ExecutionError, FileFormatError, InvalidInputError, InvalidParameterError,
                     MissingDependencyError, NNSlicerError, NotFittedError, RenderError, UnsupportedLayerError)
from .forward import as_batch, check_inputs
from .graph import DataFlowGraph, Op
from .keras import lift, register_layer
from .ops import register_handler
from .profiling import Profile, check_labels, profile
from .pictures import plot_input, render
from .slice import Slice, aggregate
from .slicer import Slicer

__version__ = "0.1.0"

__all__ = [
    "lift", "Slicer", "Slice", "Profile", "profile", "aggregate", "render", "plot_input", "DataFlowGraph", "Op",
    "register_layer", "register_handler", "as_batch", "check_inputs", "check_labels", "check_rule",
    "NNSlicerError", "UnsupportedLayerError", "NotFittedError", "InvalidInputError",
    "InvalidParameterError", "FileFormatError", "MissingDependencyError", "RenderError", "ExecutionError",
    "__version__",
]
