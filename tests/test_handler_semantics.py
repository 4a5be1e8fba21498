"""What an op kind means lives in its handler (issue 17, item 3): pruning, compression and the
pictures ask the handler (channel-wise, its per-channel weights, follower, which kernel axes
read and make channels), so a layer a user registers works in all of them with no edit
elsewhere. A hand-written table pins each built-in kind's answers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

import nnslicer  # noqa: E402
from nnslicer import Op  # noqa: E402
from nnslicer.ops import HANDLERS, Handler, RouteHandler, get_handler  # noqa: E402

from analyses import compression, pruning  # noqa: E402
from analyses.pruning import class_focused_prune  # noqa: E402

L = keras.layers


# --------------------------------------------------------------------------- built-in kinds
def _op(kind, shape=(4, 4, 8), input_shapes=((4, 4, 8),), **params):
    return Op(name="o", kind=kind, inputs=tuple(f"i{j}" for j in range(len(input_shapes))), shape=shape,
              input_shapes=input_shapes, params=params)


BN = ("gamma", "beta", "moving_mean", "moving_variance")
#: (op, channelwise, follower, channel_weights, silencing_weights, channel_axes, flattened_channels)
EXPECTED = [
    (_op("input", input_shapes=()), False, False, (), (), (None, None), None),
    (_op("dense", (5,), ((7,),)), False, False, (), (), (0, 1), None),
    (_op("dense", (4, 4, 5)), False, False, (), (), (0, 1), None),                  # at each position
    (_op("conv2d"), False, False, (), (), (-2, -1), None),
    (_op("conv2d", groups=2), False, False, (), (), (None, None), None),  # a group's channels go together
    (_op("depthwise_conv2d"), False, False, (), (), (None, None), None),
    (_op("scale"), True, False, ("kernel",), ("kernel",), (None, None), None),     # LayerScale: synapses
    (_op("avg_pool", (2, 2, 8)), True, False, (), (), (None, None), None),
    (_op("max_pool", (2, 2, 8)), True, False, (), (), (None, None), None),
    (_op("global_avg_pool", (8,)), True, False, (), (), (None, None), None),
    (_op("global_max_pool", (8,)), True, False, (), (), (None, None), None),
    (_op("activation", activation="relu"), True, True, (), (), (None, None), None),
    (_op("activation", activation="leaky_relu", negative_slope=0.1), True, True, (), (), (None, None), None),
    (_op("activation", (10,), ((10,),), activation="softmax"), False, True, (), (), (None, None), None),
    (_op("batch_norm", epsilon=1e-3), True, True, BN, ("gamma", "beta"), (None, None), None),
    (_op("layer_norm", epsilon=1e-3, rms_scaling=False), False, True, (), (), (None, None), None),
    (_op("constant", steps=[["add", "c"]]), True, True, (), (), (None, None), None),
    (_op("identity"), True, True, (), (), (None, None), None),
    (_op("reshape", (128,)), False, True, (), (), (None, None), 8),                   # Flatten
    (_op("reshape", (8,), ((1, 1, 8),)), True, True, (), (), (None, None), 8),       # Flatten of 1x1
    (_op("reshape", (1, 1, 8), ((8,),)), True, True, (), (), (None, None), None),    # keepdims pooling
    (_op("reshape", (2, 8, 8)), True, True, (), (), (None, None), None),             # last axis kept
    (_op("reshape", (4, 32)), False, True, (), (), (None, None), None),
    (_op("zero_padding", (6, 6, 8), padding=[[1, 1], [1, 1]]), True, False, (), (), (None, None), None),
    (_op("cropping", (2, 2, 8), cropping=[[1, 1], [1, 1]]), True, False, (), (), (None, None), None),
    (_op("add", input_shapes=((4, 4, 8),) * 2), False, False, (), (), (None, None), None),
    (_op("subtract", input_shapes=((4, 4, 8),) * 2), False, False, (), (), (None, None), None),
    (_op("multiply", input_shapes=((4, 4, 8), (8,))), False, False, (), (), (None, None), None),
    (_op("concatenate", (4, 4, 16), ((4, 4, 8),) * 2, axis=2), False, False, (), (), (None, None), None),
    (_op("upsample", (8, 8, 8), size=[2, 2]), True, False, (), (), (None, None), None),
    (_op("softmax", (4, 4, 2), ((4, 4, 2),), axis=1), True, True, (), (), (None, None), None),  # over keys
    (_op("softmax", (4, 4, 2), ((4, 4, 2),), axis=2), False, True, (), (), (None, None), None),
    (_op("matmul", (4, 4, 2), ((4, 8), (4, 8)), contract="features", heads=2), False, False, (), (),
     (None, None), None),
    (_op("slice", (4,), ((16,),), axis=0, start=4, stop=8), False, False, (), (), (None, None), None),  # a gate
    (_op("slice", (8,), ((6, 8),), axis=0, start=2, stop=3, squeeze=True), False, False, (), (), (None, None),
     None),  # a time step
    (_op("slice", (2, 8), ((6, 8),), axis=0, start=2, stop=4), True, False, (), (), (None, None), None),
    (_op("stack", (3, 8), ((8,),) * 3), False, False, (), (), (None, None), None),
    (_op("embedding", (6, 8), ((6,),)), False, False, (), (), (None, None), None),
    (_op("mask", (6,), ((6,),), value=0.0), False, False, (), (), (None, None), None),
    (_op("select", (8,), ((1,), (8,), (8,))), False, False, (), (), (None, None), None),
]


@pytest.mark.parametrize("op, channelwise, follower, channel_weights, silencing, axes, flattened", EXPECTED,
                         ids=[f"{e[0].kind}-{i}" for i, e in enumerate(EXPECTED)])
def test_each_built_in_kind_says_what_it_means(op, channelwise, follower, channel_weights, silencing, axes,
                                               flattened):
    h = op.handler
    assert h.is_channelwise(op) is channelwise
    assert h.follower is follower
    assert tuple(h.channel_weights) == channel_weights
    assert tuple(h.silencing_weights) == silencing and set(silencing) <= set(channel_weights)
    assert h.channel_axes(op) == axes
    assert h.flattened_channels(op) == flattened


def test_the_table_covers_every_built_in_kind():
    builtin = {kind for kind, h in HANDLERS.items() if type(h).__module__.startswith("nnslicer.ops")}
    assert builtin == {e[0].kind for e in EXPECTED}


def test_a_new_handler_starts_conservative():
    class Mine(Handler):
        kind = "mine"

    h, op = Mine(), _op("mine")
    assert (h.is_channelwise(op), h.follower, h.channel_weights, h.silencing_weights) == (False, False, (), ())
    assert h.channel_axes(op) == (None, None) and h.flattened_channels(op) is None


# --------------------------------------------------------------------------- a user's layer
class Scale(L.Layer):
    """A learned per-channel scale: ``x * scale``."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


