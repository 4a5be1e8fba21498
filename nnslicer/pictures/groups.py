"""What is drawn as one box: the inputs of a picture resolved to a graph and its slices, and
ops grouped (a producer and its one-to-one followers, the ops of one layer call)."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameterError


# =========================================================================== inputs
def _is_slice(obj):
    from ..slice import Slice

    return isinstance(obj, Slice)


def _lift(model, granularity="element"):
    from ..frontends import as_graph

    return as_graph(model, granularity, caller="render")


def _graph_of(s, graph, model):
    """The DataFlowGraph that slice ``s`` belongs to, at its granularity."""
    if graph is None and model is not None:
        graph = _lift(model, s.granularity or "element")
    graph = graph if graph is not None else s.graph
    if graph is None:
        raise InvalidParameterError(
            "Rendering a slice needs its model's graph, and this slice has none (it was loaded from "
            "a file): pass model=the Keras model (or graph=nnslicer.lift(model)); on the command "
            "line, --model MODEL.keras.")
    return s.check(graph)


def _resolve(obj, other, graph, model):
    """(graph, slice A or None, slice B or None) from what the caller passed."""
    from ..graph import DataFlowGraph

    if isinstance(obj, (tuple, list)):
        if len(obj) != 2 or not all(_is_slice(o) for o in obj) or other is not None:
            raise InvalidParameterError(
                "To compare slices, pass two Slices: render((a, b), path) or render(a, path, other=b).")
        obj, other = obj
    if _is_slice(obj):
        g = _graph_of(obj, graph, model)
        if other is not None:
            if not _is_slice(other):
                raise InvalidParameterError(f"other must be a Slice. Got {type(other).__name__} instead.")
            try:
                obj._check_compatible(other)
            except InvalidParameterError as exc:
                raise InvalidParameterError(f"Cannot compare these slices: {exc}") from None
            _graph_of(other, g, None)
        return g, obj, other
    if other is not None:
        raise InvalidParameterError("other= compares two slices: the first object must be a Slice too.")
    from ..frontends import accepted

    if isinstance(obj, DataFlowGraph) or accepted(obj):
        return _lift(obj), None, None
    raise InvalidParameterError(
        "render() takes a Slice, a pair of Slices, a DataFlowGraph or a Keras model. "
        f"Got {type(obj).__name__} instead.")


# =========================================================================== grouping
class _Group:
    """Ops drawn as one: a head op and the followers that pass its neurons on one to one; for a
    layer lifted into several ops (attention, a recurrent layer) or a model inside the model,
    the head is the call's last op and the call's earlier ops are ``inner``: drawn in the box,
    their neurons not shown."""

    def __init__(self, head):
        self.head = head          # Op
        self.ops = [head.name]    # head first
        self.maps = {head.name: None}  # op -> its neuron index -> head neuron index (None: same)
        self.inner = []           # earlier ops of the head's call

    @property
    def members(self):
        return self.inner + self.ops

    def absorb(self, op):
        """``op``, of the same call, becomes the head; the ops so far become inner ones."""
        self.inner += self.ops
        self.head, self.ops, self.maps = op, [op.name], {op.name: None}

    @property
    def id(self):
        return self.head.name

    @property
    def out(self):
        return self.ops[-1]

    @property
    def to_head(self):
        return self.maps[self.out]


def _one_to_one(graph, follower):
    """Flat map from the follower's neurons to its input's (its handler's wiring), or None if it
    is not a bijection."""
    op = graph[follower]
    n = graph.n_neurons(follower)
    if graph.n_neurons(op.inputs[0]) != n:
        return None
    wiring = graph.connections(follower)
    if len(wiring) != 1 or len(wiring[0][2]) != n:
        return None
    _, src, dst, _ = wiring[0]
    if np.array_equal(dst, np.arange(n)):  # the usual order: no copy
        mapping = np.asarray(src, np.int64)
    else:
        mapping = np.full(n, -1, np.int64)
        mapping[dst] = src
    if (mapping < 0).any() or (np.bincount(mapping, minlength=n) != 1).any():
        return None
    return mapping


def _groups(graph, merge, calls=True):
    """Ops grouped for drawing (in topological order) and op name -> group. With ``merge``,
    followers join their producer's box and (with ``calls``) the ops of one layer call (or of a
    model inside the model) share one box."""
    groups, of = [], {}
    for op in graph.ops:
        last = groups[-1] if groups else None
        if merge and calls and op.call and last is not None and last.head.call == op.call \
                and not _follows(graph, last, op, of):
            last.absorb(op)
            of[op.name] = last
            continue
        if merge and op.handler.follower and len(op.inputs) == 1 and op.inputs[0] in of:
            g = of[op.inputs[0]]
            if g.out == op.inputs[0] and len(graph.consumers(g.out)) == 1:
                mapping = _one_to_one(graph, op.name)
                if mapping is not None:
                    prev = g.maps[g.out]
                    if np.array_equal(mapping, np.arange(len(mapping))):
                        g.maps[op.name] = prev
                    else:
                        g.maps[op.name] = mapping if prev is None else prev[mapping]
                    g.ops.append(op.name)
                    of[op.name] = g
                    continue
        g = _Group(op)
        groups.append(g)
        of[op.name] = g
    return groups, of


def _follows(graph, g, op, of):
    """Whether ``op`` would join group ``g`` as a follower of its last op."""
    return (op.handler.follower and len(op.inputs) == 1 and of.get(op.inputs[0]) is g and g.out == op.inputs[0]
            and len(graph.consumers(g.out)) == 1 and _one_to_one(graph, op.name) is not None)


def _inputs(graph, g):
    """The tensors a group reads from outside it, in order."""
    inside = set(g.members)
    out = []
    for name in g.members:
        out += [t for t in graph[name].inputs if t not in inside and t not in out]
    return out


def _weighted(graph, g):
    """The ops of a group that own synapses."""
    return [graph[n] for n in g.members if graph[n].synapse_shape is not None and graph[n].synapse_owner == n]


def _cross_edges(graph, groups, of):
    """Edges between groups: (source group, target group, input index of the target)."""
    return [(of[src], g, j) for g in groups for j, src in enumerate(_inputs(graph, g))]


def _group_counts(graph, g, s):
    """Counts of group ``g`` in slice ``s``, flat, in the head's neuron order: the head's count
    and, where that is zero, the count a follower received (they differ only with
    ``propagation="paper"``)."""
    c = np.asarray(s.neuron_counts[g.head.name]).reshape(-1).astype(np.int64)
    if len(g.ops) > 1:
        c = c.copy()
        for name in g.ops[1:]:
            f = np.asarray(s.neuron_counts[name]).reshape(-1)
            m = g.maps[name]
            m = np.arange(f.size) if m is None else m
            fill = (c[m] == 0) & (f != 0)
            c[m[fill]] = f[fill]
    return c
