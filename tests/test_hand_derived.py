"""Tiny models with hand-set weights whose slices are derived by hand.

Every expected count below is worked out in the comment above its assertion, following
SPEC.md section 3: for a neuron ``n`` with ``CONTRIB[n] != 0`` the candidates are
``c_i = w_i * delta_x_i`` (weight 1 for Add and average pooling), the theta rule picks the
kept ones, and each kept ``i`` receives ``s_i = sign(c_i) * sign(delta_y_n) * sign(CONTRIB[n])``
(to its input neuron and to its synapse). Activations, Flatten and Concatenate pass counts on
unchanged; max pooling hands them to the argmax (ties: all of them).

Rule "nnslicer" (theta=0.2, bar=0.01), for candidates c with sum S:
  1. one candidate: keep it;  2. |S| < min|c| or |S| < 1e-3 max|c|: keep nothing;
  3. by |c| descending, m* = first m with |P_m - S| < theta |S|;
  4. keep every i with |c_i| > 0.99 |c_(m*)|.

All values are small integers or halves, exact in float32, so the sums are exact.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import nnslicer  # noqa: E402
from nnslicer.backward.rules import select  # noqa: E402

# Every test here runs with the fused numba kernels and with the numpy path.
pytestmark = pytest.mark.usefixtures("each_kernel")

keras = pytest.importorskip("keras")
L = keras.layers


def _set(model, weights):
    """Set hand weights: {layer name: [kernel, bias]} (or [kernel] without bias)."""
    for name, ws in weights.items():
        layer = model.get_layer(name)
        layer.set_weights([np.asarray(w, dtype="float32").reshape(v.shape)
                           for w, v in zip(ws, layer.get_weights())])
    return model


def _i(*rows):
    return np.array(rows, dtype=np.int64)


def _members(s):
    """Set of (kind, tensor, flat index) of the slice's members."""
    out = set()
    for name, v in s.neuron_counts.items():
        out |= {("n", name, int(i)) for i in np.flatnonzero(v)}
    for name, v in s.synapse_counts.items():
        out |= {("s", name, int(i)) for i in np.flatnonzero(v)}
    return out


# =============================================================================== a. max(x1, x2)
# A 2-4-1 ReLU net computing max(x1, x2) = relu(x1 - x2) + relu(x2) - relu(-x2), plus a DEAD
# fourth unit relu(x1 + x2 - 10), always 0 for |x1|, |x2| <= 3 (whose output weight, 5, would
# matter if it ever fired):
#   h kernel (rows x1, x2; columns units 0..3):  [[1, 0,  0, 1],
#                                                 [-1, 1, -1, 1]],  bias [0, 0, 0, -10]
#   out kernel [1, 1, -1, 5], bias 0.
# Ops: "x" (input), "h" (pre-activation, holds the synapses), "h/relu", "out" (the logits).
#
# Profile on {(1, 1), (-1, -1)}:
#   (1, 1):   h = [0,  1, -1,  -8], h/relu = [0, 1, 0, 0], out =  1
#   (-1, -1): h = [0, -1,  1, -12], h/relu = [0, 0, 1, 0], out = -1
#   means: x = [0, 0], h = [0, 0, 0, -10], h/relu = [0, .5, .5, 0], out = 0.
MAX_H = [[1, 0, 0, 1], [-1, 1, -1, 1]]
MAX_HB = [0, 0, 0, -10]
MAX_OUT = [[1], [1], [-1], [5]]
MAX_PROFILE = np.array([[1, 1], [-1, -1]], dtype="float32")


@pytest.fixture(scope="module")
def max_model():
    x = keras.Input((2,), name="x")
    h = L.Dense(4, activation="relu", name="h")(x)
    out = L.Dense(1, name="out")(h)
    model = keras.Model(x, out, name="maxnet")
    return _set(model, {"h": [MAX_H, MAX_HB], "out": [MAX_OUT, [0]]})


@pytest.fixture(scope="module")
def max_slicer(max_model):
    return nnslicer.Slicer(max_model).fit(MAX_PROFILE)


def test_max_model_computes_max(max_model):
    x = np.array([[3, 1], [-2, 1], [0.5, -2.5], [-1, -3]], dtype="float32")
    assert np.allclose(max_model.predict(x, verbose=0)[:, 0], x.max(axis=1))


def test_max_profile_means(max_slicer):
    means = max_slicer.profile_.means
    assert np.array_equal(means["x"], [0, 0])
    assert np.array_equal(means["h"], [0, 0, 0, -10])
    assert np.array_equal(means["h/relu"], [0, 0.5, 0.5, 0])
    assert np.array_equal(means["out"], [0])


def test_max_slice_sample_a(max_slicer):
    # x = (3, 1):  h = [2, 1, -1, -6], h/relu = [2, 1, 0, 0], out = 3 (= max).
    # deltas: x = (3, 1), h = [2, 1, -1, 4], h/relu = [2, .5, -.5, 0], out = 3.
    # Seed CONTRIB[out][0] = 1 (the only output).
    #
    # out (dy = 3, CONTRIB = +1): c = w * d(h/relu) = [1*2, 1*.5, -1*-.5, 5*0] = [2, .5, .5, 0]
    #   S = 3; min|c| = 0, so step 2 does not fire.  Descending |c|: 2, .5(i1), .5(i2), 0.
    #   P = 2, 2.5, 3: |2-3| = 1 >= .6, |2.5-3| = .5 < .6 -> m* = 2, |c_m*| = .5.
    #   Step 4 keeps |c| > .495: i0, i1 and the near-tie i2; the dead unit (c = 0) is out.
    #   signs: all c > 0, dy > 0 -> +1.  h/relu = [1, 1, 1, 0], out kernel = [1, 1, 1, 0].
    # h/relu -> h: unchanged, h = [1, 1, 1, 0].
    # h unit 0 (dy = 2): c = [1*3, -1*1] = [3, -1], S = 2, min|c| = 1 <= 2.
    #   P = 3 (|3-2| = 1 >= .4), 2 (0 < .4) -> m* = 2 -> keep both.
    #   s = [+1*+1*+1, -1*+1*+1] = [+1, -1]: x += [1, -1]; kernel[0,0] = 1, kernel[1,0] = -1.
    # h unit 1 (dy = 1): weights (0, 1): c = [0, 1], S = 1: P_1 = 1 -> m* = 1, keep x2 only.
    #   s = +1: x += [0, 1]; kernel[1,1] = 1.
    # h unit 2 (dy = -1; its relu output is 0, but the count passes through ReLU anyway):
    #   weights (0, -1): c = [0, -1], S = -1 -> keep x2; s = (-1)(-1)(+1) = +1: x += [0, 1];
    #   kernel[1,2] = 1.
    # h unit 3: CONTRIB 0, not visited.
    # x = [1, -1 + 1 + 1] = [1, 1].
    s = max_slicer.slice(np.array([3, 1], dtype="float32"))
    assert np.array_equal(s.neuron_counts["out"], [1])
    assert np.array_equal(s.neuron_counts["h/relu"], [1, 1, 1, 0])
    assert np.array_equal(s.neuron_counts["h"], [1, 1, 1, 0])
    assert np.array_equal(s.neuron_counts["x"], [1, 1])
    assert np.array_equal(s.synapse_counts["out"], _i([1], [1], [1], [0]))
    assert np.array_equal(s.synapse_counts["h"], _i([1, 0, 0, 0], [-1, 1, 1, 0]))
    assert s.n_neurons == 1 + 3 + 3 + 2 and s.n_synapses == 3 + 4


