"""Adversarial input detection from slices (NNSlicer, SPEC.md section 5), with its baselines.

An input is slice-checked against its predicted class: a classifier fit on the slices of
*clean* samples labelled by class (no adversarial example is needed to fit) reads the slice of a
new input and names a class; when that class differs from the model's prediction, the input is
flagged adversarial. Every detector follows scikit-learn's outlier contract: ``fit`` returns
self, ``predict`` gives +1 (clean) or -1 (adversarial), ``decision_function`` is
``score_samples - offset_`` and is negative exactly where ``predict`` is -1; higher scores are
more normal.

Detectors
---------
:class:`SliceDetector`
    NNSlicer's detector: per-synapse slice counts of one layer (``rule="effective_path"`` in the
    Slicer gives the EffectivePath baseline of Qiu et al. 2019).
:class:`FeatureMapDetector`
    The paper's FeatureMap baseline: the raw activations of the same layer, same classifier.
:class:`MahalanobisDetector`
    Lee et al. (2018), a modern reference: class-conditional Gaussians with a tied covariance
    on a layer's (pooled) features; the score is minus the distance to the closest class mean.

Detector files (``.nnsd``) hold plain arrays, a JSON header and the classifier in skops'
format: loading one runs no code, checks everything in it (down to each tree node) and is
refused for any other model (:func:`load_detector`).
"""

from __future__ import annotations

import inspect
import logging
import numbers
import warnings
from dataclasses import dataclass

import numpy as np

from nnslicer import as_batch, check_labels
from nnslicer.errors import FileFormatError, InvalidInputError, InvalidParameterError, NotFittedError, require
from nnslicer.io import save_archive
from nnslicer.validation import Interval, check_param

from .detector_files import _check_classes, _check_classifier, _damaged, load_detector

__all__ = ["SliceDetector", "FeatureMapDetector", "MahalanobisDetector", "Detection", "Features", "load_detector",
           "default_layer", "Detector", "DETECTORS", "register_detector", "class_margin", "class_gaussians",
           "mahalanobis_scores"]

log = logging.getLogger(__name__)

#: Classifiers a slice or feature-map detector can use.
CLASSIFIERS = ("tree", "forest")
#: Defaults, from benchmarks/adversarial.py and benchmarks/detector_search.py: on ResNet10 the
#: last stage's slices mostly tell the predicted class itself (clean and adversarial alike), the
#: stage before tells them apart; a forest generalises better than one tree. The paper's choice
#: is layer=-1, "tree". DEFAULT_LAYER is the stage read in a model of at least DEEP stages of
#: convolutions (a slice detector: 3; a feature-map detector: 2), the last stage otherwise: a
#: LeNet's first conv slices poorly (AUROC 0.63 against conv2's 0.82 on MNIST-5k).
DEFAULT_LAYER, DEFAULT_CLASSIFIER = -2, "forest"
DEEP = {"slice": 3, "activations": 2}
#: The scikit-learn type of each classifier, and all the types a detector file may hold
#: (anything else is refused when loading).
_CLASSIFIER_TYPES = {"tree": "sklearn.tree._classes.DecisionTreeClassifier",
                     "forest": "sklearn.ensemble._forest.RandomForestClassifier"}
_TRUSTED = [*_CLASSIFIER_TYPES.values(), "sklearn.tree._tree.Tree"]


@dataclass
class Detection:
    """What a detector says about a batch (one feature pass serves every view of it).

    Attributes
    ----------
    predicted : ndarray of int
        The model's class of each input.
    scores : ndarray of float
        ``score_samples``: higher is more normal.
    flags : ndarray of int
        ``predict``: +1 clean, -1 adversarial.
    """

    predicted: np.ndarray
    scores: np.ndarray
    flags: np.ndarray

    @property
    def adversarial(self) -> np.ndarray:
        """Boolean mask of the inputs flagged adversarial."""
        return self.flags == -1

    def __repr__(self):
        return f"Detection(inputs={len(self.flags)}, flagged={int(self.adversarial.sum())})"


