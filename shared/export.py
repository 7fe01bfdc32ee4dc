"""SavedModels for TensorFlow Serving: ``OUT/serving/VERSION/`` with signatures on raw inputs.

An app hands over its Keras model and tf.functions (with input signatures) that take raw inputs
(strings, encoded images, waveforms) and return decoded outputs; this module versions and writes them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import UserError


def next_version(serving_dir: Path) -> int:
    """TensorFlow Serving loads the highest integer-named subfolder; each export adds the next one."""
    versions = [int(p.name) for p in serving_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def write_saved_model(model, endpoints: dict, out_dir: str | Path, extra_tracked=()) -> Path:
    """Writes `model` with `endpoints` ({signature name: tf.function}) to OUT/serving/N/.

    The first endpoint named ``serving_default`` is what TF Serving's REST ``:predict`` calls.
    Written to a temporary folder and renamed, so a failed export leaves no partial version.
    """
    import keras

    if "serving_default" not in endpoints:
        raise ValueError("an export needs a serving_default endpoint")
    serving_dir = Path(out_dir) / "serving"
    serving_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(serving_dir)
    tmp = serving_dir / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    archive = keras.export.ExportArchive()
    archive.track(model)
    for resource in extra_tracked:
        archive.track(resource)
    for name, function in endpoints.items():
        archive.add_endpoint(name, function)
    try:
        archive.write_out(str(tmp), verbose=False)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = serving_dir / str(version)
    os.replace(tmp, final)
    return final


def copy_model(model_dir: Path, out_dir: Path) -> Path:
    """Places model.keras beside the SavedModel when exporting into another folder."""
    source, target = Path(model_dir) / "model.keras", Path(out_dir) / "model.keras"
    if not source.exists():
        raise UserError(f"{source}: no trained model to export")
    if source.resolve() != target.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(".model.tmp.keras")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    return target
