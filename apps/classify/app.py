"""The classify app's hooks into the shared contract (shared/app.py).

Pretrained weights train in two phases (shared.training.Stage): phase one trains the new head on
the frozen backbone; phase two (when ``unfreeze`` and ``finetune_epochs`` are positive) continues
from phase one's best epoch with the top ``unfreeze`` backbone layers trainable, BatchNorm frozen,
at ``finetune_learning_rate``. ``--weights none`` trains in one phase, every layer trainable
(nothing pretrained to protect). Every phase uses the label-smoothed loss and, with ``--schedule
cosine``, a learning rate falling from its start value towards zero over the phase's epochs. The
best checkpoint is compared across both phases, and ``--max-minutes`` bounds both together: phase
two gets what phase one left.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from dlapps.shared import data as data_lib
from dlapps.shared import images
from dlapps.shared.app import App, Splits
from dlapps.shared.errors import UserError

from . import data as classify_data
from .config import ClassifyConfig, ClassifyEvaluateOptions, ClassifyExportOptions, ClassifyPredictOptions


class ClassifyApp(App):
    name = "classify"
    summary = "Image classification by fine-tuning a pretrained backbone (MobileNet, EfficientNet, ResNet50)."
    config = ClassifyConfig
    predict_options = ClassifyPredictOptions
    evaluate_options = ClassifyEvaluateOptions
    export_options = ClassifyExportOptions
    inputs = "paths"
    input_help = "image files (JPEG, PNG, BMP) or folders of them; '-' reads paths from stdin"
    predict_help = "Label images: `dlapps classify predict cat.jpg dog.png photos/`."
    evaluate_help = "Accuracy, top-k accuracy, per-class scores and the confusion matrix on --data."
    # validation loss, not accuracy, picks the best epoch: with a few dozen validation images
    # accuracy moves in large steps and ties, and the first of a tie is kept
    monitor, mode = "val_loss", "min"

    # --- train ---
    def check_config(self, config) -> None:
        from dlapps.shared import backbones

        backbones.check_weights(config.backbone, config.weights)

    def load_splits(self, config) -> Splits:
        splits = classify_data.load_splits(config)
        skipped = {str(path): problem for path, problem in splits.train.skipped + splits.val.skipped}
        return Splits(splits.train, splits.val, {
            "train_size": len(splits.train),
            "val_size": len(splits.val),
            "labels": splits.label_names,
            "skipped_files": [f"{path}: {problem}" for path, problem in skipped.items()],
        })

    def build_model(self, config, splits):
        from dlapps.shared import backbones

        from .model import ImageClassifier

        model = ImageClassifier(
            splits.info["labels"],
            backbone=config.backbone,
            image_size=config.image_size,
            alpha=config.alpha,
            dropout=config.dropout,
            augment=config.augment,
            augment_strength=config.augment_strength,
            test_flip=config.test_flip,
            batchnorm_momentum=0.9 if config.weights == "none" else None,
        )
        print(f"Backbone {config.backbone}: {backbones.load_backbone_weights(model, config.weights)}", flush=True)
        return model

    def compile_model(self, model, config) -> None:
        """Compiled for the first phase; phase two compiles anew (``stages``)."""
        _compile(model, "all" if config.weights == "none" else "head", config.learning_rate, config=config)

    def stages(self, config) -> list:
        from dlapps.shared.training import Stage

        if config.weights == "none":
            return [Stage("train", config.epochs)]
        stages = [Stage("head", config.epochs, prepare=lambda model: print("Phase one: new head on the frozen backbone", flush=True))]
        if _finetunes(config):
            # fine-tuning starts from phase one's best epoch, not its last
            stages.append(Stage("finetune", config.finetune_epochs, prepare=lambda model: _start_finetuning(model, config),
                                from_best=True))
        return stages

    def datasets(self, model, splits, config):
        """(float image batch, label index) batches; images decode and resize in tf.data."""
        label_index = {name: i for i, name in enumerate(model.labels)}
        common = dict(image_size=model.image_size, batch_size=config.batch_size, label_index=label_index)
        train = classify_data.image_batches(splits.train, shuffle=True, seed=config.seed, **common)
        val = classify_data.image_batches(splits.val, **common) if len(splits.val) else None
        return train, val

    def callbacks(self, model, splits, config, run=None) -> list:
        """--schedule cosine: each phase's learning rate falls from its start value towards zero
        over the phase's epochs (per epoch; an interrupted phase resumes on the same curve)."""
        if config.schedule != "cosine":
            return []
        import keras

        if model.phase == "finetune":
            start, epochs = config.finetune_learning_rate, config.finetune_epochs
        else:
            start, epochs = config.learning_rate, config.epochs
        from dlapps.shared.training import cosine_rate

        return [keras.callbacks.LearningRateScheduler(lambda epoch: cosine_rate(start, epoch / max(epochs, 1)))]

    def describe_training(self, model, splits, config) -> str:
        return (f"Training on {len(splits.train)} images, validating on {len(splits.val)}; classes {model.labels}; "
                f"{config.backbone}, {model.count_params():,} parameters")

    def after_training(self, model, splits, config, run) -> dict:
        """Phase one's own best epoch beside the run's, read from history.csv, where each phase's
        epoch count starts again at 0."""
        from dlapps.shared import training

        if not _finetunes(config):
            return {}
        history = training.read_history(run.history_path)
        epochs = history.get("epoch", [])
        head_epochs = next((i for i in range(1, len(epochs)) if epochs[i] <= epochs[i - 1]), len(epochs))
        values = history.get(self._watched(splits), [])[:head_epochs]
        if not values:
            return {}
        best = int(np.argmin(values))
        return {"head_phase": {"best_value": values[best], "best_epoch": best + 1, "epochs_run": head_epochs}}

    def _watched(self, splits) -> str:
        """The log value that picks the best epoch: shared.training watches the training loss
        when there is no validation split."""
        return self.monitor if len(splits.val) else self.monitor.removeprefix("val_")

    # --- predict ---
    def read_inputs(self, items: list[str], options) -> list:
        """Image files named directly (a bad one is an error) and the usable images of named
        folders (bad ones are skipped with a warning and a count)."""
        return images.image_inputs(items)

    def predict(self, model, inputs, options) -> list[dict]:
        """Top-k labels with probabilities for each image; with --gradcam, a Grad-CAM overlay per
        image in that folder (``overlay`` in each result)."""
        image_set = classify_data.ImageSet([str(p) for p in inputs], [""] * len(inputs))
        probabilities = predict_probabilities(model, image_set, options.batch_size)
        k = min(options.top_k, len(model.labels))
        results = []
        for path, row in zip(inputs, probabilities):
            order = np.argsort(-row)[:k]
            results.append({
                "image": str(path),
                "label": model.labels[order[0]],
                "probability": float(row[order[0]]),
                "top": [{"label": model.labels[i], "probability": float(row[i])} for i in order],
            })
        if options.gradcam:
            overlays = write_gradcam(model, [Path(p) for p in inputs], probabilities.argmax(axis=-1), Path(options.gradcam))
            for result, overlay in zip(results, overlays):
                result["overlay"] = str(overlay)
        return results

    def format_prediction(self, row: dict) -> str:
        top = "  ".join(f"{t['label']} {t['probability']:.3f}" for t in row["top"])
        return f"{row['image']}\t{top}" + (f"\t{row['overlay']}" if "overlay" in row else "")

    # --- evaluate ---
    def evaluation_data(self, config, options):
        if not options.data:
            return super().evaluation_data(config, options)
        config = dataclasses.replace(config, encoding=options.encoding)
        spec = data_lib.parse_data_spec(options.data)
        if spec.kind == "demo":  # fresh images, not the training ones
            return classify_data.demo(max(100, config.demo_size // 4), seed=config.seed + 1)
        if spec.kind == "tfds":
            return classify_data.check(classify_data.read_tfds(spec, spec.tfds_split or "test", config), spec)
        return classify_data.read_path(spec.path, options.encoding)

    def evaluate(self, model, data, options) -> dict:
        """Accuracy, top-k accuracy, per-class report and confusion matrix (drawn with --plot)."""
        from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

        unknown = sorted(set(data.labels) - set(model.labels))
        if unknown:
            raise UserError(f"{options.data}: classes {unknown} are not among the model's classes {model.labels}")
        probabilities = predict_probabilities(model, data, options.batch_size)
        predicted = [model.labels[i] for i in probabilities.argmax(axis=-1)]
        truth = [model.labels.index(y) for y in data.labels]
        k = min(options.top_k, len(model.labels))
        matrix = confusion_matrix(data.labels, predicted, labels=model.labels)
        metrics = {
            "examples": len(data),
            "accuracy": float(accuracy_score(data.labels, predicted)),
            f"top_{k}_accuracy": top_k_accuracy(probabilities, truth, k),
            "skipped_files": len(data.skipped),
            "labels": model.labels,
            "confusion_matrix": matrix.tolist(),
            "per_class": classification_report(data.labels, predicted, labels=model.labels, output_dict=True, zero_division=0),
        }
        if options.plot:
            metrics["confusion_matrix_png"] = str(images.plot_confusion_matrix(matrix, model.labels, options.plot, title=f"{len(data)} images"))
        return metrics

    def headline(self, metrics: dict) -> dict:
        shown = {k: v for k, v in metrics.items() if k in ("examples", "accuracy", "skipped_files", "confusion_matrix_png") or k.startswith("top_")}
        per_class = {
            f"class {label}": "precision {precision:.3f}  recall {recall:.3f}  f1 {f1:.3f}  support {support:.0f}".format(
                f1=scores["f1-score"], **scores)
            for label, scores in ((label, metrics["per_class"][label]) for label in metrics["labels"])
        }
        confusion = {f"confusion {label}": " ".join(f"{v:6d}" for v in row) for label, row in zip(metrics["labels"], metrics["confusion_matrix"])}
        return shown | per_class | {"confusion columns": " ".join(metrics["labels"])} | confusion

    # --- export ---
    def endpoints(self, model, options) -> dict:
        """``serving_default`` takes encoded images (JPEG/PNG/BMP bytes), ``classify_images`` float
        RGB tensors in [0, 255] of any size; both return the top label, its probability, every
        class's probability and the top-k labels with their probabilities."""
        import tensorflow as tf

        labels = tf.constant(model.labels)
        k = min(options.top_k, len(model.labels))
        size = (model.image_size, model.image_size)

        def decoded(probabilities):
            top = tf.math.top_k(probabilities, k=k)
            return {
                "label": tf.gather(labels, top.indices[:, 0]),
                "probability": top.values[:, 0],
                "probabilities": probabilities,
                "top_labels": tf.gather(labels, top.indices),
                "top_probabilities": top.values,
            }

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serving_default(image_bytes):
            batch = tf.cast(images.decode_batch(image_bytes, size), tf.float32)
            return decoded(model(batch, training=False))

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
        def classify_images(pixels):
            return decoded(model(pixels, training=False))

        return {"serving_default": serving_default, "classify_images": classify_images}


# --- training phases ---------------------------------------------------------------------------


def _finetunes(config) -> bool:
    """Whether a pretrained run has phase two."""
    return config.weights != "none" and config.unfreeze > 0 and config.finetune_epochs > 0


def _compile(model, phase: str, learning_rate: float, unfreeze: int = 0, config=None) -> list[str]:
    import keras

    from .model import SmoothedSparseCrossentropy

    trainable = model.set_phase(phase, unfreeze)
    smoothing = config.label_smoothing if config is not None else 0.0
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=SmoothedSparseCrossentropy(smoothing), metrics=["accuracy"])
    return trainable


def _start_finetuning(model, config) -> None:
    trainable = _compile(model, "finetune", config.finetune_learning_rate, config.unfreeze, config=config)
    print(f"Phase two: top {config.unfreeze} backbone layers trainable ({len(trainable)} with weights), "
          f"BatchNorm frozen, learning rate {config.finetune_learning_rate:g}", flush=True)


# --- predict -----------------------------------------------------------------------------------


def predict_probabilities(model, image_set, batch_size: int = 32) -> np.ndarray:
    batches = classify_data.image_batches(image_set, model.image_size, batch_size)
    return model.predict(batches.map(lambda x, _: x), verbose=0)


def gradcam_heatmaps(model, batch: np.ndarray, class_indices) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017): the backbone's last feature map weighted by the mean
    gradient of the chosen class's probability, ReLU, scaled to [0, 1] per image."""
    import tensorflow as tf

    batch = tf.convert_to_tensor(batch, tf.float32)
    with tf.GradientTape() as tape:
        features = model.backbone_features(batch)
        tape.watch(features)
        probabilities = model.head(features)
        chosen = tf.gather(probabilities, tf.constant(class_indices, tf.int32), batch_dims=1)
    gradients = tape.gradient(chosen, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1)).numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    return np.where(peak > 0, cam / np.maximum(peak, 1e-12), 0.0)


