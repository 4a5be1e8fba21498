"""Adversarial input detectors: the outlier contract, features, files, CLI, and an end-to-end case."""

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skops")
keras = pytest.importorskip("keras")

import nnslicer  # noqa: E402
from analyses.adversarial import (  # noqa: E402
    DETECTORS, Detector, Features, FeatureMapDetector, MahalanobisDetector, SliceDetector, default_layer, load_detector,
    register_detector)
from analyses.attacks import bim, fgsm  # noqa: E402
from nnslicer.cli import main  # noqa: E402
from nnslicer.datasets import load_digits  # noqa: E402
from nnslicer.errors import FileFormatError, InvalidInputError, InvalidParameterError, NotFittedError  # noqa: E402
from nnslicer.models import small_cnn  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def model(digits):
    (x, y), _ = digits
    keras.utils.set_random_seed(0)
    m = small_cnn()
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(x, y, epochs=25, batch_size=64, verbose=0)
    return m


@pytest.fixture(scope="module")
def other_model():
    keras.utils.set_random_seed(1)
    return small_cnn()


@pytest.fixture(scope="module")
def slicer(model, digits):
    (x, y), _ = digits
    return nnslicer.Slicer(model).fit(x, y)


def detectors(model, slicer):
    return {
        "slice": SliceDetector(slicer),  # defaults: a two-stage model's last stage (conv2), a forest
        "slice_paper": SliceDetector(slicer, layer=-1, classifier="tree"),
        "effective_path": SliceDetector(nnslicer.Slicer(model, rule="effective_path").fit(profile=slicer.profile_)),
        "feature_map": FeatureMapDetector(model),
        "mahalanobis": MahalanobisDetector(model),
    }


@pytest.fixture(scope="module")
def fitted(model, slicer, digits):
    (x, y), _ = digits
    return {name: det.fit(x, y) for name, det in detectors(model, slicer).items()}


# --------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("name", ["slice", "slice_paper", "effective_path", "feature_map", "mahalanobis"])
def test_outlier_contract(fitted, digits, name):
    det = fitted[name]
    _, (x, _) = digits
    flags, scores, decision = det.predict(x[:40]), det.score_samples(x[:40]), det.decision_function(x[:40])
    assert set(np.unique(flags)) <= {-1, 1}
    np.testing.assert_allclose(decision, scores - det.offset_)
    assert np.array_equal(flags == -1, decision < 0)
    assert np.array_equal(det.fit_predict.__self__.predict(x[:40]), flags)
    assert "Detector(" in repr(det)


@pytest.mark.parametrize("name", ["slice", "feature_map", "mahalanobis"])
def test_fit_returns_self_and_not_fitted(model, slicer, digits, name):
    (x, y), _ = digits
    det = detectors(model, slicer)[name]
    with pytest.raises(NotFittedError, match="fit"):
        det.predict(x[:2])
    assert det.fit(x[:200], y[:200]) is det


def test_tree_flags_where_its_class_differs(fitted, digits):
    """predict is -1 exactly where the tree's class differs from the model's (the paper's rule)."""
    det = fitted["slice_paper"]
    _, (x, _) = digits
    feats = det.features(x[:60])
    tree = det.classifier_.predict(feats.values)
    assert np.array_equal(det.predict(feats) == -1, tree != feats.predicted)


def test_slice_features_are_the_layer_counts(fitted, slicer, digits):
    """A slice detector's features are, row by row, the chosen layer's synapse counts of the
    predicted class's slice of each input."""
    det = fitted["slice_paper"]
    _, (x, _) = digits
    feats = det.features(x[:5])
    assert det.layer_ == default_layer(slicer.graph_) == "conv2"
    assert fitted["slice"].layer_ == "conv2" and fitted["slice"].classifier == "forest"
    assert fitted["feature_map"].layer_ == "conv1"  # activations: the stage before the last from two stages
    for i in range(5):
        s = slicer.slice(x[i])
        assert s.targets == [int(feats.predicted[i])]
        np.testing.assert_array_equal(feats.values[i].toarray().ravel(), s.synapse_counts["conv2"].ravel())


def test_default_layers_by_stage(slicer):
    """small_cnn: conv1 (8x8x8) is the first stage, conv2 (4x4x16) the last."""
    assert default_layer(slicer.graph_) == default_layer(slicer.graph_, -1) == "conv2"
    assert default_layer(slicer.graph_, -2) == "conv1"
    mlp = nnslicer.lift(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"),
                                          keras.layers.Dense(2, name="out")]))
    assert default_layer(mlp) == "h"


def test_a_deep_model_slices_the_stage_before_the_last():
    """A slice detector reads stage -2 from three stages of convolutions on (ResNet10: block 3),
    the last stage below (benchmarks/detector_search.py)."""
    from analyses.adversarial import _check_layer

    from nnslicer.models import resnet10

    deep = nnslicer.lift(resnet10((16, 16, 1), 4))
    assert _check_layer(deep, None, deep=3) == default_layer(deep, -2) != default_layer(deep, -1)
    convs = [keras.layers.Conv2D(2, 3, strides=s, padding="same", name=f"c{i}") for i, s in enumerate((1, 2, 2))]
    three = nnslicer.lift(keras.Sequential([keras.Input((8, 8, 1)), *convs, keras.layers.Flatten(),
                                            keras.layers.Dense(3)]))
    assert _check_layer(three, None, deep=3) == "c1" and _check_layer(three, None, deep=4) == "c2"


def test_stage_layer(slicer, digits):
    (x, y), _ = digits
    det = SliceDetector(slicer, layer=-2).fit(x[:100], y[:100])
    assert det.layer_ == "conv1" and det.features(x[:2]).values.shape == (2, 3 * 3 * 1 * 8)


