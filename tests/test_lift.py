"""Lifting Keras models into a DataFlowGraph, checked against Keras itself.

For every supported layer, a small model with random weights is lifted and
``nnslicer.forward.execute(graph, x)[tensor]`` must equal what Keras computes for that layer
(a probe ``keras.Model(model.input, [layer outputs])``), and the graph's output must equal
``model.predict``. Then the graph's structure (kinds, fused activations split in two ops,
logits, wiring, sizes at both granularities, fingerprint, neuron-level views, summary), and
the models nnslicer refuses, with one error naming every problem.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import nnslicer  # noqa: E402
from nnslicer import InvalidParameterError, NNSlicerError, UnsupportedLayerError  # noqa: E402

keras = pytest.importorskip("keras")
from nnslicer.forward import execute  # noqa: E402

L = keras.layers
RTOL = ATOL = 1e-5


# ------------------------------------------------------------------------------------ helpers
def _randomize(model, seed):
    """Random weights everywhere: biases and batch-norm statistics too (variances > 0)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for var, w in zip(layer.weights, layer.get_weights()):
            name = var.name.split("/")[-1]
            if name == "moving_variance":
                v = rng.uniform(0.5, 2.0, w.shape)
            elif name == "gamma":
                v = rng.uniform(0.5, 1.5, w.shape)
            else:
                v = rng.normal(0.0, 0.4, w.shape)
            values.append(v.astype("float32"))
        if values:
            layer.set_weights(values)
    return model


class Recorder:
    """Calls layers while building a functional model and remembers, for each call, the
    graph tensor that must hold its output (``layer/act`` for a fused activation) and, for a
    fused activation, the layer's input (to check the pre-activation op too)."""

    def __init__(self):
        self.outputs = []  # (graph tensor name, keras tensor)
        self.fused = []  # (graph op name of the linear part, layer, keras input tensor)
        self.calls = {}

    def __call__(self, layer, inputs):
        out = layer(inputs)
        count = self.calls.get(layer.name, 0)
        self.calls[layer.name] = count + 1
        name = layer.name if count == 0 else f"{layer.name}#{count}"
        act = layer.get_config().get("activation") if isinstance(
            layer, (L.Dense, L.Conv2D, L.DepthwiseConv2D)) else None
        if act not in (None, "linear"):
            self.fused.append((name, layer, inputs))
            name = f"{name}/{act}"
        self.outputs.append((name, out))
        return out


def _check_against_keras(model, rec, x):
    """Every recorded tensor and every fused pre-activation equals Keras; output = predict."""
    graph = nnslicer.lift(model)
    acts = execute(graph, x)
    tensors = [t for _, t in rec.outputs] + [inp for _, _, inp in rec.fused]
    probe = keras.Model(model.input, tensors)
    values = [np.asarray(v) for v in probe(x, training=False)]
    got = {}
    for (name, _), value in zip(rec.outputs, values):
        assert name in graph, f"{name} is not an op of the lifted graph"
        np.testing.assert_allclose(acts[name], value, rtol=RTOL, atol=ATOL, err_msg=name)
        got[name] = value
    for (name, layer, _), value in zip(rec.fused, values[len(rec.outputs):]):
        cfg = dict(layer.get_config(), activation="linear")
        clone = type(layer).from_config(cfg)
        clone.build(value.shape)
        clone.set_weights(layer.get_weights())
        np.testing.assert_allclose(acts[name], np.asarray(clone(value)), rtol=RTOL, atol=ATOL,
                                   err_msg=f"{name} (pre-activation)")
        got[name] = value
    # every op of the graph (but the input) was checked
    assert set(graph._order[1:]) <= set(got) | {n for n, _, _ in rec.fused}
    np.testing.assert_allclose(acts[graph.output], model.predict(x, verbose=0), rtol=RTOL, atol=ATOL)
    return graph, acts


# ----------------------------------------------------------------------------- the models
def _dense_model():
    rec = Recorder()
    x = keras.Input((6,), name="x")
    h = rec(L.Dense(8, activation="relu", name="d_relu"), x)
    h = rec(L.Dense(8, activation="linear", name="d_linear"), h)
    h = rec(L.Dense(8, activation="sigmoid", name="d_sigmoid"), h)
    h = rec(L.Dense(8, activation="tanh", name="d_tanh"), h)
    h = rec(L.Dense(8, activation="elu", name="d_elu"), h)
    h = rec(L.Dense(8, activation="gelu", name="d_gelu"), h)
    h = rec(L.Dropout(0.5, name="drop"), h)
    h = rec(L.BatchNormalization(name="bn"), h)
    h = rec(L.Activation("tanh", name="act_tanh"), h)
    h = rec(L.Dense(8, name="d_pre_relu"), h)
    h = rec(L.ReLU(max_value=0.5, negative_slope=0.1, threshold=0.2, name="relu_cfg"), h)
    h = rec(L.BatchNormalization(center=False, scale=False, name="bn_plain"), h)
    h = rec(L.LeakyReLU(negative_slope=0.2, name="leaky"), h)
    h = rec(L.ReLU(name="relu_plain"), h)
    h = rec(L.Reshape((2, 4), name="reshape"), h)
    h = rec(L.Flatten(name="flatten"), h)
    h = rec(L.Dense(4, activation="softmax", name="out"), h)
    model = _randomize(keras.Model(x, h, name="dense_net"), 0)
    return model, rec


