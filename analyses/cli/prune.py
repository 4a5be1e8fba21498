"""``nnslicer prune``: class-focused pruning of synapses, or structured pruning of units by their scores."""

from __future__ import annotations

import argparse
import contextlib

import numpy as np

from nnslicer.cli.options import MODEL_FILES, fitted_slicer, progress, save_model, slicer_options
from nnslicer.errors import InvalidInputError, InvalidParameterError

from ..pruning import METHODS, class_focused_prune
from ..unit_pruning import prune_units
from ..unit_scores import AGGREGATIONS, UNIT_METHODS
from .class_data import add_class_data_options, load_class_data, print_accuracy

#: Methods that only rank units (``random`` ranks either: units with ``--units``).
UNIT_ONLY = tuple(m for m in UNIT_METHODS if m not in METHODS)
#: Options of one kind of pruning only: option -> (dest, its default, the kind that reads it).
READERS = {"--fine-tune-epochs": ("fine_tune_epochs", 0, "synapses"),
           "--no-mean-compensation": ("no_mean_compensation", False, "synapses"),
           "--max-per-class": ("max_per_class", None, "synapses"),
           "--keep-first": ("keep_first", 0, "units"), "--layers": ("layers", None, "units"),
           "--permutations": ("permutations", 5, "units"), "--aggregation": ("aggregation", "conservative", "units"),
           "--samples": ("samples", None, "units"), "--below": ("below", None, "units")}


def _prune_synapses(args, model, x, y, classes):
    if classes is None:
        raise InvalidInputError(f"--method {args.method} prunes for target classes: give --classes "
                                f"(or prune units: --method {'|'.join(UNIT_ONLY)}, or --units).")
    slicer = None
    if args.method not in ("magnitude", "channel", "random") or not args.no_mean_compensation:
        slicer = fitted_slicer(model, args, x, y)
    with progress(None, "slicing") if slicer is not None else contextlib.nullcontext() as update:
        return class_focused_prune(model, slicer, x, y, classes, args.ratio,
                                   mean_compensation=not args.no_mean_compensation,
                                   fine_tune_epochs=args.fine_tune_epochs, method=args.method,
                                   max_per_class=args.max_per_class, progress=update)


def _prune_units(args, model, x, y, classes):
    xs, ys = (x, y) if classes is None else (x[np.isin(y, classes)], y[np.isin(y, classes)])
    if args.samples is not None:
        xs, ys = xs[:args.samples], ys[:args.samples]
    layers = None if args.layers is None else [name.strip() for name in args.layers.split(",")]
    options = {"slicer_options": slicer_options(args)} if args.method.startswith("slice") else {}
    if args.method == "shapley":
        options.update(permutations=args.permutations, aggregation=args.aggregation)
    with progress(None, "layers pruned", unit="layer") as update:
        return prune_units(model, xs, ys, args.method, args.ratio, layers=layers, keep_first=args.keep_first,
                           below=args.below, progress=update, **options)


def cmd_prune(args):
    if args.units and args.method not in UNIT_METHODS:
        raise InvalidInputError(f"--units prunes units by {', '.join(UNIT_METHODS)}; --method {args.method} "
                                "ranks synapses.")
    kind = "units" if args.units or args.method in UNIT_ONLY else "synapses"
    for option, (dest, default, reader) in READERS.items():
        if reader != kind and getattr(args, dest) != default:
            raise InvalidParameterError(f"{option} has no effect when pruning {kind} (--method {args.method}); "
                                        f"it is an option of pruning {reader}.")
    for option, dest in (("--permutations", "permutations"), ("--aggregation", "aggregation")):
        if kind == "units" and args.method != "shapley" and getattr(args, dest) != READERS[option][1]:
            raise InvalidParameterError(f"{option} has no effect with --method {args.method} (only with shapley).")
    if args.samples is not None and args.samples < 1:
        raise InvalidInputError(f"--samples must be >= 1; got {args.samples}.")
    if (args.ratio is None) == (args.below is None or kind == "synapses"):
        raise InvalidInputError("Give --ratio R (or, pruning units, --below V instead of it), not both.")
    model, x, y, classes, names = load_class_data(args, "prune")
    prune = _prune_units if kind == "units" else _prune_synapses
    pruned, report = prune(args, model, x, y, classes)
    save_model(pruned, args.output)
    print(report.table())
    print(f"\n{report!r} -> {args.output}")
    print_accuracy(model, pruned, x, y, classes, names=names)
    return 0


