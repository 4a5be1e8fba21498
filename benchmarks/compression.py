"""Compression budgets from layer rankings, against SAFER's figures (SPEC.md sections 6 and 7).

For LeNet and ResNet10 (SPEC.md's shapes) trained on Fashion-MNIST (``common.trained_model``),
and every layer criterion of ``analyses.layer_importance`` (linf reduction, SAFER's best; the
rank-average ``combined``), ranked on 256 training images with the model's own predictions:

* **structured pruning** at global rates 0.1, 0.2, 0.3 (share of the prunable layers' kernel
  weights, filters with the smallest L1 norm first, no fine-tuning): per-layer rates from the
  ranking (``direction`` inverse and paper, see ``analyses.budgets``) versus the same rate in
  every layer, at equal cost (the realised pruned share is recorded);
* **mixed precision** at an average of 4 (and 3) weight bits, activations at 8 bits: the
  least important third one bit lower, the most important third one bit higher, versus the
  same bit-width everywhere;
* **bit flips** in the weights and outputs of every layer with weights, at one bit-error rate
  (the smallest of ``--fault-rates`` that costs the unchecked model at least 5 points),
  leaving 0, 1, 2, ... of the least important layers unchecked; the number of layers to check
  to stay within 1 point of the clean accuracy. References: a random layer order, and the
  layers' exposure (bits of weights and outputs per inference, ``analyses.faults.exposure``);
* **beyond accuracy**: ``analyses.compression_report.compare`` of the original against the
  best mixed-precision and the best pruned model (flips, confidence, saliency, slice survival).

Accuracies are on the 10,000 test images (faults: the first ``--fault-samples``).

Run (from the repository root)::

    nice -n 10 python benchmarks/compression.py          # about an hour on 2 cores
    python benchmarks/compression.py --quick             # LeNet only, a few criteria

Writes ``benchmarks/results/compression.json`` and ``compression.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import RESULTS, load_data, machine, markdown_table, trained_model, write_results  # noqa: E402

MODELS = {"lenet": 5, "resnet10": 3}  # architecture -> training epochs (the other benchmarks' models)
MAIN = "resnet10"
#: Reference orders beside the criteria: a random one, and the layers' exposure to bit flips
#: (bits of weights and outputs per inference, ``analyses.faults.exposure``).
REFERENCES = ("random", "exposure")

#: SAFER's figures (different models and data: ResNet-8/CIFAR-10, ResNet-50/ImageNet).
PAPER = {
    "pruning_resnet8_cifar10_gamma20_row_avg": {
        "weight": 46, "gradient": 63, "weight_x_gradient": 50, "gradcam_pp": 54, "integrated_gradients": 51,
        "guided_ig": 53, "idgi": 53, "smoothgrad": 53, "vargrad": 61, "hsic": 47},
    "quantization_resnet50_imagenet_powerquant_w4a8": {
        "uniform": 63.408, "weight": 41.426, "gradient": 69.894, "weight_x_gradient": 70.978,
        "gradcam_pp": 70.920, "integrated_gradients": 69.168, "idgi": 73.070, "smoothgrad": 52.310,
        "vargrad": 66.722, "hsic": 69.120, "full_precision": 75.0},
    "faults_resnet50_imagenet": {"checked_for_1pt": 17, "total_layers": 52},
}


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), -1) == y)) * 100


def rankings(model, x, criteria, log):
    from analyses.faults import exposure
    from analyses.layer_importance import layer_importance

    out, seconds = {}, {}
    for c in criteria:
        start = time.perf_counter()
        out[c] = layer_importance(model, x, criterion=c, reduction="linf")
        seconds[c] = round(time.perf_counter() - start, 1)
        log(f"ranking {c}: {seconds[c]} s, top {list(out[c])[:3]}")
    rng = np.random.default_rng(0)
    names = list(out[criteria[0]])
    out["random"] = {n: float(s) for n, s in zip([names[i] for i in rng.permutation(len(names))],
                                                range(len(names), 0, -1))}
    out["exposure"] = {k: float(v) for k, v in exposure(model).items()}
    return out, seconds


def pruning(model, x_cal, x, y, ranks, rates, log):
    from analyses.compression import compress

    rows = []
    for rate in rates:
        m, info = compress(model, x_cal, criterion="uniform", prune=rate)
        rows.append({"rate": rate, "criterion": "uniform", "direction": None, "accuracy": accuracy(m, x, y),
                     "pruned_fraction": info["pruned_fraction"]})
        for c, ranking in ranks.items():
            for direction in ("inverse", "paper"):
                m, info = compress(model, x_cal, criterion=c, prune=rate, direction=direction, ranking=ranking)
                rows.append({"rate": rate, "criterion": c, "direction": direction, "accuracy": accuracy(m, x, y),
                             "pruned_fraction": info["pruned_fraction"]})
        best = max((r for r in rows if r["rate"] == rate), key=lambda r: r["accuracy"])
        log(f"pruning {rate}: uniform {rows[-2 * len(ranks) - 1]['accuracy']:.1f}, best {best['criterion']}/"
            f"{best['direction']} {best['accuracy']:.1f}")
    return rows


def quantization(model, x_cal, x, y, ranks, bits_list, log):
    from analyses.compression import compress

    rows = []
    for bits in bits_list:
        for c, ranking in [("uniform", None)] + list(ranks.items()):
            m, info = compress(model, x_cal, criterion=c, bits=bits, ranking=ranking)
            rows.append({"bits": bits, "criterion": c, "accuracy": accuracy(m, x, y),
                         "widths": info["bits"]})
        log(f"quantization W{bits}/A8: uniform {rows[-len(ranks) - 1]['accuracy']:.1f}, best "
            f"{max(r['accuracy'] for r in rows if r['bits'] == bits):.1f}")
    return rows


def faults(model, x, y, ranks, rates, repeats, log):
    from analyses.faults import fault_accuracy, fault_curve, layers_to_check

    clean = float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))
    rate, probe = rates[-1], {}
    for r in rates:
        probe[r] = float(np.mean(fault_accuracy(model, x, y, r, repeats=repeats)))
        log(f"faults: rate {r:g}: {probe[r] * 100:.1f}% unchecked (clean {clean * 100:.1f}%)")
        if probe[r] <= clean - 0.05:
            rate = r
            break
    cache, curves = {}, {}
    for c, ranking in ranks.items():
        curve = fault_curve(model, x, y, list(ranking), rate, repeats=repeats, cache=cache)
        curves[c] = dict(curve, checked_for_1pt=layers_to_check(curve, 0.01))
        log(f"faults {c}: check {curves[c]['checked_for_1pt']} of {len(ranking)}")
    return {"rate": rate, "probe": {str(k): v for k, v in probe.items()}, "repeats": repeats,
            "samples": len(x), "clean": clean, "curves": curves}


def beyond(model, x_cal, x, y, ranks, best_bits, best_prune, max_per_class, log):
    from analyses.compression import compress
    from analyses.compression_report import compare

    out = {}
    for label, kwargs in (("mixed_precision", dict(bits=4, criterion=best_bits)),
                          ("pruning", dict(prune=0.2, criterion=best_prune[0], direction=best_prune[1]))):
        m, _ = compress(model, x_cal, ranking=ranks.get(kwargs["criterion"]), **kwargs)
        start = time.perf_counter()
        report = compare(model, m, x, y, max_per_class=max_per_class, saliency_samples=100)
        out[label] = {"setting": dict(kwargs), "seconds": round(time.perf_counter() - start, 1),
                      **{k: getattr(report, k) for k in ("accuracy_a", "accuracy_b", "flipped", "confidence_shift",
                                                         "confidence_shift_abs", "saliency_mad", "survival_mean",
                                                         "survival_note", "saliency_note")},
                      "max_class_change": list(report.max_class_change)}
        log(f"compare {label}: flipped {report.flipped:.3f}, saliency MAD {report.saliency_mad}, "
            f"survival {report.survival_mean}")
    return out


def run_model(arch, args, log):
    from analyses.layer_importance import CRITERIA

    model, info = trained_model(arch, "fashion_mnist", MODELS[arch])
    (x_tr, _), (x_te, y_te) = load_data("fashion_mnist")
    x_cal = x_tr[:args.calibration]
    criteria = args.criteria or list(CRITERIA) + ["combined"]
    start = time.perf_counter()
    ranks, rank_seconds = rankings(model, x_cal, criteria, log)
    t = {"rankings": time.perf_counter() - start}
    x_eval, y_eval = x_te[:args.test], y_te[:args.test]
    start = time.perf_counter()
    prune = pruning(model, x_cal, x_eval, y_eval, ranks, args.prune_rates, log)
    t["pruning"] = time.perf_counter() - start
    start = time.perf_counter()
    quant = quantization(model, x_cal, x_eval, y_eval, ranks, args.bits, log)
    t["quantization"] = time.perf_counter() - start
    start = time.perf_counter()
    fault = faults(model, x_te[:args.fault_samples], y_te[:args.fault_samples], ranks, args.fault_rates,
                   args.repeats, log)
    t["faults"] = time.perf_counter() - start
    real = [c for c in ranks if c not in REFERENCES]
    best_bits = max((r for r in quant if r["bits"] == 4 and r["criterion"] in real), key=lambda r: r["accuracy"])
    best_prune = max((r for r in prune if r["rate"] == 0.2 and r["criterion"] in real), key=lambda r: r["accuracy"])
    start = time.perf_counter()
    report = beyond(model, x_cal, x_te[:args.compare_samples], y_te[:args.compare_samples], ranks,
                    best_bits["criterion"], (best_prune["criterion"], best_prune["direction"]),
                    args.max_per_class, log)
    t["compare"] = time.perf_counter() - start
    return {"model": info, "ranking_seconds": rank_seconds, "rankings": {c: list(r) for c, r in ranks.items()},
            "pruning": prune, "quantization": quant, "faults": fault, "beyond_accuracy": report,
            "seconds": {k: round(v, 1) for k, v in t.items()}}


def summarise(result):
    """The figures of one model: best criterion against uniform budgets."""
    real = [c for c in result["rankings"] if c not in REFERENCES]
    q4 = {r["criterion"]: r["accuracy"] for r in result["quantization"] if r["bits"] == 4}
    p20 = [r for r in result["pruning"] if r["rate"] == 0.2]
    best_q = max(real, key=q4.get)
    best_p = max((r for r in p20 if r["criterion"] in real), key=lambda r: r["accuracy"])
    uniform_p = next(r for r in p20 if r["criterion"] == "uniform")
    curves = result["faults"]["curves"]
    best_f = min(real, key=lambda c: (curves[c]["checked_for_1pt"], c))
    return {
        "mixed_precision_acc": round(q4[best_q], 2), "mixed_precision_criterion": best_q,
        "mixed_precision_tied_with": [c for c in real if c != best_q and q4[c] == q4[best_q]],
        "uniform_precision_acc": round(q4["uniform"], 2),
        "mixed_precision_criteria_above_uniform": sum(q4[c] > q4["uniform"] for c in real),
        "ranked_pruning_acc": round(best_p["accuracy"], 2),
        "ranked_pruning_criterion": f"{best_p['criterion']}/{best_p['direction']}",
        "uniform_pruning_acc": round(uniform_p["accuracy"], 2),
        "ranked_pruning_criteria_above_uniform": {d: sum(r["accuracy"] > uniform_p["accuracy"] for r in p20
                                                         if r["criterion"] in real and r["direction"] == d)
                                                  for d in ("inverse", "paper")},
        "checked_layers_for_1pt_loss": curves[best_f]["checked_for_1pt"], "checked_layers_criterion": best_f,
        "checked_layers_random_order": curves["random"]["checked_for_1pt"],
        "checked_layers_exposure_order": curves["exposure"]["checked_for_1pt"],
        "total_layers": len(result["rankings"][best_f]), "criteria": len(real),
    }


def _pct(fraction):
    return "-" if fraction is None else f"{fraction * 100:.1f}"


def markdown(data):
    parts = ["# Compression budgets from layer rankings (Fashion-MNIST)",
             f"Machine: {data['machine']}. Command: `{data['command']}`. Total {data['seconds']:.0f} s. "
             f"Rankings: linf reduction on {data['settings']['calibration']} training images. Pruning: structured "
             "(filters by L1 norm), no fine-tuning. Quantization: symmetric per-channel weights, activations "
             f"8 bits (min/max of the calibration images). Accuracy on the first {data['settings']['test']:,} "
             "test images (%). SAFER's figures are other "
             "models and data sets (ResNet-8 on CIFAR-10, ResNet-50 on ImageNet): they show the size of "
             "the effect, not numbers to equal."]
    for arch, result in data["models"].items():
        s = data["summaries"][arch]
        info = result["model"]
        parts.append(f"## {arch} ({info['epochs']} epochs, test accuracy {info['test_accuracy'] * 100:.2f}%)")
        parts.append(
            f"**Summary**: mixed precision W4/A8 best criterion **{s['mixed_precision_criterion']}** "
            + (f"(tied with {', '.join(s['mixed_precision_tied_with'])}) " if s.get("mixed_precision_tied_with") else "")
            + f"{s['mixed_precision_acc']}% vs uniform W4/A8 {s['uniform_precision_acc']}% "
            f"({s['mixed_precision_criteria_above_uniform']} of {s['criteria']} criteria above uniform). "
            f"Structured pruning at 20%: best {s['ranked_pruning_criterion']} {s['ranked_pruning_acc']}% vs "
            f"uniform {s['uniform_pruning_acc']}% (criteria above uniform: {s['ranked_pruning_criteria_above_uniform']}). "
            f"Bit flips: checking {s['checked_layers_for_1pt_loss']} of {s['total_layers']} layers "
            f"({s['checked_layers_criterion']}) keeps within 1 point; a random order needs "
            f"{s['checked_layers_random_order']}, the exposure order (most bits at risk first) "
            f"{s['checked_layers_exposure_order']}.")
        paper_p = PAPER["pruning_resnet8_cifar10_gamma20_row_avg"]
        paper_q = PAPER["quantization_resnet50_imagenet_powerquant_w4a8"]
        rates = sorted({r["rate"] for r in result["pruning"]})
        bits = sorted({r["bits"] for r in result["quantization"]})
        acc = {(r["rate"], r["criterion"], r["direction"]): r for r in result["pruning"]}
        qacc = {(r["bits"], r["criterion"]): r["accuracy"] for r in result["quantization"]}
        curves = result["faults"]["curves"]
        header = (["criterion"] + [f"prune {r:.0%} inverse / paper" for r in rates] + [f"W{b}/A8" for b in bits]
                  + ["layers to check (1 pt)", "ranking s", "SAFER prune 20% (row avg)", "SAFER W4/A8 PowerQuant"])
        rows = []
        for c in ["uniform"] + list(result["rankings"]):
            cells = []
            for r in rates:
                if c == "uniform":
                    u = acc[(r, "uniform", None)]
                    cells.append(f"{u['accuracy']:.1f} (pruned {u['pruned_fraction']:.1%})")
                else:
                    cells.append(f"{acc[(r, c, 'inverse')]['accuracy']:.1f} / {acc[(r, c, 'paper')]['accuracy']:.1f}")
            cells += [f"{qacc[(b, c)]:.1f}" if (b, c) in qacc else "-" for b in bits]
            cells.append(str(curves[c]["checked_for_1pt"]) if c in curves else "-")
            cells.append(str(result["ranking_seconds"].get(c, "-")))
            cells.append(str(paper_p.get(c, "-")))
            cells.append(str(paper_q.get(c, "-")))
            rows.append([c] + cells)
        parts.append(markdown_table(header, rows))
        f = result["faults"]
        parts.append(f"Bit flips: rate {f['rate']:g} per bit, {f['repeats']} draws, first {f['samples']} test "
                     f"images, clean {f['clean'] * 100:.1f}%. Accuracy (%) with u of the least important layers "
                     "unchecked:")
        n = len(next(iter(curves.values()))["accuracy"])
        step = max(1, (n - 1) // 8)
        us = list(range(0, n, step)) + ([n - 1] if (n - 1) % step else [])
        parts.append(markdown_table(["criterion"] + [f"u={u}" for u in us],
                                    [[c] + [f"{curves[c]['accuracy'][u] * 100:.1f}" for u in us] for c in curves]))
        b = result["beyond_accuracy"]
        parts.append(f"Beyond accuracy (`compare`, first {data['settings']['compare_samples']:,} test images, "
                     f"{data['settings']['max_per_class']} per class sliced; 'Beyond test accuracy' saw up to "
                     "7.5% flips and ~7.5% saliency MAD):")
        parts.append(markdown_table(
            ["model", "setting", "acc before (%)", "acc after (%)", "flipped (%)", "mean abs. confidence shift (pts)",
             "saliency MAD (%)", "slice survival (%)", "largest class change"],
            [[k, ", ".join(f"{a}={v}" for a, v in r["setting"].items()),
              *(_pct(r[f]) for f in ("accuracy_a", "accuracy_b", "flipped", "confidence_shift_abs",
                                     "saliency_mad", "survival_mean")),
              "class {}: {:+.1f} pts".format(*r["max_class_change"])]
             for k, r in b.items()]))
    return "\n\n".join(parts) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--criteria", nargs="+", default=None, help="default: every criterion and 'combined'")
    p.add_argument("--calibration", type=int, default=256)
    p.add_argument("--test", type=int, default=10000)
    p.add_argument("--prune-rates", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    p.add_argument("--bits", type=int, nargs="+", default=[4, 3])
    p.add_argument("--fault-rates", type=float, nargs="+", default=[1e-8, 3e-8, 1e-7, 3e-7, 1e-6, 3e-6])
    p.add_argument("--fault-samples", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--compare-samples", type=int, default=1000)
    p.add_argument("--max-per-class", type=int, default=10, help="samples sliced per class for slice survival")
    p.add_argument("--quick", action="store_true", help="LeNet, five criteria, small samples")
    p.add_argument("--render", metavar="JSON", help="only rewrite the summaries and tables of this "
                   "compression.json (no run)")
    p.add_argument("--out", default=RESULTS)
    args = p.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            data = json.load(f)
        data["summaries"] = {arch: summarise(r) for arch, r in data["models"].items()}
        data["summary"] = dict(data["summaries"][data["summary"]["model"]], model=data["summary"]["model"])
        write_results(args.out, "compression", data, markdown(data))
        return 0
    if args.quick:
        args.models, args.criteria = ["lenet"], args.criteria or ["weight", "gradient", "fit", "taylor", "combined"]
        args.test, args.fault_samples, args.repeats, args.compare_samples, args.max_per_class = 2000, 300, 3, 300, 3
    if 0.2 not in args.prune_rates or 4 not in args.bits:
        p.error("the summary needs --prune-rates with 0.2 and --bits with 4")
    command = "python benchmarks/compression.py " + " ".join(argv if argv is not None else sys.argv[1:])
    start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - start:7.0f} s] {msg}", file=sys.stderr, flush=True)

    results = {arch: run_model(arch, args, log) for arch in args.models}
    summaries = {arch: summarise(r) for arch, r in results.items()}
    main_arch = MAIN if MAIN in results else args.models[0]
    summary = dict(summaries[main_arch], model=main_arch)
    data = {"summary": summary, "summaries": summaries, "machine": machine(), "command": command.strip(),
            "seconds": round(time.perf_counter() - start, 1), "paper": PAPER, "models": results,
            "settings": {k: v for k, v in vars(args).items() if k != "out"}}
    write_results(args.out, "compression", data, markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
