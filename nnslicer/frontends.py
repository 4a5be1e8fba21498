"""How models of a framework reach the engine: through a registered *frontend*.

The engine (graphs, profiles, the analyses' phases, slices, pictures) never reads a framework's
models. Where its functions accept a model (``Slicer(model)``, ``profile(model, x)``,
``render(model, path)``), the frontend that accepts it lifts it into a
:class:`~nnslicer.graph.DataFlowGraph` and checks that the lift computes what the model
computes. :mod:`nnslicer.keras` is the frontend for Keras 3 and registers itself when
``nnslicer`` is imported; another framework would add a frontend of its own, in one place.
"""

from __future__ import annotations

from .errors import InvalidParameterError

__all__ = ["Frontend", "register_frontend", "accepted", "frontend_of", "as_graph"]


class Frontend:
    """What the engine asks of a framework's models. Subclasses implement ``accepts``, ``lift``
    and ``verify``."""

    #: Shown in errors ("a DataFlowGraph or a Keras model").
    name = None

    def accepts(self, model):
        """Whether ``model`` is one of this framework's models."""
        raise NotImplementedError

    def lift(self, model, granularity="element"):
        """``model`` as a :class:`~nnslicer.graph.DataFlowGraph` at ``granularity``."""
        raise NotImplementedError

    def verify(self, graph, model, x):
        """Raise when ``graph`` (lifted from ``model``) does not compute what ``model`` computes
        on the batch ``x``; return the largest difference relative to the output's scale."""
        raise NotImplementedError

    def verify_data(self, graph, model, x, y=None):
        """:meth:`verify` on the first batch of the profiling data ``x``
        (:func:`nnslicer.profiling.first_batch`); returns ``x``, which still yields every sample
        (a generator's first batch is put back). Data that profiling will refuse is left for
        profiling to refuse (it says why)."""
        from .profiling import first_batch

        x, head = first_batch(graph, x, y)
        if head is not None:
            self.verify(graph, model, head)
        return x


_FRONTENDS = []


def register_frontend(frontend):
    """Let the engine accept the models of ``frontend`` (a :class:`Frontend`); the latest
    registered is asked first."""
    if not isinstance(frontend, Frontend):
        raise InvalidParameterError(f"register_frontend takes a nnslicer.frontends.Frontend. "
                                    f"Got {type(frontend).__name__} instead.")
    _FRONTENDS.insert(0, frontend)
    return frontend


def accepted(model):
    """Whether a registered frontend accepts ``model``."""
    return any(frontend.accepts(model) for frontend in _FRONTENDS)


def frontend_of(model, caller="this function", graphs=False):
    """The frontend that accepts ``model``; InvalidParameterError naming what ``caller`` takes
    (with ``graphs``, a DataFlowGraph too)."""
    for frontend in _FRONTENDS:
        if frontend.accepts(model):
            return frontend
    names = " or ".join(f"a {f.name} model" for f in _FRONTENDS) or "a model of a registered frontend"
    graph = "a DataFlowGraph (nnslicer.lift(model)) or " if graphs else ""
    raise InvalidParameterError(f"{caller} needs {graph}{names}. Got {type(model).__name__} instead.")


def as_graph(obj, granularity="element", caller="this function"):
    """``obj`` itself when it is a DataFlowGraph, else the graph its frontend lifts."""
    from .graph import DataFlowGraph

    if isinstance(obj, DataFlowGraph):
        return obj
    return frontend_of(obj, caller, graphs=True).lift(obj, granularity)
