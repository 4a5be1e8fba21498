"""Slice an LSTM that reads an image row by row: which rows, and which of its units, made the call.

Trains :func:`nnslicer.models.lstm_reader` (an LSTM of 64 units over 28 steps of 28 pixels, the
image's rows) on Fashion-MNIST for a few epochs, slices one test image for its predicted class
(the LSTM is unrolled into its 28 steps, its kernels' synapse counts summed over them), and
prints which rows of the image and which steps' hidden units the slice reads, at element
and channel granularity, then draws the collapsed slice (the LSTM one box).

Needs Debian's ``dataset-fashion-mnist`` package (``apt-get install dataset-fashion-mnist``) and
Graphviz's ``dot`` for the picture (without it the DOT text is written instead). About two
minutes on two CPU cores.

    python examples/slice_rnn.py                       # writes rnn-slice.svg here
    python examples/slice_rnn.py --out /tmp/rnn --epochs 1 --train 10000
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import nnslicer  # noqa: E402
from nnslicer.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist  # noqa: E402
from nnslicer.errors import MissingDependencyError  # noqa: E402
from nnslicer.models import lstm_reader  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--out", default=".", help="folder for the picture (default: here)")
parser.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
parser.add_argument("--train", type=int, default=30_000, help="training images used (default 30,000)")
parser.add_argument("--image", type=int, default=0, help="the test image sliced (default 0)")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)

keras.utils.set_random_seed(0)
(x_train, y_train), (x_test, y_test) = load_fashion_mnist()
rows_train, rows_test = x_train[:args.train, :, :, 0], x_test[..., 0]  # 28 steps of 28 pixels
y_train = y_train[:args.train]
model = lstm_reader()
model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
start = time.perf_counter()
model.fit(rows_train, y_train, epochs=args.epochs, batch_size=128, verbose=0)
_, accuracy = model.evaluate(rows_test, y_test, batch_size=512, verbose=0)
print(f"LSTM reader ({model.count_params():,} parameters, 64 units, 28 steps): trained {args.epochs} epoch(s) "
      f"on {len(rows_train):,} images in {time.perf_counter() - start:.0f} s, test accuracy {accuracy:.1%}")

image = rows_test[args.image]
for granularity in ("element", "channel"):
    slicer = nnslicer.Slicer(model, granularity=granularity).fit(rows_train[:2000], y_train[:2000])
    graph = slicer.graph_
    slicer.slice(rows_test[args.image + 1])  # the first slice traces TensorFlow's functions: not timed
    start = time.perf_counter()
    sl = slicer.slice(image)
    seconds = time.perf_counter() - start
    predicted = sl.targets[0]
    print(f"\n{granularity} granularity: test image {args.image} ({FASHION_MNIST_CLASSES[y_test[args.image]]}), "
          f"predicted {FASHION_MNIST_CLASSES[predicted]}, sliced in {seconds:.2f} s, {sl}")
    print(sl.summary())
    kernel, recurrent = [name for name in graph.weighted_ops if graph[name].layer == "lstm"]
    for name, what in ((kernel, "input kernel (pixels -> gates)"), (recurrent, "recurrent kernel (units -> gates)")):
        counts = sl.synapse_counts[name]
        print(f"  {what}: {np.count_nonzero(counts):,} of {counts.size:,} synapses, summed over the 28 steps")
    if granularity == "element":
        per_row = np.abs(sl.neuron_counts[graph.input]).sum(axis=1)  # the image's rows, the LSTM's steps
        print("  rows of the image the slice reads (sum of |count| over the row's pixels):")
        peak = max(1, per_row.max())
        for row, value in enumerate(per_row):
            print(f"    row {row:2d} {'#' * round(30 * value / peak):<30} {value}")
        hidden = [np.count_nonzero(sl.neuron_counts[f"lstm/t{t}/h"]) for t in range(28)]
        print("  hidden units in the slice at each step: " + " ".join(map(str, hidden)))
        path = os.path.join(args.out, "rnn-slice.svg")
        try:
            nnslicer.render(sl, path, view="collapsed")
            print(f"  wrote {path}")
        except MissingDependencyError as exc:
            print(f"  {exc}")
    else:
        print("  top input features (pixel columns, averaged over rows): "
              + ", ".join(f"column {i[0]} {c:+d}" for i, c in sl.top(graph.input, 8)))
