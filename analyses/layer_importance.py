"""Which layers of a model matter most: SAFER's layer criteria, FIT, Shapley, Taylor, APoZ and
NNSlicer slice counts (SPEC.md section 6).

A layer criterion is ``C_l = psi(phi(f, X)_l)`` (SAFER, Yvinec et al.): ``phi`` (a *criterion*
here) gives fine-grained scores of a layer, one per weight or one per unit (neuron, channel),
and ``psi`` (a *reduction*) turns them into one number: the mean of absolute values, a
percentile of absolute values, or the l1, l2 or linf norm.

Which layers are ranked: every top-level Keras layer that holds trainable weights (Dense,
Conv2D, BatchNormalization, LayerNormalization, MultiHeadAttention, ...). Layers without
weights (activations, pooling, Add, Dropout) are not ranked.

What ``f`` is: the model's output for the target class (the label ``y`` when given, else the
class the model predicts), averaged over the calibration samples ``x``. ``fit`` and ``taylor``
use the cross-entropy loss against the same targets instead, as their papers do.

Criteria (the registry :data:`CRITERIA`; each docstring says whether it scores weights or
activations):

======================  =========================================================  ===========
name                    fine-grained score                                         scores
======================  =========================================================  ===========
slice                   NNSlicer synapse counts, summed |.| over the samples        weights
weight                  ``w``                                                       weights
gradient                ``df/dw``                                                   weights
weight_x_gradient       ``w * df/dw``                                               weights
gradcam_pp              ``g^2 / (2 g^2 + w g^3)`` (SAFER eq. 7)                     weights
integrated_gradients    ``w * mean_k df/dw (k/m * w_l)`` (layer scaled to 0)        weights
guided_ig               guided path: smallest ``|g|`` move first (Kapishnikov)     weights
idgi                    ``sum_k g_k^2/|g_k|^2 * (f_k - f_{k-1})`` on the IG path     weights
smoothgrad              mean of ``df/dw`` under Gaussian weight noise               weights
vargrad                 variance of ``df/dw`` under Gaussian weight noise           weights
hsic                    HSIC(unit's weights kept or dropped, outputs)               weights
fit                     empirical Fisher ``E[(dL/dw)^2]`` x quantization noise      weights
shapley                 Shapley value of each unit (sampled permutations)           activations
taylor                  ``(w * dL/dw)^2`` (Molchanov et al. 2019)                   weights
apoz                    ``1 -`` average percentage of zeros of each unit            activations
combined                mean rank over several criteria/reductions (layer level)    both
======================  =========================================================  ===========

Weight-based criteria cover all the layer's trainable weights (kernel, bias, gamma, beta, the
query/key/value/output projections of attention), flattened and concatenated.
Unit-based ones (``hsic``, ``shapley``, ``apoz``) act on the last axis of the layer's output:
keeping or dropping a unit is the same as keeping or zeroing the weights that produce it.

Everything but ``slice`` works on Keras layers directly; ``slice`` needs the model to be
liftable by nnslicer (transformers and recurrent layers are) and otherwise raises
:class:`nnslicer.errors.UnsupportedLayerError`.

Example
-------
>>> import numpy as np, keras
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="relu", name="a"),
...                           keras.layers.Dense(2, name="b")])
>>> x = np.random.default_rng(0).normal(size=(16, 2)).astype("float32")
>>> ranking = layer_importance(model, x, criterion="gradient", reduction="linf")
>>> sorted(ranking)
['a', 'b']
"""

from __future__ import annotations

import itertools
import logging
import math
import numbers
from dataclasses import dataclass

import numpy as np

from nnslicer import check_inputs, check_labels
from nnslicer.errors import FileFormatError, InvalidInputError, InvalidParameterError, UnsupportedLayerError
from nnslicer.keras import functional_graph, run_with_hooks
from nnslicer.validation import Interval, Options, check_param


log = logging.getLogger(__name__)

__all__ = ["layer_importance", "criterion_scores", "reduce_scores", "combine", "ranked_layers",
           "CRITERIA", "REDUCTIONS", "DEFAULT_COMBINED", "register_criterion", "Context", "save_ranking",
           "load_ranking"]


# --------------------------------------------------------------------------- reductions
def _mean(s, q=None):
    return float(np.mean(np.abs(s)))


def _percentile(s, q=None):
    return float(np.percentile(np.abs(s), 90.0 if q is None else q))


def _l1(s, q=None):
    return float(np.sum(np.abs(s)))


def _l2(s, q=None):
    return float(np.sqrt(np.sum(np.square(s, dtype=np.float64))))


def _linf(s, q=None):
    return float(np.max(np.abs(s)))


#: psi: one number from a layer's fine-grained scores (all on absolute values).
REDUCTIONS = {"mean": _mean, "percentile": _percentile, "l1": _l1, "l2": _l2, "linf": _linf}


# --------------------------------------------------------------------------- context
@dataclass
class Context:
    """What every criterion gets (:func:`register_criterion`): the model, its runnable graph,
    the calibration data and targets, the ranked layers and the trainable variables.

    ``model`` (the Keras model), ``graph`` (its functional graph,
    :func:`nnslicer.keras.functional_graph`), ``x`` (the samples, a TensorFlow tensor),
    ``target`` (one class per sample), ``layers`` (:func:`ranked_layers`), ``variables``
    (``model.trainable_variables``) and ``values`` (their values, tensors), ``index`` (layer
    name -> indices into ``variables``), ``probabilities`` (whether the output is a softmax),
    ``seed``; ``progress``, when given, is called with the number of layers scored so far (a
    criterion that scores one layer at a time calls :meth:`layer_done` after each). ``loss``,
    when given, is the loss of ``kind="loss"`` (``loss(y_true, y_pred)``, one value per sample;
    ``target`` then holds ``y_true`` as given); default: the cross-entropy of ``target``.
    ``output`` is the model's output on ``x`` (computed once, when the context is made).
    """

    model: object
    graph: object
    x: object  # tf tensor
    target: np.ndarray  # int per sample
    layers: list
    variables: list  # model.trainable_variables
    values: list  # their current values, tf tensors
    index: dict  # layer name -> indices into variables
    probabilities: bool  # the model's output is a softmax
    seed: int
    compiled: dict = None  # (kind, per_sample) -> traced gradient function
    progress: object = None
    done: int = 0
    loss: object = None  # callable(y_true, y_pred) -> per-sample loss; default cross-entropy
    output: np.ndarray = None  # the model's output on x

    def layer_done(self):
        """Count one more layer scored (and report it to ``progress``)."""
        self.done += 1
        if self.progress is not None:
            self.progress(self.done)


