"""Pictures of slices: the DOT text (parsed back here) and the SVG that Graphviz makes of it.

The slices are written by hand on tiny lifted models, so every node, edge, colour and label
is known in advance. Views: neuron, collapsed, model, diff; then the no-``dot`` path, bad
inputs, the command line, and the size and speed bounds on a ResNet18-shaped slice.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import nnslicer  # noqa: E402
from nnslicer import models  # noqa: E402
from nnslicer import InvalidParameterError, MissingDependencyError, Slice  # noqa: E402
from nnslicer.cli import main  # noqa: E402
from nnslicer.graph import DataFlowGraph, Op  # noqa: E402
from nnslicer.pictures import (BOTH_FILL, NEGATIVE, ONLY_A, ONLY_A_FILL, POSITIVE, quote, to_dot,  # noqa: E402
                               view_graph)

keras = pytest.importorskip("keras")
L = keras.layers
HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="Graphviz's dot is not installed (apt-get install graphviz)")


# ------------------------------------------------------------------------------ parsing
ATTR = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
ID = r'"((?:[^"\\]|\\.)*)"'


def _unescape(text):
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "l": "\n"}.get(m.group(1), m.group(1)), text)


def _attrs(text):
    return {k: _unescape(v) for k, v in ATTR.findall(text or "")}


def parse_dot(text):
    """Our DOT text (one statement per line) -> nodes, visible edges and clusters."""
    nodes, edges, clusters, stack = {}, [], {}, []
    for line in text.splitlines():
        line = line.strip()
        if m := re.fullmatch(r"subgraph " + ID + r" \{", line):
            cid = _unescape(m.group(1))
            clusters[cid] = {"parent": stack[-1] if stack else None, "nodes": [], "attrs": {}}
            stack.append(cid)
        elif line == "}" and stack:
            stack.pop()
        elif line.startswith("graph [") and stack:
            clusters[stack[-1]]["attrs"] = _attrs(line)
        elif m := re.fullmatch(ID + " -> " + ID + r" \[(.*)\];", line):
            attrs = _attrs(m.group(3))
            if attrs.get("style") != "invis":
                edges.append((_unescape(m.group(1)), _unescape(m.group(2)), attrs))
        elif m := re.fullmatch(ID + r" \[(.*)\];", line):
            name = _unescape(m.group(1))
            nodes[name] = _attrs(m.group(2))
            if stack:
                clusters[stack[-1]]["nodes"].append(name)
    return nodes, edges, clusters


SVG = "{http://www.w3.org/2000/svg}"


def parse_svg(path):
    """Titles of the nodes, edges and clusters that Graphviz drew, and the root's attributes."""
    root = ET.parse(path).getroot()
    out = {"node": [], "edge": [], "cluster": []}
    for g in root.iter(SVG + "g"):
        if g.get("class") in out:
            out[g.get("class")].append(g.find(SVG + "title").text)
    texts = [t.text or "" for t in root.iter(SVG + "text")]
    return out, texts, root.attrib


# ------------------------------------------------------------------------------ models
def _set(model, weights):
    for name, ws in weights.items():
        layer = model.get_layer(name)
        layer.set_weights([np.asarray(w, dtype="float32").reshape(v.shape) for w, v in zip(ws, layer.get_weights())])
    return model


@pytest.fixture(scope="module")
def maxnet():
    """The 2-4-1 ReLU net of test_hand_derived (ops x, h, h/relu, out)."""
    x = keras.Input((2,), name="x")
    h = L.Dense(4, activation="relu", name="h")(x)
    out = L.Dense(1, name="out")(h)
    model = keras.Model(x, out, name="maxnet")
    return _set(model, {"h": [[[1, 0, 0, 1], [-1, 1, -1, 1]], [0, 0, 0, -10]], "out": [[[1], [1], [-1], [5]], [0]]})


@pytest.fixture(scope="module")
def graph(maxnet):
    return nnslicer.lift(maxnet)


def _slice(graph, neurons, synapses):
    return Slice({k: np.asarray(v, np.int64) for k, v in neurons.items()},
                 {k: np.asarray(v, np.int64) for k, v in synapses.items()}, graph=graph,
                 model=graph.name, fingerprint=graph.fingerprint, granularity=graph.granularity,
                 theta=0.2, rule="nnslicer", samples=1, targets=[0])


@pytest.fixture(scope="module")
def a(graph):
    """The slice of x = (3, 1) (test_hand_derived): the dead unit h[3] is out; the synapse
    x[1] -> h[0] (weight -1) counts -1, every other member +1."""
    return _slice(graph, {"x": [1, 1], "h": [1, 1, 1, 0], "h/relu": [1, 1, 1, 0], "out": [1]},
                  {"h": [[1, 0, 0, 0], [-1, 1, 1, 0]], "out": [[1], [1], [1], [0]]})


@pytest.fixture(scope="module")
def b(graph):
    """Another slice of maxnet: x[0] and h[0] are out, x[1] counts 2."""
    return _slice(graph, {"x": [0, 2], "h": [0, 1, 1, 0], "h/relu": [0, 1, 1, 0], "out": [1]},
                  {"h": [[0, 0, 0, 0], [0, 1, 1, 0]], "out": [[0], [1], [1], [0]]})


@pytest.fixture(scope="module")
def cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((6, 6, 1), name="image"), L.Conv2D(3, 3, activation="relu", name="conv"),
        L.MaxPooling2D(2, name="pool"), L.Flatten(name="flat"), L.Dense(4, name="dense"),
    ], name="tinycnn")


