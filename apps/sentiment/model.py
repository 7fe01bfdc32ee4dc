"""The sentiment model: a BiLSTM or CNN classifier over token ids, with its text preprocessor attached.

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
class ConvEncoder(layers.Layer):
    """Kim (2014): parallel 1-D convolutions of several word widths, ReLU, max over time of each
    map, concatenated. Padding positions are zeroed first and skipped by the max, so a text's
    vector does not depend on how much padding its batch has."""

    def __init__(self, filter_widths=(3, 4, 5), feature_maps=100, **kwargs):
        super().__init__(**kwargs)
        self.filter_widths = [int(w) for w in filter_widths]
        self.feature_maps = int(feature_maps)
        self.convolutions = [
            layers.Conv1D(self.feature_maps, width, padding="same", activation="relu", name=f"conv_{width}")
            for width in self.filter_widths
        ]
        self.pooling = MaskedPooling("max", name="max_over_time")
        self.supports_masking = True

    def build(self, input_shape):
        for convolution in self.convolutions:
            convolution.build(input_shape)

    def call(self, inputs, mask=None):
        if mask is not None:
            inputs = inputs * ops.cast(ops.expand_dims(mask, -1), inputs.dtype)
        return ops.concatenate([self.pooling(c(inputs), mask=mask) for c in self.convolutions], axis=-1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.feature_maps * len(self.filter_widths))

    def get_config(self):
        return {**super().get_config(), "filter_widths": self.filter_widths, "feature_maps": self.feature_maps}


@keras.saving.register_keras_serializable(package="dlapps.sentiment")
class SentimentClassifier(TaskModel):
    """BiLSTM or CNN text classifier, optionally an ensemble of independently initialised members.

    Args:
        vocabulary: tokens of the preprocessor (without the padding and OOV entries).
        labels: class names; the output has one probability per name.
        embedding_dim: word vector size.
        arch: ``bilstm`` (stacked bidirectional LSTMs, then `pooling`) or ``cnn`` (ConvEncoder).
        lstm_units: units of each stacked bidirectional LSTM.
        filter_widths, feature_maps: the CNN's convolutions.
        pooling: ``max``, ``mean`` or ``attention`` over the final LSTM states.
        dropout: dropout before the classifier.
        embedding_dropout: SpatialDropout1D on the embeddings (None: `dropout`, as before it existed).
        max_length: tokens kept per text.
        members: copies with their own weights. One member outputs (batch, classes); more output
            (batch, members, classes), each trained on its own cross-entropy (independent models,
            not one model of the mean), and predictions average their probabilities.
    """

    def __init__(
        self,
        vocabulary=(),
        labels=(),
        embedding_dim=128,
        arch="bilstm",
        lstm_units=(64,),
        filter_widths=(3, 4, 5),
        feature_maps=100,
        pooling="max",
        dropout=0.5,
        embedding_dropout=None,
        max_length=100,
        members=1,
        **kwargs,
    ):
        if arch not in ("bilstm", "cnn"):
            raise ValueError(f"arch must be bilstm or cnn, got {arch!r}")
        embedding_dropout = dropout if embedding_dropout is None else embedding_dropout
        # === Layers ===
        preprocessor = TextPreprocessor(vocabulary, max_length, name="preprocessor")

        # === Functional Model ===
        token_ids = keras.Input(shape=(None,), dtype="int64", name="token_ids")
        outputs = []
        # keras.saving.load_model tracks the objects it serializes by id() (ObjectSharingScope), and
        # Bidirectional serializes the LSTM it wraps: an LSTM freed here and the next one allocated at
        # its address were taken for one object (a forward layer loaded as the earlier backward one,
        # "should have different go_backwards"). Holding every LSTM until the model is built keeps ids apart.
        wrapped = []
        for member in range(members):
            suffix = f"_{member}" if member else ""  # member 0 keeps the single model's layer names
            x = layers.Embedding(len(vocabulary) + 2, embedding_dim, mask_zero=True, name=f"token_embedding{suffix}")(token_ids)
            x = layers.SpatialDropout1D(embedding_dropout, name=f"embedding_dropout{suffix}")(x)
            if arch == "cnn":
                x = ConvEncoder(filter_widths, feature_maps, name=f"cnn{suffix}")(x)
            else:
                for i, units in enumerate(lstm_units):
                    wrapped.append(layers.LSTM(units, return_sequences=True))
                    x = layers.Bidirectional(wrapped[-1], name=f"bilstm_{i}{suffix}")(x)
                x = MaskedPooling(pooling, name=f"pooling{suffix}")(x)
            x = layers.Dropout(dropout, name=f"classifier_dropout{suffix}")(x)
            # float32 output keeps softmax stable under mixed precision.
            outputs.append(layers.Dense(len(labels), activation="softmax", dtype="float32", name=f"classifier{suffix}")(x))
        if members > 1:
            stacked = [layers.Reshape((1, len(labels)), dtype="float32", name=f"member_{m}")(o) for m, o in enumerate(outputs)]
            probabilities = layers.Concatenate(axis=1, dtype="float32", name="members")(stacked)
        else:
            probabilities = outputs[0]
        super().__init__(inputs=token_ids, outputs=probabilities, **kwargs)
        del wrapped

        # === Config ===
        self.preprocessor = preprocessor
        self.vocabulary = list(vocabulary)
        self.labels = list(labels)
        self.embedding_dim = embedding_dim
        self.arch = arch
        self.lstm_units = list(lstm_units)
        self.pooling = pooling
        self.dropout = dropout
        self.max_length = max_length
        self.members = int(members)

    def member_layer_names(self, member: int) -> list[str]:
        """Names of one member's layers that hold weights, in the same order for every member."""
        suffix = f"_{member}" if member else ""
        encoder = [f"cnn{suffix}"] if self.arch == "cnn" else [f"bilstm_{i}{suffix}" for i in range(len(self.lstm_units))] + [f"pooling{suffix}"]
        return [f"token_embedding{suffix}", *encoder, f"classifier{suffix}"]

    def embedding_layers(self):
        return [layer for layer in self.layers if layer.name.startswith("token_embedding")]

    def average(self, outputs):
        """(batch, classes) probabilities from the model's output: the members' mean."""
        return ops.mean(outputs, axis=1) if self.members > 1 else outputs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean over members of each member's own cross-entropy (one member: the plain loss)."""
        if self.members > 1:
            y = ops.repeat(ops.expand_dims(y, 1), self.members, axis=1)
        loss = ops.mean(keras.losses.sparse_categorical_crossentropy(y, y_pred))
        return loss + ops.sum(self.losses) if self.losses else loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, self.average(y_pred), sample_weight)

    def predict_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        return self.average(self(x, training=False))

    def classify_texts(self, texts):
        """Raw strings (a 1-D string tensor) -> class probabilities, in one graph."""
        return self.average(self(self.preprocessor(texts), training=False))

    def classify_texts_batched(self, texts: list[str], batch_size: int = 64):
        """Class probabilities of a list of texts as a NumPy array, tokenised per batch."""
        import numpy as np
        import tensorflow as tf

        batches = tf.data.Dataset.from_tensor_slices(np.asarray(texts, dtype=object)).batch(batch_size)
        return self.predict(batches.map(self.preprocessor), verbose=0)


