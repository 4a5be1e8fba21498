"""Adversarial attacks of analyses.attacks on a small CNN trained on scikit-learn's digits."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from analyses import attacks as A  # noqa: E402
from nnslicer.errors import InvalidInputError, InvalidParameterError  # noqa: E402

EPS = 0.3


@pytest.fixture(scope="module")
def trained():
    from nnslicer.datasets import load_digits
    from nnslicer.models import small_cnn

    (x_train, y_train), (x_test, y_test) = load_digits()
    keras.utils.set_random_seed(0)
    model = small_cnn()
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=10, batch_size=64, verbose=0)
    return model, x_test[:200], y_test[:200]


def check_contract(model, res, x, y, eps=None, clip=(0.0, 1.0)):
    assert len(res) == len(res.x_adv) == len(res.x_clean) == len(res.y_clean) == len(res.pred_adv)
    if len(res) == 0:
        return
    idx = res.source_index
    np.testing.assert_array_equal(res.x_clean, x[idx])
    np.testing.assert_array_equal(res.y_clean, y[idx])
    pred_clean = np.asarray(model(res.x_clean, training=False)).argmax(1)
    pred_adv = np.asarray(model(res.x_adv, training=False)).argmax(1)
    np.testing.assert_array_equal(pred_clean, res.y_clean)  # sources classified correctly
    np.testing.assert_array_equal(pred_adv, res.pred_adv)
    assert np.all(pred_adv != res.y_clean)  # adversarial ones misclassified
    assert res.x_adv.min() >= clip[0] and res.x_adv.max() <= clip[1]
    if eps is not None:
        assert np.abs(res.x_adv - res.x_clean).max() <= eps + 1e-5
    assert 0.0 < res.success_rate <= 1.0
    assert len(res) <= res.n_correct <= res.n_inputs == len(x)


@pytest.mark.parametrize(
    "name,kwargs",
    [("fgsm", {}), ("bim", {"step": 0.05, "steps": 10}), ("pgd", {"step": 0.05, "steps": 10})],
)
def test_gradient_attacks_contract(trained, name, kwargs):
    model, x, y = trained
    res = getattr(A, name)(model, x, y, eps=EPS, **kwargs)
    assert len(res) > 0
    check_contract(model, res, x, y, eps=EPS)
    assert res.attack["name"] == name and res.attack["eps"] == EPS
    assert name in repr(res) and "success_rate" in repr(res)


def test_small_eps_stays_in_ball(trained):
    model, x, y = trained
    res = A.bim(model, x, y, eps=0.05, step=0.02, steps=5)
    check_contract(model, res, x, y, eps=0.05)


def test_pgd_at_least_as_strong_as_fgsm(trained):
    model, x, y = trained
    for eps in (0.1, EPS):
        f = A.fgsm(model, x, y, eps=eps)
        p = A.pgd(model, x, y, eps=eps, step=eps / 4, steps=20)
        assert p.success_rate >= f.success_rate
        assert p.n_correct == f.n_correct


def test_default_labels_are_predictions(trained):
    model, x, _ = trained
    res = A.fgsm(model, x, eps=EPS)
    assert res.n_correct == len(x)
    pred = np.asarray(model(x, training=False)).argmax(1)
    check_contract(model, res, x, pred, eps=EPS)


def test_pgd_deterministic_with_seed(trained):
    model, x, y = trained
    a = A.pgd(model, x[:50], y[:50], eps=0.1, steps=5, seed=3)
    b = A.pgd(model, x[:50], y[:50], eps=0.1, steps=5, seed=3)
    np.testing.assert_array_equal(a.source_index, b.source_index)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)


def test_batching_does_not_change_results(trained):
    model, x, y = trained
    a = A.bim(model, x[:60], y[:60], eps=0.1, step=0.02, steps=3)
    b = A.bim(model, x[:60], y[:60], eps=0.1, step=0.02, steps=3, batch_size=7)
    np.testing.assert_array_equal(a.source_index, b.source_index)
    np.testing.assert_allclose(a.x_adv, b.x_adv, atol=1e-6)


def test_progress_reports_inputs_attacked(trained):
    """Every attack reports the inputs done after each batch (the whole set at once for the
    spatial attack, whose search spans the set); batches do not change an ART attack's result."""
    model, x, y = trained
    seen = []
    A.pgd(model, x[:20], y[:20], eps=0.1, steps=2, batch_size=8, progress=seen.append)
    assert seen == [8, 16, 20]
    seen.clear()
    A.fgsm(model, x[:20], y[:20], batch_size=16, progress=seen.append)
    assert seen == [16, 20]
    pytest.importorskip("art")
    seen.clear()
    a = A.deepfool(model, x[:10], y[:10], max_iter=5, batch_size=4, progress=seen.append)
    b = A.deepfool(model, x[:10], y[:10], max_iter=5)
    assert seen == [4, 8, 10]
    np.testing.assert_array_equal(a.source_index, b.source_index)
    np.testing.assert_allclose(a.x_adv, b.x_adv, atol=1e-5)
    seen.clear()
    A.spatial(model, x[:10], y[:10], max_translation=25.0, max_rotation=45.0, batch_size=4, progress=seen.append)
    assert seen == [10]


