"""Text, recurrent and attention models lift, compute what Keras computes, and slice (issue 18).

Every variant of every sequence layer is lifted and its forward compared with Keras' on random
inputs, to 1e-5 of the output's scale (:func:`nnslicer.keras.verify`), with the layers'
biases moved away from zero so that every term takes part. The engine's counts on these ops
equal the literal reference in ``tests/test_reference.py`` (models ``conv1d_net``,
``attention_net``, ``rnn_net``, ``gru_net``); hand-derived slices are in
``tests/test_hand_derived.py``.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

import nnslicer  # noqa: E402
from nnslicer.errors import UnsupportedLayerError  # noqa: E402
from nnslicer.keras import verify  # noqa: E402

L = keras.layers
STEPS, FEATURES = 6, 5
EXACT = 1e-5  # of the output's scale


def _sequences(n=24, seed=0):
    return np.random.default_rng(seed).normal(size=(n, STEPS, FEATURES)).astype("float32")


def _with_random_biases(model, seed=1):
    """Biases away from zero (their initial value): a term left out of a lift would show."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if weight.path.endswith("bias"):
            weight.assign(rng.normal(0, 0.5, weight.shape).astype("float32"))
    return model


def _model(layer, head=True):
    keras.utils.set_random_seed(0)
    x_in = keras.Input((STEPS, FEATURES))
    y = layer(x_in)
    if head:
        y = L.Dense(3)(L.Flatten()(y) if len(y.shape) == 3 else y)
    return _with_random_biases(keras.Model(x_in, y))


RECURRENT = {
    "simple_rnn": lambda: L.SimpleRNN(4),
    "simple_rnn_relu_sequences_backwards": lambda: L.SimpleRNN(4, activation="relu", return_sequences=True,
                                                             go_backwards=True),
    "lstm": lambda: L.LSTM(4),
    "lstm_sequences": lambda: L.LSTM(4, return_sequences=True),
    "lstm_backwards": lambda: L.LSTM(4, go_backwards=True),
    "lstm_sequences_backwards_no_bias": lambda: L.LSTM(3, return_sequences=True, go_backwards=True, use_bias=False),
    "lstm_hard_sigmoid": lambda: L.LSTM(3, recurrent_activation="hard_sigmoid", activation="relu"),
    "gru": lambda: L.GRU(4),
    "gru_sequences_backwards": lambda: L.GRU(4, return_sequences=True, go_backwards=True),
    "gru_reset_before": lambda: L.GRU(4, reset_after=False),
    "gru_reset_before_sequences": lambda: L.GRU(4, reset_after=False, return_sequences=True),
    "gru_no_bias": lambda: L.GRU(4, use_bias=False),
    "bidirectional_lstm_concat": lambda: L.Bidirectional(L.LSTM(3, return_sequences=True)),
    "bidirectional_gru_sum": lambda: L.Bidirectional(L.GRU(3), merge_mode="sum"),
    "bidirectional_rnn_ave": lambda: L.Bidirectional(L.SimpleRNN(3, return_sequences=True), merge_mode="ave"),
    "bidirectional_lstm_mul": lambda: L.Bidirectional(L.LSTM(3), merge_mode="mul"),
}


@pytest.mark.parametrize("variant", sorted(RECURRENT))
def test_recurrent_layer_unrolls_to_what_keras_computes(variant):
    """The unrolled steps compute the layer (alone: its output compared, no head), and the
    slice of a model with it has synapse counts on each of its kernels, summed over steps."""
    layer = _model(RECURRENT[variant](), head=False)
    x = _sequences()
    graph = nnslicer.lift(layer)
    assert verify(graph, layer, x, tolerance=EXACT) <= EXACT
    model = _model(RECURRENT[variant]())
    for granularity in ("element", "channel"):
        slicer = nnslicer.Slicer(model, granularity=granularity).fit(x)
        graph = slicer.graph_
        owners = [op for op in graph.ops if op.kind == "dense" and "shares" not in op.params
                  and op.layer_class != "Dense"]
        sharers = [op for op in graph.ops if "shares" in op.params]
        assert sharers and all(graph[op.params["shares"]] in owners for op in sharers)
        assert all(op.synapse_shape == graph[op.synapse_owner].synapse_shape for op in sharers)
        counts = slicer.slice(x[:8]).synapse_counts
        assert set(counts) == set(graph.weighted_ops)
        assert not any(op.name in counts for op in sharers)
        assert any(np.count_nonzero(counts[op.name]) for op in owners), granularity


