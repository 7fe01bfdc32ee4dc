"""translate: the contract suite for both architectures, then what is particular to translation:
the tokeniser against keras_hub's, the causal and padding masks, cached step-by-step decoding
against teacher forcing, beam width 1 against greedy, the exported beam signature, data formats."""

import json

import numpy as np
import pytest

from .contract import AnotherArchitecture, AppContract, history_column, predict_json, trained
from .helpers import assert_ok, run_cli, saved_model_outputs

TINY = ("--demo-size", "1500", "--embedding-dim", "32", "--intermediate-dim", "64", "--num-layers", "1",
        "--num-heads", "2", "--learning-rate", "0.005", "--warmup-steps", "30", "--batch-size", "32",
        "--val-bleu-sentences", "100")
# The GRU learns the demo more slowly than the Transformer: more pairs, wider, more epochs.
TINY_RNN = ("--demo-size", "3000", "--arch", "rnn", "--embedding-dim", "64", "--units", "64", "--num-layers", "1",
            "--learning-rate", "0.005", "--warmup-steps", "100", "--batch-size", "64", "--val-bleu-sentences", "100")
EPOCHS = 5
SOURCES = ("I have three cats.", "Today we see forty-two dogs.", "She wants one hundred and five books.")


class TestContract(AppContract):
    app = "translate"
    train_args = TINY
    resume_args = ("--demo-size", "300", "--val-bleu-sentences", "20")  # small epochs for the killed run
    epochs = EPOCHS
    learned = {"best_value": (15.0, 100.0)}  # validation BLEU of the chosen epoch (35 when measured)
    inputs = SOURCES
    evaluate_keys = ("bleu", "chrf", "bleu_signature", "chrf_signature", "decoding", "pairs", "sentences_per_second")
    tfds_name = "ted_hrlr_translate/pt_to_en"
    tfds_train_args = ("--embedding-dim", "8", "--intermediate-dim", "8", "--num-layers", "1", "--num-heads", "1",
                       "--val-bleu-sentences", "4", "--max-target-length", "32", "--max-source-length", "32")
    bad_train_inputs = [
        ({"pairs/train.de": b"a\nb\nc\n", "pairs/train.en": b"x\ny\n"}, ["--data", "{tmp}/pairs", "--src", "de", "--tgt", "en"],
         ["train.de has 3 lines", "train.en has 2", "line-aligned"]),
        ({"nolang/train.de": b"a\n", "nolang/train.en": b"x\n"}, ["--data", "{tmp}/nolang"], ["nolang", "--src and --tgt", "train.de"]),
        ({"half/train.de": b"a\n"}, ["--data", "{tmp}/half/train", "--src", "de", "--tgt", "en"], ["train.en", "no such file"]),
        ({"notab.tsv": b"hello\tbonjour\nno tab here\n"}, ["--data", "{tmp}/notab.tsv"], ["notab.tsv", "line 2", "no tab"]),
        ({"latin.tsv": b"ok\tok\ncaf\xe9\tcafe\n"}, ["--data", "{tmp}/latin.tsv"], ["latin.tsv", "line 2", "0xe9", "utf-8"]),
        ({"blank.tsv": b"\n\n"}, ["--data", "{tmp}/blank.tsv"], ["blank.tsv", "no sentence pairs"]),
        ({}, ["--embedding-dim", "30", "--num-heads", "4"], ["--num-heads 4 must divide --embedding-dim 30"]),
        ({}, ["--arch", "lstm"], ["--arch must be one of"]),
        ({}, ["--dropout", "1.5"], ["--dropout must be at least 0 and below 1"]),
        ({}, ["--max-source-length", "1"], ["--max-source-length must be between 2 and 2048"]),
        ({}, ["--data", "tfds:ted_hrlr_translat"], ["tfds:ted_hrlr_translat", "did you mean"]),
    ]

    def check_predictions(self, rows, inputs):
        assert [r["source"] for r in rows] == list(inputs)
        assert all(isinstance(r["translation"], str) for r in rows)

    def serving_call(self, inputs):
        return {"source": list(inputs)}, (), "serving_default"

    def check_served(self, served, rows):
        assert served["translation"] == [r["translation"] for r in rows]

    def check_other_signatures(self, saved_model, exported, run_dir, inputs):
        """The 'beam' signature (export's default width) answers as predict with that beam."""
        from dlapps.apps.translate.config import TranslateExportOptions

        rows = predict_json("translate", run_dir, inputs, "--beam", str(TranslateExportOptions().beam))
        served = saved_model_outputs(saved_model, {"source": list(inputs)}, signature="beam")
        assert served["translation"] == [r["translation"] for r in rows]
        assert np.allclose(served["score"], [r["score"] for r in rows], atol=1e-3)


