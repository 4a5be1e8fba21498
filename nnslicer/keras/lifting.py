"""Lifting: ``keras.Model -> DataFlowGraph``, reading the model's layers and calls (Keras internals).

Each supported Keras layer class has a *lifter* that turns one call of the layer into one or
more :class:`~nnslicer.graph.Op` (a fused activation becomes its own op). The whole model is
checked before any work: every unsupported layer is named in one
:class:`~nnslicer.errors.UnsupportedLayerError`.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameterError, NNSlicerError, UnsupportedLayerError, require
from ..graph import DataFlowGraph, Op

__all__ = ["lift", "register_layer", "reads_masks", "LIFTERS", "OP_LIFTERS", "ACTIVATIONS"]

#: Activations that lift to an element-wise ``activation`` op (softmax only at the output).
ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "tanh", "elu", "selu", "gelu", "softplus",
               "softsign", "silu", "swish", "leaky_relu", "hard_sigmoid", "softmax", "celu", "exponential",
               "hard_silu", "hard_swish", "hard_tanh", "hard_shrink", "soft_shrink", "tanh_shrink",
               "log_sigmoid", "mish", "sparse_plus", "sparse_sigmoid", "squareplus")

#: Lifters by layer class (matched by identity) or class name (see :func:`register_layer`).
LIFTERS = {}
#: Lifters of Keras operations on tensors (``x + 3.0``, ``keras.ops.multiply(t, c)``: op layers,
#: which are no ``keras.layers.Layer``), by the operation's class name in ``keras.ops``.
OP_LIFTERS = {}


class Unsupported(Exception):
    """Raised by a lifter: this layer (as configured) cannot be lifted; the message says why."""


def register_layer(layer_class, lifter=None, replace=False):
    """Register ``lifter(layer, ctx) -> list[Op]`` for Keras layers of ``layer_class``.

    ``layer_class`` is the class itself (matched by identity), or its name: a name matches a
    layer of a class with that name unless Keras has a layer class of that name which is
    another class (``x + 3.0`` is Keras' ``Add`` operation, not the ``Add`` layer), so that no
    layer is ever lifted as another that shares its name. Usable as a decorator. ``ctx`` has
    ``name``, ``inputs`` (tensor names), ``input_shapes`` and ``shape`` (the output shape), all
    without the batch axis, and ``arguments`` (the call's ``args`` and ``kwargs``).
    """
    def deco(fn):
        if not replace and layer_class in LIFTERS:
            raise InvalidParameterError(f"A lifter for {_class_name(layer_class)!r} is already registered.")
        LIFTERS[layer_class] = fn
        return fn

    return deco if lifter is None else deco(lifter)


def reads_masks(lifter):
    """Mark ``lifter`` as one that reads a Keras mask among its call's inputs (and lifts what the
    layer computes with it); a mask reaching any other layer is refused, never dropped."""
    lifter.reads_masks = True
    return lifter


def _class_name(key):
    return key if isinstance(key, str) else key.__name__


def _lifter(layer):
    """The lifter of ``layer`` (a Keras layer, or a Keras operation on tensors), or None."""
    keras = require("keras", "tf")
    cls = type(layer)
    if not isinstance(layer, keras.layers.Layer):  # an op layer: x + 3.0, keras.ops.multiply(t, c)
        return OP_LIFTERS.get(cls.__name__) if cls.__module__.startswith("keras.") else None
    if cls in LIFTERS:
        return LIFTERS[cls]
    namesake = getattr(keras.layers, cls.__name__, None)
    return LIFTERS.get(cls.__name__) if namesake is None or namesake is cls else None


class _Call:
    """What a lifter knows of one call of a layer."""

    def __init__(self, name, inputs, input_shapes, shape, arguments=None, names=None, call=None):
        self.name, self.inputs, self.input_shapes, self.shape = name, inputs, input_shapes, shape
        self.arguments = arguments
        self._names = names or {}
        self.call = call or name  # the outermost call: a model inside the model is one call

    def name_of(self, tensor):
        """The graph name of a Keras tensor of the call's arguments."""
        try:
            return self._names[_key(tensor)]
        except KeyError:
            raise Unsupported("an input that no lifted layer computes (a mask of Masking?)") from None

    def op(self, kind, params=None, weights=None, layer=None, name=None, inputs=None, input_shapes=None,
           shape=None):
        return Op(name=name or self.name, kind=kind, inputs=tuple(inputs or self.inputs),
                  shape=tuple(shape or self.shape), input_shapes=tuple(input_shapes or self.input_shapes),
                  params=params or {}, weights=weights or {},
                  layer=getattr(layer, "name", ""), layer_class=type(layer).__name__, call=self.call)


def _arr(v):
    return np.asarray(v.numpy() if hasattr(v, "numpy") else v, dtype=np.float32)


def _activation_name(layer_or_fn):
    import keras

    fn = getattr(layer_or_fn, "activation", layer_or_fn)
    try:
        name = keras.activations.serialize(fn)
    except Exception:  # a lambda or another function Keras does not know by name
        name = None
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    if not isinstance(name, str) or name not in ACTIVATIONS:
        shown = name if isinstance(name, str) else getattr(fn, "__name__", type(fn).__name__)
        raise Unsupported(f"activation {shown!r} (supported: {', '.join(sorted(ACTIVATIONS))})")
    return name


def _with_activation(ctx, layer, op):
    """The linear op, then its fused activation as its own op (none for 'linear')."""
    act = _activation_name(layer)
    if act == "linear":
        return [op]
    return [op, ctx.op("activation", {"activation": act}, layer=layer, name=f"{ctx.name}/{act}",
                       inputs=(ctx.name,), input_shapes=(ctx.shape,))]


def _channels_last(layer):
    fmt = getattr(layer, "data_format", "channels_last")
    if fmt not in (None, "channels_last"):
        raise Unsupported(f"data_format={fmt!r} (only channels_last)")


def _pair(v):
    """A window parameter as ``(rows, columns)``: a 1-D layer's ``(k,)`` is ``(1, k)`` (its
    sequence is read as a map of one row)."""
    v = tuple(int(x) for x in (v if isinstance(v, (tuple, list)) else (v, v)))
    return (1,) + v if len(v) == 1 else v


@register_layer("InputLayer")
def _input(layer, ctx):
    return [ctx.op("input", layer=layer, inputs=(), input_shapes=())]


@register_layer("Dense")
def _dense(layer, ctx):
    kernel = _arr(layer.kernel)
    bias = _arr(layer.bias) if layer.use_bias else np.zeros(kernel.shape[1], np.float32)
    return _with_activation(ctx, layer, ctx.op("dense", weights={"kernel": kernel, "bias": bias}, layer=layer))


def _window(layer, padding=None):
    """The window parameters of a convolution (channels last, same or valid ``padding``, by
    default the layer's)."""
    _channels_last(layer)
    padding = padding or layer.padding
    if padding not in ("same", "valid"):
        raise Unsupported(f"padding={padding!r}")
    return {"kernel_size": _pair(layer.kernel_size), "strides": _pair(layer.strides),
            "dilation_rate": _pair(layer.dilation_rate), "padding": padding}


def _causal(layer, ctx):
    """A 1-D convolution with ``padding="causal"``: ``(k - 1) * dilation`` zeros before the
    sequence (a ``name/pad`` op), then the valid convolution. Returns ``(ops, ctx)``, the
    padding op (if any) and the call the convolution reads."""
    if getattr(layer, "padding", None) != "causal":
        return [], ctx
    (k,), (d,) = layer.kernel_size, layer.dilation_rate
    steps, channels = ctx.input_shapes[0]
    shape = (steps + (k - 1) * d, channels)
    pad = ctx.op("zero_padding", {"padding": [[0, 0], [(k - 1) * d, 0]]}, layer=layer, name=f"{ctx.name}/pad",
                 shape=shape)
    return [pad], _Call(ctx.name, (pad.name,), (shape,), ctx.shape, ctx.arguments, ctx._names, ctx.call)


def _conv_window(layer, ctx):
    """``(ops, ctx, params)`` of a convolution: a causal one's padding op first."""
    pad, ctx = _causal(layer, ctx)
    return pad, ctx, _window(layer, "valid" if pad else None)


@register_layer("Conv2D")
@register_layer("Conv1D")
def _conv(layer, ctx):
    pad, ctx, params = _conv_window(layer, ctx)
    kernel = _arr(layer.kernel)
    bias = _arr(layer.bias) if layer.use_bias else np.zeros(kernel.shape[-1], np.float32)
    if getattr(layer, "groups", 1) != 1:
        params["groups"] = int(layer.groups)
    return pad + _with_activation(ctx, layer, ctx.op("conv2d", params, {"kernel": kernel, "bias": bias}, layer))


@register_layer("DepthwiseConv2D")
@register_layer("DepthwiseConv1D")
def _depthwise(layer, ctx):
    pad, ctx, params = _conv_window(layer, ctx)
    kernel = _arr(layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else layer.kernel)
    n_out = kernel.shape[-2] * kernel.shape[-1]
    bias = _arr(layer.bias) if layer.use_bias else np.zeros(n_out, np.float32)
    return pad + _with_activation(ctx, layer, ctx.op("depthwise_conv2d", params, {"kernel": kernel, "bias": bias},
                                                     layer))


@register_layer("SeparableConv2D")
@register_layer("SeparableConv1D")
def _separable(layer, ctx):
    """Two ops, as Keras computes it: the depthwise convolution (``name/depthwise``), then the
    pointwise 1x1 convolution with the bias (``name``), then the fused activation."""
    pad, ctx, params = _conv_window(layer, ctx)
    depthwise, pointwise = _arr(layer.depthwise_kernel), _arr(layer.pointwise_kernel)
    bias = _arr(layer.bias) if layer.use_bias else np.zeros(pointwise.shape[-1], np.float32)
    inner = ctx.shape[:-1] + (depthwise.shape[-2] * depthwise.shape[-1],)
    first = ctx.op("depthwise_conv2d", params, {"kernel": depthwise, "bias": np.zeros(inner[-1], np.float32)},
                   layer, name=f"{ctx.name}/depthwise", shape=inner)
    pointwise_params = {"kernel_size": (1, 1), "strides": (1, 1), "dilation_rate": (1, 1), "padding": "valid"}
    second = ctx.op("conv2d", pointwise_params, {"kernel": pointwise, "bias": bias}, layer,
                    inputs=(first.name,), input_shapes=(inner,))
    return pad + [first] + _with_activation(ctx, layer, second)


def _gamma_beta(layer, ctx):
    """The scale and shift of a normalization over the last axis (ones and zeros where the
    layer has none); other axes are refused."""
    rank = len(ctx.input_shapes[0])
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    if axis not in (-1, rank):
        raise Unsupported(f"axis={layer.axis!r} (only the last axis)")
    n = ctx.input_shapes[0][-1]
    return {"gamma": _arr(layer.gamma) if layer.scale else np.ones(n, np.float32),
            "beta": _arr(layer.beta) if layer.center else np.zeros(n, np.float32)}


@register_layer("LayerScale")
def _layer_scale(layer, ctx):
    """ConvNeXt's LayerScale (``x * gamma``, one learned factor a channel), or any layer of that
    name with a ``gamma`` over the last axis."""
    gamma = getattr(layer, "gamma", None)
    gamma = None if gamma is None else _arr(gamma)
    if gamma is None or gamma.shape != (ctx.shape[-1],):
        raise Unsupported("a LayerScale without one factor a channel in 'gamma'")
    return [ctx.op("scale", weights={"kernel": gamma}, layer=layer)]


@register_layer("BatchNormalization")
def _batch_norm(layer, ctx):
    weights = dict(_gamma_beta(layer, ctx), moving_mean=_arr(layer.moving_mean),
                   moving_variance=_arr(layer.moving_variance))
    return [ctx.op("batch_norm", {"epsilon": float(layer.epsilon)}, weights, layer)]


@register_layer("LayerNormalization")
def _layer_norm(layer, ctx):
    params = {"epsilon": float(layer.epsilon), "rms_scaling": bool(getattr(layer, "rms_scaling", False))}
    return [ctx.op("layer_norm", params, _gamma_beta(layer, ctx), layer)]


@register_layer("Activation")
def _activation(layer, ctx):
    return [ctx.op("activation", {"activation": _activation_name(layer)}, layer=layer)]


@register_layer("ReLU")
def _relu(layer, ctx):
    params = {"activation": "relu"}
    for key, default in (("max_value", None), ("negative_slope", 0.0), ("threshold", 0.0)):
        value = getattr(layer, key, default)
        value = None if value is None else float(np.asarray(value))
        if value != default:
            params[key] = value
    return [ctx.op("activation", params, layer=layer)]


@register_layer("LeakyReLU")
def _leaky(layer, ctx):
    return [ctx.op("activation", {"activation": "leaky_relu",
                                  "negative_slope": float(layer.negative_slope)}, layer=layer)]


@register_layer("Softmax")
def _softmax(layer, ctx):
    if getattr(layer, "axis", -1) not in (-1, len(ctx.shape)):
        raise Unsupported("softmax over another axis than the last")
    return [ctx.op("activation", {"activation": "softmax"}, layer=layer)]


def _pool(kind):
    def lifter(layer, ctx):
        _channels_last(layer)
        params = {"kernel_size": _pair(layer.pool_size),
                  "strides": _pair(layer.strides if layer.strides is not None else layer.pool_size),
                  "padding": layer.padding}
        return [ctx.op(kind, params, layer=layer)]
    return lifter


def _global_pool(kind):
    @reads_masks  # GlobalAveragePooling1D's mask: a second input (GlobalMaxPooling1D takes none)
    def lifter(layer, ctx):
        _channels_last(layer)
        if not getattr(layer, "keepdims", False):
            return [ctx.op(kind, layer=layer)]
        channels = (ctx.shape[-1],)  # keepdims: the pooled vector, then a 1x1 map of it
        return [ctx.op(kind, layer=layer, name=f"{ctx.name}/pool", shape=channels),
                ctx.op("reshape", layer=layer, inputs=(f"{ctx.name}/pool",), input_shapes=(channels,))]
    return lifter


for _rank in ("1D", "2D"):
    register_layer("MaxPooling" + _rank, _pool("max_pool"))
    register_layer("AveragePooling" + _rank, _pool("avg_pool"))
    register_layer("GlobalAveragePooling" + _rank, _global_pool("global_avg_pool"))
    register_layer("GlobalMaxPooling" + _rank, _global_pool("global_max_pool"))


def _reshape(layer, ctx):
    return [ctx.op("reshape", layer=layer)]


def _identity(layer, ctx):
    return [ctx.op("identity", layer=layer)]


register_layer("Flatten", _reshape)
register_layer("Reshape", _reshape)
for _name in ("Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
              "ActivityRegularization"):
    register_layer(_name, _identity)


def _margins(value):
    """Padding or cropping as ``[[top, bottom], [left, right]]``: a 1-D layer's ``(left, right)``
    is ``[[0, 0], [left, right]]``."""
    if all(isinstance(v, (int, np.integer)) for v in value):  # 1-D: (left, right)
        return [[0, 0], [int(v) for v in value]]
    return [[int(a), int(b)] for a, b in value]


@register_layer("ZeroPadding2D")
@register_layer("ZeroPadding1D")
def _zero_padding(layer, ctx):
    _channels_last(layer)
    return [ctx.op("zero_padding", {"padding": _margins(layer.padding)}, layer=layer)]


@register_layer("Cropping2D")
@register_layer("Cropping1D")
def _cropping(layer, ctx):
    _channels_last(layer)
    return [ctx.op("cropping", {"cropping": _margins(layer.cropping)}, layer=layer)]


@register_layer("UpSampling2D")
@register_layer("UpSampling1D")
def _upsampling(layer, ctx):
    _channels_last(layer)
    if getattr(layer, "interpolation", "nearest") != "nearest":
        raise Unsupported(f"interpolation={layer.interpolation!r} (only 'nearest')")
    size = (1, int(layer.size)) if len(ctx.shape) == 2 else _pair(layer.size)  # 1-D: a map of one row
    return [ctx.op("upsample", {"size": list(size)}, layer=layer)]


@register_layer("Add")
def _add(layer, ctx):
    return [_sum("add", layer, ctx)]


@register_layer("Subtract")
def _subtract(layer, ctx):
    return [_sum("subtract", layer, ctx)]


def _sum(kind, layer, ctx):
    """The add or subtract op of tensors of the output's shape."""
    if any(tuple(s) != tuple(ctx.shape) for s in ctx.input_shapes):
        raise Unsupported("inputs of different shapes (broadcasting)")
    return ctx.op(kind, layer=layer)


@register_layer("Rescaling")
def _rescaling(layer, ctx):
    shape = (1,) * len(ctx.shape)
    return [ctx.op("constant", {"steps": [["multiply", "scale"], ["add", "offset"]]},
                   {"scale": _constant(layer.scale, shape), "offset": _constant(layer.offset, shape)}, layer)]


@register_layer("Normalization")
def _normalization(layer, ctx):
    mean = _constant(layer.mean, ctx.shape)
    epsilon = np.float32(require("keras", "tf").backend.epsilon())
    std = np.maximum(np.sqrt(_constant(layer.variance, ctx.shape)), epsilon)  # as Keras computes it
    steps = [["multiply", "std"], ["add", "mean"]] if layer.invert else [["subtract", "mean"], ["divide", "std"]]
    return [ctx.op("constant", {"steps": steps}, {"mean": mean, "std": std}, layer)]


def _constant(value, shape):
    """A constant as float32, once it broadcasts over a tensor of ``shape`` (without batch axis)
    into that shape."""
    const = np.asarray(value, dtype=np.float32)
    if const.ndim > len(shape) + 1 or (const.ndim == len(shape) + 1 and const.shape[0] != 1):
        raise Unsupported(f"a constant of shape {const.shape} (it would broadcast over the batch)")
    const = const.reshape(const.shape[-len(shape):] if const.ndim == len(shape) + 1 else const.shape)
    try:
        if np.broadcast_shapes(const.shape, tuple(shape)) != tuple(shape):
            raise ValueError
    except ValueError:
        raise Unsupported(f"a constant of shape {const.shape} that does not broadcast into {tuple(shape)}") from None
    return const


def _with_constant(operation):
    """The lifter of Keras' ``operation`` (one of :data:`CONSTANT_OPERATIONS`) of one tensor and
    one constant; of two tensors, an add or subtract of one shape lifts as the layer does, and a
    multiply as the Multiply layer."""
    def lifter(op, ctx):
        args = list(ctx.arguments.args) + list(ctx.arguments.kwargs.values())
        tensors = [i for i, a in enumerate(args) if hasattr(a, "_keras_history")]
        if len(args) != 2:
            raise Unsupported(f"keras.ops.{operation} with {len(args)} arguments")
        if len(tensors) == 2 and operation in ("add", "subtract"):
            return [_sum(operation, op, ctx)]
        if len(tensors) == 2 and operation == "multiply":
            return [_product(op, ctx)]
        if len(tensors) != 1:
            raise Unsupported(f"keras.ops.{operation} of two computed tensors")
        if operation == "divide" and tensors[0] == 1:
            raise Unsupported("a constant divided by a tensor")
        step = "subtract_from" if operation == "subtract" and tensors[0] == 1 else operation
        const = _constant(args[1 - tensors[0]], ctx.shape)
        return [ctx.op("constant", {"steps": [[step, "c"]]}, {"c": const}, op)]
    return lifter


#: The Keras operations on a tensor and a constant that lift (as a ``constant`` op).
CONSTANT_OPERATIONS = ("add", "subtract", "multiply", "divide")
for _op in CONSTANT_OPERATIONS:
    OP_LIFTERS[_op.capitalize()] = _with_constant(_op)
OP_LIFTERS["TrueDivide"] = _with_constant("divide")


@register_layer("Multiply")
def _multiply(layer, ctx):
    return [_product(layer, ctx)]


def _product(layer, ctx):
    """The multiply op of two tensors that broadcast into the output's shape."""
    if len(ctx.inputs) != 2:
        raise Unsupported(f"a product of {len(ctx.inputs)} tensors (multiply them two by two)")
    try:
        fits = np.broadcast_shapes(*ctx.input_shapes) == tuple(ctx.shape)
    except ValueError:
        fits = False
    if not fits:
        raise Unsupported(f"inputs of shapes {list(ctx.input_shapes)} that do not broadcast into {ctx.shape}")
    return ctx.op("multiply", layer=layer)


@register_layer("Embedding")
def _embedding(layer, ctx):
    """A lookup: its table is its synapses (:mod:`nnslicer.ops.lookup`)."""
    return [ctx.op("embedding", weights={"embeddings": _arr(layer.embeddings)}, layer=layer)]


def _mask(op, ctx):
    """``keras.ops.not_equal(tokens, 0)``, the mask of ``Embedding(mask_zero=True)``."""
    args = list(ctx.arguments.args) + list(ctx.arguments.kwargs.values())
    if len(args) != 2 or sum(hasattr(a, "_keras_history") for a in args) != 1:
        raise Unsupported("keras.ops.not_equal of other than a tensor and a constant")
    value = np.asarray(args[0] if not hasattr(args[0], "_keras_history") else args[1])
    if value.size != 1:
        raise Unsupported("keras.ops.not_equal with a constant that is not one number")
    return [ctx.op("mask", {"value": float(value)}, layer=op)]


OP_LIFTERS["NotEqual"] = _mask


def _mask_name(ctx, mask, ops):
    """The graph name of a Keras mask a layer reads from its inputs' ``_keras_mask``; a mask no
    node of the model computes (``Embedding(mask_zero=True)``'s, read by attention only) is
    lifted here, into ``ops``, from the operation Keras recorded for it."""
    try:
        return ctx.name_of(mask)
    except Unsupported:
        pass
    operation, index, _ = mask._keras_history
    node = operation._inbound_nodes[index]
    if type(operation).__name__ != "NotEqual":
        raise Unsupported(f"a Keras mask made by {type(operation).__name__} (only Embedding(mask_zero=True)'s)")
    name = f"{ctx.name}/mask{sum(op.kind == 'mask' for op in ops)}"
    source = node.input_tensors
    inner = _Call(name, tuple(ctx.name_of(t) for t in source), tuple(tuple(t.shape[1:]) for t in source),
                  tuple(mask.shape[1:]), node.arguments, ctx._names, ctx.call)
    ops.extend(_mask(operation, inner))
    ctx._names[_key(mask)] = name  # the layer's other inputs with this mask read the same op
    return name


def _constant_mask(layer, causal, tq, tk):
    """Attention's masks that depend on positions only (causal, sliding window), as Keras
    computes them: ``[Tq, Tk, 1]`` of 0/1, or None."""
    rows, cols = np.arange(tq)[:, None], np.arange(tk)[None, :]
    mask = np.ones((tq, tk), bool)
    if causal:  # key j <= query i
        mask &= cols <= rows
    if getattr(layer, "_sliding_window", None) is not None:  # |i - j| < window
        mask &= np.abs(rows - cols) < layer._sliding_window
    return None if mask.all() else mask[:, :, None].astype(np.float32)


@register_layer("MultiHeadAttention")
@reads_masks  # through its inputs' Keras masks, into the softmax
def _attention(layer, ctx):
    """MultiHeadAttention as its primitives (SPEC.md section 3; :mod:`nnslicer.ops.attention`):
    ``name/query``, ``name/key`` and ``name/value`` (Dense at each position), ``name/scaled``
    (the query times ``1 / sqrt(key_dim)``, as Keras scales it), ``name/scores`` (a product),
    ``name/softmax`` (over keys; causal and sliding-window masks, and the Keras masks of the
    inputs), ``name/context`` (a product), and the output projection ``name``. Self- and
    cross-attention over sequences ``[T, features]``."""
    args = dict(zip(("query", "value", "key"), ctx.arguments.args))
    args.update(ctx.arguments.kwargs)
    query, value = args.get("query"), args.get("value")
    key = args.get("key") if args.get("key") is not None else value
    if args.get("attention_mask") is not None:
        raise Unsupported("an attention_mask argument (a second input of the model)")
    if args.get("return_attention_scores"):
        raise Unsupported("return_attention_scores=True (a second output)")
    tensors = {"query": query, "key": key, "value": value}
    if getattr(layer, "_use_gate", False):
        raise Unsupported("use_gate=True (a gated attention)")
    if any(len(t.shape) != 3 for t in tensors.values()) or tuple(layer._attention_axes) != (1,):
        raise Unsupported("attention over inputs that are not sequences [batch, positions, features] "
                          "(attention_axes over a map)")
    heads = int(layer.num_heads)
    names = {role: ctx.name_of(t) for role, t in tensors.items()}
    shapes = {role: tuple(t.shape[1:]) for role, t in tensors.items()}
    ops, widths = [], {}
    for role in ("query", "key", "value"):
        dense = getattr(layer, f"_{role}_dense")
        kernel = _arr(dense.kernel)  # [features, heads, depth]
        widths[role] = kernel.shape[1] * kernel.shape[2]
        kernel = kernel.reshape(kernel.shape[0], widths[role])
        bias = _arr(dense.bias).reshape(-1) if dense.bias is not None else np.zeros(widths[role], np.float32)
        ops.append(ctx.op("dense", weights={"kernel": kernel, "bias": bias}, layer=layer, name=f"{ctx.name}/{role}",
                          inputs=(names[role],), input_shapes=(shapes[role],),
                          shape=(shapes[role][0], widths[role])))
    tq, tk = shapes["query"][0], shapes["key"][0]
    q_shape, k_shape, v_shape = (tq, widths["query"]), (tk, widths["key"]), (tk, widths["value"])
    scale = np.float32(1.0 / np.sqrt(float(layer.key_dim)))
    ops.append(ctx.op("constant", {"steps": [["multiply", "c"]]}, {"c": np.full((1, 1), scale, np.float32)},
                      layer, name=f"{ctx.name}/scaled", inputs=(f"{ctx.name}/query",), input_shapes=(q_shape,),
                      shape=q_shape))
    scores = (tq, tk, heads)
    ops.append(ctx.op("matmul", {"contract": "features", "heads": heads}, layer=layer, name=f"{ctx.name}/scores",
                      inputs=(f"{ctx.name}/scaled", f"{ctx.name}/key"), input_shapes=(q_shape, k_shape),
                      shape=scores))
    mask = _constant_mask(layer, args.get("use_causal_mask"), tq, tk)
    softmax = {} if mask is None else {"mask": mask}
    # the Keras masks of the query, the value and (unless it is the value) the key, as Keras combines them
    masked = [(axis, getattr(t, "_keras_mask", None)) for axis, t in
              ((0, query), (1, value), (1, key if args.get("key") is not None and key is not value else None))]
    masked = [(axis, _mask_name(ctx, m, ops), (tq if axis == 0 else tk,)) for axis, m in masked if m is not None]
    ops.append(ctx.op("softmax", {"axis": 1, "mask_axes": [axis for axis, _, _ in masked]}, softmax, layer,
                      name=f"{ctx.name}/softmax", inputs=(f"{ctx.name}/scores",) + tuple(n for _, n, _ in masked),
                      input_shapes=(scores,) + tuple(shape for _, _, shape in masked), shape=scores))
    ops.append(ctx.op("matmul", {"contract": "keys", "heads": heads, "mask_axes": [axis for axis, _, _ in masked]},
                      layer=layer, name=f"{ctx.name}/context",
                      inputs=(f"{ctx.name}/softmax", f"{ctx.name}/value") + tuple(n for _, n, _ in masked),
                      input_shapes=(scores, v_shape) + tuple(shape for _, _, shape in masked),
                      shape=(tq, widths["value"])))
    out = layer._output_dense
    kernel = _arr(out.kernel)  # [heads, depth, *output features]
    kernel = kernel.reshape(widths["value"], -1)
    bias = _arr(out.bias).reshape(-1) if out.bias is not None else np.zeros(kernel.shape[1], np.float32)
    if len(ctx.shape) != 2 or kernel.shape[1] != ctx.shape[-1]:
        raise Unsupported(f"an output of shape {ctx.shape} (output_shape of more than one axis)")
    ops.append(ctx.op("dense", weights={"kernel": kernel, "bias": bias}, layer=layer,
                      inputs=(f"{ctx.name}/context",), input_shapes=((tq, widths["value"]),)))
    return ops


@register_layer("Concatenate")
def _concatenate(layer, ctx):
    rank = len(ctx.shape)
    axis = layer.axis + rank + 1 if layer.axis < 0 else layer.axis
    if not 1 <= axis <= rank:
        raise Unsupported("concatenation along the batch axis")
    return [ctx.op("concatenate", {"axis": axis - 1}, layer=layer)]


# --------------------------------------------------------------------------- the model walk
def _functional(model):
    keras = require("keras", "tf")
    if not isinstance(model, keras.Model):
        raise InvalidParameterError(f"lift() needs a keras.Model. Got {type(model).__name__} instead.")
    if isinstance(model, keras.Sequential):
        if not model.built or getattr(model, "_functional", None) is None:
            raise InvalidParameterError(
                "The Sequential model is not built with a known input shape: start it with "
                "keras.Input(shape) or call model.build((None, ...)) first.")
        return model._functional
    if not hasattr(model, "_nodes_by_depth"):
        raise UnsupportedLayerError(
            f"Model {model.name!r} is a subclassed keras.Model; nnslicer lifts Sequential and "
            "functional models (their graph is known before they run).")
    return model


def _nodes(fn_model):
    """The model's nodes from the inputs to the outputs."""
    by_depth = fn_model._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _key(tensor):
    """A Keras tensor's identity in its model's graph: the operation and call that made it."""
    history = tensor._keras_history
    return id(history[0]), history[1]


def _walk(fn_model, inputs, prefix, calls, ops, problems, call=None, masks=None, top=None):
    """Lift ``fn_model``'s nodes into ``ops`` (and what cannot be lifted into ``problems``);
    returns the name of its output tensor. ``inputs``: the graph tensors that feed a nested
    model's inputs (None for the outer model, whose InputLayer lifts); its ops are named
    ``prefix + layer name``. ``calls`` counts each layer's calls (later ones are ``name#k``);
    ``call``: the call of the nested model being walked, which its ops share (None: each
    layer's call is its own), and ``top`` that model (the outer model's own layer)."""
    keras = require("keras", "tf")
    names = {}  # Keras tensor -> graph tensor name
    masks = set() if masks is None else masks  # graph tensors that are Keras masks
    if inputs is not None:
        names.update({_key(t): name for t, name in zip(fn_model.inputs, inputs)})
    for node in _nodes(fn_model):
        layer = node.operation
        if inputs is not None and _key(node.outputs[0]) in names:  # a nested model's input
            continue
        cls = type(layer).__name__
        count = calls.get(id(layer), 0)
        calls[id(layer)] = count + 1
        name = prefix + (layer.name if count == 0 else f"{layer.name}#{count}")
        out = _key(node.outputs[0])
        names[out] = name  # also when refused: later layers read it
        lifter = _lifter(layer)
        if lifter is None and isinstance(layer, keras.Model):  # inlined: its ops are 'outer/inner'
            inner = _nested(layer, node)
            if isinstance(inner, str):
                problems.append((layer.name, cls, inner))
            else:
                names[out] = _walk(inner, [names[_key(t)] for t in node.input_tensors], name + "/", calls, ops,
                                   problems, call or name, masks, top or layer)
            continue
        if lifter is None:
            why = (f"a Keras operation on tensors (keras.ops.{layer.name.split('_')[0]}...)"
                   if not isinstance(layer, keras.layers.Layer) else "")
            problems.append((layer.name, cls, why))
            continue
        if getattr(layer, "quantization_mode", None):  # the kernel holds integers, scaled elsewhere
            problems.append((layer.name, cls, f"quantized ({layer.quantization_mode}); lift the float model, "
                                              "before model.quantize()"))
            continue
        if len(node.outputs) != 1:
            problems.append((layer.name, cls, "more than one output"))
            continue
        ctx = _Call(name, tuple(names[_key(t)] for t in node.input_tensors),
                    tuple(tuple(t.shape[1:]) for t in node.input_tensors), tuple(node.outputs[0].shape[1:]),
                    node.arguments, names, call)
        try:
            lifted = lifter(layer, ctx)
        except Unsupported as why:
            problems.append((layer.name, cls, str(why)))
            continue
        if any(n in masks for n in ctx.inputs) and not getattr(lifter, "reads_masks", False):
            problems.append((layer.name, cls, "a Keras mask (Embedding(mask_zero=True)) reaches it, which nnslicer "
                                              "does not lift for this layer"))
            continue
        masks.update(op.name for op in lifted if op.kind == "mask")
        if any(d is None for op in lifted for d in op.shape):
            problems.append((layer.name, cls, f"unknown output shape {ctx.shape}"))
            continue
        _record_variables(layer, top or layer, lifted)
        ops.extend(lifted)
        names[out] = lifted[-1].name
    return names[_key(fn_model.outputs[0])]


def _record_variables(layer, top, lifted):
    """Note in each weighted op's ``params["variable"]`` where Keras holds its synapses:
    ``[name of the model's own layer, index in its weights]`` (a model inside the model is its
    own layer), found as the one variable of ``layer`` holding the same values (of any shape:
    attention's ``[features, heads, depth]`` kernel is the op's ``[features, heads * depth]``).
    Analyses that write synapses back (pruning's masks) read it; an op with no single such
    variable gets none."""
    for op in lifted:
        key = op.handler.synapse_weight
        if key is None or "variable" in op.params:
            continue
        synapses = op.weights[key]
        found = [v for v in getattr(layer, "weights", ()) if int(np.prod(v.shape)) == synapses.size
                 and np.array_equal(np.asarray(v.numpy(), dtype=np.float32).reshape(synapses.shape), synapses)]
        index = [i for i, v in enumerate(top.weights) if len(found) == 1 and v is found[0]]
        if len(index) == 1:
            op.params["variable"] = [top.name, index[0]]


def _nested(model, node):
    """The functional graph of a model called inside another, or why it cannot be inlined."""
    try:
        inner = _functional(model)
    except NNSlicerError as exc:
        return str(exc).split(";")[0]
    if len(inner.inputs) != len(node.input_tensors) or len(inner.outputs) != 1 or len(node.outputs) != 1:
        return "a model inside the model with another number of inputs or outputs than its call"
    return inner


def lift(model, granularity: str = "element") -> DataFlowGraph:
    """Lift a Keras 3 Sequential or functional model into a :class:`DataFlowGraph`.

    Parameters
    ----------
    model : keras.Model
        A built model with one input and one output.
    granularity : {"element", "channel"}
        What a neuron of a tensor with channels (a feature map, a sequence) is: an element, or a
        channel (its mean over positions).

    Raises
    ------
    UnsupportedLayerError
        Naming every layer that cannot be lifted, the supported types, and how to add one.

    Examples
    --------
    >>> import keras, nnslicer
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="relu")])
    >>> nnslicer.lift(model).summary().splitlines()[0].split()
    ['op', 'kind', 'inputs', 'shape', 'neurons', 'synapses']
    """
    fn_model = _functional(model)
    if len(fn_model.inputs) != 1 or len(fn_model.outputs) != 1:
        raise UnsupportedLayerError(
            f"Model {model.name!r} has {len(fn_model.inputs)} inputs and {len(fn_model.outputs)} "
            "outputs; nnslicer slices models with one input and one output.")
    ops, problems = [], []
    output = _walk(fn_model, None, "", {}, ops, problems)
    if problems:
        raise _unsupported(model, problems)
    graph = DataFlowGraph(ops, output, name=model.name, granularity=granularity)
    # the one softmax allowed is the output's, read from the logits (graph.logits looks past a Dropout)
    misplaced = [(op.layer, op.layer_class, "softmax before the output") for op in graph.ops
                 if op.kind == "activation" and op.params["activation"] == "softmax"
                 and op.inputs[0] != graph.logits]
    if misplaced:
        raise _unsupported(model, misplaced)
    for op in graph.ops:
        op.handler.check(op, granularity)
    return graph


def _unsupported(model, problems):
    """One error for every ``(layer name, class, why)`` problem, grouped by class and reason
    ("SeparableConv2D x34 ('a', 'b', ... +31 more)"), with the supported list once."""
    groups = {}
    for name, cls, why in problems:
        groups.setdefault((cls, why), []).append(name)
    parts = []
    for (cls, why), names in groups.items():
        shown = ", ".join(map(repr, names[:3])) + (f", ... +{len(names) - 3} more" if len(names) > 3 else "")
        head = f"{names[0]!r} ({cls})" if len(names) == 1 else f"{cls} x{len(names)} ({shown})"
        parts.append(head + (f": {why}" if why else ""))
    supported = ", ".join(sorted({_class_name(k) for k in LIFTERS})
                          + [f"keras.ops.{k} with a constant" for k in CONSTANT_OPERATIONS])
    return UnsupportedLayerError(
        f"Model {model.name!r} has {len(problems)} layer(s) nnslicer cannot lift: " + "; ".join(parts)
        + f". Supported layers: {supported}. To add one, register a lifter with "
        "nnslicer.register_layer(layer_class, lifter) and, for a new kind of op, a handler "
        "with nnslicer.register_handler(handler).")


from . import unroll  # noqa: E402,F401  (registers the recurrent layers' lifters)
