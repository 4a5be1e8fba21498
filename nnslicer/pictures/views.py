"""The views of a picture as networkx graphs: collapsed, diff, model and neuron (the attention
view is in :mod:`nnslicer.pictures.attention`), and :func:`view_graph`, which checks its
parameters and picks the view."""

from __future__ import annotations

import math

import numpy as np

from .. import datasets
from ..errors import InvalidParameterError
from .attention import _attention
from .groups import _cross_edges, _group_counts, _groups, _resolve, _weighted
from .labels import (BOTH, BOTH_FILL, FONT, HIGHLIGHT, LEAN_A, LEAN_B, NEGATIVE, NEUTRAL, ONLY_A, ONLY_A_FILL,
                     ONLY_B, ONLY_B_FILL, POSITIVE, _fill, _fontcolor, _index_text, _kind, _kinds, _level,
                     _new_view, _penwidth, _ratio, _title, _top, _unit_text, _units)
from .layout import MAX_COLUMNS, _apply_wrap
from ..validation import Interval, Options, check_param

VIEWS = ("neuron", "collapsed", "model", "diff", "attention")

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


# =========================================================================== views
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
    v = _new_view("collapsed", graph, title, size, ranksep="1.0")
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
            if kind == "neuron" or abs(int(net[i])) == int(absval[i]):  # one sign only: one number says it
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
    v = _new_view("diff", graph, title, size, ranksep="1.2")
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
    v = _new_view("model", graph, title, size)
    v.graph["node_attrs"]["margin"] = "0.08,0.08"  # room above the op's name for a thick arrowhead
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
    v = _new_view("neuron", graph, title, size, rankdir="LR",
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
    return check_param(value, name, None, Options(options))


def _check_int(name, value, lo, hi):
    return check_param(value, name, None, Interval(int, lo, hi))


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
               max_edges=MAX_EDGES, min_scale=MIN_SCALE, class_names=None):
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
    if view == "diff" and b is None:
        raise InvalidParameterError("view='diff' compares two slices: pass other=the second Slice "
                                    "(on the command line, --other SLICE2.npz).")
    if view != "diff" and b is not None:
        raise InvalidParameterError(f"Two slices are shown with view='diff' (--view diff), not {view!r}.")
    if view == "collapsed" and a is None:
        raise InvalidParameterError("view='collapsed' shows a slice's top neurons: pass a Slice "
                                    "(for a model or graph, use view='model' or 'neuron').")
    if view == "attention" and a is None:
        raise InvalidParameterError("view='attention' draws a slice's attention: pass a Slice.")
    if class_names is not None:
        class_names = datasets.class_names(class_names, g.num_outputs)
    title = title or _title(g, view, a, b, tuple(names), class_names)
    if view == "diff":
        return _diff(g, a, b, top_k, merge, size, wrap, channels, title, tuple(names), min_scale)
    if view == "collapsed":
        return _collapsed(g, a, top_k, merge, size, wrap, channels, title, min_scale)
    if view == "model":
        return _model(g, a, merge, size, wrap, title, min_scale)
    if view == "attention":
        return _attention(g, a, size, title)
    return _neuron(g, a, merge, size, title, max_nodes, max_edges)
