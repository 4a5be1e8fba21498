"""Slice a Vision Transformer: which patches, heads and attention links made its prediction.

Trains a small ViT (:func:`nnslicer.models.vit`: 4x4 patches, 2 encoder blocks of width 64,
4 heads) on Fashion-MNIST for a few epochs, slices one test image for its predicted class at
element granularity, prints where the slice lives (per block, the top tokens, which patches of
the image), and draws two pictures: the collapsed slice (each encoder block's attention and MLP
one box) and the attention view (per head, which key patches each query patch's kept
contributions come from).

Needs Debian's ``dataset-fashion-mnist`` package (``apt-get install dataset-fashion-mnist``) and
Graphviz's ``dot`` for the pictures (without it the DOT text is written instead). About two
minutes on two CPU cores.

    python examples/slice_vit.py                       # writes vit-slice.svg, vit-attention.png here
    python examples/slice_vit.py --out /tmp/vit --epochs 1 --train 10000
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
from nnslicer.models import vit  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--out", default=".", help="folder for the pictures (default: here)")
parser.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
parser.add_argument("--train", type=int, default=30_000, help="training images used (default 30,000)")
parser.add_argument("--image", type=int, default=0, help="the test image sliced (default 0)")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)

keras.utils.set_random_seed(0)
(x_train, y_train), (x_test, y_test) = load_fashion_mnist()
x_train, y_train = x_train[:args.train], y_train[:args.train]
model = vit()
model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
start = time.perf_counter()
model.fit(x_train, y_train, epochs=args.epochs, batch_size=128, verbose=0)
_, accuracy = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
print(f"ViT ({model.count_params():,} parameters, 49 tokens of 64 features, 2 blocks): trained {args.epochs} "
      f"epoch(s) on {len(x_train):,} images in {time.perf_counter() - start:.0f} s, test accuracy {accuracy:.1%}")

slicer = nnslicer.Slicer(model).fit(x_train[:2000], y_train[:2000])
image = x_test[args.image]
slicer.slice(x_test[args.image + 1])  # the first slice traces TensorFlow's functions: not timed
start = time.perf_counter()
sl = slicer.slice(image)
predicted = sl.targets[0]
print(f"\ntest image {args.image} ({FASHION_MNIST_CLASSES[y_test[args.image]]}), predicted "
      f"{FASHION_MNIST_CLASSES[predicted]}: sliced in {time.perf_counter() - start:.2f} s, {sl}")
print(sl.summary())

# The slice's counts on each token after each block, and on the input pixels by 4x4 patch.
print("\ntop tokens (patch row, column) after each block, by the sum of |count| over features:")
for name in [op.name for op in slicer.graph_.ops if op.call.startswith(("attention_", "mlp_")) and
             op.name == f"{op.call}/residual"]:
    per_token = np.abs(sl.neuron_counts[name]).sum(axis=1)
    top = np.argsort(-per_token, kind="stable")[:5]
    print(f"  {name:<20} " + "  ".join(f"({t // 7},{t % 7}) {per_token[t]}" for t in top))
pixels = np.abs(sl.neuron_counts[slicer.graph_.input][..., 0]).reshape(7, 4, 7, 4).sum(axis=(1, 3))
print("\ninput pixels in the slice, per patch (sum of |count|):")
print("\n".join("  " + " ".join(f"{v:4d}" for v in row) for row in pixels))

for name, view in (("vit-slice.svg", "collapsed"), ("vit-attention.png", "attention")):
    path = os.path.join(args.out, name)
    try:
        nnslicer.render(sl, path, view=view)
        print(f"\nwrote {path} ({view} view)")
    except MissingDependencyError as exc:
        print(f"\n{exc}")
