"""Reference architectures: exact sizes, wiring, and that the demo CNN learns."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from nnslicer import models  # noqa: E402
from nnslicer.errors import InvalidInputError, InvalidParameterError  # noqa: E402

# The layer types the slicing engine lifts (the brief for models.py may use no others).
ALLOWED = {
    "InputLayer", "Dense", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU",
    "Activation", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
    "GlobalMaxPooling2D", "Flatten", "Reshape", "Dropout", "ZeroPadding2D", "Add", "Concatenate",
}  # fmt: skip


def _kinds(model):
    return [type(layer).__name__ for layer in model.layers]


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.fixture(scope="module")
def built():
    return {
        "small_cnn": models.small_cnn(),
        "lenet": models.lenet(),
        "resnet10": models.resnet10(),
        "resnet18": models.resnet18(),
    }


@pytest.mark.parametrize(
    "name, total, trainable",
    [
        # conv1 80 + conv2 1,168 + fc1 8,224 + predictions 330
        ("small_cnn", 9_802, 9_802),
        # conv1 150 + conv2 1,500 + fc1 30,120 + fc2 10,164 + predictions 850 (paper: 42,784)
        ("lenet", 42_784, 42_784),
        # 13 convs 306,832 + BN gamma/beta 992 + dense 1,290; + 992 BN moving statistics
        ("resnet10", 309_626, 308_634),
        # the usual CIFAR ResNet18 count 11,173,962 + 9,600 BN moving statistics
        ("resnet18", 11_183_562, 11_173_962),
    ],
)
def test_parameter_counts(built, name, total, trainable):
    model = built[name]
    assert model.count_params() == total
    assert _trainable(model) == trainable
    assert model.name == name


def test_lenet5_variant_is_the_textbook_count():
    # 156 + 2,416 + 30,840 + 10,164 + 850
    model = models.lenet(variant="lenet5")
    assert model.count_params() == 44_426
    assert model.get_layer("conv2").filters == 16


@pytest.mark.parametrize("name", ["small_cnn", "lenet", "resnet10", "resnet18"])
def test_only_liftable_layers_and_unique_readable_names(built, name):
    model = built[name]
    assert set(_kinds(model)) <= ALLOWED, set(_kinds(model)) - ALLOWED
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    assert model.layers[-1].name == "predictions"
    assert model.layers[-1].get_config()["activation"] == "softmax"


def test_resnet10_shape(built):
    model = built["resnet10"]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 13
    assert sum(isinstance(layer, keras.layers.Add) for layer in model.layers) == 4
    assert [model.get_layer(f"block{i}_conv2").filters for i in range(1, 5)] == [16, 32, 64, 128]
    assert [model.get_layer(f"block{i}_conv1").strides for i in range(1, 5)] == [
        (1, 1), (2, 2), (2, 2), (2, 2),
    ]  # fmt: skip
    # the paper's detector features: the last conv's 3x3x128x128 kernel
    assert int(np.prod(model.get_layer("block4_conv2").kernel.shape)) == 147_456
    # pre-activation: the projection shortcut reads the output of the block's first BN-ReLU
    for i in range(1, 5):
        shortcut = model.get_layer(f"block{i}_shortcut")
        assert shortcut.kernel_size == (1, 1)
        assert shortcut.input is model.get_layer(f"block{i}_relu1").output
        assert model.get_layer(f"block{i}_conv1").input is model.get_layer(f"block{i}_relu1").output
    dense = model.get_layer("predictions")
    assert dense.kernel.shape == (128, 10)
    assert _kinds(model)[-4:] == ["BatchNormalization", "ReLU", "GlobalAveragePooling2D", "Dense"]


def test_resnet18_shape(built):
    model = built["resnet18"]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 20  # stem + 16 in blocks + 3 projection shortcuts
    assert sum(isinstance(layer, keras.layers.Add) for layer in model.layers) == 8
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers)
    assert model.get_layer("stem_conv").strides == (1, 1)
    assert model.get_layer("stem_conv").kernel_size == (3, 3)
    # identity shortcut in stage 1, projection where the shape changes
    assert "stage1_block1_shortcut_conv" not in [layer.name for layer in model.layers]
    assert model.get_layer("stage2_block1_shortcut_conv").strides == (2, 2)
    assert model.get_layer("predictions").kernel.shape == (512, 10)


@pytest.mark.parametrize(
    "name, shape",
    [("small_cnn", (8, 8, 1)), ("lenet", (28, 28, 1)), ("resnet10", (32, 32, 3)),
     ("resnet18", (32, 32, 3))],
)  # fmt: skip
def test_outputs_are_probabilities(built, name, shape):
    model = built[name]
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, 10)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def test_num_classes_and_input_shape_are_honoured():
    model = models.resnet10(input_shape=(16, 16, 1), num_classes=3)
    assert model.input_shape == (None, 16, 16, 1)
    assert model.output_shape == (None, 3)
    assert models.lenet(num_classes=4).output_shape == (None, 4)


@pytest.mark.parametrize(
    "call",
    [
        lambda: models.lenet(input_shape=(28, 28)),
        lambda: models.lenet(input_shape=(8, 8, 1)),
        lambda: models.lenet(variant="lenet7"),
        lambda: models.resnet10(num_classes=1),
        lambda: models.small_cnn(num_classes=2.5),
    ],
)
def test_bad_parameters_raise(call):
    with pytest.raises(InvalidParameterError):
        call()


def test_small_cnn_learns_digits():
    pytest.importorskip("sklearn")
    from nnslicer.datasets import load_digits

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = load_digits()
    model = models.small_cnn()
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=8, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.9


def _bn_net():
    """A functional model with a batch norm without gamma/beta, and a nested model holding two."""
    inner_in = keras.Input((4, 4, 8))
    y = keras.layers.BatchNormalization(name="inner_bn1")(inner_in)
    y = keras.layers.Conv2D(8, 1, name="inner_conv")(y)
    y = keras.layers.BatchNormalization(name="inner_bn2")(y)
    inner = keras.Model(inner_in, y, name="inner")
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(scale=False, center=False, name="plain_bn")(x)
    x = inner(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(6, name="fc")(x)
    x = keras.layers.BatchNormalization(name="fc_bn")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def _bns(model):
    inner = model.get_layer("inner")
    return [model.get_layer("plain_bn"), inner.get_layer("inner_bn1"), inner.get_layer("inner_bn2"),
            model.get_layer("fc_bn")]


def test_calibrate_batch_norm_draws_every_batch_norm_nested_ones_too():
    model = _bn_net()
    assert models.calibrate_batch_norm(model, seed=3) is model
    for bn in _bns(model):
        mean, var = np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)
        assert np.all((var >= 0.5) & (var <= 2.0)) and np.all(mean != 0) and np.abs(mean).max() < 2.0
        if bn.scale:
            gamma, beta = np.asarray(bn.gamma), np.asarray(bn.beta)
            assert np.all((gamma >= 0.5) & (gamma <= 1.5)) and np.all(beta != 0)
        else:
            assert bn.gamma is None and bn.beta is None
    # N(0, 0.3) and U(0.5, 2) over the 30 channels of the four layers
    means = np.concatenate([np.asarray(bn.moving_mean) for bn in _bns(model)])
    assert 0.15 < means.std() < 0.45
    # the same seed gives the same model; another seed another one
    again = models.calibrate_batch_norm(_bn_net(), seed=3)
    other = models.calibrate_batch_norm(_bn_net(), seed=4)
    for a, b, c in zip(_bns(model), _bns(again), _bns(other)):
        np.testing.assert_array_equal(np.asarray(a.moving_variance), np.asarray(b.moving_variance))
        assert not np.array_equal(np.asarray(a.moving_variance), np.asarray(c.moving_variance))


def test_calibrate_batch_norm_with_data_normalises_each_layer_to_about_unit_scale():
    """With x, each batch norm's statistics are drawn around its own input's: its output is of
    unit scale (within the draws' spread), and the draws are those of x=None."""
    keras.utils.set_random_seed(0)
    model = _bn_net()
    x = np.random.default_rng(0).uniform(0, 255, (64, 4, 4, 3)).astype(np.float32)  # far from unit scale
    models.calibrate_batch_norm(model, seed=1, x=x)
    inner = model.get_layer("inner")
    gap = next(layer for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D))
    probe = keras.Model(model.input, [model.get_layer("plain_bn").output, gap.input,  # inner's output
                                      model.get_layer("fc_bn").output])
    for out in probe(x):
        out = np.asarray(out)
        assert 0.2 < out.std() < 3.0, out.std()
    plain = models.calibrate_batch_norm(_bn_net(), seed=1)
    for a, b in zip([model.get_layer("fc_bn"), inner.get_layer("inner_bn2")],
                    [plain.get_layer("fc_bn"), plain.get_layer("inner").get_layer("inner_bn2")]):
        np.testing.assert_array_equal(np.asarray(a.gamma), np.asarray(b.gamma))
        ratio = np.asarray(a.moving_variance) / np.asarray(b.moving_variance)
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)  # one input variance per layer
    # the network keeps telling its inputs apart
    assert np.asarray(model(x[:8])).std(axis=0).mean() > 1e-3


@pytest.mark.parametrize("call, error", [
    (lambda m: models.calibrate_batch_norm(m, seed=-1), InvalidParameterError),
    (lambda m: models.calibrate_batch_norm(m, seed=1.5), InvalidParameterError),
    (lambda m: models.calibrate_batch_norm(m, seed=True), InvalidParameterError),
    (lambda m: models.calibrate_batch_norm(m.layers[1]), InvalidInputError),
    (lambda m: models.calibrate_batch_norm(m, x=np.zeros((2, 5, 5, 3))), InvalidInputError),
    (lambda m: models.calibrate_batch_norm(m, x=np.full((2, 4, 4, 3), np.nan)), InvalidInputError),
])  # fmt: skip
def test_calibrate_batch_norm_refuses_bad_arguments(call, error):
    with pytest.raises(error):
        call(_bn_net())
