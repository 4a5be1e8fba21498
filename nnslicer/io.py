"""Files that load back: npz archives with a JSON header, written atomically."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import signal
import stat
import tempfile
import threading
from contextlib import contextmanager

import numpy as np

from .errors import FileFormatError

__all__ = ["save_archive", "load_archive", "archive_kind", "atomic_path", "check_writable", "check_readable",
           "same_arrays", "json_value", "is_int", "non_finite"]

#: Version of the archive layout that this code writes: a JSON header (with, from version 2, a
#: digest of the metadata and arrays) and numbered arrays.
FORMAT_VERSION = 2
#: The versions it reads (version 1 files have no digest).
READ_VERSIONS = (1, 2)


def _umask_mode():
    """The mode a new file gets from open(): 0o666 less the umask (mkstemp's files are 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _kind(mode):
    """What a file that is not a regular file is, in words."""
    for test, what in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return what
    return "not a regular file"


def check_writable(path, what=""):
    """Refuse a ``path`` that names anything but a regular file (a directory: IsADirectoryError;
    a device, FIFO or socket: FileExistsError, since nnslicer replaces only regular files), lies
    in a missing directory (FileNotFoundError) or in one that cannot be written (PermissionError:
    no permission, a read-only file system). A symbolic link is followed: its target is what gets
    written (atomically) and what is checked. ``what``, e.g. the option that gave it, goes into
    the message. Returns the real path that will be written."""
    path = os.fspath(path)
    where = f" (for {what} {path!r})" if what else ""
    target = os.path.realpath(path)
    if os.path.isdir(target):
        raise IsADirectoryError(f"{path!r} is a directory; give a file name{where}.")
    if os.path.lexists(target):
        mode = os.stat(target).st_mode
        if not stat.S_ISREG(mode):
            raise FileExistsError(f"{path!r} is {_kind(mode)}: nnslicer writes only regular files, and never "
                                  f"replaces anything else{where}.")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"No such directory: {directory!r}{where}")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"Cannot write in {directory!r} (no permission, or a read-only file system){where}.")
    return target


def check_readable(path, what="file"):
    """Refuse a ``path`` that names nothing (FileNotFoundError), a directory (IsADirectoryError)
    or anything but a regular file (FileFormatError: reading a FIFO or a device could block or
    never end); ``what`` names the kind of file expected in the message."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such {what}: {path!r}")
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{path!r} is a directory, not a {what}.")
    if not stat.S_ISREG(mode):
        raise FileFormatError(f"{path!r} is {_kind(mode)}, not a {what}: nnslicer reads regular files only.")
    return path


def _fsync(path, flags=os.O_RDONLY):
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _terminate_as_exit():
    """While the block runs (in the main thread), SIGTERM raises SystemExit like Ctrl-C raises
    KeyboardInterrupt, so that ``finally`` clauses (the removal of a temporary file) run."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def atomic_path(path, suffix="", mode=None):
    """A temporary path beside ``path`` that replaces ``path`` when the block ends without
    error; on an error (or Ctrl-C, or SIGTERM) nothing is left behind and an existing file stays
    untouched.

    Only a regular file (or nothing) is ever replaced (:func:`check_writable`); through a
    symbolic link, its target is replaced. The new file has ``mode`` if given (e.g. 0o600 for
    secrets), else the replaced file's mode, else the one ``open()`` would give. The file is
    flushed to disk before the rename, and the directory after it."""
    target = check_writable(path)
    directory = os.path.dirname(target)
    if mode is None:
        mode = stat.S_IMODE(os.stat(target).st_mode) if os.path.exists(target) else _umask_mode()
    with _terminate_as_exit():
        fd, tmp = tempfile.mkstemp(prefix=".nnslicer-", suffix=suffix, dir=directory)
        os.close(fd)
        try:
            yield tmp
            os.chmod(tmp, mode)
            _fsync(tmp)
            os.replace(tmp, target)
            _fsync(directory)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)


def same_arrays(a, b):
    """Whether two dicts of arrays (or None) hold the same keys, dtypes and values: the
    equality of the objects that files load back."""
    if a is None or b is None:
        return a is b
    return a.keys() == b.keys() and all(
        np.asarray(a[k]).dtype == np.asarray(b[k]).dtype and np.array_equal(a[k], b[k]) for k in a)


