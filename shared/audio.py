"""Audio utilities every audio app shares: reading WAV files (8/16/24/32-bit PCM, float; and the
other formats libsndfile reads, such as FLAC) as float32 mono at a chosen rate, encoding WAV bytes,
and resampling. TensorFlow-free at import, so apps' help stays instant.

Reading goes through soundfile (libsndfile) and resampling through soxr (scipy's
``resample_poly`` when soxr is missing). Every problem with a file is a one-line ``UserError``
naming it: missing, not an audio file, corrupt, empty.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from dlapps.shared.errors import UserError

# What folder listings pick up; anything libsndfile reads is accepted when named directly.
AUDIO_SUFFIXES = (".wav", ".wave", ".flac", ".ogg")
WAV_SUBTYPES = ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")


def _soundfile():
    try:
        import soundfile
    except (ImportError, OSError) as error:  # OSError: the libsndfile shared library is missing
        raise UserError(f"audio: soundfile is not usable ({error}); pip install soundfile")
    return soundfile


def _describe_failure(error: Exception) -> str:
    """libsndfile's reason in a few words ('Format not recognised', 'Unspecified internal error')."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    # "Error opening '/x/y.wav': Format not recognised." -> "Format not recognised"
    return text.rpartition(": ")[2].rstrip(".") or text


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(frames,) or (frames, channels) -> (frames,): the mean of the channels."""
    samples = np.asarray(samples, dtype=np.float32)
    return samples if samples.ndim == 1 else samples.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling of a mono (frames,) or multi-channel (frames, channels) signal; the
    duration is kept (``round(frames * to_rate / from_rate)`` frames)."""
    samples = np.asarray(samples, dtype=np.float32)
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if from_rate == to_rate or not len(samples):
        return samples
    try:
        import soxr
    except ImportError:
        from scipy.signal import resample_poly

        ratio = Fraction(int(to_rate), int(from_rate))
        out = resample_poly(samples, ratio.numerator, ratio.denominator, axis=0)
        return out[: int(round(len(samples) * to_rate / from_rate))].astype(np.float32)
    return np.asarray(soxr.resample(samples, from_rate, to_rate, quality="HQ"), dtype=np.float32)


def _read(source, name: str, rate: int | None, mono: bool) -> tuple[np.ndarray, int]:
    soundfile = _soundfile()
    try:
        samples, file_rate = soundfile.read(source, dtype="float32", always_2d=True)
    except RuntimeError as error:  # soundfile.LibsndfileError: unknown format, broken header
        raise UserError(f"{name}: not a readable WAV or other audio file ({_describe_failure(error)})")
    except (ValueError, TypeError, EOFError) as error:  # malformed headers surface as these too
        raise UserError(f"{name}: corrupt audio file ({_describe_failure(error)})")
    if samples.shape[0] == 0:
        raise UserError(f"{name}: no audio samples (an empty recording)")
    if not np.isfinite(samples).all():
        raise UserError(f"{name}: contains NaN or infinite samples")
    if mono:
        samples = to_mono(samples)
    if rate is not None and rate != file_rate:
        samples = resample(samples, file_rate, rate)
        file_rate = rate
    return samples, int(file_rate)


def read_audio(path: str | Path, rate: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """(float32 samples in [-1, 1], sample rate) of an audio file: mono (channels averaged) unless
    `mono` is False, and resampled to `rate` when given. One-line UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: an empty file, not audio")
    return _read(str(path), str(path), rate, mono)


def decode_audio(data: bytes, rate: int | None = None, mono: bool = True, name: str = "audio") -> tuple[np.ndarray, int]:
    """Like :func:`read_audio`, for encoded bytes (a WAV file's content); `name` is used in errors."""
    if not data:
        raise UserError(f"{name}: empty, not audio")
    return _read(io.BytesIO(data), name, rate, mono)


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """(frames, sample rate, channels) from the header only: a cheap check of many files."""
    soundfile = _soundfile()
    try:
        info = soundfile.info(str(path))
    except Exception as error:  # LibsndfileError, RuntimeError
        raise UserError(f"{path}: not a readable WAV or other audio file ({_describe_failure(error)})")
    return int(info.frames), int(info.samplerate), int(info.channels)


def encode_wav(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    """WAV bytes of float samples in [-1, 1] ((frames,) or (frames, channels)); `subtype` is one of
    WAV_SUBTYPES. Values outside [-1, 1] are clipped for PCM subtypes."""
    soundfile = _soundfile()
    if subtype not in WAV_SUBTYPES:
        raise ValueError(f"subtype must be one of {WAV_SUBTYPES}, got {subtype!r}")
    samples = np.asarray(samples, dtype=np.float32)
    if subtype.startswith("PCM"):
        samples = np.clip(samples, -1.0, 1.0)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, int(rate), subtype=subtype, format="WAV")
    return buffer.getvalue()


def write_wav(path: str | Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    """A WAV file, written atomically (see shared.files)."""
    from dlapps.shared.files import write_bytes

    return write_bytes(path, encode_wav(samples, rate, subtype))


def list_audio(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Audio files (by suffix) of `folder`, sorted; hidden files and folders are left out."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    return sorted(
        p for p in folder.glob(pattern)
        if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def peak_level(samples: np.ndarray) -> float:
    """The largest absolute sample value (0 for an empty signal)."""
    return float(np.max(np.abs(samples))) if len(samples) else 0.0


def is_silent(samples: np.ndarray, threshold_db: float = -60.0) -> bool:
    """True when no sample rises above `threshold_db` dBFS (digital silence, a muted microphone)."""
    peak = peak_level(samples)
    return peak == 0.0 or 20 * math.log10(peak) < threshold_db
