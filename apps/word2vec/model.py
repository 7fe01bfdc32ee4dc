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
        window = mask.shape[1] // 2
        size = tf.shape(mask)[0]
        offsets = [o for o in range(-window, window + 1) if o]
        word_table = self.word_embedding.embeddings.value  # tf.Variables: gathers and scatters stay sparse
        context_table = self.context_embedding.embeddings.value

        # the batch is a run of consecutive words: gather each word's vector once, then view the
        # run through each context offset instead of gathering every (centre, context) pair
        centers = tokens[window : window + size]
        run = tf.gather(word_table, tokens)  # [B + 2W, D]
        inputs = tf.stack([run[window + o : window + o + size] for o in offsets], axis=1)  # [B, 2W, D]
        targets = tf.concat([centers[:, None], negatives], axis=1)  # [B, 1 + K]: the true word, then negatives
        labels = tf.concat([tf.ones_like(centers[:, None], tf.float32), tf.zeros_like(negatives, tf.float32)], axis=1)
        # a negative that happens to be the centre word is skipped, as gensim does
        weights = tf.concat([tf.ones_like(centers[:, None], tf.float32),
                             tf.cast(negatives != centers[:, None], tf.float32)], axis=1)
        outputs = tf.gather(context_table, targets)  # [B, 1 + K, D]

        if self.objective == "skipgram":
            # every context word predicts the centre word: one logistic regression per (context, target)
            scores = tf.einsum("bwd,bkd->bwk", inputs, outputs)
            pair_weights = mask[:, :, None] * weights[:, None, :]
            labels_ = labels[:, None, :]
            step = (labels_ - tf.sigmoid(scores)) * pair_weights * rate
            input_updates = tf.einsum("bwk,bkd->bwd", step, outputs)
            output_updates = tf.einsum("bwk,bwd->bkd", step, inputs)
            pairs = tf.reduce_sum(mask)
            output_pairs = tf.reduce_sum(mask, axis=1, keepdims=True) * weights  # [B, 1 + K]
        else:
            # the mean of the context vectors predicts the centre word (gensim's cbow_mean=1)
            count = tf.reduce_sum(mask, axis=1, keepdims=True)
            has_context = tf.cast(count > 0, tf.float32)
            count = tf.maximum(count, 1.0)
            hidden = tf.einsum("bw,bwd->bd", mask, inputs) / count
            scores = tf.einsum("bd,bkd->bk", hidden, outputs)
            pair_weights, labels_ = weights * has_context, labels
            step = (labels_ - tf.sigmoid(scores)) * pair_weights * rate
            # each context word receives the whole error, not a 1/count share: gensim's (and the
            # original C tool's) cbow_mean=1 update
            hidden_update = tf.einsum("bk,bkd->bd", step, outputs)
            input_updates = hidden_update[:, None, :] * mask[:, :, None]
            output_updates = step[:, :, None] * hidden[:, None, :]
            pairs = tf.reduce_sum(has_context)
            output_pairs = pair_weights
        # each context offset's updates (and pair counts) land back on the run's positions
        def to_run(per_offset):
            return tf.add_n([tf.pad(per_offset[:, j], [[window + o, window - o]] + [[0, 0]] * (per_offset.shape.rank - 2))
                             for j, o in enumerate(offsets)])

        run_updates, run_pairs = to_run(input_updates), to_run(mask)

        # log-likelihood of the batch (for the curves), from the scores the update used
        signed = tf.where(labels_ > 0, scores, -scores)
        loss = -tf.reduce_sum(tf.math.log_sigmoid(signed) * pair_weights) / tf.maximum(pairs, 1.0)
        self._add_rows(word_table, tokens, run_updates, run_pairs)
        self._add_rows(context_table, tf.reshape(targets, [-1]), tf.reshape(output_updates, [-1, self.dim]),
                       tf.reshape(output_pairs, [-1]))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result(), "learning_rate": rate}

    def _add_rows(self, table, ids, updates, pairs):
        """table[ids] += updates, duplicates summed first (fewer rows to scatter), each row scaled
        down to `row_update_cap` pairs' worth when more pairs contributed to it."""
        import tensorflow as tf

        rows, position = tf.unique(ids)
        count = tf.shape(rows)[0]
        summed = tf.math.unsorted_segment_sum(updates, position, count)
        if self.row_update_cap > 0:
            pairs = tf.math.unsorted_segment_sum(pairs, position, count)
            summed *= (1.0 / tf.maximum(1.0, pairs / self.row_update_cap))[:, None]
        table.scatter_add(tf.IndexedSlices(summed, rows))
