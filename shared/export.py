"""SavedModels for TensorFlow Serving: ``OUT/serving/VERSION/`` with signatures on raw inputs.

An app's ``endpoints`` hook hands over tf.functions (with input signatures) that take raw inputs
(strings, encoded images, waveforms) and return decoded outputs; this module versions and writes
them, places model.keras beside them, and describes every signature from the functions
themselves (input specs and traced outputs), so no description is typed by hand.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path

from dlapps.shared import files, runtime
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
    """The whole ``export`` mode: the app's endpoints written as the next SavedModel version, or
    the model in another format (``--format``)."""
    from dlapps.shared import training

    model_dir = Path(model_dir)
    if options.out:
        training.Run.check_location(Path(options.out), resume=False)
    model = training.load_model(model_dir, app.name, compile=False)
    model_path = model_dir if model_dir.suffix == ".keras" else model_dir / "model.keras"
    out = Path(options.out) if options.out else (model_dir.parent if model_dir.suffix == ".keras" else model_dir)
    fmt = getattr(options, "format", "saved_model")
    if fmt == "keras":
        return {"format": "keras", "path": str(copy_model(model_path, out))}
    if fmt in ("onnx", "litert"):
        return export_core(app, model, out, fmt)
    endpoints = app.endpoints(model, options)
    signatures = {name: describe_signature(function) for name, function in endpoints.items()}
    path = write_saved_model(model, endpoints, out, app.export_resources(model))
    copy_model(model_path, out)
    return {"saved_model": str(path), "version": int(path.name), "signatures": signatures, **app.export_info(model)}


# --- the tensor core in other runtimes -------------------------------------------------------------

TOLERANCE = 1e-3  # largest difference to Keras's outputs an exported core may show


def example_inputs(model, batch: int = 2, length: int = 16):
    """Inputs a functional model takes, made from its Input specs: ids of 1 (a real token, not
    padding) for integer inputs, seeded normal values for float ones, bytes for uint8."""
    import numpy as np

    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise UserError(f"{model.name}: no tensor inputs to make an example of; the app must give core_example")
    rng = np.random.default_rng(0)
    made = []
    for spec in inputs:
        shape = [batch] + [length if d is None else d for d in spec.shape[1:]]
        dtype = str(spec.dtype)
        if "int" in dtype and dtype != "uint8":
            made.append(np.ones(shape, dtype=dtype))
        elif dtype == "uint8":
            made.append(rng.integers(0, 256, shape).astype("uint8"))
        else:
            made.append(rng.normal(size=shape).astype(dtype))
    return made[0] if len(made) == 1 else made


def _as_list(values):
    """Arrays in a fixed order: a dict's by sorted key, as the exported core takes them."""
    import numpy as np

    if isinstance(values, dict):
        return [np.asarray(values[k]) for k in sorted(values)]
    if isinstance(values, (list, tuple)):
        return [np.asarray(v) for v in values]
    return [np.asarray(values)]


def _check(app, fmt: str, expected, got, runtime: str) -> dict:
    import numpy as np

    expected, got = _as_list(expected), _as_list(got)
    if len(expected) != len(got) or any(e.shape != g.shape for e, g in zip(expected, got)):
        raise UserError(f"{app.name}: the {fmt} model's outputs {[g.shape for g in got]} differ in shape from Keras's {[e.shape for e in expected]}")
    difference = max(float(np.max(np.abs(e.astype("float64") - g.astype("float64")))) if e.size else 0.0 for e, g in zip(expected, got))
    if any(np.isnan(g.astype("float64")).any() and not np.isnan(e.astype("float64")).any() for e, g in zip(expected, got)):
        raise UserError(f"{app.name}: the {fmt} model answers NaN where Keras answers numbers (an op it converts wrongly); not written")
    if not difference <= TOLERANCE:
        raise UserError(f"{app.name}: the {fmt} model differs from Keras's by {difference:.3g} (over {TOLERANCE}); not written")
    return {"runtime": runtime, "max_abs_difference": difference}


