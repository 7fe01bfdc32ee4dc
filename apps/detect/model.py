"""The detect models: a backbone (the shared keras.applications backbones, or a tiny CNN), a light
FPN (+ PAN for YOLO) neck, and one of two heads.

- :class:`YoloDetector` (one stage, anchor-free): every cell of three grids (strides 8, 16, 32)
  predicts its distances to a box's four sides and a score per class. Assignment is a centre prior
  (FCOS/YOLOX style): a cell learns a box when its centre lies inside the box and within
  ``centre_radius`` strides of the box's centre, on the levels whose size range fits the box; a
  cell claimed by several boxes takes the smallest. Losses: sigmoid focal loss for the classes,
  CIoU for the boxes (keras.utils.bounding_boxes.compute_ciou).
- :class:`FasterRCNNDetector` (two stages): a region proposal network over anchors on the
  stride-8 FPN map (objectness BCE + Huber on box deltas, anchors matched at IoU 0.7 / 0.3 and
  balanced to at most half positives), proposals by NMS, RoIAlign (``tf.image.crop_and_resize``
  at twice the grid, then 2x2 max pooling), and a two-layer box head with a softmax over classes +
  background and class-specific box deltas (RoIs matched at IoU 0.5, at most a quarter
  foreground). Training adds the true boxes to the proposals.

Both take float RGB images in [0, 255] at ``image_size`` x ``image_size`` and work in box
coordinates normalised to [0, 1] (xmin, ymin, xmax, ymax). Losses live in ``compute_loss``;
decoding and class-aware NMS (``tf.image.combined_non_max_suppression``) in :meth:`Detector.detect`,
which ``predict_step`` calls, so ``fit`` and ``predict`` stay stock; :meth:`Detector.detect_encoded`
takes encoded image bytes of any size and returns boxes in the images' own pixels, for ``predict``
and the exported SavedModel alike.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from dlapps.shared import backbones
from dlapps.shared import images as images_lib
from dlapps.shared.models import TaskModel

# The stride-8, -16 and -32 feature maps of each keras.applications backbone.
FEATURE_LAYERS = {
    "mobilenet": ("conv_pw_5_relu", "conv_pw_11_relu", "conv_pw_13_relu"),
    "mobilenet_v2": ("block_6_expand_relu", "block_13_expand_relu", "out_relu"),
    "efficientnet_b0": ("block4a_expand_activation", "block6a_expand_activation", "top_activation"),
    "resnet50": ("conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
}
STRIDES = (8, 16, 32)
# Faster R-CNN's delta scaling (its weights 10, 10, 5, 5): deltas of a few units, whatever the box.
BOX_VARIANCE = (0.1, 0.1, 0.2, 0.2)
MAX_LOG_SCALE = math.log(1000.0 / 16)  # Detectron's clamp: exp() of a wild early delta must not overflow
BATCHNORM_MOMENTUM = 0.9  # short runs: 0.99 leaves the moving statistics behind the weights


# === Box utilities ===


def box_iou(boxes1, boxes2):
    """Pairwise IoU of xyxy boxes: (..., N, 4) and (..., M, 4) -> (..., N, M); leading dimensions
    broadcast (anchors (N, 4) against a batch of boxes (B, M, 4) gives (B, N, M)). Boxes without
    area have IoU 0 with everything."""
    a = ops.expand_dims(boxes1, -2)
    b = ops.expand_dims(boxes2, -3)
    width = ops.maximum(ops.minimum(a[..., 2], b[..., 2]) - ops.maximum(a[..., 0], b[..., 0]), 0.0)
    height = ops.maximum(ops.minimum(a[..., 3], b[..., 3]) - ops.maximum(a[..., 1], b[..., 1]), 0.0)
    intersection = width * height
    area = lambda box: ops.maximum(box[..., 2] - box[..., 0], 0.0) * ops.maximum(box[..., 3] - box[..., 1], 0.0)  # noqa: E731
    union = area(a) + area(b) - intersection
    return ops.where(union > 0, intersection / ops.maximum(union, 1e-9), 0.0)


def encode_boxes(anchors, boxes):
    """Boxes relative to anchors (both xyxy) -> Faster R-CNN deltas (dy, dx, dh, dw) / variance."""
    return keras.utils.bounding_boxes.encode_box_to_deltas(anchors, boxes, "xyxy", "xyxy", variance=BOX_VARIANCE)


def decode_boxes(anchors, deltas):
    """The inverse of :func:`encode_boxes`, with the log-scale deltas clamped so exp() stays finite."""
    limit = MAX_LOG_SCALE / BOX_VARIANCE[2]
    deltas = ops.concatenate([deltas[..., :2], ops.clip(deltas[..., 2:], -limit, limit)], axis=-1)
    return keras.utils.bounding_boxes.decode_deltas_to_boxes(anchors, deltas, "xyxy", "xyxy", variance=BOX_VARIANCE)


def non_max_suppression(boxes, scores, score_threshold, iou_threshold, max_detections: int):
    """Class-aware NMS of a batch: boxes (B, N, 4) shared by all classes or (B, N, C, 4) per class,
    scores (B, N, C) -> dict of boxes (B, K, 4), scores (B, K), classes (B, K) and count (B,),
    best first, padded with zeros to K = max_detections."""
    if len(boxes.shape) == 3:
        boxes = boxes[:, :, None, :]
    # IoU is the same for (x, y) and (y, x) corner pairs, so xyxy boxes go in as they are.
    result = tf.image.combined_non_max_suppression(
        tf.cast(boxes, tf.float32), tf.cast(scores, tf.float32),
        max_output_size_per_class=max_detections, max_total_size=max_detections,
        iou_threshold=iou_threshold, score_threshold=score_threshold, clip_boxes=False,
    )
    return {
        "boxes": result.nmsed_boxes,
        "scores": result.nmsed_scores,
        "classes": tf.cast(result.nmsed_classes, tf.int32),
        "count": tf.cast(result.valid_detections, tf.int32),
    }


def grid_points(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres (A, 2) of every cell of the stride 8, 16 and 32 grids, row-major per level, and each
    cell's stride (A,), both as fractions of the image side."""
    points, strides = [], []
    for stride in STRIDES:
        cells = image_size // stride
        centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        x, y = np.meshgrid(centres, centres)
        points.append(np.stack([x.reshape(-1), y.reshape(-1)], axis=1))
        strides.append(np.full(cells * cells, stride / image_size, dtype=np.float32))
    return np.concatenate(points), np.concatenate(strides)


