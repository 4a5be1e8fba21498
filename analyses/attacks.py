"""Adversarial attacks that return only successful adversarial examples.

FGSM, BIM and PGD are written here with ``tf.GradientTape``; CW-L2, DeepFool, JSMA and the
spatial transformation attack go through the Adversarial Robustness Toolbox
(``pip install 'nnslicer[analyses]'``).

Every attack returns an :class:`AdversarialSet` holding only the *successful* examples: the
clean source was classified correctly (prediction == label) and the adversarial example is
classified differently.

Parameters every attack takes
-----------------------------
model : keras.Model
    A classifier with one input and one output.
x : array
    A batch of inputs shaped as the model's input (one input needs its batch axis).
y : array of int, optional
    Their labels (class indices, a column or one-hot rows); default: the model's predictions,
    so that every input counts as correctly classified.
clip : (float, float) or None, default (0.0, 1.0)
    The valid input range the adversarial examples are clipped to.
batch_size : int, default 256
    Inputs attacked at a time.

The strength parameters (``eps``, ``step``, ``steps``, ``confidence``, ``epsilon``,
``theta``, ``gamma``, ...) are in each function's signature and docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nnslicer import check_inputs, check_labels
from nnslicer.errors import InvalidParameterError, require
from nnslicer.validation import Interval, check_param


__all__ = ["AdversarialSet", "fgsm", "bim", "pgd", "cw_l2", "deepfool", "jsma", "spatial"]


@dataclass
class AdversarialSet:
    """Successful adversarial examples paired with their clean sources.

    Attributes
    ----------
    x_adv : ndarray
        Adversarial inputs (only successful ones).
    x_clean : ndarray
        The clean inputs they came from.
    y_clean : ndarray of int
        True (given) labels of the clean inputs.
    source_index : ndarray of int
        Indices of the clean inputs in the ``x`` given to the attack.
    pred_adv : ndarray of int
        The model's class on ``x_adv`` (always != ``y_clean``).
    attack : dict
        ``{"name": ..., **params}``.
    n_inputs : int
        Number of inputs given to the attack.
    n_correct : int
        Number of those the model classified correctly (the attackable ones).
    """

    x_adv: np.ndarray
    x_clean: np.ndarray
    y_clean: np.ndarray
    source_index: np.ndarray
    pred_adv: np.ndarray
    attack: dict = field(default_factory=dict)
    n_inputs: int = 0
    n_correct: int = 0

    def __len__(self) -> int:
        return int(len(self.source_index))

    @property
    def success_rate(self) -> float:
        """Successes / correctly classified inputs (0.0 when none was correct)."""
        return len(self) / self.n_correct if self.n_correct else 0.0

    @property
    def perturbation(self) -> np.ndarray:
        """``x_adv - x_clean``."""
        return self.x_adv - self.x_clean

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.attack.items() if k != "name")
        return (
            f"AdversarialSet(attack={self.attack.get('name', '?')}({params}), "
            f"successes={len(self)}/{self.n_correct} correctly classified "
            f"of {self.n_inputs} inputs, success_rate={self.success_rate:.3f})"
        )


# --------------------------------------------------------------------------- helpers


def _check_inputs(model, x, y, batch_size):
    x = check_inputs(x, model.inputs[0].shape[1:], dtype=np.float32)
    batch_size = _positive_int("batch_size", batch_size)
    pred = _predict(model, x, batch_size)
    y = pred.copy() if y is None else check_labels(y, len(x), _n_classes(model))
    return x, y, pred


def _check_clip(clip):
    if clip is None:
        return None
    try:
        lo, hi = (float(clip[0]), float(clip[1]))
    except (TypeError, ValueError, IndexError) as exc:
        raise InvalidParameterError(f"clip must be (min, max) or None, got {clip!r}") from exc
    if len(clip) != 2 or not (np.isfinite(lo) and np.isfinite(hi)) or lo >= hi:
        raise InvalidParameterError(f"clip must be (min, max) with min < max, got {clip!r}")
    return (lo, hi)


def _positive(name, value):
    return check_param(value, name, None, Interval(float, 0, None, "neither"))


def _positive_int(name, value):
    return check_param(value, name, None, Interval(int, 1))


def _n_classes(model) -> int:
    return int(model.output_shape[-1])


def _predict(model, x, batch_size) -> np.ndarray:
    out = []
    for i in range(0, len(x), batch_size):
        out.append(np.asarray(model(x[i : i + batch_size], training=False)).argmax(axis=1))
    return np.concatenate(out).astype(np.int64)


def _outputs_softmax(model) -> bool:
    """Whether the model's outputs are probabilities (last layer softmax)."""
    last = model.layers[-1]
    if type(last).__name__.lower() == "softmax":
        return True
    act = getattr(last, "activation", None)
    name = getattr(act, "__name__", None) or type(act).__name__
    return name is not None and "softmax" in name.lower()


