"""The benchmark scripts' tables show what their headings say."""

import os
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.append(BENCHMARKS)  # after everything else: its modules shadow nothing

import adversarial  # noqa: E402


def _row(detector, attack, point, f1):
    return {"model": "m/d", "detector": detector, "family": adversarial.DETECTORS[detector][0],
            "attack": attack, "operating_point": point, "precision": f1, "recall": f1, "f1": f1, "auroc": 0.5}


def test_adversarial_per_attack_table_shows_the_own_rule():
    det = "feature_map/forest/-2"
    rows = [_row(det, attack, point, f1)
            for attack, fs in {"FGSM_0.05": (0.11, 0.91), "PGD_0.1": (0.33, 0.93)}.items()
            for point, f1 in zip((adversarial.RULE, "20%"), fs)]
    meta = {"model": "m/d", "test_accuracy": 0.9, "fit_images": 10, "clean_images": 4,
            "attacks": {"FGSM_0.05": {"successes": 2}, "PGD_0.1": {"successes": 2}}}
    result = {"summary": adversarial.summarise(rows, [meta], "m/d"), "paper": adversarial.PAPER,
              "models": [meta], "rows": rows, "settings": {}}
    text = adversarial.markdown(result)
    per_attack = text.split("F1 (AUROC) per attack")[1]
    assert "| FGSM_0.05 | 2 | 0.11 (0.50) |" in per_attack
    assert "| PGD_0.1 | 2 | 0.33 (0.50) |" in per_attack
    assert "| mean |  | 0.220 (0.500) |" in per_attack
    assert result["summary"]["feature_map_f1"] == pytest.approx(0.22)
    assert result["summary"]["f1_at_matched_false_alarms"]["20%"]["feature_map"] == pytest.approx(0.92)


def test_markdown_table_escapes_pipes_in_cells():
    from common import markdown_table

    text = markdown_table(["a", "|x|"], [[0.5, "b|c"]])
    assert text.splitlines() == ["| a | \\|x\\| |", "|---|---|", "| 0.500 | b\\|c |"]


def test_layer_ranking_linf_best_is_a_single_criterion():
    import layer_ranking

    rows = [f"{n}/{t}" for n, t in layer_ranking.safer_rows("vanilla")]
    cells = {}
    for row in rows:  # combined best overall; fit best with linf; gradient best with l1
        cells[("vanilla", row, "combined", "linf")] = (50.0, 0.9, 0.8, 10)
        cells[("vanilla", row, "fit", "linf")] = (30.0, 0.7, 0.6, 10)
        cells[("vanilla", row, "gradient", "l1")] = (40.0, 0.5, 0.4, 10)
        cells[("vanilla", row, "gradient", "linf")] = (10.0, 0.5, 0.4, 10)
        cells[("vanilla", row, layer_ranking.GT_CHECK, "linf")] = (60.0, 0.9, 0.9, 10)
        cells[("vanilla", row, layer_ranking.INPUT_FIRST, "linf")] = (55.0, 0.8, 0.8, 10)
    summary, _ = layer_ranking.summarize(cells, ["vanilla"])
    assert summary["vanilla_best_criterion"] == "combined"
    assert (summary["vanilla_best_linf_criterion"], summary["vanilla_best_linf_exact"]) == ("fit", 30.0)
    assert summary["vanilla_ground_truth_redraw_exact"] == 60.0 and summary["vanilla_input_first_exact"] == 55.0


@pytest.mark.parametrize("family", ["vanilla", "skip", "skip_sd", "transformer"])
def test_layer_ranking_blocks_are_the_drawn_ones(family):
    """--ranked blocks keeps exactly the 2-6 blocks a model's draw made, in model order, in its
    ground truths and scores alike."""
    import numpy as np

    import layer_ranking

    model, desc = layer_ranking.build(family, np.random.default_rng(3))
    weighted = [layer.name for layer in model.layers if layer.weights]
    n = len(weighted)
    rec = {"family": family, "layers": weighted,
           "truth": {"pepper/weights": {"drop": list(range(n)), "change": list(range(n))}},
           "truth_halves": {"pepper/weights": {"drop": [list(range(n))] * 2, "change": [list(range(n))] * 2}},
           "scores": {"fit": {"linf": [10.0 * i for i in range(n)]}}}
    out = layer_ranking.blocks_only(rec)
    assert len(out["layers"]) == desc.get("blocks", desc.get("sublayers"))
    kept = [weighted.index(name) for name in out["layers"]]
    assert kept == sorted(kept) and out["truth"]["pepper/weights"]["drop"] == kept
    assert out["truth_halves"]["pepper/weights"]["change"] == [kept, kept]
    assert out["scores"]["fit"]["linf"] == [10.0 * i for i in kept] and rec["layers"] == weighted
