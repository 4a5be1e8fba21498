"""Shared test settings."""

import os

# Quiet TensorFlow before any test module imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
