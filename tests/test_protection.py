"""Selective model protection: exact hidden counts, bitwise restore, refusal of a foreign
secret, the attacker moving only hidden weights, the secret file, the CLI and errors."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import doctest  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

import nnslicer  # noqa: E402
from nnslicer import FileFormatError, InvalidInputError, InvalidParameterError  # noqa: E402
from nnslicer.cli import main  # noqa: E402

from analyses import protection  # noqa: E402
from analyses.protection import ProtectionSecret, protect, restore, steal, weights_digest  # noqa: E402

from archives import read_raw, write_raw  # noqa: E402
from tiny import self_labelled, tiny_cnn  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return tiny_cnn(0, name="victim")


@pytest.fixture(scope="module")
def data(model):
    return self_labelled(model, 60, 0)


@pytest.fixture(scope="module")
def slicer(model, data):
    return nnslicer.Slicer(model).fit(*data)


@pytest.fixture(scope="module")
def classes(data):
    return [int(c) for c in np.unique(data[1])[:2]]


@pytest.fixture(scope="module")
def protected(model, data, slicer, classes):
    return protect(model, slicer, *data, classes)


def same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(wa, wb))


def test_hidden_exact_count_and_zeros(model, protected):
    prot, secret = protected
    for layer in ("conv", "dense"):
        original = model.get_layer(layer).get_weights()[0]
        hidden = secret.masks()[f"{layer}/kernel"]
        assert hidden.sum() == round(0.5 * original.size)
        got = prot.get_layer(layer).get_weights()[0]
        assert np.all(got[hidden] == 0)
        np.testing.assert_array_equal(got[~hidden], original[~hidden])
        np.testing.assert_array_equal(secret.values[f"{layer}/kernel"], original.ravel()[secret.indices[f"{layer}/kernel"]])
    np.testing.assert_array_equal(prot.get_layer("dense").get_weights()[1], model.get_layer("dense").get_weights()[1])


def test_magnitude_hides_the_largest_weights_by_hand(model, data, classes):
    prot, secret = protect(model, None, *data, classes, fraction=0.25, method="magnitude")
    for layer in ("conv", "dense"):
        w = np.abs(model.get_layer(layer).get_weights()[0]).ravel()
        k = round(0.25 * w.size)
        expect = np.zeros(w.size, bool)
        expect[np.argsort(-w, kind="stable")[:k]] = True
        np.testing.assert_array_equal(secret.masks()[f"{layer}/kernel"].ravel(), expect)


def test_model_scope_ranks_across_layers_by_hand(model, data, classes):
    """scope="model": the largest |w| of the whole model, exactly round(fraction * total) of them."""
    prot, secret = protect(model, None, *data, classes, fraction=0.3, method="magnitude", scope="model")
    kernels = [model.get_layer(n).get_weights()[0] for n in ("conv", "dense")]
    w = np.abs(np.concatenate([k.ravel() for k in kernels]))
    expect = np.zeros(w.size, bool)
    expect[np.argsort(-w, kind="stable")[:round(0.3 * w.size)]] = True
    got = np.concatenate([secret.masks()[f"{n}/kernel"].ravel() for n in ("conv", "dense")])
    np.testing.assert_array_equal(got, expect)
    assert secret.meta["scope"] == "model" and secret.n_hidden == round(0.3 * w.size)
    assert all(np.all(prot.get_layer(n).get_weights()[0][secret.masks()[f"{n}/kernel"]] == 0) for n in ("conv", "dense"))
    assert same_weights(restore(prot, secret), model)


def test_nnslicer_hides_the_highest_counts(model, data, slicer, classes, protected):
    """Every hidden synapse has an aggregated |count| >= every visible one's."""
    from analyses.synapse_scores import class_slices

    slices = class_slices(slicer, *data, classes)
    counts = sum(s.synapse_counts["dense"] for s in slices.values())
    hidden = protected[1].masks()["dense/kernel"]
    assert counts[hidden].min() >= counts[~hidden].max()


def test_restore_is_bitwise_and_input_untouched(model, protected):
    before = [w.copy() for w in model.get_weights()]
    back = restore(*protected)
    assert same_weights(back, model)
    assert weights_digest(back) == protected[1].original_digest
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    np.testing.assert_array_equal(back.predict(np.zeros((1, 6, 6, 1)), verbose=0),
                                  model.predict(np.zeros((1, 6, 6, 1)), verbose=0))