def test_max_slice_sample_b(max_slicer):
    # x = (-2, 1): h = [-3, 1, -1, -11], h/relu = [0, 1, 0, 0], out = 1 (= max).
    # deltas: x = (-2, 1), h = [-3, 1, -1, -1], h/relu = [0, .5, -.5, 0], out = 1.
    # out (dy = 1): c = [0, .5, .5, 0], S = 1. Descending (stable): i1, i2, i0, i3.
    #   P = .5 (|.5-1| = .5 >= .2), 1 (0) -> m* = 2, keep |c| > .495: i1, i2.  signs +1.
    #   h/relu = h = [0, 1, 1, 0]; out kernel = [0, 1, 1, 0].
    # h unit 1 (dy = 1): c = [0*-2, 1*1] = [0, 1] -> keep x2, s = +1; kernel[1,1] = 1.
    # h unit 2 (dy = -1): c = [0, -1*1] = [0, -1] -> keep x2, s = (-1)(-1)(+1) = +1;
    #   kernel[1,2] = 1.
    # x = [0, 2]: x1 (the smaller input) is not in the slice.
    s = max_slicer.slice(np.array([-2, 1], dtype="float32"))
    assert np.array_equal(s.neuron_counts["out"], [1])
    assert np.array_equal(s.neuron_counts["h/relu"], [0, 1, 1, 0])
    assert np.array_equal(s.neuron_counts["h"], [0, 1, 1, 0])
    assert np.array_equal(s.neuron_counts["x"], [0, 2])
    assert np.array_equal(s.synapse_counts["out"], _i([0], [1], [1], [0]))
    assert np.array_equal(s.synapse_counts["h"], _i([0, 0, 0, 0], [0, 1, 1, 0]))


@pytest.mark.parametrize("rule", ["nnslicer", "paper", "effective_path"])
@pytest.mark.parametrize("propagation", ["code", "paper"])
def test_max_dead_unit_never_in_slice(max_model, rule, propagation):
    # The dead unit's relu output is always 0 = its mean, so its delta (and its raw value,
    # for EffectivePath) is 0: every candidate through it is 0 and no count ever reaches it.
    slicer = nnslicer.Slicer(max_model, rule=rule, propagation=propagation).fit(MAX_PROFILE)
    x = np.random.default_rng(0).uniform(-3, 3, size=(25, 2)).astype("float32")
    x = np.concatenate([x, [[3, 1], [-2, 1], [1, -2], [0, 0], [-3, -3]]]).astype("float32")
    slices = slicer.slice_many(x)
    assert len(slices) == len(x)
    reached = 0
    for s in slices:
        assert s.neuron_counts["h/relu"][3] == 0
        assert s.neuron_counts["h"][3] == 0
        assert s.synapse_counts["out"][3, 0] == 0
        assert not s.synapse_counts["h"][:, 3].any()
        reached += int(s.neuron_counts["h/relu"][:3].any())
    assert reached > 0  # the live units are in slices: the test is not vacuous
    agg = slicer.slice(x, aggregate="abs")
    assert agg.neuron_counts["h/relu"][3] == 0 and agg.neuron_counts["h/relu"][:3].sum() > 0


def test_theta_monotone_on_max_net(max_model):
    # Sample A, x = (3, 1) (deltas as in test_max_slice_sample_a):
    # theta = 0.2: derived above: x [1, 1], h = h/relu = [1, 1, 1, 0], out [1]; 9 neurons.
    # theta = 0.4: out: c = [2, .5, .5, 0], S = 3, theta|S| = 1.2: |2-3| = 1 < 1.2 -> m* = 1,
    #   keep |c| > 1.98: i0 only.  h/relu = h = [1, 0, 0, 0], out kernel [1, 0, 0, 0].
    #   h unit 0: c = [3, -1], S = 2, theta|S| = .8: |3-2| = 1 >= .8, m* = 2 -> both:
    #   x = [1, -1], h kernel[0,0] = 1, [1,0] = -1.  5 neurons, 3 synapses.
    # theta = 0.6: out: theta|S| = 1.8 -> i0 only.  h unit 0: theta|S| = 1.2, |3-2| = 1 < 1.2
    #   -> m* = 1, keep x1 only: x = [1, 0], h kernel[0,0] = 1.  4 neurons, 2 synapses.
    # So a larger theta keeps a subset, and a smaller theta keeps more.
    x = np.array([3, 1], dtype="float32")
    s2, s4, s6 = (nnslicer.Slicer(max_model, theta=t).fit(MAX_PROFILE).slice(x) for t in (0.2, 0.4, 0.6))
    assert np.array_equal(s4.neuron_counts["x"], [1, -1])
    assert np.array_equal(s4.neuron_counts["h"], [1, 0, 0, 0])
    assert np.array_equal(s4.synapse_counts["out"], _i([1], [0], [0], [0]))
    assert np.array_equal(s4.synapse_counts["h"], _i([1, 0, 0, 0], [-1, 0, 0, 0]))
    assert np.array_equal(s6.neuron_counts["x"], [1, 0])
    assert np.array_equal(s6.neuron_counts["h/relu"], [1, 0, 0, 0])
    assert np.array_equal(s6.synapse_counts["h"], _i([1, 0, 0, 0], [0, 0, 0, 0]))
    assert (s2.n_neurons, s4.n_neurons, s6.n_neurons) == (9, 5, 4)
    assert (s2.n_synapses, s4.n_synapses, s6.n_synapses) == (7, 3, 2)
    assert _members(s6) < _members(s4) < _members(s2)
    assert (s2.theta, s4.theta, s6.theta) == (0.2, 0.4, 0.6)


# ====================================================================== effective_path is 0/1
# x (1,) -> h = relu([1, 1] x) (2 units) -> out = [1, 1] . h.  Profile: zeros (all means 0).
# x = 1: h = h/relu = [1, 1], out = 2.
@pytest.fixture(scope="module")
def fork_model():
    x = keras.Input((1,), name="x")
    h = L.Dense(2, activation="relu", name="h")(x)
    out = L.Dense(1, name="out")(h)
    return _set(keras.Model(x, out, name="fork"), {"h": [[[1, 1]], [0, 0]], "out": [[[1], [1]], [0]]})


def test_effective_path_counts_are_membership(fork_model):
    zeros = np.zeros((1, 1), "float32")
    one = np.ones(1, "float32")
    # effective_path, theta = 0.9: out: raw c = [1*1, 1*1], positive sum 2, target 1.8:
    #   prefix 1 < 1.8, 2 >= 1.8 -> both kept.  Each h unit: c = [1*1] -> kept.
    #   x is reached through both units: 2 paths, but EffectivePath counts membership: 1.
    ep = nnslicer.Slicer(fork_model, rule="effective_path", theta=0.9).fit(zeros).slice(one)
    assert np.array_equal(ep.neuron_counts["x"], [1])
    assert np.array_equal(ep.neuron_counts["h/relu"], [1, 1])
    assert np.array_equal(ep.synapse_counts["h"], _i([1, 1]))
    assert np.array_equal(ep.synapse_counts["out"], _i([1], [1]))
    # effective_path, theta = 0.5: target 1 is reached by the first (stable order): h unit 0 only.
    ep5 = nnslicer.Slicer(fork_model, rule="effective_path").fit(zeros).slice(one)
    assert ep5.theta == 0.5
    assert np.array_equal(ep5.neuron_counts["h/relu"], [1, 0])
    assert np.array_equal(ep5.synapse_counts["h"], _i([1, 0]))
    # rule nnslicer on the same input (deltas = values): out c = [1, 1], S = 2: P_1 = 1,
    #   |1-2| = 1 >= .4; P_2 = 2 -> both kept; x receives +1 from each unit: count 2.
    ns = nnslicer.Slicer(fork_model).fit(zeros).slice(one)
    assert np.array_equal(ns.neuron_counts["x"], [2])
    # Per sample, EffectivePath counts are 0/1 on every tensor and weight ...
    batch = np.array([[1], [2], [-1], [0.5]], "float32")
    for s in nnslicer.Slicer(fork_model, rule="effective_path", theta=0.9).fit(zeros).slice_many(batch):
        for v in [*s.neuron_counts.values(), *s.synapse_counts.values()]:
            assert set(np.unique(v)) <= {0, 1}
    # ... and a batch adds them up: x = 1 and x = 2 both reach x: 2.
    both = nnslicer.Slicer(fork_model, rule="effective_path", theta=0.9).fit(zeros).slice(batch[:2])
    assert np.array_equal(both.neuron_counts["x"], [2])


