"""ASR data: the synthesised demo, LJSpeech folders, CSV manifests, folders of ``*.wav`` with
same-name ``*.txt`` transcripts, Free Spoken Digit names and tensorflow-datasets speech sets, all
read into :class:`SpeechSet` (float32 mono clips at the model rate, normalised transcripts).

Clips that cannot be used (unreadable, empty, silent, longer than ``--max-seconds``, empty
transcript, a transcript longer than the model's output frames allow) are skipped with a warning
naming each and a count. Nothing here imports TensorFlow except the tfds reader.
"""

from __future__ import annotations

import csv
import io
import math
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlapps.shared import audio
from dlapps.shared import data as data_lib
from dlapps.shared.errors import UserError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FSDD_NAME = re.compile(r"^(\d)_([^_]+)_(\d+)\.wav$", re.IGNORECASE)
SILENCE_DBFS = -60.0  # a clip whose peak stays below this is "silent"


@dataclass
class SpeechSet:
    clips: list  # float32 mono arrays at the model rate, trailing exact zeros removed
    transcripts: list[str]
    names: list[str]  # file names (or "demo 12", "a.wav+b.wav" for composed utterances)
    skipped: list = field(default_factory=list)  # (name, problem) of clips left out

    def __len__(self):
        return len(self.clips)

    def subset(self, indices) -> "SpeechSet":
        return SpeechSet([self.clips[i] for i in indices], [self.transcripts[i] for i in indices],
                         [self.names[i] for i in indices], self.skipped)

    def seconds(self, rate: int) -> float:
        return sum(len(c) for c in self.clips) / rate


# --- transcripts ---------------------------------------------------------------------------------


def normalise_transcript(text: str, lowercase: bool = True, keep_punctuation: bool = False) -> str:
    """NFC, optionally lower case, punctuation removed (apostrophes inside words such as "don't"
    stay; typographic ones become '), whitespace collapsed to single spaces."""
    text = unicodedata.normalize("NFC", text)
    if lowercase:
        text = text.lower()
    if not keep_punctuation:
        text = re.sub(r"(?<=\w)[\u2019\u02bc](?=\w)", "'", text)
        text = "".join(" " if unicodedata.category(ch)[0] in "PS" and ch != "'" else ch for ch in text)
        text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def encode(text: str, alphabet: str) -> list[int]:
    """Character ids: 1 + the character's position in `alphabet` (0 is the CTC blank)."""
    index = {ch: i + 1 for i, ch in enumerate(alphabet)}
    return [index[ch] for ch in text]


def ctc_frames_needed(text: str) -> int:
    """Output frames CTC needs for `text`: one per character plus a blank between repeated ones."""
    return len(text) + sum(a == b for a, b in zip(text, text[1:]))


# --- frames (the model's arithmetic, in plain Python) --------------------------------------------


def frame_sizes(sample_rate: int, window_ms: float, hop_ms: float) -> tuple[int, int, int]:
    """(window, hop, FFT length) in samples; the FFT length is the next power of two."""
    window = max(2, int(round(sample_rate * window_ms / 1000)))
    hop = max(1, int(round(sample_rate * hop_ms / 1000)))
    return window, hop, 1 << (window - 1).bit_length()


def output_frames(samples: int, hop: int, subsample: int) -> int:
    """Output steps of the model for a clip of `samples`: ceil(samples / hop) frames (the STFT pads
    the end), then each stride-2 convolution takes ceil(frames / 2)."""
    return math.ceil(samples / (hop * subsample))


# --- demo: synthesised spoken-digit words --------------------------------------------------------

