"""The ner app's hooks into the shared contract (shared/app.py)."""

from __future__ import annotations

import dataclasses
import weakref

import numpy as np

from dlapps.shared import data as data_lib
from dlapps.shared.app import App, Splits
from dlapps.shared.errors import UserError

from . import data as ner_data
from .config import NerConfig, NerEvaluateOptions, NerPredictOptions


def tag_names(entity_types: list[str], scheme: str) -> list[str]:
    prefixes = ("B", "I", "E", "S") if scheme == "bioes" else ("B", "I")
    return ["O"] + [f"{prefix}-{kind}" for kind in entity_types for prefix in prefixes]


@dataclasses.dataclass
class NerSplits(Splits):
    # Words of --embeddings, read with the data (before the run folder is touched): the vocabulary
    # takes them after the training words.
    embedding_words: list = dataclasses.field(default_factory=list)
    # Validation entity F1 of each epoch, filled by the EntityF1 callback, kept in metrics.json.
    val_f1_per_epoch: list = dataclasses.field(default_factory=list)


# --- tf.data: tokens and tags in, integer features out ------------------------------------------


def _joined(rows) -> np.ndarray:
    """Sentences (or tag ids) as one space-joined string each (tokens never contain spaces: they
    come from whitespace-split files, the tokeniser or data.read_tfds), so tf.data slices plain
    strings."""
    return np.asarray([" ".join(map(str, row)) for row in rows], dtype=object)


def _featurizer(preprocessor):
    """A batch of joined sentences (and joined tag ids) -> the model's inputs (and padded tags)."""
    import tensorflow as tf

    def featurize(texts, tags=None):
        features = preprocessor.featurize(tf.strings.split(texts, sep=" "))
        if tags is None:
            return features
        ids = tf.ragged.map_flat_values(tf.strings.to_number, tf.strings.split(tags, sep=" "), out_type=tf.int32)
        return features, tf.pad(ids.to_tensor(0), [[0, 0], [0, 1]])  # the featuriser's extra padding step

    return featurize


def sentence_batches(token_lists, preprocessor, batch_size: int, tag_lists=None):
    """Batches in the order given (validation, predict, evaluate)."""
    labels = None if tag_lists is None else _joined(tag_lists)
    return data_lib.make_dataset(_joined(token_lists), labels, batch_size=batch_size, batch_map_fn=_featurizer(preprocessor))


