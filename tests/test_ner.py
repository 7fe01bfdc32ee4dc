"""ner: the contract suite, plus the CRF against brute force, tag schemes, tokenisation and offsets,
CoNLL formats, --format conll, pretrained vectors, and tags that do not depend on the batch."""

import itertools
import json

import numpy as np
import pytest

from dlapps.apps.ner import data as ner_data
from dlapps.shared.errors import UserError

from .contract import AppContract
from .helpers import assert_ok, assert_user_error, run_cli, snapshot

TINY = ("--demo-size", "500", "--lstm-units", "24", "--embedding-dim", "24", "--char-units", "16", "--char-dim", "12",
        "--batch-size", "16", "--learning-rate", "0.01")
TEXT = "Angela Merkel visited Paris."
TEXTS = (TEXT, "Shares in Karomar Corp fell after John Smith warned of weaker demand.")
GOOD = b"Angela B-PER\nMerkel I-PER\nspoke O\n\n"


class TestContract(AppContract):
    app = "ner"
    train_args = TINY
    resume_args = ("--demo-size", "100")  # small epochs for the killed run
    epochs = 3
    learned = {"val_f1": (0.8, 1.0)}
    inputs = TEXTS
    evaluate_keys = ("sentences", "tokens", "precision", "recall", "f1", "token_accuracy", "per_type")
    tfds_name = "conll2003"
    # the run that trains the other head and character encoder, too
    tfds_train_args = ("--lstm-units", "8", "--embedding-dim", "8", "--char-units", "8", "--char-dim", "8",
                       "--head", "softmax", "--char-encoder", "lstm")
    bad_train_inputs = [
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
        ({"corpus/train.txt": GOOD * 3, "corpus/valid.txt": GOOD + b"Ebola B-DISEASE\n"}, ["--data", "{tmp}/corpus"],
         ["valid.txt", "validation entity types ['DISEASE'] do not occur in the training data"]),
        ({"corpus/readme.md": b"hello"}, ["--data", "{tmp}/corpus/readme.md", "--input-scheme", "bioes"], ["readme.md", "found 1 column"]),
        ({"notes/readme.md": b"hello"}, ["--data", "{tmp}/notes"], ["notes", "no CoNLL training file found"]),
        ({"vectors.txt": b"two words\n"}, ["--embeddings", "{tmp}/vectors.txt"], ["vectors.txt", "line 1", "COUNT DIM"]),
        ({}, ["--data", "tfds:conll2004"], ["tfds:conll2004", "did you mean 'conll2003'"]),
        ({}, ["--head", "crf2"], ["--head must be one of", "did you mean 'crf'"]),
        ({}, ["--lstm-units", "0"], ["--lstm-units must be between 1 and 4096, got [0]"]),
        ({}, ["--dropout", "1.5"], ["--dropout must be at least 0 and below 1, got 1.5"]),
        ({}, ["--max-word-length", "0"], ["--max-word-length must be between 1 and 1000, got 0"]),
        ({}, ["--char-units", "-3"], ["--char-units must be between 1 and 4096, got -3"]),
        ({}, ["--max-words", "0"], ["--max-words must be between 1 and 10000000, got 0"]),
    ]

    def check_predictions(self, rows, inputs):
        assert [r["text"] for r in rows] == list(inputs)
        first = rows[0]
        assert first["tokens"] == ["Angela", "Merkel", "visited", "Paris", "."]
        assert first["tags"] == ["B-PER", "E-PER", "O", "S-LOC", "O"]  # the model's BIOES
        assert [(e["type"], e["text"], e["start"], e["end"]) for e in first["entities"]] == [
            ("PER", "Angela Merkel", 0, 13), ("LOC", "Paris", 22, 27)]
        for row in rows:
            assert all(0.0 < e["score"] <= 1.0 for e in row["entities"])
            assert len(row["scores"]) == len(row["tags"]) == len(row["tokens"])

    def serving_call(self, inputs):
        # An empty text gets no tokens (length 0) in the served model, not an error.
        return {"text": list(inputs) + [""]}, (), "serving_default"

    def check_served(self, served, rows):
        width = len(served["scores"][0])  # tokens and tags come back flattened
        assert served["length"] == [len(r["tokens"]) for r in rows] + [0]
        for index, row in enumerate(rows):
            length = len(row["tokens"])
            assert served["tokens"][index * width: index * width + length] == row["tokens"]
            assert served["tags"][index * width: index * width + length] == row["tags"]
            assert np.allclose(served["scores"][index][:length], row["scores"], atol=1e-4)
        assert set(served["tags"][len(rows) * width:]) == {""}

    # --- ner's own, on the contract's trained model --------------------------------------------

    def test_file_and_stdin_give_the_same_conll_table(self, run_dir, tmp_path):
        file = tmp_path / "texts.txt"
        file.write_text(TEXT + "\nJohn Smith\n")
        from_file = run_cli("ner", "predict", "--file", file, "--model", run_dir, "--format", "conll")
        from_stdin = run_cli("ner", "predict", "-", "--model", run_dir, "--format", "conll", input=TEXT + "\nJohn Smith")
        assert_ok(from_file)
        assert from_file.output == from_stdin.output
        lines = from_file.output.splitlines()
        assert lines[:6] == ["Angela\tB-PER", "Merkel\tE-PER", "visited\tO", "Paris\tS-LOC", ".\tO", ""]
        assert len(lines) == 9 and lines[-1] == ""  # a blank line after each sentence, as CoNLL files have

    def test_the_kept_epoch_is_the_one_with_the_best_validation_entity_f1(self, run_dir):
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["monitor"] == "val_f1"
        assert metrics["best_value"] == pytest.approx(max(metrics["val_f1_per_epoch"]), abs=1e-4)
        assert metrics["val_f1"] == pytest.approx(metrics["best_value"], abs=1e-4)

    def test_predict_errors(self, run_dir):
        assert_user_error(run_cli("ner", "predict", TEXT, "  ", "-m", run_dir), "input 2", "empty text")
        assert_user_error(run_cli("ner", "predict", TEXT, "-m", run_dir, "--format", "xml"), "--format must be one of spans, conll")
        assert_user_error(run_cli("ner", "predict", TEXT, "-m", run_dir, "--batch-size", "0"), "--batch-size must be between 1 and 65536")

    def test_tags_do_not_depend_on_the_other_sentences_of_a_batch_and_an_empty_batch_is_served(self, run_dir):
        import tensorflow as tf

        from dlapps.apps.ner.app import APP, NerPredictOptions
        from dlapps.shared import training

        model = training.load_model(run_dir, "ner")
        alone = APP.predict(model, ["Oslo"], NerPredictOptions())[0]
        long = "Officials from Oslo flew to Paris for the summit , a spokesman said on Tuesday ."
        batched = APP.predict(model, ["Oslo", long], NerPredictOptions())[0]
        assert alone["tags"] == batched["tags"]
        assert np.allclose(alone["scores"], batched["scores"], atol=1e-5)
        out = APP.endpoints(model, None)["serving_default"](tf.constant([], tf.string))  # what export writes
        assert out["tags"].shape[0] == 0 and out["length"].shape == (0,)

    def test_evaluate_an_iob1_conll_file_and_refuse_unknown_types(self, run_dir, tmp_path):
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
        before = snapshot(run_dir)
        unknown_type = tmp_path / "unknown.txt"
        unknown_type.write_bytes(GOOD + b"Ebola B-DISEASE\n")
        assert_user_error(run_cli("ner", "evaluate", "-m", run_dir, "--data", unknown_type), "unknown.txt", "line 5", "'DISEASE'")
        assert snapshot(run_dir) == before


