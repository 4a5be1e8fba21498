"""The benchmark scripts' tables show what their headings say."""

import os
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCHMARKS)

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