def test_features_reused(fitted, digits):
    det = fitted["slice"]
    _, (x, _) = digits
    feats = det.features(x[:30])
    assert isinstance(feats, Features) and len(feats) == 30 and "dims=" in repr(feats)
    assert det.features(feats) is feats
    np.testing.assert_array_equal(det.score_samples(feats), det.score_samples(x[:30]))
    np.testing.assert_array_equal(feats[np.arange(30) < 3].predicted, feats.predicted[:3])


def test_mahalanobis_against_literal(model, digits):
    """Minus the smallest Mahalanobis distance, computed here class by class with an inverse."""
    (x, y), (xt, _) = digits
    det = MahalanobisDetector(model, contamination=0.1).fit(x[:500])
    f = det.features(x[:500])
    feats, labels = f.values.astype(np.float64), f.predicted
    classes = np.unique(labels)
    means = {k: feats[labels == k].mean(0) for k in classes}
    centred = np.concatenate([feats[labels == k] - means[k] for k in classes])
    prec = np.linalg.pinv(centred.T @ centred / len(feats))
    test = det.features(xt[:10]).values.astype(np.float64)
    want = [-min((t - means[k]) @ prec @ (t - means[k]) for k in classes) for t in test]
    np.testing.assert_allclose(det.score_samples(xt[:10]), want, rtol=1e-6)
    assert det.layer_ == "fc1/relu"
    assert np.isclose(np.mean(det.score_samples(x[:500]) < det.offset_), 0.1, atol=0.01)


def _margin_literal(proba, classes, predicted, n_classes=10):
    """p(model's class) - max p(other class), one row at a time."""
    out = []
    for row, p in zip(proba, predicted):
        full = np.zeros(n_classes)
        full[classes] = row
        out.append(full[p] - max(full[c] for c in range(n_classes) if c != p))
    return np.array(out)


