"""Training where only chosen positions of chosen weights may move.

Shared by fine-tuning after pruning (the kept synapses move, pruned ones stay zero) and by the
model-stealing attacker of protection (only the hidden synapses move, everything else stays as
published). Gradients are multiplied by a 0/1 mask per variable in a custom
``tf.GradientTape`` loop, and the frozen positions are written back after every step, so that
they stay bitwise what they were whatever the optimizer does (momentum, Adam's epsilon).
"""

from __future__ import annotations

import logging

import numpy as np

from nnslicer import check_labels
from nnslicer.errors import InvalidInputError, InvalidParameterError
from nnslicer.validation import Interval, check_param

__all__ = ["train_masked"]

log = logging.getLogger(__name__)


def _check_positive(name, value, kind=int):
    return check_param(value, name, None, Interval(int, 1) if kind is int else Interval(float, 0, None, "neither"))


def _ends_in_softmax(model):
    """Whether the model's output is a softmax (probabilities) rather than logits."""
    import keras

    last = model.layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"


def train_masked(model, trainable, x, y, epochs, optimizer="sgd", lr=5e-3, momentum=0.5,
                 batch_size=256, seed=0, batchnorm="frozen", weight_decay=0.0, on_epoch_end=None):
    """Train ``model`` in place where ``trainable`` allows.

    Parameters
    ----------
    model : keras.Model
        Trained in place (callers pass a copy).
    trainable : dict of str to ndarray of bool
        ``"layer_name/weight_name"`` (e.g. ``"fc1/kernel"``) -> mask shaped like that weight,
        True where the value may change. Weights not named stay fixed.
    x, y : arrays
        Inputs and integer labels.
    epochs : int
    optimizer : {"sgd", "adam"}
        SGD with ``momentum`` or Adam, learning rate ``lr``.
    batch_size, seed : int
        Mini-batch size; seed of the shuffling.
    batchnorm : {"frozen", "train"}
        ``"frozen"``: the model runs in inference mode (batch norm uses its moving statistics,
        which stay as they are). ``"train"``: training mode, as ``model.fit`` would: batch norm
        normalises with the batch's statistics and updates its moving statistics (they are not
        parameters; gamma and beta stay fixed unless named in ``trainable``).
    weight_decay : float, default 0
        L2 penalty added to the gradient of each trainable value (``g + weight_decay * w``, as
        PyTorch's SGD does it).
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(epoch, loss)`` after each epoch (``epoch`` from 0).

    Returns
    -------
    list of float
        The mean training loss of each epoch.
    """
    import tensorflow as tf
    import keras

    _check_positive("epochs", epochs)
    _check_positive("batch_size", batch_size)
    _check_positive("lr", lr, float)
    weight_decay = check_param(weight_decay, "weight_decay", None, Interval(float, 0))
    if batchnorm not in ("frozen", "train"):
        raise InvalidParameterError(f"The 'batchnorm' parameter must be 'frozen' or 'train'. Got {batchnorm!r} instead.")
    training = batchnorm == "train"
    x = np.asarray(x, dtype="float32")
    if len(x) == 0:
        raise InvalidInputError("x is empty: give at least one sample.")
    y = check_labels(y, len(x), int(model.outputs[0].shape[-1]))  # indices, a column or one-hot rows
    variables, masks, frozen = [], [], []
    for layer in model.layers:
        for w in layer.weights:
            key = f"{layer.name}/{w.name.split('/')[-1]}"
            if key in trainable:
                mask = np.asarray(trainable[key], dtype=bool)
                if mask.shape != tuple(w.shape):
                    raise InvalidInputError(f"The mask of {key!r} has shape {mask.shape}; the weight is {tuple(w.shape)}.")
                variables.append(w)
                masks.append(tf.constant(mask.astype("float32")))
                frozen.append(tf.constant(np.asarray(w.numpy())))
    unknown = set(trainable) - {f"{l.name}/{w.name.split('/')[-1]}" for l in model.layers for w in l.weights}
    if unknown:
        raise InvalidInputError(f"No such weights in the model: {sorted(unknown)}.")
    if not variables:
        return []
    if optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate=lr, momentum=momentum)
    elif optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate=lr)
    else:
        raise InvalidParameterError(f"The 'optimizer' parameter must be 'sgd' or 'adam'. Got {optimizer!r} instead.")
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=not _ends_in_softmax(model))

    @tf.function(reduce_retracing=True)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=training))
        grads = tape.gradient(loss, [v.value for v in variables])
        grads = [g + weight_decay * v.value if weight_decay else g for g, v in zip(grads, variables)]
        opt.apply_gradients([(g * m, v) for g, m, v in zip(grads, masks, variables)])
        for v, m, f in zip(variables, masks, frozen):  # frozen positions back, bitwise
            v.assign(tf.where(m > 0, v.value, f))
        return loss

    rng = np.random.default_rng(seed)
    losses = []
    for epoch in range(int(epochs)):
        order = rng.permutation(len(x))
        total, n = 0.0, 0
        for lo in range(0, len(x), batch_size):
            idx = order[lo:lo + batch_size]
            loss = step(tf.constant(x[idx]), tf.constant(y[idx]))
            total += float(loss) * len(idx)
            n += len(idx)
        losses.append(total / n)
        log.info("masked training: epoch %d/%d, loss %.4f", epoch + 1, epochs, losses[-1])
        if on_epoch_end is not None:
            on_epoch_end(epoch, losses[-1])
    return losses
