"""The classify app's modes as plain functions: each takes paths and values, returns plain Python."""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path

import numpy as np

from ...shared import data as data_lib
from ...shared import export as export_lib
from ...shared import images
from ...shared import training
from ...shared.errors import UserError
from ...shared.strategy import describe, get_strategy
from . import data as classify_data
from .config import ClassifyConfig
from .model import BACKBONES, ImageClassifier, make_backbone, set_efficientnet_normalization  # registers the classes

APP = "classify"


# --- input pipelines -----------------------------------------------------------------------------


def load_model(model_dir):
    """The run's model; Keras's note that the saved optimizer state (of the other phase) does not fit
    is noise here: predict, evaluate and export never use the optimizer."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        return training.load_model(model_dir, APP)


def image_batches(image_set, image_size: int, batch_size: int, label_index=None, shuffle=False, seed=0):
    """(float image batch, label index) from paths or encoded bytes: decoding and resizing run in
    tf.data (cached as uint8 after the first pass), so only pixel tensors enter the training step."""
    import tensorflow as tf

    sources = np.asarray([s if image_set.encoded else str(s) for s in image_set.sources], dtype=object)
    if label_index is None:
        labels = np.zeros(len(sources), dtype=np.int32)
    else:
        labels = np.asarray([label_index[y] for y in image_set.labels], dtype=np.int32)
    size = (image_size, image_size)
    decode = images.decode_bytes_fn(size) if image_set.encoded else images.decode_files_fn(size)
    dataset = tf.data.Dataset.from_tensor_slices((sources, labels)).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    # cache before shuffling: the cache holds decoded images, each epoch shuffles them anew
    dataset = dataset.cache()

    def to_float(batch, label):
        return tf.cast(batch, tf.float32), label

    return data_lib.batch_dataset(
        dataset, batch_size=batch_size, shuffle=shuffle, shuffle_buffer=len(sources), seed=seed, batch_map_fn=to_float
    )


# --- train ---------------------------------------------------------------------------------------


def load_backbone_weights(model, weights: str) -> str:
    """Initialises the backbone: ``none`` keeps the random weights, ``imagenet`` downloads them
    (keras.applications), a path loads a weights file. Returns what was loaded, for the log."""
    backbone = model.get_layer("backbone")
    described = f"{model.backbone_name}" + (f" alpha {model.alpha:g}" if BACKBONES[model.backbone_name][2] else "")
    if weights == "none":
        return "random initialisation"
    if weights == "imagenet":
        try:
            reference = make_backbone(model.backbone_name, model.image_size, model.alpha, weights="imagenet")
        except Exception as error:  # no network, no weights for this alpha, ...
            first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
            raise UserError(
                f"--weights imagenet: could not get ImageNet weights for {described} ({first}); "
                "offline, pass --weights PATH of a local weights file or --weights none"
            )
        backbone.set_weights(reference.get_weights())
        if model.backbone_name == "efficientnet_b0":
            set_efficientnet_normalization(backbone)
        return f"ImageNet weights for {described}"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such weights file (--weights takes imagenet, none or a file path)")
    try:
        with warnings.catch_warnings():  # Keras notes weightless containers it skips; the weights themselves load
            warnings.simplefilter("ignore")
            backbone.load_weights(str(path))
    except Exception as error:
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: does not match the {described} backbone without top ({first})")
    return f"weights from {path}"


def check_config(config: ClassifyConfig) -> None:
    if config.image_size < 32:
        raise UserError(f"command line: image_size must be at least 32 (the backbones downsample 32 times), got {config.image_size}")
    if config.alpha <= 0:
        raise UserError(f"command line: alpha must be positive, got {config.alpha}")
    if config.unfreeze < 0 or config.finetune_epochs < 0:
        raise UserError("command line: unfreeze and finetune_epochs must be 0 or more")


def train(config: ClassifyConfig) -> dict:
    """Trains on `config.data` and writes the run folder; returns validation metrics.

    Pretrained weights: phase one trains the new head on the frozen backbone; phase two (when
    ``unfreeze`` and ``finetune_epochs`` are positive) continues from phase one's best model with the
    top ``unfreeze`` backbone layers trainable, BatchNorm frozen, at ``finetune_learning_rate``.
    ``--weights none``: one phase, every layer trainable (nothing pretrained to protect).
    ``max_minutes`` bounds both phases together: phase two gets what phase one left.
    """
    import keras

    check_config(config)
    keras.utils.set_random_seed(config.seed)
    splits = classify_data.load_splits(config)
    strategy = get_strategy(config.strategy, config.mixed_precision)
    prebuilt, loaded = None, "the interrupted run's initial model"
    if not config.resume:  # before Run.start, so a weights file that does not fit changes nothing on disk
        with strategy.scope():
            prebuilt = ImageClassifier(
                splits.label_names,
                backbone=config.backbone,
                image_size=config.image_size,
                alpha=config.alpha,
                dropout=config.dropout,
                augment=config.augment,
                batchnorm_momentum=0.9 if config.weights == "none" else None,
            )
            loaded = load_backbone_weights(prebuilt, config.weights)
    run = training.Run.start(APP, config)
    model = training.model_for_run(run, config, lambda: prebuilt, strategy)
    print(f"Training on {len(splits.train)} images, validating on {len(splits.val)}; classes {splits.label_names}; "
          f"{config.backbone} from {loaded}; {describe(strategy)}")

    label_index = {name: i for i, name in enumerate(splits.label_names)}
    train_ds = image_batches(splits.train, config.image_size, config.batch_size, label_index, shuffle=True, seed=config.seed)
    val_ds = image_batches(splits.val, config.image_size, config.batch_size, label_index) if len(splits.val) else None

    def compile_for(phase: str, learning_rate: float, unfreeze: int = 0) -> list[str]:
        trainable = model.set_phase(phase, unfreeze)
        with strategy.scope():
            model.compile(
                optimizer=keras.optimizers.Adam(learning_rate),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
        return trainable

    # validation loss, not accuracy, picks the best epoch: with a few dozen validation images
    # accuracy moves in large steps and ties, and the first of a tie is kept
    common = dict(monitor="val_loss", mode="min")
    started = time.time()
    phases = {}
    if config.weights == "none":
        compile_for("all", config.learning_rate)
        metrics = training.fit(model, train_ds, val_ds, run, config, **common)
    else:
        finetune = config.unfreeze > 0 and config.finetune_epochs > 0
        if not run.stage_done("head"):
            compile_for("head", config.learning_rate)
            print("Phase one: new head on the frozen backbone")
            metrics = training.fit(model, train_ds, val_ds, run, config, stage="head", final=not finetune, **common)
            phases["head"] = metrics
        if finetune:
            if run.best_path.exists():  # phase two starts from phase one's best model
                with warnings.catch_warnings():  # Keras notes the weightless augmentation containers it skips
                    warnings.simplefilter("ignore")
                    model.load_weights(run.best_path)
            trainable = compile_for("finetune", config.finetune_learning_rate, config.unfreeze)
            print(f"Phase two: top {config.unfreeze} backbone layers trainable ({len(trainable)} with weights), "
                  f"BatchNorm frozen, learning rate {config.finetune_learning_rate:g}")
            phase_config = config
            if config.max_minutes > 0:  # the rest of the budget (at least a moment: the phase must finish the run)
                left = max(config.max_minutes - (time.time() - started) / 60, 1e-3)
                phase_config = dataclasses.replace(config, max_minutes=left)
            metrics = training.fit(
                model, train_ds, val_ds, run, phase_config, stage="finetune", final=True, epochs=config.finetune_epochs, **common
            )
    if "head" in phases and phases["head"] is not metrics:
        metrics["head_phase"] = {k: phases["head"][k] for k in ("best_value", "best_epoch", "train_seconds")}
    metrics.update(train_size=len(splits.train), val_size=len(splits.val), labels=splits.label_names,
                   skipped_files=[f"{path}: {problem}" for path, problem in _all_skipped(splits)])
    training.write_json(run.metrics_path, metrics)
    return metrics


def _all_skipped(splits) -> list:
    seen, result = set(), []
    for path, problem in list(splits.train.skipped) + list(splits.val.skipped):
        if str(path) not in seen:
            seen.add(str(path))
            result.append((path, problem))
    return result


# --- predict -------------------------------------------------------------------------------------


def prediction_inputs(inputs: list[str]) -> list[Path]:
    """Image files named directly (a bad one is an error) and the usable images of named folders
    (bad ones are skipped with a warning)."""
    named, found = images.expand_inputs(inputs)
    for path in named:
        problem = images.problem_with(path)
        if problem:
            raise UserError(f"{path}: {problem}")
    if found:
        good, _ = images.check_images(found, what="the given folders")
        found = [found[i] for i in good]
    paths = named + found
    if not paths:
        raise UserError("no input: give image files or folders of images")
    return paths


def predict_probabilities(model, image_set, batch_size: int = 32) -> np.ndarray:
    return model.predict(image_batches(image_set, model.image_size, batch_size).map(lambda x, _: x), verbose=0)


def predict(model_dir: str | Path, inputs: list[str], top_k: int = 3, gradcam: str | Path | None = None, model=None) -> list[dict]:
    """Top-k labels with probabilities for each image; with `gradcam`, writes a Grad-CAM overlay
    per image into that folder (``overlay`` in each result)."""
    model = model or load_model(model_dir)
    paths = prediction_inputs(inputs)
    probabilities = predict_probabilities(model, classify_data.ImageSet([str(p) for p in paths], [""] * len(paths)))
    k = max(1, min(top_k, len(model.labels)))
    results = []
    for path, row in zip(paths, probabilities):
        order = np.argsort(-row)[:k]
        results.append(
            {
                "image": str(path),
                "label": model.labels[order[0]],
                "probability": float(row[order[0]]),
                "top": [{"label": model.labels[i], "probability": float(row[i])} for i in order],
            }
        )
    if gradcam is not None:
        for result, overlay in zip(results, write_gradcam(model, paths, probabilities.argmax(axis=-1), Path(gradcam))):
            result["overlay"] = str(overlay)
    return results


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


# --- evaluate ------------------------------------------------------------------------------------


def evaluation_data(model_dir: Path, data: str | None, encoding: str = "utf-8"):
    """The images to evaluate on: all of --data when given, else the run's own validation split."""
    config = training.run_config(model_dir, ClassifyConfig, required=data is None)
    if data is None:
        return classify_data.load_splits(config).val
    config.encoding = encoding
    spec = data_lib.parse_data_spec(data)
    if spec.kind == "demo":
        return classify_data.demo(max(100, config.demo_size // 4), seed=config.seed + 1)  # fresh images, not the training ones
    if spec.kind == "tfds":
        return classify_data.check(classify_data.read_tfds(spec, spec.tfds_split or "test", config), spec)
    return classify_data.read_path(spec.path, encoding)


def evaluate(model_dir: str | Path, data: str | None = None, encoding: str = "utf-8", top_k: int = 3,
             plot: str | Path | None = None) -> dict:
    """Accuracy, top-k accuracy, per-class report and confusion matrix (also drawn as a PNG)."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

    model = load_model(model_dir)
    dataset = evaluation_data(Path(model_dir), data, encoding)
    if not len(dataset):
        raise UserError(f"{model_dir}: the run has no validation images; pass --data")
    unknown = sorted(set(dataset.labels) - set(model.labels))
    if unknown:
        raise UserError(f"{data}: classes {unknown} are not among the model's classes {model.labels}")
    probabilities = predict_probabilities(model, dataset)
    predicted = [model.labels[i] for i in probabilities.argmax(axis=-1)]
    truth = [model.labels.index(y) for y in dataset.labels]
    k = max(1, min(top_k, len(model.labels)))
    matrix = confusion_matrix(dataset.labels, predicted, labels=model.labels)
    plot = Path(plot) if plot else (Path(model_dir) if Path(model_dir).is_dir() else Path(model_dir).parent) / "confusion_matrix.png"
    images.plot_confusion_matrix(matrix, model.labels, plot, title=f"{len(dataset)} images")
    return {
        "examples": len(dataset),
        "accuracy": float(accuracy_score(dataset.labels, predicted)),
        f"top_{k}_accuracy": top_k_accuracy(probabilities, truth, k),
        "skipped_files": len(dataset.skipped),
        "labels": model.labels,
        "confusion_matrix": matrix.tolist(),
        "confusion_matrix_png": str(plot),
        "per_class": classification_report(dataset.labels, predicted, labels=model.labels, output_dict=True, zero_division=0),
    }


def top_k_accuracy(probabilities: np.ndarray, truth, k: int) -> float:
    """Share of rows whose true class is among the k most probable (ties count against)."""
    truth = np.asarray(truth)
    true_probability = probabilities[np.arange(len(truth)), truth]
    rank = (probabilities > true_probability[:, None]).sum(axis=1)
    return float(np.mean(rank < k))


# --- export --------------------------------------------------------------------------------------


def export(model_dir: str | Path, out: str | Path | None = None, top_k: int = 3) -> dict:
    """SavedModel with two signatures: ``serving_default`` takes encoded images (JPEG/PNG/BMP bytes),
    ``classify_images`` float RGB tensors in [0, 255] of any size; both return the top label, its
    probability, every class's probability and the top-k labels with their probabilities."""
    import tensorflow as tf

    model = load_model(model_dir)
    out = Path(out or model_dir)
    labels = tf.constant(model.labels)
    k = max(1, min(top_k, len(model.labels)))
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
    def classify_images(images_):
        return decoded(model(images_, training=False))

    path = export_lib.write_saved_model(model, {"serving_default": serving_default, "classify_images": classify_images}, out)
    export_lib.copy_model(Path(model_dir), out)
    outputs = f"label: string[N], probability: float[N], probabilities: float[N, {len(model.labels)}], top_labels: string[N, {k}], top_probabilities: float[N, {k}]"
    return {
        "saved_model": str(path),
        "version": int(path.name),
        "labels": model.labels,
        "signatures": {
            "serving_default": f"(image_bytes: string[N] JPEG/PNG/BMP) -> {outputs}",
            "classify_images": f"(images: float32[N, H, W, 3] RGB 0-255, any H and W) -> {outputs}",
        },
    }
