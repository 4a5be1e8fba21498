"""The ``nnslicer`` command line: ``main(argv) -> exit code``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import time

import numpy as np

from .errors import FileFormatError, InvalidInputError, NNSlicerError

log = logging.getLogger("nnslicer")

#: Modules of the ``analyses`` package that add subcommands: each has
#: ``add_commands(subparsers)`` and may use this module's helpers (``load_model``,
#: ``load_array``, ``add_slicing_options``, ``make_slicer``, ``progress_bar``). They must import
#: nothing heavy (TensorFlow, scikit-learn) at module level.
ANALYSIS_COMMANDS = ("analyses.adversarial", "analyses.pruning", "analyses.protection",
                     "analyses.layer_importance", "analyses.compression", "analyses.compression_report")

EPILOG = """examples:
  nnslicer demo                                   train, profile and slice on bundled digits
  nnslicer info model.keras                       the lifted graph, op by op
  nnslicer profile model.keras --data x_train.npy --labels y_train.npy -o profile.npz
  nnslicer slice model.keras --profile profile.npz --input x.npy --target 3 -o slice.npz
  nnslicer slice model.keras --profile profile.npz --input x_test.npy --workers 2 -o all.npz
  nnslicer render slice.npz --model model.keras -o slice.svg

Models are .keras or .h5 files; data are .npy or .npz files (an .npz's array named 'x' or
'y', else its first array)."""


# --------------------------------------------------------------------------- helpers
#: Extensions of the model files the commands read and write.
MODEL_FILES = (".keras", ".h5")


def _quiet_tensorflow():
    """Keep TensorFlow's start-up lines (oneDNN, CPU features: C++ logging that no setting
    silences in TF 2.21) off stderr by importing it with stderr muted; ``-v`` shows them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or log.isEnabledFor(logging.INFO):
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow  # noqa: F401
    except ImportError:
        pass  # said again, audibly, where it is needed
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_model(path):
    """A Keras model from a .keras or .h5 file, with a clear error for anything else."""
    from .io import check_readable

    check_readable(path, "model file")
    if not path.lower().endswith(MODEL_FILES):
        raise FileFormatError(f"{path!r}: models are read from .keras or .h5 files.")
    with open(path, "rb") as f:
        head = f.read(8)
    if path.lower().endswith(".keras") and not head.startswith(b"PK"):
        raise FileFormatError(f"{path!r} is not a Keras model: a .keras file is a zip archive "
                              "(model.save('model.keras')).")
    if path.lower().endswith(".h5") and head != b"\x89HDF\r\n\x1a\n":
        raise FileFormatError(f"{path!r} is not a Keras model: a .h5 file is an HDF5 file.")
    _quiet_tensorflow()
    import keras

    for module in ANALYSIS_COMMANDS:  # custom layers of the analyses (e.g. FakeQuant) must be known
        register = getattr(sys.modules.get(module), "register_keras_objects", None)
        if register is not None:
            register()
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many kinds for a bad file
        raise FileFormatError(f"{path!r} is not a loadable Keras model ({type(exc).__name__}: {exc}).") from exc


def load_array(path, key="x"):
    """An array from .npy, or from .npz (the array named ``key``, else the first one)."""
    from .io import check_readable

    check_readable(path, "data file (.npy or .npz)")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic not in (b"\x93NUMPY",) and not magic.startswith(b"PK\x03\x04"):
        raise FileFormatError(f"{path!r} is not a .npy or .npz array file (numpy.save / numpy.savez write them).")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"{path!r} is not a readable .npy or .npz array file ({exc}).") from exc
    if isinstance(data, np.ndarray):
        return data
    with data:
        arrays = [name for name in data.files if name + ".npy" in data.zip.namelist()]
        if not arrays:
            raise InvalidInputError(f"{path!r} is a zip archive without arrays (a .keras model?), not an .npz data file.")
        return data[key] if key in arrays else data[arrays[0]]


