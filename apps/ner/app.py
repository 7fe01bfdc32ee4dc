"""The ner app's modes as plain functions: each takes paths and values, returns plain Python."""

from __future__ import annotations

import weakref
from pathlib import Path

import keras
import numpy as np

from ...shared import data as data_lib
from ...shared import export as export_lib
from ...shared import training
from ...shared.errors import UserError
from ...shared.strategy import describe, get_strategy
from . import data as ner_data
from .config import NerConfig
from .model import EntityTagger, build_vocabularies, normalise_words, tokenize  # also registers the classes

APP = "ner"


def tag_names(entity_types: list[str], scheme: str) -> list[str]:
    prefixes = ("B", "I", "E", "S") if scheme == "bioes" else ("B", "I")
    return ["O"] + [f"{prefix}-{kind}" for kind in entity_types for prefix in prefixes]


# --- tf.data: tokens and tags in, integer features out ------------------------------------------


def _joined(token_lists) -> np.ndarray:
    """Sentences as one space-joined string each (tokens never contain spaces: they come from
    whitespace-split files or the tokeniser), so tf.data slices plain strings."""
    return np.asarray([" ".join(tokens) for tokens in token_lists], dtype=object)


def _sentence_batches(token_lists, preprocessor, batch_size, tag_lists=None, shuffle=False, seed=0):
    import tensorflow as tf

    def featurize(texts, tags=None):
        features = preprocessor.featurize(tf.strings.split(texts, sep=" "))
        if tags is None:
            return features
        ids = tf.ragged.map_flat_values(tf.strings.to_number, tf.strings.split(tags, sep=" "), out_type=tf.int32)
        return features, tf.pad(ids.to_tensor(0), [[0, 0], [0, 1]])  # the featuriser's extra padding step

    labels = None if tag_lists is None else np.asarray([" ".join(map(str, tags)) for tags in tag_lists], dtype=object)
    if not shuffle:
        return data_lib.make_dataset(_joined(token_lists), labels, batch_size=batch_size, batch_map_fn=featurize)
    # Training batches group sentences of similar length: the BiLSTM and the CRF run over the
    # longest sentence of a batch, and CoNLL lengths vary from 1 to 100+. Each shuffled chunk of 20
    # batches is sorted by length and cut into batches, so an epoch keeps ceil(n / batch) batches.
    chunk = 20

    def by_length(texts, tags):
        order = tf.argsort(tf.strings.split(texts, sep=" ").row_lengths())
        return tf.gather(texts, order), tf.gather(tags, order)

    dataset = tf.data.Dataset.from_tensor_slices((_joined(token_lists), labels))
    dataset = dataset.shuffle(len(token_lists), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size * chunk).map(by_length).unbatch().batch(batch_size)
    dataset = dataset.shuffle(chunk, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-len(token_lists) // batch_size)))
    return dataset.map(featurize, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


_TAG_FUNCTIONS = weakref.WeakKeyDictionary()  # model -> compiled tags-only decoding


def tag_sentences(model, token_lists, batch_size: int = 128, with_scores: bool = True):
    """Tags (the model's scheme) and per-token probabilities (None without scores) for tokenised
    sentences. Sentences are batched by length (less padding) and returned in their own order."""
    import tensorflow as tf

    if not with_scores and model not in _TAG_FUNCTIONS:
        # Every batch differs in sentence and word length: one trace for all of them.
        signature = {"word_ids": tf.TensorSpec([None, None], tf.int64), "char_ids": tf.TensorSpec([None, None, None], tf.int64),
                     "casing_ids": tf.TensorSpec([None, None], tf.int64)}
        _TAG_FUNCTIONS[model] = tf.function(model.predict_tags, input_signature=[signature])
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    tags, scores = [None] * len(order), [None] * len(order)
    batches = _sentence_batches([token_lists[i] for i in order], model.preprocessor, batch_size)
    position = 0
    for features in batches:
        if with_scores:
            output = model.predict_on_batch(features)
            batch_tags, batch_scores = np.asarray(output["tags"]), np.asarray(output["scores"])
        else:
            batch_tags = _TAG_FUNCTIONS[model](features).numpy()
            batch_scores = [None] * len(batch_tags)
        for row_tags, row_scores in zip(batch_tags, batch_scores):
            index = order[position]
            length = len(token_lists[index])
            tags[index] = [model.tags[t] for t in row_tags[:length]]
            scores[index] = None if row_scores is None else [float(s) for s in row_scores[:length]]
            position += 1
    return tags, scores


# --- train ---------------------------------------------------------------------------------------


def _embedding_rows(vocabulary, words, vectors, seed):
    """Initial word vectors: the file's vector for each (normalised) vocabulary word, small random
    vectors for the rest, zeros for padding. Returns the matrix and how many words were found."""
    import tensorflow as tf

    normalised = [w.decode("utf-8") for w in normalise_words(tf.constant(words)).numpy()]
    index = {}
    for i, word in enumerate(normalised):
        index.setdefault(word, i)
    rng = np.random.default_rng(seed)
    scale = float(vectors.std()) or 0.05
    matrix = rng.normal(0.0, scale, size=(len(vocabulary) + 2, vectors.shape[1])).astype(np.float32)
    matrix[0] = 0.0
    found = 0
    for row, word in enumerate(vocabulary, start=2):
        if word in index:
            matrix[row] = vectors[index[word]]
            found += 1
    return matrix, found


class EntityF1(keras.callbacks.Callback):
    """Prints seqeval entity F1 on the validation sentences after every epoch and keeps the
    figures (the best checkpoint follows val_loss: Keras hands callbacks a copy of the validation
    logs, so a score computed outside the graph cannot join them)."""

    def __init__(self, sentences):
        super().__init__()
        self.sentences = sentences
        self.scores: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        self.scores.append(entity_scores(self.model, self.sentences)["f1"])
        print(f"epoch {epoch + 1}: validation entity F1 {self.scores[-1]:.4f}", flush=True)


def train(config: NerConfig, callbacks: tuple = ()) -> dict:
    """Trains on `config.data` and writes the run folder; returns validation metrics. `callbacks`
    are extra Keras callbacks (the benchmark's time limit)."""
    keras.utils.set_random_seed(config.seed)
    train_set, val_set = ner_data.load_splits(config)
    train_set, skipped = ner_data.drop_overlong(train_set, config.max_length)
    if skipped:
        print(f"Skipped {skipped} training sentences longer than --max-length {config.max_length} tokens")
    if not len(train_set):
        raise UserError(f"{config.data}: no training sentences of at most --max-length {config.max_length} tokens")
    entity_types = train_set.entity_types()
    unknown = sorted(set(val_set.entity_types()) - set(entity_types))
    if unknown:
        raise UserError(f"{val_set.source or config.data}: validation entity types {unknown} do not occur in the training data")
    embedding_words, embedding_vectors = (), None
    if config.embeddings:
        from ...shared.embeddings import read_word2vec

        embedding_words, embedding_vectors = read_word2vec(config.embeddings)
    run = training.Run.start(APP, config)
    strategy = get_strategy(config.strategy, config.mixed_precision)
    tags = tag_names(entity_types, config.tag_scheme)

    def build():
        vocabulary, characters = build_vocabularies(train_set.tokens, config.max_words, embedding_words)
        model = EntityTagger(
            vocabulary,
            characters,
            tags,
            tag_scheme=config.tag_scheme,
            embedding_dim=config.embedding_dim if embedding_vectors is None else embedding_vectors.shape[1],
            char_encoder=config.char_encoder,
            char_dim=config.char_dim,
            char_units=config.char_units,
            casing_dim=config.casing_dim,
            lstm_units=config.lstm_units,
            dropout=config.dropout,
            head=config.head,
            max_word_length=config.max_word_length,
        )
        if embedding_vectors is not None:
            matrix, found = _embedding_rows(vocabulary, embedding_words, embedding_vectors, config.seed)
            model.get_layer("word_embedding").embeddings.assign(matrix)
            print(f"Embeddings: {found} of {len(vocabulary)} vocabulary words found in {config.embeddings}")
        return model

    model = training.model_for_run(run, config, build, strategy)
    with strategy.scope():
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=5.0))
    print(f"Training on {len(train_set)} sentences, validating on {len(val_set)}; entity types {entity_types}; "
          f"{len(model.vocabulary)} words, {len(model.characters)} characters; {describe(strategy)}")
    tag_index = {tag: i for i, tag in enumerate(tags)}

    def tag_ids(sentences):
        return [[tag_index[t] for t in ner_data.from_iob2(s, config.tag_scheme)] for s in sentences.tags]

    train_ds = _sentence_batches(train_set.tokens, model.preprocessor, config.batch_size, tag_ids(train_set),
                                 shuffle=True, seed=config.seed)
    val_ds = _sentence_batches(val_set.tokens, model.preprocessor, config.batch_size, tag_ids(val_set)) if len(val_set) else None
    f1_log = EntityF1(val_set)
    metrics = training.fit(model, train_ds, val_ds, run, config, callbacks=((f1_log,) if len(val_set) else ()) + tuple(callbacks))
    if len(val_set):
        best = training.load_model(run.model_path, APP)
        metrics["val_f1"] = entity_scores(best, val_set)["f1"]  # of the kept (best val_loss) model
        metrics["val_f1_per_epoch"] = [round(f, 4) for f in f1_log.scores]
    metrics.update(train_size=len(train_set), val_size=len(val_set), skipped_overlong=skipped, entity_types=entity_types)
    training.write_json(run.metrics_path, metrics)
    return metrics


