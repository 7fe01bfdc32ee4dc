"""sentiment: demo train -> predict -> evaluate -> export, serialization, resume, every bad input."""

import json

import numpy as np
import pytest

from .helpers import assert_ok, assert_user_error, kill_training_after, run_cli, run_subprocess, saved_model_outputs, snapshot

TINY = ["--demo-size", "1200", "--lstm-units", "16", "--embedding-dim", "32", "--batch-size", "32", "--learning-rate", "0.01"]
TEXTS = ["the plot was not boring", "although the cast was great, the ending felt dull", "the acting was superb"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sentiment") / "run"
    result = run_cli("sentiment", "train", "--out", out, "--epochs", "4", *TINY)
    assert_ok(result)
    return out


def test_demo_training_learns_well_above_chance(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = [line.split(",") for line in (run_dir / "history.csv").read_text().splitlines()]
    header, rows = history[0], history[1:]
    loss = [float(r[header.index("loss")]) for r in rows]
    assert loss[-1] < loss[0] * 0.7, loss
    assert metrics["best_value"] > 0.8 and metrics["labels"] == ["negative", "positive"]
    for name in ("config.json", "model.keras", "history.csv", "curves.png", "metrics.json"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "backup").exists() and not (run_dir / "checkpoints").exists()
    assert json.loads((run_dir / "config.json").read_text())["lstm_units"] == [16]


def test_predict_json_from_arguments_file_and_stdin(run_dir, tmp_path):
    result = run_cli("sentiment", "predict", *TEXTS, "--model", run_dir, "--json")
    assert_ok(result)
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    assert [r["label"] for r in rows] == ["positive", "negative", "positive"]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)
    file = tmp_path / "texts.txt"
    file.write_text("\n".join(TEXTS) + "\n")
    from_file = run_cli("sentiment", "predict", "--file", file, "--model", run_dir)
    from_stdin = run_cli("sentiment", "predict", "-", "--model", run_dir, input="\n".join(TEXTS))
    assert_ok(from_file)
    assert_ok(from_stdin)
    assert from_file.output == from_stdin.output and len(from_file.output.splitlines()) == 3


def test_evaluate_on_validation_split_and_on_a_csv(run_dir, tmp_path):
    result = run_cli("sentiment", "evaluate", "--model", run_dir, "--json")
    assert_ok(result)
    metrics = json.loads(result.output)
    assert metrics["examples"] == 120 and metrics["accuracy"] > 0.8 and metrics["macro_f1"] > 0.8
    assert np.array(metrics["confusion_matrix"]).sum() == 120
    table = tmp_path / "reviews.csv"
    table.write_text("sentence,sentiment\n" + "".join(f'"{t}",{y}\n' for t, y in zip(TEXTS, ["positive", "negative", "positive"])))
    result = run_cli("sentiment", "evaluate", "--model", run_dir, "--data", table, "--json")
    assert_ok(result)
    assert json.loads(result.output)["examples"] == 3


def test_export_round_trips_in_a_fresh_process_that_never_imports_dlapps(run_dir, tmp_path):
    out = tmp_path / "exported"
    result = run_subprocess("sentiment", "export", "--model", run_dir, "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    exported = json.loads(result.stdout)
    assert exported["version"] == 1 and (out / "model.keras").exists() and (out / "serving" / "1" / "saved_model.pb").exists()
    served = saved_model_outputs(out / "serving" / "1", {"text": TEXTS})
    predicted = json.loads("[" + ",".join(run_cli("sentiment", "predict", *TEXTS, "-m", run_dir, "--json").output.splitlines()) + "]")
    assert served["label"] == [p["label"] for p in predicted]
    assert np.allclose(served["probability"], [p["probability"] for p in predicted], atol=1e-5)
    second = run_cli("sentiment", "export", "--model", run_dir, "--out", out, "--json")
    assert json.loads(second.output)["version"] == 2  # TF Serving picks up the new version


def test_config_and_keras_file_round_trips(run_dir):
    import keras

    from dlapps.apps.sentiment.app import SentimentClassifier

    model = keras.saving.load_model(run_dir / "model.keras")
    assert isinstance(model, SentimentClassifier)
    clone = SentimentClassifier.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    texts = np.array(TEXTS, dtype=object)
    assert np.allclose(model.classify_texts(texts), clone.classify_texts(texts), atol=1e-6)
    assert clone.get_config() == model.get_config()


def test_multiclass_csv_with_named_columns(tmp_path):
    rng = np.random.default_rng(0)
    words = {"sports": ["match", "goal", "team"], "weather": ["rain", "sunny", "storm"], "food": ["pasta", "soup", "bread"]}
    rows = [(f"{rng.choice(words[y])} {rng.choice(words[y])} today", y) for y in rng.choice(list(words), 300)]
    table = tmp_path / "topics.tsv"
    table.write_text("topic\tbody\n" + "".join(f"{y}\t{t}\n" for t, y in rows))
    out = tmp_path / "run"
    result = run_cli("sentiment", "train", "--data", table, "--text-column", "body", "--label-column", "topic",
                     "--out", out, "--epochs", "3", *TINY)
    assert_ok(result)
    predicted = json.loads(run_cli("sentiment", "predict", "rain storm today", "-m", out, "--json").output)
    assert set(predicted["probabilities"]) == {"food", "sports", "weather"} and predicted["label"] == "weather"


def test_local_file_per_class_layout_in_latin1(tmp_path):
    folder = tmp_path / "polarity"
    folder.mkdir()
    (folder / "reviews.pos").write_bytes("".join(f"a lovely caf\xe9 film number {i}\n" for i in range(40)).encode("latin-1"))
    (folder / "reviews.neg").write_bytes("".join(f"a dreadful na\xefve mess number {i}\n" for i in range(40)).encode("latin-1"))
    result = run_cli("sentiment", "train", "--data", folder, "--encoding", "latin-1", "--out", tmp_path / "run", "--epochs", "1", *TINY)
    assert_ok(result)
    assert "labels         [\"neg\", \"pos\"]" in result.output


def test_resume_after_the_process_is_killed(tmp_path):
    out = tmp_path / "run"
    command = ["sentiment", "train", "--out", str(out), "--epochs", "40", *TINY]
    done_epochs = kill_training_after(*command, metadata=out / "backup" / "training_metadata.json", epochs=2)
    assert 2 <= done_epochs < 40 and not (out / "model.keras").exists()

    fresh = run_cli("sentiment", "train", "--out", out, "--epochs", "3", *TINY)
    assert_user_error(fresh, "interrupted run", "--resume")

    result = run_cli("sentiment", "train", "--out", out, "--resume", "--epochs", str(done_epochs + 2))
    assert_ok(result)
    epochs = [int(line.split(",")[0]) for line in (out / "history.csv").read_text().splitlines()[1:]]
    # the resumed run starts at the first unfinished epoch and keeps the config it was started with
    assert epochs[-2:] == [done_epochs, done_epochs + 1], epochs
    assert json.loads((out / "config.json").read_text())["lstm_units"] == [16]
    assert (out / "model.keras").exists() and not (out / "backup").exists()


# --- bad input: one line, exit 2, nothing overwritten ---------------------------------------------


def test_failed_training_leaves_an_existing_run_untouched(run_dir, tmp_path):
    before = snapshot(run_dir)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert_user_error(run_cli("sentiment", "train", "--data", empty, "--out", run_dir), "empty.csv", "empty file")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(
    "files, args, fragments",
    [
        ({}, ["--data", "{tmp}/missing.csv"], ["missing.csv", "no such file or folder"]),
        ({"empty.csv": b""}, ["--data", "{tmp}/empty.csv"], ["empty.csv", "empty file"]),
        ({"bad.csv": b"text,label\ncaf\xe9,pos\nok,neg\n"}, ["--data", "{tmp}/bad.csv"], ["bad.csv", "line 2", "0xe9", "utf-8"]),
        ({"nolabel.csv": b"text,notes\nhello,x\nbye,y\n"}, ["--data", "{tmp}/nolabel.csv"], ["nolabel.csv", "no label column"]),
        ({"t.csv": b"text,label\nhi,a\nyo,b\n"}, ["--data", "{tmp}/t.csv", "--label-column", "stars"], ["t.csv", "no label column 'stars'"]),
        ({"one.csv": b"text,label\nhi,a\nyo,a\n"}, ["--data", "{tmp}/one.csv"], ["one.csv", "at least two classes"]),
        ({"ragged.csv": b"text,label\nhi,a\nyo,b,c\n"}, ["--data", "{tmp}/ragged.csv"], ["ragged.csv", "line 3", "expected 2 columns"]),
        ({"notes/readme.md": b"hello"}, ["--data", "{tmp}/notes"], ["notes", "no sentiment data found"]),
        ({"c.json": b'{"epohcs": 2}'}, ["--config", "{tmp}/c.json"], ["c.json", "did you mean 'epochs'"]),
        ({}, ["--strategy", "mirrorred"], ["strategy must be one of", "did you mean 'mirrored'"]),
        ({}, ["--data", "tfds:imdb_reviewz"], ["tfds:imdb_reviewz", "did you mean 'imdb_reviews'"]),
        ({}, ["--resume"], ["no interrupted run to resume"]),
    ],
)
def test_bad_training_input(tmp_path, files, args, fragments):
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert_user_error(run_cli("sentiment", "train", "--out", tmp_path / "run", "--epochs", "1", *args), *fragments)


def test_predict_before_train_and_with_a_corrupt_model(tmp_path):
    assert_user_error(run_cli("sentiment", "predict", "good", "-m", tmp_path / "nothing"), "no trained model here", "dlapps sentiment train")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.keras").write_bytes(b"not a zip file")
    assert_user_error(run_cli("sentiment", "predict", "good", "-m", broken), "model.keras", "not a readable Keras model")
    assert_user_error(run_cli("sentiment", "evaluate", "-m", broken), "not a readable Keras model")
    assert_user_error(run_cli("sentiment", "export", "-m", tmp_path / "nothing"), "no trained model here")


def test_predict_input_errors(run_dir, tmp_path):
    assert_user_error(run_cli("sentiment", "predict", "-m", run_dir), "no input")
    assert_user_error(run_cli("sentiment", "predict", "-m", run_dir, "--file", tmp_path / "none.txt"), "none.txt", "no such file")


def test_errors_as_a_subprocess_have_no_traceback_and_verbose_shows_one(tmp_path):
    quiet = run_subprocess("sentiment", "predict", "good", "-m", tmp_path / "nothing")
    assert_user_error(quiet, "no trained model here")
    loud = run_subprocess("sentiment", "predict", "good", "-m", tmp_path / "nothing", "--verbose")
    assert loud.returncode == 2 and "Traceback" in loud.stderr


def test_mixed_precision_and_time_budget(tmp_path):
    out = tmp_path / "run"
    # A budget of a fraction of a second stops within the first epoch; the model is still saved.
    result = run_cli("sentiment", "train", "--out", out, "--epochs", "50", "--max-minutes", "0.001", "--mixed-precision", *TINY)
    assert_ok(result)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1
    config = json.loads((out / "model.keras").exists() and (out / "config.json").read_text())
    assert config["mixed_precision"] is True
    predicted = json.loads(run_cli("sentiment", "predict", "the plot was great", "-m", out, "--json").output)
    assert abs(sum(predicted["probabilities"].values()) - 1) < 1e-3
