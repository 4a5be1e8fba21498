"""``nnslicer compress``: importance-driven pruning rates and bit-widths."""

from __future__ import annotations

import argparse
import contextlib

import numpy as np

from nnslicer.cli.options import MODEL_FILES, load_array, load_model, progress, save_model

from ..budgets import DIRECTIONS
from ..compression import compress
from nnslicer import check_labels
from nnslicer.errors import InvalidParameterError

from ..layer_importance import CRITERIA, REDUCTIONS, load_ranking, ranking_steps
from .class_data import print_accuracy


def cmd_compress(args):
    model = load_model(args.model)
    x = load_array(args.data, "x")
    y = check_labels(load_array(args.labels, "y"), len(x), int(model.output_shape[-1])) if args.labels else None
    ranking = None
    if args.ranking:
        if args.criterion is not None or args.reduction is not None:
            raise InvalidParameterError("--ranking gives the ranking: --criterion and --reduction would make "
                                        "another one; give one or the other.")
        ranking, _ = load_ranking(args.ranking, model)
    criterion = args.criterion or "fit"
    ranks = ranking is None and criterion != "uniform"  # the layers are ranked here
    with progress(ranking_steps(model, criterion), f"{criterion} scores", unit="layer") if ranks \
            else contextlib.nullcontext() as update:
        out, info = compress(model, x, y, criterion=criterion, reduction=args.reduction or "linf",
                             prune=args.prune, bits=args.bits, ranking=ranking,
                             activation_bits=None if args.activation_bits == 0 else args.activation_bits,
                             direction=args.direction, progress=update)
    save_model(out, args.output)
    names = list(info["ranking"] or info.get("bits") or info.get("rates"))
    width = max(len("layer"), *(len(n) for n in names))
    print(f"{'layer':<{width}}  {'score':>10}  {'bits':>4}  {'pruned':>6}")
    for name in names:
        score = f"{info['ranking'][name]:.4g}" if info["ranking"] else "-"
        bits = info.get("bits", {}).get(name, "-")
        rate = info.get("rates", {}).get(name)
        print(f"{name:<{width}}  {score:>10}  {bits:>4}  {'-' if rate is None else f'{rate:.0%}':>6}")
    done = []
    if "pruned_fraction" in info:
        done.append(f"{info['pruned_fraction']:.1%} of the prunable weights removed")
    if "bits" in info:
        sizes = {name: model.get_layer(name).count_params() for name in info["bits"]}
        per_weight = sum(b * sizes[n] for n, b in info["bits"].items()) / max(sum(sizes.values()), 1)
        done.append(f"weights at {np.mean(list(info['bits'].values())):.1f} bits on average over layers "
                    f"({per_weight:.1f} per weight), activations at {info['activation_bits'] or 32} bits")
    print(f"\n{'; '.join(done)} -> {args.output}")
    if y is not None:
        print_accuracy(model, out, x, y)
    if "bits" in info:
        print("(its FakeQuant layers load in Keras after analyses.quantization.register_keras_objects(); "
              "nnslicer's commands do that themselves)")
    return 0


def add_commands(subparsers):
    """Add ``nnslicer compress``."""
    p = subparsers.add_parser(
        "compress", help="prune and/or quantize with per-layer budgets from a layer ranking",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rank the layers on --data with a layer criterion (see 'nnslicer layers'), "
                    "then give the most important layers the most bits (--bits B: the least "
                    "important third at B-1, the most important third at B+1, activations at 8) "
                    "and/or the smallest pruning rates (--prune R: structured pruning of the "
                    "filters with the smallest L1 norms, R of the weights overall). "
                    "--criterion uniform gives every layer the same budget.",
        epilog="examples:\n"
               "  nnslicer compress model.keras --data x.npy --bits 4 --criterion fit -o q4.keras\n"
               "  nnslicer compress model.keras --data x.npy --prune 0.3 --criterion gradient -o p30.keras\n"
               "  nnslicer compress model.keras --data x.npy --prune 0.3 --bits 6 --criterion uniform -o both.keras\n"
               "  nnslicer compare model.keras q4.keras --data x_test.npy --labels y_test.npy -o report.html")
    p.add_argument("model", help="a .keras or .h5 model")
    p.add_argument("--data", required=True, help="calibration inputs (.npy/.npz), e.g. 256-1000 samples")
    p.add_argument("--labels", help="their labels (.npy/.npz); default: the model's predictions")
    p.add_argument("--bits", type=int, default=None,
                   help="average weight bit-width: 3 to 15 with a ranking criterion (layers get B-1 to "
                        "B+1), 2 to 16 with --criterion uniform")
    p.add_argument("--activation-bits", type=int, default=8,
                   help="activation bit-width, 2 to 16, or 0 to keep float32 (default 8)")
    p.add_argument("--prune", type=float, default=None, help="global structured pruning rate, e.g. 0.3")
    p.add_argument("--criterion", choices=tuple(CRITERIA) + ("combined", "uniform"),
                   help="layer criterion setting the budgets (default: fit)")
    p.add_argument("--reduction", choices=tuple(REDUCTIONS),
                   help="how a layer's scores become one number (default: linf)")
    p.add_argument("--ranking", help="a ranking written by 'nnslicer layers -o' (.json), instead of --criterion")
    p.add_argument("--direction", default="inverse", choices=DIRECTIONS,
                   help="pruning rates fall (inverse) or grow (paper: SAFER eq. 12 as written) "
                        "with importance (default: inverse)")
    p.add_argument("-o", "--output", required=True, help="where to write the compressed model (.keras or .h5)")
    p.set_defaults(func=cmd_compress, outputs={"-o": ("output", MODEL_FILES)}, api_options={"rate": "prune"})