def _conv_model(map_tail=True):
    """Every conv-side op; ``map_tail`` ends with a Reshape into a feature map and a conv (which
    channel granularity refuses), else with Flatten only."""
    rec = Recorder()
    x = keras.Input((9, 9, 3), name="x")
    c_same = rec(L.Conv2D(4, 3, padding="same", activation="relu", name="c_same"), x)  # 9x9x4
    c_valid = rec(L.Conv2D(4, 3, padding="valid", name="c_valid"), c_same)  # 7x7x4
    c_s2 = rec(L.Conv2D(4, 3, strides=2, padding="same", activation="tanh", name="c_s2"), c_valid)  # 4x4x4
    c_dil = rec(L.Conv2D(3, 3, dilation_rate=2, padding="same", name="c_dil"), c_same)  # 9x9x3
    c_nb = rec(L.Conv2D(4, (2, 3), use_bias=False, name="c_nobias"), c_dil)  # 8x7x4
    dw1 = rec(L.DepthwiseConv2D(3, padding="same", name="dw1"), c_nb)  # 8x7x4
    dw2 = rec(L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same", activation="relu",
                                name="dw2"), dw1)  # 4x4x8
    bn = rec(L.BatchNormalization(name="bn"), dw2)
    bn_plain = rec(L.BatchNormalization(center=False, scale=False, name="bn_plain"), bn)
    mp_same = rec(L.MaxPooling2D(3, strides=2, padding="same", name="mp_same"), c_same)  # 5x5x4
    mp_valid = rec(L.MaxPooling2D(2, strides=1, padding="valid", name="mp_valid"), mp_same)  # 4x4x4
    ap_same = rec(L.AveragePooling2D(3, strides=2, padding="same", name="ap_same"), c_valid)  # 4x4x4
    ap_valid = rec(L.AveragePooling2D((2, 3), strides=(1, 2), padding="valid", name="ap_valid"), c_same)  # 8x4x4
    zp = rec(L.ZeroPadding2D(((1, 2), (0, 3)), name="zpad"), ap_valid)  # 11x7x4
    crop = rec(L.Cropping2D(((1, 0), (2, 1)), name="crop"), zp)  # 10x4x4
    add = rec(L.Add(name="add"), [c_s2, mp_valid, ap_same])  # 4x4x4
    relu = rec(L.ReLU(max_value=1.0, name="relu_map"), add)
    leaky = rec(L.LeakyReLU(negative_slope=0.3, name="leaky_map"), bn_plain)
    cat_ch = rec(L.Concatenate(axis=-1, name="cat_channels"), [relu, leaky])  # 4x4x12
    act = rec(L.Activation("elu", name="act_elu"), cat_ch)
    drop = rec(L.Dropout(0.3, name="drop"), act)
    cat_sp = rec(L.Concatenate(axis=1, name="cat_rows"), [crop, add])  # 14x4x4
    gap = rec(L.GlobalAveragePooling2D(name="gap"), drop)  # 12
    gmp = rec(L.GlobalMaxPooling2D(name="gmp"), cat_sp)  # 4
    vec = rec(L.Concatenate(name="cat_vec"), [gap, gmp])  # 16
    if map_tail:
        grid = rec(L.Reshape((2, 2, 4), name="to_map"), vec)
        c_last = rec(L.Conv2D(2, 2, padding="same", name="c_last"), grid)  # 2x2x2
        flat = rec(L.Flatten(name="flat"), c_last)
    else:
        flat = rec(L.Reshape((16,), name="flat"), vec)
    out = rec(L.Dense(5, activation="softmax", name="out"), flat)
    model = _randomize(keras.Model(x, out, name="conv_net"), 1)
    return model, rec


@pytest.fixture(scope="module")
def dense_case():
    model, rec = _dense_model()
    x = np.random.default_rng(10).normal(size=(16, 6)).astype("float32")
    graph, acts = _check_against_keras(model, rec, x)
    return model, graph, acts, x


@pytest.fixture(scope="module")
def conv_case():
    model, rec = _conv_model()
    x = np.random.default_rng(11).normal(size=(8, 9, 9, 3)).astype("float32")
    graph, acts = _check_against_keras(model, rec, x)
    return model, graph, acts, x


# ------------------------------------------------------------------------ values vs Keras
def test_dense_ops_match_keras(dense_case):
    # The fixture compared every op with Keras; check here that the comparison meant something.
    model, graph, acts, x = dense_case
    kinds = {op.name: op.kind for op in graph.ops}
    for act in ("relu", "sigmoid", "tanh", "elu", "gelu"):
        assert kinds[f"d_{act}"] == "dense" and kinds[f"d_{act}/{act}"] == "activation"
        assert graph[f"d_{act}/{act}"].params["activation"] == act
    assert "d_linear/linear" not in graph and kinds["d_linear"] == "dense"
    assert kinds["drop"] == "identity" and kinds["bn"] == kinds["bn_plain"] == "batch_norm"
    assert graph["relu_cfg"].params == {"activation": "relu", "max_value": 0.5, "negative_slope": 0.1,
                                        "threshold": 0.2}
    assert graph["leaky"].params == {"activation": "leaky_relu", "negative_slope": 0.2}
    # the configured ReLU clips at .5 and leaks below .2: not a plain relu
    v = acts["relu_cfg"]
    assert v.max() <= 0.5 + 1e-6 and v.min() < 0
    assert not np.allclose(acts["d_gelu/gelu"], np.maximum(acts["d_gelu"], 0), atol=1e-3)
    assert np.allclose(acts["out/softmax"].sum(axis=1), 1, atol=1e-5)


def test_conv_ops_match_keras(conv_case):
    model, graph, acts, x = conv_case
    shapes = {op.name: op.shape for op in graph.ops}
    assert shapes["c_same/relu"] == (9, 9, 4) and shapes["c_valid"] == (7, 7, 4)
    assert shapes["c_s2/tanh"] == (4, 4, 4) and shapes["c_dil"] == (9, 9, 3)
    assert shapes["c_nobias"] == (8, 7, 4) and shapes["dw1"] == (8, 7, 4) and shapes["dw2/relu"] == (4, 4, 8)
    assert shapes["mp_same"] == (5, 5, 4) and shapes["mp_valid"] == (4, 4, 4)
    assert shapes["ap_same"] == (4, 4, 4) and shapes["ap_valid"] == (8, 4, 4)
    assert shapes["zpad"] == (11, 7, 4) and shapes["crop"] == (10, 4, 4)
    assert shapes["cat_channels"] == (4, 4, 12) and shapes["cat_rows"] == (14, 4, 4)
    assert shapes["gap"] == (12,) and shapes["gmp"] == (4,) and shapes["to_map"] == (2, 2, 4)
    assert np.array_equal(graph["c_nobias"].weights["bias"], np.zeros(4, np.float32))
    assert graph["dw2"].weights["kernel"].shape == (3, 3, 4, 2)
    assert graph["dw2"].params["strides"] == (2, 2) and graph["c_dil"].params["dilation_rate"] == (2, 2)
    # the padded borders really are zero, and the activations are not trivially zero
    assert not acts["zpad"][:, 0].any() and not acts["zpad"][:, -2:].any() and not acts["zpad"][:, :, -3:].any()
    assert np.abs(acts["add"]).max() > 0.1