@pytest.fixture(scope="module")
def cnn_slicer(cnn):
    x = np.random.default_rng(0).normal(size=(40, 6, 6, 1)).astype("float32")
    return nnslicer.Slicer(cnn).fit(x), x


# ============================================================================== neuron view
def test_neuron_view_of_a_hand_slice(a):
    nodes, edges, clusters = parse_dot(to_dot(a, view="neuron"))
    # h/relu is drawn inside h (its only consumer, same neurons): 3 clusters, 2 + 3 + 1 nodes
    assert set(clusters) == {"cluster_x", "cluster_h", "cluster_out"}
    assert sorted(nodes) == ["h[0]", "h[1]", "h[2]", "out[0]", "x[0]", "x[1]"]
    assert clusters["cluster_h"]["nodes"] == ["h[0]", "h[1]", "h[2]"]
    assert "dense 4 → relu" in clusters["cluster_h"]["attrs"]["label"]
    assert "neurons 3/4" in clusters["cluster_h"]["attrs"]["label"]
    assert nodes["h[2]"]["label"] == "[2] +1"
    # one edge per member synapse: 4 into h, 3 into out; x[1] -> h[0] counts -1 (red)
    assert len(edges) == 7
    colours = {(u, v): e["color"] for u, v, e in edges}
    assert colours.pop(("x[1]", "h[0]")) == NEGATIVE
    assert set(colours.values()) == {POSITIVE}
    assert ("h[2]", "out[0]") in colours and ("x[0]", "h[1]") not in colours


def test_neuron_view_without_merging_shows_every_tensor(a):
    nodes, edges, clusters = parse_dot(to_dot(a, view="neuron", merge=False))
    assert len(clusters) == 4 and len(nodes) == 9
    assert len(edges) == 7 + 3  # and h -> h/relu, one per member neuron
    assert {e["color"] for u, v, e in edges if u.startswith("h[")} == {"#777777"}


def test_neuron_view_of_a_graph(graph):
    nodes, edges, clusters = parse_dot(to_dot(graph, view="neuron"))
    assert len(nodes) == 2 + 4 + 1 and len(edges) == 2 * 4 + 4 * 1 and len(clusters) == 3


def test_small_slices_default_to_the_neuron_view(a):
    assert view_graph(a).graph["view"] == "neuron"
    assert a.to_dot() == to_dot(a, view="neuron")


@needs_dot
def test_neuron_view_svg(a, tmp_path):
    path = nnslicer.render(a, tmp_path / "a.svg", view="neuron")
    assert path == str(tmp_path / "a.svg")
    drawn, texts, _ = parse_svg(path)
    assert sorted(drawn["node"]) == ["h[0]", "h[1]", "h[2]", "out[0]", "x[0]", "x[1]"]
    assert len(drawn["edge"]) == 7 and "x[1]->h[0]" in drawn["edge"]
    assert sorted(drawn["cluster"]) == ["cluster_h", "cluster_out", "cluster_x"]
    assert "[2] +1" in texts and any("maxnet: slice of 1 sample" in t for t in texts)


def test_neuron_view_of_channel_granularity(cnn, cnn_slicer):
    slicer, x = cnn_slicer
    channel = nnslicer.Slicer(cnn, granularity="channel").fit(x)
    s = channel.slice(x[0])
    v = view_graph(s, view="neuron")
    conv = [n for n, d in v.nodes(data=True) if d.get("cluster") == "cluster_conv"]
    assert conv and all(n.startswith("convch ") for n in conv)
    assert len(conv) == np.count_nonzero(s.neuron_counts["conv"])


def _zoo(granularity):
    """Every family of op in one small graph."""
    keras.utils.set_random_seed(3)
    x = keras.Input((8, 8, 2), name="x")
    a = L.Conv2D(4, 3, padding="same", name="conv")(x)
    a = L.BatchNormalization(name="bn")(a)
    a = L.ReLU(name="relu")(a)
    b = L.ZeroPadding2D(1, name="pad")(x)
    b = L.DepthwiseConv2D(3, name="dw")(b)
    b = L.Conv2D(4, 1, name="proj")(b)
    c = L.Add(name="add")([a, b])
    d = L.Concatenate(name="cat")([L.AveragePooling2D(2, name="avg")(c), L.MaxPooling2D(2, name="max")(c)])
    d = L.Cropping2D(1, name="crop")(d)
    e = L.GlobalAveragePooling2D(name="gap")(d)
    out = L.Dense(3, name="out")(L.Dropout(0.5, name="drop")(e))
    return nnslicer.lift(keras.Model(x, out, name="zoo"), granularity)


