"""ner: demo train -> predict -> evaluate -> export, the CRF against brute force, tag schemes,
tokenisation, serialization, resume and every bad input."""

import itertools
import json

import numpy as np
import pytest

from dlapps.apps.ner import data as ner_data

from .helpers import assert_ok, assert_user_error, heavy_imports_of, kill_training_after, run_cli, run_subprocess, saved_model_outputs, snapshot

TINY = ["--demo-size", "500", "--lstm-units", "24", "--embedding-dim", "24", "--char-units", "16", "--char-dim", "12",
        "--batch-size", "16", "--learning-rate", "0.01"]
TEXT = "Angela Merkel visited Paris."
TEXTS = [TEXT, "Shares in Karomar Corp fell after John Smith warned of weaker demand."]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ner") / "run"
    result = run_cli("ner", "train", "--out", out, "--epochs", "3", *TINY)
    assert_ok(result)
    return out


def predict_json(run_dir, *texts):
    result = run_cli("ner", "predict", *texts, "--model", run_dir, "--json")
    assert_ok(result)
    return [json.loads(line) for line in result.output.splitlines()]


def test_demo_training_learns(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = [line.split(",") for line in (run_dir / "history.csv").read_text().splitlines()]
    header, rows = history[0], history[1:]
    loss = [float(r[header.index("loss")]) for r in rows]
    assert loss[-1] < loss[0] * 0.5, loss
    assert metrics["val_f1"] > 0.85 and metrics["entity_types"] == ["LOC", "MISC", "ORG", "PER"]
    assert len(metrics["val_f1_per_epoch"]) == 3
    for name in ("config.json", "model.keras", "history.csv", "curves.png", "metrics.json"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "backup").exists() and not (run_dir / "checkpoints").exists()


def test_predict_spans_with_offsets_from_arguments_file_and_stdin(run_dir, tmp_path):
    first = predict_json(run_dir, *TEXTS)[0]
    assert first["tokens"] == ["Angela", "Merkel", "visited", "Paris", "."]
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in first["entities"]] == [
        ("PER", "Angela Merkel", 0, 13), ("LOC", "Paris", 22, 27)]
    assert all(0.0 < e["score"] <= 1.0 for e in first["entities"])
    assert first["tags"] == ["B-PER", "E-PER", "O", "S-LOC", "O"]  # the model's BIOES
    file = tmp_path / "texts.txt"
    file.write_text("\n".join(TEXTS) + "\n")
    from_file = run_cli("ner", "predict", "--file", file, "--model", run_dir)
    from_stdin = run_cli("ner", "predict", "-", "--model", run_dir, input="\n".join(TEXTS))
    assert_ok(from_file)
    assert_ok(from_stdin)
    assert from_file.output == from_stdin.output and "PER       0-13" in from_file.output
    conll = run_cli("ner", "predict", TEXT, "--model", run_dir, "--format", "conll")
    assert_ok(conll)
    assert conll.output.splitlines() == ["Angela\tB-PER", "Merkel\tE-PER", "visited\tO", "Paris\tS-LOC", ".\tO"]


def test_evaluate_on_the_validation_split_and_on_an_iob1_conll_file(run_dir, tmp_path):
    result = run_cli("ner", "evaluate", "--model", run_dir, "--json")
    assert_ok(result)
    metrics = json.loads(result.output)
    assert metrics["sentences"] == 50 and metrics["f1"] > 0.85
    assert set(metrics["per_type"]) == {"LOC", "MISC", "ORG", "PER"}
    assert metrics["per_type"]["PER"]["support"] > 0
    # IOB1 (entities start with I-), four columns: read, normalised and scored like conlleval
    conll = tmp_path / "gold.txt"
    conll.write_text("-DOCSTART- -X- -X- O\n\nAngela NNP B-NP I-PER\nMerkel NNP I-NP I-PER\nvisited VBD B-VP O\n"
                     "Paris NNP B-NP I-LOC\n. . O O\n\nJohn NNP B-NP I-PER\nvisited VBD B-VP O\nBerlin NNP B-NP I-ORG\n")
    result = run_cli("ner", "evaluate", "--model", run_dir, "--data", conll, "--json")
    assert_ok(result)
    metrics = json.loads(result.output)
    assert metrics["sentences"] == 2 and metrics["tokens"] == 8
    # 4 gold entities; Berlin is gold ORG but a place to the model: precision and recall 3/4
    assert metrics["precision"] == pytest.approx(0.75) and metrics["recall"] == pytest.approx(0.75)


