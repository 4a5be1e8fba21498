"""The attention view: one heat map per attention layer and head, as Graphviz HTML-like tables."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameterError
from .labels import _new_view


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
    v = _new_view("attention", graph, title, size, ranksep="0.4", nodesep="0.3")
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
