"""The charlm app's modes as plain functions: each takes paths and values, returns plain Python."""

from __future__ import annotations

import math
import secrets
import weakref
from pathlib import Path
from typing import Callable

import numpy as np

from ...shared import data as data_lib
from ...shared import export as export_lib
from ...shared import training
from ...shared.errors import UserError
from ...shared.strategy import describe, get_strategy
from . import data as charlm_data
from .config import CharLMConfig
from .model import CharLanguageModel, build_vocabulary  # also registers the classes for loading

APP = "charlm"
MAX_LENGTH = 100_000  # characters one predict/generate call may produce
SCORE_BATCH = 256  # scoring windows per model call


def check_config(config: CharLMConfig) -> None:
    """Model options that the typed config cannot check by type alone."""
    problems = [
        (config.sequence_length < 2, f"--sequence-length must be at least 2, got {config.sequence_length}"),
        (config.embedding_dim < 1, f"--embedding-dim must be at least 1, got {config.embedding_dim}"),
        (not config.units or min(config.units) < 1, f"--units must be positive layer sizes, got {config.units}"),
        (not 0 <= config.dropout < 1, f"--dropout must be in [0, 1), got {config.dropout}"),
        (config.min_count < 1, f"--min-count must be at least 1, got {config.min_count}"),
        (not 0 < config.lr_decay <= 1, f"--lr-decay must be in (0, 1], got {config.lr_decay}"),
        (config.clip_norm <= 0, f"--clip-norm must be positive, got {config.clip_norm}"),
        (config.arch == "transformer" and (config.num_layers < 1 or config.num_heads < 1 or config.embedding_dim % config.num_heads),
         f"--embedding-dim ({config.embedding_dim}) must be a multiple of --num-heads ({config.num_heads}), both and --num-layers positive"),
    ]
    for failed, message in problems:
        if failed:
            raise UserError(message)


def _window_batches(text: str, config, preprocessor, training_set: bool):
    """(inputs, targets, weights) batches of the windows of `text`; characters become ids in tf.data."""
    import tensorflow as tf

    length = config.sequence_length
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


def train(config: CharLMConfig) -> dict:
    """Trains on `config.data` and writes the run folder; returns validation perplexity and timings."""
    import keras

    check_config(config)
    keras.utils.set_random_seed(config.seed)
    splits = charlm_data.load_splits(config)
    run = training.Run.start(APP, config)
    strategy = get_strategy(config.strategy, config.mixed_precision)

    def build():
        return CharLanguageModel(
            build_vocabulary(splits.train, config.min_count),
            arch=config.arch,
            sequence_length=config.sequence_length,
            embedding_dim=config.embedding_dim,
            units=config.units,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            dropout=config.dropout,
        )

    model = training.model_for_run(run, config, build, strategy)
    with strategy.scope():
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clip_norm),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    print(f"Training on {len(splits.train):,} characters, validating on {len(splits.val):,}; "
          f"vocabulary {model.vocabulary_size} (with OOV); {config.arch}, {model.count_params():,} parameters; {describe(strategy)}")
    train_ds = _window_batches(splits.train, config, model.preprocessor, training_set=True)
    val_ds = _window_batches(splits.val, config, model.preprocessor, training_set=False) if len(splits.val) > 1 else None
    callbacks = []
    if val_ds is not None and config.lr_decay < 1:
        callbacks.append(keras.callbacks.ReduceLROnPlateau("val_loss", factor=config.lr_decay, patience=0, min_lr=1e-5, verbose=1))
    metrics = training.fit(model, train_ds, val_ds, run, config, callbacks=tuple(callbacks))
    if val_ds is not None:
        best = training.load_model(run.dir, APP)
        scored = score_text(best, splits.val)
        metrics.update(val_perplexity=scored["perplexity"], val_bits_per_character=scored["bits_per_character"])
    metrics.update(train_characters=len(splits.train), val_characters=len(splits.val), vocabulary_size=model.vocabulary_size)
    training.write_json(run.metrics_path, metrics)
    return metrics


# --- scoring -------------------------------------------------------------------------------------

_compiled_scorers = weakref.WeakKeyDictionary()  # model -> its traced window_log_likelihood


