"""Options and data shared by the commands that take classes (``prune``, ``protect``, ``compare``)."""

from __future__ import annotations

import numpy as np

from nnslicer import check_labels
from nnslicer.cli.options import add_class_names_option, add_slicing_options, class_names, load_array, load_model
from nnslicer.datasets import class_label
from nnslicer.errors import InvalidInputError

from ..synapse_scores import check_classes

__all__ = ["parse_classes", "load_class_data", "add_class_data_options", "print_accuracy"]


def parse_classes(text):
    """``"0,1,5"`` -> ``[0, 1, 5]``; a clear error for anything else (blanks, repeats)."""
    try:
        classes = [int(t) for t in text.split(",")]
    except ValueError:
        raise InvalidInputError(f"--classes takes comma-separated class indices, e.g. 0,1,5; got {text!r}.") from None
    if len(set(classes)) != len(classes):
        raise InvalidInputError(f"--classes names a class twice: {text!r}.")
    return classes


def load_class_data(args, caller):
    """``(model, x, y, classes, names)`` from the options of :func:`add_class_data_options`
    (``names``: the classes' names from ``--class-names``, or None)."""
    model = load_model(args.model)
    x = load_array(args.data, "x")
    y = load_array(args.labels, "y")
    if len(x) != len(y):
        raise InvalidInputError(f"--data has {len(x)} samples and --labels {len(y)}.")
    num_classes = int(model.output_shape[-1])
    y = check_labels(y, len(x), num_classes)
    classes = None if args.classes is None else check_classes(parse_classes(args.classes), y, num_classes, caller)
    return model, x, y, classes, class_names(args, model)


def add_class_data_options(p, verb, classes_required=True):
    """The model, data, classes and slicing options shared by ``prune`` and ``protect``."""
    p.add_argument("model", help="a .keras or .h5 model")
    p.add_argument("--data", required=True, help="samples (.npy/.npz)")
    p.add_argument("--labels", required=True, help="their integer labels (.npy/.npz)")
    p.add_argument("--classes", required=classes_required, default=None,
                   help=f"classes to {verb}, comma-separated (e.g. 0,1,5)")
    p.add_argument("--max-per-class", type=int, default=None, help="slice at most this many samples per class")
    add_slicing_options(p)
    add_class_names_option(p)
    p.add_argument("--batch-size", type=int, default=256, help="samples per batch (default 256)")


def print_accuracy(before, after, x, y, classes=None, what="--data", names=None):
    """Say what a command did to a model: its accuracy on ``x`` (labels ``y``) before and after,
    on the target ``classes`` (when given; named by ``names``) and on all classes."""
    def accuracy(model, sel=slice(None)):
        return 100.0 * float(np.mean(model.predict(x[sel], batch_size=256, verbose=0).argmax(-1) == y[sel]))

    parts = []
    if classes is not None:
        sel = np.isin(y, classes)
        targets = ", ".join(class_label(c, names) for c in classes)
        parts.append(f"target classes ({targets}) {accuracy(before, sel):.1f}% -> {accuracy(after, sel):.1f}%")
    parts.append(f"all classes {accuracy(before):.1f}% -> {accuracy(after):.1f}%")
    print(f"accuracy on {what} ({len(x):,} samples): {', '.join(parts)}")
