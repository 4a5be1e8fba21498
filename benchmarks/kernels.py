"""Which kernel path runs the backward analysis: numpy arrays or fused numba kernels.

Times the backward analysis per sample (batch mode) with ``kernels=``
``"numpy"`` (vectorised: index arrays, a full stable argsort per neuron's candidates, bincount
scatters) and to ``"numba"`` (one fused pass per op, the theta rule ordering candidates only as
far as it needs), checks that both give the same counts, and writes
``benchmarks/results/kernels.json`` and ``kernels.md``.

    python benchmarks/kernels.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, machine, write_results  # noqa: E402
from overhead import build  # noqa: E402

#: Samples timed per model (ResNet18 on the numpy path takes about a minute a sample).
SAMPLES = {"lenet": 256, "resnet10": 16, "resnet18": 1}


def measure(name, granularity):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from nnslicer import Slicer
    from nnslicer.backward import backward
    from nnslicer.forward import forward

    model, x_prof, x_slice, note = build(name)
    slicer = Slicer(model, granularity=granularity).fit(x_prof)
    tape = forward(slicer.graph_, slicer.profile_, x_slice[:SAMPLES[name]])
    targets = [[int(p)] for p in tape.predictions]
    row = {"model": name, "granularity": granularity, "samples": len(targets), "weights": note}
    counts = {}
    for kernels in ("numba", "numpy"):
        warm = forward(slicer.graph_, slicer.profile_, x_slice[:1])
        backward(slicer.graph_, warm, [[0]], kernels=kernels)  # compiles / loads the numba cache
        start = time.perf_counter()
        counts[kernels] = backward(slicer.graph_, tape, targets, kernels=kernels)
        row[f"{kernels}_s"] = (time.perf_counter() - start) / len(targets)
    same = all(np.array_equal(counts["numba"][i][k], counts["numpy"][i][k])
               for i in (0, 1) for k in counts["numba"][i])
    row.update(speedup=row["numpy_s"] / row["numba_s"], equal=same)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lenet,resnet10,resnet18")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    rows = [measure(name, "element") for name in args.models.split(",")]
    md = [f"# Backward kernels, seconds per sample (batch mode, element granularity)\n\nMachine: {machine()}. "
          "Command: `python benchmarks/kernels.py`.\n",
          "| model | samples | numpy path | fused numba | speed-up | same counts |", "|---|---|---|---|---|---|"]
    md += [f"| {r['model']} | {r['samples']} | {r['numpy_s']:.4f} | {r['numba_s']:.4f} | {r['speedup']:.0f}x | "
           f"{r['equal']} |" for r in rows]
    write_results(args.out, "kernels", {"machine": machine(), "rows": rows}, "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
