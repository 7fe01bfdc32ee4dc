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


# glibc's mallopt parameters (malloc.h) and its defaults, restored after training
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
GLIBC_DEFAULTS = {M_TRIM_THRESHOLD: 128 * 1024, M_TOP_PAD: 128 * 1024, M_MMAP_THRESHOLD: 128 * 1024}


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30):
    """Makes glibc keep freed memory for reuse instead of handing it back to the kernel; returns
    the function that restores glibc's defaults (and hands the kept memory back).

    Why: a training step allocates tens of temporaries of 0.1-4 MB (word2vec: the batch's
    vectors, scores, updates). TensorFlow pins glibc's mmap threshold at 128 KiB (see
    `_let_tensorflow_set_its_threshold`), so each of them is mmap'ed and munmap'ed again on free
    and its pages fault in fresh, zeroed by the kernel, every step: about 180 page faults per
    1024-word step. What a fault costs depends on the machine (virtualisation, transparent huge
    pages, the kernel's memory accounting), which is what made the training time vary
    several-fold between machines, mostly as kernel time. With these settings a step reuses the
    memory the previous one freed (about 11 faults per step). Nothing happens where the C
    library is not glibc. The restored threshold (128 KiB) is also the one TensorFlow sets."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return lambda: None
    try:
        libc = ctypes.CDLL(None)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    _let_tensorflow_set_its_threshold()
    mallopt(M_MMAP_THRESHOLD, mmap_threshold)  # 32 MiB is the largest glibc accepts on 64-bit
    mallopt(M_TRIM_THRESHOLD, trim_threshold)
    mallopt(M_TOP_PAD, 64 << 20)

    def restore():
        for parameter, value in GLIBC_DEFAULTS.items():
            mallopt(parameter, value)
        malloc_trim(0)

    return restore


def _let_tensorflow_set_its_threshold() -> None:
    """TensorFlow's from_generator kernel calls mallopt(M_MMAP_THRESHOLD, 128 KiB) the first
    time one is built in a process (tensorflow::data::ApplyPython311MemoryPatch, its remedy for
    a Python 3.11 memory growth). Keras builds the training pipeline's kernel only when the first
    epoch starts, after `on_train_begin`, which would undo `keep_freed_memory`; building a
    one-element generator here spends TensorFlow's one call first."""
    import sys

    if "tensorflow" not in sys.modules:
        return
    import tensorflow as tf

    probe = tf.data.Dataset.from_generator(lambda: iter([0]), output_signature=tf.TensorSpec([], tf.int32))
    for _ in probe:
        pass
