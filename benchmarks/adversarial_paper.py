"""The NNSlicer authors' detection protocol (docs/SPEC.md section 5), for ``adversarial.py --protocol paper``.

As close to the authors' published evaluation as this data allows:

- ResNet10, ``baseline="class"`` (deltas from the predicted class's mean over correctly
  classified training images), the profile taken on those images;
- features: the signed per-synapse counts of block 4's last 3x3 convolution (the largest
  convolution of the last stage: ``default_layer(graph, -1)``); a slice that does not reach every
  weighted op is dropped, in fitting and in testing alike (the authors' rule);
- a default ``DecisionTreeClassifier`` (``random_state=0``, so that a run repeats) fit on
  ``--per-class`` (1,000) correctly predicted training images per class, labelled by their
  true class;
- the first 50 test images per class; a pair is kept when the clean image is classified
  correctly and the attack succeeds; one clean set, sliced once with the true class as the
  criterion, is scored against every attack; adversarial inputs are sliced with the model's
  prediction as the criterion.

Two metrics per attack, adversarial = positive, the clean halves of the kept pairs negative:

- **paper metric**, as the authors' evaluation computed it: it compared an adversarial input's
  tree class with a stored prediction that reads as -1 (the file is never written), so every
  adversarial input counts as detected (recall 1) and a clean input is flagged when the tree
  names another class than its label. F1 = 2P / (1 + P), P = n_adv / (n_adv + clean flagged).
- **real metric**: an adversarial input is flagged when the tree names another class than the
  model's actual prediction on it.

Detectors: NNSlicer and EffectivePath (slices, the tree above) and FeatureMap (the same
layer's raw output activations, the same tree; the paper's FeatureMap figure came from a script
with real predictions, so its paper figure is a real metric).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from common import detection_prf, load_data, markdown_table, trained_model

#: name -> (function of analyses.attacks, parameters). The authors' list (Foolbox, CIFAR-10's
#: 0-255 scale) on [0, 1] inputs: FGSM and PGD at 2, 4 and 8 /255 (PGD: random start, 10
#: steps of eps / 4), DeepFool L2, JSMA, CW-L2 and the spatial transformation attack.
ATTACKS = {
    "FGSM_2": ("fgsm", {"eps": 2 / 255}),
    "FGSM_4": ("fgsm", {"eps": 4 / 255}),
    "FGSM_8": ("fgsm", {"eps": 8 / 255}),
    "PGD_2": ("pgd", {"eps": 2 / 255, "step": 0.5 / 255, "steps": 10}),
    "PGD_4": ("pgd", {"eps": 4 / 255, "step": 1 / 255, "steps": 10}),
    "PGD_8": ("pgd", {"eps": 8 / 255, "step": 2 / 255, "steps": 10}),
    "DeepFool_L2": ("deepfool", {"epsilon": 0.02, "max_iter": 50}),
    "JSMA": ("jsma", {"theta": 1.0, "gamma": 0.1}),
    "CWL2": ("cw_l2", {"max_iter": 20, "binary_search_steps": 3, "learning_rate": 0.01}),
    "Spatial": ("spatial", {"max_translation": 10.0, "num_translations": 3, "max_rotation": 30.0,
                            "num_rotations": 5}),
}
ART = {"cw_l2", "deepfool", "jsma", "spatial"}
#: The authors' attacks this harness does not run, and why.
LEFT_OUT = {
    "DeepFool_Linf": "ART's DeepFool is the L2 attack only",
    "SinglePixel": "ART's PixelAttack (differential evolution) needs tens of thousands of model calls per image: "
                   "hours for 100 images on 2 CPU cores",
    "Boundary": "ART's BoundaryAttack needs thousands of model calls per image: hours on 2 CPU cores",
    "LocalSearch, ADef, Pointwise, GaussianBlur": "not in the Adversarial Robustness Toolbox",
}
#: The paper's averages (ResNet10, CIFAR-10, 17 attacks): F1 / precision / recall.
PAPER = {"nnslicer": {"f1": 0.91, "precision": 0.83, "recall": 1.00},
         "effective_path": {"f1": 0.80, "precision": 0.67, "recall": 1.00},
         "feature_map": {"f1": 0.62, "precision": 0.63, "recall": 0.62}}
DETECTORS = ("nnslicer", "effective_path", "feature_map")


def log(msg):
    print(f"[adversarial/paper] {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def first_per_class(y, n):
    """Indices of the first ``n`` samples of each class, in index order."""
    return np.sort(np.concatenate([np.flatnonzero(y == c)[:n] for c in np.unique(y)]))


def slice_features(slicer, x, targets, layer, chunk=64):
    """``(counts, reached)``: the signed per-synapse counts of ``layer`` (sparse, one row per
    input) and whether each input's slice reaches every weighted op."""
    from scipy import sparse

    ops = slicer.graph_.weighted_ops
    rows, reached = [], []
    start = time.perf_counter()
    for lo in range(0, len(x), chunk):
        for s in slicer.slice_many(x[lo:lo + chunk], [int(t) for t in targets[lo:lo + chunk]]):
            rows.append(sparse.csr_matrix(s.synapse_counts[layer].reshape(1, -1).astype(np.float32)))
            reached.append(all(np.any(s.synapse_counts[op]) for op in ops))
        if lo // chunk % 20 == 19:
            log(f"    {lo + chunk:,} of {len(x):,} sliced ({time.perf_counter() - start:.0f} s)")
    return sparse.vstack(rows, format="csr"), np.asarray(reached)


