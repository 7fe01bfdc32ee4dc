"""The sentiment model: a BiLSTM classifier over token ids, with its text preprocessor attached.

Training runs the preprocessor in tf.data (strings never enter the distributed training step,
which keeps MirroredStrategy/TPU happy and tokenises in parallel); ``predict`` and the exported
SavedModel chain preprocessor and classifier, so both take raw strings.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from dlapps.shared.layers import MaskedPooling
from dlapps.shared.models import TaskModel

STANDARDIZE = "lower_and_strip_punctuation"


@keras.saving.register_keras_serializable(package="dlapps.sentiment")
class TextPreprocessor(layers.Layer):
    """Raw strings -> int token ids: lower-case, strip punctuation, split on whitespace, look up
    `vocabulary` (0 = padding, 1 = out of vocabulary), keep the first `max_length` tokens."""

    def __init__(self, vocabulary, max_length=100, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary = list(vocabulary)
        self.max_length = int(max_length)
        self.vectorizer = layers.TextVectorization(standardize=STANDARDIZE, vocabulary=self.vocabulary, name="vectorizer")

    def call(self, texts):
        ids = self.vectorizer(texts)[:, : self.max_length]
        # A text with no token ("", "!!!") becomes one out-of-vocabulary token, so every row has
        # a step for the LSTM (an all-padding row, or a batch of zero width, has none).
        ids = ops.pad(ids, [[0, 0], [0, 1]])
        empty = ops.all(ops.equal(ids, 0), axis=1, keepdims=True)
        first = ops.arange(ops.shape(ids)[1]) == 0
        return ops.where(ops.logical_and(empty, first), ops.ones_like(ids), ids)

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary, "max_length": self.max_length}


@keras.saving.register_keras_serializable(package="dlapps.sentiment")
class SentimentClassifier(TaskModel):
    """BiLSTM text classifier.

    Args:
        vocabulary: tokens of the preprocessor (without the padding and OOV entries).
        labels: class names; the output has one probability per name.
        embedding_dim: word vector size.
        lstm_units: units of each stacked bidirectional LSTM.
        pooling: ``max``, ``mean`` or ``attention`` over the final LSTM states.
        dropout: dropout on the embeddings and before the classifier.
        max_length: tokens kept per text.
    """

    def __init__(
        self,
        vocabulary=(),
        labels=(),
        embedding_dim=128,
        lstm_units=(64,),
        pooling="max",
        dropout=0.5,
        max_length=100,
        **kwargs,
    ):
        # === Layers ===
        preprocessor = TextPreprocessor(vocabulary, max_length, name="preprocessor")
        embedding = layers.Embedding(len(vocabulary) + 2, embedding_dim, mask_zero=True, name="token_embedding")
        recurrent = [
            layers.Bidirectional(layers.LSTM(units, return_sequences=True), name=f"bilstm_{i}")
            for i, units in enumerate(lstm_units)
        ]

        # === Functional Model ===
        token_ids = keras.Input(shape=(None,), dtype="int64", name="token_ids")
        x = embedding(token_ids)
        x = layers.SpatialDropout1D(dropout, name="embedding_dropout")(x)
        for layer in recurrent:
            x = layer(x)
        x = MaskedPooling(pooling, name="pooling")(x)
        x = layers.Dropout(dropout, name="classifier_dropout")(x)
        # float32 output keeps softmax stable under mixed precision.
        probabilities = layers.Dense(len(labels), activation="softmax", dtype="float32", name="classifier")(x)
        super().__init__(inputs=token_ids, outputs=probabilities, **kwargs)

        # === Config ===
        self.preprocessor = preprocessor
        self.vocabulary = list(vocabulary)
        self.labels = list(labels)
        self.embedding_dim = embedding_dim
        self.lstm_units = list(lstm_units)
        self.pooling = pooling
        self.dropout = dropout
        self.max_length = max_length

    def classify_texts(self, texts):
        """Raw strings (a 1-D string tensor) -> class probabilities, in one graph."""
        return self(self.preprocessor(texts), training=False)

    def classify_texts_batched(self, texts: list[str], batch_size: int = 64):
        """Class probabilities of a list of texts as a NumPy array, tokenised per batch."""
        import numpy as np
        import tensorflow as tf

        batches = tf.data.Dataset.from_tensor_slices(np.asarray(texts, dtype=object)).batch(batch_size)
        return self.predict(batches.map(self.preprocessor), verbose=0)


def build_vocabulary(texts, max_tokens: int) -> list[str]:
    """The most frequent tokens of `texts` after the preprocessor's standardisation, most frequent first."""
    adapter = layers.TextVectorization(max_tokens=max_tokens, standardize=STANDARDIZE)
    adapter.adapt(list(texts), batch_size=1024)
    return [token for token in adapter.get_vocabulary() if token not in ("", "[UNK]")]
