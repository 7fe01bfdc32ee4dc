"""Generate data: the drawn demo, ``.npz`` arrays, MNIST idx files, image folders and
tensorflow-datasets image sets, all read into one :class:`ImageData` of uint8 pixels.

Every source becomes ``uint8 (N, height, width, channels)`` with optional integer labels and their
names. Images of mixed sizes are resized (antialiased) to ``--image-size`` or, without it, to the
most common size; the side is then rounded to a multiple of the model's downsampling factor
(4 up to 32 pixels, 8 up to 64, 16 up to 128), so that strided convolutions come back to it.
"""

from __future__ import annotations

import collections
import gzip
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlapps.shared import data as data_lib
from dlapps.shared import images as images_lib
from dlapps.shared.errors import UserError


@dataclass
class ImageData:
    images: np.ndarray  # uint8 (N, height, width, channels)
    labels: np.ndarray | None = None  # int32 (N,) indices into label_names, or None (unlabelled)
    label_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was resized or converted, for the start line

    def __len__(self):
        return len(self.images)

    def subset(self, indices) -> "ImageData":
        indices = np.asarray(indices, dtype=np.int64)
        labels = None if self.labels is None else self.labels[indices]
        return ImageData(self.images[indices], labels, list(self.label_names), list(self.notes))

    @property
    def image_shape(self) -> list[int]:
        return [int(s) for s in self.images.shape[1:]]


# --- geometry the models need ---------------------------------------------------------------------


def downsampling_stages(side: int) -> int:
    """Stride-2 stages of the models for images of `side` pixels: at least two, and enough to come
    down to 8 pixels or fewer (16 -> 4, 28 -> 7, 64 -> 8, 128 -> 8)."""
    return max(2, math.ceil(math.log2(max(side, 1) / 8)))


def model_side(side: int) -> int:
    """`side` rounded to the nearest multiple of the models' downsampling factor (at least that factor)."""
    factor = 2 ** downsampling_stages(side)
    return max(factor, int(round(side / factor)) * factor)


# --- demo: drawn shapes ---------------------------------------------------------------------------

DEMO_CLASSES = ("circle", "square", "triangle", "cross")
DEMO_SIDE = 16
SUPERSAMPLING = 4  # drawn at 4x and averaged down: antialiased edges


def _rotate(u, v, angle):
    return u * np.cos(angle) + v * np.sin(angle), -u * np.sin(angle) + v * np.cos(angle)


def demo_image(rng: np.random.Generator, kind: str, side: int = DEMO_SIDE) -> np.ndarray:
    """One uint8 (side, side) grayscale image: a white `kind` of random size, place, rotation and
    stroke width on black. Circles and squares are outlines, triangles filled, crosses two bars."""
    fine = side * SUPERSAMPLING
    y, x = (np.mgrid[0:fine, 0:fine].astype(np.float32) + 0.5) / SUPERSAMPLING
    radius = rng.uniform(0.25, 0.42) * side
    cy, cx = rng.uniform(radius + 0.5, side - radius - 0.5, 2)
    u, v = _rotate(x - cx, y - cy, rng.uniform(0, 2 * np.pi))
    stroke = rng.uniform(1.2, 2.2)
    if kind == "circle":
        distance = np.sqrt(u**2 + v**2)
        mask = np.abs(distance - (radius - stroke / 2)) <= stroke / 2
    elif kind == "square":
        half = radius * 0.8
        edge = np.maximum(np.abs(u), np.abs(v))
        mask = (edge <= half) & (edge >= half - stroke)
    elif kind == "triangle":
        mask = np.ones_like(u, dtype=bool)
        for k in range(3):  # inside = behind each of the three edges, at radius/2 from the centre
            normal = 2 * np.pi * k / 3
            mask &= u * np.cos(normal) + v * np.sin(normal) <= radius / 2
    elif kind == "cross":
        mask = ((np.abs(u) <= stroke / 2) & (np.abs(v) <= radius)) | ((np.abs(v) <= stroke / 2) & (np.abs(u) <= radius))
    else:
        raise ValueError(f"unknown demo class {kind!r}")
    coverage = mask.reshape(side, SUPERSAMPLING, side, SUPERSAMPLING).mean(axis=(1, 3))
    return np.round(coverage * 255).astype(np.uint8)


def demo(size: int = 2000, seed: int = 0) -> ImageData:
    """`size` drawn 16x16 grayscale shapes, balanced over DEMO_CLASSES, in a seeded random order."""
    rng = np.random.default_rng(seed)
    labels = np.arange(size) % len(DEMO_CLASSES)
    labels = labels[rng.permutation(size)].astype(np.int32)
    pictures = np.stack([demo_image(rng, DEMO_CLASSES[label]) for label in labels])[..., None]
    return ImageData(pictures, labels, list(DEMO_CLASSES))