@pytest.mark.slow
class TestContractRnn(AnotherArchitecture, TestContract):
    train_args = TINY_RNN
    test_tfds_path_offline_with_mock_data = None  # the same reader as the Transformer's, checked there
    epochs = 8
    learned = {"best_value": (5.0, 100.0)}  # 12 when measured
    # --num-heads does not apply to the GRU
    bad_train_inputs = [case for case in TestContract.bad_train_inputs if "--num-heads" not in case[1]]


# --- a trained model (the contract's run) ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return trained(tmp_path_factory, "translate", "--epochs", str(EPOCHS), *TINY)


def test_validation_bleu_climbs_in_history(tiny_run):
    bleu = history_column(tiny_run, "val_bleu")
    assert len(bleu) == EPOCHS and bleu[-1] > bleu[0] and max(bleu) > 5, bleu


def test_beam_width_one_equals_greedy_and_wider_beams_score_no_worse(tiny_run):
    from dlapps.apps.translate.app import _decoders, translate
    from dlapps.apps.translate.data import demo
    from dlapps.shared import training

    model = training.load_model(tiny_run, "translate")
    sources = demo(40, seed=7).sources
    greedy = translate(model, sources)["translations"]
    beam_one = _decoders(model)["beam"](np.asarray(sources, dtype=object), np.int32(1), np.float32(0.6))
    assert [t.decode("utf-8") for t in beam_one["translation"].numpy()] == greedy
    # Without length normalisation, a width-4 beam keeps the greedy path's score or a better one.
    raw_one = _decoders(model)["beam"](np.asarray(sources, dtype=object), np.int32(1), np.float32(0.0))["score"].numpy()
    raw_four = _decoders(model)["beam"](np.asarray(sources, dtype=object), np.int32(4), np.float32(0.0))["score"].numpy()
    assert np.mean(raw_four >= raw_one - 1e-4) > 0.9, (raw_one, raw_four)


def test_file_stdin_empty_and_overlong_sources(tiny_run, tmp_path):
    file = tmp_path / "sources.txt"
    file.write_text("\n".join(SOURCES) + "\n")
    from_file = run_cli("translate", "predict", "--file", file, "--model", tiny_run)
    from_stdin = run_cli("translate", "predict", "-", "--model", tiny_run, input="\n".join(SOURCES))
    assert_ok(from_file)
    assert from_file.output == from_stdin.output and len(from_file.output.splitlines()) == 3
    # Empty, unseen characters and a source over --max-source-length: translated, the last with a warning.
    overlong = " ".join(["I have three cats."] * 40)
    result = run_cli("translate", "predict", "", "Zürich ☃ ∑", overlong, "--model", tiny_run, "--json")
    assert_ok(result)
    assert len([line for line in result.stdout.splitlines() if line.strip()]) == 3
    assert "1 source(s) longer than the model's 63 pieces were cut" in result.stderr


def test_evaluate_on_demo_data_with_beam(tiny_run):
    result = run_cli("translate", "evaluate", "--model", tiny_run, "--data", "demo", "--beam", "2", "--json")
    assert_ok(result)
    metrics = json.loads(result.output)
    assert metrics["decoding"] == "beam 2" and metrics["pairs"] == 300 and 0 <= metrics["bleu"] <= 100
    assert metrics["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")


# --- the model, untrained: masks and caches -----------------------------------------------------------


