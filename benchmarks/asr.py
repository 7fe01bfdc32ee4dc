"""ASR benchmark on Free Spoken Digit recordings: our CTC model against a classical peer on the
same held-out recordings, in the same run.

    python benchmarks/asr.py --train ../shared/data/fsdd/recordings [--test DIR] [--minutes 20] [--out DIR] [--set KEY=VALUE ...]

Held-out set: --test when given; else FSDD's official split (recording indexes 0-4) when the names
include them; else a seeded 10% of the recordings, stratified by digit and speaker. Ours trains on
the rest with --compose-max 5 (utterances of 1-5 digits composed anew each epoch; its own seeded
10% of the training clips, composed once, picks the best epoch). Both are scored on the same
composed digit strings of 1-5 words built only from held-out recordings (CER and WER with
jiwer), and on the single held-out recordings (digit accuracy).

The peer is the classical pipeline for isolated words: silence-based segmentation (frame energy),
then an RBF SVM on MFCC statistics of each segment, trained on the same training clips. Ends with
one JSON line of figures; --out keeps our run folder for `dlapps asr evaluate/predict`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from dlapps.apps.asr import data as asr_data  # noqa: E402
from dlapps.apps.asr.config import AsrConfig  # noqa: E402
from dlapps.shared import data as data_lib  # noqa: E402
from dlapps.shared.config import resolve  # noqa: E402

# What FSDD needs, unless --set says otherwise: its 8 kHz rate (upsampling would only add empty
# bands), 40 mel bins (a 256-point FFT has 129 bins), strings of up to 5 digits.
BENCHMARK_DEFAULTS = {"sample_rate": 8000, "mel_bins": 40, "compose_max": 5}


# --- the peer: energy segmentation + MFCC statistics + SVM ---------------------------------------


def mfcc(samples: np.ndarray, rate: int) -> np.ndarray:
    """13 MFCCs per 25 ms frame (10 ms hop), with TensorFlow's signal ops."""
    import tensorflow as tf

    window, hop, fft = asr_data.frame_sizes(rate, 25, 10)
    spectrum = tf.abs(tf.signal.stft(samples[None], window, hop, fft, pad_end=True)) ** 2
    mel = tf.tensordot(spectrum, tf.signal.linear_to_mel_weight_matrix(40, fft // 2 + 1, rate, 20.0, rate / 2), 1)
    return tf.signal.mfccs_from_log_mel_spectrograms(tf.math.log(mel + 1e-6))[0, :, :13].numpy()


def word_features(samples: np.ndarray, rate: int) -> np.ndarray:
    """Mean and spread of the MFCCs over the word, and their means over four equal quarters (its
    shape in time): 78 numbers per segment of any length."""
    coefficients = mfcc(samples, rate)
    quarters = np.array_split(coefficients, 4) if len(coefficients) >= 4 else [coefficients] * 4
    return np.concatenate([coefficients.mean(0), coefficients.std(0)] + [q.mean(0) for q in quarters])


def segments(samples: np.ndarray, rate: int, min_gap_s=0.08, min_word_s=0.05) -> list[np.ndarray]:
    """Stretches of speech between pauses of at least `min_gap_s`: frames (10 ms) louder than both
    the noise floor + 12 dB and the loudest frame - 40 dB."""
    hop = rate // 100
    frames = len(samples) // hop
    if frames == 0:
        return []
    energy = 10 * np.log10(np.mean(samples[: frames * hop].reshape(frames, hop) ** 2, axis=1) + 1e-12)
    loud = energy > max(np.percentile(energy, 10) + 12, energy.max() - 40)
    gap = int(min_gap_s * 100)
    runs, start, quiet = [], None, 0
    for i, is_loud in enumerate(np.append(loud, [False] * (gap + 1))):
        if is_loud:
            start = i if start is None else start
            quiet = 0
        elif start is not None:
            quiet += 1
            if quiet > gap:
                runs.append((start, i - quiet + 1))
                start, quiet = None, 0
    pad = 2  # frames of context on each side
    return [samples[max(0, (a - pad) * hop): (b + pad) * hop] for a, b in runs if (b - a) >= min_word_s * 100]


class SegmentAndClassify:
    """The peer: segments an utterance at its pauses and names each segment with an SVM."""

    def fit(self, clips, words, rate, seed):
        from sklearn.model_selection import GridSearchCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        self.rate = rate
        features = np.stack([word_features(c, rate) for c in clips])
        search = GridSearchCV(make_pipeline(StandardScaler(), SVC(random_state=seed)), {"svc__C": [1, 4, 16]}, cv=3, n_jobs=1)
        self.classifier = search.fit(features, words).best_estimator_
        return self

    def words(self, clips) -> list[str]:
        return list(self.classifier.predict(np.stack([word_features(c, self.rate) for c in clips])))

    def transcribe(self, utterance) -> str:
        found = segments(utterance, self.rate)
        return " ".join(self.words(found)) if found else ""


# --- the benchmark -------------------------------------------------------------------------------


def split(speech: asr_data.SpeechSet, test_dir: str | None, config, seed: int):
    if test_dir:
        return speech, asr_data.read_path(Path(test_dir), config), f"--test {test_dir}"
    official = asr_data.fsdd_official_split(speech)
    if official:
        return speech.subset(official[0]), speech.subset(official[1]), "FSDD official split (recordings 0-4 held out)"
    groups = [f"{Path(n).name.split('_')[0]}_{Path(n).name.split('_')[1]}" if asr_data.fsdd_parts(Path(n)) else "" for n in speech.names]
    train_index, test_index = data_lib.split_indices(len(speech), 0.1, seed, stratify=groups)
    return speech.subset(train_index), speech.subset(test_index), "seeded 10% of the recordings, stratified by digit and speaker"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="a folder of FSDD recordings (or any clips the asr app reads)")
    parser.add_argument("--test", help="held-out recordings; default: FSDD's official split, else a seeded 10%%")
    parser.add_argument("--minutes", type=float, default=20.0, help="training time budget for our model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--beam", type=int, default=8, help="beam width of the beam-search figures")
    parser.add_argument("--out", default="", help="run folder to keep (default: a temporary folder)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra asr config values")
    args = parser.parse_args()

    from dlapps.apps.asr.app import APP, AsrEvaluateOptions
    from dlapps.shared import training

    overrides = {**BENCHMARK_DEFAULTS, "seed": args.seed, **dict(kv.split("=", 1) for kv in args.set)}
    base = resolve(AsrConfig, None, overrides)
    speech = asr_data.read_path(Path(args.train), base)
    train, test, held_out = split(speech, args.test, base, args.seed)
    composed_test = asr_data.compose(test, len(test), 5, np.random.default_rng([args.seed, 99]), base.sample_rate)
    print(f"train {len(train)} clips, test {len(test)} clips ({held_out}); {len(composed_test)} composed test strings "
          f"of 1-5 digits ({composed_test.seconds(base.sample_rate) / 60:.1f} min)")

    started = time.time()
    peer = SegmentAndClassify().fit(train.clips, train.transcripts, base.sample_rate, args.seed)
    peer_seconds = time.time() - started
    import jiwer

    peer_strings = [peer.transcribe(u) for u in composed_test.clips]
    peer_cer = float(jiwer.cer(composed_test.transcripts, peer_strings))
    peer_wer = float(jiwer.wer(composed_test.transcripts, peer_strings))
    peer_accuracy = float(np.mean(np.array(peer.words(test.clips)) == np.array(test.transcripts)))
    print(f"peer segmentation + MFCC-SVM: CER {peer_cer:.4f}, WER {peer_wer:.4f}, digit accuracy {peer_accuracy:.4f} ({peer_seconds:.1f} s)")

    with tempfile.TemporaryDirectory() as scratch:
        manifest = Path(scratch) / "train.csv"
        with open(manifest, "w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["path", "transcript"])
            writer.writerows((str(Path(n).resolve()), t) for n, t in zip(train.names, train.transcripts))
        out = args.out or str(Path(scratch) / "run")
        config = dataclasses.replace(base, data=str(manifest), out=out, max_minutes=args.minutes, epochs=1000)
        started = time.time()
        metrics = training.train(APP, config)
        train_seconds = time.time() - started

        model = training.load_model(out, "asr")
        greedy = AsrEvaluateOptions(batch_size=32, beam=1, worst=5)
        started = time.time()
        ours = APP.evaluate(model, composed_test, greedy)
        decode_seconds = time.time() - started
        beam = APP.evaluate(model, composed_test, dataclasses.replace(greedy, beam=args.beam))
        single = APP.evaluate(model, test, greedy)
    real_time_factor = decode_seconds / max(ours["audio_seconds"], 1e-9)

    print()
    print(f"{'model':<46} {'CER':>7} {'WER':>7} {'digit acc':>9}")
    print(f"{'ours: CTC ' + config.rnn + ' ' + ','.join(map(str, config.rnn_units)) + ', greedy':<46} {ours['cer']:>7.4f} {ours['wer']:>7.4f} {single['sentence_accuracy']:>9.4f}")
    print(f"{'ours, beam ' + str(args.beam):<46} {beam['cer']:>7.4f} {beam['wer']:>7.4f}")
    print(f"{'peer: segmentation + MFCC statistics + SVM':<46} {peer_cer:>7.4f} {peer_wer:>7.4f} {peer_accuracy:>9.4f}")
    print(f"load average at the end (1, 5, 15 min): {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"trained {train_seconds:.0f} s, best epoch {metrics['best_epoch']} of {metrics['epochs_run']}; "
          f"predict real-time factor {real_time_factor:.4f} (greedy, batch 32, {ours['audio_seconds']:.0f} s of audio)")
    for row in ours["worst"]:
        print(f"  worst: {row['reference']!r} -> {row['hypothesis']!r} ({row['name']})")
    print(json.dumps({
        "app": "asr",
        "data": args.train,
        "test": held_out,
        "metric": "CER on composed 1-5 digit strings (greedy)",
        "value": round(ours["cer"], 4),
        "peer": "energy segmentation + MFCC-statistics RBF SVM (C by 3-fold CV)",
        "peer_value": round(peer_cer, 4),
        "train_seconds": round(train_seconds, 1),
        "wer": round(ours["wer"], 4),
        "peer_wer": round(peer_wer, 4),
        f"cer_beam{args.beam}": round(beam["cer"], 4),
        f"wer_beam{args.beam}": round(beam["wer"], 4),
        "digit_accuracy": round(single["sentence_accuracy"], 4),
        "peer_digit_accuracy": round(peer_accuracy, 4),
        "real_time_factor": round(real_time_factor, 5),
        "load_average": [round(v, 2) for v in os.getloadavg()],  # the machine is shared: how much of it we had
        "peer_seconds": round(peer_seconds, 1),
        "best_epoch": metrics["best_epoch"],
        "epochs_run": metrics["epochs_run"],
        "test_strings": len(composed_test),
        "test_clips": len(test),
        "config": {k: getattr(config, k) for k in ("sample_rate", "mel_bins", "hop_ms", "conv_filters", "subsample", "rnn", "rnn_units", "batch_size", "learning_rate", "lr_schedule", "compose_max", "patience")},
    }))


if __name__ == "__main__":
    main()
