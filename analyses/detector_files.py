"""Detector files (``.nnsd``): what their header and arrays may hold, and the checks that a
file read back is a detector this library wrote, for the model it is given.

Loading runs no code: the file holds arrays, a JSON header and (for tree and forest
classifiers) skops' format restricted to scikit-learn's tree types; every field, array and
tree node is checked before use (scikit-learn reads trees without bounds checks). Writing is
:meth:`analyses.adversarial.Detector.save`.
"""

from __future__ import annotations

import math
import numbers
import reprlib

import numpy as np

from nnslicer.errors import FileFormatError, InvalidInputError, InvalidParameterError
from nnslicer.io import is_int, load_archive

__all__ = ["load_detector"]


def _is_number(value):
    """A finite int or float (JSON reads NaN and Infinity as floats)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _library():
    from . import adversarial  # the detectors (which import this module)

    return adversarial


def _kinds():
    """Detector classes by the ``kind`` their files are saved under (the registered ones)."""
    return {cls.kind: cls for cls, _ in _library().DETECTORS.values()}


class _OneOf:
    """A header field that is one of the strings ``values()`` gives when a file is read:
    ``str()`` says so in an error, calling it tests a value."""

    def __init__(self, values):
        self.values = values

    def __str__(self):
        return f"one of {', '.join(map(repr, self.values()))}"

    def __call__(self, value):
        return isinstance(value, str) and value in self.values()


_KIND = _OneOf(lambda: tuple(_kinds()))
_CLASSIFIER = _OneOf(lambda: _library().CLASSIFIERS)
_TEXT = ("a string", lambda v: isinstance(v, str))
_OBJECT = ("a JSON object", lambda v: isinstance(v, dict))
#: The header fields of a detector file: name -> (what it must be, a test of its value). Which
#: ones a kind needs is its ``_fields``; ``model``, ``n_fit`` and ``contamination`` may be absent.
_FIELDS = {
    "detector": (_KIND, _KIND),
    "fingerprint": _TEXT,
    "model": _TEXT,
    "layer": _TEXT,
    "offset": ("a finite number", _is_number),
    "n_fit": ("a positive int or null", lambda v: v is None or (is_int(v) and v >= 1)),
    "contamination": ("a number in (0, 0.5) or null", lambda v: v is None or (_is_number(v) and 0 < v < 0.5)),
    "classifier": (_CLASSIFIER, _CLASSIFIER),
    "random_state": ("an int or null", lambda v: v is None or is_int(v)),
    "chunk": ("a positive int", lambda v: is_int(v) and v >= 1),
    "slicer": _OBJECT,  # its values are checked by Slicer, the profile's by Profile.from_arrays
    "profile": _OBJECT,
}
#: The arrays of a detector file besides its profile's: name -> (dtype, dimensions), as saved.
_ARRAYS = {"classifier": (np.uint8, 1), "clean_scores": (np.float64, 1), "means": (np.float64, 2),
           "precision": (np.float64, 2), "classes": (np.int64, 1)}


def _damaged(path, what):
    """The error for the detector file at ``path`` that is wrong in ``what`` (on one line)."""
    return FileFormatError(f"{path!r} is a damaged detector file: {' '.join(what.split()).rstrip('.')}.")


def _check_header(meta, path):
    """The detector class of a file's header ``meta``, once each field of :data:`_FIELDS` that
    it has is of the right type and range and none that the class needs is missing."""
    if not isinstance(meta, dict):
        raise _damaged(path, f"its header is a {type(meta).__name__}, not a JSON object")
    for name, value in meta.items():
        what, test = _FIELDS.get(name, (None, None))
        if test is not None and not test(value):
            raise _damaged(path, f"its {name!r} is {reprlib.repr(value)}, not {what}")
    cls = _kinds().get(meta.get("detector"))
    missing = [name for name in ("detector", "fingerprint", "offset", *getattr(cls, "_fields", ()))
               if name not in meta]
    if missing:
        raise _damaged(path, f"its header lacks {', '.join(map(repr, missing))}")
    return cls


def _check_arrays(arrays, needed, path):
    """Every array in ``needed`` is there, and each of :data:`_ARRAYS` has the dtype and number
    of dimensions it is saved with, and only finite values."""
    missing = [name for name in needed if name not in arrays]
    if missing:
        raise _damaged(path, f"it lacks the array(s) {', '.join(map(repr, missing))}")
    for name, (dtype, ndim) in _ARRAYS.items():
        a = arrays.get(name)
        if a is None:
            continue
        if a.dtype != dtype or a.ndim != ndim:
            raise _damaged(path, f"its array {name!r} is {a.ndim}-D of {a.dtype}, not {ndim}-D of {np.dtype(dtype)}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise _damaged(path, f"its array {name!r} holds NaN or inf values")


def _check_offset(cls, meta, arrays, path):
    """The file holds no array a detector never has, and its clean scores and offset are as
    ``fit`` makes them: scores in the detector's range, of every fit sample (out-of-bag: of at
    most every one, for a forest), and the offset their ``contamination`` quantile (0 without)."""
    unknown = [name for name in arrays if name not in _ARRAYS and name != "class_counts"
               and not name.startswith(("mean/", "class_mean/"))]
    if unknown:
        raise _damaged(path, f"it holds arrays a detector never has: {', '.join(map(repr, unknown[:3]))}")
    scores, contamination, n_fit = arrays.get("clean_scores"), meta.get("contamination"), meta.get("n_fit")
    if scores is not None:
        low, high = cls._score_range
        every = meta.get("classifier") != "forest"
        if not len(scores) or scores.min() < low or scores.max() > high or (n_fit is not None and (
                len(scores) > n_fit or (every and len(scores) != n_fit))):
            raise _damaged(path, f"its {len(scores)} clean scores are not in [{low}, {high}], or not of its "
                                 f"{n_fit} fit samples")
    if contamination is None:
        if cls is _library().MahalanobisDetector or meta["offset"] != 0.0:
            raise _damaged(path, f"its offset {meta['offset']!r} comes without a contamination")
        return
    if scores is None or meta["offset"] != _library()._offset(scores, contamination):
        raise _damaged(path, f"its offset {meta['offset']!r} is not the {contamination} quantile of its clean scores")


def _check_classes(classes, n_classes, path, what):
    """``classes`` is a non-empty array of distinct class indices below ``n_classes``, in order."""
    if not (isinstance(classes, np.ndarray) and classes.dtype.kind in "iu" and classes.ndim == 1 and len(classes)
            and (classes >= 0).all() and (classes < n_classes).all() and (np.diff(classes) > 0).all()):
        raise _damaged(path, f"{what} are not increasing class indices below {n_classes}")


def _check_classifier(clf, n_features, n_classes, path):
    """Refuse a decision tree or random forest (as skops loads it: only type-checked) unless
    ``predict_proba`` can read ``n_features`` features with it, into classes below ``n_classes``,
    without reading out of bounds, looping or giving NaN (scikit-learn trusts its trees)."""
    from sklearn.ensemble import RandomForestClassifier

    _check_classes(getattr(clf, "classes_", None), n_classes, path, "its classifier's classes")
    k = len(clf.classes_)
    if not isinstance(clf, RandomForestClassifier):
        _check_tree(clf, n_features, k, path, "its tree")
        return
    _check_estimator(clf, n_features, k, path, "its forest")
    trees = getattr(clf, "estimators_", None)
    if not isinstance(trees, list) or len(trees) != clf.n_estimators:
        raise _damaged(path, f"its forest of n_estimators={clf.n_estimators} holds "
                             f"{len(trees) if isinstance(trees, list) else 'no list of'} trees")
    for i, tree in enumerate(trees):
        _check_tree(tree, n_features, k, path, f"tree {i} of its forest")


def _check_estimator(est, n_features, n_classes, path, where):
    """A tree's or forest's hyperparameters (by scikit-learn's own rules) and the fitted
    attributes that ``predict_proba`` reads."""
    try:
        type(est)._validate_params(est)
    except Exception as exc:  # scikit-learn's InvalidParameterError, or a missing parameter
        raise _damaged(path, f"{where} has a bad parameter ({type(exc).__name__}: {exc})") from None
    for name, want in (("n_outputs_", 1), ("n_features_in_", n_features), ("n_classes_", n_classes)):
        got = getattr(est, name, None)
        if not is_int(got) or got != want:
            raise _damaged(path, f"{where} has {name} {reprlib.repr(got)}, not {want}")


def _check_tree(est, n_features, n_classes, path, where):
    """A fitted DecisionTreeClassifier: :func:`_check_estimator`, then its ``tree_``: one output
    of ``n_classes`` classes over ``n_features`` features, node arrays of ``node_count`` nodes
    that form a tree rooted at node 0 (each node but the root the child of exactly one node
    before it: no cycle; leaves have no children, other nodes two), split on features in range,
    at finite thresholds, with finite non-negative values, and as deep as its ``max_depth``."""
    from sklearn.tree import DecisionTreeClassifier
    from sklearn.tree._tree import TREE_LEAF, Tree

    if type(est) is not DecisionTreeClassifier or type(getattr(est, "tree_", None)) is not Tree:
        raise _damaged(path, f"{where} is not a fitted DecisionTreeClassifier")
    _check_estimator(est, n_features, n_classes, path, where)
    tree = est.tree_
    if (tree.n_features, tree.n_outputs, tree.n_classes.tolist(), tree.max_n_classes) \
            != (n_features, 1, [n_classes], n_classes):
        raise _damaged(path, f"{where} reads {tree.n_features} features into {tree.n_classes.tolist()} classes, "
                             f"not {n_features} features into [{n_classes}]")
    n = tree.node_count
    if not 1 <= n == tree.capacity:  # the node arrays hold `capacity` nodes; reads go to `node_count`
        raise _damaged(path, f"{where} counts {n} nodes and holds {tree.capacity}")
    left, right, ids = tree.children_left, tree.children_right, np.arange(n)
    inner = left != TREE_LEAF
    children = np.stack([left[inner], right[inner]])
    if not (np.array_equal(inner, right != TREE_LEAF) and (children > ids[inner]).all() and (children < n).all()):
        raise _damaged(path, f"{where} has a node whose children are not two nodes after it, or leaves")
    if not np.array_equal(np.sort(children, axis=None), ids[1:]):
        raise _damaged(path, f"{where} has a node that is not the child of exactly one node")
    feature = tree.feature[inner]
    if not ((feature >= 0) & (feature < n_features)).all():
        raise _damaged(path, f"{where} splits on a feature out of 0..{n_features - 1}")
    if tree.value.shape != (n, 1, n_classes) or (tree.value < 0).any() or not all(
            np.isfinite(a).all() for a in (tree.value, tree.threshold, tree.impurity, tree.weighted_n_node_samples)):
        raise _damaged(path, f"{where} holds NaN, inf or negative values, or values of shape {tree.value.shape}")
    if tree.max_depth != _depth(left, right):
        raise _damaged(path, f"{where} has max_depth {tree.max_depth}, but a depth of {_depth(left, right)}")


def _depth(left, right):
    """The depth of a tree (root 0 alone: 0) whose nodes have one parent each, before them."""
    level, depth = np.array([0]), -1
    while len(level):
        below = np.concatenate([left[level], right[level]])
        level, depth = below[below >= 0], depth + 1
    return depth


def load_detector(path, model):
    """A fitted detector from a file written by ``detector.save(path)``, for ``model``.

    Loading runs no code: the file holds arrays, a JSON header and (for tree and forest
    classifiers) skops' format restricted to scikit-learn's tree types. Everything in it is
    checked before use: each header field's type and range, each array's dtype, shape and
    finiteness, and every node of every tree (scikit-learn reads them without bounds checks).

    Raises
    ------
    FileFormatError
        For a damaged or crafted file, a file that is not a detector, or a detector made for
        another model.
    """
    from nnslicer import lift

    meta, arrays = load_archive(path, "detector")
    cls = _check_header(meta, path)
    _check_arrays(arrays, cls._arrays, path)
    _check_offset(cls, meta, arrays, path)
    fingerprint = lift(model).fingerprint
    if meta["fingerprint"] != fingerprint:
        raise FileFormatError(f"{path!r} was fitted for model {meta.get('model')!r} (fingerprint "
                              f"{meta['fingerprint']}), not for {model.name!r} (fingerprint {fingerprint}).")
    try:
        det = cls._restore(model, meta, arrays, path)
    except (KeyError, TypeError, InvalidParameterError, InvalidInputError) as exc:  # e.g. a bad slicer parameter
        raise _damaged(path, f"{type(exc).__name__}: {exc}") from exc
    if "clean_scores" in arrays:
        det.clean_scores_ = arrays["clean_scores"]
    if meta.get("n_fit") is not None:
        det.n_fit_ = int(meta["n_fit"])
    return det
