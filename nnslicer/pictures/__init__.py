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

The package, a module a concern: :mod:`~nnslicer.pictures.groups` (what a picture is drawn from,
and which ops are drawn as one box), :mod:`~nnslicer.pictures.labels` (colours, legends, titles,
label text), :mod:`~nnslicer.pictures.layout` (the columns of a long graph),
:mod:`~nnslicer.pictures.views` (the views as networkx graphs, :func:`view_graph`),
:mod:`~nnslicer.pictures.attention` (the attention view), :mod:`~nnslicer.pictures.dot` (DOT
text, :func:`to_dot`), :mod:`~nnslicer.pictures.graphviz` (:func:`render`: Graphviz, files) and
:mod:`~nnslicer.pictures.input_view` (:func:`plot_input`: an image model's slice as a heat map
over the image, with matplotlib).
"""

from .attention import Html, attention_maps
from .dot import DATA_KEYS, dot_text, quote, to_dot
from .graphviz import FORMATS, render, to_svg
from .input_view import input_counts, plot_input
from .labels import (BLUES, BOTH, BOTH_FILL, FONT, HIGHLIGHT, LEAN_A, LEAN_B, LEGENDS, NEGATIVE, NEUTRAL, ONLY_A,
                     ONLY_A_FILL, ONLY_B, ONLY_B_FILL, POSITIVE, REDS)
from .layout import MAX_COLUMNS, MAX_CROSSING
from .views import AUTO_NEURON_EDGES, AUTO_NEURON_NODES, MAX_EDGES, MAX_NODES, MIN_SCALE, VIEWS, view_graph

__all__ = ["render", "to_dot", "to_svg", "view_graph", "plot_input", "input_counts", "VIEWS", "FORMATS",
           # the limits and defaults of the views and layout
           "AUTO_NEURON_NODES", "AUTO_NEURON_EDGES", "MAX_NODES", "MAX_EDGES", "MIN_SCALE", "MAX_COLUMNS",
           "MAX_CROSSING",
           # colours and legends
           "POSITIVE", "NEGATIVE", "NEUTRAL", "BLUES", "REDS", "HIGHLIGHT", "ONLY_A", "ONLY_B", "BOTH",
           "ONLY_A_FILL", "ONLY_B_FILL", "BOTH_FILL", "LEAN_A", "LEAN_B", "FONT", "LEGENDS",
           # DOT text and the attention view
           "quote", "dot_text", "DATA_KEYS", "Html", "attention_maps"]