# ============================================================================= b. residual Add
# x (2,) -> a = Dense identity [[1, 0], [0, 1]]      (branch "a", linear)
#        -> b = Dense diag(0.1, 5) [[.1, 0], [0, 5]]  (branch "b", linear)
# add = a + b = [1.1 x1, 6 x2]; out = Dense [[1], [1]]: out = 1.1 x1 + 6 x2. All biases 0.
# Profile: zeros -> every mean is 0 and every delta is the value itself.
@pytest.fixture(scope="module")
def residual_slicer():
    x = keras.Input((2,), name="x")
    a = L.Dense(2, name="a")(x)
    b = L.Dense(2, name="b")(x)
    add = L.Add(name="add")([a, b])
    out = L.Dense(1, name="out")(add)
    model = _set(keras.Model(x, out, name="residual"), {
        "a": [[[1, 0], [0, 1]], [0, 0]], "b": [[[0.1, 0], [0, 5]], [0, 0]], "out": [[[1], [1]], [0]]})
    return nnslicer.Slicer(model).fit(np.zeros((2, 2), "float32"))


def test_residual_positive(residual_slicer):
    # x = (2, 1): a = [2, 1], b = [.2, 5], add = [2.2, 6], out = 8.2.
    # out (dy = 8.2): c = [2.2, 6], S = 8.2, theta|S| = 1.64: P_1 = 6 (|6-8.2| = 2.2 >= 1.64),
    #   P_2 = 8.2 -> keep both, s = +1: add = [1, 1], out kernel = [1, 1].
    # add neuron 0 (dy = 2.2): candidates [d a0, d b0] = [2, .2], S = 2.2, theta|S| = .44:
    #   P_1 = 2, |2-2.2| = .2 < .44 -> m* = 1 -> keep branch a only: a = [1, 0].
    # add neuron 1 (dy = 6): [d a1, d b1] = [1, 5], S = 6, theta|S| = 1.2: P_1 = 5,
    #   |5-6| = 1 < 1.2 -> keep branch b only: b = [0, 1].
    # a unit 0 (dy = 2): c = [1*2, 0*1] = [2, 0] -> keep x1: x += [1, 0]; a kernel[0,0] = 1.
    # b unit 1 (dy = 5): c = [0*2, 5*1] = [0, 5] -> keep x2: x += [0, 1]; b kernel[1,1] = 1.
    # x = [1, 1] (fan-out: counts from both branches add up at x).
    s = residual_slicer.slice(np.array([2, 1], "float32"))
    assert np.array_equal(s.neuron_counts["add"], [1, 1])
    assert np.array_equal(s.neuron_counts["a"], [1, 0])
    assert np.array_equal(s.neuron_counts["b"], [0, 1])
    assert np.array_equal(s.neuron_counts["x"], [1, 1])
    assert np.array_equal(s.synapse_counts["out"], _i([1], [1]))
    assert np.array_equal(s.synapse_counts["a"], _i([1, 0], [0, 0]))
    assert np.array_equal(s.synapse_counts["b"], _i([0, 0], [0, 1]))
    assert set(s.synapse_counts) == {"a", "b", "out"}  # Add has no synapses


def test_residual_signed(residual_slicer):
    # x = (2, -1): a = [2, -1], b = [.2, -5], add = [2.2, -6], out = -3.8 (dy = -3.8).
    # out: c = [2.2, -6], S = -3.8, min|c| = 2.2 <= 3.8; P_1 = -6 (|-6+3.8| = 2.2 >= .76),
    #   P_2 = S -> keep both.  s = sign(c) * sign(-3.8) * (+1): add = [-1, +1];
    #   out kernel = [-1, 1].
    # add neuron 0 (CONTRIB -1, dy = 2.2): [2, .2] -> branch a (as before),
    #   s = (+1)(+1)(-1) = -1: a = [-1, 0].
    # add neuron 1 (CONTRIB +1, dy = -6): [d a1, d b1] = [-1, -5], S = -6, |-5+6| = 1 < 1.2
    #   -> branch b; s = (-1)(-1)(+1) = +1: b = [0, 1].
    # a unit 0 (CONTRIB -1, dy = 2): c = [2, 0] -> x1, s = -1: x += [-1, 0]; a kernel[0,0] = -1.
    # b unit 1 (CONTRIB +1, dy = -5): c = [0, 5*-1] = [0, -5] -> x2, s = (-1)(-1)(+1) = +1:
    #   x += [0, 1]; b kernel[1,1] = 1.
    s = residual_slicer.slice(np.array([2, -1], "float32"))
    assert np.array_equal(s.neuron_counts["out"], [1])
    assert np.array_equal(s.neuron_counts["add"], [-1, 1])
    assert np.array_equal(s.neuron_counts["a"], [-1, 0])
    assert np.array_equal(s.neuron_counts["b"], [0, 1])
    assert np.array_equal(s.neuron_counts["x"], [-1, 1])
    assert np.array_equal(s.synapse_counts["out"], _i([-1], [1]))
    assert np.array_equal(s.synapse_counts["a"], _i([-1, 0], [0, 0]))
    assert np.array_equal(s.synapse_counts["b"], _i([0, 0], [0, 1]))


# ======================================================================= c. conv + pool + dense
# x: 4x4x1.  conv: Conv2D(1, 2x2, padding="same", bias 0.5), kernel K = [[1, 2], [1, -1]]:
#   y(i, j) = x(i, j) + 2 x(i, j+1) + x(i+1, j) - x(i+1, j+1) + .5   (row 4 / column 4 are
#   padding: TensorFlow pads 2x2 "same" at the bottom/right only, and a tap reading padding is
#   no candidate).
# pool: MaxPooling2D(2) (or AveragePooling2D(2)); flat: Flatten -> [p00, p01, p10, p11];
# out: Dense(2), bias [.5, -.5].
# Profile: zeros.  Means: conv = .5 everywhere, pool = .5, out = bias; every delta is therefore
# the bias-free value:  d conv = y - .5, d pool = pool - .5, d out = W^T d flat.
#
#      x =  2  0  3  1        d conv =  3  6  4  2
#           1  0  0  1                 -1  6 -2  1
#           0  2 -4  0                  4 -9  0 -1
#           0  0  3 -1                  0  6  1 -1
# e.g. d y01 = x01 + 2 x02 + x11 - x12 = 0 + 6 + 0 - 0 = 6; d y32 = x32 + 2 x33 = 3 - 2 = 1.
CONV_X = np.array([[2, 0, 3, 1], [1, 0, 0, 1], [0, 2, -4, 0], [0, 0, 3, -1]], "float32").reshape(4, 4, 1)
CONV_K = [[1, 2], [1, -1]]


