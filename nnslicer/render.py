"""Pictures of slices and graphs: DOT text built with no dependency, rendered by Graphviz.

Four views, each first built as a networkx DiGraph (:func:`view_graph`, handy on its own), then
written as DOT text (:func:`to_dot`) and, for SVG, PNG or PDF, laid out by Graphviz's ``dot``
program (:func:`render`):

``"neuron"``
    One node per neuron (member neurons of a slice, or every neuron of a small graph), one
    cluster per op, one edge per connection (aggregated over the synapses that join the same
    two neurons). Refused above ``max_nodes`` neurons or ``max_edges`` edges.
``"collapsed"``
    One cluster per op: its name, kind, shape and members/total, then its top-k neurons (or,
    for an element-granularity feature map, channels) by |count| and a "+N more" node. Edges
    join clusters: into a weighted op, the sum of |count| of its synapses (width, log scale) and
    the sign of their sum (blue positive, red negative); through other ops, plain grey edges.
``"model"``
    The whole op graph, one node per op; ops with members are filled (darker: a larger share of
    their neurons in the slice) and show members/total.
``"diff"``
    Two slices of one model (e.g. a clean input and its adversarial twin), collapsed: members
    only in A (orange), only in B (purple), in both (grey).
``"attention"``
    For each attention layer and head, a heat map of which key positions (columns) each query
    position's (rows) kept contributions come from: the slice's counts on the attention
    probabilities (blue positive, red negative; darker: larger |count|). Element granularity.

To keep big models readable (a ResNet18's 69 ops become 31 boxes), an op that only passes
its producer's neurons on, one to one (an activation, batch norm, dropout, flatten), is drawn
inside its producer's box when it is the producer's only consumer (``merge=True``); the box
reads ``conv2d 4×4×16 → relu → flatten 256``. Which ops are drawn so is their handler's word
(:attr:`nnslicer.ops.Handler.follower`). Long graphs are laid out in columns, cut where a single
tensor crosses (a ResNet's block outputs) or, in a graph without such bottlenecks (NASNet's
cells read the two previous cells), where at most ``MAX_CROSSING`` do; each crossing tensor is
joined by a "continued in column k" and a "from <op>" marker. The number of columns is the
fewest that give the largest scale. Graph attributes ``size`` and ``ratio`` keep the picture within ``size``
inches (default 16 x 10), unless that would scale its text below ``min_scale`` (default 0.5,
5.5-point text): a bigger model is drawn as big as the text needs, in the screen's proportions.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import textwrap

import networkx as nx
import numpy as np

from .errors import InvalidParameterError, MissingDependencyError, RenderError
from .graph import has_channels
from .io import atomic_path

__all__ = ["render", "to_dot", "view_graph", "VIEWS", "FORMATS"]

VIEWS = ("neuron", "collapsed", "model", "diff", "attention")
FORMATS = ("svg", "png", "pdf", "dot")

#: A slice is drawn at neuron level by default when it has at most this many (merged) neurons
#: and edges; past that, a column of neurons no longer fits a screen at a readable size.
AUTO_NEURON_NODES = 100
AUTO_NEURON_EDGES = 500
#: Limits of the neuron view (a bigger picture is neither readable nor quick to lay out).
MAX_NODES = 300
MAX_EDGES = 2000
#: Pictures are scaled down to fit their ``size``, but not below this scale (11-point text at
#: 0.5 is 5.5 points, 7 pixels of a 96-dpi PNG): a model too big to be read within ``size`` is
#: drawn bigger, laid out in as many columns as keep the screen's proportions.
MIN_SCALE = 0.5
#: Most columns of a long graph, and most tensors that may cross a cut between two columns when
#: no cut is a bottleneck (one tensor, as a ResNet's block output): NASNet's cells read two.
MAX_COLUMNS = 20
MAX_CROSSING = 3

POSITIVE, NEGATIVE, NEUTRAL = "#2166ac", "#b2182b", "#8c8c8c"
BLUES = ("#eff3ff", "#bdd7e7", "#6baed6", "#2171b5")
REDS = ("#fee5d9", "#fcae91", "#fb6a4a", "#cb181d")
HIGHLIGHT = ("#fff7bc", "#fee391", "#fec44f", "#fe9929")
ONLY_A, ONLY_B, BOTH = "#e66101", "#5e3c99", "#969696"
ONLY_A_FILL, ONLY_B_FILL, BOTH_FILL = "#fdb863", "#b2abd2", "#eeeeee"
LEAN_A, LEAN_B = "#fee0b6", "#d8daeb"
FONT = "Helvetica"


# =========================================================================== inputs
def _is_slice(obj):
    from .slice import Slice

    return isinstance(obj, Slice)


def _lift(model, granularity="element"):
    from .frontends import as_graph

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
    from .graph import DataFlowGraph

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
    from .frontends import accepted

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


# =========================================================================== labels
def _fmt_shape(shape):
    return "×".join(str(int(v)) for v in shape) if len(shape) else "scalar"


def _kind(graph, name):
    op = graph[name]
    if op.kind == "activation":
        return str(op.params.get("activation") or "activation")
    if op.kind in ("reshape", "identity") and op.layer_class:
        return op.layer_class.lower()
    return op.kind


def _kinds(graph, g):
    """``conv2d 4×4×16 → relu → flatten 256``: kinds, with the shape where it changes; a call of
    several ops reads ``MultiHeadAttention: 8 ops 16×64``."""
    parts, shape, names = [], None, g.ops
    if g.inner:
        head = g.head
        what = head.layer_class if head.call.split("#")[0] == head.layer else "model"
        parts, shape, names = [f"{what}: {len(g.inner) + 1} ops {_fmt_shape(head.shape)}"], tuple(head.shape), g.ops[1:]
    for name in names:
        op = graph[name]
        part = _kind(graph, name)
        if tuple(op.shape) != shape:
            part += f" {_fmt_shape(op.shape)}"
            shape = tuple(op.shape)
        parts.append(part)
    return " → ".join(parts)


def _ratio(m, t):
    return f"{m:,}/{t:,}"


def _level(value, vmax, palette):
    if vmax <= 0 or value <= 0:
        return palette[0]
    share = value / vmax
    return palette[min(len(palette) - 1, int(share * (len(palette) - 1) + 0.999))]


def _fill(net, absval, vmax):
    palette = BLUES if net > 0 else REDS if net < 0 else ("#f0f0f0",) * 4
    return _level(absval, vmax, palette)


def _fontcolor(fill):
    return "white" if fill in (BLUES[-1], REDS[-1]) else "black"


def _penwidth(value, vmax, lo=1.0, hi=6.0):
    if vmax <= 0 or value <= 0:
        return lo
    return round(lo + (hi - lo) * math.log1p(value) / math.log1p(vmax), 2)


def _index_text(graph, name, flat):
    shape = graph.neuron_shape(name)
    if graph.granularity == "channel" and has_channels(graph[name].shape):
        return f"ch {flat}"
    if len(shape) == 1:
        return f"[{flat}]"
    return "[" + ",".join(str(int(v)) for v in np.unravel_index(flat, shape)) + "]"


def _units(graph, g, counts, channels):
    """(kind, abs, net, members, size) per unit of group ``g``: channels of an element-
    granularity feature map with more than one channel (when ``channels``), else neurons."""
    name = g.head.name
    shape = graph.neuron_shape(name)
    c = counts.reshape(shape) if counts.size else counts
    if channels and graph.granularity == "element" and has_channels(shape) and shape[-1] > 1:
        flat = c.reshape(-1, shape[-1])
        return "channel", np.abs(flat).sum(0), flat.sum(0), np.count_nonzero(flat, axis=0), flat.shape[0]
    flat = counts.reshape(-1)
    return "neuron", np.abs(flat), flat, (flat != 0).astype(np.int64), 1


def _top(score, k):
    """Indices of the k largest positive scores (ties: lower index first) and how many more."""
    nz = np.flatnonzero(score > 0)
    order = nz[np.lexsort((nz, -score[nz]))]
    return order[:k], max(0, len(nz) - k)


def _unit_text(graph, g, kind, i):
    return f"ch {int(i)}" if kind == "channel" else _index_text(graph, g.head.name, int(i))


LEGENDS = {
    "collapsed": "boxes: each op's top neurons by |count|, with their count (channels: the sum of |count| "
                 "over their positions, and the net count); blue: net count > 0, red: < 0\n"
                 "arrows into weighted ops: their synapses in the slice; width: sum of |count| (log), "
                 "blue/red: sign of the sum; grey: no synapses (pooling, add, ...)",
    "model": "filled: ops with members (darker: a larger share of their neurons); arrows into weighted "
             "ops: width by the sum of |count| of their synapses in the slice (log), blue/red: its sign",
    "attention": "rows: query positions, columns: key positions; a cell: the slice's count on that query's "
                 "attention probability for that key (the contributions it draws from it); blue: > 0, red: < 0, "
                 "darker: larger |count|",
    "neuron": "blue: count > 0, red: count < 0 (darker: larger |count|); arrows: blue/red by the sign of "
              "the synapses' count, wider for larger |count|; grey: ops without synapses",
}


def _title(graph, view, a, b=None, names=("A", "B")):
    def one(s):
        what = f"{s.samples} sample{'s' if s.samples != 1 else ''}"
        if s.targets:
            what += f", output {','.join(map(str, s.targets))}"
        params = ", ".join(p for p in (
            s.rule and f"rule {s.rule}", s.theta is not None and f"theta {s.theta:g}",
            f"{graph.granularity} granularity") if p)
        return what, params, (f"neurons {_ratio(s.n_neurons, s.total_neurons)} · "
                              f"synapses {_ratio(s.n_synapses, s.total_synapses)}")
    if a is None:
        return (f"{graph.name}: {len(graph)} ops, {graph.n_neurons():,} neurons, "
                f"{graph.n_synapses():,} synapses ({graph.granularity} granularity)")
    if b is None:
        what, params, sizes = one(a)
        return f"{graph.name}: slice of {what} ({params})\n{sizes}\n{LEGENDS[view]}"
    lines = [f"{graph.name}: {names[0]} vs {names[1]}"]
    for name, s in ((names[0], a), (names[1], b)):
        what, params, sizes = one(s)
        lines.append(f"{name}: {what} ({params}): {sizes}")
    lines.append(f"boxes: each op's neurons (channels) that differ most, with |count| in {names[0]} | in "
                 f"{names[1]}; orange: only in {names[0]}, purple: only in {names[1]}, grey: in both "
                 f"(pale orange/purple: larger in {names[0]}/{names[1]})")
    lines.append(f"arrows into weighted ops: orange/purple when more of their synapses are only in "
                 f"{names[0]}/{names[1]}; width: how many synapses differ (log)")
    return "\n".join(lines)


# =========================================================================== layout
def _preds(order, edges):
    preds = {g: [] for g in order}
    for u, w in edges:
        preds[w].append(u)
    return preds


def _crossing(order, edges):
    """``crossing[i]``: how many groups' outputs are read both before and after a cut after
    ``order[i]`` (each becomes a pair of connectors); 1 is a bottleneck, only ``order[i]``."""
    pos = {g: i for i, g in enumerate(order)}
    last = {}
    for u, w in edges:
        last[u] = max(last.get(u, -1), pos[w])
    diff = np.zeros(len(order) + 1, np.int64)
    for u, end in last.items():
        if end > pos[u]:
            diff[pos[u]] += 1
            diff[end] -= 1
    return np.cumsum(diff)[:len(order)]


def _greedy_cuts(order, pos, preds, allowed, limit):
    """Cuts (positions in ``order`` after which a column ends) as late as possible with every
    column at most ``limit`` ranks deep, at ``allowed`` positions only; None if impossible. A
    column after a cut starts one rank down, under its "from" connectors."""
    cuts, start, i, local, depth, last_ok = [], 0, 0, {}, 0, None
    while i < len(order):
        g = order[i]
        r = max((local[p] + 1 for p in preds[g] if pos[p] >= start), default=0 if start == 0 else 1)
        local[g] = r
        depth = max(depth, r + 1)
        if depth > limit:
            if last_ok is None:
                return None
            cuts.append(last_ok)
            start = i = last_ok + 1
            local, depth, last_ok = {}, 0, None
            continue
        if allowed[i]:
            last_ok = i
        i += 1
    return cuts


def _estimate(order, pos, preds, cuts, cluster_w, rank_h, title_h):
    """Estimated (width, height) in inches of the picture with columns ending at ``cuts``."""
    bounds = [0] + [c + 1 for c in cuts] + [len(order)]
    width, depth = 0.0, 0
    for k, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        local, rows = {}, {}
        incoming = set()
        for g in order[lo:hi]:
            inside = [local[p] + 1 for p in preds[g] if pos[p] >= lo]
            incoming.update(p for p in preds[g] if pos[p] < lo)
            local[g] = max(inside, default=0 if k == 0 else 1)
            rows[local[g]] = rows.get(local[g], 0.0) + cluster_w[g] + 0.15
        if k:  # the "from" connectors, a row above the column
            rows[0] = rows.get(0, 0.0) + sum(0.068 * len(p) + 1.3 for p in incoming)
        width += max(rows.values()) + 0.3
        depth = max(depth, max(local.values()) + 1)
    return width, title_h + depth * rank_h


def _layout(order, edges, cluster_w, rank_h, size, wrap, title_h=0.0):
    """Where to cut ``order`` into columns: ``(cuts, width, height)``, the positions after which
    a column ends and the estimated picture's size in inches. Cuts go where few tensors cross
    (one, a bottleneck such as a ResNet's block output, when that can do; else at most
    ``MAX_CROSSING``), the columns as many as give (nearly) the largest scale at which the
    picture fits ``size`` (``wrap``: at most that many, the deepest as shallow as can be)."""
    pos = {g: i for i, g in enumerate(order)}
    preds = _preds(order, edges)
    single = _estimate(order, pos, preds, [], cluster_w, rank_h, title_h)
    if len(order) < 4 or wrap == 1:
        return [], *single
    crossing = _crossing(order, edges)
    inner = np.zeros(len(order), bool)
    inner[1:-2] = True  # neither the first group nor the last two end a column
    options = []  # (crossing allowed, columns, cuts, width, height, scale)
    depth = int(single[1] / rank_h + 1)
    for most in (1, MAX_CROSSING):
        allowed = inner & (crossing <= most)
        if most > 1 and not allowed.any():
            break
        seen = set()
        for limit in range(max(2, depth // MAX_COLUMNS), depth + 2):  # fewer ranks: too many columns
            cuts = _greedy_cuts(order, pos, preds, allowed, limit)
            if cuts is None or tuple(cuts) in seen or len(cuts) >= MAX_COLUMNS:
                continue
            seen.add(tuple(cuts))
            w, h = _estimate(order, pos, preds, cuts, cluster_w, rank_h, title_h)
            options.append((most, len(cuts) + 1, cuts, w, h, min(size[0] / w, size[1] / h, 1.0)))
            if not cuts:
                break
    if wrap is not None:  # the given number of columns (or fewer), the deepest as shallow as can be
        fits = [o for o in options if o[1] <= wrap]
        shallow = min(fits, key=lambda o: (round((o[4] - title_h) / rank_h), o[0], o[1]), default=None)
        return (shallow[2], shallow[3], shallow[4]) if shallow else ([], *single)
    best = max([o[5] for o in options] + [min(size[0] / single[0], size[1] / single[1], 1.0)])
    for most, _, cuts, w, h, scale in sorted(options, key=lambda o: (o[0], o[1])):
        if scale >= 0.9 * best:
            return cuts, w, h
    return [], *single  # pragma: no cover - the single column is among the options


# =========================================================================== views
def _wrap_text(text, width=100):
    """Lines of ``text`` wrapped at ``width`` characters (a long title would widen the picture)."""
    out = []
    for line in str(text).split("\n"):
        out += textwrap.wrap(line, width, break_on_hyphens=False) or [""]
    return "\n".join(out)


def _graph_attrs(title, size, rankdir="TB", **extra):
    title = _wrap_text(title)
    # the margin (0.1 in) and Graphviz's pad (4 pt) go around ``size``: keep the whole within it
    inner = f"{max(size[0] - 0.35, 0.5):g},{max(size[1] - 0.35, 0.5):g}"
    attrs = {"rankdir": rankdir, "label": title, "labelloc": "t", "labeljust": "l",
             "fontname": FONT, "fontsize": "14", "size": inner,
             "ratio": "compress", "compound": "true", "newrank": "true", "nodesep": "0.15",
             "ranksep": "0.35", "margin": "0.1", "tooltip": title.split("\n")[0]}
    attrs.update(extra)
    return attrs


def _new_view(kind, graph, title, size, rankdir="TB", **extra):
    v = nx.DiGraph(name=graph.name, view=kind)
    v.graph["attrs"] = _graph_attrs(title, size, rankdir, **extra)
    v.graph["node_attrs"] = {"fontname": FONT, "fontsize": "11", "shape": "box",
                             "style": "rounded,filled", "fillcolor": "white", "color": "#555555",
                             "margin": "0.05,0.02", "height": "0.3", "width": "0.3"}
    v.graph["edge_attrs"] = {"fontname": FONT, "fontsize": "10", "color": NEUTRAL, "arrowsize": "0.6"}
    v.graph["clusters"] = {}
    v.graph["order"] = []  # flat edges that order columns left to right
    v.graph["invisible"] = []  # edges that only keep layers in order
    return v


def _group_label(graph, g, lines):
    return "\n".join([g.head.call if g.inner else g.head.name, _kinds(graph, g), *lines])


def _label_width(text):
    """Estimated width in inches of an 11-point label."""
    return 0.075 * max(len(line) for line in text.split("\n")) + 0.2


def _row_width(v, row):
    """Estimated width in inches of a cluster's row of 10-point nodes."""
    return sum(0.062 * max(map(len, v.nodes[n]["label"].split("\n"))) + 0.27 for n in row) + 0.25


