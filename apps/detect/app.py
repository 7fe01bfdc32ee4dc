"""The detect app's hooks (shared.app.App): shared/ runs train, predict, evaluate and export."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path

import numpy as np

from dlapps.shared.app import App, Splits
from dlapps.shared.errors import UserError

from .config import DetectConfig, DetectEvaluateOptions, DetectExportOptions, DetectPredictOptions

# Colours of the drawn boxes, one per class in turn (matplotlib's tab10).
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


class DetectApp(App):
    name = "detect"
    summary = "Object detection: YOLO-style one-stage or Faster R-CNN two-stage, boxes drawn, COCO mAP, NMS inside the SavedModel."
    config = DetectConfig
    predict_options = DetectPredictOptions
    evaluate_options = DetectEvaluateOptions
    export_options = DetectExportOptions
    inputs = "paths"
    monitor, mode = "val_selection", "max"  # Faster R-CNN's: see checkpoint_selection and selection_score
    input_help = "image files (JPEG, PNG, BMP) or folders of them; '-' reads paths from stdin"
    predict_help = ("Find objects: `dlapps detect predict image.jpg more.png folder/ --conf 0.25 --save-dir DIR`; "
                    "boxes in each image's own pixels, drawn on copies of the images in --save-dir.")
    evaluate_help = ("COCO mAP@[.5:.95], mAP@0.5, AP small/medium/large and per-class AP (pycocotools) on --data "
                     "(default: the run's validation split); --plot writes the precision-recall curves.")

    # --- train ---------------------------------------------------------------------------------

    def check_config(self, config) -> None:
        if config.image_size % 32:
            raise UserError(f"command line: --image-size must be a multiple of 32 (the coarsest grid has stride 32), got {config.image_size}")
        from dlapps.shared import backbones

        backbones.check_weights(config.backbone, config.weights)

    def load_splits(self, config) -> Splits:
        from . import data

        train, val, labels = data.load_splits(config)
        notes = {k: v for k, v in train.notes.items() if v}
        return Splits(train, val, {
            "arch": config.arch,
            "labels": labels,
            "train_images": len(train),
            "train_boxes": train.objects,
            "val_images": len(val),
            "val_boxes": val.objects,
            **notes,
        })

    def build_model(self, config, splits: Splits):
        from dlapps.shared import backbones

        from . import model as detect_model

        pretrained = config.weights != "none"
        model = detect_model.build_detector(config.arch, splits.info["labels"], config, freeze_batchnorm=pretrained)
        loaded = backbones.load_backbone_weights(model, config.weights)
        print(f"Backbone {config.backbone}: {loaded}", flush=True)
        return model

    def compile_model(self, model, config) -> None:
        import keras

        # clipping: the first steps of a detector from scratch have large, spiky box-loss gradients
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate, global_clipnorm=10.0))

    def datasets(self, model, splits: Splits, config) -> tuple:
        from . import data

        class_index = {name: i for i, name in enumerate(model.labels)}
        common = dict(class_index=class_index, image_size=model.image_size, batch_size=config.batch_size, max_boxes=config.max_boxes)
        train = data.dataset(splits.train, shuffle=True, augment=config.augment, seed=config.seed, **common)
        val = data.dataset(splits.val, **common) if len(splits.val) else None
        return train, val

    def callbacks(self, model, splits: Splits, config) -> list:
        from dlapps.shared import training

        # to 5% by --epochs or --max-minutes, whichever ends first: a time-limited run still ends
        # at a low rate, and late epochs refine the boxes
        callbacks = [training.cosine_decay(config.learning_rate, config.epochs, config.max_minutes, floor=0.05)]
        if len(splits.val):
            callbacks.append(validation_map_callback(splits.val, config.batch_size))
        return callbacks

    def checkpoint_selection(self, config) -> tuple[str, str, str]:
        if config.val_fraction <= 0:
            return "loss", "min", "best"
        # YOLO's loss (CIoU, and class targets that are the IoU reached) tracks box quality and is
        # smoother than the mAP of a small validation split: on raccoon (26 validation images) the
        # epoch it picks scored better held out. Faster R-CNN's misleads: its head's loss grows as
        # proposals improve (more, harder foreground RoIs), so it goes by validation mAP@0.5, with
        # ties broken by mAP@[.5:.95] (selection_score).
        if config.arch == "yolo":
            return "val_loss", "min", self.keep
        return self.monitor, self.mode, self.keep

    def describe_training(self, model, splits: Splits, config) -> str:
        info = splits.info
        return (f"Training detect ({config.arch}, {config.backbone} backbone, {config.image_size}px): "
                f"{model.count_params():,} parameters; {info['train_images']} images with {info['train_boxes']} boxes, "
                f"validating on {info['val_images']}; classes {info['labels']}")

    def after_training(self, model, splits: Splits, config, run) -> dict:
        if not len(splits.val):
            return {}
        options = DetectEvaluateOptions(batch_size=config.batch_size, plot=str(run.staging / "precision_recall.png"))
        metrics = self.evaluate(model, splits.val, options)
        return {"val_map50": metrics["map50"], "val_map": metrics["map"], "precision_recall_png": str(run.dir / "precision_recall.png")}

    # --- predict -------------------------------------------------------------------------------

    def read_inputs(self, items: list[str], options) -> list:
        """Image files named directly (a bad one is an error) and the usable images of named
        folders (bad ones are skipped with a warning and a count)."""
        from dlapps.shared import images

        return images.image_inputs(items)

    def predict(self, model, inputs: list, options) -> list[dict]:
        """Detections per image in its own pixels; with --save-dir, the image with its boxes drawn."""
        encoded = [Path(p).read_bytes() for p in inputs]
        found = detect_batches(model, encoded, options.conf, options.iou, options.max_det, options.batch_size)
        rows, taken = [], set()
        for path, detections in zip(inputs, found):
            row = {"path": str(path), "width": detections["width"], "height": detections["height"],
                   "count": len(detections["objects"]), "objects": detections["objects"]}
            if options.save_dir:
                row["annotated"] = str(draw_detections(Path(path), detections["objects"], Path(options.save_dir), taken))
            rows.append(row)
        return rows

    def format_prediction(self, row: dict) -> str:
        objects = ", ".join(f"{o['class']} {o['score']:.2f} [{', '.join(f'{v:.0f}' for v in o['box'])}]" for o in row["objects"])
        saved = f"  -> {row['annotated']}" if row.get("annotated") else ""
        return f"{row['path']}\t{row['count']} objects\t{objects}{saved}"

    # --- evaluate ------------------------------------------------------------------------------

    def evaluation_data(self, config, options):
        from . import data

        if not options.data:
            return super().evaluation_data(config, options)
        config = dataclasses.replace(config, encoding=options.encoding)
        # the demo: fresh images from another seed, not the training ones
        train, val = data.read_any(options.data, config, demo_seed_offset=1, tfds_split="test")
        return data.join(train, val)

    def evaluate(self, model, data, options) -> dict:
        """COCO mAP@[.5:.95], mAP@0.5, mAP@0.75, AP small/medium/large and per-class AP (pycocotools),
        with the precision-recall curves at IoU 0.5 drawn as a PNG when --plot names one."""
        unknown = sorted({name for row in data.labels for name in row} - set(model.labels))
        if unknown:
            raise UserError(f"{options.data or 'validation data'}: classes {unknown} are not among the model's classes {model.labels}")
        if not len(data):
            raise UserError(f"{options.data or 'validation data'}: no images to evaluate on")
        sources = [s if data.encoded else Path(s).read_bytes() for s in data.sources]
        found = detect_batches(model, sources, 0.001, options.iou, options.max_det, options.batch_size)
        detections = [[(o["box"], o["score"], o["class"]) for o in image["objects"]] for image in found]
        metrics = coco_scores(data, detections, model.labels, plot=options.plot or None)
        metrics.update(images=len(data), objects=data.objects)
        return metrics

    def headline(self, metrics: dict) -> dict:
        keys = ("map", "map50", "map75", "map_small", "map_medium", "map_large", "images", "objects", "precision_recall_png")
        shown = {k: metrics[k] for k in keys if metrics.get(k) is not None}
        shown.update({f"ap50 {name}": values["ap50"] for name, values in metrics["per_class"].items()})
        return shown

    # --- export --------------------------------------------------------------------------------

    def endpoints(self, model, options) -> dict:
        import tensorflow as tf

        conf, iou, max_det = float(options.conf), float(options.iou), int(options.max_det)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serving_default(images):
            """Encoded JPEG/PNG/BMP images of any size -> boxes (xmin, ymin, xmax, ymax in the image's
            pixels), classes, class_names, scores (padded to max_det, best first) and count."""
            found = model.detect_encoded(images, conf, iou, max_det)
            return {k: found[k] for k in ("boxes", "classes", "class_names", "scores", "count")}

        return {"serving_default": serving_default}


# --- helpers -------------------------------------------------------------------------------------


def validation_map_callback(val, batch_size: int):
    """A Keras callback adding ``val_map50``, ``val_map`` (COCO, pycocotools) and ``val_selection``
    (:func:`selection_score`) to each epoch's logs, before checkpoint selection reads them."""
    import keras

    encoded = [s if val.encoded else Path(s).read_bytes() for s in val.sources]

    class ValidationMAP(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if not hasattr(self, "run"):  # traced once per training, not per epoch
                self.run = detector(self.model, 0.001, 0.6, 100)
            found = detect_batches(self.model, encoded, 0.001, 0.6, 100, batch_size, run=self.run)
            detections = [[(o["box"], o["score"], o["class"]) for o in image["objects"]] for image in found]
            scores = coco_scores(val, detections, self.model.labels)
            if logs is not None:
                logs["val_map50"], logs["val_map"] = float(scores["map50"]), float(scores["map"])
                logs["val_selection"] = selection_score(scores["map50"], scores["map"])

    return ValidationMAP()


def selection_score(map50: float, map_all: float) -> float:
    """What picks Faster R-CNN's kept epoch: mAP@0.5 to three decimals, ties broken by mAP@[.5:.95] (adding
    less than 0.001). mAP@0.5 saturates near 1 on easy data (the demo) many epochs before the boxes
    stop tightening: by mAP@0.5 alone the first such epoch would be kept."""
    return round(float(map50), 3) + float(map_all) / 1001


def detector(model, conf: float, iou: float, max_det: int):
    """The model's bytes-in detection graph (the exported one's) as one traced function."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def run(batch):
        return model.detect_encoded(batch, conf, iou, max_det)

    return run


def detect_batches(model, encoded: list[bytes], conf: float, iou: float, max_det: int, batch_size: int, run=None) -> list[dict]:
    """Encoded images -> per image {"width", "height", "objects": [{"class", "class_index", "score",
    "box"}]}, `batch_size` at a time, through `run` (a :func:`detector` of the same settings) or a new one."""
    import tensorflow as tf

    run = run or detector(model, conf, iou, max_det)
    results = []
    for start in range(0, len(encoded), batch_size):
        found = {k: v.numpy() for k, v in run(tf.constant(encoded[start:start + batch_size])).items()}
        for i in range(len(found["count"])):
            width, height = (int(v) for v in found["image_sizes"][i])
            objects = [
                {"class": model.labels[int(c)], "class_index": int(c), "score": round(float(s), 4),
                 "box": [round(float(v), 2) for v in box]}
                for box, c, s in zip(found["boxes"][i][: found["count"][i]], found["classes"][i], found["scores"][i])
            ]
            results.append({"width": width, "height": height, "objects": objects})
    return results


def draw_detections(path: Path, objects: list[dict], folder: Path, taken: set) -> Path:
    """The image with each detection's box, class and score drawn, saved into `folder` under its own
    name (numbered when two inputs share one)."""
    from PIL import Image, ImageDraw

    from dlapps.shared.files import write_atomic

    with Image.open(path) as source:
        picture = source.convert("RGB")
    draw = ImageDraw.Draw(picture)
    line = max(1, round(max(picture.size) / 300))
    for item in objects:
        colour = PALETTE[item["class_index"] % len(PALETTE)]
        x1, y1, x2, y2 = item["box"]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        text = f"{item['class']} {item['score']:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        top_y = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1
        draw.rectangle([x1, top_y, x1 + (right - left) + 4, top_y + (bottom - top) + 2], fill=colour)
        draw.text((x1 + 2, top_y), text, fill=(255, 255, 255))
    suffix = path.suffix.lower() if path.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
    target, number = folder / f"{path.stem}{suffix}", 1
    while str(target) in taken:
        number += 1
        target = folder / f"{path.stem}_{number}{suffix}"
    taken.add(str(target))
    kind = "JPEG" if suffix in (".jpg", ".jpeg") else "PNG"
    write_atomic(target, lambda tmp: picture.save(tmp, format=kind, **({"quality": 92} if kind == "JPEG" else {})))
    return target


def coco_scores(truth, detections: list[list[tuple]], labels: list[str], plot: str | None = None) -> dict:
    """COCO box metrics by pycocotools: `truth` a DetectionSet, `detections` per image a list of
    (pixel box xmin ymin xmax ymax, score, class name). Returns mAP@[.5:.95] (``map``), ``map50``,
    ``map75``, ``map_small``/``medium``/``large`` (None when the data has no box of that size),
    ``mar100`` and per-class AP, AP@0.5 and box counts."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    category = {name: i + 1 for i, name in enumerate(labels)}
    images, annotations = [], []
    for image_id, ((width, height), boxes, names) in enumerate(zip(truth.sizes, truth.boxes, truth.labels), start=1):
        images.append({"id": image_id, "width": int(width), "height": int(height)})
        for (x1, y1, x2, y2), name in zip(np.asarray(boxes, dtype=float).reshape(-1, 4), names):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category[name],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    rows = [[image_id, x1, y1, x2 - x1, y2 - y1, score, category[name]]
            for image_id, found in enumerate(detections, start=1) for (x1, y1, x2, y2), score, name in found]
    quiet = contextlib.redirect_stdout(io.StringIO())  # pycocotools prints its progress; stdout is for results
    with quiet:
        ground = COCO()
        ground.dataset = {"images": images, "annotations": annotations,
                          "categories": [{"id": i, "name": n} for n, i in category.items()]}
        ground.createIndex()
        if not rows or not annotations:
            empty = {"map": 0.0, "map50": 0.0, "map75": 0.0, "map_small": None, "map_medium": None, "map_large": None, "mar100": 0.0}
            return {**empty, "per_class": {n: {"ap": 0.0, "ap50": 0.0, "boxes": sum(x.count(n) for x in truth.labels)} for n in labels},
                    "precision_recall_png": None}
        predicted = ground.loadRes(np.asarray(rows, dtype=np.float64))
        evaluation = COCOeval(ground, predicted, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = [None if v < 0 else round(float(v), 4) for v in evaluation.stats]
    precision = evaluation.eval["precision"]  # (IoU thresholds, recall points, classes, areas, max dets)
    per_class = {}
    for k, name in enumerate(labels):
        every, at50 = precision[:, :, k, 0, -1], precision[0, :, k, 0, -1]
        per_class[name] = {
            "ap": round(float(every[every > -1].mean()), 4) if (every > -1).any() else None,
            "ap50": round(float(at50[at50 > -1].mean()), 4) if (at50 > -1).any() else None,
            "boxes": sum(row.count(name) for row in truth.labels),
        }
    metrics = {"map": stats[0] or 0.0, "map50": stats[1] or 0.0, "map75": stats[2] or 0.0, "map_small": stats[3],
               "map_medium": stats[4], "map_large": stats[5], "mar100": stats[8], "per_class": per_class}
    metrics["precision_recall_png"] = str(plot_precision_recall(evaluation, labels, plot)) if plot else None
    return metrics


def plot_precision_recall(evaluation, labels: list[str], path) -> Path:
    """Precision against recall at IoU 0.5, one curve per class, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlapps.shared.files import save_figure

    recall = evaluation.params.recThrs
    figure, axis = plt.subplots(figsize=(5, 4))
    for k, name in enumerate(labels):
        precision = evaluation.eval["precision"][0, :, k, 0, -1]
        if (precision > -1).any():
            axis.plot(recall, np.clip(precision, 0, 1), label=f"{name} (AP50 {precision[precision > -1].mean():.3f})")
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_title("precision-recall at IoU 0.5")
    if len(labels) <= 12:
        axis.legend(loc="lower left", fontsize="small")
    figure.tight_layout()
    return save_figure(figure, path)


APP = DetectApp()
