"""The classify model: resizing, augmentation and the backbone's own input scaling inside the model,
then a pretrained backbone (keras.applications), global average pooling and a new softmax head.

The model takes float RGB images in [0, 255] of any size, so ``predict``, the exported float-tensor
signature and the exported bytes signature (which decodes, then calls the model) see the same pixels.
Training happens in phases (``set_phase``): the new head on a frozen backbone, then the top
``unfreeze`` backbone layers at a low learning rate with every BatchNormalization layer kept frozen.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
from keras import layers, ops

from dlapps.shared.errors import UserError
from dlapps.shared.models import TaskModel

# name -> (keras.applications constructor, input scaling the ImageNet weights expect, has alpha)
BACKBONES = {
    "tiny": (None, "tf", False),  # tiny_backbone: no pretrained weights
    "mobilenet": ("MobileNet", "tf", True),
    "mobilenet_v2": ("MobileNetV2", "tf", True),
    # EfficientNet scales and normalises inside itself (its Rescaling + Normalization layers).
    "efficientnet_b0": ("EfficientNetB0", "none", False),
    "resnet50": ("ResNet50", "caffe", False),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="dlapps.classify")
class InputScaling(layers.Layer):
    """RGB in [0, 255] -> what a backbone's ImageNet weights expect: ``tf`` scales to [-1, 1]
    (MobileNets), ``caffe`` flips to BGR and subtracts the ImageNet mean (ResNet50), ``none`` passes
    the pixels on (EfficientNet normalises inside itself)."""

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("tf", "caffe", "none"):
            raise ValueError(f"input scaling must be tf, caffe or none, got {mode!r}")
        self.mode = mode

    def call(self, images):
        if self.mode == "tf":
            return images / 127.5 - 1.0
        if self.mode == "caffe":
            bgr = ops.flip(images, axis=-1)
            return bgr - ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=images.dtype)
        return images

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def tiny_backbone(image_size: int):
    """A small CNN to train from scratch on small data (the demo, tests): four stride-2 blocks of
    convolution, BatchNormalization and ReLU."""
    images = keras.Input((image_size, image_size, 3), name="scaled_images")
    x = images
    for block, filters in enumerate((16, 32, 64, 128), start=1):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = layers.BatchNormalization(name=f"block{block}_bn")(x)
        x = layers.Activation("relu", name=f"block{block}_relu")(x)
    return keras.Model(images, x, name="backbone")


def make_backbone(name: str, image_size: int, alpha: float = 1.0, weights=None):
    """A keras.applications feature extractor without its top (or the tiny CNN), named ``backbone``."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; one of {', '.join(BACKBONES)}")
    if name == "tiny":
        return tiny_backbone(image_size)
    constructor, _, has_alpha = BACKBONES[name]
    kwargs = dict(input_shape=(image_size, image_size, 3), include_top=False, weights=weights, name="backbone")
    if has_alpha:
        kwargs["alpha"] = alpha
    backbone = getattr(keras.applications, constructor)(**kwargs)
    if name == "efficientnet_b0":
        set_efficientnet_normalization(backbone)
    return backbone


def set_efficientnet_normalization(backbone) -> None:
    """EfficientNet's Normalization layer: ImageNet mean and variance (std squared). Keras builds it
    unadapted without weights, and its ImageNet file stores std as the variance (corrected by an
    extra Rescaling layer that exists only when built with weights='imagenet')."""
    import numpy as np

    normalization = next(layer for layer in backbone.layers if isinstance(layer, layers.Normalization))
    for variable in normalization.weights:
        if variable.path.endswith("mean"):
            variable.assign(np.reshape(IMAGENET_MEAN, variable.shape).astype("float32"))
        elif variable.path.endswith("variance"):
            variable.assign(np.reshape(np.square(IMAGENET_STD), variable.shape).astype("float32"))


def augmentation_layers(strength: float = 1.0, seed=None):
    """Random flip, rotation, zoom and contrast; `strength` scales the ranges (1: rotation up to
    0.1 of a turn, zoom and translation up to 10%, contrast 20%, brightness 10% of the range).
    Zoom reaches further in than out (a crop of the subject, not a smaller one with filled edges)."""
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.1 * strength, seed=seed),
            layers.RandomZoom((-0.1 * strength, 0.1 * min(strength, 1.0)), seed=seed),
            layers.RandomTranslation(0.1 * strength, 0.1 * strength, seed=seed),
            layers.RandomContrast(min(0.2 * strength, 0.9), seed=seed),
            layers.RandomBrightness(min(0.1 * strength, 0.9), value_range=(0, 255), seed=seed),
        ],
        name="augmentation",
    )


