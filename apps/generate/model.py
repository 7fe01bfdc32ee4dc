"""The generate models: a convolutional VAE and a DCGAN, both optionally class-conditional, both
answering ``generate(latents, labels)`` with float images in [0, 1].

- :class:`VAE` (Kingma & Welling 2014): the functional graph is encoder -> reparameterised sample ->
  decoder; ``compute_loss`` is the negative ELBO (Bernoulli or Gaussian pixel likelihood + KL, the
  KL weight warmed up from 0 to 1 over the first steps), and :meth:`VAE.log_weights` gives the
  importance weights behind the ELBO and IWAE (Burda et al. 2016) estimates of -log p(x).
- :class:`GAN` (DCGAN, Radford et al. 2016): the functional graph is the generator; ``train_step``
  follows Keras's custom-train-step guide with two GradientTapes and two Adam optimizers (beta1 0.5),
  for three losses: non-saturating with one-sided label smoothing, hinge, or WGAN-GP (Gulrajani et
  al. 2017); the discriminator is spectrally normalised (Miyato et al. 2018) unless told otherwise,
  and a conditional one uses the projection discriminator (Miyato & Koyama 2018).

Both carry, when the data is labelled, a small classifier (``feature_classifier``) that
:func:`train_feature_classifier` trains after the generator: its penultimate layer is the feature
space of the app's classifier-feature FID, and its predictions score conditional samples.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from dlapps.shared.models import TaskModel

LOG_2PI = math.log(2 * math.pi)


def downsampling_stages(side: int) -> int:
    """Stride-2 stages for images of `side` pixels (the same rule as data.downsampling_stages)."""
    return max(2, math.ceil(math.log2(max(side, 1) / 8)))


def per_replica(loss):
    """A per-replica mean loss scaled so that the sum over replicas is the global mean (what Keras's
    compiled losses do; a custom loss has to do it itself)."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss


# === Layers ===


@keras.saving.register_keras_serializable(package="dlapps.generate")
class OneHot(layers.Layer):
    """Integer labels (batch,) -> one-hot rows (batch, num_classes); with `planes`, broadcast to
    constant feature maps (batch, height, width, num_classes) to concatenate to images."""

    def __init__(self, num_classes, planes=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.planes = None if planes is None else [int(s) for s in planes]

    def call(self, labels):
        rows = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), self.num_classes, dtype=self.compute_dtype)
        if self.planes is None:
            return rows
        height, width = self.planes
        return ops.broadcast_to(rows[:, None, None, :], (ops.shape(rows)[0], height, width, self.num_classes))

    def compute_output_shape(self, input_shape):
        if self.planes is None:
            return (input_shape[0], self.num_classes)
        return (input_shape[0], *self.planes, self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "planes": self.planes}


