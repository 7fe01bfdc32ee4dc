"""TensorFlow, imported once and quietly: commands import it only when they need it, so that a
bad option or a missing file is reported without waiting seconds for TensorFlow to load."""

from __future__ import annotations

import os
import sys


def import_tensorflow() -> None:
    """Imports TensorFlow with its C++ start-up log lines (oneDNN, CUDA probing) kept off the
    terminal; TF_CPP_MIN_LOG_LEVEL=0 in the environment shows them again."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
