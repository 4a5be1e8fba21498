"""Sequence models of issue 18: lift, check against Keras, profile and slice, beside integrated gradients.

Three models, each trained briefly so that its slices are those of a working model, each run in
a fresh process (its own peak memory):

* ``vit``: :func:`nnslicer.models.vit` (the ViT of ``examples/slice_vit.py``: 4x4 patches, 2
  blocks of width 64, 4 heads), 1 epoch on 20,000 Fashion-MNIST images;
* ``lstm``: :func:`nnslicer.models.lstm_reader` (the LSTM of ``examples/slice_rnn.py``: 64 units
  over the 28 rows), 1 epoch on 20,000 Fashion-MNIST images;
* ``text_cnn``: :func:`nnslicer.models.text_cnn` (Embedding, Conv1D, global max pooling) over
  100 tokens, 2 epochs on 10,000 synthetic token sequences (no text corpus installs offline:
  a sequence is positive when it holds more tokens of a "positive" set of 50 ids than of a
  "negative" set, the rest uniform noise).

For each it measures the lift, the largest difference of the lifted forward from Keras' (over
the output's scale, as :func:`nnslicer.keras.verify` computes it), the profile (1,000 training
samples) per sample, and per test sample, for its predicted class, at element and channel
granularity: the forward analysis and the backward analysis, one sample at a time and as one
batch of ``--samples``. Beside them, what a user would run instead: a 50-step integrated-gradients
attribution (IG, Sundararajan et al. 2017: the gradient of the predicted class at 50 points from a
zero baseline to the input, batched, for images and rows; at the embedding's output for tokens),
one sample at a time and as one batch, timed in the same process after a warm-up. The slices
and IG are timed in turn, three rounds (``ROUNDS``), and each figure is the median of its
rounds: a slow spell of a shared machine then slows both alike.

Usage::

    python benchmarks/sequences.py                      # writes benchmarks/results/sequences.{json,md}
    python benchmarks/sequences.py --models vit --samples 4 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

from common import RESULTS, machine, markdown_table, run_child, write_results  # noqa: E402

MODELS = ("vit", "lstm", "text_cnn")
#: Profiled training samples, and IG's interpolation steps.
PROFILE, STEPS = 1000, 50
#: Interleaved timing rounds of the slices and of IG; the tables give their medians.
ROUNDS = 3
#: Seconds of rest before each timed phase: TensorFlow's worker threads spin a while after a
#: batch, and would otherwise take the cores from whatever is timed next.
SETTLE = 1.0
#: Text: tokens, vocabulary, the positive and negative token sets.
LENGTH, VOCABULARY, POSITIVE, NEGATIVE = 100, 5000, range(1, 51), range(51, 101)


def text_data(n, seed):
    """``n`` synthetic token sequences and their labels (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(101, VOCABULARY, (n, LENGTH))
    for row in tokens:
        k = rng.integers(1, 8)
        row[rng.choice(LENGTH, k, replace=False)] = rng.choice(np.r_[POSITIVE, NEGATIVE], k)
    labels = (np.isin(tokens, POSITIVE).sum(1) > np.isin(tokens, NEGATIVE).sum(1)).astype(np.int64)
    return tokens.astype(np.int32), labels


def trained(name):
    """``(model, x_train, y_train, x_test, accuracy)``, trained as the docstring says."""
    import keras

    from nnslicer import models
    from nnslicer.datasets import load_fashion_mnist

    keras.utils.set_random_seed(0)
    if name == "text_cnn":
        (x, y), (xt, yt) = text_data(10_000, 0), text_data(1_000, 1)
        model, epochs = models.text_cnn(LENGTH, VOCABULARY), 2
    else:
        (x, y), (xt, yt) = load_fashion_mnist()
        x, y = x[:20_000], y[:20_000]
        if name == "lstm":
            x, xt = x[..., 0], xt[..., 0]
        model, epochs = (models.vit() if name == "vit" else models.lstm_reader()), 1
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=128, verbose=0)
    _, accuracy = model.evaluate(xt, yt, batch_size=512, verbose=0)
    return model, x, y, xt, float(accuracy)


