"""``nnslicer demo``: the whole flow on scikit-learn's bundled 8x8 digits (or Fashion-MNIST).

Trains a small CNN (a LeNet on Fashion-MNIST; cached in the output folder and reused),
profiles it on the training images, slices test images, prints a per-layer summary of one
image's slice and how similar slices of the same and of different classes are, and writes
``OUT/slice.npz`` and a picture of it, ``OUT/slice.svg`` (when Graphviz is installed). It
also writes the model and its data as files the other commands read: ``OUT/model.keras``,
``OUT/x_train.npy``, ``OUT/y_train.npy``, ``OUT/x_test.npy``, ``OUT/y_test.npy`` and
``OUT/sample.npy`` (test image 0).
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..errors import InvalidParameterError
from .options import quiet_tensorflow

__all__ = ["run", "train_model", "add_commands"]


#: What the demo trains on each data set: (loader name, model builder, epochs, learning rate,
#: training images kept, test images kept).
DATASETS = {"digits": ("digits", "small_cnn", 30, 1e-2, None, None),
            "fashion_mnist": ("fashion_mnist", "lenet", 6, 1e-3, 10_000, 2_000)}


def train_model(out_dir, x_train, y_train, epochs=30, seed=0, arch="small_cnn", learning_rate=1e-2):
    """The demo CNN: loaded from ``out_dir/model.keras`` when there, else trained and saved."""
    import keras

    from .. import models

    path = os.path.join(out_dir, "model.keras")
    if os.path.exists(path):
        try:
            return keras.models.load_model(path, compile=False), True
        except Exception:  # a stale or broken cache: train again
            pass
    keras.utils.set_random_seed(seed)
    model = getattr(models, arch)(x_train.shape[1:], int(y_train.max()) + 1)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    tmp = path + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)
    return model, False


def run(out_dir="nnslicer-demo", samples=50, stream=None, dataset="digits"):
    """Run the demo; returns the exit code. Prints to ``stream`` (stdout by default)."""
    import sys

    from .. import datasets
    from ..profiling import Profile
    from ..slicer import Slicer

    if samples < 2:
        raise InvalidParameterError(f"--samples must be at least 2. Got {samples} instead.")
    out = stream or sys.stdout
    say = lambda *a: print(*a, file=out, flush=True)  # noqa: E731
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InvalidParameterError(f"--out {out_dir!r} is a file; give a folder (it is made if missing).")
    if dataset not in DATASETS:
        raise InvalidParameterError(f"--dataset is one of {', '.join(DATASETS)}. Got {dataset!r} instead.")
    loader, arch, epochs, rate, n_train, n_test = DATASETS[dataset]
    (x_train, y_train), (x_test, y_test) = datasets.load(loader)  # says how to install what is missing
    x_train, y_train, x_test, y_test = x_train[:n_train], y_train[:n_train], x_test[:n_test], y_test[:n_test]
    os.makedirs(out_dir, exist_ok=True)
    names = datasets.CLASS_NAMES[dataset]
    what = "images" if dataset != "digits" else "digits"

    start = time.perf_counter()
    model, cached = train_model(out_dir, x_train, y_train, epochs, arch=arch, learning_rate=rate)
    acc = float((model.predict(x_test, verbose=0).argmax(axis=1) == y_test).mean())
    say(f"model: {model.name} on {dataset} ({len(x_train):,} train / {len(x_test):,} test), "
        f"test accuracy {acc:.1%} ({'cached' if cached else 'trained'} in {time.perf_counter() - start:.1f} s)")
    for name, array in (("x_train", x_train), ("y_train", y_train), ("x_test", x_test), ("y_test", y_test),
                        ("sample", x_test[:1])):
        np.save(os.path.join(out_dir, f"{name}.npy"), array)

    slicer = Slicer(model, theta=0.2)
    profile_path = os.path.join(out_dir, "profile.npz")
    start = time.perf_counter()
    profile = None
    if os.path.exists(profile_path):
        try:
            profile = Profile.load(profile_path)
            slicer.fit(profile=profile)
        except Exception:
            profile = None
    if profile is None:
        slicer.fit(x_train, y_train)
        slicer.profile_.save(profile_path)
    say(f"profile: mean activation of {slicer.graph_.n_neurons():,} neurons over "
        f"{slicer.profile_.n_samples:,} training {what} ({time.perf_counter() - start:.2f} s)")

    picked = np.arange(min(samples, len(x_test)))
    start = time.perf_counter()
    slices = slicer.slice_many(x_test[picked])
    elapsed = time.perf_counter() - start
    say(f"sliced {len(picked)} test {what} (theta=0.2, target = predicted class) in {elapsed:.2f} s "
        f"({elapsed / len(picked) * 1000:.1f} ms per image)\n")

    first = slices[0]
    say(f"slice of test image 0 (label {datasets.class_label(int(y_test[0]), names)}, predicted "
        f"{datasets.class_label(first.targets[0], names)}):")
    say(first.summary())
    path = first.save(os.path.join(out_dir, "slice.npz"))

    preds = np.array([s.targets[0] for s in slices])
    same, diff = [], []
    for i in range(len(slices)):
        for j in range(i + 1, len(slices)):
            (same if preds[i] == preds[j] else diff).append(slices[i].jaccard(slices[j]))
    say(f"\nsynapse overlap (Jaccard) of the {len(slices)} {what}' slices: same predicted class "
        f"{np.mean(same) if same else float('nan'):.3f}, different classes "
        f"{np.mean(diff) if diff else float('nan'):.3f}")
    say(f"sizes: {np.mean([s.n_synapses for s in slices]):,.0f} of {first.total_synapses:,} synapses "
        f"and {np.mean([s.n_neurons for s in slices]):,.0f} of {first.total_neurons:,} neurons per image")
    say(f"\nwrote {path} (load it with nnslicer.Slice.load), and the model and data the other "
        f"commands read: {os.path.join(out_dir, 'model.keras')}, x_train.npy, y_train.npy, x_test.npy, "
        f"y_test.npy, sample.npy (test image 0)")
    from ..errors import MissingDependencyError
    from ..pictures import render

    try:
        picture = render(first, os.path.join(out_dir, "slice.svg"), view="collapsed", class_names=names)
        say(f"wrote {picture} (that slice, op by op: open it in a browser)")
    except MissingDependencyError as exc:
        say(f"no picture: {exc}")
    return 0


def cmd_demo(args):
    quiet_tensorflow()
    return run(args.out, samples=args.samples, dataset=args.dataset)


def add_commands(sub):
    """Add ``demo`` to the subparsers ``sub``."""
    p = sub.add_parser("demo", help="train, profile and slice a small CNN on bundled digits",
                       description="Train a small CNN on scikit-learn's 8x8 digits (or a LeNet on "
                                   "Fashion-MNIST; cached in --out), profile it, slice test images, print "
                                   "a per-layer summary and write OUT/slice.npz and its picture "
                                   "OUT/slice.svg, with the model and data as files for the other "
                                   "commands (OUT/model.keras, x_train.npy, y_train.npy, x_test.npy, "
                                   "y_test.npy, sample.npy).")
    p.add_argument("--out", default="nnslicer-demo", help="output folder (default ./nnslicer-demo)")
    p.add_argument("--samples", type=int, default=50, help="test images to slice (default 50)")
    p.add_argument("--dataset", default="digits", choices=tuple(DATASETS),
                   help="digits (default: scikit-learn's, 1,347 train / 450 test) or fashion_mnist (Debian's "
                        "dataset-fashion-mnist; a LeNet on the first 10,000 training and 2,000 test images)")
    p.set_defaults(func=cmd_demo)