def _loss_fn(model):
    import keras

    from_logits = not _outputs_softmax(model)

    def loss(y, out):
        return keras.losses.sparse_categorical_crossentropy(y, out, from_logits=from_logits)

    return loss


def _gradient_sign(model, loss, x, y):
    import tensorflow as tf

    xt = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        l = loss(tf.convert_to_tensor(y), model(xt, training=False))
    return np.sign(tape.gradient(l, xt).numpy())


def _report(progress, done):
    """Tell ``progress`` (if any) how many inputs are attacked so far."""
    if progress is not None:
        progress(int(done))


def _finish(model, x, y, pred_clean, x_adv, batch_size, attack) -> AdversarialSet:
    pred_adv = _predict(model, x_adv, batch_size)
    correct = pred_clean == y
    ok = correct & (pred_adv != y)
    idx = np.flatnonzero(ok)
    return AdversarialSet(
        x_adv=x_adv[idx],
        x_clean=x[idx],
        y_clean=y[idx],
        source_index=idx,
        pred_adv=pred_adv[idx],
        attack=attack,
        n_inputs=int(len(x)),
        n_correct=int(correct.sum()),
    )


def _iterative(model, x, y, eps, step, steps, clip, batch_size, x_start, progress=None):
    loss = _loss_fn(model)
    out = np.empty_like(x)
    for i in range(0, len(x), batch_size):
        x0 = x[i : i + batch_size]
        yb = y[i : i + batch_size]
        xa = x_start[i : i + batch_size].copy()
        for _ in range(steps):
            xa = xa + step * _gradient_sign(model, loss, xa, yb)
            xa = np.clip(xa, x0 - eps, x0 + eps)
            if clip is not None:
                xa = np.clip(xa, clip[0], clip[1])
        out[i : i + batch_size] = xa
        _report(progress, i + len(x0))
    return out.astype(np.float32)


# --------------------------------------------------------------------------- gradient attacks


def fgsm(model, x, y=None, eps=0.1, clip=(0.0, 1.0), batch_size=256, progress=None) -> AdversarialSet:
    """Fast Gradient Sign Method: ``x + eps * sign(grad_x loss)``, clipped to ``clip``.

    ``y`` defaults to the model's predictions (then every input counts as correct).
    ``progress`` (every attack here takes it) is called with the number of inputs attacked so
    far, after each batch.
    """
    eps = _positive("eps", eps)
    clip = _check_clip(clip)
    x, y, pred = _check_inputs(model, x, y, batch_size)
    loss = _loss_fn(model)
    x_adv = np.empty_like(x)
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        xa = xb + eps * _gradient_sign(model, loss, xb, y[i : i + batch_size])
        if clip is not None:
            xa = np.clip(xa, clip[0], clip[1])
        x_adv[i : i + batch_size] = xa
        _report(progress, i + len(xb))
    return _finish(model, x, y, pred, x_adv, batch_size, {"name": "fgsm", "eps": eps, "clip": clip})


def bim(model, x, y=None, eps=0.1, step=0.01, steps=10, clip=(0.0, 1.0), batch_size=256,
        progress=None) -> AdversarialSet:
    """Basic Iterative Method: ``steps`` FGSM steps of size ``step``, projected on the L-inf ball."""
    eps = _positive("eps", eps)
    step = _positive("step", step)
    steps = _positive_int("steps", steps)
    clip = _check_clip(clip)
    x, y, pred = _check_inputs(model, x, y, batch_size)
    x_adv = _iterative(model, x, y, eps, step, steps, clip, batch_size, x, progress)
    attack = {"name": "bim", "eps": eps, "step": step, "steps": steps, "clip": clip}
    return _finish(model, x, y, pred, x_adv, batch_size, attack)