@dataclass
class Features:
    """What a detector reads of a batch, kept to fit or score again without another pass.

    Attributes
    ----------
    values : ndarray or scipy.sparse matrix
        One row per input.
    predicted : ndarray of int
        The model's class of each input.
    """

    values: object
    predicted: np.ndarray

    def __len__(self):
        return len(self.predicted)

    def __getitem__(self, index):
        """The rows ``index`` (an int array or a boolean mask)."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index)
        return Features(self.values[index], self.predicted[index])

    def __repr__(self):
        return f"Features(inputs={len(self)}, dims={self.values.shape[1]:,})"


# --------------------------------------------------------------------------- layers and features
def default_layer(graph, stage=-1) -> str:
    """A detector's layer: the largest convolution of a stage, counted from the end (stages are
    runs of convolutions with one output shape). ``stage=-1``, the paper's code, gives the last
    stage's (ResNet10's last 3x3 conv, ~147K synapses); ``-2`` the stage before. A model
    without convolutions uses its last weighted op before the logits (or the logits op itself
    when it has no other)."""
    weighted = [graph[name] for name in graph.weighted_ops if name != graph.logits]
    convs = [op for op in weighted if op.kind in ("conv2d", "depthwise_conv2d")]
    if not convs:
        return (weighted or [graph[graph.logits]])[-1].name
    shapes = list(dict.fromkeys(op.shape for op in convs))
    if not -len(shapes) <= stage <= -1:
        raise InvalidParameterError(f"{graph.name!r} has {len(shapes)} stage(s) of convolutions: a stage is "
                                    f"counted from the end, -1 to -{len(shapes)}. Got {stage} instead.")
    in_stage = [op for op in convs if op.shape == shapes[stage]]
    return max(reversed(in_stage), key=lambda op: op.n_synapses).name


def _check_layer(graph, layer, deep=DEEP["activations"]):
    """The op that ``layer`` names; None: stage DEFAULT_LAYER in a model of at least ``deep``
    stages, else the last stage."""
    if layer is None:
        stages = len({graph[n].shape for n in graph.weighted_ops if graph[n].kind in ("conv2d", "depthwise_conv2d")})
        return default_layer(graph, DEFAULT_LAYER if stages >= deep else -1)
    if isinstance(layer, numbers.Integral) and not isinstance(layer, bool):
        return default_layer(graph, int(layer))
    if layer not in graph or graph[layer].n_synapses == 0:
        options = ", ".join(graph.weighted_ops)
        raise InvalidParameterError(f"The 'layer' parameter must name a weighted op of {graph.name!r} "
                                    f"({options}) or a stage counted from the end (-1, -2, ...). "
                                    f"Got {layer!r} instead.")
    return layer


def _predict(model, x, batch_size=256):
    return np.concatenate([np.asarray(model(x[i:i + batch_size], training=False)).argmax(-1)
                           for i in range(0, len(x), batch_size)]).astype(np.int64)


def _labels(y, predicted, num_classes):
    """Which fit samples to keep: all (each labelled by the model's class) without ``y``; with
    ``y`` (class indices or one-hot rows), only the correctly classified ones (a slice is of
    the predicted class)."""
    if y is None:
        return np.ones(len(predicted), bool)
    keep = check_labels(y, len(predicted), num_classes) == predicted
    if not keep.any():
        raise InvalidInputError("No fit sample is classified correctly: nothing to learn from.")
    return keep


def _check_contamination(contamination, owner, optional):
    """``contamination`` as a float in (0, 0.5), or None where ``optional``."""
    return check_param(contamination, "contamination", owner, Interval(float, 0, 0.5, "neither"),
                       *((None,) if optional else ()))


# --------------------------------------------------------------------------- scores
def class_margin(proba, classes, predicted, n_classes):
    """``p(model's class) - max p(other class)`` of each row of a classifier's ``proba`` (over
    its ``classes``), in [-1, 1]: >= 0 when the classifier agrees with the model's ``predicted``
    class. A class the classifier never saw scores -1. The score of the classifier detectors."""
    full = np.zeros((len(proba), n_classes), dtype=np.float64)
    full[:, classes] = proba
    mine = full[np.arange(len(full)), predicted]
    full[np.arange(len(full)), predicted] = -np.inf
    return mine - full.max(axis=1)


def class_gaussians(feats, labels, n_classes):
    """Lee et al.'s class-conditional Gaussians with one shared covariance: ``(means, classes,
    precision)``, the means ``[n_classes, d]`` (rows of classes absent from ``labels`` zero),
    the classes present and the pseudo-inverse of the covariance around each sample's class mean."""
    feats = feats.astype(np.float64)
    classes = np.unique(labels)
    means = np.zeros((n_classes, feats.shape[1]))
    for k in classes:
        means[k] = feats[labels == k].mean(axis=0)
    centred = feats - means[labels]
    return means, classes, np.linalg.pinv(centred.T @ centred / len(feats), hermitian=True)


def mahalanobis_scores(feats, means, classes, precision):
    """Minus the Mahalanobis distance of each row of ``feats`` to the closest mean of ``classes``
    (:func:`class_gaussians`): higher is more normal."""
    d = feats[:, None, :] - means[classes][None]
    return -np.einsum("nkd,de,nke->nk", d, precision, d).min(axis=1)


# --------------------------------------------------------------------------- base class
try:  # scikit-learn is an extra (nnslicer[analyses]); detectors need it to fit
    from sklearn.base import BaseEstimator, OutlierMixin

    _ESTIMATOR = (OutlierMixin, BaseEstimator)
except ImportError:  # pragma: no cover
    _ESTIMATOR = ()

#: What a detector learns from the inputs alone (kept when it is refit on their Features).
_PREPARED = ("layer_", "slicer_", "graph_", "_feature_model")


class Detector(*_ESTIMATOR):
    """The outlier contract over ``_features(x) -> (features, predicted)`` and a scorer: the base
    of every detector (:func:`register_detector` offers a new one to ``nnslicer detect fit``).

    Detectors are scikit-learn estimators: ``get_params``, ``set_params``, ``sklearn.base.clone``
    and model selection (``GridSearchCV``) work, and ``fit`` starts afresh from the current
    parameters. A clone shares the model and slicer it was given: ``fit`` never changes them
    (an unfitted Slicer is copied and the copy fitted, as ``slicer_``)."""

    kind = ""
    #: What a detector is built from besides the model, ``layer`` and ``contamination``
    #: (:meth:`build`): "slicing" (a Slicer, and ``n_jobs``), "classifier".
    takes = ()
    #: Header fields (beyond ``detector``, ``fingerprint`` and ``offset``) and arrays that a
    #: file of this kind cannot do without (see :data:`_FIELDS` and :data:`_ARRAYS`).
    _fields = ()
    _arrays = ()
    #: The range of a score.
    _score_range = (-np.inf, np.inf)

    @classmethod
    def build(cls, model, slicer=None, layer=None, contamination=None, classifier=DEFAULT_CLASSIFIER, n_jobs=None):
        """The detector of ``model`` that ``nnslicer detect fit`` makes from its options: of them,
        it reads those its :attr:`takes` names (``slicer`` is a fitted-to-be Slicer)."""
        raise NotImplementedError

    def __sklearn_clone__(self):
        """An unfitted detector of the same parameters; the model and the slicer are shared, not
        deep-copied (fit changes neither)."""
        return type(self)(**self.get_params(deep=False))

    def _forget(self, keep_prepared):
        """Drop what a previous fit learnt (all of it, or all but :data:`_PREPARED`)."""
        for name in [k for k in vars(self) if (k.endswith("_") and not k.startswith("__")) or k in _PREPARED]:
            if not (keep_prepared and name in _PREPARED):
                delattr(self, name)

    def _check_fitted(self):
        if not hasattr(self, "offset_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet: call fit(x_clean) first.")

    def features(self, x, progress=None) -> Features:
        """The detector's features of ``x`` (slices, activations), to pass to :meth:`fit` or
        :meth:`detect` in place of ``x`` and save a second pass. ``progress`` is called with the
        number of inputs done (a subclass's ``_features`` that takes ``progress`` reports it)."""
        if isinstance(x, Features):
            return x
        self._prepare(x)
        if progress is not None and "progress" in inspect.signature(self._features).parameters:
            return self._features(x, progress=progress)
        return self._features(x)

    def fit(self, x, y=None, progress=None):
        """Fit on clean inputs ``x`` (or their :class:`Features`). With labels ``y`` only the
        correctly classified inputs are used; without, each is labelled by the model's class.
        ``progress``: called with the number of inputs whose features are done.

        Returns
        -------
        self
        """
        self._check_params()
        self._forget(keep_prepared=isinstance(x, Features))  # Features were made for this layer
        self._prepare(x, y)
        feats = self.features(x, progress)
        feats = feats[_labels(y, feats.predicted, self._n_classes())]
        self.n_fit_ = len(feats.predicted)
        self._fit(feats.values, feats.predicted)
        return self

    def detect(self, x, progress=None) -> Detection:
        """Predictions and scores of ``x`` (or its :class:`Features`) from one pass (``progress``:
        as in :meth:`fit`)."""
        self._check_fitted()
        feats = self.features(x, progress)
        scores = self._score(feats.values, feats.predicted)
        return Detection(feats.predicted, scores, np.where(scores - self.offset_ >= 0, 1, -1))

    def score_samples(self, x):
        """Normality of each input (higher: more like clean inputs of its predicted class)."""
        return self.detect(x).scores

    def decision_function(self, x):
        """``score_samples(x) - offset_``: negative for inputs flagged adversarial."""
        return self.detect(x).scores - self.offset_

    def predict(self, x):
        """+1 for inputs taken as clean, -1 for inputs flagged adversarial."""
        return self.detect(x).flags

    def fit_predict(self, x, y=None):
        return self.fit(x, y).predict(x)

    # -- files
    def save(self, path):
        """Write the fitted detector to ``path`` (conventionally ``.nnsd``); no pickle inside."""
        self._check_fitted()
        meta, arrays = self._state()
        meta.update(detector=self.kind, fingerprint=self._graph().fingerprint, model=self._graph().name,
                    offset=float(self.offset_), n_fit=getattr(self, "n_fit_", None))
        if hasattr(self, "clean_scores_"):
            arrays["clean_scores"] = self.clean_scores_
        return save_archive(path, "detector", meta, arrays)


class _ClassifierDetector(Detector):
    """Detectors that read features with a classifier fit on clean samples labelled by class."""

    _arrays = ("classifier",)
    _score_range = (-1.0, 1.0)  # a margin of two probabilities

    def _check_params(self):
        if self.classifier not in CLASSIFIERS:
            raise InvalidParameterError(f"The 'classifier' parameter of {type(self).__name__} must be one of "
                                        f"{', '.join(map(repr, CLASSIFIERS))}. Got {self.classifier!r} instead.")
        _check_contamination(self.contamination, type(self).__name__, optional=True)

    @property
    def held_out_flag_rate(self):
        """The share of clean fit samples flagged by a classifier that did not learn from them
        (out-of-bag votes of a forest; 5-fold cross-validation of a tree, only computed with
        ``contamination``): the false-alarm rate to expect on clean inputs. None if unknown."""
        self._check_fitted()
        scores = getattr(self, "clean_scores_", None)
        return None if scores is None or not len(scores) else float(np.mean(scores < self.offset_))

    def _fit(self, feats, labels):
        """Fit the classifier and score every fit sample with a classifier that did not see it
        (out-of-bag for a forest, always; 5-fold for a tree, with ``contamination``); with
        ``contamination``, put ``offset_`` at that quantile of those held-out clean scores."""
        require("sklearn", "analyses")
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.tree import DecisionTreeClassifier

        held_out = self.contamination is not None or self.classifier == "forest"
        if self.classifier == "tree":
            clf = DecisionTreeClassifier(random_state=self.random_state)
        else:
            clf = RandomForestClassifier(n_estimators=100, random_state=self.random_state, n_jobs=-1,
                                         oob_score=held_out)
        with warnings.catch_warnings():  # samples without an out-of-bag vote are left out below
            warnings.filterwarnings("ignore", "Some inputs do not have OOB scores", UserWarning)
            self.classifier_ = clf.fit(feats, labels)
        # A forest's threads add tree votes in any order: predict in one, so that the same
        # inputs always get the same scores (to the last bit).
        self.classifier_.n_jobs = None
        self.offset_ = 0.0
        if held_out:
            proba = clf.oob_decision_function_ if self.classifier == "forest" else self._cross_validated(feats, labels)
            seen = ~np.isnan(proba).any(axis=1)  # a sample in every bootstrap has no out-of-bag vote
            self.clean_scores_ = self._margin(proba[seen], labels[seen])
            if self.contamination is not None:
                self.offset_ = _offset(self.clean_scores_, self.contamination)

    def _cross_validated(self, feats, labels):
        """Class probabilities of each sample from the same classifier fit on the other folds (5-fold)."""
        from sklearn.base import clone
        from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

        if len(labels) < 5:
            raise InvalidInputError(f"contamination needs at least 5 fit samples; got {len(labels)}.")
        stratify = np.bincount(labels)[np.unique(labels)].min() >= 5
        cv = (StratifiedKFold if stratify else KFold)(5, shuffle=True, random_state=self.random_state)
        return cross_val_predict(clone(self.classifier_), feats, labels, cv=cv, method="predict_proba")

    def _score(self, feats, predicted):
        return self._margin(self.classifier_.predict_proba(feats), predicted)

    def _margin(self, proba, predicted):
        return class_margin(proba, self.classifier_.classes_, predicted, self._n_classes())

    def _classifier_state(self):
        from skops.io import dumps

        return {"classifier": np.frombuffer(dumps(self.classifier_), dtype=np.uint8)}

    def _load_classifier(self, arrays, path):
        require("skops", "analyses")
        from skops.io import get_untrusted_types, loads

        data = bytes(arrays["classifier"])
        try:
            untrusted = set(get_untrusted_types(data=data)) - set(_TRUSTED)
            if untrusted:
                raise FileFormatError(f"{path!r} holds types a detector never has: {sorted(untrusted)}.")
            classifier = loads(data, trusted=_TRUSTED)
        except FileFormatError:
            raise
        except Exception as exc:
            raise FileFormatError(f"{path!r} holds no readable classifier ({exc}).") from exc
        kind, name = f"{type(classifier).__module__}.{type(classifier).__name__}", type(classifier).__name__
        if kind not in _CLASSIFIER_TYPES.values():
            raise FileFormatError(f"{path!r} holds a {name}, which a detector never has.")
        if kind != _CLASSIFIER_TYPES[self.classifier]:
            raise _damaged(path, f"it holds a {name}, but its header says classifier={self.classifier!r}")
        _check_classifier(classifier, self._n_features(), self._n_classes(), path)
        classifier.n_jobs = None  # as fit leaves it: one thread, the same scores to the last bit
        self.classifier_ = classifier


# --------------------------------------------------------------------------- NNSlicer
class SliceDetector(_ClassifierDetector):
    """NNSlicer's adversarial input detector (SPEC.md section 5).

    Each input is sliced with its predicted class as the criterion; the features are the
    per-synapse counts of one layer. A classifier fit on clean samples' slices labelled by
    class names a class for a new input's slice; the input is adversarial when that class
    differs from the model's.

    Parameters
    ----------
    slicer : nnslicer.Slicer
        A slicer of the model, fitted (profiled) or not; an unfitted one is fitted on the
        ``x_clean`` given to :meth:`fit`. ``Slicer(model, rule="effective_path")`` gives the
        EffectivePath baseline.
    layer : str or int, optional
        The weighted op whose synapses are the features, or a stage counted from the end for
        :func:`default_layer` (-1: the largest convolution of the last stage, the paper's code;
        -2: of the stage before). Default: -2 in a model of three or more stages (ResNet10:
        block 3), -1 otherwise (LeNet: conv2): see :data:`DEFAULT_LAYER`.
    classifier : {"tree", "forest"}, default "forest"
        A decision tree (the paper) or a random forest of 100 trees (better on every model of
        ``benchmarks/adversarial.py``, and smoother scores).
    random_state : int, default 0
    n_jobs : int, optional
        Ray workers for slicing (see :meth:`nnslicer.Slicer.slice_many`).
    chunk : int, default 128
        Samples sliced at a time (only the chosen layer's counts are kept).
    contamination : float in (0, 0.5), optional
        The share of clean inputs to flag. None (default, the paper's rule): flag an input
        when the classifier prefers another class than the model. A float: flag the inputs
        that score below that quantile of held-out clean scores (out-of-bag for a forest,
        5-fold cross-validated for a tree), which sets the false-alarm rate: at most about
        ``contamination`` of clean inputs like the fit ones. A tree's scores are mostly -1
        or 1, so a tree flags about its disagreement rate or almost nothing.

    Attributes
    ----------
    layer_ : str
    classifier_ : the fitted scikit-learn classifier
    offset_ : float
        0 without ``contamination``: an input is flagged when the classifier prefers another
        class; else the ``contamination`` quantile of ``clean_scores_``.
    clean_scores_ : ndarray
        The held-out scores of the clean fit samples (a forest's always, a tree's with
        ``contamination``); :attr:`held_out_flag_rate` is the share of them flagged.
    n_fit_ : int
        The clean samples fit on (with ``y``, the correctly classified ones).

    Examples
    --------
    >>> import keras, nnslicer
    >>> from analyses.attacks import fgsm
    >>> from nnslicer.datasets import load_digits
    >>> from nnslicer.models import small_cnn
    >>> keras.utils.set_random_seed(0)
    >>> (x_train, y_train), (x_test, y_test) = load_digits()
    >>> model = small_cnn()
    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> _ = model.fit(x_train, y_train, epochs=10, verbose=0)
    >>> det = SliceDetector(nnslicer.Slicer(model, granularity="channel"), layer=-1).fit(x_train, y_train)
    >>> det.layer_, det.predict(x_test[:4])           # +1 clean, -1 adversarial
    ('conv2', array([...]))
    >>> adv = fgsm(model, x_test, y_test, eps=0.15)  # successful attacks, with their clean sources
    >>> bool((det.predict(adv.x_adv) == -1).mean() > (det.predict(adv.x_clean) == -1).mean())
    True
    >>> det.save("detector.nnsd")  # doctest: +SKIP
    'detector.nnsd'
    """

    kind = "slice"
    takes = ("slicing", "classifier")
    _fields = ("layer", "classifier", "random_state", "chunk", "slicer", "profile")

    @classmethod
    def build(cls, model, slicer=None, layer=None, contamination=None, classifier=DEFAULT_CLASSIFIER, n_jobs=None):
        return cls(slicer, layer=layer, classifier=classifier, n_jobs=n_jobs, contamination=contamination)

    def __init__(self, slicer, layer=None, classifier=DEFAULT_CLASSIFIER, random_state=0, n_jobs=None, chunk=128,
                 contamination=None):
        self.slicer = slicer
        self.layer = layer
        self.classifier = classifier
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.chunk = chunk
        self.contamination = contamination

    def __repr__(self):
        return (f"SliceDetector(rule={getattr(self.slicer, 'rule', None)!r}, "
                f"granularity={getattr(self.slicer, 'granularity', None)!r}, "
                f"layer={getattr(self, 'layer_', self.layer)!r}, classifier={self.classifier!r}, "
                f"contamination={self.contamination})")

    def _graph(self):
        return self.slicer_.graph_

    def _n_classes(self):
        return self.slicer_.graph_.num_outputs

    def _n_features(self):
        """How many features an input has: the layer's synapses."""
        return self.slicer_.graph_[self.layer_].n_synapses

    def _check_params(self):
        super()._check_params()
        if not isinstance(self.chunk, numbers.Integral) or isinstance(self.chunk, bool) or self.chunk < 1:
            raise InvalidParameterError(f"The 'chunk' parameter of SliceDetector must be a positive int. "
                                        f"Got {self.chunk!r} instead.")

    def _prepare(self, x, y=None):
        """Fit the slicer on ``x`` when it is not fitted yet; pick the layer."""
        from nnslicer import Slicer

        if not isinstance(self.slicer, Slicer):  # a Keras model here would be trained by fit(x, y)
            raise InvalidParameterError(f"The 'slicer' parameter of SliceDetector must be an nnslicer.Slicer "
                                        f"(e.g. Slicer(model, granularity='channel')). Got "
                                        f"{type(self.slicer).__name__} instead.")
        if not hasattr(self, "slicer_"):
            if hasattr(self.slicer, "graph_"):
                self.slicer_ = self.slicer
            elif isinstance(x, Features):
                raise NotFittedError("Features come from a fitted slicer: fit the slicer first.")
            else:  # the user's slicer stays as it was given
                self.slicer_ = self.slicer.clone().fit(x, y)
        if not hasattr(self, "layer_"):
            self.layer_ = _check_layer(self.slicer_.graph_, self.layer, DEEP["slice"])

    def _features(self, x, progress=None):
        """Sparse per-sample synapse counts of the layer, and the model's classes."""
        from scipy import sparse

        x = as_batch(self.slicer_.graph_, x)
        predicted = _predict(self.slicer_.model, x, self.slicer_.batch_size)
        rows = []
        for start in range(0, len(x), self.chunk):  # the backward analysis stops at the layer
            counts = self.slicer_.synapse_counts(x[start:start + self.chunk], self.layer_,
                                                [int(t) for t in predicted[start:start + self.chunk]],
                                                n_jobs=self.n_jobs)
            rows.append(sparse.csr_matrix(counts.reshape(len(counts), -1).astype(np.float32)))
            if progress is not None:
                progress(start + len(counts))
        return Features(sparse.vstack(rows, format="csr"), predicted)

    def _state(self):
        s = self.slicer_
        meta = {"layer": self.layer_, "classifier": self.classifier, "random_state": self.random_state,
                "chunk": self.chunk, "contamination": self.contamination,
                "slicer": {"theta": s.theta_, "rule": s.rule, "granularity": s.granularity, "baseline": s.baseline,
                           "propagation": s.propagation, "batch_size": s.batch_size}}
        meta["profile"], arrays = s.profile_.to_arrays()
        return meta, {**arrays, **self._classifier_state()}

    @classmethod
    def _restore(cls, model, meta, arrays, path):
        from nnslicer import Profile, Slicer

        try:
            slicer = Slicer(model, **meta["slicer"]).fit(profile=Profile.from_arrays(meta["profile"], arrays))
        except FileFormatError as exc:  # the profile's own messages do not name the file
            raise FileFormatError(f"{path!r} holds a damaged profile: {exc}") from None
        det = cls(slicer, layer=meta["layer"], classifier=meta["classifier"],
                  random_state=meta["random_state"], chunk=meta["chunk"], contamination=meta.get("contamination"))
        det.slicer_, det.layer_ = slicer, _check_layer(slicer.graph_, meta["layer"])
        det._load_classifier(arrays, path)
        det.offset_ = float(meta["offset"])
        return det


# --------------------------------------------------------------------------- baselines
class _ActivationDetector(Detector):
    """Detectors that read a layer's activations (no slicing)."""

    _fields = ("layer",)

    def _graph(self):
        return self.graph_

    def _n_classes(self):
        return self.graph_.num_outputs

    def _n_features(self):
        """How many features an input has: the size of the layer's output once reduced."""
        shape = self._feature_model.outputs[0].shape[1:]  # known: lift refuses unknown shapes
        return self._reduce(np.zeros((1, *shape))).shape[1]

    def _prepare(self, x=None, y=None):
        """Lift the model (to name layers as slices do) and build the feature model."""
        import keras

        if hasattr(self, "_feature_model"):
            return

        from nnslicer import lift

        self.graph_ = lift(self.model)
        self.layer_ = self._pick_layer()
        op = self.graph_[self.layer_]
        # The layer's output after its fused activation, if any (the tensor slices count).
        tensor = self.model.get_layer(op.layer).output
        self._feature_model = keras.Model(self.model.inputs[0], [tensor, self.model.outputs[0]])

    def _features(self, x, progress=None):
        x = as_batch(self.graph_, x)
        feats, preds = [], []
        for i in range(0, len(x), 256):
            f, out = self._feature_model(x[i:i + 256], training=False)
            feats.append(self._reduce(np.asarray(f)))
            preds.append(np.asarray(out).argmax(-1))
            if progress is not None:
                progress(min(i + 256, len(x)))
        return Features(np.concatenate(feats), np.concatenate(preds).astype(np.int64))

    @classmethod
    def _restore(cls, model, meta, arrays, path):
        det = cls(model, **{k: meta[k] for k in cls._params if k in meta})
        det._prepare()
        if det.layer_ != meta["layer"]:
            raise FileFormatError(f"{path!r} was made for layer {meta['layer']!r}, not {det.layer_!r}.")
        det._load_arrays(arrays, path)
        det.offset_ = float(meta["offset"])
        return det


class FeatureMapDetector(_ActivationDetector, _ClassifierDetector):
    """The paper's FeatureMap baseline: a layer's raw activations, read by the same classifier
    as :class:`SliceDetector` (same default layer: the output of its default op).

    Parameters
    ----------
    model : keras.Model
    layer : str or int, optional
        A weighted op of the lifted model, or a stage as in :class:`SliceDetector`.
    classifier : {"tree", "forest"}, default "forest"
    random_state : int, default 0
    contamination : float in (0, 0.5), optional
        As in :class:`SliceDetector`.
    """

    kind = "feature_map"
    takes = ("classifier",)
    _params = ("layer", "classifier", "random_state", "contamination")

    @classmethod
    def build(cls, model, slicer=None, layer=None, contamination=None, classifier=DEFAULT_CLASSIFIER, n_jobs=None):
        return cls(model, layer=layer, classifier=classifier, contamination=contamination)

    def __init__(self, model, layer=None, classifier=DEFAULT_CLASSIFIER, random_state=0, contamination=None):
        self.model = model
        self.layer = layer
        self.classifier = classifier
        self.random_state = random_state
        self.contamination = contamination

    def __repr__(self):
        return (f"FeatureMapDetector(layer={getattr(self, 'layer_', self.layer)!r}, classifier={self.classifier!r}, "
                f"contamination={self.contamination})")

    def _pick_layer(self):
        return _check_layer(self.graph_, self.layer)

    @staticmethod
    def _reduce(f):
        return f.reshape(len(f), -1)

    def _state(self):
        return {"layer": self.layer_, "classifier": self.classifier, "random_state": self.random_state,
                "contamination": self.contamination}, self._classifier_state()

    def _load_arrays(self, arrays, path):
        self._load_classifier(arrays, path)


class MahalanobisDetector(_ActivationDetector):
    """Lee et al. (NeurIPS 2018): the Mahalanobis distance of a layer's features to the closest
    class mean, under class-conditional Gaussians with one shared covariance, fit on clean
    samples. Feature maps are averaged over space (as Lee et al.). This is the single-layer,
    clean-only variant: no input preprocessing and no logistic regression over layers, which
    would need adversarial examples to fit.

    Parameters
    ----------
    model : keras.Model
    layer : str, optional
        An op of the lifted model (default: the op feeding the logits: the penultimate features).
    contamination : float in (0, 0.5), default 0.05
        Share of the clean fit samples flagged: sets ``offset_``.

    Attributes
    ----------
    clean_scores_ : ndarray
        The scores of the clean fit samples (in-sample: the Gaussians were fit on them).
    """

    kind = "mahalanobis"
    _params = ("layer", "contamination")

    @classmethod
    def build(cls, model, slicer=None, layer=None, contamination=None, classifier=DEFAULT_CLASSIFIER, n_jobs=None):
        return cls(model, layer=layer, contamination=0.05 if contamination is None else contamination)
    _arrays = ("means", "classes", "precision")

    def __init__(self, model, layer=None, contamination=0.05):
        self.model = model
        self.layer = layer
        self.contamination = contamination

    def __repr__(self):
        return f"MahalanobisDetector(layer={getattr(self, 'layer_', self.layer)!r}, contamination={self.contamination})"

    def _pick_layer(self):
        graph = self.graph_
        if self.layer is None:  # the tensor the logits read, when an op computes it
            source = graph[graph.logits].inputs[0]
            return source if source in graph and source != graph.input else graph.logits
        if self.layer not in graph or self.layer == graph.input:
            raise InvalidParameterError(f"The 'layer' parameter of MahalanobisDetector must name an op of "
                                        f"{graph.name!r}. Got {self.layer!r} instead.")
        return self.layer

    @staticmethod
    def _reduce(f):
        return f.mean(axis=(1, 2)) if f.ndim == 4 else f.reshape(len(f), -1)

    def _check_params(self):
        _check_contamination(self.contamination, "MahalanobisDetector", optional=False)

    def _fit(self, feats, labels):
        """Class means and the shared covariance; ``offset_`` at the contamination quantile."""
        self.means_, self.classes_, self.precision_ = class_gaussians(feats, labels, self._n_classes())
        self.clean_scores_ = self._score(feats, labels)  # in-sample: the Gaussians saw them
        self.offset_ = _offset(self.clean_scores_, self.contamination)

    def _score(self, feats, predicted):
        return mahalanobis_scores(feats, self.means_, self.classes_, self.precision_)

    def _state(self):
        return {"layer": self.layer_, "contamination": self.contamination}, \
            {"means": self.means_, "classes": self.classes_, "precision": self.precision_}

    def _load_arrays(self, arrays, path):
        """Class means ``[n_classes, d]`` (rows of absent classes unused), the classes seen at fit
        and the precision ``[d, d]``, for the ``d`` features of the layer."""
        k, d = self._n_classes(), self._n_features()
        means, classes, precision = arrays["means"], arrays["classes"], arrays["precision"]
        if means.shape != (k, d) or precision.shape != (d, d):
            raise _damaged(path, f"its Mahalanobis means {means.shape} and precision {precision.shape} do not fit "
                                 f"{k} classes of {d} features")
        _check_classes(classes, k, path, "its Mahalanobis classes")
        self.means_, self.classes_, self.precision_ = means, classes, precision


#: Detection methods: name -> ``(detector class, the slicing rule it fixes or None)``; what
#: ``nnslicer detect fit --method`` offers, and (by each class's ``kind``) what
#: :func:`load_detector` reads back.
DETECTORS = {}


def register_detector(name, cls, rule=None, replace=False):
    """Offer the :class:`Detector` subclass ``cls`` as detection method ``name`` (with the
    slicing rule ``rule``, for a slice-based detector that needs one): ``nnslicer detect fit
    --method name`` builds it with ``cls.build``, and :func:`load_detector` reads its files
    back (``cls.kind`` names them)."""
    if not isinstance(name, str) or not name:
        raise InvalidParameterError(f"A detection method's name is a non-empty string. Got {name!r} instead.")
    if not (isinstance(cls, type) and issubclass(cls, Detector)) or not cls.kind:
        raise InvalidParameterError(f"register_detector takes a subclass of analyses.adversarial.Detector with a "
                                    f"kind. Got {cls!r} instead.")
    if name in DETECTORS and not replace:
        raise InvalidParameterError(f"A detection method named {name!r} is already registered (replace=True to "
                                    "replace it).")
    DETECTORS[name] = (cls, rule)
    return cls


register_detector("slice", SliceDetector)
register_detector("effective_path", SliceDetector, rule="effective_path")
register_detector("feature_map", FeatureMapDetector)
register_detector("mahalanobis", MahalanobisDetector)


def _offset(scores, contamination):
    """The offset below which a ``contamination`` share of the clean ``scores`` lies (computed
    in float64 whatever the parameter's type, so that a file's offset can be checked)."""
    return float(np.quantile(scores, float(contamination)))
