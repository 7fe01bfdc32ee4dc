"""The charlm model: a character-level language model (stacked LSTM/GRU or a small causal
Transformer) over character ids, with its string -> ids preprocessor attached.

Training runs the preprocessor in tf.data (strings never enter the training step). Scoring and
sampling are TensorFlow graph functions on the model (``text_log_likelihood``, ``generation_step``,
``sample_next``), shared by ``predict``/``evaluate`` and the exported SavedModel, so the served
``score`` and ``generate`` compute exactly what the CLI does.

Scoring convention (one definition everywhere): a text of n characters is read through windows of
``sequence_length`` (L) inputs that overlap by half, window k reading ``ids[kS : kS+L]`` (S = L // 2)
and predicting the characters after them. Every character after the first is predicted once: the
first L by the first window, each later one by the window that holds it in its last S positions,
so it is predicted from at least L - S preceding characters (cut, non-overlapping windows would
predict the first characters of each window from almost nothing, which measures the cut, not the
model). Perplexity is exp(mean negative log-likelihood per predicted character); bits per
character is that mean / ln 2.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from dlapps.shared.models import TaskModel

from .config import ARCHITECTURES

OOV_TOKEN = "[OOV]"


@keras.saving.register_keras_serializable(package="dlapps.charlm")
class CharPreprocessor(layers.Layer):
    """Strings -> character ids (Unicode code points looked up in `vocabulary`; id 0 is the
    out-of-vocabulary symbol, so any text maps to ids). A 1-D batch gives a ragged (batch, chars)
    tensor, a scalar string a 1-D tensor."""

    def __init__(self, vocabulary, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary = list(vocabulary)
        self.lookup = layers.StringLookup(
            vocabulary=self.vocabulary, num_oov_indices=1, mask_token=None, oov_token=OOV_TOKEN, name="lookup"
        )

    def call(self, texts):
        import tensorflow as tf

        chars = tf.strings.unicode_split(texts, "UTF-8")
        if isinstance(chars, tf.RaggedTensor):  # look up the flat characters, keep the rows
            return chars.with_flat_values(tf.cast(self.lookup(chars.flat_values), "int32"))
        return tf.cast(self.lookup(chars), "int32")

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary}


@keras.saving.register_keras_serializable(package="dlapps.charlm")
class CharLanguageModel(TaskModel):
    """Next-character logits for every position of a (batch, time) tensor of character ids.

    Args:
        vocabulary: the characters (each one code point); id 0 is reserved for out-of-vocabulary,
            so the output has ``len(vocabulary) + 1`` classes.
        arch: ``lstm`` or ``gru`` (stacked recurrent layers of `units`) or ``transformer``
            (`num_layers` keras-hub TransformerDecoder blocks with learned position embeddings).
        sequence_length: training window; also the transformer's context and the scoring window.
        embedding_dim: character vector size (the transformer's model width).
        units: units of each stacked recurrent layer.
        num_layers, num_heads: transformer depth and attention heads.
        dropout: dropout after the embedding and after every layer.
    """

    def __init__(
        self,
        vocabulary=(),
        arch="lstm",
        sequence_length=128,
        embedding_dim=64,
        units=(256,),
        num_layers=4,
        num_heads=4,
        dropout=0.1,
        **kwargs,
    ):
        if arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
        vocabulary_size = len(vocabulary) + 1

        # === Layers ===
        preprocessor = CharPreprocessor(vocabulary, name="preprocessor")
        if arch == "transformer":
            import keras_hub

            embedding = keras_hub.layers.TokenAndPositionEmbedding(
                vocabulary_size, sequence_length, embedding_dim, name="char_embedding"
            )
            # Pre-norm blocks (GPT-2 style) train stably without warm-up; a final norm closes them.
            blocks = [
                keras_hub.layers.TransformerDecoder(
                    4 * embedding_dim, num_heads, dropout=dropout, normalize_first=True, name=f"transformer_{i}"
                )
                for i in range(num_layers)
            ]
            blocks.append(layers.LayerNormalization(epsilon=1e-5, name="final_norm"))
        else:
            embedding = layers.Embedding(vocabulary_size, embedding_dim, name="char_embedding")
            recurrent = layers.LSTM if arch == "lstm" else layers.GRU
            blocks = [recurrent(n, return_sequences=True, name=f"{arch}_{i}") for i, n in enumerate(units)]
        head = layers.Dense(vocabulary_size, dtype="float32", name="next_char_logits")  # float32 keeps softmax stable

        # === Functional Model ===
        char_ids = keras.Input(shape=(None,), dtype="int32", name="char_ids")
        x = layers.Dropout(dropout, name="embedding_dropout")(embedding(char_ids))
        for i, block in enumerate(blocks):
            x = block(x)
            if arch != "transformer":  # the transformer blocks carry their own dropout
                x = layers.Dropout(dropout, name=f"dropout_{i}")(x)
        logits = head(x)
        super().__init__(inputs=char_ids, outputs=logits, **kwargs)

        # === Config ===
        self.preprocessor = preprocessor
        self.vocabulary = list(vocabulary)
        self.vocabulary_size = vocabulary_size
        self.arch = arch
        self.sequence_length = int(sequence_length)
        self.embedding_dim = int(embedding_dim)
        self.units = [int(u) for u in units]
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.dropout = float(dropout)

    # --- scoring ---------------------------------------------------------------------------------

    def windows(self, ids):
        """1-D ids of one text -> (inputs, targets, weights), each (windows, sequence_length): the
        half-overlapping scoring windows of the module docstring; weight 1 marks the positions a
        window scores, 0 the context it only reads and the padding of the last one."""
        import tensorflow as tf

        length = self.sequence_length
        stride = max(length // 2, 1)
        predicted = tf.maximum(tf.size(ids) - 1, 0)
        beyond_first = tf.maximum(predicted - length, 0)
        count = tf.where(predicted > 0, 1 + (beyond_first + stride - 1) // stride, 0)
        span = (count - 1) * stride + length  # >= predicted; with no window, length - stride >= 0

        def frames(values):
            return tf.signal.frame(tf.pad(values, [[0, span - predicted]]), length, stride)

        scored = tf.where(
            tf.range(count)[:, None] == 0, True, tf.range(length)[None, :] >= length - stride
        )  # window 0 scores all its positions, later ones their last `stride`
        weights = frames(tf.ones([predicted], "float32")) * tf.cast(scored, "float32")
        return frames(ids[:predicted]), frames(ids[1 : predicted + 1]), weights

    def window_log_likelihood(self, inputs, targets, weights):
        """Sum of log p(target | the preceding characters of its window) over the positions `weights` marks, in nats."""
        logits = self(inputs, training=False)
        nll = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
        return -ops.sum(nll * weights)

    def text_log_likelihood(self, text):
        """One string (scalar) -> (log-likelihood in nats, number of predicted characters)."""
        import tensorflow as tf

        inputs, targets, weights = self.windows(self.preprocessor(text))
        return self.window_log_likelihood(inputs, targets, weights), tf.reduce_sum(weights)

    # --- generation -------------------------------------------------------------------------------

    @property
    def start_id(self) -> int:
        """What an empty prompt starts from: a line break, or the OOV id when there is none."""
        return self.vocabulary.index("\n") + 1 if "\n" in self.vocabulary else 0

    def initial_state(self, batch_size):
        """Generation state before the first character: zero recurrent states, or for the
        transformer an empty (batch, 0) history of ids."""
        import tensorflow as tf

        if self.arch == "transformer":
            return [tf.zeros([batch_size, 0], "int32")]
        states = []
        for units in self.units:
            zeros = tf.zeros([batch_size, units], self.compute_dtype)
            states.append([zeros, zeros] if self.arch == "lstm" else [zeros])
        return states

    def generation_step(self, ids, state):
        """Feeds one character per row ((batch,) ids) and returns (next-character logits, state).

        Recurrent models step their cells with carried states (the trained layers' own weights),
        so each character costs one step; the transformer re-runs its last `sequence_length`
        characters, its bounded context.
        """
        import tensorflow as tf

        if self.arch == "transformer":
            history = tf.concat([state[0], ids[:, None]], axis=1)[:, -self.sequence_length :]
            return self(history, training=False)[:, -1], [history]
        x = self.get_layer("char_embedding")(ids)
        new_state = []
        for i, cell_state in enumerate(state):
            x, cell_state = self.get_layer(f"{self.arch}_{i}").cell(x, cell_state, training=False)
            new_state.append(list(cell_state) if isinstance(cell_state, (list, tuple)) else [cell_state])
        return self.get_layer("next_char_logits")(x), new_state

    def sample_next(self, logits, temperature, top_k, seed):
        """Samples (batch,) ids from logits at `temperature`, among the `top_k` most likely
        (0: all), never the OOV symbol. `seed` is a stateless seed of shape (2,): the same seed
        gives the same character."""
        import tensorflow as tf

        logits = tf.cast(logits, "float32")
        logits = tf.concat([tf.fill([tf.shape(logits)[0], 1], -1e9), logits[:, 1:]], axis=1)
        k = tf.minimum(tf.where(top_k > 0, top_k, self.vocabulary_size), self.vocabulary_size)
        threshold = tf.math.top_k(logits, k=k).values[:, -1:]
        logits = tf.where(logits < threshold, -1e9, logits) / temperature
        return tf.cast(tf.random.stateless_categorical(logits, 1, seed)[:, 0], "int32")

    def generate_graph(self, prompt, length, temperature, top_k, seed):
        """The whole of generation in one graph (a tf.while_loop), for the SavedModel: reads the
        prompt, then samples `length` characters. Returns the generated text (without the prompt)."""
        import tensorflow as tf

        prompt_ids = self.prompt_ids(prompt)
        state = self.initial_state(1)
        # Read all prompt characters but the last; the loop feeds the last and samples from there.
        def read(i, state):
            _, state = self.generation_step(prompt_ids[i][None], state)
            return i + 1, state

        def invariant(structure):
            return tf.nest.map_structure(lambda t: tf.TensorShape([None] * t.shape.rank), structure)

        _, state = tf.while_loop(
            lambda i, _: i < tf.size(prompt_ids) - 1, read, (tf.constant(0), state),
            shape_invariants=(tf.TensorShape([]), invariant(state)),
        )

        def sample(i, last, state, generated):
            logits, state = self.generation_step(last, state)
            last = self.sample_next(logits, temperature, top_k, tf.stack([seed, tf.cast(i, "int64")]))
            return i + 1, last, state, generated.write(i, last[0])

        generated = tf.TensorArray("int32", size=length)
        _, _, _, generated = tf.while_loop(
            lambda i, *_: i < length, sample, (tf.constant(0), prompt_ids[-1:], state, generated),
            shape_invariants=(tf.TensorShape([]), tf.TensorShape([None]), invariant(state), None),
        )
        return self.ids_to_text(generated.stack())

    def prompt_ids(self, prompt):
        """A scalar prompt string -> its 1-D ids; an empty prompt starts from `start_id`."""
        import tensorflow as tf

        ids = self.preprocessor(prompt)
        return tf.cond(tf.size(ids) > 0, lambda: ids, lambda: tf.constant([self.start_id], "int32"))

    def ids_to_text(self, ids):
        """1-D ids -> one string (the OOV id, never sampled, would show as nothing)."""
        import tensorflow as tf

        table = tf.constant([""] + self.vocabulary)
        return tf.strings.reduce_join(tf.gather(table, ids))
