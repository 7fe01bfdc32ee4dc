"""The ASR model: raw waveform -> log-mel frames (inside the model) -> SpecAugment (training only)
-> strided 3x3 convolutions -> bidirectional GRU/LSTM stack -> logits over the alphabet plus the
CTC blank (index 0).

The input is a zero-padded float32 batch ``[batch, samples]`` at the model rate; each clip is
taken to end at its last non-zero sample, so padding never counts as audio and a clip gives the
same frames alone or in any batch (every layer below keeps padded frames at zero and out of the
statistics). The model outputs ``{"logits": [batch, steps, classes], "lengths": [batch]}``;
``compute_loss`` is CTC (``keras.ops.ctc_loss``, blank 0, float32 under mixed precision), and
decoding (``keras.ops.ctc_decode``, greedy or beam search) and the id -> text lookup are model
methods, so the exported SavedModel carries them.
"""

from __future__ import annotations

import numpy as np

import keras
from keras import layers, ops

from dlapps.shared.models import TaskModel


def valid_samples(waveform):
    """Samples up to and including the last non-zero one, per row of a [batch, samples] batch."""
    positions = ops.arange(1, ops.shape(waveform)[1] + 1, dtype="int32")
    return ops.max(ops.where(ops.not_equal(waveform, 0), positions[None, :], 0), axis=1)


def sequence_mask(lengths, steps):
    return ops.arange(steps, dtype="int32")[None, :] < ops.cast(lengths, "int32")[:, None]


# === Layers ===


@keras.saving.register_keras_serializable(package="dlapps.asr")
class LogMelSpectrogram(layers.Layer):
    """Waveforms [batch, samples] -> (per-utterance normalised log-mel frames [batch, frames,
    mel_bins], valid frame counts [batch]). Hann-windowed STFT with the end zero-padded
    (ceil(samples / hop) frames), power spectrum, mel filterbank, log; then each mel channel is
    standardised over the clip's own frames (cepstral mean and variance normalisation), which
    removes loudness and channel differences. Frames past a clip's end are zero."""

    def __init__(self, sample_rate=16000, mel_bins=80, window_ms=25.0, hop_ms=10.0, **kwargs):
        super().__init__(**kwargs)
        from dlapps.apps.asr.data import frame_sizes

        self.sample_rate = int(sample_rate)
        self.mel_bins = int(mel_bins)
        self.window_ms = float(window_ms)
        self.hop_ms = float(hop_ms)
        self.window, self.hop, self.fft_length = frame_sizes(self.sample_rate, self.window_ms, self.hop_ms)

    def call(self, waveform):
        import tensorflow as tf

        waveform = tf.cast(waveform, "float32")
        samples = valid_samples(waveform)
        spectrum = tf.signal.stft(waveform, self.window, self.hop, self.fft_length, window_fn=tf.signal.hann_window, pad_end=True)
        power = tf.math.square(tf.math.abs(spectrum))
        filterbank = tf.signal.linear_to_mel_weight_matrix(
            self.mel_bins, self.fft_length // 2 + 1, self.sample_rate, 20.0, self.sample_rate / 2
        )
        log_mel = tf.math.log(tf.tensordot(power, filterbank, 1) + 1e-6)
        frames = (samples + self.hop - 1) // self.hop
        mask = tf.cast(sequence_mask(frames, tf.shape(log_mel)[1]), "float32")[:, :, None]
        count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
        mean = tf.reduce_sum(log_mel * mask, axis=1, keepdims=True) / count
        variance = tf.reduce_sum(tf.math.square(log_mel - mean) * mask, axis=1, keepdims=True) / count
        return (log_mel - mean) * tf.math.rsqrt(variance + 1e-5) * mask, frames


    def get_config(self):
        return {**super().get_config(), "sample_rate": self.sample_rate, "mel_bins": self.mel_bins,
                "window_ms": self.window_ms, "hop_ms": self.hop_ms}


