"""``nnslicer detect fit`` and ``nnslicer detect score``: adversarial input detection."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from nnslicer.cli.options import (add_class_names_option, add_slicing_options, class_names, load_array, load_model,
                                  make_slicer, progress, refuse_unread)
from nnslicer.datasets import class_label
from nnslicer.io import atomic_path

from ..adversarial import CLASSIFIERS, DEFAULT_CLASSIFIER, DETECTORS, load_detector


DETECT_EPILOG = """examples:
  nnslicer detect fit model.keras --data x_train.npy --labels y_train.npy -o detector.nnsd
  nnslicer detect fit model.keras --data x_train.npy --method feature_map -o fm.nnsd
  nnslicer detect score model.keras detector.nnsd --input x_suspect.npy -o verdicts.npz

A detector is fit on clean inputs only. 'score' prints, per input, the model's class, the
score (higher: more normal) and the verdict (clean / ADVERSARIAL); -o writes them as .npz
(arrays 'predicted', 'scores', 'flags': +1 clean, -1 adversarial) or .csv."""


#: ``detect fit`` options that only some detectors read: option -> (dest, what the detector takes).
_TAKEN_OPTIONS = {
    "--rule": ("rule", "slicing"),
    **{f"--{dest}": (dest, "slicing") for dest in ("theta", "granularity", "baseline", "propagation", "workers")},
    "--classifier": ("classifier", "classifier"),
}


def _detector_from_args(model, args):
    cls, rule = DETECTORS[args.method]
    readers = {option: (dest, [m for m, (c, r) in DETECTORS.items() if taken in c.takes and not (dest == "rule" and r)])
               for option, (dest, taken) in _TAKEN_OPTIONS.items()}
    refuse_unread(args, args.method, readers, args.defaults)
    if args.layer is not None and args.layer.lstrip("-").isdigit():
        args.layer = int(args.layer)
    if rule:
        args.rule = rule
    slicer = make_slicer(model, args) if "slicing" in cls.takes else None
    return cls.build(model, slicer, layer=args.layer, contamination=args.contamination, classifier=args.classifier,
                     n_jobs=args.workers)


def cmd_detect_fit(args):
    model = load_model(args.model)
    x = load_array(args.data, "x")
    y = load_array(args.labels, "y") if args.labels else None
    with progress(len(x), "features") as update:
        det = _detector_from_args(model, args).fit(x, y, progress=update)
    det.save(args.output)
    print(f"{det!r} fitted on {det.n_fit_:,} clean inputs -> {args.output}")
    rate = getattr(det, "held_out_flag_rate", None)
    if rate is not None:
        print(f"clean fit inputs flagged when held out: {rate:.1%} (the false-alarm rate to expect)")
        asked = getattr(args, "contamination", None)
        if asked is None and rate > 0.2:
            print("that is high: try another --layer, more --data, or set the rate with --contamination",
                  file=sys.stderr)
        elif asked is not None and rate > asked + 0.05:  # the held-out scores tie at the quantile
            print(f"that is more than --contamination {asked:g} asks: try another --layer or more --data",
                  file=sys.stderr)
    return 0


def _write_verdicts(path, result):
    if path.lower().endswith(".csv"):
        with atomic_path(path, ".csv") as tmp, open(tmp, "w") as f:
            f.write("index,predicted,score,verdict\n")
            for i, (p, s, v) in enumerate(zip(result.predicted, result.scores, result.flags)):
                f.write(f"{i},{p},{s:.6g},{'clean' if v == 1 else 'adversarial'}\n")
    else:  # .npz (the command line refuses other names)
        with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, predicted=result.predicted, scores=result.scores, flags=result.flags)


def cmd_detect_score(args):
    model = load_model(args.model)
    names = class_names(args, model)
    det = load_detector(args.detector, model)
    x = load_array(args.input, "x")
    with progress(len(x), "features") as update:
        result = det.detect(x, progress=update)
    width = max([5, *(len(class_label(int(p), names)) for p in result.predicted)])
    print(f"{'input':>6}  {'class':>{width}}  {'score':>9}  verdict")
    for i, (p, s, v) in enumerate(zip(result.predicted, result.scores, result.flags)):
        print(f"{i:>6}  {class_label(int(p), names):>{width}}  {s:>9.4f}  {'clean' if v == 1 else 'ADVERSARIAL'}")
    print(f"\n{int(result.adversarial.sum())} of {len(result.flags)} inputs flagged adversarial by {det!r}")
    if args.output:
        _write_verdicts(args.output, result)
    return 0


def add_commands(subparsers):
    """``nnslicer detect fit`` and ``nnslicer detect score``."""
    p = subparsers.add_parser(
        "detect", help="fit or apply an adversarial input detector",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=DETECT_EPILOG,
        description="Adversarial input detection from slices (NNSlicer): an input is flagged when a "
                    "classifier of its slice, fit on clean inputs, names another class than the model.")
    sub = p.add_subparsers(dest="detect_command", metavar="{fit,score}", required=True)

    f = sub.add_parser("fit", help="fit a detector on clean inputs and save it (.nnsd)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=DETECT_EPILOG,
                       description="Fit a detector on clean inputs (the model's training data, say) "
                                   "and write it to a file that 'detect score' reads back.")
    f.add_argument("model", help="a .keras or .h5 model")
    f.add_argument("--data", required=True, help="clean inputs (.npy/.npz); they also profile the model")
    f.add_argument("--labels", help="their labels (.npy/.npz): only correctly classified inputs are used")
    f.add_argument("--method", default="slice", choices=tuple(DETECTORS),
                   help="slice (NNSlicer, default), effective_path (slices with Qiu et al.'s rule), "
                        "feature_map (raw activations), mahalanobis (Lee et al. 2018), or another "
                        "registered detector (analyses.adversarial.register_detector)")
    f.add_argument("--layer", help="the op whose synapses (or activations) are the features, or a stage "
                                   "counted from the end: -1 the largest convolution of the last stage (the "
                                   "paper), -2 of the stage before (default; for slices, only in a model of "
                                   "3 or more stages, else -1) ('nnslicer info MODEL' lists ops)")
    f.add_argument("--classifier", default=DEFAULT_CLASSIFIER, choices=CLASSIFIERS,
                   help="random forest (default) or decision tree (the paper)")
    f.add_argument("--contamination", type=float, default=None, metavar="RATE",
                   help="flag this share of clean inputs, in (0, 0.5), measured on held-out clean fit "
                        "inputs (default: flag where the classifier names another class than the model; "
                        "mahalanobis: 0.05)")
    add_slicing_options(f, granularity="channel")  # better and faster (benchmarks/adversarial.py)
    f.add_argument("--workers", type=int, default=None, help="Ray workers for slicing (default: serially)")
    f.add_argument("-o", "--output", required=True, help="where to write the detector (.nnsd)")
    f.set_defaults(func=cmd_detect_fit, outputs={"-o": ("output", (".nnsd",))})
    f.set_defaults(defaults={dest: f.get_default(dest) for dest, _ in _TAKEN_OPTIONS.values()})

    s = sub.add_parser("score", help="score inputs with a saved detector",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=DETECT_EPILOG,
                       description="Score inputs with a detector from 'detect fit': one line per input.")
    s.add_argument("model", help="the .keras or .h5 model the detector was fit for")
    s.add_argument("detector", help="a detector file from 'nnslicer detect fit'")
    s.add_argument("--input", required=True, help="inputs to check (.npy/.npz)")
    s.add_argument("-o", "--output", help="also write the verdicts (.npz or .csv)")
    add_class_names_option(s)
    s.set_defaults(func=cmd_detect_score, outputs={"-o": ("output", (".npz", ".csv"))})
