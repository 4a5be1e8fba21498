"""Post-training fake quantization in Keras: weights at per-layer bit-widths, activations at 8.

* **Weights**: symmetric uniform quantization per output channel. A kernel ``w`` with ``b``
  bits becomes ``s * round(w / s)`` with ``s = max|w_c| / (2^(b-1) - 1)`` for each output
  channel ``c`` (the last axis; for DepthwiseConv2D each (input channel, multiplier) pair).
  Only kernels are quantized (Dense, Conv2D, DepthwiseConv2D, the projections inside
  MultiHeadAttention); biases and normalization parameters stay float32, as integer inference
  keeps them at 32 bits or folds them.
* **Activations**: the input of every quantized layer passes through a :class:`FakeQuant`
  layer: asymmetric uniform quantization with ``2^bits`` levels over the range seen on the
  calibration data (values outside it are clipped).

The result is an ordinary Keras model: ``model.save`` works, and ``keras.models.load_model``
once :func:`register_keras_objects` has been called (the command line does it). nnslicer can
slice it too: the lifter knows ``FakeQuant`` as an element-wise op that quantizes in the forward pass and passes
counts through in the backward pass.

>>> import numpy as np
>>> quantize_array(np.array([[0.2, -2.0], [0.9, 1.0]]), 3)  # 3 bits: 7 levels per column
array([[ 0.3       , -2.        ],
       [ 0.9       ,  1.33333333]])
"""

from __future__ import annotations


import numpy as np

from nnslicer.errors import InvalidInputError, InvalidParameterError
from nnslicer.keras import functional_graph, run_with_hooks
from nnslicer.validation import Interval, check_param

__all__ = ["quantize_array", "quantize", "quantized_layers", "register_keras_objects", "FakeQuant"]

#: The widest bit-width quantized (wider is float32 in all but name).
MAX_BITS = 16
#: Variable names that are quantized.
KERNELS = ("kernel", "depthwise_kernel")


def _check_bits(bits, name="bits", low=2):
    return check_param(bits, name, "quantize", Interval(int, low, MAX_BITS))


def quantize_array(w, bits, axes=None):
    """``w`` on a symmetric ``bits``-bit grid with one scale per slice along the axes not in
    ``axes`` (default: all but the last, i.e. per output channel). Zeros stay zero."""
    bits = _check_bits(bits)
    w = np.asarray(w)
    if w.ndim == 0:
        raise InvalidInputError("quantize_array needs an array with at least one axis.")
    axes = tuple(range(w.ndim - 1)) if axes is None else tuple(axes)
    levels = 2 ** (bits - 1) - 1
    peak = np.max(np.abs(w), axis=axes, keepdims=True).astype(np.float64)
    scale = np.where(peak > 0, peak / levels, 1.0)
    return (np.round(w / scale) * scale).astype(w.dtype)


def _kernel_axes(layer, variable):
    """Axes reduced for one scale: all but the last; for DepthwiseConv2D the spatial ones."""
    shape = tuple(variable.shape)
    if type(layer).__name__ == "DepthwiseConv2D" and len(shape) == 4:
        return (0, 1)
    return tuple(range(len(shape) - 1))


def _kernels(layer):
    return [v for v in layer.weights if v.name in KERNELS]


def quantized_layers(model):
    """The model's top-level layers whose kernels :func:`quantize` quantizes, in model order."""
    return [layer for layer in model.layers if _kernels(layer)]


def _fake_quant_class():
    import keras

    @keras.saving.register_keras_serializable(package="nnslicer")
    class FakeQuant(keras.layers.Layer):
        """Asymmetric uniform fake quantization of activations: ``2^bits`` levels over
        ``[low, high]``, values outside clipped. Gradients pass straight through (as if the
        layer were the identity), so saliency maps and fine-tuning work on quantized models."""

        def __init__(self, low, high, bits=8, **kwargs):
            super().__init__(**kwargs)
            if not (np.isfinite(low) and np.isfinite(high)) or high < low:
                raise InvalidParameterError(f"FakeQuant needs a finite range low <= high; got [{low}, {high}].")
            self.low, self.high, self.bits = float(low), float(high), _check_bits(bits, "bits")

        @property
        def step(self):
            return (self.high - self.low) / (2 ** self.bits - 1) or 1.0

        def call(self, x):
            from keras import ops

            q = ops.round((ops.clip(x, self.low, self.high) - self.low) / self.step) * self.step + self.low
            return x + ops.stop_gradient(ops.cast(q, x.dtype) - x)  # straight-through gradient

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "low": self.low, "high": self.high, "bits": self.bits}

    return FakeQuant


def _register_with_nnslicer(cls):
    """Teach nnslicer's lifter the FakeQuant layer: an element-wise op (same index)."""
    from nnslicer import register_handler, register_layer
    from nnslicer.ops import RouteHandler

    class FakeQuantOp(RouteHandler):
        kind = "fake_quant"

        def route(self, op, granularity, out):
            return [(0, np.arange(len(out)), out)]

        def forward(self, op, inputs):
            import tensorflow as tf

            p = op.params
            step = (p["high"] - p["low"]) / (2 ** p["bits"] - 1) or 1.0
            q = tf.round((tf.clip_by_value(inputs[0], p["low"], p["high"]) - p["low"]) / step)
            return q * step + p["low"]

    register_handler(FakeQuantOp(), replace=True)  # the same handler and lifter, however often it is called
    register_layer(cls, lambda layer, ctx: [ctx.op(
        "fake_quant", {"low": layer.low, "high": layer.high, "bits": layer.bits}, layer=layer)], replace=True)


