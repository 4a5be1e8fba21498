"""Selective model protection (NNSlicer, SPEC.md section 5): hide what the target classes need.

:func:`protect` zeroes, in every weighted layer (or across the model: ``scope="model"``), the
fraction ``fraction`` of synapses with the *largest* score for the target classes (NNSlicer:
aggregated ``|count|`` over slices of their samples; baselines: ``|w|``, random, EffectivePath) and hands the hidden values back as a
:class:`ProtectionSecret` (positions and original values, to keep somewhere safe, e.g. a
trusted execution environment). :func:`restore` puts them back bitwise, and refuses a secret
made for another model. :func:`steal` is the paper's attacker: it holds the published
(protected) weights and retrains only the hidden positions on data labelled by the victim
(SGD, lr 5e-3, momentum 0.5, batch 256, 5 epochs).

Examples
--------
>>> import numpy as np, keras, nnslicer
>>> from analyses.protection import protect, restore
>>> keras.utils.set_random_seed(0)
>>> model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="h"),
...                           keras.layers.Dense(3, activation="softmax", name="out")])
>>> x = np.random.default_rng(0).normal(size=(60, 6)).astype("float32")
>>> y = model.predict(x, verbose=0).argmax(1)
>>> protected, secret = protect(model, None, x, y, classes=[0], method="magnitude")
>>> secret.n_hidden
36
>>> back = restore(protected, secret)
>>> all(np.array_equal(a, b) for a, b in zip(back.get_weights(), model.get_weights()))
True
"""

from __future__ import annotations

import hashlib
import logging
import numbers

import numpy as np

from nnslicer import check_labels
from nnslicer.errors import FileFormatError, InvalidParameterError, UnsupportedLayerError
from nnslicer.io import is_int, same_arrays
from nnslicer.validation import Interval, Options, check_param

from .synapse_scores import check_classes, rank_mask, synapse_scores

__all__ = ["ProtectionSecret", "protect", "restore", "steal", "weights_digest", "ATTACKERS"]

log = logging.getLogger(__name__)

PROTECT_METHODS = ("nnslicer", "magnitude", "random", "effective_path")
SCOPES = ("layer", "model")


def weights_digest(model):
    """SHA-256 of every layer's name and weights (bytes, dtype, shape): a model's identity."""
    h = hashlib.sha256()
    for layer in model.layers:
        for w in layer.get_weights():
            h.update(layer.name.encode())
            h.update(str(w.dtype).encode() + str(w.shape).encode())
            h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


