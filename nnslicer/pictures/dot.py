"""DOT text of a view graph, built with no dependency."""

from __future__ import annotations

import networkx as nx

from .attention import Html
from .views import view_graph


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
    class_names : str or sequence of str, optional
        Name the slices' output classes in the title (``"9 (Ankle boot)"``): the names, or
        anything :func:`nnslicer.datasets.class_names` reads (``"fashion_mnist"``, a file).
    max_nodes, max_edges : int
        Limits of the neuron view (default 300 and 2,000): past them it is refused, pointing to
        the collapsed view.

    Examples
    --------
    >>> import keras, nnslicer
    >>> from nnslicer.pictures import to_dot, view_graph
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="relu", name="h"),
    ...                           keras.layers.Dense(1, name="out")], name="tiny")
    >>> to_dot(nnslicer.lift(model), view="neuron").splitlines()[0]
    'digraph "tiny" {'
    >>> v = view_graph(nnslicer.lift(model), view="neuron")  # h/relu is drawn inside h
    >>> v.number_of_nodes(), v.number_of_edges()
    (6, 8)
    """
    return dot_text(view_graph(obj, view, **kw))