def test_shared_kernels_are_counted_once():
    """A recurrent layer's synapses are its kernels' weights, once however many steps use them."""
    model = _model(L.LSTM(4))
    graph = nnslicer.lift(model)
    lstm = model.layers[1]
    assert graph.n_synapses() == np.prod(lstm.cell.kernel.shape) + np.prod(lstm.cell.recurrent_kernel.shape) + 4 * 3
    assert len(graph.weighted_ops) == 3


def test_variable_length_sequences_are_refused_with_the_fix():
    model = keras.Sequential([keras.Input((None, FEATURES)), L.LSTM(3), L.Dense(2)])
    with pytest.raises(UnsupportedLayerError, match=r"variable length.*fix the sequence length"):
        nnslicer.lift(model)


def test_refused_recurrent_settings_are_named():
    x_in = keras.Input((STEPS, FEATURES))
    out, h, c = L.LSTM(3, return_state=True)(x_in)
    with pytest.raises(UnsupportedLayerError, match="more than one output"):
        nnslicer.lift(keras.Model(x_in, out))


def _padded_tokens(n=32, seed=0, steps=STEPS):
    """Token ids 1..19 with padding zeros: trailing (0 to 4) and, in some rows, leading."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 20, (n, steps))
    for i, row in enumerate(tokens):
        row[steps - i % 5:] = 0
    tokens[::5, :2] = 0  # rows without trailing padding
    return tokens


MASKED = {
    "lstm": lambda e: L.LSTM(4)(e),
    "lstm_sequences_average": lambda e: L.GlobalAveragePooling1D()(L.LSTM(4, return_sequences=True)(e)),
    "gru_backwards": lambda e: L.GRU(3, go_backwards=True)(e),
    "gru_reset_before_sequences": lambda e: L.GlobalAveragePooling1D()(
        L.GRU(3, reset_after=False, return_sequences=True)(e)),
    "simple_rnn": lambda e: L.SimpleRNN(3)(e),
    "bidirectional_sequences": lambda e: L.GlobalAveragePooling1D()(
        L.Bidirectional(L.LSTM(3, return_sequences=True))(e)),
    "bidirectional_gru": lambda e: L.Bidirectional(L.GRU(3))(e),
    "average": lambda e: L.GlobalAveragePooling1D()(L.Dense(4)(e)),
    "self_attention": lambda e: L.GlobalAveragePooling1D()(L.MultiHeadAttention(2, 2)(e, e)),
    "cross_attention": lambda e: L.GlobalAveragePooling1D()(L.MultiHeadAttention(2, 2)(e, L.Dense(5)(e))),
}


def _masked_model(variant, mask_zero=True):
    keras.utils.set_random_seed(0)
    x_in = keras.Input((STEPS,), dtype="int32")
    e = L.Embedding(20, 5, mask_zero=mask_zero)(x_in)
    return _with_random_biases(keras.Model(x_in, L.Dense(3)(MASKED[variant](e))))


@pytest.mark.parametrize("variant", sorted(MASKED))
def test_masks_are_respected(variant):
    """With Embedding(mask_zero=True), masked steps keep a recurrent state, masked positions
    leave averages and attention: the lift computes it, on padded sequences where the mask
    changes the output (the same model without the mask computes another thing)."""
    model = _masked_model(variant)
    tokens = _padded_tokens()
    graph = nnslicer.lift(model)
    assert any(op.kind == "mask" for op in graph.ops)
    assert verify(graph, model, tokens, tolerance=EXACT) <= EXACT
    unmasked = _masked_model(variant, mask_zero=False)
    assert not np.allclose(np.asarray(model(tokens)), np.asarray(unmasked(tokens)), atol=1e-3)
    slicer = nnslicer.Slicer(model).fit(tokens)
    synapses = 0
    for sample in tokens[:6]:  # a padding position (masked) is never in the slice
        sl = slicer.slice(sample)
        synapses += sl.n_synapses
        assert not sl.neuron_counts[graph.input][sample == 0].any()
    assert synapses > 0


def test_a_mask_reaching_a_layer_that_cannot_read_it_is_refused():
    x_in = keras.Input((STEPS,), dtype="int32")
    x = L.Dense(3)(L.Embedding(20, 4, mask_zero=True)(x_in))
    model = keras.Model(x_in, L.Softmax(name="probabilities")(x))
    with pytest.raises(UnsupportedLayerError, match=r"'probabilities' \(Softmax\): a Keras mask"):
        nnslicer.lift(model)


# --------------------------------------------------------------------------- attention
def _attention(**call):
    """Self-attention (or cross-attention with ``cross``) of a sequence after a Dense."""
    def build():
        keras.utils.set_random_seed(0)
        options = call.pop("layer", {})
        x_in = keras.Input((STEPS, FEATURES))
        x = L.Dense(8)(x_in)
        value = L.Dense(6, activation="tanh")(x) if call.pop("cross", False) else x
        y = L.MultiHeadAttention(**{"num_heads": 2, "key_dim": 3, **options})(x, value, **call)
        return _with_random_biases(keras.Model(x_in, y))
    return build


ATTENTION = {
    "self": _attention(),
    "cross": _attention(cross=True),
    "causal": _attention(use_causal_mask=True),
    "cross_causal_no_bias": _attention(cross=True, use_causal_mask=True, layer={"use_bias": False}),
    "value_dim_and_output_shape": _attention(layer={"value_dim": 4, "output_shape": 7}),
    "one_head": _attention(layer={"num_heads": 1, "key_dim": 8}),
    "sliding_window": _attention(layer={"sliding_window": 2}),
}


@pytest.mark.parametrize("variant", sorted(ATTENTION))
def test_attention_lifts_to_what_keras_computes(variant):
    model = ATTENTION[variant]()
    x = _sequences()
    graph = nnslicer.lift(model)
    assert verify(graph, model, x, tolerance=EXACT) <= EXACT
    kinds = [op.kind for op in graph.ops if op.layer == model.layers[-1].name]
    assert kinds == ["dense", "dense", "dense", "constant", "matmul", "softmax", "matmul", "dense"]
    classifier = keras.Model(model.input, L.Dense(3)(L.GlobalAveragePooling1D()(model.output)))
    for granularity in ("element", "channel"):
        sl = nnslicer.Slicer(classifier, granularity=granularity).fit(x).slice(x[:4], target=0)
        projections = [op.name for op in nnslicer.lift(classifier).ops if op.kind == "dense"][1:-1]
        assert any(np.count_nonzero(sl.synapse_counts[name]) for name in projections), granularity


def test_attention_scores_are_heads_last():
    """Scores and probabilities are [queries, keys, heads]: a channel of theirs is a head."""
    graph = nnslicer.lift(ATTENTION["cross"](), granularity="channel")
    name = graph.ops[-1].layer
    assert graph[f"{name}/scores"].shape == (STEPS, STEPS, 2)
    assert graph.neuron_shape(f"{name}/softmax") == (2,)


def test_attention_settings_nnslicer_cannot_lift_are_named():
    x_in = keras.Input((STEPS, FEATURES))
    mha = L.MultiHeadAttention(2, 3)
    y, scores = mha(x_in, x_in, return_attention_scores=True)
    with pytest.raises(UnsupportedLayerError, match="more than one output|return_attention_scores"):
        nnslicer.lift(keras.Model(x_in, y))
    gated = keras.Model(x_in, L.MultiHeadAttention(2, 3, use_gate=True)(x_in, x_in))
    with pytest.raises(UnsupportedLayerError, match="use_gate"):
        nnslicer.lift(gated)
    images = keras.Input((4, 4, 3))
    over_map = keras.Model(images, L.MultiHeadAttention(2, 3)(images, images))
    with pytest.raises(UnsupportedLayerError, match="not sequences"):
        nnslicer.lift(over_map)


# --------------------------------------------------------------------------- text
def _text_model():
    keras.utils.set_random_seed(0)
    x_in = keras.Input((STEPS,), dtype="int32")
    x = L.Embedding(20, 4, name="embedding")(x_in)
    x = L.Conv1D(6, 3, activation="relu", padding="causal")(x)
    x = L.GlobalMaxPooling1D()(x)
    return _with_random_biases(keras.Model(x_in, L.Dense(3)(x)))


def _tokens(n=32, seed=0):
    return np.random.default_rng(seed).integers(0, 20, size=(n, STEPS))


def test_embedding_model_lifts_and_takes_integer_tokens():
    model = _text_model()
    tokens = _tokens()
    graph = nnslicer.lift(model)
    assert verify(graph, model, tokens, tolerance=EXACT) <= EXACT
    slicer = nnslicer.Slicer(model).fit(tokens)
    sl = slicer.slice(tokens[0])
    embedding = sl.synapse_counts["embedding"]
    rows = np.flatnonzero(np.abs(embedding).sum(axis=1))
    assert len(rows) and set(rows) <= set(tokens[0].tolist())  # only the sample's tokens' rows
    assert np.count_nonzero(sl.neuron_counts[graph.input])  # token positions


def test_embedding_counts_route_to_positions_and_rows():
    """Element (p, d) of the lookup sends its count to position p and to row token_p, column d;
    at channel granularity feature d sends it to every position and every position's row."""
    from nnslicer.backward import backward
    from nnslicer.forward import Tape

    x_in = keras.Input((3,), dtype="int32")
    emb = L.Embedding(5, 2, name="emb")(x_in)
    lookup = keras.Model(x_in, emb)
    pooled = keras.Model(x_in, L.GlobalAveragePooling1D(name="gap")(emb))  # channel granularity's output
    tokens = np.array([[4.0, 1.0, 4.0]], np.float32)

    def counts(granularity, targets):
        graph = nnslicer.lift(lookup if granularity == "element" else pooled, granularity)
        acts = {graph.input: tokens, "emb": np.zeros((1, 3, 2)), "gap": np.zeros((1, 2))}
        tape = Tape(acts, {k: v * 0 for k, v in acts.items()}, np.zeros(1, int))
        neurons, synapses = backward(graph, tape, [targets])
        rows = {tuple(map(int, i)): int(synapses["emb"][0][tuple(i)]) for i in np.argwhere(synapses["emb"][0])}
        return neurons[graph.input][0].tolist(), rows

    elements = [int(np.ravel_multi_index(i, (3, 2))) for i in [(0, 1), (2, 1), (1, 0)]]
    assert counts("element", elements) == ([1, 1, 1], {(4, 1): 2, (1, 0): 1})
    assert counts("element", elements[:1]) == ([1, 0, 0], {(4, 1): 1})
    assert counts("channel", [1]) == ([1, 1, 1], {(4, 1): 2, (1, 1): 1})


