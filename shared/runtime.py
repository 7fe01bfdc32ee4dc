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


class quiet_stderr:
    """Sends file descriptor 2 to /dev/null for a block: the C++ parts of TensorFlow's converters
    print pages of MLIR diagnostics there before the exception that says it in one line."""

    def __enter__(self):
        if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
            self.saved = None
            return self
        sys.stderr.flush()
        self.saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            sys.stderr.flush()
            os.dup2(self.saved, 2)
            os.close(self.saved)
        return False