def score_text(model, text: str) -> dict:
    """Log-probability (nats), perplexity and bits per character of `text` under `model`, by the
    windows of model.py (the exported `score` signature computes the same)."""
    import tensorflow as tf

    if len(text) < 2:
        raise UserError(f"a text of {len(text)} character(s) has nothing to score: a language model predicts each character after the first")
    inputs, targets, weights = model.windows(model.preprocessor(tf.constant(text)))
    if model not in _compiled_scorers:
        _compiled_scorers[model] = tf.function(model.window_log_likelihood, reduce_retracing=True)
    log_likelihood = _compiled_scorers[model]
    total = sum(
        float(log_likelihood(inputs[i : i + SCORE_BATCH], targets[i : i + SCORE_BATCH], weights[i : i + SCORE_BATCH]))
        for i in range(0, int(inputs.shape[0]), SCORE_BATCH)
    )
    predicted = len(text) - 1
    nats = -total / predicted
    return {
        "characters": len(text),
        "predicted_characters": predicted,
        "log_probability": total,
        "perplexity": math.exp(nats),
        "nats_per_character": nats,
        "bits_per_character": nats / math.log(2),
        "oov_characters": sum(1 for c in text if c not in set(model.vocabulary)),
    }


def score(model_dir: str | Path, file: str | Path, encoding: str = "utf-8", model=None) -> dict:
    """`predict --score FILE`: how likely the model finds the text of FILE."""
    model = model or training.load_model(model_dir, APP)
    return {"file": str(file), **score_text(model, charlm_data.read_file(Path(file), encoding))}


def evaluation_text(model_dir: Path, data: str | None, encoding: str = "utf-8") -> str:
    """All of --data when given, else the run's own validation text."""
    config = training.run_config(model_dir, CharLMConfig, required=data is None)
    if data is None:
        val = charlm_data.split_text(
            charlm_data.read_data(config.data, config.encoding, config.demo_chars, config.tfds_dir), config.val_fraction
        ).val
        if len(val) < 2:
            raise UserError(f"{model_dir}: trained without a validation part (--val-fraction 0); pass --data")
        return val
    if data.strip() == "demo":  # text after the demo's training slice: unseen docstrings
        return charlm_data.demo(2 * config.demo_chars)[config.demo_chars :]
    return charlm_data.read_data(data, encoding, config.demo_chars, config.tfds_dir, tfds_split="test")


def evaluate(model_dir: str | Path, data: str | None = None, encoding: str = "utf-8") -> dict:
    """Perplexity per character and bits per character on --data (default: the validation text)."""
    model = training.load_model(model_dir, APP)
    text = evaluation_text(Path(model_dir), data, encoding)
    return {**score_text(model, text), "vocabulary_size": model.vocabulary_size}


# --- generation ----------------------------------------------------------------------------------


def check_sampling(length: int, temperature: float, top_k: int) -> None:
    if not 1 <= length <= MAX_LENGTH:
        raise UserError(f"--length must be between 1 and {MAX_LENGTH:,} characters, got {length}")
    if not (math.isfinite(temperature) and 0 < temperature <= 100):
        raise UserError(f"--temperature must be above 0 (1 samples the model as it is, lower is more conservative) and at most 100, got {temperature}")
    if top_k < 0:
        raise UserError(f"--top-k must be 0 (all characters) or more, got {top_k}")