def test_a_conll_folder_with_overlong_sentences_and_pretrained_vectors(tmp_path, capsys):
    """Read and built, not trained: the contract's runs train."""
    from dlapps.apps.ner.app import APP
    from dlapps.apps.ner.config import NerConfig
    from dlapps.shared.config import resolve

    folder = tmp_path / "conll"
    folder.mkdir()
    sentences = ner_data.demo(60, seed=3)
    lines = []
    for tokens, tags in zip(sentences.tokens, sentences.tags):
        lines += [f"{w}\t{t}" for w, t in zip(tokens, tags)] + [""]
    (folder / "train.txt").write_text("\n".join(lines[: len(lines) * 3 // 4]) + "\n")
    (folder / "valid.txt").write_text("\n".join(lines[len(lines) * 3 // 4:]) + "\n")
    vectors = tmp_path / "vectors.txt"  # word2vec text format, as the word2vec app writes it
    words = ["visited", "Paris", "monday", "the", "said", "unseen-word"]
    vectors.write_text(f"{len(words)} 3\n" + "".join(f"{w} {i} {i + 0.5} {-i}\n" for i, w in enumerate(words)))
    config = resolve(NerConfig, None, {"data": str(folder), "embeddings": str(vectors), "max_length": 12, "seed": 1})
    splits = APP.load_splits(config)
    train = ner_data.read_conll(folder / "train.txt")
    skipped = sum(len(t) > 12 for t in train.tokens)
    assert skipped > 0 and f"Skipped {skipped} training sentences longer than --max-length 12 tokens" in capsys.readouterr().out
    assert len(splits.train) == len(train) - skipped and len(splits.val) == len(ner_data.read_conll(folder / "valid.txt"))
    assert splits.info["entity_types"] == ["LOC", "MISC", "ORG", "PER"] and splits.embedding_words == words

    model = APP.build_model(config, splits)
    assert "Embeddings: 6 of" in capsys.readouterr().out  # training words first, then the vectors' other words
    assert model.embedding_dim == 3 and "unseen-word" in model.vocabulary
    row = model.vocabulary.index("paris") + 2  # after padding and unknown
    assert np.allclose(model.get_layer("word_embedding").embeddings.numpy()[row], [1, 1.5, -1])


# --- no training ----------------------------------------------------------------------------------


def test_crf_matches_brute_force_on_a_tiny_case():
    import tensorflow as tf

    from dlapps.apps.ner.crf import crf_marginals, crf_negative_log_likelihood, viterbi_decode

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


def test_spans_table():
    from dlapps.apps.ner.app import spans_lines

    row = {"text": TEXT, "entities": [{"text": "Angela Merkel", "type": "PER", "start": 0, "end": 13, "score": 0.9634},
                                      {"text": "Paris", "type": "LOC", "start": 22, "end": 27, "score": 0.5}]}
    assert spans_lines(row).splitlines() == [TEXT, "  PER       0-13   0.963  Angela Merkel", "  LOC      22-27   0.500  Paris"]


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
    from dlapps.apps.ner.app import token_offsets, tokenize_texts

    text = "The U.S. paid 1,000 euros to well-known  Zürich firm\u00a0(ABC)."
    tokens = tokenize_texts([text])[0]
    assert tokens == ["The", "U.S", ".", "paid", "1,000", "euros", "to", "well-known", "Zürich", "firm", "(", "ABC", ")", "."]
    for token, (start, end) in zip(tokens, token_offsets(text, tokens)):
        assert text[start:end] == token


def test_vocabulary_and_pretrained_rows_go_through_the_word_normalisation(tmp_path):
    from dlapps.apps.ner.app import embedding_rows
    from dlapps.apps.ner.model import build_vocabularies

    vectors = tmp_path / "vectors.txt"
    vectors.write_text("4 2\nParis 1 2\n1996 3 4\nparis 5 6\nOslo 7 8\n")
    words = ["Paris", "1996", "paris", "Oslo"]
    vocabulary, characters = build_vocabularies([["In", "1997", "Paris", "paris", "Paris"]], max_words=4, extra_words=words)
    # training words by count (lower case, digits 0), then the vectors' other words, up to max_words
    assert vocabulary == ["paris", "in", "0000", "oslo"]
    assert characters == list("aris9PIn17p")  # by count, ties in first-seen order
    matrix, found = embedding_rows(vocabulary, words, str(vectors), seed=0)
    assert matrix.shape == (6, 2) and found == 3 and not matrix[0].any()  # rows 0, 1: padding, unknown
    assert matrix[2].tolist() == [1, 2] and matrix[4].tolist() == [3, 4] and matrix[5].tolist() == [7, 8]


def test_conll_files_in_utf16(tmp_path):
    path = tmp_path / "utf16.txt"
    path.write_bytes("Zürich B-LOC\nliegt O\n".encode("utf-16"))
    sentences = ner_data.read_conll(path, "utf-16")
    assert sentences.tokens == [["Zürich", "liegt"]] and sentences.tags == [["B-LOC", "O"]]
    path.write_bytes("Zürich B-LOC\n".encode("utf-16") + b"\x00")  # an odd byte count
    with pytest.raises(UserError, match="utf16.txt: byte 28 is not valid utf-16"):
        ner_data.read_conll(path, "utf-16")