def grid_anchors(cells: int, scales, ratios) -> np.ndarray:
    """Anchors (cells * cells * K, 4) xyxy in [0, 1]: K = scales x ratios boxes (height / width =
    ratio, area = scale squared) centred on every cell, in the order a (B, cells, cells, K) map
    reshapes to."""
    shapes = [(s * math.sqrt(r), s / math.sqrt(r)) for s in scales for r in ratios]  # (height, width)
    centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
    anchors = []
    for cy in centres:
        for cx in centres:
            for height, width in shapes:
                anchors.append([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2])
    return np.asarray(anchors, dtype=np.float32)


def trim_targets(y):
    """The batch's true boxes (B, M, 4) and classes (B, M), cut to the most boxes any image of the
    batch has (at least one column): targets are padded to --max-boxes, most of it padding."""
    classes = tf.cast(y["classes"], tf.int32)
    most = tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(classes >= 0, tf.int32), axis=1)), 1)
    return tf.cast(y["boxes"][:, :most], tf.float32), classes[:, :most]


def sigmoid_focal_loss(targets, logits, alpha: float = 0.25, gamma: float = 2.0):
    """RetinaNet's focal loss, element-wise: easy negatives (most cells) fade out."""
    probabilities = ops.sigmoid(logits)
    cross_entropy = ops.binary_crossentropy(targets, logits, from_logits=True)
    p_t = probabilities * targets + (1 - probabilities) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * ops.power(1 - p_t, gamma) * cross_entropy


def quality_focal_loss(targets, logits, beta: float = 2.0):
    """GFL's quality focal loss, element-wise: BCE towards soft targets (IoU in [0, 1]), scaled by
    the distance to the target to the power beta, so the many easy background cells fade out."""
    return ops.power(ops.abs(targets - ops.sigmoid(logits)), beta) * ops.binary_crossentropy(targets, logits, from_logits=True)


def huber(x, delta: float = 1.0):
    """Smooth L1, summed over the last axis."""
    absolute = ops.abs(x)
    return ops.sum(ops.where(absolute < delta, 0.5 * x * x / delta, absolute - 0.5 * delta), axis=-1)


# === Layers ===