def test_one_dimensional_window_ops_compute_what_keras_computes():
    x_in = keras.Input((12, 3))
    x = L.Conv1D(4, 3, padding="causal", dilation_rate=2, activation="relu")(x_in)
    x = L.ZeroPadding1D((1, 2))(x)
    x = L.Conv1D(4, 3, strides=2, padding="same")(x)
    x = L.DepthwiseConv1D(3, depth_multiplier=2, padding="same")(x)
    x = L.SeparableConv1D(4, 2, padding="valid")(x)
    x = L.MaxPooling1D(2, padding="same")(x)
    x = L.UpSampling1D(3)(x)
    x = L.Cropping1D((1, 1))(x)
    x = L.AveragePooling1D(2, strides=1)(x)
    y = L.Concatenate()([L.GlobalMaxPooling1D()(x), L.GlobalAveragePooling1D()(x)])
    model = _with_random_biases(keras.Model(x_in, y))
    x = np.random.default_rng(0).normal(size=(16, 12, 3)).astype("float32")
    assert verify(nnslicer.lift(model), model, x, tolerance=EXACT) <= EXACT


# --------------------------------------------------------------------------- pictures
def test_attention_view_draws_each_heads_counts(tmp_path):
    """One heat map a layer and head: the slice's counts on that head's probabilities, rows
    query positions, columns key positions; refused at channel granularity and without attention."""
    from nnslicer.errors import InvalidParameterError
    from nnslicer.pictures import attention_maps, to_dot, view_graph

    model = ATTENTION["cross"]()
    classifier = keras.Model(model.input, L.Dense(3)(L.GlobalAveragePooling1D()(model.output)))
    x = _sequences()
    slicer = nnslicer.Slicer(classifier).fit(x)
    sl = slicer.slice(x[:6], target=None)
    v = view_graph(sl, "attention", graph=slicer.graph_)
    call = model.layers[-1].name
    probabilities = sl.neuron_counts[f"{call}/softmax"]
    assert sorted(v.nodes) == [f"{call}:head0", f"{call}:head1"]
    for h in range(2):
        np.testing.assert_array_equal(v.nodes[f"{call}:head{h}"]["heat"], probabilities[:, :, h])
    assert np.abs(probabilities).sum() > 0
    assert set(attention_maps(slicer.graph_, sl)) == {(call, 0), (call, 1)}
    dot = to_dot(sl, "attention", graph=slicer.graph_)
    assert "label=<<TABLE" in dot and dot.count("<TR>") == 2 * (STEPS + 2)
    path = nnslicer.render(sl, tmp_path / "attention.svg", view="attention", graph=slicer.graph_)
    assert open(path).read().count("<polygon fill=") >= 2 * STEPS * STEPS  # a cell a query and key
    channel = nnslicer.Slicer(classifier, granularity="channel").fit(x)
    with pytest.raises(InvalidParameterError, match="element-granularity"):
        view_graph(channel.slice(x[0]), "attention", graph=channel.graph_)
    recurrent = nnslicer.Slicer(_model(L.LSTM(3))).fit(x)
    with pytest.raises(InvalidParameterError, match="no attention layer"):
        view_graph(recurrent.slice(x[0]), "attention", graph=recurrent.graph_)


