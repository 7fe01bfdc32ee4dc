"""The classify model: resizing, augmentation and the backbone's own input scaling inside the model,
then a pretrained backbone (keras.applications), global average pooling and a new softmax head.

The model takes float RGB images in [0, 255] of any size, so ``predict``, the exported float-tensor
signature and the exported bytes signature (which decodes, then calls the model) see the same pixels.
Training happens in phases (``set_phase``): the new head on a frozen backbone, then the top
``unfreeze`` backbone layers at a low learning rate with every BatchNormalization layer kept frozen.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from dlapps.shared import backbones
from dlapps.shared.models import TaskModel

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
    """The feature extractor named ``backbone``: a keras.applications one without its top, or the tiny CNN."""
    if name == "tiny":
        return tiny_backbone(image_size)
    return backbones.imagenet_backbone(name, image_size, alpha, weights)


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
        scaling = backbones.InputScaling(backbones.input_scaling_mode(backbone), name="input_scaling")
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
            # clamped: a negative start would slice from the end instead (--unfreeze 100 on an
            # 86-layer MobileNet freed its last 14 layers, not all of them); 0 frees none
            for layer in backbone.layers[max(0, len(backbone.layers) - unfreeze) :]:
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
