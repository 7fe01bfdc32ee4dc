"""The word2vec model: two embedding tables (word vectors and context vectors) trained by
skip-gram or CBOW with negative sampling, with the word lookup attached so that the model (and
the exported SavedModel) maps raw word strings to vectors.

Training keeps Keras' stock ``fit`` (callbacks, checkpoints, --resume) and overrides only
``train_step``: gensim-style plain SGD on the rows a batch touches. The gradients are written out
in closed form and applied with sparse row updates (``scatter_add``); a dense optimizer step would
rewrite both whole tables (vocabulary x dim) on every batch, which is orders of magnitude slower.
Sparse variable updates have no keras.ops equivalent, so the step uses TensorFlow directly.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from dlapps.shared.models import TaskModel

OBJECTIVES = ("skipgram", "cbow")


@keras.saving.register_keras_serializable(package="dlapps.word2vec")
class Word2Vec(TaskModel):
    """Word vectors with negative sampling.

    Args:
        vocabulary: the words, most frequent first (row i of each table is word i).
        counts: corpus count of each word (kept for restrict-vocab evaluation and resuming).
        dim: vector size.
        objective: ``skipgram`` (each context word predicts the centre word, as gensim's sg=1)
            or ``cbow`` (the mean of the context words predicts it, as gensim's cbow_mean=1).
        seed: seed of the initial word vectors.
        row_update_cap: a row's summed update in one batch is scaled down to this many pairs' worth
            when more pairs touch it (0: never). Gensim applies pair updates one after another;
            a batch sums them at one point, which overshoots for words that are in many of its
            pairs (frequent words, tiny vocabularies) and can diverge.

    Calling the model on int word ids returns their word vectors; ``word_vectors(strings)``
    returns (vectors, found) for raw words, zeros where a word is not in the vocabulary.
    """

    def __init__(self, vocabulary=(), counts=None, dim=100, objective="skipgram", seed=0, row_update_cap=256.0, **kwargs):
        super().__init__(**kwargs)
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        self.vocabulary = [str(w) for w in vocabulary]
        self.counts = [int(c) for c in counts] if counts is not None else [0] * len(self.vocabulary)
        self.dim = int(dim)
        self.objective = objective
        self.seed = int(seed)
        self.row_update_cap = float(row_update_cap)
        size = len(self.vocabulary)

        # === Layers ===
        # gensim's initialisation: word vectors uniform in +-0.5/dim, context vectors zero.
        self.word_embedding = layers.Embedding(
            size, self.dim, name="word_embedding",
            embeddings_initializer=keras.initializers.RandomUniform(-0.5 / self.dim, 0.5 / self.dim, seed=self.seed),
        )
        self.context_embedding = layers.Embedding(size, self.dim, embeddings_initializer="zeros", name="context_embedding")
        # index 0 is the out-of-vocabulary bucket, word i is index i + 1
        self.lookup = layers.StringLookup(vocabulary=self.vocabulary, num_oov_indices=1, mask_token=None, name="word_lookup")
        self.word_embedding.build((None,))
        self.context_embedding.build((None,))
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = True

    # === Inference ===

    def call(self, word_ids):
        return self.word_embedding(word_ids)

    def word_ids(self, words):
        """Raw word strings -> row indices, -1 for words outside the vocabulary."""
        return keras.ops.cast(self.lookup(words), "int32") - 1

    def word_vectors(self, words):
        """Raw word strings (any shape) -> (vectors [..., dim], found [...]); zeros where not found."""
        ids = self.word_ids(words)
        found = ids >= 0
        vectors = self.word_embedding(keras.ops.maximum(ids, 0))
        return vectors * keras.ops.cast(found, vectors.dtype)[..., None], found

    def vectors(self) -> np.ndarray:
        """The word vector table as NumPy (what gets written out and evaluated)."""
        return keras.ops.convert_to_numpy(self.word_embedding.embeddings)

    # === Training ===

    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, batch):
        import tensorflow as tf

        tokens, mask = batch["tokens"], batch["mask"]
        negatives, rate = batch["negatives"], batch["learning_rate"]
        window = tf.shape(mask)[1] // 2  # a batch's own reach (the data may draw one per batch)
        size = tf.shape(mask)[0]
        groups = tf.shape(negatives)[0]  # consecutive centres share a draw of negatives: size = groups * share
        share = size // groups
        offsets = tf.concat([tf.range(-window, 0), tf.range(1, window + 1)], axis=0)
        positions = tf.range(size)[:, None] + window + offsets[None, :]  # [B, 2W]: each context word's place in the run
        word_table = self.word_embedding.embeddings.value  # tf.Variables: gathers and scatters stay sparse
        context_table = self.context_embedding.embeddings.value

        # the batch is a run of consecutive words: gather each word's vector from the table once,
        # then each (centre, context) pair's from the small run, not from the table
        centers = tokens[window : window + size]
        run = tf.gather(word_table, tokens)  # [B + 2W, D]
        inputs = tf.gather(run, positions)  # [B, 2W, D]
        positive = tf.gather(context_table, centers)  # [B, D]: each centre is its own true target
        negative = tf.gather(context_table, negatives)  # [G, K, D]: one draw per group of `share` centres
        # a negative that happens to be the centre word is skipped, as gensim does
        negative_weights = tf.cast(negatives[:, None, :] != tf.reshape(centers, [groups, share, 1]), tf.float32)  # [G, S, K]

        if self.objective == "skipgram":
            # every context word predicts the centre word: one logistic regression per (context, target)
            grouped = tf.reshape(inputs, [groups, -1, self.dim])  # [G, S*2W, D]: a group's context words
            positive_scores = tf.einsum("bwd,bd->bw", inputs, positive)
            negative_scores = tf.einsum("gpd,gkd->gpk", grouped, negative)
            negative_pairs = tf.reshape(mask[:, :, None] * tf.reshape(negative_weights, [size, 1, -1]), tf.shape(negative_scores))
            positive_step = (1.0 - tf.sigmoid(positive_scores)) * mask * rate  # [B, 2W]
            negative_step = -tf.sigmoid(negative_scores) * negative_pairs * rate  # [G, S*2W, K]
            input_updates = (positive_step[:, :, None] * positive[:, None, :]
                             + tf.reshape(tf.einsum("gpk,gkd->gpd", negative_step, negative), tf.shape(inputs)))
            positive_updates = tf.einsum("bw,bwd->bd", positive_step, inputs)
            negative_updates = tf.einsum("gpk,gpd->gkd", negative_step, grouped)
            positive_weights, input_pairs = mask, mask
            pairs = tf.reduce_sum(mask)
        else:
            # the mean of the context vectors predicts the centre word (gensim's cbow_mean=1)
            count = tf.reduce_sum(mask, axis=1)
            has_context = tf.cast(count > 0, tf.float32)  # [B]
            hidden = tf.einsum("bw,bwd->bd", mask, inputs) / tf.maximum(count, 1.0)[:, None]
            grouped = tf.reshape(hidden, [groups, share, self.dim])
            positive_scores = tf.reduce_sum(hidden * positive, axis=1)  # [B]
            negative_scores = tf.einsum("gsd,gkd->gsk", grouped, negative)
            negative_pairs = negative_weights * tf.reshape(has_context, [groups, share, 1])
            positive_step = (1.0 - tf.sigmoid(positive_scores)) * has_context * rate
            negative_step = -tf.sigmoid(negative_scores) * negative_pairs * rate
            # each context word receives the whole error, not a 1/count share: gensim's (and the
            # original C tool's) cbow_mean=1 update
            hidden_update = positive_step[:, None] * positive + tf.reshape(tf.einsum("gsk,gkd->gsd", negative_step, negative), [size, self.dim])
            input_updates = hidden_update[:, None, :] * mask[:, :, None]
            positive_updates = positive_step[:, None] * hidden
            negative_updates = tf.einsum("gsk,gsd->gkd", negative_step, grouped)
            positive_weights, input_pairs = has_context, mask
            pairs = tf.reduce_sum(has_context)

        # each pair's update (and pair count) lands back on its context word's place in the run
        def to_run(per_pair):
            flat = tf.reshape(per_pair, tf.concat([[-1], tf.shape(per_pair)[2:]], axis=0))
            return tf.math.unsorted_segment_sum(flat, tf.reshape(positions, [-1]), size + 2 * window)

        # log-likelihood of the batch (for the curves), from the scores the update used
        loss = -(tf.reduce_sum(tf.math.log_sigmoid(positive_scores) * positive_weights)
                 + tf.reduce_sum(tf.math.log_sigmoid(-negative_scores) * negative_pairs)) / tf.maximum(pairs, 1.0)
        self._add_rows(word_table, tokens, to_run(input_updates), to_run(input_pairs))
        positive_counts = tf.reduce_sum(mask, axis=1) if self.objective == "skipgram" else has_context
        self._add_rows(context_table, tf.concat([centers, tf.reshape(negatives, [-1])], axis=0),
                       tf.concat([positive_updates, tf.reshape(negative_updates, [-1, self.dim])], axis=0),
                       tf.concat([positive_counts, tf.reshape(tf.reduce_sum(tf.reshape(negative_pairs, [groups, -1, tf.shape(negatives)[1]]), axis=1), [-1])], axis=0))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result(), "learning_rate": rate}

    def _add_rows(self, table, ids, updates, pairs):
        """table[ids] += updates (duplicate ids add up), each row's total scaled down to
        `row_update_cap` pairs' worth when more pairs contributed to it. The pair counts are summed
        into a vocabulary-sized vector rather than by tf.unique + segment sums of the updates:
        those walk the rows twice more, one row at a time, and were most of the step's time."""
        import tensorflow as tf

        if self.row_update_cap > 0:
            counts = tf.math.unsorted_segment_sum(pairs, ids, len(self.vocabulary))
            updates *= (1.0 / tf.maximum(1.0, tf.gather(counts, ids) / self.row_update_cap))[:, None]
        table.scatter_add(tf.IndexedSlices(updates, ids))
