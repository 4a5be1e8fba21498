"""Data larger than memory: profiling and slicing stream from generators and tf.data."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import nnslicer


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3, activation="relu", name="c"),
                              keras.layers.GlobalAveragePooling2D(name="gap"),
                              keras.layers.Dense(4, activation="softmax", name="out")], name="stream")
    x = np.random.default_rng(1).normal(size=(50, 6, 6, 1)).astype("float32")
    y = np.random.default_rng(2).integers(0, 4, size=50)
    return model, x, y, nnslicer.Slicer(model, batch_size=8).fit(x, y)


def batches(x, size=7, y=None):
    for i in range(0, len(x), size):
        yield x[i:i + size] if y is None else (x[i:i + size], y[i:i + size])


def test_profile_from_tf_data_equals_arrays(setup):
    model, x, y, slicer = setup
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(9)
    streamed = nnslicer.Slicer(model).fit(ds).profile_
    for name, mean in slicer.profile_.means.items():
        np.testing.assert_allclose(streamed.means[name], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(streamed.class_counts, slicer.profile_.class_counts)


@pytest.mark.parametrize("how", ["sum", "abs"])
def test_slice_of_a_generator_equals_the_array(setup, how):
    model, x, y, slicer = setup
    assert slicer.slice(batches(x), aggregate=how) == slicer.slice(x, aggregate=how)
    assert slicer.slice(batches(x, y=y), target=2, aggregate=how) == slicer.slice(x, target=2, aggregate=how)


def test_slice_many_of_tf_data_equals_the_array(setup):
    model, x, y, slicer = setup
    ds = tf.data.Dataset.from_tensor_slices(x).batch(11)
    assert slicer.slice_many(ds) == slicer.slice_many(x)
    assert slicer.slice_many(batches(x), targets=1) == slicer.slice_many(x, targets=1)


def test_stream_errors(setup):
    model, x, y, slicer = setup
    with pytest.raises(nnslicer.InvalidInputError, match="stream"):
        slicer.slice_many(batches(x), targets=[0] * 50)
    with pytest.raises(nnslicer.InvalidInputError, match="empty"):
        slicer.slice(iter([]))
    with pytest.raises(nnslicer.InvalidInputError, match="empty"):
        slicer.slice_many(iter([]))
    bad = x[:7].copy()
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(nnslicer.InvalidInputError, match="NaN or inf"):
        slicer.slice(iter([x[:7], bad]))
