"""Class-level slices: what part of a network does each class use?

Aggregates the absolute slices of test digits per class (as NNSlicer's pruning and
protection do) and prints how much of each layer every class needs and how the classes'
slices overlap.

    python examples/class_slices.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import nnslicer  # noqa: E402
from nnslicer.datasets import load_digits  # noqa: E402
from nnslicer.models import small_cnn  # noqa: E402

keras.utils.set_random_seed(0)
(x_train, y_train), (x_test, y_test) = load_digits()
model = small_cnn()
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
model.fit(x_train, y_train, epochs=20, batch_size=64, verbose=0)

slicer = nnslicer.Slicer(model).fit(x_train, y_train)
class_slices = {}
for c in range(10):
    x_c = x_test[y_test == c]
    class_slices[c] = slicer.slice(x_c, target=c, aggregate="abs")

print("share of each weighted layer's synapses in the class slice:")
layers = slicer.graph_.weighted_ops
print("class  " + "  ".join(f"{name:>11}" for name in layers))
for c, s in class_slices.items():
    shares = [np.count_nonzero(s.synapse_counts[n]) / s.synapse_counts[n].size for n in layers]
    print(f"{c:>5}  " + "  ".join(f"{v:>11.1%}" for v in shares))

overlap = np.array([[class_slices[a].jaccard(class_slices[b]) for b in range(10)] for a in range(10)])
print("\nJaccard overlap of class slices (synapses):")
print(np.array2string(overlap, precision=2, suppress_small=True))
