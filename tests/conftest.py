"""Shared test settings."""

import os

# Quiet TensorFlow before any test module imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


import pytest  # noqa: E402


@pytest.fixture(params=["numba", "numpy"])
def each_kernel(request, monkeypatch):
    """Run a test with the fused numba kernels and with the numpy path: both must agree."""
    import nnslicer.ops.base as base

    monkeypatch.setattr(base, "KERNELS", request.param)
    return request.param