@pytest.mark.parametrize("classifier", ["forest", "tree"])
def test_contamination_sets_offset_on_held_out_scores(model, slicer, digits, classifier):
    """offset_ is the contamination quantile of scores that no classifier saw the sample of:
    out-of-bag votes of a forest, 5-fold cross-validated trees; both checked literally."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.tree import DecisionTreeClassifier

    (x, y), (xt, _) = digits
    det = SliceDetector(slicer, classifier=classifier, contamination=0.1).fit(x[:600], y[:600])
    feats = det.features(x[:600])
    keep = feats.predicted == y[:600]
    labels = feats.predicted[keep]
    if classifier == "forest":
        proba = det.classifier_.oob_decision_function_
    else:
        cv = StratifiedKFold(5, shuffle=True, random_state=0)
        proba = cross_val_predict(DecisionTreeClassifier(random_state=0), feats.values[np.flatnonzero(keep)],
                                  labels, cv=cv, method="predict_proba")
    want = _margin_literal(proba, det.classifier_.classes_, labels)
    np.testing.assert_allclose(det.clean_scores_, want)
    assert det.offset_ == np.quantile(want, 0.1) and det.offset_ < 0
    assert np.mean(det.clean_scores_ < det.offset_) <= 0.1
    # on new clean inputs the rule is the same: flagged exactly below the offset
    test = det.detect(xt[:100])
    assert np.array_equal(test.adversarial, test.scores < det.offset_)


def test_contamination_tree_with_small_classes(model, digits):
    """With a class of fewer than 5 fit samples the folds are not stratified; every kept
    sample still gets one held-out score."""
    (x, y), _ = digits
    det = FeatureMapDetector(model, classifier="tree", contamination=0.2).fit(x[:30])
    assert np.bincount(det.features(x[:30]).predicted).min() < 5
    assert det.clean_scores_.shape == (30,) and det.offset_ == np.quantile(det.clean_scores_, 0.2)


def test_contamination_moves_the_operating_point(model, slicer, digits):
    """Without contamination the paper's rule (offset 0) applies; a larger contamination flags
    at least as many clean inputs."""
    (x, y), (xt, _) = digits
    feats = FeatureMapDetector(model).features(x[:600])
    plain = FeatureMapDetector(model).fit(feats, y[:600])
    assert plain.offset_ == 0.0
    flagged = [FeatureMapDetector(model, contamination=c).fit(feats, y[:600]).predict(xt[:300]).tolist().count(-1)
               for c in (0.02, 0.1, 0.3)]
    assert flagged == sorted(flagged) and flagged[-1] > flagged[0]
    assert "contamination=0.1" in repr(FeatureMapDetector(model, contamination=0.1))


def test_held_out_flag_rate(model, digits):
    """A forest always scores its fit samples out of bag, so it can say what share of clean
    inputs its rule will flag; a tree only with contamination. n_fit_ counts the kept samples."""
    from sklearn.ensemble import RandomForestClassifier

    (x, y), _ = digits
    feats = FeatureMapDetector(model).features(x[:400])
    keep = feats.predicted == y[:400]
    forest = FeatureMapDetector(model).fit(feats, y[:400])
    assert forest.n_fit_ == keep.sum() < 400
    oob = RandomForestClassifier(100, random_state=0, oob_score=True).fit(feats.values[keep], feats.predicted[keep])
    want = _margin_literal(oob.oob_decision_function_, oob.classes_, feats.predicted[keep])
    assert forest.held_out_flag_rate == pytest.approx(np.mean(want < 0))
    assert FeatureMapDetector(model, classifier="tree").fit(feats, y[:400]).held_out_flag_rate is None
    tree = FeatureMapDetector(model, classifier="tree", contamination=0.1).fit(feats, y[:400])
    assert tree.held_out_flag_rate == pytest.approx(np.mean(tree.clean_scores_ < tree.offset_))
    with pytest.raises(NotFittedError):
        FeatureMapDetector(model).held_out_flag_rate


def test_contamination_file_round_trip(model, slicer, digits, tmp_path):
    (x, y), (xt, _) = digits
    for det in (SliceDetector(slicer, contamination=0.2), FeatureMapDetector(model, contamination=0.2),
                MahalanobisDetector(model, contamination=0.2)):
        det.fit(x[:300], y[:300])
        det.save(tmp_path / "d.nnsd")
        back = load_detector(tmp_path / "d.nnsd", model)
        assert back.contamination == 0.2 and back.offset_ == det.offset_ and back.n_fit_ == det.n_fit_
        np.testing.assert_array_equal(back.clean_scores_, det.clean_scores_)
        np.testing.assert_array_equal(back.predict(xt[:40]), det.predict(xt[:40]))


def test_mahalanobis_pools_feature_maps(model, digits):
    (x, _), _ = digits
    det = MahalanobisDetector(model, layer="conv2").fit(x[:200])
    assert det.features(x[:3]).values.shape == (3, 16)  # channels, averaged over space


def test_fgsm_scores_lower_than_clean(fitted, model, digits):
    """End to end on real digits: FGSM examples score lower (less normal) than their sources."""
    _, (x, y) = digits
    adv = fgsm(model, x, y, eps=0.15)
    assert len(adv) > 50
    from sklearn.metrics import roc_auc_score

    for name in ("slice", "slice_paper"):
        det = fitted[name]
        clean, attacked = det.detect(adv.x_clean), det.detect(adv.x_adv)
        assert attacked.scores.mean() < clean.scores.mean() - 0.1, name
        assert attacked.adversarial.mean() > clean.adversarial.mean() + 0.1, name
        truth = np.r_[np.zeros(len(adv)), np.ones(len(adv))]
        assert roc_auc_score(truth, -np.r_[clean.scores, attacked.scores]) > 0.6, name


# --------------------------------------------------------------------------- bad input
def test_bad_parameters(model, slicer, digits):
    (x, y), _ = digits
    with pytest.raises(InvalidParameterError, match="'classifier' parameter"):
        SliceDetector(slicer, classifier="svm").fit(x[:50])
    with pytest.raises(InvalidParameterError, match="'chunk' parameter"):
        SliceDetector(slicer, chunk=0).fit(x[:50])
    with pytest.raises(InvalidParameterError, match="'layer' parameter"):
        SliceDetector(slicer, layer="pool1").fit(x[:50])
    with pytest.raises(InvalidParameterError, match="'layer' parameter"):
        FeatureMapDetector(model, layer="nope").fit(x[:50])
    with pytest.raises(InvalidParameterError, match="2 stage"):
        SliceDetector(slicer, layer=-3).fit(x[:50])
    with pytest.raises(InvalidParameterError, match="'contamination' parameter"):
        MahalanobisDetector(model, contamination=0.7).fit(x[:50])
    for bad in (0, 0.5, -0.1, True, "0.1"):
        with pytest.raises(InvalidParameterError, match="'contamination' parameter of SliceDetector"):
            SliceDetector(slicer, contamination=bad).fit(x[:50])
        with pytest.raises(InvalidParameterError, match="'contamination' parameter of FeatureMapDetector"):
            FeatureMapDetector(model, contamination=bad).fit(x[:50])
    with pytest.raises(InvalidParameterError, match="or None"):
        FeatureMapDetector(model, contamination=1).fit(x[:50])
    with pytest.raises(InvalidParameterError, match="MahalanobisDetector must be a float in \\(0, 0.5\\)\\. Got None"):
        MahalanobisDetector(model, contamination=None).fit(x[:50])
    with pytest.raises(InvalidInputError, match="at least 5 fit samples"):
        FeatureMapDetector(model, classifier="tree", contamination=0.1).fit(x[:4])
    with pytest.raises(InvalidInputError, match="shape"):
        FeatureMapDetector(model).fit(x[:50, :4])
    with pytest.raises(InvalidInputError, match="labels"):
        FeatureMapDetector(model).fit(x[:50], y[:40])
    with pytest.raises(InvalidInputError, match="NaN"):
        FeatureMapDetector(model).fit(np.full_like(x[:5], np.nan))


def test_unfitted_slicer_is_fitted_on_x(model, digits):
    """A copy of it: the slicer the user gave stays unfitted."""
    (x, y), _ = digits
    slicer = nnslicer.Slicer(model, granularity="channel", theta=0.3)
    det = SliceDetector(slicer).fit(x[:100], y[:100])
    assert det.slicer_.profile_.n_samples == 100 and not hasattr(slicer, "profile_")
    assert (det.slicer_.granularity, det.slicer_.theta) == ("channel", 0.3) and det.slicer is slicer


def test_detectors_are_scikit_learn_estimators(model, digits):
    """get_params / set_params / clone work; a refit after set_params uses the new parameters
    (layer, classifier), nothing of the old fit lingers; GridSearchCV picks among them."""
    from sklearn.base import clone, is_outlier_detector
    from sklearn.model_selection import GridSearchCV

    (x, y), _ = digits
    x, y = x[:120], y[:120]
    for det in (SliceDetector(nnslicer.Slicer(model, granularity="channel"), layer=-1),
                FeatureMapDetector(model, layer=-1), MahalanobisDetector(model)):
        assert is_outlier_detector(det)
        copy = clone(det)
        assert type(copy) is type(det) and copy.get_params() == det.get_params()
        assert not hasattr(clone(det.fit(x, y)), "offset_")  # a clone is unfitted
    det = SliceDetector(nnslicer.Slicer(model, granularity="channel"), layer=-1, classifier="forest").fit(x, y)
    first, scores = det.layer_, det.clean_scores_
    assert len(scores) > 0
    det.set_params(layer=-2, classifier="tree").fit(x, y)
    assert det.layer_ != first and det.get_params()["layer"] == -2
    assert not hasattr(det, "clean_scores_")  # a tree without contamination keeps no held-out scores
    fm = FeatureMapDetector(model, layer=-1).fit(x, y)
    first = fm.layer_
    assert fm.set_params(layer=-2).fit(x, y).layer_ != first

    def agreement(estimator, x_, y_):  # the share of clean inputs taken as clean
        return float(np.mean(estimator.predict(x_) == 1))

    search = GridSearchCV(FeatureMapDetector(model), {"classifier": ["tree", "forest"]}, scoring=agreement, cv=2)
    search.fit(x, y)
    assert search.best_params_["classifier"] in ("tree", "forest") and hasattr(search.best_estimator_, "offset_")


# --------------------------------------------------------------------------- files
@pytest.mark.parametrize("name", ["slice", "slice_paper", "effective_path", "feature_map", "mahalanobis"])
def test_file_round_trip(fitted, model, digits, tmp_path, name):
    det = fitted[name]
    _, (x, _) = digits
    path = tmp_path / "d.nnsd"
    det.save(path)
    back = load_detector(path, model)
    assert type(back) is type(det) and back.offset_ == det.offset_
    np.testing.assert_array_equal(back.score_samples(x[:50]), det.score_samples(x[:50]))
    np.testing.assert_array_equal(back.predict(x[:50]), det.predict(x[:50]))


def test_file_refuses_other_model_and_damage(fitted, other_model, model, tmp_path):
    path = tmp_path / "d.nnsd"
    fitted["slice"].save(path)
    with pytest.raises(FileFormatError, match="fitted for model"):
        load_detector(path, other_model)
    data = path.read_bytes()
    bad = tmp_path / "bad.nnsd"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError):
        load_detector(bad, model)
    with pytest.raises(FileFormatError, match="not an nnslicer detector"):
        load_detector(nnslicer.Profile.save(fitted["slice"].slicer_.profile_, tmp_path / "p.npz"), model)


@pytest.mark.parametrize("name, key, message", [
    ("slice", "mean/input", r"profile.*'input' has shape"),
    ("mahalanobis", "precision", r"damaged detector file: its array 'precision' is 1-D"),
])
def test_file_refuses_arrays_of_the_wrong_shape(fitted, model, tmp_path, name, key, message):
    """A file with the right fingerprint and a cut array is refused (a cut profile used to load
    and give other verdicts)."""
    from nnslicer.io import load_archive, save_archive

    path = tmp_path / "d.nnsd"
    fitted[name].save(path)
    meta, arrays = load_archive(path, "detector")
    arrays[key] = arrays[key].ravel()[:3]
    save_archive(path, "detector", meta, arrays)
    with pytest.raises(FileFormatError, match=message):
        load_detector(path, model)


def test_file_refuses_foreign_types(fitted, model, tmp_path):
    """A classifier blob holding any type other than scikit-learn's trees is refused unloaded."""
    from skops.io import dumps
    from sklearn.linear_model import LogisticRegression

    from nnslicer.io import load_archive, save_archive

    path = tmp_path / "d.nnsd"
    fitted["slice"].save(path)
    meta, arrays = load_archive(path, "detector")
    arrays["classifier"] = np.frombuffer(dumps(LogisticRegression()), dtype=np.uint8)
    save_archive(path, "detector", meta, arrays)
    with pytest.raises(FileFormatError, match="LogisticRegression, which a detector never has"):
        load_detector(path, model)