def test_collapsed_view_draws_a_layer_call_as_one_box():
    """Attention's eight ops, and a recurrent layer's unrolled steps, are one box each: the box
    shows the layer's output neurons and counts every one of its kernels' synapses."""
    from nnslicer.pictures import view_graph

    inp = keras.Input((STEPS, FEATURES))
    x = L.LSTM(4, return_sequences=True, name="lstm")(inp)
    x = L.MultiHeadAttention(2, 2, name="mha")(x, x)
    model = keras.Model(inp, L.Dense(3, name="head")(L.GlobalAveragePooling1D(name="gap")(x)))
    x = _sequences()
    slicer = nnslicer.Slicer(model).fit(x)
    sl = slicer.slice(x[:2], target=None)
    v = view_graph(sl, "collapsed", graph=slicer.graph_)
    boxes = {c["_group"]: c for c in v.graph["clusters"].values() if "_group" in c}
    assert set(boxes) == {slicer.graph_.input, "lstm", "mha", "gap", "head"}
    assert boxes["mha"]["label"].splitlines()[1] == f"MultiHeadAttention: 8 ops {STEPS}×4"
    assert boxes["lstm"]["label"].splitlines()[1].startswith("LSTM: ")
    graph = slicer.graph_
    mha_synapses = sum(graph[n].n_synapses for n in graph.weighted_ops if graph[n].layer == "mha")
    assert f"/{mha_synapses:,} (net" in boxes["mha"]["label"]
    assert "lstm (" in sl.summary() and "mha (8 ops)" in sl.summary()