def test_sequential_model_matches_keras():
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        L.Conv2D(3, 3, activation="relu", name="conv"),
        L.MaxPooling2D(2, name="pool"),
        L.Dropout(0.3, name="drop"),
        L.Flatten(name="flat"),
        L.Dense(6, activation="relu", name="hidden"),
        L.Dense(3, activation="softmax", name="out"),
    ], name="seq")
    _randomize(model, 2)
    x = np.random.default_rng(12).normal(size=(5, 8, 8, 1)).astype("float32")
    graph = nnslicer.lift(model)
    assert [op.kind for op in graph.ops] == ["input", "conv2d", "activation", "max_pool", "identity",
                                            "reshape", "dense", "activation", "dense", "activation"]
    assert [op.name for op in graph.ops][1:] == ["conv", "conv/relu", "pool", "drop", "flat", "hidden",
                                                 "hidden/relu", "out", "out/softmax"]
    acts = execute(graph, x)
    for name, tensor in [("conv/relu", "conv"), ("pool", "pool"), ("flat", "flat"), ("hidden/relu", "hidden")]:
        probe = keras.Model(model.inputs[0], model.get_layer(tensor).output)
        np.testing.assert_allclose(acts[name], np.asarray(probe(x)), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(acts["out/softmax"], model.predict(x, verbose=0), rtol=RTOL, atol=ATOL)
    assert graph.output == "out/softmax" and graph.logits == "out"


def test_sequential_built_without_input():
    model = keras.Sequential([L.Dense(3, activation="tanh", name="a"), L.Dense(2, name="b")], name="seq_built")
    model.build((None, 4))
    _randomize(model, 3)
    graph = nnslicer.lift(model)
    x = np.random.default_rng(13).normal(size=(4, 4)).astype("float32")
    assert graph.input_shape == (4,)
    np.testing.assert_allclose(execute(graph, x)[graph.output], model.predict(x, verbose=0), rtol=RTOL, atol=ATOL)


def test_shared_layer_called_twice():
    rec = Recorder()
    x = keras.Input((4,), name="x")
    shared = L.Dense(4, activation="relu", name="shared")
    h = rec(shared, x)
    m = rec(L.Dense(4, name="mid"), h)
    h2 = rec(shared, m)
    out = rec(L.Dense(3, name="out"), h2)
    model = _randomize(keras.Model(x, out, name="shared_net"), 4)
    xs = np.random.default_rng(14).normal(size=(6, 4)).astype("float32")
    graph, acts = _check_against_keras(model, rec, xs)
    assert [op.name for op in graph.ops] == ["x", "shared", "shared/relu", "mid", "shared#1",
                                            "shared#1/relu", "out"]
    assert graph["shared#1"].inputs == ("mid",) and graph["shared"].inputs == ("x",)
    assert np.array_equal(graph["shared"].weights["kernel"], graph["shared#1"].weights["kernel"])
    assert not np.allclose(acts["shared/relu"], acts["shared#1/relu"])


def test_model_without_softmax():
    model = keras.Sequential([keras.Input((3,)), L.Dense(4, activation="relu", name="h"),
                              L.Dense(2, name="out")], name="nosoftmax")
    _randomize(model, 5)
    graph = nnslicer.lift(model)
    assert graph.output == graph.logits == "out"
    x = np.random.default_rng(15).normal(size=(4, 3)).astype("float32")
    np.testing.assert_allclose(execute(graph, x)["out"], model.predict(x, verbose=0), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("layer", [lambda: L.Activation("softmax", name="probs"),
                                   lambda: L.Softmax(name="probs")])
def test_softmax_layer_at_output(layer):
    model = keras.Sequential([keras.Input((3,)), L.Dense(4, name="logits"), layer()], name="softmax_layer")
    _randomize(model, 7)
    graph = nnslicer.lift(model)
    assert graph.output == "probs" and graph.logits == "logits"
    assert graph["probs"].kind == "activation" and graph["probs"].params["activation"] == "softmax"
    assert graph.num_outputs == 4
    x = np.random.default_rng(16).normal(size=(3, 3)).astype("float32")
    np.testing.assert_allclose(execute(graph, x)["probs"], model.predict(x, verbose=0), rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------- structure
def test_conv_graph_kinds_and_wiring(conv_case):
    _, graph, _, _ = conv_case
    kinds = {op.name: op.kind for op in graph.ops}
    expected = {
        "x": "input", "c_same": "conv2d", "c_same/relu": "activation", "c_valid": "conv2d",
        "c_s2": "conv2d", "c_s2/tanh": "activation", "c_dil": "conv2d", "c_nobias": "conv2d",
        "dw1": "depthwise_conv2d", "dw2": "depthwise_conv2d", "dw2/relu": "activation",
        "bn": "batch_norm", "bn_plain": "batch_norm", "mp_same": "max_pool", "mp_valid": "max_pool",
        "ap_same": "avg_pool", "ap_valid": "avg_pool", "zpad": "zero_padding", "crop": "cropping",
        "add": "add", "relu_map": "activation", "leaky_map": "activation",
        "cat_channels": "concatenate", "act_elu": "activation", "drop": "identity",
        "cat_rows": "concatenate", "gap": "global_avg_pool", "gmp": "global_max_pool",
        "cat_vec": "concatenate", "to_map": "reshape", "c_last": "conv2d", "flat": "reshape",
        "out": "dense", "out/softmax": "activation",
    }
    assert kinds == expected
    assert graph.output == "out/softmax" and graph.logits == "out" and graph.num_outputs == 5
    edges = set(graph.nx.edges())
    wiring = {
        "c_same": ["x"], "c_same/relu": ["c_same"], "c_valid": ["c_same/relu"], "c_s2": ["c_valid"],
        "c_s2/tanh": ["c_s2"], "c_dil": ["c_same/relu"], "c_nobias": ["c_dil"], "dw1": ["c_nobias"],
        "dw2": ["dw1"], "dw2/relu": ["dw2"], "bn": ["dw2/relu"], "bn_plain": ["bn"],
        "mp_same": ["c_same/relu"], "mp_valid": ["mp_same"], "ap_same": ["c_valid"],
        "ap_valid": ["c_same/relu"], "zpad": ["ap_valid"], "crop": ["zpad"],
        "add": ["c_s2/tanh", "mp_valid", "ap_same"], "relu_map": ["add"], "leaky_map": ["bn_plain"],
        "cat_channels": ["relu_map", "leaky_map"], "act_elu": ["cat_channels"], "drop": ["act_elu"],
        "cat_rows": ["crop", "add"], "gap": ["drop"], "gmp": ["cat_rows"], "cat_vec": ["gap", "gmp"],
        "to_map": ["cat_vec"], "c_last": ["to_map"], "flat": ["c_last"], "out": ["flat"],
        "out/softmax": ["out"],
    }
    assert edges == {(src, dst) for dst, srcs in wiring.items() for src in srcs}
    for dst, srcs in wiring.items():
        assert list(graph[dst].inputs) == srcs  # input order as in Keras
        for i, src in enumerate(srcs):
            assert graph.nx.edges[src, dst]["index"] == i
    assert sorted(graph.consumers("c_same/relu")) == ["ap_valid", "c_dil", "c_valid", "mp_same"]
    assert graph["cat_rows"].params["axis"] == 0 and graph["cat_channels"].params["axis"] == 2


def test_fused_activation_split(dense_case):
    model, graph, _, _ = dense_case
    op, act = graph["d_relu"], graph["d_relu/relu"]
    assert op.kind == "dense" and act.kind == "activation"
    assert act.inputs == ("d_relu",) and act.shape == op.shape == (8,)
    assert op.layer == act.layer == "d_relu"
    kernel, bias = model.get_layer("d_relu").get_weights()
    assert np.array_equal(op.weights["kernel"], kernel) and np.array_equal(op.weights["bias"], bias)
    assert act.weights == {} and act.n_synapses == 0 and op.n_synapses == 6 * 8
    assert graph.logits == "out" and graph.output == "out/softmax"
    assert graph.consumers("d_relu") == ["d_relu/relu"]
    assert graph.weighted_ops == ["d_relu", "d_linear", "d_sigmoid", "d_tanh", "d_elu", "d_gelu",
                                  "d_pre_relu", "out"]


def test_logits_are_pre_softmax(dense_case):
    _, graph, acts, _ = dense_case
    logits = acts[graph.logits]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True), acts[graph.output], rtol=1e-5, atol=1e-6)
    assert not np.allclose(logits, acts[graph.output])


@pytest.fixture(scope="module")
def small_cnn():
    # x 6x6x2 -> conv (3 filters 3x3 valid, relu) 4x4x3 -> pool (2x2) 2x2x3 -> flat 12 -> out 5
    model = keras.Sequential([
        keras.Input((6, 6, 2), name="x"),
        L.Conv2D(3, 3, activation="relu", name="conv"),
        L.MaxPooling2D(2, name="pool"),
        L.Flatten(name="flat"),
        L.Dense(5, name="out"),
    ], name="small_cnn")
    return _randomize(model, 6)


def test_sizes_by_hand(small_cnn):
    g = nnslicer.lift(small_cnn)
    # element: x 6*6*2 = 72, conv 4*4*3 = 48, conv/relu 48, pool 2*2*3 = 12, flat 12, out 5 -> 197
    # synapses: conv 3*3*2*3 = 54, out 12*5 = 60 -> 114 (biases are not synapses)
    assert [g.n_neurons(op.name) for op in g.ops] == [72, 48, 48, 12, 12, 5]
    assert g.n_neurons() == 197 and g.n_synapses() == 114
    assert g.n_synapses("conv") == 54 and g.n_synapses("out") == 60 and g.n_synapses("pool") == 0
    assert g["conv"].synapse_shape == (3, 3, 2, 3) and g["pool"].synapse_shape is None
    # channel: x 2, conv 3, conv/relu 3, pool 3, flat 12 (rank 1: elements), out 5 -> 28
    c = nnslicer.lift(small_cnn, granularity="channel")
    assert c.granularity == "channel"
    assert [c.n_neurons(op.name) for op in c.ops] == [2, 3, 3, 3, 12, 5]
    assert c.n_neurons() == 28 and c.n_synapses() == 114
    assert c.neuron_shape("conv") == (3,) and g.neuron_shape("conv") == (4, 4, 3)
    assert g.with_granularity("channel").n_neurons() == 28
    with pytest.raises(InvalidParameterError):
        nnslicer.lift(small_cnn, granularity="pixel")


def test_connections_at_channel_granularity(small_cnn):
    c = nnslicer.lift(small_cnn, granularity="channel")
    [(j, src, dst, syn)] = c.connections("conv")
    # a channel neuron of conv reads every input channel through each of the 9 taps: 9*2*3 = 54
    assert j == 0 and len(src) == len(dst) == len(syn) == 54
    assert sorted(syn.tolist()) == list(range(54))
    kh, kw, cin, cout = np.unravel_index(syn, (3, 3, 2, 3))
    assert np.array_equal(src, cin) and np.array_equal(dst, cout)
    # element granularity: 16 positions * 9 taps * 2 input channels * 3 filters
    [(_, src_e, dst_e, syn_e)] = nnslicer.lift(small_cnn).connections("conv")
    assert len(src_e) == 16 * 9 * 2 * 3 and syn_e.min() == 0 and syn_e.max() == 53
    # pooling passes channels through; flatten maps element i of flat to channel i % 3
    [(_, src_p, dst_p, syn_p)] = c.connections("pool")
    assert src_p.tolist() == dst_p.tolist() == [0, 1, 2] and (syn_p == -1).all()
    [(_, src_f, dst_f, _)] = c.connections("flat")
    assert np.array_equal(dst_f, np.arange(12)) and np.array_equal(src_f, np.arange(12) % 3)
    [(_, src_d, dst_d, syn_d)] = c.connections("out")
    assert len(src_d) == 60 and np.array_equal(syn_d, src_d * 5 + dst_d)


def test_depthwise_connections_at_channel_granularity():
    model = keras.Sequential([keras.Input((5, 5, 2)), L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")])
    c = nnslicer.lift(model, granularity="channel")
    [(_, src, dst, syn)] = c.connections("dw")
    # output channel c*2 + m reads input channel c only, through 9 taps: 4 * 9 = 36
    assert len(src) == 36 and sorted(syn.tolist()) == list(range(36))
    kh, kw, cin, m = np.unravel_index(syn, (3, 3, 2, 2))
    assert np.array_equal(src, cin) and np.array_equal(dst, cin * 2 + m)


def test_fingerprint(small_cnn):
    a = nnslicer.lift(small_cnn).fingerprint
    assert a == nnslicer.lift(small_cnn).fingerprint
    assert isinstance(a, str) and len(a) >= 8
    layer = small_cnn.get_layer("out")
    kernel, bias = layer.get_weights()
    try:
        changed = kernel.copy()
        changed[3, 1] += 1e-3
        layer.set_weights([changed, bias])
        b = nnslicer.lift(small_cnn).fingerprint
        assert b != a
    finally:
        layer.set_weights([kernel, bias])
    assert nnslicer.lift(small_cnn).fingerprint == a
    # the same architecture with other weights is another model
    twin = keras.models.clone_model(small_cnn)
    _randomize(twin, 99)
    assert nnslicer.lift(twin).fingerprint != a


def test_neuron_graph_dense_by_hand():
    # x (2) -> h = Dense(3, relu) -> out = Dense(2)
    # nodes: x 2 + h 3 + h/relu 3 + out 2 = 10; edges: h 2*3 + h/relu 3 + out 3*2 = 15.
    model = keras.Sequential([keras.Input((2,), name="x"), L.Dense(3, activation="relu", name="h"),
                              L.Dense(2, name="out")], name="tiny")
    g = nnslicer.lift(model)
    nxg = g.to_networkx(level="neuron")
    assert nxg.number_of_nodes() == 10 and nxg.number_of_edges() == 15
    x = g.input
    assert nxg.edges[(x, 1), ("h", 2)] == {"op": "h", "synapse": 1 * 3 + 2}
    assert nxg.edges[("h", 0), ("h/relu", 0)]["synapse"] == -1
    assert not nxg.has_edge(("h", 0), ("h/relu", 1))
    assert nxg.edges[("h/relu", 2), ("out", 1)]["synapse"] == 2 * 2 + 1
    assert nxg.in_degree(("out", 0)) == 3 and nxg.out_degree((x, 0)) == 3
    # the op-level view is a copy of the op graph
    opg = g.to_networkx()
    assert set(opg.edges()) == {(x, "h"), ("h", "h/relu"), ("h/relu", "out")}
    opg.remove_node("h")
    assert "h" in g.nx
    # the size limit: 15 edges
    assert g.to_networkx(level="neuron", limit=15).number_of_edges() == 15
    with pytest.raises(InvalidParameterError, match="limit"):
        g.to_networkx(level="neuron", limit=14)
    with pytest.raises(InvalidParameterError):
        g.to_networkx(level="synapse")


def test_neuron_graph_conv_padding_by_hand():
    # x 3x3x1 -> c = Conv2D(1, 2x2, same) -> f = Flatten -> o = Dense(1).
    # TensorFlow pads a 2x2 "same" kernel at the bottom/right: output row i reads rows i, i+1,
    # so rows 0, 1 have 2 taps inside and row 2 has 1 (same for columns): (2+2+1)^2 = 25 conv
    # edges; Flatten 9; Dense 9 -> 43 edges; nodes 9 + 9 + 9 + 1 = 28.
    model = keras.Sequential([keras.Input((3, 3, 1), name="x"), L.Conv2D(1, 2, padding="same", name="c"),
                              L.Flatten(name="f"), L.Dense(1, name="o")], name="pad")
    g = nnslicer.lift(model)
    nxg = g.to_networkx(level="neuron")
    assert nxg.number_of_nodes() == 28 and nxg.number_of_edges() == 43
    x = g.input
    assert nxg.edges[(x, 4), ("c", 0)]["synapse"] == 3  # input (1,1) -> output (0,0): tap (1,1)
    assert nxg.edges[(x, 0), ("c", 0)]["synapse"] == 0
    assert nxg.in_degree(("c", 8)) == 1 and nxg.in_degree(("c", 0)) == 4 and nxg.in_degree(("c", 2)) == 2
    with pytest.raises(InvalidParameterError):
        g.to_networkx(level="neuron", limit=42)


def test_summary_lists_every_op(conv_case):
    _, graph, _, _ = conv_case
    text = graph.summary()
    lines = text.splitlines()
    for op in graph.ops:
        row = [ln for ln in lines if ln.split()[0] == op.name]
        assert len(row) == 1, op.name
        assert op.kind in row[0].split()
    assert lines[-1].split()[0] == "total"
    assert f"{graph.n_synapses():,}" in lines[-1] and f"{graph.n_neurons():,}" in lines[-1]
    assert "conv_net" in repr(graph)


@pytest.mark.parametrize("granularity", ["element", "channel"])
def test_slicing_lifted_conv_model_smoke(conv_case, granularity):
    # Every op kind goes through the backward pass at both granularities without error, and
    # the counts have the shapes of the graph's neurons and synapses.
    model, _, _, x = conv_case
    if granularity == "channel":
        with pytest.raises(UnsupportedLayerError, match="to_map"):
            nnslicer.Slicer(model, granularity="channel").fit(x)
        model = _conv_model(map_tail=False)[0]
    if True:
        slicer = nnslicer.Slicer(model, granularity=granularity).fit(x)
        s = slicer.slice(x[0])
        g = slicer.graph_
        for op in g.ops:
            assert s.neuron_counts[op.name].shape == g.neuron_shape(op.name)
        for name in g.weighted_ops:
            assert s.synapse_counts[name].shape == g[name].synapse_shape
        assert s.neuron_counts["out"].tolist().count(1) == 1
        assert s.n_synapses > 0 and s.neuron_counts[g.input].any()


# ------------------------------------------------------------------------------ refusals
def test_two_unsupported_layers_one_error():
    x = keras.Input((8,), name="x")
    a = L.Dense(8, name="pre")(x)
    m = L.Maximum(name="mul")([a, x])
    r = L.Reshape((4, 2), name="rs")(m)
    c = L.Conv1DTranspose(2, 2, name="deconv")(r)
    out = L.Dense(2, name="out")(L.Flatten(name="flat")(c))
    model = keras.Model(x, out, name="bad")
    with pytest.raises(UnsupportedLayerError) as info:
        nnslicer.lift(model)
    msg = str(info.value)
    assert "'mul'" in msg and "Maximum" in msg
    assert "'deconv'" in msg and "Conv1DTranspose" in msg
    assert "register_layer" in msg
    assert "'pre'" not in msg and "'out'" not in msg  # only the problems are named
    assert "Conv2D" in msg and "Dense" in msg  # the supported types are listed
    assert isinstance(info.value, TypeError) and isinstance(info.value, NNSlicerError)
    with pytest.raises(TypeError):  # catchable without knowing nnslicer
        nnslicer.Slicer(model).fit(np.zeros((2, 8), "float32"))


def test_conv_lstm_and_lambda_unsupported():
    x = keras.Input((8,), name="x")
    r = L.Reshape((2, 2, 2), name="rs")(x)
    h = L.ConvLSTM1D(3, 2, name="convlstm")(r)
    d = L.Lambda(lambda t: t * 2.0, name="double")(L.Flatten()(h))
    model = keras.Model(x, L.Dense(2, name="out")(d), name="rnn")
    with pytest.raises(UnsupportedLayerError) as info:
        nnslicer.lift(model)
    msg = str(info.value)
    assert "'convlstm'" in msg and "'double'" in msg and "register_layer" in msg


# A layer of a supported class that its lifter refuses (an unknown fused activation,
# channels_first) must be reported like an unknown class, wherever it sits in the model.
def test_unsupported_fused_activation_at_output():
    model = keras.Sequential([keras.Input((3,)), L.Dense(4, name="pre"),
                              L.Dense(2, activation="log_softmax", name="exp")])
    with pytest.raises(UnsupportedLayerError, match="'exp'.*log_softmax"):
        nnslicer.lift(model)


def test_unsupported_fused_activation_followed_by_layers():
    model = keras.Sequential([keras.Input((3,)), L.Dense(4, activation="log_softmax", name="exp"),
                              L.Dense(2, name="out")])
    with pytest.raises(UnsupportedLayerError, match="'exp'.*log_softmax"):
        nnslicer.lift(model)


def test_a_lambda_activation_is_named_as_such():
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, activation=lambda t: t * 2, name="twice")])
    with pytest.raises(UnsupportedLayerError, match=r"'twice' \(Dense\): activation '<lambda>' \(supported: celu, elu"):
        nnslicer.lift(model)