def _conv_model(pool_layer, w_out):
    x = keras.Input((4, 4, 1), name="x")
    y = L.Conv2D(1, 2, padding="same", name="conv")(x)
    p = pool_layer(2, name="pool")(y)
    f = L.Flatten(name="flat")(p)
    out = L.Dense(2, name="out")(f)
    return _set(keras.Model(x, out, name="convnet"),
                {"conv": [CONV_K, [0.5]], "out": [w_out, [0.5, -0.5]]})


@pytest.fixture(scope="module")
def conv_max_slice():
    model = _conv_model(L.MaxPooling2D, [[1, -1], [1, 0], [0.25, 0], [3, 0]])
    slicer = nnslicer.Slicer(model).fit(np.zeros((1, 4, 4, 1), "float32"))
    return slicer, slicer.slice(CONV_X)


def test_conv_max_pool(conv_max_slice):
    # Max pooling 2x2 of d conv: p00 = max(3, 6, -1, 6) = 6, a TIE between y01 and y11;
    #   p01 = max(4, 2, -2, 1) = 4 at y02; p10 = max(4, -9, 0, 6) = 6 at y31;
    #   p11 = max(0, -1, 1, -1) = 1 at y32.   d flat = [6, 4, 6, 1].
    # out = [W0 . flat, W1 . flat] with W0 = [1, 1, .25, 3], W1 = [-1, 0, 0, 0]:
    #   d out = [14.5, -6]; predicted class 0 (15 > -6.5).
    # out neuron 0 (dy = 14.5): c = [6, 4, 1.5, 3], S = 14.5, theta|S| = 2.9.
    #   Descending: 6 (i0), 4 (i1), 3 (i3), 1.5 (i2); P = 6 (8.5), 10 (4.5), 13 (1.5 < 2.9)
    #   -> m* = 3, |c_m*| = 3: keep i0, i1, i3, drop p10.  All s = +1.
    #   flat = [1, 1, 0, 1]; out kernel column 0 = [1, 1, 0, 1], column 1 = 0.
    # pool (max): p00 -> both tied y01 and y11; p01 -> y02; p11 -> y32. Each gets +1.
    # conv, taps in order (0,0), (0,1), (1,0), (1,1) with weights 1, 2, 1, -1:
    #   y01 (dy 6): c = [x01, 2 x02, x11, -x12] = [0, 6, 0, 0] -> S = 6, P_1 = 6 -> tap (0,1):
    #       x02 += 1, K(0,1) += 1.
    #   y11 (dy 6): c = [x11, 2 x12, x21, -x22] = [0, 0, 2, 4], S = 6, theta|S| = 1.2:
    #       P = 4 (|4-6| = 2), 6 (0) -> m* = 2: taps (1,1) and (1,0), both c > 0 -> +1:
    #       x22 += 1, x21 += 1, K(1,1) += 1, K(1,0) += 1.
    #   y02 (dy 4): c = [x02, 2 x03, x12, -x13] = [3, 2, 0, -1], S = 4, theta|S| = .8:
    #       P = 3 (1), 5 (1), 4 (0) -> m* = 3, |c_m*| = 1: keep 3, 2, -1, signs +1, +1, -1:
    #       x02 += 1, x03 += 1, x13 -= 1; K(0,0) += 1, K(0,1) += 1, K(1,1) -= 1.
    #   y32 (dy 1): taps (1,*) read row 4 = padding, so only c = [x32, 2 x33] = [3, -2]:
    #       S = 1 < min|c| = 2 -> step 2: the branch dies (y32 is in the slice, its inputs not).
    #       (Were padding a 0 candidate, min|c| would be 0 and both would be kept.)
    # Totals: conv counts y01 = y11 = y02 = y32 = 1;
    #   x: x02 = 2, x03 = 1, x13 = -1, x21 = 1, x22 = 1;
    #   K (summed over positions): (0,0) = 1, (0,1) = 2, (1,0) = 1, (1,1) = 1 - 1 = 0.
    _, s = conv_max_slice
    assert np.array_equal(s.neuron_counts["out"], [1, 0])
    assert np.array_equal(s.neuron_counts["flat"], [1, 1, 0, 1])
    assert np.array_equal(s.neuron_counts["pool"][..., 0], _i([1, 1], [0, 1]))
    assert np.array_equal(s.synapse_counts["out"], _i([1, 0], [1, 0], [0, 0], [1, 0]))
    assert np.array_equal(s.neuron_counts["conv"][..., 0],
                          _i([0, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]))
    assert np.array_equal(s.neuron_counts["x"][..., 0],
                          _i([0, 0, 2, 1], [0, 0, 0, -1], [0, 1, 1, 0], [0, 0, 0, 0]))
    assert s.synapse_counts["conv"].shape == (2, 2, 1, 1)
    assert np.array_equal(s.synapse_counts["conv"][:, :, 0, 0], _i([1, 2], [1, 0]))


def test_conv_max_pool_other_target(conv_max_slice):
    # target = 1: out neuron 1 (dy = -6): c = [-1*6, 0, 0, 0] = [-6, 0, 0, 0], S = -6:
    #   P_1 = -6 -> keep p00; s = (-1)(-1)(+1) = +1: flat = [1, 0, 0, 0], out kernel[0, 1] = 1.
    # p00 -> tie y01, y11 (+1 each), then as in test_conv_max_pool:
    #   x02 += 1 (K(0,1)); x21, x22 += 1 (K(1,0), K(1,1)).
    slicer, _ = conv_max_slice
    s = slicer.slice(CONV_X, target=1)
    assert np.array_equal(s.neuron_counts["out"], [0, 1])
    assert np.array_equal(s.synapse_counts["out"], _i([0, 1], [0, 0], [0, 0], [0, 0]))
    assert np.array_equal(s.neuron_counts["conv"][..., 0],
                          _i([0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]))
    assert np.array_equal(s.neuron_counts["x"][..., 0],
                          _i([0, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]))
    assert np.array_equal(s.synapse_counts["conv"][:, :, 0, 0], _i([0, 1], [1, 1]))