class ProtectionSecret:
    """The hidden weights of a protected model: flat positions and original values per weight.

    Attributes
    ----------
    indices, values : dict of str to ndarray
        ``"layer/kernel"`` -> flat positions (int64) and their original values.
    shapes : dict of str to tuple
        Shape of each of those weights.
    protected_digest, original_digest : str
        :func:`weights_digest` of the protected and of the original model.
    meta : dict
        Model name, method, classes, fraction.
    """

    def __init__(self, indices, values, shapes, protected_digest, original_digest, meta=None):
        self.indices = {k: np.asarray(v, dtype=np.int64) for k, v in indices.items()}
        self.values = {k: np.asarray(v) for k, v in values.items()}
        self.shapes = {k: tuple(int(d) for d in v) for k, v in shapes.items()}
        self.protected_digest = protected_digest
        self.original_digest = original_digest
        self.meta = dict(meta or {})

    def __eq__(self, other):
        if not isinstance(other, ProtectionSecret):
            return NotImplemented
        return (self.shapes, self.protected_digest, self.original_digest, self.meta) == \
            (other.shapes, other.protected_digest, other.original_digest, other.meta) \
            and same_arrays(self.indices, other.indices) and same_arrays(self.values, other.values)

    __hash__ = None

    @property
    def n_hidden(self):
        return int(sum(v.size for v in self.indices.values()))

    def __repr__(self):
        total = sum(int(np.prod(s)) for s in self.shapes.values())
        return (f"ProtectionSecret(model={self.meta.get('model')!r}, method={self.meta.get('method')!r}, "
                f"classes={tuple(self.meta.get('classes', ()))}, hidden={self.n_hidden:,}/{total:,} "
                f"in {len(self.indices)} weights)")

    def masks(self):
        """``"layer/kernel"`` -> bool array, True at the hidden positions."""
        out = {}
        for k, idx in self.indices.items():
            m = np.zeros(int(np.prod(self.shapes[k])), dtype=bool)
            m[idx] = True
            out[k] = m.reshape(self.shapes[k])
        return out

    def save(self, path):
        """Write the secret to ``path`` (.npz, no pickle, readable by its owner only: mode 0600,
        also when it replaces a file); :meth:`load` reads it back exactly."""
        arrays = {}
        for k in self.indices:
            arrays[f"index/{k}"] = self.indices[k]
            arrays[f"value/{k}"] = self.values[k]
        meta = {"shapes": {k: list(v) for k, v in self.shapes.items()},
                "protected_digest": self.protected_digest, "original_digest": self.original_digest,
                "meta": self.meta}
        from nnslicer.io import save_archive

        return save_archive(path, "secret", meta, arrays, mode=0o600)  # hidden weights: the owner's only

    @classmethod
    def load(cls, path):
        """The secret saved at ``path``: equal to the one :meth:`save` wrote.

        Raises FileFormatError, naming the file and the problem, for anything :meth:`save` cannot
        have written, so that no damaged or edited secret reaches :func:`restore`: a header field
        missing, unknown or of the wrong type (``shapes``: ``"layer/kernel"`` -> a list of
        positive ints; the digests: strings; ``meta``: a dict whose ``model`` and ``method``,
        where present, are strings, ``classes`` distinct class indices, ``fraction`` a number in
        (0, 1) and ``scope`` "layer" or "model"), NaN or infinity anywhere in the header, arrays
        other than one ``index/`` and one ``value/`` array per weight, positions that are not
        distinct integers within the weight, values that are not finite floats, one per position,
        and (with a ``fraction``) a number of hidden positions other than the ``round(fraction
        * n)`` of each weight's ``n`` (scope "layer", the default) or of all of them (scope
        "model") that :func:`protect` hides. Whether the secret fits a model is for
        :func:`restore` to check (it compares the digests)."""
        from nnslicer.io import load_archive

        meta, arrays = load_archive(path, "secret")
        try:
            fields = _check_secret(meta, arrays)
        except FileFormatError as exc:
            raise FileFormatError(f"{path!r} is a damaged secret file: {exc}") from None
        return cls(*fields)


#: The fields of a secret file's header metadata.
_SECRET_FIELDS = ("shapes", "protected_digest", "original_digest", "meta")
#: The most positions a weight can have (a shape beyond it is damage, and would overflow int64).
_MAX_WEIGHT_SIZE = 2**62


def _check_secret_meta(info):
    """The secret's ``meta`` (model, method, classes, fraction, scope): a dict whose known keys,
    where present, hold what :func:`protect` writes; other keys are the owner's."""
    import reprlib

    if not isinstance(info, dict):
        raise FileFormatError(f"its 'meta' is a {type(info).__name__}, not a dict")

    def bad(key, what):
        raise FileFormatError(f"its meta {key!r} is {reprlib.repr(info[key])}, not {what}")

    for key in ("model", "method"):
        if key in info and not isinstance(info[key], str):
            bad(key, "a string")
    if "scope" in info and (not isinstance(info["scope"], str) or info["scope"] not in SCOPES):
        bad("scope", f"one of {', '.join(SCOPES)}")
    if "replace" in info and not isinstance(info["replace"], bool):
        bad("replace", "true or false")
    fraction = info.get("fraction")
    if "fraction" in info and (isinstance(fraction, bool) or not isinstance(fraction, numbers.Real)
                               or not 0 < fraction < 1):
        bad("fraction", "a number in (0, 1)")
    classes = info.get("classes")
    if "classes" in info and (not isinstance(classes, list) or not classes
                              or not all(is_int(c) and c >= 0 for c in classes) or len(set(classes)) != len(classes)):
        bad("classes", "a list of distinct class indices")
    return info


