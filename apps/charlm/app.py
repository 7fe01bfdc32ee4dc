"""The charlm app's hooks into the shared contract (shared/app.py), and the Python loops that
score a text and sample a continuation with the model's graph functions (model.py)."""

from __future__ import annotations

import math
import secrets
import sys
import weakref
from typing import Callable, Iterator

import numpy as np

from dlapps.shared import data as data_lib
from dlapps.shared.app import App, Splits
from dlapps.shared.errors import UserError

from . import data as charlm_data
from .config import MAX_LENGTH, CharLMConfig, CharLMEvaluateOptions, CharLMExportOptions, CharLMPredictOptions


class CharLMApp(App):
    name = "charlm"
    summary = "Character-level language model (LSTM, GRU or Transformer): generate text, score it by perplexity."
    config = CharLMConfig
    predict_options = CharLMPredictOptions
    evaluate_options = CharLMEvaluateOptions
    export_options = CharLMExportOptions
    input_help = "prompts to continue ('' starts at a line break), or texts to --score; '-' reads one per line from stdin"
    predict_help = ('Continue prompts: `dlapps charlm predict "ROMEO:" --length 500 --seed 1`; '
                    'or score texts: `dlapps charlm predict --score "To be, or not to be"`.')
    evaluate_help = "Perplexity per character and bits per character on --data (default: the run's validation text)."
    monitor, mode = "val_loss", "min"
    inputs_optional = True  # no prompt: sample from the start of a line
    streams = True  # characters print as they are sampled

    # --- train ---
    def check_config(self, config) -> None:
        if config.arch == "transformer" and config.embedding_dim % config.num_heads:
            raise UserError(f"--embedding-dim ({config.embedding_dim}) must be a multiple of --num-heads ({config.num_heads}) for the transformer")

    def load_splits(self, config) -> Splits:
        splits = charlm_data.load_splits(config)
        return Splits(splits.train, splits.val, {"train_characters": len(splits.train), "val_characters": len(splits.val)})

    def build_model(self, config, splits):
        from collections import Counter

        from dlapps.shared.text import rank_vocabulary

        from .model import CharLanguageModel

        return CharLanguageModel(
            vocabulary=rank_vocabulary(Counter(splits.train), min_count=config.min_count),
            arch=config.arch,
            sequence_length=config.sequence_length,
            embedding_dim=config.embedding_dim,
            units=config.units,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            dropout=config.dropout,
        )

    def compile_model(self, model, config) -> None:
        import keras

        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clip_norm),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )

    def datasets(self, model, splits, config):
        train = window_batches(splits.train, config, model.preprocessor, training_set=True)
        val = window_batches(splits.val, config, model.preprocessor, training_set=False) if len(splits.val) > 1 else None
        return train, val

    def callbacks(self, model, splits, config) -> list:
        import keras

        from dlapps.shared import training

        if config.schedule == "cosine":
            return [training.cosine_decay(config.learning_rate, config.epochs, config.max_minutes, config.warmup)]
        if len(splits.val) > 1 and config.lr_decay < 1:
            return [keras.callbacks.ReduceLROnPlateau("val_loss", factor=config.lr_decay, patience=0, min_lr=1e-5, verbose=1)]
        return []

    def describe_training(self, model, splits, config) -> str:
        return (f"Training on {len(splits.train):,} characters, validating on {len(splits.val):,}; "
                f"vocabulary {model.vocabulary_size} (with OOV); {config.arch}, {model.count_params():,} parameters")

    def after_training(self, model, splits, config, run) -> dict:
        """The validation text scored by `score_text`: the figure `evaluate` reports for this run."""
        extra = {"vocabulary_size": model.vocabulary_size}
        if len(splits.val) > 1:
            scored = score_text(model, splits.val)
            extra.update(val_perplexity=scored["perplexity"], val_bits_per_character=scored["bits_per_character"])
        return extra

    # --- predict ---
    def predict(self, model, inputs, options, write=None) -> Iterator[dict]:
        """A continuation per prompt (the same seed for every prompt: each row equals the
        SavedModel's generate_seeded), or with --score the figures of each text. Rows come out as
        each one is done; with `write` (table output) continuations print as they are sampled."""
        inputs = inputs or [""]
        if options.score:
            for text in inputs:
                check_scorable(text)
            rows = ({"text": text, **score_text(model, text, options.batch_size)} for text in inputs)
        else:
            seed = secrets.randbelow(2**31) if options.seed is None else options.seed
            rows = (self._continue(model, prompt, options, seed, write) for prompt in inputs)
        if write is None:
            return rows
        for row in rows:
            if "perplexity" in row:
                write(self.format_prediction(row))
            write("\n")
        return []

    def _continue(self, model, prompt: str, options, seed: int, write=None) -> dict:
        known = set(model.vocabulary)
        oov = sorted({c for c in prompt if c not in known})
        if oov:
            print("Note: prompt characters not in the model's vocabulary are read as the out-of-vocabulary symbol: "
                  + ", ".join(repr(c) for c in oov), file=sys.stderr, flush=True)
        if write is not None:
            write(prompt)
        text = generate_text(model, prompt, options.length, options.temperature, options.top_k, seed, on_text=write)
        return {"prompt": prompt, "text": text, "seed": seed, "temperature": options.temperature,
                "top_k": options.top_k, "oov_characters": oov}

    def format_prediction(self, row: dict) -> str:
        if "perplexity" in row:
            return f"{row['perplexity']:.4f}\t{row['bits_per_character']:.4f}\t{row['text']}"
        return row["prompt"] + row["text"]

    # --- evaluate ---
    def evaluation_data(self, config, options) -> str:
        if options.data.strip() == "demo":  # the docstrings after the demo's training slice: unseen text
            return charlm_data.demo(2 * config.demo_chars)[config.demo_chars :]
        if options.data:
            return charlm_data.read_data(options.data, options.encoding, config.demo_chars, config.tfds_dir, tfds_split="test")
        return super().evaluation_data(config, options)

    def evaluate(self, model, data, options) -> dict:
        return {**score_text(model, data, options.batch_size), "vocabulary_size": model.vocabulary_size}

    # --- export ---
    def endpoints(self, model, options) -> dict:
        """generate (= serving_default), generate_seeded and score; every input has the batch
        dimension (TF Serving's row format), and length/temperature/top_k/seed of size 1 apply
        to every prompt."""
        import tensorflow as tf

        def rows(name, dtype):
            return tf.TensorSpec([None], dtype, name=name)

        def per_prompt(value, prompt):
            return tf.broadcast_to(value, tf.shape(prompt))

        @tf.function(input_signature=[rows("prompt", tf.string), rows("length", tf.int32), rows("temperature", tf.float32),
                                      rows("top_k", tf.int32), rows("seed", tf.int64)])
        def generate_seeded(prompt, length, temperature, top_k, seed):
            length, temperature, top_k, seed = (per_prompt(v, prompt) for v in (length, temperature, top_k, seed))
            checks = [
                tf.debugging.assert_positive(temperature, message="temperature must be above 0"),
                tf.debugging.assert_non_negative(length, message="length must be 0 or more"),
                tf.debugging.assert_less_equal(length, MAX_LENGTH, message=f"length must be at most {MAX_LENGTH}"),
            ]
            with tf.control_dependencies(checks):
                text = tf.map_fn(  # one sampling loop per prompt: prompts differ in length
                    lambda row: model.generate_graph(*row), (prompt, length, temperature, top_k, seed), fn_output_signature=tf.string
                )
            return {"text": text}

        @tf.function(input_signature=[rows("prompt", tf.string), rows("length", tf.int32), rows("temperature", tf.float32)])
        def generate(prompt, length, temperature):
            count = tf.shape(prompt)
            seed = tf.random.uniform(count, maxval=2**31 - 1, dtype=tf.int64)
            return generate_seeded(prompt, length, temperature, tf.fill(count, options.top_k), seed)

        @tf.function(input_signature=[rows("text", tf.string)])
        def score(text):
            log_probability, predicted = tf.map_fn(model.text_log_likelihood, text, fn_output_signature=(tf.float32, tf.float32))
            nats = -log_probability / tf.maximum(predicted, 1.0)
            return {
                "log_probability": log_probability,
                "perplexity": tf.exp(nats),
                "bits_per_character": nats / math.log(2),
                "predicted_characters": tf.cast(predicted, tf.int32),
            }

        return {"serving_default": generate, "generate": generate, "generate_seeded": generate_seeded, "score": score}