def test_secret_of_another_model_is_refused(data, protected, classes):
    other = tiny_cnn(1, name="victim")
    _, foreign = protect(other, None, *data, classes, method="random")
    with pytest.raises(FileFormatError, match="This secret was made for another model"):
        restore(protected[0], foreign)
    with pytest.raises(FileFormatError):
        restore(other, protected[1])  # an unprotected model is not the protected one


def test_secret_file_round_trip(tmp_path, protected):
    secret = protected[1]
    path = secret.save(tmp_path / "s.npz")
    loaded = ProtectionSecret.load(path)
    assert repr(loaded) == repr(secret)
    assert loaded.shapes == secret.shapes and loaded.meta == secret.meta
    for k in secret.indices:
        np.testing.assert_array_equal(loaded.indices[k], secret.indices[k])
        assert loaded.values[k].dtype == secret.values[k].dtype
        np.testing.assert_array_equal(loaded.values[k], secret.values[k])
    assert same_weights(restore(protected[0], loaded), restore(*protected))
    assert loaded == secret
    loaded.meta["fraction"] = 0.1
    assert loaded != secret
    np.save(tmp_path / "bad.npy", np.zeros(3))
    with pytest.raises(FileFormatError, match="single array"):
        ProtectionSecret.load(tmp_path / "bad.npy")


@pytest.mark.parametrize("damage, message", [
    ("index_out_of_range", "do not fit its shape"),
    ("values_short", "do not fit its shape"),
    ("index_2d", "do not fit its shape"),
    ("no_meta", "KeyError: 'meta'"),
    ("newer_version", "format version 99; this nnslicer reads versions 1 to 2"),
])
def test_damaged_secret_files_are_refused(tmp_path, protected, damage, message):
    """What a damaged or foreign secret file holds is checked when it loads (it used to reach
    restore as an IndexError or a shape mismatch)."""
    path = str(protected[1].save(tmp_path / "s.npz"))
    header, arrays = read_raw(path)
    key = next(iter(protected[1].indices))
    i, v = f"index/{key}", f"value/{key}"
    if damage == "index_out_of_range":
        arrays[i] = arrays[i] + 10**6
    elif damage == "values_short":
        arrays[v] = arrays[v][:-1]
    elif damage == "index_2d":
        arrays[i] = arrays[i][None]
    elif damage == "no_meta":
        del header["meta"]
    else:
        header["version"] = 99
    write_raw(tmp_path / "bad.npz", header, arrays)
    with pytest.raises(FileFormatError, match=message):
        ProtectionSecret.load(tmp_path / "bad.npz")


def test_steal_changes_only_hidden_positions(model, data, protected):
    prot, secret = protected
    x, y = data
    before = [w.copy() for w in prot.get_weights()]
    stolen = steal(prot, secret, x, y, epochs=3, lr=0.05, batch_size=16)
    masks = secret.masks()
    moved = 0
    for layer in prot.layers:
        for w_p, w_s, var in zip(layer.get_weights(), stolen.get_layer(layer.name).get_weights(), layer.weights):
            key = f"{layer.name}/{var.name}"
            hidden = masks.get(key, np.zeros(w_p.shape, bool))
            assert np.array_equal(w_p[~hidden], w_s[~hidden]), key  # bitwise
            moved += int(np.count_nonzero(w_p[hidden] != w_s[hidden]))
    assert moved > 0
    assert all(np.array_equal(a, b) for a, b in zip(before, prot.get_weights()))  # protected untouched
    # a plain mask dict works too
    epochs = []
    again = steal(prot, masks, x, y, epochs=3, lr=0.05, batch_size=16, progress=epochs.append)
    assert same_weights(again, stolen)  # same seed, same result
    assert epochs == [1, 2, 3]