# --- arrays: npz and idx --------------------------------------------------------------------------

NPZ_KEYS = (("x", "y"), ("images", "labels"), ("x_train", "y_train"))


def to_uint8(array: np.ndarray, source: str) -> np.ndarray:
    """Pixel arrays (N, H, W) or (N, H, W, 1|3|4) of uint8, or of floats in [0, 1] or [0, 255], as
    uint8 (N, H, W, C); an alpha channel is dropped."""
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise UserError(f"{source}: expected images shaped (N, height, width[, 1|3|4]), got {array.shape}")
    if not len(array):
        raise UserError(f"{source}: holds no images")
    if array.shape[-1] == 4:
        array = array[..., :3]
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise UserError(f"{source}: images contain NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 255:
            raise UserError(f"{source}: pixel values must lie in [0, 1] or [0, 255], found [{low:g}, {high:g}]")
        scale = 255.0 if high <= 1.0 else 1.0
        return np.round(values * scale).astype(np.uint8)
    raise UserError(f"{source}: images have unsupported dtype {array.dtype}")


def to_label_ids(labels: np.ndarray, count: int, source: str) -> tuple[np.ndarray, list[str]]:
    """Labels (ints or strings) -> int32 ids into sorted label names (numbers sorted as numbers)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1 and set(np.unique(labels).tolist()) <= {0, 1}:
        labels = labels.argmax(axis=1)  # one-hot rows
    labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if labels.ndim != 1:
        raise UserError(f"{source}: labels must be one per image, got shape {labels.shape}")
    if len(labels) != count:
        raise UserError(f"{source}: {count} images but {len(labels)} labels")
    if labels.dtype.kind in "iub":
        values = sorted(set(labels.astype(np.int64).tolist()))
        names = [str(v) for v in values]
        keys = labels.astype(np.int64)
    elif labels.dtype.kind == "f":
        if not np.all(labels == np.round(labels)):
            raise UserError(f"{source}: labels must be integers or strings, found fractional values")
        values = sorted(set(labels.astype(np.int64).tolist()))
        names = [str(v) for v in values]
        keys = labels.astype(np.int64)
    else:
        keys = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in labels])
        values = sorted(set(keys.tolist()))
        names = list(values)
    index = {value: i for i, value in enumerate(values)}
    return np.array([index[k] for k in keys.tolist()], dtype=np.int32), names


def read_npz(path: Path) -> tuple[ImageData, ImageData | None]:
    """``x`` [+ ``y``] (or ``images``/``labels``, or Keras's ``x_train``/``y_train`` with
    ``x_test``/``y_test`` as the validation part)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as error:  # BadZipFile, ValueError: not an npz
        raise UserError(f"{path}: not a readable .npz archive ({type(error).__name__})")
    with archive:
        names = list(archive.files)
        image_key, label_key = next(((x, y) for x, y in NPZ_KEYS if x in names), (None, None))
        if image_key is None:
            raise UserError(f"{path}: no image array; expected a key x (and y), images (and labels) or x_train; has {', '.join(names) or 'none'}")
        try:
            train = _array_data(archive[image_key], archive[label_key] if label_key in names else None, f"{path}: {image_key}")
            val = None
            if image_key == "x_train" and "x_test" in names:
                val = _array_data(archive["x_test"], archive["y_test"] if "y_test" in names else None, f"{path}: x_test")
        except ValueError as error:  # object arrays need pickle, which stays off
            raise UserError(f"{path}: {str(error).splitlines()[0]}")
    if val is not None:
        val = _same_labels(train, val, path)
    return train, val


def _array_data(images: np.ndarray, labels, source: str) -> ImageData:
    pixels = to_uint8(images, source)
    if labels is None:
        return ImageData(pixels)
    ids, names = to_label_ids(labels, len(pixels), source)
    return ImageData(pixels, ids, names)


def _same_labels(train: ImageData, val: ImageData, source) -> ImageData:
    """`val` relabelled with `train`'s label ids; a label training never saw is an error."""
    if val.labels is None or train.labels is None:
        return ImageData(val.images, None, []) if train.labels is None else val
    unknown = sorted(set(val.label_names) - set(train.label_names))
    if unknown:
        raise UserError(f"{source}: validation labels {unknown[:5]} do not occur in the training data")
    mapping = np.array([train.label_names.index(name) for name in val.label_names], dtype=np.int32)
    return ImageData(val.images, mapping[val.labels], list(train.label_names))


IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (MNIST's format, gzipped or not) as an array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError) as error:
        raise UserError(f"{path}: unreadable ({error})")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise UserError(f"{path}: not an idx file (bad magic number)")
    dims = raw[3]
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise UserError(f"{path}: idx header announces {shape} but the file holds {len(raw) - header} bytes of data, not {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def is_idx(path: Path) -> bool:
    name = path.name.lower()
    return "idx" in name and (name.endswith("ubyte") or name.endswith("ubyte.gz") or name.endswith(".idx") or name.endswith(".gz"))


def idx_labels_for(images_path: Path) -> Path | None:
    """MNIST's naming: train-images-idx3-ubyte[.gz] -> train-labels-idx1-ubyte[.gz]."""
    name = images_path.name
    for suffix in ("", ".gz"):
        base = name[: -len(".gz")] if name.endswith(".gz") else name
        candidate = images_path.with_name(base.replace("images", "labels").replace("idx3", "idx1") + suffix)
        if candidate != images_path and candidate.is_file():
            return candidate
    return None


def read_idx_pair(images_path: Path) -> ImageData:
    pixels = read_idx(images_path)
    if pixels.ndim != 3:
        raise UserError(f"{images_path}: expected an idx3 image file (N, height, width), got shape {pixels.shape}")
    labels_path = idx_labels_for(images_path)
    if labels_path is None:
        return _array_data(pixels, None, str(images_path))
    return _array_data(pixels, read_idx(labels_path), str(labels_path))


def read_idx_folder(path: Path) -> tuple[ImageData, ImageData | None] | None:
    """A folder of MNIST idx files: train-images* for training, t10k-images* (or test-images*) for validation."""
    files = sorted(p for p in path.iterdir() if p.is_file() and is_idx(p) and "images" in p.name.lower())
    if not files:
        return None
    train = [p for p in files if p.name.lower().startswith("train")] or files[:1]
    test = [p for p in files if p.name.lower().startswith(("t10k", "test"))]
    train_data = read_idx_pair(train[0])
    val_data = _same_labels(train_data, read_idx_pair(test[0]), test[0]) if test and test[0] != train[0] else None
    return train_data, val_data


# --- image folders --------------------------------------------------------------------------------

GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def read_image_files(paths: list[Path], labels: list[int] | None, label_names: list[str], config, source: Path) -> ImageData:
    """Decodes `paths` with Pillow (files that are not JPEG/PNG/BMP, or do not decode, are skipped
    with a warning naming each) and resizes them all to one size (see the module docstring)."""
    from PIL import Image

    decoded, kept_labels, problems = [], [], []
    for i, path in enumerate(paths):
        try:
            head = path.read_bytes()[:16]
            if images_lib.sniff_format(head) is None:
                raise ValueError(images_lib.describe_bytes(head))
            with Image.open(path) as image:
                image.load()
                decoded.append(image.copy())
        except Exception as error:  # OSError, SyntaxError (PIL), ValueError (format)
            problems.append((path, str(error).splitlines()[0] if str(error) else type(error).__name__))
            continue
        if labels is not None:
            kept_labels.append(labels[i])
    if not decoded:
        path, problem = problems[0]
        raise UserError(f"{source}: no usable images found (JPEG, PNG or BMP); {len(problems)} file(s) skipped, e.g. {path.name}: {problem}")
    for path, problem in problems:
        print(f"Warning: skipping {path}: {problem}", file=sys.stderr)
    if problems:
        print(f"Warning: skipped {len(problems)} of {len(paths)} files in {source} that are not usable images", file=sys.stderr)
    channels = config.channels or (1 if all(im.mode in GRAYSCALE_MODES for im in decoded) else 3)
    sizes = collections.Counter((im.height, im.width) for im in decoded)
    if config.image_size:
        height = width = config.image_size
    else:
        height, width = sizes.most_common(1)[0][0]
    height, width = model_side(height), model_side(width)
    notes = []
    resized = sum(count for size, count in sizes.items() if size != (height, width))
    if resized:
        notes.append(f"{resized} of {len(decoded)} images resized to {height}x{width}")
    pixels = np.stack([_to_array(im, channels, height, width) for im in decoded])
    ids = None if labels is None else np.asarray(kept_labels, dtype=np.int32)
    return ImageData(pixels, ids, list(label_names), notes)


def _to_array(image, channels: int, height: int, width: int) -> np.ndarray:
    from PIL import Image

    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit and float grayscale: scale to 8 bits
        values = np.asarray(image, dtype=np.float32)
        image = Image.fromarray(np.round(values * 255.0 / max(float(values.max()), 1.0)).astype(np.uint8))
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def read_image_folder(path: Path, config) -> ImageData:
    """A folder of class subfolders (labelled), or of images only (unlabelled)."""
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes:
        paths, labels, names = [], [], []
        for class_dir in classes:
            files = images_lib.list_images(class_dir, recursive=True)
            if files:
                names.append(class_dir.name)
                paths += files
                labels += [len(names) - 1] * len(files)
        if not paths:
            raise UserError(f"{path}: the class folders hold no files")
        return read_image_files(paths, labels, names, config, path)
    files = images_lib.list_images(path)
    if not files:
        raise UserError(f"{path}: empty folder (expected images, or one subfolder of images per class)")
    return read_image_files(files, None, [], config, path)


VAL_FOLDERS = ("val", "valid", "validation", "test")


def read_local(path: Path, config) -> tuple[ImageData, ImageData | None]:
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return read_npz(path)
        if is_idx(path):
            return read_idx_pair(path), None
        raise UserError(f"{path}: expected an .npz archive, an MNIST idx file, or a folder of images")
    idx = read_idx_folder(path)
    if idx is not None:
        return idx
    if (path / "train").is_dir():
        val_dir = next((path / name for name in VAL_FOLDERS if (path / name).is_dir()), None)
        train = read_image_folder(path / "train", config)
        if val_dir is None:
            return train, None
        # read_data brings the validation images to the training images' shape
        return train, _same_labels(train, read_image_folder(val_dir, config), val_dir)
    return read_image_folder(path, config), None


# --- tensorflow-datasets --------------------------------------------------------------------------


def read_tfds(spec: data_lib.DataSpec, config) -> ImageData:
    """A tfds image set (mnist, fashion_mnist, ...) with its label names."""
    dataset, info = data_lib.load_tfds(spec, "train", config.tfds_dir, as_supervised=True)
    pictures, labels = data_lib.tfds_to_numpy(dataset)
    label_feature = info.features.get("label") if hasattr(info.features, "get") else None
    names = list(getattr(label_feature, "names", []) or [])
    data = _array_data(np.stack(pictures), labels, str(spec))
    if names and len(names) >= len(data.label_names):
        data.label_names = [names[int(n)] for n in data.label_names]
    return data


# --- the splits train uses ------------------------------------------------------------------------


def target_shape(data: ImageData, config) -> tuple[int, int, int]:
    """(height, width, channels) for `data`: --image-size and --channels when given, else its own,
    the sides rounded as the models need."""
    height, width, channels = data.images.shape[1:]
    return model_side(config.image_size or height), model_side(config.image_size or width), config.channels or channels


def conform(data: ImageData, shape: tuple[int, int, int], source) -> ImageData:
    """`data` resized (antialiased) and converted to `shape` (height, width, channels)."""
    if not len(data):
        raise UserError(f"{source}: no images")
    if tuple(data.images.shape[1:]) == tuple(shape):
        return data
    height, width, channels = shape
    pixels = np.stack([_to_array(_pil(image), channels, height, width) for image in data.images])
    before = "x".join(str(s) for s in data.images.shape[1:])
    notes = data.notes + [f"images converted from {before} to {height}x{width}x{channels}"]
    return ImageData(pixels, data.labels, data.label_names, notes)


def _pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def read_data(config) -> tuple[ImageData, ImageData | None, str]:
    """The images `config.data` names and its own validation part, if any, at one shape."""
    spec = data_lib.parse_data_spec(config.data)
    val = None
    if spec.kind == "demo":
        train = demo(config.demo_size, config.seed)
    elif spec.kind == "tfds":
        train = read_tfds(spec, config)
    else:
        train, val = read_local(spec.path, config)
    if not len(train):
        raise UserError(f"{spec}: no images")
    train = conform(train, target_shape(train, config), spec)
    if val is not None:
        val = conform(val, tuple(train.images.shape[1:]), spec)
    return train, val, str(spec)


def load_splits(config) -> tuple[ImageData, ImageData]:
    """Training and validation images; a seeded (stratified, when labelled) split when the source
    has no validation part of its own."""
    train, val, source = read_data(config)
    if config.conditional and train.labels is None:
        raise UserError(f"{source}: --conditional needs labelled images (npz y, idx labels, class folders or tfds labels)")
    if config.conditional and len(train.label_names) < 2:
        raise UserError(f"{source}: --conditional needs at least two classes, found {train.label_names}")
    if val is None:
        train_index, val_index = data_lib.split_indices(len(train), config.val_fraction, config.seed, stratify=train.labels)
        train, val = train.subset(train_index), train.subset(val_index)
    if len(train) < 2:
        raise UserError(f"{source}: {len(train)} training image(s); need at least 2")
    return train, val
