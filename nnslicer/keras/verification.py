"""The lifted model is checked: it must compute what Keras computes.

A lift that is accepted but computes another network is the worst failure nnslicer can have:
every slice of it would be wrong, silently. :func:`verify` runs the lifted graph and the Keras
model on the same samples and compares their outputs; :meth:`nnslicer.Slicer.fit` calls it on
the first profiling batch (at most :data:`nnslicer.profiling.CHECK_SAMPLES` samples), or on the profile's mean
input with ``fit(profile=...)``. Only when the outputs disagree is the output of every layer
compared too, and a layer that differs is run alone on Keras' own inputs of it, to name the
first op that computes another thing than Keras (or to tell that none does: the network
amplifies float32 rounding).

Precision. The lifted graph computes in float32. The check runs with TensorFloat-32 off
(TensorFlow's GPU default rounds float32 products to 10-bit mantissas, so two correct float32
computations could differ by ~1e-3). A model with a 16-bit compute dtype and float32 weights (dtype
policies ``mixed_float16``, ``mixed_bfloat16``) is lifted at float32: it is checked against
Keras running its layers at float32 for the check (their dtype policies are restored after),
at the same tolerance; how far the 16-bit model itself is from the lifted float32 one is logged
at INFO (~1e-3 of the output's scale for a ResNet10 in float16, ~1e-2 in bfloat16). A model
that keeps 16-bit weights (policies ``float16``, ``bfloat16``) cannot run at float32 in Keras,
and is refused with a message that says how to convert it.
"""

from __future__ import annotations

import logging
import sys
import warnings
from contextlib import contextmanager

import numpy as np

from ..errors import UnsupportedLayerError, require
from ..forward import as_batch, check_finite, execute

__all__ = ["verify", "TOLERANCE"]

log = logging.getLogger(__name__)

#: Largest difference allowed between the lifted graph's output and Keras', as a share of the
#: output's scale ``max(1, max |Keras' output|)``.
TOLERANCE = 1e-4

_LOW_PRECISION = ("float16", "bfloat16")


def verify(graph, model, x, tolerance=TOLERANCE):
    """Check that the lifted ``graph`` computes what ``model`` computes on ``x``.

    Both run on ``x`` (in float32, TensorFloat-32 off); their final outputs may differ by at
    most ``tolerance`` times the output's scale, ``max(1, max |Keras' output|)``.

    Parameters
    ----------
    graph : DataFlowGraph
        ``nnslicer.lift(model)``.
    model : keras.Model
        The model that was lifted.
    x : array
        One sample or a batch of them (a few dozen are plenty: the check costs one forward
        pass of each).
    tolerance : float, default :data:`TOLERANCE` (1e-4)

    Returns
    -------
    float
        The largest absolute difference of the outputs over the output's scale (logged at
        INFO with the absolute difference).

    Raises
    ------
    UnsupportedLayerError
        When the outputs differ by more. Each layer's output is then compared, in graph order,
        with Keras' output of it, and each that differs is run alone on Keras' own inputs of the
        layer: the error names the first op whose layer computes another thing than Keras from
        those inputs (by more than ``tolerance`` times its output's scale), a bug of nnslicer's
        lifter (or of a lifter or handler registered for the layer). Layers called more than
        once, or out of reach (inside a nested model), are not compared, but named. When every
        layer compared computes what Keras computes, the error says that the difference grows
        along the network: float32 rounding that the model amplifies, no lifter bug.
    InvalidInputError
        For an ``x`` of the wrong shape or with NaN/inf values, or when the model's values
        overflow on it.

    Examples
    --------
    >>> import keras, numpy as np, nnslicer
    >>> from nnslicer.keras import verify
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
    ...                           keras.layers.Dense(3, activation="softmax")])
    >>> x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    >>> verify(nnslicer.lift(model), model, x) < 1e-6
    True
    """
    x = as_batch(graph, x)
    low = _low_precision_layers(model)
    if low:  # what the 16-bit model itself computes, for the log
        expected = _run(model, x)
    with _full_float32(), _computing_in_float32(low):
        values = execute(graph, x)
        check_finite(graph, values)
        if low:
            diff, scale = _difference(values[graph.output], expected)
            log.info("Model %r computes in %s; the lifted model, in float32: their outputs differ by "
                     "%.3g (output scale %.3g) on %d sample(s). It is checked against Keras at float32.",
                     graph.name, low[0][1].compute_dtype, diff, scale, len(x))
        diff, scale = _difference(values[graph.output], _run(model, x))
        log.info("lifted model %r against Keras on %d sample(s): max difference %.3g (output scale %.3g)",
                 graph.name, len(x), diff, scale)
        if not diff <= tolerance * scale:  # NaN included
            raise _mismatch(graph, model, x, values, tolerance, diff, scale)
    return float(diff / scale)