def _check_names(have, expected, what):
    """Refuse names ``have`` unless they are the ``expected`` ones, no more, no fewer."""
    import reprlib

    lacking, unknown = [n for n in expected if n not in have], sorted(set(have) - set(expected))
    wrong = [f"{how} {reprlib.repr(names)}" for how, names in (("lack", lacking), ("have unknown", unknown)) if names]
    if wrong:
        raise FileFormatError(f"its {what} {' and '.join(wrong)}")


def _check_secret(meta, arrays):
    """``(indices, values, shapes, protected_digest, original_digest, meta)`` of a secret file's
    header metadata and arrays, or FileFormatError saying what is wrong (see
    :meth:`ProtectionSecret.load`)."""
    import math
    import reprlib

    if not isinstance(meta, dict):
        raise FileFormatError(f"its header's metadata is a {type(meta).__name__}, not a dict")
    _check_names(meta, _SECRET_FIELDS, "header fields")
    for key in ("protected_digest", "original_digest"):  # restore compares them with the models'
        if not isinstance(meta[key], str):
            raise FileFormatError(f"its {key} is {reprlib.repr(meta[key])}, not a string")
    shapes = meta["shapes"]
    if not isinstance(shapes, dict):
        raise FileFormatError(f"its 'shapes' is a {type(shapes).__name__}, not a dict")
    sizes = {}
    for key, shape in shapes.items():
        layer, _, weight = key.rpartition("/")
        if not layer or weight != "kernel":
            raise FileFormatError(f"it hides weights of {key!r}, which is not a layer's kernel ('layer/kernel')")
        if not isinstance(shape, list) or not shape or not all(is_int(d) and d >= 1 for d in shape) \
                or math.prod(shape) > _MAX_WEIGHT_SIZE:
            raise FileFormatError(f"the shape of {key!r} is {reprlib.repr(shape)}, not a list of positive ints")
        sizes[key] = math.prod(shape)
    info = _check_secret_meta(meta["meta"])
    _check_names(arrays, [f"{part}/{key}" for key in shapes for part in ("index", "value")], "arrays")
    indices, values = {}, {}
    for key, shape in shapes.items():
        idx, val = arrays[f"index/{key}"], arrays[f"value/{key}"]
        if idx.dtype.kind not in "iu":
            raise FileFormatError(f"the positions of {key!r} are an array of {idx.dtype}, not of integers")
        if val.dtype.kind != "f":
            raise FileFormatError(f"the values of {key!r} are an array of {val.dtype}, not of floats")
        if idx.ndim != 1 or val.shape != idx.shape or (idx.size and (idx.min() < 0 or idx.max() >= sizes[key])):
            raise FileFormatError(f"the positions or values of {key!r} do not fit its shape {tuple(shape)} "
                                  f"(positions {idx.shape}, values {val.shape})")
        if np.unique(idx).size != idx.size:
            raise FileFormatError(f"the positions of {key!r} repeat")
        if not np.isfinite(val).all():
            raise FileFormatError(f"the values of {key!r} hold NaN or infinity")
        indices[key], values[key] = idx.astype(np.int64), val
    if "fraction" in info:  # protect hides round(fraction * n) of each layer's n, or of the model's
        groups = [[key] for key in shapes] if info.get("scope", "layer") == "layer" else [list(shapes)]
        drawn = info.get("replace", False)  # drawn with replacement: at most that many
        for keys in groups:
            hidden, total = sum(indices[k].size for k in keys), sum(sizes[k] for k in keys)
            want = int(round(info["fraction"] * total))
            if total and (hidden > want or (hidden != want and not drawn)):
                where = f"weight {keys[0]!r}" if len(keys) == 1 else "model"
                raise FileFormatError(f"it hides {hidden} of its {where}'s {total} weights, not the "
                                      f"{'at most ' if drawn else ''}{want} its fraction {info['fraction']} "
                                      "makes")
    return indices, values, shapes, meta["protected_digest"], meta["original_digest"], info


def _check_fraction(fraction):
    return check_param(fraction, "fraction", "protect", Interval(float, 0, 1, "neither"))


