"""charlm: the contract suite, plus its perplexity definition, seeded sampling (predict = the
SavedModel), the score signature, text formats and the recurrent/transformer generation paths."""

import json
import math

import numpy as np
import pytest

from .contract import AppContract, predict_json
from .helpers import assert_ok, assert_user_error, run_cli

TINY = ("--demo-chars", "20000", "--arch", "lstm", "--units", "64", "--embedding-dim", "16", "--sequence-length", "32",
        "--batch-size", "32", "--learning-rate", "0.02", "--dropout", "0")
EPOCHS = 4
TEXT = "Return the number of items in the list. If the value is not found, raise ValueError."
SAMPLING = ("--length", "40", "--top-k", "20", "--seed", "5")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The one tiny run of this file: the contract's `run_dir` and the tests below share it."""
    out = tmp_path_factory.mktemp("charlm") / "run"
    assert_ok(run_cli("charlm", "train", "--out", out, "--epochs", str(EPOCHS), *TINY))
    return out


class TestContract(AppContract):
    app = "charlm"
    train_args = TINY
    epochs = EPOCHS
    # a uniform guess has perplexity = vocabulary size (about 90 characters of English docstrings)
    learned = {"val_perplexity": (1.0, 16.0), "vocabulary_size": (60, 120)}
    inputs = ("The value", "")
    predict_options = SAMPLING
    evaluate_keys = ("characters", "predicted_characters", "log_probability", "perplexity", "bits_per_character", "vocabulary_size")
    tfds_name = "tiny_shakespeare"
    tfds_train_args = ("--arch", "lstm", "--units", "8", "--embedding-dim", "4", "--sequence-length", "16")
    bad_train_inputs = [
        ({"empty.txt": b""}, ["--data", "{tmp}/empty.txt"], ["empty.txt", "empty file"]),
        ({"blank.txt": b" \n\n \n"}, ["--data", "{tmp}/blank.txt"], ["blank.txt", "empty file"]),
        ({"model.bin": bytes(range(256)) * 4}, ["--data", "{tmp}/model.bin"], ["model.bin", "binary file"]),
        ({"bad.txt": b"fine line\ncaf\xe9 au lait\n"}, ["--data", "{tmp}/bad.txt"], ["bad.txt", "line 2", "0xe9", "utf-8"]),
        ({"folder/a.txt": b"some text\n", "folder/b.txt": b""}, ["--data", "{tmp}/folder"], ["b.txt", "empty file"]),
        ({"short.txt": b"tiny text"}, ["--data", "{tmp}/short.txt"], ["only 8 training characters", "--sequence-length"]),
        ({"c.yaml": b"sequence_lenght: 50\n"}, ["--config", "{tmp}/c.yaml"], ["c.yaml", "did you mean 'sequence_length'"]),
        ({}, ["--arch", "lstn"], ["arch must be one of", "did you mean 'lstm'"]),
        ({}, ["--arch", "transformer", "--embedding-dim", "10", "--num-heads", "4"], ["--embedding-dim (10) must be a multiple of --num-heads (4)"]),
        ({}, ["--dropout", "1.5"], ["--dropout must be at least 0 and below 1"]),
        ({}, ["--units", "64,0"], ["--units must be between 1 and 8192"]),
        ({}, ["--sequence-length", "1"], ["--sequence-length must be between 2 and 65536"]),
        ({}, ["--lr-decay", "0"], ["--lr-decay must be above 0 and at most 1"]),
        ({}, ["--clip-norm", "-1"], ["--clip-norm must be above 0 and at most 1e+06"]),
        ({}, ["--min-count", "0"], ["--min-count must be at least 1"]),
        ({}, ["--num-heads", "0"], ["--num-heads must be between 1 and 128"]),
    ]

    @pytest.fixture(scope="class")
    def run_dir(self, trained):
        return trained

    def check_predictions(self, rows, inputs):
        assert [r["prompt"] for r in rows] == list(inputs)
        assert all(len(r["text"]) == 40 and r["seed"] == 5 and r["top_k"] == 20 for r in rows)

    def serving_call(self, inputs):
        rows = len(inputs)
        arguments = {"prompt": list(inputs), "length": [40] * rows, "temperature": [0.8] * rows, "top_k": [20] * rows, "seed": [5] * rows}
        return arguments, (), "generate_seeded"

    def check_served(self, served, rows):
        assert served["text"] == [r["text"] for r in rows]


