"""Reference Keras 3 architectures: the shapes NNSlicer's paper measured, plus a demo CNN.

Every model is built with the functional API, channels-last, from layer types that the slicing
engine lifts (Conv2D, Dense, BatchNormalization, ReLU, pooling, Flatten, Add, MultiHeadAttention,
LSTM, Embedding, ...), and every layer has a readable name (``block2_conv1``, ``fc1``, ...). The models are returned untrained
and uncompiled.

============  ======================  ============  =============================================
builder       default input           parameters    what
============  ======================  ============  =============================================
small_cnn     (8, 8, 1), 10 classes   9,802         demo CNN for scikit-learn's 8x8 digits
lenet         (28, 28, 1), 10 classes 42,784        LeNet-5 layout, the paper's parameter count
resnet10      (32, 32, 3), 10 classes 309,626       pre-activation CIFAR ResNet, 1 block a stage
resnet18      (32, 32, 3), 10 classes 11,183,562    CIFAR ResNet18 (BasicBlock [2, 2, 2, 2])
vit           (28, 28, 1), 10 classes 68,810        Vision Transformer: 4x4 patches, 2 blocks of 64
lstm_reader   (28, 28), 10 classes    24,458        an LSTM reading an image row by row
text_cnn      100 tokens, 2 classes   41,378        Embedding, Conv1D, global max pooling
============  ======================  ============  =============================================

Parameter counts are Keras' ``model.count_params()``, which includes the two non-trainable
statistics (moving mean and variance) of each BatchNormalization channel.

:func:`calibrate_batch_norm` gives the batch-norm layers of any model (these, or Keras
Applications built with ``weights=None``) random statistics, so that an untrained model is
not near-identity in its batch norms when it is compared or benchmarked; given samples, it
draws them around each layer's own input statistics, so that a deep untrained network still
tells its inputs apart.
"""

from __future__ import annotations

import numbers

import keras
import numpy as np
from keras import layers

from .errors import InvalidInputError, InvalidParameterError
from .keras import run_with_hooks

__all__ = ["small_cnn", "vgg", "lenet", "resnet10", "resnet18", "vit", "lstm_reader", "text_cnn", "calibrate_batch_norm"]


def _check_shape(input_shape, num_classes, builder):
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise InvalidParameterError(
            f"The 'input_shape' parameter of {builder} must be three positive ints "
            f"(height, width, channels). Got {input_shape!r} instead."
        )
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise InvalidParameterError(
            f"The 'num_classes' parameter of {builder} must be an int >= 2. "
            f"Got {num_classes!r} instead."
        )
    return shape


