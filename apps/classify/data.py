"""Classify data: the generated demo (shapes and textures), a folder per class (ImageFolder, with
optional train/ and val/ subfolders), a CSV of ``path,label`` rows, and tensorflow-datasets image
sets. Everything is returned as plain lists: file paths or encoded image bytes, and label names.

Files that are not usable images (not JPEG/PNG/BMP, corrupt, truncated) are skipped with a warning
naming each, and a count; the input pipeline never meets them.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlapps.shared import data as data_lib
from dlapps.shared import images
from dlapps.shared.errors import UserError


@dataclass
class ImageSet:
    sources: list  # file paths (str) or encoded image bytes, one per image
    labels: list[str]
    encoded: bool = False  # True: `sources` hold encoded bytes, not paths
    skipped: list = field(default_factory=list)  # (path, problem) of files left out

    def __len__(self):
        return len(self.sources)

    def subset(self, indices) -> "ImageSet":
        return ImageSet([self.sources[i] for i in indices], [self.labels[i] for i in indices], self.encoded, self.skipped)

    def __add__(self, other: "ImageSet") -> "ImageSet":
        if self.encoded != other.encoded:
            raise ValueError("cannot join file paths and encoded images")
        return ImageSet(self.sources + other.sources, self.labels + other.labels, self.encoded, self.skipped + other.skipped)


@dataclass
class Splits:
    train: ImageSet
    val: ImageSet
    label_names: list[str]


# --- demo: shapes and textures -------------------------------------------------------------------

DEMO_CLASSES = ("circle", "square", "triangle", "stripes", "checkerboard")
DEMO_SIZE = 64


def _colour(rng, avoid=None):
    while True:
        colour = rng.uniform(0, 255, 3)
        if avoid is None or np.abs(colour - avoid).sum() > 200:
            return colour


def demo_image(rng: np.random.Generator, kind: str, size: int = DEMO_SIZE) -> np.ndarray:
    """One uint8 RGB image: a shape (circle, square, triangle) of random size, place and colour on a
    noisy background, or a texture (stripes at a random angle and period, a checkerboard)."""
    background = _colour(rng)
    foreground = _colour(rng, avoid=background)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind in ("stripes", "checkerboard"):
        period = rng.uniform(6, 14)
        angle = rng.uniform(0, np.pi)
        u = x * np.cos(angle) + y * np.sin(angle)
        v = -x * np.sin(angle) + y * np.cos(angle)
        mask = np.sin(2 * np.pi * u / period) > 0
        if kind == "checkerboard":
            mask = mask ^ (np.sin(2 * np.pi * v / period) > 0)
    else:
        radius = rng.uniform(0.25, 0.4) * size
        cy, cx = rng.uniform(radius + 2, size - radius - 2, 2)
        if kind == "circle":
            mask = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
        elif kind == "square":
            angle = rng.uniform(0, np.pi / 2)
            u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
            v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
            mask = (np.abs(u) <= radius * 0.8) & (np.abs(v) <= radius * 0.8)
        elif kind == "triangle":
            angle = rng.uniform(0, 2 * np.pi)
            corners = [(cx + radius * np.cos(angle + k * 2 * np.pi / 3), cy + radius * np.sin(angle + k * 2 * np.pi / 3)) for k in range(3)]
            mask = np.ones((size, size), dtype=bool)
            for (x1, y1), (x2, y2) in zip(corners, corners[1:] + corners[:1]):
                # inside = on the same side of every edge as the centre
                side = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
                centre_side = (x2 - x1) * (cy - y1) - (y2 - y1) * (cx - x1)
                mask &= side * centre_side >= 0
        else:
            raise ValueError(f"unknown demo class {kind!r}")
    image = np.where(mask[..., None], foreground, background)
    image = image + rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def demo(size: int = 800, seed: int = 0) -> ImageSet:
    """`size` PNG-encoded demo images, balanced over DEMO_CLASSES, in a seeded random order."""
    rng = np.random.default_rng(seed)
    labels = [DEMO_CLASSES[i % len(DEMO_CLASSES)] for i in range(size)]
    labels = [labels[i] for i in rng.permutation(size)]
    return ImageSet([images.encode_png(demo_image(rng, label)) for label in labels], labels, encoded=True)


# --- local files ---------------------------------------------------------------------------------


def read_class_folders(path: Path) -> ImageSet:
    """ImageFolder layout: one subfolder per class (files in nested folders count too)."""
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"{path}: no class folders (expected one subfolder of images per class, or a CSV of path,label)")
    paths, labels = [], []
    for class_dir in classes:
        files = images.list_images(class_dir, recursive=True)
        paths += files
        labels += [class_dir.name] * len(files)
    good, skipped = images.check_images(paths, what=str(path))
    return ImageSet([str(paths[i]) for i in good], [labels[i] for i in good], skipped=skipped)


def read_csv(path: Path, encoding: str = "utf-8") -> ImageSet:
    """Rows of ``path,label`` (a header naming them is optional); relative paths are relative to the CSV."""
    content = data_lib.read_text(path, encoding).replace("\r\n", "\n")
    rows = [(number, row) for number, row in enumerate(csv.reader(io.StringIO(content)), start=1) if any(c.strip() for c in row)]
    if not rows:
        raise UserError(f"{path}: empty file")
    header = [c.strip().lower() for c in rows[0][1]]
    path_column, label_column = 0, 1
    if any(name in header for name in ("path", "file", "filename", "image", "label", "class")):
        path_column = next((header.index(n) for n in ("path", "file", "filename", "image") if n in header), 0)
        label_column = next((header.index(n) for n in ("label", "class", "category") if n in header), 1)
        rows = rows[1:]
        if not rows:
            raise UserError(f"{path}: has a header but no rows")
    paths, labels = [], []
    for number, row in rows:
        if len(row) <= max(path_column, label_column):
            raise UserError(f"{path}: line {number}: expected path,label, found {len(row)} column(s)")
        image_path = Path(row[path_column].strip()).expanduser()
        image_path = image_path if image_path.is_absolute() else path.parent / image_path
        if not image_path.is_file():
            hint = " (if this line is a header, name its columns path and label)" if number == 1 else ""
            raise UserError(f"{path}: line {number}: no such image file {row[path_column].strip()!r}{hint}")
        label = row[label_column].strip()
        if not label:
            raise UserError(f"{path}: line {number}: empty label")
        paths.append(image_path)
        labels.append(label)
    good, skipped = images.check_images(paths, what=str(path))
    return ImageSet([str(paths[i]) for i in good], [labels[i] for i in good], skipped=skipped)


VAL_FOLDERS = ("val", "valid", "validation")


def read_local(path: Path, encoding: str = "utf-8") -> tuple[ImageSet, ImageSet | None]:
    """The training images at `path` and, when it has a val/ (valid/, validation/) folder beside
    train/, the validation images."""
    if path.is_file():
        if path.suffix.lower() not in (".csv", ".txt", ".tsv"):
            raise UserError(f"{path}: expected a folder of class folders or a CSV of path,label rows")
        return read_csv(path, encoding), None
    if (path / "train").is_dir():
        val_dir = next((path / name for name in VAL_FOLDERS if (path / name).is_dir()), None)
        return read_class_folders(path / "train"), read_class_folders(val_dir) if val_dir else None
    return read_class_folders(path), None


def read_path(path: str | Path, encoding: str = "utf-8") -> ImageSet:
    """All images of a local folder or CSV (its val/ folder included): for evaluate."""
    train, val = read_local(Path(path), encoding)
    return check(train + val if val is not None else train, Path(path))


# --- tensorflow-datasets -------------------------------------------------------------------------


def read_tfds(spec: data_lib.DataSpec, split: str, config) -> ImageSet:
    """A supervised tfds image set (tf_flowers, cats_vs_dogs, ...) as encoded bytes: decoding is
    skipped here so the same decoder as for files runs in the input pipeline. cats_vs_dogs marks
    its corrupt files itself (tfds drops them)."""
    import tensorflow_datasets as tfds

    _, info = data_lib.load_tfds(spec, split, config.tfds_dir, as_supervised=False)  # prepares it, or one clear line
    image_key = next((k for k in ("image", "img") if k in info.features), None)
    label_key = next((k for k in ("label", "labels", "class") if k in info.features), None)
    if image_key is None or label_key is None:
        raise UserError(f"{spec}: no image and label features (has: {', '.join(info.features.keys())})")
    builder = tfds.builder(spec.tfds_name, data_dir=config.tfds_dir or None)
    dataset = builder.as_dataset(split=spec.tfds_split or split, decoders={image_key: tfds.decode.SkipDecoding()})
    names = info.features[label_key].names
    sources, labels = [], []
    for example in dataset.as_numpy_iterator():
        sources.append(example[image_key])
        labels.append(names[int(example[label_key])])
    return ImageSet(sources, labels, encoded=True)


# --- the input pipeline --------------------------------------------------------------------------


def image_batches(image_set: ImageSet, image_size: int, batch_size: int, label_index=None, shuffle=False, seed=0):
    """(float image batch, label index) from paths or encoded bytes: decoding and resizing run in
    tf.data (cached as uint8 after the first pass), so only pixel tensors enter the training step.
    Without `label_index` the labels are zeros (prediction)."""
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


# --- the splits train uses -----------------------------------------------------------------------


def check(dataset: ImageSet, source) -> ImageSet:
    if not len(dataset):
        raise UserError(f"{source}: no usable images found")
    return dataset


def load_splits(config) -> Splits:
    """Training and validation images for `config.data`, with a seeded stratified split when the
    source has no validation part of its own."""
    spec = data_lib.parse_data_spec(config.data)
    val = None
    if spec.kind == "demo":
        train = demo(config.demo_size, config.seed)
    elif spec.kind == "tfds":
        train = read_tfds(spec, "train", config)
    else:
        train, val = read_local(spec.path, config.encoding)
    train = check(train, spec)
    label_names = sorted(set(train.labels))
    if len(label_names) < 2:
        raise UserError(f"{spec}: needs at least two classes, found {label_names}")
    counts = {name: train.labels.count(name) for name in label_names}
    single = [name for name, count in counts.items() if count < 2]
    if val is None and single:
        raise UserError(
            f"{spec}: class {single[0]!r} has only {counts[single[0]]} usable image; every class needs at least 2 "
            "(one to train on, one to validate with)"
        )
    if val is None:
        train_index, val_index = data_lib.split_indices(len(train), config.val_fraction, config.seed, stratify=train.labels)
        train, val = train.subset(train_index), train.subset(val_index)
    unknown = sorted(set(val.labels) - set(label_names))
    if unknown:
        raise UserError(f"{spec}: validation classes {unknown} do not occur in the training data")
    return Splits(train, val, label_names)
