"""Typed defaults of the detect app; every field is also a ``dlapps detect train`` flag, and the
predict / evaluate / export option sets are here too."""

from dataclasses import dataclass

from dlapps.shared.config import EvaluateOptions, ExportOptions, PredictOptions, TrainConfig, default, option

ARCHS = ("yolo", "faster-rcnn")
BACKBONES = ("tiny", "mobilenet", "mobilenet_v2", "efficientnet_b0", "resnet50")


@dataclass
class DetectConfig(TrainConfig):
    epochs: int = default(40)
    batch_size: int = default(16)
    learning_rate: float = default(2e-3)
    val_fraction: float = default(0.2)
    # --- data ---
    demo_size: int = option(400, "images the demo generator draws (1-3 shapes on a textured background each)", min=10, max=100_000)
    max_boxes: int = option(100, "boxes kept per training image (the rest are left out, with a count)", min=1, max=1000)
    augment: bool = option(True, "box-aware random flip, zoom and shift while training")
    # --- model ---
    arch: str = option("yolo", "one-stage anchor-free grid (yolo) or two-stage RPN + RoIAlign (faster-rcnn)", choices=ARCHS)
    backbone: str = option("mobilenet", "feature extractor (tiny: a small CNN trained from scratch)", choices=BACKBONES)
    alpha: float = option(0.25, "MobileNet/MobileNetV2 width multiplier (ImageNet weights: 0.25-1.0)", min=0.1, max=2.0)
    weights: str = option("imagenet", "backbone initialisation: imagenet (downloads when online) | none | PATH of a weights file")
    image_size: int = option(320, "side of the square every image is resized to (a multiple of 32)", min=64, max=1280)
    width: int = option(64, "channels of the feature pyramid and the heads", min=8, max=1024)
    # --- yolo ---
    centre_radius: float = option(2.5, "yolo: grid cells within this many strides of a box's centre (and inside it) learn the box",
                                  min=0.5, max=10)
    box_loss_weight: float = option(2.0, "yolo: weight of the CIoU box loss beside the focal class loss", above=0, max=100)
    # --- faster-rcnn ---
    anchor_scales: list[float] = option([0.08, 0.16, 0.32, 0.64], "faster-rcnn: anchor sides as fractions of the image side",
                                        above=0, max=2)
    anchor_ratios: list[float] = option([0.5, 1.0, 2.0], "faster-rcnn: anchor aspect ratios (height / width)", above=0, max=10)
    proposals: int = option(64, "faster-rcnn: region proposals per image after NMS (training adds the true boxes)", min=1, max=2000)
    roi_size: int = option(7, "faster-rcnn: side of the RoIAlign grid each proposal is pooled to", min=2, max=32)
    head_units: int = option(256, "faster-rcnn: units of the two dense layers of the box head", min=8, max=4096)


@dataclass
class DetectPredictOptions(PredictOptions):
    batch_size: int = default(8)
    conf: float = option(0.25, "keep detections scoring at least this", min=0, max=1)
    iou: float = option(0.5, "non-maximum suppression: drop a box overlapping a better one of its class by more than this IoU",
                        above=0, max=1)
    max_det: int = option(100, "detections kept per image", min=1, max=1000)
    save_dir: str = option("", "write each image with its boxes, labels and scores drawn into this folder")


@dataclass
class DetectEvaluateOptions(EvaluateOptions):
    batch_size: int = default(8)
    iou: float = option(0.6, "non-maximum suppression IoU before scoring", above=0, max=1)
    max_det: int = option(100, "detections scored per image (COCO's limit is 100)", min=1, max=1000)
    plot: str = option("", "precision-recall PNG (default: precision_recall.png in the model's folder)")


@dataclass
class DetectExportOptions(ExportOptions):
    conf: float = option(0.25, "the exported model keeps detections scoring at least this", min=0, max=1)
    iou: float = option(0.5, "the exported model's non-maximum suppression IoU", above=0, max=1)
    max_det: int = option(100, "detections the exported model returns per image (padded)", min=1, max=1000)
