"""The Slicer facade and the Profile: behaviour, and every error path.

Each error test checks the exception's nnslicer type, that it is also the built-in named in
``nnslicer/errors.py``, and that the message says what went wrong.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import nnslicer  # noqa: E402
from nnslicer import (FileFormatError, InvalidInputError, InvalidParameterError, NotFittedError,  # noqa: E402
                      Profile, Slicer, aggregate)

keras = pytest.importorskip("keras")

from tiny import tiny_cnn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_CLASSES = 10


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model():
    return tiny_cnn(0, n_classes=N_CLASSES)


@pytest.fixture(scope="module")
def twin():
    """The same architecture and name as ``model``, other weights."""
    return tiny_cnn(1, n_classes=N_CLASSES)


@pytest.fixture(scope="module")
def mlp():
    keras.utils.set_random_seed(2)
    return keras.Sequential([keras.Input((6, 6, 1), name="image"), keras.layers.Flatten(name="flat"),
                             keras.layers.Dense(N_CLASSES, name="out")], name="mlp")


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).normal(size=(50, 6, 6, 1)).astype("float32")


@pytest.fixture(scope="module")
def labels(model, data):
    """The model's own predictions: every sample is 'correctly predicted'."""
    return model.predict(data, verbose=0).argmax(axis=1)


@pytest.fixture(scope="module")
def slicer(model, data):
    return Slicer(model).fit(data)


@pytest.fixture(scope="module")
def labelled(model, data, labels):
    return Slicer(model).fit(data, labels)


def _raises(exc_type, builtin, fragment, fn, *args, **kwargs):
    """Call fn, expect exc_type (also a ``builtin``) with ``fragment`` in its message."""
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, builtin) and isinstance(info.value, nnslicer.NNSlicerError)
    assert fragment in str(info.value), str(info.value)
    return info.value


# ---------------------------------------------------------------------------------- construction
def test_constructor_only_stores_parameters(model):
    s = Slicer(model, theta=5, rule="bogus", granularity="pixel", baseline="none", propagation="x",
               batch_size=0)
    assert (s.theta, s.rule, s.granularity, s.baseline, s.propagation, s.batch_size) == \
        (5, "bogus", "pixel", "none", "x", 0)
    assert s.model is model
    assert not hasattr(s, "graph_") and not hasattr(s, "profile_") and not hasattr(s, "theta_")


def test_fit_returns_self_and_sets_learned_state(model, data):
    s = Slicer(model)
    assert s.fit(data) is s
    assert s.theta_ == 0.2 and s.theta is None
    assert isinstance(s.profile_, Profile) and s.profile_.n_samples == len(data)
    assert s.graph_.name == "tiny" and s.graph_.num_outputs == N_CLASSES


def test_repr(model, slicer):
    r = Slicer(model, theta=0.3)
    assert repr(r) == ("Slicer(model='tiny', theta=0.3, rule='nnslicer', granularity='element', "
                       "baseline='global', not fitted)")
    assert repr(slicer).endswith(", fitted)") and repr(slicer).startswith("Slicer(model='tiny'")
    # the theta a rule uses when none is given, not the None that asks for it
    assert "theta=0.2," in repr(Slicer(model)) and "theta=0.5," in repr(Slicer(model, rule="effective_path"))
    assert "theta=None," in repr(Slicer(model, rule="no such rule"))  # a repr never raises


@pytest.mark.parametrize("rule, theta, expected", [
    ("nnslicer", None, 0.2), ("paper", None, 0.2), ("effective_path", None, 0.5),
    ("nnslicer", 0.35, 0.35), ("effective_path", 0.7, 0.7), ("nnslicer", np.float32(0.25), 0.25),
])
def test_theta_defaults_and_choices(model, slicer, rule, theta, expected):
    s = Slicer(model, theta=theta, rule=rule).fit(profile=slicer.profile_)
    assert s.theta_ == pytest.approx(expected) and isinstance(s.theta_, float)
    sl = s.slice(np.zeros((6, 6, 1), np.float32) + 0.5)
    assert sl.theta == pytest.approx(expected) and sl.rule == rule