def test_steal_with_batch_norm_keeps_parameters_moves_only_statistics(data, classes):
    """In training mode only the hidden kernel positions and the batch-norm moving statistics
    change; frozen, only the hidden positions do."""
    keras.utils.set_random_seed(4)
    bn_model = keras.Sequential([
        keras.Input((6, 6, 1), name="image"), keras.layers.Conv2D(4, 3, use_bias=False, name="conv"),
        keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(name="relu"),
        keras.layers.Flatten(name="flat"), keras.layers.Dense(10, activation="softmax", name="dense")], name="bnnet")
    x, y = data
    prot, secret = protect(bn_model, None, x, y, classes, method="magnitude")
    masks = secret.masks()
    for mode, stats_move in (("train", True), ("frozen", False)):
        stolen = steal(prot, secret, x, y, epochs=2, lr=0.05, batch_size=16, batchnorm=mode)
        for layer in prot.layers:
            for var, w_p, w_s in zip(layer.weights, layer.get_weights(), stolen.get_layer(layer.name).get_weights()):
                key = f"{layer.name}/{var.name}"
                if key in masks:
                    assert np.array_equal(w_p[~masks[key]], w_s[~masks[key]])
                    assert not np.array_equal(w_p[masks[key]], w_s[masks[key]])
                elif var.name in ("moving_mean", "moving_variance"):
                    assert np.array_equal(w_p, w_s) != stats_move, (mode, key)
                else:
                    assert np.array_equal(w_p, w_s), (mode, key)
    with pytest.raises(InvalidParameterError, match="'batchnorm'"):
        steal(prot, secret, x, y, epochs=1, batchnorm="eval")


def test_masked_training_on_a_logits_model_learns():
    """A model without softmax is trained on logits: a separable task's loss falls."""
    from analyses.masked_training import train_masked

    keras.utils.set_random_seed(5)
    lin = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, name="d")], name="lin")
    x = np.random.default_rng(3).normal(size=(200, 2)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    losses = train_masked(lin, {"d/kernel": np.ones((2, 2), bool)}, x, y, epochs=20, lr=0.5, batch_size=50)
    assert losses[-1] < 0.5 * losses[0]
    assert np.mean(lin.predict(x, verbose=0).argmax(1) == y) > 0.9


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(classes=[10]), InvalidParameterError, "Class 10 does not exist: the model has 10 classes"),
    (dict(fraction=1.0), InvalidParameterError, "The 'fraction' parameter of protect must be a float in (0, 1). Got 1.0"),
    (dict(method="channel"), InvalidParameterError, "'method' parameter of protect"),
    (dict(scope="global"), InvalidParameterError, "The 'scope' parameter of protect must be 'layer' or 'model'"),
])
def test_bad_parameters(model, data, slicer, classes, kwargs, error, words):
    args = dict(classes=classes)
    args.update(kwargs)
    with pytest.raises(error) as info:
        protect(model, slicer, *data, **args)
    assert words in str(info.value)


def test_class_without_samples_refused(model, data, slicer):
    missing = next(c for c in range(10) if c not in set(data[1].tolist()))
    with pytest.raises(InvalidInputError, match="No sample of class"):
        protect(model, slicer, *data, [missing])


def test_doctest():
    result = doctest.testmod(protection, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------ CLI
def test_cli_protect_restore_round_trip(tmp_path, model, data, classes, capsys):
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", data[0])
    np.save(tmp_path / "y.npy", data[1])
    args = ["protect", str(tmp_path / "m.keras"), "--data", str(tmp_path / "x.npy"), "--labels",
            str(tmp_path / "y.npy"), "--classes", ",".join(map(str, classes))]
    assert main(args + ["-o", str(tmp_path / "p.keras"), "--secret", str(tmp_path / "s.npz")]) == 0
    text = capsys.readouterr().out
    assert "ProtectionSecret(model='victim'" in text
    # it says what protection did: the protected model's accuracy on the target classes
    x, y = data
    sel = np.isin(y, classes)
    protected = keras.models.load_model(tmp_path / "p.keras", compile=False)
    after = 100 * np.mean(protected.predict(x[sel], verbose=0).argmax(-1) == y[sel])
    before = 100 * np.mean(model.predict(x[sel], verbose=0).argmax(-1) == y[sel])
    targets = ", ".join(map(str, classes))
    assert f"accuracy on --data ({len(x):,} samples): target classes ({targets}) {before:.1f}% -> {after:.1f}%" \
        in text
    # named classes (digits: a name that is the index is not repeated)
    names = ",".join(f"c{i}" for i in range(10))
    assert main(args + ["-o", str(tmp_path / "named.keras"), "--secret", str(tmp_path / "named.npz"),
                        "--class-names", names]) == 0
    assert f"target classes ({', '.join(f'{c} (c{c})' for c in classes)})" in capsys.readouterr().out
    assert main(args + ["-o", str(tmp_path / "bad.keras"), "--secret", str(tmp_path / "bad.npz"),
                        "--class-names", "a,b"]) == 2
    assert "10 classes, but 2 class names" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "p.keras"), "--secret", str(tmp_path / "s.npz"),
                 "-o", str(tmp_path / "r.keras")]) == 0
    restored = keras.models.load_model(tmp_path / "r.keras", compile=False)
    assert same_weights(restored, model)
    # a secret of another protection does not open this model
    assert main(args[:1] + [str(tmp_path / "m.keras")] + args[2:] + ["--method", "random", "-o",
                str(tmp_path / "p2.keras"), "--secret", str(tmp_path / "s2.npz")]) == 0
    capsys.readouterr()
    assert main(["restore", str(tmp_path / "p.keras"), "--secret", str(tmp_path / "s2.npz"),
                 "-o", str(tmp_path / "r2.keras")]) == 2
    assert "made for another model" in capsys.readouterr().err
    assert not (tmp_path / "r2.keras").exists()
    assert main(args[:-1] + ["12", "-o", str(tmp_path / "p3.keras"), "--secret", str(tmp_path / "s3.npz")]) == 2
    assert "Class 12 does not exist" in capsys.readouterr().err
    assert not (tmp_path / "p3.keras").exists() and not (tmp_path / "s3.npz").exists()
    assert main(args + ["--scope", "model", "--method", "magnitude", "-o", str(tmp_path / "p4.keras"),
                        "--secret", str(tmp_path / "s4.npz")]) == 0
    assert ProtectionSecret.load(tmp_path / "s4.npz").meta["scope"] == "model"


