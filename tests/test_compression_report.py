"""The compression report: every figure on two identical models (no flips, zero shift), figures
checked against direct computations on a changed model, slice survival (by hand, and refused
for removed channels or a model nnslicer cannot lift), JSON, HTML, the CLI and the error paths."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import base64  # noqa: E402
import doctest  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import nnslicer  # noqa: E402
from nnslicer import InvalidInputError, InvalidParameterError  # noqa: E402
from nnslicer.cli import main  # noqa: E402

from analyses import compression_report  # noqa: E402
from analyses.compression_report import CompressionReport, compare  # noqa: E402
from analyses.synapse_scores import class_slices  # noqa: E402
from tiny import self_labelled, tiny_cnn  # noqa: E402

L = keras.layers


def with_weights(model, name, change):
    """A copy of ``model`` (its own object, same layer names) whose layer weights ``change``
    (layer name -> function of the weight list) edits."""
    copy = keras.models.clone_model(model)
    copy.name = name
    for layer in copy.layers:
        weights = model.get_layer(layer.name).get_weights()
        if layer.name in change:
            weights = change[layer.name]([w.copy() for w in weights])
        layer.set_weights(weights)
    return copy


def narrow_cnn(filters, seed=0):
    """tiny_cnn's layers and names with another number of conv filters."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6, 6, 1), name="image"), L.Conv2D(filters, 3, activation="relu", name="conv"),
                             L.MaxPooling2D(2, name="pool"), L.Flatten(name="flat"),
                             L.Dense(10, activation="softmax", name="dense")], name="narrow")


class Scale(L.Layer):
    """A layer nnslicer has no lifter for."""

    def call(self, x):
        return 2.0 * x


def _bias(weights):
    weights[1][2] += 1.5  # class 2 gets more likely: some predictions flip to it
    return weights


def _zero_filter(weights):
    weights[0][..., 0] = 0  # the first conv filter goes
    return weights


@pytest.fixture(scope="module")
def models():
    a = tiny_cnn(0, name="original")
    return {"a": a, "twin": tiny_cnn(0, name="twin"), "biased": with_weights(a, "biased", {"dense": _bias}),
            "zeroed": with_weights(a, "zeroed", {"conv": _zero_filter})}


@pytest.fixture(scope="module")
def data(models):
    return self_labelled(models["a"], 40, 1)


@pytest.fixture(scope="module")
def same(models, data):
    return compare(models["a"], models["twin"], *data, max_per_class=5, saliency_samples=20)


@pytest.fixture(scope="module")
def biased(models, data):
    return compare(models["a"], models["biased"], *data, slices=False, saliency_samples=10)


# ------------------------------------------------------------------------------ identical models
def test_identical_models_change_nothing(same, data):
    x, y = data
    classes = tuple(np.unique(y).tolist())
    assert same.classes == classes and same.samples == 40
    assert same.flipped == 0.0
    assert same.confidence_shift == same.confidence_shift_abs == same.confidence_shift_unchanged == 0.0
    assert same.confidence_shift_flipped is None  # no flipped sample
    assert same.shift_histogram["flipped"] == [0] * 40 and sum(same.shift_histogram["unchanged"]) == 40
    assert same.saliency_mad == 0.0 and same.saliency_samples == 20
    assert same.class_accuracy_a == same.class_accuracy_b == {c: 1.0 for c in classes}  # self-labelled
    assert same.accuracy_a == same.accuracy_b == 1.0
    assert same.survival == {c: 1.0 for c in classes} and same.survival_mean == 1.0
    assert same.survival_note is None
    assert same.max_class_change[1] == 0.0
    assert same.class_samples == {c: int(np.sum(y == c)) for c in classes}
    assert "flipped=0.0000" in repr(same) and "survival=1.0000" in repr(same)


# ------------------------------------------------------------------------------ figures by hand
def _reference_saliency(model, x, target):
    """One sample at a time, normalised by its maximum."""
    maps = []
    for xi, t in zip(x, target):
        xt = tf.constant(xi[None])
        with tf.GradientTape() as tape:
            tape.watch(xt)
            p = model(xt, training=False)[0, int(t)]
        g = np.abs(tape.gradient(p, xt).numpy()[0]).astype(np.float64)
        maps.append(g / g.max() if g.max() > 0 else g)
    return np.array(maps)


