"""Slice a digit classifier: which neurons and synapses made its prediction?

Trains a small CNN on scikit-learn's bundled 8x8 digits, profiles it on the training set,
slices one test digit for its predicted class and for another class, and compares the two.

    python examples/slice_a_digit.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import nnslicer  # noqa: E402
from nnslicer.datasets import load_digits  # noqa: E402
from nnslicer.models import small_cnn  # noqa: E402

keras.utils.set_random_seed(0)
(x_train, y_train), (x_test, y_test) = load_digits()
model = small_cnn()
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
model.fit(x_train, y_train, epochs=20, batch_size=64, verbose=0)

# Lift the model and record every neuron's mean activation over the training digits.
slicer = nnslicer.Slicer(model, theta=0.2).fit(x_train, y_train)
print(slicer.graph_.summary(), "\n")

# The slice of one test digit for its predicted class.
digit = x_test[0]
own = slicer.slice(digit)
print(f"digit labelled {y_test[0]}, predicted {own.targets[0]}:", own)
print(own.summary(), "\n")

# The slice for another class: which part of the network argues for it?
other = slicer.slice(digit, target=(own.targets[0] + 1) % 10)
print("slice for class", other.targets[0], other)
print(f"synapse overlap with the predicted class's slice: {own.jaccard(other):.2f}")

# Slices are files that load back exactly.
own.save("digit0-slice.npz")
assert nnslicer.Slice.load("digit0-slice.npz") == own
print("saved digit0-slice.npz; members of the last dense layer:",
      len(own.synapses().get("predictions", [])), "synapses")
