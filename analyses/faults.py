"""Bit-flip fault injection and duplicate-checking of the most important layers (SAFER).

Hardware faults flip bits of float32 words in memory. Here every bit of every weight and of
every output value of a layer flips independently with probability ``rate`` (per bit, so an
array of ``n`` float32 values gets ``Binomial(32 n, rate)`` flips, at uniformly drawn distinct
bit positions). A layer that is *checked* computes twice and compares, so its faults are caught
and redone: it runs fault-free. :func:`fault_curve` leaves the least important layers of a
ranking unchecked, one more at a time, and measures the accuracy (SAFER Figure 2);
:func:`layers_to_check` reads off how many of the most important layers must be checked to stay
within a given loss of the clean accuracy.

The layers are those that hold weights (:func:`analyses.layer_importance.ranked_layers`), the
same that ``layer_importance`` ranks: their weights (trainable or not) and their outputs take
faults. A sample whose output is not finite counts as misclassified.

The draws are common random numbers: repeat ``r`` draws the same flips in a layer whichever
other layers are checked, so curves of different rankings differ only by the ranking.

>>> import numpy as np
>>> clean = np.ones(1000, "float32")
>>> flipped, n = flip_bits(clean, 1e-3, np.random.default_rng(0))
>>> changed = flipped.view(np.uint32) ^ clean.view(np.uint32)   # the bits that differ
>>> n, int(np.unpackbits(changed.view(np.uint8)).sum())
(35, 35)
"""

from __future__ import annotations

import numbers

import numpy as np

from nnslicer import check_inputs, check_labels
from nnslicer.errors import InvalidParameterError
from nnslicer.keras import functional_graph, run_with_hooks
from nnslicer.validation import Interval, check_param


__all__ = ["flip_bits", "fault_outputs", "fault_accuracy", "fault_curve", "exposure", "layers_to_check"]


def _check_rate(rate, caller):
    return check_param(rate, "rate", caller, Interval(float, 0, 1), note=" (the probability that one bit flips)")