def _same_file(a, b):
    """Whether two paths name one file: the same path, through a symbolic or a hard link."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(outputs, inputs=()):
    """Refuse, before any work, output files that could not be written, would not load back,
    or would replace one of the command's input files or another output. ``outputs`` maps an
    option (``"-o"``) to ``(path, extensions)``; a None path is skipped and None extensions
    accept any name. ``inputs`` are ``(option, path)`` pairs of the files the command reads."""
    from .errors import InvalidParameterError
    from .io import check_writable

    seen = []
    for option, (path, extensions) in outputs.items():
        if path is None:
            continue
        if extensions and not path.lower().endswith(extensions):
            raise InvalidParameterError(f"{option} takes a {' or '.join(extensions)} file; got {path!r}.")
        check_writable(path, option)
        for other, known in seen:
            if _same_file(path, known):
                raise InvalidParameterError(f"{other} and {option} name the same file {path!r}.")
        for other, known in inputs:
            if _same_file(path, known):
                raise InvalidParameterError(f"{option} {path!r} is also the command's input ({other} {known!r}): "
                                            "writing it would destroy that input; give another output file.")
        seen.append((option, path))


def input_files(args):
    """``(option, path)`` of every argument of ``args`` that names an existing file and is not an
    output: what the command reads."""
    outputs = {dest for dest, _ in getattr(args, "outputs", {}).values()}
    for dest, option in getattr(args, "paths", {}).items():
        values = getattr(args, dest, None)
        for value in values if isinstance(values, (list, tuple)) else [values]:
            if dest not in outputs and isinstance(value, str) and os.path.isfile(value):
                yield option, value


def save_model(model, path):
    """Write a Keras model atomically, as .keras or (legacy) .h5 after the path's extension."""
    from .io import atomic_path

    with atomic_path(path, os.path.splitext(path)[1].lower()) as tmp:
        model.save(tmp)


