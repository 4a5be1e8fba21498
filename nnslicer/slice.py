"""The slice: signed counts per neuron and per synapse (SPEC.md section 4)."""

from __future__ import annotations

import numpy as np

from .errors import FileFormatError, InvalidInputError, InvalidParameterError
from .io import is_int, json_value, load_archive, same_arrays, save_archive
from .backward.rules import RULES, check_rule

__all__ = ["Slice", "aggregate"]

#: What a slice records about how it was made; saved and compared with it.
META_KEYS = ("model", "fingerprint", "granularity", "theta", "rule", "baseline", "propagation",
             "samples", "aggregate", "targets")
#: The values a metadata field may take besides None (``samples``, ``theta`` and ``targets`` are
#: checked apart).
META_CHOICES = {"granularity": ("element", "channel"), "rule": RULES, "baseline": ("global", "class"),
                "propagation": ("code", "paper"), "aggregate": ("sum", "abs", "union", "intersection")}


def _check_meta(meta):
    """Refuse metadata that no slice can have (InvalidParameterError)."""
    def bad(key, what):
        raise InvalidParameterError(f"A slice's {key!r} is {what}; got {meta[key]!r}.")

    for key in ("model", "fingerprint"):
        if meta[key] is not None and not isinstance(meta[key], str):
            bad(key, "a string")
    for key, choices in META_CHOICES.items():
        if meta[key] is not None and (not isinstance(meta[key], str) or meta[key] not in choices):
            bad(key, f"one of {', '.join(choices)}")
    if meta["theta"] is not None:
        check_rule(meta["rule"] or RULES[0], meta["theta"], owner="Slice")
    if not is_int(meta["samples"]) or meta["samples"] < 1:
        bad("samples", "at least one sample")
    targets = meta["targets"]
    if targets is not None and (not isinstance(targets, list) or not targets
                                or not all(is_int(t) and t >= 0 for t in targets)):
        bad("targets", "a list of output indices")