# --------------------------------------------------------------------------- crafted files
def craft(det, path, meta=None, arrays=None, header=None, classifier=None):
    """Save ``det`` at ``path`` and write it back as a crafted file would be, signed as
    save_archive signs: header fields and arrays updated from ``meta`` and ``arrays`` (a field
    set to ``...`` removed), the whole header replaced by ``header``, and ``classifier(clf)``
    applied to the classifier, loaded by skops and dumped again."""
    from skops.io import dumps, get_untrusted_types, loads

    from nnslicer.io import load_archive, save_archive

    det.save(path)
    old, stored = load_archive(path, "detector")
    if classifier is not None:
        data = bytes(stored["classifier"])
        clf = loads(data, trusted=get_untrusted_types(data=data))
        classifier(clf)
        stored["classifier"] = np.frombuffer(dumps(clf), dtype=np.uint8)
    meta = {k: v for k, v in {**old, **(meta or {})}.items() if v is not ...}
    save_archive(path, "detector", meta if header is None else header, {**stored, **(arrays or {})})
    return str(path)


def refused(path, model, message):
    """load_detector refuses ``path`` with a one-line FileFormatError that names the file."""
    with pytest.raises(FileFormatError, match=message) as info:
        load_detector(path, model)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def edit_tree(field, index, value, which=0):
    """An edit of the classifier: ``tree_.field[index] = value`` (``field = value`` with
    ``index`` None) on the classifier's tree, or on a forest's tree ``which``."""
    def edit(clf):
        tree = getattr(clf, "estimators_", [clf])[which].tree_
        if index is None:
            setattr(tree, field, value)
        else:
            getattr(tree, field)[index] = value  # a view of the tree's own memory
    return edit


def run_score(model, det_path, x, tmp_path):
    """``nnslicer detect score`` of ``x`` in a process of its own, so that a regression that
    crashes (segfault) or hangs fails this test alone: (exit status, stderr)."""
    import subprocess
    import sys

    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "t.npy", x)
    done = subprocess.run([sys.executable, "-m", "nnslicer.cli", "detect", "score", str(tmp_path / "m.keras"),
                           det_path, "--input", str(tmp_path / "t.npy")], capture_output=True, text=True,
                          timeout=300)
    return done.returncode, done.stderr


def test_cli_refuses_a_tree_child_out_of_range(fitted, model, digits, tmp_path):
    """A left child at 10**8 made 'detect score' read out of bounds (exit 139, segfault)."""
    _, (x, _) = digits
    path = craft(fitted["slice_paper"], tmp_path / "d.nnsd", classifier=edit_tree("children_left", 0, 10**8))
    status, err = run_score(model, path, x[:3], tmp_path)
    assert status == 2 and err.count("\n") == 1
    assert "error:" in err and "damaged detector file: its tree has a node whose children are not" in err