def ranked_layers(model):
    """The layers that are ranked: the model's top-level layers holding trainable weights.

    >>> import keras
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d"),
    ...                       keras.layers.ReLU(name="r")])
    >>> [layer.name for layer in ranked_layers(m)]
    ['d']
    """
    return [layer for layer in model.layers if layer.trainable_weights]


def _context(model, x, y, seed, loss=None):
    """The :class:`Context` of a model and its calibration data; with ``loss`` (a callable of
    ``(y_true, y_pred)``), ``y`` is that loss's ``y_true`` (any shape, one row per sample) and the
    model's output may be anything of shape ``(batch, outputs)``."""
    import tensorflow as tf

    if not hasattr(model, "layers") or not hasattr(model, "count_params"):
        raise InvalidInputError(f"model must be a Keras model. Got {type(model).__name__} instead.")
    try:
        model.inputs
    except (AttributeError, ValueError):  # a Sequential without an Input, or a subclassed model
        raise InvalidInputError(f"layer_importance needs a functional or Sequential Keras model with a known "
                                f"input shape (keras.Input(...) first); got {type(model).__name__}.") from None
    graph = functional_graph(model, "layer_importance")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InvalidInputError("layer_importance needs a model with one input and one output.")
    x = check_inputs(x, model.inputs[0].shape[1:])
    layers = ranked_layers(model)
    if not layers:
        raise InvalidInputError("The model has no layer with trainable weights to rank.")
    xt = tf.constant(x, dtype=model.inputs[0].dtype or "float32")
    out = np.asarray(model(xt, training=False))
    if out.ndim != 2:
        raise InvalidInputError(f"layer_importance needs a classifier with outputs shaped "
                                f"(batch, classes); got {out.shape}.")
    if loss is not None:
        if not callable(loss):
            raise InvalidParameterError(f"loss must be a callable loss(y_true, y_pred); got {loss!r}.")
        if y is None or len(y) != len(x):
            raise InvalidInputError("A custom loss needs y, one target per sample of x.")
        target = np.asarray(y)
    else:
        target = (out.argmax(1) if y is None else check_labels(y, len(x), out.shape[1])).astype(np.int64)
    variables = list(model.trainable_variables)
    ids = {id(v): i for i, v in enumerate(variables)}
    index = {layer.name: [ids[id(v)] for v in layer.trainable_weights] for layer in layers}
    probabilities = bool(np.all(out >= 0) and np.allclose(out.sum(1), 1.0, atol=1e-4))
    return Context(model, graph, xt, target, layers, variables,
                   [tf.convert_to_tensor(v.value) for v in variables], index, probabilities, seed, loss=loss,
                   output=out)


def _evaluate(ctx, values=None, hook=None, x=None, names=None):
    """The model's output with variables replaced by ``values`` and the output of each ranked
    layer (of each layer in ``names``, when given) passed through ``hook(layer_name, output)``."""
    import keras
    import tensorflow as tf

    names = set(ctx.index if names is None else names)

    def wrap(op):
        if hook is None or getattr(op, "name", None) not in names:
            return op

        def call(*args, **kwargs):
            return hook(op.name, op(*args, **kwargs))
        return call

    values = ctx.values if values is None else values
    with keras.StatelessScope(state_mapping=list(zip(ctx.variables, values))):
        out = run_with_hooks(ctx.graph, [ctx.x if x is None else x], wrap)
    return tf.nest.flatten(out)[0]


def _objective(ctx, out, kind="score", per_sample=False, target=None):
    """``f``: the target class's output (``score``) or the loss (``loss``: the context's, else
    the cross-entropy)."""
    import tensorflow as tf

    target = ctx.target if target is None else target
    if kind == "loss" and ctx.loss is not None:
        vals = tf.reshape(tf.cast(ctx.loss(tf.cast(target, out.dtype), out), out.dtype), (tf.shape(out)[0], -1))
        vals = tf.reduce_mean(vals, axis=1)
        return vals if per_sample else tf.reduce_mean(vals)
    picked = tf.gather(out, target, axis=1, batch_dims=1)
    if kind == "score":
        vals = picked
    elif ctx.probabilities:
        vals = -tf.math.log(tf.clip_by_value(picked, 1e-12, 1.0))
    else:
        vals = tf.reduce_logsumexp(out, axis=1) - picked
    return vals if per_sample else tf.reduce_mean(vals)


#: Samples per batch of per-sample gradients (``tape.jacobian`` memory grows with it).
JACOBIAN_CHUNK = 16