def test_refused_config_and_unknown_class_named_together():
    x = keras.Input((2, 8, 8), name="x")
    h = L.Conv2D(2, 3, data_format="channels_first", name="cf")(x)
    h = L.Lambda(lambda t: t * 2.0, name="double")(L.Flatten(name="flat")(h))
    model = keras.Model(x, L.Dense(2, name="out")(h))
    with pytest.raises(UnsupportedLayerError) as info:
        nnslicer.lift(model)
    assert "'cf'" in str(info.value) and "'double'" in str(info.value)


@pytest.mark.parametrize("middle", ["dense", "activation"])
def test_softmax_in_the_middle(middle):
    x = keras.Input((4,), name="x")
    if middle == "dense":
        h = L.Dense(4, activation="softmax", name="mid_soft")(x)
    else:
        h = L.Activation("softmax", name="mid_soft")(L.Dense(4, name="pre")(x))
    model = keras.Model(x, L.Dense(2, name="out")(h))
    with pytest.raises(UnsupportedLayerError) as info:
        nnslicer.lift(model)
    assert "mid_soft" in str(info.value) and "softmax" in str(info.value)


_CHANNELS_FIRST = [
    lambda: L.Conv2D(2, 3, data_format="channels_first", name="cf"),
    lambda: L.MaxPooling2D(2, data_format="channels_first", name="cf"),
    lambda: L.GlobalAveragePooling2D(data_format="channels_first", name="cf"),
]


