"""The anomaly models: autoencoders whose failure to reconstruct an input is its anomaly score.

One model per ``--kind``, all built on :class:`AnomalyModel`:

- :class:`TabularAutoencoder`: an ensemble of small dense autoencoders over rows, in one graph;
  robust standardisation (median, IQR) and median imputation of missing values happen inside
  the model.
- :class:`SeriesAutoencoder`: Conv1D encoder and Conv1DTranspose decoder over windows of a series
  (keras-io's ``timeseries_anomaly_detection``), standardised per channel inside the model.
- :class:`ImageAutoencoder`: Conv2D encoder, a dense code, Conv2DTranspose decoder over uint8 images.

Each functional graph outputs ``{"error", "code"}``: the mean squared reconstruction error of
every example (over standardised features, so each feature weighs the same whatever its unit;
over pixels in [0, 1] for images) and its bottleneck code (averaged over time by the
series model). Training minimises the mean error (``compute_loss``).

The anomaly score adds to the error the Mahalanobis distance of the code from the codes of the
training data: the error alone misses points that lie on the learned manifold but far out along
it (on the six ODDS sets it raised the mean ROC-AUC of a prototype from 0.76 to 0.84, see the README).
Each term is divided by its median over the training data, so both weigh alike and a typical
normal example scores about 2; an ensemble (the tabular model) does this per member and averages
the members' scores, so no member dominates. For tables the code's mean and covariance come from
the 75% of training codes closest to them (the training rows hold anomalies). Those statistics
and the threshold are non-trainable weights set by :meth:`AnomalyModel.calibrate` after every
epoch, so each checkpoint, the saved model and the exported SavedModel carry the ones that fit
their own weights.
"""

from __future__ import annotations

import warnings
import weakref

import keras
import numpy as np
from keras import layers, ops

from dlapps.shared.models import TaskModel

# The automatic threshold: Tukey's "far out" fence, Q3 + 3 IQR, on the logarithm of the held-out
# scores. It needs no guess of the contamination; the log because scores are sums of squares,
# skewed to the right, and roughly symmetric only on a log scale (on the demo table the fence on
# raw scores flagged 35 of 400 rows for 16 anomalies, on log scores 15, all of them anomalies).
FENCE_IQRS = 3.0

# Re-estimations of the code's mean and covariance from its closest `code_support` share (see
# `AnomalyModel.calibrate`); C-steps converge in a few (Rousseeuw and Van Driessen's FAST-MCD).
TRIM_STEPS = 3


def choose_threshold(scores, contamination: float = 0.0, percentile: float = 0.0, fence: float = FENCE_IQRS) -> float:
    """The score above which an example is flagged, from held-out scores: the top `contamination`
    share, else the `percentile`-th percentile, else the fence Q3 + `fence` IQR on log scores."""
    scores = np.asarray(scores, dtype=np.float64)
    if contamination > 0:
        return float(np.quantile(scores, 1.0 - contamination))
    if percentile > 0:
        return float(np.percentile(scores, percentile))
    q1, q3 = np.percentile(np.log(np.maximum(scores, 1e-12)), [25, 75])
    return float(np.exp(q3 + fence * (q3 - q1)))


