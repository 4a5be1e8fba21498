"""The compression report as one self-contained HTML page, its plots inline (matplotlib)."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from .report_files import SHIFT_EDGES, _pct

__all__ = ["to_html"]


def _png(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _bars(report, series, ylabel, title):
    """Per-class bars, one group per class; ``series`` is ``[(label, {class: value})]``."""
    from matplotlib.figure import Figure

    classes = list(report.classes)
    fig = Figure(figsize=(max(6.0, 0.35 * len(classes) * len(series)), 3.2))
    ax = fig.subplots()
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        pos = np.arange(len(classes)) + (i - (len(series) - 1) / 2) * width
        ax.bar(pos, [values[c] for c in classes], width, label=label)
    ax.set_xticks(np.arange(len(classes)), [report.label(c) for c in classes],
                  **({"rotation": 30, "ha": "right"} if report.class_names else {}))
    ax.set_xlabel("class")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(loc="lower right", fontsize="small")
    return _png(fig)


def _shift_plot(report):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.2))
    ax = fig.subplots()
    for key, color in (("unchanged", "tab:blue"), ("flipped", "tab:red")):
        counts = np.asarray(report.shift_histogram[key], dtype=np.float64)
        if counts.sum():
            ax.stairs(counts / counts.sum(), SHIFT_EDGES, fill=True, alpha=0.5, color=color,
                      label=f"{key} ({int(counts.sum())} samples)")
    ax.set_xlabel("confidence shift p_B[pred_A] - p_A[pred_A]")
    ax.set_ylabel("share of the group")
    ax.set_title("Confidence shift, flipped vs unchanged samples")
    ax.legend(fontsize="small")
    return _png(fig)


def _saliency_plot(report):
    from matplotlib.figure import Figure

    examples = report.saliency_examples
    fig = Figure(figsize=(8.0, 2.2 * len(examples)))
    axes = fig.subplots(len(examples), 4, squeeze=False)
    for row, e in zip(axes, examples):
        image = np.asarray(e["image"], dtype=np.float64)
        span = image.max() - image.min()
        image = (image - image.min()) / (span if span > 0 else 1.0)
        a, b = np.asarray(e["saliency_a"]), np.asarray(e["saliency_b"])
        flip = " (flipped)" if e["pred_a"] != e["pred_b"] else ""
        panels = [(image, f"sample {e['index']}, label {e['label']}", "gray"),
                  (a, f"A: predicts {e['pred_a']}", "inferno"),
                  (b, f"B: predicts {e['pred_b']}{flip}", "inferno"),
                  (np.abs(a - b), "|A - B|", "inferno")]
        for ax, (data, title, cmap) in zip(row, panels):
            ax.imshow(data, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize="small")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Saliency |d p[pred_A] / d x| (normalised), class pred_A for both")
    return _png(fig)


STYLE = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}figure{margin:1.5em 0}img{max-width:100%}"""


def to_html(report):
    from nnslicer.errors import require

    require("matplotlib", "analyses")
    esc = html.escape
    title = f"Compression report: {report.name_a} vs {report.name_b}"
    head = "".join(f'<tr><th class="l">{esc(label)}</th><td class="l">{esc(text)}</td></tr>'
                   for label, text in report.headline())
    rows = []
    for c, change in report.class_changes.items():
        survival = "-" if report.survival is None else _pct(report.survival[c])
        rows.append(f"<tr><td>{esc(report.label(c))}</td><td>{report.class_samples[c]}</td><td>{_pct(report.class_accuracy_a[c])}</td>"
                    f"<td>{_pct(report.class_accuracy_b[c])}</td><td>{change:+.2f} pp</td><td>{survival}</td></tr>")
    plots = [(_bars(report, [(f"A: {report.name_a}", report.class_accuracy_a),
                             (f"B: {report.name_b}", report.class_accuracy_b)], "accuracy", "Accuracy per class"),
              "Per-class accuracy of A (reference) and B (compressed)."),
             (_shift_plot(report), "Histogram of the confidence shift of A's predicted class, each group "
                                   "normalised to sum to 1.")]
    if report.survival is not None:
        plots.append((_bars(report, [("survival", report.survival)], "share of A's slice kept",
                            "Slice survival per class"),
                      "Share of the synapses of A's class slice that are also in B's."))
    if report.saliency_examples:
        plots.append((_saliency_plot(report), "Example saliency maps: flipped samples first, then the "
                                              "largest deviations."))
    figures = "\n".join(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
                        f"<figcaption>{esc(caption)}</figcaption></figure>" for data, caption in plots)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title><style>{STYLE}</style></head>
<body>
<h1>Compression report</h1>
<p><b>A</b> (reference): {esc(report.name_a)} &nbsp; <b>B</b> (compressed): {esc(report.name_b)} &nbsp;
{report.samples} samples, {len(report.classes)} classes</p>
<table>{head}</table>
<h2>Per class</h2>
<table><tr><th>class</th><th>samples</th><th>accuracy A</th><th>accuracy B</th><th>change</th><th>survival</th></tr>
{"".join(rows)}</table>
<h2>Plots</h2>
{figures}
</body></html>
"""
