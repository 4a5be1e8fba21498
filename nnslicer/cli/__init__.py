"""The ``nnslicer`` command line: ``main(argv) -> exit code``.

Commands come in groups, one module each: :mod:`~nnslicer.cli.slicing` (``info``,
``profile``, ``slice``), :mod:`~nnslicer.cli.render` and :mod:`~nnslicer.cli.demo` here, and
the groups that other packages declare as ``nnslicer.commands`` entry points (the analyses:
``detect``, ``prune``, ``protect``, ...), each ``name = module:add_commands``. An entry
point's module is imported only when its command runs (``nnslicer --help`` lists its name).
Shared option helpers live in :mod:`~nnslicer.cli.options`.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from importlib import import_module
from importlib.metadata import entry_points

from ..errors import NNSlicerError
from . import options
from .options import check_outputs, input_files, load_model

__all__ = ["main", "build_parser", "load_model", "COMMANDS"]

log = logging.getLogger("nnslicer")

#: This package's command groups, in the order ``--help`` lists them.
GROUPS = ("slicing", "render", "demo")
#: Entry point group of the command groups of other packages: ``command = module:add_commands``.
COMMANDS = "nnslicer.commands"

EPILOG = """examples:
  nnslicer demo                                   train, profile and slice on bundled digits
  nnslicer info model.keras                       the lifted graph, op by op
  nnslicer profile model.keras --data x_train.npy --labels y_train.npy -o profile.npz
  nnslicer slice model.keras --profile profile.npz --input x.npy --target 3 -o slice.npz
  nnslicer slice model.keras --profile profile.npz --input x_test.npy --workers 2 -o all.npz
  nnslicer render slice.npz --model model.keras -o slice.svg

Models are .keras or .h5 files; data are .npy or .npz files (an .npz's array named 'x' or
'y', else its first array)."""


def _entry_points():
    """The ``nnslicer.commands`` entry points, one per command name (the first of a name wins)."""
    found = {}
    for entry in entry_points(group=COMMANDS):
        found.setdefault(entry.name, entry)
    return found


def _command_of(argv):
    """The command that ``argv`` runs (its first word that is not an option), or None."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(load=True):
    """The parser. ``load``: which entry-point commands get their full parser (True: all; a
    command name: that one's group; None: none); the others are listed by name only, and
    their modules are not imported."""
    parser = argparse.ArgumentParser(
        prog="nnslicer", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Slice neural networks the way a debugger slices programs: which neurons and "
                    "synapses of a Keras model made this output (NNSlicer, ESEC/FSE 2020).")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"nnslicer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log what is done (and show the traceback of an unexpected failure)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        import_module(f"{__name__}.{group}").add_commands(sub)
    found = _entry_points()
    added = set()
    for name, entry in found.items():
        if (load is True or load == name) and entry.value not in added:
            added.add(entry.value)
            entry.load()(sub)
    for name, entry in found.items():
        if name not in sub.choices:
            sub.add_parser(name, help=f"see 'nnslicer {name} --help' (from {entry.value.split(':')[0]})")
    _record_options(parser)
    return parser


#: Python parameters whose command-line option has another name (a command adds its own with
#: ``set_defaults(api_options={...})``).
API_OPTIONS = {"n_jobs": "workers", "address": "ray_address"}


def _flag_hint(exc, args):
    """The suffix " (option --x)" when ``exc`` names a Python parameter (``The 'x' parameter of
    ...``) that the command sets with option ``--x``; else ""."""
    found = re.search(r"The '(\w+)' parameter", str(exc))
    if found is None:
        return ""
    names = {**API_OPTIONS, **getattr(args, "api_options", {})}  # a command may add its own
    option = getattr(args, "options", {}).get(names.get(found.group(1), found.group(1)))
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
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(load=_command_of(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    options.QUIET = args.quiet
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

