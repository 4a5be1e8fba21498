"""Files that load back: npz archives with a JSON header, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager

import numpy as np

from .errors import FileFormatError

__all__ = ["save_archive", "load_archive", "atomic_path", "check_writable", "same_arrays", "plain"]

#: Version of the archive layout (a JSON header and numbered arrays) that this code writes and reads.
FORMAT_VERSION = 1


def _umask_mode():
    """The mode a new file gets from open(): 0o666 less the umask (mkstemp's files are 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_writable(path, what=""):
    """Refuse a ``path`` that names a directory (IsADirectoryError), lies in a missing one
    (FileNotFoundError) or in one that cannot be written (PermissionError: no permission, a
    read-only file system); ``what``, e.g. the option that gave it, goes into the message.
    Returns the directory."""
    path = os.fspath(path)
    where = f" (for {what} {path!r})" if what else ""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a directory; give a file name{where}.")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"No such directory: {directory!r}{where}")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"Cannot write in {directory!r} (no permission, or a read-only file system){where}.")
    return directory


@contextmanager
def atomic_path(path, suffix=""):
    """A temporary path beside ``path`` that replaces ``path`` when the block ends without
    error; on an error nothing is left behind and an existing file stays untouched."""
    directory = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=".nnslicer-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def same_arrays(a, b):
    """Whether two dicts of arrays (or None) hold the same keys, dtypes and values: the
    equality of the objects that files load back."""
    if a is None or b is None:
        return a is b
    return a.keys() == b.keys() and all(
        np.asarray(a[k]).dtype == np.asarray(b[k]).dtype and np.array_equal(a[k], b[k]) for k in a)


def plain(value):
    """A numpy scalar or array as the Python value JSON knows (a number or a list); anything
    else as it is."""
    return value.tolist() if isinstance(value, (np.generic, np.ndarray)) else value


def _json_default(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return plain(value)
    raise TypeError(f"{type(value).__name__} cannot go into an nnslicer file header: {value!r}")


def save_archive(path, kind, meta, arrays):
    """Write ``arrays`` (name -> ndarray) and ``meta`` to ``path`` as one .npz, atomically."""
    path = os.fspath(path)
    header = {"format": f"nnslicer-{kind}", "version": FORMAT_VERSION, "meta": meta, "names": list(arrays)}
    payload = {f"a{i}": np.asarray(v) for i, v in enumerate(arrays.values())}
    payload["header"] = np.frombuffer(json.dumps(header, default=_json_default).encode(), dtype=np.uint8)
    with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **payload)
    return path


def load_archive(path, kind):
    """Read a file written by :func:`save_archive`; returns ``(meta, arrays)``.

    Raises FileFormatError for anything that is not such a file of this ``kind``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file: {path!r}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # zlib, zipfile and npy-header errors of a damaged file
        raise FileFormatError(f"{path!r} is not a readable nnslicer {kind} file ({exc}).") from exc
    if isinstance(data, np.ndarray):
        raise FileFormatError(f"{path!r} holds a single array (.npy), not an nnslicer {kind} file.")
    try:
        with data:
            header = json.loads(bytes(data["header"]).decode())
            fmt = header.get("format")
            if fmt != f"nnslicer-{kind}":
                raise FileFormatError(f"{path!r} is a {fmt!r} file, not an nnslicer {kind} file.")
            if header.get("version") != FORMAT_VERSION:
                raise FileFormatError(f"{path!r} is an nnslicer {kind} file of format version "
                                      f"{header.get('version')!r}; this nnslicer reads version {FORMAT_VERSION}.")
            arrays = {name: data[f"a{i}"] for i, name in enumerate(header["names"])}
            return header["meta"], arrays
    except FileFormatError:
        raise
    except Exception as exc:  # zlib, zipfile, npy-header, JSON and missing-entry errors
        raise FileFormatError(f"{path!r} is not a readable nnslicer {kind} file ({type(exc).__name__}: {exc}).") from exc
