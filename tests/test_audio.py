"""shared/audio.py: every WAV encoding reads back, stereo becomes mono, resampling keeps duration and
pitch, and every bad file is a one-line UserError naming it."""

import subprocess
import sys

import numpy as np
import pytest

from dlapps.shared import audio
from dlapps.shared.errors import UserError

RATE = 8000


def sine(frequency=440.0, seconds=0.5, rate=RATE, amplitude=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def dominant_frequency(samples, rate):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.argmax(spectrum) * rate / len(samples)


@pytest.mark.parametrize("subtype, tolerance", [
    ("PCM_U8", 1 / 64), ("PCM_16", 1e-4), ("PCM_24", 1e-6), ("PCM_32", 1e-6), ("FLOAT", 0), ("DOUBLE", 1e-7),
])
def test_every_wav_encoding_reads_back(tmp_path, subtype, tolerance):
    signal = sine()
    path = audio.write_wav(tmp_path / f"{subtype}.wav", signal, RATE, subtype=subtype)
    samples, rate = audio.read_audio(path)
    assert rate == RATE and samples.dtype == np.float32 and samples.shape == signal.shape
    assert np.max(np.abs(samples - signal)) <= tolerance
    from_bytes, _ = audio.decode_audio(path.read_bytes())
    np.testing.assert_array_equal(from_bytes, samples)


def test_stereo_becomes_the_mean_of_its_channels(tmp_path):
    left, right = sine(300), sine(700, amplitude=0.25)
    path = audio.write_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1), RATE, subtype="FLOAT")
    mono, _ = audio.read_audio(path)
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-7)
    both, _ = audio.read_audio(path, mono=False)
    assert both.shape == (len(left), 2)


@pytest.mark.parametrize("from_rate, to_rate", [(8000, 16000), (44100, 16000), (22050, 16000), (16000, 8000)])
def test_resampling_keeps_duration_and_pitch(from_rate, to_rate):
    signal = sine(440, seconds=1.3, rate=from_rate)
    out = audio.resample(signal, from_rate, to_rate)
    assert abs(len(out) - len(signal) * to_rate / from_rate) <= 1
    assert abs(dominant_frequency(out, to_rate) - 440) < 2
    assert abs(np.sqrt(np.mean(out[100:-100] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_read_resamples_to_the_requested_rate(tmp_path):
    path = audio.write_wav(tmp_path / "a.wav", sine(500, seconds=0.75), RATE)
    samples, rate = audio.read_audio(path, rate=16000)
    assert rate == 16000 and abs(len(samples) - 12000) <= 1
    assert abs(dominant_frequency(samples, 16000) - 500) < 3


def test_scipy_fallback_resamples_alike(monkeypatch):
    signal = sine(440, seconds=0.5, rate=8000)
    with_soxr = audio.resample(signal, 8000, 16000)
    monkeypatch.setitem(sys.modules, "soxr", None)  # `import soxr` now raises ImportError
    with_scipy = audio.resample(signal, 8000, 16000)
    assert with_scipy.shape == with_soxr.shape
    assert np.max(np.abs(with_scipy[200:-200] - with_soxr[200:-200])) < 0.01


def test_bad_files_are_one_line_errors_naming_the_file(tmp_path):
    cases = {
        "missing.wav": (None, "no such file"),
        "empty.wav": (b"", "an empty file"),
        "text.wav": (b"this is not audio at all, just text\n" * 4, "not a readable WAV"),
        "truncated.wav": (audio.encode_wav(sine(), RATE)[:30], "not a readable WAV"),
        "no_samples.wav": (audio.encode_wav(np.zeros(0, np.float32), RATE), "no audio samples"),
    }
    for name, (content, fragment) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(UserError) as error:
            audio.read_audio(path)
        message = str(error.value)
        assert str(path) in message and fragment in message and "\n" not in message, message
    with pytest.raises(UserError, match="upload.wav: not a readable WAV"):
        audio.decode_audio(b"RIFF\x00\x00\x00\x00WAVE", name="upload.wav")


def test_info_listing_and_silence(tmp_path):
    audio.write_wav(tmp_path / "b.wav", sine(), RATE)
    audio.write_wav(tmp_path / "a.WAV", np.zeros(800, np.float32), RATE)
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / ".hidden.wav").write_bytes(b"")
    assert [p.name for p in audio.list_audio(tmp_path)] == ["a.WAV", "b.wav"]
    assert audio.audio_info(tmp_path / "b.wav") == (4000, RATE, 1)
    assert audio.is_silent(audio.read_audio(tmp_path / "a.WAV")[0])
    assert not audio.is_silent(audio.read_audio(tmp_path / "b.wav")[0])
    with pytest.raises(UserError, match="notes.txt: not a readable WAV"):
        audio.audio_info(tmp_path / "notes.txt")


def test_importing_audio_loads_no_tensorflow():
    script = "import sys, dlapps.shared.audio; print(any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