def test_conv_avg_pool():
    # Average pooling 2x2 of d conv: p00 = (3+6-1+6)/4 = 3.5, p01 = (4+2-2+1)/4 = 1.25,
    #   p10 = (4-9+0+6)/4 = .25, p11 = (0-1+1-1)/4 = -.25.   d flat = [3.5, 1.25, .25, -.25].
    # out W0 = [1, 1, 0, -8], W1 = [-1, 0, 0, 0]: d out = [6.75, -3.5]; predicted class 0.
    # out neuron 0 (dy = 6.75): c = [3.5, 1.25, 0, 2], S = 6.75, theta|S| = 1.35:
    #   descending 3.5 (i0), 2 (i3), 1.25 (i1), 0: P = 3.5 (3.25), 5.5 (1.25 < 1.35) -> m* = 2:
    #   keep p00 and p11, both s = +1.  flat = [1, 0, 0, 1]; out kernel col 0 = [1, 0, 0, 1].
    # pool p00 (dy 3.5, CONTRIB +1): candidates = d conv of the window [y00, y01, y10, y11]
    #   = [3, 6, -1, 6], S = 14, theta|S| = 2.8: descending 6 (y01), 6 (y11), 3, -1:
    #   P = 6 (8), 12 (2 < 2.8) -> m* = 2: y01 and y11, s = +1.
    # pool p11 (dy -.25, CONTRIB +1): [y22, y23, y32, y33] = [0, -1, 1, -1], S = -1:
    #   min|c| = 0 so step 2 does not fire; descending (stable) -1 (y23), 1 (y32), -1 (y33), 0:
    #   P_1 = -1 = S -> m* = 1, |c_m*| = 1, near-ties: keep y23, y32, y33.
    #   s = sign(c) * sign(-.25) * (+1): y23 +1, y32 -1, y33 +1.
    # conv (K weights 1, 2, 1, -1 on taps (0,0), (0,1), (1,0), (1,1)):
    #   y01 (+1, dy 6): tap (0,1) as before: x02 += 1, K(0,1) += 1.
    #   y11 (+1, dy 6): taps (1,1), (1,0): x22 += 1, x21 += 1, K(1,1) += 1, K(1,0) += 1.
    #   y23 (+1, dy -1): valid taps (0,0) and (1,0) (column 4 is padding):
    #       c = [x23, x33] = [0, -1], S = -1 -> keep tap (1,0); s = (-1)(-1)(+1) = +1:
    #       x33 += 1, K(1,0) += 1.
    #   y32 (-1, dy 1): c = [3, -2] -> S = 1 < 2: dies.
    #   y33 (+1, dy -1): only tap (0,0) is inside: c = [x33] = [-1]: one candidate, kept;
    #       s = (-1)(-1)(+1) = +1: x33 += 1, K(0,0) += 1.
    # Totals: conv y01 = y11 = y23 = y33 = 1, y32 = -1;  x: x02 = 1, x21 = 1, x22 = 1, x33 = 2;
    #   K: (0,0) = 1, (0,1) = 1, (1,0) = 2, (1,1) = 1.
    model = _conv_model(L.AveragePooling2D, [[1, -1], [1, 0], [0, 0], [-8, 0]])
    s = nnslicer.Slicer(model).fit(np.zeros((1, 4, 4, 1), "float32")).slice(CONV_X)
    assert np.array_equal(s.neuron_counts["out"], [1, 0])
    assert np.array_equal(s.neuron_counts["flat"], [1, 0, 0, 1])
    assert np.array_equal(s.synapse_counts["out"], _i([1, 0], [0, 0], [0, 0], [1, 0]))
    assert np.array_equal(s.neuron_counts["pool"][..., 0], _i([1, 0], [0, 1]))
    assert np.array_equal(s.neuron_counts["conv"][..., 0],
                          _i([0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, -1, 1]))
    assert np.array_equal(s.neuron_counts["x"][..., 0],
                          _i([0, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 2]))
    assert np.array_equal(s.synapse_counts["conv"][:, :, 0, 0], _i([1, 1], [2, 1]))
    assert "pool" not in s.synapse_counts  # pooling has no synapses


# ============================================================================= d. Concatenate
# x (2,) -> p = relu(Dense [[1, 1], [1, -1]])   (p0 = relu(x1 + x2), p1 = relu(x1 - x2))
#        -> q = Dense [[2], [-1]]               (q0 = 2 x1 - x2, linear)
# cat = Concatenate([p/relu, q]) = [p0, p1, q0];  out = Dense(2): W0 = [1, 1, 1], W1 = [0, 0, 1].
# Profile on {(1, 1), (-1, -1)}:
#   (1, 1):   p = [2, 0],  p/relu = [2, 0], q = 1,  cat = [2, 0, 1]
#   (-1, -1): p = [-2, 0], p/relu = [0, 0], q = -1, cat = [0, 0, -1]
#   means: p = [0, 0], p/relu = [1, 0], q = 0, cat = [1, 0, 0], out = [1, 0].
@pytest.fixture(scope="module")
def concat_slicer():
    x = keras.Input((2,), name="x")
    p = L.Dense(2, activation="relu", name="p")(x)
    q = L.Dense(1, name="q")(x)
    cat = L.Concatenate(name="cat")([p, q])
    out = L.Dense(2, name="out")(cat)
    model = _set(keras.Model(x, out, name="concat"), {
        "p": [[[1, 1], [1, -1]], [0, 0]], "q": [[[2], [-1]], [0]],
        "out": [[[1, 0], [1, 0], [1, 1]], [0, 0]]})
    return nnslicer.Slicer(model).fit(np.array([[1, 1], [-1, -1]], "float32"))


def test_concatenate(concat_slicer):
    # x = (2, 1): p = [3, 1], p/relu = [3, 1], q = 3, cat = [3, 1, 3], out = [7, 3] -> class 0.
    # deltas: p = [3, 1], p/relu = [2, 1], q = [3], cat = [2, 1, 3], out = [6, 3].
    # out neuron 0 (dy 6): c = [2, 1, 3], S = 6, theta|S| = 1.2: descending 3 (q), 2 (p0), 1:
    #   P = 3 (3), 5 (1 < 1.2) -> m* = 2: keep q0 and p0, drop p1.  s = +1.
    #   cat = [1, 0, 1]; out kernel = [[1, 0], [0, 0], [1, 0]].
    # cat splits back: p/relu = [1, 0] (then p = [1, 0]), q = [1].
    # p unit 0 (dy 3): c = [1*2, 1*1] = [2, 1], S = 3, theta|S| = .6: P = 2 (1), 3 (0)
    #   -> both: x += [1, 1]; p kernel[0,0] = kernel[1,0] = 1.
    # q unit 0 (dy 3): c = [2*2, -1*1] = [4, -1], S = 3, min|c| = 1: P = 4 (1 >= .6), 3 (0)
    #   -> both, s = [+1, -1]: x += [1, -1]; q kernel = [[1], [-1]].
    # x = [2, 0]: x2's two paths cancel, so it is not in the slice.
    s = concat_slicer.slice(np.array([2, 1], "float32"))
    assert np.array_equal(s.neuron_counts["out"], [1, 0])
    assert np.array_equal(s.neuron_counts["cat"], [1, 0, 1])
    assert np.array_equal(s.neuron_counts["p/relu"], [1, 0])
    assert np.array_equal(s.neuron_counts["p"], [1, 0])
    assert np.array_equal(s.neuron_counts["q"], [1])
    assert np.array_equal(s.neuron_counts["x"], [2, 0])
    assert np.array_equal(s.synapse_counts["out"], _i([1, 0], [0, 0], [1, 0]))
    assert np.array_equal(s.synapse_counts["p"], _i([1, 0], [1, 0]))
    assert np.array_equal(s.synapse_counts["q"], _i([1], [-1]))


def test_concatenate_target_second_branch(concat_slicer):
    # target = 1: out neuron 1 (dy 3): c = [0*2, 0*1, 1*3] = [0, 0, 3], S = 3 -> keep q0 only.
    # cat = [0, 0, 1] -> p untouched, q = [1]; then q as above: x = [1, -1].
    s = concat_slicer.slice(np.array([2, 1], "float32"), target=1)
    assert np.array_equal(s.neuron_counts["cat"], [0, 0, 1])
    assert not s.neuron_counts["p"].any() and not s.synapse_counts["p"].any()
    assert np.array_equal(s.neuron_counts["x"], [1, -1])
    assert np.array_equal(s.synapse_counts["out"], _i([0, 0], [0, 0], [0, 1]))


# ========================================================================= select(), by hand
def _keep(row, **kw):
    return select(np.array([row], dtype=np.float64), **kw)[0].tolist()


