"""Budgets from rankings, fake quantization, bit flips and structured pruning (issue 7)."""

import numpy as np
import pytest

import keras

from analyses import budgets, compression, faults, quantization
from analyses.budgets import bit_widths, pruning_rates
from analyses.faults import fault_accuracy, fault_curve, fault_outputs, flip_bits, layers_to_check
from analyses.quantization import quantize, quantize_array
from nnslicer.errors import InvalidInputError, InvalidParameterError


# --------------------------------------------------------------------------- models
def mlp(seed=0):
    """4 -> h(6, relu) -> bn -> g(5, relu) -> out(3)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((4,), name="x"),
        keras.layers.Dense(6, activation="relu", name="h"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dense(5, activation="relu", name="g"),
        keras.layers.Dense(3, name="out"),
    ], name="mlp")


def cnn(seed=0):
    """A small functional CNN with a residual Add, batch norm and a depthwise conv."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 2), name="image")
    a = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inp)
    b = keras.layers.BatchNormalization(name="bn1")(a)
    b = keras.layers.ReLU(name="r1")(b)
    c = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(b)
    d = keras.layers.Conv2D(4, 1, name="c2")(c)
    e = keras.layers.Add(name="add")([a, d])
    f = keras.layers.GlobalAveragePooling2D(name="gap")(e)
    return keras.Model(inp, keras.layers.Dense(3, name="out")(f), name="cnn")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 4)).astype("float32"), rng.normal(size=(24, 8, 8, 2)).astype("float32")


# --------------------------------------------------------------------------- budgets
def test_pruning_rates_by_hand():
    sizes = {"a": 100, "b": 300}
    # paper: rate proportional to C: alpha * [2, 1] with 100*2a + 300*a = 0.5 * 400 -> a = 0.4
    assert pruning_rates({"a": 2.0, "b": 1.0}, sizes, 0.5, direction="paper") == pytest.approx({"a": 0.8, "b": 0.4})
    # inverse: proportional to 1/C = [0.5, 1]: 100*0.5a + 300*a = 200 -> a = 4/7
    assert pruning_rates({"a": 2.0, "b": 1.0}, sizes, 0.5) == pytest.approx({"a": 2 / 7, "b": 4 / 7})


def test_pruning_rates_keep_the_global_rate_and_clip():
    rng = np.random.default_rng(1)
    sizes = {f"l{i}": int(n) for i, n in enumerate(rng.integers(10, 1000, 8))}
    scores = {k: float(v) for k, v in zip(sizes, rng.exponential(size=8) ** 3)}
    for direction in budgets.DIRECTIONS:
        for rate in (0.1, 0.4, 0.7):
            rates = pruning_rates(scores, sizes, rate, direction=direction, max_rate=0.8)
            assert all(0 <= r <= 0.8 + 1e-12 for r in rates.values())
            removed = sum(rates[k] * n for k, n in sizes.items())
            assert removed == pytest.approx(rate * sum(sizes.values()), rel=1e-9)
    # a dominant layer is clipped at max_rate and the rest spread over the others
    rates = pruning_rates({"a": 100.0, "b": 1.0}, {"a": 10, "b": 10}, 0.5, direction="paper", max_rate=0.6)
    assert rates == pytest.approx({"a": 0.6, "b": 0.4})
    # a layer scored 0 is the least important: it gets max_rate with "inverse", 0 with "paper"
    assert pruning_rates({"a": 0.0, "b": 1.0}, {"a": 10, "b": 10}, 0.3, max_rate=0.5)["a"] == pytest.approx(0.5)
    assert pruning_rates({"a": 0.0, "b": 1.0}, {"a": 10, "b": 10}, 0.3, direction="paper")["a"] == 0.0
    assert pruning_rates({"a": 1.0}, {"a": 10}, 0.0) == {"a": 0.0}


