"""charlm: demo train -> generate -> evaluate -> export, perplexity definitions, seeded sampling,
serialization, resume, every bad input."""

import json
import math

import numpy as np
import pytest

from .helpers import assert_ok, assert_user_error, heavy_imports_of, kill_training_after, run_cli, run_subprocess, saved_model_outputs, snapshot

TINY = ["--demo-chars", "30000", "--arch", "lstm", "--units", "64", "--embedding-dim", "16", "--sequence-length", "32",
        "--batch-size", "16", "--learning-rate", "0.01", "--dropout", "0"]
TEXT = "Return the number of items in the list.\nIf the value is not found, raise ValueError."


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("charlm") / "run"
    result = run_cli("charlm", "train", "--out", out, "--epochs", "4", *TINY)
    assert_ok(result)
    return out


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("texts") / "docstring.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def generated(run_dir, *args):
    result = run_cli("charlm", "predict", "-m", run_dir, "--json", *args)
    assert_ok(result)
    return json.loads(result.stdout)


def test_demo_training_learns_far_below_the_uniform_perplexity(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = [line.split(",") for line in (run_dir / "history.csv").read_text().splitlines()]
    loss = [float(r[rows[0].index("loss")]) for r in rows[1:]]
    assert loss[-1] < loss[0] * 0.8, loss
    # a uniform guess over the vocabulary has perplexity = vocabulary size; the docstrings are English
    assert metrics["val_perplexity"] < metrics["vocabulary_size"] / 4, metrics
    assert metrics["val_bits_per_character"] == pytest.approx(math.log2(metrics["val_perplexity"]))
    for name in ("config.json", "model.keras", "history.csv", "curves.png", "metrics.json"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "backup").exists() and not (run_dir / "checkpoints").exists()


def test_generation_streams_and_a_seed_reproduces_it(run_dir):
    from dlapps.apps.charlm.app import generate

    pieces = []
    result = generate(run_dir, "The value", 60, temperature=0.8, top_k=20, seed=5, on_text=pieces.append)
    assert len(pieces) == 60 and "".join(pieces) == result["text"]  # one callback per character, as produced
    first = generated(run_dir, "--prompt", "The value", "--length", "60", "--top-k", "20", "--seed", "5")
    again = generated(run_dir, "--prompt", "The value", "--length", "60", "--top-k", "20", "--seed", "5")
    other = generated(run_dir, "--prompt", "The value", "--length", "60", "--top-k", "20", "--seed", "6")
    assert first["text"] == again["text"] == result["text"] and len(first["text"]) == 60
    assert other["text"] != first["text"]
    plain = run_cli("charlm", "predict", "-m", run_dir, "--prompt", "The value", "--length", "60", "--top-k", "20", "--seed", "5")
    assert_ok(plain)
    assert plain.stdout == "The value" + first["text"] + "\n"
    # near-zero temperature with top-k 1 is greedy: the same text whatever the seed
    assert generated(run_dir, "-p", "x", "-n", "30", "-k", "1", "-s", "1")["text"] == generated(run_dir, "-p", "x", "-n", "30", "-k", "1", "-s", "2")["text"]


def test_evaluate_and_score_agree(run_dir, text_file):
    validation = run_cli("charlm", "evaluate", "-m", run_dir, "--json")
    assert_ok(validation)
    metrics = json.loads(validation.stdout)
    assert metrics["characters"] == 3000 and metrics["predicted_characters"] == 2999
    assert metrics["perplexity"] == pytest.approx(json.loads((run_dir / "metrics.json").read_text())["val_perplexity"])
    on_file = json.loads(run_cli("charlm", "evaluate", "-m", run_dir, "--data", text_file, "--json").stdout)
    scored = generated(run_dir, "--score", text_file)
    assert on_file["perplexity"] == pytest.approx(scored["perplexity"]) and scored["predicted_characters"] == len(TEXT) - 1
    assert scored["perplexity"] == pytest.approx(math.exp(-scored["log_probability"] / (len(TEXT) - 1)))
    assert scored["bits_per_character"] == pytest.approx(math.log2(scored["perplexity"]))
    # English reads as likelier than the same characters shuffled
    shuffled = text_file.parent / "shuffled.txt"
    shuffled.write_text("".join(np.random.default_rng(0).permutation(list(TEXT))), encoding="utf-8")
    assert generated(run_dir, "--score", shuffled)["perplexity"] > 1.5 * scored["perplexity"]


def test_export_generate_and_score_in_a_fresh_process(run_dir, text_file, tmp_path):
    out = tmp_path / "exported"
    result = run_subprocess("charlm", "export", "--model", run_dir, "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    exported = json.loads(result.stdout)
    serving = out / "serving" / "1"
    assert exported["version"] == 1 and (out / "model.keras").exists() and (serving / "saved_model.pb").exists()

    served = saved_model_outputs(serving, {"text": [TEXT, TEXT[:20]]}, signature="score")
    evaluated = [json.loads(run_cli("charlm", "evaluate", "-m", run_dir, "--data", text_file, "--json").stdout)]
    assert served["perplexity"][0] == pytest.approx(evaluated[0]["perplexity"], rel=1e-4)
    assert served["predicted_characters"] == [len(TEXT) - 1, 19]

    seeded = saved_model_outputs(
        serving, {"prompt": ["The value", ""], "length": 60, "temperature": 0.8, "top_k": 20, "seed": 5}, signature="generate_seeded"
    )
    assert seeded["text"][0] == generated(run_dir, "--prompt", "The value", "--length", "60", "--top-k", "20", "--seed", "5")["text"]
    assert seeded["text"][1] == generated(run_dir, "--length", "60", "--top-k", "20", "--seed", "5")["text"]



def test_text_from_files_folders_and_the_standard_split(tmp_path):
    from dlapps.apps.charlm.data import read_data, split_text, windows

    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "a.txt").write_bytes(b"first book\r\nline two\r\n")
    (tmp_path / "books" / "b.txt").write_text("second book\n", encoding="utf-8")
    (tmp_path / "books" / ".hidden").write_text("not read")
    expected = "first book\nline two\n\nsecond book\n"
    assert read_data(str(tmp_path / "books")) == expected
    assert read_data(f"{tmp_path / 'books' / 'a.txt'},{tmp_path / 'books' / 'b.txt'}") == expected
    splits = split_text("0123456789" * 10, 0.1)
    assert splits.train == ("0123456789" * 10)[:90] and splits.val == "0123456789"
    # windows of L+1 characters overlap by one: every character after the first is a target once
    assert windows("abcdefghij", 4, full_only=False) == ["abcde", "efghi", "ij"]
    assert windows("abcdefghij", 4, full_only=True) == ["abcde", "efghi"]


def test_uniform_model_perplexity_equals_the_vocabulary_size():
    from dlapps.apps.charlm.app import score_text
    from dlapps.apps.charlm.model import CharLanguageModel

    model = CharLanguageModel(list("abcdefgh \n"), units=[8], embedding_dim=4, sequence_length=16)
    head = model.get_layer("next_char_logits")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])  # every logit equal
    scored = score_text(model, "a bad cafe\nhe had a bag of beef, all of it ok" * 3)  # OOV characters too
    assert model.vocabulary_size == 11
    assert scored["perplexity"] == pytest.approx(11, rel=1e-6)
    assert scored["bits_per_character"] == pytest.approx(math.log2(11), rel=1e-6)


