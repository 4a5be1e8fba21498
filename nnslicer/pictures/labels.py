"""Colours, palettes, legends, titles and label text of the pictures, and a view's frame (its
graph attributes and default node and edge look)."""

from __future__ import annotations

import math
import textwrap

import networkx as nx
import numpy as np

from ..datasets import class_label
from ..graph import has_channels

POSITIVE, NEGATIVE, NEUTRAL = "#2166ac", "#b2182b", "#8c8c8c"
BLUES = ("#eff3ff", "#bdd7e7", "#6baed6", "#2171b5")
REDS = ("#fee5d9", "#fcae91", "#fb6a4a", "#cb181d")
HIGHLIGHT = ("#fff7bc", "#fee391", "#fec44f", "#fe9929")
ONLY_A, ONLY_B, BOTH = "#e66101", "#5e3c99", "#969696"
ONLY_A_FILL, ONLY_B_FILL, BOTH_FILL = "#fdb863", "#b2abd2", "#eeeeee"
LEAN_A, LEAN_B = "#fee0b6", "#d8daeb"
FONT = "Helvetica"


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
                 "over their positions, and the net count when some are negative); blue: net count > 0, red: < 0, "
                 "darker: a larger |count| within the box\n"
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


def _title(graph, view, a, b=None, names=("A", "B"), class_names=None):
    def one(s):
        what = f"{s.samples} sample{'s' if s.samples != 1 else ''}"
        if s.targets:
            what += f", output {', '.join(class_label(t, class_names) for t in s.targets)}"
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