def integrated_gradients(model):
    """``ig(x) -> attributions`` for a batch ``x``, 50 steps from a zero baseline, of each
    sample's predicted class: at the input, or at the embedding's output for token ids."""
    import keras
    import tensorflow as tf

    embedding = next((layer for layer in model.layers if isinstance(layer, keras.layers.Embedding)), None)
    if embedding is not None:  # tokens are not interpolated: their embeddings are
        head = keras.Model(embedding.output, model.output)
        lookup = embedding
    else:
        head, lookup = model, None
    alphas = tf.linspace(0.0, 1.0, STEPS + 1)[1:]

    @tf.function(reduce_retracing=True)
    def ig(x):
        x = lookup(x) if lookup is not None else x
        n = tf.shape(x)[0]
        shape = tf.concat([[STEPS], tf.ones([tf.rank(x)], tf.int32)], 0)
        path = tf.reshape(alphas, shape) * x[None]  # [steps, n, ...]
        flat = tf.reshape(path, tf.concat([[STEPS * n], tf.shape(x)[1:]], 0))
        target = tf.argmax(head(x), axis=-1)
        with tf.GradientTape() as tape:
            tape.watch(flat)
            out = head(flat)
            picked = tf.gather(out, tf.tile(target, [STEPS]), axis=1, batch_dims=1)
        grads = tf.reshape(tape.gradient(picked, flat), tf.shape(path))
        return tf.reduce_mean(grads, axis=0) * x

    return ig


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run_one(name, samples):
    """Measure one model in this process; a dict of figures."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import nnslicer
    from nnslicer.backward import backward
    from nnslicer.forward import forward
    from nnslicer.keras import TOLERANCE, verify

    (model, x, y, xt, accuracy), t_train = timed(trained, name)
    row = {"model": name, "params": int(model.count_params()), "test_accuracy": accuracy, "train_s": t_train}
    graph, t_lift = timed(nnslicer.lift, model)
    diff = verify(graph, model, xt[:64], tolerance=np.inf)
    row.update(status="ok", ops=len(graph.ops), neurons=graph.n_neurons(), synapses=graph.n_synapses(),
               lift_s=t_lift, forward_diff=diff, forward_checked=bool(diff <= TOLERANCE), samples=samples)
    test = xt[:samples]
    graphs, profiles = {}, {}
    for granularity in ("element", "channel"):
        g = graphs[granularity] = graph if granularity == "element" else nnslicer.lift(model, granularity)
        profile = nnslicer.profile(g, x[:8], y[:8])  # warm-up: trace and compile before timing
        for n in (1, 2):  # one sample and a batch take different kernels: compile both
            tape = forward(g, profile, test[:n])
            backward(g, tape, [[int(p)] for p in tape.predictions])
        profile, t_profile = timed(nnslicer.profile, g, x[:PROFILE], y[:PROFILE])
        profiles[granularity] = profile
        row[granularity] = {"profile_s": t_profile / PROFILE}
    ig = integrated_gradients(model)
    ig(test[:1])  # trace both shapes
    ig(test)

    def slices(g, profile):  # (forward, backward, batch) seconds a sample, and the slices' sizes
        one_fwd = one_bwd = 0.0
        sizes = []
        for i in range(samples):
            tape, t = timed(forward, g, profile, test[i:i + 1])
            one_fwd += t
            (_, syn), t = timed(backward, g, tape, [[int(tape.predictions[0])]])
            one_bwd += t
            sizes.append(sum(int(np.count_nonzero(v)) for v in syn.values()))
        tape, t_fwd = timed(forward, g, profile, test)
        _, t_bwd = timed(backward, g, tape, [[int(p)] for p in tape.predictions])
        return np.array([one_fwd, one_bwd, t_fwd + t_bwd]) / samples, sizes

    def attributions():  # (one at a time, batch) seconds a sample
        one = sum(timed(lambda v: ig(v).numpy(), test[i:i + 1])[1] for i in range(samples))
        return np.array([one, timed(lambda v: ig(v).numpy(), test)[1]]) / samples

    runs, synapses = {"element": [], "channel": [], "ig": []}, {}
    for _ in range(ROUNDS):  # interleaved, so that a slow spell of the machine hits both alike
        for granularity in ("element", "channel"):
            time.sleep(SETTLE)
            seconds, sizes = slices(graphs[granularity], profiles[granularity])
            runs[granularity].append(seconds)
            synapses[granularity] = float(np.mean(sizes))
        time.sleep(SETTLE)
        runs["ig"].append(attributions())
    for granularity in ("element", "channel"):
        fwd, bwd, batch = np.median(runs[granularity], axis=0)
        row[granularity].update(forward_s=fwd, backward_s=bwd, slice_s=fwd + bwd, batch_slice_s=batch,
                                slice_synapses=synapses[granularity])
    row["ig50_s"], row["batch_ig50_s"] = np.median(runs["ig"], axis=0)
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def summarise(rows):
    ok = {r["model"]: r for r in rows if r.get("status") == "ok"}
    vit, lstm = ok.get("vit"), ok.get("lstm")
    return {
        "models_lifted": len(ok), "models_total": len(rows),
        "max_forward_diff": max((r["forward_diff"] for r in ok.values()), default=None),
        "vit_element_s": vit and vit["element"]["slice_s"], "vit_ig50_s": vit and vit["ig50_s"],
        "vit_element_batch_s": vit and vit["element"]["batch_slice_s"], "vit_ig50_batch_s": vit and vit["batch_ig50_s"],
        "vit_element_within_ig50": vit and bool(vit["element"]["slice_s"] <= vit["ig50_s"]),
        "lstm_element_s": lstm and lstm["element"]["slice_s"],
        "machine": machine(),
    }


def markdown(data):
    s = data["summary"]
    rows = []
    for r in data["models"]:
        if r.get("status") != "ok":
            rows.append([r["model"], r.get("status"), r.get("error", "")] + [""] * 9)
            continue
        e, c = r["element"], r["channel"]
        rows.append([r["model"], f"{r['params']:,}", f"{r['test_accuracy']:.1%}", r["ops"], f"{r['forward_diff']:.1e}",
                     f"{e['profile_s'] * 1e3:.2f}", f"{e['slice_s'] * 1e3:.1f} ({e['batch_slice_s'] * 1e3:.1f})",
                     f"{c['slice_s'] * 1e3:.1f} ({c['batch_slice_s'] * 1e3:.1f})",
                     f"{r['ig50_s'] * 1e3:.1f} ({r['batch_ig50_s'] * 1e3:.1f})",
                     f"{e['slice_synapses']:,.0f}", f"{c['slice_synapses']:,.0f}", f"{r['peak_rss_mb']:,.0f}"])
    table = markdown_table(["model", "parameters", "test acc.", "ops", "forward diff", "profile ms/sample",
                            "element slice ms/sample (batch)", "channel slice ms/sample (batch)",
                            "IG-50 ms/sample (batch)", "element slice synapses", "channel slice synapses",
                            "peak RSS MB"], rows)
    verdict = ("met" if s["vit_element_within_ig50"] else "missed") if s["vit_element_s"] is not None else "not run"
    return (f"# Sequence models: slicing beside integrated gradients\n\n{table}\n\n"
            f"A slice's time is the forward plus the backward analysis of one test sample for its predicted class, "
            f"one sample at a time (in brackets: {data['samples']} samples as one batch, per sample); IG-50 is a "
            f"50-step integrated-gradients attribution of the same sample, batched over its steps (in brackets: "
            f"the {data['samples']} samples at once). Each figure is the median of {ROUNDS} interleaved rounds. "
            f"Profiling is once per model ({PROFILE:,} training samples).\n\n"
            f"Target (issue 18): slicing the ViT at element granularity costs no more than IG-50 of it: "
            f"{s['vit_element_s'] * 1e3 if s['vit_element_s'] else float('nan'):.1f} ms against "
            f"{s['vit_ig50_s'] * 1e3 if s['vit_ig50_s'] else float('nan'):.1f} ms, {verdict}.\n\n"
            f"Machine: {s['machine']}.\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--samples", type=int, default=16, help="test samples sliced (default 16)")
    parser.add_argument("--out", default=RESULTS, help="folder for sequences.json and .md")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a model may take")
    parser.add_argument("--model", help=argparse.SUPPRESS)  # one model, in this process (the child)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model:
        import json

        with open(args.json_out, "w") as f:
            json.dump(run_one(args.model, args.samples), f)
        return
    rows = []
    for name in args.models:
        print(f"[sequences] {name} ...", file=sys.stderr, flush=True)
        rows.append(run_child(__file__, ["--model", name, "--samples", str(args.samples)], args.timeout,
                              {"model": name}))
    data = {"samples": args.samples, "models": rows}
    data["summary"] = summarise(rows)
    write_results(args.out, "sequences", data, markdown(data))


if __name__ == "__main__":
    main()
