"""sentiment: the contract suite, plus its own data formats, multi-worker training and empty texts."""

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from .contract import AppContract, predict_json, trained
from .helpers import QUIET_ENV, assert_ok, assert_user_error, run_cli

TINY = ("--demo-size", "1200", "--lstm-units", "16", "--embedding-dim", "32", "--batch-size", "32", "--learning-rate", "0.01")
TEXTS = ("the plot was not boring", "although the cast was great, the ending felt dull", "the acting was superb")


class TestContract(AppContract):
    app = "sentiment"
    train_args = TINY
    resume_args = ("--demo-size", "300")  # small epochs for the killed run
    epochs = 4
    learned = {"best_value": (0.8, 1.0)}
    inputs = TEXTS
    evaluate_keys = ("examples", "accuracy", "macro_f1", "confusion_matrix", "per_class")
    tfds_name = "imdb_reviews"
    tfds_train_args = ("--lstm-units", "8", "--embedding-dim", "8", "--max-length", "20")
    bad_train_inputs = [
        ({"empty.csv": b""}, ["--data", "{tmp}/empty.csv"], ["empty.csv", "empty file"]),
        ({"bad.csv": b"text,label\ncaf\xe9,pos\nok,neg\n"}, ["--data", "{tmp}/bad.csv"], ["bad.csv", "line 2", "0xe9", "utf-8"]),
        ({"nolabel.csv": b"text,notes\nhello,x\nbye,y\n"}, ["--data", "{tmp}/nolabel.csv"], ["nolabel.csv", "no label column"]),
        ({"t.csv": b"text,label\nhi,a\nyo,b\n"}, ["--data", "{tmp}/t.csv", "--label-column", "stars"], ["t.csv", "no label column 'stars'"]),
        ({"one.csv": b"text,label\nhi,a\nyo,a\n"}, ["--data", "{tmp}/one.csv"], ["one.csv", "at least two classes"]),
        ({"ragged.csv": b"text,label\nhi,a\nyo,b,c\n"}, ["--data", "{tmp}/ragged.csv"], ["ragged.csv", "line 3", "expected 2 columns"]),
        ({"notes/readme.md": b"hello"}, ["--data", "{tmp}/notes"], ["notes", "no sentiment data found"]),
        ({"h.csv": b"review_text,stars\n" + b"".join(b"text %d,%d\n" % (i, i % 2) for i in range(20))}, ["--data", "{tmp}/h.csv"],
         ["h.csv", "looks like a header", "--text-column"]),
        ({}, ["--data", "tfds:imdb_reviewz"], ["tfds:imdb_reviewz", "did you mean 'imdb_reviews'"]),
        ({}, ["--dropout", "1.5"], ["--dropout must be at least 0 and below 1"]),
        ({}, ["--max-length", "0"], ["--max-length must be between 1 and 100000"]),
        ({}, ["--lstm-units", "16,0"], ["--lstm-units must be between 1 and 4096"]),
    ]

    def check_predictions(self, rows, inputs):
        assert [r["text"] for r in rows] == list(inputs)
        assert [r["label"] for r in rows] == ["positive", "negative", "positive"]
        assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)

    def check_served(self, served, rows):
        assert served["label"] == [r["label"] for r in rows]
        assert np.allclose(served["probability"], [r["probability"] for r in rows], atol=1e-5)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return trained(tmp_path_factory, "sentiment", "--epochs", "4", *TINY)


def test_file_and_stdin_inputs_and_texts_without_tokens(tiny_run, tmp_path):
    file = tmp_path / "texts.txt"
    file.write_text("\n".join(TEXTS) + "\n")
    from_file = run_cli("sentiment", "predict", "--file", file, "--model", tiny_run)
    from_stdin = run_cli("sentiment", "predict", "-", "--model", tiny_run, input="\n".join(TEXTS))
    assert_ok(from_file)
    assert from_file.output == from_stdin.output and len(from_file.output.splitlines()) == 3
    # "" and "!!!" have no token: they get a label (the model's prior), not a crash
    rows = predict_json("sentiment", tiny_run, ["", "!!!"])
    assert len(rows) == 2 and all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)
    assert_user_error(run_cli("sentiment", "predict", "-m", tiny_run, "--file", tmp_path / "none.txt"), "none.txt", "no such file")


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
    predicted = predict_json("sentiment", out, ["rain storm today"])[0]
    assert set(predicted["probabilities"]) == {"food", "sports", "weather"} and predicted["label"] == "weather"
    evaluated = json.loads(run_cli("sentiment", "evaluate", "-m", out, "--data", table, "--json").output)
    assert evaluated["examples"] == 300 and evaluated["accuracy"] > 0.9