# ---------------------------------------------------------------------------------- parameter errors
@pytest.mark.parametrize("theta", [0, 1, 0.0, 1.0, -0.1, 1.5, 5, float("nan"), float("inf"), True, "0.2", [0.2], 10**30, -2**63 - 1])
def test_theta_outside_open_unit_interval(model, data, theta):
    s = Slicer(model, theta=theta)  # constructs fine
    err = _raises(InvalidParameterError, ValueError, "'theta'", s.fit, data[:5])
    assert "(0, 1)" in str(err) and repr(theta) in str(err)
    assert not hasattr(s, "graph_")


@pytest.mark.parametrize("name, value", [
    ("rule", "nnslicerr"), ("granularity", "pixel"), ("baseline", "mean"), ("propagation", "both"),
    ("rule", None), ("granularity", None),
])
def test_unknown_choices(model, data, name, value):
    s = Slicer(model, **{name: value})
    err = _raises(InvalidParameterError, ValueError, f"'{name}'", s.fit, data[:5])
    assert repr(value) in str(err)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True, "8", None])
def test_bad_batch_size(model, data, batch_size):
    err = _raises(InvalidParameterError, ValueError, "'batch_size'", Slicer(model, batch_size=batch_size).fit,
                  data[:5])
    assert "positive int" in str(err)


def test_unknown_aggregate_in_slice(slicer, data):
    _raises(InvalidParameterError, ValueError, "'aggregate'", slicer.slice, data[:3], aggregate="mean")


def test_profile_argument_must_be_a_profile(model):
    _raises(InvalidParameterError, ValueError, "Profile", Slicer(model).fit, profile="profile.npz")


# ---------------------------------------------------------------------------------- input errors
def test_fit_with_neither_data_nor_profile(model):
    s = Slicer(model)
    _raises(InvalidInputError, ValueError, "profil", s.fit)
    assert not hasattr(s, "graph_")


@pytest.mark.parametrize("shape", [(50, 5, 5, 1), (50, 6, 6), (50, 36), (50, 6, 6, 2), (6, 6, 1, 1, 1)])
def test_fit_with_wrong_input_shape(model, shape):
    err = _raises(InvalidInputError, ValueError, "shape", Slicer(model).fit, np.zeros(shape, np.float32))
    assert "(6, 6, 1)" in str(err)


@pytest.mark.parametrize("shape", [(5, 5, 1), (2, 36), (6, 6), (2, 6, 6, 3)])
def test_slice_with_wrong_input_shape(slicer, shape):
    err = _raises(InvalidInputError, ValueError, "shape", slicer.slice, np.zeros(shape, np.float32))
    assert "(6, 6, 1)" in str(err)
    _raises(InvalidInputError, ValueError, "shape", slicer.slice_many, np.zeros(shape, np.float32))


def test_non_numeric_input(slicer):
    _raises(InvalidInputError, ValueError, "numeric", slicer.slice, "an image")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs(model, slicer, data, bad):
    x = data[:10].copy()
    x[3, 2, 2, 0] = bad
    x[7, 0, 0, 0] = bad
    err = _raises(InvalidInputError, ValueError, "NaN or inf", Slicer(model).fit, x)
    assert "2 sample" in str(err)
    _raises(InvalidInputError, ValueError, "NaN or inf", slicer.slice, x)
    _raises(InvalidInputError, ValueError, "NaN or inf", slicer.slice, x[3])
    _raises(InvalidInputError, ValueError, "NaN or inf", slicer.slice_many, x)


def test_non_finite_input_in_a_later_streamed_batch(model, data):
    x = data[:20].copy()
    x[15, 1, 1, 0] = np.nan
    _raises(InvalidInputError, ValueError, "NaN or inf", Slicer(model).fit, (x[i:i + 5] for i in range(0, 20, 5)))


def test_empty_data(model, slicer):
    empty = np.zeros((0, 6, 6, 1), np.float32)
    _raises(InvalidInputError, ValueError, "empty", Slicer(model).fit, empty)
    _raises(InvalidInputError, ValueError, "empty", Slicer(model).fit, iter([]))
    _raises(InvalidInputError, ValueError, "empty", Slicer(model).fit, [])
    _raises(InvalidInputError, ValueError, "empty", slicer.slice, empty)
    _raises(InvalidInputError, ValueError, "empty", slicer.slice_many, empty)


