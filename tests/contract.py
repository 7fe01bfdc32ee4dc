"""The contract suite: what every app promises, checked for every app.

An app's test file subclasses :class:`AppContract` with class attributes (keras-hub's
``run_task_test(**kwargs)`` idea, as a class) and gets every test below; it adds only what is
particular to the app. One tiny model per app is trained once per test run (``run_dir``).

    class TestContract(AppContract):
        app = "sentiment"
        train_args = ("--demo-size", "1200", "--lstm-units", "16", "--epochs", "4")
        inputs = ("the plot was not boring", "the acting was superb")
        ...
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import numpy as np
import pytest

from .helpers import (
    assert_ok,
    assert_user_error,
    heavy_imports_of,
    kill_training_after,
    run_cli,
    run_subprocess,
    saved_model_outputs,
    snapshot,
)


def history_column(run_dir: Path, name: str) -> list[float]:
    lines = (run_dir / "history.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [float(row.split(",")[header.index(name)]) for row in lines[1:]]


def assert_trained_in_mixed_precision(run_dir: Path) -> None:
    assert all(np.isfinite(history_column(run_dir, "loss")))
    assert json.loads((run_dir / "config.json").read_text())["mixed_precision"] is True


def predict_json(app: str, run_dir: Path, inputs, *options) -> list[dict]:
    result = run_cli(app, "predict", *inputs, "--model", run_dir, "--json", *options)
    assert_ok(result)
    return [json.loads(line) for line in result.output.splitlines() if line.strip()]


def rest_outputs(path: Path, app: str, arguments: dict, binary: tuple, signature: str) -> dict:
    """The outputs `dlapps serve` gives for a columnar :predict request (binary inputs as b64)."""
    import base64

    from dlapps.shared import serve

    inputs = {name: [{"b64": base64.b64encode(v).decode("ascii")} for v in value] if name in binary else value
              for name, value in arguments.items()}
    servable = serve.Servable(app, 1, path).load()
    answer = serve.predict(servable, {"signature_name": signature, "inputs": inputs}, serve.Limits())["outputs"]
    return answer if isinstance(answer, dict) else {next(iter(servable.signatures[signature].structured_outputs)): answer}


def assert_same_outputs(expected: dict, got: dict) -> None:
    assert set(expected) == set(got), (sorted(expected), sorted(got))
    for name, value in expected.items():
        a, b = np.asarray(value, dtype=object).ravel(), np.asarray(got[name], dtype=object).ravel()
        assert a.shape == b.shape, name
        if a.size and isinstance(a[0], str):
            assert a.tolist() == b.tolist(), name
        else:
            np.testing.assert_allclose(a.astype("float64"), b.astype("float64"), atol=1e-5, err_msg=name)


_TRAINED: dict = {}


def trained(tmp_path_factory, app: str, *args) -> Path:
    """`dlapps APP train ARGS` once per test run: the contract suite and an app's own tests that
    ask with the same arguments share one run folder."""
    key = (app, *map(str, args))
    if key not in _TRAINED:
        out = tmp_path_factory.mktemp(app) / "run"
        result = run_cli(app, "train", "--out", out, *args)
        assert_ok(result)
        _TRAINED[key] = out
    return _TRAINED[key]


class AppContract:
    """Every test an app must pass. Subclasses set the attributes and may override the hooks."""

    app: str = ""
    # Flags of a tiny demo training run (seconds on 2 cores); `epochs` and `out` are added.
    train_args: tuple = ()
    epochs: int = 3
    # Figures in metrics.json that show the model learned the demo: {key: (low, high)}.
    learned: dict = {}
    # Epochs the killed run is started with (it is killed after the first), and options that make
    # its epochs smaller than train_args' (appended: the last of a repeated option wins).
    resume_epochs: int = 30
    resume_args: tuple = ()
    # Predict's positional inputs (strings; "paths" apps override `make_inputs`).
    inputs: tuple = ()
    predict_options: tuple = ()
    # Options of the export test's `export`, given to the `predict` it is compared with too.
    export_options: tuple = ()
    # Keys `evaluate --json` must return.
    evaluate_keys: tuple = ()
    # A tensorflow-datasets name the app reads (checked offline with tfds.testing.mock_data).
    tfds_name: str = ""
    tfds_train_args: tuple = ()
    # App-specific bad training input: (files {name: bytes}, args with {tmp}, fragments of the error line).
    bad_train_inputs: list = []

    # --- hooks ---------------------------------------------------------------------------------
    def make_inputs(self, tmp_path: Path) -> list[str]:
        """Predict's positional inputs; files are written under `tmp_path`."""
        return list(self.inputs)

    def check_predictions(self, rows: list[dict], inputs: list[str]) -> None:
        """App-specific expectations on `predict --json` rows."""
        assert len(rows) == len(inputs)

    def serving_call(self, inputs: list[str]) -> tuple[dict, tuple, str]:
        """(signature inputs, names of binary inputs, signature name) for the SavedModel."""
        return {"text": list(inputs)}, (), "serving_default"

    def evaluate_args(self, tmp_path: Path) -> list[str]:
        """Options `evaluate` needs besides --model (default: none: the run's validation split)."""
        return []

    def check_served(self, served: dict, rows: list[dict]) -> None:
        """The SavedModel's outputs equal predict's rows."""
        raise NotImplementedError

    def check_other_signatures(self, saved_model: Path, exported: dict, run_dir: Path, inputs: list[str]) -> None:
        """The export test's SavedModel's further signatures (default: none to check); `exported`
        is export's --json line. One export serves every signature's check: each costs seconds of tracing."""

    # --- one tiny training run per app ---------------------------------------------------------
    @pytest.fixture(scope="class")
    def run_dir(self, tmp_path_factory):
        return trained(tmp_path_factory, self.app, "--epochs", str(self.epochs), *self.train_args)

    # --- train ---------------------------------------------------------------------------------
    def test_learns_its_demo(self, run_dir):
        metrics = json.loads((run_dir / "metrics.json").read_text())
        loss = history_column(run_dir, "loss")
        assert loss[-1] < loss[0], f"training loss did not fall: {loss}"
        for key, (low, high) in self.learned.items():
            assert low <= metrics[key] <= high, f"{key} = {metrics[key]}, expected in [{low}, {high}]"

    def test_run_folder_is_complete_and_nothing_is_left_behind(self, run_dir):
        for name in ("config.json", "model.keras", "history.csv", "curves.png", "metrics.json"):
            assert (run_dir / name).exists(), name
        assert not (run_dir.parent / f".{run_dir.name}.training").exists()
        assert not (run_dir.parent / f".{run_dir.name}.lock").exists()
        assert json.loads((run_dir / "config.json").read_text())["epochs"] == self.epochs

    def test_help_imports_no_tensorflow(self):
        modes = [(self.app, mode, "--help") for mode in ("train", "predict", "evaluate", "export")]
        heavy, output = heavy_imports_of(self.app, "--help", more=modes)
        assert heavy == [], f"dlapps {self.app} help imported {heavy}"
        assert output.count("Usage") == 5

    def test_failed_train_leaves_the_run_folder_untouched(self, run_dir, tmp_path):
        before = snapshot(run_dir)
        missing = tmp_path / "missing-data"
        assert_user_error(run_cli(self.app, "train", "--out", run_dir, "--data", missing), "missing-data", "no such file")
        assert_user_error(run_cli(self.app, "train", "--out", run_dir, "--epochs", "0"), "--epochs", "at least 1")
        assert snapshot(run_dir) == before

    def test_a_second_train_into_a_locked_run_folder_gets_one_line(self, tmp_path):
        out = tmp_path / "run"
        with open(tmp_path / ".run.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock.write("pid 12345")
            lock.flush()
            result = run_cli(self.app, "train", "--out", out, "--epochs", "1", *self.train_args)
        assert_user_error(result, str(out), "another train is writing")
        assert not out.exists()

    @pytest.mark.parametrize(
        "args, fragments",
        [
            (["--epochs", "0"], ["--epochs must be at least 1, got 0"]),
            (["--batch-size", "0"], ["--batch-size must be at least 1"]),
            (["--learning-rate", "-1"], ["--learning-rate must be above 0 and at most 10"]),
            (["--val-fraction", "1.5"], ["--val-fraction"]),
            (["--strategy", "mirrorred"], ["strategy must be one of", "did you mean 'mirrored'"]),
            (["--resume"], ["no interrupted run to resume"]),
            (["--config", "{tmp}/missing.json"], ["missing.json", "config file not found"]),
            (["--config", "{tmp}/binary.json"], ["binary.json", "not valid JSON"]),
            (["--config", "{tmp}/typo.json"], ["typo.json", "did you mean 'epochs'"]),
            (["--data", "{tmp}/missing.csv"], ["missing.csv", "no such file or folder"]),
            (["--data", "tfds:"], ["tfds:NAME"]),
            (["--out", "{tmp}/file.txt/run"], ["file.txt"]),
        ],
    )
    def test_bad_train_options(self, tmp_path, args, fragments):
        (tmp_path / "binary.json").write_bytes(b"\x00\x01\x02\xff" * 10)
        (tmp_path / "typo.json").write_text('{"epohcs": 2}')
        (tmp_path / "file.txt").write_text("a file, not a folder")
        args = [a.replace("{tmp}", str(tmp_path)) for a in args]
        out = [] if "--out" in args else ["--out", tmp_path / "run"]
        result = run_cli(self.app, "train", *out, *args)
        assert_user_error(result, *fragments)

    def test_bad_app_specific_train_input(self, tmp_path):
        for files, args, fragments in self.bad_train_inputs:
            for name, content in files.items():
                (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / name).write_bytes(content)
            args = [a.replace("{tmp}", str(tmp_path)) for a in args]
            result = run_cli(self.app, "train", "--out", tmp_path / "run", "--epochs", "1", *self.train_args, *args)
            assert_user_error(result, *fragments)

    @pytest.mark.slow
    def test_resume_after_the_process_is_killed_in_mixed_precision(self, tmp_path):
        """Killed after an epoch, refused without --resume, resumed from the first unfinished epoch.
        In mixed precision, so that the one run (a process start, two tracings, the saves) also shows
        float16 training and its loss scale surviving a restart without NaN; a further architecture
        checks mixed precision on its own (AnotherArchitecture)."""
        out = tmp_path / "run"
        staging = tmp_path / ".run.training"
        command = [self.app, "train", "--out", str(out), *self.train_args, *self.resume_args, "--epochs", str(self.resume_epochs),
                   "--mixed-precision"]
        done = kill_training_after(*command, metadata=staging / "backup" / "training_metadata.json", epochs=1)
        assert 1 <= done < self.resume_epochs and not out.exists()
        assert_user_error(run_cli(self.app, "train", "--out", out, *self.train_args), "interrupted run", "--resume")
        result = run_cli(self.app, "train", "--out", out, "--resume", "--epochs", str(done + 1))
        assert_ok(result)
        epochs = [int(float(v)) for v in history_column(out, "epoch")]
        assert epochs[-1] == done, epochs  # the resumed run went on from the first unfinished epoch
        assert (out / "model.keras").exists() and not staging.exists()
        assert_trained_in_mixed_precision(out)

    def test_tfds_path_offline_with_mock_data(self, tmp_path):
        if not self.tfds_name:
            pytest.skip(f"{self.app} reads no tensorflow-datasets set")
        import tensorflow_datasets as tfds

        with tfds.testing.mock_data(num_examples=64):
            result = run_cli(self.app, "train", "--out", tmp_path / "run", "--epochs", "1",
                             "--data", f"tfds:{self.tfds_name}", *self.tfds_train_args)
        assert_ok(result)
        assert (tmp_path / "run" / "model.keras").exists()

    # --- predict / evaluate --------------------------------------------------------------------
    def test_predict_json(self, run_dir, tmp_path):
        inputs = self.make_inputs(tmp_path)
        rows = predict_json(self.app, run_dir, inputs, *self.predict_options)
        self.check_predictions(rows, inputs)

    def test_predict_table_output_has_a_line_per_result(self, run_dir, tmp_path):
        inputs = self.make_inputs(tmp_path)
        result = run_cli(self.app, "predict", *inputs, "--model", run_dir, *self.predict_options)
        assert_ok(result)
        assert len(result.output.strip().splitlines()) >= 1

    def test_evaluate_json(self, run_dir, tmp_path):
        result = run_cli(self.app, "evaluate", "--model", run_dir, "--json", *self.evaluate_args(tmp_path))
        assert_ok(result)
        metrics = json.loads(result.output)
        for key in self.evaluate_keys:
            assert key in metrics, f"{key} missing from {sorted(metrics)}"

    def test_model_errors_are_one_line(self, tmp_path):
        assert_user_error(run_cli(self.app, "evaluate", "-m", tmp_path / "nothing"), "no trained model here", f"dlapps {self.app} train")
        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "model.keras").write_bytes(b"not a zip file")
        assert_user_error(run_cli(self.app, "evaluate", "-m", broken), "model.keras", "not a readable Keras model")
        assert_user_error(run_cli(self.app, "export", "-m", tmp_path / "nothing"), "no trained model here")

    def test_another_models_file_is_refused(self, tmp_path):
        import keras

        plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        folder = tmp_path / "plain"
        folder.mkdir()
        plain.save(folder / "model.keras")
        assert_user_error(run_cli(self.app, "evaluate", "-m", folder), "model.keras", f"not one that dlapps {self.app} trained")

    def test_errors_as_a_subprocess_have_no_traceback_and_verbose_shows_one(self, tmp_path):
        quiet = run_subprocess(self.app, "export", "-m", tmp_path / "nothing")
        assert_user_error(quiet, "no trained model here")
        loud = run_subprocess(self.app, "export", "-m", tmp_path / "nothing", "--verbose")
        assert loud.returncode == 2 and "Traceback" in loud.stderr

    # --- export --------------------------------------------------------------------------------
    def test_keras_file_round_trip(self, run_dir, tmp_path):
        from dlapps.shared import training

        model = training.load_model(run_dir, self.app)
        clone = type(model).from_config(model.get_config())
        assert clone.get_config() == model.get_config()
        copy = tmp_path / "copy.keras"
        model.save(copy)
        reloaded = training.load_model(copy, self.app)
        for saved, loaded in zip(model.weights, reloaded.weights):
            assert np.array_equal(np.asarray(saved), np.asarray(loaded))

    def test_export_answers_as_predict_in_a_fresh_process_without_dlapps(self, run_dir, tmp_path):
        out = tmp_path / "exported"
        result = run_cli(self.app, "export", "--model", run_dir, "--out", out, "--json", *self.export_options)
        assert_ok(result)
        exported = json.loads(result.output.strip().splitlines()[-1])
        assert exported["version"] == 1 and (out / "model.keras").exists()
        assert (out / "serving" / "1" / "saved_model.pb").exists() and "serving_default" in exported["signatures"]
        inputs = self.make_inputs(tmp_path)
        rows = predict_json(self.app, run_dir, inputs, *self.predict_options, *self.export_options)
        arguments, binary, signature = self.serving_call(inputs)
        served = saved_model_outputs(out / "serving" / "1", arguments, signature=signature, binary=binary)
        self.check_served(served, rows)
        self.check_other_signatures(out / "serving" / "1", exported, run_dir, inputs)
        # `dlapps serve` answers a REST request on this SavedModel as TF Serving would: the same outputs
        assert_same_outputs(served, rest_outputs(out / "serving" / "1", self.app, arguments, binary, signature))
        # A second export's version 2 (shared/export.py, the same for every app) is checked once,
        # with serving, in test_serve.py.


class AnotherArchitecture:
    """Mixed in before an app's first contract class (``class TestContractRnn(AnotherArchitecture,
    TestContract)``) for each further architecture or data kind of the app: what depends on the
    model runs again (learning the demo, predict, evaluate, mixed precision, the Keras file, the
    export); the app's machinery, which is the same code whatever the model and which the first
    class has checked, does not. Each of these costs a process or a training run of its own."""

    test_resume_after_the_process_is_killed_in_mixed_precision = None
    test_help_imports_no_tensorflow = None
    test_a_second_train_into_a_locked_run_folder_gets_one_line = None
    test_bad_train_options = None
    test_model_errors_are_one_line = None
    test_errors_as_a_subprocess_have_no_traceback_and_verbose_shows_one = None

    @pytest.mark.slow
    def test_mixed_precision_trains_without_nan(self, tmp_path):
        out = tmp_path / "run"
        assert_ok(run_cli(self.app, "train", "--out", out, "--epochs", "1", "--mixed-precision", *self.train_args))
        assert_trained_in_mixed_precision(out)
