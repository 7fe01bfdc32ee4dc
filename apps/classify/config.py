"""Typed defaults of the classify app; every field is also a ``dlapps classify train`` flag."""

from dataclasses import dataclass

from ...shared.config import TrainConfig, option

BACKBONES = ("mobilenet", "mobilenet_v2", "efficientnet_b0", "resnet50")


@dataclass
class ClassifyConfig(TrainConfig):
    epochs: int = option(15, "epochs of phase one: frozen backbone, new head", short="-e")
    batch_size: int = option(32, "images per step, summed over all devices", short="-b")
    learning_rate: float = option(1e-3, "Adam learning rate of phase one (and of from-scratch training)")
    patience: int = option(0, "stop a phase after this many epochs without validation improvement (0: never)")
    val_fraction: float = option(0.2, "share of the images held out for validation when the data has no val/ folder")
    # --- data ---
    demo_size: int = option(800, "images the demo generator draws (shapes and textures, 64x64)")
    # --- model ---
    backbone: str = option("mobilenet", "pretrained feature extractor", choices=BACKBONES)
    alpha: float = option(0.25, "MobileNet/MobileNetV2 width multiplier (ImageNet weights: 0.25-1.0)")
    weights: str = option("imagenet", "backbone initialisation: imagenet (downloads when online) | none | PATH of a weights file")
    image_size: int = option(224, "side of the square the model resizes every image to")
    dropout: float = option(0.2, "dropout before the classifier")
    augment: bool = option(True, "random flip, rotation, zoom and contrast while training")
    # --- phase two ---
    unfreeze: int = option(20, "phase two trains the top N backbone layers (BatchNorm stays frozen); 0 skips it")
    finetune_epochs: int = option(10, "epochs of phase two")
    finetune_learning_rate: float = option(1e-4, "Adam learning rate of phase two")
