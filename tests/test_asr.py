"""asr: CTC decoding and alignment on hand-made matrices, batch-independent features, the data
formats and their bad inputs, and the contract suite on a tiny model trained on the demo."""

import json
from pathlib import Path

import numpy as np
import pytest

from dlapps.apps.asr import data as asr_data
from dlapps.shared import audio
from dlapps.shared.config import resolve
from dlapps.shared.errors import UserError

RATE = 16000


def config(**overrides):
    from dlapps.apps.asr.config import AsrConfig

    return resolve(AsrConfig, None, overrides)


def wav(words, seed=0, rate=RATE, subtype="PCM_16", channels=1) -> bytes:
    """A demo utterance of `words` as WAV bytes."""
    samples = asr_data.synthesise(words, np.random.default_rng(seed), rate)
    if channels == 2:
        samples = np.stack([samples, samples * 0.5], axis=1)
    return audio.encode_wav(samples, rate, subtype)


@pytest.fixture(scope="module")
def untrained():
    from dlapps.apps.asr.model import SpeechRecognizer

    return SpeechRecognizer("ab ", mel_bins=32, conv_filters=[4, 4], rnn_units=[8], seed=1)


# --- decoding and alignment ------------------------------------------------------------------------


def as_logits(probabilities):
    return np.log(np.asarray(probabilities, dtype=np.float32))[None]


def test_greedy_decoding_of_a_hand_made_matrix(untrained):
    # Classes: blank, "a", "b", " ". Best per step: a a - a b b - " " a -> "aab a".
    steps = [[.1, .7, .1, .1], [.1, .7, .1, .1], [.7, .1, .1, .1], [.1, .7, .1, .1], [.1, .1, .7, .1],
             [.1, .1, .7, .1], [.7, .1, .1, .1], [.1, .1, .1, .7], [.1, .7, .1, .1]]
    ids = untrained.decode(as_logits(steps), np.array([9]))
    assert untrained.ids_to_text(ids).numpy().tolist() == [b"aab a"]
    # Only the first 5 steps count when the clip is that long.
    assert untrained.ids_to_text(untrained.decode(as_logits(steps), np.array([5]))).numpy().tolist() == [b"aab"]


def test_beam_search_finds_the_labelling_greedy_misses(untrained):
    # Two steps, blank 0.6 and "a" 0.4 each: the best path is blank-blank (""), but "a" sums three
    # paths: 0.4*0.6 + 0.6*0.4 + 0.4*0.4 = 0.64 > 0.36.
    steps = [[.6, .4, 1e-6, 1e-6]] * 2
    greedy = untrained.ids_to_text(untrained.decode(as_logits(steps), np.array([2]), beam_width=1))
    beam = untrained.ids_to_text(untrained.decode(as_logits(steps), np.array([2]), beam_width=4))
    assert greedy.numpy().tolist() == [b""] and beam.numpy().tolist() == [b"a"]


def test_forced_alignment_and_word_times():
    from dlapps.apps.asr.app import timestamps
    from dlapps.apps.asr.model import ctc_alignment

    # steps:   0 1 2 3 4 5 6 7 8 9
    # best:    - a a - a - " " b b -     ("aa" needs the blank between its two a's)
    best = [0, 1, 1, 0, 1, 0, 3, 2, 2, 0]
    log_probs = np.log(np.full((10, 4), 0.05))
    log_probs[np.arange(10), best] = np.log(0.85)
    spans = ctc_alignment(log_probs, [1, 1, 3, 2])
    assert spans == [(1, 2), (4, 4), (6, 6), (7, 8)]
    assert ctc_alignment(log_probs[:2], [1, 1, 3, 2]) is None  # too few steps for the labels
    words = timestamps("aa b", spans, 0.02, "words")
    assert words == [{"word": "aa", "start": 0.02, "end": 0.1}, {"word": "b", "start": 0.14, "end": 0.18}]
    characters = timestamps("aa b", spans, 0.02, "characters")
    assert [c["char"] for c in characters] == ["a", "a", " ", "b"]