def test_local_file_per_class_layout_in_latin1(tmp_path):
    folder = tmp_path / "polarity"
    folder.mkdir()
    (folder / "reviews.pos").write_bytes("".join(f"a lovely caf\xe9 film number {i}\n" for i in range(40)).encode("latin-1"))
    (folder / "reviews.neg").write_bytes("".join(f"a dreadful na\xefve mess number {i}\n" for i in range(40)).encode("latin-1"))
    result = run_cli("sentiment", "train", "--data", folder, "--encoding", "latin-1", "--out", tmp_path / "run", "--epochs", "1", *TINY)
    assert_ok(result)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["labels"] == ["neg", "pos"]


def test_time_budget_stops_within_the_first_epoch_and_keeps_a_model(tmp_path):
    out = tmp_path / "run"
    assert_ok(run_cli("sentiment", "train", "--out", out, "--epochs", "50", "--max-minutes", "0.001", *TINY))
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 1
    assert len(predict_json("sentiment", out, ["the plot was great"])) == 1


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_train_together_and_end_with_identical_weights(tmp_path):
    """--strategy multiworker with TF_CONFIG: two processes on loopback ports run one
    MultiWorkerMirroredStrategy (the tf.distribute loop: Keras fit cannot); only the chief writes."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    outs = [tmp_path / "chief", tmp_path / "worker"]
    workers = []
    for index, out in enumerate(outs):
        env = {**QUIET_ENV, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "dlapps.apps", "sentiment", "train", "--strategy", "multiworker", "--out", str(outs[0]),
             "--epochs", "2", *TINY],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
        ))
    results = [w.communicate(timeout=300) for w in workers]
    for worker, (stdout, stderr) in zip(workers, results):
        assert worker.returncode == 0, stderr[-3000:]
        assert "MultiWorkerMirroredStrategy with 2 replica(s)" in stdout
    metrics = json.loads((outs[0] / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2
    # Both workers printed the same final weights checksum; the chief's model is the one saved.
    sums = [line for stdout, _ in results for line in stdout.splitlines() if line.startswith("Weights checksum")]
    assert len(sums) == 2 and sums[0] == sums[1], sums
    assert not list(tmp_path.glob(".chief.training"))
    exported = run_cli("sentiment", "export", "-m", outs[0], "--json")
    assert_ok(exported)


# --- phrase-level data: validation by whole sentence ---------------------------------------------


def _phrase_table(tmp_path, sentences=60, seed=0):
    """SST-2-like data: sentences of made-up words, each with the constituents of a binary split
    (every prefix and suffix the split makes, recursively) as further labelled texts."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(300)]
    rows, wholes = [], []

    def constituents(tokens):
        yield tokens
        if len(tokens) > 1:
            cut = int(rng.integers(1, len(tokens)))
            yield from constituents(tokens[:cut])
            yield from constituents(tokens[cut:])

    for i in range(sentences):
        tokens = list(rng.choice(words, int(rng.integers(6, 14))))
        label = "positive" if i % 2 else "negative"
        wholes.append(" ".join(tokens) + " .")
        rows += [(label, " ".join(span)) for span in constituents(tokens + ["."])]
    order = rng.permutation(len(rows))
    table = tmp_path / "phrases.tsv"
    table.write_text("label\tsentence\n" + "".join(f"{rows[i][0]}\t{rows[i][1]}\n" for i in order))
    return table, wholes


def _is_span(text, sentence):
    return f" {text} " in f" {sentence} "


def test_phrase_level_data_is_validated_on_whole_sentences_whose_phrases_leave_training(tmp_path):
    from dlapps.apps.sentiment import data as sentiment_data
    from dlapps.apps.sentiment.config import SentimentConfig

    table, wholes = _phrase_table(tmp_path)
    texts = [line.split("\t")[1] for line in table.read_text().splitlines()[1:]]
    assert sentiment_data.contained_share(texts) > 0.5
    assert sentiment_data.contained_share(sentiment_data.demo(1000).texts) < 0.1  # sentence-level data

    splits = sentiment_data.load_splits(SentimentConfig(data=str(table), val_fraction=0.2))
    notes = splits.notes
    assert notes["phrase_level"] and notes["sentences"] == len(set(wholes)) and notes["validation_sentences"] == 12
    assert set(splits.val.texts) <= set(wholes) and len(set(splits.val.texts)) == 12
    assert {"positive", "negative"} == set(splits.val.labels)
    leaks = [t for t in splits.train.texts for s in splits.val.texts if _is_span(t, s)]
    assert not leaks, leaks[:3]
    # every sentence not held out trains, with all of its phrases that no validation sentence has
    for sentence in set(wholes) - set(splits.val.texts):
        assert sentence in splits.train.texts
    assert len(splits.train) + len(splits.val) + notes["phrases_left_out"] == len(texts)

    # --phrases no: the old random split, which does leak on such data
    random = sentiment_data.load_splits(SentimentConfig(data=str(table), val_fraction=0.2, phrases="no"))
    assert not random.notes and any(_is_span(t, s) for s in random.val.texts for t in random.train.texts)
    # sentence-level data keeps the random split
    assert not sentiment_data.load_splits(SentimentConfig(demo_size=200)).notes