# --- predict -------------------------------------------------------------------------------------


def tokenize_texts(texts: list[str]) -> list[list[str]]:
    """The tokeniser the SavedModel runs (model.TOKEN_PATTERN), called from Python."""
    import tensorflow as tf

    if not texts:
        return []
    return [[t.decode("utf-8") for t in row] for row in tokenize(tf.constant(texts)).to_list()]


def _offsets(text: str, tokens: list[str]) -> list[tuple[int, int]]:
    """Character offsets of each token: tokens are substrings of the text, in order."""
    offsets, position = [], 0
    for token in tokens:
        start = text.find(token, position)
        start = position if start < 0 else start
        offsets.append((start, start + len(token)))
        position = start + len(token)
    return offsets


def predict(model_dir: str | Path, texts: list[str], model=None) -> list[dict]:
    """Entities (type, text, character offsets, score) plus tokens and tags for each text."""
    model = model or training.load_model(model_dir, APP)
    token_lists = tokenize_texts(texts)
    for number, tokens in enumerate(token_lists, start=1):
        if not tokens:
            raise UserError(f"input {number}: empty text, nothing to tag")
    tags, scores = tag_sentences(model, token_lists)
    results = []
    for text, tokens, row_tags, row_scores in zip(texts, token_lists, tags, scores):
        offsets = _offsets(text, tokens)
        entities = []
        for kind, first, last in ner_data.spans(row_tags, model.tag_scheme):
            start, end = offsets[first][0], offsets[last - 1][1]
            entities.append({"text": text[start:end], "type": kind, "start": start, "end": end,
                             "score": float(np.mean(row_scores[first:last]))})
        results.append({"text": text, "entities": entities, "tokens": tokens, "tags": row_tags,
                        "scores": [round(s, 6) for s in row_scores]})
    return results