def test_figures_equal_direct_computations(biased, models, data):
    x, y = data
    p_a = models["a"].predict(x, verbose=0).astype(np.float64)
    p_b = models["biased"].predict(x, verbose=0).astype(np.float64)
    pred_a, pred_b = p_a.argmax(1), p_b.argmax(1)
    flips = pred_a != pred_b
    assert 0 < flips.mean() < 1 and set(pred_b[flips]) == {2}  # the test means something
    assert biased.flipped == pytest.approx(flips.mean())
    assert biased.accuracy_b == pytest.approx(np.mean(pred_b == y))
    for c in biased.classes:
        assert biased.class_accuracy_a[c] == 1.0
        assert biased.class_accuracy_b[c] == pytest.approx(np.mean(pred_b[y == c] == c))
    assert biased.class_accuracy_b[2] == 1.0  # class 2 only gains
    shift = p_b[np.arange(40), pred_a] - p_a[np.arange(40), pred_a]
    assert biased.confidence_shift == pytest.approx(shift.mean(), abs=1e-6)
    assert biased.confidence_shift_abs == pytest.approx(np.abs(shift).mean(), abs=1e-6)
    assert biased.confidence_shift_flipped == pytest.approx(np.abs(shift[flips]).mean(), abs=1e-6)
    assert biased.confidence_shift_unchanged == pytest.approx(np.abs(shift[~flips]).mean(), abs=1e-6)
    assert sum(biased.shift_histogram["flipped"]) == flips.sum()
    cls, change = biased.max_class_change
    worst = max(biased.classes, key=lambda c: abs(biased.class_accuracy_b[c] - 1.0))
    assert cls == worst and change == pytest.approx(100 * (biased.class_accuracy_b[worst] - 1.0))
    maps_a = _reference_saliency(models["a"], x[:10], pred_a[:10])
    maps_b = _reference_saliency(models["biased"], x[:10], pred_a[:10])
    assert biased.saliency_mad == pytest.approx(np.abs(maps_a - maps_b).mean(), rel=1e-4)
    assert 0 < biased.saliency_mad < 1
    assert biased.survival is None and "slices=False" in biased.survival_note


def test_logits_models_get_a_softmax(models, data):
    """A model without softmax gives the same figures as with it (softmax is applied)."""
    def logits(model, name):
        copy = with_weights(model, name, {})
        out = L.Dense(10, name="dense")
        inner = keras.Sequential([keras.Input((6, 6, 1), name="image")] + copy.layers[:-1] + [out], name=name)
        out.set_weights(model.get_layer("dense").get_weights())
        return inner

    report = compare(logits(models["a"], "a_logits"), logits(models["biased"], "b_logits"), *data,
                     slices=False, saliency_samples=0)
    reference = compare(models["a"], models["biased"], *data, slices=False, saliency_samples=0)
    assert report.saliency_mad is None and report.saliency_samples == 0
    assert report.flipped == reference.flipped
    assert report.confidence_shift == pytest.approx(reference.confidence_shift, abs=1e-5)


# ------------------------------------------------------------------------------ slice survival
def test_survival_of_a_zeroed_filter_by_hand(models, data):
    x, y = data
    done = []
    report = compare(models["a"], models["zeroed"], x, y, max_per_class=5, saliency_samples=0, progress=done.append)
    slicers = [nnslicer.Slicer(models[k]).fit(x) for k in ("a", "zeroed")]
    sa, sb = (class_slices(s, x, y, report.classes, 5) for s in slicers)
    # progress counts the samples sliced on both models, up to all of them
    assert done == sorted(done) and done[-1] == 2 * sum(sa[c].samples for c in report.classes)
    for c in report.classes:
        kept = sum(np.count_nonzero((sa[c].synapse_counts[k] != 0) & (sb[c].synapse_counts[k] != 0))
                   for k in sa[c].synapse_counts)
        assert report.survival[c] == pytest.approx(kept / sa[c].n_synapses)
        # a zero weight carries nothing: no synapse of the zeroed filter is in b's slice
        assert not np.any(sb[c].synapse_counts["conv"][..., 0])
    assert report.survival_mean < 1
    assert report.survival_mean == pytest.approx(np.mean(list(report.survival.values())))


