"""SAFER's layer-ranking test bed (Yvinec et al., section 3.1) rebuilt, and every layer criterion
of ``analyses.layer_importance`` scored on it.

What it measures
----------------
A zoo of small classifiers of scikit-learn's ``make_moons`` (2,000 training points, noise 0.1),
four families, ``--models-per-family`` each:

* ``vanilla``: 2-6 Dense+ReLU layers, each 8-128 wide, then a Dense(2) head;
* ``skip``: a Dense stem of width 8-128, 2-6 residual blocks ``x + Dense(x)``, a head;
* ``skip_sd``: the same with stochastic depth (Huang et al.) on every residual branch
  (drop rate rising linearly to 0.5 over the blocks);
* ``transformer``: the two coordinates as two tokens, a Dense embedding of width 8-128 (rounded
  to even), 2-6 sublayers alternately attention (MultiHeadAttention, 2 heads, residual,
  LayerNormalization) and feed-forward (Dense+ReLU, residual), then Flatten and a head.

Each is trained with Adam (lr 0.01) for 6 epochs, batch 128; a model under 95% test accuracy is
replaced by a new draw (counted). Ranked layers are those with weights; with ``--ranked blocks``
only the blocks whose number SAFER draws (2-6) are ranked: vanilla's hidden Dense layers, the
residual blocks, the transformer's attention and feed-forward sublayers (not the stem, the
embedding, the layer norms or the head), as the same records scored again.

Ground truth, per model and per perturbation row (pepper / Gaussian / Dirac, on the weights or
on the activations of one layer at a time): the accuracy drop on 1,000 test points, averaged
over 3 strengths x ``--repeats`` random draws (pepper: zero 25/50/75% of the weights, or of the
units; Gaussian: sigma = 0.25/0.5/1 x max|w| (or max|a|); Dirac: add +-max|w| (max|a|) to
10/25/50% of the entries). Layers are ordered by that mean drop in steps of 0.5 points (closer
drops are ties), ties broken by the mean change of the output ``E|f_eps - f|`` (SAFER eq. 1).
How reproducible that is: the draws are split in two halves and the half-size ground truths
are compared with each other (``ground_truth_redraw``, a rough ceiling for any criterion).
A second reference ignores the model: ``input_first`` ranks the layers from the input to the
output (what the networks' structure alone scores on the metric).

Each criterion x reduction ranks the layers from 256 calibration points (unlabelled: targets
are the model's predictions); its score on a row is the share of models whose full ranking is
exactly right (SAFER's metric), beside mean Spearman and Kendall correlations.

Run::

    nice -n 10 python benchmarks/layer_ranking.py                 # 100 models per family
    python benchmarks/layer_ranking.py --quick                    # 3 models per family
    python benchmarks/layer_ranking.py --models-per-family 20 --families vanilla skip
    python benchmarks/layer_ranking.py --rescore RECORDS --ranked blocks --stem layer_ranking_blocks

Writes ``benchmarks/results/layer_ranking.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, machine, markdown_table, write_results  # noqa: E402

FAMILIES = ("vanilla", "skip", "skip_sd", "transformer")
NOISES = ("pepper", "gaussian", "dirac")
TARGETS = ("weights", "activations")
STRENGTHS = {"pepper": (0.25, 0.5, 0.75), "gaussian": (0.25, 0.5, 1.0), "dirac": (0.1, 0.25, 0.5)}
#: Mean accuracy drops closer than this count as equal (then the output change orders them).
TIE = 0.005
#: Options that keep the criteria cheap enough for hundreds of models.
OPTIONS = {"integrated_gradients": {"steps": 8}, "idgi": {"steps": 8}, "guided_ig": {"steps": 8},
           "shapley": {"permutations": 4, "samples": 32}, "fit": {"samples": 64}}
GROUND_TRUTH = {"accuracy": "mean accuracy drop (0.5-point steps), ties by mean output change",
                "output": "mean output change E|f_eps - f| (SAFER eq. 1)"}
#: Pseudo-criterion: the ground truth of one half of the draws ranking against the other half's
#: (how reproducible a half-size ground truth is: a rough ceiling for any criterion).
GT_CHECK = "ground_truth_redraw"
#: Pseudo-criterion that ignores the model: layers from the input to the output (how far the
#: network's structure alone gets on the exact-order metric).
INPUT_FIRST = "input_first"
#: ``--ranked blocks``: per family, the name prefixes of the layers SAFER's draw of 2-6 blocks
#: makes (what is ranked then; see :func:`build`).
BLOCKS = {"vanilla": ("dense",), "skip": ("block",), "skip_sd": ("block",), "transformer": ("attn", "ffn")}
RANKED = {"weighted": "every layer with weights", "blocks": "the 2-6 drawn blocks only (" + "; ".join(
    f"{f}: {', '.join(p + '*' for p in pre)}" for f, pre in BLOCKS.items()) + ")"}
#: Reference columns: reported beside the criteria, never counted as the best criterion.
REFERENCES = (INPUT_FIRST, GT_CHECK)
REDUCTIONS = ("mean", "l1", "l2", "linf", "p50", "p90", "p99")
CRITERIA = ("slice", "weight", "gradient", "weight_x_gradient", "gradcam_pp", "integrated_gradients",
            "guided_ig", "idgi", "smoothgrad", "vargrad", "hsic", "fit", "shapley", "taylor", "apoz")

#: SAFER Table 1 (linf): family -> row -> criterion -> % exactly right rankings.
SAFER_COLUMNS = ("weight", "gradient", "weight_x_gradient", "gradcam_pp", "integrated_gradients",
                 "guided_ig", "idgi", "smoothgrad", "vargrad", "hsic")
SAFER_TABLE1 = {
    ("vanilla", "pepper", "weights"): (25, 76, 76, 76, 59, 49, 71, 71, 28, 38),
    ("vanilla", "gaussian", "weights"): (42, 68, 68, 68, 59, 56, 66, 66, 36, 47),
    ("vanilla", "dirac", "weights"): (32, 60, 60, 33, 41, 60, 48, 60, 43, 60),
    ("vanilla", "pepper", "activations"): (82, 82, 82, 33, 67, 78, 78, 53, 29, 77),
    ("vanilla", "gaussian", "activations"): (82, 82, 82, 33, 67, 78, 78, 53, 29, 63),
    ("vanilla", "dirac", "activations"): (82, 82, 82, 33, 67, 77, 77, 55, 28, 49),
    ("skip", "pepper", "weights"): (46, 47, 43, 64, 44, 43, 47, 52, 77, 28),
    ("skip", "gaussian", "weights"): (23, 31, 32, 71, 27, 33, 28, 28, 39, 34),
    ("skip", "dirac", "weights"): (30, 30, 32, 72, 28, 31, 27, 31, 47, 16),
    ("skip_sd", "pepper", "weights"): (42, 42, 42, 25, 41, 42, 42, 17, 10, 22),
    ("skip_sd", "gaussian", "weights"): (21, 24, 24, 53, 23, 23, 22, 22, 32, 40),
    ("skip_sd", "dirac", "weights"): (20, 21, 17, 47, 19, 19, 20, 20, 29, 12),
    ("transformer", "pepper", "weights"): (0, 0, 0, 22, 0, 0, 0, 6, 12, 0),
    ("transformer", "gaussian", "weights"): (1, 1, 1, 10, 0, 1, 1, 18, 12, 7),
    ("transformer", "dirac", "weights"): (0, 0, 0, 7, 0, 0, 0, 5, 14, 0),
}
SAFER_TABLE2 = {"mean": 37.086, "best percentile": 38.636, "l1": 36.109, "l2": 38.234, "linf": 39.809}


def safer_rows(family):
    """The (noise, target) rows SAFER reports for a family."""
    return [(n, t) for (f, n, t) in SAFER_TABLE1 if f == family]


def safer_family_best(family):
    """SAFER's best criterion of a family averaged over its rows, and its best single cell."""
    rows = [SAFER_TABLE1[(family, n, t)] for n, t in safer_rows(family)]
    means = np.mean(rows, axis=0)
    j = int(np.argmax(means))
    return float(means[j]), SAFER_COLUMNS[j], int(np.max(rows))


