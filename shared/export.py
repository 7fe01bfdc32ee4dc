"""SavedModels for TensorFlow Serving: ``OUT/serving/VERSION/`` with signatures on raw inputs.

An app's ``endpoints`` hook hands over tf.functions (with input signatures) that take raw inputs
(strings, encoded images, waveforms) and return decoded outputs; this module versions and writes
them, places model.keras beside them, and describes every signature from the functions
themselves (input specs and traced outputs), so no description is typed by hand.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dlapps.shared import files
from dlapps.shared.errors import UserError


def next_version(serving_dir: Path) -> int:
    """TensorFlow Serving loads the highest integer-named subfolder; each export adds the next one."""
    versions = [int(p.name) for p in serving_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def _spec_text(spec) -> str:
    dims = ", ".join("N" if i == 0 and d is None else ("?" if d is None else str(d)) for i, d in enumerate(spec.shape))
    return f"{spec.dtype.name}[{dims}]"


def describe_signature(function) -> str:
    """'(text: string[N]) -> label: string[N], probability: float32[N]' from a tf.function's
    input signature and the outputs it traces to."""
    import tensorflow as tf

    inputs = ", ".join(f"{spec.name}: {_spec_text(spec)}" for spec in function.input_signature)
    outputs = function.get_concrete_function().structured_outputs
    if isinstance(outputs, dict):
        shown = ", ".join(f"{name}: {_spec_text(tf.TensorSpec.from_tensor(t))}" for name, t in outputs.items())
    else:
        shown = _spec_text(tf.TensorSpec.from_tensor(outputs))
    return f"({inputs}) -> {shown}"


def write_saved_model(model, endpoints: dict, out_dir: str | Path, extra_tracked=()) -> Path:
    """Writes `model` with `endpoints` ({signature name: tf.function}) to OUT/serving/N/.

    ``serving_default`` is what TF Serving's REST ``:predict`` calls when no signature is named.
    Written to a temporary folder and renamed, so a failed export leaves no partial version.
    """
    import keras

    if "serving_default" not in endpoints:
        raise ValueError("an export needs a serving_default endpoint")
    serving_dir = Path(out_dir) / "serving"
    try:
        serving_dir.mkdir(parents=True, exist_ok=True)
    except PermissionError as error:
        raise UserError(f"{out_dir}: cannot export here ({error.strerror})")
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
    except PermissionError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"{out_dir}: cannot export here ({error.strerror})")
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = serving_dir / str(version)
    os.replace(tmp, final)
    return final


def copy_model(model_path: Path, out_dir: Path) -> Path:
    """Places model.keras beside the SavedModel when exporting into another folder."""
    target = Path(out_dir) / "model.keras"
    if Path(model_path).resolve() != target.resolve():
        files.copy_file(model_path, target)
    return target


def export(app, model_dir: str | Path, options) -> dict:
    """The whole ``export`` mode: the app's endpoints written as the next SavedModel version."""
    from dlapps.shared import training

    model_dir = Path(model_dir)
    if options.out:
        training.Run.check_location(Path(options.out), resume=False)
    model = training.load_model(model_dir, app.name)
    model_path = model_dir if model_dir.suffix == ".keras" else model_dir / "model.keras"
    out = Path(options.out) if options.out else (model_dir.parent if model_dir.suffix == ".keras" else model_dir)
    endpoints = app.endpoints(model, options)
    signatures = {name: describe_signature(function) for name, function in endpoints.items()}
    path = write_saved_model(model, endpoints, out, app.export_resources(model))
    copy_model(model_path, out)
    return {"saved_model": str(path), "version": int(path.name), "signatures": signatures}
