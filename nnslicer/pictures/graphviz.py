"""Running Graphviz's ``dot`` on the DOT text, and writing the picture's file."""

from __future__ import annotations

import os
import shutil
import subprocess

from ..errors import InvalidParameterError, MissingDependencyError, RenderError
from ..io import atomic_path
from .dot import quote, to_dot
from .views import _check_choice

FORMATS = ("svg", "png", "pdf", "dot")


def _format_of(path, fmt):
    """The format to write ``path`` in: ``fmt``, else the one its extension names; the two must
    agree when both are given."""
    ext = os.path.splitext(str(path))[1].lower().lstrip(".")
    named = {"gv": "dot"}.get(ext, ext)
    if fmt is None:
        if named not in FORMATS:
            raise InvalidParameterError(
                f"Cannot tell the format from {os.fspath(path)!r}: name it .svg, .png, .pdf or .dot, "
                "or give the format (format=..., --format).")
        fmt = named
    _check_choice("format", fmt, FORMATS)
    if named in FORMATS and named != fmt:
        raise InvalidParameterError(f"{os.fspath(path)!r} names a .{ext} file but the format is {fmt!r}: "
                                    "make them agree.")
    return fmt


def _write_atomic(path, data: bytes):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return path


def render(obj, path, format=None, *, view=None, dpi=None, timeout=300, **kw) -> str:
    """Draw a slice, two slices, a graph or a Keras model to ``path``; returns the path.

    Parameters
    ----------
    obj : Slice, (Slice, Slice), DataFlowGraph or keras.Model
    path : str or path-like
    format : {"svg", "png", "pdf", "dot"}, optional
        Default: from ``path``'s extension. "dot" writes the DOT text and needs nothing else; the
        others run Graphviz's ``dot`` program.
    view : {"neuron", "collapsed", "model", "diff"}, optional
        See :func:`to_dot`, which also lists the other keyword arguments.
    dpi : float, optional
        Resolution of a PNG (Graphviz's default: 96).
    timeout : float, default 300
        Seconds Graphviz may take before :class:`RenderError` is raised.

    Raises
    ------
    MissingDependencyError
        When ``dot`` is not installed; the DOT text is then written next to ``path``
        (``picture.svg`` -> ``picture.dot``), to render later or elsewhere.

    Examples
    --------
    >>> nnslicer.render(slice_, "slice.svg")                       # doctest: +SKIP
    >>> nnslicer.render((clean, adversarial), "diff.png", names=("clean", "adversarial"))  # doctest: +SKIP
    """
    path = os.fspath(path)
    fmt = _format_of(path, format)
    text = to_dot(obj, view=view, **kw)
    if dpi is not None:
        if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not 10 <= dpi <= 1200:
            raise InvalidParameterError(f"The 'dpi' parameter must be a number in [10, 1200]. Got {dpi!r} instead.")
        text = text.replace("  graph [", f"  graph [dpi={quote(dpi)}, ", 1)
    if fmt == "dot":
        return _write_atomic(path, text.encode("utf-8"))
    exe = shutil.which("dot")
    if exe is None:
        base, ext = os.path.splitext(path)
        dot_path = (base if ext.lower() != ".dot" else path) + ".dot"
        _write_atomic(dot_path, text.encode("utf-8"))
        raise MissingDependencyError(
            f"Writing {fmt.upper()} needs Graphviz's 'dot' program, which is not on PATH. The DOT text "
            f"is in {dot_path!r}. Install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: "
            f"brew install graphviz), then render it with: dot -T{fmt} {dot_path} -o {path}")
    with atomic_path(path, "." + fmt) as tmp:
        _run_dot(exe, fmt, text, timeout, ["-o", tmp])
        if not os.path.getsize(tmp):
            raise RenderError("Graphviz's dot wrote an empty file.")
    return path


def _run_dot(exe, fmt, text, timeout, out_args=()):
    """Graphviz's ``dot`` on ``text``; returns its standard output. RenderError on failure."""
    try:
        done = subprocess.run([exe, f"-T{fmt}", *out_args], input=text.encode("utf-8"),
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RenderError(f"Graphviz's dot did not finish within {timeout} s; try the collapsed view or "
                          "a smaller top_k (--view collapsed, --top-k K), or write DOT (format='dot', "
                          "-o OUT.dot).") from None
    if done.returncode != 0:
        raise RenderError(f"Graphviz's dot failed (exit {done.returncode}): "
                          f"{done.stderr.decode('utf-8', 'replace').strip()[:2000]}")
    return done.stdout


def to_svg(obj, *, view=None, timeout=60, **kw):
    """The SVG text of a picture of ``obj`` (as :func:`render` draws it), or None when
    Graphviz's ``dot`` is not installed."""
    exe = shutil.which("dot")
    if exe is None:
        return None
    return _run_dot(exe, "svg", to_dot(obj, view=view, **kw), timeout).decode("utf-8")


def jupyter_svg(obj, view):
    """What Jupyter shows for a Slice or a DataFlowGraph (their ``_repr_svg_``): :func:`to_svg`,
    or None (Jupyter then shows the text repr) when it cannot be drawn."""
    from ..errors import NNSlicerError

    try:
        return to_svg(obj, view=view)
    except NNSlicerError:
        return None