def _gradients(ctx, values=None, kind="score", per_sample=False):
    """One batched GradientTape pass: ``(f, [df/dv for each trainable variable])`` at
    ``values``; with ``per_sample`` the gradients carry a leading sample axis (computed
    :data:`JACOBIAN_CHUNK` samples at a time)."""
    import tensorflow as tf

    values = [tf.convert_to_tensor(v) for v in (ctx.values if values is None else values)]
    if ctx.compiled is None:
        ctx.compiled = {}
    key = (kind, per_sample)
    if key not in ctx.compiled:
        def run(values, x, target):
            with tf.GradientTape() as tape:
                tape.watch(values)
                f = _objective(ctx, _evaluate(ctx, values, x=x), kind, per_sample, target)
            return f, (tape.jacobian(f, values, experimental_use_pfor=True) if per_sample
                       else tape.gradient(f, values))
        ctx.compiled[key] = tf.function(run, reduce_retracing=True)
    n = len(ctx.target)
    step = JACOBIAN_CHUNK if per_sample else n
    parts = [ctx.compiled[key](values, ctx.x[i:i + step], tf.constant(ctx.target[i:i + step]))
             for i in range(0, n, step)]
    shape = (lambda v: (n,) + tuple(v.shape)) if per_sample else (lambda v: tuple(v.shape))
    f = np.concatenate([np.atleast_1d(p[0].numpy()) for p in parts]) if per_sample else parts[0][0].numpy()
    grads = []
    for j, v in enumerate(values):
        if parts[0][1][j] is None:
            grads.append(np.zeros(shape(v), np.float32))
        else:
            grads.append(np.concatenate([p[1][j].numpy() for p in parts]) if per_sample else parts[0][1][j].numpy())
    return f, grads


def _per_layer(ctx, arrays):
    """``{layer: its variables' arrays flattened and concatenated}``."""
    return {name: np.concatenate([np.ravel(arrays[i]) for i in idx]) for name, idx in ctx.index.items()}


def _weights(ctx):
    return [v.numpy() for v in ctx.values]


def _units(ctx):
    """Number of units (last axis of the output) of each ranked layer."""
    return {layer.name: int(layer.output.shape[-1]) for layer in ctx.layers}


def _scaled(ctx, name, lam):
    """Variables with layer ``name``'s weights multiplied by ``lam``."""
    values = list(ctx.values)
    for i in ctx.index[name]:
        values[i] = values[i] * lam
    return values


def _path_gradients(ctx, name, steps):
    """``f`` and layer ``name``'s gradients at ``k/steps * w_l``, k = 0..steps."""
    fs, gs = [], []
    for k in range(steps + 1):
        f, g = _gradients(ctx, _scaled(ctx, name, k / steps))
        fs.append(f)
        gs.append(np.concatenate([np.ravel(g[i]) for i in ctx.index[name]]))
    ctx.layer_done()
    return np.array(fs), gs


def ranking_steps(model, criterion, criteria=None):
    """How many layer scorings :func:`layer_importance` reports to ``progress`` (the layers,
    times the members of ``"combined"``)."""
    members = len(_members(criteria)) if criterion == "combined" else 1
    return len(ranked_layers(model)) * members


def _check_steps(name, value):
    return check_param(value, name, "layer_importance", Interval(int, 1))


# --------------------------------------------------------------------------- criteria
def _criterion_slice(ctx, **slicer_options):
    """NNSlicer slice counts: per weight, how many samples' slices hold that synapse
    (``Slicer.slice(x, aggregate="abs")``). Scores **weights** (synapses): every kernel of the
    layer (attention's four projections, a recurrent layer's two kernels, summed over time
    steps; a model inside the model, every kernel of its layers); a weighted layer that the engine
    lifts without synapse counts gets its neuron counts."""
    from nnslicer import Slicer

    x = ctx.x.numpy()
    slicer = Slicer(ctx.model, **slicer_options).fit(x)
    sl = slicer.slice(x, target=None, aggregate="abs")
    graph = slicer.graph_
    out = {}
    for layer in ctx.layers:
        counts = [sl.synapse_counts[name] for name in graph.weighted_ops  # the layer's calls (a nested model's ops)
                  if graph[name].call.split("#")[0] == layer.name]
        if not counts:
            counts = [sl.neuron_counts.get(layer.name, np.zeros(1))]
        out[layer.name] = np.concatenate([np.ravel(c) for c in counts]).astype(np.float64)
    return out


def _criterion_weight(ctx):
    """The weights themselves, ``w`` (SAFER's W). Scores **weights**; needs no data."""
    return _per_layer(ctx, _weights(ctx))


def _criterion_gradient(ctx):
    """``df/dw`` over the calibration set (SAFER's gradient). Scores **weights**."""
    return _per_layer(ctx, _gradients(ctx)[1])


def _criterion_weight_x_gradient(ctx):
    """``w * df/dw`` (SAFER's W x gradient). Scores **weights**."""
    g = _gradients(ctx)[1]
    return _per_layer(ctx, [w * gi for w, gi in zip(_weights(ctx), g)])


def _criterion_gradcam_pp(ctx):
    """GradCAM++ adapted to weights (SAFER eq. 7): ``g^2 / (2 g^2 + w g^3)``, 0 where the
    denominator is 0. Scores **weights**."""
    g = _gradients(ctx)[1]
    out = []
    for w, gi in zip(_weights(ctx), g):
        g2 = gi.astype(np.float64) ** 2
        den = 2 * g2 + w * g2 * gi
        out.append(np.divide(g2, den, out=np.zeros_like(g2), where=den != 0))
    return _per_layer(ctx, out)


def _criterion_integrated_gradients(ctx, steps=16):
    """Integrated gradients along the path that scales one layer's weights from 0 to ``w_l``
    (right Riemann sum of ``steps`` points): ``w * mean_k df/dw(k/steps * w_l)``. Scores
    **weights**; costs ``steps`` gradient passes per layer."""
    steps = _check_steps("steps", steps)
    w = _per_layer(ctx, _weights(ctx))
    return {name: w[name] * np.mean(_path_gradients(ctx, name, steps)[1][1:], axis=0) for name in ctx.index}