def export_core(app, model, out: Path, fmt: str) -> dict:
    """The Keras model (the tensor core: ids, pixels or features in, scores out) as ONNX or
    LiteRT, run in its own runtime on example inputs and compared with Keras before it is kept.
    Raw-input handling (tokenising, decoding images, NMS, beam search) lives in the SavedModel;
    these formats do not carry string tensors, so it stays there."""
    try:
        return _export_core(app, model, out, fmt)
    except UserError:
        raise
    except Exception as error:  # a converter's trace error: the format cannot take this model
        text = str(error).strip()
        raise UserError(f"{app.name}: its model cannot be written as {fmt} ({text.splitlines()[0][:200] if text else type(error).__name__})")


def _export_core(app, model, out: Path, fmt: str) -> dict:
    import tempfile

    import numpy as np

    example = app.core_example(model)
    expected = model(example, training=False)
    expected = {k: np.asarray(v) for k, v in expected.items()} if isinstance(expected, dict) else (
        [np.asarray(v) for v in expected] if isinstance(expected, (list, tuple)) else np.asarray(expected))
    out.mkdir(parents=True, exist_ok=True)
    target = out / ("model.onnx" if fmt == "onnx" else "model.tflite")
    with tempfile.TemporaryDirectory(dir=out) as scratch:
        path = Path(scratch) / target.name
        feeds = _as_list(example)
        if fmt == "onnx":
            try:
                import onnxruntime
            except ImportError:
                raise UserError("--format onnx needs tf2onnx and onnxruntime: pip install 'dlapps[export]'")
            try:
                with runtime.quiet_stderr(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.export(str(path), format="onnx", verbose=False)
            except Exception as error:
                raise UserError(f"{app.name}: its model cannot be written as ONNX ({str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__})")
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            names = [i.name for i in session.get_inputs()]
            if isinstance(example, dict) and set(names) == set(example):
                feed = {name: np.asarray(example[name]) for name in names}
            else:
                feed = dict(zip(names, feeds))
            got = session.run(None, feed)
            checked = _check(app, fmt, expected, got if len(got) > 1 else got[0], f"onnxruntime {onnxruntime.__version__}")
        else:
            checked = _litert(app, model, feeds, expected, path)
        os.replace(path, target)
    inputs = ", ".join(f"{getattr(i, 'name', 'input')}: {i.dtype}{list(i.shape)}" for i in (model.inputs or [])) or "see core_example"
    return {"format": fmt, "path": str(target), "inputs": inputs, "checked": checked,
            "note": "the tensor core only: raw-input handling (tokenising, image decoding, decoding of outputs) is in the SavedModel"}


def _litert(app, model, feeds, expected, path: Path) -> dict:
    try:
        from ai_edge_litert.interpreter import Interpreter
        from importlib.metadata import version
    except ImportError:
        raise UserError("--format litert needs the LiteRT runtime: pip install 'dlapps[export]'")
    try:
        with runtime.quiet_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.export(str(path), format="litert", verbose=False)  # Keras's own converter settings
    except Exception as error:
        text = str(error)
        custom = re.search(r"Custom ops: ([\w, ]+)", text)
        if "tensor list" in text.lower() or "Flex" in text or "Select TF ops" in text:
            reason = "its recurrent layers need TensorFlow's own ops (Flex), which the LiteRT runtime does not ship"
        elif custom:
            reason = f"LiteRT has no builtin op for {custom.group(1).strip()}"
        else:
            reason = text.strip().splitlines()[0][:200] if text.strip() else type(error).__name__
        raise UserError(f"{app.name}: its model cannot be converted to LiteRT builtin ops ({reason}); use --format onnx or saved_model")
    # the signature runner maps outputs by name (the plain output list comes in no set order)
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    input_names = list(runner.get_input_details())
    try:
        with runtime.quiet_stderr():
            answer = runner(**dict(zip(input_names, feeds)))
    except RuntimeError as error:
        if "Flex" not in str(error):
            raise
        raise UserError(f"{app.name}: its model cannot be converted to LiteRT builtin ops (it needs TensorFlow's own ops "
                        "(Flex), which the LiteRT runtime does not ship); use --format onnx or saved_model")
    got = {name: answer[name] for name in sorted(answer)} if isinstance(expected, dict) else list(answer.values())
    if not isinstance(got, dict):
        got = got if len(got) > 1 else got[0]
    return _check(app, "litert", expected, got, f"ai-edge-litert {version('ai-edge-litert')}")
