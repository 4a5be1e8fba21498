"""``nnslicer render``: draw a slice, two slices' difference, or a model."""

from __future__ import annotations

import argparse
import os
import time

from .options import add_class_names_option, load_model

__all__ = ["add_commands"]


def cmd_render(args):
    from ..errors import InvalidParameterError
    from ..pictures import render
    from ..slice import Slice

    if args.top_k < 0:
        raise InvalidParameterError(f"--top-k must be 0 or more. Got {args.top_k} instead.")
    if args.names and not args.other:
        raise InvalidParameterError("--names goes with --other (the two slices of a diff).")
    if args.file.endswith((".keras", ".h5")):  # a model on its own: its op graph
        if args.model or args.other:
            raise InvalidParameterError("--model and --other go with a slice file, not a model.")
        if args.view in ("collapsed", "diff", "attention", "input"):
            raise InvalidParameterError(f"--view {args.view} draws slices: give a slice file (and --model), "
                                        "or draw the model with --view model or --view neuron.")
        path = render(load_model(args.file), args.output, args.format, view=args.view or "model",
                      top_k=args.top_k, max_nodes=args.max_nodes, max_edges=args.max_edges)
        print(f"wrote {path}")
        return 0
    if args.image and args.view != "input":
        raise InvalidParameterError("--image goes with --view input (the image drawn under the counts).")
    first = Slice.load(args.file)
    other = Slice.load(args.other) if args.other else None
    model = load_model(args.model) if args.model else None
    if args.view == "input":
        return _render_input(args, first, other, model)
    names = tuple(args.names) if args.names else None
    if names is None and other is not None:
        stems = [os.path.splitext(os.path.basename(p))[0] for p in (args.file, args.other)]
        names = tuple(stems) if stems[0] != stems[1] else ("A", "B")
    extra = {"names": names} if names else {}
    if args.class_names:
        extra["class_names"] = args.class_names
    start = time.perf_counter()
    path = render(first, args.output, args.format, view=args.view, other=other, model=model,
                  top_k=args.top_k, max_nodes=args.max_nodes, max_edges=args.max_edges, **extra)
    print(f"wrote {path} ({os.path.getsize(path):,} bytes, {time.perf_counter() - start:.2f} s)")
    return 0


def _render_input(args, first, other, model):
    """``--view input``: the slice's counts on the image input, with matplotlib."""
    from ..errors import InvalidParameterError
    from ..io import atomic_path
    from ..pictures import plot_input
    from .options import load_array

    fmt = args.format or os.path.splitext(args.output)[1].lower().lstrip(".")
    if fmt not in ("svg", "png", "pdf"):
        raise InvalidParameterError(f"--view input writes .svg, .png or .pdf (matplotlib); got {args.output!r}.")
    image = load_array(args.image, "x") if args.image else None
    fig, _ = plot_input(first, image, other=other, model=model, class_names=args.class_names)
    with atomic_path(args.output, "." + fmt) as tmp:
        fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
    print(f"wrote {args.output}")
    return 0


def add_commands(sub):
    """Add ``render`` to the subparsers ``sub``."""
    from ..pictures import AUTO_NEURON_EDGES, AUTO_NEURON_NODES, FORMATS, MAX_EDGES, MAX_NODES, VIEWS

    p = sub.add_parser(
        "render", help="draw a slice, two slices' difference, or a model as SVG/PNG/PDF/DOT",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw a slice (or a model's op graph) with Graphviz. Views:\n"
                    "  neuron     one node per member neuron (small slices and models only)\n"
                    "  collapsed  one box per op (per layer for attention and recurrent layers): its\n"
                    "             top-k neurons or channels by |count|, \"+N more\";\n"
                    "             arrows into weighted ops sized by the sum of |count| of their\n"
                    "             synapses, blue/red by its sign\n"
                    "  model      the whole op graph, ops with members filled\n"
                    "  diff       two slices (--other): members only in one, only in the other, in both\n"
                    "  attention  a heat map a head of each attention layer: which key positions\n"
                    "             (columns) each query position's (rows) kept contributions come from\n"
                    "  input      an image model's slice as a heat map over the image (--image): which\n"
                    "             pixels it uses, blue +, red - (with --other: the difference); matplotlib\n"
                    f"Default: neuron for a slice of at most {AUTO_NEURON_NODES} neurons and "
                    f"{AUTO_NEURON_EDGES} synapses, else\ncollapsed; "
                    "diff with --other; model for a .keras/.h5 file. SVG, PNG and PDF need\nGraphviz's "
                    "'dot' (Debian/Ubuntu: apt-get install graphviz); without it the DOT text is\n"
                    "written next to OUT and the command fails with exit code 2.",
        epilog="examples:\n"
               "  nnslicer render slice.npz --model model.keras -o slice.svg\n"
               "  nnslicer render slice.npz --model model.keras --view model -o model.png\n"
               "  nnslicer render clean.npz --other adversarial.npz --model model.keras -o diff.svg\n"
               "  nnslicer render slice.npz --model vit.keras --view attention -o attention.png\n"
               "  nnslicer render slice.npz --model model.keras --view input --image x0.npy -o input.png\n"
               "  nnslicer render model.keras -o graph.pdf")
    p.add_argument("file", metavar="SLICE", help="a slice file (.npz) from 'nnslicer slice', or a "
                                                 ".keras/.h5 model to draw its op graph")
    p.add_argument("--model", help="the slice's model (.keras/.h5); needed for a slice file, which "
                                   "holds counts but not the model's wiring")
    p.add_argument("--view", choices=VIEWS + ("input",),
                   help="what to draw (default: see above)")
    p.add_argument("--image", help="--view input: the image (.npy, one input) drawn under the counts")
    p.add_argument("--other", metavar="SLICE2", help="a second slice of the same model, for --view diff")
    p.add_argument("--names", nargs=2, metavar=("A", "B"),
                   help="what to call the two slices of a diff (default: the file names)")
    p.add_argument("--top-k", type=int, default=5,
                   help="neurons or channels shown per op in the collapsed and diff views (0 to 50, default 5)")
    p.add_argument("--max-nodes", type=int, default=MAX_NODES,
                   help=f"most neurons the neuron view draws before it refuses (default {MAX_NODES})")
    p.add_argument("--max-edges", type=int, default=MAX_EDGES,
                   help=f"most synapses the neuron view draws before it refuses (default {MAX_EDGES:,})")
    add_class_names_option(p)
    p.add_argument("--format", choices=FORMATS, help="output format (default: from OUT's extension)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="where to write the picture (.svg, .png, .pdf or .dot)")
    p.set_defaults(func=cmd_render, outputs={"-o": ("output", None)})