def test_survival_refused_for_removed_channels(models, data):
    report = compare(models["a"], narrow_cnn(2), *data, saliency_samples=0)
    assert report.survival is None and report.survival_mean is None
    assert "conv: kernel (3, 3, 1, 3) vs (3, 3, 1, 2)" in report.survival_note
    assert "dense: kernel (12, 10) vs (8, 10)" in report.survival_note
    assert "survival=n/a" in repr(report)
    assert report.flipped > 0  # the other figures are there


def with_first_layer(model, layer):
    """``layer`` on the input, then ``model``'s layers with its weights."""
    out = keras.Sequential([keras.Input((6, 6, 1), name="image"), layer]
                           + [L.Conv2D(3, 3, activation="relu", name="conv"), L.MaxPooling2D(2, name="pool"),
                              L.Flatten(name="flat"), L.Dense(10, activation="softmax", name="dense")],
                           name=layer.name)
    for name in ("conv", "dense"):
        out.get_layer(name).set_weights(model.get_layer(name).get_weights())
    return out


def test_survival_refused_for_unliftable_model(models, data):
    report = compare(models["a"], with_first_layer(models["a"], Scale(name="scale")), *data, saliency_samples=5)
    assert report.survival is None
    assert report.survival_note.startswith("nnslicer cannot lift model_b") and "Scale" in report.survival_note
    assert report.saliency_mad is not None and report.saliency_note is None


class Round(L.Layer):
    """Rounding without a straight-through estimator: no gradient reaches the input."""

    def call(self, x):
        return keras.ops.round(4.0 * x) / 4.0


def test_saliency_refused_when_one_gradient_is_zero(models, data):
    report = compare(models["a"], with_first_layer(models["a"], Round(name="round")), *data, slices=False,
                     saliency_samples=5)
    assert report.saliency_mad is None and report.saliency_examples == []
    assert report.saliency_note.startswith("not comparable: every saliency map of model_b is zero")
    assert report.saliency_note in report.summary() and report.flipped < 0.5


def test_classes_restrict_the_per_class_figures(models, data):
    x, y = data
    c = int(y[0])
    report = compare(models["a"], models["zeroed"], x, y, classes=[c], max_per_class=3, saliency_samples=0)
    assert report.classes == (c,) and set(report.survival) == {c} and set(report.class_accuracy_b) == {c}
    assert report.settings == {"theta": 0.2, "granularity": "element", "max_per_class": 3}