def test_a_seed_reproduces_generation_and_each_prompt_continues_alone(trained):
    from dlapps.apps.charlm.app import generate_text
    from dlapps.shared import training

    model = training.load_model(trained, "charlm")
    pieces = []
    text = generate_text(model, "The value", 40, temperature=0.8, top_k=20, seed=5, on_text=pieces.append)
    assert len(pieces) == 40 and "".join(pieces) == text  # one callback per character, as produced
    rows = predict_json("charlm", trained, ["The value", "If"], *SAMPLING)  # another process would load the same
    assert [r["text"] for r in rows] == [text, generate_text(model, "If", 40, temperature=0.8, top_k=20, seed=5)]
    assert generate_text(model, "The value", 40, temperature=0.8, top_k=20, seed=6) != text
    plain = run_cli("charlm", "predict", "The value", "-m", trained, *SAMPLING)
    assert_ok(plain)
    assert plain.stdout == "The value" + text + "\n"
    # top-k 1 is greedy: the same text whatever the seed
    assert generate_text(model, "x", 30, top_k=1, seed=1) == generate_text(model, "x", 30, top_k=1, seed=2)


def test_prompts_and_texts_to_score_from_stdin(trained):
    from_stdin = run_cli("charlm", "predict", "-", "-m", trained, *SAMPLING, input="The value\nIf\n")
    from_arguments = run_cli("charlm", "predict", "The value", "If", "-m", trained, *SAMPLING)
    assert_ok(from_stdin)
    assert from_stdin.stdout == from_arguments.stdout
    scored = run_cli("charlm", "predict", "--score", "-", "-m", trained, "--json", input=f"{TEXT}\nab\n")
    assert_ok(scored)
    rows = [json.loads(line) for line in scored.stdout.splitlines()]
    assert [r["text"] for r in rows] == [TEXT, "ab"] and [r["predicted_characters"] for r in rows] == [len(TEXT) - 1, 1]


def test_evaluate_and_score_follow_one_definition(trained, tmp_path):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["val_bits_per_character"] == pytest.approx(math.log2(metrics["val_perplexity"]))
    validation = run_cli("charlm", "evaluate", "-m", trained, "--json")
    assert_ok(validation)
    evaluated = json.loads(validation.stdout)
    assert evaluated["characters"] == 2000 and evaluated["predicted_characters"] == 1999  # the last 10% of 20000
    assert evaluated["perplexity"] == pytest.approx(metrics["val_perplexity"])
    text_file = tmp_path / "docstring.txt"
    text_file.write_text(TEXT, encoding="utf-8")
    on_file = json.loads(run_cli("charlm", "evaluate", "-m", trained, "--data", text_file, "--json").stdout)
    shuffled = "".join(np.random.default_rng(0).permutation(list(TEXT)))
    scored, scored_shuffled = predict_json("charlm", trained, [TEXT, shuffled], "--score")
    assert on_file["perplexity"] == pytest.approx(scored["perplexity"]) and scored["predicted_characters"] == len(TEXT) - 1
    assert scored["perplexity"] == pytest.approx(math.exp(-scored["log_probability"] / (len(TEXT) - 1)))
    assert scored["bits_per_character"] == pytest.approx(math.log2(scored["perplexity"]))
    assert scored_shuffled["perplexity"] > 1.5 * scored["perplexity"]  # English reads as likelier than its characters shuffled
    (tmp_path / "empty.txt").write_text("")
    assert_user_error(run_cli("charlm", "evaluate", "-m", trained, "--data", tmp_path / "empty.txt"), "empty.txt", "empty file")