@pytest.mark.parametrize("target, fragment", [
    (-1, "out of range"), (N_CLASSES, "out of range"), (10**6, "out of range"), ([0, 10], "out of range"),
    (1.5, "int"), ("3", "int"), (True, "int"), (np.float64(2.0), "int"), ([], "empty"),
])
def test_bad_target(slicer, data, target, fragment):
    err = _raises(InvalidInputError, ValueError, fragment, slicer.slice, data[0], target=target)
    if fragment == "out of range":
        assert f"{N_CLASSES} outputs" in str(err)
    _raises(InvalidInputError, ValueError, fragment, slicer.slice, data[:3], target=target)


def test_bad_targets_in_slice_many(slicer, data):
    err = _raises(InvalidInputError, ValueError, "targets", slicer.slice_many, data[:3], targets=[0, 1])
    assert "2 entries for 3 samples" in str(err)
    _raises(InvalidInputError, ValueError, "3 entries for 2 samples", slicer.slice_many, data[:2], targets=[0, 1, 2])
    _raises(InvalidInputError, ValueError, "out of range", slicer.slice_many, data[:2], targets=[0, -1])
    _raises(InvalidInputError, ValueError, "out of range", slicer.slice_many, data[:2], targets=N_CLASSES)
    _raises(InvalidInputError, ValueError, "empty", slicer.slice_many, data[:2], targets=[[], []])
    _raises(InvalidInputError, ValueError, "int", slicer.slice_many, data[:2], targets=[0, 0.5])


_RAGGED = "engine bug: Slicer._targets calls np.ndim() on the targets list, which raises numpy's " \
    "'inhomogeneous shape' ValueError for ragged per-sample targets such as [[0, 2], [1]]"


def test_slice_many_with_ragged_per_sample_targets(slicer, data):
    many = slicer.slice_many(data[:3], targets=[[0, 2], [1], None])
    assert [s.targets for s in many[:2]] == [[0, 2], [1]]
    assert many[0] == slicer.slice(data[0], target=[0, 2])
    assert many[1] == slicer.slice(data[1], target=1)
    assert many[2] == slicer.slice(data[2])


def test_slice_many_with_one_empty_target_list(slicer, data):
    _raises(InvalidInputError, ValueError, "empty", slicer.slice_many, data[:2], targets=[[0], []])


def test_numpy_integer_targets_are_fine(slicer, data):
    assert slicer.slice(data[0], target=np.int64(4)) == slicer.slice(data[0], target=4)
    assert slicer.slice(data[0], target=np.array([4, 1])) == slicer.slice(data[0], target=[1, 4])


def test_slicing_before_fit(model, data):
    s = Slicer(model)
    _raises(NotFittedError, AttributeError, "fit", s.slice, data[0])
    _raises(NotFittedError, AttributeError, "fit", s.slice_many, data[:2])
    # invalid parameters do not hide that it is not fitted
    _raises(NotFittedError, AttributeError, "fit", Slicer(model, theta=7).slice, data[0])


def test_class_baseline_needs_labels(model, data, slicer):
    s = Slicer(model, baseline="class")
    _raises(InvalidInputError, ValueError, "labels", s.fit, data)
    assert not hasattr(s, "graph_")
    _raises(InvalidInputError, ValueError, "labels", Slicer(model, baseline="class").fit, profile=slicer.profile_)


def test_labels_of_wrong_length(model, data, labels):
    err = _raises(InvalidInputError, ValueError, "labels", Slicer(model).fit, data, labels[:-1])
    assert "per sample (50)" in str(err) and "(49,)" in str(err)
    _raises(InvalidInputError, ValueError, "labels", Slicer(model).fit, data, labels.reshape(5, 10))


