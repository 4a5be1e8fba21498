"""Compression budgets from a layer ranking, bit-flip checks, and what compression changes.

Trains a small CNN on scikit-learn's digits, ranks its layers (FIT), then

1. quantizes the weights at an average of 3 bits, the most important layers at 4 and the
   least important at 2 (activations at 8), against 3 bits everywhere (on this small CNN the
   uniform budget can come out ahead: the ranking is a hint, not a guarantee);
2. prunes 30% of the filters by L1 norm, with per-layer rates from the ranking, against the
   same rate in every layer;
3. injects random bit flips and finds how many of the most important layers must be
   duplicate-checked to stay within 1 point of the clean accuracy;
4. compares the original with a mixed-precision model at 4 bits on average beyond accuracy (flips, confidence,
   saliency maps, slice survival) and writes an HTML report.

    python examples/compress_and_compare.py     # about a minute; writes compression-report.html
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from analyses.compression import compress  # noqa: E402
from analyses.compression_report import compare  # noqa: E402
from analyses.faults import fault_curve, layers_to_check  # noqa: E402
from analyses.layer_importance import layer_importance  # noqa: E402
from nnslicer.datasets import load_digits  # noqa: E402
from nnslicer.models import small_cnn  # noqa: E402

keras.utils.set_random_seed(0)
(x_train, y_train), (x_test, y_test) = load_digits()
model = small_cnn()
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(x_train, y_train, epochs=25, batch_size=64, verbose=0)


def accuracy(m):
    return np.mean(m.predict(x_test, verbose=0).argmax(1) == y_test) * 100


ranking = layer_importance(model, x_train[:256], criterion="fit", reduction="linf")
print("ranking (most important first):", list(ranking))
print(f"original                     {accuracy(model):5.1f}%")
for label, kwargs in [("W3 everywhere", dict(criterion="uniform", bits=3)),
                      ("W3 on average, by ranking", dict(ranking=ranking, bits=3)),
                      ("30% pruned in every layer", dict(criterion="uniform", prune=0.3)),
                      ("30% pruned, rates by ranking", dict(ranking=ranking, prune=0.3))]:
    print(f"{label:28s} {accuracy(compress(model, x_train[:256], **kwargs)[0]):5.1f}%")

curve = fault_curve(model, x_test, y_test, list(ranking), rate=1e-5, repeats=5)
print("accuracy with 0, 1, 2, ... least important layers unchecked:",
      [round(a * 100, 1) for a in curve["accuracy"]])
k = layers_to_check(curve)
print(f"check the {k} most important of {len(ranking)} layers to lose at most 1 point" if k else
      f"at this rate no layer needs checking to lose at most 1 point ({len(ranking)} layers)")

mixed, _ = compress(model, x_train[:256], ranking=ranking, bits=4)
report = compare(model, mixed, x_test, y_test, max_per_class=5, names=("float32", "W4/A8 mixed"))
print(report.headline())
report.save_html("compression-report.html")
print("report: compression-report.html")
