"""Slice a Keras Applications network: MobileNetV2 on Fashion-MNIST, then prune it for two classes.

Trains Keras' MobileNetV2 (width 0.35, random initialisation, 32x32x3 inputs, 10 classes)
briefly on Fashion-MNIST padded to 32x32 and repeated over 3 channels, slices one test image
for its predicted class, renders that slice, and prunes the network for two classes with
NNSlicer's class-focused pruning, evaluated on those classes' test images.

Needs Debian's ``dataset-fashion-mnist`` package (``apt-get install dataset-fashion-mnist``) and
Graphviz's ``dot`` for the picture (without it the DOT text is written instead). About two
minutes on two CPU cores.

    python examples/slice_mobilenet.py                  # writes mobilenet-slice.svg here
    python examples/slice_mobilenet.py --out /tmp/mn --epochs 1 --train 6000
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import nnslicer  # noqa: E402
from analyses.pruning import class_focused_prune  # noqa: E402
from analyses.synapse_scores import class_slices  # noqa: E402
from nnslicer.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist  # noqa: E402
from nnslicer.errors import MissingDependencyError  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--out", default=".", help="folder for the picture (default: here)")
parser.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
parser.add_argument("--train", type=int, default=12_000, help="training images used (default 12,000)")
parser.add_argument("--classes", default="1,7", help="classes to prune for (default 1,7: trouser, sneaker)")
parser.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5],
                    help="shares of each layer's synapses pruned (default 0.2 0.3 0.4 0.5)")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)


def cifar_shaped(x):
    """28x28x1 images as 32x32x3: zero-padded by 2, the grey channel repeated."""
    return np.repeat(np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)


keras.utils.set_random_seed(0)
(x_train, y_train), (x_test, y_test) = load_fashion_mnist()
x_train, y_train = cifar_shaped(x_train[:args.train]), y_train[:args.train]
x_test = cifar_shaped(x_test)

model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10, alpha=0.35)
for layer in model.layers:  # Keras' 0.999 would leave the moving statistics near their start after
    if isinstance(layer, keras.layers.BatchNormalization):  # a few hundred steps
        layer.momentum = 0.9
model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
start = time.perf_counter()
model.fit(x_train, y_train, epochs=args.epochs, batch_size=128, verbose=0)
_, accuracy = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
print(f"MobileNetV2 (alpha 0.35, {model.count_params():,} parameters): trained {args.epochs} epoch(s) on "
      f"{len(x_train):,} images in {time.perf_counter() - start:.0f} s, test accuracy {accuracy:.1%}")

# Lift (checked against Keras) and profile on 2,000 training images.
start = time.perf_counter()
slicer = nnslicer.Slicer(model).fit(x_train[:2000], y_train[:2000])
graph = slicer.graph_
print(f"lifted and profiled in {time.perf_counter() - start:.1f} s: {len(graph.ops)} ops, "
      f"{graph.n_neurons():,} neurons, {graph.n_synapses():,} synapses")

# One test image's slice for its predicted class.
start = time.perf_counter()
s = slicer.slice(x_test[0])
print(f"test image 0, a {FASHION_MNIST_CLASSES[y_test[0]]}, predicted {FASHION_MNIST_CLASSES[s.targets[0]]}: "
      f"sliced in {time.perf_counter() - start:.1f} s")
print(f"  {s.n_neurons:,} / {s.total_neurons:,} neurons ({s.n_neurons / s.total_neurons:.1%}), "
      f"{s.n_synapses:,} / {s.total_synapses:,} synapses ({s.n_synapses / s.total_synapses:.1%})")
path = os.path.join(args.out, "mobilenet-slice.svg")
try:
    nnslicer.render(s, path)                      # the collapsed view: one box per op, in columns
    print(f"  drawn in {path}")
except MissingDependencyError as exc:             # no Graphviz: the DOT text is written beside it
    print(f"  not drawn: {exc}")

# Class-focused pruning for two classes, from the slices of 100 training images of each (sliced
# once, pruned at several ratios): how much of this compact network can go?
classes = [int(c) for c in args.classes.split(",")]
start = time.perf_counter()
slices = class_slices(slicer, x_train, y_train, classes, max_per_class=100)
mask = np.isin(y_test, classes)
print(f"pruning for {' and '.join(FASHION_MNIST_CLASSES[c] for c in classes)} (class slices in "
      f"{time.perf_counter() - start:.0f} s); accuracy on their {mask.sum():,} test images, over the 10 "
      "classes and between the two:")


def accuracies(m):
    p = m.predict(x_test[mask], batch_size=512, verbose=0)
    among = np.asarray(classes)[p[:, classes].argmax(1)]
    return np.mean(p.argmax(1) == y_test[mask]), np.mean(among == y_test[mask])


pruned = {ratio: class_focused_prune(model, slicer, x_train, y_train, classes=classes, ratio=ratio, slices=slices)
          for ratio in args.ratios}  # ratio -> (pruned model, PruneReport)
flops = next(iter(pruned.values()))[1].flops_before if pruned else 0
print("  ratio         non-zero FLOPs  parameters  accuracy (10 classes / between the two)")
for ratio, (m, r) in [(0.0, (model, None)), *pruned.items()]:
    nonzero, params = (r.nonzero_flops_after, r.params_after) if r else (flops, m.count_params())
    print(f"  {ratio:5.0%}  {nonzero:>22,}  {params:>10,}  " + "{:.1%} / {:.1%}".format(*accuracies(m)))
print("  (parameters grow: mean compensation gives the bias-free convolutions a bias; no unit is removed, as\n"
      "   a unit goes only when all its synapses do)")