def json_value(value):
    """A numpy scalar or array as the Python value JSON knows (a number or a list); anything
    else as it is."""
    return value.tolist() if isinstance(value, (np.generic, np.ndarray)) else value


def is_int(value):
    """Whether a file's field is an integer (not a bool) that fits int64, as counts and indices do."""
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_)) \
        and -2**63 <= value < 2**63


def non_finite(value, where):
    """Where in a JSON value (``where['key'][0]``...) its first NaN or infinity lies, or None:
    Python writes them into JSON, and they never compare equal to themselves."""
    stack = [(value, where)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return f"{where} ({value})"
        if isinstance(value, dict):
            stack += [(v, f"{where}[{k!r}]") for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            stack += [(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return None


def _json_default(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return json_value(value)
    raise TypeError(f"{type(value).__name__} cannot go into an nnslicer file header: {value!r}")


def _digest(meta, names, arrays):
    """SHA-256 of the metadata (as canonical JSON) and of each array's name, dtype, shape and
    bytes: what a file's content must hash to."""
    h = hashlib.sha256(json.dumps(meta, sort_keys=True, default=_json_default).encode())
    for name, arr in zip(names, arrays):
        arr = np.ascontiguousarray(arr)
        h.update(json.dumps([name, arr.dtype.str, arr.shape]).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def save_archive(path, kind, meta, arrays, mode=None):
    """Write ``arrays`` (name -> ndarray) and ``meta`` to ``path`` as one .npz, atomically
    (``mode``: see :func:`atomic_path`), with a digest of both that :func:`load_archive` checks."""
    path = os.fspath(path)
    values = [np.asarray(v) for v in arrays.values()]
    header = {"format": f"nnslicer-{kind}", "version": FORMAT_VERSION, "meta": meta, "names": list(arrays),
              "digest": _digest(meta, list(arrays), values)}
    payload = {f"a{i}": v for i, v in enumerate(values)}
    payload["header"] = np.frombuffer(json.dumps(header, default=_json_default).encode(), dtype=np.uint8)
    with atomic_path(path, ".npz", mode) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **payload)
    return path


def archive_kind(data):
    """The kind (``"slice"``, ``"profile"``, ``"detector"``, ...) of the nnslicer archive that
    the opened npz ``data`` is, or None for any other npz."""
    if "header" not in data.files:
        return None
    try:
        fmt = json.loads(bytes(data["header"]).decode()).get("format")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return fmt[len("nnslicer-"):] if isinstance(fmt, str) and fmt.startswith("nnslicer-") else None


def load_archive(path, kind):
    """Read a file written by :func:`save_archive`; returns ``(meta, arrays)``.

    Raises FileFormatError for anything that is not such a file of this ``kind``."""
    path = check_readable(path, f"nnslicer {kind} file")
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
            version = header.get("version")
            if isinstance(version, bool) or version not in READ_VERSIONS:
                raise FileFormatError(f"{path!r} is an nnslicer {kind} file of format version {version!r}; "
                                      f"this nnslicer reads versions {READ_VERSIONS[0]} to {READ_VERSIONS[-1]}.")
            bad = non_finite(header["meta"], "meta")
            if bad:
                raise FileFormatError(f"{path!r} is a damaged nnslicer {kind} file: its header holds NaN or "
                                      f"infinity at {bad}.")
            names = header["names"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names) \
                    or len(set(names)) != len(names) or len(names) != len(data.files) - 1:
                raise FileFormatError(f"{path!r} is a damaged nnslicer {kind} file: its array names do not "
                                      "match its arrays.")
            arrays = {name: data[f"a{i}"] for i, name in enumerate(names)}
            if version >= 2 and header.get("digest") != _digest(header["meta"], names, arrays.values()):
                raise FileFormatError(f"{path!r} is a damaged or edited nnslicer {kind} file: its content "
                                      "does not match its digest.")
            return header["meta"], arrays
    except FileFormatError:
        raise
    except Exception as exc:  # zlib, zipfile, npy-header, JSON and missing-entry errors
        raise FileFormatError(f"{path!r} is not a readable nnslicer {kind} file ({type(exc).__name__}: {exc}).") from exc
