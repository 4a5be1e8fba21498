"""The fast engine equals a slow, literal reference of Algorithm 1, neuron by neuron.

``tests/reference.py`` walks every neuron and candidate in plain Python, straight from SPEC.md
section 3, sharing no code with ``nnslicer.ops`` or ``nnslicer.select``. Here random small
models (MLPs, CNNs with every supported window op, residual nets, concatenation) are sliced by
both, for every rule, granularity, baseline and propagation, and every neuron and synapse count
must be equal.
"""

import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

import nnslicer  # noqa: E402
from nnslicer.backward import backward  # noqa: E402
from nnslicer.forward import forward  # noqa: E402

from reference import (hw, kernel4, receptive_field, output_hw, reference_backward,  # noqa: E402
                       select_effective_path,

                       select_nnslicer, select_paper)

# Every test here runs with the fused numba kernels and with the numpy path.
pytestmark = pytest.mark.usefixtures("each_kernel")

L = keras.layers
NUM_CLASSES = 5
RULES = ("nnslicer", "paper", "effective_path")
THETA = {"nnslicer": 0.2, "paper": 0.2, "effective_path": 0.5}


# --------------------------------------------------------------------------- random models
def _randomize_bn(model, rng):
    """Give every BatchNormalization non-trivial statistics, so it is no identity."""
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.5, 1.5, n).astype("float32"),    # gamma
                rng.normal(0, 0.3, n).astype("float32"),       # beta
                rng.normal(0, 0.3, n).astype("float32"),       # moving mean
                rng.uniform(0.5, 2.0, n).astype("float32"),    # moving variance
            ])


def mlp():
    return keras.Sequential([
        keras.Input((8,)), L.Dense(12, activation="relu"), L.Dropout(0.3),
        L.Dense(10, activation="tanh"), L.Dense(7), L.Dense(NUM_CLASSES, activation="softmax"),
    ], name="mlp")


def cnn_same():
    """Conv same/valid, BN, max pool (same), flatten, dense."""
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        L.Conv2D(4, 3, padding="same", activation="relu"),
        L.BatchNormalization(),
        L.MaxPooling2D(2, padding="same"),
        L.Conv2D(3, 2, padding="valid"),
        L.Activation("tanh"),
        L.Flatten(),
        L.Dense(NUM_CLASSES, activation="softmax"),
    ], name="cnn_same")


def cnn_strided():
    """Zero padding, strided valid conv, ReLU layer, depthwise conv, BN, avg pool, GAP."""
    return keras.Sequential([
        keras.Input((7, 7, 2)),
        L.ZeroPadding2D(((1, 0), (2, 1))),
        L.Conv2D(4, 3, strides=2, padding="valid"),
        L.ReLU(),
        L.DepthwiseConv2D(3, padding="same", depth_multiplier=2),
        L.BatchNormalization(),
        L.Activation("relu"),
        L.AveragePooling2D(2, strides=1, padding="same"),
        L.GlobalAveragePooling2D(),
        L.Dense(NUM_CLASSES),
    ], name="cnn_strided")


def cnn_dilated():
    """Dilated same conv (stride 2), valid avg pool, strided depthwise, max pool (valid), GMP."""
    return keras.Sequential([
        keras.Input((8, 8, 2)),
        L.Conv2D(3, 3, dilation_rate=2, padding="same", activation="relu"),
        L.AveragePooling2D(2, padding="valid"),
        L.DepthwiseConv2D(2, strides=1, padding="valid", activation="tanh"),
        L.MaxPooling2D(2, strides=1, padding="valid"),
        L.Conv2D(4, 1, strides=2, padding="same"),
        L.GlobalMaxPooling2D(),
        L.Dense(6, activation="relu"),
        L.Dense(NUM_CLASSES, activation="softmax"),
    ], name="cnn_dilated")