@pytest.fixture(scope="module")
def vocabularies():
    from dlapps.apps.translate.data import demo
    from dlapps.apps.translate.model import learn_vocabulary

    pairs = demo(300, seed=3)
    return pairs, learn_vocabulary(pairs.sources, 400), learn_vocabulary(pairs.targets, 400)


@pytest.fixture(scope="module", params=["transformer", "rnn"])
def untrained(request, vocabularies):
    import keras

    from dlapps.apps.translate.model import Translator

    keras.utils.set_random_seed(1)
    _, source_vocabulary, target_vocabulary = vocabularies
    return Translator(source_vocabulary, target_vocabulary, arch=request.param, embedding_dim=16, num_layers=2,
                      num_heads=2, intermediate_dim=16, units=16, dropout=0.0, max_source_length=24, max_target_length=24)


def _ids(rng, vocabulary_size, rows, steps):
    return rng.integers(4, vocabulary_size, size=(rows, steps)).astype("int32")


def test_a_later_target_token_does_not_change_earlier_outputs(untrained):
    rng = np.random.default_rng(0)
    source = _ids(rng, len(untrained.source_vocabulary), 2, 7)
    target = _ids(rng, len(untrained.target_vocabulary), 2, 9)
    changed = target.copy()
    changed[:, 5] = (changed[:, 5] + 1 - 4) % (len(untrained.target_vocabulary) - 4) + 4
    before = untrained.predict_on_batch({"encoder_ids": source, "decoder_ids": target})
    after = untrained.predict_on_batch({"encoder_ids": source, "decoder_ids": changed})
    np.testing.assert_allclose(before[:, :5], after[:, :5], atol=1e-5)
    assert not np.allclose(before[:, 5:], after[:, 5:], atol=1e-5)


def test_padding_does_not_change_the_outputs(untrained):
    rng = np.random.default_rng(1)
    source = _ids(rng, len(untrained.source_vocabulary), 1, 5)
    target = _ids(rng, len(untrained.target_vocabulary), 1, 6)
    alone = untrained.predict_on_batch({"encoder_ids": source, "decoder_ids": target})
    # The same pair padded to the length of a longer neighbour in its batch.
    longer_source = _ids(rng, len(untrained.source_vocabulary), 1, 11)
    longer_target = _ids(rng, len(untrained.target_vocabulary), 1, 10)
    padded_source = np.concatenate([np.pad(source, [[0, 0], [0, 6]]), longer_source])
    padded_target = np.concatenate([np.pad(target, [[0, 0], [0, 4]]), longer_target])
    batched = untrained.predict_on_batch({"encoder_ids": padded_source, "decoder_ids": padded_target})
    np.testing.assert_allclose(alone[0], batched[0, :6], atol=1e-5)


def test_step_by_step_decoding_equals_teacher_forcing(untrained):
    """The GRU's carried state and the Transformer's key/value caches give the logits that a full
    pass over the prefix gives (PAD and START are banned from generation, so they are left out)."""
    from keras import ops

    rng = np.random.default_rng(2)
    source = _ids(rng, len(untrained.source_vocabulary), 3, 6)
    source[0, 4:] = 0  # a padded source in the batch
    target = _ids(rng, len(untrained.target_vocabulary), 3, 7)
    full = untrained.predict_on_batch({"encoder_ids": source, "decoder_ids": target})
    state = untrained.start_decoding(ops.convert_to_tensor(source), 7)
    for index in range(7):
        logits, state = untrained.decode_step(state, ops.convert_to_tensor(target[:, index]), index)
        np.testing.assert_allclose(np.asarray(logits)[:, 4:], full[:, index, 4:], atol=1e-4)


# --- tokeniser, loss and schedule ---------------------------------------------------------------------