def test_cli_refuses_a_tree_with_a_cycle(fitted, model, digits, tmp_path):
    """Node 0 its own left child made 'detect score' loop forever."""
    _, (x, _) = digits
    path = craft(fitted["slice_paper"], tmp_path / "d.nnsd", classifier=edit_tree("children_left", 0, 0))
    status, err = run_score(model, path, x[:3], tmp_path)
    assert status == 2 and err.count("\n") == 1
    assert "error:" in err and "damaged detector file: its tree has a node whose children are not" in err


@pytest.mark.parametrize("field, index, value, message", [
    ("children_left", 0, 10**8, "children are not two nodes after it"),
    ("children_left", 0, 0, "children are not two nodes after it"),        # a cycle
    ("children_right", 0, -1, "children are not two nodes after it"),      # one child only
    ("children_right", 0, 1, "not the child of exactly one node"),         # node 1 twice, another never
    ("feature", 0, 10**7, r"splits on a feature out of 0\.\.1151"),
    ("feature", 0, -5, r"splits on a feature out of 0\.\.1151"),
    ("threshold", 0, np.nan, "NaN, inf or negative values"),
    ("value", (-1, 0, 0), np.inf, "NaN, inf or negative values"),
    ("value", (-1, 0, 0), -1.0, "NaN, inf or negative values"),
    ("impurity", 0, np.nan, "NaN, inf or negative values"),
    ("max_depth", None, 10**6, "has max_depth 1000000, but a depth of"),
    ("n_features", None, 10**6, "reads 1000000 features into"),
])
def test_file_refuses_crafted_tree_nodes(fitted, model, tmp_path, field, index, value, message):
    """Every node array of the tree is checked on load (scikit-learn reads them unchecked)."""
    path = craft(fitted["slice_paper"], tmp_path / "d.nnsd", classifier=edit_tree(field, index, value))
    refused(path, model, f"damaged detector file: its tree .*{message}")


def set_attributes(which=None, **attributes):
    """An edit of the classifier that sets its ``attributes`` (or its tree ``which``'s)."""
    def edit(clf):
        for name, value in attributes.items():
            setattr(clf if which is None else clf.estimators_[which], name, value)
    return edit


@pytest.mark.parametrize("edit, message", [
    (edit_tree("children_left", 0, 10**8, which=-1), "tree 99 of its forest has a node whose children"),
    (edit_tree("feature", 0, 512, which=50), r"tree 50 of its forest splits on a feature out of 0\.\.511"),
    (set_attributes(n_estimators=7), "its forest of n_estimators=7 holds 100 trees"),
    (set_attributes(n_features_in_=3), "its forest has n_features_in_ 3, not 512"),
    (set_attributes(n_outputs_=2), "its forest has n_outputs_ 2, not 1"),
    (set_attributes(n_classes_=11), "its forest has n_classes_ 11, not 10"),
    (set_attributes(classes_=np.arange(10) + 5), "classifier's classes are not increasing class indices below 10"),
    (set_attributes(classes_=np.arange(10.0)), "classifier's classes are not increasing class indices"),
    (set_attributes(criterion=["gini"]), r"its forest has a bad parameter \(InvalidParameterError: The 'criterion'"),
    (set_attributes(which=4, n_features_in_=7), "tree 4 of its forest has n_features_in_ 7, not 512"),
    (set_attributes(which=4, n_classes_=9), "tree 4 of its forest has n_classes_ 9, not 10"),
])
def test_file_refuses_crafted_forests(fitted, model, tmp_path, edit, message):
    """The forest's own fields and each of its trees are checked."""
    refused(craft(fitted["feature_map"], tmp_path / "d.nnsd", classifier=edit), model, message)


def test_loaded_forest_predicts_in_one_thread(fitted, model, tmp_path):
    path = craft(fitted["feature_map"], tmp_path / "d.nnsd", classifier=set_attributes(n_jobs=-1))
    assert load_detector(path, model).classifier_.n_jobs is None


@pytest.mark.parametrize("meta, message", [
    ({"offset": "abc"}, "its 'offset' is 'abc', not a finite number"),
    ({"offset": float("nan")}, r"its header holds NaN or infinity at meta\['offset'\] \(nan\)"),
    ({"n_fit": "x"}, "its 'n_fit' is 'x', not a positive int or null"),
    ({"n_fit": 0}, "its 'n_fit' is 0, not a positive int"),
    ({"chunk": "x"}, "its 'chunk' is 'x', not a positive int"),
    ({"chunk": 2.5}, "its 'chunk' is 2.5, not a positive int"),
    ({"detector": ["slice"]}, r"its 'detector' is \['slice'\], not one of 'slice', 'feature_map', 'mahalanobis'"),
    ({"detector": "svm"}, "its 'detector' is 'svm', not one of"),
    ({"classifier": ["tree"]}, r"its 'classifier' is \['tree'\], not one of 'tree', 'forest'"),
    ({"contamination": 0.7}, r"its 'contamination' is 0.7, not a number in \(0, 0.5\) or null"),
    ({"random_state": "0"}, "its 'random_state' is '0', not an int or null"),
    ({"layer": 3}, "its 'layer' is 3, not a string"),
    ({"fingerprint": None}, "its 'fingerprint' is None, not a string"),
    ({"slicer": "x"}, "its 'slicer' is 'x', not a JSON object"),
    ({"chunk": ...}, "its header lacks 'chunk'"),
    ({"classifier": "forest"}, "it holds a DecisionTreeClassifier, but its header says classifier='forest'"),
    ({"layer": "nope"}, "damaged detector file: InvalidParameterError: The 'layer' parameter"),
    ({"slicer": {"rule": "x"}}, "damaged detector file: InvalidParameterError: The 'rule' parameter of Slicer"),
    ({"slicer": {"colour": "red"}}, "damaged detector file: TypeError: .*colour"),
    ({"profile": {"model": "small_cnn", "fingerprint": "0", "n_samples": "x"}}, "holds a damaged profile: .*n_samples"),
])
def test_file_refuses_damaged_header_fields(fitted, model, tmp_path, meta, message):
    """Each header field is checked for type and range when a file loads: FileFormatError, no
    traceback (a string offset gave a ValueError; a list as the kind, a TypeError)."""
    refused(craft(fitted["slice_paper"], tmp_path / "d.nnsd", meta=meta), model, message)