# --- training windows ----------------------------------------------------------------------------


def window_batches(text: str, config, preprocessor, training_set: bool):
    """(inputs, targets, weights) batches of the windows of `text`; characters become ids in tf.data.

    Training windows start at a random offset every epoch, so a character is predicted from a
    different context each time (fixed boundaries would show the model the same windows again).
    """
    import tensorflow as tf

    length = config.sequence_length
    if training_set:
        ids = preprocessor(tf.constant(text))
        count = (len(text) - 1) // length - 1  # whole windows at any offset in [0, length)
        if count >= 1:
            def cut(start):
                window = ids[start : start + length + 1]
                return window[:-1], window[1:], tf.ones([length], "float32")

            offsets = tf.data.Dataset.random(seed=config.seed, rerandomize_each_iteration=True).take(1)
            starts = offsets.flat_map(lambda r: tf.data.Dataset.range(count).map(lambda i: i * length + r % length))
            dataset = starts.shuffle(count, seed=config.seed, reshuffle_each_iteration=True)
            dataset = dataset.map(cut, num_parallel_calls=tf.data.AUTOTUNE).batch(config.batch_size)
            return dataset.apply(tf.data.experimental.assert_cardinality(-(-count // config.batch_size))).prefetch(tf.data.AUTOTUNE)
    # Full windows only where there are any: Keras averages a padded window's zero-weight
    # positions into val_loss; score_text (evaluate) covers the whole text exactly.
    pieces = charlm_data.windows(text, length, full_only=True) or charlm_data.windows(text, length, full_only=training_set)

    def to_ids(strings):
        ids = preprocessor(strings)  # ragged: the last validation window may be shorter
        dense = ids.to_tensor(default_value=0, shape=[None, length + 1])
        weights = tf.sequence_mask(ids.row_lengths() - 1, length, dtype="float32")
        return dense[:, :-1], dense[:, 1:], weights

    return data_lib.make_dataset(
        np.asarray(pieces, dtype=object), batch_size=config.batch_size, shuffle=training_set, seed=config.seed, batch_map_fn=to_ids
    )


# --- scoring -------------------------------------------------------------------------------------

_compiled_scorers = weakref.WeakKeyDictionary()  # model -> its traced window_log_likelihood


def check_scorable(text: str) -> None:
    if len(text) < 2:
        raise UserError(f"a text of {len(text)} character(s) has nothing to score: a language model predicts each character after the first")


def score_text(model, text: str, batch_size: int = 256) -> dict:
    """Log-probability (nats), perplexity and bits per character of `text` under `model`, by the
    windows of model.py, `batch_size` windows per call (the exported `score` computes the same)."""
    import tensorflow as tf

    check_scorable(text)
    inputs, targets, weights = model.windows(model.preprocessor(tf.constant(text)))
    if model not in _compiled_scorers:
        this = weakref.ref(model)  # a cached function must not keep its model alive
        _compiled_scorers[model] = tf.function(lambda *windows: this().window_log_likelihood(*windows), reduce_retracing=True)
    log_likelihood = _compiled_scorers[model]
    total = sum(
        float(log_likelihood(inputs[i : i + batch_size], targets[i : i + batch_size], weights[i : i + batch_size]))
        for i in range(0, int(inputs.shape[0]), batch_size)
    )
    predicted = len(text) - 1
    nats = -total / predicted
    known = set(model.vocabulary)
    return {
        "characters": len(text),
        "predicted_characters": predicted,
        "log_probability": total,
        "perplexity": math.exp(nats),
        "nats_per_character": nats,
        "bits_per_character": nats / math.log(2),
        "oov_characters": sum(1 for c in text if c not in known),
    }


# --- generation ----------------------------------------------------------------------------------

_compiled_samplers = weakref.WeakKeyDictionary()  # model -> its traced (feed, sample) steps


def _sampling_steps(model):
    """One character step of the model as tf.functions, traced once per model (temperature and
    top-k are tensors, so other values reuse the trace)."""
    import tensorflow as tf

    if model not in _compiled_samplers:
        this = weakref.ref(model)  # a cached function must not keep its model alive

        @tf.function(reduce_retracing=True)
        def feed(ids, state):
            return this().generation_step(ids, state)[1]

        @tf.function(reduce_retracing=True)
        def sample(ids, state, temperature, top_k, step_seed):
            logits, state = this().generation_step(ids, state)
            return this().sample_next(logits, temperature, top_k, step_seed), state

        _compiled_samplers[model] = (feed, sample)
    return _compiled_samplers[model]


def generate_text(model, prompt: str, length: int, temperature: float = 0.8, top_k: int = 40, seed: int = 0,
                  on_text: Callable[[str], None] | None = None) -> str:
    """Samples `length` characters after `prompt`, one at a time, calling `on_text` with each as
    it is produced. The same `seed` gives the same text (stateless sampling, seed (S, step)), and
    the same text as the SavedModel's generate_seeded (model.generate_graph)."""
    import tensorflow as tf

    feed, sample = _sampling_steps(model)
    temperature, top_k = tf.constant(temperature, "float32"), tf.constant(top_k, "int32")
    prompt_ids = model.prompt_ids(tf.constant(prompt))
    state = model.initial_state(1)
    for i in range(int(prompt_ids.shape[0]) - 1):  # as generate_graph: read all but the last, sample from there
        state = feed(prompt_ids[i : i + 1], state)
    last, pieces = prompt_ids[-1:], []
    for step in range(length):
        last, state = sample(last, state, temperature, top_k, tf.constant([seed, step], "int64"))
        pieces.append(model.vocabulary[int(last[0]) - 1])
        if on_text:
            on_text(pieces[-1])
    return "".join(pieces)


APP = CharLMApp()