def progress_bar(total, what):
    """A progress callback: a tqdm bar when tqdm is installed, else log lines."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return lambda n: log.info("%s: %d/%s samples", what, n, total), lambda: None
    bar = tqdm(total=total, desc=what, unit="sample", file=sys.stderr, disable=None)
    state = {"n": 0}

    def update(n):
        bar.update(n - state["n"])
        state["n"] = n

    return update, bar.close


def add_slicing_options(p, granularity="element"):
    """Add the Slicer's options to a subcommand's parser (read back by :func:`make_slicer`)."""
    p.add_argument("--theta", type=float, default=None,
                   help="share of a neuron's contribution that may be left out, in (0, 1) "
                        "(default 0.2; 0.5 for effective_path)")
    p.add_argument("--rule", default="nnslicer", choices=("nnslicer", "paper", "effective_path"),
                   help="which candidates are kept (default: nnslicer, the authors' code)")
    p.add_argument("--granularity", default=granularity, choices=("element", "channel"),
                   help=f"a neuron of a feature map is an element or a channel (default: {granularity})")
    p.add_argument("--baseline", default="global", choices=("global", "class"),
                   help="deltas from the global mean or the predicted class's mean "
                        "(class needs per-class means: labels when profiling)")
    p.add_argument("--propagation", default="code", choices=("code", "paper"),
                   help="how ReLU, batch norm and max pooling pass counts back (default: code)")


def make_slicer(model, args):
    """An unfitted Slicer of ``model`` from the options of :func:`add_slicing_options`."""
    from .slicer import Slicer

    return Slicer(model, theta=args.theta, rule=args.rule, granularity=args.granularity,
                  baseline=args.baseline, propagation=args.propagation,
                  batch_size=getattr(args, "batch_size", 256))


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
    from .keras import lift

    model = load_model(args.model)
    graph = lift(model, args.granularity)
    print(f"{graph!r}\nfingerprint {graph.fingerprint}; criteria live on {graph.logits!r} "
          f"({graph.num_outputs} outputs)\n")
    print(graph.summary())
    return 0


def cmd_profile(args):
    from .keras import lift
    from .profile import profile
    from .keras import verify_data

    model = load_model(args.model)
    x = load_array(args.data, "x")
    y = load_array(args.labels, "y") if args.labels else None
    graph = lift(model)
    verify_data(graph, model, x)  # the lift computes what Keras computes
    update, close = progress_bar(len(x), "profiling")
    try:
        prof = profile(graph, x, y, batch_size=args.batch_size, progress=update)
    finally:
        close()
    prof.save(args.output)
    print(f"{prof!r} -> {args.output}")
    return 0


def cmd_slice(args):
    from .profile import Profile

    model = load_model(args.model)
    prof = Profile.load(args.profile)
    x = load_array(args.input, "x")
    slicer = make_slicer(model, args).fit(profile=prof)
    start = time.perf_counter()
    update, close = progress_bar(len(x) if np.ndim(x) > len(slicer.graph_.input_shape) else 1, "slicing")
    try:
        result = slicer.slice(x, target=_parse_target(args.target), aggregate=args.aggregate,
                              n_jobs=args.workers, address=args.ray_address, progress=update)
    finally:
        close()
    elapsed = time.perf_counter() - start
    result.save(args.output)
    print(result.summary())
    print(f"\n{result!r} in {elapsed:.2f} s -> {args.output}")
    return 0


def cmd_demo(args):
    _quiet_tensorflow()
    from . import demo

    return demo.run(args.out, samples=args.samples)


def cmd_render(args):
    from .errors import InvalidParameterError
    from .render import render
    from .slice import Slice

    if args.top_k < 0:
        raise InvalidParameterError(f"--top-k must be 0 or more. Got {args.top_k} instead.")
    if args.names and not args.other:
        raise InvalidParameterError("--names goes with --other (the two slices of a diff).")
    if args.file.endswith((".keras", ".h5")):  # a model on its own: its op graph
        if args.model or args.other:
            raise InvalidParameterError("--model and --other go with a slice file, not a model.")
        if args.view in ("collapsed", "diff", "attention"):
            raise InvalidParameterError(f"--view {args.view} draws slices: give a slice file (and --model), "
                                        "or draw the model with --view model or --view neuron.")
        path = render(load_model(args.file), args.output, args.format, view=args.view or "model",
                      top_k=args.top_k, max_nodes=args.max_nodes, max_edges=args.max_edges)
        print(f"wrote {path}")
        return 0
    first = Slice.load(args.file)
    other = Slice.load(args.other) if args.other else None
    model = load_model(args.model) if args.model else None
    names = tuple(args.names) if args.names else None
    if names is None and other is not None:
        stems = [os.path.splitext(os.path.basename(p))[0] for p in (args.file, args.other)]
        names = tuple(stems) if stems[0] != stems[1] else ("A", "B")
    extra = {"names": names} if names else {}
    start = time.perf_counter()
    path = render(first, args.output, args.format, view=args.view, other=other, model=model,
                  top_k=args.top_k, max_nodes=args.max_nodes, max_edges=args.max_edges, **extra)
    print(f"wrote {path} ({os.path.getsize(path):,} bytes, {time.perf_counter() - start:.2f} s)")
    return 0


# --------------------------------------------------------------------------- parser
def build_parser():
    parser = argparse.ArgumentParser(
        prog="nnslicer", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Slice neural networks the way a debugger slices programs: which neurons and "
                    "synapses of a Keras model made this output (NNSlicer, ESEC/FSE 2020).")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"nnslicer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log what is done (and show the traceback of an unexpected failure)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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
    p.set_defaults(func=cmd_profile, outputs={"-o": ("output", None)})

    p = sub.add_parser("slice", help="slice a model for some inputs",
                       description="Forward and backward analysis of --input against a saved "
                                   "profile; writes one slice (summed over the inputs).")
    p.add_argument("model", help="a .keras or .h5 model")
    p.add_argument("--profile", required=True, help="a profile written by 'nnslicer profile'")
    p.add_argument("--input", required=True, help="one sample or a batch (.npy/.npz)")
    p.add_argument("--target", help="output index, or comma-separated indices "
                                    "(default: each input's predicted class)")
    add_slicing_options(p)
    p.add_argument("--aggregate", default="sum", choices=("sum", "abs"),
                   help="add a batch's counts signed (sum) or absolute (abs)")
    p.add_argument("--batch-size", type=int, default=256, help="samples per batch (default 256)")
    p.add_argument("--workers", type=int, default=None,
                   help="run the backward analysis on K Ray workers (default: serially)")
    p.add_argument("--ray-address", default=None,
                   help="a running Ray cluster to use (from 'ray start --head'; RAY_ADDRESS works too)")
    p.add_argument("-o", "--output", required=True, help="where to write the slice (.npz)")
    p.set_defaults(func=cmd_slice, outputs={"-o": ("output", None)})

    p = sub.add_parser("demo", help="train, profile and slice a small CNN on bundled digits",
                       description="Train a small CNN on scikit-learn's 8x8 digits (cached in "
                                   "--out), profile it, slice test digits, print a per-layer "
                                   "summary and write OUT/slice.npz and its picture OUT/slice.svg.")
    p.add_argument("--out", default="nnslicer-demo", help="output folder (default ./nnslicer-demo)")
    p.add_argument("--samples", type=int, default=50, help="test digits to slice (default 50)")
    p.set_defaults(func=cmd_demo)

    from .render import AUTO_NEURON_EDGES, AUTO_NEURON_NODES, FORMATS, MAX_EDGES, MAX_NODES, VIEWS

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
               "  nnslicer render model.keras -o graph.pdf")
    p.add_argument("file", metavar="SLICE", help="a slice file (.npz) from 'nnslicer slice', or a "
                                                 ".keras/.h5 model to draw its op graph")
    p.add_argument("--model", help="the slice's model (.keras/.h5); needed for a slice file, which "
                                   "holds counts but not the model's wiring")
    p.add_argument("--view", choices=VIEWS,
                   help="what to draw (default: see above)")
    p.add_argument("--other", metavar="SLICE2", help="a second slice of the same model, for --view diff")
    p.add_argument("--names", nargs=2, metavar=("A", "B"),
                   help="what to call the two slices of a diff (default: the file names)")
    p.add_argument("--top-k", type=int, default=5,
                   help="neurons or channels shown per op in the collapsed and diff views (0 to 50, default 5)")
    p.add_argument("--max-nodes", type=int, default=MAX_NODES,
                   help=f"most neurons the neuron view draws before it refuses (default {MAX_NODES})")
    p.add_argument("--max-edges", type=int, default=MAX_EDGES,
                   help=f"most synapses the neuron view draws before it refuses (default {MAX_EDGES:,})")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from OUT's extension)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="where to write the picture (.svg, .png, .pdf or .dot)")
    p.set_defaults(func=cmd_render, outputs={"-o": ("output", None)})

    for module in ANALYSIS_COMMANDS:  # the analyses add their own subcommands
        importlib.import_module(module).add_commands(sub)
    _record_options(parser)
    return parser


#: Python parameters whose command-line option has another name.
API_OPTIONS = {"n_jobs": "workers", "rate": "prune", "address": "ray_address"}


def _flag_hint(exc, args):
    """The suffix " (option --x)" when ``exc`` names a Python parameter (``The 'x' parameter of
    ...``) that the command sets with option ``--x``; else ""."""
    found = re.search(r"The '(\w+)' parameter", str(exc))
    if found is None:
        return ""
    option = getattr(args, "options", {}).get(API_OPTIONS.get(found.group(1), found.group(1)))
    return f" (option {option})" if option else ""


def _record_options(parser):
    """Let every (sub)command know its name (``prog``, e.g. "nnslicer detect fit"), its
    options (destination -> longest option string) and the arguments that may name files
    (``paths``: free strings, neither choices nor typed nor flags)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _record_options(sub)
    options = {a.dest: max(a.option_strings, key=len) for a in parser._actions if a.option_strings}
    paths = {a.dest: max(a.option_strings, key=len) if a.option_strings else a.metavar or a.dest
             for a in parser._actions
             if a.type is None and a.choices is None and a.nargs != 0 and a.dest != "help"}
    parser.set_defaults(options=options, paths=paths, prog=parser.prog)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        check_outputs({option: (getattr(args, dest), extensions)
                       for option, (dest, extensions) in getattr(args, "outputs", {}).items()},
                      list(input_files(args)))
        return args.func(args)
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{args.prog}: interrupted", file=sys.stderr)
        return 130
    except (NNSlicerError, OSError) as exc:  # OSError: files (missing, unwritable, full disk...)
        print(f"{args.prog}: error: {exc}{_flag_hint(exc, args)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a failure nnslicer did not foresee: still one line, unless -v
        if args.verbose:
            raise
        print(f"{args.prog}: error: {type(exc).__name__}: {exc} (unexpected: run again with -v for the "
              "traceback, and report it)", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