def conv_block(filters: int, kernel: int = 3, strides: int = 1, name: str = "") -> keras.Sequential:
    """Conv (no bias) -> BatchNorm -> SiLU, the unit of the tiny backbone, the neck and the heads."""
    return keras.Sequential(
        [
            layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"),
            layers.BatchNormalization(momentum=BATCHNORM_MOMENTUM, name=f"{name}_bn"),
            layers.Activation("swish", name=f"{name}_act"),
        ],
        name=name,
    )


def tiny_backbone(image_size: int) -> keras.Model:
    """A small CNN for training from scratch on small data (the demo, tests): five stride-2
    stages, the last three (strides 8, 16, 32) returned."""
    images = keras.Input((image_size, image_size, 3), name="scaled_images")
    x, outputs = images, []
    for stage, filters in enumerate((16, 32, 64, 96, 128), start=1):
        x = conv_block(filters, 3, 2, name=f"stage{stage}_down")(x)
        if stage >= 3:
            x = conv_block(filters, 3, 1, name=f"stage{stage}_conv")(x)
            outputs.append(x)
    return keras.Model(images, outputs, name="backbone")


def feature_backbone(name: str, image_size: int, alpha: float) -> keras.Model:
    """The stride 8, 16 and 32 feature maps of a backbone, as one model named ``backbone``."""
    if name == "tiny":
        return tiny_backbone(image_size)
    base = backbones.imagenet_backbone(name, image_size, alpha)
    return keras.Model(base.input, [base.get_layer(n).output for n in FEATURE_LAYERS[name]], name="backbone")


@keras.saving.register_keras_serializable(package="dlapps.detect")
class FeaturePyramid(layers.Layer):
    """FPN top-down, then (with `bottom_up`) PAN bottom-up: three backbone maps (strides 8, 16, 32)
    -> three maps of `width` channels, each mixing fine detail and coarse context. Faster R-CNN
    reads only the finest map, so it skips the bottom-up path (it would get no gradient)."""

    def __init__(self, width: int = 64, bottom_up: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.bottom_up = bottom_up
        self.lateral = [conv_block(width, 1, name=f"lateral{i}") for i in range(3)]
        self.top_down = [conv_block(width, 3, name=f"top_down{i}") for i in range(2)]
        self.upsample = layers.UpSampling2D(2, name="upsample")
        if bottom_up:
            self.downsample = [conv_block(width, 3, 2, name=f"downsample{i}") for i in range(2)]
            self.merge_up = [conv_block(width, 3, name=f"bottom_up{i}") for i in range(2)]

    def call(self, features, training=None):
        c3, c4, c5 = (lateral(f, training=training) for lateral, f in zip(self.lateral, features))
        p5 = c5
        p4 = self.top_down[1](c4 + self.upsample(p5), training=training)
        p3 = self.top_down[0](c3 + self.upsample(p4), training=training)
        if not self.bottom_up:
            return [p3, p4, p5]
        n4 = self.merge_up[0](p4 + self.downsample[0](p3, training=training), training=training)
        n5 = self.merge_up[1](p5 + self.downsample[1](n4, training=training), training=training)
        return [p3, n4, n5]

    def get_config(self):
        return {**super().get_config(), "width": self.width, "bottom_up": self.bottom_up}


@keras.saving.register_keras_serializable(package="dlapps.detect")
class GridHead(layers.Layer):
    """The YOLO head: per level a box branch (conv, then 4 side distances) and a class branch
    (conv, then a logit per class), flattened over the cells and joined over the levels."""

    def __init__(self, num_classes: int, width: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.width = width
        # focal-loss prior: every cell starts at p = 0.01, so the many background cells do not swamp the first steps
        prior = keras.initializers.Constant(-math.log((1 - 0.01) / 0.01))
        self.box_stems = [conv_block(width, 3, name=f"box_stem{i}") for i in range(3)]
        self.class_stems = [conv_block(width, 3, name=f"class_stem{i}") for i in range(3)]
        self.box_outputs = [layers.Conv2D(4, 1, dtype="float32", name=f"box_out{i}") for i in range(3)]
        self.class_outputs = [layers.Conv2D(num_classes, 1, bias_initializer=prior, dtype="float32", name=f"class_out{i}")
                              for i in range(3)]

    def call(self, levels, training=None):
        boxes, classes = [], []
        for i, features in enumerate(levels):
            box = self.box_outputs[i](self.box_stems[i](features, training=training))
            logits = self.class_outputs[i](self.class_stems[i](features, training=training))
            boxes.append(ops.reshape(box, (ops.shape(box)[0], -1, 4)))
            classes.append(ops.reshape(logits, (ops.shape(logits)[0], -1, self.num_classes)))
        return ops.concatenate(boxes, axis=1), ops.concatenate(classes, axis=1)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "width": self.width}


@keras.saving.register_keras_serializable(package="dlapps.detect")
class RoIHead(layers.Layer):
    """Faster R-CNN's second stage on RoIAlign crops (N, size, size, C): two dense layers, then
    class logits (N, classes + 1, background first) and class-specific box deltas (N, classes, 4)."""

    def __init__(self, num_classes: int, units: int = 256, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.units = units
        self.flatten = layers.Flatten()
        self.hidden = [layers.Dense(units, activation="relu", name=f"fc{i}") for i in (1, 2)]
        self.classifier = layers.Dense(num_classes + 1, dtype="float32", name="classifier")
        self.regressor = layers.Dense(num_classes * 4, dtype="float32", name="regressor",
                                      kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))

    def build(self, input_shape):
        features = int(np.prod(input_shape[1:]))
        self.hidden[0].build((None, features))
        self.hidden[1].build((None, self.units))
        self.classifier.build((None, self.units))
        self.regressor.build((None, self.units))

    def call(self, crops):
        x = self.flatten(crops)
        for dense in self.hidden:
            x = dense(x)
        return self.classifier(x), ops.reshape(self.regressor(x), (-1, self.num_classes, 4))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "units": self.units}


