"""Unit pruning by Shapley values and by slices (issue 22): the three experiments of Ancona et
al. 2020, "Shapley Values as a Principled Metric for Structured Network Pruning", on the data
this machine has.

The paper's models and data (VGG16 on CIFAR-10, VGG16 on CUB-200) do not install offline. In
their place: :func:`nnslicer.models.vgg` (VGG16's pattern of 3x3 convolution blocks at an eighth
of its width: four blocks of two convolutions, 16 to 128 filters, then a 128-unit dense layer;
nine prunable layers, 608 units) trained 3 epochs on Fashion-MNIST, which the paper's Table 2
also reports (with its own model).

1. **Layer-wise pruning AUC** (Table 2): each method scores the units of every prunable layer on
   ``--score-samples`` training images (1,000, as the authors' notebook); for each layer alone, its units are removed one at a
   time, lowest score first, and the test loss recorded on ``--eval-samples`` test images; AUC
   = sum over layers and removed units of (loss - original loss), over the number of units.
   Random and Shapley values (whose orders are sampled): mean +- std over ``--seeds``. Shapley
   values are aggregated over samples both ways the authors compared: ``shapley`` (mean + 2
   std, the paper's choice) and ``shapley_mean`` (the signed mean).
2. **Low-data pruning** (Figure 3): scores from 100 test images, the network pruned one layer
   at a time from the output side at 25% and 50% of units, the first four convolutions kept
   (as the paper does), no fine-tuning; accuracy on the other 9,900 test images after each layer.
3. **Negative units** (section 3.3): an untrained MLP (784-2048-2048-10, LeakyReLU 0.01,
   PyTorch's default initialisation, as the paper's code uses PyTorch); signed Shapley values
   (the mean over samples, 5 orders) on the average loss of ``--negative-samples`` training
   images (1,000, as the authors' notebook; the paper's text says 10,000), every unit with a
   negative value removed, the outer hidden layer first and then the first, rescored on the
   network pruned so far (the authors' notebook does so), nothing trained; test accuracy,
   best of ``--inits`` initialisations, on MNIST-5k (4,000 training / 1,000 test images: all
   there is) and Fashion-MNIST.

Every method's scoring time is measured in the same run (seconds for all layers).

Usage::

    python benchmarks/unit_pruning.py                    # all three; writes results/unit_pruning.{json,md}
    python benchmarks/unit_pruning.py --experiments auc --seeds 1 --out /tmp/bench
    python benchmarks/unit_pruning.py --experiments auc --methods shapley shapley_mean --seeds 1 \\
        --permutations 20 --stem unit_pruning_k20         # does K = 20 close the gap? (no)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from common import RESULTS, load_data, machine, markdown_table, trained_model, write_results  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METHODS = ("shapley", "shapley_mean", "taylor", "sensitivity", "apoz", "weight", "random", "slice", "slice_signed")
#: Methods with random draws: run with several seeds.
SEEDED = ("shapley", "shapley_mean", "random")
#: Our variants of the paper's methods (not "another heuristic" in the summary).
OURS = ("shapley", "shapley_mean", "slice", "slice_signed")
#: The paper's figures: Table 2 (AUC; Fashion-MNIST and CIFAR-10 rows), Figure 3, section 3.3.
PAPER = {
    "auc_fmnist": {"apoz": 0.30, "weight": 0.19, "sensitivity": 0.24, "taylor": 0.20, "random": 0.29, "shapley": 0.11},
    "auc_cifar10": {"apoz": 0.56, "weight": 0.47, "sensitivity": 0.47, "taylor": 0.47, "random": 0.48, "shapley": 0.31},
    "negative_units_mnist_acc": 0.5001, "negative_units_cifar10_acc": 0.2325,
}
#: The VGG's training (epochs) and the first convolutions the low-data experiment keeps.
EPOCHS, KEEP_FIRST = 5, 4


def _seeds(method, seeds):
    return list(range(seeds)) if method in SEEDED else [0]


def _method(method, permutations=5):
    """``(unit_scores method, its options)``: ``shapley_mean`` is Shapley values with the signed
    mean over samples (the paper's "SV"; ``shapley`` is its "SV mean+2std"), ``permutations``
    sampled orders (the paper's K = 5)."""
    if method == "shapley_mean":
        return "shapley", {"aggregation": "mean", "permutations": permutations}
    return method, {"permutations": permutations} if method == "shapley" else {}


def _scores(model, x, y, method, seed, permutations):
    from analyses.unit_scores import unit_scores

    start = time.perf_counter()
    name, options = _method(method, permutations)
    scores = unit_scores(model, x, y, name, seed=seed, **options)
    return scores, time.perf_counter() - start


def experiment_auc(model, data, args):
    """Table 2: the AUC of every method (and each layer's curves)."""
    from analyses.pruning import prunable_units
    from analyses.unit_scores import removal_losses
    from nnslicer import lift

    (x_tr, y_tr), (x_te, y_te) = data
    rng = np.random.default_rng(0)
    pick = rng.choice(len(x_tr), args.score_samples, replace=False)
    xs, ys = x_tr[pick], y_tr[pick]
    xe, ye = x_te[:args.eval_samples], y_te[:args.eval_samples]
    units = prunable_units(model, lift(model))
    total = sum(u for u, _ in units.values())
    rows = {}
    for method in args.methods:
        runs = []
        for seed in _seeds(method, args.seeds):
            scores, seconds = _scores(model, xs, ys, method, seed, args.permutations)
            area, curves = 0.0, {}
            for name in units:
                curve = removal_losses(model, xe, ye, name, np.argsort(scores[name], kind="stable"))
                curves[name] = [round(float(v), 5) for v in curve]
                area += float(np.sum(curve[1:] - curve[0]))
            runs.append({"seed": seed, "auc": area / total, "seconds": seconds, "curves": curves})
            print(f"[auc] {method} seed {seed}: AUC {area / total:.4f} ({seconds:.1f} s scoring)", file=sys.stderr,
                  flush=True)
        aucs = [r["auc"] for r in runs]
        rows[method] = {"auc": float(np.mean(aucs)), "auc_std": float(np.std(aucs)),
                        "seconds": float(np.mean([r["seconds"] for r in runs])), "runs": runs}
    return {"units": total, "layers": {k: u for k, (u, _) in units.items()}, "score_samples": args.score_samples,
            "eval_samples": args.eval_samples, "methods": rows}


def experiment_lowdata(model, data, args):
    """Figure 3: accuracy after each pruned layer at 25% and 50%, for every method."""
    from analyses.unit_pruning import prune_units

    _, (x_te, y_te) = data
    pick = np.random.default_rng(1).permutation(len(x_te))
    xs, ys = x_te[pick[:100]], y_te[pick[:100]]
    xe, ye = x_te[pick[100:]], y_te[pick[100:]]
    out = {"score_samples": 100, "eval_samples": int(len(xe)), "keep_first": KEEP_FIRST, "ratios": {}}
    for ratio in args.ratios:
        rows = {}
        for method in args.methods:
            runs = []
            for seed in _seeds(method, args.seeds):
                name, options = _method(method, args.permutations)
                _, report = prune_units(model, xs, ys, name, ratio, keep_first=KEEP_FIRST, evaluate=(xe, ye),
                                        seed=seed, **options)
                runs.append(report.to_dict())
                print(f"[lowdata] {ratio:.0%} {method} seed {seed}: {report.accuracy_before:.4f} -> "
                      f"{report.layers[-1].accuracy:.4f} ({report.seconds:.1f} s scoring)", file=sys.stderr, flush=True)
            finals = [r["layers"][-1]["accuracy"] for r in runs]
            rows[method] = {"accuracy": float(np.mean(finals)), "accuracy_std": float(np.std(finals)),
                            "seconds": float(np.mean([sum(lr["seconds"] for lr in r["layers"]) for r in runs])),
                            "runs": runs}
        out["ratios"][str(ratio)] = rows
    out["accuracy_before"] = runs[0]["accuracy_before"]
    return out


def random_mlp(seed, inputs=784, width=2048, classes=10):
    """784-2048-2048-10 with LeakyReLU(0.01), initialised as PyTorch's ``nn.Linear`` is
    (weights and biases uniform in +-1/sqrt(fan_in))."""
    import keras

    keras.utils.set_random_seed(seed)
    layers, fan_in = [keras.Input((inputs,))], inputs
    for i, units in enumerate((width, width, classes)):
        bound = 1.0 / np.sqrt(fan_in)
        last = i == 2
        layers.append(keras.layers.Dense(
            units, activation="softmax" if last else None, name="out" if last else f"h{i + 1}",
            kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound)))
        if not last:
            layers.append(keras.layers.LeakyReLU(negative_slope=0.01, name=f"a{i + 1}"))
        fan_in = units
    return keras.Sequential(layers)


def experiment_negative(args):
    """Section 3.3: prune an untrained MLP's units with negative Shapley values (the authors'
    notebook: the outer layer first, then the first on the network pruned so far)."""
    from analyses.unit_pruning import prune_units

    out = {}
    for dataset in args.negative_datasets:
        (x_tr, y_tr), (x_te, y_te) = load_data(dataset)
        mean, std = float(x_tr.mean()), float(x_tr.std())
        x_tr, x_te = ((a.reshape(len(a), -1) - mean) / std for a in (x_tr, x_te))
        n = min(args.negative_samples, len(x_tr))
        runs = []
        for init in range(args.inits):
            model = random_mlp(init)
            pruned, report = prune_units(model, x_tr[:n], y_tr[:n], "shapley", ratio=None, below=0.0,
                                         permutations=args.negative_permutations, aggregation="mean", seed=init,
                                         evaluate=(x_te, y_te))
            runs.append({"init": init, "accuracy_before": report.accuracy_before,
                         "accuracy_after": report.layers[-1].accuracy, "seconds": report.seconds,
                         "params_after": report.params_after, "params_before": report.params_before,
                         "negative_units": {r.name: r.pruned for r in report.layers}})
            print(f"[negative] {dataset} init {init}: {report.accuracy_before:.4f} -> {report.layers[-1].accuracy:.4f}, "
                  f"{runs[-1]['negative_units']} ({report.seconds:.0f} s)", file=sys.stderr, flush=True)
        best = max(runs, key=lambda r: r["accuracy_after"])
        out[dataset] = {"samples": n, "permutations": args.negative_permutations, "best_accuracy": best["accuracy_after"],
                        "mean_accuracy": float(np.mean([r["accuracy_after"] for r in runs])), "runs": runs}
    return out


def summary(results):
    """The issue's keys (those whose methods ran): Shapley values against the best of the paper's
    heuristics (taylor, sensitivity, apoz, weight, random), and slices beside them."""
    s = {}

    def compare(m, key, prefix, best_of):
        get = {k: v[key] for k, v in m.items()}
        others = {k: v for k, v in get.items() if k not in OURS}
        out = {f"{prefix}_{k}": get[k] for k in OURS if k in get}
        if others:
            best = best_of(others, key=others.get)
            out.update({f"{prefix}_best_other": others[best], f"{prefix}_best_other_name": best})
        return out

    auc = results.get("auc")
    if auc:
        s.update(compare(auc["methods"], "auc", "auc", min))
        if "auc_shapley" in s and "auc_best_other" in s:
            s["auc_ratio_shapley_to_best_other"] = s["auc_shapley"] / s["auc_best_other"]
    low = results.get("lowdata")
    if low and "0.5" in low["ratios"]:
        got = compare(low["ratios"]["0.5"], "accuracy", "lowdata_50", max)
        s.update({f"{k}_acc" if not k.endswith("_name") else k: v for k, v in got.items()})
    neg = results.get("negative") or {}
    for dataset, key in (("mnist_5k", "negative_units_mnist_acc"), ("fashion_mnist", "negative_units_fashion_acc")):
        if dataset in neg:
            s[key] = neg[dataset]["best_accuracy"]
    return s


def markdown(results):
    lines = ["# Unit pruning: Shapley values, the heuristics and slices (Ancona et al. 2020)", ""]
    model = results.get("model")
    if model:
        lines += [f"Model: `nnslicer.models.vgg` trained {model['epochs']} epochs on Fashion-MNIST, test accuracy "
                  f"{model['test_accuracy']:.2%}. CIFAR-10 and CUB-200 are not available offline: the paper's VGG16 "
                  "rows are beside ours for their order, not their values.", ""]
    auc = results.get("auc")
    if auc:
        m = auc["methods"]
        rows = [[k, f"{v['auc']:.3f}" + (f" +- {v['auc_std']:.3f}" if len(v["runs"]) > 1 else ""),
                 PAPER["auc_fmnist"].get(k, "-"), PAPER["auc_cifar10"].get(k, "-"), f"{v['seconds']:.1f}"]
                for k, v in sorted(m.items(), key=lambda kv: kv[1]["auc"])]
        lines += ["## 1. Layer-wise pruning AUC (Table 2; lower is better)", "",
                  markdown_table(["method", "AUC (ours)", "paper FMNIST", "paper CIFAR-10 VGG16", "scoring s"], rows),
                  "", f"{auc['units']} units in {len(auc['layers'])} layers; scores on {auc['score_samples']} training "
                      f"images, test loss on {auc['eval_samples']} test images; Shapley values from "
                      f"{results.get('args', {}).get('permutations', 5)} sampled orders; +- is the std over seeds.", ""]
    low = results.get("lowdata")
    if low:
        lines += ["## 2. Low-data pruning (Figure 3; higher is better)", "",
                  f"Scores from 100 test images; accuracy on the other {low['eval_samples']:,} after each layer, "
                  f"pruned from the output side, the first {low['keep_first']} convolutions kept; accuracy before "
                  f"pruning {low['accuracy_before']:.2%}.", ""]
        for ratio, m in low["ratios"].items():
            names = [lr["name"] for lr in next(iter(m.values()))["runs"][0]["layers"]]
            rows = []
            for k, v in sorted(m.items(), key=lambda kv: -kv[1]["accuracy"]):
                per_layer = np.mean([[lr["accuracy"] for lr in r["layers"]] for r in v["runs"]], axis=0)
                final = f"{v['accuracy']:.2%}" + (f" +- {v['accuracy_std']:.2%}" if len(v["runs"]) > 1 else "")
                rows.append([k, *[f"{a:.2%}" for a in per_layer[:-1]], final, f"{v['seconds']:.1f}"])
            lines += [f"### {float(ratio):.0%} of units", "",
                      markdown_table(["method", *[f"after {n}" for n in names[:-1]], f"after {names[-1]} (all)",
                                      "scoring s"], rows), ""]
    neg = results.get("negative")
    if neg:
        rows = [[k, v["samples"], v["permutations"], len(v["runs"]), f"{v['runs'][0]['accuracy_before']:.2%}",
                 f"{v['best_accuracy']:.2%}", f"{v['mean_accuracy']:.2%}",
                 ", ".join(f"{r['negative_units']['h1']}+{r['negative_units']['h2']}" for r in v["runs"])]
                for k, v in neg.items()]
        lines += ["## 3. Negative units of an untrained MLP (section 3.3)", "",
                  markdown_table(["data", "samples", "orders", "inits", "accuracy before (init 0)",
                                  "best after pruning", "mean after", "units pruned (h1+h2) per init"], rows),
                  "", f"Paper: about 10% -> {PAPER['negative_units_mnist_acc']:.2%} on MNIST (10,000 samples, best of 5).",
                  ""]
    s = results["summary"]
    if s:
        lines += ["## Summary", "", markdown_table(["key", "value"], [[k, v] for k, v in s.items()]), ""]
    lines += [f"Machine: {results['machine']}.", ""]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiments", nargs="+", default=["auc", "lowdata", "negative"],
                   choices=["auc", "lowdata", "negative"])
    p.add_argument("--seeds", type=int, default=3, help="seeds of random and Shapley values (default 3)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                   help="the methods of experiments 1 and 2 (default all)")
    p.add_argument("--permutations", type=int, default=5, help="Shapley values' sampled orders (the paper's 5)")
    p.add_argument("--score-samples", type=int, default=1000,
                   help="AUC: training images the scores use (1,000, as the authors' notebook)")
    p.add_argument("--eval-samples", type=int, default=1000, help="AUC: test images of the loss curves")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5], help="low-data: pruning ratios")
    p.add_argument("--negative-datasets", nargs="+", default=["mnist_5k", "fashion_mnist"])
    p.add_argument("--negative-samples", type=int, default=1000, help="negative units: training images (the "
                                                                      "authors' notebook: 1,000)")
    p.add_argument("--negative-permutations", type=int, default=5, help="negative units: sampled orders (5)")
    p.add_argument("--inits", type=int, default=5, help="negative units: random initialisations")
    p.add_argument("--out", default=RESULTS)
    p.add_argument("--stem", default="unit_pruning", help="the result files' name (default unit_pruning)")
    p.add_argument("--rewrite", action="store_true",
                   help="only rewrite the summary and the table from --out's unit_pruning.json (no run)")
    args = p.parse_args(argv)
    if args.rewrite:
        import json

        with open(os.path.join(args.out, f"{args.stem}.json")) as f:
            results = json.load(f)
        results["summary"] = summary(results)
        write_results(args.out, args.stem, results, markdown(results))
        return
    results = {"machine": machine(), "args": vars(args)}
    start = time.perf_counter()
    if {"auc", "lowdata"} & set(args.experiments):
        model, info = trained_model("vgg", "fashion_mnist", EPOCHS)
        results["model"] = info
        data = load_data("fashion_mnist")
        if "auc" in args.experiments:
            results["auc"] = experiment_auc(model, data, args)
        if "lowdata" in args.experiments:
            results["lowdata"] = experiment_lowdata(model, data, args)
    if "negative" in args.experiments:
        results["negative"] = experiment_negative(args)
    results["seconds"] = round(time.perf_counter() - start, 1)
    results["summary"] = summary(results)
    write_results(args.out, args.stem, results, markdown(results))


if __name__ == "__main__":
    main()
