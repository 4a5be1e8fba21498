"""The Slice object: membership, vectors, set algebra, aggregation, files and networkx views.

Slices come from a real (tiny) Keras model through the Slicer, and straight from arrays where
the right answer is worked out by hand.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import nnslicer  # noqa: E402
from nnslicer import FileFormatError, InvalidInputError, InvalidParameterError, Slice, aggregate  # noqa: E402

keras = pytest.importorskip("keras")

from tiny import tiny_cnn  # noqa: E402


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model():
    return tiny_cnn(0)


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).normal(size=(50, 6, 6, 1)).astype("float32")


@pytest.fixture(scope="module")
def slicer(model, data):
    return nnslicer.Slicer(model).fit(data)


@pytest.fixture(scope="module")
def many(slicer, data):
    """Per-sample slices of the first 8 samples (targets: predicted classes)."""
    return slicer.slice_many(data[:8])


@pytest.fixture(scope="module")
def other_slicer(data):
    """Same architecture, other weights: another model as far as slices go."""
    return nnslicer.Slicer(tiny_cnn(1)).fit(data)


@pytest.fixture(scope="module")
def channel_slicer(model, data):
    return nnslicer.Slicer(model, granularity="channel").fit(data)


def _arrays(neurons, synapses, **meta):
    meta.setdefault("model", "m")
    meta.setdefault("fingerprint", "f")
    return Slice({k: np.asarray(v) for k, v in neurons.items()},
                 {k: np.asarray(v) for k, v in synapses.items()}, **meta)


@pytest.fixture
def ab():
    """Two hand slices. Members (flat indices):
    a: neurons x {0, 2}, synapses d {0, 1};  b: neurons x {2, 3}, synapses d {0, 1, 2}."""
    a = _arrays({"x": [1, 0, 2, 0]}, {"d": [[1, 1], [0, 0]]}, theta=0.2)
    b = _arrays({"x": [0, 0, -1, 3]}, {"d": [[1, -1], [1, 0]]}, theta=0.2)
    return a, b


def _temp_leftovers(directory):
    return [p for p in os.listdir(directory) if p.startswith(".nnslicer-")]


# ---------------------------------------------------------------------------------- repr
def test_repr_of_a_model_slice(slicer, data):
    s = slicer.slice(data[0])
    assert repr(s) == (f"Slice(model='tiny', samples=1, neurons={s.n_neurons}/{s.total_neurons}, "
                       f"synapses={s.n_synapses}/{s.total_synapses}, theta=0.2)")
    # totals of the tiny CNN: neurons 36+48+48+12+12+10+10, synapses conv 27 + dense 120
    assert (s.total_neurons, s.total_synapses) == (176, 147)
    assert 0 < s.n_neurons < 176 and 0 < s.n_synapses < 147


def test_repr_of_array_slices_uses_thousands_separators_and_omits_missing_theta():
    s = _arrays({"x": np.r_[np.ones(1234, int), np.zeros(3766, int)]}, {"d": np.zeros((3, 4), int)})
    assert repr(s) == "Slice(model='m', samples=1, neurons=1,234/5,000, synapses=0/12)"
    s3 = _arrays({"x": [1]}, {}, samples=3, theta=0.25)
    assert repr(s3) == "Slice(model='m', samples=3, neurons=1/1, synapses=0/0, theta=0.25)"


def test_unknown_metadata_is_refused():
    with pytest.raises(InvalidParameterError, match="metadata"):
        Slice({}, {}, colour="red")


def test_metadata_of_a_model_slice(slicer, model, data):
    s = slicer.slice(data[3])
    pred = int(model.predict(data[3:4], verbose=0).argmax())
    assert s.model == "tiny" and s.samples == 1 and s.theta == 0.2
    assert (s.rule, s.granularity, s.baseline, s.propagation) == ("nnslicer", "element", "global", "code")
    assert s.targets == [pred] and s.aggregate is None
    assert s.fingerprint == slicer.graph_.fingerprint


# ---------------------------------------------------------------------------------- membership
def test_neurons_and_synapses_are_rows_of_exactly_the_nonzero_counts(slicer, data):
    s = slicer.slice(data[1])
    rows_n, rows_s = s.neurons(), s.synapses()
    assert rows_n and rows_s
    assert set(rows_n) == {k for k, v in s.neuron_counts.items() if np.any(v)}
    assert set(rows_s) == {k for k, v in s.synapse_counts.items() if np.any(v)}
    for table, rows in ((s.neuron_counts, rows_n), (s.synapse_counts, rows_s)):
        for name, idx in rows.items():
            counts = table[name]
            assert idx.shape == (np.count_nonzero(counts), counts.ndim)
            got = {tuple(r) for r in idx.tolist()}
            assert got == {tuple(r) for r in np.argwhere(counts != 0).tolist()}
            assert np.all(counts[tuple(idx.T)] != 0)
    assert sum(len(v) for v in rows_n.values()) == s.n_neurons
    assert sum(len(v) for v in rows_s.values()) == s.n_synapses


def test_neurons_and_synapses_on_array_slice(ab):
    a, b = ab
    assert {k: v.tolist() for k, v in a.neurons().items()} == {"x": [[0], [2]]}
    assert {k: v.tolist() for k, v in b.synapses().items()} == {"d": [[0, 0], [0, 1], [1, 0]]}
    empty = _arrays({"x": [0, 0]}, {"d": [[0]]})
    assert empty.neurons() == {} and empty.synapses() == {}
    assert (empty.n_neurons, empty.n_synapses) == (0, 0)


def test_masks_are_nonzero_per_array(slicer, data):
    s = slicer.slice(data[2])
    m = s.masks()
    assert set(m) == {"neurons", "synapses"}
    assert set(m["neurons"]) == set(s.neuron_counts) and set(m["synapses"]) == set(s.synapse_counts)
    for kind, table in (("neurons", s.neuron_counts), ("synapses", s.synapse_counts)):
        for name, mask in m[kind].items():
            assert mask.dtype == bool and mask.shape == table[name].shape
            np.testing.assert_array_equal(mask, table[name] != 0)
    assert sum(int(v.sum()) for v in m["synapses"].values()) == s.n_synapses


# ---------------------------------------------------------------------------------- vectors
def test_to_vector_all_layers(slicer, data):
    s = slicer.slice(data[4])
    v = s.to_vector()
    assert v.shape == (147,)
    np.testing.assert_array_equal(v, np.concatenate([s.synapse_counts["conv"].ravel(),
                                                     s.synapse_counts["dense"].ravel()]))
    assert np.count_nonzero(v) == s.n_synapses
    vn = s.to_vector(kind="neurons")
    assert vn.shape == (176,) and np.count_nonzero(vn) == s.n_neurons
    np.testing.assert_array_equal(vn, np.concatenate([c.ravel() for c in s.neuron_counts.values()]))
    vb = s.to_vector(kind="both")
    np.testing.assert_array_equal(vb, np.concatenate([vn, v]))


def test_to_vector_of_a_subset(slicer, data):
    s = slicer.slice(data[4])
    np.testing.assert_array_equal(s.to_vector(["dense"]), s.synapse_counts["dense"].ravel())
    np.testing.assert_array_equal(s.to_vector(["conv"], kind="neurons"), s.neuron_counts["conv"].ravel())
    # "both" for a weighted op: its output neurons, then its synapses
    np.testing.assert_array_equal(
        s.to_vector(["conv"], kind="both"),
        np.concatenate([s.neuron_counts["conv"].ravel(), s.synapse_counts["conv"].ravel()]))
    # a tensor without synapses is fine for "both" (neurons only)
    np.testing.assert_array_equal(s.to_vector(["pool"], kind="both"), s.neuron_counts["pool"].ravel())


def test_to_vector_errors(slicer, data):
    s = slicer.slice(data[4])
    with pytest.raises(InvalidParameterError, match="nope") as exc:
        s.to_vector(["nope"])
    assert isinstance(exc.value, ValueError)
    with pytest.raises(InvalidParameterError, match="nope"):
        s.to_vector(["conv", "nope"], kind="neurons")
    with pytest.raises(InvalidParameterError, match="pool"):  # no synapses in a pooling op
        s.to_vector(["pool"], kind="synapses")
    with pytest.raises(InvalidParameterError, match="'kind'"):
        s.to_vector(kind="weights")


# ---------------------------------------------------------------------------------- algebra
def test_union_and_intersection_by_hand(ab):
    a, b = ab
    u, i = a | b, a & b
    assert u.neuron_counts["x"].tolist() == [1, 0, 3, 3]
    assert u.synapse_counts["d"].tolist() == [[2, 2], [1, 0]]
    assert i.neuron_counts["x"].tolist() == [0, 0, 3, 0]
    assert i.synapse_counts["d"].tolist() == [[2, 2], [0, 0]]
    assert (u.samples, i.samples) == (2, 2)
    assert (u.aggregate, i.aggregate) == ("union", "intersection")
    assert a.union(b) == u and a.intersection(b) == i
    assert (b | a) == u and (b & a) == i


def test_union_and_intersection_membership_on_model_slices(many):
    a, b = many[0], many[1]
    u, i = a | b, a & b
    for kind in ("neuron_counts", "synapse_counts"):
        for name in getattr(a, kind):
            ma, mb = getattr(a, kind)[name] != 0, getattr(b, kind)[name] != 0
            np.testing.assert_array_equal(getattr(u, kind)[name] != 0, ma | mb)
            np.testing.assert_array_equal(getattr(i, kind)[name] != 0, ma & mb)
    assert u.n_synapses >= max(a.n_synapses, b.n_synapses)
    assert i.n_synapses <= min(a.n_synapses, b.n_synapses)
    assert u.samples == 2


def test_jaccard_by_hand(ab):
    a, b = ab
    # synapses: {0,1} vs {0,1,2} -> 2/3; neurons: {0,2} vs {2,3} -> 1/3;
    # both: (1 + 2) / (3 + 3) = 1/2
    assert a.jaccard(b) == pytest.approx(2 / 3)
    assert a.jaccard(b, kind="neurons") == pytest.approx(1 / 3)
    assert a.jaccard(b, kind="both") == pytest.approx(1 / 2)
    assert b.jaccard(a, kind="neurons") == pytest.approx(1 / 3)


def test_jaccard_of_empty_slices_is_one():
    e1 = _arrays({"x": [0, 0]}, {"d": [[0, 0]]})
    e2 = _arrays({"x": [0, 0]}, {"d": [[0, 0]]})
    assert e1.jaccard(e2) == 1.0 and e1.jaccard(e2, kind="both") == 1.0
    full = _arrays({"x": [0, 0]}, {"d": [[0, 1]]})
    assert e1.jaccard(full) == 0.0


def test_jaccard_on_model_slices(many):
    a, b = many[0], many[1]
    assert a.jaccard(a) == 1.0 and a.jaccard(a, kind="both") == 1.0
    assert a.jaccard(b) == pytest.approx(b.jaccard(a))
    assert 0.0 <= a.jaccard(b) <= 1.0
    assert a.jaccard(b) == pytest.approx((a & b).n_synapses / (a | b).n_synapses)


def _combine_ops():
    return {
        "union": lambda a, b: a | b,
        "intersection": lambda a, b: a & b,
        "jaccard": lambda a, b: a.jaccard(b),
        "aggregate": lambda a, b: aggregate([a, b]),
    }


@pytest.mark.parametrize("op", sorted(_combine_ops()))
def test_slices_of_different_models_do_not_combine(op, slicer, other_slicer, data):
    a, b = slicer.slice(data[0]), other_slicer.slice(data[0])
    with pytest.raises(InvalidParameterError, match="fingerprint") as exc:
        _combine_ops()[op](a, b)
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize("op", sorted(_combine_ops()))
def test_slices_of_different_granularity_do_not_combine(op, slicer, channel_slicer, data):
    a, b = slicer.slice(data[0]), channel_slicer.slice(data[0])
    with pytest.raises(InvalidParameterError, match="granularity"):
        _combine_ops()[op](a, b)


def test_array_slices_with_other_fingerprint_or_layers_do_not_combine(ab):
    a, _ = ab
    other = _arrays({"x": [1, 0, 2, 0]}, {"d": [[1, 1], [0, 0]]}, fingerprint="g")
    with pytest.raises(InvalidParameterError):
        a | other
    missing = _arrays({"y": [1, 0, 2, 0]}, {"d": [[1, 1], [0, 0]]})
    with pytest.raises(InvalidParameterError, match="different"):
        a & missing
    with pytest.raises(InvalidParameterError, match="Slice"):
        a | {"x": [1]}


# ---------------------------------------------------------------------------------- aggregation
def test_aggregate_by_hand(ab):
    a, b = ab
    s = aggregate([a, b], "sum")
    assert s.neuron_counts["x"].tolist() == [1, 0, 1, 3]
    assert s.synapse_counts["d"].tolist() == [[2, 0], [1, 0]]
    t = aggregate([a, b], "abs")
    assert t.neuron_counts["x"].tolist() == [1, 0, 3, 3]
    assert t.synapse_counts["d"].tolist() == [[2, 2], [1, 0]]
    assert (s.samples, s.aggregate, t.aggregate, s.targets) == (2, "sum", "abs", None)
    assert aggregate([a, b]) == s  # "sum" is the default


@pytest.mark.parametrize("how", ["sum", "abs"])
def test_aggregate_of_model_slices_equals_hand_sum(how, many):
    agg = aggregate(many, how)
    fold = (lambda v: v) if how == "sum" else np.abs
    for name in many[0].synapse_counts:
        np.testing.assert_array_equal(agg.synapse_counts[name], sum(fold(s.synapse_counts[name]) for s in many))
    for name in many[0].neuron_counts:
        np.testing.assert_array_equal(agg.neuron_counts[name], sum(fold(s.neuron_counts[name]) for s in many))
    assert agg.samples == len(many) and agg.aggregate == how


def test_sum_and_abs_differ_when_signs_cancel(many):
    s, a = aggregate(many, "sum"), aggregate(many, "abs")
    assert any(np.any(np.abs(s.synapse_counts[k]) < a.synapse_counts[k]) for k in s.synapse_counts)
    assert all(np.all(a.synapse_counts[k] >= 0) for k in a.synapse_counts)


def test_aggregate_errors(ab):
    a, b = ab
    with pytest.raises(InvalidInputError, match="at least one"):
        aggregate([])
    with pytest.raises(InvalidParameterError, match="'how'"):
        aggregate([a, b], "mean")


@pytest.mark.parametrize("how", ["sum", "abs"])
def test_batch_slice_equals_aggregate_of_slice_many(how, slicer, data, many):
    batch = slicer.slice(data[:8], aggregate=how)
    assert batch == aggregate(many, how)
    assert batch.samples == 8 and batch.aggregate == how and batch.targets is None


def test_batch_slice_with_target_equals_aggregate_of_per_sample_slices(slicer, data):
    k = 3
    per_sample = [slicer.slice(x, target=k) for x in data[:6]]
    assert all(s.targets == [k] for s in per_sample)
    assert slicer.slice(data[:6], target=k) == aggregate(per_sample)
    assert slicer.slice(data[:6], target=k) == aggregate(slicer.slice_many(data[:6], targets=k))
    assert slicer.slice(data[:6], target=k, aggregate="abs") == aggregate(per_sample, "abs")


def test_batch_slice_in_several_chunks_equals_one_chunk(model, data, slicer):
    small = nnslicer.Slicer(model, batch_size=3).fit(profile=slicer.profile_)
    for how in ("sum", "abs"):
        assert small.slice(data[:10], aggregate=how) == slicer.slice(data[:10], aggregate=how)
    assert small.slice_many(data[:7]) == slicer.slice_many(data[:7])


# ---------------------------------------------------------------------------------- files
def test_save_load_round_trip_of_a_model_slice(tmp_path, slicer, data):
    s = slicer.slice(data[5])
    path = tmp_path / "s.npz"
    s.save(path)
    t = Slice.load(path)
    assert t == s
    assert t.meta == s.meta and repr(t) == repr(s)
    for a, b in ((s.neuron_counts, t.neuron_counts), (s.synapse_counts, t.synapse_counts)):
        assert list(a) == list(b)
        for k in a:
            assert b[k].dtype == a[k].dtype and b[k].shape == a[k].shape
            np.testing.assert_array_equal(a[k], b[k])
    assert _temp_leftovers(tmp_path) == []


def test_save_load_round_trip_after_union_and_aggregate(tmp_path, many):
    u = many[0] | many[1]
    u.save(tmp_path / "u.npz")
    assert Slice.load(tmp_path / "u.npz") == u
    g = aggregate(many, "abs")
    g.save(str(tmp_path / "g.npz"))  # a str path too
    loaded = Slice.load(str(tmp_path / "g.npz"))
    assert loaded == g and loaded.samples == len(many) and loaded.aggregate == "abs"


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16])
def test_save_load_keeps_dtype_of_array_slices(tmp_path, dtype):
    s = _arrays({"x": np.array([1, 0, 2], dtype)}, {"d": np.array([[0, 3]], dtype)}, theta=0.3)
    s.save(tmp_path / "s.npz")
    t = Slice.load(tmp_path / "s.npz")
    assert t == s
    assert t.neuron_counts["x"].dtype == dtype and t.synapse_counts["d"].dtype == dtype


def test_equality_looks_at_counts_dtype_and_metadata(ab):
    a, _ = ab
    same = _arrays({"x": [1, 0, 2, 0]}, {"d": [[1, 1], [0, 0]]}, theta=0.2)
    assert a == same
    assert a != _arrays({"x": [1, 0, 2, 1]}, {"d": [[1, 1], [0, 0]]}, theta=0.2)
    assert a != _arrays({"x": [1, 0, 2, 0]}, {"d": [[1, 1], [0, 0]]}, theta=0.3)
    assert a != _arrays({"x": np.array([1, 0, 2, 0], np.int8)}, {"d": [[1, 1], [0, 0]]}, theta=0.2)
    assert a != "not a slice"


def _valid_file(tmp_path, slicer, data):
    path = tmp_path / "valid.npz"
    slicer.slice(data[0]).save(path)
    return path


def test_load_random_bytes(tmp_path):
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(FileFormatError) as exc:
        Slice.load(path)
    assert isinstance(exc.value, ValueError) and "random.npz" in str(exc.value)


def test_load_empty_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(FileFormatError):
        Slice.load(path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_load_truncated_file(tmp_path, slicer, data, fraction):
    raw = _valid_file(tmp_path, slicer, data).read_bytes()
    path = tmp_path / "truncated.npz"
    path.write_bytes(raw[:int(len(raw) * fraction)])
    with pytest.raises(FileFormatError) as exc:
        Slice.load(path)
    assert isinstance(exc.value, ValueError)




def test_load_file_with_any_one_byte_damaged(tmp_path):
    s = _arrays({"x": np.arange(176) % 3 - 1}, {"d": (np.arange(120).reshape(12, 10) % 5 == 0).astype(np.int64)},
                theta=0.2)
    path = tmp_path / "s.npz"
    s.save(path)
    raw = path.read_bytes()
    escaped = {}
    for i in range(len(raw)):
        damaged = bytearray(raw)
        damaged[i] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            loaded = Slice.load(path)
        except FileFormatError:
            continue
        except Exception as exc:  # noqa: BLE001 - anything else is what this test looks for
            escaped.setdefault(f"{type(exc).__module__}.{type(exc).__name__}", i)
            continue
        # a byte the zip format does not check (a timestamp): the slice must still be exact
        assert loaded == s, f"byte {i} damaged gave a different slice silently"
    assert escaped == {}, f"not FileFormatError (first damaged byte): {escaped}"


def test_load_a_profile_file(tmp_path, slicer):
    path = tmp_path / "profile.npz"
    slicer.profile_.save(path)
    with pytest.raises(FileFormatError, match="profile") as exc:
        Slice.load(path)
    assert isinstance(exc.value, ValueError)


def test_load_a_plain_npz_and_npy(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, x=np.arange(3), y=np.ones((2, 2)))
    with pytest.raises(FileFormatError):
        Slice.load(path)
    npy = tmp_path / "plain.npy"
    np.save(npy, np.arange(3))
    with pytest.raises(FileFormatError):
        Slice.load(npy)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        Slice.load(tmp_path / "nope.npz")


def test_save_into_missing_directory_leaves_nothing(tmp_path, ab):
    a, _ = ab
    before = sorted(os.listdir(tmp_path))
    target = tmp_path / "missing" / "s.npz"
    with pytest.raises(OSError):
        a.save(target)
    assert not target.exists() and not (tmp_path / "missing").exists()
    assert sorted(os.listdir(tmp_path)) == before


def test_failed_save_leaves_existing_file_untouched(tmp_path, ab, monkeypatch):
    a, b = ab
    path = tmp_path / "s.npz"
    a.save(path)
    before = path.read_bytes()

    def broken(f, **arrays):
        f.write(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        b.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert Slice.load(path) == a
    assert _temp_leftovers(tmp_path) == [] and os.listdir(tmp_path) == ["s.npz"]


def test_save_onto_a_directory_fails_cleanly(tmp_path, ab):
    a, _ = ab
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(OSError):
        a.save(tmp_path / "dir.npz")
    assert (tmp_path / "dir.npz").is_dir() and os.listdir(tmp_path / "dir.npz") == []
    assert _temp_leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------- networkx
def _check_neuron_graph(g, s, graph):
    members = {(t, int(i)) for t, c in s.neuron_counts.items() for i in np.flatnonzero(c)}
    assert set(g.nodes) == members
    for (t, i), attrs in g.nodes(data=True):
        assert attrs["count"] == int(s.neuron_counts[t].ravel()[i]) != 0
    weighted = set(graph.weighted_ops)
    through_weights = 0
    for u, v, attrs in g.edges(data=True):
        assert u in members and v in members
        assert attrs["op"] == v[0]
        if attrs["op"] in weighted:
            through_weights += 1
            count = int(s.synapse_counts[attrs["op"]].ravel()[attrs["synapse"]])
            assert attrs["synapse"] >= 0 and count != 0 and attrs["count"] == count
    return through_weights


def test_to_networkx_holds_only_members(slicer, data):
    s = slicer.slice(data[6])
    g = s.to_networkx()
    assert g.number_of_nodes() == s.n_neurons
    assert _check_neuron_graph(g, s, slicer.graph_) > 0
    # every edge is an edge of the model's full neuron-level graph
    full = slicer.graph_.to_networkx(level="neuron")
    assert all(full.has_edge(u, v) for u, v in g.edges)
    assert g.number_of_edges() < full.number_of_edges()


def test_to_networkx_of_a_loaded_slice_needs_the_graph(tmp_path, slicer, model, other_slicer, data):
    s = slicer.slice(data[7])
    s.save(tmp_path / "s.npz")
    loaded = Slice.load(tmp_path / "s.npz")
    with pytest.raises(InvalidParameterError, match="graph"):
        loaded.to_networkx()
    g = loaded.to_networkx(graph=nnslicer.lift(model))
    ref = s.to_networkx()
    assert set(g.nodes) == set(ref.nodes) and set(g.edges) == set(ref.edges)
    _check_neuron_graph(g, loaded, slicer.graph_)
    with pytest.raises(InvalidParameterError, match="another model"):
        loaded.to_networkx(graph=other_slicer.graph_)


def test_to_networkx_at_channel_granularity(channel_slicer, data):
    s = channel_slicer.slice(data[0])
    g = s.to_networkx()
    assert g.number_of_nodes() == s.n_neurons
    assert _check_neuron_graph(g, s, channel_slicer.graph_) > 0
    assert {i for t, i in g.nodes if t == "conv"} <= {0, 1, 2}


def test_counts_must_be_integers_and_numpy_metadata_saves(tmp_path):
    with pytest.raises(InvalidInputError, match=r"integers; got other values for \['a'\]"):
        Slice({"a": np.array([0.5, 1.0])}, {})
    with pytest.raises(InvalidInputError, match="'w'"):
        Slice({"a": np.array([1, 0])}, {"w": np.array([True, False])})
    for samples in (0, -2, 1.5, True):
        with pytest.raises(InvalidParameterError, match="at least one sample"):
            Slice({}, {}, samples=samples)
    s = Slice({"a": np.array([1, 0])}, {"w": np.array([[2, -1]])}, theta=np.float32(0.2), samples=np.int64(3),
              targets=np.array([1, 2]))
    back = Slice.load(s.save(tmp_path / "s.npz"))
    assert back == s and back.samples == 3 and back.targets == [1, 2]
