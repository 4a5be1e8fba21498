"""``nnslicer demo``: the whole flow on scikit-learn's bundled 8x8 digits.

Trains a small CNN (cached in the output folder and reused), profiles it on the training
digits, slices test digits, prints a per-layer summary of one digit's slice and how similar
slices of the same and of different classes are, and writes ``OUT/slice.npz`` and a picture
of it, ``OUT/slice.svg`` (when Graphviz is installed).
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..errors import InvalidParameterError
from .options import quiet_tensorflow

__all__ = ["run", "train_model", "add_commands"]


def train_model(out_dir, x_train, y_train, epochs=30, seed=0):
    """The demo CNN: loaded from ``out_dir/model.keras`` when there, else trained and saved."""
    import keras

    from ..models import small_cnn

    path = os.path.join(out_dir, "model.keras")
    if os.path.exists(path):
        try:
            return keras.models.load_model(path, compile=False), True
        except Exception:  # a stale or broken cache: train again
            pass
    keras.utils.set_random_seed(seed)
    model = small_cnn(x_train.shape[1:], int(y_train.max()) + 1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    tmp = path + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)
    return model, False


def run(out_dir="nnslicer-demo", samples=50, stream=None):
    """Run the demo; returns the exit code. Prints to ``stream`` (stdout by default)."""
    import sys

    from ..datasets import load_digits
    from ..profiling import Profile
    from ..slicer import Slicer

    if samples < 2:
        raise InvalidParameterError(f"--samples must be at least 2. Got {samples} instead.")
    out = stream or sys.stdout
    say = lambda *a: print(*a, file=out, flush=True)  # noqa: E731
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InvalidParameterError(f"--out {out_dir!r} is a file; give a folder (it is made if missing).")
    os.makedirs(out_dir, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = load_digits()

    start = time.perf_counter()
    model, cached = train_model(out_dir, x_train, y_train)
    acc = float((model.predict(x_test, verbose=0).argmax(axis=1) == y_test).mean())
    say(f"model: small CNN on scikit-learn digits ({len(x_train)} train / {len(x_test)} test), "
        f"test accuracy {acc:.1%} ({'cached' if cached else 'trained'} in {time.perf_counter() - start:.1f} s)")

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
        f"{slicer.profile_.n_samples:,} training digits ({time.perf_counter() - start:.2f} s)")

    picked = np.arange(min(samples, len(x_test)))
    start = time.perf_counter()
    slices = slicer.slice_many(x_test[picked])
    elapsed = time.perf_counter() - start
    say(f"sliced {len(picked)} test digits (theta=0.2, target = predicted class) in {elapsed:.2f} s "
        f"({elapsed / len(picked) * 1000:.1f} ms per digit)\n")

    first = slices[0]
    say(f"slice of test digit 0 (label {y_test[0]}, predicted {first.targets[0]}):")
    say(first.summary())
    path = first.save(os.path.join(out_dir, "slice.npz"))

    preds = np.array([s.targets[0] for s in slices])
    same, diff = [], []
    for i in range(len(slices)):
        for j in range(i + 1, len(slices)):
            (same if preds[i] == preds[j] else diff).append(slices[i].jaccard(slices[j]))
    say(f"\nsynapse overlap (Jaccard) of the {len(slices)} digits' slices: same predicted class "
        f"{np.mean(same) if same else float('nan'):.3f}, different classes "
        f"{np.mean(diff) if diff else float('nan'):.3f}")
    say(f"sizes: {np.mean([s.n_synapses for s in slices]):.0f} of {first.total_synapses:,} synapses "
        f"and {np.mean([s.n_neurons for s in slices]):.0f} of {first.total_neurons:,} neurons per digit")
    say(f"\nwrote {path} (load it with nnslicer.Slice.load)")
    from ..errors import MissingDependencyError
    from ..pictures import render

    try:
        picture = render(first, os.path.join(out_dir, "slice.svg"), view="collapsed")
        say(f"wrote {picture} (that slice, op by op: open it in a browser)")
    except MissingDependencyError as exc:
        say(f"no picture: {exc}")
    return 0


def cmd_demo(args):
    quiet_tensorflow()
    return run(args.out, samples=args.samples)


def add_commands(sub):
    """Add ``demo`` to the subparsers ``sub``."""
    p = sub.add_parser("demo", help="train, profile and slice a small CNN on bundled digits",
                       description="Train a small CNN on scikit-learn's 8x8 digits (cached in "
                                   "--out), profile it, slice test digits, print a per-layer "
                                   "summary and write OUT/slice.npz and its picture OUT/slice.svg.")
    p.add_argument("--out", default="nnslicer-demo", help="output folder (default ./nnslicer-demo)")
    p.add_argument("--samples", type=int, default=50, help="test digits to slice (default 50)")
    p.set_defaults(func=cmd_demo)