@pytest.mark.parametrize("header", [["slice"], "slice", 3, 1.5])
def test_file_refuses_a_header_that_is_no_object(fitted, model, tmp_path, header):
    refused(craft(fitted["mahalanobis"], tmp_path / "d.nnsd", header=header), model,
            f"its header is a {type(header).__name__}, not a JSON object")


@pytest.mark.parametrize("arrays, message", [
    ({"classes": np.array([0, 3, 12])}, "its Mahalanobis classes are not increasing class indices below 10"),
    ({"classes": np.array([3, 3, 4])}, "its Mahalanobis classes are not increasing class indices"),
    ({"classes": np.arange(10.0)}, "its array 'classes' is 1-D of float64, not 1-D of int64"),
    ({"means": np.full((10, 32), np.nan)}, "its array 'means' holds NaN or inf values"),
    ({"precision": np.eye(32, dtype=np.float32)}, "its array 'precision' is 2-D of float32, not 2-D of float64"),
    ({"precision": np.eye(31)}, r"Mahalanobis means \(10, 32\) and precision \(31, 31\) do not fit 10 classes of 32"),
    ({"means": np.zeros((10, 31)), "precision": np.eye(31)}, r"means \(10, 31\) .* do not fit 10 classes of 32"),
    ({"clean_scores": np.array([0.5, np.inf])}, "its array 'clean_scores' holds NaN or inf values"),
])
def test_file_refuses_damaged_mahalanobis_arrays(fitted, model, tmp_path, arrays, message):
    """A class out of range gave an IndexError when scoring; NaN means gave NaN scores."""
    refused(craft(fitted["mahalanobis"], tmp_path / "d.nnsd", arrays=arrays), model, message)


def test_file_refuses_damaged_classifier_arrays(fitted, model, tmp_path):
    path = craft(fitted["slice_paper"], tmp_path / "d.nnsd", arrays={"classifier": np.zeros(3, np.float32)})
    refused(path, model, "its array 'classifier' is 1-D of float32, not 1-D of uint8")
    path = craft(fitted["slice_paper"], tmp_path / "d.nnsd", arrays={"clean_scores": np.zeros((2, 2))})
    refused(path, model, "its array 'clean_scores' is 2-D of float64, not 1-D")


def test_file_of_a_detector_without_some_class_loads(model, digits, tmp_path):
    """A Mahalanobis detector fit without any 9 (nine classes, ten rows of means) loads back."""
    (x, y), (xt, _) = digits
    det = MahalanobisDetector(model).fit(x[y != 9][:300], y[y != 9][:300])
    assert len(det.classes_) == 9 and det.means_.shape[0] == 10
    det.save(tmp_path / "d.nnsd")
    np.testing.assert_array_equal(load_detector(tmp_path / "d.nnsd", model).score_samples(xt[:20]),
                                  det.score_samples(xt[:20]))


def test_save_before_fit(model, tmp_path):
    with pytest.raises(NotFittedError):
        FeatureMapDetector(model).save(tmp_path / "d.nnsd")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- CLI
def test_cli_fit_and_score(model, other_model, digits, tmp_path, capsys):
    (x, y), (xt, _) = digits
    model.save(tmp_path / "m.keras")
    other_model.save(tmp_path / "o.keras")
    np.save(tmp_path / "x.npy", x[:300])
    np.save(tmp_path / "y.npy", y[:300])
    np.save(tmp_path / "t.npy", xt[:7])
    det = str(tmp_path / "d.nnsd")
    assert main(["detect", "fit", str(tmp_path / "m.keras"), "--data", str(tmp_path / "x.npy"),
                 "--labels", str(tmp_path / "y.npy"), "--granularity", "channel", "-o", det]) == 0
    assert "SliceDetector(rule='nnslicer', granularity='channel'" in capsys.readouterr().out
    assert main(["detect", "score", str(tmp_path / "m.keras"), det, "--input", str(tmp_path / "t.npy"),
                 "-o", str(tmp_path / "v.csv")]) == 0
    out = capsys.readouterr().out
    assert "of 7 inputs flagged adversarial" in out
    lines = (tmp_path / "v.csv").read_text().splitlines()
    assert lines[0] == "index,predicted,score,verdict" and len(lines) == 8
    back = load_detector(det, model)
    flags = back.predict(xt[:7])
    assert [ln.endswith("clean") for ln in lines[1:]] == list(flags == 1)
    names = tmp_path / "names.txt"
    names.write_text("".join(f"digit {i}\n" for i in range(10)))
    assert main(["detect", "score", str(tmp_path / "m.keras"), det, "--input", str(tmp_path / "t.npy"),
                 "--class-names", str(names)]) == 0
    first = back.detect(xt[:1]).predicted[0]
    assert f"     0  {first} (digit {first})  " in capsys.readouterr().out
    assert main(["detect", "score", str(tmp_path / "m.keras"), det, "--input", str(tmp_path / "t.npy"),
                 "--class-names", "fashion-mnist"]) == 0  # a bundled data set's names
    assert main(["detect", "score", str(tmp_path / "m.keras"), det, "--input", str(tmp_path / "t.npy"),
                 "--class-names", "nonsense"]) == 2
    assert "bundled data set's" in capsys.readouterr().err
    assert main(["detect", "score", str(tmp_path / "m.keras"), det, "--input", str(tmp_path / "t.npy"),
                 "-o", str(tmp_path / "v.npz")]) == 0
    with np.load(tmp_path / "v.npz") as v:
        np.testing.assert_array_equal(v["flags"], flags)
    # another model, a bad -o, a missing file: exit 2 with one line
    assert main(["detect", "score", str(tmp_path / "o.keras"), det, "--input", str(tmp_path / "t.npy")]) == 2
    assert "fitted for model" in capsys.readouterr().err
    assert main(["detect", "score", str(tmp_path / "m.keras"), det, "--input", str(tmp_path / "t.npy"),
                 "-o", str(tmp_path / "v.txt")]) == 2
    assert main(["detect", "score", str(tmp_path / "m.keras"), str(tmp_path / "none.nnsd"),
                 "--input", str(tmp_path / "t.npy")]) == 2