@pytest.mark.slow
@pytest.mark.parametrize("script", ["slice_vit.py", "slice_rnn.py"])
def test_the_sequence_examples_run(script, tmp_path):
    """The examples train on Fashion-MNIST (Debian's dataset-fashion-mnist) and slice."""
    import subprocess
    import sys

    from nnslicer.datasets import FASHION_MNIST_ROOT

    if not os.path.isdir(FASHION_MNIST_ROOT):
        pytest.skip("needs Debian's dataset-fashion-mnist")
    path = os.path.join(os.path.dirname(__file__), "..", "examples", script)
    done = subprocess.run([sys.executable, path, "--out", str(tmp_path), "--epochs", "1", "--train", "2000"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sliced in" in done.stdout and list(tmp_path.iterdir())


def test_render_attention_from_the_command_line(tmp_path, capsys):
    """``nnslicer slice`` then ``nnslicer render --view attention`` on a saved attention model."""
    from nnslicer.cli import main

    model = ATTENTION["self"]()
    classifier = keras.Model(model.input, L.Dense(3)(L.GlobalAveragePooling1D()(model.output)))
    path = str(tmp_path / "attention.keras")
    classifier.save(path)
    x = _sequences()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "one.npy", x[:1])
    assert main(["profile", path, "--data", str(tmp_path / "x.npy"), "-o", str(tmp_path / "p.npz")]) == 0
    assert main(["slice", path, "--profile", str(tmp_path / "p.npz"), "--input", str(tmp_path / "one.npy"),
                 "-o", str(tmp_path / "s.npz")]) == 0
    out = str(tmp_path / "attention.svg")
    assert main(["render", str(tmp_path / "s.npz"), "--model", path, "--view", "attention", "-o", out]) == 0
    assert os.path.getsize(out) > 0 and "wrote" in capsys.readouterr().out
    assert main(["render", path, "--view", "attention", "-o", out]) == 2  # a model alone has no slice


@pytest.mark.parametrize("kind", ["vit", "lstm", "text"])
def test_class_focused_pruning_masks_attention_recurrent_and_embedding_kernels(kind):
    """Attention's projections, an LSTM's two kernels (one mask each, whatever the steps) and an
    Embedding's table cannot be cut: their pruned synapses are zeros of the Keras weights the
    lift located (``params["variable"]``), exactly ``round(ratio * n)`` of each."""
    from analyses.pruning import class_focused_prune, editable_ops, maskable_ops
    from nnslicer.models import lstm_reader, text_cnn, vit

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    if kind == "vit":
        model, x = vit((8, 8, 1), 3, patch=4, width=8, depth=1, heads=2, mlp=16), rng.random((40, 8, 8, 1))
    elif kind == "lstm":
        model, x = lstm_reader((STEPS, FEATURES), 3, units=4), rng.normal(size=(40, STEPS, FEATURES))
    else:
        model, x = text_cnn(STEPS, 20, 3, width=4, filters=5, kernel_size=3), rng.integers(0, 20, (40, STEPS))
    x = x.astype("float32")
    y = np.asarray(model(x)).argmax(1)
    slicer = nnslicer.Slicer(model).fit(x, y)
    graph = slicer.graph_
    pruned, _ = class_focused_prune(model, slicer, x, y, [int(y[0])], 0.5, mean_compensation=False, remove=False)
    before = {layer.name: layer.get_weights() for layer in model.layers}
    after = {layer.name: layer.get_weights() for layer in pruned.layers}
    masked = maskable_ops(graph, editable_ops(model, graph))
    assert any(graph[n].layer_class in ("MultiHeadAttention", "LSTM", "Embedding") for n in masked)
    located = [graph[n].params["variable"] for n in masked]
    assert len({tuple(v) for v in located}) == len(located)  # one weight each
    for layer, index in located:
        w, v = before[layer][index], after[layer][index]
        assert v.shape == w.shape and np.count_nonzero(v) == w.size - round(0.5 * w.size), (layer, index)
    assert verify(nnslicer.lift(pruned), pruned, x[:8], tolerance=EXACT) <= EXACT


def _refused(model, pattern, granularity="element"):
    with pytest.raises(UnsupportedLayerError, match=pattern):
        nnslicer.lift(model, granularity)


def test_settings_the_new_lifters_cannot_lift_are_named():
    """Each refusal of the sequence lifters, by its reason."""
    seq = keras.Input((STEPS, FEATURES))
    images = keras.Input((4, 4, 3))
    _refused(keras.Model(images, L.UpSampling2D(2, interpolation="bilinear")(images)), r"interpolation='bilinear'")
    mha = L.MultiHeadAttention(2, 2)
    _refused(keras.Model(seq, mha(seq, seq, attention_mask=np.ones((1, STEPS, STEPS), bool))),
             "an attention_mask argument")
    _refused(keras.Model(seq, L.MultiHeadAttention(2, 2, output_shape=(2, 3))(seq, seq)), "output_shape")
    state = L.Dense(3)(L.Flatten()(seq))
    _refused(keras.Model(seq, L.SimpleRNN(3, name="rnn")(seq, initial_state=[state])), r"'rnn' \(SimpleRNN\): an initial state")
    tokens = keras.Input((2, STEPS), dtype="int32")  # a grid of tokens: element granularity only
    grid = keras.Model(tokens, L.Embedding(20, 4)(tokens))
    nnslicer.lift(grid)
    _refused(grid, "looks up tokens of shape", "channel")
    values = keras.Input((STEPS,))
    _refused(keras.Model(values, keras.ops.cast(keras.ops.not_equal(values, values * 2.0), "float32")),
             "not_equal of other than a tensor and a constant")