def small_cnn(input_shape=(8, 8, 1), num_classes=10):
    """A small CNN for the demo on scikit-learn's 8x8 digits.

    ``conv1`` (8 filters 3x3, same, ReLU) - ``pool1`` (2x2 max) - ``conv2`` (16 filters 3x3,
    same, ReLU) - ``flatten`` - ``fc1`` (32, ReLU) - ``predictions`` (softmax).
    With the defaults it has 9,802 parameters and reaches about 97% test accuracy on the digits
    after a few seconds of training on two CPU cores.

    Parameters
    ----------
    input_shape : tuple of int, default (8, 8, 1)
        Height, width, channels of one input.
    num_classes : int, default 10
        Number of output classes.

    Returns
    -------
    keras.Model
        An untrained, uncompiled model named ``"small_cnn"``.

    Examples
    --------
    >>> from nnslicer.models import small_cnn
    >>> small_cnn().count_params()
    9802
    """
    shape = _check_shape(input_shape, num_classes, "small_cnn")
    inputs = keras.Input(shape=shape, name="input")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def vgg(input_shape=(28, 28, 1), num_classes=10, widths=((16, 16), (32, 32), (64, 64), (128, 128)), dense=128):
    """A VGG-style CNN (Simonyan and Zisserman): blocks of 3x3 convolutions (same padding, ReLU),
    2x2 max pooling after every block but the last, ``flatten``, ``fc1`` (``dense`` units, ReLU)
    and ``predictions`` (softmax). Convolutions are named ``conv1``, ``conv2``, ... in order,
    pools ``pool1``, ... With the defaults (VGG16's pattern at an eighth of its width, four blocks
    of two) it has 442,106 parameters; ``benchmarks/unit_pruning.py`` prunes its units.

    >>> from nnslicer.models import vgg
    >>> vgg().count_params()
    442106
    """
    shape = _check_shape(input_shape, num_classes, "vgg")
    inputs = keras.Input(shape=shape, name="input")
    x, k = inputs, 0
    for b, block in enumerate(widths):
        for filters in block:
            k += 1
            x = layers.Conv2D(int(filters), 3, padding="same", activation="relu", name=f"conv{k}")(x)
        if b < len(widths) - 1:
            x = layers.MaxPooling2D(2, name=f"pool{b + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(int(dense), activation="relu", name="fc1")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="vgg")


def lenet(input_shape=(28, 28, 1), num_classes=10, variant="paper"):
    """LeNet-5 for 28x28 grey images, in the variant whose size matches NNSlicer's paper.

    NNSlicer's paper reports 42,784 parameters for its MNIST LeNet without giving the layers.
    ``variant="paper"`` is the LeNet-5 layout that has exactly that count on 28x28x1 inputs and
    10 classes:

    ``conv1`` 6 filters 5x5, same padding (the 2-pixel padding that turns MNIST's 28x28 into
    LeNet-5's 32x32), ReLU - ``pool1`` 2x2 max - ``conv2`` 10 filters 5x5, valid, ReLU -
    ``pool2`` 2x2 max - ``flatten`` (5x5x10 = 250) - ``fc1`` 120 ReLU - ``fc2`` 84 ReLU -
    ``predictions`` softmax; the two convolutions have no bias.

    Counting: conv1 150 + conv2 1,500 + fc1 30,120 + fc2 10,164 + predictions 850 = 42,784.
    It differs from the textbook LeNet-5 in two places only: 10 instead of 16 maps in conv2
    (LeNet-5's own C3 was sparsely connected, 1,516 parameters against 1,500 here) and no
    convolution biases. Among the LeNet-shaped networks searched (filter counts, kernel sizes,
    paddings, dense widths, biases) it is the one closest to LeNet-5 with that exact count.

    ``variant="lenet5"`` is the textbook LeNet-5 on 28x28 inputs (valid padding, 6 and 16
    maps, biases everywhere, dense 120-84): 44,426 parameters.

    Parameters
    ----------
    input_shape : tuple of int, default (28, 28, 1)
        Height, width, channels of one input (at least 16x16 for ``"paper"``, 20x20 for
        ``"lenet5"``).
    num_classes : int, default 10
        Number of output classes.
    variant : {"paper", "lenet5"}, default "paper"
        Which LeNet, as above.

    Returns
    -------
    keras.Model
        An untrained, uncompiled model named ``"lenet"``.

    Examples
    --------
    >>> from nnslicer.models import lenet
    >>> lenet().count_params()
    42784
    >>> lenet(variant="lenet5").count_params()
    44426
    """
    shape = _check_shape(input_shape, num_classes, "lenet")
    if variant == "paper":
        conv1 = dict(filters=6, padding="same", use_bias=False)
        conv2 = dict(filters=10, padding="valid", use_bias=False)
        min_side = 16
    elif variant == "lenet5":
        conv1 = dict(filters=6, padding="valid", use_bias=True)
        conv2 = dict(filters=16, padding="valid", use_bias=True)
        min_side = 20
    else:
        raise InvalidParameterError(
            "The 'variant' parameter of lenet must be a str among {'paper', 'lenet5'}. "
            f"Got {variant!r} instead."
        )
    if min(shape[:2]) < min_side:
        raise InvalidParameterError(
            f"The 'input_shape' parameter of lenet must be at least {min_side}x{min_side} "
            f"for variant {variant!r}. Got {input_shape!r} instead."
        )
    inputs = keras.Input(shape=shape, name="input")
    x = layers.Conv2D(kernel_size=5, activation="relu", name="conv1", **conv1)(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(kernel_size=5, activation="relu", name="conv2", **conv2)(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(120, activation="relu", name="fc1")(x)
    x = layers.Dense(84, activation="relu", name="fc2")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="lenet")


def _bn(name):
    return layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)


def _conv(filters, kernel_size, strides, name):
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def resnet10(input_shape=(32, 32, 3), num_classes=10):
    """Pre-activation CIFAR ResNet10, the ResNet10 of NNSlicer's paper (about 300K parameters).

    One pre-activation residual block per stage, stage widths 16/32/64/128 and strides
    1/2/2/2, a 1x1 projection shortcut in every block: 13 convolutions in all.

    - ``stem_conv``: 3x3, 16 filters.
    - ``block{i}``, i = 1..4: ``block{i}_bn1`` - ``block{i}_relu1`` (the pre-activation) -
      ``block{i}_conv1`` (3x3, stride s) - ``block{i}_bn2`` - ``block{i}_relu2`` -
      ``block{i}_conv2`` (3x3); shortcut ``block{i}_shortcut`` (1x1, stride s) applied to the
      pre-activated input (the output of ``block{i}_relu1``); ``block{i}_add``.
    - ``final_bn`` - ``final_relu`` - ``gap`` (global average pooling) - ``predictions``
      (Dense 128 -> ``num_classes``, softmax).

    Convolutions have no bias (each feeds a BatchNormalization, directly or after the Add).
    With the defaults: 309,626 parameters (308,634 trainable; the rest are the batch-norm
    moving statistics). ``block4_conv2`` alone has 147,456 weights, the ~147K features of the
    paper's adversarial-input detector.

    Parameters
    ----------
    input_shape : tuple of int, default (32, 32, 3)
        Height, width, channels of one input.
    num_classes : int, default 10
        Number of output classes.

    Returns
    -------
    keras.Model
        An untrained, uncompiled model named ``"resnet10"``.

    Examples
    --------
    >>> from nnslicer.models import resnet10
    >>> resnet10().count_params()
    309626
    """
    shape = _check_shape(input_shape, num_classes, "resnet10")
    inputs = keras.Input(shape=shape, name="input")
    x = _conv(16, 3, 1, "stem_conv")(inputs)
    for i, (width, stride) in enumerate(zip((16, 32, 64, 128), (1, 2, 2, 2)), start=1):
        p = f"block{i}"
        pre = _bn(f"{p}_bn1")(x)
        pre = layers.ReLU(name=f"{p}_relu1")(pre)
        shortcut = _conv(width, 1, stride, f"{p}_shortcut")(pre)
        y = _conv(width, 3, stride, f"{p}_conv1")(pre)
        y = _bn(f"{p}_bn2")(y)
        y = layers.ReLU(name=f"{p}_relu2")(y)
        y = _conv(width, 3, 1, f"{p}_conv2")(y)
        x = layers.Add(name=f"{p}_add")([y, shortcut])
    x = _bn("final_bn")(x)
    x = layers.ReLU(name="final_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="resnet10")


def resnet18(input_shape=(32, 32, 3), num_classes=10):
    """CIFAR ResNet18: BasicBlocks [2, 2, 2, 2], widths 64/128/256/512 (about 11.2M parameters).

    Post-activation (the original ResNet), with the CIFAR stem: a 3x3 stride-1 convolution and
    no max pooling.

    - ``stem_conv`` (3x3, 64) - ``stem_bn`` - ``stem_relu``.
    - Stages 1-4 (strides 1, 2, 2, 2), two BasicBlocks each, named ``stage{s}_block{b}``:
      ``_conv1`` (3x3, stride) - ``_bn1`` - ``_relu1`` - ``_conv2`` (3x3) - ``_bn2``; shortcut:
      identity, or ``_shortcut_conv`` (1x1, stride) - ``_shortcut_bn`` where the shape
      changes; ``_add`` - ``_relu2``.
    - ``gap`` (global average pooling) - ``predictions`` (Dense 512 -> ``num_classes``,
      softmax).

    Convolutions have no bias. With the defaults: 11,183,562 parameters, of which 11,173,962
    are trainable (the count usually quoted for CIFAR ResNet18); the other 9,600 are the
    batch-norm moving statistics.

    Parameters
    ----------
    input_shape : tuple of int, default (32, 32, 3)
        Height, width, channels of one input.
    num_classes : int, default 10
        Number of output classes.

    Returns
    -------
    keras.Model
        An untrained, uncompiled model named ``"resnet18"``.

    Examples
    --------
    >>> from nnslicer.models import resnet18
    >>> resnet18().count_params()
    11183562
    """
    shape = _check_shape(input_shape, num_classes, "resnet18")
    inputs = keras.Input(shape=shape, name="input")
    x = _conv(64, 3, 1, "stem_conv")(inputs)
    x = _bn("stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    in_width = 64
    for s, (width, first_stride) in enumerate(zip((64, 128, 256, 512), (1, 2, 2, 2)), start=1):
        for b, stride in enumerate((first_stride, 1), start=1):
            p = f"stage{s}_block{b}"
            y = _conv(width, 3, stride, f"{p}_conv1")(x)
            y = _bn(f"{p}_bn1")(y)
            y = layers.ReLU(name=f"{p}_relu1")(y)
            y = _conv(width, 3, 1, f"{p}_conv2")(y)
            y = _bn(f"{p}_bn2")(y)
            if stride != 1 or in_width != width:
                shortcut = _conv(width, 1, stride, f"{p}_shortcut_conv")(x)
                shortcut = _bn(f"{p}_shortcut_bn")(shortcut)
            else:
                shortcut = x
            x = layers.Add(name=f"{p}_add")([y, shortcut])
            x = layers.ReLU(name=f"{p}_relu2")(x)
            in_width = width
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="resnet18")


def _positive(name, value, builder):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidParameterError(f"The {name!r} parameter of {builder} must be a positive int. Got {value!r} instead.")
    return int(value)


def _positions(n, width):
    """The Transformer's fixed sinusoidal position encodings, ``[1, n, width]``."""
    position = np.arange(n)[:, None]
    rate = 1.0 / 10000 ** (2 * (np.arange(width)[None, :] // 2) / width)
    angle = position * rate
    return np.where(np.arange(width) % 2 == 0, np.sin(angle), np.cos(angle))[None].astype("float32")


def vit(input_shape=(28, 28, 1), num_classes=10, patch=4, width=64, depth=2, heads=4, mlp=128):
    """A small Vision Transformer.

    - ``patches``: a Conv2D of ``width`` filters, ``patch`` x ``patch``, stride ``patch``; then
      ``tokens``, the patches as a sequence, plus fixed sinusoidal position encodings.
    - ``depth`` encoder blocks, each two models inside the model (so that pictures draw each as
      one box): ``attention_{i}`` (LayerNormalization, MultiHeadAttention with ``heads`` heads
      of ``width / heads`` features, residual Add) and ``mlp_{i}`` (LayerNormalization, Dense
      ``mlp`` GELU, Dense ``width``, residual Add).
    - ``norm`` (LayerNormalization), ``pool`` (global average over tokens), ``predictions``
      (softmax).

    With the defaults (49 tokens of 64 features): 68,810 parameters.

    >>> from nnslicer.models import vit
    >>> vit().count_params()
    68810
    """
    shape = _check_shape(input_shape, num_classes, "vit")
    patch, width, depth, heads, mlp = (_positive(n, v, "vit") for n, v in (
        ("patch", patch), ("width", width), ("depth", depth), ("heads", heads), ("mlp", mlp)))
    if shape[0] % patch or shape[1] % patch or width % heads:
        raise InvalidParameterError(f"vit needs the image sides {shape[:2]} to be multiples of patch={patch} and "
                                    f"width={width} a multiple of heads={heads}.")
    tokens = (shape[0] // patch) * (shape[1] // patch)
    inputs = keras.Input(shape=shape, name="input")
    x = layers.Conv2D(width, patch, strides=patch, name="patches")(inputs)
    x = layers.Reshape((tokens, width), name="tokens")(x)
    x = x + _positions(tokens, width)
    for i in range(1, depth + 1):
        block_in = keras.Input((tokens, width))
        y = layers.LayerNormalization(epsilon=1e-6, name="norm")(block_in)
        y = layers.MultiHeadAttention(heads, width // heads, name="attention")(y, y)
        x = keras.Model(block_in, layers.Add(name="residual")([block_in, y]), name=f"attention_{i}")(x)
        block_in = keras.Input((tokens, width))
        y = layers.LayerNormalization(epsilon=1e-6, name="norm")(block_in)
        y = layers.Dense(mlp, activation="gelu", name="expand")(y)
        y = layers.Dense(width, name="project")(y)
        x = keras.Model(block_in, layers.Add(name="residual")([block_in, y]), name=f"mlp_{i}")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="vit")


def lstm_reader(input_shape=(28, 28), num_classes=10, units=64):
    """An LSTM that reads an image row by row (``input_shape``: steps, features): ``lstm``
    (``units``, its last output) - ``predictions`` (softmax). With the defaults: 24,458
    parameters.

    >>> from nnslicer.models import lstm_reader
    >>> lstm_reader().count_params()
    24458
    """
    shape = tuple(input_shape)
    if len(shape) != 2 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise InvalidParameterError(f"The 'input_shape' parameter of lstm_reader must be two positive ints "
                                    f"(steps, features). Got {input_shape!r} instead.")
    _check_shape(shape + (1,), num_classes, "lstm_reader")
    inputs = keras.Input(shape=shape, name="rows")
    x = layers.LSTM(_positive("units", units, "lstm_reader"), name="lstm")(inputs)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="lstm_reader")


def text_cnn(length=100, vocabulary=5000, num_classes=2, width=8, filters=32, kernel_size=5):
    """A Conv1D text classifier over ``length`` token ids below ``vocabulary``: ``embedding``
    (``width`` features a token) - ``conv`` (``filters``, ``kernel_size``, ReLU) - ``pool``
    (global max over positions) - ``predictions`` (softmax). With the defaults: 41,378 parameters.

    >>> from nnslicer.models import text_cnn
    >>> text_cnn().count_params()
    41378
    """
    length, vocabulary, width, filters, kernel_size = (_positive(n, v, "text_cnn") for n, v in (
        ("length", length), ("vocabulary", vocabulary), ("width", width), ("filters", filters),
        ("kernel_size", kernel_size)))
    _check_shape((length, 1, 1), num_classes, "text_cnn")
    inputs = keras.Input(shape=(length,), dtype="int32", name="tokens")
    x = layers.Embedding(vocabulary, width, name="embedding")(inputs)
    x = layers.Conv1D(filters, kernel_size, activation="relu", name="conv")(x)
    x = layers.GlobalMaxPooling1D(name="pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="text_cnn")


def _batch_norm_layers(model, seen):
    """The BatchNormalization layers of ``model`` in layer order, nested models' included, each
    once."""
    for layer in model.layers:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, layers.BatchNormalization):
            yield layer
        elif isinstance(layer, keras.Model):
            yield from _batch_norm_layers(layer, seen)


def _run_calibrating(model, inputs, calibrate):
    """Run the functional ``model`` on ``inputs`` layer by layer (nested functional models
    too), calling ``calibrate(layer, x)`` with its input just before each batch norm runs."""
    def wrap(op):
        if isinstance(op, layers.BatchNormalization):
            def call(x, *args, **kwargs):
                calibrate(op, x)
                return op(x, *args, **kwargs)
            return call
        if isinstance(op, keras.Model):
            return lambda x, *args, **kwargs: _run_calibrating(op, x, calibrate)
        return op

    return run_with_hooks(model, inputs, wrap, "calibrate_batch_norm with x")


def calibrate_batch_norm(model, seed=0, x=None):
    """Give every BatchNormalization layer of ``model`` random statistics and affine weights.

    A model built untrained (``keras.applications.ResNet50(weights=None)``, or any builder
    here) has moving means 0, moving variances 1, gamma 1 and beta 0: each batch norm is then
    almost the identity, and a check or a benchmark of it misses what batch norm does in a
    trained network. This draws, per channel, from ``numpy.random.default_rng(seed)``:

    - ``moving_mean`` ~ N(0, 0.3) and ``moving_variance`` ~ U(0.5, 2);
    - ``gamma`` ~ U(0.5, 1.5) and ``beta`` ~ N(0, 0.3) (where the layer has them:
      ``scale=False`` or ``center=False`` leave them out).

    Layers are visited in ``model.layers`` order, layers of nested ``keras.Model`` layers
    included (a layer shared between places is drawn once), so the same seed gives the same
    model. The model is changed in place.

    With samples ``x``, the statistics are drawn around each batch norm's own input on ``x``
    instead (the batch norms before it already calibrated): with ``m`` a channel's mean there
    and ``v`` the mean over the layer's channels of their variances, ``moving_mean = m +
    sqrt(v) * N(0, 0.3)`` and ``moving_variance = v * U(0.5, 2)`` (the same draws: ``x=None``
    is the case m = 0, v = 1). Each batch norm then brings its input back to about unit scale,
    as a trained one does. Without ``x``, a deep network whose convolutions shrink their inputs
    (Keras' default Glorot initialisation of a depthwise kernel does, ~10x) loses its input's
    signal after a few blocks: an untrained MobileNetV2 or EfficientNetB0 then gives every input
    the same output to ~1e-6, and a slice has little or nothing to tell. One variance per layer,
    not one per channel: scaling each channel to unit variance on its own blows up the channels
    that barely vary, and an EfficientNet calibrated so is chaotic (float32 rounding grows to
    ~3e-4 of its output, in Keras itself against float64: beyond :data:`nnslicer.keras.TOLERANCE`).
    ``x`` should be in the model's input range (after its ``preprocess_input``) and needs a
    functional or Sequential model with one input.

    Parameters
    ----------
    model : keras.Model
        The model to calibrate.
    seed : int, default 0
        Seed of the draws.
    x : array, optional
        A batch of inputs (a few dozen are plenty) to draw the statistics around.

    Returns
    -------
    keras.Model
        ``model`` itself.

    Examples
    --------
    >>> import numpy as np
    >>> from nnslicer.models import calibrate_batch_norm, resnet10
    >>> model = calibrate_batch_norm(resnet10(), seed=0)
    >>> var = np.asarray(model.get_layer("final_bn").moving_variance)
    >>> bool(((var >= 0.5) & (var <= 2.0)).all()), var.shape
    (True, (128,))
    """
    if not isinstance(model, keras.Model):
        raise InvalidInputError(f"calibrate_batch_norm needs a keras.Model. Got {type(model).__name__} instead.")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InvalidParameterError(
            f"The 'seed' parameter of calibrate_batch_norm must be an int >= 0. Got {seed!r} instead.")
    rng = np.random.default_rng(int(seed))
    draws = {}
    for layer in _batch_norm_layers(model, set()):
        shape = tuple(layer.moving_mean.shape)
        draws[id(layer)] = (rng.normal(0.0, 0.3, shape), rng.uniform(0.5, 2.0, shape),
                            rng.uniform(0.5, 1.5, shape), rng.normal(0.0, 0.3, shape))

    def calibrate(layer, inputs):
        if id(layer) not in draws:  # a shared layer: its first call set it
            return
        mean, var, gamma, beta = draws.pop(id(layer))
        if inputs is not None:
            a = np.asarray(keras.ops.convert_to_numpy(inputs), dtype=np.float64)
            axis = layer.axis % a.ndim
            reduce = tuple(i for i in range(a.ndim) if i != axis)
            m, v = a.mean(axis=reduce), float(np.mean(a.var(axis=reduce)))
            mean, var = m + np.sqrt(v) * mean, v * var
        for weight, value in ((layer.moving_mean, mean), (layer.moving_variance, var),
                              (layer.gamma, gamma), (layer.beta, beta)):
            if weight is not None:
                weight.assign(np.asarray(value).astype(weight.dtype))

    if x is None:
        for layer in _batch_norm_layers(model, set()):
            calibrate(layer, None)
    else:
        graph = getattr(model, "_functional", None) or model
        if not hasattr(graph, "_run_through_graph") or len(graph.inputs) != 1:
            raise InvalidInputError(f"calibrate_batch_norm with x needs a functional or Sequential Keras model "
                                    f"with one input; {model.name!r} is not.")
        shape = tuple(graph.inputs[0].shape[1:])
        try:
            x = np.asarray(x, dtype="float32")
        except (TypeError, ValueError):
            raise InvalidInputError("The x of calibrate_batch_norm must be an array of numbers.") from None
        x = x[None] if x.shape == shape else x
        if x.ndim != len(shape) + 1 or not len(x) or not np.isfinite(x).all() \
                or any(d is not None and d != e for d, e in zip(shape, x.shape[1:])):
            raise InvalidInputError(f"The x of calibrate_batch_norm must be finite samples shaped {shape}. "
                                    f"Got an array shaped {x.shape} instead.")
        _run_calibrating(model, [x], calibrate)
        for layer in _batch_norm_layers(model, set()):  # never run on x (not on the path to the output)
            calibrate(layer, None)
    return model
