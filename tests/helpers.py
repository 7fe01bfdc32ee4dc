"""Helpers every app's tests call with keyword arguments: run the CLI in-process and as a
subprocess, check one-line errors, and load an exported SavedModel in a fresh Python process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from typer.testing import CliRunner

# TensorFlow's C++ logging stays out of the captured output of subprocesses.
QUIET_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}


def run_cli(*args: str, input: str | None = None):
    """`dlapps ARGS` through typer's CliRunner; returns the click Result (stdout, stderr, exit_code)."""
    from dlapps.apps.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def run_subprocess(*args: str, input: str | None = None, env: dict | None = None, timeout: int = 300, cwd=None):
    """`python -m dlapps.apps ARGS` in a new process, as a user's shell would run `dlapps`."""
    return subprocess.run(
        [sys.executable, "-m", "dlapps.apps", *map(str, args)],
        input=input,
        capture_output=True,
        text=True,
        env={**QUIET_ENV, **(env or {})},
        timeout=timeout,
        cwd=cwd,
    )


def assert_ok(result) -> None:
    output = getattr(result, "output", "") or getattr(result, "stdout", "")
    stderr = result.stderr or ""
    code = getattr(result, "exit_code", getattr(result, "returncode", None))
    exception = getattr(result, "exception", None)
    assert code == 0, f"exit {code}\nstdout:\n{output}\nstderr:\n{stderr}\nexception: {exception!r}"


def assert_user_error(result, *fragments: str) -> str:
    """Exit status 2, no traceback, and exactly one line on stderr that contains every fragment."""
    code = getattr(result, "exit_code", getattr(result, "returncode", None))
    stderr = (result.stderr or "").strip()
    assert code == 2, f"expected exit 2, got {code}\nstdout: {result.stdout}\nstderr: {stderr}"
    assert "Traceback" not in stderr and "Traceback" not in (result.stdout or ""), stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def saved_model_outputs(path: str | Path, inputs: dict, signature: str = "serving_default", binary: tuple = ()) -> dict:
    """Calls a SavedModel signature in a fresh Python process that imports only TensorFlow (never
    dlapps), as TF Serving would; `inputs` maps argument names to JSON-able lists. Returns lists.
    Inputs named in `binary` are lists of bytes (encoded images, audio): sent as base64, passed on
    as raw bytes, as TF Serving does with {"b64": ...}."""
    import base64

    inputs = {name: [base64.b64encode(v).decode("ascii") for v in value] if name in binary else value
              for name, value in inputs.items()}
    script = textwrap.dedent(
        f"""
        import json, sys
        import tensorflow as tf
        assert not any(m == "dlapps" or m.startswith("dlapps.") for m in sys.modules)
        loaded = tf.saved_model.load({str(path)!r})
        function = loaded.signatures[{signature!r}]
        specs = function.structured_input_signature[1]
        inputs = json.loads(sys.stdin.read())
        import base64
        for name in {tuple(binary)!r}:
            inputs[name] = [base64.b64decode(v) for v in inputs[name]]
        tensors = {{name: tf.constant(value, dtype=specs[name].dtype) for name, value in inputs.items()}}
        outputs = function(**tensors)
        def plain(t):
            value = t.numpy()
            if value.dtype == object:
                return [v.decode("utf-8") for v in value.reshape(-1)] if value.ndim else value.decode("utf-8")
            return value.tolist()
        assert not any(m == "dlapps" or m.startswith("dlapps.") for m in sys.modules)
        print(json.dumps({{name: plain(t) for name, t in outputs.items()}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(inputs),
        capture_output=True,
        text=True,
        env=QUIET_ENV,
        timeout=300,
        cwd="/",  # away from the checkout: nothing of the project is importable by accident
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def snapshot(folder: str | Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: to show that a failed command changed nothing."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# Modules `dlapps --help`, `dlapps APP --help` and listings must never import: they take seconds.
HEAVY_MODULES = ("tensorflow", "keras", "keras_hub", "tensorflow_datasets", "gensim")


def heavy_imports_of(*args: str, more: tuple = ()) -> tuple[list[str], str]:
    """Runs `dlapps ARGS` (help or a listing), then each command of `more`, in one fresh process;
    returns the heavy modules they imported and what they printed. Fails when a command fails."""
    commands = [list(args), *map(list, more)]
    script = textwrap.dedent(
        f"""
        import sys
        from dlapps.apps.cli import app
        for command in {commands!r}:
            try:
                app(command, prog_name="dlapps")
            except SystemExit as exit:
                assert exit.code in (0, None), (command, exit.code)
        print("HEAVY:", [m for m in {HEAVY_MODULES!r} if m in sys.modules])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=QUIET_ENV, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    output, _, heavy = done.stdout.rpartition("HEAVY: ")
    return json.loads(heavy.strip().replace("'", '"')), output


def kill_training_after(*args: str, metadata: Path, epochs: int, timeout: int = 240) -> int:
    """Starts `dlapps ARGS` (a train command) in a new process and SIGKILLs it once `metadata`
    (BackupAndRestore's training_metadata.json) records `epochs` finished epochs, or the process
    ends, or `timeout` seconds pass. Returns the finished epochs the backup holds."""
    import signal
    import time

    process = subprocess.Popen(
        [sys.executable, "-m", "dlapps.apps", *map(str, args)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=QUIET_ENV,
    )

    def finished() -> int:
        return json.loads(metadata.read_text() or "{}").get("epoch", 0) if metadata.exists() else 0

    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and finished() < epochs:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return json.loads(metadata.read_text())["epoch"]
