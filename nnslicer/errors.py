"""All of nnslicer's exceptions, under one root, and :func:`require` for optional dependencies.

Every exception is also a built-in (``ValueError``, ``ImportError``, ...) so that
callers who do not know nnslicer can still catch it the usual way.
"""

__all__ = [
    "NNSlicerError",
    "UnsupportedLayerError",
    "NotFittedError",
    "InvalidInputError",
    "InvalidParameterError",
    "FileFormatError",
    "MissingDependencyError",
    "RenderError",
    "ExecutionError",
    "require",
]


class NNSlicerError(Exception):
    """Root of every error nnslicer raises on purpose."""


class UnsupportedLayerError(NNSlicerError, TypeError):
    """The model holds layers that nnslicer cannot lift (all of them are named)."""


class NotFittedError(NNSlicerError, AttributeError):
    """A method that needs ``fit`` was called before it."""


class InvalidInputError(NNSlicerError, ValueError):
    """Data or targets given to nnslicer are unusable (shape, NaN, empty, range)."""


class InvalidParameterError(NNSlicerError, ValueError):
    """A parameter is outside what it accepts."""


class FileFormatError(NNSlicerError, ValueError):
    """A file is corrupt, of the wrong kind, or belongs to another model."""


class RenderError(NNSlicerError, RuntimeError):
    """Graphviz failed to draw a picture."""


class ExecutionError(NNSlicerError, RuntimeError):
    """The machinery running an analysis failed (Ray workers or nodes lost beyond their retries)."""


class MissingDependencyError(NNSlicerError, ImportError):
    """An optional dependency is needed for this call and is not installed."""


def require(module: str, extra: str):
    """Import an optional dependency or raise a MissingDependencyError saying what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{module!r} is needed for this and is not installed: "
            f"pip install 'nnslicer[{extra}]'"
        ) from exc