@pytest.mark.parametrize("layer", _CHANNELS_FIRST)
def test_channels_first_unsupported_at_output(layer):
    x = keras.Input((2, 8, 8), name="x")
    h = L.ReLU(name="relu")(x)
    with pytest.raises(UnsupportedLayerError) as info:
        nnslicer.lift(keras.Model(x, layer()(h)))
    assert "'cf'" in str(info.value) and "channels_first" in str(info.value)
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize("layer", _CHANNELS_FIRST[:2])
def test_channels_first_unsupported_followed_by_layers(layer):
    x = keras.Input((2, 8, 8), name="x")
    out = L.Dense(2, name="out")(L.Flatten(name="flat")(layer()(x)))
    with pytest.raises(UnsupportedLayerError) as info:
        nnslicer.lift(keras.Model(x, out))
    assert "'cf'" in str(info.value) and "channels_first" in str(info.value)


def test_subclassed_model_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="subnet")
            self.dense = L.Dense(2)

        def call(self, inputs):
            return self.dense(inputs)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(NNSlicerError, match="subclassed"):
        nnslicer.lift(net)


def test_unbuilt_sequential_refused():
    model = keras.Sequential([L.Dense(3), L.Dense(2)])
    with pytest.raises(NNSlicerError, match="build") as info:
        nnslicer.lift(model)
    assert isinstance(info.value, ValueError)