@pytest.mark.parametrize("kwargs, match", [
    (dict(rate=0.95), "max_rate"),
    (dict(rate=-0.1), "'rate'"),
    (dict(rate=0.2, direction="up"), "'direction'"),
    (dict(rate=0.2, max_rate=0), "'max_rate'"),
    (dict(rate=0.2, scores={"a": 1.0}), "No importance score"),
    (dict(rate=0.2, scores={"a": -1.0, "b": 1.0}), "non-negative"),
    (dict(rate=0.2, sizes={}), "at least one layer"),
])
def test_pruning_rates_errors(kwargs, match):
    args = dict(scores={"a": 1.0, "b": 2.0}, sizes={"a": 5, "b": 5})
    args.update(kwargs)
    with pytest.raises(InvalidParameterError, match=match):
        pruning_rates(**args)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 9])
def test_bit_widths_average_exactly_b(n):
    names = [f"l{i}" for i in range(n)]
    widths = bit_widths(names, 4)
    assert list(widths) == names
    assert sum(widths.values()) == 4 * n
    third = n // 3
    assert all(widths[k] == 5 for k in names[:third]) and all(widths[k] == 3 for k in names[n - third:])
    assert sorted(widths.values(), reverse=True) == list(widths.values())


def test_bit_widths_errors():
    for bad in (2, 4.0, True, None):
        with pytest.raises(InvalidParameterError, match="'bits'"):
            bit_widths(["a"], bad)


# --------------------------------------------------------------------------- quantization
def test_quantize_array_by_hand():
    w = np.array([[0.375, -1.0, 0.0], [-0.75, 0.25, 0.0], [0.125, 0.5, 0.0]])
    # 3 bits: levels -3..3 per column; column 0 step .75/3 = .25, column 1 step 1/3, column 2 all 0.
    # Halves round to even: .375/.25 = 1.5 -> 2, .125/.25 = .5 -> 0, .5/(1/3) = 1.5 -> 2. Column 0
    # is dyadic so that its halves are exact in any order of operations: with .3, -.6, .1 (step
    # .2) the .1 came to 0.5000000000000001 (-> 1) by w / (peak / 3) but to 0.5 (-> 0) by
    # w / peak * 3 or in float32, an expected value decided by one rounding.
    expected = np.array([[0.5, -1.0, 0.0], [-0.75, 1 / 3, 0.0], [0.0, 2 / 3, 0.0]])
    assert np.allclose(quantize_array(w, 3), expected)
    assert quantize_array(w.astype("float32"), 3).dtype == np.float32
    assert np.allclose(quantize_array(w.astype("float32"), 3), expected)
    # per-tensor when every axis is reduced (step 1); halves round to even (0.5 -> 0)
    assert np.allclose(quantize_array(w, 2, axes=(0, 1)), np.array([[0, -1, 0], [-1, 0, 0], [0, 0, 0]]))


def test_quantize_array_levels_and_error_bound():
    w = np.random.default_rng(0).normal(size=(3, 3, 4, 8))
    for bits in (2, 4, 8):
        q = quantize_array(w, bits)
        step = np.abs(w).max(axis=(0, 1, 2)) / (2 ** (bits - 1) - 1)
        assert np.all(np.abs(q - w) <= step / 2 + 1e-12)
        for c in range(8):
            assert len(np.unique(np.round(q[..., c] / step[c]))) <= 2 ** bits - 1
    with pytest.raises(InvalidParameterError, match="'bits'"):
        quantize_array(w, 1)


def test_quantize_model(data, tmp_path):
    x, _ = data
    model = mlp()
    before = [w.copy() for w in model.get_weights()]
    q, report = quantize(model, {"h": 3, "g": 5}, x)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # input untouched
    for name, bits in (("h", 3), ("g", 5)):
        kernel, bias = q.get_layer(name).get_weights()
        orig_kernel, orig_bias = model.get_layer(name).get_weights()
        assert np.array_equal(kernel, quantize_array(orig_kernel, bits)) and np.array_equal(bias, orig_bias)
    assert np.array_equal(q.get_layer("out").get_weights()[0], model.get_layer("out").get_weights()[0])
    fq = {layer.name: layer for layer in q.layers if type(layer).__name__ == "FakeQuant"}
    assert sorted(fq) == ["g_fq", "h_fq"]
    # the ranges are the calibration min and max of each quantized layer's input
    g_in = keras.Model(model.inputs, model.get_layer("bn").output).predict(x, verbose=0)
    assert (fq["g_fq"].low, fq["g_fq"].high) == pytest.approx((g_in.min(), g_in.max()))
    assert (fq["h_fq"].low, fq["h_fq"].high) == pytest.approx((x.min(), x.max()))
    # 8-bit activations: at most 256 distinct values reach g
    seen = keras.Model(q.inputs, q.get_layer("g_fq").output).predict(x, verbose=0)
    assert len(np.unique(seen)) <= 256
    assert report["bits"] == {"h": 3, "g": 5}
    import tensorflow as tf  # gradients pass FakeQuant straight through (saliency maps need them)

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        top = tf.reduce_sum(q(xt)[:, 0])
    assert np.any(tape.gradient(top, xt).numpy() != 0)
    path = tmp_path / "q.keras"
    q.save(path)
    quantization.register_keras_objects()
    loaded = keras.models.load_model(path, compile=False)
    assert np.array_equal(loaded.predict(x, verbose=0), q.predict(x, verbose=0))


