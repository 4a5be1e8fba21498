"""Unit scores and unit pruning (issue 22; Ancona et al. 2020): the paper's toy net with Shapley
values derived by hand, sampled orders converging to the exact values, the restarted forward
equal to a full one, and pruning removing exactly the lowest-ranked units."""

import itertools
import math

import keras
import numpy as np
import pytest

from analyses.layer_importance import _context, _evaluate, _mask_hook, _objective, coalition_values
from analyses.pruning import prunable_units, remove_units
from analyses.unit_pruning import lowest_units, prune_units
from analyses.unit_scores import UNIT_METHODS, removal_losses, unit_scores
from nnslicer import lift
from nnslicer.cli import main
from nnslicer.errors import InvalidInputError, InvalidParameterError

L = keras.layers
MSE = keras.losses.mean_squared_error


@pytest.fixture(scope="module")
def max_net():
    """The paper's Figure 1: y = max(x1, x2) = 0.5 relu(x2 - x1) + 0.5 relu(x1 - x2) + 0.5 relu(x1 + x2)
    + 0 * relu(x1 + x2) for x >= 0 (units A, B, C and the dead D), on a midpoint grid of [0, 10]^2."""
    model = keras.Sequential([keras.Input((2,)), L.Dense(4, activation="relu", name="h"), L.Dense(1, name="out")])
    model.get_layer("h").set_weights([np.array([[-1, 1, 1, 1], [1, -1, 1, 1]], "float32"), np.zeros(4, "float32")])
    model.get_layer("out").set_weights([np.array([[0.5], [0.5], [0.5], [0.0]], "float32"), np.zeros(1, "float32")])
    g = (np.arange(40) + 0.5) / 4
    x = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2).astype("float32")
    return model, x, x.max(1, keepdims=True)


def hand_shapley(x):
    """Per sample: the output is a + b + c (a = relu(x2 - x1) / 2, b = relu(x1 - x2) / 2,
    c = (x1 + x2) / 2) and the loss of a coalition S is (sum of the units not in S)^2. At most
    two of a, b, c are non-zero (b or a, and c): the two-player game v(S) = -(missing)^2 gives
    phi_b = b^2 + b c = b (b + c) = b * max, phi_c = c * max; phi_D = 0."""
    a = np.maximum(x[:, 1] - x[:, 0], 0) / 2
    b = np.maximum(x[:, 0] - x[:, 1], 0) / 2
    c = (x[:, 0] + x[:, 1]) / 2
    m = x.max(1)
    return np.stack([a * m, b * m, c * m, np.zeros_like(m)], 1).astype(np.float64)


def test_max_net_shapley_values_by_hand(max_net):
    model, x, y = max_net
    want = hand_shapley(x)
    got = unit_scores(model, x, y, "shapley", loss=MSE, permutations=24, aggregation="mean")["h"]
    np.testing.assert_allclose(got, want.mean(0), rtol=1e-5, atol=1e-6)
    assert got[3] == 0.0  # the null player
    assert got[0] == pytest.approx(got[1], rel=1e-6)  # the symmetric pair
    # efficiency: the values sum to the loss with no unit minus the loss with all (0 here): E[max^2]
    assert got.sum() == pytest.approx(float(np.mean(y ** 2)), rel=1e-5)
    # the continuous domain's values (6.25, 6.25, 37.5, 0; gap 50), to the grid's accuracy
    np.testing.assert_allclose(got, [6.25, 6.25, 37.5, 0.0], atol=0.05)
    conservative = unit_scores(model, x, y, "shapley", loss=MSE, permutations=24)["h"]
    np.testing.assert_allclose(conservative, want.mean(0) + 2 * want.std(0), rtol=1e-5, atol=1e-6)


def test_max_net_heuristics_fail_as_the_paper_says(max_net):
    """Table 1: the gradient of a zero loss is zero (Taylor, Sensitivity give every unit 0);
    APoZ and the weight norm do not find the dead unit D."""
    model, x, y = max_net
    for method in ("taylor", "sensitivity"):
        np.testing.assert_array_equal(unit_scores(model, x, y, method, loss=MSE)["h"], 0.0)
    apoz = unit_scores(model, x, y, "apoz", loss=MSE)["h"]
    assert apoz[3] == 1.0 and apoz[2] == 1.0 and apoz[0] == apoz[1] == pytest.approx(0.4875)  # 780 of 1,600 > 0
    np.testing.assert_array_equal(unit_scores(model, x, y, "weight", loss=MSE)["h"], [2.0, 2.0, 2.0, 2.0])


