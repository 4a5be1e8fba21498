"""``nnslicer layers``: layer importance."""

from __future__ import annotations

import argparse

from nnslicer.cli.options import load_array, load_model, progress
from nnslicer.errors import UnsupportedLayerError

from ..layer_importance import CRITERIA, REDUCTIONS, layer_importance, ranking_steps, save_ranking


def cmd_layers(args):
    model = load_model(args.model)
    x = load_array(args.data, "x")
    y = load_array(args.labels, "y") if args.labels else None
    try:
        with progress(ranking_steps(model, args.criterion), f"{args.criterion} scores", unit="layer") as update:
            ranking = layer_importance(model, x, criterion=args.criterion, reduction=args.reduction, y=y, q=args.q,
                                       progress=update)
    except UnsupportedLayerError as exc:
        raise UnsupportedLayerError(f"{exc} The {args.criterion!r} criterion slices the model; every other "
                                    "criterion (e.g. --criterion fit) works on it.") from exc
    width = max(len("layer"), *(len(k) for k in ranking))
    print(f"{'rank':>4}  {'layer':<{width}}  score")
    for i, (name, score) in enumerate(ranking.items(), 1):
        print(f"{i:>4}  {name:<{width}}  {score:.6g}")
    if args.output:
        save_ranking(ranking, args.output, model, criterion=args.criterion, reduction=args.reduction)
        print(f"-> {args.output} (nnslicer compress --ranking reads it)")
    return 0


def add_commands(subparsers):
    """Add ``nnslicer layers``."""
    p = subparsers.add_parser(
        "layers", help="rank a model's layers by importance (SAFER, FIT, Shapley, slices)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rank the layers that hold weights, most important first: a criterion gives "
                    "each weight or unit a score on the calibration data, a reduction turns a "
                    "layer's scores into one number (SAFER, docs/SPEC.md section 6). 'slice' needs a "
                    "model nnslicer can lift; the other criteria work on any functional or "
                    "Sequential classifier, transformers included.",
        epilog="examples:\n"
               "  nnslicer layers model.keras --data x.npy\n"
               "  nnslicer layers model.keras --data x.npy --labels y.npy --criterion fit --reduction l2\n"
               "  nnslicer layers model.keras --data x.npy --criterion gradient --reduction percentile --q 99\n"
               "  nnslicer layers model.keras --data x.npy --criterion combined\n"
               "  nnslicer layers model.keras --data x.npy --criterion shapley -o ranking.json\n"
               "  nnslicer compress model.keras --data x.npy --ranking ranking.json --bits 4 -o q4.keras")
    p.add_argument("model", help="a .keras or .h5 model")
    p.add_argument("--data", required=True, help="calibration inputs (.npy/.npz), e.g. 256 samples")
    p.add_argument("--labels", help="their labels (.npy/.npz); default: the model's predictions")
    p.add_argument("--criterion", default="fit", choices=tuple(CRITERIA) + ("combined",),
                   help="fine-grained score (default: fit)")
    p.add_argument("--reduction", default="linf", choices=tuple(REDUCTIONS),
                   help="how a layer's scores become one number (default: linf)")
    p.add_argument("--q", type=float, default=None, help="the percentile for --reduction percentile (default 90)")
    p.add_argument("-o", "--output", help="also write the ranking (.json), for nnslicer compress --ranking")
    p.set_defaults(func=cmd_layers, outputs={"-o": ("output", (".json",))})