class Slice:
    """The neurons and synapses that made an output, with their counts.

    A neuron or synapse is in the slice when its count is non-zero. Counts are arrays: one per
    tensor (``neuron_counts``, shaped as the tensor's neurons) and one per weighted op
    (``synapse_counts``, shaped as its kernel).

    Parameters
    ----------
    neuron_counts, synapse_counts : dict of str to ndarray of int
    graph : DataFlowGraph, optional
        The lifted model the slice is of (slices from a Slicer keep it); views and
        :meth:`to_networkx` need it, and a loaded slice gets it from ``render(..., model=)``.
    **meta
        ``model``, ``fingerprint``, ``granularity``, ``theta``, ``rule``, ``baseline``,
        ``propagation``, ``samples``, ``aggregate`` and ``targets`` (the output indices of a
        single-sample slice, else None).

    Examples
    --------
    >>> s = Slice({"x": np.array([0, 2, -1])}, {"d": np.array([[1, 0], [0, 0]])}, model="m")
    >>> s
    Slice(model='m', samples=1, neurons=2/3, synapses=1/4)
    >>> s.neurons()["x"].ravel().tolist()
    [1, 2]
    """

    def __init__(self, neuron_counts, synapse_counts, graph=None, **meta):
        unknown = set(meta) - set(META_KEYS)
        if unknown:
            raise InvalidParameterError(f"Unknown slice metadata: {sorted(unknown)}")
        self.neuron_counts = {k: np.asarray(v) for k, v in neuron_counts.items()}
        self.synapse_counts = {k: np.asarray(v) for k, v in synapse_counts.items()}
        odd = sorted(k for counts in (self.neuron_counts, self.synapse_counts) for k, v in counts.items()
                     if v.dtype.kind not in "iu")  # (np.issubdtype counts timedelta64 as an integer)
        if odd:
            raise InvalidInputError(f"Slice counts are integers; got other values for {odd}.")
        self.meta = {k: json_value(meta.get(k)) for k in META_KEYS}
        if self.meta["samples"] is None:
            self.meta["samples"] = 1
        _check_meta(self.meta)
        self.graph = graph

    def __getattr__(self, name):
        meta = self.__dict__.get("meta")
        if meta is not None and name in META_KEYS:
            return meta[name]
        raise AttributeError(name)

    # ------------------------------------------------------------------ membership
    @property
    def n_neurons(self) -> int:
        return int(sum(np.count_nonzero(v) for v in self.neuron_counts.values()))

    @property
    def n_synapses(self) -> int:
        return int(sum(np.count_nonzero(v) for v in self.synapse_counts.values()))

    @property
    def total_neurons(self) -> int:
        return int(sum(v.size for v in self.neuron_counts.values()))

    @property
    def total_synapses(self) -> int:
        return int(sum(v.size for v in self.synapse_counts.values()))

    def neurons(self):
        """Member neurons: tensor name -> array of their indices (one row per neuron)."""
        return {k: np.argwhere(v != 0) for k, v in self.neuron_counts.items() if np.any(v)}

    def synapses(self):
        """Member synapses: op name -> array of their kernel indices (one row per synapse)."""
        return {k: np.argwhere(v != 0) for k, v in self.synapse_counts.items() if np.any(v)}

    def top(self, name, k=5):
        """The ``k`` neurons of tensor ``name`` with the largest ``|count|``, as ``[(index,
        count)]``: an index is the neuron's coordinates (``(position, feature)`` of a sequence,
        ``(row, column, channel)`` of a map at element granularity; ``(channel,)`` at channel
        granularity). Ties: the lower index first.

        >>> Slice({"seq": np.array([[0, 2], [-3, 1]])}, {}).top("seq", 2)
        [((1, 0), -3), ((0, 1), 2)]
        """
        if name not in self.neuron_counts:
            raise InvalidParameterError(f"No neuron counts for {name!r}; known: {list(self.neuron_counts)}")
        counts = self.neuron_counts[name]
        flat = counts.reshape(-1)
        order = np.lexsort((np.arange(flat.size), -np.abs(flat)))
        order = order[np.abs(flat[order]) > 0][:k]
        return [(tuple(int(i) for i in np.unravel_index(j, counts.shape)), int(flat[j])) for j in order]

    def embedding_rows(self):
        """Which rows of each Embedding's table (which token ids) the slice reads: op name ->
        ``{token id: sum of |count| of the row's synapses}``, largest first. Needs the slice's
        graph (a slice from :meth:`Slicer.slice` has it; ``Slice.load(path, graph)``)."""
        if self.graph is None:
            raise InvalidParameterError("embedding_rows() needs the slice's graph: load it with "
                                        "Slice.load(path, graph=nnslicer.lift(model)).")
        out = {}
        for name in self.graph.weighted_ops:
            if self.graph[name].kind == "embedding":
                per_row = np.abs(self.synapse_counts[name]).sum(axis=1)
                rows = np.flatnonzero(per_row)
                rows = rows[np.lexsort((rows, -per_row[rows]))]
                out[name] = {int(r): int(per_row[r]) for r in rows}
        return out

    def masks(self):
        """``{"neurons": {tensor: bool array}, "synapses": {op: bool array}}``."""
        return {"neurons": {k: v != 0 for k, v in self.neuron_counts.items()},
                "synapses": {k: v != 0 for k, v in self.synapse_counts.items()}}

    def to_vector(self, layers=None, kind="synapses"):
        """Counts of ``layers`` flattened into one vector, in the order given (by default every
        layer, in graph order).

        ``kind`` is "synapses" (weighted ops), "neurons" (tensors) or "both"."""
        if kind not in ("synapses", "neurons", "both"):
            raise InvalidParameterError(
                f"The 'kind' parameter must be 'synapses', 'neurons' or 'both'. Got {kind!r} instead.")
        tables = {"synapses": [self.synapse_counts], "neurons": [self.neuron_counts],
                  "both": [self.neuron_counts, self.synapse_counts]}[kind]
        parts = []
        for table in tables:
            names = list(table) if layers is None else [layers] if isinstance(layers, str) else list(layers)
            missing = [n for n in names if n not in table and not any(n in t for t in tables)]
            if missing:
                raise InvalidParameterError(f"No {kind} counts for {missing}; known: {list(table)}")
            parts += [table[n].ravel() for n in names if n in table]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    # ------------------------------------------------------------------ algebra
    def _check_compatible(self, other):
        if not isinstance(other, Slice):
            raise InvalidParameterError(f"Expected a Slice, got {type(other).__name__}.")
        for key in ("fingerprint", "granularity"):
            if self.meta[key] != other.meta[key]:
                raise InvalidParameterError(
                    f"The slices differ in {key} ({self.meta[key]!r} vs {other.meta[key]!r}): "
                    "only slices of the same model at the same granularity combine.")
        if set(self.neuron_counts) != set(other.neuron_counts) or \
                set(self.synapse_counts) != set(other.synapse_counts):
            raise InvalidParameterError("The slices record different tensors or layers.")
        for mine, theirs in ((self.neuron_counts, other.neuron_counts), (self.synapse_counts, other.synapse_counts)):
            odd = [k for k in mine if mine[k].shape != theirs[k].shape]
            if odd:
                raise InvalidParameterError(f"The slices' counts of {odd[0]!r} have different shapes "
                                            f"({mine[odd[0]].shape} vs {theirs[odd[0]].shape}).")

    def check(self, graph):
        """``graph`` at this slice's granularity, after checking that the slice is of it: the same
        model (fingerprint), and counts for exactly its tensors and weighted ops, shaped as its
        neurons and kernels. Raises InvalidParameterError otherwise."""
        from .graph import DataFlowGraph

        if not isinstance(graph, DataFlowGraph):
            raise InvalidParameterError(f"graph must be a DataFlowGraph. Got {type(graph).__name__} instead.")
        if self.fingerprint is not None and graph.fingerprint != self.fingerprint:
            raise InvalidParameterError(
                f"The slice is of another model (fingerprint {self.fingerprint}) than the graph "
                f"{graph.name!r} (fingerprint {graph.fingerprint}).")
        if self.granularity and self.granularity != graph.granularity:
            graph = graph.with_granularity(self.granularity)
        expected = {"neuron": ({op.name: graph.neuron_shape(op.name) for op in graph.ops}, self.neuron_counts),
                    "synapse": ({name: graph[name].synapse_shape for name in graph.weighted_ops}, self.synapse_counts)}
        for what, (shapes, counts) in expected.items():
            if set(counts) != set(shapes):
                odd = sorted(set(counts) ^ set(shapes))[:5]
                raise InvalidParameterError(f"The slice's {what} counts are not of graph {graph.name!r}'s "
                                            f"ops (they differ in {odd}).")
            for name, shape in shapes.items():
                if counts[name].shape != tuple(shape):
                    raise InvalidParameterError(f"The slice's {what} counts of {name!r} are shaped "
                                                f"{counts[name].shape}, not {tuple(shape)} as in graph {graph.name!r}.")
        return graph

    def _combine(self, other, fn, how):
        self._check_compatible(other)
        meta = dict(self.meta, samples=self.samples + other.samples, aggregate=how, targets=None)
        return Slice({k: fn(v, other.neuron_counts[k]) for k, v in self.neuron_counts.items()},
                     {k: fn(v, other.synapse_counts[k]) for k, v in self.synapse_counts.items()},
                     graph=self.graph or other.graph, **meta)

    def __or__(self, other):
        """Union: members of either slice; a member's count is the sum of absolute counts."""
        return self._combine(other, lambda a, b: np.abs(a) + np.abs(b), "union")

    def __and__(self, other):
        """Intersection: members of both slices, counted as the sum of absolute counts."""
        return self._combine(other, lambda a, b: np.where((a != 0) & (b != 0), np.abs(a) + np.abs(b), 0),
                             "intersection")

    union = __or__
    intersection = __and__

    def jaccard(self, other, kind="synapses"):
        """|A ∩ B| / |A ∪ B| of the members (``kind``: "synapses", "neurons" or "both");
        1.0 when both are empty."""
        self._check_compatible(other)
        a, b = self.to_vector(kind=kind) != 0, other.to_vector(kind=kind) != 0
        union = np.count_nonzero(a | b)
        return 1.0 if union == 0 else np.count_nonzero(a & b) / union

    def __eq__(self, other):
        if not isinstance(other, Slice):
            return NotImplemented
        return self.meta == other.meta and same_arrays(self.neuron_counts, other.neuron_counts) \
            and same_arrays(self.synapse_counts, other.synapse_counts)

    __hash__ = None

    # ------------------------------------------------------------------ views and files
    def to_networkx(self, graph=None):
        """The slice as a neuron-level networkx DiGraph: nodes ``(tensor, flat_index)`` with their
        ``count``; edges through member synapses (or pass-through ops), with ``synapse`` and
        ``count``. Needs the model's :class:`DataFlowGraph` (kept by slices from a Slicer)."""
        from .graph import build_neuron_graph

        graph = graph or self.graph
        if graph is None:
            raise InvalidParameterError(
                "to_networkx() needs the model's graph: pass graph=nnslicer.lift(model, granularity=...).")
        return build_neuron_graph(self.check(graph), self.neuron_counts, self.synapse_counts)

    def to_dot(self, graph=None, view=None, **kw):
        """DOT text of a picture of the slice, built without Graphviz (render it with ``dot`` or
        :func:`nnslicer.render`). ``view``: "neuron", "collapsed", "model", or "diff" with
        ``other=`` a second slice; by default "neuron" for small slices, else "collapsed".
        A loaded slice needs ``graph=`` or ``model=``. Other options: ``nnslicer.pictures.to_dot``
        (``from nnslicer.pictures import to_dot``)."""
        from .pictures import to_dot

        return to_dot(self, view=view, graph=graph, **kw)

    def summary(self):
        """Per tensor and weighted op: members / total, as a text table. With the slice's graph
        known, the ops of one layer call (attention's projections and products, a recurrent
        layer's steps, a model inside the model) make one row, ``name (N ops)``."""
        rows = [("layer", "neurons", "synapses")]
        names = list(self.neuron_counts) + [k for k in self.synapse_counts if k not in self.neuron_counts]
        calls = {}  # row name -> its ops
        for name in names:
            call = self.graph[name].call if self.graph is not None and name in self.graph else ""
            calls.setdefault(call or name, []).append(name)
        for row, members in calls.items():
            n = [self.neuron_counts[m] for m in members if m in self.neuron_counts]
            s = [self.synapse_counts[m] for m in members if m in self.synapse_counts]
            label = row if len(members) == 1 else f"{row} ({len(members)} ops)"
            rows.append((label, f"{sum(map(np.count_nonzero, n)):,} / {sum(v.size for v in n):,}" if n else "",
                         f"{sum(map(np.count_nonzero, s)):,} / {sum(v.size for v in s):,}" if s else ""))
        rows.append(("total", f"{self.n_neurons:,} / {self.total_neurons:,}",
                     f"{self.n_synapses:,} / {self.total_synapses:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join(f"{r[0].ljust(widths[0])}  {r[1].rjust(widths[1])}  {r[2].rjust(widths[2])}" for r in rows)

    def save(self, path):
        """Write the slice to ``path`` (.npz); :meth:`load` gives back an equal Slice."""
        arrays = {f"n/{k}": v for k, v in self.neuron_counts.items()}
        arrays.update({f"s/{k}": v for k, v in self.synapse_counts.items()})
        return save_archive(path, "slice", self.meta, arrays)

    @classmethod
    def load(cls, path, graph=None):
        """The slice saved at ``path``; with ``graph`` (the model's DataFlowGraph, from
        :func:`nnslicer.lift`), also checked against it (:meth:`check`) and kept.

        Raises FileFormatError for anything :meth:`save` did not write, or a slice of another
        model than ``graph``'s."""
        meta, arrays = load_archive(path, "slice")
        if not isinstance(meta, dict) or set(meta) != set(META_KEYS):
            raise FileFormatError(f"{path!r} is a slice file with incomplete metadata.")
        if any(not k.startswith(("n/", "s/")) for k in arrays):
            raise FileFormatError(f"{path!r} is a slice file with unknown arrays.")
        neurons = {k[2:]: v for k, v in arrays.items() if k.startswith("n/")}
        synapses = {k[2:]: v for k, v in arrays.items() if k.startswith("s/")}
        try:
            loaded = cls(neurons, synapses, **meta)
            if graph is not None:
                loaded.graph = loaded.check(graph)
        except (InvalidInputError, InvalidParameterError) as exc:
            raise FileFormatError(f"{path!r} is not a valid slice file: {exc}") from None
        return loaded

    def _repr_svg_(self):
        """What Jupyter shows: the collapsed view (None without Graphviz or the slice's graph)."""
        from .pictures.graphviz import jupyter_svg

        return jupyter_svg(self, "collapsed")

    def __repr__(self):
        extra = "" if self.theta is None else f", theta={self.theta:g}"
        return (f"Slice(model={self.model!r}, samples={self.samples:,}, "
                f"neurons={self.n_neurons:,}/{self.total_neurons:,}, "
                f"synapses={self.n_synapses:,}/{self.total_synapses:,}{extra})")


def aggregate(slices, how="sum"):
    """One slice from many: ``how="sum"`` adds signed counts (the paper), ``"abs"`` adds
    absolute counts (the authors' code, for class-level slices).

    Examples
    --------
    >>> a = Slice({"x": np.array([1, -1])}, {}, model="m", fingerprint="f")
    >>> b = Slice({"x": np.array([1, 1])}, {}, model="m", fingerprint="f")
    >>> aggregate([a, b]).neuron_counts["x"].tolist(), aggregate([a, b], "abs").neuron_counts["x"].tolist()
    ([2, 0], [2, 2])
    """
    if how not in ("sum", "abs"):
        raise InvalidParameterError(f"The 'how' parameter must be 'sum' or 'abs'. Got {how!r} instead.")
    slices = list(slices)
    if not slices:
        raise InvalidInputError("aggregate() needs at least one slice.")
    first = slices[0]
    fold = (lambda v: v) if how == "sum" else np.abs
    neurons = {k: fold(v).astype(np.int64) for k, v in first.neuron_counts.items()}
    synapses = {k: fold(v).astype(np.int64) for k, v in first.synapse_counts.items()}
    samples = first.samples
    for s in slices[1:]:
        first._check_compatible(s)
        for k in neurons:
            neurons[k] += fold(s.neuron_counts[k])
        for k in synapses:
            synapses[k] += fold(s.synapse_counts[k])
        samples += s.samples
    meta = dict(first.meta, samples=samples, aggregate=how, targets=None)
    return Slice(neurons, synapses, graph=first.graph, **meta)