def test_config_and_keras_file_round_trips(run_dir):
    import keras

    from dlapps.apps.charlm.model import CharLanguageModel

    model = keras.saving.load_model(run_dir / "model.keras")
    assert isinstance(model, CharLanguageModel) and model.arch == "lstm" and model.units == [64]
    clone = CharLanguageModel.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    ids = model.preprocessor(np.array(["Return the value", "of the list.    "], dtype=object)).to_tensor()
    assert np.allclose(model(ids), clone(ids), atol=1e-6)
    assert clone.get_config() == model.get_config()


@pytest.mark.parametrize("arch, options", [
    ("gru", ["--units", "32,32"]),
    ("transformer", ["--num-layers", "1", "--num-heads", "2", "--embedding-dim", "16"]),
])
def test_gru_and_transformer_train_generate_and_score(arch, options, tmp_path, text_file):
    from dlapps.apps.charlm import app

    out = tmp_path / arch
    args = ["--demo-chars", "8000", "--sequence-length", "32", "--epochs", "1", "--batch-size", "16", "--learning-rate", "0.01"]
    assert_ok(run_cli("charlm", "train", "--arch", arch, "--out", out, *args, *options))
    first = app.generate(out, "Return", 25, seed=1)
    assert len(first["text"]) == 25
    scored = app.score(out, text_file)
    assert 1 < scored["perplexity"] < json.loads((out / "metrics.json").read_text())["vocabulary_size"]  # better than uniform
    # longer than the 32-character window: the transformer's generation slides its context
    assert len(app.generate(out, "", 40, seed=2)["text"]) == 40
    if arch != "transformer":
        return
    import tensorflow as tf

    serving = app.export(out)["saved_model"]
    loaded = tf.saved_model.load(serving)
    served = loaded.signatures["score"](text=tf.constant([TEXT]))
    assert float(served["perplexity"][0]) == pytest.approx(scored["perplexity"], rel=1e-4)
    seeded = loaded.signatures["generate_seeded"](prompt=tf.constant(["Return"]), length=tf.constant(25), temperature=tf.constant(0.8),
                                                  top_k=tf.constant(40), seed=tf.constant(1, tf.int64))
    assert seeded["text"][0].numpy().decode() == first["text"]
    default = loaded.signatures["serving_default"](prompt=tf.constant(["Return ", "If"]), length=tf.constant(40), temperature=tf.constant(0.5))
    assert [len(t.decode()) for t in default["text"].numpy()] == [40, 40]


