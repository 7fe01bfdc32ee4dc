"""A linear-chain CRF in ``keras.ops``: the layer that holds its weights, and the algorithms on
(batch, time, tags) emission scores with a (batch, time) mask padded at the end: the forward
algorithm (log-partition), backward scores, the gold path's score, Viterbi decoding and
forward-backward marginals. ``ops.scan`` runs over the time axis, so every backend can run it."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="dlapps.ner")
class ChainCRF(layers.Layer):
    """The weights of a linear-chain CRF: tag-to-tag transitions and start/end scores. It passes
    the per-token emission scores through unchanged; the loss and decoding use its weights."""

    def __init__(self, num_tags, **kwargs):
        super().__init__(**kwargs)
        self.num_tags = int(num_tags)
        self.supports_masking = True

    def build(self, input_shape):
        small = keras.initializers.RandomUniform(-0.1, 0.1)
        self.transitions = self.add_weight(shape=(self.num_tags, self.num_tags), initializer=small, name="transitions")
        self.start = self.add_weight(shape=(self.num_tags,), initializer=small, name="start")
        self.end = self.add_weight(shape=(self.num_tags,), initializer=small, name="end")

    def call(self, emissions):
        return emissions

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_tags": self.num_tags}


# --- CRF algorithms on (batch, time, tags) emissions and a (batch, time) mask padded at the end ---


def _time_major(emissions, mask):
    """One (time, batch, tags + 2) tensor of emissions, mask and a first-step flag: keras' TF scan
    accepts a single scanned tensor with a dynamic time axis (several trip its shape check)."""
    steps = ops.shape(emissions)[1]
    first = ops.cast(ops.arange(steps) == 0, emissions.dtype)
    maskf = ops.cast(mask, emissions.dtype)
    first = ops.broadcast_to(first[None, :], ops.shape(maskf))
    packed = ops.concatenate([emissions, maskf[..., None], first[..., None]], axis=-1)
    return ops.transpose(packed, (1, 0, 2))


def _unpack(x_t):
    return x_t[:, :-2], x_t[:, -2] > 0.5, x_t[:, -1:] > 0.5


def crf_forward(emissions, mask, transitions, start, end):
    """Log-partition per sentence and the forward scores (time, batch, tags) of every step."""
    packed = _time_major(emissions, mask)

    def step(alpha, x_t):
        e_t, m_t, first_t = _unpack(x_t)
        new = ops.logsumexp(ops.expand_dims(alpha, 2) + transitions, axis=1) + e_t
        new = ops.where(first_t, start + e_t, new)
        alpha = ops.where(ops.logical_or(m_t[:, None], first_t), new, alpha)  # padding keeps the last real step
        return alpha, alpha

    last, alphas = ops.scan(step, ops.zeros_like(packed[0, :, :-2]), packed)
    return ops.logsumexp(last + end, axis=-1), alphas


def crf_backward(emissions, mask, transitions, end):
    """Backward scores (time, batch, tags): log-sum of every continuation after each step."""
    packed = _time_major(emissions, mask)
    following = ops.concatenate([packed[1:], ops.zeros_like(packed[:1])], axis=0)  # step t sees t + 1

    def step(beta, x_t):
        e_t, m_t, _ = _unpack(x_t)
        # batch operand first: keras' TF add turns (K, K) + (1, 1, K) into a rank-dropping BiasAdd
        new = ops.logsumexp(ops.expand_dims(e_t + beta, 1) + transitions, axis=2)
        beta = ops.where(m_t[:, None], new, ops.broadcast_to(end, ops.shape(new)))
        return beta, beta

    init = ops.broadcast_to(end, ops.shape(following[0, :, :-2]))
    _, betas = ops.scan(step, init, following, reverse=True)
    return betas


def crf_path_score(emissions, tags, mask, transitions, start, end):
    """Score of the given tag path per sentence (emissions, transitions, start and end)."""
    maskf = ops.cast(mask, emissions.dtype)
    tags = ops.cast(tags, "int32")
    emitted = ops.sum(ops.squeeze(ops.take_along_axis(emissions, tags[..., None], axis=2), -1) * maskf, axis=1)
    pairs = tags[:, :-1] * transitions.shape[0] + tags[:, 1:]
    moved = ops.sum(ops.take(ops.reshape(transitions, (-1,)), pairs) * maskf[:, 1:], axis=1)
    lengths = ops.maximum(ops.sum(ops.cast(mask, "int32"), axis=1), 1)
    last = ops.squeeze(ops.take_along_axis(tags, (lengths - 1)[:, None], axis=1), 1)
    return emitted + moved + ops.take(start, tags[:, 0]) + ops.take(end, last)


def crf_negative_log_likelihood(emissions, tags, mask, transitions, start, end):
    log_partition, _ = crf_forward(emissions, mask, transitions, start, end)
    return log_partition - crf_path_score(emissions, tags, mask, transitions, start, end)


def viterbi_decode(emissions, mask, transitions, start, end):
    """The best tag path per sentence (batch, time); padding steps repeat the last real tag."""
    packed = _time_major(emissions, mask)
    zeros = ops.zeros_like(packed[0, :, :-2])
    identity = ops.broadcast_to(ops.arange(transitions.shape[0], dtype="int32")[None], ops.shape(zeros))

    def forward(carry, x_t):
        score, _ = carry
        e_t, m_t, first_t = _unpack(x_t)
        m_t = m_t[:, None]
        candidates = ops.expand_dims(score, 2) + transitions
        pointer = ops.cast(ops.argmax(candidates, axis=1), "int32")
        new = ops.where(first_t, start + e_t, ops.max(candidates, axis=1) + e_t)
        score = ops.where(ops.logical_or(m_t, first_t), new, score)
        pointer = ops.where(ops.logical_and(m_t, ops.logical_not(first_t)), pointer, identity)
        return (score, pointer), (score, pointer)

    (last, _), (_, pointers) = ops.scan(forward, (zeros, identity), packed)
    best_last = ops.cast(ops.argmax(last + end, axis=-1), "int32")

    def backward(tag, pointer_t):
        previous = ops.squeeze(ops.take_along_axis(pointer_t, tag[:, None], axis=1), 1)
        return previous, tag

    _, path = ops.scan(backward, best_last, pointers, reverse=True)
    return ops.transpose(path, (1, 0))


def crf_marginals(emissions, mask, transitions, start, end):
    """P(tag at step t | sentence) by forward-backward, (batch, time, tags)."""
    log_partition, alphas = crf_forward(emissions, mask, transitions, start, end)
    betas = crf_backward(emissions, mask, transitions, end)
    marginals = ops.exp(alphas + betas - log_partition[None, :, None])
    return ops.transpose(marginals, (1, 0, 2))