def _synapse_stats(s, graph, g):
    """``(sum |count|, sum, members, total)`` of the synapses of a group's ops, or None."""
    ops = _weighted(graph, g)
    if s is None or not ops:
        return None
    c = np.concatenate([np.ravel(s.synapse_counts.get(op.name, np.zeros(op.synapse_shape, np.int64)))
                        for op in ops])
    return int(np.abs(c).sum()), int(c.sum()), int(np.count_nonzero(c)), int(c.size)


def _apply_wrap(v, graph, groups, edges, cluster_w, rank_h, size, wrap, anchor, min_scale):
    """Lay a long graph out in columns, and size the picture. Each tensor that crosses from one
    column to a later one is drawn as a pair of connectors: "continued in column k" under its
    group, and "from <group>" in column k, whence the edges go on with their attributes. The
    picture is scaled down to fit ``size``, but not below ``min_scale``: past that it is drawn
    bigger than ``size`` (as many times as the text needs, in both directions)."""
    order = [g.id for g in groups]
    pairs = [(u.id, w.id) for u, w, _ in edges]
    title_h = 0.25 * (v.graph["attrs"]["label"].count("\n") + 1)
    cuts, width, height = _layout(order, pairs, cluster_w, rank_h, size, wrap, title_h)
    fit = min(size[0] / width, size[1] / height, 1.0)
    if fit < min_scale:
        grow = min_scale / fit
        v.graph["attrs"]["size"] = f"{max(size[0] * grow - 0.35, 0.5):g},{max(size[1] * grow - 0.35, 0.5):g}"
    if not cuts:
        return 1
    column, k = {}, 1
    for i, gid in enumerate(order):
        column[gid] = k
        k += i in cuts
    for k in range(1, len(cuts) + 2):
        v.graph["clusters"][f"cluster_column_{k}"] = {"style": "invis", "label": "", "margin": "4",
                                                      "_column": k}
    for cid, cattrs in list(v.graph["clusters"].items()):
        if "_group" in cattrs:
            cattrs["_parent"] = f"cluster_column_{column[cattrs['_group']]}"
    for n, data in v.nodes(data=True):
        if data.get("cluster") is None and n in column:
            data["cluster"] = f"cluster_column_{column[n]}"
    crossing = {}  # source group -> [(a, b, data)] of the edges that leave its column
    for a, b, d in v.edges(data=True):
        src, dst = d.get("_src_group"), d.get("_dst_group")
        if src in column and dst in column and column[dst] != column[src]:
            crossing.setdefault(src, []).append((a, b, dict(d)))
    tops = {1: (-1, anchor[order[0]])}
    link = {"color": "#999999", "style": "dashed", "arrowhead": "none"}
    for gid in sorted(crossing, key=order.index):
        leaving = crossing[gid]
        cols = sorted({column[d["_dst_group"]] for a, b, d in leaving})
        to_node = f"{gid}:continued"
        where = f"column {cols[0]}" if len(cols) == 1 else "columns " + ", ".join(map(str, cols))
        v.add_node(to_node, label=f"continued in {where} ↗", shape="plaintext", style="",
                   fontcolor="#555555", fontsize="10", connector="to", column=cols[0],
                   cluster=f"cluster_column_{column[gid]}")
        v.add_edge(anchor[gid], to_node, **link, connector=True,
                   **({"ltail": f"cluster_{gid}"} if f"cluster_{gid}" in v.graph["clusters"] else {}))
        for k in cols:
            here = [(a, b, d) for a, b, d in leaving if column[d["_dst_group"]] == k]
            targets = sorted({d["_dst_group"] for a, b, d in here}, key=order.index)
            from_node = f"{gid}:from" if k == cols[0] else f"{gid}@{k}:from"
            v.add_node(from_node, label=f"from {gid} (column {column[gid]})", shape="box",
                       cluster=f"cluster_column_{k}",
                       style="rounded,dashed", fontcolor="#555555", color="#999999", fontsize="10",
                       connector="from", column=k, tooltip=f"{gid} → {', '.join(targets)}")
            for a, b, d in here:
                v.remove_edge(a, b)
                d.pop("ltail", None)
                d["_src_group"] = from_node
                v.add_edge(from_node, b, **d)
            if order.index(gid) > tops.get(k, (-2,))[0]:  # a column's top: its latest source's connector
                tops[k] = (order.index(gid), from_node)
    tops = [tops[k][1] for k in sorted(tops)]
    v.graph["order"] = list(zip(tops, tops[1:]))
    return len(cuts) + 1