def test_doctest():
    result = doctest.testmod(compression_report, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------ files
def test_json_round_trip(biased, same, tmp_path):
    for report in (biased, same):
        path = report.save_json(tmp_path / "r.json")
        back = CompressionReport.load(path)
        assert back.to_dict() == report.to_dict() and back == report and not back != report
        assert (biased == same) is False and report != "a report"
        assert back.classes == report.classes and back.class_accuracy_b == report.class_accuracy_b
        assert back.survival == report.survival and repr(back) == repr(report)
    raw = json.loads((tmp_path / "r.json").read_text())
    assert raw["format"] == "nnslicer-compression-report" and raw["survival_mean"] == 1.0
    assert raw["max_class_change"] == {"class": same.classes[0], "points": 0.0}
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(nnslicer.FileFormatError, match="Not a compression report"):
        CompressionReport.load(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text("not json")
    with pytest.raises(nnslicer.FileFormatError, match="not a JSON compression report"):
        CompressionReport.load(tmp_path / "bad.json")


def test_class_names(models, data, tmp_path):
    names = [f"kind {i}" for i in range(10)]
    report = compare(models["a"], models["twin"], *data, slices=False, saliency_samples=0, class_names=names)
    c = report.classes[0]
    assert report.label(c) == f"{c} (kind {c})" and f"{c} (kind {c})" in report.table()
    assert f"<td>{c} (kind {c})</td>" in report.to_html()
    back = CompressionReport.load(report.save_json(tmp_path / "r.json"))
    assert back == report and back.class_names == tuple(names)
    raw = json.loads((tmp_path / "r.json").read_text())
    for bad in (["a"], [""] * 10, "kinds"):
        (tmp_path / "bad.json").write_text(json.dumps({**raw, "class_names": bad}))
        with pytest.raises(nnslicer.FileFormatError, match="'class_names'"):
            CompressionReport.load(tmp_path / "bad.json")
    del raw["class_names"]  # reports written before class names load back
    (tmp_path / "old.json").write_text(json.dumps(raw))
    assert CompressionReport.load(tmp_path / "old.json").class_names is None
    with pytest.raises(nnslicer.InvalidParameterError, match="10 classes, but 2 class names"):
        compare(models["a"], models["twin"], *data, slices=False, saliency_samples=0, class_names=["a", "b"])


def _images(page):
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_html_report(biased, same, tmp_path):
    path = biased.save_html(tmp_path / "r.html")
    page = open(path, encoding="utf-8").read()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert "original" in page and "biased" in page
    assert f"{100 * biased.flipped:.2f}%" in page and f"{100 * biased.saliency_mad:.2f}%" in page
    assert f"{100 * biased.accuracy_b:.2f}%" in page
    assert "slices=False" in page  # why there is no survival
    images = _images(page)
    assert len(images) == 3  # accuracy, shift histogram, saliency examples (no survival)
    assert all(img.startswith(b"\x89PNG\r\n\x1a\n") for img in images)
    assert len(biased.saliency_examples) == 3 and biased.saliency_examples[0]["pred_a"] != \
        biased.saliency_examples[0]["pred_b"]  # flipped samples first
    assert biased.saliency_examples[0]["saliency_a"].shape == (6, 6)
    page = same.to_html()
    assert len(_images(page)) == 4 and "100.00% mean over" in page  # with the survival plot


def test_html_escapes_names(models, data, tmp_path):
    report = compare(models["a"], models["twin"], *data, slices=False, saliency_samples=0,
                     names=("<b>a&b</b>", "m\"2"))
    page = report.to_html()
    assert "&lt;b&gt;a&amp;b&lt;/b&gt;" in page and "<b>a&b</b>" not in page
    assert len(_images(page)) == 2  # no saliency examples without saliency


# ------------------------------------------------------------------------------ errors
def test_models_must_match(models, data):
    x, y = data
    with pytest.raises(InvalidInputError, match=r"inputs of different shapes: \(6, 6, 1\) \(model_a\) and \(5, 5, 1\)"):
        compare(models["a"], keras.Sequential([keras.Input((5, 5, 1)), L.Flatten(), L.Dense(10)]), x, y)
    with pytest.raises(InvalidInputError, match=r"different numbers of classes: 10 \(model_a\) and 5"):
        compare(models["a"], tiny_cnn(0, n_classes=5), x, y)
    with pytest.raises(InvalidInputError, match="model_b must be a built Keras model. Got str"):
        compare(models["a"], "model.keras", x, y)


@pytest.mark.parametrize("change, words", [
    (lambda x, y: (x[:, :5], y), r"x must be a batch of inputs shaped \(6, 6, 1\)"),
    (lambda x, y: (np.where(x > 2, np.nan, x), y), "NaN or infinite"),
    (lambda x, y: (x.astype(str), y), "array of real numbers"),
    (lambda x, y: (x, y[:-1]), r"one integer label per sample \(40\)"),
    (lambda x, y: (x, y + 0.5), "non-integral float64"),
    (lambda x, y: (x, y + 10), r"labels outside \[0, 10\)"),
    (lambda x, y: (x[:0], y[:0]), "x is empty"),
])
def test_bad_data(models, data, change, words):
    with pytest.raises(InvalidInputError, match=words):
        compare(models["a"], models["twin"], *change(*data))


def test_one_hot_labels_are_accepted(models, data):
    x, y = data
    report = compare(models["a"], models["biased"], x, np.eye(10)[y], slices=False, saliency_samples=0)
    assert report.accuracy_a == 1.0


@pytest.mark.parametrize("kw, words", [
    ({"max_per_class": 0}, "The 'max_per_class' parameter of compare must be a positive int. Got 0 instead."),
    ({"max_per_class": 2.5}, "'max_per_class' parameter of compare must be a positive int. Got 2.5"),
    ({"saliency_samples": -1}, "The 'saliency_samples' parameter of compare must be an int >= 0. Got -1 instead."),
    ({"batch_size": True}, "The 'batch_size' parameter of compare must be a positive int. Got True instead."),
    ({"slices": "yes"}, "The 'slices' parameter of compare must be True or False"),
    ({"granularity": "neuron"}, "The 'granularity' parameter of compare must be 'element' or 'channel'"),
    ({"theta": 2.0}, "The 'theta' parameter of compare must be a float in \\(0, 1\\)"),
    ({"names": "ab"}, "The 'names' parameter of compare must be two strings"),
    ({"classes": [12]}, "Class 12 does not exist"),
])
def test_bad_parameters(models, data, kw, words):
    with pytest.raises(InvalidParameterError, match=re.escape(words) if "\\" not in words else words):
        compare(models["a"], models["twin"], *data, **kw)


# ------------------------------------------------------------------------------ CLI
@pytest.fixture
def files(tmp_path, models, data):
    models["a"].save(tmp_path / "a.keras")
    models["zeroed"].save(tmp_path / "b.keras")
    narrow_cnn(2).save(tmp_path / "narrow.keras")
    tiny_cnn(0, n_classes=5).save(tmp_path / "five.keras")
    np.save(tmp_path / "x.npy", data[0])
    np.save(tmp_path / "y.npy", data[1])
    return tmp_path


def _compare(files, a, b, *more):
    return main(["compare", str(files / a), str(files / b), "--data", str(files / "x.npy"),
                 "--labels", str(files / "y.npy"), *more])


def test_cli_compare(files, capsys):
    code = _compare(files, "a.keras", "b.keras", "-o", str(files / "report.html"), "--max-per-class", "3",
                    "--saliency-samples", "8")
    assert code == 0
    out = capsys.readouterr().out
    report = CompressionReport.load(files / "report.json")  # beside the HTML by default
    assert report.name_a == "a.keras" and report.name_b == "b.keras" and report.saliency_samples == 8
    assert f"flipped predictions   {100 * report.flipped:.2f}%" in out and "slice survival" in out
    assert f"{100 * report.survival_mean:.2f}% mean over" in out
    page = (files / "report.html").read_text()
    assert len(_images(page)) == 4 and f"{100 * report.flipped:.2f}%" in page


def test_cli_compare_json_path_and_no_slices(files, capsys):
    code = _compare(files, "a.keras", "narrow.keras", "-o", str(files / "r.html"), "--json",
                    str(files / "figures.json"), "--no-slices", "--saliency-samples", "0")
    assert code == 0
    assert CompressionReport.load(files / "figures.json").survival is None
    assert not (files / "r.json").exists()
    assert "not compared: not computed (slices=False)" in capsys.readouterr().out


@pytest.mark.parametrize("b, more, words", [
    ("five.keras", [], "different numbers of classes"),
    ("b.keras", ["--max-per-class", "0"], "'max_per_class' parameter of compare must be a positive int"),
    ("b.keras", ["--json", "{out}"], "--json takes a .json file"),
    ("b.keras", ["--json", "{out}.json", "-o", "{out}.json"], "-o takes a .html or .htm file"),
    ("missing.keras", [], "No such model file"),
])
def test_cli_compare_fails_cleanly(files, capsys, b, more, words):
    out = files / "report.html"
    code = _compare(files, "a.keras", b, "-o", str(out), *[m.format(out=out) for m in more])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("nnslicer compare: error:") and words in err
    assert not out.exists() and not (files / "report.json").exists()


def test_cli_compare_missing_output_directory(files, capsys):
    code = _compare(files, "a.keras", "b.keras", "-o", str(files / "nowhere" / "r.html"))
    assert code == 2 and "No such directory" in capsys.readouterr().err