def training_batches(token_lists, tag_lists, preprocessor, config):
    """Shuffled batches of sentences of similar length: the BiLSTM and the CRF run over the
    longest sentence of a batch, and CoNLL lengths vary from 1 to 100+."""
    import tensorflow as tf

    def bucketed(dataset):
        return data_lib.bucket_by_length(dataset, lambda text, tags: tf.size(tf.strings.split(text, sep=" ")),
                                         config.batch_size, max_length=config.max_length + 1)

    examples = tf.data.Dataset.from_tensor_slices((_joined(token_lists), _joined(tag_lists)))
    # Every bucket ends an epoch with its partial batch, so the number of batches does not depend on
    # the order: counted once, it spares Keras an epoch of unknown length (and its warning).
    steps = int(bucketed(examples).reduce(0, lambda count, *batch: count + 1))
    dataset = bucketed(examples.shuffle(len(token_lists), seed=config.seed, reshuffle_each_iteration=True))
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    return dataset.map(_featurizer(preprocessor), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


_TAG_FUNCTIONS = weakref.WeakKeyDictionary()  # model -> compiled tags-only decoding


def tag_sentences(model, token_lists, batch_size: int = 128, with_scores: bool = True):
    """Tags (the model's scheme) and per-token probabilities (None without scores) for tokenised
    sentences. Sentences are batched by length (less padding) and returned in their own order."""
    import tensorflow as tf

    if not with_scores and model not in _TAG_FUNCTIONS:
        # Every batch differs in sentence and word length: one trace for all of them.
        signature = {"word_ids": tf.TensorSpec([None, None], tf.int64), "char_ids": tf.TensorSpec([None, None, None], tf.int64),
                     "casing_ids": tf.TensorSpec([None, None], tf.int64)}
        # through a weak reference: a cached function must not keep its model alive
        this = weakref.ref(model)
        _TAG_FUNCTIONS[model] = tf.function(lambda features: this().predict_tags(features), input_signature=[signature])
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    tags, scores = [None] * len(order), [None] * len(order)
    batches = sentence_batches([token_lists[i] for i in order], model.preprocessor, batch_size)
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


def tokenize_texts(texts: list[str]) -> list[list[str]]:
    """The tokeniser the SavedModel runs (model.TOKEN_PATTERN), called from Python."""
    import tensorflow as tf

    from .model import tokenize

    if not texts:
        return []
    return [[t.decode("utf-8") for t in row] for row in tokenize(tf.constant(texts)).to_list()]


def token_offsets(text: str, tokens: list[str]) -> list[tuple[int, int]]:
    """Character offsets of each token: tokens are substrings of the text, in order."""
    offsets, position = [], 0
    for token in tokens:
        start = text.find(token, position)
        start = position if start < 0 else start
        offsets.append((start, start + len(token)))
        position = start + len(token)
    return offsets


def spans_lines(row: dict) -> str:
    """predict's table for people: the text, then a line per entity (type, offsets, score, text)."""
    entities = [f"  {e['type']:<6} {e['start']:>4}-{e['end']:<4} {e['score']:.3f}  {e['text']}" for e in row["entities"]]
    return "\n".join([row["text"], *entities])


def conll_lines(row: dict) -> str:
    """predict's table in the CoNLL layout: a token and its tag per line."""
    return "\n".join(f"{token}\t{tag}" for token, tag in zip(row["tokens"], row["tags"]))


def entity_scores(model, sentences, batch_size: int = 128) -> dict:
    """seqeval (conlleval-compatible) entity precision, recall and F1, overall and per type, on IOB2."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    predicted, _ = tag_sentences(model, sentences.tokens, batch_size, with_scores=False)
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


def embedding_rows(vocabulary: list[str], file_words: list[str], path: str, seed: int) -> tuple[np.ndarray, int]:
    """Initial word vectors (row 0 padding, zeros; row 1 unknown; then `vocabulary`) and how many
    vocabulary words the file has. A vocabulary word takes the vector of the first file word that
    normalises to it (lower case, digits 0: "1996" serves "0000"); the others stay random."""
    from dlapps.shared.embeddings import embedding_matrix

    from .model import normalised_words

    first_spelling = {}
    for word, normalised in zip(file_words, normalised_words(file_words)):
        first_spelling.setdefault(normalised, word)
    matrix, _ = embedding_matrix(["", "[UNK]"] + [first_spelling.get(w, w) for w in vocabulary], path, seed)
    matrix[0] = 0.0
    return matrix, sum(w in first_spelling for w in vocabulary)


def _entity_f1_callback(sentences, scores: list):
    import keras

    class EntityF1(keras.callbacks.Callback):
        """Adds seqeval entity F1 on the validation sentences to each epoch's logs as ``val_f1``,
        before checkpoint selection reads it, and appends it to `scores`."""

        def on_epoch_end(self, epoch, logs=None):
            f1 = entity_scores(self.model, sentences)["f1"]
            scores.append(round(f1, 4))
            if logs is not None:
                logs["val_f1"] = float(f1)
            print(f"epoch {epoch + 1}: validation entity F1 {scores[-1]:.4f}", flush=True)

    return EntityF1()


class NerApp(App):
    name = "ner"
    summary = "Named-entity recognition: BiLSTM-CRF over words, characters and casing; raw text in, entity spans out."
    config = NerConfig
    predict_options = NerPredictOptions
    evaluate_options = NerEvaluateOptions
    predict_help = ('Find entities: `dlapps ner predict "Angela Merkel visited Paris."`, --file FILE, or \'-\' for stdin; '
                    "--format conll for a tag per token.")
    evaluate_help = ("Entity-level precision, recall and F1 (seqeval, conlleval-compatible), overall and per type, "
                     "on --data (default: the run's validation split).")
    monitor, mode = "val_f1", "max"  # see checkpoint_selection

    # --- train ---
    def load_splits(self, config) -> Splits:
        train, val = ner_data.load_splits(config)
        train, skipped = ner_data.drop_overlong(train, config.max_length)
        if skipped:
            print(f"Skipped {skipped} training sentences longer than --max-length {config.max_length} tokens")
        if not len(train):
            raise UserError(f"{config.data}: no training sentences of at most --max-length {config.max_length} tokens")
        entity_types = train.entity_types()
        unknown = sorted(set(val.entity_types()) - set(entity_types))
        if unknown:
            raise UserError(f"{val.source or config.data}: validation entity types {unknown} do not occur in the training data")
        embedding_words = []
        if config.embeddings:
            from dlapps.shared.embeddings import read_word2vec

            embedding_words, _ = read_word2vec(config.embeddings)
        info = {"train_size": len(train), "val_size": len(val), "skipped_overlong": skipped, "entity_types": entity_types}
        return NerSplits(train, val, info, embedding_words=embedding_words)

    def build_model(self, config, splits):
        from .model import EntityTagger, build_vocabularies

        vocabulary, characters = build_vocabularies(splits.train.tokens, config.max_words, splits.embedding_words)
        embedding_dim, matrix = config.embedding_dim, None
        if config.embeddings:
            matrix, found = embedding_rows(vocabulary, splits.embedding_words, config.embeddings, config.seed)
            embedding_dim = matrix.shape[1]
            print(f"Embeddings: {found} of {len(vocabulary)} vocabulary words found in {config.embeddings}")
        model = EntityTagger(
            vocabulary=vocabulary,
            characters=characters,
            tags=tag_names(splits.info["entity_types"], config.tag_scheme),
            tag_scheme=config.tag_scheme,
            embedding_dim=embedding_dim,
            char_encoder=config.char_encoder,
            char_dim=config.char_dim,
            char_units=config.char_units,
            casing_dim=config.casing_dim,
            lstm_units=config.lstm_units,
            dropout=config.dropout,
            head=config.head,
            max_word_length=config.max_word_length,
        )
        if matrix is not None:
            model.get_layer("word_embedding").embeddings.assign(matrix)
        return model

    def compile_model(self, model, config) -> None:
        import keras

        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=5.0))  # the loss: model.compute_loss

    def datasets(self, model, splits, config):
        """(features, tag ids) batches: featurisation runs in tf.data, not in the training step."""
        tag_index = {tag: i for i, tag in enumerate(model.tags)}

        def tag_ids(sentences):
            return [[tag_index[t] for t in ner_data.from_iob2(tags, model.tag_scheme)] for tags in sentences.tags]

        train = training_batches(splits.train.tokens, tag_ids(splits.train), model.preprocessor, config)
        val = None
        if len(splits.val):
            val = sentence_batches(splits.val.tokens, model.preprocessor, config.batch_size, tag_ids(splits.val))
        return train, val

    def callbacks(self, model, splits, config) -> list:
        splits.val_f1_per_epoch.clear()
        return [_entity_f1_callback(splits.val, splits.val_f1_per_epoch)] if len(splits.val) else []

    def checkpoint_selection(self, config, splits=None) -> tuple[str, str, str]:
        # Entity F1 is what users read, and the dev loss turns while F1 still climbs (the CRF
        # grows confident); without validation sentences the training loss decides.
        return (self.monitor, self.mode, self.keep) if splits is None or len(splits.val) else ("loss", "min", "best")

    def describe_training(self, model, splits, config) -> str:
        return (f"Training on {len(splits.train)} sentences, validating on {len(splits.val)}; "
                f"entity types {splits.info['entity_types']}; {len(model.vocabulary)} words, {len(model.characters)} characters")

    def after_training(self, model, splits, config, run) -> dict:
        if not len(splits.val):
            return {}
        # val_f1 of the kept model (the best epoch), beside the F1 of every epoch
        return {"val_f1": entity_scores(model, splits.val)["f1"], "val_f1_per_epoch": list(splits.val_f1_per_epoch)}

    # --- predict ---
    def predict(self, model, inputs, options) -> list[dict]:
        """Entities (type, text, character offsets, score) plus tokens, tags and scores per text."""
        token_lists = tokenize_texts(inputs)
        for number, tokens in enumerate(token_lists, start=1):
            if not tokens:
                raise UserError(f"input {number}: empty text, nothing to tag")
        tags, scores = tag_sentences(model, token_lists, options.batch_size)
        results = []
        for text, tokens, row_tags, row_scores in zip(inputs, token_lists, tags, scores):
            offsets = token_offsets(text, tokens)
            entities = []
            for kind, first, last in ner_data.spans(row_tags, model.tag_scheme):
                start, end = offsets[first][0], offsets[last - 1][1]
                entities.append({"text": text[start:end], "type": kind, "start": start, "end": end,
                                 "score": float(np.mean(row_scores[first:last]))})
            results.append({"text": text, "entities": entities, "tokens": tokens, "tags": row_tags,
                            "scores": [round(s, 6) for s in row_scores]})
        return results

    def format_prediction(self, row: dict, options=None) -> str:
        if options is not None and options.format == "conll":
            return conll_lines(row) + "\n"  # CoNLL: a blank line after each sentence
        return spans_lines(row)

    # --- evaluate ---
    def evaluation_data(self, config, options):
        """All of --data (demo: fresh sentences), else the run's own validation split."""
        if options.data:
            return ner_data.evaluation_sentences(options.data, dataclasses.replace(config, encoding=options.encoding))
        val = ner_data.load_splits(config)[1]
        if not len(val):
            raise UserError("the run has no validation split (trained with --val-fraction 0); pass --data")
        return val

    def evaluate(self, model, data, options) -> dict:
        known = {tag[2:] for tag in model.tags if tag != "O"}
        for index, tags in enumerate(data.tags):
            for offset, tag in enumerate(tags):
                if tag != "O" and tag[2:] not in known:
                    where = f"line {data.lines[index] + offset}: " if data.lines else ""
                    raise UserError(f"{data.source or options.data}: {where}entity type {tag[2:]!r} "
                                    f"is not among the model's types {sorted(known)}")
        return entity_scores(model, data, options.batch_size)

    def headline(self, metrics: dict) -> dict:
        rows = {f"type {kind}": f"precision {row['precision']:.4f}  recall {row['recall']:.4f}  "
                                f"f1 {row['f1-score']:.4f}  support {row['support']}"
                for kind, row in metrics["per_type"].items()}
        return {k: metrics[k] for k in ("sentences", "tokens", "precision", "recall", "f1", "token_accuracy")} | rows

    # --- export ---
    def endpoints(self, model, options) -> dict:
        """Raw strings in; tokens, tags and scores out (padding '' and 0), with each text's token
        count: tokenisation, featurisation and Viterbi decoding run in the graph."""
        import tensorflow as tf

        from .model import tokenize

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

        return {"serving_default": serving_default}

    def core_example(self, model):
        """Two featurised sentences: the model takes a dict of word, character and casing ids."""
        import tensorflow as tf

        from .model import tokenize

        features = model.preprocessor.featurize(tokenize(tf.constant(["Angela Merkel visited Paris.", "John Smith"])))
        return {name: value.numpy() for name, value in features.items()}


APP = NerApp()