def _run(model, x):
    """``model`` on the batch ``x``, as numpy; quiet about a model built with a list of one input."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
        return _numpy(model(x, training=False))


def _numpy(value):
    keras = require("keras", "tf")
    if isinstance(value, (list, tuple)):
        return [_numpy(v) for v in value]
    return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)


def _difference(got, want):
    """``(max |got - want|, max(1, max |want|))``; an infinite difference for another shape."""
    want = np.asarray(want, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    if np.shape(got) != np.shape(want):
        return float("inf"), scale
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - want), initial=0.0)), scale


def _layers(model):
    """The model's operations: its layers, and the Keras operations on tensors (``x + 3.0``)
    of a functional model."""
    return list(getattr(model, "operations", None) or model.layers)


def _low_precision_layers(model):
    """``(layer, dtype policy)`` of the layers that compute in 16 bits. Raises
    UnsupportedLayerError for layers that keep 16-bit weights: Keras cannot run those at
    float32, so their lift could only be checked to 16-bit precision."""
    keras = require("keras", "tf")
    layers = [model] + [layer for layer in _layers(model) if layer is not model]
    low = [(layer, layer.dtype_policy) for layer in layers if isinstance(layer, keras.layers.Layer)
           and getattr(layer.dtype_policy, "compute_dtype", None) in _LOW_PRECISION]
    held = [f"{layer.name!r} ({layer.dtype_policy.name})" for layer, _ in low if layer is not model
            and any(str(getattr(w, "dtype", "")) in _LOW_PRECISION for w in layer.weights)]
    if held:
        raise UnsupportedLayerError(
            f"Model {model.name!r} keeps weights in 16 bits (layers {', '.join(held[:5])}"
            f"{', ...' if len(held) > 5 else ''}): nnslicer computes in float32, and checks its lift "
            "against Keras computing in float32, which these layers cannot. Build the model with the "
            "'float32' or 'mixed_float16' dtype policy (keras.config.set_dtype_policy) and copy the "
            "weights: new_model.set_weights(model.get_weights()).")
    return low


@contextmanager
def _computing_in_float32(layers):
    """The layers compute in float32 meanwhile; their dtype policies are restored after."""
    try:
        for layer, policy in layers:
            layer.dtype_policy = "float32"
        yield
    finally:
        for layer, policy in layers:
            layer.dtype_policy = policy


@contextmanager
def _full_float32():
    """TensorFloat-32 off meanwhile (where TensorFlow is loaded), then as it was."""
    tf = sys.modules.get("tensorflow")
    config = getattr(getattr(tf, "config", None), "experimental", None)
    enabled = config is not None and config.tensor_float_32_execution_enabled()
    if enabled:
        config.enable_tensor_float_32_execution(False)
    try:
        yield
    finally:
        if enabled:
            config.enable_tensor_float_32_execution(True)


def _compared(graph):
    """The ops whose output is a Keras layer's (the last op lifted from the layer's first and
    only call; layers called more than once are left out), in graph order."""
    last, shared = {}, set()
    for op in graph.ops:
        if op.kind == "input" or not op.layer:
            continue
        if op.name.startswith(f"{op.layer}#"):  # a later call of the layer
            shared.add(op.layer)
        else:
            last[op.layer] = op
    return [op for op in graph.ops if op.layer not in shared and last.get(op.layer) is op]


def _keras_values(model, ops, x):
    """Keras' output and inputs of the layer of each op, by op name: ``{name: (output,
    [inputs])}`` (none where Keras cannot give them: no such layer, or tensors that are not of
    this model's graph, as a nested model's layers)."""
    keras = require("keras", "tf")
    layers = {layer.name: layer for layer in _layers(model)}
    wanted = {}
    for op in ops:
        try:
            layer = layers[op.layer]
            inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
            wanted[op.name] = [layer.output, *inputs]
        except Exception:  # noqa: BLE001 - no layer of that name, or never called
            continue
    reachable = {}
    try:
        keras.Model(model.inputs[0], [t for ts in wanted.values() for t in ts])
        reachable = wanted
    except Exception:  # noqa: BLE001 - some tensor is not of this model's graph: keep the others
        for name, tensors in wanted.items():
            try:
                keras.Model(model.inputs[0], tensors)
            except Exception:  # noqa: BLE001
                continue
            reachable[name] = tensors
    if not reachable:
        return {}
    flat = [t for ts in reachable.values() for t in ts]
    outputs = _run(keras.Model(model.inputs[0], flat), x)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    values, i = {}, 0
    for name, tensors in reachable.items():
        values[name] = (outputs[i], outputs[i + 1:i + len(tensors)])
        i += len(tensors)
    return values


def _alone(graph, op, inputs):
    """The output of ``op``'s layer as the lifted ops compute it from Keras' own ``inputs`` of
    the layer (its ops run in graph order, fed where they read another layer's tensor)."""
    tf = require("tensorflow", "tf")
    mine = [o for o in graph.ops if o.layer == op.layer and not o.name.startswith(f"{op.layer}#")]
    names = {o.name for o in mine}
    outside = list(dict.fromkeys(t for o in mine for t in o.inputs if t not in names))
    if len(outside) != len(inputs):
        return None
    values = {t: tf.constant(np.asarray(v, np.float32)) for t, v in zip(outside, inputs)}
    for o in mine:
        values[o.name] = o.handler.forward(o, [values[t] for t in o.inputs])
    return np.asarray(values[op.name], np.float64)


def _mismatch(graph, model, x, values, tolerance, diff, scale):
    """The error naming the first op whose layer, fed Keras' own inputs of the layer, does not
    compute Keras' output of it (or, where that is not it, the first op whose output differs,
    and the ops before it that could not be compared: layers called more than once); when every
    layer before the difference is compared and computes what Keras computes, the error says
    that the difference grows along the network."""
    ops = _compared(graph)
    expected = _keras_values(model, ops, x)
    checked = {op.layer for op in ops if op.name in expected}
    inherited = None  # the first op whose output differs from inputs that already differ
    for op in ops:
        if op.name not in expected:
            continue
        want, inputs = expected[op.name]
        d, s = _difference(values[op.name], want)
        if d <= tolerance * s:
            continue
        alone = _alone(graph, op, inputs)
        if alone is None:
            return _blame(graph, op, d, s, checked)
        d_alone, s_alone = _difference(alone, want)
        if d_alone > tolerance * s_alone:
            return _blame(graph, op, d_alone, s_alone, checked)
        if inherited is None:
            inherited = (op, d, s)
    if inherited is not None and _unchecked(graph, inherited[0], checked):
        return _blame(graph, *inherited, checked)
    if inherited is not None:
        return UnsupportedLayerError(
            f"The lifted model's output (op {graph.output!r}) differs from Keras' by {diff:.3g} against its "
            f"scale {scale:.3g}, more than the {tolerance:g} of it allowed, though every layer up to op "
            f"{inherited[0].name!r}, where the difference shows, computes what Keras computes from Keras' own "
            "inputs: the difference grows along the network (float32 rounding, which this model amplifies), "
            "so its slices could not be trusted to be Keras' on these inputs. Check that the samples are in "
            "the model's input range (after its preprocessing); a model this sensitive to rounding computes "
            "other outputs in Keras too, on another machine or batch size.")
    return UnsupportedLayerError(
        f"The lifted model computes another network than Keras: its output (op {graph.output!r}) differs "
        f"by {diff:.3g} against Keras' output scale {scale:.3g}, though no layer's output that can be "
        "compared alone differs by more than the tolerance (layers called more than once, or out of reach, "
        "cannot). This is a bug in nnslicer's lifter: please report it.")


def _unchecked(graph, op, checked):
    """The ops before ``op`` that are not compared with Keras."""
    import networkx as nx

    before = nx.ancestors(graph.nx, op.name)
    return [b for b in graph.ops if b.name in before and b.kind != "input"
            and (b.layer not in checked or b.name.startswith(f"{b.layer}#"))]


def _blame(graph, op, d, s, checked):
    """The error naming ``op`` (and the ops before it that are not compared)."""
    unchecked = _unchecked(graph, op, checked)
    names = list(dict.fromkeys(b.layer or b.name for b in unchecked))
    classes = list(dict.fromkeys([op.layer_class] + [b.layer_class for b in unchecked]))
    where = f"op {op.name!r} (layer {op.layer!r}, {op.layer_class})"
    if names:  # their errors show first here
        where += (f", or from an op before it that is not compared with Keras (of layer(s) "
                  f"{', '.join(map(repr, names))}: called more than once, or out of reach)")
    return UnsupportedLayerError(
        f"The lifted model computes another network than Keras from {where} on: max difference "
        f"{d:.3g} against Keras' output scale {s:.3g}. This is a bug in nnslicer's lifter for "
        f"{' or '.join(classes)}: please report it.")