def roi_align(features, boxes, size: int):
    """RoIAlign: features (B, H, W, C), boxes (B, R, 4) xyxy in [0, 1] -> (B * R, size, size, C),
    bilinear samples on a grid twice as fine, max-pooled 2x2 (as the TF Object Detection API does)."""
    batch, rois = tf.shape(boxes)[0], tf.shape(boxes)[1]
    flat = tf.reshape(boxes, (-1, 4))
    yxyx = tf.stack([flat[:, 1], flat[:, 0], flat[:, 3], flat[:, 2]], axis=1)
    indices = tf.repeat(tf.range(batch), rois)
    crops = tf.image.crop_and_resize(tf.cast(features, tf.float32), yxyx, indices, (2 * size, 2 * size))
    return tf.nn.max_pool2d(crops, 2, 2, "VALID")


# === Functional Model ===


class Detector(TaskModel):
    """What both architectures share: the backbone and neck, weights loading, detection with NMS,
    and the bytes-in, pixels-out path of predict and export."""

    def _backbone_and_neck(self, backbone: str, image_size: int, alpha: float, width: int, freeze_batchnorm: bool,
                           bottom_up: bool = True):
        scaling = backbones.InputScaling(backbones.input_scaling_mode(backbone), name="input_scaling")
        features = feature_backbone(backbone, image_size, alpha)
        for layer in features.layers:
            if isinstance(layer, layers.BatchNormalization):
                # pretrained statistics stay as they are (a frozen BatchNorm runs in inference mode);
                # from scratch, the statistics follow the weights quickly enough for short runs
                layer.trainable = not freeze_batchnorm
                layer.momentum = BATCHNORM_MOMENTUM
        pyramid = FeaturePyramid(width, bottom_up, name="neck")
        images = keras.Input((image_size, image_size, 3), name="images")
        levels = pyramid(features(scaling(images)))
        return images, levels

    # --- inference -----------------------------------------------------------------------------

    def candidates(self, images):
        """(boxes, scores) before NMS: boxes (B, N, 4) or (B, N, C, 4), scores (B, N, C)."""
        raise NotImplementedError

    def detect(self, images, score_threshold=None, iou_threshold=None, max_detections=None):
        """Float images (B, S, S, 3) in [0, 255] -> NMS'd detections in [0, 1] box coordinates."""
        boxes, scores = self.candidates(images)
        return non_max_suppression(
            boxes, scores,
            self.score_threshold if score_threshold is None else score_threshold,
            self.iou_threshold if iou_threshold is None else iou_threshold,
            int(max_detections or self.max_detections),
        )

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        return self.detect(images)

    def detect_encoded(self, encoded, score_threshold, iou_threshold, max_detections: int):
        """Encoded JPEG/PNG/BMP bytes of any size (a string tensor (B,)) -> detections with boxes in
        each image's own pixels (xmin, ymin, xmax, ymax), class indices and names, scores and a
        count, padded to `max_detections`. The same decode and resize as the training pipeline."""
        size = (self.image_size, self.image_size)

        def decode(item):
            image = tf.io.decode_image(item, channels=3, dtype=tf.uint8, expand_animations=False)
            image.set_shape([None, None, 3])
            return images_lib.resize_uint8(image, size), tf.shape(image)[:2]

        pixels, sizes = tf.map_fn(decode, encoded, fn_output_signature=(
            tf.TensorSpec([*size, 3], tf.uint8), tf.TensorSpec([2], tf.int32)))
        found = self.detect(tf.cast(pixels, tf.float32), score_threshold, iou_threshold, max_detections)
        heights, widths = tf.cast(sizes[:, 0], tf.float32), tf.cast(sizes[:, 1], tf.float32)
        scale = tf.stack([widths, heights, widths, heights], axis=1)[:, None, :]
        kept = tf.range(max_detections)[None, :] < found["count"][:, None]
        names = tf.gather(tf.constant(self.labels), found["classes"])
        return {
            "boxes": found["boxes"] * scale,
            "classes": tf.where(kept, found["classes"], -1),
            "class_names": tf.where(kept, names, ""),
            "scores": found["scores"],
            "count": found["count"],
            "image_sizes": tf.stack([widths, heights], axis=1),
        }


