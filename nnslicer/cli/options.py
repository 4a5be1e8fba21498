"""Helpers shared by the commands: reading models and arrays, checking output files, the
slicing options, progress bars. Commands of any group (the analyses' too) use them."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from importlib.metadata import entry_points

import numpy as np

from ..errors import FileFormatError, InvalidInputError

__all__ = ["MODEL_FILES", "load_model", "load_array", "save_model", "check_outputs", "input_files", "progress",
           "fitted_slicer", "add_slicing_options", "make_slicer", "slicer_options", "quiet_tensorflow", "refuse_unread",
           "add_class_names_option", "class_names"]

log = logging.getLogger("nnslicer")

#: Entry point group of functions that register custom Keras objects (layers a model file may
#: hold), called before a model is loaded.
KERAS_OBJECTS = "nnslicer.keras_objects"
#: Extensions of the model files the commands read and write.
MODEL_FILES = (".keras", ".h5")


def quiet_tensorflow():
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
    from ..io import check_readable

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
    quiet_tensorflow()
    import keras

    for entry in entry_points(group=KERAS_OBJECTS):  # custom layers (e.g. the analyses' FakeQuant)
        entry.load()()
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many kinds for a bad file
        raise FileFormatError(f"{path!r} is not a loadable Keras model ({type(exc).__name__}: {exc}).") from exc


def load_array(path, key="x"):
    """An array from .npy, or from .npz (the array named ``key``, else the first one)."""
    from ..io import archive_kind, check_readable

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
        kind = archive_kind(data)
        if kind:
            raise InvalidInputError(f"{path!r} is an nnslicer {kind} file, not data: give the inputs themselves "
                                    "(.npy, or .npz of arrays such as those `nnslicer attack` writes).")
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
    from ..errors import InvalidParameterError
    from ..io import check_writable

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
    from ..io import atomic_path

    with atomic_path(path, os.path.splitext(path)[1].lower()) as tmp:
        model.save(tmp)


#: Set by ``nnslicer -q``: no progress bars.
QUIET = False


@contextlib.contextmanager
def progress(total, what, unit="sample"):
    """``with progress(len(x), "slicing") as update:``: ``update(n)`` (``n`` samples done, or
    ``n`` of another ``unit``) draws a tqdm bar with a rate on a terminal (none when stderr is not one,
    or with ``-q``; log lines without tqdm); the bar is closed at the end of the block."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        yield lambda n: log.info("%s: %d/%s %ss", what, n, total, unit)
        return
    bar = tqdm(total=total, desc=what, unit=unit, file=sys.stderr, disable=True if QUIET else None)
    state = {"n": 0}

    def update(n):
        bar.update(n - state["n"])
        state["n"] = n

    try:
        yield update
    finally:
        bar.close()


def fitted_slicer(model, args, x, y=None):
    """:func:`make_slicer` fitted (profiled) on ``x``, with a progress bar."""
    with progress(len(x), "profiling") as update:
        return make_slicer(model, args).fit(x, y, progress=update)


def add_class_names_option(p):
    """``--class-names``: how the classes are named in what a command prints and draws."""
    p.add_argument("--class-names", metavar="NAMES", default=None,
                   help="name the classes in what is printed and drawn (\"9 (Ankle boot)\"): a bundled data "
                        "set (digits, mnist, fashion_mnist, cifar10), a text file with one name per line, or "
                        "comma-separated names")


def class_names(args, model):
    """The names ``--class-names`` gives ``model``'s classes (one per output), or None."""
    from ..datasets import class_names as read

    names = getattr(args, "class_names", None)
    return None if names is None else read(names, int(model.output_shape[-1]))


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


def slicer_options(args):
    """The Slicer's options (keyword arguments) from those of :func:`add_slicing_options`."""
    return dict(theta=args.theta, rule=args.rule, granularity=args.granularity, baseline=args.baseline,
                propagation=args.propagation, batch_size=getattr(args, "batch_size", 256))


def make_slicer(model, args):
    """An unfitted Slicer of ``model`` from the options of :func:`add_slicing_options`."""
    from ..slicer import Slicer

    return Slicer(model, **slicer_options(args))


def refuse_unread(args, method, readers, defaults):
    """Refuse, before any work, an option given (other than its default) that ``--method``
    does not read: ``readers`` maps each option to ``(dest, the methods that read it)``."""
    from ..errors import InvalidParameterError

    for option, (dest, methods) in readers.items():
        if method not in methods and getattr(args, dest) != defaults[dest]:
            either = ", ".join(methods[:-1]) + " or " + methods[-1] if len(methods) > 1 else methods[0]
            raise InvalidParameterError(f"{option} has no effect with --method {method} (only with {either}).")
