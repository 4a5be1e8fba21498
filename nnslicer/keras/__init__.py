"""The Keras adapter: the only code of nnslicer that reads Keras internals.

* :mod:`~nnslicer.keras.lifting` lifts a ``keras.Model`` into a
  :class:`~nnslicer.graph.DataFlowGraph` (:mod:`~nnslicer.keras.unroll` unrolls the
  recurrent layers); :func:`register_layer` adds a lifter for another layer class.
* :mod:`~nnslicer.keras.verification` checks that a lifted graph computes what Keras computes.
* :mod:`~nnslicer.keras.run` runs a model layer by layer with hooks on chosen layers.

Importing it registers Keras as the engine's frontend (:mod:`nnslicer.frontends`), so that
``Slicer(model)``, ``profile(model, x)`` and ``render(model, path)`` take Keras models. It
imports Keras only when a model is lifted or run.
"""

from __future__ import annotations

from ..frontends import Frontend, register_frontend
from .lifting import lift, register_layer
from .run import functional_graph, run_with_hooks
from .verification import TOLERANCE, verify

__all__ = ["lift", "register_layer", "verify", "verify_data", "TOLERANCE", "run_with_hooks", "functional_graph",
           "KerasFrontend"]


class KerasFrontend(Frontend):
    """Keras 3 models (functional, Sequential, or subclassed with a functional core)."""

    name = "Keras"

    def accepts(self, model):
        return hasattr(model, "layers")

    def lift(self, model, granularity="element"):
        return lift(model, granularity)

    def verify(self, graph, model, x):
        return verify(graph, model, x)


#: The Keras frontend, registered with the engine.
KERAS = register_frontend(KerasFrontend())
#: :meth:`~nnslicer.frontends.Frontend.verify_data` of Keras models: :func:`verify` on the
#: first profiling batch of ``x``, which is returned still yielding every sample.
verify_data = KERAS.verify_data