def test_resume_after_the_process_is_killed(tmp_path):
    out = tmp_path / "run"
    command = ["charlm", "train", "--out", str(out), "--epochs", "40", "--demo-chars", "8000", *TINY[2:]]
    done_epochs = kill_training_after(*command, metadata=out / "backup" / "training_metadata.json", epochs=2)
    assert 2 <= done_epochs < 40 and not (out / "model.keras").exists()
    assert_user_error(run_cli("charlm", "train", "--out", out, "--epochs", "3"), "interrupted run", "--resume")
    result = run_cli("charlm", "train", "--out", out, "--resume", "--epochs", str(done_epochs + 1))
    assert_ok(result)
    epochs = [int(line.split(",")[0]) for line in (out / "history.csv").read_text().splitlines()[1:]]
    assert epochs[-1] == done_epochs and json.loads((out / "config.json").read_text())["units"] == [64]
    assert (out / "model.keras").exists() and not (out / "backup").exists()


# --- bad input: one line, exit 2, nothing overwritten ---------------------------------------------


@pytest.mark.parametrize(
    "files, args, fragments",
    [
        ({}, ["--data", "{tmp}/missing.txt"], ["missing.txt", "no such file or folder"]),
        ({"empty.txt": b""}, ["--data", "{tmp}/empty.txt"], ["empty.txt", "empty file"]),
        ({"blank.txt": b" \n\n \n"}, ["--data", "{tmp}/blank.txt"], ["blank.txt", "empty file"]),
        ({"model.bin": bytes(range(256)) * 4}, ["--data", "{tmp}/model.bin"], ["model.bin", "binary file"]),
        ({"bad.txt": b"fine line\ncaf\xe9 au lait\n"}, ["--data", "{tmp}/bad.txt"], ["bad.txt", "line 2", "0xe9", "utf-8"]),
        ({"folder/a.txt": b"some text\n", "folder/b.txt": b""}, ["--data", "{tmp}/folder"], ["b.txt", "empty file"]),
        ({"short.txt": b"tiny text"}, ["--data", "{tmp}/short.txt"], ["only 8 training characters", "--sequence-length"]),
        ({}, ["--arch", "lstn"], ["arch must be one of", "did you mean 'lstm'"]),
        ({}, ["--arch", "transformer", "--embedding-dim", "10", "--num-heads", "4"], ["multiple of --num-heads"]),
        ({}, ["--dropout", "1.5"], ["--dropout must be in [0, 1)"]),
        ({"c.yaml": b"sequence_lenght: 50\n"}, ["--config", "{tmp}/c.yaml"], ["c.yaml", "did you mean 'sequence_length'"]),
        ({}, ["--resume"], ["no interrupted run to resume"]),
    ],
)
def test_bad_training_input(tmp_path, files, args, fragments):
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert_user_error(run_cli("charlm", "train", "--out", tmp_path / "run", "--epochs", "1", *args), *fragments)


