"""The lift is checked: Slicer.fit compares the lifted graph with Keras on the first profiling
batch, and a lift that computes another network is refused, naming the first wrong op."""

import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers as L

import nnslicer
import nnslicer.keras.verification
from nnslicer.ops import HANDLERS
from nnslicer.keras import verify
from tiny import self_labelled, tiny_cnn


def deep(seed=0):
    """Several layers of several kinds, logits out (no softmax to squash a difference); the
    batch norm has non-trivial statistics."""
    keras.utils.set_random_seed(seed)
    x_in = keras.Input((6, 6, 1), name="image")
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(x_in)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Conv2D(4, 3, name="c2")(x)
    x = L.Activation("tanh", name="act")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(8, activation="relu", name="fc")(x)
    model = keras.Model(x_in, L.Dense(5, name="logits")(x), name="deep")
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
    bn.set_weights([rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, 4)])
    return model


def data(n=40, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 6, 6, 1)).astype("float32")


def wrong(monkeypatch, kind, constant, only=None):
    """Simulate a lifter bug: ``kind``'s handler adds ``constant`` to its output (to the ops
    whose activation is ``only``, when given)."""
    handler = HANDLERS[kind]
    right = type(handler).forward

    def forward(op, inputs):
        out = right(handler, op, inputs)
        return out + constant if only is None or op.params.get("activation") == only else out

    monkeypatch.setattr(handler, "forward", forward, raising=False)


def test_a_correct_lift_passes_and_fit_is_as_before(caplog):
    model, x = tiny_cnn(0), data()
    graph = nnslicer.lift(model)
    assert verify(graph, model, x) < 1e-6
    assert verify(graph, model, x[0]) < 1e-6  # one sample
    with caplog.at_level("INFO", logger="nnslicer.keras.verification"):
        slicer = nnslicer.Slicer(model).fit(x)
    assert "on 32 sample(s): max difference" in caplog.text
    assert slicer.profile_ == nnslicer.profile(model, x)
    deep_model = deep()
    assert nnslicer.Slicer(deep_model).fit(x).profile_.n_samples == 40


def test_verify_refuses_data_of_another_shape():
    model = tiny_cnn(0)
    with pytest.raises(nnslicer.InvalidInputError, match="shape"):
        verify(nnslicer.lift(model), model, np.zeros((2, 5), "float32"))


@pytest.mark.parametrize("kind, only, op, layer", [
    ("activation", None, "c1/relu", "'c1', Conv2D"),         # the first of three activations
    ("activation", "tanh", "act", "'act', Activation"),      # a later one only
    ("batch_norm", None, "bn", "'bn', BatchNormalization"),  # after a correct c1/relu
])
def test_a_wrong_lift_is_refused_naming_the_first_wrong_op(monkeypatch, kind, only, op, layer):
    model, x = deep(), data()
    wrong(monkeypatch, kind, 0.5, only)
    with pytest.raises(nnslicer.UnsupportedLayerError) as error:
        nnslicer.Slicer(model).fit(x)
    message = str(error.value)
    assert message.startswith(f"The lifted model computes another network than Keras from op {op!r} "
                              f"(layer {layer}) on: max difference ")
    assert f"This is a bug in nnslicer's lifter for {layer.split(', ')[1]}: please report it." in message
    with pytest.raises(nnslicer.UnsupportedLayerError, match=f"from op {op!r}"):
        verify(nnslicer.lift(model), model, x[:3])


def test_a_difference_below_the_tolerance_passes(monkeypatch):
    model, x = deep(), data()
    wrong(monkeypatch, "batch_norm", 1e-6)
    slicer = nnslicer.Slicer(model).fit(x)
    assert 0 < verify(slicer.graph_, model, x) < nnslicer.keras.TOLERANCE


def test_a_shared_layer_is_not_compared_but_named(monkeypatch):
    keras.utils.set_random_seed(2)
    x_in = keras.Input((6,))
    shared = L.Dense(6, activation="relu", name="shared")
    out = L.Dense(3, name="out")(shared(shared(L.Dense(6, name="first")(x_in))))
    model = keras.Model(x_in, out, name="twice")
    x = np.random.default_rng(0).normal(size=(20, 6)).astype("float32")
    assert nnslicer.Slicer(model).fit(x).graph_.output == "out"
    wrong(monkeypatch, "activation", 0.5)
    with pytest.raises(nnslicer.UnsupportedLayerError,
                       match="from op 'out' \\(layer 'out', Dense\\), or from an op before it .*'shared'"):
        nnslicer.Slicer(model).fit(x)