@pytest.mark.parametrize("method", ["effective_path", "feature_map", "mahalanobis"])
def test_cli_methods(model, digits, tmp_path, method, capsys):
    (x, _), _ = digits
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x[:200])
    det = str(tmp_path / "d.nnsd")
    assert main(["detect", "fit", str(tmp_path / "m.keras"), "--data", str(tmp_path / "x.npy"),
                 "--method", method, "-o", det]) == 0
    kind = {"effective_path": SliceDetector, "feature_map": FeatureMapDetector,
            "mahalanobis": MahalanobisDetector}[method]
    back = load_detector(det, model)
    assert type(back) is kind
    if method == "effective_path":
        assert back.slicer.rule == "effective_path"


def test_cli_contamination(model, digits, tmp_path, capsys):
    (x, _), _ = digits
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x[:200])
    det = str(tmp_path / "d.nnsd")
    assert main(["detect", "fit", str(tmp_path / "m.keras"), "--data", str(tmp_path / "x.npy"),
                 "--method", "feature_map", "--contamination", "0.1", "-o", det]) == 0
    back = load_detector(det, model)
    assert back.contamination == 0.1 and back.offset_ == np.quantile(back.clean_scores_, 0.1)
    assert main(["detect", "fit", str(tmp_path / "m.keras"), "--data", str(tmp_path / "x.npy"),
                 "--method", "feature_map", "--contamination", "0.7", "-o", det]) == 2
    assert "'contamination' parameter" in capsys.readouterr().err


@pytest.mark.parametrize("method, extra, option", [
    ("mahalanobis", ["--classifier", "tree"], "--classifier"),
    ("mahalanobis", ["--theta", "0.3"], "--theta"),
    ("feature_map", ["--granularity", "element"], "--granularity"),
    ("feature_map", ["--workers", "2"], "--workers"),
    ("effective_path", ["--rule", "paper"], "--rule"),
])
def test_cli_refuses_options_the_method_ignores(model, digits, tmp_path, capsys, method, extra, option):
    (x, _), _ = digits
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x[:50])
    assert main(["detect", "fit", str(tmp_path / "m.keras"), "--data", str(tmp_path / "x.npy"),
                 "--method", method, *extra, "-o", str(tmp_path / "d.nnsd")]) == 2
    assert f"{option} has no effect with --method {method}" in capsys.readouterr().err
    assert not (tmp_path / "d.nnsd").exists()


def test_cli_help(capsys):
    with pytest.raises(SystemExit):
        main(["detect", "fit", "--help"])
    assert "nnslicer detect fit model.keras" in capsys.readouterr().out


def test_fit_takes_one_hot_and_column_labels(model, digits):
    (x, y), (xt, _) = digits
    feats = FeatureMapDetector(model).features(x[:300])
    want = FeatureMapDetector(model).fit(feats, y[:300])
    for labels in (np.eye(10)[y[:300]], y[:300, None]):
        got = FeatureMapDetector(model).fit(feats, labels)
        assert got.n_fit_ == want.n_fit_
        np.testing.assert_array_equal(got.score_samples(xt[:50]), want.score_samples(xt[:50]))
    with pytest.raises(InvalidInputError, match="integer class indices"):
        FeatureMapDetector(model).fit(feats, y[:300].astype(str))


def test_numpy_parameters_save_and_a_model_is_not_a_slicer(model, digits, tmp_path):
    (x, y), (xt, _) = digits
    for det in (FeatureMapDetector(model, random_state=np.int64(1)),
                MahalanobisDetector(model, contamination=np.float32(0.1))):
        det.fit(x[:200], y[:200]).save(tmp_path / "d.nnsd")
        back = load_detector(tmp_path / "d.nnsd", model)
        np.testing.assert_array_equal(back.score_samples(xt[:20]), det.score_samples(xt[:20]))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(InvalidParameterError, match="must be an nnslicer.Slicer"):
        SliceDetector(model).fit(x[:20], y[:20])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # not trained
    assert "SliceDetector(rule=None" in repr(SliceDetector(model))


@pytest.mark.parametrize("contamination", [None, "0.1"])
def test_cli_fit_warns_of_a_high_false_alarm_rate(model, digits, tmp_path, capsys, contamination):
    """Twenty digits teach a forest little: its out-of-bag votes flag many clean fit inputs, and
    the command says so (suggesting --contamination only when it is not set)."""
    (x, y), _ = digits
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x[:20])
    extra = ["--contamination", contamination] if contamination else []
    assert main(["detect", "fit", str(tmp_path / "m.keras"), "--data", str(tmp_path / "x.npy"), "--granularity",
                 "channel", *extra, "-o", str(tmp_path / "d.nnsd")]) == 0
    out, err = capsys.readouterr()
    rate = float(out.split("clean fit inputs flagged when held out: ")[1].split("%")[0])
    if contamination is None:
        assert rate > 20 and "that is high: try another --layer, more --data, or set the rate with " \
                             "--contamination" in err
    else:  # the rate asked for is the rate held out (to a tie among the 20 held-out scores)
        det = load_detector(tmp_path / "d.nnsd", model)
        assert rate == round(100 * np.mean(det.clean_scores_ < det.offset_), 1) and 5.0 <= rate <= 10.0
        assert "that is" not in err


