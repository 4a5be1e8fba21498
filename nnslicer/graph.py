"""The data-flow graph of a lifted model.

The networkx graph holds one node per *op* (a Keras layer, or the activation fused into
one) and one edge per tensor flowing from its producer to a consumer. Neurons and synapses
are not nodes: they are array indices of each op (see docs/design.md).
A neuron-level networkx graph is built on demand for small models
(:meth:`DataFlowGraph.to_networkx` with ``level="neuron"``) and for slices.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from .errors import InvalidParameterError

__all__ = ["Op", "DataFlowGraph", "NEURON_GRAPH_LIMIT", "has_channels", "neuron_shape"]

#: Largest number of synapse edges that ``to_networkx(level="neuron")`` builds.
NEURON_GRAPH_LIMIT = 2_000_000


@dataclass
class Op:
    """One operation of the lifted model.

    Its output tensor has the op's name; ``inputs`` names the tensors it reads, in order.

    Attributes
    ----------
    name : str
        Unique name; also the name of the op's output tensor.
    kind : str
        Key of the handler in :mod:`nnslicer.ops` (``"dense"``, ``"conv2d"``, ...).
    inputs : tuple of str
        Names of the input tensors.
    shape : tuple of int
        Output shape without the batch axis.
    input_shapes : tuple of tuple of int
        Shapes of the inputs, without the batch axis.
    params : dict
        Static attributes (strides, padding, axis, activation, ...): JSON-serialisable.
    weights : dict of str to ndarray
        Arrays the op computes with (``kernel``, ``bias``, batch-norm statistics).
    layer : str
        Name of the Keras layer the op comes from.
    layer_class : str
        Class name of that layer.
    call : str
        The call of a Keras layer (or of a model inside the model) that made the op: the ops a
        layer lifts into (attention's projections and products, a recurrent layer's steps, a
        fused activation) share it, and pictures draw them as one box. Empty: the op alone.
    """

    name: str
    kind: str
    inputs: tuple
    shape: tuple
    input_shapes: tuple = ()
    params: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    layer: str = ""
    layer_class: str = ""
    call: str = ""

    @property
    def handler(self):
        from .ops import get_handler

        return get_handler(self.kind)

    @property
    def synapse_shape(self):
        """Shape of the op's synapse array, or None for an op without synapses."""
        key = self.handler.synapse_weight
        return None if key is None else tuple(self.weights[key].shape)

    @property
    def n_synapses(self) -> int:
        shape = self.synapse_shape
        return 0 if shape is None else int(np.prod(shape))

    @property
    def synapse_owner(self) -> str:
        """The op whose synapse array holds this op's synapses: itself, or, for an op that
        shares its kernel with another (a recurrent layer's steps, ``params["shares"]``), that
        op, whose counts then sum over every op that shares them."""
        return self.params.get("shares", self.name)

    def __repr__(self):
        return f"Op({self.name!r}, kind={self.kind!r}, inputs={list(self.inputs)}, shape={self.shape})"


def has_channels(shape) -> bool:
    """Whether a tensor of ``shape`` (without the batch axis) has positions and channels: a
    feature map ``[H, W, C]``, a sequence ``[T, C]``, attention ``[Tq, Tk, heads]``; its last
    axis is the channels."""
    return len(tuple(shape)) >= 2


def neuron_shape(shape, granularity: str) -> tuple:
    """Shape of a tensor's neurons: at channel granularity, a tensor with channels has one
    neuron a channel (the mean over its positions); a vector's neurons are its elements."""
    shape = tuple(shape)
    if granularity == "channel" and has_channels(shape):
        return (shape[-1],)
    return shape