def test_phrase_groups_pick_the_longest_containing_text_word_by_word():
    from dlapps.apps.sentiment.data import phrase_groups

    texts = ["a b c d", "b c", "x b c y z", "c d", "b  C", "goodness", "good", "q"]
    groups = phrase_groups(texts)
    assert groups == [0, 2, 2, 0, 2, 5, 6, 7]  # "good" is not a word of "goodness"


def test_cnn_seed_ensemble_is_one_model_whose_members_learn_apart_and_predict_as_their_mean(tmp_path):
    from dlapps.shared import training

    out = tmp_path / "run"
    assert_ok(run_cli("sentiment", "train", "--out", out, "--arch", "cnn", "--members", "2", "--feature-maps", "16",
                      "--embedding-dropout", "0", "--epochs", "4", *TINY))
    assert json.loads((out / "metrics.json").read_text())["best_value"] >= 0.9
    model = training.load_model(out, "sentiment")
    ids = model.preprocessor(np.asarray(TEXTS, dtype=object))
    members = np.asarray(model(ids, training=False))
    assert members.shape == (3, 2, 2) and not np.allclose(members[:, 0], members[:, 1], atol=1e-3)
    assert np.allclose(model.classify_texts_batched(list(TEXTS)), members.mean(axis=1), atol=1e-5)
    assert [r["label"] for r in predict_json("sentiment", out, list(TEXTS))] == ["positive", "negative", "positive"]


def test_stacked_bilstm_members_load_again_and_again(tmp_path):
    """keras.saving.load_model tracks serialized objects by id(): an LSTM freed while the model is
    built and the next allocated at its address were loaded as one layer (before the fix: about 2
    loads in 15 of this model failed with "should have different go_backwards")."""
    import keras

    from dlapps.apps.sentiment.model import SentimentClassifier

    model = SentimentClassifier(vocabulary=[f"w{i}" for i in range(50)], labels=["a", "b"], embedding_dim=8,
                                lstm_units=[4, 4], members=5)
    model.save(tmp_path / "m.keras")
    for _ in range(20):
        loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    assert loaded.members == 5 and len(loaded.embedding_layers()) == 5


def test_separately_trained_models_merge_into_one_model_that_predicts_their_mean(tmp_path):
    """A seed ensemble of runs whose vocabularies differ: each member reads the union vocabulary
    as it read its own (unknown words -> its own out-of-vocabulary row), before and after saving."""
    import keras

    from dlapps.apps.sentiment.model import SentimentClassifier, merge_models

    def model(vocabulary, seed, members=1):
        keras.utils.set_random_seed(seed)
        built = SentimentClassifier(vocabulary=vocabulary, labels=["negative", "positive"], embedding_dim=8,
                                    lstm_units=[4, 4], pooling="attention", members=members)
        for layer in built.embedding_layers():  # distinct rows, so a wrong remapping shows
            layer.embeddings.assign(np.random.default_rng(seed).normal(size=layer.embeddings.shape))
        return built

    parts = [model(["plot", "boring", "not", "great"], 0), model(["great", "dull", "cast", "plot", "ending"], 1),
             model(["acting", "superb", "the"], 2, members=2)]
    merged = merge_models(parts)
    assert merged.members == 4 and set(merged.vocabulary) == {w for p in parts for w in p.vocabulary}
    texts = [*TEXTS, "unknown words only", ""]
    expected = np.concatenate([np.asarray(p(p.preprocessor(np.asarray(texts, dtype=object)), training=False)).reshape(len(texts), -1, 2)
                               for p in parts], axis=1)
    assert np.allclose(merged(merged.preprocessor(np.asarray(texts, dtype=object)), training=False), expected, atol=1e-5)
    merged.save(tmp_path / "merged.keras")
    loaded = keras.saving.load_model(tmp_path / "merged.keras")
    assert np.allclose(loaded.classify_texts_batched(texts), expected.mean(axis=1), atol=1e-5)
    with pytest.raises(ValueError, match="differ in lstm_units"):
        merge_models([parts[0], SentimentClassifier(vocabulary=["a"], labels=["negative", "positive"], embedding_dim=8, lstm_units=[4])])