def exact_layer_shapley(model, x, y, name, units):
    """Shapley values by the subset formula (eq. 5) over the 2^units coalitions, per sample,
    averaged: value = minus the cross-entropy with the coalition's units kept."""
    ctx = _context(model, x, y, 0)
    subsets = list(itertools.product([0, 1], repeat=units))
    value = {}
    for s in subsets:
        masks = {name: np.tile(np.array(s, np.float32), (len(x), 1))}
        out = _evaluate(ctx, hook=_mask_hook(masks, len(x)), names=[name])
        value[s] = -_objective(ctx, out, "loss", per_sample=True).numpy().astype(np.float64)
    phi = np.zeros((len(x), units))
    for i in range(units):
        for s in subsets:
            if s[i]:
                continue
            k = sum(s)
            weight = math.factorial(k) * math.factorial(units - k - 1) / math.factorial(units)
            with_i = s[:i] + (1,) + s[i + 1:]
            phi[:, i] += weight * (value[with_i] - value[s])
    return phi.mean(0)


@pytest.fixture(scope="module")
def mlp():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((5,)), L.Dense(7, activation="relu", name="h"),
                              L.Dense(3, activation="softmax", name="out")])
    rng = np.random.default_rng(3)
    x = rng.normal(size=(24, 5)).astype("float32")
    return model, x, rng.integers(0, 3, 24)


def test_sampled_orders_converge_to_the_exact_values(mlp):
    model, x, y = mlp
    exact = exact_layer_shapley(model, x, y, "h", 7)
    every = unit_scores(model, x, y, "shapley", permutations=math.factorial(7), aggregation="mean")["h"]
    np.testing.assert_allclose(every, exact, rtol=1e-4, atol=1e-6)
    scale = np.abs(exact).max()
    errors = [np.abs(unit_scores(model, x, y, "shapley", permutations=k, aggregation="mean", seed=s)["h"] - exact).max()
              for k in (4, 400) for s in range(3)]
    assert max(errors[3:]) < 0.08 * scale
    assert np.mean(errors[3:]) < np.mean(errors[:3])


def test_every_order_sums_to_the_loss_gap(mlp):
    """Efficiency holds order by order, so for any number of sampled orders."""
    model, x, y = mlp
    s = unit_scores(model, x, y, "shapley", permutations=3, aggregation="mean")["h"]
    losses = removal_losses(model, x, y, "h", np.arange(7))
    assert s.sum() == pytest.approx(losses[-1] - losses[0], rel=1e-5)


@pytest.fixture(scope="module")
def residual():
    """A layer whose output is read both after it and, through a skip from before it, by an Add:
    the restarted forward must feed the recorded skip tensor to the Add."""
    keras.utils.set_random_seed(4)
    inp = keras.Input((8, 8, 2))
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(inp)
    b = L.Conv2D(5, 3, padding="same", name="b")(a)
    bn = L.BatchNormalization(name="bn")(b)
    r = L.ReLU(name="r")(bn)
    c = L.Conv2D(4, 1, name="c")(r)
    s = L.Add(name="add")([a, c])
    out = L.Dense(3, activation="softmax", name="out")(L.GlobalAveragePooling2D(name="gap")(s))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(4)
    model.get_layer("bn").set_weights([rng.uniform(0.5, 1.5, 5), rng.normal(0, 0.5, 5), rng.normal(0, 0.5, 5),
                                       rng.uniform(0.5, 1.5, 5)])
    x = rng.normal(size=(10, 8, 8, 2)).astype("float32")
    return model, x, rng.integers(0, 3, 10)