def generate(
    model_dir: str | Path,
    prompt: str = "",
    length: int = 500,
    temperature: float = 0.8,
    top_k: int = 40,
    seed: int | None = None,
    on_text: Callable[[str], None] | None = None,
    on_oov: Callable[[list[str]], None] | None = None,
    model=None,
) -> dict:
    """Samples `length` characters after `prompt`, one at a time, calling `on_text` with each as
    it is produced. The same `seed` gives the same text (stateless sampling, seed (S, step))."""
    import tensorflow as tf

    check_sampling(length, temperature, top_k)
    model = model or training.load_model(model_dir, APP)
    known = set(model.vocabulary)
    oov = sorted({c for c in prompt if c not in known})
    if oov and on_oov:
        on_oov(oov)
    seed = secrets.randbelow(2**31) if seed is None else int(seed)

    @tf.function(reduce_retracing=True)
    def feed(ids, state):
        return model.generation_step(ids, state)[1]

    @tf.function(reduce_retracing=True)
    def sample(ids, state, step_seed):
        logits, state = model.generation_step(ids, state)
        return model.sample_next(logits, tf.constant(temperature, "float32"), tf.constant(top_k), step_seed), state

    prompt_ids = model.prompt_ids(tf.constant(prompt))
    state = model.initial_state(1)
    for i in range(int(prompt_ids.shape[0]) - 1):  # as generate_graph: read all but the last, sample from there
        state = feed(prompt_ids[i : i + 1], state)
    last, pieces = prompt_ids[-1:], []
    for step in range(length):
        last, state = sample(last, state, tf.constant([seed, step], "int64"))
        piece = model.vocabulary[int(last[0]) - 1]
        pieces.append(piece)
        if on_text:
            on_text(piece)
    return {"prompt": prompt, "text": "".join(pieces), "seed": seed, "temperature": temperature, "top_k": top_k, "oov_characters": oov}


# --- export --------------------------------------------------------------------------------------


def export(model_dir: str | Path, out: str | Path | None = None, top_k: int = 40) -> dict:
    """SavedModel with `generate` (= serving_default), `generate_seeded` and `score` signatures."""
    import tensorflow as tf

    if top_k < 0:
        raise UserError(f"--top-k must be 0 (all characters) or more, got {top_k}")
    model = training.load_model(model_dir, APP)
    out = Path(out or model_dir)
    scalar = lambda dtype, name: tf.TensorSpec([], dtype, name=name)  # noqa: E731

    def checked(length, temperature):
        return [
            tf.debugging.assert_positive(temperature, message="temperature must be above 0"),
            tf.debugging.assert_less_equal(length, MAX_LENGTH, message=f"length must be at most {MAX_LENGTH}"),
        ]

    prompts = tf.TensorSpec([None], tf.string, name="prompt")

    @tf.function(input_signature=[prompts, scalar(tf.int32, "length"), scalar(tf.float32, "temperature"),
                                  scalar(tf.int32, "top_k"), scalar(tf.int64, "seed")])
    def generate_seeded(prompt, length, temperature, top_k, seed):
        with tf.control_dependencies(checked(length, temperature)):
            text = tf.map_fn(  # one sampling loop per prompt: prompts differ in length
                lambda one: model.generate_graph(one, length, temperature, top_k, seed), prompt, fn_output_signature=tf.string
            )
            return {"text": text}

    @tf.function(input_signature=[prompts, scalar(tf.int32, "length"), scalar(tf.float32, "temperature")])
    def generate(prompt, length, temperature):
        seed = tf.random.uniform([], maxval=2**31 - 1, dtype=tf.int64)
        return generate_seeded(prompt, length, temperature, tf.constant(top_k), seed)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def score(text):
        log_probability, predicted = tf.map_fn(
            model.text_log_likelihood, text, fn_output_signature=(tf.float32, tf.float32)
        )
        nats = -log_probability / tf.maximum(predicted, 1.0)
        return {
            "log_probability": log_probability,
            "perplexity": tf.exp(nats),
            "bits_per_character": nats / math.log(2),
            "predicted_characters": tf.cast(predicted, tf.int32),
        }

    endpoints = {"serving_default": generate, "generate": generate, "generate_seeded": generate_seeded, "score": score}
    path = export_lib.write_saved_model(model, endpoints, out)
    export_lib.copy_model(Path(model_dir), out)
    return {
        "saved_model": str(path),
        "version": int(path.name),
        "vocabulary_size": model.vocabulary_size,
        "signatures": {
            "serving_default, generate": "(prompt: string[N], length: int32, temperature: float32) -> text: string[N]",
            "generate_seeded": "(prompt: string[N], length: int32, temperature: float32, top_k: int32, seed: int64) -> text: string[N]",
            "score": "(text: string[N]) -> log_probability, perplexity, bits_per_character: float32[N], predicted_characters: int32[N]",
        },
    }