@keras.saving.register_keras_serializable(package="dlapps.classify")
class FlipBatch(layers.Layer):
    """Test-time flip averaging, first half: at inference the batch is followed by its mirror
    images ([x; flip(x)], twice the rows); while training it passes the batch on (the random
    augmentation flips already)."""

    def call(self, images, training=None):
        if training:
            return images
        return ops.concatenate([images, ops.flip(images, axis=2)], axis=0)


@keras.saving.register_keras_serializable(package="dlapps.classify")
class AverageFlips(layers.Layer):
    """Test-time flip averaging, second half: the mean of each image's probabilities and its
    mirror image's (the rows FlipBatch appended); passes them on while training."""

    def call(self, probabilities, training=None):
        if training:
            return probabilities
        half = ops.shape(probabilities)[0] // 2
        return (probabilities[:half] + probabilities[half:]) / 2.0


@keras.saving.register_keras_serializable(package="dlapps.classify")
class ImageClassifier(TaskModel):
    """Image classifier on a keras.applications backbone.

    Args:
        labels: class names; the output has one probability per name.
        backbone: ``mobilenet``, ``mobilenet_v2``, ``efficientnet_b0``, ``resnet50`` or ``tiny``.
        image_size: side of the square every image is resized to inside the model.
        alpha: width multiplier of the MobileNets.
        dropout: dropout before the classifier.
        augment: random flip, rotation, zoom and contrast (active only while training).
        batchnorm_momentum: momentum of the backbone's BatchNormalization moving statistics (None:
            the Keras default 0.99). Short runs from scratch need a lower one (0.9): with 0.99 the
            moving statistics still lag the weights after a few hundred steps, and inference collapses.
        phase, unfreeze: which layers train (see ``set_phase``). The config holds the current
            phase, so a model saved in phase two reloads with the same trainable layers, and its
            optimizer state fits them.
    """

    def __init__(self, labels=(), backbone="mobilenet", image_size=224, alpha=1.0, dropout=0.2, augment=True,
                 batchnorm_momentum=None, phase="all", unfreeze=0, augment_strength=1.0, test_flip=False, **kwargs):
        # === Layers ===
        # antialiased like the input pipeline's resize (shared.images), so any-size float input agrees with it
        resize = layers.Resizing(image_size, image_size, antialias=True, name="resize")
        augmentation = augmentation_layers(augment_strength) if augment else None
        scaling = InputScaling(BACKBONES[backbone][1], name="input_scaling")
        feature_extractor = make_backbone(backbone, image_size, alpha)
        if batchnorm_momentum is not None:
            for layer in feature_extractor.layers:
                if isinstance(layer, layers.BatchNormalization):
                    layer.momentum = float(batchnorm_momentum)
        pooling = layers.GlobalAveragePooling2D(name="pooling")
        head_dropout = layers.Dropout(dropout, name="classifier_dropout")
        # float32 output keeps softmax stable under mixed precision.
        classifier = layers.Dense(len(labels), activation="softmax", dtype="float32", name="classifier")

        # === Functional Model ===
        images = keras.Input(shape=(None, None, 3), dtype="float32", name="images")
        x = resize(images)
        if augmentation is not None:
            x = augmentation(x)
        if test_flip:
            x = FlipBatch(name="test_flip")(x)
        features = feature_extractor(scaling(x))
        probabilities = classifier(head_dropout(pooling(features)))
        if test_flip:
            probabilities = AverageFlips(name="average_flips")(probabilities)
        super().__init__(inputs=images, outputs=probabilities, **kwargs)

        # === Config ===
        self.labels = list(labels)
        self.backbone_name = backbone
        self.image_size = int(image_size)
        self.alpha = float(alpha)
        self.dropout = float(dropout)
        self.augment = bool(augment)
        self.augment_strength = float(augment_strength)
        self.test_flip = bool(test_flip)
        self.batchnorm_momentum = None if batchnorm_momentum is None else float(batchnorm_momentum)
        self.set_phase(phase, unfreeze)

    def get_config(self):
        return {**super().get_config(), "phase": self.phase, "unfreeze": self.unfreeze}

    # --- phases ---------------------------------------------------------------------------------

    def set_phase(self, phase: str, unfreeze: int = 0) -> list[str]:
        """Sets which layers train; returns the names of the trainable backbone layers.

        ``head``: the backbone is frozen, only the classifier learns.
        ``finetune``: the top `unfreeze` layers of the backbone learn too, except BatchNormalization
        layers, which stay frozen (and so keep normalising with their ImageNet statistics: Keras
        runs a non-trainable BatchNormalization in inference mode).
        ``all``: everything learns (training from scratch).
        """
        backbone = self.get_layer("backbone")
        if phase == "head":
            backbone.trainable = False
        elif phase == "finetune":
            backbone.trainable = True
            for layer in backbone.layers:
                layer.trainable = False
            for layer in backbone.layers[len(backbone.layers) - unfreeze :] if unfreeze > 0 else []:
                if not isinstance(layer, layers.BatchNormalization):
                    layer.trainable = True
        elif phase == "all":
            backbone.trainable = True
            for layer in backbone.layers:
                layer.trainable = True
        else:
            raise ValueError(f"phase must be head, finetune or all, got {phase!r}")
        self.phase, self.unfreeze = phase, int(unfreeze)
        return [layer.name for layer in backbone.layers if layer.trainable and layer.weights] if backbone.trainable else []

    # --- pieces for Grad-CAM --------------------------------------------------------------------

    def backbone_features(self, images):
        """Float images in [0, 255] -> the backbone's last feature map (inference mode)."""
        x = self.get_layer("resize")(images)
        x = self.get_layer("input_scaling")(x)
        return self.get_layer("backbone")(x, training=False)

    def head(self, features):
        """The backbone's feature map -> class probabilities (inference mode)."""
        pooled = self.get_layer("pooling")(features)
        return self.get_layer("classifier")(self.get_layer("classifier_dropout")(pooled, training=False))