# --------------------------------------------------------------------------- model zoo
def _stochastic_depth_class():
    import keras

    @keras.saving.register_keras_serializable(package="benchmarks")
    class StochasticDepth(keras.layers.Layer):
        """Drops the whole residual branch of a sample with probability ``rate`` while training
        (scaled by 1/(1-rate), as drop-path does); identity at inference."""

        def __init__(self, rate, **kw):
            super().__init__(**kw)
            self.rate = float(rate)
            self.seed = keras.random.SeedGenerator(0)

        def call(self, x, training=None):
            if not training or self.rate == 0:
                return x
            keep = 1.0 - self.rate
            shape = (keras.ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
            mask = keras.ops.cast(keras.random.uniform(shape, seed=self.seed) < keep, x.dtype)
            return x * mask / keep

        def get_config(self):
            return {**super().get_config(), "rate": self.rate}

    return StochasticDepth


def build(family, rng):
    """A fresh model of ``family`` with depth and widths drawn from ``rng``; returns
    ``(model, description)``."""
    import keras
    from keras import layers as L

    n = int(rng.integers(2, 7))
    inp = keras.Input((2,), name="x")
    if family == "vanilla":
        widths = [int(w) for w in rng.integers(8, 129, n)]
        h = inp
        for i, w in enumerate(widths):
            h = L.Dense(w, activation="relu", name=f"dense{i}")(h)
        desc = {"blocks": n, "widths": widths}
    elif family in ("skip", "skip_sd"):
        w = int(rng.integers(8, 129))
        h = L.Dense(w, activation="relu", name="stem")(inp)
        sd = _stochastic_depth_class() if family == "skip_sd" else None
        for i in range(n):
            b = L.Dense(w, activation="relu", name=f"block{i}")(h)
            if sd is not None:
                b = sd(0.5 * (i + 1) / n, name=f"drop{i}")(b)
            h = L.Add(name=f"add{i}")([h, b])
        desc = {"blocks": n, "width": w}
    elif family == "transformer":
        d = int(rng.integers(4, 65)) * 2
        h = L.Reshape((2, 1), name="tokens")(inp)
        h = L.Dense(d, name="embed")(h)
        for i in range(n):
            if i % 2 == 0:
                a = L.MultiHeadAttention(2, max(d // 2, 1), name=f"attn{i}")(h, h)
                h = L.LayerNormalization(name=f"norm{i}")(L.Add(name=f"add{i}")([h, a]))
            else:
                f = L.Dense(d, activation="relu", name=f"ffn{i}")(h)
                h = L.Add(name=f"add{i}")([h, f])
        h = L.Flatten(name="flat")(h)
        desc = {"sublayers": n, "width": d}
    else:
        raise ValueError(family)
    out = L.Dense(2, name="head")(h)
    return keras.Model(inp, out, name=family), desc


def moons(seed):
    from sklearn.datasets import make_moons

    x, y = make_moons(3256, noise=0.1, random_state=seed)
    x = ((x - x.mean(0)) / x.std(0)).astype("float32")
    return (x[:2000], y[:2000]), (x[2000:3000], y[2000:3000]), x[3000:]


def train(family, seed, max_tries=5):
    """Train one model (redrawing architectures below 95% test accuracy)."""
    import keras

    rng = np.random.default_rng(seed)
    (xtr, ytr), (xte, yte), xcal = moons(seed)
    for attempt in range(max_tries):
        keras.utils.set_random_seed(seed * 100 + attempt)
        model, desc = build(family, rng)
        model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(xtr, ytr, epochs=6, batch_size=128, verbose=0)
        acc = float(np.mean(np.argmax(np.asarray(model(xte, training=False)), 1) == yte))
        if acc >= 0.95:
            return model, desc, acc, attempt, (xte, yte), xcal
    return model, desc, acc, attempt, (xte, yte), xcal


# --------------------------------------------------------------------------- ground truth
def _perturbed(noise, s, arr, scale, rng, structured=False):
    """``arr`` with one perturbation: a multiplicative mask and/or an additive term."""
    if noise == "pepper":
        if structured:  # zero a fraction of units (last axis), the same for every sample
            keep = (rng.random(arr.shape[-1]) >= s).astype(arr.dtype)
            return arr * keep
        return arr * (rng.random(arr.shape) >= s).astype(arr.dtype)
    if noise == "gaussian":
        return arr + rng.normal(0.0, s * scale, arr.shape).astype(arr.dtype)
    hit = rng.random(arr.shape) < s
    return arr + (hit * rng.choice([-1.0, 1.0], arr.shape) * scale).astype(arr.dtype)


def ground_truth(model, xte, yte, repeats, seed):
    """``{(noise, target): (drop, change)}``: per layer, the accuracy drop and the mean
    |output change| of each half of the draws (shape ``(2, layers)``; repeat r goes to half
    r % 2), averaged over strengths."""
    import tensorflow as tf

    from analyses.layer_importance import _context, _evaluate

    rng = np.random.default_rng(seed)
    ctx = _context(model, xte, yte, seed)
    clean = _evaluate(ctx).numpy()
    base = np.mean(clean.argmax(1) == yte)
    run = tf.function(lambda values: _evaluate(ctx, values))
    names = list(ctx.index)
    half = np.arange(repeats) % 2
    counts = np.array([np.sum(half == h) for h in (0, 1)])[:, None] * 3
    result = {}
    for noise in NOISES:  # weights: one compiled pass per draw
        drop = np.zeros((2, len(names)))
        change = np.zeros((2, len(names)))
        for li, name in enumerate(names):
            idx = ctx.index[name]
            w = [ctx.values[i].numpy() for i in idx]
            scale = max(float(np.max(np.abs(a))) for a in w)
            for s in STRENGTHS[noise]:
                for r in range(repeats):
                    values = list(ctx.values)
                    for i, a in zip(idx, w):
                        values[i] = tf.constant(_perturbed(noise, s, a, scale, rng))
                    out = run(values).numpy()
                    drop[half[r], li] += base - np.mean(out.argmax(1) == yte)
                    change[half[r], li] += np.mean(np.abs(out - clean))
        result[(noise, "weights")] = (drop / counts, change / counts)
    seen = {}

    def record(name, out):
        seen[name] = out.numpy()
        return out

    _evaluate(ctx, hook=record)
    n = len(yte)
    for noise in NOISES:  # activations: every draw of a layer in one batched pass
        drop = np.zeros((2, len(names)))
        change = np.zeros((2, len(names)))
        for li, name in enumerate(names):
            act = seen[name]
            scale = float(np.max(np.abs(act)))
            variants = [_perturbed(noise, s, act, scale, rng, structured=True)
                        for s in STRENGTHS[noise] for _ in range(repeats)]
            big = tf.constant(np.concatenate(variants))
            xs = tf.tile(ctx.x, [len(variants), 1])
            out = _evaluate(ctx, hook=lambda nm, o, name=name: big if nm == name else o, x=xs).numpy()
            out = out.reshape(len(variants), n, -1)
            acc = np.mean(out.argmax(2) == yte[None], axis=1)
            ch = np.mean(np.abs(out - clean[None]), axis=(1, 2))
            which = np.tile(half, len(STRENGTHS[noise]))
            for h in (0, 1):
                drop[h, li] = np.mean(base - acc[which == h])
                change[h, li] = np.mean(ch[which == h])
        result[(noise, "activations")] = (drop, change)
    return names, result


def true_order(drop, change, by="accuracy"):
    """Layer indices from the most to the least important: by mean accuracy drop (in steps of
    :data:`TIE`), then by mean output change; or (``by="output"``) by the output change alone,
    SAFER's eq. 1."""
    if by == "output":
        return np.argsort(-np.asarray(change), kind="stable")
    return np.lexsort((-np.asarray(change), -np.round(np.asarray(drop) / TIE)))


# --------------------------------------------------------------------------- criteria
def criterion_layer_scores(model, xcal, seed):
    """``{criterion: {reduction: [score per layer]}}`` and seconds per criterion."""
    from analyses.layer_importance import CRITERIA as REGISTRY
    from analyses.layer_importance import _context, reduce_scores
    from nnslicer.errors import UnsupportedLayerError

    ctx = _context(model, xcal, None, seed)
    out, seconds = {}, {}
    for c in CRITERIA:
        start = time.perf_counter()
        try:
            fine = REGISTRY[c](ctx, **OPTIONS.get(c, {}))
        except UnsupportedLayerError:
            continue
        seconds[c] = time.perf_counter() - start
        out[c] = {}
        for r in REDUCTIONS:
            red, q = ("percentile", float(r[1:])) if r.startswith("p") else (r, None)
            out[c][r] = list(reduce_scores(fine, red, q).values())
    return out, seconds


def predicted_order(scores):
    """Layer indices by score, highest first (ties keep model order)."""
    return np.lexsort((np.arange(len(scores)), -np.asarray(scores, dtype=np.float64)))


# --------------------------------------------------------------------------- one model
def run_model(job):
    family, seed, repeats = job
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if family == "skip_sd":  # stochastic depth is the identity at inference: let nnslicer lift it
        from nnslicer import register_layer
        register_layer("StochasticDepth", lambda layer, ctx: [ctx.op("identity", layer=layer)], replace=True)
    t0 = time.perf_counter()
    model, desc, acc, retries, (xte, yte), xcal = train(family, seed)
    t1 = time.perf_counter()
    names, truth = ground_truth(model, xte, yte, repeats, seed)
    t2 = time.perf_counter()
    scores, seconds = criterion_layer_scores(model, xcal, seed)
    t3 = time.perf_counter()
    return {"family": family, "seed": seed, "repeats": repeats, "desc": desc, "test_accuracy": acc, "retries": retries,
            "layers": names,
            "truth": {f"{n}/{t}": {"drop": d.mean(0).tolist(), "change": c.mean(0).tolist()}
                      for (n, t), (d, c) in truth.items()},
            "truth_halves": {f"{n}/{t}": {"drop": d.tolist(), "change": c.tolist()}
                             for (n, t), (d, c) in truth.items()},
            "scores": scores, "criterion_seconds": seconds,
            "seconds": {"train": t1 - t0, "ground_truth": t2 - t1, "criteria": t3 - t2}}


# --------------------------------------------------------------------------- scoring
def blocks_only(rec):
    """``rec`` with its ground truths and scores restricted to the family's drawn blocks
    (:data:`BLOCKS`), in model order."""
    keep = [i for i, name in enumerate(rec["layers"]) if name.startswith(BLOCKS[rec["family"]])]

    def pick(values):
        return [values[i] for i in keep]

    out = dict(rec, layers=pick(rec["layers"]))
    out["truth"] = {row: {k: pick(v) for k, v in t.items()} for row, t in rec["truth"].items()}
    out["truth_halves"] = {row: {k: [pick(h) for h in v] for k, v in t.items()}
                           for row, t in rec["truth_halves"].items()}
    out["scores"] = {c: {r: pick(s) for r, s in by.items()} for c, by in rec["scores"].items()}
    return out


def evaluate(records, combined_members, group=lambda rec: rec["family"], by="accuracy"):
    """Per group (default: family), row, criterion, reduction: exact share, Spearman, Kendall."""
    from scipy.stats import kendalltau, spearmanr

    from analyses.layer_importance import combine

    table = {}
    for rec in records:
        scores = dict(rec["scores"])
        members = [m.partition("/") for m in combined_members if m.partition("/")[0] in scores]
        # one ranking, each member with its own reduction (linf when none is named), filed under linf
        scores["combined"] = {"linf": list(combine([dict(enumerate(scores[c][r or "linf"]))
                                                    for c, _, r in members]).values())}
        scores[INPUT_FIRST] = {"linf": [-float(i) for i in range(len(rec["layers"]))]}
        for row, t in rec["truth"].items():
            order = true_order(t["drop"], t["change"], by)
            halves = rec["truth_halves"][row]
            first, second = (true_order(halves["drop"][h], halves["change"][h], by) for h in (0, 1))
            scores.setdefault(GT_CHECK, {})[row] = -np.argsort(first).astype(float)  # higher = more important
            for c, by_red in scores.items():
                if c == GT_CHECK:  # one half of the draws "predicting" the other half
                    by_red = {"linf": by_red[row]}
                    order_c = second
                else:
                    order_c = order
                rank_c = np.empty(len(order_c)); rank_c[order_c] = np.arange(len(order_c))
                for r, s in by_red.items():
                    pred = predicted_order(s)
                    rank_pred = np.empty(len(pred)); rank_pred[pred] = np.arange(len(pred))
                    cell = table.setdefault((group(rec), row, c, r), [[], [], []])
                    cell[0].append(float(np.array_equal(pred, order_c)))
                    cell[1].append(float(spearmanr(rank_c, rank_pred)[0]))
                    cell[2].append(float(kendalltau(rank_c, rank_pred)[0]))
    return {k: (100 * float(np.mean(v[0])), float(np.nanmean(v[1])), float(np.nanmean(v[2])), len(v[0]))
            for k, v in table.items()}


def combined_metric(records, members, by="accuracy"):
    """(% exactly right, mean Spearman) of the rank average of ``members`` ("criterion/reduction",
    linf when no reduction is named) over SAFER's rows of each record's family."""
    from scipy.stats import spearmanr

    from analyses.layer_importance import combine

    exact, rho = [], []
    for rec in records:
        parts = [(m.partition("/")[0], m.partition("/")[2] or "linf") for m in members
                 if m.partition("/")[0] in rec["scores"]]
        if parts:
            s = list(combine([dict(enumerate(rec["scores"][c][r])) for c, r in parts]).values())
        else:
            s = [0.0] * len(rec["layers"])
        pred = predicted_order(s)
        rank_pred = np.argsort(pred)
        for n, t in safer_rows(rec["family"]):
            truth = rec["truth"][f"{n}/{t}"]
            order = true_order(truth["drop"], truth["change"], by)
            exact.append(float(np.array_equal(pred, order)))
            rho.append(float(spearmanr(np.argsort(order), rank_pred)[0]))
    return 100 * float(np.mean(exact)), float(np.nanmean(rho))


def select_combined(records, by="accuracy", most=5):
    """Greedy forward selection of "criterion/reduction" members by mean Spearman on the
    records of even seeds; returns the members and their scores on even and odd seeds."""
    even = [r for r in records if r["seed"] % 2 == 0]
    odd = [r for r in records if r["seed"] % 2 == 1]
    candidates = sorted({f"{c}/{r}" for rec in records for c in rec["scores"] for r in REDUCTIONS})
    chosen, best, steps = [], -np.inf, []
    for _ in range(most):
        score, pick = max((combined_metric(even, chosen + [c], by)[1], c) for c in candidates if c not in chosen)
        if score <= best + 1e-3:
            break
        best = score
        chosen.append(pick)
        steps.append({"members": list(chosen), "even_seeds": combined_metric(even, chosen, by),
                      "odd_seeds": combined_metric(odd, chosen, by)})
    return chosen, steps


def summarize(cells, families):
    """Best criterion x reduction per family over SAFER's rows of that family."""
    summary, best = {}, {}
    for fam in families:
        rows = [f"{n}/{t}" for n, t in safer_rows(fam)]
        combos = sorted({(c, r) for (f, row, c, r) in cells if f == fam and c not in REFERENCES})
        avg = {k: np.mean([cells[(fam, row, *k)][0] for row in rows if (fam, row, *k) in cells])
               for k in combos}
        (c, r), v = max(avg.items(), key=lambda kv: kv[1])
        cell_best = max(cells[(fam, row, c2, r2)][0] for (c2, r2) in combos for row in rows
                        if (fam, row, c2, r2) in cells)
        linf = {k: v2 for k, v2 in avg.items() if k[1] == "linf" and k[0] != "combined"}
        (cl, _), vl = max(linf.items(), key=lambda kv: kv[1])
        summary[f"{fam}_best_exact"] = round(float(v), 2)
        summary[f"{fam}_best_criterion"] = c if c == "combined" else f"{c}/{r}"
        summary[f"{fam}_best_linf_exact"] = round(float(vl), 2)
        summary[f"{fam}_best_linf_criterion"] = cl
        summary[f"{fam}_best_single_cell"] = round(float(cell_best), 2)
        for ref in REFERENCES:
            summary[f"{fam}_{ref}_exact"] = round(float(np.mean(
                [cells[(fam, row, ref, "linf")][0] for row in rows if (fam, row, ref, "linf") in cells])), 2)
        best[fam] = avg
    return summary, best


def markdown(summary, cells, families, records, args, elapsed, combined_members):
    fam_names = {"vanilla": "Vanilla", "skip": "skip", "skip_sd": "skip+SD", "transformer": "transfo"}
    lines = ["# Layer ranking on SAFER's make_moons test bed\n",
             f"Machine: {machine()}  ",
             f"Command: `{summary['command'].replace(shlex.quote(args.note), '...') if args.note else summary['command']}`"
             + (" (the note: see below)  " if args.note else "  "),
             f"Models per family: {args.models_per_family}; repeats per perturbation strength: "
             f"{args.repeats}; " + (f"wall time {elapsed / 60:.1f} min with {args.workers} worker process(es). "
                                     if elapsed and not args.rescore else
                                     f"recorded run time {elapsed / 60:.1f} min (see the note). " if elapsed
                                     else "wall time: see below. ") +
             f"'combined' = mean rank of {', '.join(combined_members)} (each member with its own "
             "reduction; shown in the linf tables).  ",
             f"Ground truth: {GROUND_TRUTH[args.truth]}. Ranked: {RANKED[args.ranked]}.  ",
             "Criterion options (else the library defaults): "
             + "; ".join(f"{c} {o}" for c, o in OPTIONS.items()) + ". Calibration: 256 unlabelled "
             "points; perturbations measured on 1,000 test points.  ",
             f"{args.note}\n",
             "## Summary: best criterion per family (mean over SAFER's rows of that family)\n"]
    rows = []
    for fam in families:
        safer_avg, safer_name, safer_cell = safer_family_best(fam)
        rows.append([fam_names[fam], f"{summary[f'{fam}_best_exact']:.1f} ({summary[f'{fam}_best_criterion']})",
                     f"{summary[f'{fam}_best_linf_exact']:.1f} ({summary[f'{fam}_best_linf_criterion']}/linf)",
                     f"{summary[f'{fam}_best_single_cell']:.1f}",
                     f"{summary[f'{fam}_{INPUT_FIRST}_exact']:.1f}",
                     f"{summary[f'{fam}_{GT_CHECK}_exact']:.1f}",
                     f"{safer_avg:.1f} ({safer_name}/linf)", f"{safer_cell}"])
    lines.append(markdown_table(["family", "ours: best (criterion/reduction)", "ours: best single criterion with linf",
                                 "ours: best single cell", "input first (no model)", "ground truth redrawn (ceiling)",
                                 "SAFER: best (criterion)", "SAFER: best single cell"],
                                rows))
    crits = sorted({c for (_, _, c, _) in cells}, key=lambda c: (CRITERIA + ("combined",) + REFERENCES).index(c))
    lines.append("\n## Table 1 analogue: % exactly right rankings with linf (SAFER's number after the slash)\n")
    t1 = []
    for fam in families:
        for noise in NOISES:
            for target in TARGETS:
                row = f"{noise}/{target}"
                safer = SAFER_TABLE1.get((fam, noise, target))
                cells_row = []
                for c in crits:
                    v = cells.get((fam, row, c, "linf"))
                    txt = "-" if v is None else f"{v[0]:.0f}"
                    if safer is not None and c in SAFER_COLUMNS:
                        txt += f" / {safer[SAFER_COLUMNS.index(c)]}"
                    cells_row.append(txt)
                t1.append([fam_names[fam], row] + cells_row)
    lines.append(markdown_table(["family", "perturbation"] + crits, t1))
    lines.append("\n## Mean Spearman / Kendall with linf, all rows of a family\n")
    t3 = []
    for fam in families:
        for c in crits:
            vals = [cells[k] for k in cells if k[0] == fam and k[2] == c and k[3] == "linf"]
            if vals:
                t3.append([fam_names[fam], c, float(np.mean([v[0] for v in vals])),
                           float(np.mean([v[1] for v in vals])), float(np.mean([v[2] for v in vals]))])
    lines.append(markdown_table(["family", "criterion", "exact % (all 6 rows)", "Spearman", "Kendall"], t3))
    lines.append("\n## Exact share by number of ranked layers (mean over SAFER's rows of the family)\n")
    depth = evaluate(records, combined_members, group=lambda rec: (rec["family"], len(rec["layers"])),
                     by=args.truth)
    t4 = []
    for fam in families:
        c, _, r = summary[f"{fam}_best_criterion"].partition("/")
        best = (c, r or "linf")
        rows = [f"{n}/{t}" for n, t in safer_rows(fam)]
        for n in sorted({k[0][1] for k in depth if k[0][0] == fam}):
            def share(c, r):
                return float(np.mean([depth[((fam, n), row, c, r)][0] for row in rows]))
            t4.append([fam_names[fam], n, depth[((fam, n), rows[0], best[0], best[1])][3],
                       share(*best), share(GT_CHECK, "linf")])
    lines.append(markdown_table(["family", "ranked layers", "models", "best criterion (as above)",
                                 "ground truth redrawn"], t4))
    lines.append("\n## Table 2 analogue: % exactly right per reduction, averaged over criteria and all rows\n")
    t2 = []
    for r in REDUCTIONS:
        vals = [v[0] for k, v in cells.items() if k[3] == r and k[2] not in ("combined",) + REFERENCES]
        t2.append([r, float(np.mean(vals))])
    pct = [float(np.mean([v[0] for k, v in cells.items() if k[3] == r and k[2] not in ("combined",) + REFERENCES]))
           for r in REDUCTIONS if r.startswith("p")]
    t2.append(["best percentile", max(pct)])
    lines.append(markdown_table(["reduction", "ours"], t2))
    lines.append("\nSAFER Table 2: " + ", ".join(f"{k} {v}" for k, v in SAFER_TABLE2.items()) + ".\n")
    secs = {}
    for rec in records:
        for c, s in rec["criterion_seconds"].items():
            secs.setdefault(c, []).append(s)
    lines.append("## Mean seconds per model\n")
    lines.append(markdown_table(["what", "seconds"],
                                [[k, float(np.mean([r["seconds"][k] for r in records]))]
                                 for k in ("train", "ground_truth", "criteria")]
                                + [[f"criterion {c}", float(np.mean(v))] for c, v in secs.items()]))
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models-per-family", type=int, default=100)
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--repeats", type=int, default=4,
                   help="random draws per perturbation strength (split in two halves for the ceiling)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--quick", action="store_true", help="3 models per family, 1 repeat")
    p.add_argument("--out", default=RESULTS)
    p.add_argument("--stem", default="layer_ranking")
    p.add_argument("--records", default=os.path.join(tempfile.gettempdir(), "nnslicer-layer-ranking-records.jsonl"),
                   help="where to keep every model's raw scores and ground truth (JSON lines)")
    p.add_argument("--resume", action="store_true",
                   help="append to --records, running only the models it does not hold yet")
    p.add_argument("--rescore", metavar="RECORDS", help="score saved records (JSON lines) instead of running models")
    p.add_argument("--truth", default="accuracy", choices=("accuracy", "output"),
                   help="ground truth: accuracy drop (ties by output change), or output change alone "
                        "(SAFER eq. 1)")
    p.add_argument("--ranked", default="weighted", choices=tuple(RANKED),
                   help="rank every layer with weights (default), or only the 2-6 drawn blocks")
    p.add_argument("--select-combined", action="store_true",
                   help="choose members for 'combined' greedily on even seeds (scored on odd seeds)")
    p.add_argument("--note", default="", help="a line for the report's header")
    p.add_argument("--combined", nargs="+", metavar="CRITERION[/REDUCTION]",
                   help="members of the 'combined' criterion (default: "
                        "analyses.layer_importance.DEFAULT_COMBINED)")
    args = p.parse_args(argv)
    if args.quick:
        args.models_per_family, args.repeats = 3, 2
    from analyses.layer_importance import DEFAULT_COMBINED

    members = tuple(args.combined) if args.combined else DEFAULT_COMBINED
    if args.rescore:  # score saved records again (e.g. another combination) without recomputing
        with open(args.rescore) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        records = [r for r in lines if "family" in r and r["family"] in args.families]
        args.families = [f for f in args.families if any(r["family"] == f for r in records)]
        elapsed = sum(r.get("elapsed", 0.0) for r in lines if "family" not in r)
        args.models_per_family = max(sum(r["family"] == f for r in records) for f in args.families)
        args.repeats = records[0]["repeats"]
    else:
        records = []
        if args.resume and os.path.exists(args.records):  # keep the models already run, run the rest
            with open(args.records) as f:
                records = [r for r in map(json.loads, filter(str.strip, f))
                           if r.get("family") in args.families and r["seed"] < args.models_per_family
                           and r["repeats"] == args.repeats]
        done = {(r["family"], r["seed"]) for r in records}
        jobs = [(fam, seed, args.repeats) for seed in range(args.models_per_family) for fam in args.families
                if (fam, seed) not in done]
        start = time.perf_counter()
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover
            def tqdm(it, **kw):
                return it
        with open(args.records, "a" if args.resume else "w") as log:  # one JSON line per model, as they finish
            if args.workers > 1:
                import multiprocessing as mp

                with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=25) as pool:
                    for rec in tqdm(pool.imap_unordered(run_model, jobs), total=len(jobs), file=sys.stderr):
                        records.append(rec)
                        log.write(json.dumps(rec) + "\n")
                        log.flush()
            else:
                for job in tqdm(jobs, file=sys.stderr):
                    records.append(run_model(job))
                    log.write(json.dumps(records[-1]) + "\n")
            elapsed = time.perf_counter() - start
            log.write(json.dumps({"elapsed": elapsed}) + "\n")
    if args.ranked == "blocks":
        records = [blocks_only(r) for r in records]
    cells = evaluate(records, members, by=args.truth)
    summary, _ = summarize(cells, args.families)
    slice_sp = [v[1] for k, v in cells.items() if k[2] == "slice" and k[3] == "linf"]
    summary.update({
        "slice_mean_spearman": round(float(np.mean(slice_sp)), 4) if slice_sp else None,
        "slice_mean_spearman_by_reduction": {
            r: round(float(np.mean([v[1] for k, v in cells.items() if k[2] == "slice" and k[3] == r])), 4)
            for r in REDUCTIONS if any(k[2] == "slice" and k[3] == r for k in cells)},
        "mean_spearman_linf": {
            c: round(float(np.mean([v[1] for k, v in cells.items() if k[2] == c and k[3] == "linf"])), 4)
            for c in CRITERIA + ("combined",) + REFERENCES if any(k[2] == c and k[3] == "linf" for k in cells)},
        "models_per_family": args.models_per_family,
        "ground_truth": GROUND_TRUTH[args.truth],
        "ranked": RANKED[args.ranked],
        "repeats": args.repeats,
        "combined_members": list(members),
        "mean_test_accuracy": {f: float(np.mean([r["test_accuracy"] for r in records if r["family"] == f]))
                               for f in args.families},
        "redrawn_models": int(sum(r["retries"] for r in records)),
        "wall_seconds": round(elapsed, 1),
        "workers": None if args.rescore else args.workers,
        "machine": machine(),
        "command": shlex.join(["python", "benchmarks/layer_ranking.py"] + (argv if argv is not None else sys.argv[1:])),
        "safer_best_per_family": {f: safer_family_best(f) for f in args.families},
    })
    if args.select_combined:
        chosen, steps = select_combined(records, args.truth)
        summary["combined_selection"] = steps
        print("greedy selection on even seeds:", json.dumps(steps, indent=1), file=sys.stderr)
    held = [r for r in records if r["seed"] % 2 == 1]  # linf for members without a reduction
    summary["combined_odd_seeds"] = {
        f: dict(zip(("exact_pct", "spearman"), combined_metric([r for r in held if r["family"] == f], members,
                                                                args.truth)))
        for f in args.families if any(r["family"] == f for r in held)}
    data = {"summary": summary,
            "cells": [{"family": f, "row": row, "criterion": c, "reduction": r, "exact_pct": v[0],
                       "spearman": v[1], "kendall": v[2], "models": v[3]}
                      for (f, row, c, r), v in sorted(cells.items())],
            "models": [{k: rec[k] for k in ("family", "seed", "desc", "test_accuracy", "layers", "seconds")}
                       for rec in records]}
    write_results(args.out, args.stem, data, markdown(summary, cells, args.families, records, args, elapsed, members))
    return 0


if __name__ == "__main__":
    sys.exit(main())