class TestNNSlicerRule:
    def test_single_candidate_kept(self):
        # Step 1: k == 1 keeps it, however small.
        assert _keep([-0.001]) == [True]
        assert _keep([np.nan, 5.0, np.nan]) == [False, True, False]

    def test_sum_below_smallest_kills(self):
        # S = 3 - 2 = 1 < min|c| = 2: nothing (without step 2, step 3 would keep both).
        assert _keep([3.0, -2.0]) == [False, False]
        # S = 1.5 >= 1: not dead: P_1 = 3 (1.5 >= .3), P_2 = 1.5 -> both.
        assert _keep([3.0, -1.5]) == [True, True]

    def test_negligible_sum_kills(self):
        # c = [8, -7.996, .002]: S = .006 >= min|c| = .002, but < 1e-3 * 8 = .008: nothing.
        # (Without that step: P_1 = 8, P_2 = .004, |.004 - .006| = .002 >= .2 * .006; P_3 = S:
        # all three would be kept.)
        assert _keep([8.0, -7.996, 0.002]) == [False, False, False]
        # c = [8, -7.99, .002]: S = .012 >= .008, not negligible: P_1 = 8, P_2 = .01,
        # |.01 - .012| = .002 < .2 * .012 = .0024 -> m* = 2: keep 8 and -7.99.
        assert _keep([8.0, -7.99, 0.002]) == [True, True, False]

    def test_m_star_greater_than_one(self):
        # c = [4, 3, 1]: S = 8, theta|S| = 1.6: P = 4 (4), 7 (1 < 1.6) -> m* = 2: keep 4 and 3.
        assert _keep([1.0, 4.0, 3.0]) == [False, True, True]
        # c = [3, 2, -1]: S = 4, .8: P = 3 (1), 5 (1), 4 (0) -> m* = 3: all.
        assert _keep([3.0, 2.0, -1.0]) == [True, True, True]
        # Same with theta = 0.3 (theta|S| = 1.2): m* = 1, keep 3 only.
        assert _keep([3.0, 2.0, -1.0], theta=0.3) == [True, False, False]

    def test_near_tie_within_bar_kept(self):
        # c = [4, 3, -2.995, 2.995]: S = 7, theta|S| = 1.4: P = 4 (3), 7 (0) -> m* = 2,
        # |c_m*| = 3; band: |c| > .99 * 3 = 2.97 keeps both 2.995s too.
        assert _keep([4.0, 3.0, -2.995, 2.995]) == [True, True, True, True]
        # 2.9 is outside the band.
        assert _keep([4.0, 3.0, -2.9, 2.9]) == [True, True, False, False]
        # A wider bar (5%) takes them in: .95 * 3 = 2.85 < 2.9.
        assert _keep([4.0, 3.0, -2.9, 2.9], bar=0.05) == [True, True, True, True]

    def test_zero_sum_keeps_nothing(self):
        assert _keep([0.0, 0.0]) == [False, False]
        assert _keep([1.0, -1.0, 0.0]) == [False, False, False]

    def test_nan_candidates_ignored(self):
        # NaN (a tap reading padding) is no candidate: [nan, 3, nan, -2] behaves as [3, -2].
        assert _keep([np.nan, 3.0, np.nan, -2.0]) == [False, False, False, False]
        # [nan, 4, 3, nan, 1] behaves as [4, 3, 1]: keep 4 and 3.
        assert _keep([np.nan, 4.0, 3.0, np.nan, 1.0]) == [False, True, True, False, False]
        # As 0 instead, min|c| would be 0 and [0, 3, 0, -2] keeps both (P = 3, 1 = S).
        assert _keep([0.0, 3.0, 0.0, -2.0]) == [False, True, False, True]
        assert _keep([np.nan, np.nan]) == [False, False]

    def test_rows_are_independent(self):
        rows = [[1.0, 4.0, 3.0], [3.0, -2.0, np.nan], [np.nan, 5.0, np.nan], [3.0, 2.0, -1.0]]
        got = select(np.array(rows), "nnslicer", 0.2)
        assert got.tolist() == [_keep(r) for r in rows]
        assert got.dtype == bool and got.shape == (4, 3)


class TestPaperRule:
    def test_drops_small_prefix(self):
        # y = 10, theta = .2 -> limit 2. Ascending |c|: .5, 1, -2, 5; running sums .5, 1.5,
        # -.5 (all |.| < 2), 4.5 (not): the first three are dropped, 5 is kept.
        got = select(np.array([[1.0, -2.0, 5.0, 0.5]]), "paper", 0.2, y=np.array([10.0]))
        assert got.tolist() == [[False, False, True, False]]

    def test_prefix_must_stay_below(self):
        # y = 10, limit 2: ascending 1, 1.5, -2, 10; running 1 (<2), 2.5 (not) -> only the first
        # is dropped, even though the running sum comes back to .5 later.
        got = select(np.array([[1.0, 1.5, -2.0, 10.0]]), "paper", 0.2, y=np.array([10.0]))
        assert got.tolist() == [[False, True, True, True]]

    def test_scale_of_y_matters(self):
        c = np.array([[1.0, 2.0, 3.0]])
        # y = 100, theta = .2 -> limit 20: every running sum (1, 3, 6) is below: all dropped.
        assert select(c, "paper", 0.2, y=np.array([100.0])).tolist() == [[False, False, False]]
        # y = 1 -> limit .2: the first sum (1) is already above: nothing dropped.
        assert select(c, "paper", 0.2, y=np.array([1.0])).tolist() == [[True, True, True]]
        # y = -10 (|y| counts) -> limit 2: running 1 (<2), 3 (not): drop the 1.
        assert select(c, "paper", 0.2, y=np.array([-10.0])).tolist() == [[False, True, True]]

    def test_nan_ignored_and_y_required(self):
        got = select(np.array([[np.nan, 1.0, 1.5, np.nan, -2.0, 10.0]]), "paper", 0.2, y=np.array([10.0]))
        assert got.tolist() == [[False, False, True, False, True, True]]
        with pytest.raises(nnslicer.InvalidParameterError):
            select(np.array([[1.0, 2.0]]), "paper", 0.2)


class TestEffectivePathRule:
    def test_fewest_largest_positive(self):
        # positive: 3, 1, 2 (sum 6); theta .5 -> 3: the largest, 3, reaches it alone.
        assert _keep([3.0, -5.0, 1.0, 2.0], rule="effective_path", theta=0.5) == [True, False, False, False]
        # theta .6 -> 3.6: 3 (<3.6), 3 + 2 = 5 -> keep 3 and 2; -5 is never kept.
        assert _keep([3.0, -5.0, 1.0, 2.0], rule="effective_path", theta=0.6) == [True, False, False, True]
        # theta .9 -> 5.4: 3, 5, 6 -> all positive ones.
        assert _keep([3.0, -5.0, 1.0, 2.0], rule="effective_path", theta=0.9) == [True, False, True, True]

    def test_no_positive_nothing(self):
        assert _keep([-1.0, -2.0, 0.0], rule="effective_path", theta=0.5) == [False, False, False]

    def test_nan_ignored(self):
        # positive 3, 2 (sum 5); theta .7 -> 3.5: 3 (<3.5), 5 -> both.
        assert _keep([np.nan, 3.0, np.nan, 2.0], rule="effective_path", theta=0.7) == [False, True, False, True]
        assert _keep([np.nan, np.nan], rule="effective_path", theta=0.5) == [False, False]