def merge_models(models: list[SentimentClassifier]) -> SentimentClassifier:
    """One model whose members are the given, separately trained models (a seed ensemble that
    saves and exports as one model). Their vocabularies may differ (each run carves its own
    validation split): the merged preprocessor reads their union, and a word a member never saw
    gets that member's out-of-vocabulary vector, so every member scores as it did alone."""
    import numpy as np

    def shape(model):  # everything but the vocabulary and the member count must agree
        skip = ("name", "trainable", "vocabulary", "members")
        return {k: v for k, v in model.get_config().items() if k not in skip}

    first = models[0]
    for other in models[1:]:
        for name, value in shape(first).items():
            if shape(other)[name] != value:
                raise ValueError(f"models to merge differ in {name}: {value!r} and {shape(other)[name]!r}")
    singles = [(model, member) for model in models for member in range(model.members)]
    vocabulary = list(dict.fromkeys(word for model in models for word in model.vocabulary))
    merged = SentimentClassifier(**shape(first), vocabulary=vocabulary, members=len(singles))
    for index, (model, member) in enumerate(singles):
        own = {word: i + 2 for i, word in enumerate(model.vocabulary)}
        rows = np.array([0, 1] + [own.get(word, 1) for word in vocabulary])  # 0 padding, 1 out of vocabulary
        for source, target in zip(model.member_layer_names(member), merged.member_layer_names(index)):
            weights = model.get_layer(source).get_weights()
            if source.startswith("token_embedding"):
                weights = [weights[0][rows]]
            merged.get_layer(target).set_weights(weights)
    return merged


def build_vocabulary(texts, max_tokens: int) -> list[str]:
    """The most frequent tokens of `texts` after the preprocessor's standardisation, most frequent first."""
    adapter = layers.TextVectorization(max_tokens=max_tokens, standardize=STANDARDIZE)
    adapter.adapt(list(texts), batch_size=1024)
    return [token for token in adapter.get_vocabulary() if token not in ("", "[UNK]")]
