"""The shared machinery: CLI grammar and help without TensorFlow, typed configs, splits, text
reading, word2vec vectors, and MirroredStrategy on two logical CPU devices."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dlapps.shared import config as config_lib
from dlapps.shared import data as data_lib
from dlapps.shared.embeddings import embedding_matrix, read_word2vec
from dlapps.shared.errors import UserError

from .helpers import QUIET_ENV, assert_ok, heavy_imports_of, run_cli, run_subprocess



@pytest.mark.parametrize("args", [["--help"], ["sentiment", "--help"], ["sentiment", "train", "--help"], ["apps"]])
def test_help_and_app_list_never_import_tensorflow(args):
    heavy, output = heavy_imports_of(*args)
    assert heavy == [] and output.strip()


def test_apps_lists_every_app_with_its_modes():
    result = run_cli("apps")
    assert_ok(result)
    assert "sentiment" in result.output and "train, predict, evaluate, export" in result.output


def test_unknown_app_and_mode_get_a_close_match_hint():
    result = run_subprocess("sentimnt", "train")
    assert result.returncode == 2 and "did you mean 'sentiment'" in result.stderr
    result = run_subprocess("sentiment", "trian")
    assert result.returncode == 2 and "did you mean 'train'" in result.stderr


def test_train_flags_come_from_the_typed_config_with_defaults_shown():
    result = run_cli("sentiment", "train", "--help")
    assert_ok(result)
    for flag in ("--data", "--out", "--epochs", "--batch-size", "--seed", "--config", "--strategy",
                 "--mixed-precision", "--resume", "--lstm-units", "--embeddings"):
        assert flag in result.output, flag


def test_info_reports_versions_devices_and_strategy():
    result = run_subprocess("info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["strategy (auto)"] == "default" and "CPU" in info["devices"] and info["tensorflow"].startswith("2.")


# --- typed config --------------------------------------------------------------------------------


def test_config_precedence_default_then_file_then_flags(tmp_path):
    from dlapps.apps.sentiment.config import SentimentConfig

    file = tmp_path / "c.yaml"
    file.write_text("epochs: 3\nlstm_units: [32, 16]\nbatch-size: 8\n")
    config = config_lib.resolve(SentimentConfig, file, {"epochs": 5, "seed": None})
    assert (config.epochs, config.batch_size, config.lstm_units, config.seed) == (5, 8, [32, 16], 0)
    assert config_lib.resolve(SentimentConfig, None, {"lstm_units": "64,32"}).lstm_units == [64, 32]


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        ('{"epoch": 3}', {}, "unknown option 'epoch' (did you mean 'epochs'?)"),
        ('{"epochs": "many"}', {}, "epochs must be int"),
        ("{not json", {}, "not valid JSON"),
        ("{}", {"strategy": "mirored"}, "did you mean 'mirrored'"),
        ("{}", {"epochs": 0}, "epochs must be at least 1"),
    ],
)
def test_bad_config_values_are_one_line_user_errors(tmp_path, text, overrides, message):
    from dlapps.apps.sentiment.config import SentimentConfig

    file = tmp_path / "c.json"
    file.write_text(text)
    with pytest.raises(UserError, match=None) as error:
        config_lib.resolve(SentimentConfig, file, overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


# --- data helpers --------------------------------------------------------------------------------


def test_stratified_split_is_seeded_disjoint_and_keeps_class_shares():
    labels = ["a"] * 90 + ["b"] * 10
    train, val = data_lib.split_indices(100, 0.2, seed=1, stratify=labels)
    again = data_lib.split_indices(100, 0.2, seed=1, stratify=labels)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert set(train).isdisjoint(val) and len(train) + len(val) == 100
    assert sum(labels[i] == "b" for i in val) == 2 and sum(labels[i] == "a" for i in val) == 18


def test_read_lines_splits_on_newline_only_and_names_undecodable_bytes(tmp_path):
    file = tmp_path / "latin.txt"
    file.write_bytes(b"caf\xe9 ok\r\nwith a NEL\x85 inside\n")
    assert data_lib.read_lines(file, "latin-1") == ["café ok", "with a NEL\x85 inside"]
    with pytest.raises(UserError, match=r"latin.txt: line 1: byte 0xe9 is not valid utf-8"):
        data_lib.read_lines(file, "utf-8")


def test_data_spec_parses_demo_paths_and_tfds(tmp_path):
    assert data_lib.parse_data_spec("demo").kind == "demo"
    spec = data_lib.parse_data_spec("tfds:glue/sst2:validation")
    assert (spec.kind, spec.tfds_name, spec.tfds_split) == ("tfds", "glue/sst2", "validation")
    with pytest.raises(UserError, match="no such file or folder"):
        data_lib.parse_data_spec(str(tmp_path / "missing"))


def test_tfds_unknown_or_unprepared_offline_is_a_clear_error_at_once(tmp_path, monkeypatch):
    import time

    spec = data_lib.parse_data_spec("tfds:not_a_real_dataset_name")
    with pytest.raises(UserError, match="no such tensorflow-datasets dataset"):
        data_lib.load_tfds(spec, "train", str(tmp_path))
    monkeypatch.setattr(data_lib, "_online", lambda timeout=3.0: False)  # as on a machine without network
    started = time.time()
    with pytest.raises(UserError, match="tfds:imdb_reviews: not prepared in .* network is unreachable.*tfds build imdb_reviews"):
        data_lib.load_tfds(data_lib.parse_data_spec("tfds:imdb_reviews"), "train", str(tmp_path))
    assert time.time() - started < 30  # not minutes of download retries


def test_utf16_text_reads_with_its_encoding_and_binary_files_are_refused(tmp_path):
    (tmp_path / "wide.txt").write_bytes("caf\u00e9\nna\u00efve\n".encode("utf-16"))
    assert data_lib.read_lines(tmp_path / "wide.txt", "utf-16") == ["caf\u00e9", "na\u00efve"]
    with pytest.raises(UserError, match="wide.txt: looks like a binary file"):
        data_lib.read_lines(tmp_path / "wide.txt")


def test_word2vec_text_and_binary_vectors_read_alike(tmp_path):
    words = ["the", "Film", "good"]
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    text = tmp_path / "v.txt"
    text.write_text("3 4\n" + "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in zip(words, vectors)))
    binary = tmp_path / "v.bin"
    binary.write_bytes(b"3 4\n" + b"".join(w.encode() + b" " + v.astype("<f4").tobytes() + b"\n" for w, v in zip(words, vectors)))
    for path in (text, binary):
        read_words, read_vectors = read_word2vec(path)
        assert read_words == words and np.allclose(read_vectors, vectors, atol=1e-6)
    matrix, found = embedding_matrix(["", "[UNK]", "film", "good", "unseen"], text)
    assert found == 2 and np.allclose(matrix[2], vectors[1]) and np.allclose(matrix[3], vectors[2])


# --- distribution --------------------------------------------------------------------------------


def test_mirrored_strategy_trains_on_two_logical_cpus(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from dlapps.apps.cli import main
        sys.argv = ["dlapps", "sentiment", "train", "--strategy", "mirrored", "--out", {str(tmp_path / "run")!r},
                    "--epochs", "1", "--demo-size", "400", "--lstm-units", "8", "--embedding-dim", "16"]
        main()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=QUIET_ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MirroredStrategy with 2 replica(s)" in done.stdout
    assert (tmp_path / "run" / "model.keras").exists()


@pytest.mark.parametrize("mode", ["max", "mean", "attention"])
def test_masked_pooling_ignores_padding_and_pools_empty_rows_to_zero(mode):
    from dlapps.shared.layers import MaskedPooling

    values = np.array([[[1.0, -2.0], [3.0, 5.0], [100.0, 100.0]], [[7.0, 7.0], [8.0, 8.0], [9.0, 9.0]]], dtype="float32")
    mask = np.array([[True, True, False], [False, False, False]])
    pooled = np.asarray(MaskedPooling(mode)(values, mask=mask))
    assert np.allclose(pooled[1], 0.0), pooled  # nothing to pool
    if mode == "max":
        assert np.allclose(pooled[0], [3.0, 5.0])
    elif mode == "mean":
        assert np.allclose(pooled[0], [2.0, 1.5])
    else:  # a convex combination of the two unmasked steps only
        assert np.all(pooled[0] <= [3.0, 5.0]) and np.all(pooled[0] >= [1.0, -2.0])


# --- the contract's training machinery, on a tiny app defined here ------------------------------


def _tiny_app(custom_loop: bool = False, poison: bool = False):
    """A real (tiny) regression app: y = x @ w; `poison` puts a NaN in the targets."""
    from dlapps.shared.app import App, Splits
    from dlapps.shared.config import TrainConfig

    class TinyApp(App):
        name = "tiny"
        config = TrainConfig

        def load_splits(self, config):
            rng = np.random.default_rng(0)
            x = rng.normal(size=(256, 4)).astype("float32")
            y = x @ np.array([1.0, -2.0, 0.5, 3.0], dtype="float32")
            if poison:
                y[3] = np.nan
            return Splits((x[:224], y[:224]), (x[224:], y[224:]), {"train_size": 224})

        def build_model(self, config, splits):
            import keras

            return keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])

        def compile_model(self, model, config):
            import keras

            model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")

        def datasets(self, model, splits, config):
            import tensorflow as tf

            train = tf.data.Dataset.from_tensor_slices(splits.train).shuffle(224, seed=0).batch(32)
            return train, tf.data.Dataset.from_tensor_slices(splits.val).batch(32)

    TinyApp.custom_loop = custom_loop
    return TinyApp()


@pytest.mark.parametrize("custom_loop", [False, True])
def test_fit_and_the_distribute_loop_train_alike(tmp_path, custom_loop):
    from dlapps.shared import training
    from dlapps.shared.config import TrainConfig

    config = TrainConfig(out=str(tmp_path / "run"), epochs=6, learning_rate=0.1)
    metrics = training.train(_tiny_app(custom_loop), config)
    history = training.read_history(tmp_path / "run" / "history.csv")
    assert metrics["epochs_run"] == 6 and len(history["val_loss"]) == 6
    assert history["loss"][-1] < 0.1 * history["loss"][0]
    assert metrics["best_value"] == min(history["val_loss"]) and metrics["train_size"] == 224
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "config.json", "curves.png", "history.csv", "logs", "metrics.json", "model.keras"]


@pytest.mark.parametrize("custom_loop", [False, True])
def test_the_train_step_is_traced_once(tmp_path, custom_loop):
    """The optimizer is built before fit: built inside the first trace (Keras's default without a
    strategy), its new variables make tf.function trace the whole step again."""
    import keras

    from dlapps.shared import training
    from dlapps.shared.config import TrainConfig

    traces = []

    @keras.saving.register_keras_serializable(package="dlapps.tests")  # the run saves and reloads it
    class CountingDense(keras.layers.Dense):
        def call(self, inputs, training=None):
            if training:
                traces.append(1)  # Python runs while tracing only
            return super().call(inputs)

    app = _tiny_app(custom_loop)
    app.build_model = lambda config, splits: keras.Sequential([keras.Input((4,)), CountingDense(1)])
    training.train(app, TrainConfig(out=str(tmp_path / "run"), epochs=2, learning_rate=0.1))
    assert len(traces) == 1


def test_the_loop_resumes_from_its_last_epoch(tmp_path):
    import keras

    from dlapps.shared import training
    from dlapps.shared.config import TrainConfig

    class Interrupt(keras.callbacks.Callback):  # Ctrl-C during the fourth epoch
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:
                raise KeyboardInterrupt

    app = _tiny_app(custom_loop=True)
    app.callbacks = lambda model, splits, config: [Interrupt()]
    config = TrainConfig(out=str(tmp_path / "run"), epochs=6, learning_rate=0.1)
    with pytest.raises(KeyboardInterrupt):
        training.train(app, config)
    staging = tmp_path / ".run.training"
    assert json.loads((staging / "backup" / "training_metadata.json").read_text()) == {"epoch": 3}
    assert not (tmp_path / "run").exists()
    app.callbacks = lambda model, splits, config: []
    metrics = training.train(app, TrainConfig(out=str(tmp_path / "run"), epochs=6, learning_rate=0.1, resume=True))
    epochs = training.read_history(tmp_path / "run" / "history.csv")["epoch"]
    assert epochs == [0, 1, 2, 3, 4, 5] and metrics["epochs_run"] == 6 and not staging.exists()


def test_a_nan_loss_fails_in_one_line_and_keeps_the_previous_model(tmp_path):
    from dlapps.shared import training
    from dlapps.shared.config import TrainConfig

    config = TrainConfig(out=str(tmp_path / "run"), epochs=2, learning_rate=0.1)
    training.train(_tiny_app(), config)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    with pytest.raises(UserError, match="training diverged .* NaN in epoch 1.*keeps its previous model"):
        training.train(_tiny_app(poison=True), config)
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert after == before and not (tmp_path / ".run.training").exists()


def test_a_kill_before_the_first_epoch_ends_can_be_resumed(tmp_path):
    """SIGKILL while the first epoch runs: the staging folder has the config and the initial
    model but no backup yet; --resume starts over from epoch 0 instead of refusing."""
    import signal
    import time

    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "dlapps.apps", "sentiment", "train", "--out", str(out), "--epochs", "2",
         "--demo-size", "20000", "--lstm-units", "8", "--embedding-dim", "8"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=QUIET_ENV,
    )
    initial = tmp_path / ".run.training" / "checkpoints" / "initial.keras"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and not initial.exists():
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert initial.exists() and not (tmp_path / ".run.training" / "backup" / "training_metadata.json").exists()
    result = run_cli("sentiment", "train", "--out", out, "--resume", "--epochs", "1", "--demo-size", "400")
    assert_ok(result)
    assert json.loads((out / "config.json").read_text())["lstm_units"] == [8]  # the interrupted run's config


def test_option_bounds_are_checked_once_for_flags_files_and_saved_configs(tmp_path):
    import dataclasses

    from dlapps.shared.config import TrainConfig, default, option

    @dataclasses.dataclass
    class Bounded(TrainConfig):
        epochs: int = default(7)
        rate: float = option(0.5, "a rate", above=0, below=1)
        units: list[int] = option([8], "sizes", min=1, max=64)

    assert Bounded().epochs == 7 and dataclasses.fields(Bounded)[2].metadata["min"] == 1  # comment and bound kept
    for overrides, message in [({"rate": 1.0}, "--rate must be above 0 and below 1, got 1.0"), ({"units": "8,0"}, "--units must be between 1 and 64"),
                               ({"epochs": 0}, "--epochs must be at least 1"), ({"rate": "nan"}, "--rate must be above 0 and below 1")]:
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            config_lib.resolve(Bounded, None, overrides)
    (tmp_path / "c.yaml").write_text("rate: 2\n")
    with pytest.raises(UserError, match="c.yaml: --rate must be above 0"):
        config_lib.resolve(Bounded, tmp_path / "c.yaml")


def test_a_stage_can_start_from_the_best_checkpoint_and_one_budget_spans_the_stages(tmp_path):
    import keras

    from dlapps.shared import training
    from dlapps.shared.config import TrainConfig
    from dlapps.shared.training import Stage

    seen = {}

    def second(model):
        best = keras.saving.load_model(tmp_path / ".run.training" / "checkpoints" / "model.keras", compile=False)
        seen["starts_from_best"] = all(np.array_equal(a, b) for a, b in zip(model.get_weights(), best.get_weights()))
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")

    app = _tiny_app()
    app.stages = lambda config: [Stage("first", 4), Stage("second", 2, prepare=second, from_best=True)]
    metrics = training.train(app, TrainConfig(out=str(tmp_path / "run"), epochs=4, learning_rate=0.5))
    assert seen == {"starts_from_best": True} and metrics["epochs_run"] == 6
    assert 1 <= metrics["best_epoch"] <= 6  # numbered across both stages
    app.stages = lambda config: [Stage("first", 50), Stage("second", 50)]
    metrics = training.train(app, TrainConfig(out=str(tmp_path / "budget"), max_minutes=0.001, learning_rate=0.1))
    assert metrics["epochs_run"] == 1  # the budget ran out in the first stage; the second never started


def test_cosine_decay_warms_up_then_anneals_to_zero_by_the_last_batch(tmp_path):
    import keras

    from dlapps.shared import training
    from dlapps.shared.config import TrainConfig

    assert training.cosine_rate(0.1, 0.0) == pytest.approx(0.1) and training.cosine_rate(0.1, 1.0) == pytest.approx(0.0)
    assert training.cosine_rate(0.1, 0.5) == pytest.approx(0.05)
    assert training.cosine_rate(0.1, 0.05, warmup=0.1) == pytest.approx(0.1 * 0.051 / 0.1)

    rates = []

    class Record(keras.callbacks.Callback):  # after CosineDecay has set the rate for this batch
        def on_train_batch_begin(self, batch, logs=None):
            rates.append(float(self.model.optimizer.learning_rate.numpy()))

    app = _tiny_app()
    app.callbacks = lambda model, splits, config: [training.cosine_decay(config.learning_rate, config.epochs, warmup=0.2), Record()]
    config = TrainConfig(out=str(tmp_path / "run"), epochs=5, learning_rate=0.1)
    training.train(app, config)
    assert len(rates) == 5 * 7  # 224 examples in batches of 32
    peak = int(np.argmax(rates))
    assert 5 <= peak <= 8 and rates[peak] == pytest.approx(0.1, rel=0.05)  # warm-up: the first fifth
    assert np.all(np.diff(rates[: peak + 1]) > 0) and np.all(np.diff(rates[peak:]) < 0)
    assert rates[-1] < 0.002


def test_cosine_decay_has_a_floor_and_anneals_by_the_one_deadline_that_stops_training(tmp_path):
    import time

    from dlapps.shared import training
    from dlapps.shared.config import TrainConfig
    from dlapps.shared.training import Stage

    assert training.cosine_rate(0.1, 1.0, floor=0.05) == pytest.approx(0.005)
    assert training.cosine_rate(0.1, 0.5, floor=0.05) == pytest.approx(0.1 * (0.05 + 0.95 * 0.5))
    schedules = []

    def callbacks(model, splits, config):  # asked once per stage
        schedules.append(training.cosine_decay(config.learning_rate, 1000, config.max_minutes, floor=0.02))
        return [schedules[-1]]

    app = _tiny_app()
    app.callbacks = callbacks
    app.stages = lambda config: [Stage("first", 2), Stage("second", 2)]
    began = time.time()
    metrics = training.train(app, TrainConfig(out=str(tmp_path / "run"), max_minutes=30, learning_rate=0.1))
    assert metrics["epochs_run"] == 4 and len(schedules) == 2
    # both stages read the run's deadline (not one of their own, counted from each stage's start)
    assert schedules[0].deadline == schedules[1].deadline
    assert began + 30 * 60 - 1 < schedules[0].deadline < time.time() + 30 * 60
    rates = training.read_history(tmp_path / "run" / "history.csv")["learning_rate"]
    assert len(rates) == 4 and all(0.002 < rate <= 0.1 for rate in rates)