# --- the model's features ------------------------------------------------------------------------


def test_a_clip_gives_the_same_outputs_alone_and_in_a_padded_batch(untrained):
    rng = np.random.default_rng(0)
    short, long = rng.normal(0, 0.1, 5003).astype(np.float32), rng.normal(0, 0.1, 12345).astype(np.float32)
    batch = np.zeros((2, 12345), np.float32)
    batch[0, :5003], batch[1] = short, long
    together = untrained(batch)
    alone = untrained(short[None])
    steps = int(alone["lengths"][0])
    assert steps == asr_data.output_frames(5003, untrained.hop, 2) == int(together["lengths"][0])
    assert int(together["lengths"][1]) == asr_data.output_frames(12345, untrained.hop, 2)
    np.testing.assert_allclose(np.asarray(together["logits"])[0, :steps], np.asarray(alone["logits"])[0], atol=1e-5)


def test_spec_augment_masks_only_in_training():
    from dlapps.apps.asr.model import SpecAugment

    layer = SpecAugment(freq_masks=2, freq_mask_bins=5, time_masks=2, time_mask_fraction=0.1, seed=0)
    features = np.ones((4, 100, 40), np.float32)
    frames = np.array([100, 80, 50, 100])
    assert np.array_equal(np.asarray(layer(features, frames, training=False)), features)
    masked = np.asarray(layer(features, frames, training=True))
    zero_bins = (masked == 0).all(axis=1).sum(axis=1)
    zero_steps = (masked == 0).all(axis=2).sum(axis=1)
    assert (zero_bins <= 10).all() and (zero_steps <= 2 * np.floor(frames * 0.1)).all()
    assert (masked == 0).any()


def test_in_graph_resampling_keeps_duration_and_matches_soxr():
    import tensorflow as tf

    from dlapps.apps.asr.model import decode_wav_batch, fft_resample

    t = np.arange(8000) / 8000
    tone = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    resampled = fft_resample(tf.constant(tone), tf.constant(8000), 16000).numpy()
    assert len(resampled) == 16000
    np.testing.assert_allclose(resampled[100:-100], audio.resample(tone, 8000, 16000)[100:-100], atol=2e-3)
    batch = decode_wav_batch(tf.constant([audio.encode_wav(tone, 8000), audio.encode_wav(tone[:4000], 16000)]), 16000)
    assert batch.shape == (2, 16000) and not np.asarray(batch)[1, 4000:].any()