@keras.saving.register_keras_serializable(package="dlapps.generate")
class Sampling(layers.Layer):
    """The reparameterisation trick: z = mean + exp(log_var / 2) * eps, eps ~ N(0, I)."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        mean, log_var = inputs
        epsilon = keras.random.normal(ops.shape(mean), dtype=mean.dtype, seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * epsilon

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="dlapps.generate")
class PixelLikelihood(layers.Layer):
    """p(x | z) per image, from the decoder's per-pixel outputs (logits).

    ``bernoulli``: pixels are 0/1, p = sigmoid(logits). ``gaussian``: pixels in [0, 1] (dequantised),
    mean sigmoid(logits) and one learned standard deviation for every pixel.
    """

    def __init__(self, kind="bernoulli", **kwargs):
        super().__init__(**kwargs)
        if kind not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be bernoulli or gaussian, got {kind!r}")
        self.kind = kind
        self.log_scale = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(math.log(0.1)), trainable=kind == "gaussian", name="log_scale"
        )

    def log_prob(self, images, logits):
        """log p(images | logits), summed over the pixels of each image: shape (batch,)."""
        images = ops.cast(images, "float32")
        logits = ops.cast(logits, "float32")
        if self.kind == "bernoulli":
            # -BCE with logits, written stably: x * l - softplus(l)
            per_pixel = images * logits - ops.softplus(logits)
        else:
            log_scale = ops.maximum(ops.cast(self.log_scale, "float32"), -7.0)
            mean = ops.sigmoid(logits)
            per_pixel = -0.5 * ops.square((images - mean) / ops.exp(log_scale)) - log_scale - 0.5 * LOG_2PI
        return ops.sum(ops.reshape(per_pixel, (ops.shape(per_pixel)[0], -1)), axis=-1)

    def mean(self, logits):
        """The expected image: pixel means in [0, 1]."""
        return ops.sigmoid(ops.cast(logits, "float32"))

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


def conv_stack(x, filters: int, stages: int, kernel_size: int, activation, spectral_norm: bool = False, prefix: str = ""):
    """`stages` stride-2 convolutions, filters doubling from `filters` (at most 8x)."""
    for stage in range(stages):
        conv = layers.Conv2D(filters * 2 ** min(stage, 3), kernel_size, strides=2, padding="same", name=f"{prefix}conv_{stage}")
        x = (layers.SpectralNormalization(conv, name=f"{prefix}sn_conv_{stage}") if spectral_norm else conv)(x)
        x = activation(x)
    return x


def make_encoder(image_shape, latent_dim, filters, num_classes=0, name="encoder"):
    """images (+ labels) -> (mean, log_var) of q(z | x)."""
    height, width, channels = image_shape
    stages = downsampling_stages(max(height, width))
    images = keras.Input(shape=tuple(image_shape), name="images")
    inputs = [images]
    x = images
    if num_classes:
        labels = keras.Input(shape=(), dtype="int32", name="labels")
        inputs.append(labels)
        # the label as constant extra channels
        x = layers.Concatenate(name="with_label")([x, OneHot(num_classes, planes=(height, width), name="label_planes")(labels)])
    x = conv_stack(x, filters, stages, 3, layers.ReLU())
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(filters * 8, activation="relu", name="hidden")(x)
    mean = layers.Dense(latent_dim, dtype="float32", name="z_mean")(x)
    log_var = layers.Dense(latent_dim, dtype="float32", name="z_log_var")(x)
    return keras.Model(inputs if num_classes else images, [mean, log_var], name=name)


def latent_inputs(latent_dim, num_classes=0):
    """The decoder's and generator's inputs (z, and labels when conditional) and z joined with the
    labels' one-hot code: (what keras.Model takes as inputs, the tensor to build on)."""
    latents = keras.Input(shape=(latent_dim,), name="latents")
    if not num_classes:
        return latents, latents
    labels = keras.Input(shape=(), dtype="int32", name="labels")
    return [latents, labels], layers.Concatenate(name="with_label")([latents, OneHot(num_classes, name="one_hot")(labels)])


def make_decoder(image_shape, latent_dim, filters, num_classes=0, name="decoder"):
    """z (+ labels) -> per-pixel logits."""
    height, width, channels = image_shape
    stages = downsampling_stages(max(height, width))
    low_h, low_w = height // 2**stages, width // 2**stages
    top = filters * 2 ** min(stages - 1, 3)
    inputs, x = latent_inputs(latent_dim, num_classes)
    x = layers.Dense(filters * 8, activation="relu", name="hidden")(x)
    x = layers.Dense(low_h * low_w * top, activation="relu", name="project")(x)
    x = layers.Reshape((low_h, low_w, top), name="reshape")(x)
    for stage in reversed(range(stages)):
        x = layers.Conv2DTranspose(filters * 2 ** min(stage, 3), 3, strides=2, padding="same", activation="relu", name=f"deconv_{stage}")(x)
    logits = layers.Conv2D(channels, 3, padding="same", dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def make_generator(image_shape, latent_dim, filters, num_classes=0, name="generator"):
    """DCGAN generator: z (+ labels) -> images in [-1, 1] (tanh)."""
    height, width, channels = image_shape
    stages = downsampling_stages(max(height, width))
    low_h, low_w = height // 2**stages, width // 2**stages
    top = filters * 2 ** min(stages, 3)
    inputs, x = latent_inputs(latent_dim, num_classes)
    # BatchNorm momentum 0.9: short runs need moving statistics that keep up with the weights
    x = layers.Dense(low_h * low_w * top, use_bias=False, name="project")(x)
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9, name="project_bn")(x))
    x = layers.Reshape((low_h, low_w, top), name="reshape")(x)
    for stage in reversed(range(stages)):
        x = layers.Conv2DTranspose(filters * 2 ** min(stage, 3), 4, strides=2, padding="same", use_bias=False, name=f"deconv_{stage}")(x)
        x = layers.ReLU()(layers.BatchNormalization(momentum=0.9, name=f"deconv_{stage}_bn")(x))
    images = layers.Conv2D(channels, 3, padding="same", activation="tanh", dtype="float32", name="images")(x)
    return keras.Model(inputs, images, name=name)