@pytest.mark.parametrize("bad", [-1, N_CLASSES, 99])
def test_labels_out_of_range(model, data, labels, bad):
    y = labels.copy()
    y[7] = bad
    err = _raises(InvalidInputError, ValueError, "labels", Slicer(model).fit, data, y)
    assert f"[0, {N_CLASSES})" in str(err)


def test_non_integer_labels(model, data, labels):
    _raises(InvalidInputError, ValueError, "integer", Slicer(model).fit, data, labels + 0.5)


def test_labels_beside_a_generator_are_refused(model, data, labels):
    _raises(InvalidInputError, ValueError, "labels", Slicer(model).fit, (data[i:i + 10] for i in range(0, 50, 10)),
            labels)


def test_labelled_then_unlabelled_batches_are_refused(model, data, labels):
    batches = [(data[:25], labels[:25]), data[25:]]
    _raises(InvalidInputError, ValueError, "labels", Slicer(model).fit, batches)


def test_unlabelled_then_labelled_batches_are_refused(model, data, labels):
    batches = [data[:25], (data[25:], labels[25:])]
    with pytest.raises(InvalidInputError):
        Slicer(model).fit(batches)


# ---------------------------------------------------------------------------------- profile files
def test_profile_round_trip(tmp_path, labelled):
    p = labelled.profile_
    assert p.class_means is not None and p.class_counts is not None
    p.save(tmp_path / "p.npz")
    q = Profile.load(tmp_path / "p.npz")
    assert (q.n_samples, q.model, q.fingerprint) == (p.n_samples, p.model, p.fingerprint) == (50, "tiny", p.fingerprint)
    assert set(q.means) == set(p.means) and set(q.class_means) == set(p.class_means)
    for k in p.means:
        assert q.means[k].dtype == p.means[k].dtype
        np.testing.assert_array_equal(q.means[k], p.means[k])
        np.testing.assert_array_equal(q.class_means[k], p.class_means[k])
        assert q.class_means[k].shape == (N_CLASSES,) + p.means[k].shape
    np.testing.assert_array_equal(q.class_counts, p.class_counts)
    assert q.class_counts.sum() == 50  # labels are the predictions: all correct
    assert repr(q) == repr(p) == "Profile(model='tiny', samples=50, tensors=7, classes=10)"
    assert q == p and not q != p
    first = next(iter(q.means))
    q.means[first] = q.means[first] + 1
    assert q != p and p != "a profile"


def test_profile_round_trip_without_labels(tmp_path, slicer):
    slicer.profile_.save(tmp_path / "p.npz")
    q = Profile.load(tmp_path / "p.npz")
    assert q.class_means is None and q.class_counts is None
    assert q == slicer.profile_
    for k, v in slicer.profile_.means.items():
        np.testing.assert_array_equal(q.means[k], v)


def test_fit_on_a_loaded_profile_slices_the_same(tmp_path, model, data, labelled):
    labelled.profile_.save(tmp_path / "p.npz")
    loaded = Profile.load(tmp_path / "p.npz")
    for baseline in ("global", "class"):
        direct = labelled if baseline == "global" else Slicer(model, baseline="class").fit(data, _labels_of(model, data))
        again = Slicer(model, baseline=baseline).fit(profile=loaded)
        assert again.slice_many(data[:6]) == direct.slice_many(data[:6])
        assert again.slice(data[:6], aggregate="abs") == direct.slice(data[:6], aggregate="abs")


def _labels_of(model, data):
    return model.predict(data, verbose=0).argmax(axis=1)


def test_profile_of_another_model_is_refused(tmp_path, mlp, twin, data, slicer):
    slicer.profile_.save(tmp_path / "p.npz")
    loaded = Profile.load(tmp_path / "p.npz")
    err = _raises(FileFormatError, ValueError, "model", Slicer(mlp).fit, profile=loaded)
    assert "'tiny'" in str(err) and "'mlp'" in str(err)
    # same architecture and name, other weights: also another model
    s = Slicer(twin)
    assert [op.name for op in nnslicer.lift(twin).ops] == [op.name for op in slicer.graph_.ops]
    err = _raises(FileFormatError, ValueError, "model", s.fit, profile=loaded)
    assert loaded.fingerprint in str(err)
    assert not hasattr(s, "graph_")


