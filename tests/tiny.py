"""Tiny real Keras models shared by the test modules."""

import keras


def tiny_cnn(seed, name="tiny", n_classes=10):
    """Conv2D(3)-relu, MaxPool, Flatten, Dense-softmax on 6x6x1; the weights follow ``seed``.

    The input layer is named so that models built in one process have the same op names."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((6, 6, 1), name="image"),
        keras.layers.Conv2D(3, 3, activation="relu", name="conv"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(n_classes, activation="softmax", name="dense"),
    ], name=name)


def self_labelled(model, n, seed):
    """``n`` random inputs of the tiny models' shape, labelled by ``model`` itself (every one
    is then correctly classified)."""
    import numpy as np

    x = np.random.default_rng(seed).normal(size=(n, 6, 6, 1)).astype("float32")
    return x, model.predict(x, verbose=0).argmax(axis=1)