def run_model(arch, dataset, epochs, args):
    """Every detector against every attack on one model, under the authors' protocol."""
    import nnslicer
    from sklearn.tree import DecisionTreeClassifier

    from analyses import attacks
    from analyses.adversarial import FeatureMapDetector, default_layer

    (x_tr, y_tr), (x_te, y_te) = load_data(dataset)
    model, info = trained_model(arch, dataset, epochs)
    model_name = f"{arch}/{dataset}"
    log(f"{model_name}: test accuracy {info['test_accuracy']:.4f}")

    pred_tr = model.predict(x_tr, batch_size=512, verbose=0).argmax(1)
    right = np.flatnonzero(pred_tr == y_tr)
    fit_idx = right[first_per_class(y_tr[right], args.per_class)]
    x_fit, y_fit = x_tr[fit_idx], y_tr[fit_idx]
    profile_idx = right[:args.profile]

    test_idx = first_per_class(y_te, args.test_per_class)
    x_clean, y_clean = x_te[test_idx], y_te[test_idx]
    pred_clean = model.predict(x_clean, batch_size=512, verbose=0).argmax(1)
    correct = pred_clean == y_clean
    art_idx = first_per_class(y_clean, args.art_per_class)
    adv = {}
    for name in args.paper_attacks:
        fn, params = ATTACKS[name]
        idx = art_idx if fn in ART else np.arange(len(x_clean))
        start = time.perf_counter()
        a = getattr(attacks, fn)(model, x_clean[idx], y_clean[idx], **params)
        adv[name] = (a, idx[a.source_index])  # indices into the clean set
        log(f"  {name}: {len(a)} successes of {a.n_correct} correct ({time.perf_counter() - start:.0f} s)")

    start = time.perf_counter()
    slicer = nnslicer.Slicer(model, baseline="class").fit(x_tr[profile_idx], y_tr[profile_idx])
    profile_s = time.perf_counter() - start
    layer = default_layer(slicer.graph_, -1)
    log(f"  profiled {len(profile_idx):,} correctly classified training images in {profile_s:.0f} s; layer {layer}")
    slicers = {"nnslicer": slicer,
               "effective_path": nnslicer.Slicer(model, rule="effective_path").fit(profile=slicer.profile_)}

    # clean inputs: criterion = true class; adversarial ones: criterion = the model's prediction
    x_adv = np.concatenate([a.x_adv for a, _ in adv.values()])
    pred_adv = np.concatenate([a.pred_adv for a, _ in adv.values()]).astype(int)
    tree_class, reached, cost = {}, {}, {}
    for det, s in slicers.items():
        t = time.perf_counter()
        feats, ok = slice_features(s, x_fit, y_fit, layer)
        slice_fit_s = time.perf_counter() - t
        tree = DecisionTreeClassifier(random_state=0).fit(feats[ok], y_fit[ok])
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        clean_feats, clean_ok = slice_features(s, x_clean, y_clean, layer)
        adv_feats, adv_ok = slice_features(s, x_adv, pred_adv, layer) if len(x_adv) else (None, np.zeros(0, bool))
        score_s = time.perf_counter() - t
        tree_class[det] = (tree.predict(clean_feats), tree.predict(adv_feats) if len(x_adv) else np.zeros(0, int))
        reached[det] = (clean_ok, adv_ok)
        cost[det] = {"fit_samples": int(ok.sum()), "fit_dropped": int((~ok).sum()),
                     "slice_fit_s": round(slice_fit_s, 1),
                     "fit_s": round(fit_s, 1), "score_s": round(score_s, 1), "tree_leaves": int(tree.get_n_leaves()),
                     "s_per_input": round((fit_s + score_s) / (len(x_fit) + len(x_clean) + len(x_adv)), 4)}
        log(f"  {det}: fit on {ok.sum():,} slices ({(~ok).sum()} dropped: not reaching every weighted op) "
            f"in {fit_s:.0f} s; scored {len(x_clean) + len(x_adv):,} inputs in {score_s:.0f} s")
    t = time.perf_counter()
    fm = FeatureMapDetector(model, layer=layer, classifier="tree").fit(x_fit, y_fit)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    tree_class["feature_map"] = (fm.classifier_.predict(fm.features(x_clean).values),
                                 fm.classifier_.predict(fm.features(x_adv).values) if len(x_adv) else np.zeros(0, int))
    reached["feature_map"] = (np.ones(len(x_clean), bool), np.ones(len(x_adv), bool))
    cost["feature_map"] = {"fit_samples": int(fm.n_fit_), "fit_dropped": 0, "fit_s": round(fit_s, 1),
                           "score_s": round(time.perf_counter() - t, 1),
                           "tree_leaves": int(fm.classifier_.get_n_leaves())}

    rows = []
    for det in DETECTORS:
        clean_class, adv_class = tree_class[det]
        clean_ok, adv_ok = reached[det]
        clean_flag = clean_class != y_clean  # clean inputs are kept only when predicted right
        offset = 0
        for name, (a, source) in adv.items():
            part = slice(offset, offset + len(a))
            offset += len(a)
            keep = correct[source] & clean_ok[source] & adv_ok[part]
            if not keep.any():
                continue
            neg = clean_flag[source[keep]]
            real = adv_class[part][keep] != pred_adv[part][keep]
            rows.append({"model": model_name, "detector": det, "attack": name, "pairs": int(keep.sum()),
                         "dropped_pairs": int((~keep).sum()),
                         "paper_metric": detection_prf(neg, np.ones(int(keep.sum()), bool)),
                         "real_metric": detection_prf(neg, real)})
        cost[det]["clean_tree_error"] = float(np.mean(clean_flag[correct & clean_ok]))
        f1 = averages(rows, model_name, "paper_metric").get(det, {}).get("f1", float("nan"))
        log(f"  {det}: clean tree error {cost[det]['clean_tree_error']:.3f}, paper-metric F1 {f1:.3f}")
    meta = {"model": model_name, "test_accuracy": info["test_accuracy"], "epochs": epochs, "layer": layer,
            "fit_images": int(len(x_fit)), "profile_images": int(len(profile_idx)),
            "clean_images": int(len(x_clean)), "clean_correct": int(correct.sum()),
            "art_images": int(len(art_idx)), "detectors": cost, "command": args.command,
            "attacks": {k: {"successes": len(a), "attacked": a.n_inputs, "correct": a.n_correct,
                            "params": ATTACKS[k][1]} for k, (a, _) in adv.items()}}
    return rows, meta