def test_profile_check_for_channel_granularity_of_the_same_model(model, data, slicer):
    s = Slicer(model, granularity="channel").fit(profile=slicer.profile_)
    assert s.slice(data[0]).granularity == "channel"


def test_corrupt_profile_files(tmp_path, slicer, data):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(np.random.default_rng(3).bytes(2000))
    _raises(FileFormatError, ValueError, "bad.npz", Profile.load, bad)
    slicer.profile_.save(tmp_path / "p.npz")
    raw = (tmp_path / "p.npz").read_bytes()
    (tmp_path / "half.npz").write_bytes(raw[:len(raw) // 2])
    _raises(FileFormatError, ValueError, "half.npz", Profile.load, tmp_path / "half.npz")
    np.savez(tmp_path / "plain.npz", means=np.zeros(3))
    _raises(FileFormatError, ValueError, "plain.npz", Profile.load, tmp_path / "plain.npz")
    with pytest.raises(FileNotFoundError):
        Profile.load(tmp_path / "missing.npz")


def test_slice_file_given_to_profile_load(tmp_path, slicer, data):
    slicer.slice(data[0]).save(tmp_path / "s.npz")
    err = _raises(FileFormatError, ValueError, "profile", Profile.load, tmp_path / "s.npz")
    assert "slice" in str(err)


# ---------------------------------------------------------------------------------- streaming profiles
def test_profile_from_a_generator_of_labelled_batches(model, data, labels, labelled):
    gen = ((data[i:i + 8], labels[i:i + 8]) for i in range(0, len(data), 8))  # uneven last batch
    s = Slicer(model).fit(gen)
    p, q = labelled.profile_, s.profile_
    assert q.n_samples == p.n_samples == 50
    np.testing.assert_array_equal(q.class_counts, p.class_counts)
    for k in p.means:
        np.testing.assert_allclose(q.means[k], p.means[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(q.class_means[k], p.class_means[k], rtol=1e-5, atol=1e-6)


def test_profile_from_a_generator_of_plain_batches(model, data, slicer):
    seen = []
    s = Slicer(model).fit((data[i:i + 7] for i in range(0, len(data), 7)), progress=seen.append)
    assert s.profile_.n_samples == 50 and s.profile_.class_means is None
    assert seen == [7, 14, 21, 28, 35, 42, 49, 50]
    for k, v in slicer.profile_.means.items():
        np.testing.assert_allclose(s.profile_.means[k], v, rtol=1e-5, atol=1e-6)


def test_profile_batch_size_does_not_change_means(model, data, slicer):
    s = Slicer(model, batch_size=3).fit(data)
    for k, v in slicer.profile_.means.items():
        np.testing.assert_allclose(s.profile_.means[k], v, rtol=1e-5, atol=1e-6)
    # the input tensor's mean is the data's mean
    np.testing.assert_allclose(slicer.profile_.means["image"], data.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_one_hot_labels_in_batches_are_accepted(model, data, labels, labelled):
    one_hot = np.eye(N_CLASSES, dtype=np.float32)[labels]
    s = Slicer(model).fit((data[i:i + 10], one_hot[i:i + 10]) for i in range(0, 50, 10))
    np.testing.assert_array_equal(s.profile_.class_counts, labelled.profile_.class_counts)


def test_one_hot_label_array_is_accepted(model, data, labels, labelled):
    s = Slicer(model).fit(data, np.eye(N_CLASSES, dtype=np.float32)[labels])
    np.testing.assert_array_equal(s.profile_.class_counts, labelled.profile_.class_counts)


# ---------------------------------------------------------------------------------- slicing behaviour
def test_determinism_across_fits(model, data, slicer):
    again = Slicer(model).fit(data)
    assert again.slice_many(data[:8]) == slicer.slice_many(data[:8])
    assert again.slice(data[:8]) == slicer.slice(data[:8])
    assert slicer.slice(data[0]) == slicer.slice(data[0])


def test_single_sample_equals_batch_of_one(slicer, data):
    for i in range(3):
        one, batch = slicer.slice(data[i]), slicer.slice(data[i:i + 1])
        assert one == batch and one.samples == 1 and one.aggregate is None
        assert slicer.slice_many(data[i])[0] == one


def test_slice_many_entries_equal_single_slices(slicer, data):
    many = slicer.slice_many(data[:5])
    assert len(many) == 5 and all(s.samples == 1 for s in many)
    assert many == [slicer.slice(x) for x in data[:5]]


def test_target_none_is_the_predicted_class(model, slicer, data):
    pred = _labels_of(model, data[:6])
    for i in range(6):
        s = slicer.slice(data[i])
        assert s.targets == [int(pred[i])]
        assert s == slicer.slice(data[i], target=int(pred[i]))
    per_sample = slicer.slice_many(data[:6], targets=[None, 0, None, 1, None, 2])
    assert [s.targets for s in per_sample] == [[pred[0]], [0], [pred[2]], [1], [pred[4]], [2]]


def test_other_target_gives_another_slice(model, slicer, data):
    pred = int(_labels_of(model, data[:1])[0])
    other = (pred + 1) % N_CLASSES
    a, b = slicer.slice(data[0]), slicer.slice(data[0], target=other)
    assert a != b and b.targets == [other]
    logits = slicer.graph_.logits
    assert np.flatnonzero(b.neuron_counts[logits]).tolist() == [other]


def test_multi_output_target(slicer, data):
    logits = slicer.graph_.logits
    assert logits == "dense"
    for x in data[:4]:
        both = slicer.slice(x, target=[0, 2])
        s0, s2 = slicer.slice(x, target=0), slicer.slice(x, target=2)
        assert both.targets == [0, 2]
        # the seed holds both output neurons
        assert both.neuron_counts[logits].tolist() == [1, 0, 1, 0, 0, 0, 0, 0, 0, 0]
        assert both != s0 and both != s2
        # the last Dense's synapses (i, j) only hear from output j, and its input neurons add up
        # what both outputs send: there, counts of [0, 2] are those of 0 plus those of 2
        np.testing.assert_array_equal(both.synapse_counts["dense"],
                                      s0.synapse_counts["dense"] + s2.synapse_counts["dense"])
        np.testing.assert_array_equal(both.neuron_counts["flat"], s0.neuron_counts["flat"] + s2.neuron_counts["flat"])
        assert slicer.slice(x, target=[2, 0]) == both


def test_class_baseline_differs_from_global(model, data, labels, labelled):
    cls = Slicer(model, baseline="class").fit(data, labels)
    a, b = labelled.slice_many(data[:20]), cls.slice_many(data[:20])
    assert all(s.baseline == "class" for s in b)
    assert any(not np.array_equal(x.to_vector(kind="both"), y.to_vector(kind="both")) for x, y in zip(a, b))


def test_channel_granularity_shapes(model, data, slicer):
    s = Slicer(model, granularity="channel").fit(profile=slicer.profile_).slice(data[0])
    shapes = {k: v.shape for k, v in s.neuron_counts.items()}
    assert shapes == {"image": (1,), "conv": (3,), "conv/relu": (3,), "pool": (3,), "flat": (12,),
                      "dense": (10,), "dense/softmax": (10,)}
    assert {k: v.shape for k, v in s.synapse_counts.items()} == {"conv": (3, 3, 1, 3), "dense": (12, 10)}
    assert s.granularity == "channel" and s.n_neurons > 0 and s.n_synapses > 0
    element = slicer.slice(data[0])
    assert element.neuron_counts["conv"].shape == (4, 4, 3)


def test_effective_path_counts_are_membership(model, slicer, data):
    ep = Slicer(model, rule="effective_path").fit(profile=slicer.profile_)
    one = ep.slice(data[0])
    assert one.theta == 0.5
    for v in (*one.neuron_counts.values(), *one.synapse_counts.values()):
        assert set(np.unique(v).tolist()) <= {0, 1}
    assert one.n_synapses > 0


def test_theta_changes_the_slice(model, slicer, data):
    loose = Slicer(model, theta=0.9).fit(profile=slicer.profile_)
    sizes = [(loose.slice(x).n_synapses, slicer.slice(x).n_synapses) for x in data[:10]]
    assert any(a != b for a, b in sizes)


# ---------------------------------------------------------------------------------- packaging
def test_import_does_not_load_tensorflow():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = ("import nnslicer, sys; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; "
            "assert 'keras' not in sys.modules, 'keras imported'")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_aggregate_of_slices_from_one_slicer_keeps_its_metadata(slicer, data):
    agg = aggregate(slicer.slice_many(data[:4]), "abs")
    assert (agg.model, agg.theta, agg.rule, agg.samples) == ("tiny", 0.2, "nnslicer", 4)


@pytest.mark.parametrize("rule", ["nnslicer", "paper", "effective_path"])
@pytest.mark.parametrize("granularity", ["element", "channel"])
def test_synapse_counts_equal_the_full_slices(model, data, rule, granularity):
    """Stopping the backward analysis at an op leaves that op's counts exact, for every op."""
    slicer = Slicer(model, rule=rule, granularity=granularity).fit(data)
    targets = [[1], [2, 3], None] * 4
    full = slicer.slice_many(data[:12], targets)
    for op in slicer.graph_.weighted_ops:
        got = slicer.synapse_counts(data[:12], op, targets)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, np.stack([s.synapse_counts[op] for s in full]))


def test_synapse_counts_errors(model, data):
    with pytest.raises(NotFittedError):
        Slicer(model).synapse_counts(data, "conv")
    slicer = Slicer(model).fit(data)
    with pytest.raises(InvalidParameterError, match="'op' parameter of synapse_counts"):
        slicer.synapse_counts(data, "nope")
    with pytest.raises(InvalidInputError, match="empty"):
        slicer.synapse_counts(data[:0], slicer.graph_.weighted_ops[0])


def test_profile_takes_a_model_or_its_graph(model, data):
    from nnslicer import lift, profile

    want = profile(lift(model), data)
    assert profile(model, data) == want
    _raises(InvalidParameterError, ValueError, "DataFlowGraph", profile, "model.keras", data)


def test_fit_on_lists_of_samples_and_labels(model, data):
    labels = _labels_of(model, data)
    want = Slicer(model).fit(data, labels).profile_
    assert Slicer(model).fit(data.tolist(), labels.tolist()).profile_ == want


def test_inputs_far_outside_the_profiled_range_are_warned_about(slicer, data, tmp_path):
    """0-255 pixels against a profile of [-3, 3] ones: sliced, with a warning naming both ranges;
    inputs like the profiled ones (or a little beyond) slice silently. The range travels in the
    profile's file, and a file without one (older nnslicer) loads and never warns."""
    import warnings

    low, high = slicer.profile_.input_range
    assert (low, high) == (float(data.min()), float(data.max()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        slicer.slice(data[:3])
        slicer.slice(data[:3] * 1.5)
    with pytest.warns(UserWarning, match=rf"range over \[0, 255\], far outside the \[{low:.4g}, {high:.4g}\]"):
        slicer.slice(np.linspace(0, 255, 36 * 3, dtype="float32").reshape(3, 6, 6, 1))
    with pytest.warns(UserWarning, match="far outside"):  # a stream is checked on its first batch
        slicer.slice_many(iter([np.full((2, 6, 6, 1), 100.0, "float32")]))
    path = slicer.profile_.save(tmp_path / "p.npz")
    assert Profile.load(path) == slicer.profile_ and Profile.load(path).input_range == (low, high)
    zero = Slicer(slicer.model).fit(np.zeros((4, 6, 6, 1), "float32"))  # an all-zero profile tells nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zero.slice(data[:2])
    meta, arrays = slicer.profile_.to_arrays()
    del meta["input_range"]
    old = Profile.from_arrays(meta, arrays)
    assert old.input_range is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Slicer(slicer.model).fit(profile=old).slice(np.full((1, 6, 6, 1), 255.0, "float32"))
    for bad in ([1.0], [2.0, 1.0], [0.0, float("nan")], "0,1"):
        with pytest.raises(FileFormatError, match="input range"):
            Profile.from_arrays({**meta, "input_range": bad}, arrays)