@keras.saving.register_keras_serializable(package="dlapps.asr")
class SpecAugment(layers.Layer):
    """SpecAugment (Park et al. 2019) without time warping, in training only: `freq_masks` bands
    of up to `freq_mask_bins` mel channels and `time_masks` spans of up to `time_mask_fraction` of
    each clip's own frames are set to zero (the normalised mean)."""

    def __init__(self, freq_masks=2, freq_mask_bins=12, time_masks=2, time_mask_fraction=0.05, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.freq_masks = int(freq_masks)
        self.freq_mask_bins = int(freq_mask_bins)
        self.time_masks = int(time_masks)
        self.time_mask_fraction = float(time_mask_fraction)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _bands(self, count, widest, extent, positions):
        """[batch, len(positions)] True inside any of `count` random bands per row, each of width
        0..widest (a per-row tensor) placed uniformly within 0..extent (per row)."""
        batch = ops.shape(widest)[0]
        width = ops.floor(keras.random.uniform((batch, count), seed=self.seed_generator) * (widest[:, None] + 1))
        start = ops.floor(keras.random.uniform((batch, count), seed=self.seed_generator) * (extent[:, None] - width + 1))
        inside = (positions[None, None, :] >= start[:, :, None]) & (positions[None, None, :] < (start + width)[:, :, None])
        return ops.any(inside, axis=1)

    def call(self, features, frames, training=None):
        if not training:
            return features
        batch, steps, bins = ops.shape(features)[0], ops.shape(features)[1], ops.shape(features)[2]
        keep = ops.ones_like(features)
        if self.freq_masks and self.freq_mask_bins:
            widest = ops.full((batch,), float(self.freq_mask_bins))
            extent = ops.full((batch,), ops.cast(bins, "float32"))
            masked = self._bands(self.freq_masks, widest, extent, ops.cast(ops.arange(bins), "float32"))
            keep = keep * ops.cast(~masked, features.dtype)[:, None, :]
        if self.time_masks and self.time_mask_fraction > 0:
            frames = ops.cast(frames, "float32")
            widest = ops.floor(frames * self.time_mask_fraction)
            masked = self._bands(self.time_masks, widest, frames, ops.cast(ops.arange(steps), "float32"))
            keep = keep * ops.cast(~masked, features.dtype)[:, :, None]
        return features * keep


    def get_config(self):
        return {**super().get_config(), "freq_masks": self.freq_masks, "freq_mask_bins": self.freq_mask_bins,
                "time_masks": self.time_masks, "time_mask_fraction": self.time_mask_fraction, "seed": self.seed}


@keras.saving.register_keras_serializable(package="dlapps.asr")
class ConvSubsampler(layers.Layer):
    """(frames [batch, steps, mel_bins], counts) -> ([batch, steps / subsample, features], counts):
    3x3 ReLU convolutions, each halving the mel axis, the first log2(subsample) also the time axis.
    Padding is explicit (one frame before and after, 'valid' convolutions), so a clip's outputs do
    not depend on how much batch padding follows it; frames past a clip's end are zeroed after
    every layer."""

    def __init__(self, filters=(32, 32), subsample=2, **kwargs):
        super().__init__(**kwargs)
        self.filters = [int(f) for f in filters]
        self.subsample = int(subsample)
        self.time_strides = [2 if 2 ** (i + 1) <= self.subsample else 1 for i in range(len(self.filters))]
        self.convolutions = [
            layers.Conv2D(f, 3, strides=(stride, 2), padding="valid", activation="relu", name=f"conv_{i}")
            for i, (f, stride) in enumerate(zip(self.filters, self.time_strides))
        ]

    def output_bins(self, mel_bins):
        for _ in self.filters:
            mel_bins = (mel_bins + 1) // 2
        return mel_bins

    def call(self, features, frames):
        x = features[:, :, :, None]
        for convolution, stride in zip(self.convolutions, self.time_strides):
            x = convolution(ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]))
            if stride == 2:
                frames = (frames + 1) // 2
            x = x * ops.cast(sequence_mask(frames, ops.shape(x)[1]), x.dtype)[:, :, None, None]
        bins, channels = x.shape[2], x.shape[3]
        return ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], bins * channels)), frames


    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "subsample": self.subsample}