@pytest.mark.parametrize("edit", ["renamed", "reshaped", "weightless"])
def test_a_secret_that_does_not_fit_the_model_is_refused_by_restore(protected, edit):
    """A secret valid on its own, with the protected model's digest, but naming a weight the
    model lacks or another shape, used to reach restore as a KeyError or an IndexError."""
    prot, secret = protected
    key = next(iter(secret.indices))
    new = {"renamed": "nolayer/kernel", "reshaped": key, "weightless": "flat/kernel"}[edit]
    shapes = dict(secret.shapes)
    shape = [int(np.prod(shapes.pop(key))) * 2, 1] if edit == "reshaped" else shapes.pop(key)
    forged = ProtectionSecret({**{k: v for k, v in secret.indices.items() if k != key}, new: secret.indices[key]},
                              {**{k: v for k, v in secret.values.items() if k != key}, new: secret.values[key]},
                              {**shapes, new: shape}, secret.protected_digest, secret.original_digest, secret.meta)
    with pytest.raises(FileFormatError, match=f"hides weights of '{new}'"):
        restore(prot, forged)


@pytest.mark.parametrize("middle", ["attention", "lstm"])
def test_layers_with_several_kernels_are_refused_not_hidden_wrongly(middle):
    """Attention's four projections and an LSTM's two kernels are not a layer's first weight:
    protect refuses them by class instead of hiding synapses in the wrong array."""
    from nnslicer.errors import UnsupportedLayerError

    keras.utils.set_random_seed(0)
    x_in = keras.Input((4, 3))
    x = keras.layers.MultiHeadAttention(2, 2)(x_in, x_in) if middle == "attention" else \
        keras.layers.LSTM(3, return_sequences=True)(x_in)
    model = keras.Model(x_in, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    x = np.random.default_rng(0).normal(size=(20, 4, 3)).astype("float32")
    y = np.asarray(model(x)).argmax(1)
    classes = [int(c) for c in np.unique(y)[:1]]
    with pytest.raises(UnsupportedLayerError, match="MultiHeadAttention" if middle == "attention" else "LSTM"):
        protect(model, None, x, y, classes, method="magnitude")


# --------------------------------------------------------------------------- the authors' attacker and baseline
def residual_net():
    """A 3x3 conv, batch norm, a block with a 1x1 projection shortcut, a dense head."""
    keras.utils.set_random_seed(5)
    L = keras.layers
    x = keras.Input((6, 6, 1), name="image")
    h = L.ReLU(name="r0")(L.BatchNormalization(name="bn0")(L.Conv2D(4, 3, padding="same", use_bias=False,
                                                                       name="stem_conv")(x)))
    main = L.Conv2D(6, 3, padding="same", use_bias=False, name="block_conv")(h)
    short = L.Conv2D(6, 1, use_bias=False, name="block_shortcut")(h)
    h = L.ReLU(name="r1")(L.Add(name="add")([main, short]))
    out = L.Dense(10, activation="softmax", name="predictions")(L.Flatten(name="flat")(h))
    return keras.Model(x, out, name="resnet_like")


def test_the_paper_attacker_retrains_main_path_convolutions_only(data, classes):
    """Every weight of the 3x3 convolutions may move, hidden or not; the head, the 1x1
    shortcut and batch norm's scale and shift stay as published (a hidden head weight stays
    zero), the moving statistics follow the attacker's data; the best epoch is returned."""
    net = residual_net()
    x, y = data
    prot, secret = protect(net, None, x, y, classes, method="magnitude")
    scores = []

    def score(m):  # the best epoch is the first: later ones score lower
        scores.append(len(scores))
        return -len(scores)

    stolen = steal(prot, None, x, y, epochs=3, lr=0.05, batch_size=16, attacker="paper", weight_decay=5e-4,
                   score=score)
    assert scores == [0, 1, 2]
    first = steal(prot, None, x, y, epochs=1, lr=0.05, batch_size=16, attacker="paper", weight_decay=5e-4)
    assert all(np.array_equal(a, b) for a, b in zip(stolen.get_weights(), first.get_weights()))
    for layer in prot.layers:
        for var, w_p, w_s in zip(layer.weights, layer.get_weights(), stolen.get_layer(layer.name).get_weights()):
            if layer.name in ("stem_conv", "block_conv"):
                assert not np.array_equal(w_p, w_s), layer.name
            elif var.name in ("moving_mean", "moving_variance"):
                assert not np.array_equal(w_p, w_s), var.name
            else:
                assert np.array_equal(w_p, w_s), (layer.name, var.name)
    hidden_head = secret.masks()["predictions/kernel"]
    assert hidden_head.any() and (stolen.get_layer("predictions").get_weights()[0][hidden_head] == 0).all()
    without_decay = steal(prot, None, x, y, epochs=1, lr=0.05, batch_size=16, attacker="paper")
    assert not np.array_equal(without_decay.get_layer("block_conv").get_weights()[0],
                              first.get_layer("block_conv").get_weights()[0])
    with pytest.raises(InvalidParameterError, match="'attacker' parameter of steal must be one of 'full', 'paper'"):
        steal(prot, secret, x, y, epochs=1, attacker="authors")
    with pytest.raises(InvalidParameterError, match="'weight_decay' parameter must be a float >= 0"):
        steal(prot, None, x, y, epochs=1, attacker="paper", weight_decay=-1.0)
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(10, activation="softmax", name="d")])
    with pytest.raises(nnslicer.UnsupportedLayerError, match="no convolution with a kernel larger than 1x1"):
        steal(dense, None, np.zeros((2, 4), "float32"), np.zeros(2, int), epochs=1, attacker="paper")