@keras.saving.register_keras_serializable(package="dlapps.classify")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of probabilities against integer labels smoothed towards the uniform
    distribution: the target is 1 - smoothing + smoothing / classes for the true class and
    smoothing / classes for each other (Szegedy et al. 2016). Keras's sparse loss has no smoothing."""

    def __init__(self, smoothing: float = 0.0, name="smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, y_true, y_pred):
        classes = ops.shape(y_pred)[-1]
        target = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), classes, dtype=y_pred.dtype)
        if self.smoothing:
            target = target * (1.0 - self.smoothing) + self.smoothing / ops.cast(classes, y_pred.dtype)
        return keras.losses.categorical_crossentropy(target, y_pred)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


def load_backbone_weights(model: ImageClassifier, weights: str) -> str:
    """Initialises the backbone: ``none`` keeps the random weights, ``imagenet`` downloads them
    (keras.applications), a path loads a weights file. Returns what was loaded, for the log."""
    from dlapps.shared.training import first_line

    backbone = model.get_layer("backbone")
    described = f"{model.backbone_name}" + (f" alpha {model.alpha:g}" if BACKBONES[model.backbone_name][2] else "")
    if weights == "none":
        return "random initialisation"
    if weights == "imagenet":
        try:
            reference = make_backbone(model.backbone_name, model.image_size, model.alpha, weights="imagenet")
        except Exception as error:  # no network, no weights for this alpha, ...
            raise UserError(
                f"--weights imagenet: could not get ImageNet weights for {described} ({first_line(error, 160)}); "
                "offline, pass --weights PATH of a local weights file or --weights none"
            )
        backbone.set_weights(reference.get_weights())
        if model.backbone_name == "efficientnet_b0":
            set_efficientnet_normalization(backbone)
        return f"ImageNet weights for {described}"
    path = Path(weights).expanduser()
    try:
        with warnings.catch_warnings():  # Keras notes weightless containers it skips; the weights themselves load
            warnings.simplefilter("ignore")
            backbone.load_weights(str(path))
    except Exception as error:
        raise UserError(f"{path}: does not match the {described} backbone without top ({first_line(error, 160)})")
    return f"weights from {path}"
