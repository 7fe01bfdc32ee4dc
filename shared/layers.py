"""Small Keras layers more than one app uses. Written with keras.ops so they run on every backend."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="dlapps")
class MaskedPooling(layers.Layer):
    """Pools a padded sequence (batch, time, features) to (batch, features), ignoring padding.

    mode ``mean`` and ``max`` are the usual poolings; ``attention`` learns a score per step
    (additive attention, Yang et al. 2016) and returns the score-weighted sum.
    """

    def __init__(self, mode: str = "max", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("mean", "max", "attention"):
            raise ValueError(f"pooling mode must be mean, max or attention, got {mode!r}")
        self.mode = mode
        self.supports_masking = True

    def build(self, input_shape):
        if self.mode == "attention":
            features = input_shape[-1]
            self.projection = layers.Dense(features, activation="tanh", name="projection")
            self.projection.build(input_shape)
            self.score = layers.Dense(1, use_bias=False, name="score")
            self.score.build(tuple(input_shape[:-1]) + (features,))

    def call(self, inputs, mask=None):
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:-1], dtype="bool")
        weights = ops.cast(ops.expand_dims(mask, -1), inputs.dtype)
        # A row with no step at all (a text of only punctuation) pools to zeros, not to -1e4.
        has_steps = ops.sum(weights, axis=1) > 0
        if self.mode == "mean":
            return ops.sum(inputs * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)
        if self.mode == "max":
            lowest = ops.cast(-1e4, inputs.dtype)
            pooled = ops.max(ops.where(weights > 0, inputs, lowest), axis=1)
            return ops.where(has_steps, pooled, ops.zeros_like(pooled))
        scores = ops.squeeze(self.score(self.projection(inputs)), -1)
        scores = ops.where(mask, scores, ops.cast(-1e4, scores.dtype))
        attention = ops.expand_dims(ops.softmax(scores, axis=-1), -1)
        return ops.sum(inputs * attention * weights, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
