"""Class-focused pruning of ResNet10 on Fashion-MNIST, against NNSlicer's paper (SPEC.md section 5).

What it measures: the accuracy on target-class test images of ResNet10 (SPEC.md's shape,
trained 3 epochs on Fashion-MNIST by ``common.trained_model``) after pruning the fraction
``ratio`` of the synapses of every weighted layer, for NNSlicer and the paper's baselines
(NNSlicer over all classes, weight magnitude, EffectivePath, channel L1 norm, random), each
with and without mean compensation, over several class subsets of sizes 2 to 5, without
fine-tuning; then with one epoch of fine-tuning on (up to) 10k training samples of the
classes (0, 1, 5); and the parameter count and FLOPs of the physically smaller models.

Slicing: every class is sliced once (``--per-class`` training samples of the class, criterion
= the class, ``aggregate="abs"``); a subset's scores are the sums of its classes' slices, so a
subset of k classes rests on k x ``--per-class`` sliced samples (a few hundred, not the
thousands of the paper: slicing ResNet10 costs about 0.06-0.4 s per sample here).

Run (from the repository root)::

    nice -n 10 python benchmarks/pruning.py            # about 30 minutes on 2 cores
    python benchmarks/pruning.py --quick               # a few minutes

Writes ``benchmarks/results/pruning.json`` and ``pruning.md``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import RESULTS, load_data, machine, markdown_table, trained_model, write_results  # noqa: E402

METHODS = ("nnslicer", "nnslicer_all", "magnitude", "effective_path", "channel", "random")
BASELINES = METHODS[1:]
#: Paper (ResNet10, CIFAR-10), target-class accuracy in percent without fine-tuning.
PAPER = {
    0.2: {"nnslicer": 93, "nnslicer_all": 90, "magnitude": 90},
    0.5: {"nnslicer": 87, "nnslicer_all": 74, "magnitude": 57},
    0.55: {"nnslicer": 78, "nnslicer_all": 55, "magnitude": 40, "effective_path": 25, "channel": 10},
}
PAPER_FINE_TUNED = {0.6: {"nnslicer": 95}, 0.95: {"nnslicer": 58, "others": "< 10"}}


def class_subsets(n, seed=0):
    """(0, 1, 5) first, then distinct random subsets of sizes 2..5 (cycling through sizes)."""
    rng = np.random.default_rng(seed)
    out = [(0, 1, 5)]
    size = 2
    while len(out) < n:
        s = tuple(sorted(rng.choice(10, size=size, replace=False).tolist()))
        if s not in out:
            out.append(s)
            size = 2 + (size - 1) % 4
    return out[:n]


def mean_acc(grid, method, mc, ratio):
    v = [r["accuracy"] for r in grid if r["method"] == method and r["mean_compensation"] == mc and r["ratio"] == ratio]
    return float(np.mean(v)) if v else float("nan")


def markdown(data):
    """The report, from the JSON data alone."""
    grid, summary, settings, sec = data["grid"], data["summary"], data["settings"], data["seconds"]
    header = ["ratio"] + [f"{m} comp/none" for m in METHODS] + ["paper (ours / all / magnitude / EP / channel)"]
    rows = []
    for ratio in settings["ratios"]:
        paper = PAPER.get(ratio, {})
        cells = [f"{mean_acc(grid, m, True, ratio):.1f} / {mean_acc(grid, m, False, ratio):.1f}" for m in METHODS]
        ptxt = " / ".join(str(paper.get(k, "-")) for k in ("nnslicer", "nnslicer_all", "magnitude", "effective_path", "channel"))
        rows.append([ratio] + cells + [ptxt])
    unpruned = float(np.mean([r["accuracy"] for r in grid if r["method"] == "unpruned"]))

    def paper_ft(r):
        paper = PAPER_FINE_TUNED.get(r["ratio"], {})
        return str(paper.get(r["method"], paper.get("others", "-")))

    ft_rows = [[r["ratio"], r["method"], f"{r['accuracy']:.1f}", paper_ft(r)] for r in data["fine_tuned"]]
    size_rows = [[s["ratio"], s["method"], f"{s['params']:,}", f"{s['flops']:,}", f"{s['nonzero_flops']:,}",
                  s["removed_units"], f"{s['accuracy']:.1f}"] for s in data["sizes"]]
    before = data["size_before"]
    redone = data.get("fine_tune_rerun")
    return "\n\n".join([
        "# Class-focused pruning: ResNet10 on Fashion-MNIST",
        f"Machine: {data['machine']}. Command: `{data['command']}`. Model: ResNet10 (SPEC.md), 3 epochs, "
        f"test accuracy {data['model']['test_accuracy']:.4f}. Total {sec['total']:.0f} s "
        f"(profiling {settings['profile_samples']} samples {sec['profile']:.0f} s; slicing {settings['per_class']} "
        f"samples per class: NNSlicer {sec['slice_nnslicer']:.0f} s, EffectivePath {sec['slice_effective_path']:.0f} s).",
        f"**Summary**: NNSlicer at ratio 0.55, no fine-tuning, mean over {summary['n_class_subsets']} class subsets: "
        f"**{summary['targeted_acc_r055']}%** target-class accuracy (paper: ~78%); best baseline "
        f"{summary['best_baseline_r055']}: {summary['best_baseline_acc_r055']}%. Target (>= 78% and above "
        f"every baseline): {'met' if summary['target_met'] else 'missed'}.",
        "## Target-class accuracy (%) without fine-tuning, mean over class subsets",
        f"Each cell: with mean compensation / without. Unpruned model on the same images: {unpruned:.1f}%. "
        f"Subsets: {', '.join(str(tuple(s)) for s in settings['subsets'])}. The paper's figures are ResNet10 on CIFAR-10.",
        markdown_table(header, rows),
        f"## One epoch of fine-tuning (classes 0, 1, 5; Adam {settings.get('fine_tune_lr', 1e-4):g} on "
        f"{settings.get('fine_tune_samples', 10000):,} of their training samples, pruned synapses held at 0)",
        *([f"Redone with `{redone['command']}` ({redone['seconds']:.0f} s); the rest of the report is from the "
           "command above."] if redone else []),
        markdown_table(["ratio", "method", "accuracy %", "paper"], ft_rows),
        f"## Size of the physically pruned models (classes 0, 1, 5; before: {before['params']:,} parameters, "
        f"{before['flops']:,} FLOPs)",
        "FLOPs = 2 x multiply-adds of the weighted layers. Mean compensation adds a bias to each pruned "
        "bias-free convolution, so an unpruned-width model can have a few more parameters than the original.",
        markdown_table(["ratio", "method", "params", "FLOPs", "non-zero FLOPs", "removed units", "accuracy %"], size_rows),
    ]) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 subsets, 3 ratios, fewer samples")
    parser.add_argument("--subsets", type=int, default=10, help="class subsets (default 10)")
    parser.add_argument("--per-class", type=int, default=60, help="training samples sliced per class (default 60)")
    parser.add_argument("--profile", type=int, default=10000, help="training samples profiled (default 10000)")
    parser.add_argument("--test-per-class", type=int, default=300, help="test images per class scored (default 300)")
    parser.add_argument("--ratios", default="0.2,0.5,0.55,0.7,0.95", help="pruning ratios")
    parser.add_argument("--fine-tune-ratios", default="0.6,0.95", help="ratios fine-tuned (classes 0,1,5)")
    parser.add_argument("--fine-tune-samples", type=int, default=10000, help="fine-tuning samples (default 10000)")
    parser.add_argument("--fine-tune-lr", type=float, default=None,
                        help="Adam learning rate of fine-tuning (default: class_focused_prune's)")
    parser.add_argument("--fine-tune-only", action="store_true",
                        help="redo only the fine-tuning rows of the existing results/pruning.json")
    parser.add_argument("--out", default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.subsets, args.per_class, args.test_per_class = 3, 20, 100
        args.ratios, args.fine_tune_ratios, args.fine_tune_samples = "0.2,0.55,0.95", "0.6", 2000
    ratios = [float(r) for r in args.ratios.split(",")]
    ft_ratios = [float(r) for r in args.fine_tune_ratios.split(",") if r]
    command = "python benchmarks/pruning.py " + " ".join(argv if argv is not None else sys.argv[1:])

    import nnslicer
    from analyses.pruning import class_focused_prune
    from analyses.synapse_scores import class_slices

    start_all = time.perf_counter()
    model, info = trained_model("resnet10", "fashion_mnist", 3)
    (x_tr, y_tr), (x_te, y_te) = load_data("fashion_mnist")
    test_idx = np.concatenate([np.flatnonzero(y_te == c)[:args.test_per_class] for c in range(10)])
    x_te, y_te = x_te[test_idx], y_te[test_idx]

    t = time.perf_counter()
    slicer = nnslicer.Slicer(model).fit(x_tr[:args.profile], y_tr[:args.profile])
    profile_s = time.perf_counter() - t
    t = time.perf_counter()
    slices = class_slices(slicer, x_tr, y_tr, range(10), max_per_class=args.per_class)
    slice_s = time.perf_counter() - t
    ep_slicer = nnslicer.Slicer(model, rule="effective_path").fit(profile=slicer.profile_)
    t = time.perf_counter()
    ep_slices = class_slices(ep_slicer, x_tr, y_tr, range(10), max_per_class=args.per_class)
    ep_slice_s = time.perf_counter() - t
    print(f"[pruning] profile {profile_s:.0f} s, slicing {10 * args.per_class} samples {slice_s:.0f} s "
          f"(EffectivePath {ep_slice_s:.0f} s)", file=sys.stderr, flush=True)

    def accuracy(m, classes):
        sel = np.isin(y_te, classes)
        pred = m.predict(x_te[sel], batch_size=512, verbose=0).argmax(1)
        return 100.0 * float(np.mean(pred == y_te[sel]))

    def prune(classes, method, ratio, mc, x=x_tr, y=y_tr, **kw):  # (pruned model, PruneReport)
        return class_focused_prune(model, slicer, x, y, classes, ratio, mean_compensation=mc,
                                   method=method, slices=ep_slices if method == "effective_path" else slices,
                                   **kw)

    ft_classes = (0, 1, 5)
    ft_lr = args.fine_tune_lr or inspect.signature(class_focused_prune).parameters["fine_tune_lr"].default

    def fine_tune():  # one epoch on (0, 1, 5) for every method
        ft_idx = np.flatnonzero(np.isin(y_tr, ft_classes))[:args.fine_tune_samples]
        return [{"method": method, "ratio": ratio, "accuracy": accuracy(
                    prune(ft_classes, method, ratio, True, x=x_tr[ft_idx], y=y_tr[ft_idx], fine_tune_epochs=1,
                          remove=False, fine_tune_lr=ft_lr)[0], ft_classes)}
                for ratio in ft_ratios for method in METHODS]

    if args.fine_tune_only:
        path = os.path.join(args.out, "pruning.json")
        with open(path) as f:
            data = json.load(f)
        data["fine_tuned"] = fine_tune()
        data["settings"].update(fine_tune_ratios=ft_ratios, fine_tune_lr=ft_lr,
                                fine_tune_samples=args.fine_tune_samples)
        data["fine_tune_rerun"] = {"command": command.strip(), "seconds": round(time.perf_counter() - start_all, 1)}
        write_results(args.out, "pruning", data, markdown(data))
        return 0

    subsets = class_subsets(args.subsets)
    grid = []  # rows: subset, method, mean_compensation, ratio, accuracy
    t = time.perf_counter()
    for i, classes in enumerate(subsets):
        base = accuracy(model, classes)
        grid.append({"classes": list(classes), "method": "unpruned", "mean_compensation": None,
                     "ratio": 0.0, "accuracy": base})
        for method in METHODS:
            for mc in (True, False):
                for ratio in ratios:
                    acc = accuracy(prune(classes, method, ratio, mc, remove=False)[0], classes)
                    grid.append({"classes": list(classes), "method": method, "mean_compensation": mc,
                                 "ratio": ratio, "accuracy": acc})
        print(f"[pruning] subset {i + 1}/{len(subsets)} {classes} done, {time.perf_counter() - t:.0f} s",
              file=sys.stderr, flush=True)
    grid_s = time.perf_counter() - t

    t = time.perf_counter()
    fine = fine_tune()
    fine_s = time.perf_counter() - t
    sizes = []
    for ratio in ratios:
        for method in ("nnslicer", "channel"):
            m, r = prune(ft_classes, method, ratio, True)
            sizes.append({"method": method, "ratio": ratio, "params": r.params_after,
                          "flops": r.flops_after, "nonzero_flops": r.nonzero_flops_after,
                          "removed_units": r.removed_units, "accuracy": accuracy(m, ft_classes)})
    params_before, flops_before = r.params_before, r.flops_before

    targeted = mean_acc(grid, "nnslicer", True, 0.55) if 0.55 in ratios else float("nan")
    baseline_r055 = {f"{m}{'' if mc else ' (no comp.)'}": mean_acc(grid, m, mc, 0.55)
                     for m in BASELINES for mc in (True, False)} if 0.55 in ratios else {}
    best_name = max(baseline_r055, key=baseline_r055.get) if baseline_r055 else None
    summary = {
        "targeted_acc_r055": round(targeted, 2),
        "targeted_acc_r055_no_compensation": round(mean_acc(grid, "nnslicer", False, 0.55), 2) if 0.55 in ratios else None,
        "best_baseline_acc_r055": round(baseline_r055[best_name], 2) if best_name else None,
        "best_baseline_r055": best_name,
        "n_class_subsets": len(subsets),
        "target_met": bool(best_name and targeted >= 78 and targeted > baseline_r055[best_name]),
    }
    data = {
        "summary": summary, "machine": machine(), "command": command, "model": info,
        "settings": {"subsets": [list(s) for s in subsets], "ratios": ratios, "per_class": args.per_class,
                     "profile_samples": args.profile, "test_per_class": args.test_per_class,
                     "fine_tune_ratios": ft_ratios, "fine_tune_classes": list(ft_classes),
                     "fine_tune_lr": ft_lr, "fine_tune_samples": args.fine_tune_samples},
        "seconds": {"profile": round(profile_s, 1), "slice_nnslicer": round(slice_s, 1),
                    "slice_effective_path": round(ep_slice_s, 1), "grid": round(grid_s, 1),
                    "fine_tune": round(fine_s, 1), "total": round(time.perf_counter() - start_all, 1)},
        "grid": grid, "fine_tuned": fine, "sizes": sizes,
        "size_before": {"params": params_before, "flops": flops_before}, "paper": {
            "no_fine_tuning": {str(k): v for k, v in PAPER.items()},
            "fine_tuned_0_1_5": {str(k): v for k, v in PAPER_FINE_TUNED.items()}},
    }

    md = markdown(data)
    write_results(args.out, "pruning", data, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