@keras.saving.register_keras_serializable(package="dlapps.generate")
class Projection(layers.Layer):
    """The projection discriminator's label term: <embed(label), features> per example."""

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes

    def build(self, input_shape):
        self.embeddings = self.add_weight(shape=(self.num_classes, input_shape[0][-1]), initializer="glorot_uniform", name="embeddings")

    def call(self, inputs):
        features, labels = inputs
        embedded = ops.take(self.embeddings, ops.cast(labels, "int32"), axis=0)
        return ops.sum(ops.cast(embedded, features.dtype) * features, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def make_discriminator(image_shape, filters, num_classes=0, spectral_norm=True, name="discriminator"):
    """DCGAN discriminator: images in [-1, 1] (+ labels) -> one unbounded score (a logit) each."""
    height, width, _ = image_shape
    stages = downsampling_stages(max(height, width))
    images = keras.Input(shape=tuple(image_shape), name="images")
    x = conv_stack(images, filters, stages, 4, layers.LeakyReLU(0.2), spectral_norm=spectral_norm)
    features = layers.Flatten(name="flatten")(x)
    dense = layers.Dense(1, dtype="float32", name="score")
    score = (layers.SpectralNormalization(dense, name="sn_score", dtype="float32") if spectral_norm else dense)(features)
    if not num_classes:
        return keras.Model(images, score, name=name)
    labels = keras.Input(shape=(), dtype="int32", name="labels")
    projected = Projection(num_classes, dtype="float32", name="projection")([features, labels])
    return keras.Model([images, labels], layers.Add(name="score_with_label", dtype="float32")([score, projected]), name=name)


def make_feature_classifier(image_shape, num_classes, name="feature_classifier"):
    """A small CNN on images in [0, 1]; its 128-unit ``features`` layer is the FID feature space."""
    height, width, _ = image_shape
    stages = downsampling_stages(max(height, width))
    images = keras.Input(shape=tuple(image_shape), name="images")
    x = conv_stack(images, 32, stages, 3, layers.ReLU())
    x = layers.Flatten(name="flatten")(x)
    features = layers.Dense(128, activation="relu", name="features")(x)
    x = layers.Dropout(0.3, name="dropout")(features)
    probabilities = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(images, [features, probabilities], name=name)


# === Functional Model ===


class ImageGenerator(TaskModel):
    """What the VAE and the GAN share: latents (+ labels) -> images, seeds, labels, the classifier."""

    def _common(self, image_shape, labels, latent_dim, conditional, feature_classifier):
        self.image_shape = [int(s) for s in image_shape]
        self.labels = list(labels or [])
        self.latent_dim = int(latent_dim)
        self.conditional = bool(conditional)
        self.num_classes = len(self.labels) if self.conditional else 0
        if feature_classifier and len(self.labels) >= 2:
            self.feature_classifier = make_feature_classifier(self.image_shape, len(self.labels))
            self.feature_classifier.trainable = False  # trained by train_feature_classifier only
        else:
            self.feature_classifier = None

    # --- generation ------------------------------------------------------------------------------

    def generate(self, latents, label_ids=None):
        """Float images in [0, 1], (batch, height, width, channels), in inference mode."""
        raise NotImplementedError

    def generate_uint8(self, latents, label_ids=None):
        images = self.generate(latents, label_ids)
        return ops.cast(ops.clip(ops.round(images * 255.0), 0.0, 255.0), "uint8")

    def seeded_latents(self, count, seed):
        """`count` latent vectors from N(0, I), the same for the same seed in any process (a
        stateless generator): what predict and the exported `sample` signature share."""
        seed = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
        return tf.random.stateless_normal(tf.stack([tf.cast(count, tf.int32), self.latent_dim]), seed=seed)

    def label_sequence(self, count, label):
        """Label ids for `count` samples: all `label`, or (label < 0) the classes in turn."""
        positions = tf.range(tf.cast(count, tf.int32), dtype=tf.int32)
        cycled = positions % max(self.num_classes, 1)
        return tf.where(tf.cast(label, tf.int32) >= 0, tf.fill(tf.shape(positions), tf.cast(label, tf.int32)), cycled)

    def _label_inputs(self, latents, label_ids):
        if not self.conditional:
            return latents
        if label_ids is None:
            label_ids = self.label_sequence(ops.shape(latents)[0], -1)
        return [latents, ops.cast(label_ids, "int32")]

    # --- the feature classifier ------------------------------------------------------------------

    def features(self, images):
        """Float images in [0, 1] -> (FID features, class probabilities) of the feature classifier."""
        if self.feature_classifier is None:
            raise ValueError("this model has no feature classifier (unlabelled training data)")
        return self.feature_classifier(images, training=False)


@keras.saving.register_keras_serializable(package="dlapps.generate")
class VAE(ImageGenerator):
    """Convolutional variational autoencoder.

    Args:
        image_shape: [height, width, channels] of the images (sides divisible by 2**stages).
        labels: class names of the data ([] when unlabelled).
        latent_dim: size of z.
        filters: filters of the first convolution stage (doubling per stage).
        likelihood: ``bernoulli`` (binary pixels) or ``gaussian``.
        conditional: encoder and decoder see the label (one-hot).
        kl_warmup_steps: steps over which the KL weight rises from 0 to 1 (0: always 1).
        feature_classifier: carry the FID classifier (when there are at least two labels).
        seed: seed of the reparameterisation noise.
    """

    def __init__(self, image_shape, labels=(), latent_dim=32, filters=32, likelihood="bernoulli", conditional=False,
                 kl_warmup_steps=0, feature_classifier=True, seed=None, **kwargs):
        num_classes = len(labels or []) if conditional else 0
        # === Layers ===
        encoder = make_encoder(image_shape, latent_dim, filters, num_classes)
        decoder = make_decoder(image_shape, latent_dim, filters, num_classes)
        sampling = Sampling(seed, name="sampling")
        pixel_likelihood = PixelLikelihood(likelihood, name="pixel_likelihood")

        # === Functional Model ===
        images = keras.Input(shape=tuple(image_shape), name="images")
        if num_classes:
            label_input = keras.Input(shape=(), dtype="int32", name="labels")
            inputs = {"images": images, "labels": label_input}
            z_mean, z_log_var = encoder([images, label_input])
            logits = decoder([sampling([z_mean, z_log_var]), label_input])
        else:
            inputs = images
            z_mean, z_log_var = encoder(images)
            logits = decoder(sampling([z_mean, z_log_var]))
        outputs = {"z_mean": z_mean, "z_log_var": z_log_var, "logits": logits}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self._common(image_shape, labels, latent_dim, conditional, feature_classifier)
        self.encoder, self.decoder, self.pixel_likelihood = encoder, decoder, pixel_likelihood
        self.filters = int(filters)
        self.likelihood = likelihood
        self.kl_warmup_steps = int(kl_warmup_steps)
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Negative ELBO per image (nats): reconstruction -log p(x|z) + beta * KL(q(z|x) || N(0, I)),
        beta warmed up while training; evaluation always uses beta = 1 (the true bound)."""
        images = x["images"] if isinstance(x, dict) else x
        reconstruction = -self.pixel_likelihood.log_prob(images, y_pred["logits"])
        mean, log_var = ops.cast(y_pred["z_mean"], "float32"), ops.cast(y_pred["z_log_var"], "float32")
        kl = -0.5 * ops.sum(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)
        beta = 1.0
        if training and self.kl_warmup_steps > 0:
            step = ops.cast(self.optimizer.iterations, "float32")
            beta = ops.minimum(1.0, (step + 1.0) / float(self.kl_warmup_steps))
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        return per_replica(ops.mean(reconstruction + beta * kl))

    def generate(self, latents, label_ids=None):
        logits = self.decoder(self._label_inputs(latents, label_ids), training=False)
        return self.pixel_likelihood.mean(logits)

    def log_weights(self, images, label_ids=None, samples=1, seed=0):
        """log p(x, z_i) - log q(z_i | x) for `samples` draws z_i ~ q(z | x): shape (samples, batch).
        Their mean is the ELBO; log-mean-exp the IWAE bound on log p(x) (tighter, k -> inf exact)."""
        images = ops.convert_to_tensor(images, "float32")
        batch = ops.shape(images)[0]
        encoder_inputs = [images, ops.cast(label_ids, "int32")] if self.conditional else images
        mean, log_var = self.encoder(encoder_inputs, training=False)
        noise = tf.random.stateless_normal((samples, batch, self.latent_dim), seed=[seed, 1])
        z = mean[None] + ops.exp(0.5 * log_var)[None] * noise  # (k, batch, latent)
        flat_z = ops.reshape(z, (-1, self.latent_dim))
        repeated_labels = None if not self.conditional else ops.tile(ops.cast(label_ids, "int32"), [samples])
        logits = self.decoder(self._label_inputs(flat_z, repeated_labels), training=False)
        tiled = ops.tile(images, [samples, 1, 1, 1])
        log_px = ops.reshape(self.pixel_likelihood.log_prob(tiled, logits), (samples, batch))
        log_pz = -0.5 * ops.sum(ops.square(z) + LOG_2PI, axis=-1)
        log_qz = -0.5 * ops.sum(ops.square(noise) + log_var[None] + LOG_2PI, axis=-1)
        return log_px + log_pz - log_qz


@keras.saving.register_keras_serializable(package="dlapps.generate")
class GAN(ImageGenerator):
    """DCGAN whose functional graph is the generator (latents [+ labels] -> images in [0, 1]).

    Args:
        image_shape, labels, latent_dim, filters, conditional, feature_classifier: as for :class:`VAE`.
        loss: ``ns`` (non-saturating, one-sided label smoothing), ``hinge`` or ``wgan-gp``.
        d_steps: discriminator updates per generator update.
        label_smoothing: ``ns``: real images are labelled 1 - this.
        gp_weight: ``wgan-gp``: weight of the gradient penalty.
        spectral_norm: spectrally normalise the discriminator's layers.
    """

    def __init__(self, image_shape, labels=(), latent_dim=64, filters=32, conditional=False, loss="ns", d_steps=1,
                 label_smoothing=0.1, gp_weight=10.0, spectral_norm=True, feature_classifier=True, **kwargs):
        if loss not in ("ns", "hinge", "wgan-gp"):
            raise ValueError(f"GAN loss must be ns, hinge or wgan-gp, got {loss!r}")
        num_classes = len(labels or []) if conditional else 0
        # === Layers ===
        generator = make_generator(image_shape, latent_dim, filters, num_classes)
        discriminator = make_discriminator(image_shape, filters, num_classes, spectral_norm)

        # === Functional Model ===
        latents = keras.Input(shape=(latent_dim,), name="latents")
        if num_classes:
            label_input = keras.Input(shape=(), dtype="int32", name="labels")
            inputs = {"latents": latents, "labels": label_input}
            generated = generator([latents, label_input])
        else:
            inputs = latents
            generated = generator(latents)
        images = layers.Rescaling(0.5, offset=0.5, dtype="float32", name="to_unit_range")(generated)
        super().__init__(inputs=inputs, outputs=images, **kwargs)

        # === Config ===
        self._common(image_shape, labels, latent_dim, conditional, feature_classifier)
        self.generator, self.discriminator = generator, discriminator
        self.filters = int(filters)
        self.loss_name = loss
        self.d_steps = int(d_steps)
        self.label_smoothing = float(label_smoothing)
        self.gp_weight = float(gp_weight)
        self.spectral_norm = bool(spectral_norm)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        # d_loss + g_loss, logged as "loss" so the shared NaN guard sees a diverging GAN; it is no
        # measure of sample quality (the two terms pull against each other).
        self.loss_tracker = keras.metrics.Mean(name="loss")

    # --- compile: two optimizers -----------------------------------------------------------------

    def compile(self, d_optimizer=None, g_optimizer=None, optimizer=None, **kwargs):
        """Two Adam optimizers; ``optimizer`` (what Keras's compile_from_config passes back) is the
        generator's. Under mixed_float16 both are loss-scaled (Keras wraps only the one it knows)."""
        g_optimizer = g_optimizer or optimizer or keras.optimizers.Adam(2e-4, beta_1=0.5)
        d_optimizer = d_optimizer or keras.optimizers.Adam(2e-4, beta_1=0.5)
        super().compile(optimizer=g_optimizer, **kwargs)
        if self.dtype_policy.name == "mixed_float16" and not isinstance(d_optimizer, keras.optimizers.LossScaleOptimizer):
            d_optimizer = keras.optimizers.LossScaleOptimizer(d_optimizer)
        self.g_optimizer = self.optimizer
        self.d_optimizer = d_optimizer
        # built here, inside the strategy scope, rather than lazily inside the first traced step
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and getattr(self, "d_optimizer", None) is not None:
            config["d_optimizer"] = keras.saving.serialize_keras_object(self.d_optimizer)
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)

    # --- losses ----------------------------------------------------------------------------------

    def discriminate(self, images, label_ids, training):
        inputs = [images, ops.cast(label_ids, "int32")] if self.conditional else images
        return ops.cast(self.discriminator(inputs, training=training), "float32")

    def d_loss_fn(self, real_scores, fake_scores):
        if self.loss_name == "ns":
            real_targets = ops.full_like(real_scores, 1.0 - self.label_smoothing)
            return ops.mean(ops.binary_crossentropy(real_targets, real_scores, from_logits=True)) + ops.mean(
                ops.binary_crossentropy(ops.zeros_like(fake_scores), fake_scores, from_logits=True)
            )
        if self.loss_name == "hinge":
            return ops.mean(ops.relu(1.0 - real_scores)) + ops.mean(ops.relu(1.0 + fake_scores))
        return ops.mean(fake_scores) - ops.mean(real_scores)

    def g_loss_fn(self, fake_scores):
        if self.loss_name == "ns":
            return ops.mean(ops.softplus(-fake_scores))  # -log sigmoid(score)
        return -ops.mean(fake_scores)

    def gradient_penalty(self, real, fake, label_ids):
        """WGAN-GP: (||grad D(x_hat)|| - 1)^2 at random points between real and fake images."""
        alpha = tf.random.uniform((tf.shape(real)[0], 1, 1, 1))
        mixed = real + alpha * (fake - real)
        with tf.GradientTape() as tape:
            tape.watch(mixed)
            scores = self.discriminate(mixed, label_ids, training=True)
        gradients = tape.gradient(scores, mixed)
        norms = tf.sqrt(tf.reduce_sum(tf.square(gradients), axis=[1, 2, 3]) + 1e-12)
        return tf.reduce_mean(tf.square(norms - 1.0))

    def _unpack(self, data):
        if isinstance(data, tuple):
            data = data[0]
        if isinstance(data, dict):
            images, label_ids = data["images"], data.get("labels")
        else:
            images, label_ids = data, None
        real = tf.cast(images, "float32") * 2.0 - 1.0  # the generator's tanh range
        if self.conditional and label_ids is None:
            raise ValueError("a conditional GAN trains on {'images', 'labels'} batches")
        return real, (tf.cast(label_ids, tf.int32) if self.conditional else None)

    def _generate_for_training(self, batch, label_ids):
        latents = tf.random.normal((batch, self.latent_dim))
        inputs = [latents, label_ids] if self.conditional else latents
        return tf.cast(self.generator(inputs, training=True), "float32")

    def _scaled(self, optimizer, loss):
        loss = per_replica(loss)
        return optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss

    def train_step(self, data):
        real, label_ids = self._unpack(data)
        batch = tf.shape(real)[0]
        d_weights = self.discriminator.trainable_variables
        for _ in range(self.d_steps):
            fake = self._generate_for_training(batch, label_ids)
            with tf.GradientTape() as tape:
                both = tf.concat([real, fake], axis=0)
                both_labels = None if label_ids is None else tf.concat([label_ids, label_ids], axis=0)
                scores = self.discriminate(both, both_labels, training=True)
                d_loss = self.d_loss_fn(scores[:batch], scores[batch:])
                if self.loss_name == "wgan-gp":
                    d_loss += self.gp_weight * self.gradient_penalty(real, fake, label_ids)
                scaled = self._scaled(self.d_optimizer, d_loss)
            self.d_optimizer.apply_gradients(zip(tape.gradient(scaled, d_weights), d_weights))

        g_weights = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            fake = self._generate_for_training(batch, label_ids)
            g_loss = self.g_loss_fn(self.discriminate(fake, label_ids, training=True))
            scaled = self._scaled(self.g_optimizer, g_loss)
        self.g_optimizer.apply_gradients(zip(tape.gradient(scaled, g_weights), g_weights))

        self._track(d_loss, g_loss)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        """The same losses on held-out images, without updates (the discriminator's view of them)."""
        real, label_ids = self._unpack(data)
        batch = tf.shape(real)[0]
        latents = tf.random.normal((batch, self.latent_dim))
        fake = tf.cast(self.generator([latents, label_ids] if self.conditional else latents, training=False), "float32")
        real_scores = self.discriminate(real, label_ids, training=False)
        fake_scores = self.discriminate(fake, label_ids, training=False)
        self._track(self.d_loss_fn(real_scores, fake_scores), self.g_loss_fn(fake_scores))
        return {m.name: m.result() for m in self.metrics}

    def _track(self, d_loss, g_loss):
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        self.loss_tracker.update_state(d_loss + g_loss)

    @property
    def metrics(self):
        return [self.loss_tracker, self.d_loss_tracker, self.g_loss_tracker]

    def generate(self, latents, label_ids=None):
        return self(self._label_inputs_dict(latents, label_ids), training=False)

    def _label_inputs_dict(self, latents, label_ids):
        if not self.conditional:
            return latents
        if label_ids is None:
            label_ids = self.label_sequence(ops.shape(latents)[0], -1)
        return {"latents": latents, "labels": ops.cast(label_ids, "int32")}


# === Config ===
# (Each model's config is its constructor's keyword arguments: see shared.models.TaskModel.)


# --- helpers the app and the benchmark share ---------------------------------------------------------


def to_unit(images_uint8) -> np.ndarray:
    return np.asarray(images_uint8, dtype=np.float32) / 255.0


def binarize(images_uint8, seed: int) -> np.ndarray:
    """Stochastic binarisation (a pixel is 1 with probability intensity/255), seeded: the usual
    'binarised MNIST' of the VAE literature (Burda et al. evaluate on such samples)."""
    rng = np.random.default_rng(seed)
    unit = to_unit(images_uint8)
    return (rng.random(unit.shape, dtype=np.float32) < unit).astype(np.float32)


def dequantize(images_uint8, seed: int) -> np.ndarray:
    """(pixel + u) / 256, u ~ U[0, 1): continuous pixels for the Gaussian likelihood, seeded."""
    rng = np.random.default_rng(seed)
    return (np.asarray(images_uint8, dtype=np.float32) + rng.random(np.shape(images_uint8), dtype=np.float32)) / 256.0


def vae_targets(model: VAE, images_uint8, seed: int) -> np.ndarray:
    """The pixels the VAE's likelihood scores, for evaluation: binarised or dequantised, seeded."""
    return binarize(images_uint8, seed) if model.likelihood == "bernoulli" else dequantize(images_uint8, seed)


def importance_weighted_bounds(model: VAE, targets, label_ids=None, samples=100, batch_size=64, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the negative ELBO and the IWAE estimate of -log p(x) (nats), both from the same
    `samples` draws, so the estimate is never above the negative ELBO."""
    chunk = max(1, min(batch_size, 4096 // max(samples, 1)))
    neg_elbo, nll = [], []
    for start in range(0, len(targets), chunk):
        stop = min(start + chunk, len(targets))
        labels = None if label_ids is None else label_ids[start:stop]
        log_w = model.log_weights(targets[start:stop], labels, samples, seed + start)
        neg_elbo.append(-ops.convert_to_numpy(ops.mean(log_w, axis=0)))
        nll.append(-ops.convert_to_numpy(ops.logsumexp(log_w, axis=0) - math.log(samples)))
    return np.concatenate(neg_elbo), np.concatenate(nll)


def train_feature_classifier(model: ImageGenerator, images_uint8, label_ids, epochs=3, batch_size=64, seed=0, verbose=0) -> dict:
    """Trains the model's feature classifier on real images (a separate optimizer; the generator is
    untouched); returns its last training accuracy and loss."""
    classifier = model.feature_classifier
    if classifier is None:
        raise ValueError("no feature classifier to train")
    classifier.trainable = True
    # A wrapper model owns the optimizer, so no optimizer state lands in the generator's file.
    inputs = keras.Input(shape=tuple(model.image_shape))
    wrapper = keras.Model(inputs, classifier(inputs)[1])
    wrapper.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    dataset = (
        tf.data.Dataset.from_tensor_slices((to_unit(images_uint8), np.asarray(label_ids, dtype=np.int32)))
        .shuffle(len(label_ids), seed=seed)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    history = wrapper.fit(dataset, epochs=epochs, verbose=verbose, shuffle=False)  # the dataset shuffles
    classifier.trainable = False
    return {"accuracy": float(history.history["accuracy"][-1]), "loss": float(history.history["loss"][-1])}


def classifier_outputs(model: ImageGenerator, images_unit, batch_size=256) -> tuple[np.ndarray, np.ndarray]:
    """(features, probabilities) of the feature classifier for float images in [0, 1]."""
    features, probabilities = [], []
    for start in range(0, len(images_unit), batch_size):
        f, p = model.features(ops.convert_to_tensor(images_unit[start : start + batch_size], "float32"))
        features.append(ops.convert_to_numpy(f))
        probabilities.append(ops.convert_to_numpy(p))
    return np.concatenate(features).astype(np.float64), np.concatenate(probabilities)


def frechet_distance(features_a, features_b) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2): FID's formula (Heusel et al. 2017),
    here on the app's own classifier features, not Inception's."""
    import warnings

    from scipy import linalg

    mu_a, mu_b = features_a.mean(axis=0), features_b.mean(axis=0)
    sigma_a, sigma_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    with warnings.catch_warnings():
        # fewer images than features make the covariances singular: sqrtm warns, the result stands
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma_a @ sigma_b)
        if not np.isfinite(covmean).all():  # regularise as the reference implementation does
            offset = np.eye(len(sigma_a)) * 1e-6
            covmean = linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    covmean = np.real(covmean)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(covmean))


def generate_in_batches(model: ImageGenerator, latents, label_ids=None, batch_size=256) -> np.ndarray:
    """uint8 images for `latents` (and labels), in batches."""
    out = []
    for start in range(0, len(latents), batch_size):
        labels = None if label_ids is None else ops.convert_to_tensor(label_ids[start : start + batch_size], "int32")
        out.append(ops.convert_to_numpy(model.generate_uint8(ops.convert_to_tensor(latents[start : start + batch_size]), labels)))
    return np.concatenate(out) if out else np.zeros((0, *model.image_shape), np.uint8)