def test_export_round_trips_in_a_fresh_process_that_never_imports_dlapps(run_dir, tmp_path):
    out = tmp_path / "exported"
    result = run_subprocess("ner", "export", "--model", run_dir, "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    exported = json.loads(result.stdout)
    assert exported["version"] == 1 and (out / "model.keras").exists() and (out / "serving" / "1" / "saved_model.pb").exists()
    texts = TEXTS + ["", "Oslo"]  # an empty text gets no tokens, not an error, in the served model
    served = saved_model_outputs(out / "serving" / "1", {"text": texts})
    width = len(served["scores"][0])
    predicted = predict_json(run_dir, *TEXTS, "Oslo")
    assert served["length"] == [len(p["tokens"]) for p in predicted[:2]] + [0, 1]
    for row, expected in zip([0, 1, 3], predicted):
        length = len(expected["tokens"])
        assert served["tokens"][row * width: row * width + length] == expected["tokens"]
        assert served["tags"][row * width: row * width + length] == expected["tags"]
        assert np.allclose(served["scores"][row][:length], expected["scores"], atol=1e-4)
    assert set(served["tags"][2 * width: 3 * width]) == {""}


def test_config_and_keras_file_round_trips(run_dir):
    import keras
    import tensorflow as tf

    from dlapps.apps.ner.app import EntityTagger
    from dlapps.apps.ner.model import tokenize

    model = keras.saving.load_model(run_dir / "model.keras")
    assert isinstance(model, EntityTagger) and model.head == "crf"
    clone = EntityTagger.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    tokens = tokenize(tf.constant(TEXTS))
    for a, b in zip(model.tag_tokens(tokens), clone.tag_tokens(tokens)):
        assert np.allclose(a, b, atol=1e-6)
    assert clone.get_config() == model.get_config()


def test_crf_matches_brute_force_on_a_tiny_case():
    import tensorflow as tf

    from dlapps.apps.ner.model import crf_marginals, crf_negative_log_likelihood, viterbi_decode

    rng = np.random.default_rng(1)
    tags, steps = 3, 5
    transitions, start, end = (tf.constant(rng.normal(size=s), tf.float32) for s in ((tags, tags), (tags,), (tags,)))
    emissions = tf.constant(rng.normal(size=(3, steps, tags)), tf.float32)
    lengths = [5, 3, 1]
    mask = tf.sequence_mask(lengths, steps)
    gold = tf.constant(rng.integers(0, tags, size=(3, steps)), tf.int32)
    path = viterbi_decode(emissions, mask, transitions, start, end).numpy()
    nll = crf_negative_log_likelihood(emissions, gold, mask, transitions, start, end).numpy()
    marginals = crf_marginals(emissions, mask, transitions, start, end).numpy()
    e, t, s, f = emissions.numpy(), transitions.numpy(), start.numpy(), end.numpy()
    for b, length in enumerate(lengths):
        scores = {p: s[p[0]] + sum(e[b, i, p[i]] for i in range(length)) + sum(t[p[i], p[i + 1]] for i in range(length - 1)) + f[p[-1]]
                  for p in itertools.product(range(tags), repeat=length)}
        log_partition = np.log(np.sum(np.exp(list(scores.values()))))
        assert tuple(path[b, :length]) == max(scores, key=scores.get)
        assert nll[b] == pytest.approx(log_partition - scores[tuple(gold.numpy()[b, :length])], rel=1e-4)
        for i in range(length):
            for k in range(tags):
                expected = sum(np.exp(v - log_partition) for p, v in scores.items() if p[i] == k)
                assert marginals[b, i, k] == pytest.approx(expected, abs=1e-5)


def test_tag_scheme_conversions_and_spans():
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG"]
    bioes = ["B-PER", "E-PER", "O", "S-LOC", "S-LOC", "S-ORG"]
    assert ner_data.detect_scheme([iob1]) == "iob1"
    assert ner_data.detect_scheme([iob2]) == "iob2"
    assert ner_data.detect_scheme([bioes]) == "bioes"
    assert ner_data.to_iob2(iob1, "iob1") == iob2
    assert ner_data.to_iob2(bioes, "bioes") == iob2
    assert ner_data.from_iob2(iob2, "bioes") == bioes
    assert ner_data.from_iob2(["B-X", "I-X", "I-X", "O"], "bioes") == ["B-X", "I-X", "E-X", "O"]
    expected = [("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5), ("ORG", 5, 6)]
    assert ner_data.spans(iob2) == ner_data.spans(bioes, "bioes") == ner_data.spans(iob1, "iob1") == expected


def test_tokenizer_is_the_documented_one_and_offsets_point_into_the_text():
    from dlapps.apps.ner.app import _offsets, tokenize_texts

    text = "The U.S. paid 1,000 euros to well-known  Zürich firm\u00a0(ABC)."
    tokens = tokenize_texts([text])[0]
    assert tokens == ["The", "U.S", ".", "paid", "1,000", "euros", "to", "well-known", "Zürich", "firm", "(", "ABC", ")", "."]
    for token, (start, end) in zip(tokens, _offsets(text, tokens)):
        assert text[start:end] == token


def test_local_conll_folder_softmax_head_char_lstm_embeddings_and_overlong_sentences_skipped(tmp_path):
    folder = tmp_path / "conll"
    folder.mkdir()
    sentences = ner_data.demo(60, seed=3)
    lines = []
    for tokens, tags in zip(sentences.tokens, sentences.tags):
        lines += [f"{w}\t{t}" for w, t in zip(tokens, tags)] + [""]
    (folder / "train.txt").write_text("\n".join(lines[: len(lines) * 3 // 4]) + "\n")
    (folder / "valid.txt").write_text("\n".join(lines[len(lines) * 3 // 4:]) + "\n")
    vectors = tmp_path / "vectors.txt"  # word2vec text format, as the word2vec app writes it
    rng = np.random.default_rng(0)
    words = ["visited", "paris", "monday", "the", "said", "unseen-word"]
    vectors.write_text(f"{len(words)} 6\n" + "".join(f"{w} " + " ".join(f"{v:.4f}" for v in rng.normal(size=6)) + "\n" for w in words))
    result = run_cli("ner", "train", "--data", folder, "--out", tmp_path / "run", "--epochs", "1", "--head", "softmax",
                     "--char-encoder", "lstm", "--embeddings", vectors, "--max-length", "12", *TINY)
    assert_ok(result)
    assert "Embeddings: 6 of" in result.output  # training words first, then the vectors' other words
    skipped = sum(len(t) > 12 for t in ner_data.read_conll(folder / "train.txt").tokens)
    assert skipped > 0 and f"Skipped {skipped} training sentences longer than --max-length 12" in result.output
    rows = predict_json(tmp_path / "run", TEXT)
    assert len(rows[0]["tags"]) == 5 and all(0 < s <= 1 for s in rows[0]["scores"])


def test_help_never_imports_tensorflow():
    for args in (["ner", "--help"], ["ner", "train", "--help"]):
        heavy, _ = heavy_imports_of(*args)
        assert heavy == [], args


def test_resume_after_the_process_is_killed(tmp_path):
    out = tmp_path / "run"
    command = ["ner", "train", "--out", str(out), "--epochs", "40", *TINY, "--demo-size", "150"]
    done_epochs = kill_training_after(*command, metadata=out / "backup" / "training_metadata.json", epochs=1)
    assert 1 <= done_epochs < 40 and not (out / "model.keras").exists()
    result = run_cli("ner", "train", "--out", out, "--resume", "--epochs", str(done_epochs + 1))
    assert_ok(result)
    epochs = [int(line.split(",")[0]) for line in (out / "history.csv").read_text().splitlines()[1:]]
    assert epochs[-1] == done_epochs, epochs
    assert json.loads((out / "config.json").read_text())["lstm_units"] == [24]
    assert (out / "model.keras").exists() and not (out / "backup").exists()


# --- bad input: one line, exit 2, nothing overwritten ---------------------------------------------

GOOD = b"Angela B-PER\nMerkel I-PER\nspoke O\n\n"


@pytest.mark.parametrize(
    "files, args, fragments",
    [
        ({}, ["--data", "{tmp}/missing.txt"], ["missing.txt", "no such file or folder"]),
        ({"empty.txt": b"\n\n"}, ["--data", "{tmp}/empty.txt"], ["empty.txt", "empty file"]),
        ({"doc.txt": b"-DOCSTART- -X- O\n\n"}, ["--data", "{tmp}/doc.txt"], ["doc.txt", "no sentences found"]),
        ({"cols.txt": GOOD + b"Paris NNP B-LOC\n"}, ["--data", "{tmp}/cols.txt"], ["cols.txt", "line 5", "expected 2 columns", "found 3"]),
        ({"one.txt": b"Angela\nMerkel\n"}, ["--data", "{tmp}/one.txt"], ["one.txt", "line 1", "found 1 column"]),
        ({"tag.txt": GOOD + b"Paris X-LOC\n"}, ["--data", "{tmp}/tag.txt"], ["tag.txt", "line 5", "unknown tag 'X-LOC'"]),
        ({"bare.txt": GOOD + b"Paris LOC\n"}, ["--data", "{tmp}/bare.txt"], ["bare.txt", "line 5", "unknown tag 'LOC'"]),
        ({"mixed.txt": GOOD + b"Paris S-LOC\n"}, ["--data", "{tmp}/mixed.txt", "--input-scheme", "iob2"], ["mixed.txt", "line 5", "not valid IOB2"]),
        ({"latin.txt": GOOD + b"Z\xfcrich B-LOC\n"}, ["--data", "{tmp}/latin.txt"], ["latin.txt", "line 5", "0xfc", "utf-8"]),
        ({"plain.txt": b"a O\nb O\n\nc O\n"}, ["--data", "{tmp}/plain.txt"], ["plain.txt", "no entity tags"]),
        ({"long.txt": GOOD * 3}, ["--data", "{tmp}/long.txt", "--max-length", "2"], ["long.txt", "no training sentences of at most --max-length 2"]),
        ({"c.json": b'{"lstm_unit": [8]}'}, ["--config", "{tmp}/c.json"], ["c.json", "did you mean 'lstm_units'"]),
        ({}, ["--head", "crf2"], ["head must be one of", "did you mean 'crf'"]),
        ({}, ["--resume"], ["no interrupted run to resume"]),
    ],
)
def test_bad_training_input(tmp_path, files, args, fragments):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert_user_error(run_cli("ner", "train", "--out", tmp_path / "run", "--epochs", "1", *args), *fragments)


def test_failed_training_and_evaluation_leave_an_existing_run_untouched(run_dir, tmp_path):
    before = snapshot(run_dir)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(GOOD + b"Paris\n")
    assert_user_error(run_cli("ner", "train", "--data", bad, "--out", run_dir), "bad.txt", "line 5")
    unknown_type = tmp_path / "gold.txt"
    unknown_type.write_bytes(GOOD + b"Ebola B-DISEASE\n")
    assert_user_error(run_cli("ner", "evaluate", "-m", run_dir, "--data", unknown_type), "gold.txt", "line 5", "'DISEASE'")
    assert snapshot(run_dir) == before


def test_predict_errors(run_dir, tmp_path):
    assert_user_error(run_cli("ner", "predict", "-m", run_dir), "no input")
    assert_user_error(run_cli("ner", "predict", TEXT, "  ", "-m", run_dir), "input 2", "empty text")
    assert_user_error(run_cli("ner", "predict", TEXT, "-m", run_dir, "--format", "xml"), "--format must be spans or conll")
    assert_user_error(run_cli("ner", "predict", "-m", run_dir, "--file", tmp_path / "none.txt"), "none.txt", "no such file")
    assert_user_error(run_cli("ner", "predict", TEXT, "-m", tmp_path / "nothing"), "no trained model here", "dlapps ner train")
    quiet = run_subprocess("ner", "evaluate", "-m", tmp_path / "nothing")
    assert_user_error(quiet, "no trained model here")