@pytest.mark.parametrize("container", ["WAV", "WAVEX"])
def test_in_graph_wav_decoding_reads_every_pcm_and_float_encoding_as_soundfile_does(container):
    import io

    import soundfile
    import tensorflow as tf

    from dlapps.apps.asr.model import decode_wav

    decode = tf.function(decode_wav, input_signature=[tf.TensorSpec([], tf.string)])
    samples = np.clip(np.random.default_rng(0).normal(0, 0.4, (1001, 3)), -1, 1).astype(np.float32)
    for subtype in audio.WAV_SUBTYPES:
        buffer = io.BytesIO()
        soundfile.write(buffer, samples, 11025, subtype=subtype, format=container)
        expected, _ = soundfile.read(io.BytesIO(buffer.getvalue()), dtype="float32")
        mono, rate = decode(tf.constant(buffer.getvalue()))
        assert int(rate) == 11025, subtype
        np.testing.assert_allclose(mono.numpy(), expected.mean(axis=1), atol=1e-6, err_msg=subtype)
    mu_law = io.BytesIO()
    soundfile.write(mu_law, samples, 8000, subtype="ULAW", format=container)
    for data, message in ((mu_law.getvalue(), "unsupported WAV encoding"), (b"junk" * 10, "not a RIFF/WAVE file"),
                          (audio.encode_wav(samples, 8000)[:30], "WAV without a fmt or data chunk")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            decode(tf.constant(data))


# --- data ----------------------------------------------------------------------------------------


def test_transcripts_are_normalised():
    assert asr_data.normalise_transcript("  Don’t STOP: it's  “fine”! ") == "don't stop it's fine"
    assert asr_data.normalise_transcript("'quoted' words", lowercase=False) == "quoted words"
    assert asr_data.normalise_transcript("Hi, there.", keep_punctuation=True) == "hi, there."
    assert asr_data.ctc_frames_needed("three") == 6  # "ee" needs a blank between


def test_demo_is_seeded_and_composed_utterances_join_clips():
    first, again = asr_data.demo(6, 3, RATE), asr_data.demo(6, 3, RATE)
    assert first.transcripts == again.transcripts and all(np.array_equal(a, b) for a, b in zip(first.clips, again.clips))
    assert set("".join(first.transcripts)) <= set(asr_data.DEMO_LETTERS + " ")
    rng = np.random.default_rng(1)
    words = asr_data.SpeechSet([asr_data.synthesise([w], rng, RATE) for w in ("one", "two")], ["one", "two"], ["1.wav", "2.wav"])
    composed = asr_data.compose(words, 30, 3, np.random.default_rng(0), RATE)
    for clip, text, name in zip(composed.clips, composed.transcripts, composed.names):
        count = len(text.split(" "))
        assert 1 <= count <= 3 and len(name.split("+")) == count and set(text.split()) <= {"one", "two"}
        # the clips themselves, plus at least 50 ms before, between and after them
        assert len(clip) >= sum(len(words.clips[words.names.index(n)]) for n in name.split("+")) + 0.05 * RATE * (count + 1)
    assert {len(t.split()) for t in composed.transcripts} == {1, 2, 3}
    # Training's compositions: edges from 0 ms, some without noise, so plain clips occur as well.
    varied = asr_data.compose(words, 300, 3, np.random.default_rng(0), RATE, vary_edges=True)
    plain = [any(np.array_equal(clip, word) for word in words.clips) for clip in varied.clips]
    assert 5 <= sum(plain) <= 50 and sum(plain) < sum(len(t.split()) == 1 for t in varied.transcripts)
    starts = [int(np.flatnonzero(np.abs(clip) > 1e-3)[0]) for clip in varied.clips]
    assert min(starts) < 0.01 * RATE and max(starts) > 0.05 * RATE


def test_fsdd_official_split_holds_out_recordings_0_to_4():
    names = [f"{d}_{s}_{i}.wav" for d in range(2) for s in ("jackson", "theo") for i in range(8)]
    speech = asr_data.SpeechSet([np.ones(10, np.float32)] * len(names), ["x"] * len(names), names)
    train, test = asr_data.fsdd_official_split(speech)
    assert {names[i].split("_")[2] for i in test} == {f"{i}.wav" for i in range(5)} and len(train) == 12
    # No recording 0-4 (the local copy holds 5-49 only), or a name that is not FSDD's: no such split.
    assert asr_data.fsdd_official_split(speech.subset(train)) is None
    assert asr_data.fsdd_official_split(asr_data.SpeechSet([np.ones(10)], ["x"], ["a.wav"])) is None


def test_every_local_format_reads(tmp_path):
    lj = tmp_path / "lj"
    (lj / "wavs").mkdir(parents=True)
    (lj / "wavs" / "LJ001.wav").write_bytes(wav(["one", "two"], rate=22050))
    (lj / "metadata.csv").write_text("LJ001|One, two!|one two\n")
    folder = tmp_path / "pairs"
    folder.mkdir()
    (folder / "a.wav").write_bytes(wav(["six"], channels=2, subtype="PCM_24"))
    (folder / "a.txt").write_text("Six\n")
    (folder / "3_theo_7.wav").write_bytes(wav(["three"], rate=8000, subtype="FLOAT"))
    manifest = tmp_path / "list.csv"
    manifest.write_text("file,text\npairs/a.wav,\"six, again\"\n")
    c = config()
    read = asr_data.read_path(lj, c)
    assert read.transcripts == ["one two"] and read.names == [str(lj / "wavs" / "LJ001.wav")]
    assert abs(len(read.clips[0]) - len(asr_data.trim_trailing_zeros(audio.read_audio(lj / "wavs" / "LJ001.wav", RATE)[0]))) == 0
    pairs = asr_data.read_path(folder, c)
    assert sorted(pairs.transcripts) == ["six", "three"] and all(clip.ndim == 1 for clip in pairs.clips)
    assert asr_data.read_path(manifest, c).transcripts == ["six again"]


def test_unusable_clips_are_skipped_with_a_count(tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "1_a_5.wav").write_bytes(wav(["one"]))
    (folder / "2_a_5.wav").write_bytes(b"not audio at all")
    (folder / "3_a_5.wav").write_bytes(audio.encode_wav(np.zeros(4000, np.float32), RATE))
    (folder / "4_a_5.wav").write_bytes(wav(["four"], seed=2))
    (folder / "long.wav").write_bytes(audio.encode_wav(np.full(RATE * 3, 0.1, np.float32), RATE))
    (folder / "long.txt").write_text("a long one")
    speech = asr_data.read_path(folder, config(max_seconds=2))
    assert speech.transcripts == ["one", "four"]
    problems = dict((name.rsplit("/", 1)[-1], problem) for name, problem in speech.skipped)
    assert "not a readable WAV" in problems["2_a_5.wav"] and "silent" in problems["3_a_5.wav"]
    assert "over --max-seconds 2" in problems["long.wav"]
    assert "skipped 3 of 5 clips" in capsys.readouterr().err
    # A transcript longer than the frames allow would make CTC infinite: left out before training.
    clips = asr_data.SpeechSet([np.full(1600, 0.1, np.float32)] * 2, ["a transcript far too long for 0.1 s", "ok"], ["tiny.wav", "b.wav"])
    kept = asr_data.drop_unalignable(clips, config(), "test")
    assert kept.transcripts == ["ok"] and kept.skipped == [("tiny.wav", "transcript needs 36 output frames, the audio gives 3")]
    with pytest.raises(UserError, match="test: no usable utterances: all 1 skipped .first: tiny.wav: transcript needs 36"):
        asr_data.drop_unalignable(clips.subset([0]), config(), "test")


@pytest.mark.parametrize("files, message", [
    ({"m.csv": b"path,transcript\nnope.wav,hello\n"}, "m.csv: line 2: no such audio file 'nope.wav'"),
    ({"x/a.wav": None}, "a.wav: no transcript (expected a.txt beside it"),
    ({"x/metadata.csv": b"LJ1\n"}, "metadata.csv: line 1: expected id|transcript"),
    ({"x/notes.md": b"hello"}, "x: no audio files"),
])
def test_bad_local_data_is_one_line_naming_the_file(tmp_path, files, message):
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(wav(["one"]) if content is None else content)
    target = tmp_path / ("m.csv" if "m.csv" in files else "x")
    with pytest.raises(UserError) as error:
        asr_data.read_path(target, config())
    assert message in str(error.value) and "\n" not in str(error.value)


def test_characters_outside_the_alphabet_name_the_clip(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for i, text in enumerate(["one", "two!", "one two"]):
        (folder / f"c{i}.wav").write_bytes(wav(text.strip("!").split(), seed=i))
        (folder / f"c{i}.txt").write_text(text)
    with pytest.raises(UserError, match=r"c1.wav: transcript 'two!' has characters outside --alphabet: '!'"):
        asr_data.load_splits(config(data=str(folder), alphabet="onetw ", keep_punctuation=True, val_fraction=0.4))
    train, val, info = asr_data.load_splits(config(data=str(folder), val_fraction=0.4))
    assert info["alphabet"] == " enotw" and len(train) + len(val) == 3


# --- the contract suite, on a tiny model trained on the demo -------------------------------------

from .contract import AppContract, predict_json, trained  # noqa: E402
from .helpers import assert_ok, run_cli, saved_model_outputs  # noqa: E402

TINY = ("--demo-size", "160", "--batch-size", "8", "--mel-bins", "32", "--conv-filters", "8", "--subsample", "2", "--rnn-units", "64",
        "--learning-rate", "0.01", "--freq-mask-bins", "4", "--dropout", "0")
EPOCHS = 8
# (words, rate, subtype, channels): the model rate as 16-bit PCM,
# 44.1 kHz float stereo and 8 kHz 24-bit (resampled by predict).
SPOKEN = ((("seven", "two"), RATE, "PCM_16", 1), (("nine",), 44100, "FLOAT", 2), (("one", "zero", "five"), 8000, "PCM_24", 1))
# More sample formats: 24-bit and float at the model rate, unsigned 8-bit at 8 kHz.
OTHER_FORMATS = ((("eight", "three"), RATE, "PCM_24", 1), (("four",), RATE, "FLOAT", 2), (("six", "one"), 8000, "PCM_U8", 1))


def write_inputs(tmp_path, spoken=SPOKEN):
    paths = []
    for i, (words, rate, subtype, channels) in enumerate(spoken):
        path = tmp_path / f"clip{i}.wav"
        path.write_bytes(wav(list(words), seed=100 + i, rate=rate, subtype=subtype, channels=channels))
        paths.append(str(path))
    return paths


def padded_waveforms(paths):
    clips = [audio.read_audio(p, rate=RATE)[0] for p in paths]
    batch = np.zeros((len(clips), max(len(c) for c in clips)), np.float32)
    for row, clip in enumerate(clips):
        batch[row, : len(clip)] = clip
    return batch.tolist()


class TestContract(AppContract):
    app = "asr"
    train_args = TINY
    resume_args = ("--demo-size", "48")  # small epochs for the killed run
    epochs = EPOCHS
    learned = {"val_cer": (0.0, 0.35)}
    evaluate_keys = ("cer", "wer", "sentence_accuracy", "utterances", "worst")
    tfds_name = "speech_commands"  # its offline test is overridden below: the generic mock makes 5-50 sample clips
    bad_train_inputs = [
        ({"clips/a.wav": wav(["one"])}, ["--data", "{tmp}/clips"], ["a.wav", "no transcript", "a.txt"]),
        ({"m.csv": b"path,transcript\nnope.wav,hi\n"}, ["--data", "{tmp}/m.csv"], ["m.csv", "line 2", "no such audio file 'nope.wav'"]),
        ({"one.csv": b"path\nx.wav\n"}, ["--data", "{tmp}/one.csv"], ["one.csv", "line 2", "expected path,transcript, found 1 column(s)"]),
        ({"lj/metadata.csv": b"LJ1|hello\n"}, ["--data", "{tmp}/lj"], ["metadata.csv", "line 1", "no such audio file"]),
        ({"bad/1_a_5.wav": b"junk", "bad/2_a_5.wav": b""}, ["--data", "{tmp}/bad"],
         ["bad", "no usable utterances: all 2 skipped", "1_a_5.wav: not a readable WAV"]),
        ({"p/x.wav": wav(["one"]), "p/x.txt": b"one!"}, ["--data", "{tmp}/p", "--alphabet", "one", "--keep-punctuation"],
         ["x.wav", "outside --alphabet", "'!'"]),
        ({}, ["--subsample", "4"], ["--subsample 4 needs at least 2 --conv-filters"]),
        ({}, ["--freq-mask-bins", "40"], ["--freq-mask-bins 40 must be below --mel-bins 32"]),
        ({}, ["--hop-ms", "30", "--window-ms", "20"], ["--hop-ms 30 must not exceed --window-ms 20"]),
        ({}, ["--sample-rate", "100"], ["--sample-rate must be"]),
        ({}, ["--rnn", "transformer"], ["--rnn must be one of gru, lstm"]),
        ({}, ["--rnn-units", "64,0"], ["--rnn-units must be"]),
    ]

    def make_inputs(self, tmp_path):
        return write_inputs(tmp_path)

    def test_tfds_path_offline_with_mock_data(self, tmp_path):
        """The contract's test with a mock that serves usable clips (see mock_speech_sets)."""
        import tensorflow_datasets as tfds

        with tfds.testing.mock_data(as_dataset_fn=mock_speech_sets):
            result = run_cli("asr", "train", "--out", tmp_path / "run", "--epochs", "1", "--data", "tfds:speech_commands", *TINY)
        assert_ok(result)
        assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train_utterances"] == 20

    def check_predictions(self, rows, inputs):
        import jiwer

        assert [r["path"] for r in rows] == inputs
        truth = [" ".join(words) for words, *_ in SPOKEN]
        assert jiwer.cer(truth, [r["transcript"] for r in rows]) < 0.35, rows
        for row in rows:
            times = [(w["start"], w["end"]) for w in row["words"]]
            assert [w["word"] for w in row["words"]] == row["transcript"].split()
            assert all(0 <= s < e <= row["seconds"] + 0.05 for s, e in times) and times == sorted(times)

    def serving_call(self, inputs):
        return {"waveform": padded_waveforms(inputs)}, (), "serving_default"

    def check_served(self, served, rows):
        assert served["transcript"] == [r["transcript"] for r in rows]

    def check_other_signatures(self, saved_model, exported, run_dir, inputs):
        """'transcribe_wav' takes WAV bytes of any rate, channels and sample format."""
        import jiwer

        assert exported["sample_rate"] == RATE
        folder = Path(inputs[0]).parent / "wav"
        folder.mkdir()
        paths = write_inputs(folder, OTHER_FORMATS)
        served = saved_model_outputs(saved_model, {"wav": [open(p, "rb").read() for p in paths]}, signature="transcribe_wav",
                                     binary=("wav",))
        rows = predict_json("asr", run_dir, paths, "--timestamps", "none")
        # At the model rate the graph decodes exactly what predict reads; the 8 kHz file is resampled
        # in the graph by FFT and by soxr in predict, which may differ in a character.
        assert served["transcript"][:2] == [r["transcript"] for r in rows[:2]]
        assert jiwer.cer(rows[2]["transcript"] or "-", served["transcript"][2] or "-") <= 0.25


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return trained(tmp_path_factory, "asr", "--epochs", str(EPOCHS), *TINY)


def test_learning_rate_decays_by_cosine_over_the_epochs(tiny_run):
    import math

    from .contract import history_column

    rates = history_column(tiny_run, "learning_rate")
    expected = [0.01 * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * e / EPOCHS))) for e in range(len(rates))]
    np.testing.assert_allclose(rates, expected, rtol=1e-4)