def test_class_indices_that_wrap_around_are_refused():
    """[0, 1, -2**63] passed a first-and-last range check with increasing differences, since
    -2**63 - 1 wraps around to 2**63 - 1 (found by the long fuzzing run)."""
    from analyses.adversarial import _check_classes

    with pytest.raises(FileFormatError, match="not increasing class indices below 3"):
        _check_classes(np.array([0, 1, np.iinfo(np.int64).min]), 3, "d.nnsd", "its classes")


# --------------------------------------------------------------------------- the detector registry
class _Shallow(FeatureMapDetector):
    """A registered detector of the tests: feature maps of another kind name."""

    kind = "shallow_feature_map"


def test_a_registered_detector_is_offered_by_the_command_and_loads_back(model, digits, tmp_path, capsys):
    (x, y), _ = digits
    register_detector("shallow", _Shallow)
    try:
        model.save(tmp_path / "m.keras")
        np.save(tmp_path / "x.npy", x[:60])
        det = str(tmp_path / "d.nnsd")
        assert main(["detect", "fit", str(tmp_path / "m.keras"), "--data", str(tmp_path / "x.npy"),
                     "--method", "shallow", "--classifier", "tree", "-o", det]) == 0
        loaded = load_detector(det, model)
        assert type(loaded) is _Shallow and loaded.classifier == "tree"
        assert main(["detect", "fit", str(tmp_path / "m.keras"), "--data", str(tmp_path / "x.npy"),
                     "--method", "shallow", "--theta", "0.3", "-o", det]) == 2
        assert "--theta has no effect with --method shallow (only with slice or effective_path)" in \
            capsys.readouterr().err
    finally:
        DETECTORS.pop("shallow")
    with pytest.raises(FileFormatError, match="'detector' is 'shallow_feature_map', not one of 'slice', "
                                              "'feature_map', 'mahalanobis'"):
        load_detector(det, model)


@pytest.mark.parametrize("name, cls, match", [
    ("slice", SliceDetector, "already registered"),
    ("", SliceDetector, "non-empty string"),
    ("x", dict, "subclass of analyses.adversarial.Detector"),
    ("x", Detector, "with a kind"),
])
def test_register_detector_refuses(name, cls, match):
    with pytest.raises(InvalidParameterError, match=match):
        register_detector(name, cls)


# --------------------------------------------------------------------------- nnslicer attack
def test_cli_attack_writes_what_detect_score_reads(model, fitted, digits, tmp_path, capsys):
    """The examples the command writes are the library's (same attack, same inputs), only
    successful ones, with their source rows; 'detect score' takes the file as it is."""
    _, (xt, yt) = digits
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", xt[:40])
    np.save(tmp_path / "y.npy", yt[:40])
    adv = tmp_path / "adv.npz"
    assert main(["attack", str(tmp_path / "m.keras"), "--data", str(tmp_path / "x.npy"), "--labels",
                 str(tmp_path / "y.npy"), "--method", "bim", "--eps", "0.3", "--step", "0.05", "--steps", "8",
                 "-o", str(adv)]) == 0
    assert "adversarial examples ->" in capsys.readouterr().out
    want = bim(model, xt[:40], yt[:40], eps=0.3, step=0.05, steps=8)
    with np.load(adv) as f:
        assert sorted(f.files) == ["pred", "source_index", "x", "y"]
        np.testing.assert_array_equal(f["source_index"], want.source_index)
        np.testing.assert_allclose(f["x"], want.x_adv, atol=1e-6)
        assert (f["pred"] != f["y"]).all() and (f["y"] == yt[:40][f["source_index"]]).all()
        assert len(f["x"]) > 0 and f["x"].min() >= 0.0 and f["x"].max() <= 1.0
    det = str(tmp_path / "d.nnsd")
    fitted["feature_map"].save(det)
    assert main(["detect", "score", str(tmp_path / "m.keras"), det, "--input", str(adv)]) == 0
    assert f"of {len(want)} inputs flagged adversarial" in capsys.readouterr().out


@pytest.mark.parametrize("extra, words", [
    (["--method", "deepfool", "--eps", "0.1"], "--eps has no effect with --method deepfool (only with fgsm, bim or pgd)"),
    (["--method", "fgsm", "--steps", "3"], "--steps has no effect with --method fgsm"),
    (["--method", "fgsm", "--eps", "-1"], "'eps' parameter must be a positive float"),
    (["--method", "fgsm", "-o", "adv.npy"], "-o takes a .npz file"),
])
def test_cli_attack_refuses(model, digits, tmp_path, capsys, extra, words):
    _, (xt, _) = digits
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", xt[:5])
    args = ["attack", str(tmp_path / "m.keras"), "--data", str(tmp_path / "x.npy"), *extra]
    if "-o" not in extra:
        args += ["-o", str(tmp_path / "adv.npz")]
    assert main(args) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "adv.npz").exists()


def test_fit_and_detect_report_progress(model, digits):
    """``progress`` hears the number of inputs done, up to all of them, for slices and feature maps."""
    (x, y), _ = digits
    for det in (SliceDetector(nnslicer.Slicer(model, granularity="channel"), layer=-1, chunk=40),
                FeatureMapDetector(model, layer=-1)):
        done = []
        det.fit(x[:100], y[:100], progress=done.append)
        assert done == sorted(done) and done[-1] == 100
        done.clear()
        det.detect(x[:30], progress=done.append)
        assert done[-1] == 30