def _criterion_idgi(ctx, steps=16):
    """IDGI (Yang et al. 2023) on the integrated-gradients path of each layer: each step's change
    of ``f`` is shared among weights by ``g_k^2 / |g_k|^2``. Scores **weights**."""
    steps = _check_steps("steps", steps)
    out = {}
    for name in ctx.index:
        fs, gs = _path_gradients(ctx, name, steps)
        attr = np.zeros_like(gs[0], dtype=np.float64)
        for k in range(1, steps + 1):
            norm = float(np.sum(np.square(gs[k], dtype=np.float64)))
            if norm > 0:
                attr += gs[k] ** 2 / norm * (fs[k] - fs[k - 1])
        out[name] = attr
    return out


#: |df/dw| closer than this share of the largest count as tied in guided IG (float32 gradients
#: differ by ~1e-7 of the largest between processors).
GUIDED_IG_TIE = 1e-5


def _criterion_guided_ig(ctx, steps=16):
    """Guided integrated gradients (Kapishnikov et al. 2021) from 0 to ``w_l``: at each of
    ``steps`` steps, the weights with the smallest ``|df/dw|`` move first (fully, the last one
    partly) until 1/steps of the l1 distance is covered; attribution ``sum g * delta``.
    Weights whose ``|g|`` are within :data:`GUIDED_IG_TIE` of the largest are tied (a binary
    softmax's output kernel has exact pairs, which float rounding would order differently on
    another processor) and move together, sharing what is left of the step in proportion to
    their distance. Scores **weights**."""
    steps = _check_steps("steps", steps)
    w = _per_layer(ctx, _weights(ctx))
    out = {}
    for name, idx in ctx.index.items():
        target = w[name].astype(np.float64)
        cur = np.zeros_like(target)
        attr = np.zeros_like(target)
        budget = np.sum(np.abs(target)) / steps
        shapes = [tuple(ctx.values[i].shape) for i in idx]
        for _ in range(steps):
            values = list(ctx.values)
            pos = 0
            for i, shape in zip(idx, shapes):
                n = int(np.prod(shape))
                values[i] = np.asarray(cur[pos:pos + n], np.float32).reshape(shape)
                pos += n
            grads = _gradients(ctx, values)[1]
            g = np.concatenate([np.ravel(grads[i]) for i in idx])
            order = np.argsort(np.abs(g), kind="stable")
            gap = (target - cur)[order]
            tied = np.diff(np.abs(g[order])) <= GUIDED_IG_TIE * np.max(np.abs(g), initial=0.0)
            group = np.concatenate([[0], np.cumsum(~tied)])  # sorted weights -> their tie group
            size = np.bincount(group, weights=np.abs(gap))  # each group's distance
            before = np.cumsum(size) - size  # distance used before each group
            share = np.clip((budget - before) / np.where(size == 0, 1.0, size), 0.0, 1.0)
            move = np.zeros_like(cur)
            move[order] = gap * share[group]
            cur += move
            attr += g * move
        out[name] = attr
        ctx.layer_done()
    return out


def _noisy_gradients(ctx, samples, noise, seed):
    """Gradients at ``w + N(0, (noise * (max w - min w))^2)`` for ``samples`` draws."""
    samples = _check_steps("samples", samples)
    if not isinstance(noise, numbers.Real) or not noise > 0:
        raise InvalidParameterError(f"The 'noise' parameter of layer_importance must be a positive "
                                    f"float. Got {noise!r} instead.")
    rng = np.random.default_rng(seed)
    w = _weights(ctx)
    draws = []
    for _ in range(samples):
        values = [wi + rng.normal(0.0, noise * float(np.ptp(wi)) if wi.size else 0.0, wi.shape).astype(wi.dtype)
                  for wi in w]
        draws.append(_per_layer(ctx, _gradients(ctx, values)[1]))
    return {name: np.stack([d[name] for d in draws]) for name in ctx.index}


def _criterion_smoothgrad(ctx, samples=16, noise=0.1):
    """SmoothGrad (Smilkov et al. 2017) on weights: mean of ``df/dw`` under Gaussian noise of
    std ``noise * (max w - min w)`` on every weight. Scores **weights**."""
    return {k: v.mean(0) for k, v in _noisy_gradients(ctx, samples, noise, ctx.seed).items()}


def _criterion_vargrad(ctx, samples=16, noise=0.1):
    """VarGrad (Adebayo et al. 2018): variance of ``df/dw`` under the same noise as
    ``smoothgrad``. Scores **weights**."""
    return {k: v.var(0) for k, v in _noisy_gradients(ctx, samples, noise, ctx.seed).items()}


def _mask_hook(masks, rows):
    """A hook multiplying each ranked layer's output by its per-row unit mask."""
    import tensorflow as tf

    def hook(name, out):
        m = masks.get(name)
        if m is None:
            return out
        shape = (rows,) + (1,) * (len(out.shape) - 2) + (m.shape[-1],)
        return out * tf.constant(m.reshape(shape), dtype=out.dtype)
    return hook


def _masked_scores(ctx, masks, x_rows, repeat):
    """Per-sample target scores when the calibration set is repeated ``repeat`` times and
    layer outputs are multiplied by ``masks`` (rows = repeat * samples)."""
    import tensorflow as tf

    n = len(ctx.target)
    x = tf.repeat(x_rows[None], repeat, axis=0)
    x = tf.reshape(x, (repeat * n,) + tuple(x_rows.shape[1:]))
    out = _evaluate(ctx, hook=_mask_hook(masks, repeat * n), x=x)
    target = np.tile(ctx.target, repeat)
    return _objective(ctx, out, "score", per_sample=True, target=target).numpy().reshape(repeat, n)