def test_logit_model_supported(trained):
    model, x, y = trained
    # Same network without the softmax: the attack must use from_logits=True.
    head = keras.layers.Dense(10, activation=None)
    logits = keras.Model(model.inputs[0], head(model.layers[-2].output))
    logits.layers[-1].set_weights(model.layers[-1].get_weights())
    assert not A._outputs_softmax(logits) and A._outputs_softmax(model)
    res = A.fgsm(logits, x, y, eps=EPS)
    assert len(res) > 0
    check_contract(logits, res, x, y, eps=EPS)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x, y: A.fgsm(m, x, y, eps=0),
        lambda m, x, y: A.fgsm(m, x, y, eps=-0.1),
        lambda m, x, y: A.bim(m, x, y, steps=0),
        lambda m, x, y: A.bim(m, x, y, step=0),
        lambda m, x, y: A.pgd(m, x, y, steps=1.5),
        lambda m, x, y: A.fgsm(m, x, y, clip=(1.0, 0.0)),
        lambda m, x, y: A.fgsm(m, x, y, batch_size=0),
        lambda m, x, y: A.deepfool(m, x, y, max_iter=0),
        lambda m, x, y: A.cw_l2(m, x, y, max_iter=0),
        lambda m, x, y: A.jsma(m, x, y, gamma=2.0),
        lambda m, x, y: A.spatial(m, x, y, max_rotation=0, max_translation=0),
        lambda m, x, y: A.spatial(m, x, y, max_rotation=-5),
        lambda m, x, y: A.spatial(m, x, y, num_translations=0),
    ],
)
def test_bad_parameters(trained, call):
    model, x, y = trained
    with pytest.raises(InvalidParameterError):
        call(model, x[:5], y[:5])


def test_bad_inputs(trained):
    model, x, y = trained
    with pytest.raises(InvalidInputError):
        A.fgsm(model, x[:0])
    bad = x[:5].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError):
        A.fgsm(model, bad)
    with pytest.raises(InvalidInputError):
        A.fgsm(model, x[:5], y[:4])
    with pytest.raises(InvalidInputError):
        A.fgsm(model, x[:5], np.full(5, 10))
    with pytest.raises(ValueError):  # also a built-in
        A.pgd(model, x[:5], y[:3])
    with pytest.raises(InvalidInputError, match="batch of inputs shaped"):
        A.fgsm(model, x[0])  # one input without its batch axis
    with pytest.raises(InvalidInputError, match="batch of inputs shaped"):
        A.fgsm(model, np.moveaxis(x[:3], -1, 1))  # channels first
    with pytest.raises(InvalidInputError, match="integer class indices"):
        A.fgsm(model, x[:3], ["1", "2", "3"])


# ---------------------------------------------------------------- ART attacks

@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("deepfool", {"max_iter": 10}),
        ("jsma", {"theta": 0.5, "gamma": 0.2}),
        ("cw_l2", {"max_iter": 10, "binary_search_steps": 2, "learning_rate": 0.1, "initial_const": 1.0}),
        ("spatial", {"max_translation": 25.0, "max_rotation": 45.0}),
    ],
)
def test_art_attacks_contract(trained, name, kwargs):
    pytest.importorskip("art")
    model, x, y = trained
    x, y = x[:10], y[:10]
    res = getattr(A, name)(model, x, y, **kwargs)
    assert len(res) > 0
    check_contract(model, res, x, y)
    assert res.attack["name"] == name


def test_jsma_is_reproducible_and_targets_another_class(trained):
    """The same seed gives the same examples; a successful example lands on a class other than
    its source's (its target, drawn among the classes other than the prediction)."""
    pytest.importorskip("art")
    model, x, y = trained
    a = A.jsma(model, x[:10], y[:10], theta=0.5, gamma=0.2, seed=3)
    b = A.jsma(model, x[:10], y[:10], theta=0.5, gamma=0.2, seed=3)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)
    assert a.attack["seed"] == 3 and np.all(a.pred_adv != a.y_clean)


def test_spatial_moves_pixels_without_adding_any(trained):
    """A translation and rotation moves the image: the adversarial examples hold no value
    brighter than the brightest clean one, and they are not the clean images."""
    pytest.importorskip("art")
    model, x, y = trained
    res = A.spatial(model, x[:20], y[:20], max_translation=25.0, max_rotation=45.0)
    assert len(res) > 0
    assert res.x_adv.max() <= res.x_clean.max() + 1e-5
    assert np.all(np.abs(res.x_adv - res.x_clean).reshape(len(res), -1).max(1) > 0)
    with pytest.raises(InvalidParameterError, match="images"):
        A.spatial(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")]),
                  np.zeros((2, 4), np.float32))
