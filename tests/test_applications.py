"""The Keras Applications CNNs lift, check against Keras and slice (issue 17), and the analyses
run on them.

Each model is built untrained (``weights=None``, 10 classes) at the smallest input Keras accepts
for it, its batch norms calibrated on the samples (:func:`nnslicer.models.calibrate_batch_norm`
with ``x``: random statistics around each layer's own input, so that the network tells its
inputs apart instead of giving them all the same output), and fed random images through its own
``preprocess_input``. Three small models run by default; the others are ``slow``
(``python -m pytest -m slow tests/test_applications.py``).
"""

import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

import nnslicer  # noqa: E402
from nnslicer.models import calibrate_batch_norm  # noqa: E402
from nnslicer.keras import TOLERANCE, verify  # noqa: E402

#: name -> (builder's module in keras.applications, side of the smallest input Keras accepts,
#: builder options). Every builder lives in keras.applications under ``name``.
MODELS = {
    "VGG16": ("vgg16", 32, {}),
    "ResNet50": ("resnet50", 32, {}),
    "ResNet50V2": ("resnet_v2", 32, {}),
    "MobileNetV2": ("mobilenet_v2", 32, {"alpha": 0.35}),
    "DenseNet121": ("densenet", 32, {}),
    "InceptionV3": ("inception_v3", 75, {}),
    "MobileNet": ("mobilenet", 32, {}),
    "Xception": ("xception", 71, {}),
    "NASNetMobile": ("nasnet", 32, {}),
    "MobileNetV3Small": ("mobilenet_v3", 32, {}),
    "EfficientNetB0": ("efficientnet", 32, {}),
    "EfficientNetV2B0": ("efficientnet_v2", 32, {}),
    "ConvNeXtTiny": ("convnext", 32, {}),
}
#: Run by default (the others are slow): small and quick at 32x32.
QUICK = ("MobileNetV2", "MobileNetV3Small", "EfficientNetB0")
#: Samples: profiling set and batch-norm calibration.
SAMPLES = 16


def _marks(name):
    return [] if name in QUICK else [pytest.mark.slow]


def _params(names, *more):
    return [pytest.param(name, *m, marks=_marks(name), id="-".join([name, *m]))
            for name in names for m in (more or [()])]


def images(name, n, seed=0):
    """``n`` random images in ``name``'s input range (uniform pixels through its preprocess_input)."""
    module, side, _ = MODELS[name]
    pixels = np.random.default_rng(seed).uniform(0, 255, (n, side, side, 3)).astype(np.float32)
    return np.asarray(getattr(keras.applications, module).preprocess_input(pixels), dtype=np.float32)


@functools.lru_cache(maxsize=2)
def built(name):
    """``(model, x)``: the calibrated model and its profiling samples (shared by the tests of one
    model, which never change it)."""
    module, side, options = MODELS[name]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(side, side, 3), classes=10, **options)
    x = images(name, SAMPLES)
    return calibrate_batch_norm(model, seed=0, x=x), x


@pytest.mark.parametrize("name, granularity", _params(MODELS, ("channel",), ("element",)))
def test_application_lifts_checks_and_slices(name, granularity):
    model, x = built(name)
    slicer = nnslicer.Slicer(model, granularity=granularity).fit(x)  # fit checks the lift against Keras
    s = slicer.slice(x[0])
    assert 0 < s.n_synapses < s.total_synapses and s.n_neurons > 0
    assert s.targets[0] == int(np.argmax(model(x[:1], training=False)))
    diff = verify(slicer.graph_, model, x)
    assert diff < TOLERANCE == 1e-4
    # the calibrated network is not near-constant: its outputs tell its inputs apart (without x,
    # calibrate_batch_norm leaves MobileNet, MobileNetV3Small, EfficientNetB0 below 2e-6; VGG16,
    # which has no batch norm, is at 4e-4)
    assert np.asarray(model(x, training=False)).std(axis=0).mean() > 1e-4


# --------------------------------------------------------------------------- analyses
ANALYSED = ("MobileNetV2", "EfficientNetB0")


def _analysed(names):
    """MobileNetV2 runs by default, EfficientNetB0 with the slow tests."""
    return [pytest.param(name, marks=[] if name == "MobileNetV2" else [pytest.mark.slow]) for name in names]


def _labels(model, x):
    """The model's classes of ``x`` and the two classes it gives most."""
    y = np.asarray(model(x, training=False)).argmax(1)
    counts = np.bincount(y, minlength=10)
    return y, [int(c) for c in np.argsort(-counts, kind="stable")[:2]]


@pytest.mark.parametrize("name", _analysed(ANALYSED))
def test_class_focused_prune_on_application(name):
    from analyses.pruning import class_focused_prune

    model, x = built(name)
    y, classes = _labels(model, x)
    slicer = nnslicer.Slicer(model).fit(x)
    pruned, report = class_focused_prune(model, slicer, x, y, classes=classes, ratio=0.5)
    assert report.classes == tuple(sorted(classes))
    assert [layer.name for layer in report.layers] == slicer.graph_.weighted_ops
    assert all(layer.pruned == round(0.5 * layer.synapses) for layer in report.layers)
    out = np.asarray(pruned(x, training=False))
    assert out.shape == (len(x), 10) and np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-4)
    assert not np.allclose(out, np.asarray(model(x, training=False)))  # pruning changed something
    assert nnslicer.lift(pruned).num_outputs == 10  # and the pruned model still lifts


@pytest.mark.parametrize("name", _analysed(ANALYSED))
def test_slice_layer_importance_on_application(name):
    from analyses.layer_importance import layer_importance, ranked_layers

    model, x = built(name)
    ranking = layer_importance(model, x[:8], criterion="slice")
    weighted = {layer.name for layer in ranked_layers(model)}
    assert set(ranking) == weighted and len(ranking) == len(weighted)
    scores = np.array(list(ranking.values()))
    assert np.isfinite(scores).all() and (scores >= 0).all() and scores.max() > 0
    assert list(scores) == sorted(scores, reverse=True)
    # every kind of weighted layer is ranked: convolutions, depthwise ones, batch norms, the head
    kinds = {type(model.get_layer(n)).__name__ for n in ranking}
    assert {"Conv2D", "DepthwiseConv2D", "BatchNormalization", "Dense"} <= kinds


@pytest.mark.parametrize("name", _analysed(ANALYSED))
def test_slice_detector_on_application(name):
    from analyses.adversarial import SliceDetector

    model, x = built(name)
    x_new = images(name, 6, seed=1)
    det = SliceDetector(nnslicer.Slicer(model, granularity="channel")).fit(x)
    assert det.layer_ in det.slicer_.graph_.weighted_ops and det.n_fit_ == len(x)
    result = det.detect(x_new)
    assert result.scores.shape == (len(x_new),) and np.isfinite(result.scores).all()
    assert np.all((result.scores >= -1) & (result.scores <= 1))
    assert set(np.unique(result.flags)) <= {-1, 1}
