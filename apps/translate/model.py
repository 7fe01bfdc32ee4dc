"""The translation model: subword tokenisers, an encoder-decoder (attention GRU or Transformer),
teacher-forced training with label smoothing, and greedy and beam decoding in the graph.

Tokenisation. Text is split on whitespace only (punctuation stays glued to its word), and each
word is cut into WordPiece pieces (greedy longest match first, ``##`` marks a piece that continues
a word). Splitting only on whitespace makes decoding exact: the pieces of a sentence joined by
spaces, with every `` ##`` removed, give the sentence back. Vocabularies are learnt per language
from the training data (``learn_vocabulary``). The tokeniser (``SubwordTokenizer``) is written
with core TensorFlow string ops rather than used from keras_hub's ``WordPieceTokenizer``, whose
tensorflow-text kernels a SavedModel cannot load in a process that imports only TensorFlow; the
tests check that both give the same ids. A word with a character that no piece covers becomes
``[UNK]``, as in BERT.

Training feeds ``[START] t1 .. tn`` to the decoder and scores ``t1 .. tn [END]`` (teacher
forcing); sources end with ``[END]``. Decoding (``translate_greedy`` with keras_hub's
``GreedySampler``, ``translate_beam`` with the beam search below) runs the encoder once and the
decoder one token at a time: the GRU carries its state, the Transformer keeps keras_hub's
key/value caches, so each step costs one token, not the whole prefix.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from dlapps.shared.models import TaskModel

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[START]", "[END]")
PAD, UNK, START, END = 0, 1, 2, 3
SUFFIX = "##"
# tf-text's FastWordpieceTokenizer (behind keras_hub's WordPieceTokenizer) maps longer words to [UNK].
MAX_BYTES_PER_WORD = 100
NEGATIVE = -1e9  # the logit of a token that may never be generated
PREFIX_STATE = ("states", "self_cache")  # decoding state entries that differ between prefixes of a source


def split_words(texts):
    """A 1-D string tensor -> a RaggedTensor of whitespace-separated words. Invalid UTF-8 (bytes
    from a TF Serving client) becomes U+FFFD instead of failing the string ops."""
    import tensorflow as tf

    texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace")
    return tf.strings.split(tf.strings.regex_replace(texts, r"[\s\pZ]+", " "))


def learn_vocabulary(texts, size: int, min_count: int = 2) -> list[str]:
    """A WordPiece vocabulary of at most `size` entries for `texts` (split on whitespace, as the
    tokeniser splits), the special tokens first. Learnt with Hugging Face ``tokenizers``' trainer
    (a keras_hub dependency): keras_hub's ``compute_word_piece_vocabulary`` gives a vocabulary the
    same tokeniser reads, but its pure-Python learner took 213 s for one side of Multi30k here,
    this one 1 s. Two pieces are merged into one only when seen together `min_count` times, so
    rare words stay in pieces that other words share."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    learner = Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS[UNK], continuing_subword_prefix=SUFFIX))
    learner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordPieceTrainer(
        vocab_size=size, special_tokens=list(SPECIAL_TOKENS), continuing_subword_prefix=SUFFIX,
        min_frequency=min_count, show_progress=False)
    learner.train_from_iterator(list(texts), trainer)
    return [token for token, _ in sorted(learner.get_vocab().items(), key=lambda item: item[1])]


# === Layers ===