# --------------------------------------------------------------------------- a product
def _merged_slicer(merge, name):
    """a = x0, b = x1 (one-unit Dense layers), their ``merge`` (a Keras merge layer) named
    ``name``, logits (m, -m). Profiled on x = (1, 1) and (3, 3): mean a = mean b = 2."""
    x = keras.Input((2,))
    a = L.Dense(1, name="a")(x)
    b = L.Dense(1, name="b")(x)
    merged = merge(name=name)([a, b])
    model = keras.Model(x, L.Dense(2, name="out")(merged), name=name)
    _set(model, {"a": [[1, 0], [0]], "b": [[0, 1], [0]], "out": [[1, -1], [0, 0]]})
    return nnslicer.Slicer(model).fit(np.array([[1, 1], [3, 3]], "float32"))


@pytest.fixture(scope="module")
def product_slicer():
    """p = a * b: mean p = (1 + 9) / 2 = 5."""
    return _merged_slicer(L.Multiply, "p")


def test_product_both_shares_kept(product_slicer):
    # x = (4, 3): a = 4, b = 3, p = 12 (delta 7 > 0), target 0 (logit p): CONTRIB[p] = +1.
    # Shapley shares: c_a = (4 - 2) * (2 + 3) / 2 = 5, c_b = (3 - 2) * (2 + 4) / 2 = 3 (sum 8 = 12 - 2 * 2).
    # S = 8: prefix 5 is 3 from S (not < 1.6), prefix 8 is 0: keep both, +1 each (c > 0, delta_p > 0).
    # a: candidates 1 * delta_x0 = 2 and 0 * delta_x1 = 0: keep the first: x0 +1, a's kernel[0] +1; b alike.
    s = product_slicer.slice(np.array([4, 3], "float32"), target=0)
    assert s.neuron_counts["p"].tolist() == [1]
    assert s.neuron_counts["a"].tolist() == [1] and s.neuron_counts["b"].tolist() == [1]
    assert s.neuron_counts[s.graph.input].tolist() == [1, 1]
    assert s.synapse_counts["a"].tolist() == [[1], [0]] and s.synapse_counts["b"].tolist() == [[0], [1]]


def test_product_share_of_an_unchanged_factor_dropped(product_slicer):
    # x = (5, 2): a = 5, b = 2, p = 10 (delta 5). Target 1, logit -p (delta -10 - (-5) = -5): its
    # one candidate -1 * 5 = -5 sends sign(-5) * sign(-5) * 1 = +1 to p.
    # c_a = 3 * (2 + 2) / 2 = 6, c_b = 0 * (2 + 5) / 2 = 0: S = 6, keep c_a only (0 is not
    # > 0.99 * 6), which sends sign(6) * sign(5) * 1 = +1 to a, then to x0; b and x1 stay out.
    s = product_slicer.slice(np.array([5, 2], "float32"), target=1)
    assert s.neuron_counts["p"].tolist() == [1]
    assert s.neuron_counts["a"].tolist() == [1] and s.neuron_counts["b"].tolist() == [0]
    assert s.neuron_counts[s.graph.input].tolist() == [1, 0]


# --------------------------------------------------------------------------- a difference
@pytest.fixture(scope="module")
def difference_slicer():
    """d = a - b (Subtract): mean d = 0."""
    return _merged_slicer(L.Subtract, "d")


def test_difference_counts_the_subtracted_input_negatively(difference_slicer):
    # x = (5, 1): a = 5, b = 1, d = 4 (delta 4 - 0 = 4), target 0: CONTRIB[d] = +1.
    # Candidates delta_a = 3 and -delta_b = -(1 - 2) = 1: S = 4, prefix 3 is 1 from S (not < 0.8),
    # prefix 4 is 0: keep both, each sign(c) * sign(4) * 1 = +1: a +1, b +1 (b fell, which raised d).
    s = difference_slicer.slice(np.array([5, 1], "float32"), target=0)
    assert s.neuron_counts["d"].tolist() == [1]
    assert s.neuron_counts["a"].tolist() == [1] and s.neuron_counts["b"].tolist() == [1]
    # b's own candidate is 1 * delta_x1 = -1 < 0, with delta_b = -1 < 0 and CONTRIB +1: sign(-1) * sign(-1) = +1.
    assert s.neuron_counts[s.graph.input].tolist() == [1, 1]


def test_difference_keeps_the_input_that_explains_it(difference_slicer):
    # x = (6, 2): candidates delta_a = 4, -delta_b = 0: S = 4, keep delta_a only: a +1, b 0.
    s = difference_slicer.slice(np.array([6, 2], "float32"), target=0)
    assert s.neuron_counts["a"].tolist() == [1] and s.neuron_counts["b"].tolist() == [0]
    assert s.neuron_counts[s.graph.input].tolist() == [1, 0]


# ========================================================================== grouped convolution
# x (1, 1, 4) -> conv = Conv2D(2, 1, groups=2, no bias): group 0 reads channels 0, 1 with
# weights [1, 2] into y0; group 1 reads channels 2, 3 with weights [3, -1] into y1.
# -> flatten -> out = Dense(2), the identity. Profiled on zeros: every mean is 0.
# x = (3, 1, 2, 1): y0 = 3 + 2 = 5, y1 = 6 - 1 = 5, out = (5, 5).
@pytest.fixture(scope="module", params=["element", "channel"])
def grouped_slicer(request):
    x = keras.Input((1, 1, 4), name="x")
    y = L.Conv2D(2, 1, groups=2, use_bias=False, name="conv")(x)
    model = keras.Model(x, L.Dense(2, name="out")(L.Flatten(name="flat")(y)), name="grouped")
    _set(model, {"conv": [[[1, 3], [2, -1]]], "out": [[[1, 0], [0, 1]], [0, 0]]})
    # (one position: a channel's mean is its one value, so both granularities count alike)
    return nnslicer.Slicer(model, granularity=request.param).fit(np.zeros((1, 1, 1, 4), "float32"))


GROUPED_X = np.array([3, 1, 2, 1], "float32").reshape(1, 1, 4)


def test_grouped_conv_reads_its_group_only(grouped_slicer):
    # Target 0: out0's candidates [1 * 5, 0 * 5]: keep y0 (+1), out kernel[0, 0] +1.
    # y0 (delta 5, +1): candidates over group 0 only, c = [1 * 3, 2 * 1] = [3, 2], S = 5,
    #   theta |S| = 1: P = 3 (2 from S), 5 (0) -> m* = 2: both, +1 each: x0, x1 and
    #   kernel (0, 0, 0, 0), (0, 0, 1, 0). Channels 2 and 3 are no candidates of y0.
    s = grouped_slicer.slice(GROUPED_X, target=0)
    assert s.neuron_counts["conv"].reshape(-1).tolist() == [1, 0]
    assert s.neuron_counts["x"].reshape(-1).tolist() == [1, 1, 0, 0]
    assert s.synapse_counts["conv"].shape == (1, 1, 2, 2)
    assert s.synapse_counts["conv"].reshape(2, 2).tolist() == [[1, 0], [1, 0]]


def test_grouped_conv_second_group(grouped_slicer):
    # Target 1: y1 (+1, delta 5): c = [3 * 2, -1 * 1] = [6, -1], S = 5, theta |S| = 1:
    #   P = 6 (1 from S, not < 1), 5 (0) -> m* = 2, |c_m*| = 1: keep both;
    #   x2: sign(6) * sign(5) = +1, x3: sign(-1) * sign(5) = -1; kernel (0, 0, 0, 1) +1, (0, 0, 1, 1) -1.
    s = grouped_slicer.slice(GROUPED_X, target=1)
    assert s.neuron_counts["conv"].reshape(-1).tolist() == [0, 1]
    assert s.neuron_counts["x"].reshape(-1).tolist() == [0, 0, 1, -1]
    assert s.synapse_counts["conv"].reshape(2, 2).tolist() == [[0, 1], [0, -1]]


