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


def test_tfds_unprepared_offline_is_a_clear_error(tmp_path):
    spec = data_lib.parse_data_spec("tfds:not_a_real_dataset_name")
    with pytest.raises(UserError, match="no such tensorflow-datasets dataset"):
        data_lib.load_tfds(spec, "train", str(tmp_path))


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