_REGISTERED = {}


def register_keras_objects():
    """Make :class:`FakeQuant` known to Keras (for ``keras.models.load_model``) and to nnslicer's
    lifter; idempotent. Returns Keras ``custom_objects``. The ``nnslicer`` command line calls it
    before loading any model."""
    if not _REGISTERED:
        cls = _fake_quant_class()
        _register_with_nnslicer(cls)
        _REGISTERED["nnslicer>FakeQuant"] = cls
    return dict(_REGISTERED)


def __getattr__(name):  # FakeQuant is made on first use: importing this module needs no TensorFlow
    if name == "FakeQuant":
        return register_keras_objects()["nnslicer>FakeQuant"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _input_ranges(graph, names, x, batch_size):
    """min and max of each named layer's (first) input over the calibration batches."""
    import keras

    ranges = {}

    def wrap(op):
        if getattr(op, "name", None) not in names:
            return op

        def call(*args, **kwargs):
            v = keras.ops.convert_to_numpy(args[0])
            lo, hi = ranges.get(op.name, (np.inf, -np.inf))
            ranges[op.name] = (min(lo, float(v.min())), max(hi, float(v.max())))
            return op(*args, **kwargs)
        return call

    for start in range(0, len(x), batch_size):
        run_with_hooks(graph, [keras.ops.convert_to_tensor(x[start:start + batch_size])], wrap)
    return ranges


def quantize(model, bits, x=None, activation_bits=8, batch_size=256):
    """A fake-quantized copy of ``model`` (the input model is not changed).

    Parameters
    ----------
    model : keras.Model
        A functional or Sequential model.
    bits : int or dict of str to int
        Weight bit-width of every quantized layer, or per layer (e.g. from
        :func:`analyses.budgets.bit_widths`); layers missing from the dict stay float32.
    x : array, optional
        Calibration inputs for the activation ranges; needed unless ``activation_bits`` is None.
    activation_bits : int or None
        Bits of the activations entering each quantized layer (default 8); None leaves
        activations in float32.
    batch_size : int
        Calibration batch size.

    Returns
    -------
    new_model : keras.Model
        Same layers and weights, kernels on their quantized grid and :class:`FakeQuant` layers
        before each quantized layer.
    report : dict
        ``"bits"``: the bits per layer; ``"activation_bits"``; ``"activation_ranges"``: the
        calibrated input range ``[lo, hi]`` of each quantized layer.

    Examples
    --------
    >>> import numpy as np, keras
    >>> keras.utils.set_random_seed(0)
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"), keras.layers.Dense(2, name="o")])
    >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    >>> q, report = quantize(m, {"h": 3, "o": 5}, x)
    >>> report["bits"]
    {'h': 3, 'o': 5}
    >>> len(np.unique(np.abs(q.get_layer("h").get_weights()[0][:, 0]))) <= 4
    True
    >>> sorted(layer.name for layer in q.layers if type(layer).__name__ == "FakeQuant")
    ['h_fq', 'o_fq']
    """
    import keras

    graph = functional_graph(model, "quantize")
    layers = {layer.name: layer for layer in quantized_layers(model)}
    if isinstance(bits, dict):
        unknown = sorted(set(bits) - set(layers))
        if unknown:
            raise InvalidParameterError(f"No quantizable layer named {unknown}; quantizable: {sorted(layers)}.")
        plan = {name: _check_bits(b) for name, b in bits.items()}
    else:
        plan = {name: _check_bits(bits) for name in layers}
    if activation_bits is not None:
        activation_bits = _check_bits(activation_bits, "activation_bits")
        if x is None:
            raise InvalidInputError("quantize needs calibration inputs x for the activation ranges "
                                    "(or activation_bits=None).")
        x = np.asarray(x, dtype="float32")
        if not np.all(np.isfinite(x)):
            raise InvalidInputError("x holds NaN or infinite values.")
        ranges = _input_ranges(graph, set(plan), x, batch_size)
    else:
        ranges = {}
    fake_quant = register_keras_objects()["nnslicer>FakeQuant"]
    clones = {}

    def wrap(op):
        clone = clones.get(id(op))
        if clone is None:
            clone = clones[id(op)] = op.__class__.from_config(op.get_config())
        name = getattr(op, "name", None)

        def call(*args, **kwargs):
            if name in ranges:
                lo, hi = ranges[name]
                args = (fake_quant(lo, hi, activation_bits, name=f"{name}_fq")(args[0]),) + args[1:]
            return clone(*args, **kwargs)
        return call

    inputs = [keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=t.name) for t in model.inputs]
    outputs = run_with_hooks(graph, inputs, wrap)
    new = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=f"{model.name}_q")
    for layer in model.layers:
        clone = clones.get(id(layer))
        if clone is None or not layer.weights:
            continue
        values = []
        for v in layer.weights:
            value = keras.ops.convert_to_numpy(v.value)
            if layer.name in plan and v.name in KERNELS:
                value = quantize_array(value, plan[layer.name], _kernel_axes(layer, v))
            values.append(value)
        clone.set_weights(values)
    return new, {"bits": plan, "activation_bits": activation_bits,
                 "activation_ranges": {k: list(v) for k, v in ranges.items()}}