def test_multi_input_refused():
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b")
    out = L.Dense(2, name="out")(L.Concatenate(name="cat")([a, b]))
    with pytest.raises(UnsupportedLayerError, match="2 inputs"):
        nnslicer.lift(keras.Model([a, b], out))


def test_multi_output_refused():
    x = keras.Input((3,), name="x")
    model = keras.Model(x, [L.Dense(2, name="o1")(x), L.Dense(2, name="o2")(x)])
    with pytest.raises(UnsupportedLayerError, match="2 outputs"):
        nnslicer.lift(model)


def test_not_a_model_refused():
    with pytest.raises(InvalidParameterError, match="keras.Model"):
        nnslicer.lift("model.keras")
    with pytest.raises(InvalidParameterError):
        nnslicer.lift(L.Dense(3))


def test_reshape_into_feature_map_refused_at_channel_granularity():
    x = keras.Input((16,), name="x")
    h = L.Conv2D(2, 2, name="conv")(L.Reshape((4, 4, 1), name="to_map")(x))
    model = keras.Model(x, L.Dense(2, name="out")(L.Flatten(name="flat")(h)))
    nnslicer.lift(model)  # fine at element granularity
    with pytest.raises(UnsupportedLayerError, match="to_map"):
        nnslicer.lift(model, granularity="channel")


def test_feature_map_output_refused_for_channel_slicing():
    """A channel-granularity slice cannot start from the elements of an output feature map:
    refused by fit (slice used to fail with a reshape error); element granularity slices it."""
    model = keras.Sequential([keras.Input((5, 5, 2)), L.Conv2D(2, 3, name="conv")], name="maps")
    x = np.random.default_rng(0).normal(size=(8, 5, 5, 2)).astype("float32")
    assert nnslicer.Slicer(model).fit(x).slice(x[0], target=17).samples == 1
    nnslicer.lift(model, granularity="channel")  # its graph is fine to inspect
    with pytest.raises(UnsupportedLayerError, match=r"'maps' outputs a map or sequence of shape \(3, 3, 2\).*element"):
        nnslicer.Slicer(model, granularity="channel").fit(x)