def resnet():
    """Two residual blocks (identity and 1x1 strided projection), pre-activation style."""
    x_in = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 3, padding="same")(x_in)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    y = L.Conv2D(4, 3, padding="same", activation="relu")(x)
    y = L.Conv2D(4, 3, padding="same")(y)
    x = L.Add()([x, y])
    x = L.ReLU()(x)
    y = L.Conv2D(6, 3, strides=2, padding="same", activation="relu")(x)
    y = L.BatchNormalization()(y)
    y = L.Conv2D(6, 3, padding="same")(y)
    shortcut = L.Conv2D(6, 1, strides=2, padding="valid")(x)
    x = L.Add()([shortcut, y])
    x = L.Activation("relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(NUM_CLASSES, activation="softmax")(x)
    return keras.Model(x_in, out, name="resnet")


def concat_net():
    """Channel concatenation of two branches, cropping, then a dense-level concatenation."""
    x_in = keras.Input((6, 6, 2))
    a = L.Conv2D(3, 1, activation="relu")(x_in)
    b = L.Conv2D(2, 3, padding="same", activation="relu")(x_in)
    x = L.Concatenate()([a, b])
    x = L.Cropping2D(((1, 0), (0, 1)))(x)
    x = L.MaxPooling2D(2)(x)
    f = L.Flatten()(x)
    g = L.GlobalAveragePooling2D()(x)
    h = L.Dense(4, activation="relu")(f)
    x = L.Concatenate()([h, g, L.Dropout(0.5)(g)])
    out = L.Dense(NUM_CLASSES)(x)
    return keras.Model(x_in, out, name="concat_net")


def mlp_acts():
    """Rank-1 batch norm and the other activations (paper propagation: sign rule, not ReLU's)."""
    return keras.Sequential([
        keras.Input((6,)), L.Dense(10), L.BatchNormalization(), L.LeakyReLU(0.1),
        L.Dense(9, activation="sigmoid"), L.Dense(8), L.ReLU(max_value=6.0),
        L.Dense(8, activation="elu"), L.Activation("linear"), L.Dense(NUM_CLASSES),
    ], name="mlp_acts")


def cnn_misc():
    """Dilated depthwise (multiplier 3), strided depthwise, spatial concatenation (height and
    width), strided same max pool and strided same avg pool with partial windows."""
    x_in = keras.Input((7, 6, 2))
    x = L.DepthwiseConv2D(3, dilation_rate=2, padding="same", depth_multiplier=3, activation="relu")(x_in)
    y = L.DepthwiseConv2D(2, strides=2, padding="valid")(x)   # 3x3x6
    z = L.MaxPooling2D(3, strides=2, padding="same")(x)       # 4x3x6
    x = L.Concatenate(axis=1)([y, z])                         # 7x3x6
    w = L.AveragePooling2D(3, strides=2, padding="same")(x)   # 4x2x6
    x = L.Conv2D(6, 2, strides=(2, 1), padding="valid")(x)     # 3x2x6
    x = L.Concatenate(axis=2)([x, L.Cropping2D(((1, 0), (0, 0)))(w)])  # 3x4x6
    x = L.Conv2D(4, (2, 3), padding="same", activation="tanh")(x)
    x = L.GlobalMaxPooling2D()(x)
    return keras.Model(x_in, L.Dense(NUM_CLASSES)(x), name="cnn_misc")


def const_net():
    """Rescaling and Keras op layers with constants (as MobileNetV3 writes its hard-swish,
    relu6(x + 3) * c), a tensor subtracted from a constant, a negative divisor."""
    x_in = keras.Input((5, 5, 2))
    x = L.Rescaling(2.0, offset=-0.5)(x_in)
    x = L.Conv2D(4, 3, padding="same")(x)
    x = L.ReLU(6.0)(x + 3.0)
    x = keras.ops.multiply(x, 1.5) - 0.25
    x = L.Conv2D(3, 2, activation="tanh")(1.0 - x)
    return keras.Model(x_in, L.Dense(NUM_CLASSES)(L.Flatten()(keras.ops.divide(x, -0.5))), name="const_net")


def keepdims_net():
    """Normalization, keepdims global pooling (a squeeze-and-excite's first half: pooled to a
    1x1 map, a 1x1 conv), newer activations (hard_silu, mish, celu)."""
    x_in = keras.Input((5, 5, 3))
    x = L.Normalization(mean=[0.1, -0.2, 0.3], variance=[0.5, 2.0, 1.0])(x_in)
    x = L.Conv2D(6, 3, padding="same", activation="hard_silu")(x)
    s = L.GlobalAveragePooling2D(keepdims=True)(x)
    s = L.Conv2D(4, 1, activation="mish")(s)
    m = L.GlobalMaxPooling2D(keepdims=True)(L.Conv2D(4, 2, activation="celu")(x))
    x = L.Concatenate()([L.Flatten()(s), L.Flatten()(m)])
    return keras.Model(x_in, L.Dense(NUM_CLASSES)(x), name="keepdims_net")


def se_net():
    """Squeeze-and-excite (a gate of shape 1x1xC times the map; linear here, so that its share
    is not always the smaller), a product of two maps, a product of two vectors."""
    x_in = keras.Input((5, 5, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu")(x_in)
    g = L.Conv2D(4, 1)(L.Conv2D(3, 1, activation="tanh")(L.GlobalAveragePooling2D(keepdims=True)(x)))
    x = L.Multiply()([x, g])
    x = x * L.Conv2D(4, 3, padding="same")(x_in)
    v = L.Flatten()(L.MaxPooling2D(2)(x))
    v = L.Multiply()([L.Dense(8, activation="relu")(v), L.Dense(8, activation="sigmoid")(v)])
    return keras.Model(x_in, L.Dense(NUM_CLASSES)(v), name="se_net")


def separable_net():
    """SeparableConv2D (two ops: depthwise, then pointwise with the bias): strided with a depth
    multiplier, dilated without a bias."""
    return keras.Sequential([
        keras.Input((7, 7, 2)),
        L.SeparableConv2D(4, 3, strides=2, padding="same", depth_multiplier=2, activation="relu"),
        L.SeparableConv2D(3, 2, dilation_rate=2, use_bias=False), L.Flatten(), L.Dense(NUM_CLASSES),
    ], name="separable_net")


def diff_net():
    """Subtract (the layer, and a difference of two tensors written with -)."""
    x_in = keras.Input((5, 5, 2))
    a = L.Conv2D(4, 3, padding="same", activation="relu")(x_in)
    b = L.Conv2D(4, 3, padding="same")(x_in)
    x = L.Subtract()([a, b])
    x = L.Conv2D(3, 2, activation="relu")(x) - L.Conv2D(3, 2)(b)
    return keras.Model(x_in, L.Dense(NUM_CLASSES)(L.Flatten()(x)), name="diff_net")


def layer_norm_net():
    """LayerNormalization of a feature map and of a vector (without its scale)."""
    return keras.Sequential([
        keras.Input((5, 5, 2)), L.Conv2D(4, 3, padding="same", activation="relu"), L.LayerNormalization(),
        L.Conv2D(3, 2), L.Flatten(), L.Dense(8), L.LayerNormalization(scale=False, epsilon=0.01),
        L.Dense(NUM_CLASSES),
    ], name="layer_norm_net")


def convnext_net():
    """ConvNeXt's parts: a nested Sequential stem, a grouped 3x3 conv with one channel a group,
    LayerNormalization, Dense at each position of a feature map, LayerScale, a residual Add, a
    grouped conv with two channels a group, and a nested functional block called twice."""
    from keras.src.applications.convnext import LayerScale

    stem = keras.Sequential([L.Conv2D(4, 2, padding="same"), L.LayerNormalization()], name="stem")
    b_in = keras.Input((6, 6, 4))
    b = L.Conv2D(4, 3, padding="same", groups=4)(b_in)
    b = L.Dense(8, activation="gelu")(L.LayerNormalization()(b))
    b = LayerScale(0.5, 4)(L.Dense(4)(b))
    block = keras.Model(b_in, L.Add()([b_in, b]), name="block")
    x_in = keras.Input((6, 6, 3))
    x = block(block(stem(x_in)))
    x = L.Conv2D(6, 3, strides=2, groups=2, activation="relu")(x)
    return keras.Model(x_in, L.Dense(NUM_CLASSES)(L.Flatten()(x)), name="convnext_net")


def conv1d_net():
    """The 1-D window ops over a sequence: causal dilated Conv1D, padding, strided Conv1D,
    DepthwiseConv1D, SeparableConv1D, pooling, upsampling, cropping, both global poolings, and
    Dense at each position."""
    x_in = keras.Input((12, 3))
    x = L.Conv1D(4, 3, padding="causal", dilation_rate=2, activation="relu")(x_in)
    x = L.ZeroPadding1D((1, 2))(x)
    x = L.Conv1D(4, 3, strides=2, padding="same")(x)
    x = L.DepthwiseConv1D(3, depth_multiplier=2, padding="same", activation="tanh")(x)
    x = L.SeparableConv1D(4, 2, padding="valid")(x)
    x = L.MaxPooling1D(2, padding="same")(x)
    x = L.UpSampling1D(3)(x)
    x = L.Cropping1D((1, 1))(x)
    x = L.AveragePooling1D(2, strides=1)(x)
    x = L.Dense(5, activation="relu")(x)
    pooled = L.Concatenate()([L.GlobalMaxPooling1D()(x), L.GlobalAveragePooling1D()(x)])
    return keras.Model(x_in, L.Dense(NUM_CLASSES)(pooled), name="conv1d_net")


def attention_net():
    """A transformer's parts over a sequence: Dense at each position, LayerNormalization,
    self-attention (2 heads, value_dim unlike key_dim), a residual Add, causal cross-attention
    without biases, a GELU MLP and global average pooling."""
    x_in = keras.Input((5, 4))
    x = L.Dense(6)(x_in)
    y = L.LayerNormalization()(x)
    x = L.Add()([x, L.MultiHeadAttention(2, 3, value_dim=2)(y, y)])
    memory = L.Dense(4, activation="tanh")(x)
    x = L.MultiHeadAttention(2, 2, use_bias=False)(x, memory, use_causal_mask=True)
    x = L.Dense(8, activation="gelu")(x)
    return keras.Model(x_in, L.Dense(NUM_CLASSES)(L.GlobalAveragePooling1D()(x)), name="attention_net")


def rnn_net():
    """Recurrent layers unrolled: a SimpleRNN's sequence read backwards by an LSTM."""
    return keras.Sequential([
        keras.Input((4, 3)), L.SimpleRNN(3, return_sequences=True),
        L.LSTM(3, go_backwards=True), L.Dense(NUM_CLASSES),
    ], name="rnn_net")


def gru_net():
    """GRU both ways: reset_after=False over the sequence, then a Bidirectional GRU
    (reset_after=True) whose two halves are averaged."""
    return keras.Sequential([
        keras.Input((4, 3)), L.GRU(3, reset_after=False, return_sequences=True),
        L.Bidirectional(L.GRU(2, return_sequences=True), merge_mode="ave"), L.Flatten(),
        L.Dense(NUM_CLASSES),
    ], name="gru_net")


def masked_text_net():
    """Padded token sequences: Embedding(mask_zero=True), whose mask an LSTM (masked steps keep
    their state), an attention (masked keys) and a masked average read."""
    x_in = keras.Input((5,), dtype="int32")
    x = L.Embedding(12, 4, mask_zero=True)(x_in)
    x = L.LSTM(3, return_sequences=True)(x)
    x = L.MultiHeadAttention(1, 2)(x, x)
    return keras.Model(x_in, L.Dense(NUM_CLASSES)(L.GlobalAveragePooling1D()(x)), name="masked_text_net")


def _inputs(model, rng, n):
    """``n`` random inputs: normal values, or for token ids 1..V-1 with 0 to 3 padding zeros at
    the end (and a few at the start)."""
    shape = model.input_shape[1:]
    if not model.inputs[0].dtype.startswith("int"):
        return rng.normal(size=(n,) + shape).astype("float32")
    tokens = rng.integers(1, 12, (n,) + shape)
    for row, pad in zip(tokens, rng.integers(0, 4, n)):
        row[len(row) - pad:] = 0
    tokens[::7, 0] = 0
    return tokens.astype("float32")


def _randomize_biases(model, rng):
    """Recurrent layers' biases away from zero (their initial value), so they take part."""
    for layer in model.layers:
        if isinstance(layer, (L.RNN, L.Bidirectional)):
            for weight in layer.weights:
                if weight.path.endswith("bias"):
                    weight.assign(rng.normal(0, 0.5, weight.shape).astype("float32"))


def _randomize_scales(model, rng):
    """LayerScale factors away from their initial value (the same for every channel)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _randomize_scales(layer, rng)
        elif type(layer).__name__ == "LayerScale":
            layer.gamma.assign(rng.uniform(-1.5, 1.5, layer.gamma.shape).astype("float32"))


def reshape_net():
    """Reshape between rank 1 and feature maps (element granularity only: a reshape into a
    feature map has no channel reading)."""
    return keras.Sequential([
        keras.Input((12,)), L.Dense(18, activation="relu"), L.Reshape((3, 3, 2)),
        L.Conv2D(3, 2, activation="relu"), L.Reshape((12,)), L.Dense(NUM_CLASSES),
    ], name="reshape_net")


def cnn_wide():
    """A deeper, wider CNN (slow tests only)."""
    return keras.Sequential([
        keras.Input((12, 12, 3)),
        L.Conv2D(8, 3, padding="same", activation="relu"), L.BatchNormalization(),
        L.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
        L.DepthwiseConv2D(3, padding="same"), L.BatchNormalization(), L.ReLU(),
        L.MaxPooling2D(2), L.Conv2D(8, 3, padding="same", activation="relu"),
        L.Flatten(), L.Dense(16, activation="relu"), L.Dense(NUM_CLASSES),
    ], name="cnn_wide")


MODELS = {f.__name__: f for f in (mlp, mlp_acts, cnn_same, cnn_strided, cnn_dilated, cnn_misc, resnet,
                                  concat_net, reshape_net, const_net, keepdims_net, se_net, separable_net,
                                  diff_net, layer_norm_net, convnext_net, conv1d_net,
                                  attention_net, rnn_net, gru_net, masked_text_net)}
ELEMENT_ONLY = {"reshape_net"}
RECURRENT = {"rnn_net", "gru_net", "masked_text_net"}
BUILDERS = dict(MODELS, cnn_wide=cnn_wide)
SLOW_SEEDS = tuple(range(2, 8))


@functools.lru_cache(maxsize=None)
def setup(model_name, seed):
    """A random model, a profiling set with labels, and a few test inputs."""
    keras.utils.set_random_seed(seed)
    model = BUILDERS[model_name]()
    rng = np.random.default_rng(seed)
    _randomize_bn(model, rng)
    _randomize_scales(model, rng)
    _randomize_biases(model, rng)
    x_prof = _inputs(model, rng, 40)
    pred = np.asarray(model(x_prof)).argmax(axis=1)
    # Labels: mostly the model's own predictions (so class means exist), some random.
    y_prof = np.where(rng.random(40) < 0.7, pred, rng.integers(0, NUM_CLASSES, 40))
    x_test = _inputs(model, rng, 3)
    return model, x_prof, y_prof, x_test


@functools.lru_cache(maxsize=None)
def fitted(model_name, seed, granularity, baseline):
    model, x_prof, y_prof, x_test = setup(model_name, seed)
    graph = nnslicer.lift(model, granularity)
    profile = nnslicer.profile(graph, x_prof, y_prof)
    tape = forward(graph, profile, x_test, baseline)
    return graph, profile, tape


def _targets(tape, which):
    if which == "predicted":
        return [[int(p)] for p in tape.predictions]
    return [[0, 2] for _ in tape.predictions]


def assert_counts_equal(engine, ref, what, context):
    """Every tensor's (or op's) counts equal, with a message naming where they differ."""
    assert set(engine) == set(ref), f"{context}: {what} keys differ: {sorted(engine)} vs {sorted(ref)}"
    for name in ref:
        got, want = np.asarray(engine[name]), np.asarray(ref[name])
        assert got.shape == want.shape, f"{context}: {what} {name!r} shape {got.shape} != {want.shape}"
        if not np.array_equal(got, want):
            bad = np.argwhere(got != want)
            first = [tuple(int(v) for v in i) for i in bad[:5]]
            np.testing.assert_array_equal(
                got, want, err_msg=(f"{context}: {what} counts of {name!r} differ at {len(bad)} "
                                    f"index(es), first {first}: engine {[int(got[i]) for i in first]} "
                                    f"vs reference {[int(want[i]) for i in first]}"))


def check_engine_equals_reference(model_name, seed, granularity, rule, baseline, propagation, which):
    if granularity == "channel" and model_name in ELEMENT_ONLY:
        return
    graph, _, tape = fitted(model_name, seed, granularity, baseline)
    targets = _targets(tape, which)
    theta = THETA[rule]
    neurons, synapses = backward(graph, tape, targets, rule, theta, propagation)
    for b, target in enumerate(targets):
        context = (f"model={model_name} seed={seed} granularity={granularity} rule={rule} "
                   f"baseline={baseline} propagation={propagation} sample={b} target={target}")
        ref_n, ref_s = reference_backward(graph, tape, b, target, rule, theta, propagation)
        assert_counts_equal({k: v[b] for k, v in neurons.items()}, ref_n, "neuron", context)
        assert_counts_equal({k: v[b] for k, v in synapses.items()}, ref_s, "synapse", context)


# --------------------------------------------------------------------------- the reference itself
def test_selection_rules_by_hand():
    """The reference's theta rules on cases worked out by hand from SPEC.md section 3."""
    # nnslicer: S = 2.5, theta*|S| = .25; by |c|: 3 (P = 3, off by .5), -1 (P = 2, off by .5),
    # .5 (P = 2.5, exact) -> m* is the 0.5: keep every |c| > .495, i.e. all three.
    assert select_nnslicer([3.0, -1.0, 0.5], 0.1) == [0, 1, 2]
    # theta = .3: theta*|S| = .75 and P_1 = 3 is off by .5 -> keep only the 3.
    assert select_nnslicer([3.0, -1.0, 0.5], 0.3) == [0]
    # S = 2.9: P1 = 3, |3 - 2.9| = .1 < .58 -> keep only 3.
    assert select_nnslicer([3.0, -0.6, 0.5], 0.2) == [0]
    # Step 1: a single candidate stays, even a zero one.
    assert select_nnslicer([0.0], 0.2) == [0]
    # Step 2: |S| = 0.1 < min|c| = 1 -> the branch dies.
    assert select_nnslicer([1.0, -1.1, 1.0, -0.8], 0.2) == []
    # Step 2: |S| < 1e-3 max|c|.
    assert select_nnslicer([5000.0, -4999.9995, 0.0001, 0.0003], 0.2) == []
    # Step 4: near-ties of the last kept one (within bar = 1%) stay; ties keep position order.
    # S = 2.095, theta*|S| = 1.257, P_1 = 1 is off by 1.095 -> m* is the 1.0, band .99.
    assert select_nnslicer([1.0, 0.995, 0.1], 0.6) == [0, 1]
    assert select_nnslicer([1.0, 0.989, 0.1], 0.6) == [0]
    assert select_nnslicer([0.1, 1.0, 0.995], 0.6) == [1, 2]
    # paper: ascending |c| = .1, .2, -.3, 2; sums .1, .3, 0, 2; theta|y| = .35: drop three.
    assert select_paper([2.0, 0.1, -0.3, 0.2], 0.2, y=1.75) == [0]
    # The running sum reaches the limit at once: nothing dropped (no k == 1 exception either).
    assert select_paper([1.0], 0.2, y=1.0) == [0]
    assert select_paper([0.1], 0.2, y=1.0) == []
    # effective_path: positives 4, 3, 1 (sum 8), theta .5 -> 4 (4 >= 4) only.
    assert select_effective_path([1.0, -5.0, 4.0, 3.0], 0.5) == [2]
    assert select_effective_path([1.0, -5.0, 4.0, 3.0], 0.6) == [2, 3]
    assert select_effective_path([-1.0, 0.0], 0.5) == []


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_reference_geometry_matches_tensorflow(model_name):
    """The reference's receptive fields reproduce TensorFlow's conv/pool outputs."""
    graph, _, tape = fitted(model_name, 0, "element", "global")
    for op in graph.ops:
        if op.kind not in ("conv2d", "depthwise_conv2d", "avg_pool", "max_pool"):
            continue
        shape = op.input_shapes[0]  # a sequence [T, C] is read as one row of a map
        x = tape.acts[op.inputs[0]][0].astype(np.float64).reshape(hw(shape) + (shape[-1],))
        y = tape.acts[op.name][0].reshape(hw(op.shape) + (op.shape[-1],))
        assert output_hw(op) == tuple(y.shape[:2]), op.name
        for oh in range(y.shape[0]):
            for ow in range(y.shape[1]):
                taps = [t for t in receptive_field(op, oh, ow)]
                inside = [t for t in taps if t[4]]
                if op.kind == "conv2d":  # group by group
                    k = kernel4(op)
                    groups = op.params.get("groups", 1)
                    want = op.weights["bias"].astype(np.float64).copy()
                    for th, tw, ih, iw, _ in inside:
                        for g, part in enumerate(np.split(x[ih, iw, :], groups)):
                            rows = k[th, tw][:, g * k.shape[3] // groups:(g + 1) * k.shape[3] // groups]
                            want[g * k.shape[3] // groups:(g + 1) * k.shape[3] // groups] += part @ rows.astype(
                                np.float64)
                elif op.kind == "depthwise_conv2d":
                    k = kernel4(op)
                    want = op.weights["bias"].astype(np.float64).copy()
                    for th, tw, ih, iw, _ in inside:
                        want += (x[ih, iw, :, None] * k[th, tw]).reshape(-1)
                elif op.kind == "avg_pool":
                    want = np.mean([x[ih, iw] for _, _, ih, iw, _ in inside], axis=0)
                else:
                    want = np.max([x[ih, iw] for _, _, ih, iw, _ in inside], axis=0)
                np.testing.assert_allclose(y[oh, ow], want, rtol=1e-4, atol=1e-4,
                                           err_msg=f"{model_name}: {op.name} at {(oh, ow)}")


@pytest.mark.parametrize("granularity", ["element", "channel"])
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_reference_is_not_vacuous(model_name, granularity):
    """Reference slices are non-empty, reach the input, and differ between rules."""
    if granularity == "channel" and model_name in ELEMENT_ONLY:
        pytest.skip("no channel reading of a reshape into a feature map")
    graph, _, tape = fitted(model_name, 0, granularity, "global")
    slices, touched = {}, {}
    for rule in RULES:
        per_sample = [reference_backward(graph, tape, b, [int(p)], rule, THETA[rule], "code")
                      for b, p in enumerate(tape.predictions)]
        # Over the test samples, each rule's slices reach the input (but through a recurrent
        # chain of products, where the paper's rule (theta * |y| against shares of a change) and
        # EffectivePath (positive shares only) end the paths within a few steps, or, for the
        # paper's rule, at the logits, whose change is small beside their value).
        exempt = model_name in RECURRENT and rule != "nnslicer"
        reached = sum(np.count_nonzero(n[graph.input]) for n, _ in per_sample)
        assert reached > 0 or exempt, f"{rule}: nothing reaches the input"
        for name in graph.weighted_ops:
            touched[name] = touched.get(name, 0) + sum(np.count_nonzero(s[name]) for _, s in per_sample)
        sizes = [sum(np.count_nonzero(v) for v in s.values()) for _, s in per_sample]
        total = sum(v.size for v in per_sample[0][1].values())
        assert (0 < max(sizes) or exempt and rule == "paper") and max(sizes) < total, \
            f"{rule}: slices keep {sizes} of {total} synapses"
        slices[rule] = tuple({k: np.stack([p[i][k] for p in per_sample]) for k in per_sample[0][i]}
                             for i in (0, 1))
    # Every weighted op has synapses in some slice.
    assert all(touched.values()), f"never-touched ops: {[k for k, v in touched.items() if not v]}"
    for a, b in (("nnslicer", "paper"), ("nnslicer", "effective_path"), ("paper", "effective_path")):
        same = all(np.array_equal(slices[a][1][k], slices[b][1][k]) for k in slices[a][1])
        assert not same, f"rules {a} and {b} give the same synapse counts"
    # Signed counts: the nnslicer rule yields negative counts somewhere, EffectivePath never.
    assert any((v < 0).any() for v in slices["nnslicer"][0].values())
    assert all(set(np.unique(v)) <= {0, 1} for v in slices["effective_path"][0].values())


def test_engine_forward_matches_keras():
    """The tape the reference reads is the Keras model's own computation."""
    for model_name in sorted(MODELS):
        model, x_prof, _, x_test = setup(model_name, 0)
        graph, profile, tape = fitted(model_name, 0, "element", "global")
        np.testing.assert_allclose(tape.acts[graph.output], np.asarray(model(x_test)), rtol=1e-5, atol=1e-5)
        for name, delta in tape.deltas.items():
            np.testing.assert_array_equal(delta, tape.acts[name] - profile.means[name])
        # The profile: global means, and class means over correctly predicted samples.
        _, _, y_prof, _ = setup(model_name, 0)
        acts = forward(graph, profile, x_prof).acts
        pred = acts[graph.logits].argmax(axis=1)
        for name, act in acts.items():
            np.testing.assert_allclose(profile.means[name], act.mean(axis=0, dtype=np.float64),
                                       rtol=1e-5, atol=1e-6, err_msg=name)
            for k in range(NUM_CLASSES):
                members = (pred == y_prof) & (y_prof == k)
                want = act[members].mean(axis=0, dtype=np.float64) if members.any() else profile.means[name]
                np.testing.assert_allclose(profile.class_means[name][k], want, rtol=1e-5, atol=1e-6,
                                           err_msg=f"{name} class {k}")


# --------------------------------------------------------------------------- engine == reference
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("granularity", ["element", "channel"])
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_engine_equals_reference(model_name, granularity, rule):
    """Every rule x granularity x baseline x target, code propagation, seed 0."""
    for baseline in ("global", "class"):
        for which in ("predicted", "multi"):
            check_engine_equals_reference(model_name, 0, granularity, rule, baseline, "code", which)


@pytest.mark.parametrize("rule", ["nnslicer", "paper"])
@pytest.mark.parametrize("granularity", ["element", "channel"])
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_engine_equals_reference_paper_propagation(model_name, granularity, rule):
    for baseline in ("global", "class"):
        check_engine_equals_reference(model_name, 0, granularity, rule, baseline, "paper", "predicted")


def _sweep(model_name, seed):
    for granularity in ("element", "channel"):
        for rule in RULES:
            for baseline in ("global", "class"):
                for propagation in ("code", "paper"):
                    for which in ("predicted", "multi"):
                        check_engine_equals_reference(model_name, seed, granularity, rule, baseline,
                                                      propagation, which)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_engine_equals_reference_all_combinations(model_name):
    """Seed 1: every rule x granularity x baseline x propagation x target."""
    _sweep(model_name, 1)


@pytest.mark.parametrize("model_name", ["cnn_same", "resnet", "separable_net", "se_net", "mlp", "convnext_net"])
def test_rows_split_across_threads_equal_reference(model_name, each_kernel, monkeypatch):
    """A batch with fewer samples than threads splits its rows into parts that count apart
    (here 64 parts of at least one row): the same counts as the reference."""
    if each_kernel != "numba":
        pytest.skip("the fused kernels' split")
    from nnslicer.backward import op_kernels as _fused

    monkeypatch.setattr(_fused, "_threads", lambda: 64)
    monkeypatch.setattr(_fused, "MIN_PART_ROWS", 1)
    for granularity in ("element", "channel"):
        for rule in RULES:
            check_engine_equals_reference(model_name, 0, granularity, rule, "global", "code", "multi")


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_engine_equals_reference_more_seeds(model_name, seed):
    """Further seeds, every combination (about a minute in all)."""
    _sweep(model_name, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_engine_equals_reference_wider_model(seed):
    """A 12x12x3 CNN with 8-channel maps: longer candidate lists, larger channel means."""
    _sweep("cnn_wide", seed)


# --------------------------------------------------------------------------- the public facade
@pytest.mark.parametrize("rule,granularity,baseline,propagation", [
    ("nnslicer", "element", "global", "code"),
    ("nnslicer", "channel", "class", "paper"),
    ("paper", "element", "class", "code"),
    ("paper", "channel", "global", "paper"),
    ("effective_path", "element", "class", "code"),
    ("effective_path", "channel", "global", "code"),
])
@pytest.mark.parametrize("model_name", ["cnn_same", "resnet", "concat_net", "mlp"])
def test_slicer_facade_equals_reference(model_name, rule, granularity, baseline, propagation):
    """Slicer(...).fit(x, y).slice_many(x) equals the reference per sample; the deltas the
    reference reads are recomputed here from activations and the profile's means."""
    model, x_prof, y_prof, x_test = setup(model_name, 1)
    theta = THETA[rule]
    slicer = nnslicer.Slicer(model, theta=theta, rule=rule, granularity=granularity,
                             baseline=baseline, propagation=propagation).fit(x_prof, y_prof)
    graph = slicer.graph_
    tape = forward(graph, slicer.profile_, x_test, baseline)
    # Deltas from first principles: activation minus the (class) mean of the predicted class.
    pred = tape.acts[graph.logits].reshape(len(x_test), -1).argmax(axis=1)
    np.testing.assert_array_equal(pred, tape.predictions)
    for name, act in tape.acts.items():
        means = (slicer.profile_.class_means[name][pred] if baseline == "class"
                 else slicer.profile_.means[name][None])
        tape.deltas[name] = act - means
    for targets in (None, [[0, 2]] * len(x_test)):
        slices = slicer.slice_many(x_test, targets=targets)
        assert len(slices) == len(x_test)
        refs = []
        for b, s in enumerate(slices):
            target = [int(pred[b])] if targets is None else targets[b]
            context = f"Slicer model={model_name} rule={rule} {granularity} {baseline} {propagation} sample={b}"
            ref_n, ref_s = reference_backward(graph, tape, b, target, rule, theta, propagation)
            assert_counts_equal(s.neuron_counts, ref_n, "neuron", context)
            assert_counts_equal(s.synapse_counts, ref_s, "synapse", context)
            refs.append((ref_n, ref_s))
        # Several samples in one slice: signed counts add ("sum"), or their magnitudes ("abs").
        for aggregate, fold in (("sum", lambda v: v), ("abs", np.abs)):
            whole = slicer.slice(x_test, target=None if targets is None else targets[0], aggregate=aggregate)
            context = f"Slicer.slice model={model_name} rule={rule} {granularity} aggregate={aggregate}"
            for i, (got, what) in enumerate(((whole.neuron_counts, "neuron"), (whole.synapse_counts, "synapse"))):
                want = {k: sum(fold(r[i][k]) for r in refs) for k in refs[0][i]}
                assert_counts_equal(got, want, what, context)


# --------------------------------------------------------------------------- exact boundaries
def _micro_dense(kernel, theta, rule):
    """A k-1 linear Dense net with hand-set weights, profiled on {x, -x} so that every mean is
    exactly 0 and every delta equals the activation; sliced at x = (1, ..., 1), so the
    candidates are the weights."""
    k = len(kernel)
    model = keras.Sequential([keras.Input((k,)), L.Dense(1)], name="micro")
    model.layers[0].set_weights([np.asarray(kernel, "float32").reshape(k, 1), np.zeros(1, "float32")])
    x = np.ones((1, k), "float32")
    graph = nnslicer.lift(model)
    profile = nnslicer.profile(graph, np.concatenate([x, -x]))
    tape = forward(graph, profile, x)
    engine = backward(graph, tape, [[0]], rule, theta, "code")
    ref = reference_backward(graph, tape, 0, [0], rule, theta, "code")
    (op,) = graph.weighted_ops
    return engine[1][op][0].ravel().tolist(), ref[1][op].ravel().tolist()


@pytest.mark.parametrize("kernel,theta,rule,want", [
    # nnslicer, ties in |c| keep candidate order: by |c| (-1, 1, .6), S = .6, theta*|S| = .42;
    # P = -1, 0, .6 first hits at the .6 -> keep |c| > .594: all. (Order (1, -1, .6) would hit
    # at P_1 = 1 and keep only the two 1s.)
    ([-1.0, 1.0, 0.6], 0.7, "nnslicer", [-1, 1, 1]),
    # nnslicer, step 3 is strict: S = 2.5, theta*|S| = .5 exactly and |P_1 - S| = .5 is no hit.
    ([3.0, -1.0, 0.5], 0.2, "nnslicer", [1, -1, 1]),
    # paper, strictly below: y = 2, theta*|y| = .75; ascending sums .25, .75 -> drop only the .25.
    ([0.25, 0.5, 1.25], 0.375, "paper", [0, 1, 1]),
    # paper, ties in |c| keep candidate order: ascending (.3, -.5, .5, 2), y = 2.3, limit .575:
    # sums .3, -.2, .3 (all dropped), 2.3 (kept). (Order (.3, .5, -.5, 2) would stop at .8.)
    ([0.3, -0.5, 0.5, 2.0], 0.25, "paper", [0, 0, 0, 1]),
    # effective_path reaches theta*sum with >=: positives (1, 1, 2), theta*4 = 2 -> the 2 alone.
    ([1.0, 1.0, 2.0], 0.5, "effective_path", [0, 0, 1]),
    # effective_path, ties keep candidate order: (1, 1, 1), theta*3 = 1.5 -> the first two.
    ([1.0, 1.0, 1.0], 0.5, "effective_path", [1, 1, 0]),
])
def test_exact_boundaries_and_ties(kernel, theta, rule, want):
    engine, ref = _micro_dense(kernel, theta, rule)
    assert ref == want, f"reference {ref} != hand-derived {want}"
    assert engine == want, f"engine {engine} != hand-derived {want}"