def hsic_scores(masks, outputs):
    """HSIC between each unit's keep/drop indicator and the outputs (Novello et al. 2022):
    ``tr(K_i H L H) / (D - 1)^2`` with ``K_i[a, b] = [m_ai == m_bi]`` and ``L`` a Gaussian
    kernel of the output vectors, bandwidth the median distance.

    Parameters
    ----------
    masks : array (D, units) of 0/1
    outputs : array (D, n)

    Returns
    -------
    ndarray (units,)
    """
    masks = np.asarray(masks, np.float64)
    y = np.asarray(outputs, np.float64).reshape(len(masks), -1)
    d = len(masks)
    dist2 = np.sum((y[:, None, :] - y[None, :, :]) ** 2, axis=-1)
    off = dist2[~np.eye(d, dtype=bool)]
    sigma2 = float(np.median(off)) if off.size and np.median(off) > 0 else 1.0
    lk = np.exp(-dist2 / (2 * sigma2))
    h = np.eye(d) - 1.0 / d
    lc = h @ lk @ h
    m, n = masks, 1.0 - masks
    return (np.einsum("ai,ab,bi->i", m, lc, m) + np.einsum("ai,ab,bi->i", n, lc, n)) / (d - 1) ** 2


def _criterion_hsic(ctx, masks=64, keep=0.8):
    """HSIC attribution (Novello et al. 2022) adapted as SAFER does, by grouping the weights of
    each unit: ``masks`` random draws keep every unit of every ranked layer with probability
    ``keep`` (dropping a unit = zeroing the weights that produce it); a unit's score is the HSIC
    between its keep/drop indicator and the per-sample outputs. Scores **weights** (grouped by
    unit); costs one forward pass of ``masks * len(x)`` rows."""
    d = _check_steps("masks", masks)
    if not isinstance(keep, numbers.Real) or not 0 < keep < 1:
        raise InvalidParameterError(f"The 'keep' parameter of layer_importance must be a float in "
                                    f"(0, 1). Got {keep!r} instead.")
    rng = np.random.default_rng(ctx.seed)
    units = _units(ctx)
    draws = {name: (rng.random((d, u)) < keep).astype(np.float32) for name, u in units.items()}
    n = len(ctx.target)
    rows = {name: np.repeat(m, n, axis=0) for name, m in draws.items()}
    y = _masked_scores(ctx, rows, ctx.x, d)
    return {name: hsic_scores(m, y) for name, m in draws.items()}


def _criterion_fit(ctx, bits=8, samples=None):
    """FIT (Zandonati et al.): empirical Fisher ``E_x[(dL/dw)^2]`` (per-sample cross-entropy
    gradients, on the first ``samples`` calibration samples, default all) times the noise of
    uniform ``bits``-bit quantization of the layer's range, ``Delta^2 / 12``. Scores
    **weights**."""
    bits = _check_steps("bits", bits)
    if samples is not None:
        ctx = _subset(ctx, _check_steps("samples", samples))
    _, g = _gradients(ctx, kind="loss", per_sample=True)
    out = []
    for w, gi in zip(_weights(ctx), g):
        delta = float(np.ptp(w)) / (2 ** bits - 1) if w.size else 0.0
        out.append(np.mean(gi.astype(np.float64) ** 2, axis=0) * delta ** 2 / 12)
    return _per_layer(ctx, out)


def _subset(ctx, samples):
    """The context restricted to the first ``samples`` calibration samples."""
    return Context(**{**ctx.__dict__, "x": ctx.x[:samples], "target": ctx.target[:samples],
                       "output": ctx.output[:samples], "compiled": None})


def _permutations(units, count, rng):
    """``count`` random orders of ``units`` units; every order when there are at most
    ``count`` of them (then the estimate is the exact Shapley value)."""
    if math.factorial(units) <= count:
        return [np.array(p) for p in itertools.permutations(range(units))]
    return [rng.permutation(units) for _ in range(count)]


#: Rows (coalitions x samples) of one restarted forward pass, and samples recorded at a time
#: (:func:`coalition_values`).
RESTART_ROWS, RESTART_SAMPLES = 4096, 512


def _recorded(ctx, x):
    """Every operation's output, in the order the functional graph calls them, on ``x``."""
    outputs = []

    def wrap(op):
        def call(*args, **kwargs):
            outputs.append(op(*args, **kwargs))
            return outputs[-1]
        return call

    run_with_hooks(ctx.graph, [x], wrap)
    return outputs


def _restarted(ctx, name, recorded, masks, x):
    """The model's output when layer ``name``'s output, recorded on ``x``, is multiplied by each
    of ``masks`` (rows: coalition-major, ``len(masks) * len(x)``): every operation that does not
    depend on that layer returns its recorded output, and only those after it run."""
    import tensorflow as tf

    n, copies = len(x), len(masks)
    tainted, calls, alive = set(), iter(recorded), []  # alive: no tainted id is reused while it runs

    def tiled(t):
        if id(t) in tainted or not hasattr(t, "shape") or not len(t.shape) or t.shape[0] != n:
            return t
        return tf.tile(t, [copies] + [1] * (len(t.shape) - 1))

    def wrap(op):
        def call(*args, **kwargs):
            cached = next(calls)
            if op.name == name:
                m = masks.reshape((copies, 1) + (1,) * (len(cached.shape) - 2) + (masks.shape[-1],))
                out = tf.reshape(cached[None] * tf.constant(m, cached.dtype), (copies * n,) + tuple(cached.shape[1:]))
            elif any(id(t) in tainted for t in tf.nest.flatten((args, kwargs))):
                args, kwargs = tf.nest.map_structure(tiled, (args, kwargs))
                out = op(*args, **kwargs)
            else:
                return cached
            alive.append(out)
            tainted.update(id(t) for t in tf.nest.flatten(out))
            return out
        return call

    return tf.nest.flatten(run_with_hooks(ctx.graph, [x], wrap))[0]