class DataFlowGraph:
    """A lifted model: a networkx DiGraph of :class:`Op` plus neuron/synapse indexing.

    Parameters
    ----------
    ops : list of Op
        In topological order; the first is the model input.
    output : str
        Name of the model's output tensor.
    name : str
        The model's name.
    granularity : {"element", "channel"}
        What a neuron of a tensor with channels (a feature map, a sequence) is.

    Examples
    --------
    >>> import keras, nnslicer
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
    ...                           keras.layers.Dense(2)])
    >>> graph = nnslicer.lift(model)
    >>> [op.kind for op in graph.ops]
    ['input', 'dense', 'activation', 'dense']
    """

    def __init__(self, ops, output: str, name: str = "model", granularity: str = "element"):
        if granularity not in ("element", "channel"):
            raise InvalidParameterError(
                "The 'granularity' parameter must be 'element' or 'channel'. "
                f"Got {granularity!r} instead."
            )
        self.name = name
        self.granularity = granularity
        self.output = output
        self.nx = nx.DiGraph(name=name)
        for op in ops:
            self.nx.add_node(op.name, op=op)
            for position, src in enumerate(op.inputs):
                self.nx.add_edge(src, op.name, index=position)
        self._order = [op.name for op in ops]
        if not nx.is_directed_acyclic_graph(self.nx):  # pragma: no cover - Keras forbids cycles
            raise InvalidParameterError("The model's graph has a cycle.")

    def __getstate__(self):  # TensorFlow functions and memos stay behind (Ray workers need arrays only)
        state = self.__dict__.copy()
        state.pop("_tf", None)
        state.pop("_memo", None)
        return state

    def memo(self, key, make):
        """``make()``, computed once for this graph and ``key`` (what backward steps derive from
        an op alone: kernel layouts, receptive fields). Ops are not changed after lifting."""
        memo = self.__dict__.setdefault("_memo", {})
        if key not in memo:
            memo[key] = make()
        return memo[key]

    # ------------------------------------------------------------------ structure
    @property
    def ops(self) -> list:
        """Ops in topological order (the input first)."""
        return [self.nx.nodes[n]["op"] for n in self._order]

    def __getitem__(self, name: str) -> Op:
        return self.nx.nodes[name]["op"]

    def __contains__(self, name) -> bool:
        return name in self.nx

    def __len__(self) -> int:
        return len(self._order)

    @property
    def input(self) -> str:
        return self._order[0]

    @property
    def input_shape(self) -> tuple:
        return self[self.input].shape

    @property
    def logits(self) -> str:
        """The tensor that slicing criteria live on: the pre-softmax output (past any identity
        op after the softmax, e.g. a Dropout)."""
        op = self[self.output]
        while op.kind == "identity":
            op = self[op.inputs[0]]
        if op.kind == "activation" and op.params.get("activation") == "softmax":
            return op.inputs[0]
        return self.output

    @property
    def num_outputs(self) -> int:
        return int(np.prod(self[self.logits].shape))

    def consumers(self, name: str) -> list:
        return list(self.nx.successors(name))

    @property
    def weighted_ops(self) -> list:
        """Names of the ops that own synapses, in topological order (an op that shares another's
        kernel is not one: its synapses are the owner's)."""
        return [op.name for op in self.ops if op.synapse_shape is not None and op.synapse_owner == op.name]

    def neuron_shape(self, name: str) -> tuple:
        """Shape of the neurons of tensor ``name`` at this graph's granularity."""
        return neuron_shape(self[name].shape, self.granularity)

    def neuron_size(self, name: str) -> int:
        """Number of neurons of tensor ``name`` at this graph's granularity."""
        return math.prod(self.neuron_shape(name))

    def n_neurons(self, name: str | None = None) -> int:
        names = self._order if name is None else [name]
        return sum(self.neuron_size(n) for n in names)

    def n_synapses(self, name: str | None = None) -> int:
        names = self._order if name is None else [name]
        return int(sum(self[n].n_synapses for n in names if self[n].synapse_owner == n))

    def with_granularity(self, granularity: str) -> "DataFlowGraph":
        """The same ops seen at another granularity (arrays are shared, not copied)."""
        return DataFlowGraph(self.ops, self.output, self.name, granularity)

    @property
    def fingerprint(self) -> str:
        """A hash of the structure and the weights: equal for the same model, bit for bit."""
        h = hashlib.sha256()
        for op in self.ops:
            meta = [op.name, op.kind, list(op.inputs), list(op.shape), op.params]
            h.update(json.dumps(meta, sort_keys=True, default=str).encode())
            for key in sorted(op.weights):
                arr = np.ascontiguousarray(op.weights[key])
                h.update(key.encode() + str(arr.dtype).encode() + str(arr.shape).encode())
                h.update(arr.tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> str:
        """A table of ops, kinds, shapes, neurons and synapses."""
        rows = [("op", "kind", "inputs", "shape", "neurons", "synapses")]
        for op in self.ops:
            rows.append((op.name, op.kind, ",".join(op.inputs), "x".join(map(str, op.shape)),
                         f"{self.n_neurons(op.name):,}", f"{op.n_synapses:,}"))
        rows.append(("total", "", "", "", f"{self.n_neurons():,}", f"{self.n_synapses():,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

    def _repr_svg_(self):
        """What Jupyter shows: the model view (None without Graphviz)."""
        from .pictures.graphviz import jupyter_svg

        return jupyter_svg(self, "model")

    def __repr__(self):
        return (f"DataFlowGraph(model={self.name!r}, ops={len(self)}, granularity={self.granularity!r}, "
                f"neurons={self.n_neurons():,}, synapses={self.n_synapses():,})")

    # ------------------------------------------------------------------ neuron level
    def connections(self, name: str, out=None):
        """Neuron-level wiring of op ``name``: one ``(input_index, src, dst, synapse)`` per input.

        ``src`` are flat neuron indices of the input tensor, ``dst`` flat neuron indices of the
        output, ``synapse`` flat indices into the op's synapse array (-1 where none). With
        ``out`` (flat output neuron indices), only the wiring into those neurons.
        """
        op = self[name]
        return op.handler.connections(op, self.granularity, out)

    def to_networkx(self, level: str = "op", limit: int = NEURON_GRAPH_LIMIT) -> nx.DiGraph:
        """The graph as networkx: ``level="op"`` (a copy of the op graph) or ``"neuron"``.

        At neuron level, nodes are ``(tensor, flat_index)`` and edges carry ``op`` and
        ``synapse`` (a flat index into the op's synapse array, or -1 for a pass-through).
        Refuses models with more than ``limit`` edges, since a networkx edge costs ~400 bytes.
        """
        if level == "op":
            return self.nx.copy()
        if level != "neuron":
            raise InvalidParameterError(
                f"The 'level' parameter must be 'op' or 'neuron'. Got {level!r} instead.")
        total = sum(len(src) for name in self._order for _, src, _, _ in self.connections(name))
        if total > limit:
            raise InvalidParameterError(
                f"A neuron-level graph of {self.name!r} would have {total:,} edges, over the "
                f"limit of {limit:,}; slice it and use Slice.to_networkx() instead, or raise 'limit'.")
        return build_neuron_graph(self)


def build_neuron_graph(graph: DataFlowGraph, neuron_counts=None, synapse_counts=None) -> nx.DiGraph:
    """Neuron-level networkx graph of ``graph``, optionally kept to a slice's members.

    With counts given, a neuron is a node when its count is non-zero and an edge exists when
    both ends are nodes and (for a weighted op) its synapse's count is non-zero.
    """
    g = nx.DiGraph(name=graph.name, granularity=graph.granularity)
    counts = {}
    for name in graph._order:
        shape = graph.neuron_shape(name)
        size = int(np.prod(shape))
        if neuron_counts is None:
            c = np.zeros(size, dtype=np.int64)
            idx = np.arange(size)
        else:
            c = np.asarray(neuron_counts.get(name, np.zeros(size, np.int64))).reshape(-1)
            idx = np.flatnonzero(c)
        counts[name] = c
        g.add_nodes_from(((name, int(i)), {"tensor": name, "count": int(c[i]),
                          "index": tuple(int(v) for v in np.unravel_index(i, shape))}) for i in idx)
    for name in graph._order:
        op = graph[name]
        syn = None
        if synapse_counts is not None and name in synapse_counts:
            syn = np.asarray(synapse_counts[name]).reshape(-1)
        for j, src, dst, s in graph.connections(name):
            tensor = op.inputs[j]
            if neuron_counts is not None:
                keep = (counts[tensor][src] != 0) & (counts[name][dst] != 0)
                if syn is not None:
                    keep &= (s < 0) | (syn[np.maximum(s, 0)] != 0)
                src, dst, s = src[keep], dst[keep], s[keep]
            for a, b, w in zip(src.tolist(), dst.tolist(), s.tolist()):
                attrs = {"op": name, "synapse": w}
                if w >= 0 and syn is not None:
                    attrs["count"] = int(syn[w])
                g.add_edge((tensor, a), (name, b), **attrs)
    return g