def _edge_between(v, anchor, src, dst, cluster, **attrs):
    tail, head = anchor[src.id], anchor[dst.id]
    if cluster:
        attrs.update(ltail=f"cluster_{src.id}", lhead=f"cluster_{dst.id}")
    attrs["_src_group"], attrs["_dst_group"] = src.id, dst.id
    if v.has_edge(tail, head):  # the same tensor into two inputs (x + x): one edge, noted
        v.edges[tail, head]["label"] = (v.edges[tail, head].get("label", "") + " ×2").strip()
        return
    v.add_edge(tail, head, **attrs)


def _collapsed(graph, s, top_k, merge, size, wrap, channels, title, min_scale):
    groups, of = _groups(graph, merge)
    edges = _cross_edges(graph, groups, of)
    v = _new_view("collapsed", graph, title or _title(graph, "collapsed", s), size, ranksep="1.0")
    counts = {g.id: _group_counts(graph, g, s) for g in groups}
    syn = {g.id: _synapse_stats(s, graph, g) for g in groups}
    max_syn = max([st[0] for st in syn.values() if st] or [0])
    anchor, cluster_w = {}, {}
    for g in groups:
        c = counts[g.id]
        members = int(np.count_nonzero(c))
        lines = [f"neurons {_ratio(members, c.size)}"]
        if syn[g.id]:
            lines[0] += f" · synapses {_ratio(syn[g.id][2], syn[g.id][3])} (net {syn[g.id][1]:+,})"
        kind, absval, net, mem, per = _units(graph, g, c, channels)
        picked, more = _top(absval, top_k)
        cid = f"cluster_{g.id}"
        v.graph["clusters"][cid] = {
            "label": _group_label(graph, g, lines), "style": "rounded,filled",
            "fillcolor": "#f7f7f7" if members else "white", "color": "#777777" if members else "#cccccc",
            "fontcolor": "black" if members else "#999999", "fontname": FONT, "fontsize": "11",
            "labeljust": "l", "margin": "6", "tooltip": " → ".join(g.members),
            "_group": g.id, "_members": members, "_total": int(c.size), "_row": True}
        header = _label_width(v.graph["clusters"][cid]["label"])
        vmax = float(np.abs(net[picked]).max()) if len(picked) else 0.0
        row = []
        for i in picked:
            nid = f"{g.id}:{kind[0]}{int(i)}"
            text = _unit_text(graph, g, kind, i)
            if kind == "neuron":
                label = f"{text}\n{int(net[i]):+,}"
            else:
                label = f"{text}\n{int(absval[i]):,} ({int(net[i]):+,})"
            fill = _fill(int(net[i]), abs(float(net[i])), vmax)
            v.add_node(nid, cluster=cid, label=label, fillcolor=fill,
                       fontcolor=_fontcolor(fill), fontsize="10", unit=kind, index=int(i),
                       count=int(net[i]), abs=int(absval[i]), members=int(mem[i]),
                       tooltip=f"{g.head.name} {text}: net count {int(net[i]):+,}, |count| {int(absval[i]):,}"
                               + ("" if kind == "neuron" else f", {int(mem[i])} of {per} positions in the slice"))
            row.append(nid)
        if more or not len(picked):
            nid = f"{g.id}:more"
            text = f"+{more:,} more" if more else ("no members" if c.size else "empty")
            unit_name = "channels" if kind == "channel" else "neurons"
            v.add_node(nid, cluster=cid, label=text, shape="plaintext", style="", fontsize="10",
                       fontcolor="#555555" if more else "#999999", more=more,
                       tooltip=f"{more:,} more member {unit_name}" if more else text)
            row.append(nid)
        anchor[g.id] = row[(len(row) - 1) // 2]  # edges meet the middle of the neurons' row
        cluster_w[g.id] = max(_row_width(v, row), header)
    for src, dst, j in edges:
        st = syn[dst.id]
        if st is not None:
            absum, net, m, total = st
            color = POSITIVE if net > 0 else NEGATIVE if net < 0 else NEUTRAL
            attrs = dict(color=color, penwidth=str(_penwidth(absum, max_syn)),
                         synapses=m, abs=absum, count=net,
                         tooltip=f"{dst.head.name}: {m:,}/{total:,} synapses in the slice, "
                                 f"sum of |count| {absum:,}, sum {net:+,}")
            if not m:
                attrs["style"] = "dashed"
        else:
            live = counts[src.id].any() and counts[dst.id].any()
            attrs = dict(color="#555555" if live else "#bbbbbb", style="solid" if live else "dashed",
                         tooltip=f"{src.out} → {dst.head.name} ({_kind(graph, dst.head.name)})")
        _edge_between(v, anchor, src, dst, True, **attrs)
    _apply_wrap(v, graph, groups, edges, cluster_w, 1.5, size, wrap, anchor, min_scale)
    return v


def _diff(graph, a, b, top_k, merge, size, wrap, channels, title, names, min_scale):
    groups, of = _groups(graph, merge)
    edges = _cross_edges(graph, groups, of)
    v = _new_view("diff", graph, title or _title(graph, "diff", a, b, names), size, ranksep="1.2")
    anchor, cluster_w = {}, {}
    syn = {}
    for g in groups:
        ca, cb = _group_counts(graph, g, a), _group_counts(graph, g, b)
        ma, mb = ca != 0, cb != 0
        only_a, only_b, both = int((ma & ~mb).sum()), int((mb & ~ma).sum()), int((ma & mb).sum())
        lines = [f"neurons of {ca.size:,}: only {names[0]} {only_a:,} · only {names[1]} {only_b:,} · both {both:,}"]
        weighted = _weighted(graph, g)
        if weighted:
            sa = np.concatenate([np.ravel(a.synapse_counts[op.name]) for op in weighted]) != 0
            sb = np.concatenate([np.ravel(b.synapse_counts[op.name]) for op in weighted]) != 0
            syn[g.id] = (int((sa & ~sb).sum()), int((sb & ~sa).sum()), int((sa & sb).sum()), int(sa.size))
            lines.append(f"synapses of {sa.size:,}: only {names[0]} {syn[g.id][0]:,} · "
                         f"only {names[1]} {syn[g.id][1]:,} · both {syn[g.id][2]:,}")
        kind, abs_a, _, mem_a, per = _units(graph, g, ca, channels)
        _, abs_b, _, mem_b, _ = _units(graph, g, cb, channels)
        in_a, in_b = abs_a > 0, abs_b > 0
        union = in_a | in_b
        score = np.abs(abs_a - abs_b).astype(np.float64) + 1e-9 * (abs_a + abs_b) + (in_a != in_b) * 1e12
        score = np.where(union, score + 1e-12, 0)
        picked, more = _top(score, top_k)
        cid = f"cluster_{g.id}"
        changed = only_a + only_b
        v.graph["clusters"][cid] = {
            "label": _group_label(graph, g, lines), "style": "rounded,filled",
            "fillcolor": "#f7f7f7" if union.any() else "white",
            "color": (ONLY_A if only_a > only_b else ONLY_B if only_b > only_a else "#777777")
                     if changed else "#aaaaaa",
            "penwidth": "2" if changed else "1", "fontname": FONT, "fontsize": "11", "labeljust": "l",
            "margin": "6", "tooltip": " → ".join(g.members), "_group": g.id,
            "_only_a": only_a, "_only_b": only_b, "_both": both, "_row": True}
        header = _label_width(v.graph["clusters"][cid]["label"])
        row = []
        for i in picked:
            cat = "both" if in_a[i] and in_b[i] else "a" if in_a[i] else "b"
            if cat == "both":  # leaning towards the side with the larger |count|
                lean = (float(abs_a[i]) - float(abs_b[i])) / max(1.0, float(abs_a[i] + abs_b[i]))
                fill = LEAN_A if lean > 0.2 else LEAN_B if lean < -0.2 else BOTH_FILL
            else:
                fill = ONLY_A_FILL if cat == "a" else ONLY_B_FILL
            text = _unit_text(graph, g, kind, i)
            nid = f"{g.id}:{kind[0]}{int(i)}"
            v.add_node(nid, cluster=cid, label=f"{text}\n{int(abs_a[i]):,} | {int(abs_b[i]):,}",
                       fillcolor=fill, color={"a": ONLY_A, "b": ONLY_B, "both": "#777777"}[cat],
                       penwidth="1" if cat == "both" else "2",
                       fontsize="10", category=cat, index=int(i), unit=kind,
                       tooltip=f"{g.head.name} {text}: |count| {int(abs_a[i]):,} in {names[0]}, "
                               f"{int(abs_b[i]):,} in {names[1]}")
            row.append(nid)
        if more or not len(picked):
            nid = f"{g.id}:more"
            v.add_node(nid, cluster=cid, label=f"+{more:,} more" if more else "no members",
                       shape="plaintext", style="", fontsize="10", fontcolor="#555555", more=more)
            row.append(nid)
        anchor[g.id] = row[(len(row) - 1) // 2]  # edges meet the middle of the neurons' row
        cluster_w[g.id] = max(_row_width(v, row), header)
    max_changed = max([sa + sb for sa, sb, _, _ in syn.values()] or [0])
    for src, dst, j in edges:
        if dst.id in syn:
            sa, sb, both, total = syn[dst.id]
            color = ONLY_A if sa > sb else ONLY_B if sb > sa else BOTH
            attrs = dict(color=color, penwidth=str(_penwidth(sa + sb, max_changed)),
                         only_a=sa, only_b=sb, both=both,
                         tooltip=f"{dst.head.name} synapses: {sa:,} only in {names[0]}, {sb:,} only in "
                                 f"{names[1]}, {both:,} in both (of {total:,})")
        else:
            attrs = dict(color="#555555")
        _edge_between(v, anchor, src, dst, True, **attrs)
    _apply_wrap(v, graph, groups, edges, cluster_w, 1.7, size, wrap, anchor, min_scale)
    return v


def _model(graph, s, merge, size, wrap, title, min_scale):
    groups, of = _groups(graph, merge)
    edges = _cross_edges(graph, groups, of)
    v = _new_view("model", graph, title or _title(graph, "model", s), size)
    anchor, cluster_w = {}, {}
    syn = {g.id: _synapse_stats(s, graph, g) for g in groups}
    max_syn = max([st[0] for st in syn.values() if st] or [0])
    for g in groups:
        n_total = graph.n_neurons(g.head.name)
        lines = []
        if s is None:
            members = 0
            lines.append(f"{n_total:,} neurons")
            n_synapses = sum(op.n_synapses for op in _weighted(graph, g))
            if n_synapses:
                lines.append(f"{n_synapses:,} synapses")
            fill, share = "white", 0.0
        else:
            c = _group_counts(graph, g, s)
            members = int(np.count_nonzero(c))
            share = members / max(1, c.size)
            lines.append(f"neurons {_ratio(members, c.size)}")
            if syn[g.id]:
                lines.append(f"synapses {_ratio(syn[g.id][2], syn[g.id][3])}")
            fill = _level(share, 1.0, HIGHLIGHT) if members else "white"
        v.add_node(g.id, label=_group_label(graph, g, lines), fillcolor=fill,
                   color="#333333" if members else "#aaaaaa", penwidth="1.5" if members else "1",
                   fontcolor="black" if (members or s is None) else "#888888",
                   members=members, total=n_total, share=round(share, 4), ops=list(g.members),
                   tooltip=" → ".join(g.members))
        anchor[g.id] = g.id
        cluster_w[g.id] = 0.075 * max(len(x) for x in v.nodes[g.id]["label"].split("\n")) + 0.3
    for src, dst, j in edges:
        st = syn[dst.id]
        if st is not None and st[2]:
            absum, net, m, total = st
            color = POSITIVE if net > 0 else NEGATIVE if net < 0 else NEUTRAL
            attrs = dict(color=color, penwidth=str(_penwidth(absum, max_syn)), synapses=m, count=net,
                         tooltip=f"{dst.head.name}: {m:,}/{total:,} synapses in the slice, sum {net:+,}")
        else:
            attrs = dict(color="#555555" if s is None else "#aaaaaa")
        _edge_between(v, anchor, src, dst, False, **attrs)
    _apply_wrap(v, graph, groups, edges, cluster_w, 1.15, size, wrap, anchor, min_scale)
    return v


class Html(str):
    """A Graphviz HTML-like label (written ``label=<...>``, not quoted)."""


def _heat(value, vmax):
    """White to blue (> 0) or red (< 0), by ``|value| / vmax`` (square root: faint cells show)."""
    if vmax <= 0 or value == 0:
        return "#ffffff"
    t = min(1.0, abs(value) / vmax) ** 0.5
    end = (33, 102, 172) if value > 0 else (178, 24, 43)
    return "#" + "".join(f"{round(255 + (e - 255) * t):02x}" for e in end)


def _heat_table(title, counts, cell):
    """An HTML-like table: a title row, then one row of cells a query position, one cell a key
    position, coloured by the count."""
    vmax = float(np.abs(counts).max()) if counts.size else 0.0
    q, k = counts.shape
    rows = [f'<TR><TD COLSPAN="{k + 1}" ALIGN="LEFT" BORDER="0"><FONT POINT-SIZE="11">{title}</FONT></TD></TR>',
            '<TR><TD BORDER="0"></TD>' + "".join(
                f'<TD BORDER="0" WIDTH="{cell}" HEIGHT="{cell}"><FONT POINT-SIZE="6">'
                f'{j if k <= 20 or j % 5 == 0 else " "}</FONT></TD>' for j in range(k)) + "</TR>"]
    for i in range(q):
        cells = "".join(f'<TD WIDTH="{cell}" HEIGHT="{cell}" BGCOLOR="{_heat(int(c), vmax)}"></TD>'
                        for c in counts[i])
        label = i if q <= 20 or i % 5 == 0 else " "
        rows.append(f'<TR><TD BORDER="0" ALIGN="RIGHT"><FONT POINT-SIZE="6">{label}</FONT></TD>{cells}</TR>')
    return Html('<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="0" COLOR="#dddddd">'
                + "".join(rows) + "</TABLE>")


def attention_maps(graph, s):
    """``{(attention call, head): [queries, keys] counts}`` of a slice: its counts on each
    attention's probabilities (the softmax over keys), the kept contributions that query
    position q draws from key position k through head h. Needs an element-granularity slice."""
    if graph.granularity != "element":
        raise InvalidParameterError("The attention view needs an element-granularity slice (at channel granularity "
                                    "a head is one neuron): slice with granularity='element'.")
    maps = {}
    for op in graph.ops:
        if op.kind == "softmax" and len(op.shape) == 3:  # attention probabilities [queries, keys, heads]
            counts = np.asarray(s.neuron_counts[op.name])
            for h in range(op.shape[2]):
                maps[(op.call or op.name, h)] = counts[:, :, h]
    if not maps:
        raise InvalidParameterError(f"Model {graph.name!r} has no attention layer (MultiHeadAttention) to draw.")
    return maps


def _attention(graph, s, size, title):
    maps = attention_maps(graph, s)
    v = _new_view("attention", graph, title or _title(graph, "attention", s), size, ranksep="0.4", nodesep="0.3")
    longest = max(max(m.shape) for m in maps.values())
    cell = 12 if longest <= 20 else 8 if longest <= 40 else 5
    rows = {}
    for (call, h), counts in maps.items():
        nid = f"{call}:head{h}"
        total = int(np.abs(counts).sum())
        v.add_node(nid, label=_heat_table(f"{call} · head {h} · |count| {total:,}", counts, cell), shape="plaintext",
                   style="", margin="0", heat=counts, call=call, head=h, abs=total,
                   tooltip=f"{call}, head {h}: rows are query positions, columns key positions")
        rows.setdefault(call, []).append(nid)
    calls = list(rows)
    for call in calls:  # one row of heads a layer, the layers top to bottom
        cid = f"cluster_{call}"
        v.graph["clusters"][cid] = {"label": "", "style": "invis", "_row": True}  # heads in order
        for nid in rows[call]:
            v.nodes[nid]["cluster"] = cid
    for a, b in zip(calls, calls[1:]):
        v.add_edge(rows[a][0], rows[b][0], style="invis")
    return v


def _neuron_nodes(graph, groups, s):
    """{group id: (flat head indices, counts)} of the neurons the neuron view shows."""
    out = {}
    for g in groups:
        if s is None:
            n = graph.n_neurons(g.head.name)
            out[g.id] = (np.arange(n), np.zeros(n, np.int64))
        else:
            c = _group_counts(graph, g, s)
            idx = np.flatnonzero(c)
            out[g.id] = (idx, c[idx])
    return out


def _too_big(graph, what, n, limit):
    return InvalidParameterError(
        f"The neuron view of {graph.name!r} would have {n:,} {what}, over the limit of {limit:,}: "
        "draw the 'collapsed' view (top neurons per op) or the 'model' view (the op graph), "
        "or raise the limits (max_nodes/max_edges; CLI --max-nodes/--max-edges).")


def _neuron_edges(graph, groups, of, s, nodes, max_edges):
    """Per cross-group edge: (src group, dst group, src idx, dst idx, abs, net) arrays."""
    result, total = [], 0
    member = {}
    for g in groups:
        mask = np.zeros(graph.n_neurons(g.head.name), bool)
        mask[nodes[g.id][0]] = True
        member[g.id] = mask
    for g in groups:
        op = g.head
        if op.kind == "input":
            continue
        syn = None
        if s is not None and op.synapse_shape is not None:
            syn = np.asarray(s.synapse_counts[op.name]).reshape(-1)
        for j, src, dst, w in graph.connections(op.name, nodes[g.id][0]):
            sg = of[op.inputs[j]]
            if sg.to_head is not None:
                src = sg.to_head[src]
            keep = member[sg.id][src] & member[g.id][dst]
            if syn is not None:
                keep &= (w < 0) | (syn[np.maximum(w, 0)] != 0)
            src, dst, w = src[keep], dst[keep], w[keep]
            c = syn[np.maximum(w, 0)] * (w >= 0) if syn is not None else np.zeros(len(w), np.int64)
            width = int(dst.max(initial=0)) + 1
            uniq, inv = np.unique(src.astype(np.int64) * width + dst, return_inverse=True)
            total += len(uniq)
            if total > max_edges:
                raise _too_big(graph, "edges", total, max_edges)
            absum = np.zeros(len(uniq), np.int64)
            net = np.zeros(len(uniq), np.int64)
            np.add.at(absum, inv, np.abs(c))
            np.add.at(net, inv, c)
            result.append((sg, g, uniq // width, uniq % width, absum, net, op.synapse_shape is not None))
    return result


def _neuron(graph, s, merge, size, title, max_nodes, max_edges):
    groups, of = _groups(graph, merge, calls=False)  # every op's neurons are drawn
    if s is None:
        n = graph.n_neurons()
        if n > max_nodes:
            raise _too_big(graph, "neurons", n, max_nodes)
    nodes = _neuron_nodes(graph, groups, s)
    n = sum(len(idx) for idx, _ in nodes.values())
    if n > max_nodes:
        raise _too_big(graph, "neurons", n, max_nodes)
    edges = _neuron_edges(graph, groups, of, s, nodes, max_edges)
    v = _new_view("neuron", graph, title or _title(graph, "neuron", s), size, rankdir="LR",
                  nodesep="0.06", ranksep="0.9", compound="false")
    vmax = max([int(np.abs(c).max()) for idx, c in nodes.values() if len(c)] or [0])
    for g in groups:
        idx, c = nodes[g.id]
        if not len(idx):
            continue
        cid = f"cluster_{g.id}"
        n_total = graph.n_neurons(g.head.name)
        v.graph["clusters"][cid] = {
            "label": _group_label(graph, g, [f"neurons {_ratio(len(idx), n_total)}" if s is not None
                                             else f"{n_total:,} neurons"]),
            "style": "rounded", "color": "#aaaaaa", "fontname": FONT, "fontsize": "10",
            "labeljust": "l", "tooltip": " → ".join(g.ops), "_group": g.id, "_rank": True}
        for i, count in zip(idx.tolist(), c.tolist()):
            text = _index_text(graph, g.head.name, i)
            fill = _fill(count, abs(count), vmax) if s is not None else "white"
            v.add_node(f"{g.id}{text}", cluster=cid, fontsize="9", fillcolor=fill, fontcolor=_fontcolor(fill),
                       label=text if s is None else f"{text} {count:+d}", index=i, count=count,
                       tooltip=f"{g.head.name}{text}" + ("" if s is None else f": count {count:+d}"))
    # layers stay in order even where no member of one reaches the next (a sparse slice)
    depth, shown = {}, []
    for g in groups:
        depth[g.id] = 1 + max((depth[of[t].id] for t in g.head.inputs), default=-1)
        if len(nodes[g.id][0]):
            shown.append(g)
    first = lambda g: f"{g.id}{_index_text(graph, g.head.name, int(nodes[g.id][0][0]))}"  # noqa: E731
    for i, nxt in enumerate(shown):
        prev = next((p for p in reversed(shown[:i]) if depth[p.id] < depth[nxt.id]), None)
        if prev is not None:
            v.graph["invisible"].append((first(prev), first(nxt)))
    for sg, g, src, dst, absum, net, weighted in edges:
        for a, b, av, nv in zip(src.tolist(), dst.tolist(), absum.tolist(), net.tolist()):
            tail = f"{sg.id}{_index_text(graph, sg.head.name, a)}"
            head = f"{g.id}{_index_text(graph, g.head.name, b)}"
            if weighted and s is not None:
                color = POSITIVE if nv > 0 else NEGATIVE if nv < 0 else NEUTRAL
                width = round(min(4.0, 0.8 + 0.8 * math.log2(1 + av)), 2)  # 1.6 for |count| 1, 4 from 15
                attrs = dict(color=color, penwidth=str(width), count=nv,
                             tooltip=f"{g.head.name} synapses {tail} → {head}: count {nv:+d}")
            else:
                attrs = dict(color="#777777", penwidth="0.8")
            v.add_edge(tail, head, **attrs)
    return v


# =========================================================================== public API
def _check_choice(name, value, options):
    if value not in options:
        raise InvalidParameterError(
            f"The {name!r} parameter must be one of {', '.join(map(repr, options))}. Got {value!r} instead.")


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise InvalidParameterError(f"The {name!r} parameter must be an int in [{lo}, {hi}]. Got {value!r} instead.")


def _auto_view(graph, s, other, max_nodes, max_edges):
    if other is not None:
        return "diff"
    if s is None:
        return "model"
    groups, of = _groups(graph, True)
    nodes = _neuron_nodes(graph, groups, s)
    if sum(len(idx) for idx, _ in nodes.values()) > min(AUTO_NEURON_NODES, max_nodes):
        return "collapsed"
    try:
        _neuron_edges(graph, groups, of, s, nodes, min(AUTO_NEURON_EDGES, max_edges))
    except InvalidParameterError:
        return "collapsed"
    return "neuron"


def view_graph(obj, view=None, *, other=None, graph=None, model=None, top_k=5, merge=True, wrap=None,
               channels=True, size=(16, 10), title=None, names=("A", "B"), max_nodes=MAX_NODES,
               max_edges=MAX_EDGES, min_scale=MIN_SCALE):
    """The picture of ``obj`` as a networkx DiGraph, before it is written as DOT.

    Nodes and edges carry the DOT attributes (``label``, ``fillcolor``, ``penwidth``, ...) and
    the data behind them (``count``, ``members``, ``synapses``, ...); a node's ``cluster`` names
    its cluster, whose attributes are in ``G.graph["clusters"]``. Parameters: see :func:`to_dot`.
    """
    g, a, b = _resolve(obj, other, graph, model)
    if view is None:
        view = _auto_view(g, a, b, max_nodes, max_edges)
    _check_choice("view", view, VIEWS)
    _check_int("top_k", top_k, 0, 50)
    _check_int("max_nodes", max_nodes, 1, 10**6)
    _check_int("max_edges", max_edges, 1, 10**7)
    if wrap is not None:
        _check_int("wrap", wrap, 1, MAX_COLUMNS)
    if isinstance(min_scale, bool) or not isinstance(min_scale, (int, float)) or not 0 <= min_scale <= 1:
        raise InvalidParameterError(f"The 'min_scale' parameter must be a number in [0, 1]. Got {min_scale!r} instead.")
    try:
        size = (float(size[0]), float(size[1]))
        if not (size[0] > 0 and size[1] > 0):
            raise ValueError
    except (TypeError, ValueError, IndexError):
        raise InvalidParameterError(
            f"The 'size' parameter must be (width, height) in inches. Got {size!r} instead.") from None
    if not (isinstance(names, (tuple, list)) and len(names) == 2 and all(isinstance(n, str) and n for n in names)):
        raise InvalidParameterError(f"The 'names' parameter must be two non-empty strings. Got {names!r} instead.")
    if view == "diff":
        if b is None:
            raise InvalidParameterError("view='diff' compares two slices: pass other=the second Slice "
                                        "(on the command line, --other SLICE2.npz).")
        return _diff(g, a, b, top_k, merge, size, wrap, channels, title, tuple(names), min_scale)
    if b is not None:
        raise InvalidParameterError(f"Two slices are shown with view='diff' (--view diff), not {view!r}.")
    if view == "collapsed":
        if a is None:
            raise InvalidParameterError("view='collapsed' shows a slice's top neurons: pass a Slice "
                                        "(for a model or graph, use view='model' or 'neuron').")
        return _collapsed(g, a, top_k, merge, size, wrap, channels, title, min_scale)
    if view == "model":
        return _model(g, a, merge, size, wrap, title, min_scale)
    if view == "attention":
        if a is None:
            raise InvalidParameterError("view='attention' draws a slice's attention: pass a Slice.")
        return _attention(g, a, size, title)
    return _neuron(g, a, merge, size, title, max_nodes, max_edges)


# =========================================================================== DOT text
def quote(value, newline="\\n") -> str:
    """A DOT double-quoted string: backslashes and quotes escaped, line breaks as ``\\n``
    (centred lines) or, with ``newline="\\l"``, left-justified lines."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if newline == "\\l":
        text = text.replace("\n", "\\l") + "\\l"
    else:
        text = text.replace("\n", "\\n")
    return f'"{text}"'


def _attrs(attrs, skip=(), left=False):
    """``k="v", ...`` of the DOT attributes (data keys and ``_private`` ones left out); with
    ``left``, the label's lines are left-justified."""
    items = [(k, v) for k, v in attrs.items() if not k.startswith("_") and k not in skip
             and isinstance(v, (str, int, float)) and not isinstance(v, bool)]
    return ", ".join(f"{k}=<{v}>" if isinstance(v, Html) else
                     f"{k}={quote(v, chr(92) + 'l' if left and k == 'label' else chr(92) + 'n')}"
                     for k, v in items)


#: Node/edge attributes that are data, not DOT.
DATA_KEYS = ("cluster", "count", "abs", "members", "total", "share", "ops", "index", "unit", "more",
             "synapses", "category", "only_a", "only_b", "both", "connector", "column", "header", "heat", "call",
             "head")


def dot_text(v: nx.DiGraph) -> str:
    """DOT text of a view graph made by :func:`view_graph`.

    A node's ``cluster`` attribute puts it in that cluster; a cluster's ``_parent`` nests it in
    another (the columns of a wrapped layout); ``_row`` keeps a cluster's nodes on one row, in
    the order they were added, ``_rank`` on one rank in any order."""
    lines = [f"digraph {quote(v.graph.get('name') or v.name or 'nnslicer')} {{"]
    lines.append(f"  graph [{_attrs(v.graph['attrs'], left=True)}];")
    lines.append(f"  node [{_attrs(v.graph['node_attrs'])}];")
    lines.append(f"  edge [{_attrs(v.graph['edge_attrs'])}];")
    clusters = v.graph["clusters"]
    members, children = {}, {}
    for n, data in v.nodes(data=True):
        members.setdefault(data.get("cluster"), []).append(n)
    for cid, cattrs in clusters.items():
        children.setdefault(cattrs.get("_parent"), []).append(cid)

    def nonempty(cid):
        return bool(members.get(cid)) or any(nonempty(c) for c in children.get(cid, ()))

    def write(cid, indent):
        pad = "  " * indent
        if cid is not None:
            lines.append(f"{pad}subgraph {quote(cid)} {{")
            lines.append(f"{pad}  graph [{_attrs(clusters[cid], left=True)}];")
            pad += "  "
        for n in members.get(cid, []):
            lines.append(f"{pad}{quote(n)} [{_attrs(v.nodes[n], DATA_KEYS, v.nodes[n].get('_left', False))}];")
        row = members.get(cid, [])
        if cid is not None and (clusters[cid].get("_row") or clusters[cid].get("_rank")) and len(row) > 1:
            lines.append(f"{pad}{{ rank=same; " + " ".join(f"{quote(n)};" for n in row) + " }")
            if clusters[cid].get("_row"):  # one row, in the order given
                for a, b in zip(row, row[1:]):
                    lines.append(f"{pad}{quote(a)} -> {quote(b)} [style=\"invis\"];")
        for child in children.get(cid, []):
            if nonempty(child):
                write(child, indent + 1 if cid is not None else 1)
        if cid is not None:
            lines.append(f"{pad[:-2]}}}")

    write(None, 1)
    for a, b, data in v.edges(data=True):
        lines.append(f"  {quote(a)} -> {quote(b)} [{_attrs(data, DATA_KEYS)}];")
    for a, b in v.graph.get("invisible", ()):
        lines.append(f"  {quote(a)} -> {quote(b)} [style=\"invis\"];")
    if v.graph.get("order"):
        tops = [v.graph["order"][0][0]] + [b for _, b in v.graph["order"]]
        lines.append("  { rank=same; " + " ".join(f"{quote(t)};" for t in tops) + " }")
        for a, b in v.graph["order"]:
            lines.append(f"  {quote(a)} -> {quote(b)} [style=\"invis\"];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_dot(obj, view=None, **kw) -> str:
    """DOT text of a picture of a slice, two slices, a graph or a Keras model (no dependency).

    Parameters
    ----------
    obj : Slice, (Slice, Slice), DataFlowGraph or keras.Model
    view : {"neuron", "collapsed", "model", "diff"}, optional
        Default: "diff" for two slices; for a slice, "neuron" when it has at most
        ``AUTO_NEURON_NODES`` (100) neurons and ``AUTO_NEURON_EDGES`` (500) edges, else
        "collapsed"; for a graph or model, "model".
    other : Slice, optional
        The second slice of a diff (``obj`` is the first).
    graph : DataFlowGraph, optional
        The slice's model graph, if the slice does not carry one (a loaded slice).
    model : keras.Model, optional
        The slice's model, lifted when no graph is at hand.
    top_k : int
        Neurons (or channels) shown per op in the collapsed and diff views (default 5).
    merge : bool
        Draw an op whose handler says it is a follower (an activation, batch norm, dropout,
        flatten) inside its producer's node when it is the producer's only consumer and passes
        its neurons on one to one (default True).
    wrap : int, optional
        Columns to lay a long graph out in, at most (default: chosen so that the picture's
        aspect is near ``size``'s).
    channels : bool
        In collapsed views, summarise an element-granularity feature map per channel (default
        True); False lists single elements.
    size : (float, float)
        Largest picture, in inches (default (16, 10)); bigger layouts are scaled down, but not
        below ``min_scale``.
    min_scale : float in [0, 1]
        Smallest scale of the text (default ``MIN_SCALE``, 0.5): a layout that would need less
        to fit ``size`` is drawn bigger than ``size``, in its proportions; 0 always fits
        ``size``.
    title : str, optional
    names : (str, str)
        What to call the two slices of a diff (default ("A", "B")).
    max_nodes, max_edges : int
        Limits of the neuron view (default 300 and 2,000): past them it is refused, pointing to
        the collapsed view.

    Examples
    --------
    >>> import keras, nnslicer
    >>> from nnslicer.render import to_dot, view_graph
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="relu", name="h"),
    ...                           keras.layers.Dense(1, name="out")], name="tiny")
    >>> to_dot(nnslicer.lift(model), view="neuron").splitlines()[0]
    'digraph "tiny" {'
    >>> v = view_graph(nnslicer.lift(model), view="neuron")  # h/relu is drawn inside h
    >>> v.number_of_nodes(), v.number_of_edges()
    (6, 8)
    """
    return dot_text(view_graph(obj, view, **kw))


def _format_of(path, fmt):
    """The format to write ``path`` in: ``fmt``, else the one its extension names; the two must
    agree when both are given."""
    ext = os.path.splitext(str(path))[1].lower().lstrip(".")
    named = {"gv": "dot"}.get(ext, ext)
    if fmt is None:
        if named not in FORMATS:
            raise InvalidParameterError(
                f"Cannot tell the format from {os.fspath(path)!r}: name it .svg, .png, .pdf or .dot, "
                "or give the format (format=..., --format).")
        fmt = named
    _check_choice("format", fmt, FORMATS)
    if named in FORMATS and named != fmt:
        raise InvalidParameterError(f"{os.fspath(path)!r} names a .{ext} file but the format is {fmt!r}: "
                                    "make them agree.")
    return fmt


def _write_atomic(path, data: bytes):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return path


def render(obj, path, format=None, *, view=None, dpi=None, timeout=300, **kw) -> str:
    """Draw a slice, two slices, a graph or a Keras model to ``path``; returns the path.

    Parameters
    ----------
    obj : Slice, (Slice, Slice), DataFlowGraph or keras.Model
    path : str or path-like
    format : {"svg", "png", "pdf", "dot"}, optional
        Default: from ``path``'s extension. "dot" writes the DOT text and needs nothing else; the
        others run Graphviz's ``dot`` program.
    view : {"neuron", "collapsed", "model", "diff"}, optional
        See :func:`to_dot`, which also lists the other keyword arguments.
    dpi : float, optional
        Resolution of a PNG (Graphviz's default: 96).
    timeout : float, default 300
        Seconds Graphviz may take before :class:`RenderError` is raised.

    Raises
    ------
    MissingDependencyError
        When ``dot`` is not installed; the DOT text is then written next to ``path``
        (``picture.svg`` -> ``picture.dot``), to render later or elsewhere.

    Examples
    --------
    >>> nnslicer.render(slice_, "slice.svg")                       # doctest: +SKIP
    >>> nnslicer.render((clean, adversarial), "diff.png", names=("clean", "adversarial"))  # doctest: +SKIP
    """
    path = os.fspath(path)
    fmt = _format_of(path, format)
    text = to_dot(obj, view=view, **kw)
    if dpi is not None:
        if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not 10 <= dpi <= 1200:
            raise InvalidParameterError(f"The 'dpi' parameter must be a number in [10, 1200]. Got {dpi!r} instead.")
        text = text.replace("  graph [", f"  graph [dpi={quote(dpi)}, ", 1)
    if fmt == "dot":
        return _write_atomic(path, text.encode("utf-8"))
    exe = shutil.which("dot")
    if exe is None:
        base, ext = os.path.splitext(path)
        dot_path = (base if ext.lower() != ".dot" else path) + ".dot"
        _write_atomic(dot_path, text.encode("utf-8"))
        raise MissingDependencyError(
            f"Writing {fmt.upper()} needs Graphviz's 'dot' program, which is not on PATH. The DOT text "
            f"is in {dot_path!r}. Install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: "
            f"brew install graphviz), then render it with: dot -T{fmt} {dot_path} -o {path}")
    with atomic_path(path, "." + fmt) as tmp:
        try:
            done = subprocess.run([exe, f"-T{fmt}", "-o", tmp], input=text.encode("utf-8"),
                                  capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RenderError(f"Graphviz's dot did not finish within {timeout} s; try the collapsed view or "
                              "a smaller top_k (--view collapsed, --top-k K), or write DOT (format='dot', "
                              "-o OUT.dot).") from None
        if done.returncode != 0 or not os.path.getsize(tmp):
            raise RenderError(f"Graphviz's dot failed (exit {done.returncode}): "
                              f"{done.stderr.decode('utf-8', 'replace').strip()[:2000]}")
    return path