def test_quantized_model_slices_like_keras(data):
    import nnslicer
    from nnslicer.forward import execute

    _, x = data
    q, _ = quantize(cnn(), 4, x)
    slicer = nnslicer.Slicer(q).fit(x)
    values = execute(slicer.graph_, x)
    assert np.allclose(values[slicer.graph_.output], q.predict(x, verbose=0), atol=1e-5)
    assert slicer.slice(x[:2]).n_synapses > 0


def test_subclassed_models_are_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 4), "float32"))
    with pytest.raises(InvalidInputError, match="quantize needs a functional or Sequential"):
        quantize(net, 4, activation_bits=None)


def test_quantize_errors(data):
    x, _ = data
    with pytest.raises(InvalidParameterError, match="No quantizable layer"):
        quantize(mlp(), {"bn": 4}, x)
    with pytest.raises(InvalidParameterError, match="'bits'"):
        quantize(mlp(), 17, x)
    with pytest.raises(InvalidInputError, match="calibration"):
        quantize(mlp(), 4)
    with pytest.raises(InvalidInputError, match="NaN"):
        quantize(mlp(), 4, np.full((2, 4), np.nan, "float32"))
    plain, _ = quantize(mlp(), 4, activation_bits=None)  # weights only: no FakeQuant, no data needed
    assert not any(type(layer).__name__ == "FakeQuant" for layer in plain.layers)


# --------------------------------------------------------------------------- bit flips
def _popcount(a, b):
    return int(np.unpackbits((a.view(np.uint32) ^ b.view(np.uint32)).view(np.uint8)).sum())


def test_flip_bits_counts_and_positions():
    clean = np.random.default_rng(0).normal(size=(50, 40)).astype("float32")
    ns, positions = [], np.zeros(32)
    for seed in range(200):
        flipped, n = flip_bits(clean, 1e-3, np.random.default_rng(seed))
        assert flipped.shape == clean.shape and flipped.dtype == np.float32
        assert _popcount(flipped, clean) == n  # distinct bits: each flip shows
        diff = (flipped.view(np.uint32) ^ clean.view(np.uint32)).ravel()
        positions += [np.count_nonzero(diff & (np.uint32(1) << np.uint32(k))) for k in range(32)]
        ns.append(n)
    expected = 32 * clean.size * 1e-3  # 64 per draw, binomial
    assert abs(np.mean(ns) - expected) < 5 * np.sqrt(expected / 200)
    # each of the 32 bit positions is hit about equally often (12,800 flips, 400 a position)
    assert np.all(np.abs(positions - positions.mean()) < 5 * np.sqrt(positions.mean()))
    assert np.array_equal(flip_bits(clean, 0.0, np.random.default_rng(0))[0], clean)
    everything, n = flip_bits(clean, 1.0, np.random.default_rng(0))
    assert n == 32 * clean.size and np.array_equal(everything.view(np.uint32), ~clean.view(np.uint32))
    with pytest.raises(InvalidParameterError, match="'rate'"):
        flip_bits(clean, 1.5, np.random.default_rng(0))


