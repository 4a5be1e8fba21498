"""``nnslicer info``, ``profile`` and ``slice``: lift, profile and slice a model."""

from __future__ import annotations

import time

import numpy as np

from ..datasets import class_label
from ..errors import InvalidInputError
from .options import (add_class_names_option, add_slicing_options, class_names, load_array, load_model, make_slicer,
                      progress)

__all__ = ["add_commands"]


def _parse_target(text):
    if text is None:
        return None
    try:
        items = [int(t) for t in text.split(",")]
    except ValueError:
        raise InvalidInputError(f"--target takes an output index or a comma-separated list; got {text!r}.") from None
    return items[0] if len(items) == 1 else items


# --------------------------------------------------------------------------- commands
def cmd_info(args):
    from ..keras import lift

    model = load_model(args.model)
    graph = lift(model, args.granularity)
    print(f"{graph!r}\nfingerprint {graph.fingerprint}; criteria live on {graph.logits!r} "
          f"({graph.num_outputs} outputs)\n")
    print(graph.summary())
    return 0


def cmd_profile(args):
    from ..keras import lift
    from ..profiling import profile
    from ..keras import verify_data

    model = load_model(args.model)
    x = load_array(args.data, "x")
    y = load_array(args.labels, "y") if args.labels else None
    graph = lift(model)
    verify_data(graph, model, x)  # the lift computes what Keras computes
    with progress(len(x), "profiling") as update:
        prof = profile(graph, x, y, batch_size=args.batch_size, progress=update)
    prof.save(args.output)
    print(f"{prof!r} -> {args.output}")
    return 0


def cmd_slice(args):
    from ..profiling import Profile

    model = load_model(args.model)
    names = class_names(args, model)
    prof = Profile.load(args.profile)
    x = load_array(args.input, "x")
    slicer = make_slicer(model, args).fit(profile=prof)
    start = time.perf_counter()
    with progress(len(x) if np.ndim(x) > len(slicer.graph_.input_shape) else 1, "slicing") as update:
        result = slicer.slice(x, target=_parse_target(args.target), aggregate=args.aggregate,
                              n_jobs=args.workers, address=args.ray_address, progress=update)
    elapsed = time.perf_counter() - start
    result.save(args.output)
    print(result.summary())
    if result.targets:
        print(f"\nsliced for output {', '.join(class_label(t, names) for t in result.targets)}")
    print(f"\n{result!r} in {elapsed:.2f} s -> {args.output}")
    return 0


def add_commands(sub):
    """Add ``info``, ``profile`` and ``slice`` to the subparsers ``sub``."""
    p = sub.add_parser("info", help="show the lifted graph of a model",
                       description="Lift a model and print its ops, shapes, neurons and synapses.")
    p.add_argument("model", help="a .keras or .h5 model")
    p.add_argument("--granularity", default="element", choices=("element", "channel"),
                   help="a neuron of a feature map is an element or a channel (default: element)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("profile", help="record every neuron's mean activation over a data set",
                       description="Profile a model: the mean of every tensor over --data "
                                   "(and per class with --labels), saved for later slicing.")
    p.add_argument("model", help="a .keras or .h5 model")
    p.add_argument("--data", required=True, help="profiling inputs (.npy/.npz), e.g. the training set")
    p.add_argument("--labels", help="class labels (.npy/.npz) for per-class means")
    p.add_argument("--batch-size", type=int, default=256, help="samples per batch (default 256)")
    p.add_argument("-o", "--output", required=True, help="where to write the profile (.npz)")
    p.set_defaults(func=cmd_profile, outputs={"-o": ("output", (".npz",))})

    p = sub.add_parser("slice", help="slice a model for some inputs",
                       description="Forward and backward analysis of --input against a saved "
                                   "profile; writes one slice (summed over the inputs).")
    p.add_argument("model", help="a .keras or .h5 model")
    p.add_argument("--profile", required=True, help="a profile written by 'nnslicer profile'")
    p.add_argument("--input", required=True, help="one sample or a batch (.npy/.npz)")
    p.add_argument("--target", help="output index, or comma-separated indices "
                                    "(default: each input's predicted class)")
    add_slicing_options(p)
    add_class_names_option(p)
    p.add_argument("--aggregate", default="sum", choices=("sum", "abs"),
                   help="add a batch's counts signed (sum) or absolute (abs) (default: sum)")
    p.add_argument("--batch-size", type=int, default=256, help="samples per batch (default 256)")
    p.add_argument("--workers", type=int, default=None,
                   help="run the backward analysis on K Ray workers (default: serially)")
    p.add_argument("--ray-address", default=None,
                   help="a running Ray cluster to use (from 'ray start --head'; RAY_ADDRESS works too)")
    p.add_argument("-o", "--output", required=True, help="where to write the slice (.npz)")
    p.set_defaults(func=cmd_slice, outputs={"-o": ("output", (".npz",))})
