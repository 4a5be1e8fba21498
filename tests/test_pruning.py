"""Class-focused pruning: exact per-layer counts, real channel removal, mean compensation by
hand, the baselines, fine-tuning, the CLI and every error path."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import doctest  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

import nnslicer  # noqa: E402
from nnslicer import InvalidInputError, InvalidParameterError  # noqa: E402
from nnslicer.cli import main  # noqa: E402

from analyses import pruning  # noqa: E402
from analyses.pruning import class_focused_prune  # noqa: E402
from analyses.synapse_scores import class_slices  # noqa: E402
from tiny import self_labelled  # noqa: E402

L = keras.layers


def mini_resnet(seed=0):
    """A pre-activation residual block as in ResNet10, small: stem, conv1 (not merged),
    conv2 + shortcut (merged by Add), BN, GAP, Dense; a second head through Flatten."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 1), name="image")
    x = L.Conv2D(4, 3, padding="same", use_bias=False, name="stem")(inp)
    pre = L.ReLU(name="pre")(L.BatchNormalization(name="bn1")(x))
    short = L.Conv2D(6, 1, strides=2, use_bias=False, name="short")(pre)
    y = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="conv1")(pre)
    y = L.ReLU(name="relu2")(L.BatchNormalization(name="bn2")(y))
    y = L.Conv2D(6, 3, padding="same", use_bias=False, name="conv2")(y)
    x = L.Add(name="add")([y, short])
    x = L.ReLU(name="relu3")(L.BatchNormalization(name="bn3")(x))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(12, activation="relu", name="fc")(x)
    out = L.Dense(5, activation="softmax", name="out")(x)
    model = keras.Model(inp, out, name="mini_resnet")
    for layer in model.layers:  # BN statistics that are not the identity
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            rng = np.random.default_rng(seed + n)
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, .1, n), rng.normal(0, .1, n),
                               rng.uniform(0.5, 1.5, n)])
    return model


@pytest.fixture(scope="module")
def model():
    return mini_resnet()


@pytest.fixture(scope="module")
def data(model):
    return self_labelled(model, 40, 1)


@pytest.fixture(scope="module")
def slicer(model, data):
    return nnslicer.Slicer(model).fit(*data)


@pytest.fixture(scope="module")
def classes(data):
    return [int(c) for c in np.unique(data[1])[:2]]


def kernels(model):
    return {layer.name: layer.get_weights()[0] for layer in model.layers
            if isinstance(layer, (L.Conv2D, L.Dense))}


# ------------------------------------------------------------------------------ exact counts
def test_ratio_exact_per_layer_magnitude_by_hand(model, data, classes):
    """Expected zeros derived independently: the k smallest |w| of each layer, plus the
    synapses reading a dead channel of a removable producer (stem -> conv1 and short,
    conv1 -> conv2, fc -> out). conv2/short feed the Add: their dead channels stay."""
    ratio = 0.6
    masked, pruned_report = class_focused_prune(model, None, *data, classes, ratio, mean_compensation=False,
                                                method="magnitude", remove=False)
    w = kernels(model)
    expect = {}
    for name, k in w.items():
        n = round(ratio * k.size)
        flat = np.zeros(k.size, bool)
        flat[np.argsort(np.abs(k).ravel(), kind="stable")[:n]] = True
        expect[name] = flat.reshape(k.shape)
    dead = {name: expect[name].reshape(-1, w[name].shape[-1]).all(axis=0) for name in ("stem", "conv1", "fc")}
    expect["conv1"][:, :, dead["stem"], :] = True
    expect["short"][:, :, dead["stem"], :] = True
    dead["conv1"] = expect["conv1"].reshape(-1, 8).all(axis=0)
    expect["conv2"][:, :, dead["conv1"], :] = True
    expect["out"][dead["fc"], :] = True
    got = kernels(masked)
    report = {r.name: r for r in pruned_report.layers}
    for name in w:
        assert np.array_equal(got[name] == 0, expect[name]), name
        assert report[name].pruned == round(ratio * w[name].size)
        assert report[name].masked == expect[name].sum()
        kept = ~expect[name]
        np.testing.assert_array_equal(got[name][kept], w[name][kept])


