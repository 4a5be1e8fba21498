"""The wrapping layout: where a long graph is cut into columns, how big the picture is, and the
"continued in column k" / "from <op>" connectors that join the columns."""

from __future__ import annotations

import numpy as np

#: Most columns of a long graph, and most tensors that may cross a cut between two columns when
#: no cut is a bottleneck (one tensor, as a ResNet's block output): NASNet's cells read two.
MAX_COLUMNS = 20
MAX_CROSSING = 3


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