@keras.saving.register_keras_serializable(package="dlapps.detect")
class YoloDetector(Detector):
    """One-stage anchor-free detector on three grids (see the module docstring).

    Args:
        labels: class names.
        image_size: side of the square input (a multiple of 32).
        backbone: ``tiny`` or a keras.applications backbone (shared.backbones).
        alpha: MobileNet width multiplier.
        width: channels of the neck and the head.
        centre_radius: a cell learns a box within this many strides of the box's centre.
        box_loss_weight: weight of the CIoU loss beside the focal loss.
        freeze_batchnorm: keep the backbone's BatchNorm statistics (pretrained weights).
        score_threshold, iou_threshold, max_detections: ``predict_step``'s NMS settings.
    """

    def __init__(self, labels, image_size=320, backbone="mobilenet", alpha=0.25, width=64, centre_radius=2.5,
                 box_loss_weight=2.0, freeze_batchnorm=False, score_threshold=0.05, iou_threshold=0.5,
                 max_detections=100, **kwargs):
        # === Layers ===
        head = GridHead(len(labels), width, name="head")

        # === Functional Model ===
        images, levels = self._backbone_and_neck(backbone, image_size, alpha, width, freeze_batchnorm)
        distances, class_logits = head(levels)
        super().__init__(inputs=images, outputs={"box_distances": distances, "class_logits": class_logits}, **kwargs)

        # === Config ===
        self.labels = list(labels)
        self.image_size = int(image_size)
        self.backbone_name = backbone
        self.alpha = float(alpha)
        self.centre_radius = float(centre_radius)
        self.box_loss_weight = float(box_loss_weight)
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        points, strides = grid_points(self.image_size)
        self.points, self.strides = tf.constant(points), tf.constant(strides)
        # the longest box side (in strides) each level learns: overlapping ranges, open at both ends
        cells = [(self.image_size // stride) ** 2 for stride in STRIDES]
        low = np.concatenate([np.full(n, lo, dtype=np.float32) for n, lo in zip(cells, (0.0, 3.0, 3.0))])
        high = np.concatenate([np.full(n, hi, dtype=np.float32) for n, hi in zip(cells, (12.0, 12.0, np.inf))])
        self.size_low, self.size_high = tf.constant(low * strides), tf.constant(high * strides)

    def decode_distances(self, distances):
        """Raw (B, A, 4) head outputs -> boxes (B, A, 4) in [0, 1]: softplus side distances in strides."""
        sides = ops.softplus(distances) * self.strides[None, :, None]
        x, y = self.points[None, :, 0], self.points[None, :, 1]
        return ops.stack([x - sides[..., 0], y - sides[..., 1], x + sides[..., 2], y + sides[..., 3]], axis=-1)

    def candidates(self, images):
        outputs = self(images, training=False)
        boxes = ops.clip(self.decode_distances(outputs["box_distances"]), 0.0, 1.0)
        return boxes, ops.sigmoid(outputs["class_logits"])

    def assign(self, gt_boxes, gt_classes):
        """Centre-prior assignment: (matched box index (B, A), positive (B, A)) for every cell."""
        valid = (gt_classes >= 0)[:, :, None]  # (B, M, 1)
        x1, y1, x2, y2 = (gt_boxes[..., i][:, :, None] for i in range(4))
        px, py = self.points[None, None, :, 0], self.points[None, None, :, 1]
        stride = self.strides[None, None, :]
        inside = (px > x1) & (px < x2) & (py > y1) & (py < y2)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        near = (tf.abs(px - cx) < self.centre_radius * stride) & (tf.abs(py - cy) < self.centre_radius * stride)
        # the cell holding the centre always counts, so a box smaller than a cell is learned too
        centre_cell = (tf.abs(px - cx) <= stride / 2) & (tf.abs(py - cy) <= stride / 2)
        longest = tf.maximum(x2 - x1, y2 - y1)
        in_range = (longest >= self.size_low[None, None, :]) & (longest <= self.size_high[None, None, :])
        candidate = valid & in_range & near & (inside | centre_cell)
        area = (x2 - x1) * (y2 - y1)
        cost = tf.where(candidate, area, np.inf)
        return tf.argmin(cost, axis=1, output_type=tf.int32), tf.reduce_any(candidate, axis=1)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        gt_boxes, gt_classes = trim_targets(y)
        matched, positive = self.assign(gt_boxes, gt_classes)
        positive_f = tf.cast(positive, tf.float32)
        count = tf.maximum(tf.reduce_sum(positive_f), 1.0)
        target_classes = tf.gather(gt_classes, matched, batch_dims=1)
        predicted = self.decode_distances(y_pred["box_distances"])
        # non-positive cells get a harmless unit box: CIoU of a padding box (no area) is NaN
        target_boxes = tf.where(positive[..., None], tf.gather(gt_boxes, matched, batch_dims=1), tf.constant([0.0, 0.0, 1.0, 1.0]))
        ciou = keras.utils.bounding_boxes.compute_ciou(target_boxes, predicted, "xyxy")
        box_loss = tf.reduce_sum((1.0 - ciou) * positive_f) / count
        # quality focal loss (GFL): a positive cell's class target is the IoU its box reaches, so the
        # score ranks detections by how well they are placed, which is what mAP rewards
        iou = box_iou(tf.stop_gradient(predicted)[..., None, :], target_boxes[..., None, :])[..., 0, 0]  # element-wise
        quality = tf.stop_gradient(tf.maximum(iou, 0.0)) * positive_f
        targets = tf.one_hot(tf.maximum(target_classes, 0), len(self.labels)) * quality[..., None]
        class_loss = tf.reduce_sum(quality_focal_loss(targets, y_pred["class_logits"])) / count
        return class_loss + self.box_loss_weight * box_loss


@keras.saving.register_keras_serializable(package="dlapps.detect")
class FasterRCNNDetector(Detector):
    """Two-stage detector: RPN over anchors on the stride-8 FPN map, RoIAlign, box head (see the module docstring).

    Args:
        labels: class names.
        image_size: side of the square input (a multiple of 32).
        backbone: ``tiny`` or a keras.applications backbone (shared.backbones).
        alpha: MobileNet width multiplier.
        width: channels of the neck and the RPN.
        anchor_scales: anchor sides as fractions of the image side.
        anchor_ratios: anchor aspect ratios (height / width).
        proposals: proposals per image kept after the RPN's NMS.
        roi_size: RoIAlign grid side.
        head_units: units of the box head's dense layers.
        freeze_batchnorm: keep the backbone's BatchNorm statistics (pretrained weights).
        score_threshold, iou_threshold, max_detections: ``predict_step``'s NMS settings.
    """

    RPN_BATCH, RPN_POSITIVE_SHARE = 256, 0.5  # anchors per image in the RPN loss, at most half of them positive
    ROI_FOREGROUND_SHARE = 0.25  # at most a quarter of the RoIs in the head's loss are objects

    def __init__(self, labels, image_size=320, backbone="mobilenet", alpha=0.25, width=64,
                 anchor_scales=(0.08, 0.16, 0.32, 0.64), anchor_ratios=(0.5, 1.0, 2.0), proposals=64, roi_size=7,
                 head_units=256, freeze_batchnorm=False, score_threshold=0.05, iou_threshold=0.5, max_detections=100,
                 **kwargs):
        per_cell = len(anchor_scales) * len(anchor_ratios)
        # === Layers ===
        rpn_conv = conv_block(width, 3, name="rpn_conv")
        rpn_objectness = layers.Conv2D(per_cell, 1, dtype="float32", name="rpn_objectness")
        rpn_deltas = layers.Conv2D(per_cell * 4, 1, dtype="float32", name="rpn_deltas",
                                   kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))
        roi_head = RoIHead(len(labels), head_units, name="roi_head")

        # === Functional Model ===
        images, levels = self._backbone_and_neck(backbone, image_size, alpha, width, freeze_batchnorm, bottom_up=False)
        # stride 8: the FPN's finest map (it carries the coarser maps' context), fine enough to pool small objects from
        features = levels[0]
        shared = rpn_conv(features)
        # float32 like the outputs they flatten: under mixed precision a layer would cast them back to bfloat16
        objectness = layers.Reshape((-1,), dtype="float32", name="objectness_flat")(rpn_objectness(shared))
        deltas = layers.Reshape((-1, 4), dtype="float32", name="deltas_flat")(rpn_deltas(shared))
        super().__init__(inputs=images, outputs={"features": features, "objectness": objectness, "deltas": deltas}, **kwargs)
        roi_head.build((None, roi_size, roi_size, width))

        # === Config ===
        self.roi_head = roi_head
        self.labels = list(labels)
        self.image_size = int(image_size)
        self.backbone_name = backbone
        self.alpha = float(alpha)
        self.proposals = int(proposals)
        self.roi_size = int(roi_size)
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.anchors = tf.constant(grid_anchors(image_size // 8, anchor_scales, anchor_ratios))

    def propose(self, objectness, deltas):
        """RPN outputs -> (proposals (B, P, 4) in [0, 1], valid (B, P)), by NMS at IoU 0.7."""
        boxes = ops.clip(decode_boxes(self.anchors[None], deltas), 0.0, 1.0)
        found = non_max_suppression(tf.stop_gradient(boxes), tf.stop_gradient(ops.sigmoid(objectness))[..., None],
                                    float("-inf"), 0.7, self.proposals)
        valid = tf.range(self.proposals)[None, :] < found["count"][:, None]
        return found["boxes"], valid

    def classify_regions(self, features, rois):
        """RoIAlign + box head: (logits (B * R, C + 1), deltas (B * R, C, 4))."""
        return self.roi_head(roi_align(features, rois, self.roi_size))

    def candidates(self, images):
        outputs = self(images, training=False)
        proposals, valid = self.propose(outputs["objectness"], outputs["deltas"])
        logits, deltas = self.classify_regions(outputs["features"], proposals)
        batch, count, classes = tf.shape(proposals)[0], tf.shape(proposals)[1], len(self.labels)
        scores = tf.reshape(tf.nn.softmax(logits)[:, 1:], (batch, count, classes)) * tf.cast(valid, tf.float32)[..., None]
        rois = tf.repeat(tf.reshape(proposals, (-1, 1, 4)), classes, axis=1)
        boxes = ops.clip(decode_boxes(rois, deltas), 0.0, 1.0)
        return tf.reshape(boxes, (batch, count, classes, 4)), scores

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        gt_boxes, gt_classes = trim_targets(y)
        valid_gt = gt_classes >= 0
        rpn = self._rpn_loss(gt_boxes, valid_gt, y_pred["objectness"], y_pred["deltas"])
        proposals, valid = self.propose(y_pred["objectness"], y_pred["deltas"])
        # the true boxes join the proposals: early on, when proposals are poor, the head still sees objects
        rois = tf.concat([proposals, tf.where(valid_gt[..., None], gt_boxes, 0.0)], axis=1)
        return rpn + self._head_loss(y_pred["features"], rois, tf.concat([valid, valid_gt], axis=1), gt_boxes, gt_classes)

    def _rpn_loss(self, gt_boxes, valid_gt, objectness, deltas):
        anchors = self.anchors[None]
        iou = tf.where(valid_gt[:, None, :], box_iou(self.anchors, gt_boxes), -1.0)  # (B, A, M)
        best = tf.reduce_max(iou, axis=2)
        matched = tf.argmax(iou, axis=2, output_type=tf.int32)
        # every box keeps its best anchors, even below 0.7 (a box no anchor fits well is still learned)
        best_for_box = tf.reduce_max(iou, axis=1, keepdims=True)
        is_best = tf.reduce_any((iou >= best_for_box) & (best_for_box > 0.0) & valid_gt[:, None, :], axis=2)
        positive = (best >= 0.7) | is_best
        negative = (best < 0.3) & ~positive
        weights = balanced_weights(positive, negative, self.RPN_BATCH, self.RPN_POSITIVE_SHARE)
        total = tf.maximum(tf.reduce_sum(weights), 1.0)
        labels = tf.cast(positive, tf.float32)
        objectness_loss = tf.reduce_sum(weights * ops.binary_crossentropy(labels, objectness, from_logits=True)) / total
        targets = tf.where(positive[..., None], tf.gather(gt_boxes, matched, batch_dims=1), anchors)  # no NaN from padding boxes
        box_weights = weights * labels
        box_loss = tf.reduce_sum(box_weights * huber(encode_boxes(anchors, targets) - deltas)) / total
        return objectness_loss + box_loss

    def _head_loss(self, features, rois, valid_rois, gt_boxes, gt_classes):
        iou = tf.where((gt_classes >= 0)[:, None, :], box_iou(rois, gt_boxes), -1.0)  # (B, R, M)
        best = tf.reduce_max(iou, axis=2)
        matched = tf.argmax(iou, axis=2, output_type=tf.int32)
        foreground = valid_rois & (best >= 0.5)
        background = valid_rois & (best < 0.5)
        weights = balanced_weights(foreground, background, tf.shape(rois)[1], self.ROI_FOREGROUND_SHARE)
        total = tf.maximum(tf.reduce_sum(weights), 1.0)
        classes = tf.where(foreground, tf.gather(gt_classes, matched, batch_dims=1) + 1, 0)
        logits, deltas = self.classify_regions(features, rois)
        flat_weights = tf.reshape(weights, (-1,))
        class_loss = tf.reduce_sum(flat_weights * keras.losses.sparse_categorical_crossentropy(
            tf.reshape(classes, (-1,)), logits, from_logits=True)) / total
        targets = tf.where(foreground[..., None], tf.gather(gt_boxes, matched, batch_dims=1), rois)
        target_deltas = tf.reshape(encode_boxes(rois, targets), (-1, 4))
        predicted = tf.gather(deltas, tf.maximum(tf.reshape(classes, (-1,)) - 1, 0), batch_dims=1)  # the true class's deltas
        box_weights = flat_weights * tf.reshape(tf.cast(foreground, tf.float32), (-1,))
        box_loss = tf.reduce_sum(box_weights * huber(target_deltas - predicted)) / total
        return class_loss + box_loss


def balanced_weights(positive, negative, batch, positive_share: float):
    """Per-example loss weights (B, N) that stand for Faster R-CNN's random sampling of `batch`
    examples per image with at most `positive_share` positives, as its expected value: each
    positive weighs min(1, room / positives), each negative the rest of the batch over the
    negatives. Deterministic, so the validation loss is comparable across epochs."""
    positives = tf.reduce_sum(tf.cast(positive, tf.float32), axis=1, keepdims=True)
    negatives = tf.reduce_sum(tf.cast(negative, tf.float32), axis=1, keepdims=True)
    batch = tf.cast(batch, tf.float32)
    room = batch * positive_share
    taken = tf.minimum(positives, room)
    positive_weight = tf.math.divide_no_nan(taken, positives)
    negative_weight = tf.minimum(1.0, tf.math.divide_no_nan(batch - taken, negatives))
    return tf.cast(positive, tf.float32) * positive_weight + tf.cast(negative, tf.float32) * negative_weight


# === Config ===


def build_detector(arch: str, labels, config, freeze_batchnorm: bool) -> Detector:
    """The untrained detector of `arch` with the train config's settings."""
    common = dict(image_size=config.image_size, backbone=config.backbone, alpha=config.alpha, width=config.width,
                  freeze_batchnorm=freeze_batchnorm)
    if arch == "yolo":
        return YoloDetector(list(labels), centre_radius=config.centre_radius, box_loss_weight=config.box_loss_weight, **common)
    return FasterRCNNDetector(list(labels), anchor_scales=list(config.anchor_scales), anchor_ratios=list(config.anchor_ratios),
                              proposals=config.proposals, roi_size=config.roi_size, head_units=config.head_units, **common)