def protect(model, slicer, x, y, classes, fraction=0.5, method="nnslicer", max_per_class=None,
            slices=None, random_state=0, scope="layer", replace=False, progress=None):
    """Hide (zero) the synapses that matter most for ``classes``; returns ``(protected, secret)``.

    Parameters
    ----------
    model : keras.Model
        Never modified.
    slicer : nnslicer.Slicer or None
        Fitted on ``model``; needed by ``"nnslicer"`` and ``"effective_path"``.
    x, y : arrays
        Samples and integer labels; the samples of ``classes`` are sliced.
    classes : list of int
        Classes to protect; each must be an output of the model and have samples in ``y``.
    fraction : float in (0, 1), default 0.5
        Share of the synapses hidden: exactly ``round(fraction * n)`` of each weighted layer's
        ``n`` (``scope="layer"``) or of the whole model's (``scope="model"``).
    method : {"nnslicer", "magnitude", "random", "effective_path"}
    max_per_class : int, optional
        Slice at most this many samples per class.
    slices : dict of int to Slice, optional
        Precomputed per-class slices (:func:`analyses.synapse_scores.class_slices`).
    random_state : int, default 0
        Seed of ``method="random"``.
    scope : {"layer", "model"}, default "layer"
        Rank synapses within each layer, or across the model ("the 50% of parameters with the
        largest aggregated count", SPEC.md section 5). Across the model, scores are compared
        as they are: a convolution's count is summed over its output positions, so the early,
        large feature maps rank highest and their layers are hidden almost whole.
    replace : bool, default False
        With ``method="random"``: draw the ``round(fraction * n)`` positions with replacement,
        as the NNSlicer authors' random baseline did, so that fewer are hidden (about
        ``1 - exp(-fraction)`` of them: 39% at 0.5).
    progress : callable, optional
        Called with the number of samples sliced so far.

    Returns
    -------
    protected : keras.Model
        A copy of ``model`` with the hidden synapses set to zero.
    secret : ProtectionSecret
    """
    from nnslicer import lift

    from .pruning import rebuild

    fraction = _check_fraction(fraction)
    if scope not in SCOPES:
        raise InvalidParameterError(
            f"The 'scope' parameter of protect must be 'layer' or 'model'. Got {scope!r} instead.")
    if method not in PROTECT_METHODS:
        raise InvalidParameterError(
            f"The 'method' parameter of protect must be one of {', '.join(map(repr, PROTECT_METHODS))}. "
            f"Got {method!r} instead.")
    if replace and method != "random":
        raise InvalidParameterError(f"replace=True draws random positions with replacement: it goes with "
                                    f"method='random', not {method!r}.")
    graph = slicer.graph_ if slicer is not None and hasattr(slicer, "graph_") else lift(model)
    if y is not None:
        y = check_labels(y, len(y), graph.num_outputs)
    classes = check_classes(classes, y, graph.num_outputs, "protect")
    scores = synapse_scores(model, slicer, x, y, classes, method, random_state, max_per_class, slices, progress)
    weights = {layer.name: layer.get_weights() for layer in model.layers}
    _check_hideable(graph, weights)
    kernels = {name: weights[graph[name].layer][0] for name in graph.weighted_ops}
    masks = _drawn_masks(kernels, fraction, scope, random_state) if replace else \
        _hidden_masks(scores, kernels, fraction, scope)
    indices, values, shapes = {}, {}, {}
    for name, hidden in masks.items():
        layer = model.get_layer(graph[name].layer)
        kernel = kernels[name]
        key = f"{layer.name}/kernel"
        flat = np.flatnonzero(hidden.ravel())
        indices[key], values[key], shapes[key] = flat, kernel.ravel()[flat].copy(), kernel.shape
        new = kernel.copy()
        new.ravel()[flat] = 0
        weights[layer.name] = [new] + list(weights[layer.name][1:])
    protected = rebuild(model, weights)
    meta = {"model": model.name, "method": method, "classes": list(classes), "fraction": fraction, "scope": scope,
            "replace": bool(replace)}
    secret = ProtectionSecret(indices, values, shapes, weights_digest(protected), weights_digest(model), meta)
    return protected, secret