def test_faults_land_only_in_unchecked_layers(data):
    x, _ = data
    model = mlp()
    rate, seed, repeat = 2e-3, 3, 1
    out = fault_outputs(model, x, rate, checked=("h", "bn", "out"), repeat=repeat, seed=seed, batch_size=16)
    # by hand: only g (index 2 among the layers with weights h, bn, g, out) has faults
    rng = np.random.default_rng([seed, repeat, 2, 0])
    kernel, bias = (flip_bits(w, rate, rng)[0] for w in model.get_layer("g").get_weights())
    hidden = keras.Model(model.inputs, model.get_layer("bn").output).predict(x, verbose=0)
    g = np.concatenate([
        flip_bits(np.maximum(hidden[s:s + 16] @ kernel + bias, 0), rate, np.random.default_rng([seed, repeat, 2, k + 1]))[0]
        for k, s in enumerate(range(0, len(x), 16))])
    w_out, b_out = model.get_layer("out").get_weights()
    assert np.array_equal(np.isfinite(out), np.isfinite(g @ w_out + b_out))
    finite = np.isfinite(out)
    assert np.allclose(out[finite], (g @ w_out + b_out)[finite], rtol=1e-5, atol=1e-5)
    # all checked, or rate 0: the clean outputs
    clean = model.predict(x, verbose=0)
    assert np.allclose(fault_outputs(model, x, 0.5, checked=("h", "bn", "g", "out")), clean, atol=1e-6)
    assert np.allclose(fault_outputs(model, x, 0.0), clean, atol=1e-6)


def test_fault_accuracy_and_curve(data):
    x, _ = data
    model = mlp()
    y = model.predict(x, verbose=0).argmax(1)
    assert np.all(fault_accuracy(model, x, y, 0.0) == 1.0)
    assert np.all(fault_accuracy(model, x, y, 0.3, checked=("h", "bn", "g", "out")) == 1.0)
    acc = fault_accuracy(model, x, y, 0.01, repeats=4)
    assert acc.shape == (4,) and np.all(acc < 1.0)
    calls = []
    cache = {}
    a = fault_curve(model, x, y, ["h", "bn", "g", "out"], 0.005, repeats=2, cache=cache,
                    progress=lambda: calls.append(1))
    b = fault_curve(model, x, y, ["out", "g", "bn", "h"], 0.005, repeats=2, cache=cache,
                    progress=lambda: calls.append(1))
    assert a["unchecked"] == [0, 1, 2, 3, 4] and a["accuracy"][0] == 1.0
    # the same fault draws whatever the ranking: nothing checked gives the same accuracy
    assert a["accuracy"][-1] == b["accuracy"][-1] and a["std"][-1] == b["std"][-1]
    assert len(calls) == 1 + 4 * 2 + 3 * 2  # the clean run and full set once, shared by the curves
    assert np.mean(fault_accuracy(model, x, y, 0.005, checked=("h", "bn", "g"), repeats=2)) == \
        pytest.approx(a["accuracy"][1])


def test_exposure_counts_bits_of_weights_and_outputs(data):
    _, x = data
    model = cnn()
    # per sample: c1 8x8x4 out, 2*3*3*4 + 4 weights; bn1 4 x 4 weights; dw 3*3*4 + 4; c2 4*4 + 4; out 4*3 + 3
    want = {"c1": 256 + 76, "bn1": 256 + 16, "dw": 256 + 40, "c2": 256 + 20, "out": 3 + 15}
    got = faults.exposure(model)
    assert got == {k: 32 * v for k, v in sorted(want.items(), key=lambda kv: -kv[1])}
    y = model.predict(x, verbose=0).argmax(1)
    assert fault_curve(model, x, y, list(got), 1e-4, repeats=1)["unchecked"] == [0, 1, 2, 3, 4, 5]


def test_layers_to_check():
    curve = {"unchecked": [0, 1, 2, 3, 4], "accuracy": [0.90, 0.90, 0.895, 0.87, 0.80]}
    assert layers_to_check(curve) == 2
    assert layers_to_check(curve, max_loss=0.2) == 0
    assert layers_to_check({"unchecked": [0, 1], "accuracy": [0.9, 0.5]}) == 1
    # a dip then a recovery still needs the checks up to the dip
    assert layers_to_check({"unchecked": [0, 1, 2], "accuracy": [0.9, 0.7, 0.9]}) == 2