@keras.saving.register_keras_serializable(package="dlapps.asr")
class RecurrentEncoder(layers.Layer):
    """A stack of bidirectional GRU or LSTM layers over the valid steps of each clip (a mask from
    the counts: the backward direction starts at the clip's own last step), with dropout between."""

    def __init__(self, units=(160,), cell="gru", dropout=0.2, **kwargs):
        super().__init__(**kwargs)
        self.units = [int(u) for u in units]
        self.cell = cell
        self.dropout = float(dropout)
        rnn = {"gru": layers.GRU, "lstm": layers.LSTM}[cell]
        self.recurrent = [layers.Bidirectional(rnn(u, return_sequences=True), name=f"bi{cell}_{i}") for i, u in enumerate(self.units)]
        self.dropouts = [layers.Dropout(self.dropout, name=f"dropout_{i}") for i in range(len(self.units))]

    def call(self, x, frames, training=None):
        mask = sequence_mask(frames, ops.shape(x)[1])
        for recurrent, dropout in zip(self.recurrent, self.dropouts):
            x = dropout(recurrent(x, mask=mask, training=training), training=training)
        return x


    def get_config(self):
        return {**super().get_config(), "units": self.units, "cell": self.cell, "dropout": self.dropout}


# === Functional Model ===


@keras.saving.register_keras_serializable(package="dlapps.asr")
class SpeechRecognizer(TaskModel):
    """CTC speech recogniser over raw waveforms.

    Args:
        alphabet: the characters it writes (a string); output class i + 1 is alphabet[i], 0 the blank.
        sample_rate: the rate waveforms must be at.
        mel_bins, window_ms, hop_ms: the log-mel features.
        conv_filters: filters of each strided 3x3 convolution.
        subsample: frames per output step (1, 2 or 4).
        rnn: "gru" or "lstm"; rnn_units: units of each bidirectional layer.
        dropout: after the convolutions and between recurrent layers.
        freq_masks, freq_mask_bins, time_masks, time_mask_fraction: SpecAugment in training.
    """

    def __init__(
        self,
        alphabet,
        sample_rate=16000,
        mel_bins=80,
        window_ms=25.0,
        hop_ms=10.0,
        conv_filters=(32, 32),
        subsample=2,
        rnn="gru",
        rnn_units=(160, 160),
        dropout=0.2,
        freq_masks=2,
        freq_mask_bins=12,
        time_masks=2,
        time_mask_fraction=0.05,
        seed=None,
        **kwargs,
    ):
        if not alphabet:
            raise ValueError("the alphabet needs at least one character")
        if subsample > 2 ** len(conv_filters):
            raise ValueError(f"subsample {subsample} needs at least {int(np.log2(subsample))} convolutions")
        # === Layers ===
        features = LogMelSpectrogram(sample_rate, mel_bins, window_ms, hop_ms, dtype="float32", name="log_mel")
        augment = SpecAugment(freq_masks, freq_mask_bins, time_masks, time_mask_fraction, seed=seed, name="spec_augment")
        convolutions = ConvSubsampler(conv_filters, subsample, name="convolutions")
        encoder = RecurrentEncoder(rnn_units, rnn, dropout, name="encoder")
        # float32 logits keep the CTC loss stable under mixed precision.
        head = layers.Dense(len(alphabet) + 1, dtype="float32", name="logits")

        # === Functional Model ===
        waveform = keras.Input(shape=(None,), dtype="float32", name="waveform")
        x, frames = features(waveform)
        x = augment(x, frames)
        x, steps = convolutions(x, frames)
        x = layers.Dropout(dropout, name="conv_dropout")(x)
        x = encoder(x, steps)
        logits = head(x)
        super().__init__(inputs=waveform, outputs={"logits": logits, "lengths": steps}, **kwargs)

        # === Config ===
        self.alphabet = str(alphabet)
        self.sample_rate = int(sample_rate)
        self.hop = features.hop
        self.subsample = int(subsample)
        self.seconds_per_step = features.hop * self.subsample / self.sample_rate

    # --- training and decoding -------------------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean CTC loss per utterance; `y` holds character ids padded with 0 (the blank)."""
        labels = ops.cast(y, "int32")
        label_lengths = ops.sum(ops.cast(labels > 0, "int32"), axis=1)
        loss = ops.ctc_loss(labels, ops.cast(y_pred["logits"], "float32"), label_lengths, y_pred["lengths"], mask_index=0)
        return ops.mean(loss)

    def decode(self, logits, lengths, beam_width=1):
        """Character ids [batch, steps] (-1 after the end): greedy (best class per step, repeats
        merged, blanks removed) for beam_width 1, else CTC prefix beam search."""
        if beam_width <= 1:
            ids, _ = ops.ctc_decode(logits, lengths, strategy="greedy", mask_index=0)
        else:
            ids, _ = ops.ctc_decode(logits, lengths, strategy="beam_search", beam_width=int(beam_width), top_paths=1, mask_index=0)
        return ids[0]

    def ids_to_text(self, ids):
        """Character ids (-1 or 0 = nothing) -> one string per row, in the graph."""
        import tensorflow as tf

        characters = tf.constant([""] + list(self.alphabet))
        return tf.strings.reduce_join(tf.gather(characters, tf.maximum(ids, 0)), axis=-1)

    def recognise(self, waveform, beam_width=1):
        """Waveforms [batch, samples] -> transcripts, character ids, log-probabilities per step
        and step counts: everything predict, evaluate and the exported signatures need."""
        outputs = self(waveform, training=False)
        ids = self.decode(outputs["logits"], outputs["lengths"], beam_width)
        return {
            "transcript": self.ids_to_text(ids),
            "ids": ids,
            "log_probs": ops.log_softmax(outputs["logits"], axis=-1),
            "lengths": outputs["lengths"],
        }

    def predict_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        outputs = self(x, training=False)
        return {"ids": self.decode(outputs["logits"], outputs["lengths"]), "lengths": outputs["lengths"]}