def test_failed_training_leaves_an_existing_run_untouched(run_dir, tmp_path):
    before = snapshot(run_dir)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_user_error(run_cli("charlm", "train", "--data", empty, "--out", run_dir), "empty.txt", "empty file")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--length", "0"], ["--length must be between 1 and"]),
        (["--length", "100000000"], ["--length must be between 1 and"]),
        (["--temperature", "0"], ["--temperature must be above 0"]),
        (["--temperature", "-1"], ["--temperature must be above 0"]),
        (["--temperature", "nan"], ["--temperature must be above 0"]),
        (["--top-k", "-3"], ["--top-k must be 0"]),
        (["--score", "{tmp}/none.txt"], ["none.txt", "no such file"]),
        (["--score", "{tmp}/one.txt"], ["nothing to score"]),
        (["--score", "{tmp}/binary.dat"], ["binary.dat", "binary file"]),
    ],
)
def test_bad_predict_input(run_dir, tmp_path, args, fragments):
    (tmp_path / "one.txt").write_text("a")
    (tmp_path / "binary.dat").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert_user_error(run_cli("charlm", "predict", "-m", run_dir, *args), *fragments)


def test_prompt_characters_outside_the_vocabulary_are_noted_once(run_dir):
    result = run_cli("charlm", "predict", "-m", run_dir, "--prompt", "naïve ☃☃ ☃", "--length", "20", "--seed", "0")
    assert_ok(result)
    notes = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(notes) == 1 and "out-of-vocabulary" in notes[0] and "'☃'" in notes[0] and "'ï'" in notes[0]
    assert result.stdout.startswith("naïve ☃☃ ☃") and len(result.stdout) == len("naïve ☃☃ ☃") + 20 + 1


def test_missing_or_corrupt_model_and_bad_evaluate_data(run_dir, tmp_path):
    assert_user_error(run_cli("charlm", "predict", "-m", tmp_path / "nothing"), "no trained model here", "dlapps charlm train")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.keras").write_bytes(b"not a zip file")
    assert_user_error(run_cli("charlm", "evaluate", "-m", broken, "--data", "demo"), "not a readable Keras model")
    assert_user_error(run_cli("charlm", "export", "-m", tmp_path / "nothing"), "no trained model here")
    (tmp_path / "empty.txt").write_text("")
    assert_user_error(run_cli("charlm", "evaluate", "-m", run_dir, "--data", tmp_path / "empty.txt"), "empty.txt", "empty file")
    quiet = run_subprocess("charlm", "predict", "-m", run_dir, "--temperature", "0")
    assert_user_error(quiet, "--temperature must be above 0")


@pytest.mark.parametrize("args", [["charlm", "--help"], ["charlm", "train", "--help"], ["charlm", "predict", "--help"]])
def test_help_never_imports_tensorflow(args):
    heavy, output = heavy_imports_of(*args)
    assert heavy == []
    assert args[-1] != "predict" or "--temperature" in output