# --- evaluate ------------------------------------------------------------------------------------


def entity_scores(model, sentences) -> dict:
    """seqeval (conlleval-compatible) entity precision, recall and F1, overall and per type, on IOB2."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    predicted, _ = tag_sentences(model, sentences.tokens, with_scores=False)
    predicted = [ner_data.to_iob2(tags, model.tag_scheme) for tags in predicted]
    gold = sentences.tags
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    per_type = {kind: {k: float(v) if k != "support" else int(v) for k, v in values.items()}
                for kind, values in report.items() if not kind.endswith(" avg")}
    tokens = sum(len(t) for t in gold)
    correct = sum(g == p for gs, ps in zip(gold, predicted) for g, p in zip(gs, ps))
    return {
        "sentences": len(sentences),
        "tokens": tokens,
        "precision": float(precision_score(gold, predicted, zero_division=0)),
        "recall": float(recall_score(gold, predicted, zero_division=0)),
        "f1": float(f1_score(gold, predicted, zero_division=0)),
        "token_accuracy": correct / max(tokens, 1),
        "per_type": per_type,
    }


def evaluation_data(model_dir: Path, data: str | None, encoding: str = "utf-8") -> ner_data.Sentences:
    """The sentences to evaluate on: all of --data when given, else the run's own validation split."""
    config = training.run_config(model_dir, NerConfig, required=data is None)
    if data is None:
        return ner_data.load_splits(config)[1]
    config.encoding = encoding
    return ner_data.evaluation_sentences(data, config)


def evaluate(model_dir: str | Path, data: str | None = None, encoding: str = "utf-8") -> dict:
    model = training.load_model(model_dir, APP)
    sentences = evaluation_data(Path(model_dir), data, encoding)
    known = {tag[2:] for tag in model.tags if tag != "O"}
    for index, tags in enumerate(sentences.tags):
        for offset, tag in enumerate(tags):
            if tag != "O" and tag[2:] not in known:
                where = f"line {sentences.lines[index] + offset}: " if sentences.lines else ""
                raise UserError(f"{sentences.source or data}: {where}entity type {tag[2:]!r} is not among the model's types {sorted(known)}")
    return entity_scores(model, sentences)


# --- export --------------------------------------------------------------------------------------


def export(model_dir: str | Path, out: str | Path | None = None) -> dict:
    """SavedModel whose serving_default takes raw strings and returns tokens, tags and scores
    (tokenisation, featurisation and Viterbi decoding inside the graph)."""
    import tensorflow as tf

    model = training.load_model(model_dir, APP)
    out = Path(out or model_dir)
    names = tf.constant(model.tags)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serving_default(text):
        tokens = tokenize(text)
        tag_ids, scores, lengths = model.tag_tokens(tokens)
        real = tf.sequence_mask(lengths, tf.shape(tag_ids)[1])
        return {
            "tokens": tokens.to_tensor(""),
            "tags": tf.where(real, tf.gather(names, tag_ids), ""),
            "scores": tf.where(real, scores, 0.0),
            "length": lengths,
        }

    path = export_lib.write_saved_model(model, {"serving_default": serving_default}, out)
    export_lib.copy_model(Path(model_dir), out)
    return {"saved_model": str(path), "version": int(path.name), "tags": model.tags, "tag_scheme": model.tag_scheme,
            "signature": "serving_default(text: string[N]) -> tokens: string[N, T], tags: string[N, T], "
                         "scores: float[N, T], length: int64[N] (padding: '' and 0)"}