def coalition_values(ctx, name, masks, kind="score"):
    """Per-sample ``f`` (``kind="score"``) or loss (``"loss"``) when the output of layer ``name``
    is multiplied by each row of ``masks`` (``(coalitions, units)``, units on the output's last
    axis). The forward restarts at the layer's output (Ancona et al. 2020, section 3.2): what
    comes before it runs once (:data:`RESTART_SAMPLES` samples at a time), and only the
    operations after it run for the coalitions, :data:`RESTART_ROWS` rows at a time. Returns
    ``(coalitions, samples)``."""
    masks = np.asarray(masks, np.float32)
    values = np.empty((len(masks), len(ctx.target)))
    for a in range(0, len(ctx.target), RESTART_SAMPLES):
        x, target = ctx.x[a:a + RESTART_SAMPLES], ctx.target[a:a + RESTART_SAMPLES]
        n = len(target)
        recorded = _recorded(ctx, x)
        step = max(1, RESTART_ROWS // n)
        for i in range(0, len(masks), step):
            part = masks[i:i + step]
            out = _restarted(ctx, name, recorded, part, x)
            rows = np.tile(target, (len(part),) + (1,) * (np.ndim(target) - 1))
            values[i:i + len(part), a:a + n] = _objective(ctx, out, kind, per_sample=True,
                                                          target=rows).numpy().reshape(len(part), n)
    return values


def order_prefixes(order):
    """``(units + 1, units)`` masks: row ``k`` keeps the first ``k`` units of ``order``.

    >>> order_prefixes([2, 0, 1]).astype(int).tolist()
    [[0, 0, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1]]
    """
    order = np.asarray(order)
    rank = np.empty(len(order), int)
    rank[order] = np.arange(len(order))
    return (rank[None, :] < np.arange(len(order) + 1)[:, None]).astype(np.float32)


def shapley_contributions(ctx, name, units, permutations, rng, kind="score"):
    """Marginal contributions of each unit of layer ``name`` along ``permutations`` sampled
    orders (all orders when there are at most that many): ``(orders, samples, units)``. The
    game's value of a coalition is ``f`` (``kind="score"``) or minus the loss (``"loss"``) with
    only the coalition's units kept (the others' outputs zeroed), per sample; each order adds
    the units one at a time. Averaged over orders, a unit's contributions are its Shapley value
    per sample (exact with every order), and they sum to the value of all units minus that of
    none."""
    orders = _permutations(units, permutations, rng)
    prefixes = np.concatenate([order_prefixes(perm) for perm in orders])
    v = coalition_values(ctx, name, prefixes, kind).reshape(len(orders), units + 1, -1)
    if kind == "loss":
        v = -v
    out = np.empty((len(orders), v.shape[-1], units))
    for j, perm in enumerate(orders):
        out[j][:, perm] = np.diff(v[j], axis=0).T
    return out


def _criterion_shapley(ctx, permutations=8, std=2.0, samples=64):
    """Shapley values of each unit of a layer (Ancona et al. 2020), one layer at a time: the
    game's value is ``f`` with only a coalition of the layer's units kept (the others' outputs
    zeroed; :func:`shapley_contributions`); ``permutations`` sampled orders (all orders when the
    layer has few units) give marginal contributions to ``f`` averaged over the samples,
    aggregated over the orders as ``mean + std * standard deviation``. Scores **activations**
    (units); uses the first ``samples`` calibration samples."""
    permutations = _check_steps("permutations", permutations)
    samples = _check_steps("samples", samples)
    rng = np.random.default_rng(ctx.seed)
    sub = _subset(ctx, samples)
    out = {}
    for name, u in _units(ctx).items():
        contrib = shapley_contributions(sub, name, u, permutations, rng).mean(1)
        out[name] = contrib.mean(0) + std * contrib.std(0)
        ctx.layer_done()
    return out


def _criterion_taylor(ctx):
    """First-order Taylor importance (Molchanov et al. 2019): ``(w * dL/dw)^2`` with the
    cross-entropy gradient over the calibration set. Scores **weights**."""
    g = _gradients(ctx, kind="loss")[1]
    return _per_layer(ctx, [(w.astype(np.float64) * gi) ** 2 for w, gi in zip(_weights(ctx), g)])


def _criterion_apoz(ctx):
    """APoZ (Hu et al. 2016): ``1 -`` the share of samples (and positions) where a unit's
    output is <= 0, so that rarely active units score low. Scores **activations**."""
    seen = {}

    def hook(name, out):
        seen[name] = out
        return out

    _evaluate(ctx, hook=hook)
    return {name: 1.0 - np.mean(np.reshape(np.asarray(seen[name]) <= 0, (-1, u)), axis=0)
            for name, u in _units(ctx).items()}


#: phi: name -> function(context, **options) -> {layer: fine-grained scores}.
CRITERIA = {
    "slice": _criterion_slice, "weight": _criterion_weight, "gradient": _criterion_gradient,
    "weight_x_gradient": _criterion_weight_x_gradient, "gradcam_pp": _criterion_gradcam_pp,
    "integrated_gradients": _criterion_integrated_gradients, "guided_ig": _criterion_guided_ig, "idgi": _criterion_idgi,
    "smoothgrad": _criterion_smoothgrad, "vargrad": _criterion_vargrad, "hsic": _criterion_hsic, "fit": _criterion_fit,
    "shapley": _criterion_shapley, "taylor": _criterion_taylor, "apoz": _criterion_apoz,
}

def register_criterion(name, criterion, replace=False):
    """Add ``criterion(context, **options) -> {layer name: fine-grained scores}`` to
    :data:`CRITERIA` under ``name``: :func:`layer_importance`, :func:`criterion_scores`, the
    ``combined`` criterion then take it (in this process). ``context`` is a
    :class:`Context`; a layer's scores are an array (one score a weight or a unit), reduced to
    the layer's score by the reduction.

    >>> import numpy as np
    >>> register_criterion("weight_count", lambda ctx: {l.name: np.full(l.count_params(), 1.0)
    ...                                                 for l in ctx.layers})
    >>> "weight_count" in CRITERIA
    True
    >>> del CRITERIA["weight_count"]
    """
    if not isinstance(name, str) or not name or "/" in name or name == "combined":
        raise InvalidParameterError(f"A criterion's name is a non-empty string without '/', not 'combined'. "
                                    f"Got {name!r} instead.")
    if not callable(criterion):
        raise InvalidParameterError(f"A criterion is a function(context, **options). Got {criterion!r} instead.")
    if name in CRITERIA and not replace:
        raise InvalidParameterError(f"A criterion named {name!r} is already registered (replace=True to replace it).")
    CRITERIA[name] = criterion


#: The members of ``criterion="combined"`` unless ``criteria=`` says otherwise: chosen greedily
#: (by mean Spearman correlation) on half of the models of ``benchmarks/layer_ranking.py`` and
#: checked on the other half (see its results).
DEFAULT_COMBINED = ("fit/l2", "taylor/l1", "vargrad/l1", "slice/p50")


# --------------------------------------------------------------------------- public API
def _members(criteria):
    members = list(DEFAULT_COMBINED if criteria is None else
                   ([criteria] if isinstance(criteria, str) else criteria))
    if not members:
        raise InvalidParameterError("The 'criteria' parameter of layer_importance must list at least "
                                    f"one criterion. Got {criteria!r} instead.")
    return members


def _member(spec, reduction, q):
    """``"criterion"``, ``"criterion/reduction"`` or ``"criterion/pQ"`` (percentile Q) ->
    (criterion, reduction, q)."""
    if not isinstance(spec, str):
        raise InvalidParameterError(f"The 'criteria' parameter of layer_importance must hold strings "
                                    f"'criterion' or 'criterion/reduction'. Got {spec!r} instead.")
    c, _, r = spec.partition("/")
    _check_choice("criteria", c, tuple(CRITERIA))
    if r[:1] == "p" and r[1:].replace(".", "", 1).isdigit():
        return c, "percentile", _check_q(float(r[1:]))
    if r:
        _check_choice("reduction", r, tuple(REDUCTIONS))
    return c, r or reduction, q


def _check_choice(name, value, options):
    return check_param(value, name, "layer_importance", Options(options))


def _check_q(q):
    return check_param(q, "q", "layer_importance", None, Interval(float, 0, 100))


def criterion_scores(model, x, criterion="slice", y=None, seed=0, progress=None, **options):
    """phi: the fine-grained scores of every ranked layer under one criterion.

    Parameters
    ----------
    model : keras.Model
        A functional or Sequential classifier (one input, outputs ``(batch, classes)``).
    x : array
        Calibration samples (SAFER: 256 unlabelled ones).
    criterion : str
        A key of :data:`CRITERIA` (not ``"combined"``, which is layer level).
    y : array of int, optional
        Labels; default: the model's predicted classes.
    seed : int
        Seed of the random draws (smoothgrad, vargrad, hsic, shapley).
    progress : callable, optional
        Called with the number of layers scored so far (after each layer for the criteria
        that score one layer at a time: shapley, integrated gradients, IDGI, guided IG).
    **options
        The criterion's own options (``steps``, ``samples``, ``noise``, ``masks``, ``keep``,
        ``bits``, ``permutations``, ``std``; for ``slice`` the Slicer's).

    Returns
    -------
    dict of str to ndarray
        Layer name -> 1-D array of scores, in model order.
    """
    _check_choice("criterion", criterion, tuple(CRITERIA))
    ctx = _context(model, x, y, seed)
    ctx.progress = progress
    try:
        scores = CRITERIA[criterion](ctx, **options)
        if progress is not None and ctx.done < len(ctx.layers):
            progress(len(ctx.layers))
        return scores
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise InvalidParameterError(f"Criterion {criterion!r} does not take these options: "
                                        f"{sorted(options)} ({exc}).") from None
        raise


def reduce_scores(scores, reduction="linf", q=None):
    """psi: one number per layer from fine-grained scores.

    >>> reduce_scores({"a": np.array([1.0, -3.0]), "b": np.array([2.0, 2.0])}, "l1")
    {'a': 4.0, 'b': 4.0}
    """
    _check_choice("reduction", reduction, tuple(REDUCTIONS))
    q = _check_q(q)
    fn = REDUCTIONS[reduction]
    return {name: (fn(np.asarray(s), q) if np.size(s) else 0.0) for name, s in scores.items()}


def _ordered(scores):
    """The dict sorted from the highest score down (ties keep model order)."""
    names = list(scores)
    order = sorted(range(len(names)), key=lambda i: (-scores[names[i]], i))
    return {names[i]: scores[names[i]] for i in order}


def combine(layer_scores):
    """Rank-average several criteria's layer scores: each layer gets its mean rank fraction in
    [0, 1] (1 = most important under every criterion; ties share their mean rank).

    >>> combine([{"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 5.0, "b": 4.0, "c": 6.0}])
    {'a': 0.25, 'b': 0.25, 'c': 1.0}
    """
    from scipy.stats import rankdata

    layer_scores = list(layer_scores)
    if not layer_scores:
        raise InvalidParameterError("combine needs at least one criterion's scores.")
    names = list(layer_scores[0])
    denom = max(len(names) - 1, 1)
    ranks = [(rankdata([s[k] for k in names]) - 1) / denom for s in layer_scores]
    mean = np.mean(ranks, axis=0)
    return {k: float(v) for k, v in zip(names, mean)}


def layer_importance(model, x, criterion="fit", reduction="linf", y=None, q=None, seed=0,
                     criteria=None, progress=None, **options):
    """Rank a model's layers (those with trainable weights) from most to least important.

    Parameters
    ----------
    model : keras.Model
        A functional or Sequential classifier (transformer blocks included).
    x : array
        Calibration samples.
    criterion : str, default "fit"
        ``"slice"``, ``"weight"``, ``"gradient"``, ``"weight_x_gradient"``, ``"gradcam_pp"``,
        ``"integrated_gradients"``, ``"guided_ig"``, ``"idgi"``, ``"smoothgrad"``,
        ``"vargrad"``, ``"hsic"``, ``"fit"``, ``"shapley"``, ``"taylor"``, ``"apoz"``, or
        ``"combined"`` (mean rank over ``criteria``, default :data:`DEFAULT_COMBINED`).
    reduction : {"mean", "percentile", "l1", "l2", "linf"}
        How a layer's fine-grained scores become one number (on absolute values).
    y : array of int, optional
        Labels; default: the model's predicted classes.
    q : float in [0, 100], optional
        The percentile of ``reduction="percentile"`` (default 90).
    seed : int
        Seed of the random draws.
    criteria : sequence of str, optional
        Members of ``"combined"``: criterion names, each optionally with its own reduction
        (``"fit/l1"``, ``"slice/p99"`` for the 99th percentile); the others use ``reduction``. A member that cannot score the model
        (``slice`` on a model nnslicer cannot lift) is left out with a warning.
    progress : callable, optional
        Called with the number of layers scored so far, over every member of ``"combined"``
        (:func:`ranking_steps` in all).
    **options
        The criterion's own options (see :func:`criterion_scores`).

    Returns
    -------
    dict of str to float
        Layer name -> score, ordered from the most important layer down.

    Raises
    ------
    InvalidParameterError
        Unknown criterion or reduction, bad q or options.
    InvalidInputError
        Unusable model, x or y.
    UnsupportedLayerError
        ``criterion="slice"`` on a model nnslicer cannot lift.
    """
    _check_choice("criterion", criterion, tuple(CRITERIA) + ("combined",))
    _check_choice("reduction", reduction, tuple(REDUCTIONS))
    q = _check_q(q)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InvalidParameterError(f"The 'seed' parameter of layer_importance must be an int. Got {seed!r} instead.")
    if criterion == "combined":
        if options:
            raise InvalidParameterError(f"Criterion options ({', '.join(sorted(options))}) go with one criterion, "
                                        "not with 'combined' (its members use their defaults).")
        members = [_member(m, reduction, q) for m in _members(criteria)]
        scores = []
        layers = len(ranked_layers(model))
        for i, (c, r, mq) in enumerate(members):
            done = None if progress is None else (lambda n, base=i * layers: progress(base + n))
            try:
                scores.append(reduce_scores(criterion_scores(model, x, c, y, seed, progress=done), r, mq))
            except UnsupportedLayerError as exc:
                if len(members) == 1:
                    raise
                log.warning("combined: %r left out (%s)", c, str(exc).split(":")[0])
        if not scores:
            raise InvalidInputError("combined: no member criterion could score this model.")
        return _ordered(combine(scores))
    if criteria is not None:
        raise InvalidParameterError("The 'criteria' parameter of layer_importance goes with "
                                    "criterion='combined' only.")
    if q is not None and reduction != "percentile":
        raise InvalidParameterError(f"The 'q' parameter of layer_importance goes with reduction='percentile'. "
                                    f"Got reduction={reduction!r}.")
    return _ordered(reduce_scores(criterion_scores(model, x, criterion, y, seed, progress=progress, **options),
                                  reduction, q))


# --------------------------------------------------------------------------- ranking files
RANKING_FORMAT = "nnslicer-layer-ranking"


def save_ranking(ranking, path, model=None, **meta):
    """Write a ranking (layer -> score, most important first) to ``path`` as JSON, atomically;
    ``model`` (its name is kept) and ``meta`` (e.g. ``criterion="fit"``) describe where it came
    from. :func:`load_ranking` reads it back, in the same order."""
    import json

    from nnslicer.io import atomic_path

    layers = [{"layer": str(name), "score": float(score)} for name, score in ranking.items()]
    if not all(math.isfinite(entry["score"]) for entry in layers):
        raise InvalidInputError("The ranking holds NaN or infinite scores: it cannot be saved.")
    data = {"format": RANKING_FORMAT, "version": 1, "model": getattr(model, "name", None), **meta, "layers": layers}
    with atomic_path(path, ".json") as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    return path


def load_ranking(path, model=None):
    """Read a ranking written by :func:`save_ranking` (``nnslicer layers -o``); returns
    ``(ranking, meta)``. With ``model``, refuse a ranking that names layers it does not have."""
    import json

    from nnslicer.io import check_readable

    path = check_readable(path, "layer ranking (.json)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{path!r} is not a JSON layer ranking ({exc}).") from None
    if not isinstance(data, dict) or data.get("format") != RANKING_FORMAT:
        raise FileFormatError(f"{path!r} is not a layer ranking written by nnslicer layers -o (or save_ranking).")
    layers = data.get("layers")
    if not isinstance(layers, list) or not layers or not all(
            isinstance(e, dict) and isinstance(e.get("layer"), str) and isinstance(e.get("score"), (int, float))
            and not isinstance(e.get("score"), bool) and math.isfinite(e["score"]) for e in layers):
        raise FileFormatError(f"{path!r} is a damaged layer ranking: 'layers' must be a list of "
                              "{'layer': name, 'score': finite number}.")
    ranking = {e["layer"]: float(e["score"]) for e in layers}
    if len(ranking) != len(layers):
        raise FileFormatError(f"{path!r} is a damaged layer ranking: a layer appears twice.")
    if model is not None:
        unknown = sorted(set(ranking) - {layer.name for layer in model.layers})
        if unknown:
            raise InvalidInputError(f"{path!r} ranks layers that model {model.name!r} does not have: {unknown} "
                                    f"(a ranking of another model?).")
    return ranking, {k: v for k, v in data.items() if k not in ("format", "layers")}