class ScaleHandler(RouteHandler):
    """Each neuron's count goes to the same neuron (as batch norm's); its weight is per channel
    and, zero, silences the channel; drawn in its producer's box."""

    kind = "test_scale"
    channelwise = True
    channel_weights = ("scale",)
    silencing_weights = ("scale",)
    follower = True

    def forward(self, op, inputs):
        return inputs[0] * op.weights["scale"]

    def route(self, op, granularity, out):
        return [(0, np.arange(len(out)), out)]


def _lift_scale(layer, ctx):
    return [ctx.op("test_scale", weights={"scale": np.asarray(layer.scale.numpy(), np.float32)}, layer=layer)]


@pytest.fixture
def scale_registered():
    """Scale registered with the lifter and its handler with the engine, both removed after."""
    from nnslicer.keras.lifting import LIFTERS

    nnslicer.register_layer(Scale, _lift_scale)
    handler = nnslicer.register_handler(ScaleHandler())
    try:
        yield handler
    finally:
        LIFTERS.pop(Scale, None)
        HANDLERS.pop("test_scale", None)


def scaled_cnn(seed=0):
    """image -> c1 (4 filters) -> s (Scale) -> r (ReLU) -> c2 (6) -> gap -> out (3, softmax)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 1), name="image")
    x = L.Conv2D(4, 3, padding="same", name="c1")(inp)
    x = Scale(name="s")(x)
    x = L.ReLU(name="r")(x)
    x = L.Conv2D(6, 3, padding="same", name="c2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, L.Dense(3, activation="softmax", name="out")(x), name="scaled")
    model.get_layer("s").set_weights([np.array([0.5, 2.0, -1.0, 1.5], np.float32)])
    return model


@pytest.fixture
def scaled(scale_registered):
    model = scaled_cnn()
    x = np.random.default_rng(0).uniform(size=(40, 6, 6, 1)).astype("float32")
    y = model.predict(x, verbose=0).argmax(1)
    return model, x, y, nnslicer.Slicer(model).fit(x, y)


def test_the_registered_layer_lifts_and_slices(scaled):
    model, x, y, slicer = scaled
    graph = slicer.graph_
    assert [op.kind for op in graph.ops] == ["input", "conv2d", "test_scale", "activation", "conv2d",
                                             "global_avg_pool", "dense", "activation"]
    assert graph["s"].handler is get_handler("test_scale")
    s = slicer.slice(x[0])
    assert np.array_equal(s.neuron_counts["s"] != 0, s.neuron_counts["r"] != 0)  # same index, through relu


def test_pruning_removes_channels_through_the_registered_layer(scaled, monkeypatch):
    model, x, y, slicer = scaled
    classes = [int(y[0])]
    small, pruned_report = class_focused_prune(model, slicer, x, y, classes, 0.5, method="channel")
    masked, _ = class_focused_prune(model, slicer, x, y, classes, 0.5, method="channel", remove=False)
    report = {r.name: r for r in pruned_report.layers}
    assert report["c1"].removable and report["c1"].removed_units == 2
    assert small.get_layer("c1").filters == 2
    assert small.get_layer("s").get_weights()[0].shape == (2,)     # its per-channel weight went with them
    assert small.get_layer("c2").get_weights()[0].shape == (3, 3, 2, 3)
    np.testing.assert_allclose(small.predict(x, verbose=0), masked.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    kept = np.abs(model.get_layer("c1").get_weights()[0]).reshape(-1, 4).sum(0).argsort()[2:]
    np.testing.assert_array_equal(small.get_layer("s").get_weights()[0],
                                  model.get_layer("s").get_weights()[0][np.sort(kept)])
    # what the handler says is what pruning does: not channel-wise, c1's channels stay (masked)
    monkeypatch.setattr(ScaleHandler, "channelwise", False)
    _, _, plans = pruning.prune_masks(slicer.graph_, None, 0.5, "channel")
    assert "c1" not in plans and "c2" in plans


def test_render_draws_the_registered_follower_in_its_producers_box(scaled, monkeypatch):
    from nnslicer.pictures import view_graph

    model, x, y, slicer = scaled
    s = slicer.slice(x[0])
    v = view_graph(s, view="collapsed")
    assert v.graph["clusters"]["cluster_c1"]["tooltip"] == "c1 → s → r"
    assert "cluster_s" not in v.graph["clusters"]
    assert "c1\nconv2d 6×6×4 → test_scale → relu" in v.graph["clusters"]["cluster_c1"]["label"]
    m = view_graph(s, view="model")
    assert m.nodes["c1"]["ops"] == ["c1", "s", "r"] and "s" not in m
    monkeypatch.setattr(ScaleHandler, "follower", False)
    v = view_graph(s, view="collapsed")
    assert v.graph["clusters"]["cluster_c1"]["tooltip"] == "c1"
    assert v.graph["clusters"]["cluster_s"]["tooltip"] == "s → r"


def test_compression_silences_the_registered_layer(scale_registered, monkeypatch):
    model = scaled_cnn()
    gone = np.zeros(4, bool)
    gone[np.abs(model.get_layer("c1").get_weights()[0]).reshape(-1, 4).sum(0).argsort()[:2]] = True
    pruned, _ = compression.structured_prune(model, {"c1": 0.5})
    scale = pruned.get_layer("s").get_weights()[0]
    assert np.all(scale[gone] == 0)
    np.testing.assert_array_equal(scale[~gone], model.get_layer("s").get_weights()[0][~gone])
    out = keras.Model(pruned.inputs, pruned.get_layer("s").output)
    x = np.random.default_rng(1).uniform(size=(4, 6, 6, 1)).astype("float32")
    assert np.all(out.predict(x, verbose=0)[..., gone] == 0)
    # a handler without silencing weights: the layer is left alone
    monkeypatch.setattr(ScaleHandler, "silencing_weights", ())
    pruned, _ = compression.structured_prune(model, {"c1": 0.5})
    np.testing.assert_array_equal(pruned.get_layer("s").get_weights()[0], model.get_layer("s").get_weights()[0])


def test_compression_silences_a_layer_scale_whose_variable_has_another_name():
    """The lift names LayerScale's factor 'kernel' (its synapses); Keras names it 'variable':
    the variable is the one that holds the op's array."""
    class LayerScale(L.Layer):  # as ConvNeXt's: an unnamed per-channel factor
        def build(self, input_shape):
            self.gamma = self.add_weight(shape=(input_shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.gamma

    keras.utils.set_random_seed(0)
    inp = keras.Input((5, 5, 2))
    x = LayerScale(name="ls")(L.Conv2D(4, 3, name="c1")(inp))
    model = keras.Model(inp, L.Dense(3, name="out")(L.Dense(4, name="h")(L.GlobalAveragePooling2D()(x))))
    model.get_layer("ls").set_weights([np.array([0.5, 2.0, 1.5, 3.0], np.float32)])
    assert nnslicer.lift(model)["ls"].kind == "scale"
    gone = np.zeros(4, bool)
    gone[np.abs(model.get_layer("c1").get_weights()[0]).reshape(-1, 4).sum(0).argsort()[:2]] = True
    gamma = compression.structured_prune(model, {"c1": 0.5})[0].get_layer("ls").get_weights()[0]
    assert np.all(gamma[gone] == 0) and np.array_equal(gamma[~gone], np.array([0.5, 2.0, 1.5, 3.0])[~gone])


def test_registrations_are_gone_after_the_fixture():
    from nnslicer.keras.lifting import LIFTERS

    assert Scale not in LIFTERS and "test_scale" not in HANDLERS


# --------------------------------------------------------------------------- big pictures stay readable
def cells(n=80):
    """A NASNet-like chain without bottlenecks: cell ``i`` reads the outputs of cells ``i-1``
    and ``i-2``, so two tensors cross every cut."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,), name="x")
    prev, cur = inp, L.Dense(4, name="stem")(inp)
    for i in range(n):
        a, b = L.Dense(4, name=f"a{i}")(cur), L.Dense(4, name=f"b{i}")(prev)
        prev, cur = cur, L.Add(name=f"add{i}")([a, b])
    return keras.Model(inp, L.Dense(2, name="out")(cur), name="cells")


@pytest.fixture(scope="module")
def cells_graph():
    return nnslicer.lift(cells())


def _column_of(v, node):
    return v.nodes[node]["cluster"]


def test_a_graph_without_bottlenecks_wraps_into_columns_joined_per_crossing_tensor(cells_graph):
    from nnslicer.pictures import view_graph

    one = view_graph(cells_graph, view="model", wrap=1)
    v = view_graph(cells_graph, view="model")
    columns = sorted(c for c in v.graph["clusters"] if c.startswith("cluster_column_"))
    assert len(columns) >= 3  # not one column some hundred inches tall
    connectors = {n: d for n, d in v.nodes(data=True) if "connector" in d}
    assert any(sum(1 for d in connectors.values() if d["connector"] == "from" and d["column"] == k) >= 2
               for k in range(2, len(columns) + 1))  # two tensors cross into a column
    for a, b, d in v.edges(data=True):  # every drawn edge stays in its column
        assert _column_of(v, a) == _column_of(v, b)
    source = {}
    for n, d in connectors.items():
        if d["connector"] == "from":
            src = n.split("@")[0].rsplit(":", 1)[0]
            assert d["label"] == f"from {src} ({_column_of(v, src)[len('cluster_'):].replace('_', ' ')})"
            assert v.has_edge(src, f"{src}:continued") and _column_of(v, f"{src}:continued") == _column_of(v, src)
            source[n] = src
    # the same tensors reach the same ops as in one column
    wired = {(source.get(a, a), b) for a, b, d in v.edges(data=True) if not d.get("connector")}
    assert wired == set(one.edges())
    # left to right: one top per column, the input's group, then a "from" connector in each later column
    tops = [v.graph["order"][0][0]] + [t for _, t in v.graph["order"]]
    assert tops[0] == "x" and [_column_of(v, t) for t in tops] == columns
    assert all(connectors[t]["connector"] == "from" for t in tops[1:])


def _svg_scale(path):
    import re

    text = open(path, encoding="utf-8").read()
    width, height = (float(re.search(rf'{k}="([\d.]+)pt"', text).group(1)) for k in ("width", "height"))
    return float(re.search(r'transform="scale\(([\d.]+)', text).group(1)), width / 72, height / 72


@pytest.mark.skipif(__import__("shutil").which("dot") is None, reason="Graphviz's dot is not installed")
def test_a_big_picture_keeps_its_text_readable_in_the_screens_proportions(cells_graph, tmp_path):
    from nnslicer.pictures import MIN_SCALE

    scale, width, height = _svg_scale(nnslicer.render(cells_graph, tmp_path / "cells.svg"))
    assert scale >= 0.85 * MIN_SCALE  # the estimate of the layout's size is within some 10%
    assert (width > 16 or height > 10) and 1.0 <= width / height <= 2.6  # bigger than the screen, not a strip
    scale, width, height = _svg_scale(nnslicer.render(cells_graph, tmp_path / "fit.svg", min_scale=0))
    assert scale < MIN_SCALE and width <= 16 + 0.01 and height <= 10 + 0.01  # min_scale=0: the screen, always
    with pytest.raises(nnslicer.InvalidParameterError, match="'min_scale'"):
        nnslicer.render(cells_graph, tmp_path / "bad.svg", min_scale=2)