def flip_bits(a, rate, rng):
    """A float32 copy of ``a`` in which each bit flipped with probability ``rate``.

    Returns ``(flipped, n_flips)``: the number of flips is ``Binomial(32 * a.size, rate)`` and
    they land on distinct, uniformly drawn bits.
    """
    rate = _check_rate(rate, "flip_bits")
    words = np.array(a, dtype=np.float32, copy=True)
    bits = 32 * words.size
    n = int(rng.binomial(bits, rate)) if bits else 0
    if n:
        where = rng.choice(bits, size=n, replace=False)
        flat = words.reshape(-1).view(np.uint32)
        np.bitwise_xor.at(flat, where // 32, (np.uint32(1) << (where % 32).astype(np.uint32)))
    return words, n


def _layers(model):
    from .layer_importance import ranked_layers

    return [layer.name for layer in ranked_layers(model)]


def _check_data(model, x, y):
    x = check_inputs(x, model.inputs[0].shape[1:], dtype=np.float32)
    return x, check_labels(y, len(x), int(model.outputs[0].shape[-1]))


def _seed(seed, repeat, layer, batch=-1):
    return np.random.default_rng([seed, repeat, layer, batch + 1])


def _faulty_outputs(model, x, faulty, rate, repeat, seed, batch_size):
    """The model's outputs, batch by batch, with faults in the ``faulty`` layer indices."""
    import keras

    graph = functional_graph(model, "fault injection")
    names = _layers(model)
    mapping = []
    for i in sorted(faulty):
        rng = _seed(seed, repeat, i)
        for v in model.get_layer(names[i]).weights:
            mapping.append((v, flip_bits(keras.ops.convert_to_numpy(v.value), rate, rng)[0]))
    index = {name: i for i, name in enumerate(names)}
    batch = [0]

    def wrap(op):
        i = index.get(getattr(op, "name", None))
        if i not in faulty:
            return op

        def call(*args, **kwargs):
            out = keras.ops.convert_to_numpy(op(*args, **kwargs))
            return keras.ops.convert_to_tensor(flip_bits(out, rate, _seed(seed, repeat, i, batch[0]))[0])
        return call

    with keras.StatelessScope(state_mapping=mapping):
        for batch[0], start in enumerate(range(0, len(x), batch_size)):
            chunk = x[start:start + batch_size]
            out = run_with_hooks(graph, [keras.ops.convert_to_tensor(chunk)], wrap)
            yield keras.ops.convert_to_numpy(keras.tree.flatten(out)[0]).reshape(len(chunk), -1)


def fault_outputs(model, x, rate, checked=(), repeat=0, seed=0, batch_size=256):
    """The model's outputs for ``x`` under one draw (``repeat``) of bit flips in the weights and
    outputs of every layer with weights that is not in ``checked``.

    In layer ``i`` (its index among the layers with weights) of repeat ``r`` the weights' flips
    come from ``numpy.random.default_rng([seed, r, i, 0])``, one weight array after the other,
    and the output's flips in batch ``k`` from ``default_rng([seed, r, i, k + 1])``.
    """
    rate = _check_rate(rate, "fault_outputs")
    x = check_inputs(x, model.inputs[0].shape[1:], dtype=np.float32)
    faulty = _faulty(model, checked)
    return np.concatenate(list(_faulty_outputs(model, x, faulty, rate, repeat, seed, batch_size)))


def _faulty(model, checked):
    names = _layers(model)
    unknown = sorted(set(checked) - set(names))
    if unknown:
        raise InvalidParameterError(f"No layer with weights named {unknown}; layers: {names}.")
    return frozenset(i for i, n in enumerate(names) if n not in set(checked))


def _accuracy(model, x, y, faulty, rate, repeat, seed, batch_size):
    """Accuracy in one repeat with faults in the ``faulty`` layer indices (a sample whose
    output is not finite is wrong)."""
    correct, start = 0, 0
    for out in _faulty_outputs(model, x, faulty, rate, repeat, seed, batch_size):
        ok = np.all(np.isfinite(out), axis=1)
        pred = np.argmax(np.where(ok[:, None], out, 0), axis=1)
        correct += int(np.sum(ok & (pred == y[start:start + len(out)])))
        start += len(out)
    return correct / len(x)


def fault_accuracy(model, x, y, rate, checked=(), repeats=3, seed=0, batch_size=256):
    """Accuracy under random bit flips in every layer not in ``checked``.

    Parameters
    ----------
    model : keras.Model
        A functional or Sequential classifier.
    x, y : arrays
        Test inputs and integer labels.
    rate : float in [0, 1]
        Probability that one bit of a weight or activation flips.
    checked : iterable of str
        Layers that are duplicate-checked (fault-free).
    repeats : int
        Independent fault draws.
    seed : int

    Returns
    -------
    ndarray
        The accuracy of each repeat (fraction).
    """
    rate = _check_rate(rate, "fault_accuracy")
    x, y = _check_data(model, x, y)
    faulty = _faulty(model, checked)
    return np.array([_accuracy(model, x, y, faulty, rate, r, seed, batch_size) for r in range(_count(repeats))])


def _count(repeats):
    if isinstance(repeats, bool) or not isinstance(repeats, numbers.Integral) or repeats < 1:
        raise InvalidParameterError(f"The 'repeats' parameter must be a positive int. Got {repeats!r} instead.")
    return int(repeats)


def fault_curve(model, x, y, ranking, rate, repeats=3, seed=0, batch_size=256, cache=None, progress=None):
    """Accuracy as the least important layers of ``ranking`` are left unchecked, one by one.

    Parameters
    ----------
    ranking : dict or sequence of str
        All the model's layers with weights, most important first.
    cache : dict, optional
        Shared between calls (e.g. for several rankings of one model) so that a set of
        unchecked layers is evaluated once per repeat.
    progress : callable, optional
        Called with no argument after each evaluation.

    Returns
    -------
    dict
        ``unchecked`` (0 .. number of layers), ``accuracy`` (mean over repeats, fraction) and
        ``std``; ``unchecked=0`` is the clean accuracy.

    Examples
    --------
    >>> import numpy as np, keras
    >>> keras.utils.set_random_seed(0)
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"), keras.layers.Dense(3, name="o")])
    >>> x = np.random.default_rng(0).normal(size=(50, 4)).astype("float32")
    >>> y = m.predict(x, verbose=0).argmax(1)
    >>> curve = fault_curve(m, x, y, ["o", "h"], rate=0.01)
    >>> curve["unchecked"], curve["accuracy"][0]
    ([0, 1, 2], 1.0)
    """
    rate = _check_rate(rate, "fault_curve")
    repeats = _count(repeats)
    x, y = _check_data(model, x, y)
    names = _layers(model)
    order = list(ranking)
    if sorted(order) != sorted(names):
        raise InvalidParameterError(f"The ranking must list every layer with weights once: {names}; "
                                    f"got {order}.")
    index = {n: i for i, n in enumerate(names)}
    cache = {} if cache is None else cache
    acc, std = [], []
    for u in range(len(order) + 1):
        faulty = frozenset(index[n] for n in order[len(order) - u:])
        runs = []
        for r in range(repeats):
            key = (faulty, r if faulty else 0, rate, seed)  # no faulty layer: the clean accuracy
            if key not in cache:
                cache[key] = _accuracy(model, x, y, faulty, rate, key[1], seed, batch_size)
                if progress:
                    progress()
            runs.append(cache[key])
        acc.append(float(np.mean(runs)))
        std.append(float(np.std(runs)))
    return {"unchecked": list(range(len(order) + 1)), "accuracy": acc, "std": std}


def exposure(model):
    """Bits at risk per layer and inference: 32 x (the layer's weights + its output values for
    one sample). At a bit-error rate ``r`` a layer takes ``r * exposure`` flips per inference on
    average, so checking layers in this order (largest first) removes the most flips; a
    ranking for :func:`fault_curve`, most exposed first.

    >>> import keras
    >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="h"), keras.layers.Dense(3, name="o")])
    >>> exposure(m)        # h: 32 * (4*8 + 8 + 8), o: 32 * (8*3 + 3 + 3)
    {'h': 1536, 'o': 960}
    """
    sizes = {}
    for name in _layers(model):
        layer = model.get_layer(name)
        values = sum(int(np.prod(v.shape)) for v in layer.weights) + int(np.prod(layer.output.shape[1:]))
        sizes[name] = 32 * values
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1]))


def layers_to_check(curve, max_loss=0.01):
    """How many of the most important layers must be checked so that the accuracy stays within
    ``max_loss`` (a fraction: 0.01 = 1 point) of the clean accuracy, from a :func:`fault_curve`.

    >>> layers_to_check({"unchecked": [0, 1, 2, 3], "accuracy": [0.9, 0.895, 0.88, 0.5]})
    2
    """
    acc = curve["accuracy"]
    total = len(acc) - 1
    best = max(u for u in range(total + 1) if all(a >= acc[0] - max_loss for a in acc[:u + 1]))
    return total - best
