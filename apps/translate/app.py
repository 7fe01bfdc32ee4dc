"""The translate app's hooks (see shared/app.py): sentence pairs in, an encoder-decoder trained
with teacher forcing, validation BLEU after every epoch, greedy and beam decoding, sacreBLEU and
chrF, and a SavedModel that maps source strings to target strings."""

from __future__ import annotations

import sys
import time
import weakref

from dlapps.shared.app import App, Splits
from dlapps.shared.errors import UserError

from .config import TranslateConfig, TranslateEvaluateOptions, TranslateExportOptions, TranslatePredictOptions

TOKENIZE_CHUNK = 2000  # sentences tokenised per call: bounds the candidate grid of the tokeniser
_DECODERS = weakref.WeakKeyDictionary()  # model -> its traced tokenisers and decoders


def _decoders(model) -> dict:
    """The model's tokenising and decoding graphs, each traced once for every batch size and beam
    width. They reach the model through a weak reference, so the cache does not keep it alive."""
    import tensorflow as tf

    if model not in _DECODERS:
        texts = tf.TensorSpec([None], tf.string)
        this = weakref.ref(model)
        _DECODERS[model] = {
            "source_pieces": tf.function(lambda t: this().source_tokenizer.tokenize(t), input_signature=[texts]),
            "target_pieces": tf.function(lambda t: this().target_tokenizer.tokenize(t), input_signature=[texts]),
            "greedy": tf.function(lambda t: this().translate_greedy(t), input_signature=[texts]),
            "beam": tf.function(lambda t, width, penalty: this().translate_beam(t, width, penalty), input_signature=[
                texts, tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32)]),
        }
    return _DECODERS[model]