# ========================================================================== attention, 2 tokens
# x [2 tokens, 1 feature] -> MultiHeadAttention(1 head, key_dim 1, no biases, every kernel 1),
# self-attention -> flatten -> out = Dense(2), the identity. Ops of the attention: query, key,
# value (x times 1), scaled (the query times 1 / sqrt(1) = 1), scores [q, k, head] = Q_q * K_k,
# softmax over keys, context[q] = sum_k P[q, k] V_k, and its output projection (times 1).
# Profiled on x = (0, 0): every mean is 0 but the probabilities' (1/2 each).
# x = (2, 0): Q = K = V = (2, 0); scores [[4, 0], [0, 0]]; P[0] = (e^4, 1) / (e^4 + 1)
# = (0.98201, 0.01799), P[1] = (1/2, 1/2); context = (1.96403, 1); logits = (1.96403, 1).
@pytest.fixture(scope="module")
def attention_slicer():
    x = keras.Input((2, 1), name="x")
    y = L.MultiHeadAttention(1, 1, use_bias=False, name="mha")(x, x)
    model = keras.Model(x, L.Dense(2, name="out")(L.Flatten(name="flat")(y)), name="attention")
    _set(model, {"mha": [[1], [1], [1], [1]], "out": [[[1, 0], [0, 1]], [0, 0]]})
    return nnslicer.Slicer(model).fit(np.zeros((1, 2, 1), "float32"))


ATTENTION_X = np.array([[2], [0]], "float32")


def test_attention_query_token_reads_itself(attention_slicer):
    # Target 0: out's candidates [1 * 1.964, 0 * 1]: keep the first: flat[0] -> mha[0] +1, whose one
    # candidate (1 * delta context[0]) sends +1 to context[0] and the output kernel.
    # context[0] (delta 1.96403): P-terms delta P[0, k] * (mean V_k + V_k) / 2 = (0.48201 * 1,
    #   -0.48201 * 0) = (0.482, 0); V-terms delta V_k * (mean P[0, k] + P[0, k]) / 2 = (2 * 0.74100, 0)
    #   = (1.482, 0). S = 1.964; by |c|: 1.482 (off by 0.482, not < 0.393), then 0.482 (off by 0):
    #   keep V_0 and P[0, 0], +1 each: value[0] and softmax[0, 0].
    # softmax routes: scores[0, 0] +1 (delta 4): c_Q = 2 * (0 + 2) / 2 = 2, c_K = 2 * (0 + 2) / 2 = 2,
    #   S = 4: 2 is off by 2 (not < 0.8), both kept, +1 each: scaled[0] -> query[0], key[0].
    # query, key and value each send +1 to x[0] (their candidate 1 * 2) and to their kernel.
    s = attention_slicer.slice(ATTENTION_X, target=0)
    n = {k: v.reshape(-1).tolist() for k, v in s.neuron_counts.items()}
    assert n["mha/context"] == [1, 0] and n["mha/value"] == [1, 0]
    assert n["mha/softmax"] == [1, 0, 0, 0] and n["mha/scores"] == [1, 0, 0, 0]
    assert n["mha/scaled"] == [1, 0] and n["mha/query"] == [1, 0] and n["mha/key"] == [1, 0]
    assert n["x"] == [3, 0]
    for name in ("mha/query", "mha/key", "mha/value", "mha"):
        assert s.synapse_counts[name].reshape(-1).tolist() == [1]


def test_attention_unchanged_pattern_leaves_the_scores_out(attention_slicer):
    # Target 1: context[1] (delta 1): P[1] = (1/2, 1/2) is its mean, so the P-terms are 0; the
    # V-terms are (2 * (1/2 + 1/2) / 2, 0) = (1, 0): S = 1, the first prefix is S: keep V_0 alone.
    # The scores and the query and key projections stay out; x[0] gets the value's +1.
    s = attention_slicer.slice(ATTENTION_X, target=1)
    n = {k: v.reshape(-1).tolist() for k, v in s.neuron_counts.items()}
    assert n["mha/context"] == [0, 1] and n["mha/value"] == [1, 0]
    assert not any(n[k] != [0] * len(n[k]) for k in ("mha/softmax", "mha/scores", "mha/query", "mha/key"))
    assert n["x"] == [1, 0]
    assert s.synapse_counts["mha/query"].tolist() == [[0]] and s.synapse_counts["mha/value"].tolist() == [[1]]


# ========================================================================== a 2-step SimpleRNN
# x [2 steps, 1 feature] -> SimpleRNN(1, linear, kernel w = 1, recurrent u = 2, bias 0) -> out =
# Dense(2) with kernel [1, -1]. Unrolled: h0 = w x0 (rnn/t0/input), h1 = w x1 (rnn/t1/input,
# sharing w) + u h0 (rnn/t1/recurrent), added in rnn/t1/sum; rnn is h1. Profiled on zeros.
@pytest.fixture(scope="module")
def rnn_slicer():
    x = keras.Input((2, 1), name="x")
    h = L.SimpleRNN(1, activation="linear", name="rnn")(x)
    model = keras.Model(x, L.Dense(2, name="out")(h), name="rnn2")
    _set(model, {"rnn": [[1], [2], [0]], "out": [[1, -1], [0, 0]]})
    return nnslicer.Slicer(model).fit(np.zeros((1, 2, 1), "float32"))


def test_rnn_kernel_counts_sum_over_steps(rnn_slicer):
    # x = (1, 3): h0 = 1, h1 = 3 + 2 * 1 = 5. Target 0: out's one candidate 1 * 5 -> rnn +1 -> t1/sum.
    # t1/sum (delta 5): candidates delta(t1/input) = 3, delta(t1/recurrent) = 2: off by 2 then 0, keep both.
    # t1/input: 1 * 3 -> x[1] +1 and w +1; t1/recurrent: 2 * 1 -> h0 +1 and u +1; h0: 1 * 1 -> x[0]
    # +1 and w +1 again: w's count is 2, summed over the two steps that share it.
    s = rnn_slicer.slice(np.array([[1], [3]], "float32"), target=0)
    assert s.neuron_counts["x"].reshape(-1).tolist() == [1, 1]
    assert s.neuron_counts["rnn/t0/input"].tolist() == [1]
    assert set(s.synapse_counts) == {"rnn/t0/input", "rnn/t1/recurrent", "out"}
    assert s.synapse_counts["rnn/t0/input"].tolist() == [[2]]
    assert s.synapse_counts["rnn/t1/recurrent"].tolist() == [[1]]


def test_rnn_cancelling_steps_end_the_branch(rnn_slicer):
    # x = (1, -3): h1 = -3 + 2 = -1. Target 0: rnn +1 (candidate 1 * -1, delta -1: +1), t1/sum +1;
    # its candidates -3 and 2 sum to -1, below the smallest |c| (2): nothing is kept (rule step 2).
    s = rnn_slicer.slice(np.array([[1], [-3]], "float32"), target=0)
    assert s.neuron_counts["rnn/t1/sum"].tolist() == [1]
    assert s.neuron_counts["x"].reshape(-1).tolist() == [0, 0]
    assert s.synapse_counts["rnn/t0/input"].tolist() == [[0]] and s.synapse_counts["rnn/t1/recurrent"].tolist() == [[0]]