def test_fault_errors(data):
    x, _ = data
    model = mlp()
    y = np.zeros(len(x), int)
    with pytest.raises(InvalidParameterError, match="No layer with weights"):
        fault_accuracy(model, x, y, 0.1, checked=("nope",))
    with pytest.raises(InvalidParameterError, match="'rate'"):
        fault_accuracy(model, x, y, -1)
    with pytest.raises(InvalidParameterError, match="'repeats'"):
        fault_accuracy(model, x, y, 0.1, repeats=0)
    with pytest.raises(InvalidParameterError, match="every layer with weights"):
        fault_curve(model, x, y, ["h", "g"], 0.1)
    with pytest.raises(InvalidInputError, match="one integer label"):
        fault_accuracy(model, x, y[:3], 0.1)
    with pytest.raises(InvalidInputError, match="shaped"):
        fault_accuracy(model, x[:, :3], y, 0.1)


# --------------------------------------------------------------------------- structured pruning
def test_structured_prune_by_hand(data):
    x, _ = data
    model = mlp()
    kernel, bias = model.get_layer("h").get_weights()
    kernel = np.tile(np.arange(1, 7, dtype="float32")[[3, 0, 5, 1, 4, 2]], (4, 1))  # unit L1 norms 4*[4,1,6,2,5,3]
    model.get_layer("h").set_weights([kernel, bias + 1])
    assert [layer.name for layer in compression.prunable_layers(model)] == ["h", "g"]
    pruned, report = compression.structured_prune(model, {"h": 0.5})
    gone = [1, 3, 5]  # the three smallest norms
    k, b = pruned.get_layer("h").get_weights()
    assert np.all(k[:, gone] == 0) and np.all(b[gone] == 0) and np.array_equal(k[:, [0, 2, 4]], kernel[:, [0, 2, 4]])
    gamma, beta = pruned.get_layer("bn").get_weights()[:2]
    assert np.all(gamma[gone] == 0) and np.all(beta[gone] == 0)
    bn_out = keras.Model(pruned.inputs, pruned.get_layer("bn").output).predict(x, verbose=0)
    assert np.all(bn_out[:, gone] == 0) and np.all(np.any(bn_out[:, [0, 2, 4]] != 0, axis=0))
    assert report["layers"]["h"] == {"units": 6, "removed_units": 3, "removed_weights": 12}
    assert report["pruned_fraction"] == pytest.approx(12 / (24 + 30))
    assert np.array_equal(model.get_layer("h").get_weights()[0], kernel)  # input untouched
    with pytest.raises(InvalidParameterError, match="Cannot prune"):
        compression.structured_prune(model, {"out": 0.5})
    with pytest.raises(InvalidParameterError, match="rate of 'g'"):
        compression.structured_prune(model, {"g": 1.0})


def test_compress_budgets(data):
    x, xi = data
    model = mlp()
    ranking = {"out": 3.0, "g": 2.0, "bn": 1.5, "h": 1.0}
    small, info = compression.compress(model, x, prune=0.3, bits=4, ranking=ranking)
    assert info["bits"] == {"out": 5, "g": 4, "h": 3}
    assert info["rates"]["h"] > info["rates"]["g"]  # inverse: h matters least
    assert info["rates"] == pytest.approx(
        pruning_rates(ranking, {"h": 24, "g": 30}, 0.3))
    assert any(type(layer).__name__ == "FakeQuant" for layer in small.layers)
    _, uniform = compression.compress(cnn(), xi, criterion="uniform", prune=0.25, bits=6)
    assert set(uniform["bits"].values()) == {6}
    assert set(uniform["rates"].values()) == {0.25}
    _, ranked = compression.compress(cnn(), xi, criterion="weight", bits=4)
    order = [k for k in ranked["ranking"] if k in ("c1", "dw", "c2", "out")]  # no bn1
    assert list(ranked["bits"]) == order
    with pytest.raises(InvalidParameterError, match="prune=RATE > 0, bits=B"):
        compression.compress(model, x)
    with pytest.raises(InvalidParameterError, match="prune=RATE > 0, bits=B"):
        compression.compress(model, x, prune=0.0)  # nothing to do
    with pytest.raises(InvalidParameterError, match="must be a dict of layer -> score"):
        compression.compress(model, x, bits=4, ranking=list(ranking))
    with pytest.raises(InvalidParameterError, match=r"does not have: \['zz'\]"):
        compression.compress(model, x, bits=4, ranking={**ranking, "zz": 0.5})
    with pytest.raises(InvalidInputError, match="batch of inputs shaped"):
        compression.compress(cnn(), np.moveaxis(xi, -1, 1), criterion="uniform", bits=4)  # channels first