def pgd(
    model, x, y=None, eps=0.1, step=0.01, steps=20, random_start=True, seed=0, clip=(0.0, 1.0),
    batch_size=256, progress=None,
) -> AdversarialSet:
    """Projected Gradient Descent (L-inf): BIM from a uniform random start in the eps-ball."""
    eps = _positive("eps", eps)
    step = _positive("step", step)
    steps = _positive_int("steps", steps)
    clip = _check_clip(clip)
    x, y, pred = _check_inputs(model, x, y, batch_size)
    start = x
    if random_start:
        rng = np.random.default_rng(seed)
        start = x + rng.uniform(-eps, eps, size=x.shape).astype(np.float32)
        if clip is not None:
            start = np.clip(start, clip[0], clip[1])
    x_adv = _iterative(model, x, y, eps, step, steps, clip, batch_size, start, progress)
    attack = {
        "name": "pgd", "eps": eps, "step": step, "steps": steps,
        "random_start": bool(random_start), "seed": seed, "clip": clip,
    }
    return _finish(model, x, y, pred, x_adv, batch_size, attack)


# --------------------------------------------------------------------------- ART attacks


def _art_classifier(model, clip):
    require("art", "analyses")
    from art.estimators.classification import TensorFlowV2Classifier
    import keras

    from_logits = not _outputs_softmax(model)
    return TensorFlowV2Classifier(
        model=model,
        nb_classes=_n_classes(model),
        input_shape=tuple(model.input_shape[1:]),
        clip_values=clip,
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
    )


def _run_art(model, x, y, clip, batch_size, make_attack, attack, target_seed=None, progress=None, per_input=True):
    """Run an ART attack; with ``target_seed``, a targeted one towards a class drawn at random
    (seeded) among those other than each input's prediction. An attack of each input on its
    own (``per_input``) runs a batch at a time, reporting to ``progress``."""
    clip = _check_clip(clip)
    x, y, pred = _check_inputs(model, x, y, batch_size)
    classifier = _art_classifier(model, clip)
    art_attack = make_attack(classifier)
    targets = None
    if target_seed is not None:
        n_classes = classifier.nb_classes
        shift = np.random.default_rng(target_seed).integers(1, n_classes, size=len(pred))
        targets = np.eye(n_classes, dtype=np.float32)[(pred + shift) % n_classes]
    step = batch_size if per_input else len(x)
    parts = []
    for i in range(0, len(x), step):
        parts.append(np.asarray(art_attack.generate(x=x[i:i + step], y=None if targets is None else
                                                    targets[i:i + step]), dtype=np.float32))
        _report(progress, i + len(parts[-1]))
    x_adv = np.concatenate(parts)
    if clip is not None:
        x_adv = np.clip(x_adv, clip[0], clip[1])
    return _finish(model, x, y, pred, x_adv, batch_size, attack)


def cw_l2(
    model, x, y=None, confidence=0.0, learning_rate=0.1, max_iter=10, binary_search_steps=3,
    initial_const=1.0, clip=(0.0, 1.0), batch_size=256, progress=None,
) -> AdversarialSet:
    """Carlini & Wagner L2 through ART's ``CarliniL2Method`` (untargeted)."""
    max_iter = _positive_int("max_iter", max_iter)
    binary_search_steps = _positive_int("binary_search_steps", binary_search_steps)
    learning_rate = _positive("learning_rate", learning_rate)
    initial_const = _positive("initial_const", initial_const)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or confidence < 0:
        raise InvalidParameterError(f"confidence must be a number >= 0, got {confidence!r}")

    def make(classifier):
        from art.attacks.evasion import CarliniL2Method

        return CarliniL2Method(
            classifier, confidence=float(confidence), learning_rate=learning_rate,
            max_iter=max_iter, binary_search_steps=binary_search_steps,
            initial_const=initial_const, batch_size=batch_size, verbose=False,
        )

    attack = {
        "name": "cw_l2", "confidence": confidence, "learning_rate": learning_rate,
        "max_iter": max_iter, "binary_search_steps": binary_search_steps,
        "initial_const": initial_const, "clip": _check_clip(clip),
    }
    return _run_art(model, x, y, clip, batch_size, make, attack, progress=progress)


