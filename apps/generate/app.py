"""The generate app's hooks into the shared contract (shared/app.py)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from dlapps.shared.app import App, Splits
from dlapps.shared.config import EvaluateOptions, ExportOptions, PredictOptions, option
from dlapps.shared.errors import UserError

from .config import GenerateConfig

MAX_SAMPLES = 4096  # one predict call or exported `sample` row; a 64x64 grid is already unreadable


@dataclasses.dataclass
class GeneratePredictOptions(PredictOptions):
    n: int = option(64, "images to generate (with --interpolate: images in all, in rows of --steps)", short="-n", min=1, max=MAX_SAMPLES)
    out: str = option("samples.png", "PNG file the sample grid is written to", short="-o")
    label: str = option("", "class to generate (conditional models; default: the classes in turn)")
    seed: int = option(-1, "seed of the latent vectors: the same seed gives the same images (-1: a fresh one, reported)", min=-1, max=2**31 - 1)
    interpolate: bool = option(False, "rows of images along a path between two random latent vectors")
    steps: int = option(8, "images per interpolation row", min=2, max=64)


@dataclasses.dataclass
class GenerateEvaluateOptions(EvaluateOptions):
    k: int = option(100, "VAE: importance samples per image of the IWAE estimate of -log p(x)", min=1, max=10_000)
    seed: int = option(0, "seed of binarisation, importance samples, generated images and the FID halves", min=0, max=2**31 - 1)


class GenerateApp(App):
    name = "generate"
    summary = "Image generation: a convolutional VAE or a DCGAN (optionally class-conditional), sample grids, NLL and FID."
    config = GenerateConfig
    predict_options = GeneratePredictOptions
    evaluate_options = GenerateEvaluateOptions
    export_options = ExportOptions
    inputs = "none"
    input_help = "(none: predict takes options only)"
    predict_help = "Write a grid of generated images: `dlapps generate predict --n 64 --out grid.png [--label 3] [--seed 7] [--interpolate]`."
    evaluate_help = "VAE: negative ELBO and IWAE -log p(x) (nats); both: classifier-feature FID against held-out images, and the real-vs-real floor."
    monitor, mode, keep = "val_loss", "min", "best"

    # --- train -------------------------------------------------------------------------------------
    def checkpoint_selection(self, config) -> tuple[str, str, str]:
        # A GAN's losses say nothing about sample quality: keep its last epoch (g_loss is only logged).
        return ("g_loss", "min", "last") if config.arch == "gan" else ("val_loss", "min", "best")

    def check_config(self, config) -> None:
        if config.arch == "gan" and config.likelihood != "bernoulli":
            raise UserError("--likelihood applies to --arch vae only")

    def load_splits(self, config) -> Splits:
        from . import data as generate_data

        train, val = generate_data.load_splits(config)
        info = {
            "train_size": len(train),
            "val_size": len(val),
            "image_shape": train.image_shape,
            "labels": train.label_names,
        }
        if train.notes:
            info["data_notes"] = train.notes
        return Splits(train, val, info)

    def build_model(self, config, splits):
        from .model import GAN, VAE

        train = splits.train
        common = dict(
            image_shape=train.image_shape,
            labels=train.label_names if train.labels is not None else [],
            latent_dim=config.latent_dim,
            filters=config.filters,
            conditional=config.conditional,
            feature_classifier=config.fid_epochs > 0,
        )
        if config.arch == "vae":
            steps_per_epoch = math.ceil(len(train) / config.batch_size)
            return VAE(likelihood=config.likelihood, kl_warmup_steps=int(round(config.kl_warmup * steps_per_epoch)), seed=config.seed, **common)
        return GAN(loss=config.gan_loss, d_steps=config.d_steps, label_smoothing=config.label_smoothing, gp_weight=config.gp_weight,
                   spectral_norm=config.spectral_norm, **common)

    def compile_model(self, model, config) -> None:
        import keras

        if config.arch == "vae":
            model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
            return
        # Adam beta1 0.5 (DCGAN); WGAN-GP's own setting is beta2 0.9
        beta_2 = 0.9 if config.gan_loss == "wgan-gp" else 0.999
        model.compile(
            d_optimizer=keras.optimizers.Adam(config.d_learning_rate, beta_1=0.5, beta_2=beta_2),
            g_optimizer=keras.optimizers.Adam(config.g_learning_rate, beta_1=0.5, beta_2=beta_2),
        )

    def datasets(self, model, splits, config):
        """Batches of float images in [0, 1] ({'images', 'labels'} when conditional). The VAE's
        Bernoulli likelihood sees pixels binarised anew every epoch (a 1 with probability
        intensity), its validation set binarised once (seeded), so val_loss compares across epochs."""
        import tensorflow as tf

        from dlapps.shared import data as data_lib

        from .model import vae_targets

        vae = config.arch == "vae"

        def features(part, pixels):
            return {"images": pixels, "labels": part.labels} if config.conditional else pixels

        def train_map(pair, seed):
            pixels = pair["images"] if config.conditional else pair
            unit = tf.cast(pixels, tf.float32) / 255.0
            if vae:
                seeds = tf.stack([seed, tf.constant(1, tf.int64)])
                noise = tf.random.stateless_uniform(tf.shape(unit), seed=seeds)
                unit = tf.cast(noise < unit, tf.float32) if config.likelihood == "bernoulli" else (unit * 255.0 + noise) / 256.0
            return {"images": unit, "labels": pair["labels"]} if config.conditional else unit

        train = tf.data.Dataset.zip(
            tf.data.Dataset.from_tensor_slices(features(splits.train, splits.train.images)),
            tf.data.Dataset.random(seed=config.seed, rerandomize_each_iteration=True),
        )
        train_ds = data_lib.batch_dataset(train, batch_size=config.batch_size, shuffle=True, shuffle_buffer=len(splits.train),
                                          seed=config.seed, map_fn=train_map)
        val_ds = None
        if len(splits.val):
            pixels = vae_targets(model, splits.val.images, config.seed) if vae else splits.val.images.astype(np.float32) / 255.0
            val_ds = data_lib.make_dataset(features(splits.val, pixels), batch_size=config.batch_size)
        return train_ds, val_ds

    def callbacks(self, model, splits, config, run=None) -> list:
        if not config.grid:
            return []
        # into the staging folder, which becomes the run folder when training finishes
        return [sample_grid_callback(run.staging / "samples", config.grid**2, config.seed)]

    def describe_training(self, model, splits, config) -> str:
        arch = f"{'conditional ' if config.conditional else ''}{config.arch.upper()}"
        if config.arch == "vae":
            arch += f" ({config.likelihood} likelihood)"
        else:
            arch += f" ({config.gan_loss} loss{', spectral norm' if config.spectral_norm else ''})"
        notes = "".join(f"; {note}" for note in splits.train.notes)
        labels = f"labels {model.labels}" if model.labels else "unlabelled"
        return (f"Training a {arch} on {len(splits.train)} images of {'x'.join(map(str, model.image_shape))}, "
                f"validating on {len(splits.val)}; {labels}{notes}; {model.count_params():,} parameters")

    def after_training(self, model, splits, config, run) -> dict:
        """Trains the FID feature classifier on the training images (saved with the model), writes
        a last sample grid, and scores the final model on the validation images."""
        from dlapps.shared import files
        from dlapps.shared.images import encode_png

        from .model import train_feature_classifier

        metrics = {}
        if model.feature_classifier is not None and splits.train.labels is not None:
            fitted = train_feature_classifier(model, splits.train.images, splits.train.labels, epochs=config.fid_epochs,
                                              batch_size=config.batch_size, seed=config.seed)
            metrics["classifier_train_accuracy"] = round(fitted["accuracy"], 4)  # train() saves the model after this hook
        if config.grid:
            grid = sample_grid(model, config.grid**2, config.seed)
            files.write_bytes(run.staging / "samples" / "final.png", encode_png(grid))
        if len(splits.val) >= 4:
            options = GenerateEvaluateOptions(k=10, seed=config.seed, batch_size=max(config.batch_size, 64))
            scores = self.evaluate(model, splits.val, options)
            metrics.update({f"val_{k}": v for k, v in scores.items() if k not in ("images", "k", "likelihood")})
        return metrics

    # --- predict -----------------------------------------------------------------------------------
    def predict(self, model, inputs, options) -> list[dict]:
        from dlapps.shared import files
        from dlapps.shared.images import encode_png

        out = Path(options.out).expanduser()
        if out.suffix.lower() != ".png":
            raise UserError(f"--out {options.out}: the sample grid is written as PNG; give a .png file name")
        if out.is_dir():
            raise UserError(f"--out {options.out}: is a folder; give a .png file name")
        label_id = resolve_label(model, options.label)
        seed = options.seed if options.seed >= 0 else int(np.random.default_rng().integers(0, 2**31 - 1))
        if options.interpolate:
            images = interpolation_images(model, options.n, options.steps, seed, label_id, options.batch_size)
            columns = options.steps
        else:
            images = generated_images(model, options.n, seed, label_id, options.batch_size)
            columns = math.ceil(math.sqrt(options.n))
        grid = make_grid(images, columns, zoom_for(model.image_shape))
        try:
            files.write_bytes(out, encode_png(grid))
        except OSError as error:
            raise UserError(f"--out {options.out}: cannot write ({error.strerror or error})")
        return [{
            "path": str(out),
            "images": int(len(images)),
            "seed": seed,
            "label": model.labels[label_id] if label_id >= 0 else "",
            "interpolate": bool(options.interpolate),
            "rows": math.ceil(len(images) / columns),
            "columns": columns,
            "zoom": zoom_for(model.image_shape),
        }]

    def format_prediction(self, row: dict) -> str:
        if row["interpolate"]:
            what = f"{row['images']} images in {row['rows']} interpolation rows of {row['columns']}"
        else:
            what = f"{row['images']} samples in {row['rows']} rows of {row['columns']}"
        label = f", label {row['label']}" if row["label"] else ""
        return f"{row['path']}\t{what}{label}, seed {row['seed']}"

    # --- evaluate ----------------------------------------------------------------------------------
    def evaluation_data(self, config, options):
        from . import data as generate_data

        if not options.data:
            return super().evaluation_data(config, options)
        config = dataclasses.replace(config, data=options.data, encoding=options.encoding, val_fraction=0.0)
        if options.data.strip() == "demo":  # fresh drawings, not the training ones
            config = dataclasses.replace(config, seed=config.seed + 1)
        train, val, _ = generate_data.read_data(config)
        if val is None:
            return train
        return generate_data.ImageData(np.concatenate([train.images, val.images]),
                                       None if train.labels is None else np.concatenate([train.labels, val.labels]),
                                       train.label_names, train.notes)

    def evaluate(self, model, data, options) -> dict:
        from .data import conform
        from .model import VAE, classifier_outputs, frechet_distance, importance_weighted_bounds, to_unit, vae_targets

        source = options.data or "the validation split"
        if len(data) < 2:
            raise UserError(f"{source}: {len(data)} image(s); evaluation needs at least 2")
        data = conform(data, tuple(model.image_shape), source)
        label_ids = model_label_ids(model, data, source)
        metrics: dict = {"images": len(data)}
        if isinstance(model, VAE):
            if model.conditional and label_ids is None:
                raise UserError(f"{source}: a conditional VAE's likelihood needs labelled images")
            targets = vae_targets(model, data.images, options.seed)
            neg_elbo, nll = importance_weighted_bounds(model, targets, label_ids, samples=options.k, batch_size=options.batch_size,
                                                       seed=options.seed)
            metrics.update({"neg_elbo": float(neg_elbo.mean()), "nll": float(nll.mean()), "k": options.k, "likelihood": model.likelihood})
        if model.feature_classifier is None:
            return metrics
        rng = np.random.default_rng(options.seed)
        order = rng.permutation(len(data))
        half_a, half_b = order[: len(data) // 2], order[len(data) // 2 :]
        real_features, real_probabilities = classifier_outputs(model, to_unit(data.images), options.batch_size)
        # generated images as many as the second half, with its labels when conditional
        generated_labels = label_ids[half_b] if (model.conditional and label_ids is not None) else None
        if model.conditional and generated_labels is None:
            generated_labels = np.arange(len(half_b)) % model.num_classes
        generated = generated_images(model, len(half_b), options.seed, -1, options.batch_size, label_ids=generated_labels)
        fake_features, fake_probabilities = classifier_outputs(model, to_unit(generated), options.batch_size)
        metrics["fid"] = frechet_distance(fake_features, real_features[half_a])
        metrics["fid_real"] = frechet_distance(real_features[half_b], real_features[half_a])
        if label_ids is not None:
            metrics["classifier_accuracy"] = float(np.mean(real_probabilities.argmax(axis=1) == label_ids))
        if model.conditional:
            metrics["conditional_accuracy"] = float(np.mean(fake_probabilities.argmax(axis=1) == generated_labels))
        return metrics

    def headline(self, metrics: dict) -> dict:
        keys = ("images", "neg_elbo", "nll", "k", "fid", "fid_real", "classifier_accuracy", "conditional_accuracy")
        return {k: round(metrics[k], 4) if isinstance(metrics[k], float) else metrics[k] for k in keys if k in metrics}

    # --- export ------------------------------------------------------------------------------------
    def endpoints(self, model, options) -> dict:
        """``serving_default``: latents [N, latent_dim] (+ labels [N]) -> uint8 images [N, H, W, C].
        ``sample``: count [B] and seed [B] (+ label [B], -1 for the classes in turn) -> uint8
        images [B, max(count), H, W, C]: row i holds the images predict --seed seed[i] draws, the
        first count[i] of them being the answer to row i (a seed's images are a prefix-stable stream)."""
        import tensorflow as tf

        latent_spec = tf.TensorSpec([None, model.latent_dim], tf.float32, name="latents")
        count_spec = tf.TensorSpec([None], tf.int32, name="count")
        seed_spec = tf.TensorSpec([None], tf.int64, name="seed")
        label_spec = tf.TensorSpec([None], tf.int32, name="labels")
        row_label_spec = tf.TensorSpec([None], tf.int32, name="label")

        def sample_rows(count, seed, label):
            largest = tf.clip_by_value(tf.reduce_max(count), 0, MAX_SAMPLES)

            def one_row(row):
                row_seed, row_label = row
                latents = model.seeded_latents(largest, row_seed)
                labels = model.label_sequence(largest, row_label) if model.conditional else None
                return model.generate_uint8(latents, labels)

            return {"images": tf.map_fn(one_row, (seed, label), fn_output_signature=tf.TensorSpec([None, *model.image_shape], tf.uint8))}

        def checked(labels, lowest):
            """A label outside the classes is an InvalidArgument error for the client, not a blank image."""
            with tf.control_dependencies([
                tf.debugging.assert_less(labels, model.num_classes, message=f"labels must be below {model.num_classes}"),
                tf.debugging.assert_greater_equal(labels, lowest, message=f"labels must be at least {lowest}"),
            ]):
                return tf.identity(labels)

        if model.conditional:
            @tf.function(input_signature=[latent_spec, label_spec])
            def serving_default(latents, labels):
                return {"images": model.generate_uint8(latents, checked(labels, 0))}

            @tf.function(input_signature=[count_spec, seed_spec, row_label_spec])
            def sample(count, seed, label):
                return sample_rows(count, seed, checked(label, -1))
        else:
            @tf.function(input_signature=[latent_spec])
            def serving_default(latents):
                return {"images": model.generate_uint8(latents)}

            @tf.function(input_signature=[count_spec, seed_spec])
            def sample(count, seed):
                return sample_rows(count, seed, tf.fill(tf.shape(seed), -1))

        return {"serving_default": serving_default, "sample": sample}


# --- helpers the hooks, the tests and the benchmark share ------------------------------------------


def resolve_label(model, label: str) -> int:
    """The label id of --label (a class name), -1 without one; a one-line error otherwise."""
    label = (label or "").strip()
    if not label:
        return -1
    if not model.conditional:
        raise UserError(f"--label {label}: this model is not conditional (train with --conditional to choose classes)")
    if label not in model.labels:
        from dlapps.shared.errors import suggest

        shown = ", ".join(model.labels[:20]) + (" ..." if len(model.labels) > 20 else "")
        raise UserError(f"--label {label}: not one of the trained classes ({shown}){suggest(label, model.labels)}")
    return model.labels.index(label)


def model_label_ids(model, data, source) -> np.ndarray | None:
    """`data`'s labels as the model's label ids (matched by name), or None when unlabelled."""
    if data.labels is None or not model.labels:
        return None
    unknown = sorted(set(data.label_names) - set(model.labels))
    if unknown:
        raise UserError(f"{source}: labels {unknown[:5]} are not among the model's classes {model.labels[:20]}")
    mapping = np.array([model.labels.index(name) for name in data.label_names], dtype=np.int32)
    return mapping[data.labels]


def generated_images(model, count: int, seed: int, label_id: int = -1, batch_size: int = 256, label_ids=None) -> np.ndarray:
    """uint8 images for `seed`: the latents and labels the exported `sample` signature draws."""
    from .model import generate_in_batches

    latents = model.seeded_latents(count, seed).numpy()
    if model.conditional and label_ids is None:
        label_ids = model.label_sequence(count, label_id).numpy()
    return generate_in_batches(model, latents, label_ids if model.conditional else None, batch_size)


def interpolation_images(model, count: int, steps: int, seed: int, label_id: int = -1, batch_size: int = 256) -> np.ndarray:
    """ceil(count / steps) rows of `steps` images along a great circle (slerp: Gaussian latents
    keep their typical norm) between two seeded random latent vectors."""
    from .model import generate_in_batches

    rows = math.ceil(count / steps)
    ends = model.seeded_latents(2 * rows, seed).numpy().reshape(rows, 2, -1)
    t = np.linspace(0.0, 1.0, steps)[:, None]
    latents = np.concatenate([slerp(start, end, t) for start, end in ends]).astype(np.float32)
    label_ids = None
    if model.conditional:
        per_row = np.full(rows, label_id) if label_id >= 0 else np.arange(rows) % model.num_classes
        label_ids = np.repeat(per_row, steps).astype(np.int32)
    return generate_in_batches(model, latents, label_ids, batch_size)


def slerp(start: np.ndarray, end: np.ndarray, t: np.ndarray) -> np.ndarray:
    cos = np.dot(start, end) / (np.linalg.norm(start) * np.linalg.norm(end))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if omega < 1e-6:
        return (1 - t) * start + t * end
    return (np.sin((1 - t) * omega) * start + np.sin(t * omega) * end) / np.sin(omega)


def zoom_for(image_shape) -> int:
    """Pixel repetition that makes small images (16x16 demo shapes) readable in a grid."""
    return max(1, 32 // max(image_shape[:2]))


def make_grid(images: np.ndarray, columns: int, zoom: int = 1, border: int = 2) -> np.ndarray:
    """uint8 images (N, H, W, C) -> one uint8 picture (rows x columns cells, `zoom`ed, separated by
    `border` mid-grey pixels); (height, width) for grayscale."""
    images = np.asarray(images)
    if zoom > 1:
        images = images.repeat(zoom, axis=1).repeat(zoom, axis=2)
    count, height, width, channels = images.shape
    rows = math.ceil(count / columns)
    grid = np.full((rows * (height + border) + border, columns * (width + border) + border, channels), 128, np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = border + row * (height + border), border + column * (width + border)
        grid[top : top + height, left : left + width] = image
    return grid[..., 0] if channels == 1 else grid


def grid_cells(grid: np.ndarray, count: int, columns: int, image_shape, zoom: int = 1, border: int = 2) -> np.ndarray:
    """The inverse of make_grid: the `count` images (N, H, W, C) a grid PNG shows."""
    height, width, channels = image_shape
    grid = grid[..., None] if grid.ndim == 2 else grid
    cells = []
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = border + row * (height * zoom + border), border + column * (width * zoom + border)
        cells.append(grid[top : top + height * zoom : zoom, left : left + width * zoom : zoom, :channels])
    return np.stack(cells)


def sample_grid_callback(folder: Path, count: int, seed: int):
    """A Keras callback writing ``folder/epoch_N.png`` after every epoch: `count` images from the
    same seeded latents each time, so the grids show the model's progress."""
    import keras

    from dlapps.shared import files
    from dlapps.shared.images import encode_png

    class SampleGrid(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            files.write_bytes(folder / f"epoch_{epoch + 1}.png", encode_png(sample_grid(self.model, count, seed)))

    return SampleGrid()


def sample_grid(model, count: int, seed: int) -> np.ndarray:
    columns = math.ceil(math.sqrt(count))
    return make_grid(generated_images(model, count, seed), columns, zoom_for(model.image_shape))


APP = GenerateApp()