def test_quantized_layers_refused():
    """model.quantize() leaves integer kernels whose scale lives elsewhere: lifting them as
    weights would slice another network, so they are refused by name."""
    import warnings

    model = keras.Sequential([keras.Input((6,)), L.Dense(8, activation="relu", name="h"), L.Dense(4, name="out")])
    nnslicer.lift(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras: "InputLayer does not have a quantize method"
        model.quantize("int8")
    with pytest.raises(UnsupportedLayerError, match=r"Dense x2 \('h', 'out'\): quantized \(int8\).*before model.quantize"):
        nnslicer.lift(model)


def _nested_models():
    """A functional block called twice, holding a Sequential stem (models two deep)."""
    keras.utils.set_random_seed(3)
    stem = keras.Sequential([keras.Input((5,)), L.Dense(5, activation="tanh", name="a")], name="stem")
    b_in = keras.Input((5,))
    block = keras.Model(b_in, L.Add(name="sum")([b_in, L.Dense(5, name="d")(stem(b_in))]), name="block")
    x = keras.Input((5,), name="x")
    return keras.Model(x, L.Dense(3, name="out")(block(block(x))), name="outer")


def test_nested_models_are_inlined():
    """Ops of a model inside the model are named 'outer/inner' (a later call: 'outer#k/...'),
    and the lifted graph computes what Keras computes."""
    model = _nested_models()
    g = nnslicer.lift(model)
    assert [op.name for op in g.ops] == [
        "x", "block/stem/a", "block/stem/a/tanh", "block/d", "block/sum",
        "block#1/stem#1/a#1", "block#1/stem#1/a#1/tanh", "block#1/d#1", "block#1/sum#1", "out"]
    assert g["block#1/sum#1"].inputs == ("block/sum", "block#1/d#1")
    assert g["block#1/d#1"].layer == "d" and g.weighted_ops == ["block/stem/a", "block/d", "block#1/stem#1/a#1",
                                                                 "block#1/d#1", "out"]
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    np.testing.assert_allclose(execute(g, x)[g.output], model.predict(x, verbose=0), rtol=RTOL, atol=ATOL)
    s = nnslicer.Slicer(model).fit(x).slice(x[0])
    # one kernel, two calls: each call's synapses are counted apart, on the same shape
    assert s.synapse_counts["block/d"].shape == s.synapse_counts["block#1/d#1"].shape == (5, 5)


def test_nested_model_problems_are_named():
    """A subclassed model inside cannot be inlined; a refused layer inside is named."""
    class Twice(keras.Model):
        def call(self, t):
            return 2 * t

    x = keras.Input((4,), name="x")
    model = keras.Model(x, L.Dense(2, name="out")(Twice(name="twice")(x)))
    with pytest.raises(UnsupportedLayerError, match="'twice' \\(Twice\\): Model 'twice' is a subclassed keras.Model"):
        nnslicer.lift(model)
    inner = keras.Sequential([keras.Input((4,)), L.Dense(3, name="a"), L.UnitNormalization(name="unit")],
                             name="inner")
    model = keras.Model(x, L.Dense(2, name="out")(inner(x)))
    with pytest.raises(UnsupportedLayerError, match="'unit' \\(UnitNormalization\\)"):
        nnslicer.lift(model)


def test_dropout_after_the_softmax_output():
    """A Dropout (an identity at inference) after the softmax leaves the logits where they were."""
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    plain = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="softmax", name="out")], name="plain")
    dropped = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="softmax", name="out"),
                                L.Dropout(0.5, name="drop")], name="plain")
    dropped.set_weights(plain.get_weights())
    g = nnslicer.lift(dropped)
    assert g.logits == nnslicer.lift(plain).logits == "out" and g.num_outputs == 3
    a = nnslicer.Slicer(plain).fit(x).slice(x[0])
    b = nnslicer.Slicer(dropped).fit(x).slice(x[0])
    assert (a.n_neurons, a.n_synapses) == (b.n_neurons, b.n_synapses)
    assert all(np.array_equal(a.synapse_counts[k], b.synapse_counts[k]) for k in a.synapse_counts)


# ------------------------------------------------------------------------------ op layers and namesakes
def _hard_swish_like():
    """``relu6(conv(x) + 3.0)`` and other Keras ops with a constant, as MobileNetV3 writes them."""
    keras.utils.set_random_seed(4)
    x = keras.Input((4, 4, 2))
    y = L.ReLU(6.0)(L.Conv2D(3, 1)(x) + 3.0)
    y = 1.0 - keras.ops.divide(keras.ops.multiply(y, 1 / 6), 2.0) - 0.5
    return keras.Model(x, L.Dense(3)(L.Flatten()(L.Rescaling(1 / 255.0, offset=-1.0)(y))), name="hswish")


def test_a_constant_added_by_a_keras_op_is_not_lost():
    """``x + 3.0`` is Keras' Add operation, whose class name is the Add layer's: it used to lift as
    the Add layer, dropping the constant (outputs off by 8.4). It lifts as a constant op now,
    and the lifted model computes exactly what Keras computes."""
    model = _hard_swish_like()
    graph = nnslicer.lift(model)
    kinds = [op.kind for op in graph.ops]
    assert kinds.count("constant") == 6 and "add" not in kinds
    x = np.random.default_rng(0).normal(size=(6, 4, 4, 2)).astype("float32") * 3
    np.testing.assert_array_equal(execute(graph, x)[graph.output], np.asarray(model(x)))


def test_a_layer_is_never_lifted_as_its_namesake():
    """A user's own layer class named like a Keras layer is not lifted as that layer; registered
    by its class, it is."""
    class Add(keras.layers.Layer):
        def call(self, a, b):
            return a + 2 * b

    x = keras.Input((3,))
    model = keras.Model(x, L.Dense(2)(Add(name="mine")(x, x)), name="namesake")
    with pytest.raises(UnsupportedLayerError, match=r"'mine' \(Add\)"):
        nnslicer.lift(model)
    with pytest.raises(InvalidParameterError, match="already registered"):  # the name is Keras' Add's
        nnslicer.register_layer("Add", lambda layer, ctx: [ctx.op("add", layer=layer)])
    from nnslicer.keras.lifting import LIFTERS

    nnslicer.register_layer(Add, lambda layer, ctx: [ctx.op("identity", layer=layer, inputs=ctx.inputs[:1],
                                                                input_shapes=ctx.input_shapes[:1])])
    try:
        assert [op.kind for op in nnslicer.lift(model).ops][1] == "identity"
    finally:
        del LIFTERS[Add]