def write_gradcam(model, paths: list[Path], class_indices, folder: Path, batch_size: int = 16) -> list[Path]:
    """One PNG per image: the image as the model saw it (resized) with its Grad-CAM heat map."""
    size = (model.image_size, model.image_size)
    written, used = [], set()
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        pictures = np.stack([images.read_image(p, size) for p in chunk])
        heatmaps = gradcam_heatmaps(model, pictures.astype(np.float32), class_indices[start : start + batch_size])
        for path, picture, heatmap, index in zip(chunk, pictures, heatmaps, class_indices[start : start + batch_size]):
            name = f"{path.stem}_gradcam_{model.labels[index]}"
            while name in used:  # the same file name in two folders
                name += "_"
            used.add(name)
            written.append(images.save_png(folder / f"{name}.png", images.overlay_heatmap(picture, heatmap)))
    return written


# --- evaluate ----------------------------------------------------------------------------------


def top_k_accuracy(probabilities: np.ndarray, truth, k: int) -> float:
    """Share of rows whose true class is among the k most probable (ties count against)."""
    truth = np.asarray(truth)
    true_probability = probabilities[np.arange(len(truth)), truth]
    rank = (probabilities > true_probability[:, None]).sum(axis=1)
    return float(np.mean(rank < k))


APP = ClassifyApp()