def test_the_restarted_forward_equals_a_full_one(residual, monkeypatch):
    import analyses.layer_importance

    monkeypatch.setattr(analyses.layer_importance, "RESTART_SAMPLES", 4)  # chunks of 4, 4 and 2 samples
    monkeypatch.setattr(analyses.layer_importance, "RESTART_ROWS", 12)  # 3 coalitions a pass
    model, x, y = residual
    ctx = _context(model, x, y, 0)
    masks = np.random.default_rng(0).integers(0, 2, (6, 5)).astype(np.float32)
    got = coalition_values(ctx, "r", masks, kind="loss")
    for m, row in zip(masks, got):
        out = _evaluate(ctx, hook=_mask_hook({"r": np.tile(m, (len(x), 1))}, len(x)), names=["r"])
        np.testing.assert_allclose(row, _objective(ctx, out, "loss", per_sample=True).numpy(), rtol=1e-5, atol=1e-6)


def test_which_units_can_be_pruned(residual):
    """b's channels end in its ReLU and are read by c; a and c reach the Add (never removed)."""
    model, *_ = residual
    assert prunable_units(model, lift(model)) == {"b": (5, "r")}


@pytest.mark.parametrize("with_bn", [False, True])
def test_a_branch_that_does_not_keep_zero_leaves_the_layer_out(with_bn):
    """c's ReLU feeds two branches; a batch norm on one of them would turn a zeroed channel into
    its shift, so zeroing at the ReLU would not be removing the unit: c is then not prunable."""
    keras.utils.set_random_seed(8)
    inp = keras.Input((6, 6, 2))
    r = L.Conv2D(3, 3, padding="same", activation="relu", name="c")(inp)
    a = L.Conv2D(4, 1, name="ra")(L.MaxPooling2D(name="p")(r))
    b = L.BatchNormalization(name="bn")(r) if with_bn else r
    b = L.Conv2D(4, 2, strides=2, name="rb")(b)
    model = keras.Model(inp, L.Dense(2, name="out")(L.Flatten(name="f")(L.Add(name="add")([a, b]))))
    if with_bn:
        model.get_layer("bn").set_weights([np.ones(3), np.full(3, 0.5), np.zeros(3), np.ones(3)])
    graph = lift(model)
    assert prunable_units(model, graph) == ({} if with_bn else {"c": (3, "c/relu")})
    if not with_bn:
        x = np.random.default_rng(8).normal(size=(5, 6, 6, 2)).astype("float32")
        y = np.zeros((5, 2), "float32")
        small, _ = remove_units(model, graph, {"c": np.array([False, True, False])})
        curve = removal_losses(model, x, y, "c", [1, 0, 2], loss=MSE)
        assert np.mean((small.predict(x, verbose=0) - y) ** 2) == pytest.approx(curve[1], rel=1e-5)


def test_zeroing_at_the_units_end_is_removing_them(residual):
    model, x, y = residual
    graph = lift(model)
    order = np.array([3, 0, 4, 1, 2])
    curve = removal_losses(model, x, y, "b", order)
    for k in (0, 2, 4):
        small, removed = remove_units(model, graph, {"b": np.isin(np.arange(5), order[:k])})
        assert small.get_layer("b").filters == 5 - k and removed.get("b", 0) == k
        p = small.predict(x, verbose=0)
        assert -np.log(p[np.arange(len(y)), y]).mean() == pytest.approx(curve[k], rel=1e-5)


def test_pruning_removes_exactly_the_lowest_ranked_units(mlp):
    model, x, y = mlp
    pruned, report = prune_units(model, x, y, "weight", 3 / 7)
    l1 = np.abs(model.get_layer("h").get_weights()[0]).sum(0)
    keep = np.sort(np.argsort(l1)[3:])
    np.testing.assert_array_equal(pruned.get_layer("h").get_weights()[0], model.get_layer("h").get_weights()[0][:, keep])
    np.testing.assert_array_equal(pruned.get_layer("out").get_weights()[0], model.get_layer("out").get_weights()[0][keep])
    assert report.layers[0].pruned == 3 and report.params_after == model.count_params() - 3 * (5 + 1 + 3)
    # by Shapley values: the lowest of the values unit_scores gives with the same seed
    pruned, report = prune_units(model, x, y, "shapley", 0.5, seed=7)
    scores = unit_scores(model, x, y, "shapley", seed=7)["h"]
    assert pruned.get_layer("h").units == 3
    np.testing.assert_array_equal(pruned.get_layer("h").get_weights()[0],
                                  model.get_layer("h").get_weights()[0][:, np.sort(np.argsort(scores)[4:])])