@pytest.mark.parametrize("build, message", [
    (lambda t: keras.ops.divide(t, t), "two computed tensors"),
    (lambda t: keras.ops.divide(2.0, t), "a constant divided by a tensor"),
    (lambda t: keras.ops.exp(t), r"'exp' \(Exp\): a Keras operation on tensors"),
    (lambda t: t + np.ones((2, 3), "float32"), "would broadcast over the batch"),
])
def test_keras_ops_that_cannot_lift_are_named(build, message):
    x = keras.Input((3,))
    model = keras.Model(x, L.Dense(2)(build(L.Dense(3)(x))), name="ops")
    with pytest.raises(UnsupportedLayerError, match=message):
        nnslicer.lift(model)


@pytest.mark.parametrize("activation", ["celu", "exponential", "hard_silu", "hard_swish", "hard_tanh", "hard_shrink",
                                        "soft_shrink", "tanh_shrink", "log_sigmoid", "mish", "sparse_plus",
                                        "sparse_sigmoid", "squareplus"])
def test_every_element_wise_activation_keras_names_lifts(activation):
    """(To rounding: a compiled graph may fuse hard_silu's or mish's arithmetic otherwise than
    Keras' eager call.)"""
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((5,)), L.Dense(6, activation=activation), L.Dense(3)])
    x = np.random.default_rng(1).normal(size=(8, 5)).astype("float32") * 2
    graph = nnslicer.lift(model)
    np.testing.assert_allclose(execute(graph, x)[graph.output], np.asarray(model(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("invert", [False, True])
def test_normalization_lifts_exactly(invert):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4, 4, 2)),
                              L.Normalization(mean=[0.5, -1.0], variance=[2.0, 0.0], invert=invert),
                              L.Flatten(), L.Dense(3)])
    x = np.random.default_rng(1).normal(size=(8, 4, 4, 2)).astype("float32")
    graph = nnslicer.lift(model)
    assert graph.ops[1].kind == "constant"
    np.testing.assert_array_equal(execute(graph, x)[graph.output], np.asarray(model(x)))


def test_separable_conv_is_two_ops_as_keras_computes_it():
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((6, 6, 3)), L.SeparableConv2D(4, 3, strides=2, padding="same",
                                                                      depth_multiplier=2, activation="relu",
                                                                      name="sep"), L.Flatten(), L.Dense(2)])
    graph = nnslicer.lift(model)
    assert [(op.name, op.kind, op.shape) for op in graph.ops[1:4]] == [
        ("sep/depthwise", "depthwise_conv2d", (3, 3, 6)), ("sep", "conv2d", (3, 3, 4)), ("sep/relu", "activation", (3, 3, 4))]
    assert graph["sep"].synapse_shape == (1, 1, 6, 4) and graph["sep/depthwise"].synapse_shape == (3, 3, 3, 2)
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(execute(graph, x)[graph.output], np.asarray(model(x)), rtol=1e-6, atol=1e-6)


def test_refusals_are_grouped_by_class_and_reason():
    x = keras.Input((8,))
    h = x
    for i in range(5):
        h = L.Dense(8, activation="log_softmax", name=f"d{i}")(h)
    h = L.Reshape((4, 2))(h)
    h = L.Conv1DTranspose(2, 2, name="c1")(h)
    model = keras.Model(x, L.Dense(2)(L.Flatten()(h)), name="many")
    with pytest.raises(UnsupportedLayerError) as info:
        nnslicer.lift(model)
    msg = str(info.value)
    assert "has 6 layer(s)" in msg
    assert "Dense x5 ('d0', 'd1', 'd2', ... +2 more): activation 'log_softmax'" in msg
    assert "'c1' (Conv1DTranspose)" in msg and msg.count("Supported layers") == 1


@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")  # deprecated by Keras, still computed
@pytest.mark.parametrize("options", [{}, {"center": False, "epsilon": 0.1}, {"rms_scaling": True}])
def test_layer_normalization_lifts_as_keras_computes_it(options):
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((4, 4, 3)), L.Conv2D(5, 2), L.LayerNormalization(**options),
                              L.Flatten(), L.Dense(2)])
    x = np.random.default_rng(2).normal(size=(5, 4, 4, 3)).astype("float32")
    graph = nnslicer.lift(model)
    assert graph.ops[2].kind == "layer_norm"
    np.testing.assert_allclose(execute(graph, x)[graph.output], np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_layer_normalization_over_other_axes_is_refused():
    model = keras.Sequential([keras.Input((4, 4, 3)), L.LayerNormalization(axis=[1, 2, 3], name="ln"),
                              L.Flatten(), L.Dense(2)])
    with pytest.raises(UnsupportedLayerError, match=r"'ln' \(LayerNormalization\): axis="):
        nnslicer.lift(model)


def test_layer_scale_and_nested_refusals():
    """A layer named LayerScale without one factor a channel, and a model inside the model
    with two outputs, are refused with the reason."""
    class LayerScale(keras.layers.Layer):  # a namesake of ConvNeXt's, with no 'gamma'
        def call(self, t):
            return 2.0 * t

    x = keras.Input((4,), name="x")
    model = keras.Model(x, L.Dense(2, name="out")(LayerScale(name="ls")(x)))
    with pytest.raises(UnsupportedLayerError, match="'ls' \\(LayerScale\\): a LayerScale without one factor a channel"):
        nnslicer.lift(model)
    i = keras.Input((4,))
    pair = keras.Model(i, [L.Dense(3, name="p")(i), L.Dense(3, name="q")(i)], name="pair")
    a, b = pair(x)
    model = keras.Model(x, L.Dense(2, name="out")(L.Add(name="add")([a, b])))
    with pytest.raises(UnsupportedLayerError, match="'pair' \\(Functional\\): a model inside the model with another "
                                                    "number of inputs or outputs than its call"):
        nnslicer.lift(model)
