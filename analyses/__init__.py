"""Applications built on nnslicer's public API."""