def averages(rows, model, metric):
    """``{detector: {precision, recall, f1}}``: the mean over attacks of one model."""
    out = {}
    for det in DETECTORS:
        rs = [r[metric] for r in rows if r["model"] == model and r["detector"] == det]
        if rs:
            out[det] = {m: float(np.mean([r[m] for r in rs])) for m in ("precision", "recall", "f1")}
    return out


def implied_f1(clean_error):
    """The paper metric's F1 when every clean input is paired: P = 1 / (1 + clean error)."""
    p = 1.0 / (1.0 + clean_error)
    return 2 * p / (1 + p)


def summary(part):
    """The summary keys of the paper protocol (its first model is the main one)."""
    main = part["models"][0]["model"]
    paper, real = averages(part["rows"], main, "paper_metric"), averages(part["rows"], main, "real_metric")
    out = {"paper_protocol_main_model": main}
    for det in DETECTORS:
        if det in paper:
            # FeatureMap's published figure was computed with real predictions (module docstring)
            out[f"paper_metric_{det}_f1"] = (real if det == "feature_map" else paper)[det]["f1"]
            out[f"paper_protocol_real_{det}_f1"] = real[det]["f1"]
    return out


def markdown(part):
    lines = ["## The authors' protocol (`--protocol paper`)\n",
             "The authors' evaluation, reproduced as closely as this data allows (docs/SPEC.md section 5; "
             "`benchmarks/adversarial_paper.py` says what each step is). **Paper metric**: as the authors' code "
             "computed it, every successful adversarial input counts as detected (their stored prediction file "
             "is never written and reads as -1), so recall is 1 and F1 = 2P / (1 + P) with P set by the tree's "
             "error on clean images. **Real metric**: an adversarial input is flagged when the tree names another "
             "class than the model's actual prediction. FeatureMap's published figure is a real metric.\n",
             f"Machine: {part.get('machine', '?')}.\n",
             "Left out of the authors' 17 attacks: "
             + "; ".join(f"{k} ({v})" for k, v in LEFT_OUT.items()) + ".\n"]
    for meta in part["models"]:
        model = meta["model"]
        paper, real = averages(part["rows"], model, "paper_metric"), averages(part["rows"], model, "real_metric")
        lines.append(f"### {model} (test accuracy {meta['test_accuracy']:.3f}; layer `{meta['layer']}`; "
                     f"{meta['clean_correct']} of {meta['clean_images']} clean test images right; the ART attacks "
                     f"on the first {meta['art_images']} of them)\n")
        lines.append(f"Command: `{meta.get('command', part.get('command'))}`.\n")
        lines.append("Average over attacks: precision / recall / F1.\n")
        lines.append(markdown_table(
            ["detector", "paper metric", "real metric", "paper (CIFAR-10)", "clean tree error",
             "F1 it implies", "fit slices (dropped)"],
            [[d, " / ".join(f"{paper[d][m]:.3f}" for m in ("precision", "recall", "f1")),
              " / ".join(f"{real[d][m]:.3f}" for m in ("precision", "recall", "f1")),
              " / ".join(f"{PAPER[d][m]:.2f}" for m in ("precision", "recall", "f1")),
              f"{meta['detectors'][d]['clean_tree_error']:.3f}",
              f"{implied_f1(meta['detectors'][d]['clean_tree_error']):.3f}",
              f"{meta['detectors'][d]['fit_samples']:,} ({meta['detectors'][d]['fit_dropped']})"]
             for d in paper]))
        lines.append("\nF1 per attack, paper metric / real metric; `pairs`: kept pairs (NNSlicer's).\n")
        cell = {(r["detector"], r["attack"]): r for r in part["rows"] if r["model"] == model}
        names = [a for a in meta["attacks"] if ("nnslicer", a) in cell]
        lines.append(markdown_table(["attack", "pairs", *paper],
                            [[a, cell["nnslicer", a]["pairs"],
                              *(f"{cell[d, a]['paper_metric']['f1']:.2f} / {cell[d, a]['real_metric']['f1']:.2f}"
                                if (d, a) in cell else "-" for d in paper)] for a in names]))
        failed = [a for a in meta["attacks"] if not meta["attacks"][a]["successes"]]
        if failed:
            lines.append(f"\nNo success, so left out: {', '.join(failed)}.")
        lines.append("")
    return "\n".join(lines) + "\n"
