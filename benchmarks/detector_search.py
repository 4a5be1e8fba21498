"""The search for the best honest slice-based detector (issue 20, item 2).

On the honest protocol of ``adversarial.py`` (same models, attacks, fit and test sets), each
input is sliced once per slicer (channel granularity with the global and with the class
baseline, element granularity; its predicted class as the criterion) and read once (every
weighted op's activations); then every candidate feature set is scored by the same classifier
detector (a random forest on clean fit samples labelled by class; the score is the margin of
the model's class, :class:`analyses.adversarial.SliceDetector`'s own scorer):

* ``slice/stage-k``: the channel-pair counts of one stage's largest conv (``-1`` the paper's);
* ``slice/stages``: those of every stage at once (stages of at most ``MAX_PAIRS`` pairs);
* ``slice/neurons``: per output channel, the counts of every weighted op but the logits;
* ``.../share``: each op's counts divided by its sum of |count| (count normalisation);
* ``slice-element/...``: element-granularity neuron counts of the last two stages' outputs;
* ``slice-class/...``: the class baseline (the authors' way: each class's own means);
* ``slice+fm/...``: slices beside feature maps; ``mahalanobis/slice-...``: Lee et al.'s
  detector on slice counts; ``ensemble/...``: the mean of members' percentiles among their
  held-out clean scores;
* references: ``fm/stage-2`` (FeatureMap at the library's default layer), ``fm/pooled`` (every
  op's channel means) and ``mahalanobis/penultimate`` (Lee et al.).

The AUROC of each attack (adversarial examples against their own clean sources) and the F1 at
a 10% held-out false-alarm rate are averaged over the attacks (and over ``--seeds`` forests).
Inputs' slices and activations are cached in the temp folder (``--cache``), so a rerun only
refits the forests. Writes ``results/detector_search.{json,md}``.

Usage::

    python benchmarks/detector_search.py                         # all four models
    python benchmarks/detector_search.py --models lenet/mnist_5k
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time

import numpy as np

from adversarial import ATTACKS, MODELS, make_attacks, scores
from common import RESULTS, load_data, machine, markdown_table, trained_model, write_results

#: Channel-pair counts are kept for the stages with at most this many (ResNet10's last stage
#: has 262,144: its counts enter through the per-channel sums only).
MAX_PAIRS = 70_000
#: Classes of every model here (Fashion-MNIST, MNIST).
CLASSES = 10
#: The false-alarm rate of the F1 column: flag inputs below this quantile of held-out clean scores.
RATE = 0.1


def log(msg):
    print(f"[detector_search] {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def stage_layers(graph):
    """The largest conv of each stage, first stage first (or the last weighted op before the
    logits, for a model without convolutions)."""
    from analyses.adversarial import default_layer

    n = len({graph[o].shape for o in graph.weighted_ops if graph[o].kind in ("conv2d", "depthwise_conv2d")})
    return [default_layer(graph, -k) for k in range(max(n, 1), 0, -1)]


def slice_features(slicer, x, predicted, pairs_of, chunk=256):
    """Per input: the channel-pair counts of the ops ``pairs_of`` and, for every weighted op,
    the counts summed per output channel (the op's last kernel axis)."""
    pairs = {op: [] for op in pairs_of}
    neurons = []
    for start in range(0, len(x), chunk):
        part = slicer.slice_many(x[start:start + chunk], [int(t) for t in predicted[start:start + chunk]])
        for op in pairs_of:
            pairs[op].append(np.stack([s.synapse_counts[op].reshape(-1) for s in part]).astype(np.float32))
        neurons.append(np.stack([np.concatenate([s.synapse_counts[op].reshape(-1, s.synapse_counts[op].shape[-1])
                                                 .sum(0) for op in slicer.graph_.weighted_ops]) for s in part])
                       .astype(np.float32))
        log(f"    sliced {min(start + chunk, len(x))}/{len(x)}")
    widths = np.array([part[0].synapse_counts[op].shape[-1] for op in slicer.graph_.weighted_ops])
    return {op: np.concatenate(v) for op, v in pairs.items()}, np.concatenate(neurons), widths


def element_neurons(slicer, x, predicted, ops, chunk=256):
    """Per input: the element-granularity neuron counts of the outputs of ``ops`` (one number
    per position and channel, as a feature map has)."""
    out = {op: [] for op in ops}
    for start in range(0, len(x), chunk):
        part = slicer.slice_many(x[start:start + chunk], [int(t) for t in predicted[start:start + chunk]])
        for op in ops:
            out[op].append(np.stack([s.neuron_counts[op].reshape(-1) for s in part]).astype(np.float32))
        log(f"    sliced (element) {min(start + chunk, len(x))}/{len(x)}")
    return {op: np.concatenate(v) for op, v in out.items()}


def activation_features(model, graph, x, full_of, batch=256):
    """Per input: every conv's (or weighted op's) channel means, and the full activations of
    the op ``full_of``."""
    import keras

    ops = [o for o in graph.weighted_ops if o != graph.logits]
    tensors = [model.get_layer(graph[o].layer).output for o in ops]
    reader = keras.Model(model.inputs[0], tensors)
    pooled, full = [], []
    for i in range(0, len(x), batch):
        outs = reader(x[i:i + batch], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        outs = [np.asarray(o) for o in outs]
        pooled.append(np.concatenate([o.mean(axis=tuple(range(1, o.ndim - 1))) if o.ndim > 2 else o for o in outs], 1))
        full.append(outs[ops.index(full_of)].reshape(len(outs[0]), -1))
    return np.concatenate(pooled).astype(np.float32), np.concatenate(full).astype(np.float32)


def gather(arch, dataset, epochs, args):
    """Everything the candidates are built from, cached: the model's classes, slices (mean and
    class baseline) and activations of the fit, clean and adversarial inputs."""
    import nnslicer
    from analyses.adversarial import MahalanobisDetector

    path = os.path.join(args.cache, f"nnslicer-detsearch-{arch}-{dataset}-f{args.fit}-c{args.clean}-a{args.art}.npz")
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    (x_tr, y_tr), (x_te, y_te) = load_data(dataset)
    model, info = trained_model(arch, dataset, epochs)
    adv = make_attacks(model, x_te[:args.clean], y_te[:args.clean], list(ATTACKS), args.art)
    graph = nnslicer.lift(model)
    stages = stage_layers(graph)
    stage2 = stages[-2 if len(stages) > 1 else -1]
    out = {"stages": np.array(stages), "weighted_ops": np.array(graph.weighted_ops),
           "y_fit": y_tr[:args.fit], "attack_names": np.array([k for k, a in adv.items() if len(a)])}
    sets = {"fit": x_tr[:args.fit], "clean": x_te[:args.clean]}
    for k, a in adv.items():
        if len(a):
            sets[f"adv_{k}"] = a.x_adv
            out[f"source_{k}"] = a.source_index
    slicers = {"mean": nnslicer.Slicer(model, granularity="channel").fit(x_tr[:args.profile], y_tr[:args.profile])}
    slicers["class"] = nnslicer.Slicer(model, granularity="channel", baseline="class").fit(
        x_tr[:args.profile], y_tr[:args.profile])
    element = nnslicer.Slicer(model).fit(profile=slicers["mean"].profile_)
    maha = MahalanobisDetector(model)  # its features: the penultimate ones, pooled
    for name, x in sets.items():
        predicted = np.asarray(model.predict(x, batch_size=256, verbose=0)).argmax(-1)
        out[f"{name}/predicted"] = predicted
        log(f"  {name}: {len(x)} inputs")
        for base, slicer in slicers.items():  # channel pairs of the stages small enough to keep
            keep = [op for op in (stages if base == "mean" else [stage2])
                    if slicer.graph_[op].n_synapses <= MAX_PAIRS]
            pairs, neurons, out["channels"] = slice_features(slicer, x, predicted, keep)
            out[f"{name}/{base}/neurons"] = neurons
            for op, v in pairs.items():
                out[f"{name}/{base}/pairs/{op}"] = v
        for op, v in element_neurons(element, x, predicted, stages[-2:]).items():
            out[f"{name}/element/{op}"] = v
        out[f"{name}/penultimate"] = maha.features(x).values
        out[f"{name}/fm_pooled"], out[f"{name}/fm_full"] = activation_features(model, graph, x, stage2)
    np.savez(path, **out)
    return out


def candidates(d, name, base="mean"):
    """Candidate name -> feature matrix of the input set ``name``."""
    stages = [op for op in d["stages"] if f"{name}/{base}/pairs/{op}" in d]
    ops, channels = list(d["weighted_ops"]), d["channels"]

    def pairs(op, b=base):
        return d[f"{name}/{b}/pairs/{op}"]

    def share(v):  # each row over its sum of |count|
        total = np.abs(v).sum(1, keepdims=True)
        return v / np.where(total == 0, 1, total)

    # per output channel of every weighted op but the logits (whose counts only say the class
    # sliced for, i.e. the model's prediction: a leak, not a feature)
    bounds = np.cumsum([0, *channels])
    hidden = range(len(ops) - 1)
    neurons = d[f"{name}/{base}/neurons"][:, :bounds[-2]]
    neuron_share = np.concatenate([share(neurons[:, bounds[i]:bounds[i + 1]]) for i in hidden], 1)
    all_pairs = np.concatenate([pairs(op) for op in stages], 1)
    all_pairs_share = np.concatenate([share(pairs(op)) for op in stages], 1)
    all_stages = list(d["stages"])
    element = {f"slice-element/neurons/stage{all_stages.index(op) - len(all_stages)}": d[f"{name}/element/{op}"]
               for op in all_stages[-2:]}
    out = {f"slice/stage{all_stages.index(op) - len(all_stages)}": pairs(op) for op in stages}
    out.update({"slice/stages": all_pairs, "slice/stages/share": all_pairs_share,
                "slice/neurons": neurons, "slice/neurons/share": neuron_share,
                "slice/stages+neurons/share": np.concatenate([all_pairs_share, neuron_share], 1),
                "slice-class/stage-2": pairs(all_stages[-2 if len(all_stages) > 1 else -1], "class"),
                "slice-class/neurons/share": np.concatenate(
                    [share(d[f"{name}/class/neurons"][:, bounds[i]:bounds[i + 1]]) for i in hidden], 1),
                "fm/stage-2": d[f"{name}/fm_full"], "fm/pooled": d[f"{name}/fm_pooled"],
                "slice+fm/neurons/share+pooled": np.concatenate([neuron_share, d[f"{name}/fm_pooled"]], 1),
                "slice+fm/stages/share+stage-2": np.concatenate([all_pairs_share, d[f"{name}/fm_full"]], 1),
                "slice+fm/neurons/share+stage-2": np.concatenate([neuron_share, d[f"{name}/fm_full"]], 1),
                "slice+fm/neurons+stage-2": np.concatenate([neurons, d[f"{name}/fm_full"]], 1),
                **element, "slice-element/neurons/stages-2,-1": np.concatenate(list(element.values()), 1),
                "slice+fm/element-neurons+stage-2": np.concatenate([*element.values(), d[f"{name}/fm_full"]], 1)})
    return out


def forest_scores(fit, y_fit, predicted_fit, tests, seed=0):
    """The SliceDetector scorer (forest margin of the model's class) fit on the correctly
    classified fit rows; returns held-out (out-of-bag) clean scores and the scores of ``tests``."""
    from sklearn.ensemble import RandomForestClassifier

    from analyses.adversarial import class_margin

    keep = y_fit == predicted_fit
    clf = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=-1, oob_score=True)
    clf.fit(fit[keep], y_fit[keep])
    oob = clf.oob_decision_function_  # NaN rows: in every bootstrap sample, no held-out vote
    held_out = np.where(np.isnan(oob).any(1), np.nan,
                        class_margin(np.nan_to_num(oob), clf.classes_, y_fit[keep], CLASSES))
    return held_out, {k: class_margin(clf.predict_proba(x), clf.classes_, p, CLASSES)
                      for k, (x, p) in tests.items()}


def mahalanobis_on(fit, y_fit, predicted_fit, tests):
    """Lee et al.'s detector (:class:`analyses.adversarial.MahalanobisDetector`'s Gaussians and
    score) on the correctly classified fit rows; returns in-sample clean scores and the scores of
    ``tests``."""
    from analyses.adversarial import class_gaussians, mahalanobis_scores

    keep = y_fit == predicted_fit
    gaussians = class_gaussians(fit[keep], y_fit[keep], CLASSES)
    return mahalanobis_scores(fit[keep].astype(np.float64), *gaussians), \
        {k: mahalanobis_scores(x.astype(np.float64), *gaussians) for k, (x, p) in tests.items()}


def percentile(held_out, values):
    """Where ``values`` fall in the held-out clean scores (0: below all of them, 1: above)."""
    ref = np.sort(held_out[~np.isnan(held_out)])
    return np.searchsorted(ref, values, side="right") / len(ref)


def ensemble(parts):
    """The mean of each part's percentile among its own held-out clean scores."""
    held = np.mean([np.where(np.isnan(h), np.nan, percentile(h, h)) for h, _ in parts], axis=0)
    return held, {k: np.mean([percentile(h, out[k]) for h, out in parts], axis=0) for k in parts[0][1]}


#: Score-level ensembles: the mean percentile of their members' scores.
ENSEMBLES = {"ensemble/fm/stage-2+slice/neurons/share": ("fm/stage-2", "slice/neurons/share"),
             "ensemble/fm/stage-2+slice/stages+neurons/share": ("fm/stage-2", "slice/stages+neurons/share"),
             "ensemble/fm/stage-2+mahalanobis/penultimate": ("fm/stage-2", "mahalanobis/penultimate"),
             "ensemble/fm/stage-2+mahalanobis/penultimate+slice/neurons/share":
                 ("fm/stage-2", "mahalanobis/penultimate", "slice/neurons/share")}


def evaluate(model_key, d, pattern=None, seeds=1):
    """One row per candidate (those matching the regular expression ``pattern``): AUROC and F1
    at a 10% false-alarm rate averaged over the attacks (and over ``seeds`` forests)."""
    import re

    rows, results = [], {}
    attacks = list(d["attack_names"])
    sets = ["clean", *(f"adv_{a}" for a in attacks)]
    feats = {s: candidates(d, s) for s in ["fit", *sets]}
    names = list(feats["fit"])
    chosen = [c for c in [*names, "mahalanobis/penultimate", "mahalanobis/slice-neurons-share", *ENSEMBLES]
              if pattern is None or re.search(pattern, c)]
    for cand in chosen:
        start = time.perf_counter()
        runs = []  # (held-out clean scores, test scores) of each seed
        if cand in ENSEMBLES:
            if not all(m in results for m in ENSEMBLES[cand]):
                continue
            runs.append(ensemble([results[m] for m in ENSEMBLES[cand]]))
        elif cand.startswith("mahalanobis"):
            key = "penultimate" if cand.endswith("penultimate") else "slice/neurons/share"
            fit = d["fit/penultimate"] if key == "penultimate" else feats["fit"][key]
            tests = {s: (d[f"{s}/penultimate"] if key == "penultimate" else feats[s][key], d[f"{s}/predicted"])
                     for s in sets}
            runs.append(mahalanobis_on(fit, d["y_fit"], d["fit/predicted"], tests))
        else:
            tests = {s: (feats[s][cand], d[f"{s}/predicted"]) for s in sets}
            runs += [forest_scores(feats["fit"][cand], d["y_fit"], d["fit/predicted"], tests, seed)
                     for seed in range(seeds)]
        results[cand] = runs[0]
        per_seed = []
        for held_out, out in runs:
            threshold = float(np.nanquantile(held_out, RATE))
            per_attack = [scores(out["clean"][d[f"source_{a}"]], out[f"adv_{a}"], threshold) for a in attacks]
            per_seed.append({"auroc": float(np.mean([r["auroc"] for r in per_attack])),
                             "f1_at_10": float(np.mean([r["f1"] for r in per_attack])),
                             "clean_flagged": float(np.mean(out["clean"] < threshold)),
                             # a classifier's own rule: flag where it names another class (margin < 0)
                             "clean_flagged_rule": float(np.mean(out["clean"] < 0)),
                             "per_attack_auroc": {a: r["auroc"] for a, r in zip(attacks, per_attack)}})
        row = {"model": model_key, "candidate": cand,
               "dims": int(feats["fit"][cand].shape[1]) if cand in feats["fit"] else None,
               **{k: float(np.mean([p[k] for p in per_seed]))
                  for k in ("auroc", "f1_at_10", "clean_flagged", "clean_flagged_rule")},
               "auroc_seeds": [p["auroc"] for p in per_seed],
               "per_attack_auroc": per_seed[0]["per_attack_auroc"],
               "seconds": round(time.perf_counter() - start, 1)}
        log(f"  {model_key} {cand}: AUROC {row['auroc']:.3f} (seeds {', '.join(f'{a:.3f}' for a in row['auroc_seeds'])}), "
            f"F1@10% {row['f1_at_10']:.3f}, clean flagged {row['clean_flagged']:.3f} "
            f"(own rule {row['clean_flagged_rule']:.3f})")
        rows.append(row)
    return rows


#: The references a slice-based candidate must beat (feature maps: the library's default layer).
REFERENCES = ("fm/stage-2", "mahalanobis/penultimate")


def summarise(rows):
    """Per slice-based candidate, on how many models its AUROC beats both references by more
    than the spread of its forests' seeds; the best such candidate."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    by = {(r["model"], r["candidate"]): r for r in rows}
    wins = {}
    for cand in dict.fromkeys(r["candidate"] for r in rows):
        if not cand.startswith(("slice", "ensemble")) or "slice" not in cand:
            continue
        count = 0
        for m in models:
            if (m, cand) not in by or not all((m, ref) in by for ref in REFERENCES):
                continue
            r = by[m, cand]
            margin = max(r["auroc_seeds"]) - min(r["auroc_seeds"])
            count += all(r["auroc"] > by[m, ref]["auroc"] + margin for ref in REFERENCES)
        wins[cand] = count
    best = max(wins, key=wins.get) if wins else None
    return {"models": models, "references": list(REFERENCES), "wins_over_references": wins,
            "best_slice_candidate": best, "best_slice_candidate_wins": wins.get(best, 0),
            "models_needed": 3}


def markdown(result):
    rows, s = result["rows"], result["summary"]
    models = s["models"]
    by = {(r["model"], r["candidate"]): r for r in rows}
    cands = list(dict.fromkeys(r["candidate"] for r in rows))

    def cell(m, c, key):
        r = by.get((m, c))
        if r is None:
            return "-"
        spread = f" ({min(r['auroc_seeds']):.3f}-{max(r['auroc_seeds']):.3f})" \
            if key == "auroc" and len(r["auroc_seeds"]) > 1 else ""
        return f"{r[key]:.3f}{spread}"

    lines = [f"# Detector search: slices against feature maps and Mahalanobis\n\nMachine: {result['machine']}. "
             f"Command: `{result['command']}`. Settings: {result['settings']}.\n",
             "Honest protocol of `adversarial.py` (same models, attacks, fit and test sets). Each candidate is a "
             "random forest on clean fit samples labelled by class, scored by the margin of the model's class "
             "(SliceDetector's scorer), except Mahalanobis; score-level ensembles average their members' "
             "percentiles among held-out clean scores. AUROC: adversarial examples against their own clean "
             "sources, mean over the attacks (in brackets: the range over the forests' seeds).\n",
             f"**Summary.** A slice-based candidate must beat both {' and '.join(f'`{r}`' for r in s['references'])} "
             f"on AUROC by more than its seeds' spread on {s['models_needed']} of the {len(models)} models. "
             f"Best: `{s['best_slice_candidate']}`, on {s['best_slice_candidate_wins']} model(s).\n",
             "## AUROC\n", markdown_table(["candidate", *models, "wins"],
                                          [[c, *(cell(m, c, "auroc") for m in models),
                                            s["wins_over_references"].get(c, "")] for c in cands]),
             "\n## F1 at a 10% held-out false-alarm rate\n",
             markdown_table(["candidate", *models], [[c, *(cell(m, c, "f1_at_10") for m in models)] for c in cands]),
             "\n## Clean test inputs flagged by the classifier's own rule (it names another class)\n",
             markdown_table(["candidate", *models],
                            [[c, *(cell(m, c, "clean_flagged_rule") for m in models)] for c in cands
                             if not c.startswith(("mahalanobis", "ensemble"))])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(f"{a}/{d}" for a, d, _ in MODELS))
    parser.add_argument("--fit", type=int, default=5000)
    parser.add_argument("--profile", type=int, default=10000)
    parser.add_argument("--clean", type=int, default=500)
    parser.add_argument("--art", type=int, default=100)
    parser.add_argument("--cache", default=tempfile.gettempdir())
    parser.add_argument("--candidates", default=None, help="only the candidates matching this regular expression")
    parser.add_argument("--seeds", type=int, default=1, help="forests of this many seeds per candidate (mean)")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    epochs = {f"{a}/{d}": e for a, d, e in MODELS}
    rows = []
    for key in args.models.split(","):
        arch, dataset = key.split("/")
        log(f"{key} ...")
        rows += evaluate(key, gather(arch, dataset, epochs[key], args), args.candidates, args.seeds)
    result = {"summary": summarise(rows), "rows": rows, "machine": machine(),
              "command": shlex.join(["python", "benchmarks/detector_search.py"] + (argv if argv is not None else sys.argv[1:])),
              "settings": {"fit": args.fit, "profile": args.profile, "clean": args.clean, "art": args.art,
                           "seeds": args.seeds, "false_alarm_rate": RATE}}
    write_results(args.out, "detector_search", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