def _check_hideable(graph, weights):
    """Protection hides synapses in each weighted layer's first weight, its kernel: refuse the
    ops whose synapses are not that array (attention's four projections, a recurrent layer's
    recurrent kernel, the layers of a model inside the model), rather than hide the wrong weights."""
    owners = {}
    for name in graph.weighted_ops:
        owners.setdefault(graph[name].layer, []).append(name)
    bad = sorted({graph[name].layer_class for layer, names in owners.items() for name in names
                  if layer not in weights or len(names) > 1 or not weights[layer]
                  or not np.array_equal(weights[layer][0], graph[name].weights[graph[name].handler.synapse_weight])})
    if bad:
        raise UnsupportedLayerError(
            f"protect hides synapses in a layer's kernel; it cannot yet for {', '.join(bad)} (several kernels, "
            "or a layer inside a model inside the model).")


def _masks_by_scope(kernels, scope, choose):
    """Op name -> bool mask of the hidden synapses. ``choose(names)`` picks them in one group of
    kernels (each kernel alone with ``scope="layer"``, all of them with ``"model"``) as one flat
    mask over the group's positions, kernel after kernel."""
    masks = {}
    for names in ([[name] for name in kernels] if scope == "layer" else [list(kernels)]):
        flat = choose(names)
        ends = np.cumsum([kernels[n].size for n in names])
        masks.update({n: part.reshape(kernels[n].shape) for n, part in zip(names, np.split(flat, ends[:-1]))})
    return masks


def _hidden_masks(scores, kernels, fraction, scope):
    """The largest scores of each group (ties: larger ``|w|``)."""
    def largest(names):
        return rank_mask(np.concatenate([np.ravel(scores[n]) for n in names]), fraction, largest=True,
                         tie=np.concatenate([np.abs(kernels[n]).ravel() for n in names]))

    return _masks_by_scope(kernels, scope, largest)


def _drawn_masks(kernels, fraction, scope, seed):
    """``round(fraction * n)`` positions of each group's ``n``, drawn with replacement."""
    rng = np.random.default_rng(seed)

    def drawn(names):
        flat = np.zeros(sum(kernels[n].size for n in names), bool)
        flat[rng.integers(0, len(flat), int(round(fraction * len(flat))))] = True
        return flat

    return _masks_by_scope(kernels, scope, drawn)


def _secret_key(key):
    layer, _, weight = key.rpartition("/")
    return layer, weight


def restore(protected_model, secret):
    """A copy of ``protected_model`` with the hidden weights back: bitwise the original.

    Raises FileFormatError when ``secret`` was not made for this protected model."""
    from .pruning import rebuild

    if not isinstance(secret, ProtectionSecret):
        raise InvalidParameterError(f"secret must be a ProtectionSecret. Got {type(secret).__name__} instead.")
    if weights_digest(protected_model) != secret.protected_digest:
        raise FileFormatError(
            f"This secret was made for another model (protected model {secret.meta.get('model')!r}, "
            f"digest {secret.protected_digest[:12]}...), not for {protected_model.name!r} "
            f"(digest {weights_digest(protected_model)[:12]}...): it cannot restore it.")
    weights = {layer.name: [w.copy() for w in layer.get_weights()] for layer in protected_model.layers}
    for key, idx in secret.indices.items():
        layer, _ = _secret_key(key)
        kernel = (weights.get(layer) or [None])[0]
        if kernel is None or kernel.shape != tuple(secret.shapes[key]):
            raise FileFormatError(f"This secret hides weights of {key!r} shaped {tuple(secret.shapes[key])}, which "
                                  f"protected model {protected_model.name!r} does not have: it cannot restore it.")
        kernel.ravel()[idx] = secret.values[key]
    restored = rebuild(protected_model, weights)
    if weights_digest(restored) != secret.original_digest:  # pragma: no cover - a damaged secret
        raise FileFormatError("The restored weights do not match the original model's digest.")
    return restored


#: The attackers :func:`steal` plays.
ATTACKERS = ("full", "paper")


