"""``nnslicer compare``: the compression report of two models."""

from __future__ import annotations

import argparse
import contextlib
import os

from nnslicer.cli.options import add_class_names_option, check_outputs, input_files, load_array, load_model, progress

from ..compression_report import compare
from .class_data import parse_classes


def cmd_compare(args):
    json_path = args.json or os.path.splitext(args.output)[0] + ".json"
    check_outputs({"-o": (args.output, (".html", ".htm")), "--json": (json_path, (".json",))},
                  list(input_files(args)))  # before the work
    model_a, model_b = load_model(args.model_a), load_model(args.model_b)
    x, y = load_array(args.data, "x"), load_array(args.labels, "y")
    names = [os.path.basename(p) for p in (args.model_a, args.model_b)]
    if names[0] == names[1]:
        names = [args.model_a, args.model_b]
    with progress(None, "slicing") if not args.no_slices else contextlib.nullcontext() as update:
        report = compare(model_a, model_b, x, y, classes=None if args.classes is None else parse_classes(args.classes),
                         slices=not args.no_slices, max_per_class=args.max_per_class,
                         saliency_samples=args.saliency_samples, theta=args.theta, granularity=args.granularity,
                         batch_size=args.batch_size, names=tuple(names), progress=update,
                         class_names=args.class_names)
    report.save_json(json_path)
    report.save_html(args.output)
    print(report.summary())
    print()
    print(report.table())
    print(f"\n-> {args.output}, {json_path}")
    return 0


def add_commands(subparsers):
    """Add ``nnslicer compare``."""
    p = subparsers.add_parser(
        "compare", help="what compression changed beyond accuracy: flips, confidence, saliency, slices",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compare a model (A, the reference) with its compressed version (B) on labelled\n"
                    "samples: accuracy per class, the share of flipped predictions, the confidence\n"
                    "shift of A's predicted class, the saliency-map mean absolute deviation, and how\n"
                    "much of A's class slices survives in B (Beyond test accuracy, SAFEAI 2022;\n"
                    "docs/SPEC.md section 7). Writes an HTML report with plots and its figures as JSON.\n"
                    "Slice survival needs both models' weighted layers to have the same kernel\n"
                    "shapes (masked pruning, quantization); otherwise the report says why not.",
        epilog="examples:\n"
               "  nnslicer compare model.keras pruned.keras --data x_test.npy --labels y_test.npy -o report.html\n"
               "  nnslicer compare model.keras quantized.keras --data x.npy --labels y.npy -o out/q.html \\\n"
               "      --json out/q-figures.json --max-per-class 50 --saliency-samples 200\n"
               "  nnslicer compare model.keras pruned.keras --data x.npy --labels y.npy --no-slices -o report.html")
    p.add_argument("model_a", metavar="A", help="the reference model (.keras/.h5)")
    p.add_argument("model_b", metavar="B", help="the compressed model (.keras/.h5)")
    p.add_argument("--data", required=True, help="samples (.npy/.npz), e.g. the test set")
    p.add_argument("--labels", required=True, help="their integer labels (.npy/.npz)")
    p.add_argument("-o", "--output", required=True, help="where to write the HTML report")
    add_class_names_option(p)
    p.add_argument("--json", default=None, help="where to write the figures as JSON (default: beside -o, .json)")
    p.add_argument("--classes", default=None,
                   help="classes reported per class, comma-separated (default: all in --labels)")
    p.add_argument("--no-slices", action="store_true", help="skip slice survival (the slow part)")
    p.add_argument("--max-per-class", type=int, default=20, help="samples sliced per class (default 20)")
    p.add_argument("--saliency-samples", type=int, default=100,
                   help="saliency maps of the first N samples (default 100; 0 skips them)")
    p.add_argument("--theta", type=float, default=None, help="the slicer's theta in (0, 1) (default 0.2)")
    p.add_argument("--granularity", default="element", choices=("element", "channel"),
                   help="a neuron of a feature map is an element or a channel (default: element)")
    p.add_argument("--batch-size", type=int, default=256, help="samples per batch (default 256)")
    p.set_defaults(func=cmd_compare)