@pytest.mark.parametrize("granularity", ["element", "channel"])
def test_wiring_into_some_neurons_equals_the_filtered_full_wiring(granularity):
    g = _zoo(granularity)
    rng = np.random.default_rng(0)
    for op in g.ops[1:]:
        n = g.n_neurons(op.name)
        for out in (np.arange(n), np.sort(rng.choice(n, size=max(1, n // 3), replace=False))):
            want = {(j, int(a), int(b), int(w)) for j, src, dst, syn in g.connections(op.name)
                    for a, b, w in zip(src, dst, syn) if b in set(out.tolist())}
            got = {(j, int(a), int(b), int(w)) for j, src, dst, syn in g.connections(op.name, out)
                   for a, b, w in zip(src, dst, syn)}
            assert got == want, op.name


def test_neuron_view_of_a_zoo_slice_matches_networkx():
    g = _zoo("element")
    s = _random_slice(g, density=0.05)  # same nodes and (neuron pairs of) edges as Slice.to_networkx
    v = view_graph(s, view="neuron", merge=False)
    ref = s.to_networkx(g)
    assert v.number_of_nodes() == ref.number_of_nodes()
    assert v.number_of_edges() == len({(u, w) for u, w in ref.edges()})


# ============================================================================== collapsed view
def test_collapsed_view_of_a_hand_slice(a):
    nodes, edges, clusters = parse_dot(to_dot(a, view="collapsed", top_k=2))
    assert set(clusters) == {"cluster_x", "cluster_h", "cluster_out"}
    # top 2 by |count| (ties: lower index first), then "+N more" for the rest
    assert clusters["cluster_h"]["nodes"] == ["h:n0", "h:n1", "h:more"]
    assert nodes["h:more"]["label"] == "+1 more"
    assert clusters["cluster_x"]["nodes"] == ["x:n0", "x:n1"]
    assert clusters["cluster_out"]["nodes"] == ["out:n0"]
    label = clusters["cluster_h"]["attrs"]["label"]
    assert label.startswith("h\ndense 4 → relu\nneurons 3/4 · synapses 4/8 (net +2)")
    # one edge per pair of op boxes, between clusters; into a dense op: width from the
    # synapses' sum of |count| (4 and 3), colour from the sign of their sum (+2, +3)
    assert [(u, v) for u, v, _ in edges] == [("x:n0", "h:n1"), ("h:n1", "out:n0")]
    (_, _, into_h), (_, _, into_out) = edges
    assert (into_h["ltail"], into_h["lhead"]) == ("cluster_x", "cluster_h")
    assert into_h["color"] == into_out["color"] == POSITIVE
    assert float(into_h["penwidth"]) > float(into_out["penwidth"])


def test_collapsed_edge_colour_follows_the_sign_of_the_synapse_sum(graph):
    s = _slice(graph, {"x": [1, 1], "h": [1, 0, 0, 0], "h/relu": [1, 0, 0, 0], "out": [1]},
               {"h": [[-1, 0, 0, 0], [-1, 0, 0, 0]], "out": [[1], [0], [0], [0]]})
    _, edges, _ = parse_dot(to_dot(s, view="collapsed"))
    assert [e["color"] for _, _, e in edges] == [NEGATIVE, POSITIVE]


def test_collapsed_view_sums_channels_of_element_feature_maps(cnn_slicer):
    slicer, x = cnn_slicer
    s = slicer.slice(x[1])
    v = view_graph(s, view="collapsed", top_k=2)
    conv = s.neuron_counts["conv"]  # 4x4x3, drawn per channel
    per_channel = np.abs(conv).reshape(-1, 3).sum(0)
    shown = [d for n, d in v.nodes(data=True) if d.get("cluster") == "cluster_conv" and "index" in d]
    best = sorted(range(3), key=lambda c: (-per_channel[c], c))[:2]
    assert [d["index"] for d in shown] == [c for c in best if per_channel[c] > 0]
    assert all(d["unit"] == "channel" and d["abs"] == per_channel[d["index"]] for d in shown)
    assert all(d["label"].startswith(f"ch {d['index']}\n") for d in shown)
    # |count| and net count both, unless all its counts share a sign (an abs-aggregated slice's
    # always do): then one number says it
    for d in shown:
        second = f"{d['abs']:,} ({d['count']:+,})" if abs(d["count"]) != d["abs"] else f"{d['count']:+,}"
        assert d["label"] == f"ch {d['index']}\n{second}"
    summed = slicer.slice(x[:5], aggregate="abs")
    labels = [d["label"] for _, d in view_graph(summed, view="collapsed").nodes(data=True)
              if d.get("cluster") == "cluster_conv" and "index" in d]
    assert labels and all("(" not in label for label in labels)
    # a flatten after the pool is drawn in the pool's box; the dense op's edge is weighted
    assert "max_pool 2×2×3 → flatten 12" in v.graph["clusters"]["cluster_pool"]["label"]
    assert "cluster_flat" not in v.graph["clusters"]


def test_collapsed_view_is_the_default_for_big_slices():
    s = _random_slice(nnslicer.lift(models.small_cnn()))  # ~600 neurons in the slice
    assert view_graph(s).graph["view"] == "collapsed"
    s = _random_slice(nnslicer.lift(models.small_cnn()), density=0.02)  # ~40
    assert view_graph(s).graph["view"] == "neuron"


def test_collapsed_view_marks_ops_without_members(graph):
    s = _slice(graph, {"x": [0, 0], "h": [0, 0, 0, 0], "h/relu": [0, 0, 0, 0], "out": [0]},
               {"h": np.zeros((2, 4)), "out": np.zeros((4, 1))})
    nodes, edges, clusters = parse_dot(to_dot(s, view="collapsed"))
    assert {n: d["label"] for n, d in nodes.items()} == {"x:more": "no members", "h:more": "no members",
                                                          "out:more": "no members"}
    assert all(e.get("style") == "dashed" for _, _, e in edges)


@needs_dot
def test_collapsed_view_svg(a, tmp_path):
    path = nnslicer.render(a, tmp_path / "a.svg", view="collapsed", top_k=2)
    drawn, texts, _ = parse_svg(path)
    assert sorted(drawn["node"]) == ["h:more", "h:n0", "h:n1", "out:n0", "x:n0", "x:n1"]
    assert sorted(drawn["edge"]) == ["h:n1->out:n0", "x:n0->h:n1"]
    assert sorted(drawn["cluster"]) == ["cluster_h", "cluster_out", "cluster_x"]
    assert "+1 more" in texts and "neurons 3/4 · synapses 4/8 (net +2)" in texts


# ============================================================================== model view
def test_model_view_highlights_slice_ops(a, graph):
    nodes, edges, clusters = parse_dot(to_dot(a, view="model"))
    assert not clusters and sorted(nodes) == ["h", "out", "x"]
    assert [(u, v) for u, v, _ in edges] == [("x", "h"), ("h", "out")]
    assert "neurons 3/4\nsynapses 4/8" in nodes["h"]["label"]
    assert nodes["h"]["fillcolor"] != "white" and nodes["x"]["fillcolor"] != "white"
    s = _slice(graph, {"x": [0, 0], "h": [1, 0, 0, 0], "h/relu": [1, 0, 0, 0], "out": [1]},
               {"h": np.zeros((2, 4)), "out": [[1], [0], [0], [0]]})
    nodes, _, _ = parse_dot(to_dot(s, view="model"))
    assert nodes["x"]["fillcolor"] == "white" and "neurons 0/2" in nodes["x"]["label"]


def test_model_view_of_a_graph_and_a_keras_model(graph, maxnet):
    nodes, edges, _ = parse_dot(to_dot(graph))
    assert sorted(nodes) == ["h", "out", "x"] and len(edges) == 2
    assert "4 neurons\n8 synapses" in nodes["h"]["label"]
    assert to_dot(maxnet) == to_dot(graph)


def test_long_models_wrap_into_columns_joined_by_connectors():
    g = nnslicer.lift(models.resnet10())
    one = view_graph(g, view="model", wrap=1)
    two = view_graph(g, view="model", wrap=2)
    nodes1, edges1, clusters1 = parse_dot(to_dot(g, view="model", wrap=1))
    nodes2, edges2, clusters2 = parse_dot(to_dot(g, view="model", wrap=2))
    assert not clusters1 and sorted(clusters2) == ["cluster_column_1", "cluster_column_2"]
    # one cut: a "continued" and a "from" node, and one more edge (the cut op to "continued")
    connectors = {n: d["connector"] for n, d in two.nodes(data=True) if "connector" in d}
    assert sorted(connectors.values()) == ["from", "to"]
    assert len(nodes2) == len(nodes1) + 2 and len(edges2) == len(edges1) + 1
    cut = next(n for n, kind in connectors.items() if kind == "from")[:-len(":from")]
    # the cut is a bottleneck: an add, whose every consumer is in column 2
    assert cut.endswith("_add") and all(clusters2["cluster_column_2"]["nodes"].count(v) for u, v, _ in edges1 if u == cut)
    assert one.number_of_nodes() + 2 == two.number_of_nodes()
    # left to right: the columns are ordered by invisible edges between their tops
    assert two.graph["order"] == [("input", f"{cut}:from")]


# ============================================================================== diff view
def test_diff_view_colours_members_by_side(a, b):
    nodes, edges, clusters = parse_dot(to_dot(a, other=b, names=("clean", "adversarial")))
    assert set(clusters) == {"cluster_x", "cluster_h", "cluster_out"}
    # x[0] and h[0] are only in A (orange); x[1], h[1], h[2], out[0] are in both
    assert nodes["x:n0"]["fillcolor"] == ONLY_A_FILL and nodes["h:n0"]["fillcolor"] == ONLY_A_FILL
    assert nodes["h:n1"]["fillcolor"] == BOTH_FILL
    assert nodes["x:n1"]["label"] == "[1]\n1 | 2"
    label = clusters["cluster_h"]["attrs"]["label"]
    assert "neurons of 4: only clean 1 · only adversarial 0 · both 2" in label
    assert "synapses of 8: only clean 2 · only adversarial 0 · both 2" in label
    # both weighted edges have more synapses only in A: orange
    assert [e["color"] for _, _, e in edges] == [ONLY_A, ONLY_A]
    # differing members first: x[0] (only in A) before x[1]
    assert clusters["cluster_x"]["nodes"] == ["x:n0", "x:n1"]
    title = to_dot((a, b), names=("clean", "adversarial"))
    assert "clean vs adversarial" in title and title == to_dot(a, other=b, names=("clean", "adversarial"))


@needs_dot
def test_diff_view_svg(a, b, tmp_path):
    drawn, texts, _ = parse_svg(nnslicer.render((a, b), tmp_path / "d.svg"))
    assert len(drawn["cluster"]) == 3 and len(drawn["node"]) == 6 and len(drawn["edge"]) == 2
    assert any("A vs B" in t for t in texts)


def test_diff_needs_slices_of_one_model(a, cnn_slicer):
    slicer, x = cnn_slicer
    with pytest.raises(InvalidParameterError, match="Cannot compare"):
        to_dot(a, other=slicer.slice(x[0]))
    with pytest.raises(InvalidParameterError, match="other"):
        to_dot(a, view="diff")
    with pytest.raises(InvalidParameterError, match="two Slices"):
        to_dot((a, a, a))


# ============================================================================== DOT text
def test_quoting():
    assert quote('say "hi"') == r'"say \"hi\""'
    assert quote("a\\b") == r'"a\\b"'
    assert quote("two\nlines") == r'"two\nlines"'
    assert quote("left\nlines", newline="\\l") == r'"left\llines\l"'


@needs_dot
def test_odd_op_names_survive_dot(tmp_path):
    name = 'dense "1"\\x'
    ops = [Op("in put", "input", (), (2,)),
           Op(name, "dense", ("in put",), (2,), ((2,),), weights={"kernel": np.eye(2, dtype="float32"),
                                                                  "bias": np.zeros(2, "float32")})]
    g = DataFlowGraph(ops, output=name, name='odd "model"')
    text = to_dot(g, view="neuron")
    nodes, edges, _ = parse_dot(text)
    assert f"{name}[1]" in nodes and len(edges) == 4
    drawn, texts, _ = parse_svg(nnslicer.render(g, tmp_path / "odd.svg"))
    # Graphviz keeps a node ID's backslashes doubled (its <title>) but a label shows one
    assert sorted(drawn["node"]) == sorted(["in put", name.replace("\\", "\\\\")])
    assert name in texts and 'odd "model": 2 ops, 4 neurons, 4 synapses (element granularity)' in texts


def test_view_graph_is_a_networkx_export(a):
    v = view_graph(a, view="collapsed")
    assert v.graph["view"] == "collapsed"
    assert v.nodes["h:n0"]["count"] == 1 and v.nodes["h:n0"]["cluster"] == "cluster_h"
    # edges join the middle boxes of the rows (and are clipped to the clusters)
    assert v.edges["x:n0", "h:n1"]["synapses"] == 4 and v.edges["x:n0", "h:n1"]["count"] == 2


def test_docstring_examples():
    import doctest
    import sys

    result = doctest.testmod(sys.modules["nnslicer.pictures.dot"], optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ============================================================================== files and errors
def test_dot_format_needs_nothing(a, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    path = nnslicer.render(a, tmp_path / "a.dot")
    assert open(path).read() == to_dot(a)
    assert nnslicer.render(a, tmp_path / "a.gv") and (tmp_path / "a.gv").exists()


def test_without_dot_the_dot_file_is_written_and_the_error_says_what_to_install(a, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert shutil.which("dot") is None
    with pytest.raises(MissingDependencyError, match="apt-get install graphviz") as exc:
        nnslicer.render(a, tmp_path / "pic.svg", view="collapsed")
    assert isinstance(exc.value, ImportError) and "pic.dot" in str(exc.value)
    assert not (tmp_path / "pic.svg").exists()
    assert (tmp_path / "pic.dot").read_text() == to_dot(a, view="collapsed")
    assert sorted(os.listdir(tmp_path)) == ["pic.dot"]


@pytest.mark.parametrize("kwargs, message", [
    ({"view": "pretty"}, "'view'"),
    ({"format": "gif"}, "'format'"),
    ({"top_k": -1}, "'top_k'"),
    ({"top_k": True}, "'top_k'"),
    ({"size": (0, 3)}, "'size'"),
    ({"names": ("a",)}, "'names'"),
    ({"dpi": 5}, "'dpi'"),
])
def test_bad_parameters(a, tmp_path, kwargs, message):
    with pytest.raises(InvalidParameterError, match=message):
        nnslicer.render(a, tmp_path / "a.svg", **kwargs)
    assert not os.listdir(tmp_path)


def test_bad_targets(a, graph, tmp_path):
    with pytest.raises(InvalidParameterError, match=r"\.svg, \.png, \.pdf or \.dot"):
        nnslicer.render(a, tmp_path / "a.jpg")
    with pytest.raises(FileNotFoundError, match="No such directory"):
        nnslicer.render(a, tmp_path / "nope" / "a.dot")
    with pytest.raises(InvalidParameterError, match="takes a Slice"):
        nnslicer.render(42, tmp_path / "a.svg")
    with pytest.raises(InvalidParameterError, match="collapsed"):
        to_dot(graph, view="collapsed")
    assert not os.listdir(tmp_path)


def test_neuron_view_refuses_big_models_and_points_to_collapsed(cnn_slicer):
    big = nnslicer.lift(models.small_cnn())
    with pytest.raises(InvalidParameterError, match="2,068 neurons.*'collapsed' view.*--max-nodes"):
        to_dot(big, view="neuron")
    slicer, x = cnn_slicer
    s = slicer.slice(x[:20], aggregate="abs")
    with pytest.raises(InvalidParameterError, match="collapsed"):
        to_dot(s, view="neuron", max_nodes=20)
    with pytest.raises(InvalidParameterError, match="edges"):
        to_dot(s, view="neuron", max_edges=10)


def test_a_loaded_slice_needs_its_model(a, maxnet, cnn, tmp_path):
    loaded = Slice.load(a.save(tmp_path / "a.npz"))
    with pytest.raises(InvalidParameterError, match="pass model=.*--model"):
        loaded.to_dot()
    assert loaded.to_dot(model=maxnet) == a.to_dot()
    assert loaded.to_dot(graph=nnslicer.lift(maxnet)) == a.to_dot()
    with pytest.raises(InvalidParameterError, match="another model"):
        loaded.to_dot(model=cnn)


# ============================================================================== command line
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, maxnet, a, b):
    d = tmp_path_factory.mktemp("render")
    maxnet.save(d / "maxnet.keras")
    a.save(d / "clean.npz")
    b.save(d / "adversarial.npz")
    return d


@needs_dot
def test_cli_render(cli_files, tmp_path, capsys):
    d = cli_files
    out = tmp_path / "a.svg"
    assert main(["render", str(d / "clean.npz"), "--model", str(d / "maxnet.keras"), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    drawn, _, _ = parse_svg(out)
    assert len(drawn["node"]) == 6 and len(drawn["edge"]) == 7  # the neuron view
    assert main(["render", str(d / "clean.npz"), "--model", str(d / "maxnet.keras"), "--view", "neuron",
                 "--max-nodes", "6", "--max-edges", "7", "-o", str(out)]) == 0  # the limits are inclusive

    out = tmp_path / "d.svg"
    assert main(["render", str(d / "clean.npz"), "--other", str(d / "adversarial.npz"), "--model",
                 str(d / "maxnet.keras"), "--top-k", "1", "-o", str(out)]) == 0
    drawn, texts, _ = parse_svg(out)
    assert len(drawn["cluster"]) == 3 and any("clean vs adversarial" in t for t in texts)

    out = tmp_path / "m.png"
    assert main(["render", str(d / "maxnet.keras"), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    out = tmp_path / "c.pdf"
    assert main(["render", str(d / "clean.npz"), "--model", str(d / "maxnet.keras"), "--view",
                 "collapsed", "-o", str(out)]) == 0
    assert out.read_bytes()[:4] == b"%PDF"


def test_cli_render_dot_and_help(cli_files, tmp_path, capsys):
    out = tmp_path / "a.dot"
    assert main(["render", str(cli_files / "clean.npz"), "--model", str(cli_files / "maxnet.keras"),
                 "--view", "model", "-o", str(out)]) == 0
    nodes, _, _ = parse_dot(out.read_text())
    assert sorted(nodes) == ["h", "out", "x"]
    with pytest.raises(SystemExit) as exc:
        main(["render", "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    assert "collapsed" in help_text and "apt-get install graphviz" in help_text and "examples:" in help_text


@pytest.mark.parametrize("case, message", [
    ("no_model", "--model"),
    ("diff_without_other", "--other"),
    ("other_model", "another model"),
    ("bad_extension", ".svg, .png"),
    ("missing_slice", "No such nnslicer slice file"),
    ("bad_top_k", "--top-k"),
    ("max_nodes", "--max-nodes"),
    ("no_dot", "apt-get install graphviz"),
])
def test_cli_render_errors_exit_2(cli_files, tmp_path, capsys, monkeypatch, case, message):
    d = cli_files
    cnn_path = tmp_path / "cnn.keras"
    args = ["render", str(d / "clean.npz"), "--model", str(d / "maxnet.keras")]
    out = tmp_path / "out.svg"
    if case == "no_model":
        args = args[:2]
    elif case == "diff_without_other":
        args += ["--view", "diff"]
    elif case == "other_model":
        keras.Sequential([keras.Input((2,)), L.Dense(1)], name="maxnet").save(cnn_path)
        args[-1] = str(cnn_path)
    elif case == "bad_extension":
        out = tmp_path / "out.txt"
    elif case == "missing_slice":
        args[1] = str(tmp_path / "nope.npz")
    elif case == "bad_top_k":
        args += ["--top-k", "-2"]
    elif case == "max_nodes":  # the neuron view of clean.npz has 6 neurons
        args += ["--view", "neuron", "--max-nodes", "5"]
    elif case == "no_dot":
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(args + ["-o", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
    left = sorted(f for f in os.listdir(tmp_path) if f != "cnn.keras")
    assert left == (["out.dot"] if case == "no_dot" else [])


# ============================================================================== demo
def test_demo_writes_a_picture_and_survives_without_dot(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    with monkeypatch.context() as m:
        m.setenv("PATH", str(tmp_path / "empty"))
        assert main(["demo", "--out", str(out), "--samples", "2"]) == 0
    text = capsys.readouterr().out
    assert "no picture" in text and "apt-get install graphviz" in text
    assert (out / "slice.dot").exists() and not (out / "slice.svg").exists()
    if not HAVE_DOT:
        return
    assert main(["demo", "--out", str(out), "--samples", "2"]) == 0
    assert f"wrote {out / 'slice.svg'}" in capsys.readouterr().out
    drawn, texts, _ = parse_svg(out / "slice.svg")
    # small_cnn: input, conv1(+relu), pool1, conv2(+relu, flatten), fc1(+relu), predictions(+softmax)
    assert sorted(drawn["cluster"]) == sorted(f"cluster_{n}" for n in
                                              ("input", "conv1", "pool1", "conv2", "fc1", "predictions"))
    assert len(drawn["edge"]) == 5 and any(t.startswith("small_cnn: slice of 1 sample") for t in texts)


# ============================================================================== big models
def _random_slice(graph, seed=0, density=0.3):
    """A slice with the graph's shapes and random counts (no slicing needed)."""
    rng = np.random.default_rng(seed)

    def counts(shape, d):
        return (rng.integers(-3, 4, size=shape) * (rng.random(shape) < d)).astype(np.int64)

    return Slice({op.name: counts(graph.neuron_shape(op.name), density) for op in graph.ops},
                 {n: counts(graph[n].synapse_shape, density / 5) for n in graph.weighted_ops},
                 graph=graph, model=graph.name, fingerprint=graph.fingerprint,
                 granularity=graph.granularity)


@pytest.fixture(scope="module")
def resnet18_graph():
    keras.utils.set_random_seed(0)
    return nnslicer.lift(models.resnet18())


def _check_bounded(path, png, size=(16, 10)):
    drawn, texts, attrs = parse_svg(path)
    width, height = (float(attrs[k].rstrip("pt")) for k in ("width", "height"))
    assert width <= size[0] * 72 + 1 and height <= size[1] * 72 + 1
    dims = subprocess.run(["file", str(png)], capture_output=True, text=True).stdout
    w, h = map(int, re.search(r"(\d+) x (\d+)", dims).groups())
    assert w <= size[0] * 96 + 2 and h <= size[1] * 96 + 2
    return drawn


@needs_dot
def test_a_resnet18_slice_renders_collapsed_quickly_into_a_screen(resnet18_graph, tmp_path):
    s = _random_slice(resnet18_graph)
    start = time.perf_counter()
    svg = nnslicer.render(s, tmp_path / "r18.svg")  # collapsed: far too many neurons for one node each
    png = nnslicer.render(s, tmp_path / "r18.png")
    elapsed = time.perf_counter() - start
    assert elapsed < 30
    drawn = _check_bounded(svg, png)
    groups = [c for c in drawn["cluster"] if not c.startswith("cluster_column_")]
    # 69 ops drawn as 31 boxes: batch norms and activations inside their producers
    assert len(groups) == 31 and "cluster_stage4_block2_add" in groups
    assert len(drawn["node"]) <= 31 * 6 + 2 * 3
    assert os.path.getsize(svg) < 1_000_000


@needs_dot
def test_a_sparse_slice_of_a_big_model_draws_at_neuron_level_quickly(resnet18_graph, tmp_path):
    s = _random_slice(resnet18_graph, seed=2, density=2e-5)  # some 40 neurons of 2 million
    start = time.perf_counter()
    svg = nnslicer.render(s, tmp_path / "sparse.svg")
    assert time.perf_counter() - start < 10
    assert view_graph(s).graph["view"] == "neuron"
    drawn, _, _ = parse_svg(svg)
    assert 0 < len(drawn["node"]) == view_graph(s).number_of_nodes() < 100


@needs_dot
def test_a_resnet18_model_view_fits_a_screen(resnet18_graph, tmp_path):
    s = _random_slice(resnet18_graph, seed=1)
    drawn = _check_bounded(nnslicer.render(s, tmp_path / "m.svg", view="model"),
                           nnslicer.render(s, tmp_path / "m.png", view="model"))
    assert len([n for n in drawn["node"] if not n.endswith((":from", ":continued"))]) == 31


@needs_dot
def test_a_resnet10_diff_renders(tmp_path):
    keras.utils.set_random_seed(0)
    g = nnslicer.lift(models.resnet10(), "channel")
    a, b = _random_slice(g, 0), _random_slice(g, 1)
    drawn = _check_bounded(nnslicer.render((a, b), tmp_path / "d.svg"), nnslicer.render((a, b), tmp_path / "d.png"))
    assert "cluster_block4_add" in drawn["cluster"]


@pytest.mark.slow
@needs_dot
def test_a_real_resnet18_element_slice_renders_collapsed_in_seconds(resnet18_graph, tmp_path):
    keras.utils.set_random_seed(0)
    model = models.resnet18()
    x = np.random.default_rng(0).normal(size=(32, 32, 32, 3)).astype("float32")
    s = nnslicer.Slicer(model).fit(x).slice(x[0])  # about a minute
    start = time.perf_counter()
    svg = nnslicer.render(s, tmp_path / "r18.svg", view="collapsed")
    png = nnslicer.render(s, tmp_path / "r18.png", view="collapsed")
    assert time.perf_counter() - start < 30
    _check_bounded(svg, png)


# ============================================================================== Jupyter
@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")
def test_slices_and_graphs_show_as_pictures_in_jupyter(a, graph, tmp_path, monkeypatch):
    """Jupyter shows a Slice as its collapsed view and a graph as its model view, the same
    pictures render() draws; without Graphviz, or for a slice without its graph, it falls back
    to the text repr (None)."""
    svg = a._repr_svg_()
    path = tmp_path / "a.svg"
    path.write_text(svg)
    assert parse_svg(path) == parse_svg(nnslicer.render(a, tmp_path / "b.svg", view="collapsed"))
    model_svg = graph._repr_svg_()
    assert model_svg.lstrip().startswith("<?xml") and "maxnet" in model_svg
    assert Slice(a.neuron_counts, a.synapse_counts, model=a.model, fingerprint=a.fingerprint,
                 granularity=a.granularity, samples=1)._repr_svg_() is None
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert a._repr_svg_() is None and graph._repr_svg_() is None


# ============================================================================== input view
def test_input_view_draws_the_counts_on_the_image(cnn, cnn_slicer, tmp_path):
    """A hand-made slice of the 6x6x1 CNN: the heat map holds exactly its input counts (summed
    over channels), on a colour scale symmetric about zero over the grey image; with a second
    slice, the difference. Refused: a slice without its graph, channel granularity."""
    pytest.importorskip("matplotlib")
    from nnslicer.pictures import input_counts, plot_input

    graph = nnslicer.lift(cnn)
    counts = np.zeros((6, 6, 1), np.int64)
    counts[1, 2, 0], counts[4, 4, 0], counts[0, 5, 0] = 3, -2, 1
    neurons = {op.name: np.zeros(op.shape, np.int64) for op in graph.ops}
    neurons["image"] = counts
    synapses = {name: np.zeros(graph[name].synapse_shape, np.int64) for name in graph.weighted_ops}
    meta = dict(model=graph.name, fingerprint=graph.fingerprint, granularity="element", samples=1)
    s = Slice(neurons, synapses, graph=graph, **meta)
    np.testing.assert_array_equal(input_counts(s), counts[..., 0])
    x = np.linspace(0, 1, 36, dtype="float32").reshape(1, 6, 6, 1)
    fig, ax = plot_input(s, x)
    grey, heat = ax.get_images()
    np.testing.assert_array_equal(heat.get_array(), counts[..., 0])
    np.testing.assert_allclose(grey.get_array(), x[0, ..., 0])
    assert heat.get_clim() == (-3.0, 3.0) and "input used by a slice of 1 sample" in ax.get_title()
    named = Slice(neurons, synapses, graph=graph, **meta, targets=[3])
    _, ax = plot_input(named, class_names=[f"k{i}" for i in range(graph.num_outputs)])
    assert ax.get_title().endswith("1 sample, output 3 (k3)")
    t = Slice({**neurons, "image": 2 * counts}, synapses, graph=graph, **meta)
    _, ax = plot_input(s, other=t)
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), -counts[..., 0])
    fig.savefig(tmp_path / "input.png")
    assert (tmp_path / "input.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InvalidParameterError, match="needs its model's graph"):
        plot_input(Slice(neurons, synapses, **meta))
    np.testing.assert_array_equal(input_counts(Slice(neurons, synapses, **meta), model=cnn), counts[..., 0])
    with pytest.raises(nnslicer.InvalidInputError, match="one image of 6x6"):
        plot_input(s, np.zeros((2, 6, 6, 1)))
    slicer, data = cnn_slicer
    channel = nnslicer.Slicer(cnn, granularity="channel").fit(data).slice(data[0])
    with pytest.raises(nnslicer.InvalidInputError, match="element granularity"):
        plot_input(channel)


def test_cli_input_view(cnn, cnn_slicer, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from nnslicer.cli import main

    slicer, x = cnn_slicer
    cnn.save(tmp_path / "m.keras")
    slicer.slice(x[0]).save(tmp_path / "s.npz")
    slicer.slice(x[1]).save(tmp_path / "t.npz")
    np.save(tmp_path / "x0.npy", x[0])
    base = ["render", str(tmp_path / "s.npz"), "--model", str(tmp_path / "m.keras"), "--view", "input"]
    names = ",".join(f"kind{i}" for i in range(cnn.output_shape[-1]))
    assert main(base[:4] + ["--view", "collapsed", "--class-names", names, "-o", str(tmp_path / "c.dot")]) == 0
    target = slicer.slice(x[0]).targets[0]
    assert f"output {target} (kind{target})" in (tmp_path / "c.dot").read_text()
    assert main(base[:4] + ["--class-names", "a,b", "-o", str(tmp_path / "c2.dot")]) == 2
    assert f"{cnn.output_shape[-1]} classes, but 2 class names" in capsys.readouterr().err
    assert main(base + ["--image", str(tmp_path / "x0.npy"), "-o", str(tmp_path / "in.png")]) == 0
    assert (tmp_path / "in.png").read_bytes()[:4] == b"\x89PNG"
    assert main(base + ["--other", str(tmp_path / "t.npz"), "-o", str(tmp_path / "diff.svg")]) == 0
    assert b"<svg" in (tmp_path / "diff.svg").read_bytes()
    capsys.readouterr()
    assert main(base + ["-o", str(tmp_path / "in.dot")]) == 2
    assert "--view input writes .svg, .png or .pdf" in capsys.readouterr().err
    assert main(["render", str(tmp_path / "s.npz"), "--model", str(tmp_path / "m.keras"), "--image",
                 str(tmp_path / "x0.npy"), "-o", str(tmp_path / "c.svg")]) == 2
    assert "--image goes with --view input" in capsys.readouterr().err
    assert main(["render", str(tmp_path / "s.npz"), "--view", "input", "-o", str(tmp_path / "n.png")]) == 2
    assert "--model MODEL.keras" in capsys.readouterr().err and not (tmp_path / "n.png").exists()


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")
def test_model_view_arrowheads_leave_op_names_clear(tmp_path):
    """Into each box of the model view, the arrowhead (its outline included: thick arrows carry
    a wide stroke) ends above the top of the box's first line, the op's name."""
    s = _random_slice(nnslicer.lift(models.small_cnn()))
    root = ET.parse(nnslicer.render(s, tmp_path / "m.svg", view="model")).getroot()
    first_line = {}  # node -> (baseline y, font size) of its first text line
    for g in root.iter(SVG + "g"):
        if g.get("class") == "node":
            text = next(g.iter(SVG + "text"))
            first_line[g.find(SVG + "title").text] = (float(text.get("y")), float(text.get("font-size")))
    checked = 0
    for g in root.iter(SVG + "g"):
        head = next(g.iter(SVG + "polygon"), None) if g.get("class") == "edge" else None
        if head is None:
            continue
        lowest = max(float(p.split(",")[1]) for p in head.get("points").split())
        stroke = float(head.get("stroke-width", 1))
        baseline, size = first_line[g.find(SVG + "title").text.split("->")[1]]
        assert lowest + stroke / 2 < baseline - 0.75 * size  # y grows downwards; 0.75 em: a capital's height
        checked += 1
    assert checked >= 4
