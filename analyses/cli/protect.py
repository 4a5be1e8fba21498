"""``nnslicer protect`` and ``nnslicer restore``: model protection."""

from __future__ import annotations

import argparse
import contextlib
import os

from nnslicer.cli.options import MODEL_FILES, fitted_slicer, load_model, progress, save_model
from nnslicer.errors import InvalidParameterError

from ..protection import PROTECT_METHODS, SCOPES, ProtectionSecret, protect, restore
from .class_data import add_class_data_options, load_class_data, print_accuracy


def cmd_protect(args):
    if os.path.exists(args.secret):  # it may hold the only copy of another model's hidden weights
        raise InvalidParameterError(f"--secret {args.secret!r} exists: a secret is never overwritten (it may be "
                                    "the only copy of hidden weights); move it away or name another file.")
    model, x, y, classes, names = load_class_data(args, "protect")
    slicer = fitted_slicer(model, args, x, y) if args.method in ("nnslicer", "effective_path") else None
    with progress(None, "slicing") if slicer is not None else contextlib.nullcontext() as update:
        protected, secret = protect(model, slicer, x, y, classes, args.fraction, args.method,
                                    max_per_class=args.max_per_class, scope=args.scope, progress=update)
    secret.save(args.secret)  # first: a protected model without its secret would lose the weights
    try:
        save_model(protected, args.output)
    except BaseException:  # nor a new secret without its protected model
        os.remove(args.secret)
        raise
    print(f"{secret!r}\nprotected model -> {args.output}, secret -> {args.secret}")
    print_accuracy(model, protected, x, y, classes, names=names)
    return 0


def cmd_restore(args):
    protected = load_model(args.model)
    secret = ProtectionSecret.load(args.secret)
    restored = restore(protected, secret)
    save_model(restored, args.output)
    print(f"restored {secret.n_hidden:,} weights -> {args.output}")
    return 0


def add_commands(subparsers):
    """Add ``nnslicer protect`` and ``nnslicer restore``."""
    p = subparsers.add_parser(
        "protect", help="hide the weights a subset of classes needs most",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Selective model protection (NNSlicer): slice samples of --classes, zero in "
                    "every weighted layer the fraction --fraction of synapses that count most "
                    "for them, and write the protected model and the secret (positions and "
                    "original values) separately. 'nnslicer restore' puts them back.",
        epilog="examples:\n"
               "  nnslicer protect model.keras --data x.npy --labels y.npy --classes 0,1,5 \\\n"
               "      -o protected.keras --secret secret.npz\n"
               "  nnslicer restore protected.keras --secret secret.npz -o restored.keras")
    add_class_data_options(p, "protect")
    p.add_argument("--fraction", type=float, default=0.5, help="share of each layer's synapses hidden (default 0.5)")
    p.add_argument("--method", default="nnslicer", choices=PROTECT_METHODS, help="how synapses are ranked (default nnslicer)")
    p.add_argument("--scope", default="layer", choices=SCOPES,
                   help="hide --fraction of each layer (default) or of the whole model")
    p.add_argument("-o", "--output", required=True, help="where to write the protected model (.keras or .h5)")
    p.add_argument("--secret", required=True,
                   help="where to write the secret (.npz; an existing file is never overwritten)")
    p.set_defaults(func=cmd_protect, outputs={"-o": ("output", MODEL_FILES), "--secret": ("secret", (".npz",))})

    p = subparsers.add_parser(
        "restore", help="put a protected model's hidden weights back",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Restore a model protected by 'nnslicer protect' from its secret: the result "
                    "has the original weights, bitwise. A secret of another model is refused.",
        epilog="example:\n  nnslicer restore protected.keras --secret secret.npz -o restored.keras")
    p.add_argument("model", metavar="PROTECTED", help="the protected .keras or .h5 model")
    p.add_argument("--secret", required=True, help="the secret written by 'nnslicer protect'")
    p.add_argument("-o", "--output", required=True, help="where to write the restored model (.keras or .h5)")
    p.set_defaults(func=cmd_restore, outputs={"-o": ("output", MODEL_FILES)})