def test_pruning_goes_from_the_output_side_and_the_masked_model_is_the_smaller_one(residual):
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(4, 3, activation="relu", name="c1"),
                              L.Conv2D(6, 3, activation="relu", name="c2"), L.MaxPooling2D(name="p"), L.Flatten(name="f"),
                              L.Dense(8, activation="relu", name="d"), L.Dense(3, activation="softmax", name="out")])
    x = np.random.default_rng(5).normal(size=(30, 8, 8, 1)).astype("float32")
    y = np.random.default_rng(6).integers(0, 3, 30)
    for method in UNIT_METHODS:
        small, report = prune_units(model, x, y, method, 0.5, keep_first=1, evaluate=(x, y))
        masked, _ = prune_units(model, x, y, method, 0.5, keep_first=1, remove=False)
        assert [r.name for r in report.layers] == ["d", "c2"]
        assert (small.get_layer("c1").filters, small.get_layer("c2").filters, small.get_layer("d").units) == (4, 3, 4)
        np.testing.assert_allclose(small.predict(x, verbose=0), masked.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
        assert report.layers[-1].accuracy == pytest.approx(np.mean(small.predict(x, verbose=0).argmax(1) == y))


def test_pruning_the_negative_units(mlp):
    """below=0 with signed values (the paper's section 3.3) removes exactly the units whose
    mean Shapley value is negative."""
    model, x, labels = mlp
    y = np.where(np.arange(len(x)) % 2 == 0, model.predict(x, verbose=0).argmax(1), labels)  # some units help
    values = unit_scores(model, x, y, "shapley", aggregation="mean", seed=2)["h"]
    assert 0 < (values < 0).sum() < 7
    pruned, report = prune_units(model, x, y, "shapley", None, below=0.0, aggregation="mean", seed=2)
    np.testing.assert_array_equal(pruned.get_layer("h").get_weights()[0],
                                  model.get_layer("h").get_weights()[0][:, values >= 0])
    assert report.below == 0.0 and "below=0.0" in repr(report)


def test_lowest_units_keeps_one():
    assert lowest_units(np.array([1.0, 2.0]), 0.9).tolist() == [True, False]
    assert lowest_units(np.array([2.0, 1.0, 1.0, 3.0]), 0.5).tolist() == [False, True, True, False]
    assert lowest_units(np.array([0.5, -1.0, 0.2]), 0.3).tolist() == [False, True, False]


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: unit_scores(m, x, y, "magnitude"), "'method' parameter of unit_scores must be one of"),
    (lambda m, x, y: unit_scores(m, x, y, "shapley", aggregation="median"), "'aggregation' parameter"),
    (lambda m, x, y: unit_scores(m, x, y, "shapley", permutations=0), "'permutations' parameter"),
    (lambda m, x, y: unit_scores(m, x, y, layers=["out"]), "['out'] are not layers whose units can be pruned"),
    (lambda m, x, y: unit_scores(m, x, y, "random", seed=0.5), "'seed' parameter of unit_scores must be an int"),
    (lambda m, x, y: unit_scores(m, x, y, loss="mse"), "loss must be a callable"),
    (lambda m, x, y: unit_scores(m, x, None, loss=MSE), "A custom loss needs y"),
    (lambda m, x, y: prune_units(m, x, y, "shapley", 1.0), "'ratio' parameter of prune_units"),
    (lambda m, x, y: prune_units(m, x, y, "nnslicer", 0.5), "'method' parameter of prune_units must be one of"),
    (lambda m, x, y: prune_units(m, x, y, "weight", 0.5, keep_first=1), "no layer left to prune"),
    (lambda m, x, y: removal_losses(m, x, y, "h", [0, 1, 2]), "order must be a permutation of the 7 units"),
    (lambda m, x, y: prune_units(m, x, y, "shapley", 0.5, below=0.0), "give ratio=None with below=0.0"),
    (lambda m, x, y: prune_units(m, x, y, "shapley", None, below=float("nan")), "'below' parameter of prune_units"),
])
def test_errors(mlp, call, message):
    model, x, y = mlp
    with pytest.raises((InvalidParameterError, InvalidInputError)) as exc:
        call(model, x, y)
    assert message in str(exc.value)


