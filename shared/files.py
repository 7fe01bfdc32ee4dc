"""Atomic writes: every file dlapps writes goes to a temporary name in the same folder first and
is renamed over the target, so an interrupted command never leaves a half-written file where a
good one was."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Calls `write(tmp)` for a temporary path beside `path`, then renames it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name ends with the whole target name: writers that check suffixes (Keras's
    # ".weights.h5", NumPy's ".npz") accept it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=f"-{path.name}")
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; run folders are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def write_bytes(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=json_default) + "\n")


def json_default(value):
    """NumPy scalars and arrays (and anything else printable) in JSON."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def copy_file(source: str | Path, target: str | Path) -> Path:
    return write_atomic(target, lambda tmp: shutil.copyfile(source, tmp))


def save_figure(figure, path: str | Path, dpi: int = 80) -> Path:
    """A matplotlib figure as PNG, atomically; closes the figure."""
    import matplotlib.pyplot as plt

    try:
        return write_atomic(path, lambda tmp: figure.savefig(tmp, dpi=dpi, format="png"))
    finally:
        plt.close(figure)