def fft_resample(samples, from_rate, to_rate: int):
    """A 1-D float32 tensor from `from_rate` (a tensor) to `to_rate` in the graph, by truncating or
    zero-extending its spectrum (scipy.signal.resample's method; predict uses soxr, which differs
    by a small filtering error near the band edge)."""
    import tensorflow as tf

    n = tf.shape(samples)[0]
    m = tf.cast(tf.round(tf.cast(n, tf.float64) * to_rate / tf.cast(from_rate, tf.float64)), tf.int32)
    spectrum = tf.signal.rfft(samples)
    keep = tf.minimum(n // 2 + 1, m // 2 + 1)
    spectrum = tf.pad(spectrum[:keep], [[0, m // 2 + 1 - keep]])
    return tf.signal.irfft(spectrum, fft_length=[m]) * tf.cast(m, tf.float32) / tf.cast(tf.maximum(n, 1), tf.float32)


def _little_endian(data, offset, size: int):
    """The unsigned little-endian integer of `size` (2 or 4) bytes at `offset` of a string tensor,
    as int64 (a 4-byte 0xFFFFFFFF, streamed WAV's unknown size, stays positive)."""
    import tensorflow as tf

    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, offset, size), tf.uint8), tf.int64)
    return tf.reduce_sum(raw * tf.constant([1, 256, 65536, 16777216][:size], tf.int64))


def _find_chunk(data, name: str):
    """(offset of its body, its size) of the first RIFF chunk `name`, or (-1, 0): chunks are
    walked from byte 12 (each: 4-byte id, 4-byte size, body padded to an even length)."""
    import tensorflow as tf

    length = tf.cast(tf.strings.length(data), tf.int64)

    def body(offset, found, size):
        hit = tf.equal(tf.strings.substr(data, offset, 4), name)
        chunk = _little_endian(data, offset + 4, 4)
        return offset + 8 + chunk + chunk % 2, tf.where(hit, offset + 8, found), tf.where(hit, chunk, size)

    _, found, size = tf.while_loop(lambda offset, found, size: (offset + 8 <= length) & (found < 0), body,
                                   (tf.constant(12, tf.int64), tf.constant(-1, tf.int64), tf.constant(0, tf.int64)))
    return found, size


def decode_wav(data):
    """One encoded WAV file (a scalar string tensor) -> (mono float32 samples, sample rate), in
    the graph: 8-bit unsigned, 16/24/32-bit PCM and 32/64-bit float, plain or
    WAVE_FORMAT_EXTENSIBLE, channels averaged (tf.audio.decode_wav reads 16-bit PCM only). Another
    encoding, or bytes that are not RIFF/WAVE, is an InvalidArgumentError naming the problem."""
    import tensorflow as tf

    length = tf.cast(tf.strings.length(data), tf.int64)
    # Ops run in parallel, so no read may fail before the checks do: header fields are read from
    # a zero-padded copy at offsets clamped into it, and the data chunk's span is clamped too.
    padded = data + tf.constant(b"\0" * 48)
    fmt, fmt_size = _find_chunk(data, "fmt ")
    body, size = _find_chunk(data, "data")
    checks = [
        tf.debugging.assert_equal(tf.strings.substr(padded, 0, 4) + tf.strings.substr(padded, 8, 4), "RIFFWAVE",
                                  message="not a RIFF/WAVE file"),
        tf.debugging.assert_non_negative(tf.minimum(fmt, body), message="WAV without a fmt or data chunk"),
    ]
    fmt, body = tf.maximum(fmt, 0), tf.maximum(body, 0)
    code = _little_endian(padded, fmt, 2)
    # WAVE_FORMAT_EXTENSIBLE: the real format code opens the SubFormat GUID, 24 bytes in.
    code = tf.where(tf.equal(code, 0xFFFE) & (fmt_size >= 26), _little_endian(padded, fmt + 24, 2), code)
    channels = tf.maximum(_little_endian(padded, fmt + 2, 2), 1)
    rate = tf.cast(_little_endian(padded, fmt + 4, 4), tf.int32)
    bits = _little_endian(padded, fmt + 14, 2)
    # format code * 1000 + bits per sample (code 1: PCM, 3: IEEE float), in the order of `decoders`
    kinds = tf.constant([1008, 1016, 1024, 1032, 3032, 3064], tf.int64)
    matches = tf.equal(kinds, code * 1000 + bits)
    with tf.control_dependencies(checks):  # only then is the format code worth naming
        supported = tf.debugging.assert_equal(tf.reduce_any(matches), True, message=(
            "unsupported WAV encoding (8-bit unsigned, 16/24/32-bit PCM and 32/64-bit float are read)"))
    frame_bytes = channels * tf.maximum(bits // 8, 1)
    # A streamed file's data size (0xFFFFFFFF) or a truncated file: what is there, whole frames only.
    size = tf.maximum(tf.minimum(size, length - body), 0)
    with tf.control_dependencies([supported]):
        raw = tf.strings.substr(data, body, size - size % frame_bytes)

    def pcm24():
        triples = tf.reshape(tf.cast(tf.io.decode_raw(raw, tf.uint8), tf.int32), [-1, 3])
        value = triples[:, 0] + triples[:, 1] * 256 + triples[:, 2] * 65536
        return tf.cast(value - tf.cast(value >= 8388608, tf.int32) * 16777216, tf.float32) / 8388608.0

    decoders = [
        lambda: (tf.cast(tf.io.decode_raw(raw, tf.uint8), tf.float32) - 128.0) / 128.0,
        lambda: tf.cast(tf.io.decode_raw(raw, tf.int16), tf.float32) / 32768.0,
        pcm24,
        lambda: tf.cast(tf.io.decode_raw(raw, tf.int32), tf.float32) / 2147483648.0,
        lambda: tf.io.decode_raw(raw, tf.float32),
        lambda: tf.cast(tf.io.decode_raw(raw, tf.float64), tf.float32),
    ]
    interleaved = tf.switch_case(tf.argmax(tf.cast(matches, tf.int32), output_type=tf.int32), decoders)
    mono = tf.reduce_mean(tf.reshape(interleaved, tf.stack([-1, tf.cast(channels, tf.int32)])), axis=1)
    return mono, rate


def decode_wav_batch(wavs, sample_rate: int):
    """Encoded WAV files (a 1-D string tensor) -> zero-padded mono float32 waveforms [batch,
    samples] at `sample_rate`, in the graph (`decode_wav`), resampled when a file's rate differs."""
    import tensorflow as tf

    def one(wav):
        mono, rate = decode_wav(wav)
        return tf.cond(tf.equal(rate, sample_rate), lambda: mono, lambda: fft_resample(mono, rate, sample_rate))

    waves = tf.map_fn(one, wavs, fn_output_signature=tf.RaggedTensorSpec(shape=[None], dtype=tf.float32, ragged_rank=0))
    return waves.to_tensor(0.0)


# === Config ===
# SpeechRecognizer's config is its constructor's arguments (TaskModel); the app builds it from
# AsrConfig in app.py. What follows turns decoded ids into text and times, outside the graph.


def ids_to_string(ids, alphabet: str) -> str:
    return "".join(alphabet[i - 1] for i in np.asarray(ids).tolist() if i > 0)


def ctc_alignment(log_probs: np.ndarray, labels) -> list[tuple[int, int]] | None:
    """The most probable CTC path that spells `labels` (Viterbi forced alignment over the
    blank-interleaved label sequence): the (first, last) step of each label, or None when the
    steps are too few. log_probs: [steps, classes] log-softmax, blank 0."""
    labels = [int(label) for label in labels]
    steps = len(log_probs)
    if not labels:
        return []
    extended = np.zeros(2 * len(labels) + 1, dtype=np.int64)
    extended[1::2] = labels
    states = len(extended)
    # A label state may come from two states back (skipping the blank) unless it repeats that label.
    can_skip = np.zeros(states, dtype=bool)
    can_skip[3::2] = extended[3::2] != extended[1:-2:2]
    score = np.full(states, -np.inf)
    score[:2] = log_probs[0, extended[:2]]
    back = np.zeros((steps, states), dtype=np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    for t in range(1, steps):
        stay, step = score, np.concatenate([[-np.inf], score[:-1]])
        skip = np.where(can_skip, np.concatenate([[-np.inf, -np.inf], score[:-2]]), -np.inf)
        candidates = np.stack([stay, step, skip])
        back[t] = np.argmax(candidates, axis=0)
        score = candidates[back[t], np.arange(states)] + log_probs[t, extended]
    state = states - 1 if states < 2 or score[-1] >= score[-2] else states - 2
    if not np.isfinite(score[state]):
        return None
    path = np.empty(steps, dtype=np.int64)
    for t in range(steps - 1, -1, -1):
        path[t] = state
        state -= back[t, state]
    spans = []
    for k in range(len(labels)):
        where = np.flatnonzero(path == 2 * k + 1)
        spans.append((int(where[0]), int(where[-1])))
    return spans
