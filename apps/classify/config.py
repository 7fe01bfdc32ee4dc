"""Typed defaults of the classify app; every field is also a ``dlapps classify train`` flag, and the
predict / evaluate / export option sets are here too."""

from dataclasses import dataclass

from dlapps.shared.config import EvaluateOptions, ExportOptions, PredictOptions, TrainConfig, default, option

BACKBONES = ("mobilenet", "mobilenet_v2", "efficientnet_b0", "resnet50", "tiny")


@dataclass
class ClassifyConfig(TrainConfig):
    epochs: int = default(20, help="epochs of phase one: frozen backbone, new head")
    learning_rate: float = default(2e-3, help="Adam learning rate of phase one (and of from-scratch training)")
    patience: int = default(0, help="stop a phase after this many epochs without validation improvement (0: never)")
    val_fraction: float = default(0.2, help="share of the images held out for validation when the data has no val/ folder")
    # --- data ---
    demo_size: int = option(800, "images the demo generator draws (shapes and textures, 64x64)", min=10, max=100_000)
    # --- model ---
    backbone: str = option("mobilenet", "pretrained feature extractor (tiny: a small CNN without pretrained weights)", choices=BACKBONES)
    alpha: float = option(0.25, "MobileNet/MobileNetV2 width multiplier (ImageNet weights: 0.25-1.0)", above=0, max=4)
    weights: str = option("imagenet", "backbone initialisation: imagenet (downloads when online) | none | PATH of a weights file")
    # at least 32: the backbones downsample 32 times. 288, not the weights' own 224: on hymenoptera small
    # subjects (ants, bees) gain from the larger view, for frozen features and fine-tuning alike (benchmark)
    image_size: int = option(288, "side of the square the model resizes every image to", min=32, max=2048)
    dropout: float = option(0.2, "dropout before the classifier", min=0, below=1)
    augment: bool = option(True, "random flip, rotation, zoom, shift, contrast and brightness while training")
    augment_strength: float = option(1.0, "scales the augmentation ranges (1: rotation 0.1 turn, zoom and shift 10%, contrast 20%)",
                                     min=0, max=5)
    test_flip: bool = option(False, "predictions average each image's and its mirror image's (inside the model: the SavedModel does it too)")
    label_smoothing: float = option(0.1, "share of each training label spread evenly over all classes", min=0, below=1)
    schedule: str = option("cosine", "learning rate within each phase: constant, or cosine decay towards zero over its epochs",
                           choices=("constant", "cosine"))
    # --- phase two ---
    # every layer, for 30 epochs: on hymenoptera (five-fold cross-validation) the top 30 layers for 15
    # epochs tied frozen features + logistic regression (0.857 against 0.861); all layers for 30 epochs 0.885 / 0.873 / 0.873 (three seeds)
    unfreeze: int = option(1000, "phase two trains the top N backbone layers (BatchNorm stays frozen; 1000: every layer "
                                 "of each backbone); 0 skips it", min=0, max=100_000)
    finetune_epochs: int = option(30, "epochs of phase two; 0 skips it", min=0)
    finetune_learning_rate: float = option(1e-4, "Adam learning rate of phase two", above=0, max=10)


@dataclass
class ClassifyPredictOptions(PredictOptions):
    batch_size: int = default(32)
    top_k: int = option(3, "labels shown per image, most probable first (at most the number of classes)", short="-k", min=1, max=1000)
    gradcam: str = option("", "write a Grad-CAM overlay PNG per image into this folder")


@dataclass
class ClassifyEvaluateOptions(EvaluateOptions):
    batch_size: int = default(32)
    top_k: int = option(3, "top-k accuracy counts an image right when its class is among the k most probable", short="-k",
                        min=1, max=1000)
    plot: str = option("", "write the confusion matrix as a PNG to this file")


@dataclass
class ClassifyExportOptions(ExportOptions):
    top_k: int = option(3, "labels with probabilities the SavedModel returns per image (at most the number of classes)",
                        short="-k", min=1, max=1000)