def test_beam_with_character_times_and_stdin(tiny_run, tmp_path):
    paths = write_inputs(tmp_path, OTHER_FORMATS)
    rows = predict_json("asr", tiny_run, paths, "--timestamps", "none")
    beam = predict_json("asr", tiny_run, paths, "--beam", "8", "--timestamps", "characters")
    assert all(len(r["characters"]) == len(r["transcript"]) for r in beam)
    from_stdin = run_cli("asr", "predict", "-", "-m", tiny_run, input="\n".join(paths))
    assert_ok(from_stdin)
    assert from_stdin.output.splitlines() == [f"{p}\t{r['transcript']}" for p, r in zip(paths, rows)]


def test_evaluate_on_a_folder_composes_and_lists_the_worst(tiny_run, tmp_path):
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, word in enumerate(asr_data.DIGIT_WORDS):
        (folder / f"{i}_demo_{i}.wav").write_bytes(wav([word], seed=300 + i))
    single = run_cli("asr", "evaluate", "-m", tiny_run, "--data", folder, "--json", "--worst", "3")
    assert_ok(single)
    metrics = json.loads(single.output)
    assert metrics["utterances"] == 10 and metrics["cer"] < 0.5 and len(metrics["worst"]) <= 3
    composed = json.loads(run_cli("asr", "evaluate", "-m", tiny_run, "--data", folder, "--compose", "4", "--json").output)
    assert composed["utterances"] == 10 and composed["audio_seconds"] > metrics["audio_seconds"]