def test_random_with_replacement_hides_fewer_and_its_secret_loads_back(model, data, classes, tmp_path):
    x, y = data
    prot, secret = protect(model, None, x, y, classes, method="random", replace=True)
    exact, _ = protect(model, None, x, y, classes, method="random")
    for key, mask in secret.masks().items():
        n = mask.size
        want = round(0.5 * n)
        assert 0.30 * n < mask.sum() < want or n < 50, (key, mask.sum(), n)  # 1 - exp(-0.5) = 39%
        assert (prot.get_layer(key.split("/")[0]).get_weights()[0][mask] == 0).all()
    assert sum(m.sum() for m in secret.masks().values()) < sum(m.sum() for m in exact_masks(exact, model))
    path = secret.save(tmp_path / "s.npz")
    assert ProtectionSecret.load(path) == secret and secret.meta["replace"] is True
    assert same_weights(restore(prot, ProtectionSecret.load(path)), model)
    with pytest.raises(InvalidParameterError, match="replace=True .* goes with method='random', not 'magnitude'"):
        protect(model, None, x, y, classes, method="magnitude", replace=True)


def exact_masks(protected_model, original):
    """The masks of the positions a protected model zeroed (that were not zero already)."""
    for a, b in zip(protected_model.layers, original.layers):
        if a.get_weights():
            yield (a.get_weights()[0] == 0) & (b.get_weights()[0] != 0)


def test_protect_reports_slicing_progress(model, data, classes):
    """``progress`` hears the samples sliced so far, over every target class."""
    x, y = data
    slicer = nnslicer.Slicer(model).fit(x, y)
    done = []
    protect(model, slicer, x, y, classes, 0.5, progress=done.append)
    n = int(np.isin(y, classes).sum())
    assert done == sorted(done) and done[-1] == n