@pytest.mark.parametrize("method", ["nnslicer", "nnslicer_all", "effective_path", "random"])
def test_ratio_exact_in_layers_without_dead_inputs(model, data, slicer, classes, method):
    masked, report = class_focused_prune(model, slicer, *data, classes, 0.3, method=method, remove=False)
    got = kernels(masked)
    # stem reads the input: nothing upstream can die, so exactly round(0.3 n) zeros.
    assert np.count_nonzero(got["stem"] == 0) == round(0.3 * got["stem"].size)
    for r in report.layers:
        assert r.pruned == round(0.3 * r.synapses)
        assert np.count_nonzero(got[r.name] == 0) == r.masked >= r.pruned


def test_all_ones_masks_give_the_same_outputs(model, data, slicer, classes):
    before = [w.copy() for w in model.get_weights()]
    same, report = class_focused_prune(model, slicer, *data, classes, 1e-6)  # round(1e-6 n) = 0 everywhere
    assert same is not model
    assert all(r.masked == 0 and r.removed_units == 0 for r in report.layers)
    assert same.count_params() == model.count_params()
    np.testing.assert_allclose(same.predict(data[0], verbose=0), model.predict(data[0], verbose=0), atol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # input untouched


# ------------------------------------------------------------------------------ real removal
@pytest.mark.parametrize("compensate", [False, True])
def test_removed_channels_are_gone_and_outputs_equal_the_masked_model(model, data, slicer, classes, compensate):
    kw = dict(method="channel", mean_compensation=compensate)
    small, report = class_focused_prune(model, slicer, *data, classes, 0.5, **kw)
    masked, _ = class_focused_prune(model, slicer, *data, classes, 0.5, remove=False, **kw)
    # channel: round(0.5 * units) whole units die; stem, conv1 and fc are removable.
    assert small.get_layer("stem").filters == 2 and small.get_layer("bn1").gamma.shape == (2,)
    assert small.get_layer("conv1").filters == 4 and small.get_layer("bn2").gamma.shape == (4,)
    assert small.get_layer("conv2").kernel.shape == (3, 3, 4, 6)  # reads 4 channels, writes to the Add: 6
    assert small.get_layer("short").kernel.shape == (1, 1, 2, 6)
    assert small.get_layer("fc").units == 6 and small.get_layer("out").kernel.shape == (6, 5)
    assert masked.get_layer("stem").filters == 4 and masked.get_layer("conv1").filters == 8
    assert report.params_after == small.count_params() < model.count_params()
    assert report.flops_after < report.flops_before
    assert {r.name: r.removed_units for r in report.layers} == {"stem": 2, "conv1": 4, "conv2": 0,
                                                              "short": 0, "fc": 6, "out": 0}
    np.testing.assert_allclose(small.predict(data[0], verbose=0), masked.predict(data[0], verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_flatten_and_dense_removal_on_small_cnn():
    from nnslicer.models import small_cnn

    keras.utils.set_random_seed(3)
    model = small_cnn()
    x = np.random.default_rng(2).uniform(size=(30, 8, 8, 1)).astype("float32")
    y = model.predict(x, verbose=0).argmax(1)
    slicer = nnslicer.Slicer(model).fit(x, y)
    small, report = class_focused_prune(model, slicer, x, y, [int(y[0])], 0.5, method="channel")
    masked, _ = class_focused_prune(model, slicer, x, y, [int(y[0])], 0.5, method="channel", remove=False)
    assert small.get_layer("conv2").filters == 8
    assert small.get_layer("fc1").kernel.shape == (4 * 4 * 8, 16)  # Flatten rows of dead channels gone
    assert small.get_layer("predictions").kernel.shape == (16, 10)
    np.testing.assert_allclose(small.predict(x, verbose=0), masked.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert repr(report).startswith("PruneReport(method='channel'")
    assert "fc1" in report.table()


# ------------------------------------------------------------------------------ mean compensation
def test_mean_compensation_dense_by_hand():
    """W = [[1, -2], [.5, 3], [-1, 1]], b = [.1, -.1]; inputs average to mean_x = [2, 2, 2].
    Magnitude, ratio 0.5: the 3 smallest |w| are .5 (1,0), then the ties of 1 in kernel order,
    (0,0) and (2,0): unit 0 loses every synapse (it is the output: masked, not removed).
    New bias: b0 + (1 + .5 - 1) * 2 = 1.1, b1 = -0.1."""
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, name="d")], name="lin")
    model.get_layer("d").set_weights([np.array([[1, -2], [.5, 3], [-1, 1]], "float32"),
                                      np.array([.1, -.1], "float32")])
    x = np.array([[1, 2, 3], [3, 2, 1]], "float32")
    y = np.array([0, 1])
    slicer = nnslicer.Slicer(model).fit(x)
    pruned, _ = class_focused_prune(model, slicer, x, y, [0], 0.5, method="magnitude")
    kernel, bias = pruned.get_layer("d").get_weights()
    np.testing.assert_array_equal(kernel, [[0, -2], [0, 3], [0, 1]])
    np.testing.assert_allclose(bias, [1.1, -0.1], rtol=1e-6)
    plain, _ = class_focused_prune(model, slicer, x, y, [0], 0.5, method="magnitude", mean_compensation=False)
    np.testing.assert_allclose(plain.get_layer("d").get_weights()[1], [.1, -.1])
    # at the mean input, the compensated layer gives the original output exactly
    np.testing.assert_allclose(pruned.predict(x.mean(0, keepdims=True), verbose=0),
                               model.predict(x.mean(0, keepdims=True), verbose=0), rtol=1e-6)


def test_mean_compensation_conv_constant_input_by_hand():
    """A 'valid' 2x2 conv without bias on images that are constant c per sample (c = 1 or 3,
    mean 2): the compensation of a pruned tap is 2 * w, the same at every position, so the
    new bias of filter f is 2 * (sum of its pruned weights)."""
    model = keras.Sequential([keras.Input((3, 3, 1)), L.Conv2D(2, 2, use_bias=False, name="c"),
                              L.Flatten(name="f")], name="convlin")
    k = np.array([1., -4., 2., 8., -3., 5., 0.5, -7.], "float32").reshape(2, 2, 1, 2)
    model.get_layer("c").set_weights([k])
    x = np.concatenate([np.full((1, 3, 3, 1), 1.), np.full((1, 3, 3, 1), 3.)]).astype("float32")
    slicer = nnslicer.Slicer(model).fit(x)
    pruned, _ = class_focused_prune(model, slicer, x, np.array([0, 1]), [0], 0.5, method="magnitude")
    # |k| filter 0: 1, 2, 3, .5 ; filter 1: 4, 8, 5, 7; the 4 smallest: .5, 1, 2, 3 = all of filter 0
    kernel, bias = pruned.get_layer("c").get_weights()
    np.testing.assert_array_equal(kernel[..., 0], 0)
    np.testing.assert_allclose(bias, [2 * (1 + 2 - 3 + .5), 0], rtol=1e-6)
    assert pruned.get_layer("c").use_bias and not model.get_layer("c").use_bias


def test_nnslicer_keeps_target_accuracy_better_than_random_on_digits():
    from nnslicer.datasets import load_digits
    from nnslicer.models import small_cnn

    (xtr, ytr), (xte, yte) = load_digits()
    keras.utils.set_random_seed(0)
    model = small_cnn()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(xtr, ytr, epochs=8, verbose=0)
    slicer = nnslicer.Slicer(model).fit(xtr, ytr)
    slices = class_slices(slicer, xtr, ytr, [0, 1, 5], max_per_class=30)
    sel = np.isin(yte, [0, 1, 5])

    def acc(method, **kw):
        m, _ = class_focused_prune(model, slicer, xtr, ytr, [0, 1, 5], 0.6, method=method, slices=slices, **kw)
        return np.mean(m.predict(xte[sel], verbose=0).argmax(1) == yte[sel])

    ours = acc("nnslicer")
    assert ours > 0.8
    assert ours > acc("random") + 0.3
    assert ours > acc("nnslicer", mean_compensation=False)  # the compensation helps


def test_fine_tuning_keeps_pruned_synapses_at_zero(model, data, slicer, classes):
    plain, _ = class_focused_prune(model, slicer, *data, classes, 0.5, remove=False)
    tuned, report = class_focused_prune(model, slicer, *data, classes, 0.5, remove=False, fine_tune_epochs=2,
                                        fine_tune_lr=1e-2)
    a, b = kernels(plain), kernels(tuned)
    for name in a:
        assert np.array_equal(a[name] == 0, b[name] == 0), name
    assert any(not np.allclose(a[n], b[n]) for n in a)  # training did move the kept ones
    assert report.fine_tune_epochs == 2


def test_layers_restricts_pruning(model, data, classes):
    _, report = class_focused_prune(model, None, *data, classes, 0.5, method="magnitude",
                                    mean_compensation=False, layers=["conv2"], remove=False)
    counts = {r.name: r.masked for r in report.layers}
    assert counts == {"stem": 0, "conv1": 0, "conv2": round(0.5 * 3 * 3 * 8 * 6), "short": 0, "fc": 0, "out": 0}


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs, error, words", [
    (dict(classes=[12]), InvalidParameterError, "Class 12 does not exist: the model has 5 classes"),
    (dict(classes=[]), InvalidParameterError, "at least one class"),
    (dict(classes=["a"]), InvalidParameterError, "must hold ints"),
    (dict(ratio=1.5), InvalidParameterError, "The 'ratio' parameter of class_focused_prune must be a float in (0, 1). Got 1.5"),
    (dict(ratio=0), InvalidParameterError, "'ratio'"),
    (dict(method="l2"), InvalidParameterError, "'method'"),
    (dict(fine_tune_epochs=-1), InvalidParameterError, "'fine_tune_epochs'"),
    (dict(layers=["pre"]), InvalidParameterError, "Not weighted layers"),
])
def test_bad_parameters(model, data, slicer, classes, kwargs, error, words):
    args = dict(classes=classes, ratio=0.5)
    args.update(kwargs)
    with pytest.raises(error, match=None) as info:
        class_focused_prune(model, slicer, *data, **args)
    assert words in str(info.value)