@keras.saving.register_keras_serializable(package="dlapps.translate")
class SubwordTokenizer(layers.Layer):
    """Strings <-> WordPiece ids with core TensorFlow ops only (see the module docstring).

    ``tokenize`` looks up, for every word at once, the candidate pieces of every length at the
    current position and takes the longest that the vocabulary has; a loop advances until every
    word is consumed. ``detokenize`` cuts each row at its first ``[END]``, drops padding and start
    tokens and joins the pieces.
    """

    def __init__(self, vocabulary, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary = list(vocabulary)
        if tuple(self.vocabulary[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary starts with {SPECIAL_TOKENS}")
        pieces = [t[len(SUFFIX):] if t.startswith(SUFFIX) else t for t in self.vocabulary[len(SPECIAL_TOKENS):]]
        self.longest_piece = max([len(p) for p in pieces] + [1])
        # Index 0 is the lookup's out-of-vocabulary answer, so a found piece's id is its index - 1.
        self.lookup = layers.StringLookup(vocabulary=self.vocabulary, num_oov_indices=1, mask_token=None,
                                          output_mode="int", name="piece_lookup")

    def tokenize(self, texts):
        """1-D strings -> int32 RaggedTensor of piece ids, one row per text."""
        import tensorflow as tf

        words = split_words(texts)
        pieces = self._word_pieces(words.flat_values)
        return tf.RaggedTensor.from_row_lengths(pieces, words.row_lengths()).merge_dims(1, 2)

    def _word_pieces(self, words):
        """1-D words -> RaggedTensor (words, pieces) by greedy longest-match-first."""
        import tensorflow as tf

        count = tf.shape(words)[0]
        characters = tf.strings.length(words, unit="UTF8_CHAR")
        too_long = tf.strings.length(words) > MAX_BYTES_PER_WORD
        widths = tf.range(self.longest_piece, 0, -1)  # longest candidate first
        steps = tf.reduce_max(tf.concat([characters, [0]], 0))
        grid_words = tf.tile(words[:, None], [1, self.longest_piece])
        grid_widths = tf.tile(widths[None, :], [count, 1])

        def body(step, position, failed, ids):
            active = tf.logical_and(position < characters, tf.logical_not(failed))
            start = tf.tile(tf.where(active, position, 0)[:, None], [1, self.longest_piece])
            candidates = tf.strings.substr(grid_words, start, grid_widths, unit="UTF8_CHAR")
            taken = tf.strings.length(candidates, unit="UTF8_CHAR")
            keys = tf.where(start > 0, SUFFIX + candidates, candidates)
            found = tf.cast(self.lookup(keys), "int32") - 1
            # Candidates longer than the rest of the word repeat a shorter one; that one is fine.
            hit = tf.logical_and(found >= 0, taken > 0)
            first = tf.argmax(tf.cast(hit, "int32"), axis=1, output_type="int32")
            matched = tf.reduce_any(hit, axis=1)
            piece = tf.gather(found, first, batch_dims=1)
            advance = tf.gather(taken, first, batch_dims=1)
            ok = tf.logical_and(active, matched)
            ids = ids.write(step, tf.where(ok, piece, -1))
            failed = tf.logical_or(failed, tf.logical_and(active, tf.logical_not(matched)))
            return step + 1, tf.where(ok, position + advance, position), failed, ids

        _, _, failed, ids = tf.while_loop(
            lambda step, *_: step < steps,
            body,
            (0, tf.zeros([count], "int32"), too_long, tf.TensorArray("int32", size=steps, element_shape=[None])),
        )
        ids = tf.reshape(tf.transpose(ids.stack()), [count, steps])
        # A word that some position of cannot be matched (an unseen character) is one [UNK].
        failed = tf.logical_or(failed, tf.logical_and(characters > 0, tf.reduce_all(ids < 0, axis=1)))
        first_column = tf.range(steps)[None, :] == 0
        ids = tf.where(failed[:, None], tf.where(first_column, UNK, -1), ids)
        return tf.RaggedTensor.from_tensor(ids, padding=-1)

    def detokenize(self, ids):
        """(batch, steps) int ids -> 1-D strings: everything from the first [END] on is dropped."""
        import tensorflow as tf

        ids = tf.cast(ids, "int32")
        ended = tf.cumsum(tf.cast(tf.equal(ids, END), "int32"), axis=1) > 0
        keep = tf.logical_and(tf.logical_not(ended), tf.logical_and(ids != PAD, ids != START))
        tokens = tf.ragged.boolean_mask(tf.gather(tf.constant(self.vocabulary), ids), keep)
        text = tf.strings.reduce_join(tokens, axis=1, separator=" ")
        text = tf.strings.regex_replace(text, " " + SUFFIX, "")
        return tf.strings.regex_replace(text, "^" + SUFFIX, "")

    def call(self, texts):
        return self.tokenize(texts)

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary}


def _tile_beams(tensor, width):
    """(batch, ...) -> (batch * width, ...), each row repeated `width` times in place."""
    return ops.repeat(tensor, width, axis=0)


# === Functional Model ===


@keras.saving.register_keras_serializable(package="dlapps.translate")
class Translator(TaskModel):
    """An encoder-decoder translation model over subword ids.

    Args:
        source_vocabulary, target_vocabulary: WordPiece vocabularies (special tokens first).
        arch: ``transformer`` (keras_hub TransformerEncoder/Decoder blocks over token and learnt
            position embeddings) or ``rnn`` (bidirectional GRU encoder, GRU decoder whose states
            attend to every encoder state, Luong's arrangement).
        embedding_dim: token embedding size (the Transformer's model width).
        num_layers: encoder and decoder blocks (Transformer) or stacked GRU layers (rnn).
        num_heads, intermediate_dim: Transformer attention heads and feed-forward size.
        units: GRU units (the encoder has as many per direction).
        attention: rnn score function, ``bahdanau`` (additive) or ``luong`` (multiplicative).
        dropout: dropout rate inside the blocks and on embeddings.
        label_smoothing: share of the target probability spread over the whole vocabulary.
        max_source_length: source pieces read, ``[END]`` included; longer sources are cut.
        max_target_length: target pieces the decoder can write before its ``[END]``.
    """

    def __init__(
        self,
        source_vocabulary,
        target_vocabulary,
        arch="transformer",
        embedding_dim=128,
        num_layers=2,
        num_heads=4,
        intermediate_dim=512,
        units=256,
        attention="bahdanau",
        dropout=0.1,
        label_smoothing=0.1,
        max_source_length=64,
        max_target_length=64,
        **kwargs,
    ):
        import keras_hub

        if arch not in ("transformer", "rnn"):
            raise ValueError(f"arch must be transformer or rnn, got {arch!r}")
        if attention not in ("bahdanau", "luong"):
            raise ValueError(f"attention must be bahdanau or luong, got {attention!r}")
        source_size, target_size = len(source_vocabulary), len(target_vocabulary)
        # === Layers ===
        source_tokenizer = SubwordTokenizer(source_vocabulary, name="source_tokenizer")
        target_tokenizer = SubwordTokenizer(target_vocabulary, name="target_tokenizer")
        if arch == "transformer":
            source_embedding = keras_hub.layers.TokenAndPositionEmbedding(
                source_size, max_source_length, embedding_dim, name="source_embedding")
            target_embedding = keras_hub.layers.TokenAndPositionEmbedding(
                target_size, max_target_length + 1, embedding_dim, name="target_embedding")
            encoder_layers = [
                keras_hub.layers.TransformerEncoder(intermediate_dim, num_heads, dropout, name=f"encoder_{i}")
                for i in range(num_layers)
            ]
            decoder_layers = [
                keras_hub.layers.TransformerDecoder(intermediate_dim, num_heads, dropout, name=f"decoder_{i}")
                for i in range(num_layers)
            ]
            bridges, key_projection, query_projection, attention_layer, combine = [], None, None, None, None
        else:
            source_embedding = layers.Embedding(source_size, embedding_dim, name="source_embedding")
            target_embedding = layers.Embedding(target_size, embedding_dim, name="target_embedding")
            encoder_layers = [
                layers.Bidirectional(layers.GRU(units, return_sequences=True, return_state=True), name=f"encoder_{i}")
                for i in range(num_layers)
            ]
            decoder_layers = [layers.GRU(units, return_sequences=True, name=f"decoder_{i}") for i in range(num_layers)]
            # The decoder starts from the encoder's final states (both directions), one projection per layer.
            bridges = [layers.Dense(units, activation="tanh", name=f"bridge_{i}") for i in range(num_layers)]
            key_projection = layers.Dense(units, use_bias=False, name="attention_keys")
            if attention == "bahdanau":
                query_projection = layers.Dense(units, use_bias=False, name="attention_queries")
                attention_layer = layers.AdditiveAttention(name="attention")
            else:
                query_projection = None
                attention_layer = layers.Attention(name="attention")
            combine = layers.Dense(units, activation="tanh", name="attentional_state")
        embedding_dropout = layers.Dropout(dropout, name="embedding_dropout")
        output_dropout = layers.Dropout(dropout, name="output_dropout")
        # float32 logits keep softmax and the loss stable under mixed precision.
        output_projection = layers.Dense(target_size, dtype="float32", name="logits")

        self.arch = arch
        self.attention = attention
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.embedding_dim = int(embedding_dim)
        self.units = int(units)
        self.source_embedding = source_embedding
        self.target_embedding = target_embedding
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.bridges = bridges
        self.key_projection = key_projection
        self.query_projection = query_projection
        self.attention_layer = attention_layer
        self.combine = combine
        self.embedding_dropout = embedding_dropout
        self.output_dropout = output_dropout
        self.output_projection = output_projection

        # === Functional Model ===
        inputs = {
            "encoder_ids": keras.Input(shape=(None,), dtype="int32", name="encoder_ids"),
            "decoder_ids": keras.Input(shape=(None,), dtype="int32", name="decoder_ids"),
        }
        encoded = self.encode(inputs["encoder_ids"])
        logits = self.decode_sequence(inputs["decoder_ids"], encoded)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)

        # === Config ===
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.source_vocabulary = list(source_vocabulary)
        self.target_vocabulary = list(target_vocabulary)
        self.intermediate_dim = int(intermediate_dim)
        self.dropout = float(dropout)
        self.label_smoothing = float(label_smoothing)
        self.max_source_length = int(max_source_length)
        self.max_target_length = int(max_target_length)

    # --- the network, shared by training (symbolic inputs) and decoding (tensors) -----------------

    def encode(self, encoder_ids, training=None) -> dict:
        """Source ids (batch, steps) -> what every decoder step reads: encoder outputs, the
        source padding mask and (rnn) the decoder's initial states and the attention keys."""
        mask = ops.not_equal(encoder_ids, PAD)
        x = self.embedding_dropout(self.source_embedding(encoder_ids), training=training)
        if self.arch == "transformer":
            for layer in self.encoder_layers:
                x = layer(x, padding_mask=mask, training=training)
            return {"outputs": x, "mask": mask}
        for layer in self.encoder_layers:
            x, forward, backward = layer(x, mask=mask, training=training)
        final = ops.concatenate([forward, backward], axis=-1)
        states = ops.stack([bridge(final) for bridge in self.bridges], axis=1)  # (batch, layers, units)
        return {"outputs": x, "mask": mask, "keys": self.key_projection(x), "states": states}

    def _attend(self, queries, encoded, query_mask=None):
        """rnn: attention of decoder states over the encoder states -> the attentional state."""
        scored = self.query_projection(queries) if self.query_projection is not None else queries
        context = self.attention_layer([scored, encoded["outputs"], encoded["keys"]], mask=[query_mask, encoded["mask"]])
        return self.combine(ops.concatenate([queries, context], axis=-1))

    def decode_sequence(self, decoder_ids, encoded, training=None):
        """Teacher forcing: decoder ids (batch, steps) -> logits (batch, steps, target vocabulary)."""
        mask = ops.not_equal(decoder_ids, PAD)
        y = self.embedding_dropout(self.target_embedding(decoder_ids), training=training)
        if self.arch == "transformer":
            for layer in self.decoder_layers:
                y = layer(y, encoded["outputs"], decoder_padding_mask=mask, encoder_padding_mask=encoded["mask"],
                          training=training)
        else:
            for i, layer in enumerate(self.decoder_layers):
                y = layer(y, initial_state=encoded["states"][:, i], mask=mask, training=training)
            y = self._attend(y, encoded, mask)
        return self.output_projection(self.output_dropout(y, training=training))

    # --- one decoder step at a time ----------------------------------------------------------------

    def start_decoding(self, encoder_ids, steps) -> dict:
        """The decoding state of a batch: encoder results and (Transformer) key/value caches for
        `steps` target positions. Every entry has the batch first, so beams can gather rows."""
        encoded = self.encode(encoder_ids, training=False)
        if self.arch == "rnn":
            return encoded
        batch = ops.shape(encoder_ids)[0]
        head_dim = self.embedding_dim // self.num_heads
        self_cache = ops.zeros((batch, self.num_layers, 2, steps, self.num_heads, head_dim), self.compute_dtype)
        cross_cache = ops.zeros(
            (batch, self.num_layers, 2, ops.shape(encoder_ids)[1], self.num_heads, head_dim), self.compute_dtype)
        # One pass over a [START] token fills the cross-attention keys/values of every layer once.
        _, _, cross_cache = self._transformer_step(
            ops.full((batch, 1), START, "int32"), 0, self_cache, cross_cache, encoded, fill_cross=True)
        return {**encoded, "self_cache": self_cache, "cross_cache": cross_cache}

    def _transformer_step(self, token_ids, index, self_cache, cross_cache, encoded, fill_cross=False):
        y = self.target_embedding(token_ids, start_index=index)
        self_caches, cross_caches = [], []
        for i, layer in enumerate(self.decoder_layers):
            y, layer_self, layer_cross = layer(
                y, encoded["outputs"], encoder_padding_mask=encoded["mask"],
                self_attention_cache=self_cache[:, i], self_attention_cache_update_index=index,
                cross_attention_cache=cross_cache[:, i], cross_attention_cache_update_index=0 if fill_cross else None,
                training=False,
            )
            self_caches.append(layer_self)
            cross_caches.append(layer_cross)
        return y[:, 0], ops.stack(self_caches, axis=1), ops.stack(cross_caches, axis=1) if fill_cross else cross_cache

    def decode_step(self, state: dict, token_ids, index):
        """The token at position `index` (batch,) -> logits for position index + 1, new state.
        Padding and [START] are never generated."""
        if self.arch == "transformer":
            y, self_cache, _ = self._transformer_step(
                token_ids[:, None], index, state["self_cache"], state["cross_cache"], state)
            state = {**state, "self_cache": self_cache}
        else:
            y = self.target_embedding(token_ids)
            states = []
            for i, layer in enumerate(self.decoder_layers):
                y, _ = layer.cell(y, [state["states"][:, i]], training=False)
                states.append(y)
            y = self._attend(y[:, None], state)[:, 0]
            state = {**state, "states": ops.stack(states, axis=1)}
        logits = self.output_projection(y)
        banned = ops.logical_or(ops.arange(ops.shape(logits)[-1]) == PAD, ops.arange(ops.shape(logits)[-1]) == START)
        return ops.where(banned[None, :], ops.cast(NEGATIVE, logits.dtype), logits), state

    # --- decoding ------------------------------------------------------------------------------------

    def source_ids(self, texts):
        """Strings -> (dense source ids ending with [END] and cut to max_source_length, the
        number of source pieces before cutting)."""
        import tensorflow as tf

        pieces = self.source_tokenizer.tokenize(texts)
        lengths = tf.cast(pieces.row_lengths(), "int32")
        pieces = pieces[:, : self.max_source_length - 1]
        ends = tf.ones_like(pieces[:, :1]) * END
        return tf.concat([pieces, ends], axis=1).to_tensor(PAD), lengths

    def decoding_steps(self, encoder_ids):
        """Target positions decoded: [END] may come after max_target_length pieces at the latest,
        and translations are seldom over twice their source plus ten pieces."""
        return ops.minimum(self.max_target_length + 1, 2 * ops.shape(encoder_ids)[1] + 10)

    def greedy_ids(self, encoder_ids):
        """(batch, steps) target ids by greedy search (keras_hub's GreedySampler)."""
        import keras_hub

        steps = self.decoding_steps(encoder_ids)
        batch = ops.shape(encoder_ids)[0]
        state = self.start_decoding(encoder_ids, steps)
        prompt = ops.concatenate(
            [ops.full((batch, 1), START, "int32"), ops.zeros((batch, steps), "int32")], axis=1)
        prompt_mask = ops.concatenate([ops.ones((batch, 1), "bool"), ops.zeros((batch, steps), "bool")], axis=1)

        def next_token(prompt, state, index):
            logits, state = self.decode_step(state, prompt[:, index - 1], index - 1)
            return logits, None, state

        sampler = keras_hub.samplers.GreedySampler()
        return sampler(next_token, prompt, cache=state, index=1, mask=prompt_mask, stop_token_ids=(END,))

    def beam_ids(self, encoder_ids, width, length_penalty=0.6):
        """Beam search: (best ids (batch, steps), its length-normalised log-probability (batch,)).

        Each source keeps `width` prefixes; a prefix that wrote [END] stays in the beam with its
        score frozen (it continues with padding at no cost), so finished and unfinished prefixes
        compete on log-probability; the search stops once every prefix has ended. The best
        finished prefix is chosen by log-probability / ((5 + length) / 6) ** length_penalty
        (Wu et al. 2016). `width` may be a tensor: one trace serves every width.
        """
        import tensorflow as tf

        width = tf.cast(width, "int32")
        steps = self.decoding_steps(encoder_ids)
        batch = tf.shape(encoder_ids)[0]
        state = tf.nest.map_structure(lambda t: _tile_beams(t, width), self.start_decoding(encoder_ids, steps))
        rows = batch * width
        tokens = tf.concat([tf.fill([rows, 1], START), tf.zeros([rows, steps], "int32")], axis=1)
        # Only the first copy of each source is live at the start, or the beam would hold duplicates.
        scores = tf.tile(tf.where(tf.range(width) == 0, 0.0, NEGATIVE), [batch])
        finished = tf.zeros([rows], "bool")
        lengths = tf.zeros([rows], "float32")

        def body(index, tokens, state, scores, finished, lengths):
            logits, state = self.decode_step(state, tokens[:, index], index)
            log_probs = tf.nn.log_softmax(tf.cast(logits, "float32"))
            vocabulary = tf.shape(log_probs)[1]
            pad_only = tf.where(tf.range(vocabulary) == PAD, 0.0, NEGATIVE)
            log_probs = tf.where(finished[:, None], pad_only[None, :], log_probs)
            candidates = tf.reshape(scores[:, None] + log_probs, [batch, width * vocabulary])
            scores, chosen = tf.math.top_k(candidates, k=width)
            origin = tf.reshape(chosen // vocabulary + tf.range(batch)[:, None] * width, [-1])
            token = tf.reshape(chosen % vocabulary, [-1])
            # Encoder results are the same for every prefix of a source: only the decoder's own
            # state (GRU states, self-attention cache) follows the prefixes it came from.
            state = {k: tf.gather(v, origin) if k in PREFIX_STATE else v for k, v in state.items()}
            tokens = tf.gather(tokens, origin)
            finished, lengths = tf.gather(finished, origin), tf.gather(lengths, origin)
            column = tf.range(tf.shape(tokens)[1])[None, :] == index + 1
            tokens = tf.where(column, token[:, None], tokens)
            lengths = tf.where(finished, lengths, lengths + 1.0)
            finished = tf.logical_or(finished, token == END)
            return index + 1, tokens, state, tf.reshape(scores, [-1]), finished, lengths

        _, tokens, _, scores, finished, lengths = tf.while_loop(
            lambda index, tokens, state, scores, finished, lengths: tf.logical_and(
                index < steps, tf.logical_not(tf.reduce_all(finished))),
            body,
            (tf.constant(0), tokens, state, scores, finished, lengths),
        )
        normalised = scores / tf.pow((5.0 + lengths) / 6.0, length_penalty)
        # Unfinished prefixes (the step limit hit) rank after finished ones.
        ranking = tf.reshape(tf.where(finished, normalised, normalised + NEGATIVE), [batch, width])
        best = tf.argmax(ranking, axis=1, output_type="int32") + tf.range(batch) * width
        best_scores = tf.gather(normalised, best)
        return tf.gather(tokens, best)[:, 1:], best_scores

    def translate_greedy(self, texts):
        """Strings -> {"translation", "source_pieces"} by greedy decoding, in one graph."""
        encoder_ids, lengths = self.source_ids(texts)
        ids = self.greedy_ids(encoder_ids)[:, 1:]
        return {"translation": self.target_tokenizer.detokenize(ids), "source_pieces": lengths}

    def translate_beam(self, texts, width, length_penalty=0.6):
        """Strings -> {"translation", "score", "source_pieces"} by beam search, in one graph."""
        encoder_ids, lengths = self.source_ids(texts)
        ids, scores = self.beam_ids(encoder_ids, width, length_penalty)
        return {"translation": self.target_tokenizer.detokenize(ids), "score": scores, "source_pieces": lengths}

    # --- training ------------------------------------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Label-smoothed cross-entropy per real target token (padding excluded)."""
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        y = ops.cast(y, "int32")
        mask = ops.cast(ops.not_equal(y, PAD), "float32")
        gold = -ops.squeeze(ops.take_along_axis(log_probs, y[..., None], axis=-1), -1)
        uniform = -ops.mean(log_probs, axis=-1)
        per_token = (1.0 - self.label_smoothing) * gold + self.label_smoothing * uniform
        loss = ops.sum(per_token * mask) / ops.maximum(ops.sum(mask), 1.0)
        return loss + ops.sum(self.losses) if self.losses else loss


@keras.saving.register_keras_serializable(package="dlapps.translate")
class WarmupInverseSqrt(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak` over `warmup_steps`, then decay with 1/sqrt(step) (Vaswani et al.
    2017, scaled so the peak is a learning rate rather than a model-width formula)."""

    def __init__(self, peak, warmup_steps):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0
        warmup = ops.cast(max(self.warmup_steps, 1), "float32")
        return self.peak * ops.minimum(step / warmup, ops.sqrt(warmup / step))

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps}