def translate(model, texts: list[str], beam: int = 1, length_penalty: float = 0.6, batch_size: int = 64) -> dict:
    """Translations of `texts` (and beam scores, source piece counts), in the order given.
    Batches hold sentences of similar length, so little of each batch is padding."""
    import numpy as np

    decoders = _decoders(model)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    translations, scores, pieces = [""] * len(texts), [None] * len(texts), [0] * len(texts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = np.asarray([texts[i] for i in chunk], dtype=object)
        if beam > 1:
            out = decoders["beam"](batch, np.int32(beam), np.float32(length_penalty))
        else:
            out = decoders["greedy"](batch)
        for row, index in enumerate(chunk):
            translations[index] = out["translation"][row].numpy().decode("utf-8")
            pieces[index] = int(out["source_pieces"][row])
            if "score" in out:
                scores[index] = float(out["score"][row])
    return {"translations": translations, "scores": scores, "source_pieces": pieces}


def bleu_and_chrf(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus sacreBLEU (13a tokenisation, as WMT reports it) and chrF, with their signatures."""
    import sacrebleu

    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    return {
        "bleu": round(bleu_score.score, 2),
        "chrf": round(chrf_score.score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def _validation_bleu_callback(pairs, beam: int, batch_size: int):
    import keras

    class ValidationBleu(keras.callbacks.Callback):
        """Adds val_bleu (corpus sacreBLEU of the validation translations) to the epoch logs,
        where checkpoint selection, early stopping and history.csv read it."""

        def on_epoch_end(self, epoch, logs=None):
            started = time.time()
            out = translate(self.model, pairs.sources, beam=beam, batch_size=batch_size)
            score = bleu_and_chrf(out["translations"], pairs.targets)["bleu"]
            if logs is not None:
                logs["val_bleu"] = score
            print(f"epoch {epoch + 1}: val_bleu {score:.2f} ({len(pairs)} pairs, {time.time() - started:.0f} s)", flush=True)

    return ValidationBleu()


class TranslateApp(App):
    name = "translate"
    summary = "Sequence-to-sequence translation: attention GRU or Transformer, beam search, sacreBLEU."
    config = TranslateConfig
    predict_options = TranslatePredictOptions
    evaluate_options = TranslateEvaluateOptions
    export_options = TranslateExportOptions
    inputs = "texts"
    input_help = "source sentences to translate; '-' reads one per line from stdin"
    predict_help = ('Translate: `dlapps translate predict "I have three cats."`, --file FILE or \'-\' for stdin; '
                    "--beam N for beam search.")
    evaluate_help = "Corpus sacreBLEU and chrF on --data (default: the run's validation split)."
    monitor = "val_bleu"
    mode = "max"

    # --- train ---------------------------------------------------------------------------------

    def check_config(self, config) -> None:
        if config.arch == "transformer" and config.embedding_dim % config.num_heads:
            raise UserError(
                f"--num-heads {config.num_heads} must divide --embedding-dim {config.embedding_dim} (the Transformer's width)"
            )

    def load_splits(self, config) -> Splits:
        from . import data

        train, val, skipped = data.load_splits(config)
        info = {"train_pairs": len(train), "val_pairs": len(val), "skipped_empty": skipped, "data": train.origin}
        return Splits(train=train, val=val, info=info)

    def build_model(self, config, splits: Splits):
        from .model import Translator, learn_vocabulary

        started = time.time()
        source_vocabulary = learn_vocabulary(splits.train.sources, config.source_vocabulary_size, config.vocabulary_min_count)
        target_vocabulary = learn_vocabulary(splits.train.targets, config.target_vocabulary_size, config.vocabulary_min_count)
        print(f"Vocabularies: {len(source_vocabulary)} source and {len(target_vocabulary)} target pieces "
              f"({time.time() - started:.0f} s)", flush=True)
        return Translator(
            source_vocabulary, target_vocabulary, arch=config.arch, embedding_dim=config.embedding_dim,
            num_layers=config.num_layers, num_heads=config.num_heads, intermediate_dim=config.intermediate_dim,
            units=config.units, attention=config.attention, dropout=config.dropout,
            label_smoothing=config.label_smoothing, max_source_length=config.max_source_length,
            max_target_length=config.max_target_length,
        )

    def compile_model(self, model, config) -> None:
        import keras

        from .model import WarmupInverseSqrt

        rate = WarmupInverseSqrt(config.learning_rate, config.warmup_steps) if config.warmup_steps else config.learning_rate
        # Clipping keeps the early GRU steps (long sources, untrained attention) from exploding.
        model.compile(optimizer=keras.optimizers.Adam(rate, beta_2=0.98, global_clipnorm=1.0))

    def datasets(self, model, splits: Splits, config) -> tuple:
        train = self._dataset(model, splits.train, config, shuffle=True, name="training")
        val = self._dataset(model, splits.val, config, shuffle=False, name="validation") if len(splits.val) else None
        return train, val

    def _dataset(self, model, pairs, config, shuffle: bool, name: str):
        """Tokenised once (not every epoch); pairs longer than the model's limits are skipped
        with a count; batches group pairs of similar length."""
        import numpy as np
        import tensorflow as tf

        from dlapps.shared import data as data_lib

        from .model import END, START

        sources, targets = tokenize_pairs(model, pairs)
        keep = [i for i in range(len(sources))
                if len(sources[i]) + 1 <= config.max_source_length and len(targets[i]) <= config.max_target_length]
        if len(keep) < len(sources):
            print(f"Skipped {len(sources) - len(keep)} {name} pairs longer than --max-source-length "
                  f"{config.max_source_length} or --max-target-length {config.max_target_length} pieces", flush=True)
        if not keep:
            raise UserError(f"{config.data}: no {name} pairs within --max-source-length and --max-target-length")
        # Padded arrays and lengths slice faster than ragged tensors; each element is cut to its length.
        encoder = data_lib.pad_targets([sources[i] + [END] for i in keep], pad_value=0, dtype=np.int32)
        decoder = data_lib.pad_targets([[START] + targets[i] for i in keep], pad_value=0, dtype=np.int32)
        labels = data_lib.pad_targets([targets[i] + [END] for i in keep], pad_value=0, dtype=np.int32)
        source_lengths = np.asarray([len(sources[i]) + 1 for i in keep], dtype=np.int32)
        target_lengths = np.asarray([len(targets[i]) + 1 for i in keep], dtype=np.int32)
        dataset = tf.data.Dataset.from_tensor_slices((encoder, source_lengths, decoder, labels, target_lengths))
        dataset = dataset.map(lambda s, n, d, l, m: (s[:n], d[:m], l[:m]))
        if shuffle:
            dataset = dataset.shuffle(len(keep), seed=config.seed, reshuffle_each_iteration=True)
            dataset = data_lib.bucket_by_length(
                dataset, lambda s, d, l: tf.maximum(tf.shape(s)[0], tf.shape(d)[0]), config.batch_size,
                max_length=max(config.max_source_length, config.max_target_length + 1))
        else:
            dataset = dataset.padded_batch(config.batch_size)
        return dataset.map(lambda s, d, l: ({"encoder_ids": s, "decoder_ids": d}, l)).prefetch(tf.data.AUTOTUNE)

    def callbacks(self, model, splits: Splits, config) -> list:
        if not len(splits.val):
            return []
        pairs = splits.val
        if config.val_bleu_sentences and len(pairs) > config.val_bleu_sentences:
            pairs = pairs.subset(range(config.val_bleu_sentences))
        return [_validation_bleu_callback(pairs, config.val_beam, max(config.batch_size, 64))]

    def describe_training(self, model, splits: Splits, config) -> str:
        shape = (f"Transformer {config.num_layers}x{config.embedding_dim}" if config.arch == "transformer"
                 else f"GRU {config.num_layers}x{config.units} + {config.attention} attention")
        return (f"Training translate ({shape}): {model.count_params():,} parameters, "
                f"{len(splits.train)} training and {len(splits.val)} validation pairs")

    def after_training(self, model, splits: Splits, config, run) -> dict:
        """Three validation translations to show what the model does."""
        if not len(splits.val):
            return {}
        sample = splits.val.subset(range(min(3, len(splits.val))))
        out = translate(model, sample.sources)
        return {"examples": [{"source": s, "reference": r, "translation": t}
                             for s, r, t in zip(sample.sources, sample.targets, out["translations"])]}

    # --- predict -------------------------------------------------------------------------------

    def predict(self, model, inputs: list, options) -> list[dict]:
        out = translate(model, list(inputs), options.beam, options.length_penalty, options.batch_size)
        cut = sum(1 for n in out["source_pieces"] if n + 1 > model.max_source_length)
        if cut:
            print(f"warning: {cut} source(s) longer than the model's {model.max_source_length - 1} pieces were cut",
                  file=sys.stderr)
        rows = []
        for source, translation, score in zip(inputs, out["translations"], out["scores"]):
            row = {"source": source, "translation": translation}
            if score is not None:
                row["score"] = round(score, 4)
            rows.append(row)
        return rows

    def format_prediction(self, row: dict) -> str:
        # An empty translation (an untrained model writes [END] first) still shows as a line.
        translation = row["translation"] or "(empty translation)"
        return translation if "score" not in row else f"{translation}\t({row['score']:.3f})"

    # --- evaluate ------------------------------------------------------------------------------

    def evaluation_data(self, config, options):
        import dataclasses

        from . import data

        if not options.data:
            return super().evaluation_data(config, options)
        return data.evaluation_pairs(options.data, dataclasses.replace(config, encoding=options.encoding))

    def evaluate(self, model, data, options) -> dict:
        if not len(data):
            raise UserError("no sentence pairs to evaluate")
        started = time.time()
        out = translate(model, data.sources, options.beam, options.length_penalty, options.batch_size)
        seconds = time.time() - started
        return {
            **bleu_and_chrf(out["translations"], data.targets),
            "decoding": "greedy" if options.beam == 1 else f"beam {options.beam}",
            "pairs": len(data),
            "seconds": round(seconds, 2),
            "sentences_per_second": round(len(data) / max(seconds, 1e-9), 2),
        }

    def headline(self, metrics: dict) -> dict:
        return {k: metrics[k] for k in ("bleu", "chrf", "decoding", "pairs", "sentences_per_second") if k in metrics}

    # --- export --------------------------------------------------------------------------------

    def endpoints(self, model, options) -> dict:
        import tensorflow as tf

        texts = tf.TensorSpec([None], tf.string, name="source")
        width, penalty = options.beam, options.length_penalty

        @tf.function(input_signature=[texts])
        def greedy(source):
            return {"translation": model.translate_greedy(source)["translation"]}

        @tf.function(input_signature=[texts])
        def beam(source):
            out = model.translate_beam(source, tf.constant(width), tf.constant(penalty, tf.float32))
            return {"translation": out["translation"], "score": out["score"]}

        return {"serving_default": greedy, "beam": beam}


def tokenize_pairs(model, pairs) -> tuple[list[list[int]], list[list[int]]]:
    """Piece ids of every source and target sentence, in chunks (one traced graph per side)."""
    import numpy as np

    source, target = _decoders(model)["source_pieces"], _decoders(model)["target_pieces"]
    sources, targets = [], []
    for start in range(0, len(pairs), TOKENIZE_CHUNK):
        sources += source(np.asarray(pairs.sources[start : start + TOKENIZE_CHUNK], dtype=object)).to_list()
        targets += target(np.asarray(pairs.targets[start : start + TOKENIZE_CHUNK], dtype=object)).to_list()
    return sources, targets


APP = TranslateApp()