def test_class_without_samples_and_compensation_without_profile(model, data, slicer):
    x, y = data
    missing = next(c for c in range(5) if c not in set(y.tolist()))
    with pytest.raises(InvalidInputError, match=f"No sample of class\\(es\\) \\[{missing}\\]"):
        class_focused_prune(model, slicer, x, y, [missing], 0.5)
    with pytest.raises(InvalidInputError, match="mean_compensation needs a fitted Slicer"):
        class_focused_prune(model, None, x, y, [int(y[0])], 0.5, method="magnitude")


def test_doctest():
    result = doctest.testmod(pruning, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------ CLI
@pytest.fixture
def files(tmp_path, model, data):
    path = tmp_path / "m.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", data[0])
    np.save(tmp_path / "y.npy", data[1])
    return tmp_path


def test_cli_prune_round_trip(files, model, data, classes, capsys):
    out = files / "p.keras"
    code = main(["prune", str(files / "m.keras"), "--data", str(files / "x.npy"), "--labels",
                 str(files / "y.npy"), "--classes", ",".join(map(str, classes)), "--ratio", "0.5",
                 "--method", "channel", "-o", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "PruneReport(method='channel'" in text and "conv1" in text
    assert text.splitlines()[0].split()[-3:] == ["units", "units", "removed"]  # two columns, two headers
    pruned = keras.models.load_model(out, compile=False)
    assert pruned.count_params() < model.count_params()
    assert pruned.get_layer("conv1").filters == 4
    x, y = data
    after = 100 * np.mean(pruned.predict(x, verbose=0).argmax(-1) == y)
    assert f"all classes {100 * np.mean(model.predict(x, verbose=0).argmax(-1) == y):.1f}% -> {after:.1f}%" in text


@pytest.mark.parametrize("classes_arg, words", [
    ("12", "Class 12 does not exist"), ("a,b", "--classes takes comma-separated"), ("missing", "No sample of class")])
def test_cli_prune_refuses_bad_classes(files, data, capsys, classes_arg, words):
    if classes_arg == "missing":
        classes_arg = str(next(c for c in range(5) if c not in set(data[1].tolist())))
    out = files / "p.keras"
    code = main(["prune", str(files / "m.keras"), "--data", str(files / "x.npy"), "--labels",
                 str(files / "y.npy"), "--classes", classes_arg, "--ratio", "0.5", "-o", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("nnslicer prune: error:") and words in err
    assert not out.exists()


def test_a_shared_layer_keeps_one_mask_and_its_units(tmp_path):
    """A Dense called twice is two ops with one kernel: the kernel gets one mask (the ratio
    holds), nothing that feeds or is fed by it is cut, and the pruned model runs."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((3,), name="x")
    shared = L.Dense(3, activation="relu", name="shared")
    h = shared(L.Dense(3, activation="relu", name="a")(shared(inp)))
    out = L.Dense(2, activation="softmax", name="out")(L.Dense(4, activation="relu", name="b")(h))
    model = keras.Model(inp, out)
    x = np.random.default_rng(2).normal(size=(60, 3)).astype("float32")
    y = model.predict(x, verbose=0).argmax(axis=1)
    slicer = nnslicer.Slicer(model).fit(x, y)
    classes = [int(y[0])]
    pruned, pruned_report = class_focused_prune(model, slicer, x, y, classes, 0.5)
    kernel = pruned.get_layer("shared").get_weights()[0]
    assert kernel.shape == (3, 3) and np.count_nonzero(kernel) == 9 - round(0.5 * 9)
    assert pruned.get_layer("a").get_weights()[0].shape == (3, 3)
    assert pruned(x).shape == (60, 2)
    report = {r.name: r for r in pruned_report.layers}
    assert not report["shared"].removable and not report["a"].removable


def test_layers_it_cannot_rewrite_are_masked_not_cut():
    """SeparableConv2D (two kernels in one layer), LayerScale and the layers of a model inside
    the model are not rewritten as Dense or Conv2D: their pruned synapses are masked (zeros of
    the weight the lift located), shapes unchanged; an op whose weight is not located is
    refused by name."""
    from keras.src.applications.convnext import LayerScale

    keras.utils.set_random_seed(5)
    inner = keras.Sequential([keras.Input((3, 3, 6)), L.Conv2D(6, 1, name="inner_conv")], name="block")
    x_in = keras.Input((6, 6, 2))
    h = L.Conv2D(6, 3, activation="relu", name="conv")(x_in)
    h = L.SeparableConv2D(6, 2, name="sep")(h)
    h = LayerScale(0.5, 6, name="scale")(inner(h))
    model = keras.Model(x_in, L.Dense(3, name="out")(L.Flatten(name="flat")(h)), name="mixed")
    x = np.random.default_rng(0).normal(size=(24, 6, 6, 2)).astype("float32")
    y = model.predict(x, verbose=0).argmax(1)
    slicer = nnslicer.Slicer(model).fit(x, y)
    graph = slicer.graph_
    editable = pruning.editable_ops(model, graph)
    assert editable >= {"conv", "out"} and not editable & {"sep", "sep/depthwise", "block/inner_conv", "scale"}
    assert pruning.maskable_ops(graph, editable) == {"sep", "sep/depthwise", "block/inner_conv", "scale"}
    pruned, pruned_report = class_focused_prune(model, slicer, x, y, [int(y[0])], 0.5)
    before = {layer.name: layer.get_weights() for layer in model.layers}
    after = {layer.name: layer.get_weights() for layer in pruned.layers}
    for layer, index in (("sep", 0), ("sep", 1), ("block", 0), ("scale", 0)):
        w, v = before[layer][index], after[layer][index]
        assert v.shape == w.shape and np.count_nonzero(v) == w.size - round(0.5 * w.size), (layer, index)
        assert np.array_equal(v[v != 0], w[v != 0])  # the kept ones unchanged
    assert np.array_equal(before["sep"][2], after["sep"][2]) and np.array_equal(before["block"][1], after["block"][1])
    assert np.count_nonzero(after["conv"][0]) == round(0.5 * before["conv"][0].size)
    report = {r.name: r for r in pruned_report.layers}
    assert report["sep"].pruned == round(0.5 * 36) and not report["sep"].removable
    del graph["scale"].params["variable"]  # a weight the lift could not locate: refused when asked for
    with pytest.raises(InvalidParameterError, match=r"Cannot prune \['scale'\]"):
        class_focused_prune(model, slicer, x, y, [int(y[0])], 0.5, layers=["conv", "scale", "block/inner_conv"])