def test_tokenizer_matches_keras_hub_word_piece_and_detokenizes_exactly(vocabularies):
    import keras_hub
    import tensorflow as tf

    from dlapps.apps.translate.model import SubwordTokenizer, split_words

    pairs, _, target_vocabulary = vocabularies
    texts = pairs.targets[:100] + ["", "Zürich ☃ Bäume.", "x" * 120, "  zwei   Katzen. "]
    ours = SubwordTokenizer(target_vocabulary).tokenize(tf.constant(texts))
    reference = keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=target_vocabulary, lowercase=False, strip_accents=False, split=False, oov_token="[UNK]")
    expected = reference.tokenize(split_words(tf.constant(texts)))  # keras_hub answers eager input with lists
    assert ours.to_list() == (expected if isinstance(expected, list) else expected.to_list())
    back = SubwordTokenizer(target_vocabulary).detokenize(ours.to_tensor(0)).numpy()
    assert [b.decode("utf-8") for b in back[:100]] == pairs.targets[:100]
    assert back[-1].decode("utf-8") == "zwei Katzen."  # whitespace normalised


def test_label_smoothing_zero_is_masked_cross_entropy(untrained):
    import keras

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 4, len(untrained.target_vocabulary))).astype("float32")
    labels = np.array([[5, 6, 3, 0], [7, 3, 0, 0]], dtype="int32")
    smoothing = untrained.label_smoothing
    try:
        untrained.label_smoothing = 0.0
        loss = float(untrained.compute_loss(y=labels, y_pred=logits))
    finally:
        untrained.label_smoothing = smoothing
    per_token = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True).numpy()
    assert loss == pytest.approx(per_token[labels > 0].mean(), rel=1e-5)


def test_warmup_schedule_rises_then_decays():
    from dlapps.apps.translate.model import WarmupInverseSqrt

    schedule = WarmupInverseSqrt(1e-3, 100)
    rates = [float(schedule(step)) for step in (0, 49, 99, 399)]
    assert rates[0] < rates[1] < rates[2] == pytest.approx(1e-3) and rates[3] == pytest.approx(5e-4, rel=1e-2)


# --- data formats --------------------------------------------------------------------------------------


def test_line_aligned_pairs_skip_empty_lines_with_a_count(tmp_path):
    from dlapps.apps.translate import data
    from dlapps.apps.translate.config import TranslateConfig

    (tmp_path / "train.de").write_text("Ein Hund.\n\nZwei Katzen.\n")
    (tmp_path / "train.en").write_text("A dog.\nA cat.\nTwo cats.\n")
    (tmp_path / "val.de").write_text("Ein Haus.\n")
    (tmp_path / "val.en").write_text("A house.\n")
    train, val, skipped = data.load_splits(TranslateConfig(data=str(tmp_path), src="de", tgt="en"))
    assert train.sources == ["Ein Hund.", "Zwei Katzen."] and train.targets == ["A dog.", "Two cats."]
    assert val.sources == ["Ein Haus."] and skipped == 1
    # A prefix reads one pair of files; --src/--tgt swapped translates the other way.
    pairs, _ = data.read_path(str(tmp_path / "val"), TranslateConfig(src="en", tgt="de"))
    assert pairs.sources == ["A house."] and pairs.targets == ["Ein Haus."]


def test_tsv_pairs_with_attribution_and_reverse(tmp_path):
    from dlapps.apps.translate import data
    from dlapps.apps.translate.config import TranslateConfig

    table = tmp_path / "fra.txt"
    table.write_text("Go.\tVa !\tCC-BY 2.0 (France)\nRun!\tCours !\tCC-BY\n\t\nHi.\t\tx\n")
    pairs, _ = data.read_path(str(table), TranslateConfig())
    assert pairs.sources == ["Go.", "Run!"] and pairs.targets == ["Va !", "Cours !"] and pairs.skipped == 1
    reverse, _ = data.read_path(str(table), TranslateConfig(reverse=True))
    assert reverse.sources == ["Va !", "Cours !"]


def test_demo_grammar():
    from dlapps.apps.translate.data import demo, english_number, german_number

    assert german_number(21) == "einundzwanzig" and german_number(342) == "dreihundertzweiundvierzig"
    assert german_number(101) == "einhunderteins" and english_number(342) == "three hundred and forty-two"
    pairs = demo(50, seed=0)
    assert pairs.sources == demo(50, seed=0).sources and len(set(pairs.sources)) > 40