DEMO_LETTERS = "".join(sorted(set("".join(DIGIT_WORDS))))  # efghinorstuvwxz: 15 letters
# Each letter is a steady vowel-like sound: a harmonic source shaped by two formants, one pair of
# the 5 x 3 grid per letter (geometric steps, so a +-6% speaker scale never crosses a neighbour).
F1_GRID = (300.0, 390.0, 510.0, 660.0, 860.0)
F2_GRID = (1000.0, 1600.0, 2560.0)
LETTER_FORMANTS = {letter: (F1_GRID[i % 5], F2_GRID[i // 5]) for i, letter in enumerate(DEMO_LETTERS)}


def _phone(letter: str, seconds: float, f0: float, scale: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    n = max(1, int(seconds * rate))
    t = np.arange(n) / rate
    f1, f2 = (f * scale for f in LETTER_FORMANTS[letter])
    top = min(4000.0, 0.45 * rate)
    harmonics = np.arange(1, int(top // f0) + 1) * f0
    gains = np.exp(-0.5 * ((harmonics - f1) / 120) ** 2) + 0.6 * np.exp(-0.5 * ((harmonics - f2) / 200) ** 2)
    audible = gains > 0.01  # only harmonics near a formant: the rest would be inaudible and slow
    harmonics, gains = harmonics[audible], gains[audible]
    glide = 1 + rng.uniform(-0.04, 0.04) * t / max(t[-1], 1e-3)  # a slight pitch movement
    phases = rng.uniform(0, 2 * np.pi, len(harmonics))
    wave = (gains[:, None] * np.sin(2 * np.pi * harmonics[:, None] * np.cumsum(glide)[None, :] / rate + phases[:, None])).sum(0)
    # 12 ms raised-cosine onset and offset: repeated letters ("three") are two separate bumps.
    ramp = min(n // 2, int(0.012 * rate))
    if ramp:
        edge = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
        wave[:ramp] *= edge
        wave[-ramp:] *= edge[::-1]
    return wave


def synthesise(words, rng: np.random.Generator, rate: int) -> np.ndarray:
    """One utterance of demo `words` by a random "speaker" (pitch 90-240 Hz, formants scaled
    +-6%), at a random speed (0.75-1.3x), with pauses between words and noise at 10-30 dB SNR."""
    f0 = rng.uniform(90, 240)
    scale = rng.uniform(0.94, 1.06)
    speed = rng.uniform(0.75, 1.3)
    pieces = [np.zeros(int(rng.uniform(0.05, 0.25) * rate))]
    for position, word in enumerate(words):
        if position:
            pieces.append(np.zeros(int(rng.uniform(0.06, 0.2) / speed * rate)))
        for letter in word:
            pieces.append(_phone(letter, rng.uniform(0.06, 0.12) / speed, f0 * rng.uniform(0.97, 1.03), scale, rate, rng))
    pieces.append(np.zeros(int(rng.uniform(0.05, 0.25) * rate)))
    wave = np.concatenate(pieces)
    wave *= rng.uniform(0.2, 0.8) / max(np.max(np.abs(wave)), 1e-9)
    speech_rms = np.sqrt(np.mean(wave[np.abs(wave) > 0] ** 2))
    wave += rng.normal(0, speech_rms / 10 ** (rng.uniform(10, 30) / 20), len(wave))
    return np.clip(wave, -1, 1).astype(np.float32)


def demo(size: int, seed: int, rate: int) -> SpeechSet:
    """`size` synthesised utterances of 1-3 digit words ("seven two nine"), seeded."""
    rng = np.random.default_rng(seed)
    clips, transcripts = [], []
    for _ in range(size):
        words = [DIGIT_WORDS[i] for i in rng.integers(0, 10, rng.integers(1, 4))]
        clips.append(trim_trailing_zeros(synthesise(words, rng, rate)))
        transcripts.append(" ".join(words))
    return SpeechSet(clips, transcripts, [f"demo {i}" for i in range(size)])


# --- composing utterances from isolated words ----------------------------------------------------


def compose(clips: SpeechSet, count: int, max_words: int, rng: np.random.Generator, rate: int, vary_edges: bool = False) -> SpeechSet:
    """`count` utterances of 1..`max_words` random clips each, joined by 50-250 ms pauses, with
    50-200 ms around them and background noise 25-45 dB below the speech: continuous "speech"
    from isolated-word recordings (FSDD), so CTC learns unsegmented word sequences.

    `vary_edges` (training and validation): each edge is 0 ms (half of the time) or 0-200 ms,
    and a quarter of the utterances get no noise, so single clips as they are (trimmed to the
    word, FSDD's recordings) are among them too; without it a model never hears a word start at
    the first sample, and mis-reads plain clips."""
    out = SpeechSet([], [], [], clips.skipped)

    def edge():
        if not vary_edges:
            return np.zeros(int(rng.uniform(0.05, 0.2) * rate), np.float32)
        return np.zeros(0 if rng.uniform() < 0.5 else int(rng.uniform(0, 0.2) * rate), np.float32)

    for _ in range(count):
        chosen = rng.integers(0, len(clips), rng.integers(1, max_words + 1))
        pieces = [edge()]
        for position, index in enumerate(chosen):
            if position:
                pieces.append(np.zeros(int(rng.uniform(0.05, 0.25) * rate), np.float32))
            pieces.append(clips.clips[index])
        pieces.append(edge())
        wave = np.concatenate(pieces)
        if not vary_edges or rng.uniform() >= 0.25:
            speech_rms = max(float(np.sqrt(np.mean(wave**2))), 1e-4)
            wave = wave + rng.normal(0, speech_rms / 10 ** (rng.uniform(25, 45) / 20), len(wave)).astype(np.float32)
        out.clips.append(trim_trailing_zeros(np.clip(wave, -1, 1).astype(np.float32)))
        out.transcripts.append(" ".join(clips.transcripts[i] for i in chosen))
        out.names.append("+".join(Path(clips.names[i]).name for i in chosen))
    return out


# --- reading clips -------------------------------------------------------------------------------


def trim_trailing_zeros(samples: np.ndarray) -> np.ndarray:
    """The model takes a clip to end at its last non-zero sample (zero padding is not audio), so
    clips are stored that way: the same frames in training, predict and the exported model."""
    nonzero = np.flatnonzero(samples)
    return samples[: nonzero[-1] + 1] if len(nonzero) else samples[:0]


def clip_problem(samples: np.ndarray, rate: int, max_seconds: float | None) -> str | None:
    if not len(samples):
        return "no audio samples"
    if audio.is_silent(samples, SILENCE_DBFS):
        return f"silent (peak below {SILENCE_DBFS:g} dBFS)"
    if max_seconds is not None and len(samples) > max_seconds * rate:
        return f"{len(samples) / rate:.1f} s long, over --max-seconds {max_seconds:g}"
    return None


def report_skipped(speech: "SpeechSet", skipped: list, total: int, source, stream=None) -> None:
    """One warning per skipped clip (the first 10) and a count, on stderr; when nothing usable is
    left, one UserError naming the first problem instead."""
    if not skipped:
        return
    if not len(speech):
        name, problem = skipped[0]
        raise UserError(f"{source}: no usable utterances: all {total} skipped (first: {name}: {problem})")
    stream = stream or sys.stderr
    for name, problem in skipped[:10]:
        print(f"Warning: skipping {name}: {problem}", file=stream)
    if len(skipped) > 10:
        print(f"Warning: ... and {len(skipped) - 10} more", file=stream)
    print(f"Warning: skipped {len(skipped)} of {total} clips in {source}", file=stream)


def read_clips(entries: list[tuple[Path, str]], config, source) -> SpeechSet:
    """Reads (audio path, raw transcript) pairs at the model rate; unusable ones are skipped with
    a warning naming each."""
    if config.max_utterances:
        entries = entries[: config.max_utterances]
    result = SpeechSet([], [], [])
    for path, transcript in entries:
        text = normalise_transcript(transcript, config.lowercase, config.keep_punctuation)
        if not text:
            result.skipped.append((str(path), "empty transcript"))
            continue
        try:
            samples, _ = audio.read_audio(path, rate=config.sample_rate)
        except UserError as error:
            result.skipped.append((str(path), str(error).removeprefix(f"{path}: ")))
            continue
        problem = clip_problem(samples, config.sample_rate, config.max_seconds)
        if problem:
            result.skipped.append((str(path), problem))
            continue
        result.clips.append(trim_trailing_zeros(samples))
        result.transcripts.append(text)
        result.names.append(str(path))
    report_skipped(result, result.skipped, len(entries), source)
    return result


def _resolve(base: Path, relative: str) -> Path:
    path = Path(relative.strip()).expanduser()
    return path if path.is_absolute() else base / path


def read_ljspeech(folder: Path, config) -> SpeechSet:
    """LJSpeech: ``metadata.csv`` rows ``id|transcript[|normalized transcript]`` (the normalised
    one is used when present) and ``wavs/ID.wav``."""
    metadata = folder / "metadata.csv"
    entries = []
    for number, line in enumerate(data_lib.read_lines(metadata, config.encoding, skip_blank=False), start=1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 2 or not parts[0].strip():
            raise UserError(f"{metadata}: line {number}: expected id|transcript[|normalized], found {line[:60]!r}")
        wav = folder / "wavs" / f"{parts[0].strip()}.wav"
        if not wav.is_file():
            raise UserError(f"{metadata}: line {number}: no such audio file {wav.relative_to(folder)}")
        entries.append((wav, parts[2] if len(parts) > 2 and parts[2].strip() else parts[1]))
    if not entries:
        raise UserError(f"{metadata}: no rows")
    return read_clips(entries, config, metadata)


PATH_COLUMNS = ("path", "file", "filename", "audio", "wav", "wav_filename")
TEXT_COLUMNS = ("transcript", "text", "sentence", "transcription")


def read_manifest(path: Path, config) -> SpeechSet:
    """A CSV of ``path,transcript`` rows (an optional header naming them); relative paths are
    relative to the CSV."""
    content = data_lib.read_text(path, config.encoding).replace("\r\n", "\n")
    rows = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(content)), start=1) if any(c.strip() for c in row)]
    if not rows:
        raise UserError(f"{path}: empty file")
    header = [c.strip().lower() for c in rows[0][1]]
    path_column, text_column = 0, 1
    if any(name in header for name in PATH_COLUMNS + TEXT_COLUMNS):
        path_column = next((header.index(n) for n in PATH_COLUMNS if n in header), 0)
        text_column = next((header.index(n) for n in TEXT_COLUMNS if n in header), 1)
        rows = rows[1:]
        if not rows:
            raise UserError(f"{path}: has a header but no rows")
    entries = []
    for number, row in rows:
        if len(row) <= max(path_column, text_column):
            raise UserError(f"{path}: line {number}: expected path,transcript, found {len(row)} column(s)")
        clip = _resolve(path.parent, row[path_column])
        if not clip.is_file():
            raise UserError(f"{path}: line {number}: no such audio file {row[path_column].strip()!r}")
        entries.append((clip, row[text_column]))
    return read_clips(entries, config, path)


def fsdd_parts(path: Path) -> tuple[str, str, int] | None:
    """(digit word, speaker, recording index) of a Free Spoken Digit file name, else None."""
    match = FSDD_NAME.match(path.name)
    return (DIGIT_WORDS[int(match.group(1))], match.group(2), int(match.group(3))) if match else None


def read_folder(folder: Path, config) -> SpeechSet:
    """A folder (searched recursively) of audio files, each with a same-name ``.txt`` transcript
    beside it or named as Free Spoken Digit recordings (``7_jackson_32.wav``: "seven")."""
    files = audio.list_audio(folder, recursive=True)
    if not files:
        raise UserError(
            f"{folder}: no audio files (expected *.wav with same-name *.txt, FSDD names such as 7_jackson_32.wav, "
            "an LJSpeech metadata.csv + wavs/, or a CSV manifest of path,transcript)"
        )
    entries = []
    for file in files:
        text_file = file.with_suffix(".txt")
        if text_file.is_file():
            entries.append((file, " ".join(data_lib.read_lines(text_file, config.encoding))))
        elif fsdd_parts(file):
            entries.append((file, fsdd_parts(file)[0]))
        else:
            raise UserError(f"{file}: no transcript (expected {text_file.name} beside it, or an FSDD name such as 7_jackson_32.wav)")
    return read_clips(entries, config, folder)


def read_path(path: Path, config) -> SpeechSet:
    """Every utterance at a local path: an LJSpeech folder, a CSV manifest or a folder of clips."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            return read_manifest(path, config)
        raise UserError(f"{path}: expected a folder of audio files or a CSV manifest of path,transcript rows")
    if (path / "metadata.csv").is_file():
        return read_ljspeech(path, config)
    return read_folder(path, config)


# --- tensorflow-datasets -------------------------------------------------------------------------

TFDS_SKIPPED_LABELS = ("_silence_", "_unknown_", "_background_noise_")
# Sets whose splits are not named train / validation / test: (train, validation, test).
TFDS_SPLITS = {"librispeech": ("train_clean100", "dev_clean", "test_clean")}


def tfds_split(spec: data_lib.DataSpec, part: str) -> str:
    """The split to read for `part` (train, validation or test): --data's own, else the set's name for it."""
    names = TFDS_SPLITS.get(spec.tfds_name, ("train", "validation", "test"))
    return spec.tfds_split or names[("train", "validation", "test").index(part)]


def read_tfds(spec: data_lib.DataSpec, split: str, config) -> SpeechSet:
    """speech_commands (the label word is the transcript; silence and unknown are left out),
    librispeech (speech, text) and other tfds sets with an audio feature and a text or label."""
    dataset, info = data_lib.load_tfds(spec, split, config.tfds_dir, as_supervised=False)
    audio_key = next((k for k in ("audio", "speech") if k in info.features), None)
    text_key = next((k for k in ("text", "transcript", "sentence") if k in info.features), None)
    label_key = "label" if "label" in info.features else None
    if audio_key is None or (text_key is None and label_key is None):
        raise UserError(f"{spec}: no audio and transcript features (has: {', '.join(info.features.keys())})")
    rate = int(getattr(info.features[audio_key], "sample_rate", None) or config.sample_rate)
    names = info.features[label_key].names if text_key is None else None
    scale = {"int16": 32768.0, "int32": 2147483648.0}.get(np.dtype(info.features[audio_key].np_dtype).name, 1.0)
    result = SpeechSet([], [], [])
    for number, example in enumerate(dataset.as_numpy_iterator()):
        if config.max_utterances and len(result) >= config.max_utterances:
            break
        raw = example[text_key].decode("utf-8") if text_key else names[int(example[label_key])]
        name = f"{spec}#{number}"
        if raw in TFDS_SKIPPED_LABELS:
            continue
        text = normalise_transcript(raw, config.lowercase, config.keep_punctuation)
        samples = audio.to_mono(np.asarray(example[audio_key], dtype=np.float32) / scale)
        samples = audio.resample(samples, rate, config.sample_rate)
        problem = "empty transcript" if not text else clip_problem(samples, config.sample_rate, config.max_seconds)
        if problem:
            result.skipped.append((name, problem))
            continue
        result.clips.append(trim_trailing_zeros(samples))
        result.transcripts.append(text)
        result.names.append(name)
    report_skipped(result, result.skipped, len(result) + len(result.skipped), spec)
    return result


# --- the splits train uses -----------------------------------------------------------------------


def check_alphabet(speech: SpeechSet, alphabet: str) -> None:
    """A transcript with a character the model cannot write is an error naming its clip."""
    allowed = set(alphabet)
    for name, text in zip(speech.names, speech.transcripts):
        outside = sorted(set(text) - allowed)
        if outside:
            raise UserError(f"{name}: transcript {text[:40]!r} has characters outside --alphabet: {''.join(outside)!r}")


def drop_unalignable(speech: SpeechSet, config, source) -> SpeechSet:
    """Leaves out utterances whose transcript needs more CTC frames than the audio gives (they
    would make the loss infinite), with a warning naming each."""
    _, hop, _ = frame_sizes(config.sample_rate, config.window_ms, config.hop_ms)
    keep, skipped = [], []
    for i, (clip, text) in enumerate(zip(speech.clips, speech.transcripts)):
        frames, needed = output_frames(len(clip), hop, config.subsample), ctc_frames_needed(text)
        if frames < needed:
            skipped.append((speech.names[i], f"transcript needs {needed} output frames, the audio gives {frames}"))
        else:
            keep.append(i)
    result = speech.subset(keep)
    result.skipped = speech.skipped + skipped
    report_skipped(result, skipped, len(speech), source)
    return result


def fsdd_official_split(speech: SpeechSet) -> tuple[list[int], list[int]] | None:
    """FSDD's own test set is recording indexes 0-4 of every digit and speaker; None unless the
    clips are all FSDD names and both parts are present."""
    parts = [fsdd_parts(Path(name)) for name in speech.names]
    if not parts or any(p is None for p in parts):
        return None
    test = [i for i, p in enumerate(parts) if p[2] <= 4]
    train = [i for i, p in enumerate(parts) if p[2] > 4]
    return (train, test) if train and test else None


def read_any(config, part: str = "train") -> SpeechSet:
    """All utterances of --data (for tfds, its `part`: train, validation or test)."""
    spec = data_lib.parse_data_spec(config.data)
    if spec.kind == "demo":
        return demo(config.demo_size, config.seed, config.sample_rate)
    if spec.kind == "tfds":
        return read_tfds(spec, tfds_split(spec, part), config)
    return read_path(spec.path, config)


def load_splits(config) -> tuple[SpeechSet, SpeechSet, dict]:
    """(training clips, validation utterances, facts). The validation split is FSDD's official one
    when the names allow it, the tfds validation split, or a seeded --val-fraction; with
    --compose-max > 1 it is composed once (seeded), while training composes anew each epoch."""
    spec = data_lib.parse_data_spec(config.data)
    speech = read_any(config)
    if not len(speech):
        raise UserError(f"{spec}: no usable utterances")
    read_skipped = len(speech.skipped)
    val = None
    if spec.kind == "tfds" and not spec.tfds_split:
        try:
            val = read_tfds(spec, tfds_split(spec, "validation"), config)
        except UserError:
            val = None  # the set has no validation split: hold out a share below
    if val is None:
        official = fsdd_official_split(speech) if config.val_fraction > 0 else None
        train_index, val_index = official or data_lib.split_indices(len(speech), config.val_fraction, config.seed)
        speech, val = speech.subset(train_index), speech.subset(val_index)
    if config.compose_max > 1 and len(val):
        val = compose(val, len(val), config.compose_max, np.random.default_rng([config.seed, 1]), config.sample_rate, vary_edges=True)
    if config.alphabet:
        check_alphabet(speech, config.alphabet)
        check_alphabet(val, config.alphabet)
        alphabet = config.alphabet
    else:
        alphabet = "".join(sorted(set("".join(speech.transcripts + val.transcripts))))
    speech = drop_unalignable(speech, config, spec)
    val = drop_unalignable(val, config, f"{spec} (validation)")
    if not len(speech):
        raise UserError(f"{spec}: no usable utterances left for training")
    info = {
        "alphabet": alphabet,
        "train_utterances": len(speech),
        "val_utterances": len(val),
        "train_hours": round(speech.seconds(config.sample_rate) / 3600, 4),
        "skipped_clips": len(speech.skipped) + len(val.skipped) - read_skipped,
    }
    return speech, val, info
