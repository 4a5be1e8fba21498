"""The examples in the docstrings run and say what they print."""

import doctest
import importlib

import pytest

MODULES = ["nnslicer.backward.rules", "nnslicer.slice", "nnslicer.graph", "nnslicer.keras.lifting",
           "nnslicer.keras.run", "nnslicer.slicer", "nnslicer.models", "nnslicer.pictures.dot",
           "analyses.layer_importance", "analyses.budgets", "analyses.quantization", "analyses.faults",
           "analyses.compression", "analyses.compression_report", "nnslicer.profiling", "nnslicer.datasets",
           "analyses.adversarial", "nnslicer.validation", "analyses.pruning", "analyses.unit_scores",
           "analyses.unit_pruning"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