def deepfool(
    model, x, y=None, max_iter=20, epsilon=1e-6, nb_grads=10, clip=(0.0, 1.0), batch_size=256, progress=None,
) -> AdversarialSet:
    """DeepFool through ART's ``DeepFool`` (``nb_grads`` most likely classes considered)."""
    max_iter = _positive_int("max_iter", max_iter)
    nb_grads = _positive_int("nb_grads", nb_grads)
    epsilon = _positive("epsilon", epsilon)

    def make(classifier):
        from art.attacks.evasion import DeepFool

        return DeepFool(
            classifier, max_iter=max_iter, epsilon=epsilon, nb_grads=nb_grads,
            batch_size=batch_size, verbose=False,
        )

    attack = {
        "name": "deepfool", "max_iter": max_iter, "epsilon": epsilon, "nb_grads": nb_grads,
        "clip": _check_clip(clip),
    }
    return _run_art(model, x, y, clip, batch_size, make, attack, progress=progress)


def jsma(
    model, x, y=None, theta=0.1, gamma=0.1, clip=(0.0, 1.0), batch_size=256, seed=0, progress=None,
) -> AdversarialSet:
    """Jacobian-based Saliency Map Attack through ART's ``SaliencyMapMethod``.

    JSMA is targeted: each input's target is a class other than its prediction, drawn with
    ``seed`` (so that a run is reproducible; ART alone would draw it unseeded). ``gamma`` is
    the largest share of features it may change.
    """
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or theta == 0 or not np.isfinite(theta):
        raise InvalidParameterError(f"theta must be a non-zero number, got {theta!r}")
    gamma = _positive("gamma", gamma)
    if gamma > 1:
        raise InvalidParameterError(f"gamma must lie in (0, 1], got {gamma!r}")

    def make(classifier):
        from art.attacks.evasion import SaliencyMapMethod

        return SaliencyMapMethod(
            classifier, theta=float(theta), gamma=gamma, batch_size=batch_size, verbose=False,
        )

    attack = {"name": "jsma", "theta": theta, "gamma": gamma, "clip": _check_clip(clip), "seed": seed}
    return _run_art(model, x, y, clip, batch_size, make, attack, target_seed=seed, progress=progress)


def spatial(
    model, x, y=None, max_translation=10.0, num_translations=3, max_rotation=30.0, num_rotations=5,
    clip=(0.0, 1.0), batch_size=256, progress=None,
) -> AdversarialSet:
    """Spatial transformation attack (Engstrom et al. 2019) through ART's ``SpatialTransformation``.

    A grid search over translations of up to ``max_translation`` percent of the image's size
    (``num_translations`` steps each way, on both axes) and rotations of up to ``max_rotation``
    degrees (``num_rotations`` steps each way) finds the one transformation that fools the
    model on most of ``x``, and applies it to every input (ART's search is per batch, not per
    input). Images only: ``x`` is ``(n, height, width, channels)``.
    """
    max_translation = check_param(max_translation, "max_translation", None, Interval(float, 0))
    max_rotation = check_param(max_rotation, "max_rotation", None, Interval(float, 0))
    if max_translation == 0 and max_rotation == 0:
        raise InvalidParameterError("max_translation and max_rotation are both 0: there is nothing to search")
    num_translations = _positive_int("num_translations", num_translations)
    num_rotations = _positive_int("num_rotations", num_rotations)
    if len(model.input_shape) != 4:
        raise InvalidParameterError(f"spatial transforms images: the model's input must be (height, width, "
                                    f"channels), not {tuple(model.input_shape[1:])}")

    def make(classifier):
        from art.attacks.evasion import SpatialTransformation

        return SpatialTransformation(
            classifier, max_translation=max_translation, num_translations=num_translations,
            max_rotation=max_rotation, num_rotations=num_rotations, verbose=False,
        )

    attack = {
        "name": "spatial", "max_translation": max_translation, "num_translations": num_translations,
        "max_rotation": max_rotation, "num_rotations": num_rotations, "clip": _check_clip(clip),
    }
    return _run_art(model, x, y, clip, batch_size, make, attack, progress=progress, per_input=False)