def _main_path_convolutions(model):
    """The convolutions of the main path: every convolution layer whose kernel is larger than
    1x1 (a ResNet's stem and the two convolutions of each block, not its 1x1 projection
    shortcuts)."""
    import keras

    convs = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
    return [layer for layer in model.layers
            if isinstance(layer, convs) and int(np.prod(getattr(layer, "kernel_size", (1,)))) > 1]


def steal(protected_model, secret, x_attacker, y_victim_labels, epochs=5, lr=5e-3, momentum=0.5,
          batch_size=256, seed=0, batchnorm="train", attacker="full", weight_decay=0.0, score=None, progress=None):
    """An attacker who retrains the protected model on victim-labelled data.

    ``attacker="full"`` (SPEC.md): the attacker knows the published weights and which positions
    are hidden (from ``secret`` or a mask), starts them at zero, and trains only them (SGD with
    momentum, cross-entropy); every other parameter stays bitwise as published.

    ``attacker="paper"`` (the NNSlicer authors' code, SPEC.md section 5): the attacker trains
    every weight of the main-path convolutions (each convolution with a kernel larger than
    1x1), hidden or not, and nothing else: the dense head, 1x1 projection shortcuts and batch
    norm's scale and shift stay as published, so a hidden head weight stays zero. The authors
    used ``epochs=10, weight_decay=5e-4`` and reported the best epoch (``score``). ``secret``
    is not read.

    By default the model trains in training mode, as an attacker's ``fit`` would: batch norm
    normalises with batch statistics and its moving statistics (not parameters) follow the
    attacker's data; ``batchnorm="frozen"`` keeps them too.

    Parameters
    ----------
    protected_model : keras.Model
        Never modified.
    secret : ProtectionSecret or dict of str to ndarray of bool
        The hidden positions (``"layer/kernel"`` -> mask); None for ``attacker="paper"``.
    x_attacker, y_victim_labels : arrays
        The attacker's samples and the labels the victim gave them.
    epochs, lr, momentum, batch_size, seed
        The training set-up (SPEC.md: 5 epochs; SGD lr 5e-3, momentum 0.5, batch 256).
    batchnorm : {"train", "frozen"}
        See above (:func:`analyses.masked_training.train_masked`).
    attacker : {"full", "paper"}
    weight_decay : float, default 0
        L2 penalty on the trained weights (the authors': 5e-4).
    score : callable, optional
        ``score(model) -> float``, called after each epoch; the returned model then has the
        weights of the epoch that scored highest (the authors report the best epoch).
    progress : callable, optional
        Called with the number of epochs done, after each.

    Returns
    -------
    keras.Model
        The attacker's model.
    """
    from .masked_training import train_masked
    from .pruning import rebuild

    check_param(attacker, "attacker", "steal", Options(ATTACKERS))
    weights = {layer.name: layer.get_weights() for layer in protected_model.layers}
    model = rebuild(protected_model, weights)
    if attacker == "paper":
        masks = {f"{layer.name}/{w.name.split('/')[-1]}": np.ones(tuple(w.shape), bool)
                 for layer in _main_path_convolutions(model) for w in layer.trainable_weights}
        if not masks:
            raise UnsupportedLayerError(f"Model {model.name!r} has no convolution with a kernel larger than 1x1: "
                                        "the paper's attacker retrains only those (attacker='full' retrains the "
                                        "hidden positions of any layer).")
    else:
        masks = secret.masks() if isinstance(secret, ProtectionSecret) else dict(secret)
    best = {"score": -np.inf, "weights": None}

    def epoch_end(epoch, loss):
        if score is not None:
            value = float(score(model))
            log.info("steal: epoch %d, score %.4f", epoch + 1, value)
            if value > best["score"]:
                best.update(score=value, weights=model.get_weights())
        if progress is not None:
            progress(epoch + 1)

    train_masked(model, masks, x_attacker, y_victim_labels, epochs, optimizer="sgd", lr=lr,
                 momentum=momentum, batch_size=batch_size, seed=seed, batchnorm=batchnorm,
                 weight_decay=weight_decay, on_epoch_end=epoch_end)
    if best["weights"] is not None:
        model.set_weights(best["weights"])
    return model
