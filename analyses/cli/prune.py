"""``nnslicer prune``: class-focused pruning."""

from __future__ import annotations

import argparse
import contextlib

from nnslicer.cli.options import MODEL_FILES, fitted_slicer, progress, save_model

from ..pruning import METHODS, class_focused_prune
from .class_data import add_class_data_options, load_class_data, print_accuracy

def cmd_prune(args):
    model, x, y, classes, names = load_class_data(args, "prune")
    slicer = None
    if args.method not in ("magnitude", "channel", "random") or not args.no_mean_compensation:
        slicer = fitted_slicer(model, args, x, y)
    with progress(None, "slicing") if slicer is not None else contextlib.nullcontext() as update:
        pruned, report = class_focused_prune(model, slicer, x, y, classes, args.ratio,
                                             mean_compensation=not args.no_mean_compensation,
                                             fine_tune_epochs=args.fine_tune_epochs, method=args.method,
                                             max_per_class=args.max_per_class, progress=update)
    save_model(pruned, args.output)
    print(report.table())
    print(f"\n{report!r} -> {args.output}")
    print_accuracy(model, pruned, x, y, classes, names=names)
    return 0


def add_commands(subparsers):
    """Add ``nnslicer prune``."""
    p = subparsers.add_parser(
        "prune", help="prune a model for a subset of its classes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Class-focused pruning (NNSlicer): slice samples of the target classes, "
                    "prune in every weighted layer the fraction --ratio of synapses that count "
                    "least for them, remove channels and units left without synapses, and "
                    "write the smaller model. --data/--labels are profiled, sliced (samples of "
                    "--classes) and used for fine-tuning.",
        epilog="examples:\n"
               "  nnslicer prune model.keras --data x.npy --labels y.npy --classes 0,1,5 --ratio 0.5 -o pruned.keras\n"
               "  nnslicer prune model.keras --data x.npy --labels y.npy --classes 3 --ratio 0.7 \\\n"
               "      --method magnitude --fine-tune-epochs 1 -o pruned.keras")
    add_class_data_options(p, "focus on")
    p.add_argument("--ratio", type=float, required=True, help="fraction of each layer's synapses pruned, in (0, 1)")
    p.add_argument("--method", default="nnslicer", choices=METHODS, help="how synapses are ranked (default nnslicer)")
    p.add_argument("--fine-tune-epochs", type=int, default=0, help="epochs of fine-tuning on the target classes (default 0)")
    p.add_argument("--no-mean-compensation", action="store_true",
                   help="pruned synapses contribute nothing (default: their mean input)")
    p.add_argument("-o", "--output", required=True, help="where to write the pruned model (.keras or .h5)")
    p.set_defaults(func=cmd_prune, outputs={"-o": ("output", MODEL_FILES)})
