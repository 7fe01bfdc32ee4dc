"""The NER model: word, character and casing features -> stacked BiLSTM -> linear-chain CRF (or
softmax), with its preprocessor attached.

Tokenisation (raw text -> tokens) is one RE2 pattern, ``TOKEN_PATTERN``, run with ``tf.strings`` in
Python ``predict``, in ``evaluate`` (on raw text) and inside the SavedModel graph alike: runs of
letters, digits and combining marks (joined across single inner ``-``, ``.`` or ``,``, so
``well-known``, ``1,000`` and ``3-1`` stay whole) are tokens, and every other non-space character
is a token of its own. ``Angela Merkel visited Paris.`` -> ``Angela Merkel visited Paris .``

Training runs the featuriser in tf.data (only integer tensors enter the training step); the CRF
loss is the forward algorithm minus the gold path score, and ``predict_step`` decodes with Viterbi
(crf.py: all ``keras.ops``, ``ops.scan`` over the time axis).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from dlapps.shared.models import TaskModel
from dlapps.shared.text import rank_vocabulary

from .crf import ChainCRF, crf_marginals, crf_negative_log_likelihood, viterbi_decode

WORD_RUN = r"[\pL\pN\pM]+(?:[-.,][\pL\pN\pM]+)*"
TOKEN_PATTERN = WORD_RUN + r"|[^\pL\pN\pM\s\pZ]"
# The casing feature of a token (Lample et al. 2016 / Chiu & Nichols 2016); 0 is padding.
CASINGS = ("<pad>", "numeric", "punctuation", "upper", "title", "lower", "mixed", "other")
CASING_PATTERNS = (
    ("numeric", r"[\pN.,\-/:]*\pN[\pN.,\-/:]*"),
    ("punctuation", r"[\pP\pS]+"),
    ("upper", r"[^\p{Ll}]*\p{Lu}[^\p{Ll}]*"),
    ("title", r"\p{Lu}[^\p{Lu}]*\p{Ll}[^\p{Lu}]*"),
    ("lower", r"[^\p{Lu}]*\p{Ll}[^\p{Lu}]*"),
    ("mixed", r".*\pL.*"),
)


def tokenize(texts):
    """A 1-D string tensor -> a RaggedTensor of tokens (see TOKEN_PATTERN)."""
    import tensorflow as tf

    texts = tf.strings.regex_replace(texts, r"[\s\pZ]+", " ")
    return tf.strings.split(tf.strings.regex_replace(texts, f"({TOKEN_PATTERN})", r" \1 "))


def normalise_words(tokens):
    """What the word embedding looks up: lower case, every digit 0 (the casing feature keeps the rest)."""
    import tensorflow as tf

    return tf.strings.regex_replace(tf.strings.lower(tokens, encoding="utf-8"), "[0-9]", "0")


def casing_ids(tokens):
    import tensorflow as tf

    ids = tf.fill(tf.shape(tokens), CASINGS.index("other"))
    for name, pattern in reversed(CASING_PATTERNS):  # the first matching pattern wins
        ids = tf.where(tf.strings.regex_full_match(tokens, pattern), CASINGS.index(name), ids)
    return tf.cast(ids, "int64")


# === Layers ===


@keras.saving.register_keras_serializable(package="dlapps.ner")
class TokenFeaturizer(layers.Layer):
    """Tokens (a RaggedTensor of strings, one row per sentence) -> the model's integer inputs:
    ``word_ids`` (0 padding, 1 unknown), ``char_ids`` (first `max_word_length` characters) and
    ``casing_ids``, padded to the longest sentence plus one padding step (so that a batch of empty
    texts still has a time axis)."""

    def __init__(self, vocabulary, characters, max_word_length=25, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary = list(vocabulary)
        self.characters = list(characters)
        self.max_word_length = int(max_word_length)
        self.word_lookup = layers.StringLookup(vocabulary=self.vocabulary, mask_token="", name="word_lookup")
        self.char_lookup = layers.StringLookup(vocabulary=self.characters, mask_token="", name="char_lookup")

    def featurize(self, tokens) -> dict:
        import tensorflow as tf

        flat = tokens.flat_values
        words = tokens.with_flat_values(tf.cast(self.word_lookup(normalise_words(flat)), "int64"))
        casing = tokens.with_flat_values(casing_ids(flat))
        chars = tf.strings.unicode_split(flat, "UTF-8")[:, : self.max_word_length]
        chars = chars.with_flat_values(tf.cast(self.char_lookup(chars.flat_values), "int64"))
        chars = tokens.with_flat_values(chars)
        return {
            "word_ids": tf.pad(words.to_tensor(0), [[0, 0], [0, 1]]),
            "char_ids": tf.pad(chars.to_tensor(0), [[0, 0], [0, 1], [0, 1]]),
            "casing_ids": tf.pad(casing.to_tensor(0), [[0, 0], [0, 1]]),
        }

    def call(self, tokens):
        return self.featurize(tokens)

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary, "characters": self.characters,
                "max_word_length": self.max_word_length}


@keras.saving.register_keras_serializable(package="dlapps.ner")
class CharacterEncoder(layers.Layer):
    """(batch, words, chars) character ids -> (batch, words, units) word-shape features: a CNN
    with max pooling over the characters (Ma & Hovy 2016) or a BiLSTM's final states (Lample et al.)."""

    def __init__(self, num_characters, char_dim=30, units=50, encoder="cnn", **kwargs):
        super().__init__(**kwargs)
        self.num_characters, self.char_dim, self.units, self.encoder = int(num_characters), int(char_dim), int(units), encoder
        self.embedding = layers.Embedding(self.num_characters, self.char_dim, name="char_embedding")  # masks computed from the ids
        if encoder == "cnn":
            self.convolution = layers.Conv1D(self.units, 3, padding="same", activation="tanh", name="char_cnn")
        else:
            half = max(1, self.units // 2)
            self.recurrent = layers.Bidirectional(layers.LSTM(half), name="char_bilstm")

    def build(self, input_shape):
        self.embedding.build((None, None))
        if self.encoder == "cnn":
            self.convolution.build((None, None, self.char_dim))
        else:
            self.recurrent.build((None, None, self.char_dim))

    def call(self, char_ids):
        batch, words, chars = ops.shape(char_ids)[0], ops.shape(char_ids)[1], ops.shape(char_ids)[2]
        flat_ids = ops.reshape(char_ids, (-1, chars))
        mask = ops.not_equal(flat_ids, 0)
        x = self.embedding(flat_ids)
        if self.encoder == "cnn":
            x = self.convolution(x)
            x = ops.max(ops.where(ops.expand_dims(mask, -1), x, ops.cast(-1.0, x.dtype)), axis=1)
            x = ops.where(ops.any(mask, axis=1, keepdims=True), x, ops.zeros_like(x))  # padding words: 0
        else:
            # A word with no characters (padding) still gets one step so the LSTM sees a sequence.
            mask = ops.logical_or(mask, ops.expand_dims(ops.arange(chars) == 0, 0))
            x = self.recurrent(x, mask=mask)
        return ops.reshape(x, (batch, words, ops.shape(x)[-1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.units if self.encoder == "cnn" else 2 * max(1, self.units // 2))

    def get_config(self):
        return {**super().get_config(), "num_characters": self.num_characters, "char_dim": self.char_dim,
                "units": self.units, "encoder": self.encoder}


# === Functional Model ===


@keras.saving.register_keras_serializable(package="dlapps.ner")
class EntityTagger(TaskModel):
    """BiLSTM-CRF sequence tagger (Lample et al. 2016) over word ids, character ids and casing.

    Args:
        vocabulary: normalised words of the preprocessor (without padding and unknown).
        characters: characters of the preprocessor (without padding and unknown).
        tags: tag names in `tag_scheme`; the model scores one per token.
        tag_scheme: ``iob2`` or ``bioes``, the scheme of `tags`.
        embedding_dim: word vector size.
        char_encoder: ``cnn`` or ``lstm``; char_dim, char_units: its sizes.
        casing_dim: casing feature embedding size.
        lstm_units: units of each stacked word-level bidirectional LSTM.
        dropout: dropout on the word features and after each BiLSTM.
        head: ``crf`` (Viterbi decoding) or ``softmax`` (independent per-token choice).
        max_word_length: characters read per word.
    """

    def __init__(
        self,
        vocabulary=(),
        characters=(),
        tags=(),
        tag_scheme="bioes",
        embedding_dim=100,
        char_encoder="cnn",
        char_dim=30,
        char_units=50,
        casing_dim=8,
        lstm_units=(100,),
        dropout=0.5,
        head="crf",
        max_word_length=25,
        **kwargs,
    ):
        if head not in ("crf", "softmax"):
            raise ValueError(f"head must be crf or softmax, got {head!r}")
        # === Layers ===
        preprocessor = TokenFeaturizer(vocabulary, characters, max_word_length, name="preprocessor")
        word_embedding = layers.Embedding(len(vocabulary) + 2, embedding_dim, mask_zero=True, name="word_embedding")
        char_features = CharacterEncoder(len(characters) + 2, char_dim, char_units, char_encoder, name="char_encoder")
        casing_embedding = layers.Embedding(len(CASINGS), casing_dim, name="casing_embedding")
        recurrent = [
            layers.Bidirectional(layers.LSTM(units, return_sequences=True), name=f"bilstm_{i}")
            for i, units in enumerate(lstm_units)
        ]

        # === Functional Model ===
        inputs = {
            "word_ids": keras.Input(shape=(None,), dtype="int64", name="word_ids"),
            "char_ids": keras.Input(shape=(None, None), dtype="int64", name="char_ids"),
            "casing_ids": keras.Input(shape=(None,), dtype="int64", name="casing_ids"),
        }
        x = layers.Concatenate(name="word_features")(
            [word_embedding(inputs["word_ids"]), char_features(inputs["char_ids"]), casing_embedding(inputs["casing_ids"])]
        )
        x = layers.Dropout(dropout, name="feature_dropout")(x)
        # The padding mask is passed by hand: Concatenate's mask is the union of its inputs' masks,
        # all true as soon as one input (the characters, the casing) has none, and the backward
        # LSTM would then read the padding before each sentence (its tags would depend on the batch).
        real_words = ops.not_equal(inputs["word_ids"], 0)
        for i, layer in enumerate(recurrent):
            x = layers.Dropout(dropout, name=f"bilstm_{i}_dropout")(layer(x, mask=real_words))
        # float32 scores keep the CRF's log-sum-exp stable under mixed precision.
        emissions = layers.Dense(len(tags), dtype="float32", name="emissions")(x)
        if head == "crf":
            emissions = ChainCRF(len(tags), dtype="float32", name="crf")(emissions)
        super().__init__(inputs=inputs, outputs=emissions, **kwargs)

        # === Config ===
        self.preprocessor = preprocessor
        self.vocabulary = list(vocabulary)
        self.characters = list(characters)
        self.tags = list(tags)
        self.tag_scheme = tag_scheme
        self.embedding_dim = embedding_dim
        self.char_encoder = char_encoder
        self.char_dim = char_dim
        self.char_units = char_units
        self.casing_dim = casing_dim
        self.lstm_units = list(lstm_units)
        self.dropout = dropout
        self.head = head
        self.max_word_length = max_word_length

    # --- training and decoding -------------------------------------------------------------------

    def _crf_weights(self):
        crf = self.get_layer("crf")
        return crf.transitions, crf.start, crf.end

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """CRF: mean negative log-likelihood per sentence; softmax: cross-entropy per real token."""
        mask = ops.not_equal(x["word_ids"], 0)
        if self.head == "crf":
            loss = ops.mean(crf_negative_log_likelihood(y_pred, y, mask, *self._crf_weights()))
        else:
            maskf = ops.cast(mask, y_pred.dtype)
            per_token = keras.losses.sparse_categorical_crossentropy(y, y_pred, from_logits=True)
            loss = ops.sum(per_token * maskf) / ops.maximum(ops.sum(maskf), 1.0)
        return loss + ops.sum(self.losses) if self.losses else loss

    def decode(self, emissions, mask, with_scores=True):
        """(tag ids, probability of each chosen tag) per token: Viterbi path and its forward-backward
        marginals for the CRF, argmax and softmax probability otherwise. Without scores, the
        CRF skips forward-backward (scores are None)."""
        if self.head == "crf":
            weights = self._crf_weights()
            tags = viterbi_decode(emissions, mask, *weights)
            if not with_scores:
                return tags, None
            probabilities = crf_marginals(emissions, mask, *weights)
        else:
            probabilities = ops.softmax(emissions, axis=-1)
            tags = ops.cast(ops.argmax(emissions, axis=-1), "int32")
        scores = ops.squeeze(ops.take_along_axis(probabilities, tags[..., None], axis=2), -1)
        return tags, scores

    def predict_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        tags, scores = self.decode(self(x, training=False), ops.not_equal(x["word_ids"], 0))
        return {"tags": tags, "scores": scores}

    def predict_tags(self, x):
        """Tag ids only (what scoring needs): the decoding of predict_step without the marginals."""
        return self.decode(self(x, training=False), ops.not_equal(x["word_ids"], 0), with_scores=False)[0]

    def tag_tokens(self, tokens):
        """Tokens (RaggedTensor of strings) -> padded (tag ids, scores) and lengths, in one graph."""
        import tensorflow as tf

        features = self.preprocessor.featurize(tokens)
        outputs = self.predict_step(features)
        lengths = tokens.row_lengths()
        steps = tf.reduce_max(tf.concat([lengths, [0]], 0))
        return outputs["tags"][:, :steps], outputs["scores"][:, :steps], lengths


def normalised_words(words) -> list[str]:
    """`normalise_words` on a Python list: what the word embedding looks each word up as."""
    import tensorflow as tf

    if not words:
        return []
    return [w.decode("utf-8") for w in normalise_words(tf.constant(list(words))).numpy()]


def build_vocabularies(token_lists, max_words: int, extra_words=()) -> tuple[list[str], list[str]]:
    """Normalised words (by frequency, then `extra_words` such as pretrained vectors' words, up to
    `max_words`) and characters of the training tokens, both through the preprocessor's own ops."""
    import collections

    flat = [token for tokens in token_lists for token in tokens]
    vocabulary = rank_vocabulary(collections.Counter(normalised_words(flat)), max_words)
    known = set(vocabulary)
    for word in normalised_words(extra_words):
        if len(vocabulary) >= max_words:
            break
        if word and word not in known and " " not in word:
            known.add(word)
            vocabulary.append(word)
    characters = rank_vocabulary(collections.Counter(ch for token in flat for ch in token[:200]))
    return vocabulary, characters
