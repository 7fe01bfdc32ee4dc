"""The asr app's hooks into the shared contract (shared/app.py)."""

from __future__ import annotations

import dataclasses
import sys
import weakref
from pathlib import Path
from typing import ClassVar

import numpy as np

from dlapps.shared import audio
from dlapps.shared import data as data_lib
from dlapps.shared.app import App, Splits
from dlapps.shared.config import EvaluateOptions, ExportOptions, PredictOptions, default, option
from dlapps.shared.errors import UserError

from . import data as asr_data
from .config import AsrConfig

BEAM_HELP = "CTC beam width: 1 decodes greedily (best class per step), more runs prefix beam search"


@dataclasses.dataclass
class AsrPredictOptions(PredictOptions):
    batch_size: int = default(16, help="clips per model call")
    beam: int = option(1, BEAM_HELP, min=1, max=512)
    timestamps: str = option("words", "start/end seconds in --json output, from the CTC alignment", choices=("words", "characters", "none"))
    max_seconds: float = option(600.0, "longest clip accepted, in seconds", above=0, max=36000)


@dataclasses.dataclass
class AsrEvaluateOptions(EvaluateOptions):
    batch_size: int = default(16, help="utterances per model call")
    beam: int = option(1, BEAM_HELP, min=1, max=512)
    compose: int = option(0, "with --data: join 1..N clips per utterance, as --compose-max does in training (0: as the model was trained)", min=0, max=20)
    worst: int = option(5, "utterances with the highest CER to list", min=0, max=1000)


@dataclasses.dataclass
class AsrExportOptions(ExportOptions):
    beam: int = option(1, BEAM_HELP + " (fixed in the SavedModel)", min=1, max=512)