def test_cli_compress(data, tmp_path, capsys):
    from nnslicer.cli import load_model, main

    _, xi = data
    np.save(tmp_path / "x.npy", xi)
    cnn().save(tmp_path / "m.keras")
    out = tmp_path / "q.keras"
    assert main(["compress", str(tmp_path / "m.keras"), "--data", str(tmp_path / "x.npy"), "--bits", "4",
                 "--prune", "0.2", "--criterion", "gradient", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "c1" in text and "of the prunable weights removed" in text
    assert "bits on average over layers (" in text and " per weight)" in text
    loaded = load_model(str(out))
    assert any(type(layer).__name__ == "FakeQuant" for layer in loaded.layers)
    assert main(["compress", str(tmp_path / "m.keras"), "--data", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "none.keras")]) != 0
    assert not (tmp_path / "none.keras").exists()


def test_cli_layers_ranking_feeds_compress(data, tmp_path, capsys):
    """``layers -o`` writes the ranking that ``compress --ranking`` uses as it is (no second
    ranking); a ranking of another model, a damaged file and a ranking beside --criterion are
    refused."""
    import json

    from analyses.layer_importance import load_ranking, save_ranking
    from nnslicer.cli import main
    from nnslicer.errors import FileFormatError

    _, xi = data
    np.save(tmp_path / "x.npy", xi)
    cnn().save(tmp_path / "m.keras")
    model_path, x_path, ranking_path = str(tmp_path / "m.keras"), str(tmp_path / "x.npy"), str(tmp_path / "r.json")
    assert main(["layers", model_path, "--data", x_path, "--criterion", "weight", "-o", ranking_path]) == 0
    printed = capsys.readouterr().out
    ranking, meta = load_ranking(ranking_path)
    assert list(ranking)[0] in printed and meta["criterion"] == "weight" and meta["model"] == cnn().name
    assert main(["compress", model_path, "--data", x_path, "--ranking", ranking_path, "--bits", "4",
                 "-o", str(tmp_path / "q.keras")]) == 0
    text = capsys.readouterr().out
    for name, score in ranking.items():  # the file's scores, in its order
        assert f"{score:.4g}" in text.split(name)[1].splitlines()[0]
    assert main(["compress", model_path, "--data", x_path, "--ranking", ranking_path, "--criterion", "fit",
                 "--bits", "4", "-o", str(tmp_path / "q2.keras")]) == 2
    assert "give one or the other" in capsys.readouterr().err
    other = tmp_path / "other.json"
    save_ranking({"zz": 1.0}, other)
    assert main(["compress", model_path, "--data", x_path, "--ranking", str(other), "--bits", "4",
                 "-o", str(tmp_path / "q3.keras")]) == 2
    assert "does not have: ['zz']" in capsys.readouterr().err
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        save_ranking({"a": float("nan")}, tmp_path / "nan.json")
    for content in ("not json", json.dumps({"format": "something else"}),
                    json.dumps({"format": "nnslicer-layer-ranking", "layers": [{"layer": "a", "score": "x"}]}),
                    json.dumps({"format": "nnslicer-layer-ranking",
                                "layers": [{"layer": "a", "score": 1}, {"layer": "a", "score": 2}]})):
        (tmp_path / "bad.json").write_text(content)
        with pytest.raises(FileFormatError):
            load_ranking(tmp_path / "bad.json")
    assert main(["layers", model_path, "--data", x_path, "-o", str(tmp_path / "r.csv")]) == 2
    assert "-o takes a .json file" in capsys.readouterr().err