def robust_statistics(values: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-column median and robust scale of a 2-D array with possible NaNs: IQR / 1.349 (the
    standard deviation of a normal column), else the standard deviation (a mostly-constant column
    such as a rare binary flag), else 1 (a constant column: it then adds nothing unless it
    changes at prediction time, and nothing is divided by zero)."""
    values = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():  # an all-missing column: center 0, scale 1, no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        center = np.nan_to_num(np.nanmedian(values, axis=0))
        q75, q25 = np.nanpercentile(values, [75, 25], axis=0)
        std = np.nan_to_num(np.nanstd(values, axis=0))
    scale = np.nan_to_num((q75 - q25) / 1.349)
    scale = np.where(scale > 0, scale, np.where(std > 0, std, 1.0))
    return [float(c) for c in center], [float(s) for s in scale]


# A model's compiled `predict_step` for `measure`, kept outside the model so that exporting it
# does not try to serialise the function.
_MEASURE_FUNCTIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


# === Layers ===


@keras.saving.register_keras_serializable(package="dlapps.anomaly")
class Standardize(layers.Layer):
    """(x - center) / scale per feature, with missing values (NaN) replaced by the center: median
    imputation, in the model so that predict and the export impute the same way."""

    def __init__(self, center, scale, **kwargs):
        super().__init__(**kwargs)
        self.center = [float(c) for c in center]
        self.scale = [float(s) for s in scale]

    def call(self, inputs):
        inputs = ops.cast(inputs, "float32")
        standardised = (inputs - ops.convert_to_tensor(self.center)) / ops.convert_to_tensor(self.scale)
        return ops.where(ops.isnan(standardised), ops.zeros_like(standardised), standardised)

    def get_config(self):
        return {**super().get_config(), "center": self.center, "scale": self.scale}


@keras.saving.register_keras_serializable(package="dlapps.anomaly")
class ReconstructionError(layers.Layer):
    """Mean squared difference of target and reconstruction per example (every axis but the first),
    or per example and member (the last axis) with `members`."""

    def __init__(self, members=False, **kwargs):
        super().__init__(**kwargs)
        self.members = bool(members)

    def call(self, target, reconstruction):
        squared = ops.square(ops.cast(target, "float32") - ops.cast(reconstruction, "float32"))
        if self.members:  # (batch, members, features) -> an error per member
            return ops.mean(squared, axis=-1)
        return ops.mean(ops.reshape(squared, (ops.shape(squared)[0], -1)), axis=-1)

    def get_config(self):
        return {**super().get_config(), "members": self.members}


@keras.saving.register_keras_serializable(package="dlapps.anomaly")
class Members(layers.Layer):
    """(batch, features) -> (batch, members, features): one copy of the input per member."""

    def __init__(self, members, **kwargs):
        super().__init__(**kwargs)
        self.members = int(members)

    def call(self, inputs):
        return ops.repeat(ops.expand_dims(inputs, 1), self.members, axis=1)

    def get_config(self):
        return {**super().get_config(), "members": self.members}


@keras.saving.register_keras_serializable(package="dlapps.anomaly")
class EnsembleDense(layers.Layer):
    """A Dense layer per member, all in one batched matmul: (batch, members, in) -> (batch,
    members, units). Each member's kernel is drawn separately, so the members start apart."""

    def __init__(self, units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        members, width = input_shape[1], input_shape[2]
        self.kernel = self.add_weight(shape=(members, width, self.units), initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(members, self.units), initializer="zeros", name="bias")

    def call(self, inputs):
        # members first for a plain batched matmul (what LiteRT and ONNX convert without einsum)
        outputs = ops.transpose(ops.matmul(ops.transpose(inputs, (1, 0, 2)), self.kernel), (1, 0, 2))
        return self.activation(outputs + self.bias)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": keras.activations.serialize(self.activation)}


# === Functional Model ===


class AnomalyModel(TaskModel):
    """What the three autoencoders share: the loss, the calibrated score and threshold, decoding."""

    members = None  # an ensemble's member count: its error is (batch, members), its code (batch, members, size)
    code_support = 1.0  # share of the training codes the code's mean and covariance are estimated from
    fence_iqrs = FENCE_IQRS  # the automatic threshold's fence, in IQRs of the log scores above Q3

    def _add_calibration(self, code_size: int) -> None:
        """The score's statistics and the threshold, as non-trainable weights (saved, restored by
        --resume, exported), one set per member for an ensemble. Until `calibrate` runs, the
        score is the raw error plus the squared code norm, and nothing is flagged."""
        lead = (self.members,) if self.members else ()
        self.code_mean = self.add_weight(shape=(*lead, code_size), initializer="zeros", trainable=False, name="code_mean")
        self.code_precision = self.add_weight(shape=(*lead, code_size, code_size), initializer="zeros", trainable=False, name="code_precision")
        self.code_precision.assign(np.broadcast_to(np.eye(code_size, dtype="float32"), (*lead, code_size, code_size)))
        self.error_scale = self.add_weight(shape=lead, initializer="ones", trainable=False, name="error_scale")
        self.distance_scale = self.add_weight(shape=lead, initializer="ones", trainable=False, name="distance_scale")
        self.threshold = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(float("inf")), trainable=False, name="threshold"
        )

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        error = y_pred["error"]
        if y is None:
            loss = ops.mean(error)
        else:  # an ensemble's training batches carry which members learn from each row (bagging)
            share = ops.cast(y, "float32")
            loss = ops.sum(error * share) / ops.maximum(ops.sum(share), 1.0)
        return loss + ops.sum(self.losses) if self.losses else loss

    def score(self, error, code):
        """Error and Mahalanobis distance of the code, each over its training median; an
        ensemble averages these scores of its members."""
        centred = ops.cast(code, "float32") - self.code_mean
        projected = ops.squeeze(ops.matmul(ops.expand_dims(centred, -2), self.code_precision), -2)
        distance = ops.sum(projected * centred, axis=-1)
        score = error / self.error_scale + distance / self.distance_scale
        return ops.mean(score, axis=-1) if self.members else score

    def predict_step(self, data):
        inputs = data[0] if isinstance(data, (tuple, list)) else data
        outputs = self(inputs, training=False)
        score = self.score(outputs["error"], outputs["code"])
        # error and code feed `calibrate`; score and anomaly are the answer.
        return {**outputs, "score": score, "anomaly": score > self.threshold}

    def detect(self, inputs):
        """A batch of rows, windows or images -> {"score", "anomaly"} (score above the threshold),
        in one graph: predict and every exported signature go through here."""
        found = self.predict_step(inputs)
        return {"score": found["score"], "anomaly": found["anomaly"]}

    def measure(self, inputs, batch_size: int = 1024) -> dict:
        """`predict_step` over an array in chunks, as NumPy: model.predict without its per-call
        machinery (iterators, callbacks), which calibration would pay twice every epoch."""
        import tensorflow as tf

        if self not in _MEASURE_FUNCTIONS:
            model = weakref.ref(self)  # the cache must not keep the model alive
            _MEASURE_FUNCTIONS[self] = tf.function(lambda batch: model().predict_step(batch), reduce_retracing=True)
        chunks = [_MEASURE_FUNCTIONS[self](inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
        return {key: np.concatenate([np.asarray(chunk[key]) for chunk in chunks]) for key in chunks[0]}

    def calibrate(self, normal, batch_size: int = 1024) -> None:
        """Sets the score's statistics from `normal`, the training examples (an array): mean
        and precision of their codes, median error and distance (per member of an ensemble)."""
        measured = self.measure(normal, batch_size)
        codes, errors = measured["code"].astype(np.float64), measured["error"].astype(np.float64)
        if not self.members:  # one member
            codes, errors = codes[:, None], errors[:, None]
        means, precisions, error_scales, distance_scales = [], [], [], []
        for member in range(codes.shape[1]):
            code = codes[:, member]
            kept = code
            # Trimmed (MCD-like C-steps): mean and covariance of the `code_support` share of codes
            # closest to the previous estimate, so anomalies among the training rows do not widen
            # the very covariance that should place them far out.
            for _ in range(1 + (TRIM_STEPS if self.code_support < 1 else 0)):
                mean = kept.mean(axis=0)
                covariance = np.atleast_2d(np.cov(kept, rowvar=False))
                # A small ridge keeps the precision finite when code units are dead or collinear.
                ridge = 1e-6 * max(float(np.trace(covariance)) / len(covariance), 1e-12)
                precision = np.linalg.pinv(covariance + ridge * np.eye(len(covariance)))
                distances = np.einsum("ij,jk,ik->i", code - mean, precision, code - mean)
                kept = code[np.argsort(distances)[: max(len(code[0]) + 2, int(self.code_support * len(code)))]]
            means.append(mean)
            precisions.append(precision)
            error_scales.append(max(float(np.median(errors[:, member])), 1e-12))
            distance_scales.append(max(float(np.median(distances)), 1e-12))
        shaped = (lambda v: np.asarray(v, "float32")) if self.members else (lambda v: np.asarray(v[0], "float32"))
        self.code_mean.assign(shaped(means))
        self.code_precision.assign(shaped(precisions))
        self.error_scale.assign(shaped(error_scales))
        self.distance_scale.assign(shaped(distance_scales))

    def set_threshold(self, scores, contamination: float = 0.0, percentile: float = 0.0) -> float:
        """Sets the threshold from held-out scores (see `choose_threshold`) and returns it."""
        threshold = choose_threshold(scores, contamination, percentile, self.fence_iqrs)
        self.threshold.assign(threshold)
        return threshold


@keras.saving.register_keras_serializable(package="dlapps.anomaly")
class TabularAutoencoder(AnomalyModel):
    """An ensemble of dense autoencoders over table rows, in one graph: every member reads the
    same standardised row, has its own weights (drawn apart, and trained on its own share of the
    rows when the app bags them, see ``compute_loss``), and scores it with its own calibration;
    the model's score is the mean of the members' scores.

    Args:
        features: column names, in the order the model reads them.
        center, scale: per-feature median and robust scale (IQR / 1.349, falling back to the
            standard deviation, then to 1 for a constant column) of the training rows.
        hidden_units: encoder layer widths of each member; the decoder mirrors them.
        bottleneck: width of each member's code.
        noise: standard deviation of the Gaussian noise added to the standardised input while
            training (a denoising autoencoder); 0 for a plain one.
        members: autoencoders in the ensemble.
    """

    # Tables hold their anomalies among the training rows (3-35% on the ODDS sets): the code's
    # statistics come from the 75% of rows closest to them (on satellite and thyroid this raised
    # ROC-AUC from 0.69 to 0.75 and 0.95 to 0.99, see the README).
    code_support = 0.75
    # Normal rows far out along the code score higher too (the trimmed covariance is tighter),
    # which widens the log scores' IQR: a fence at 2 IQR (on 2,000 fresh demo rows it flagged 111,
    # 99 of the 100 anomalies among them; 3 IQR flagged 31, all anomalies; 1.5 flagged 153).
    fence_iqrs = 2.0

    def __init__(self, features, center, scale, hidden_units=(64, 32), bottleneck=8, noise=0.0, members=1, **kwargs):
        width = len(features)
        # === Layers ===
        standardize = Standardize(center, scale, name="standardize")
        encoder = [EnsembleDense(units, activation="relu", name=f"encoder_{i}") for i, units in enumerate(hidden_units)]
        code_layer = EnsembleDense(bottleneck, name="code")
        decoder = [
            EnsembleDense(units, activation="relu", name=f"decoder_{i}") for i, units in enumerate(reversed(hidden_units))
        ]
        reconstruct = EnsembleDense(width, dtype="float32", name="reconstruction")

        # === Functional Model ===
        rows = keras.Input(shape=(width,), name="rows")
        target = Members(members, name="members")(standardize(rows))
        x = layers.GaussianNoise(noise, name="noise")(target) if noise > 0 else target
        for layer in encoder:
            x = layer(x)
        code = code_layer(x)
        x = code
        for layer in decoder:
            x = layer(x)
        error = ReconstructionError(members=True, name="error")(target, reconstruct(x))
        super().__init__(inputs=rows, outputs={"error": error, "code": code}, **kwargs)

        # === Config ===
        self.features = list(features)
        self.center, self.scale = list(center), list(scale)
        self.hidden_units, self.bottleneck, self.noise, self.members = list(hidden_units), bottleneck, noise, int(members)
        self._add_calibration(bottleneck)


@keras.saving.register_keras_serializable(package="dlapps.anomaly")
class SeriesAutoencoder(AnomalyModel):
    """Conv1D autoencoder over windows of a (multichannel) series, after keras-io's example.

    Args:
        channels: names of the value columns.
        center, scale: per-channel median and robust scale of the training series.
        window: time steps per window (a multiple of 2 ** len(filters)).
        filters: encoder convolutions, each halving the length; the decoder mirrors them.
        kernel_size: convolution width.
        noise: denoising noise, as for the tabular model.
    """

    def __init__(self, channels, center, scale, window=288, filters=(32, 16), kernel_size=7, noise=0.0, **kwargs):
        width = len(channels)
        # === Layers ===
        standardize = Standardize(center, scale, name="standardize")
        encoder = [
            layers.Conv1D(f, kernel_size, strides=2, padding="same", activation="relu", name=f"encoder_{i}")
            for i, f in enumerate(filters)
        ]
        decoder = [
            layers.Conv1DTranspose(f, kernel_size, strides=2, padding="same", activation="relu", name=f"decoder_{i}")
            for i, f in enumerate(reversed(filters))
        ]
        reconstruct = layers.Conv1DTranspose(width, kernel_size, padding="same", dtype="float32", name="reconstruction")

        # === Functional Model ===
        windows = keras.Input(shape=(window, width), name="windows")
        target = standardize(windows)
        x = layers.GaussianNoise(noise, name="noise")(target) if noise > 0 else target
        for layer in encoder:
            x = layer(x)
        code = layers.GlobalAveragePooling1D(name="code")(x)
        for layer in decoder:
            x = layer(x)
        error = ReconstructionError(name="error")(target, reconstruct(x))
        super().__init__(inputs=windows, outputs={"error": error, "code": code}, **kwargs)

        # === Config ===
        self.channels = list(channels)
        self.center, self.scale = list(center), list(scale)
        self.window, self.filters, self.kernel_size, self.noise = window, list(filters), kernel_size, noise
        self._add_calibration(filters[-1])

    def detect_series(self, values):
        """A batch of equal-length series (batch, time, channels) -> per-timestamp {"score",
        "anomaly"}. Every window of `window` steps is scored; a timestamp's score is the lowest
        score of the windows covering it, so it is flagged only when all of them are (keras-io's
        rule): an anomaly marks the steps it spans, not the whole window around them."""
        import tensorflow as tf

        values = tf.convert_to_tensor(values, tf.float32)
        batch, steps = tf.shape(values)[0], tf.shape(values)[1]
        frames = tf.signal.frame(values, self.window, 1, axis=1)  # (batch, windows, window, channels)
        count = tf.shape(frames)[1]
        flat = tf.reshape(frames, (-1, self.window, len(self.channels)))
        window_scores = tf.reshape(self.detect(flat)["score"], (batch, count))
        # Lowest score over the windows covering each step: a max-pool of the negated scores,
        # padded so that steps near the ends see only the windows that exist.
        padded = tf.pad(-window_scores, [[0, 0], [self.window - 1, self.window - 1]], constant_values=-np.inf)
        pooled = tf.nn.max_pool1d(padded[:, :, None], ksize=self.window, strides=1, padding="VALID")
        scores = -tf.reshape(pooled, (batch, steps))
        return {"score": scores, "anomaly": scores > self.threshold}


@keras.saving.register_keras_serializable(package="dlapps.anomaly")
class ImageAutoencoder(AnomalyModel):
    """Convolutional autoencoder over uint8 images (pixels scaled to [0, 1] inside the model),
    with a dense code between encoder and decoder: convolutions alone reconstruct a local defect
    as faithfully as the rest of the image (on the demo their error told anomalies from normal
    images with a ROC-AUC of 0.59), a small dense code cannot.

    Args:
        image_size: side of the square images.
        channels: 1 (grayscale) or 3 (RGB).
        filters: encoder convolutions, each halving the side; the decoder mirrors them.
        bottleneck: width of the dense code.
        noise: denoising noise on the scaled pixels while training.
    """

    def __init__(self, image_size=32, channels=1, filters=(32, 16), bottleneck=8, noise=0.0, **kwargs):
        side = image_size // 2 ** len(filters)
        # === Layers ===
        encoder = [
            layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", name=f"encoder_{i}")
            for i, f in enumerate(filters)
        ]
        code_layer = layers.Dense(bottleneck, name="code")
        expand = layers.Dense(side * side * filters[-1], activation="relu", name="expand")
        decoder = [
            layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu", name=f"decoder_{i}")
            for i, f in enumerate(reversed(filters))
        ]
        reconstruct = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", dtype="float32", name="reconstruction")

        # === Functional Model ===
        images = keras.Input(shape=(image_size, image_size, channels), dtype="uint8", name="images")
        target = layers.Rescaling(1.0 / 255.0, name="rescale")(images)
        x = layers.GaussianNoise(noise, name="noise")(target) if noise > 0 else target
        for layer in encoder:
            x = layer(x)
        code = code_layer(layers.Flatten(name="flatten")(x))
        x = layers.Reshape((side, side, filters[-1]), name="unflatten")(expand(code))
        for layer in decoder:
            x = layer(x)
        error = ReconstructionError(name="error")(target, reconstruct(x))
        super().__init__(inputs=images, outputs={"error": error, "code": code}, **kwargs)

        # === Config ===
        self.image_size, self.channels, self.filters = image_size, channels, list(filters)
        self.bottleneck, self.noise = bottleneck, noise
        self._add_calibration(bottleneck)