def test_predict_refuses_bad_files_with_one_line(tiny_run, tmp_path):
    from .helpers import assert_user_error

    (tmp_path / "text.wav").write_text("not audio")
    (tmp_path / "empty").mkdir()
    assert_user_error(run_cli("asr", "predict", tmp_path / "text.wav", "-m", tiny_run), "text.wav", "not a readable WAV")
    assert_user_error(run_cli("asr", "predict", tmp_path / "empty", "-m", tiny_run), "empty", "no audio files")
    long = tmp_path / "long.wav"
    long.write_bytes(audio.encode_wav(np.full(RATE * 3, 0.1, np.float32), RATE))
    assert_user_error(run_cli("asr", "predict", long, "-m", tiny_run, "--max-seconds", "2"), "long.wav", "over --max-seconds 2")


COMMAND_LABELS = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes", "_silence_", "_unknown_"]


def mock_speech_sets(self, split, **kwargs):
    """tfds's own mock makes clips of 5-50 samples, too short for any transcript: this one serves
    synthesised utterances in speech_commands' and librispeech's own feature layout."""
    import tensorflow as tf

    rng = np.random.default_rng(len(split))
    key = "audio" if self.name == "speech_commands" else "speech"
    examples = []
    for i in range(24):
        if self.name == "speech_commands":
            label = i % len(COMMAND_LABELS)
            fields = {"label": label}
        else:
            words = [asr_data.DIGIT_WORDS[j] for j in rng.integers(0, 10, 2)]
            fields = {"text": " ".join(words).upper(), "id": f"{i}", "speaker_id": 1, "chapter_id": 1}
        # The demo synthesiser speaks digit words; a command label's clip is any utterance.
        samples = asr_data.synthesise(words if self.name != "speech_commands" else ["one"], rng, RATE)
        examples.append({key: (samples * 32767).astype(np.int16), **fields})
    signature = {k: tf.TensorSpec([None] if k == key else [], tf.string if isinstance(v, str) else tf.as_dtype(np.asarray(v).dtype))
                 for k, v in examples[0].items()}
    return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)


def test_tfds_speech_sets_with_mock_data():
    """speech_commands (label words; _silence_ and _unknown_ left out, its validation split used)
    and librispeech (lower-cased text) through the tfds reader, offline."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(as_dataset_fn=mock_speech_sets):
        commands, val, info = asr_data.load_splits(config(data="tfds:speech_commands"))
        librispeech = asr_data.read_tfds(asr_data.data_lib.parse_data_spec("tfds:librispeech"), "train_clean100", config())
    assert len(commands) == 20 and len(val) == 20  # 2 of every 12 are _silence_/_unknown_
    assert set(commands.transcripts) == set(COMMAND_LABELS[:10])
    assert info["alphabet"] == "".join(sorted(set("".join(COMMAND_LABELS[:10]))))
    assert len(librispeech) == 24 and all(t == t.lower() and len(t.split()) == 2 for t in librispeech.transcripts)
    spec = asr_data.data_lib.parse_data_spec
    assert [asr_data.tfds_split(spec("tfds:librispeech"), part) for part in ("train", "validation", "test")] == \
        ["train_clean100", "dev_clean", "test_clean"]
    assert asr_data.tfds_split(spec("tfds:librispeech:train_other500"), "train") == "train_other500"
