"""Pretrained image backbones every image app shares (classify, detect): the keras.applications
feature extractors, the input scaling their ImageNet weights expect, and loading those weights
(``--weights imagenet | none | PATH``) into an app's model.

An app's model holds its backbone as a layer named ``backbone`` and knows its ``backbone_name``,
``image_size`` and ``alpha``. Besides the ImageNet ones, each app has its own small CNN (``tiny``,
no pretrained weights) for training from scratch on small data; a weights file saved from such a
backbone (``save_weights``) loads into it too.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
from keras import layers, ops

from dlapps.shared.errors import UserError

# name -> (keras.applications constructor, input scaling the ImageNet weights expect, has alpha)
BACKBONES = {
    "mobilenet": ("MobileNet", "tf", True),
    "mobilenet_v2": ("MobileNetV2", "tf", True),
    # EfficientNet scales and normalises inside itself (its Rescaling + Normalization layers).
    "efficientnet_b0": ("EfficientNetB0", "none", False),
    "resnet50": ("ResNet50", "caffe", False),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


# registered under the package of its first home, so models saved since then keep loading
@keras.saving.register_keras_serializable(package="dlapps.classify")
class InputScaling(layers.Layer):
    """RGB in [0, 255] -> what a backbone's ImageNet weights expect: ``tf`` scales to [-1, 1]
    (MobileNets, and the apps' tiny CNNs), ``caffe`` flips to BGR and subtracts the ImageNet mean
    (ResNet50), ``none`` passes the pixels on (EfficientNet normalises inside itself)."""

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


def input_scaling_mode(name: str) -> str:
    """The InputScaling mode of a backbone (``tf`` for an app's own tiny CNN)."""
    return BACKBONES[name][1] if name in BACKBONES else "tf"


def describe(name: str, alpha: float) -> str:
    """``mobilenet alpha 0.25``, ``resnet50``: the backbone as messages name it."""
    return name + (f" alpha {alpha:g}" if name in BACKBONES and BACKBONES[name][2] else "")


def imagenet_backbone(name: str, image_size: int, alpha: float = 1.0, weights=None) -> keras.Model:
    """A keras.applications feature extractor without its top, named ``backbone``; `weights` is
    None, ``imagenet`` (downloaded, or from Keras's cache) or the path of a weights file."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; one of {', '.join(BACKBONES)}")
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


def check_weights(backbone: str, weights: str) -> None:
    """The --backbone/--weights pair makes sense, before any data is read."""
    if weights == "imagenet" and backbone not in BACKBONES:
        raise UserError(f"command line: --backbone {backbone} has no ImageNet weights; pass --weights none (or a weights file)")
    if weights not in ("none", "imagenet") and not Path(weights).expanduser().is_file():
        raise UserError(f"{Path(weights).expanduser()}: no such weights file (--weights takes imagenet, none or a file path)")


def load_backbone_weights(model, weights: str) -> str:
    """Initialises `model`'s ``backbone`` layer: ``none`` keeps the random weights; ``imagenet``
    (keras.applications download or cache) or a weights file builds the reference backbone with
    them and copies its layers by name, so a backbone cut at inner feature maps (detect's) takes
    them too; an app's own tiny CNN loads a file of its own weights. Returns what was loaded, for
    the log."""
    from dlapps.shared.training import first_line

    if weights == "none":
        return "random initialisation"
    name = model.backbone_name
    described = describe(name, model.alpha)
    check_weights(name, weights)
    source = weights if weights == "imagenet" else str(Path(weights).expanduser())
    backbone = model.get_layer("backbone")
    try:
        with warnings.catch_warnings():  # "input size not among the ImageNet ones" and the like: the filters do not care
            warnings.simplefilter("ignore")
            if name not in BACKBONES:
                backbone.load_weights(source)
            else:
                reference = imagenet_backbone(name, model.image_size, model.alpha, weights=source)
                for layer in reference.layers:
                    if layer.weights:
                        backbone.get_layer(layer.name).set_weights(layer.get_weights())
    except Exception as error:  # no network, a file for another backbone, ...
        first = first_line(error, 160)
        if weights == "imagenet":
            raise UserError(f"--weights imagenet: could not get ImageNet weights for {described} ({first}); "
                            "offline, pass --weights PATH of a local weights file or --weights none")
        raise UserError(f"{source}: does not match the {described} backbone without top ({first})")
    return f"ImageNet weights for {described}" if weights == "imagenet" else f"weights from {source}"