def batches(x, size=7, y=None):
    for i in range(0, len(x), size):
        yield x[i:i + size] if y is None else (x[i:i + size], y[i:i + size])


def test_a_stream_loses_no_batch_to_the_check(monkeypatch):
    model = tiny_cnn(3)
    x, y = self_labelled(model, 50, 4)
    want = nnslicer.Slicer(model).fit(x, y).profile_
    assert nnslicer.Slicer(model).fit(batches(x)).profile_.n_samples == 50
    assert nnslicer.Slicer(model).fit(batches(x, y=y)).profile_ == want
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(9)
    assert nnslicer.Slicer(model).fit(ds).profile_.class_counts.sum() == 50
    assert nnslicer.Slicer(model).fit(list(batches(x))).profile_.n_samples == 50
    wrong(monkeypatch, "activation", 0.5)
    with pytest.raises(nnslicer.UnsupportedLayerError, match="from op 'conv/relu'"):
        nnslicer.Slicer(model).fit(batches(x))


def test_fit_with_a_profile_checks_on_the_mean_input(monkeypatch, caplog):
    model, x = deep(), data()
    prof = nnslicer.profile(model, x)  # profile() alone does not check
    with caplog.at_level("INFO", logger="nnslicer.keras.verification"):
        nnslicer.Slicer(model).fit(profile=prof)
    assert "on 1 sample(s)" in caplog.text
    wrong(monkeypatch, "batch_norm", 0.5)
    with pytest.raises(nnslicer.UnsupportedLayerError, match="from op 'bn' \\(layer 'bn', BatchNormalization\\)"):
        nnslicer.Slicer(model).fit(profile=prof)


def sixteen_bits(policy):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(4, 3, activation="relu", dtype=policy),
                             L.BatchNormalization(dtype=policy), L.Flatten(dtype=policy),
                             L.Dense(5, activation="softmax", dtype=policy)], name=policy)


def test_a_mixed_precision_model_is_checked_at_float32(caplog):
    model = sixteen_bits("mixed_float16")
    with caplog.at_level("INFO", logger="nnslicer.keras.verification"):
        nnslicer.Slicer(model).fit(data())
    assert "computes in float16" in caplog.text
    assert "max difference 0 " in caplog.text or "max difference 1e-0" in caplog.text
    assert {layer.dtype_policy.name for layer in model.layers} == {"mixed_float16"}  # restored


def test_a_model_with_16_bit_weights_is_refused():
    with pytest.raises(nnslicer.UnsupportedLayerError, match="keeps weights in 16 bits.*set_weights"):
        nnslicer.Slicer(sixteen_bits("float16")).fit(data())


def test_the_docstring_example_runs():
    result = doctest.testmod(nnslicer.keras.verification, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_a_difference_that_grows_along_the_network_is_no_lifter_bug(monkeypatch):
    """Each layer computes what Keras computes from Keras' own inputs, but a difference within
    the tolerance (here 1e-5 added to the batch norm's outputs, of scale 1e-3) grows along the
    network (the next layer multiplies it by 1000): no op is blamed; the error says so."""
    keras.utils.set_random_seed(4)
    x_in = keras.Input((4,))
    h = L.BatchNormalization(name="bn", gamma_initializer=keras.initializers.Constant(1e-3))(L.Dense(4, name="a")(x_in))
    big = L.Dense(4, name="big", kernel_initializer=keras.initializers.Identity(1000.0))(h)
    model = keras.Model(x_in, L.Dense(3, name="out")(big), name="sensitive")
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    nnslicer.Slicer(model).fit(x)
    wrong(monkeypatch, "batch_norm", 1e-5)
    with pytest.raises(nnslicer.UnsupportedLayerError,
                       match="though every layer up to op 'big', where the difference shows, computes what Keras "
                             "computes from Keras' own inputs: the difference grows along the network"):
        nnslicer.Slicer(model).fit(x)
    wrong(monkeypatch, "batch_norm", 1e-2)  # beyond the tolerance in the batch norm itself: its bug
    with pytest.raises(nnslicer.UnsupportedLayerError, match="from op 'bn' \\(layer 'bn', BatchNormalization\\)"):
        nnslicer.Slicer(model).fit(x)