def test_exported_score_and_generate_signatures(trained, tmp_path):
    import tensorflow as tf

    assert_ok(run_cli("charlm", "export", "-m", trained, "--out", tmp_path, "--top-k", "1"))
    signatures = tf.saved_model.load(str(tmp_path / "serving" / "1")).signatures
    served = signatures["score"](text=tf.constant([TEXT, TEXT[:20], ""]))
    scored = predict_json("charlm", trained, [TEXT, TEXT[:20]], "--score")
    assert np.allclose(served["perplexity"].numpy()[:2], [r["perplexity"] for r in scored], rtol=1e-4)
    assert served["predicted_characters"].numpy().tolist() == [len(TEXT) - 1, 19, 0]
    # serving_default: a random seed, top-k from `export --top-k` (1: greedy, so it equals predict
    # -k 1); a length and temperature of size 1 apply to every prompt
    default = signatures["serving_default"](prompt=tf.constant(["The value", "If"]), length=tf.constant([30]), temperature=tf.constant([0.5]))
    greedy = predict_json("charlm", trained, ["The value", "If"], "-n", "30", "-k", "1")
    assert [t.decode() for t in default["text"].numpy()] == [r["text"] for r in greedy]
    empty = signatures["serving_default"](prompt=tf.constant([], tf.string), length=tf.constant([], tf.int32), temperature=tf.constant([], tf.float32))
    assert empty["text"].shape == (0,)
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature must be above 0"):
        signatures["serving_default"](prompt=tf.constant(["x"]), length=tf.constant([5]), temperature=tf.constant([0.0]))


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["x", "--length", "0"], ["--length must be between 1 and 100000"]),
        (["x", "--length", "100000000"], ["--length must be between 1 and 100000"]),
        (["x", "--temperature", "0"], ["--temperature must be above 0 and at most 100"]),
        (["x", "--temperature", "nan"], ["--temperature must be above 0 and at most 100"]),
        (["x", "--top-k", "-3"], ["--top-k must be between 0 and"]),
        (["x", "--seed", "-1"], ["--seed must be between 0 and"]),
        (["--file", "{tmp}/none.txt"], ["none.txt", "no such file"]),
        (["--file", "{tmp}/binary.dat"], ["binary.dat", "binary file"]),
        (["--score", "a"], ["nothing to score"]),
        (["--score", "fine text", ""], ["a text of 0 character(s) has nothing to score"]),
    ],
)
def test_bad_predict_input(trained, tmp_path, args, fragments):
    (tmp_path / "binary.dat").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run_cli("charlm", "predict", *args, "-m", trained)
    assert_user_error(result, *fragments)
    assert result.stdout == ""  # nothing printed before the error, not even a first row


def test_predict_without_a_prompt_samples_from_a_line_start_and_streams(trained):
    result = run_cli("charlm", "predict", "-m", trained, "--length", "30", "--seed", "3")
    assert_ok(result)
    assert len(result.stdout) == 30 + 1  # the sample, then a line break
    rows = [json.loads(line) for line in run_cli("charlm", "predict", "-m", trained, "--length", "30", "--seed", "3", "--json").output.splitlines()]
    assert len(rows) == 1 and rows[0]["prompt"] == "" and rows[0]["text"] + "\n" == result.stdout


def test_prompt_characters_outside_the_vocabulary_are_noted_once(trained):
    prompt = "naïve ☃☃ ☃"
    result = run_cli("charlm", "predict", prompt, "-m", trained, "--length", "20", "--seed", "0")
    assert_ok(result)
    notes = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(notes) == 1 and "out-of-vocabulary" in notes[0] and "'☃'" in notes[0] and "'ï'" in notes[0]
    assert result.stdout.startswith(prompt) and len(result.stdout) == len(prompt) + 20 + 1


# --- data ------------------------------------------------------------------------------------------


def test_text_from_files_folders_utf16_and_the_standard_split(tmp_path):
    from dlapps.apps.charlm.data import read_data, split_text, windows
    from dlapps.shared.errors import UserError

    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "a.txt").write_bytes(b"first book\r\nline two\r\n")
    (tmp_path / "books" / "b.txt").write_text("second book\n", encoding="utf-8")
    (tmp_path / "books" / ".hidden").write_text("not read")
    expected = "first book\nline two\n\nsecond book\n"
    assert read_data(str(tmp_path / "books")) == expected
    assert read_data(f"{tmp_path / 'books' / 'a.txt'},{tmp_path / 'books' / 'b.txt'}") == expected
    # UTF-16 is full of NUL bytes: still text with --encoding utf-16, binary without it
    (tmp_path / "wide.txt").write_bytes("naïve café\r\nline two\n".encode("utf-16"))
    assert read_data(str(tmp_path / "wide.txt"), encoding="utf-16") == "naïve café\nline two\n"
    with pytest.raises(UserError, match="binary file"):
        read_data(str(tmp_path / "wide.txt"))
    (tmp_path / "odd.txt").write_bytes("ab\n".encode("utf-16-le") + b"\x00\xd8")  # a lone surrogate
    with pytest.raises(UserError, match="odd.txt: line 2: byte 0x00 is not valid utf-16-le"):
        read_data(str(tmp_path / "odd.txt"), encoding="utf-16-le")
    splits = split_text("0123456789" * 10, 0.1)
    assert splits.train == ("0123456789" * 10)[:90] and splits.val == "0123456789"
    # windows of L+1 characters overlap by one: every character after the first is a target once
    assert windows("abcdefghij", 4, full_only=False) == ["abcde", "efghi", "ij"]
    assert windows("abcdefghij", 4, full_only=True) == ["abcde", "efghi"]


# --- model -----------------------------------------------------------------------------------------