def test_slice_scores_count_what_the_slices_hold(mlp):
    """abs counts bound the signed ones, and a unit no slice holds scores 0 under both."""
    model, x, y = mlp
    a = unit_scores(model, x, y, "slice")["h"]
    s = unit_scores(model, x, y, "slice_signed")["h"]
    assert np.all(a >= np.abs(s)) and np.all((a == 0) <= (s == 0)) and a.sum() > 0


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("units")
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(4, 3, activation="relu", name="conv"), L.Flatten(name="flat"),
                              L.Dense(5, activation="relu", name="d"), L.Dense(3, activation="softmax", name="out")])
    x = np.random.default_rng(0).normal(size=(30, 6, 6, 1)).astype("float32")
    y = model.predict(x, verbose=0).argmax(1)
    paths = {"model": str(d / "m.keras"), "x": str(d / "x.npy"), "y": str(d / "y.npy")}
    model.save(paths["model"])
    np.save(paths["x"], x)
    np.save(paths["y"], y)
    return paths, model


@pytest.mark.parametrize("argv", [["--method", "shapley", "--permutations", "2", "--samples", "20"],
                                  ["--method", "random", "--units"], ["--method", "slice", "--granularity", "channel"],
                                  ["--method", "taylor", "--layers", "conv"]])
def test_cli_prunes_units(cli_files, tmp_path, capsys, argv):
    paths, model = cli_files
    out = tmp_path / "p.keras"
    assert main(["prune", paths["model"], "--data", paths["x"], "--labels", paths["y"], "--ratio", "0.5", *argv,
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "UnitPruneReport" in text and "accuracy on --data" in text
    pruned = keras.models.load_model(out, compile=False)
    want = (2, 5) if "--layers" in argv else (2, 3)  # round(0.5 * 5) = 2 of d's units go
    assert (pruned.get_layer("conv").filters, pruned.get_layer("d").units) == want


def test_cli_prunes_units_below_a_value(cli_files, tmp_path, capsys):
    paths, model = cli_files
    out = tmp_path / "p.keras"
    x, y = np.load(paths["x"]), np.load(paths["y"])
    values = unit_scores(model, x, y, "weight")
    assert main(["prune", paths["model"], "--data", paths["x"], "--labels", paths["y"], "--method", "weight",
                 "--below", str(float(np.median(values["d"]))), "-o", str(out)]) == 0
    assert "below=" in capsys.readouterr().out
    pruned = keras.models.load_model(out, compile=False)
    assert pruned.get_layer("d").units == int(np.sum(values["d"] >= np.median(values["d"])))


@pytest.mark.parametrize("argv, message", [
    (["--method", "shapley"], "Give --ratio R (or, pruning units, --below V instead of it), not both."),
    (["--method", "shapley", "--ratio", "0.5", "--below", "0"], "not both"),
    (["--method", "nnslicer", "--classes", "0", "--below", "0"], "--below has no effect when pruning synapses"),
    (["--method", "shapley", "--ratio", "0.5", "--fine-tune-epochs", "1"], "--fine-tune-epochs has no effect when pruning units (--method shapley)"),
    (["--method", "nnslicer", "--ratio", "0.5", "--classes", "0", "--keep-first", "1"], "--keep-first has no effect"),
    (["--method", "nnslicer", "--ratio", "0.5"], "prunes for target classes: give --classes"),
    (["--method", "magnitude", "--ratio", "0.5", "--units"], "--units prunes units by"),
    (["--method", "taylor", "--ratio", "0.5", "--permutations", "9"], "--permutations has no effect with --method taylor"),
    (["--method", "taylor", "--ratio", "0.5", "--samples", "0"], "--samples must be >= 1; got 0."),
    (["--method", "weight", "--ratio", "0.5", "--layers", "out"], "['out'] are not layers whose units can be pruned"),
])
def test_cli_unit_misuse(cli_files, tmp_path, capsys, argv, message):
    paths, _ = cli_files
    out = tmp_path / "p.keras"
    assert main(["prune", paths["model"], "--data", paths["x"], "--labels", paths["y"], *argv, "-o", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
