"""The sentiment model: raw strings in, class probabilities out.

TextVectorization lives inside the model, so the saved .keras file and the exported SavedModel
take the same raw text that ``predict`` does, with no separate preprocessing to keep in step.
"""

from __future__ import annotations

import keras
from keras import layers

from ...shared.layers import MaskedPooling, Truncate


@keras.saving.register_keras_serializable(package="dlapps.sentiment")
class SentimentClassifier(keras.Model):
    """BiLSTM text classifier over a fixed vocabulary.

    Args:
        vocabulary: tokens of the TextVectorization layer (without the padding and OOV entries).
        labels: class names; the output has one probability per name.
        embedding_dim: word vector size.
        lstm_units: units of each stacked bidirectional LSTM.
        pooling: ``max``, ``mean`` or ``attention`` over the final LSTM states.
        dropout: dropout on the embeddings and before the classifier.
        max_length: tokens kept per text.
    """

    def __init__(
        self,
        vocabulary,
        labels,
        embedding_dim=128,
        lstm_units=(64,),
        pooling="max",
        dropout=0.5,
        max_length=100,
        **kwargs,
    ):
        # === Layers ===
        vectorizer = layers.TextVectorization(
            standardize="lower_and_strip_punctuation", vocabulary=list(vocabulary), name="vectorizer"
        )
        embedding = layers.Embedding(len(vocabulary) + 2, embedding_dim, mask_zero=True, name="token_embedding")
        recurrent = [
            layers.Bidirectional(layers.LSTM(units, return_sequences=True), name=f"bilstm_{i}")
            for i, units in enumerate(lstm_units)
        ]

        # === Functional Model ===
        text = keras.Input(shape=(), dtype="string", name="text")
        x = Truncate(max_length, name="truncate")(vectorizer(text))
        x = embedding(x)
        x = layers.SpatialDropout1D(dropout, name="embedding_dropout")(x)
        for layer in recurrent:
            x = layer(x)
        x = MaskedPooling(pooling, name="pooling")(x)
        x = layers.Dropout(dropout, name="classifier_dropout")(x)
        # float32 output keeps softmax stable under mixed precision.
        probabilities = layers.Dense(len(labels), activation="softmax", dtype="float32", name="classifier")(x)
        super().__init__(inputs=text, outputs=probabilities, **kwargs)

        # === Config ===
        self.vocabulary = list(vocabulary)
        self.labels = list(labels)
        self.embedding_dim = embedding_dim
        self.lstm_units = list(lstm_units)
        self.pooling = pooling
        self.dropout = dropout
        self.max_length = max_length

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "vocabulary": self.vocabulary,
            "labels": self.labels,
            "embedding_dim": self.embedding_dim,
            "lstm_units": self.lstm_units,
            "pooling": self.pooling,
            "dropout": self.dropout,
            "max_length": self.max_length,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_vocabulary(texts, max_tokens: int) -> list[str]:
    """The most frequent tokens of `texts` after the model's own standardisation, most frequent first."""
    adapter = layers.TextVectorization(max_tokens=max_tokens, standardize="lower_and_strip_punctuation")
    adapter.adapt(list(texts), batch_size=1024)
    return [token for token in adapter.get_vocabulary() if token not in ("", "[UNK]")]