class AsrApp(App):
    name = "asr"
    summary = "Speech recognition from raw audio: log-mel + BiGRU + CTC, greedy or beam decoding, WER and CER."
    config = AsrConfig
    predict_options = AsrPredictOptions
    evaluate_options = AsrEvaluateOptions
    export_options = AsrExportOptions
    inputs = "paths"
    input_help = "WAV files (any rate, mono or stereo) or folders of them; '-' reads paths from stdin"
    predict_help = "Transcribe audio: `dlapps asr predict a.wav clips/ --beam 8 --json` (times per word from the CTC alignment)."
    evaluate_help = "CER and WER (jiwer) on --data, with the worst utterances."
    _traced: ClassVar = weakref.WeakKeyDictionary()

    # --- train ---------------------------------------------------------------------------------
    def check_config(self, config) -> None:
        if config.subsample > 2 ** len(config.conv_filters):
            raise UserError(f"--subsample {config.subsample} needs at least {config.subsample.bit_length() - 1} --conv-filters layers")
        if config.freq_mask_bins >= config.mel_bins:
            raise UserError(f"--freq-mask-bins {config.freq_mask_bins} must be below --mel-bins {config.mel_bins}")
        if config.hop_ms > config.window_ms:
            raise UserError(f"--hop-ms {config.hop_ms:g} must not exceed --window-ms {config.window_ms:g} (frames would skip audio)")

    def load_splits(self, config) -> Splits:
        train, val, info = asr_data.load_splits(config)
        return Splits(train, val, info)

    def build_model(self, config, splits):
        from .model import SpeechRecognizer

        return SpeechRecognizer(
            alphabet=splits.info["alphabet"],
            sample_rate=config.sample_rate,
            mel_bins=config.mel_bins,
            window_ms=config.window_ms,
            hop_ms=config.hop_ms,
            conv_filters=config.conv_filters,
            subsample=config.subsample,
            rnn=config.rnn,
            rnn_units=config.rnn_units,
            dropout=config.dropout,
            freq_masks=config.freq_masks,
            freq_mask_bins=config.freq_mask_bins,
            time_masks=config.time_masks,
            time_mask_fraction=config.time_mask_fraction,
            seed=config.seed,
        )

    def compile_model(self, model, config) -> None:
        import keras

        # Clipping: CTC gradients of recurrent stacks spike early in training.
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate, global_clipnorm=5.0))

    def callbacks(self, model, splits, config) -> list:
        from dlapps.shared import training

        # the training pipeline is a Python generator (composed utterances): see keep_freed_memory
        callbacks = [training.keep_freed_memory()]
        if config.lr_schedule == "cosine":
            # to 2% by --epochs or --max-minutes, whichever ends first: a time-limited run still ends
            # its last epochs at a low rate, which the early stop of a constant rate never reaches
            callbacks.append(training.cosine_decay(config.learning_rate, config.epochs, config.max_minutes, floor=0.02))
        return callbacks

    def datasets(self, model, splits, config):
        """(waveform, character ids) batches padded with zeros: similar lengths are batched
        together in training; with --compose-max > 1, training utterances are composed anew each
        epoch from the clips."""
        import tensorflow as tf

        alphabet = model.alphabet
        lengths = np.array([len(c) for c in splits.train.clips])

        def training_utterances():
            # A new generator per epoch: a fresh order, and fresh compositions with --compose-max.
            rng = np.random.default_rng([config.seed, 2, next(epochs)])
            if config.compose_max > 1:
                return asr_data.compose(splits.train, len(splits.train), config.compose_max, rng, config.sample_rate, vary_edges=True)
            return splits.train.subset(rng.permutation(len(splits.train)))

        epochs = iter(range(1 << 30))
        train = self._dataset(training_utterances, len(splits.train), alphabet)
        # Similar lengths share a batch (less padding); a composed utterance averages
        # (compose_max + 1) / 2 clips.
        typical = np.quantile(lengths, np.linspace(0.1, 0.9, 9)) * (config.compose_max + 1) / 2
        boundaries = sorted({int(b) for b in typical if b > 0})
        def samples(wave, ids):
            return tf.shape(wave)[0]

        train = data_lib.bucket_by_length(train, samples, config.batch_size, boundaries=boundaries)
        val = None
        if len(splits.val):
            val = self._dataset(lambda: splits.val, len(splits.val), alphabet).padded_batch(config.batch_size)
        return train.prefetch(tf.data.AUTOTUNE), val.prefetch(tf.data.AUTOTUNE) if val is not None else None

    @staticmethod
    def _dataset(utterances, count: int, alphabet: str):
        """(waveform, character ids) elements from a function returning a SpeechSet (called once
        per pass). A generator, not tensor slices: clips stay out of the graph (no 2 GB limit)."""
        import tensorflow as tf

        def generate():
            speech = utterances()
            for clip, text in zip(speech.clips, speech.transcripts):
                yield clip, np.asarray(asr_data.encode(text, alphabet), np.int32)

        signature = (tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.int32))
        dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
        return dataset.apply(tf.data.experimental.assert_cardinality(count))

    def describe_training(self, model, splits, config) -> str:
        info = splits.info
        composed = f", composed of 1-{config.compose_max} clips each epoch" if config.compose_max > 1 else ""
        return (f"Training asr on {info['train_utterances']} clips ({info['train_hours'] * 60:.1f} min{composed}), "
                f"validating on {info['val_utterances']}; alphabet {model.alphabet!r}; {model.count_params():,} parameters")

    def after_training(self, model, splits, config, run) -> dict:
        if not len(splits.val):
            return {}
        options = AsrEvaluateOptions(batch_size=config.batch_size, worst=0)
        scores = self.evaluate(model, splits.val, options)
        return {"val_cer": scores["cer"], "val_wer": scores["wer"], "val_sentence_accuracy": scores["sentence_accuracy"]}

    # --- predict -------------------------------------------------------------------------------
    def read_inputs(self, items: list[str], options) -> list:
        paths = []
        for item in items:
            path = Path(item).expanduser()
            if path.is_dir():
                found = audio.list_audio(path, recursive=True)
                if not found:
                    raise UserError(f"{path}: no audio files ({', '.join(audio.AUDIO_SUFFIXES)}) in this folder")
                paths += [str(p) for p in found]
            elif path.is_file():
                paths.append(str(path))
            else:
                raise UserError(f"{path}: no such file or folder")
        if not paths:
            raise UserError("no audio files given")
        return paths

    def _read_clips(self, paths, rate: int, max_seconds: float) -> list[np.ndarray]:
        clips = []
        for path in paths:
            samples, _ = audio.read_audio(path, rate=rate)
            if len(samples) > max_seconds * rate:
                raise UserError(f"{path}: {len(samples) / rate:.1f} s long, over --max-seconds {max_seconds:g}")
            clips.append(samples)
        return clips

    def recognise(self, model, clips: list, beam: int, batch_size: int) -> list[dict]:
        """Runs the model's own recognise graph over clips, batched by similar length; returns per
        clip its transcript, character ids and log-probabilities per step."""
        import tensorflow as tf

        # One traced graph per model and beam width (evaluate and after_training call this often).
        functions = self._traced.setdefault(model, {})
        if beam not in functions:
            this = weakref.ref(model)  # a cached function must not keep its model alive

            @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
            def recognise_batch(waveform):
                return this().recognise(waveform, beam)

            functions[beam] = recognise_batch
        function = functions[beam]
        order = np.argsort([len(c) for c in clips], kind="stable")
        results = [None] * len(clips)
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            batch = np.zeros((len(chosen), max(1, max(len(clips[i]) for i in chosen))), np.float32)
            for row, i in enumerate(chosen):
                batch[row, : len(clips[i])] = clips[i]
            outputs = function(tf.constant(batch))
            for row, i in enumerate(chosen):
                steps = int(outputs["lengths"][row])
                results[i] = {
                    "transcript": outputs["transcript"][row].numpy().decode("utf-8"),
                    "ids": [int(v) for v in outputs["ids"][row].numpy() if v > 0],
                    "log_probs": outputs["log_probs"][row, :steps].numpy(),
                }
        return results

    def predict(self, model, inputs, options) -> list[dict]:
        from .model import ctc_alignment

        clips = self._read_clips(inputs, model.sample_rate, options.max_seconds)
        rows = []
        for path, clip, result in zip(inputs, clips, self.recognise(model, clips, options.beam, options.batch_size)):
            row = {"path": path, "transcript": result["transcript"], "seconds": round(len(clip) / model.sample_rate, 3)}
            if options.timestamps != "none":
                spans = ctc_alignment(result["log_probs"], result["ids"]) or []
                row[options.timestamps] = timestamps(result["transcript"], spans, model.seconds_per_step, options.timestamps)
            rows.append(row)
        return rows

    def format_prediction(self, row: dict) -> str:
        return f"{row['path']}\t{row['transcript']}"

    # --- evaluate ------------------------------------------------------------------------------
    def evaluation_data(self, config, options):
        if not options.data:
            return super().evaluation_data(config, options)
        config = dataclasses.replace(config, data=options.data, encoding=options.encoding, val_fraction=0.0)
        speech = asr_data.read_any(config, part="test")
        if not len(speech):
            raise UserError(f"{options.data}: no usable utterances")
        compose = options.compose or config.compose_max
        if compose > 1:
            speech = asr_data.compose(speech, len(speech), compose, np.random.default_rng([config.seed, 3]), config.sample_rate)
        return speech

    def evaluate(self, model, data, options) -> dict:
        import jiwer

        results = self.recognise(model, data.clips, options.beam, options.batch_size)
        hypotheses = [r["transcript"] for r in results]
        references = data.transcripts
        unknown = sorted(set("".join(references)) - set(model.alphabet))
        if unknown:
            print(f"Warning: references contain characters the model never writes: {''.join(unknown)!r}", file=sys.stderr)
        per_utterance = [jiwer.cer(ref, hyp) for ref, hyp in zip(references, hypotheses)]
        worst = np.argsort(per_utterance, kind="stable")[::-1][: options.worst]
        return {
            "cer": float(jiwer.cer(references, hypotheses)),
            "wer": float(jiwer.wer(references, hypotheses)),
            "sentence_accuracy": float(np.mean([r == h for r, h in zip(references, hypotheses)])),
            "utterances": len(references),
            "audio_seconds": round(float(sum(len(c) for c in data.clips) / model.sample_rate), 2),
            "beam": options.beam,
            "worst": [
                {"name": data.names[i], "reference": references[i], "hypothesis": hypotheses[i], "cer": round(per_utterance[i], 4)}
                for i in worst if per_utterance[i] > 0
            ],
        }

    def headline(self, metrics: dict) -> dict:
        table = {k: metrics[k] for k in ("cer", "wer", "sentence_accuracy", "utterances", "audio_seconds", "beam")}
        for rank, row in enumerate(metrics["worst"], start=1):
            table[f"worst {rank}"] = f"{row['cer']:.3f}  {row['reference']!r} -> {row['hypothesis']!r}  ({row['name']})"
        return table

    # --- export --------------------------------------------------------------------------------
    def endpoints(self, model, options) -> dict:
        import tensorflow as tf

        from .model import decode_wav_batch

        beam = options.beam

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveform")])
        def serving_default(waveform):
            """float32 waveforms [batch, samples] at the model rate, zero-padded -> transcripts."""
            return {"transcript": model.recognise(waveform, beam)["transcript"]}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="wav")])
        def transcribe_wav(wav):
            """Encoded WAV files [batch] (8-bit unsigned, 16/24/32-bit PCM or 32/64-bit float; any
            rate and channel count) -> transcripts."""
            return {"transcript": model.recognise(decode_wav_batch(wav, model.sample_rate), beam)["transcript"]}

        return {"serving_default": serving_default, "transcribe_wav": transcribe_wav}

    def export_info(self, model) -> dict:
        # What a serving client must know: the rate serving_default's waveforms must be at.
        return {"sample_rate": model.sample_rate, "alphabet": model.alphabet}


def timestamps(transcript: str, spans: list, seconds_per_step: float, unit: str) -> list[dict]:
    """Start and end seconds of each character (or word: its first to its last character) from
    the aligned steps of each character."""
    if len(spans) != len(transcript):
        return []
    times = [(round(first * seconds_per_step, 3), round((last + 1) * seconds_per_step, 3)) for first, last in spans]
    if unit == "characters":
        return [{"char": ch, "start": s, "end": e} for ch, (s, e) in zip(transcript, times)]
    words, start = [], None
    for position, ch in enumerate(transcript + " "):
        if ch != " " and start is None:
            start = position
        elif ch == " " and start is not None:
            words.append({"word": transcript[start:position], "start": times[start][0], "end": times[position - 1][1]})
            start = None
    return words


APP = AsrApp()
