"""The 13 Keras Applications CNNs of issue 17: lift, check against Keras, profile and slice.

For each model at its default resolution (224x224, 299x299 for InceptionV3 and Xception),
built with ``weights=None`` and the ImageNet head (1,000 classes), batch norms calibrated with
:func:`nnslicer.models.calibrate_batch_norm` on 16 images (random statistics around each layer's
own input: without them the untrained networks give every input the same output), it measures:

* the lift (``nnslicer.lift``, element granularity) in seconds;
* the largest difference of the lifted model's output from Keras', over the output's scale, as
  :func:`nnslicer.keras.verify` computes it (the check allows 1e-4);
* per sample: profiling + the forward analysis, beside a plain ``model.predict`` of the same batch;
* per sample: the backward analysis of one sample at a time (for its predicted class) at channel
  granularity (``--samples`` samples) and at element granularity (2 samples);
* the peak resident memory: each model runs in a fresh process.

Inputs are random pixels through each model's ``preprocess_input``. Before timing, the same
architecture at its smallest input is sliced once, so that compiling nnslicer's kernels is not
timed. A model nnslicer refuses is reported as refused (its error's first line) and the run goes on.

Usage::

    python benchmarks/applications.py                  # all 13 at default resolution: writes benchmarks/results/
    python benchmarks/applications.py --models MobileNetV2 ResNet50 --resolution 64 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time

import numpy as np

from common import RESULTS, machine, markdown_table, run_child, write_results  # noqa: E402  (benchmarks/ is on sys.path)

#: name -> (module of keras.applications, default side, smallest side Keras accepts).
MODELS = {
    "VGG16": ("vgg16", 224, 32),
    "ResNet50": ("resnet50", 224, 32),
    "ResNet50V2": ("resnet_v2", 224, 32),
    "MobileNetV2": ("mobilenet_v2", 224, 32),
    "DenseNet121": ("densenet", 224, 32),
    "InceptionV3": ("inception_v3", 299, 75),
    "MobileNet": ("mobilenet", 224, 32),
    "Xception": ("xception", 299, 71),
    "NASNetMobile": ("nasnet", 224, 32),
    "MobileNetV3Small": ("mobilenet_v3", 224, 32),
    "EfficientNetB0": ("efficientnet", 224, 32),
    "EfficientNetV2B0": ("efficientnet_v2", 224, 32),
    "ConvNeXtTiny": ("convnext", 224, 32),
}
#: Issue 17's targets, for ResNet50 at 224x224: backward seconds per sample and peak RSS.
TARGETS = {"resnet50_channel_s": 0.5, "resnet50_element_s": 10.0, "resnet50_peak_rss_mb": 8192.0}
#: Images the batch norms are calibrated on.
CALIBRATION = 16
#: Element-granularity samples (slow on the large models).
ELEMENT_SAMPLES = 2


def images(name, side, n, seed):
    """``n`` random images for ``name`` (uniform pixels through its preprocess_input)."""
    import keras

    pixels = np.random.default_rng(seed).uniform(0, 255, (n, side, side, 3)).astype(np.float32)
    return np.asarray(getattr(keras.applications, MODELS[name][0]).preprocess_input(pixels), dtype=np.float32)


def build(name, side, seed=0):
    """The model at ``side`` x ``side``, untrained, its batch norms calibrated."""
    import keras

    from nnslicer.models import calibrate_batch_norm

    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, name)(weights=None, input_shape=(side, side, 3))
    return calibrate_batch_norm(model, seed=seed, x=images(name, side, CALIBRATION, seed + 1))


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def _backward_per_sample(graph, profile, x):
    """Seconds per sample of the backward analysis, one sample at a time, for its predicted
    class; and the mean number of synapses in the slices."""
    from nnslicer.backward import backward
    from nnslicer.forward import forward

    seconds, synapses = 0.0, []
    for i in range(len(x)):
        tape = forward(graph, profile, x[i:i + 1])
        (_, syn), t = timed(backward, graph, tape, [[int(tape.predictions[0])]], "nnslicer", 0.2)
        seconds += t
        synapses.append(sum(int(np.count_nonzero(v)) for v in syn.values()))
    return seconds / len(x), float(np.mean(synapses))


def _warm_up(name):
    """Slice the same architecture at its smallest input once at each granularity: nnslicer's
    kernels are compiled then, not while timing."""
    from nnslicer import Slicer
    from nnslicer.errors import UnsupportedLayerError

    side = MODELS[name][2]
    model = build(name, side)
    x = images(name, side, 2, 3)
    for granularity in ("channel", "element"):
        try:
            Slicer(model, granularity=granularity).fit(x).slice(x[0])
        except UnsupportedLayerError:  # refused at this size (the check): the timed run says more
            return


def run_one(name, side, samples):
    """Measure one model in this process; a dict of figures (``status`` "ok" or "refused")."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import nnslicer
    from nnslicer.errors import UnsupportedLayerError
    from nnslicer.forward import forward
    from nnslicer.keras import TOLERANCE, verify

    model, t_build = timed(build, name, side)
    row = {"model": name, "resolution": side, "params": int(model.count_params()), "build_s": t_build}
    try:
        graph, t_lift = timed(nnslicer.lift, model)
        channel_graph = nnslicer.lift(model, "channel")
    except UnsupportedLayerError as exc:
        return {**row, "status": "refused", "error": str(exc).splitlines()[0],
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    x = images(name, side, samples, 2)
    diff = verify(graph, model, x, tolerance=math.inf)
    _warm_up(name)
    model.predict(x[:1], verbose=0)  # trace TensorFlow's functions before timing
    forward(graph, nnslicer.profile(graph, x[:1]), x[:1])
    _, t_predict = timed(model.predict, x, batch_size=len(x), verbose=0)
    profile, t_profile = timed(nnslicer.profile, graph, x, batch_size=len(x))
    _, t_forward = timed(forward, graph, profile, x, batch_size=len(x))
    channel_profile = nnslicer.profile(channel_graph, x, batch_size=len(x))
    channel_s, channel_syn = _backward_per_sample(channel_graph, channel_profile, x)
    element_s, element_syn = _backward_per_sample(graph, profile, x[:ELEMENT_SAMPLES])
    n = len(x)
    return {
        **row, "status": "ok", "ops": len(graph.ops), "neurons": graph.n_neurons(),
        "synapses": graph.n_synapses(), "channel_neurons": channel_graph.n_neurons(),
        "lift_s": t_lift, "forward_diff": diff, "forward_checked": bool(diff <= TOLERANCE), "samples": n,
        "predict_s": t_predict / n, "profile_s": t_profile / n, "forward_s": t_forward / n,
        "profile_forward_s": (t_profile + t_forward) / n,
        "channel_backward_s": channel_s, "channel_samples": n, "channel_slice_synapses": channel_syn,
        "element_backward_s": element_s, "element_samples": min(n, ELEMENT_SAMPLES),
        "element_slice_synapses": element_syn,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _child(name, side, samples, timeout):
    """``run_one`` in a fresh process (its own peak RSS); a failed process gives a "failed" row."""
    return run_child(__file__, ["--model", name, "--resolution", str(side), "--samples", str(samples)], timeout,
                     {"model": name, "resolution": side})


def summarise(rows):
    """The summary: models lifted, the largest forward difference, and ResNet50's figures
    (None where it did not run; ``resnet50_resolution`` says at what size it did: the targets
    are for 224x224)."""
    ok = [r for r in rows if r["status"] == "ok"]
    resnet = next((r for r in ok if r["model"] == "ResNet50"), None)
    return {
        "models_lifted": len(ok), "models_total": len(rows),
        "max_forward_diff": max((r["forward_diff"] for r in ok), default=None),
        "resnet50_channel_s": resnet and resnet["channel_backward_s"],
        "resnet50_element_s": resnet and resnet["element_backward_s"],
        "resnet50_peak_rss_mb": resnet and resnet["peak_rss_mb"],
        "resnet50_resolution": resnet and resnet["resolution"],
        "machine": machine(),
    }


def _short(error, limit=240):
    """An error's first line for the table, without the list of supported layers."""
    text = error.splitlines()[0].split(" Supported layers:")[0] if error else ""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _num(value, fmt):
    return "-" if value is None else format(value, fmt)


def markdown(result):
    """The report: one row per model, then the issue's targets beside ours."""
    rows, summary = result["rows"], result["summary"]
    head = ["model", "input", "params", "lift s", "forward diff", "profile+forward s/sample", "predict s/sample",
            "backward channel s/sample", "backward element s/sample", "peak RSS MB"]
    cells = []
    for r in rows:
        if r["status"] != "ok":
            cells.append([r["model"], r["resolution"], f"{r['params']:,}" if "params" in r else "-",
                          f"{r['status']}: {_short(r['error'])}", "", "", "", "", "", _num(r.get("peak_rss_mb"), ".0f")])
            continue
        cells.append([r["model"], r["resolution"], f"{r['params']:,}", f"{r['lift_s']:.2f}", f"{r['forward_diff']:.1e}",
                      f"{r['profile_forward_s']:.3f}", f"{r['predict_s']:.3f}", f"{r['channel_backward_s']:.3f}",
                      f"{r['element_backward_s']:.2f}", f"{r['peak_rss_mb']:.0f}"])
    targets = []
    at = summary.get("resnet50_resolution")
    for key, label, unit in (("resnet50_channel_s", "ResNet50 backward, channel", "s/sample"),
                             ("resnet50_element_s", "ResNet50 backward, element", "s/sample"),
                             ("resnet50_peak_rss_mb", "ResNet50 peak RSS", "MB")):
        ours, fmt = summary[key], (".0f" if unit == "MB" else ".3f")
        met = ("not run" if ours is None else f"measured at {at}x{at}: not comparable" if at != 224
               else "met" if ours <= TARGETS[key] else "not met")
        targets.append([label, f"<= {TARGETS[key]:{fmt}} {unit}", "-" if ours is None else f"{ours:{fmt}} {unit}", met])
    s = result["settings"]
    return (
        f"# Keras Applications: lift, check, profile and slice\n\nMachine: {summary['machine']}.\n"
        f"Command: `{s['command']}`. Weights: none (Keras' random initialisation, ImageNet head), batch norms "
        f"calibrated on {CALIBRATION} images (`calibrate_batch_norm(model, x=...)`); inputs: random pixels through "
        f"each model's `preprocess_input`. {s['samples']} samples per model (element granularity: "
        f"{min(s['samples'], ELEMENT_SAMPLES)}); backward: one sample at a time, for its predicted class.\n\n"
        f"**Summary**: {summary['models_lifted']} of {summary['models_total']} models lifted; largest forward "
        f"difference from Keras {_num(summary['max_forward_diff'], '.1e')} of the output's scale (allowed: 1e-4).\n\n"
        + markdown_table(head, cells)
        + "\n\n## Issue 17's targets (ResNet50, 224x224)\n\n"
        + markdown_table(["figure", "target", "ours", ""], targets) + "\n"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), metavar="NAME",
                        help="models to run (default: all 13)")
    parser.add_argument("--resolution", type=int, help="input side for every model (default: each one's own; "
                        "raised to a model's smallest where it is below)")
    parser.add_argument("--samples", type=int, default=8, help="samples per model (default 8)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per model (default 3600)")
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    if args.model:  # one model, in this (fresh) process
        row = run_one(args.model, args.resolution or MODELS[args.model][1], args.samples)
        with open(args.json_out, "w") as f:
            json.dump(row, f)
        return 0
    rows = []
    for name in args.models:
        side = max(args.resolution, MODELS[name][2]) if args.resolution else MODELS[name][1]
        print(f"[applications] {name} at {side}x{side} ...", file=sys.stderr, flush=True)
        rows.append(_child(name, side, args.samples, args.timeout))
        r = rows[-1]
        print(f"[applications]   {r['status']}" + (f": {r['error']}" if r["status"] != "ok" else
              f", channel {r['channel_backward_s']:.3f} s/sample, element {r['element_backward_s']:.2f} s/sample, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB"), file=sys.stderr, flush=True)
    command = "python benchmarks/applications.py" + "".join(
        f" {flag} {value}" for flag, value in (("--models", " ".join(args.models) if args.models != list(MODELS) else None),
                                               ("--resolution", args.resolution), ("--samples", args.samples))
        if value is not None and not (flag == "--samples" and value == 8))
    result = {"summary": summarise(rows), "targets": TARGETS, "rows": rows,
              "settings": {"command": command, "samples": args.samples, "resolution": args.resolution,
                           "calibration_images": CALIBRATION, "element_samples": ELEMENT_SAMPLES}}
    write_results(args.out, "applications", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