def add_commands(subparsers):
    """Add ``nnslicer prune``."""
    p = subparsers.add_parser(
        "prune", help="prune a model: for a subset of its classes, or its least important units",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Class-focused pruning (NNSlicer, --method nnslicer, nnslicer_all, magnitude, "
                    "effective_path, channel, random): slice samples of the target --classes, prune in "
                    "every weighted layer the fraction --ratio of synapses that count least for them, "
                    "remove channels and units left without synapses, and write the smaller model; "
                    "--data/--labels are profiled, sliced and used for fine-tuning.\n\n"
                    "Unit pruning (Ancona et al. 2020, --method shapley, taylor, sensitivity, apoz, weight, "
                    "slice, slice_signed, or random with --units): score the units (Dense units, conv "
                    "filters) of every layer whose units can be removed on --data (--classes: only their "
                    "samples; --samples: the first N), remove the fraction --ratio with the lowest scores "
                    "layer by layer from the output side, rescoring on the network pruned so far, no "
                    "fine-tuning. Shapley values run the layers after each one (units + 1) x "
                    "--permutations times over the samples: --samples 100 is the paper's low-data setting.",
        epilog="examples:\n"
               "  nnslicer prune model.keras --data x.npy --labels y.npy --classes 0,1,5 --ratio 0.5 -o pruned.keras\n"
               "  nnslicer prune model.keras --data x.npy --labels y.npy --classes 3 --ratio 0.7 \\\n"
               "      --method magnitude --fine-tune-epochs 1 -o pruned.keras\n"
               "  nnslicer prune model.keras --data x.npy --labels y.npy --method shapley --samples 100 \\\n"
               "      --ratio 0.25 --keep-first 2 -o pruned.keras\n"
               "  nnslicer prune model.keras --data x.npy --labels y.npy --method shapley --aggregation mean \\\n"
               "      --below 0 -o pruned.keras")
    add_class_data_options(p, "focus on", classes_required=False)
    p.add_argument("--ratio", type=float, default=None,
                   help="fraction of each layer's synapses (or units) pruned, in (0, 1)")
    p.add_argument("--below", type=float, default=None,
                   help="units, instead of --ratio: prune every unit scoring below this (with --method shapley "
                        "--aggregation mean --below 0: the units that raise the loss)")
    p.add_argument("--method", default="nnslicer", choices=tuple(dict.fromkeys(METHODS + UNIT_METHODS)),
                   help="how synapses or units are ranked (default nnslicer)")
    p.add_argument("--units", action="store_true", help="prune units (implied by the methods that only rank units)")
    p.add_argument("--fine-tune-epochs", type=int, default=0, help="epochs of fine-tuning on the target classes (default 0)")
    p.add_argument("--no-mean-compensation", action="store_true",
                   help="pruned synapses contribute nothing (default: their mean input)")
    p.add_argument("--keep-first", type=int, default=0,
                   help="units: leave the first N prunable layers whole (the paper keeps VGG16's first 4)")
    p.add_argument("--layers", default=None, help="units: the layers to prune, comma-separated (default: all)")
    p.add_argument("--permutations", type=int, default=5, help="units, shapley: sampled orders (default 5)")
    p.add_argument("--aggregation", default="conservative", choices=AGGREGATIONS,
                   help="units, shapley: over samples, mean + 2 std (conservative, default) or the signed mean")
    p.add_argument("--samples", type=int, default=None, help="units: score on the first N samples (default all)")
    p.add_argument("-o", "--output", required=True, help="where to write the pruned model (.keras or .h5)")
    p.set_defaults(func=cmd_prune, outputs={"-o": ("output", MODEL_FILES)})