def test_uniform_model_perplexity_equals_the_vocabulary_size():
    from dlapps.apps.charlm.app import score_text
    from dlapps.apps.charlm.model import CharLanguageModel

    model = CharLanguageModel(list("abcdefgh \n"), units=[8], embedding_dim=4, sequence_length=16)
    head = model.get_layer("next_char_logits")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])  # every logit equal
    scored = score_text(model, "a bad cafe\nhe had a bag of beef, all of it ok" * 3, batch_size=2)  # OOV characters too
    assert model.vocabulary_size == 11
    assert scored["perplexity"] == pytest.approx(11, rel=1e-6)
    assert scored["bits_per_character"] == pytest.approx(math.log2(11), rel=1e-6)


@pytest.mark.parametrize("length", [2, 5, 16])
def test_scoring_windows_predict_each_character_once_from_half_a_window_or_more(length):
    """Half-overlapping scoring windows: every character after the first is scored exactly once,
    right after its own preceding character, and beyond the first window from >= L - L//2 of them."""
    import tensorflow as tf

    from dlapps.apps.charlm.model import CharLanguageModel

    model = CharLanguageModel(list("ab"), units=[4], embedding_dim=2, sequence_length=length)
    for n in range(0, 3 * length + 3):
        ids = np.arange(100, 100 + n, dtype="int32")  # position i holds 100 + i
        inputs, targets, weights = (t.numpy() for t in model.windows(tf.constant(ids)))
        scored = weights > 0
        assert sorted(targets[scored]) == list(range(101, 100 + n))
        assert (targets[scored] - inputs[scored] == 1).all()
        rows, columns = np.nonzero(scored)
        assert (columns[rows > 0] >= length - length // 2).all()


@pytest.mark.parametrize("arch, options", [
    ("gru", {"units": [16, 16]}),
    ("transformer", {"num_layers": 1, "num_heads": 2, "embedding_dim": 8}),
])
def test_generation_in_python_equals_the_exported_graph(arch, options):
    """Each architecture's step-by-step generation (predict) equals generate_graph (the SavedModel's
    while_loop), past the 16-character window where the transformer slides its context (a prompt
    and 20 characters); its scores equal text_log_likelihood (the score signature)."""
    import tensorflow as tf

    from dlapps.apps.charlm.app import generate_text, score_text
    from dlapps.apps.charlm.model import CharLanguageModel

    model = CharLanguageModel(list("abcdefgh \n"), arch=arch, sequence_length=16, **options)
    config = model.get_config()
    assert config["arch"] == arch and type(model).from_config(config).get_config() == config
    graph = tf.function(model.generate_graph)
    expected = graph(tf.constant("a bad"), tf.constant(20), tf.constant(1.0), tf.constant(0), tf.constant(3, tf.int64))
    assert generate_text(model, "a bad", 20, temperature=1.0, top_k=0, seed=3) == expected.numpy().decode()
    log_likelihood, predicted = tf.function(model.text_log_likelihood)(tf.constant(TEXT))
    assert score_text(model, TEXT)["log_probability"] == pytest.approx(float(log_likelihood), rel=1e-5)
    assert int(predicted) == len(TEXT) - 1


def test_training_windows_start_at_a_new_offset_every_epoch():
    """Training windows are cut at one random offset per epoch, so their contexts change between epochs."""
    from types import SimpleNamespace

    import tensorflow as tf

    from dlapps.apps.charlm.app import window_batches
    from dlapps.apps.charlm.model import CharPreprocessor

    letters = list("abcdefghijklmnopqrstuvwxyz")
    text = "".join(np.random.default_rng(0).choice(letters, 1000))
    preprocessor = CharPreprocessor(letters)
    ids = preprocessor(tf.constant(text)).numpy()
    where = {tuple(ids[i : i + 17]): i for i in range(len(ids) - 16)}  # every 17-character window is unique here
    config = SimpleNamespace(sequence_length=16, batch_size=8, seed=3)
    dataset = window_batches(text, config, preprocessor, training_set=True)
    assert dataset.cardinality().numpy() == 8  # 999 // 16 - 1 = 61 whole windows at any offset

    def starts():
        found = []
        for inputs, targets, weights in dataset:
            assert inputs.shape[1] == 16 and np.all(weights.numpy() == 1)
            for row_in, row_target in zip(inputs.numpy(), targets.numpy()):
                found.append(where[tuple(row_in) + (row_target[-1],)])  # the target is the input moved by one
        return found

    epochs = [starts() for _ in range(3)]
    for found in epochs:
        assert len(found) == len(set(found)) == 61 and len({start % 16 for start in found}) == 1
    assert len({found[0] % 16 for found in epochs}) > 1 and epochs[0] != sorted(epochs[0])  # new offsets, shuffled
