"""Image utilities every image app shares: finding image files, checking that they decode (and
skipping the ones that do not, with a warning naming each), tf.data decode + resize functions, and
PNG helpers for confusion matrices and heat-map overlays.

Decoding goes through TensorFlow's own decoder (the one the input pipeline and exported models use),
so a file that passes ``check_images`` cannot fail later in training. Grayscale, grayscale+alpha,
RGBA and 16-bit PNGs are converted to 8-bit RGB by ``decode_image``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from dlapps.shared.errors import UserError

# Formats accepted as training and prediction input, by their first bytes. GIF is left out on
# purpose: in photo collections it is a placeholder ("image not found") or an animation, not a photo.
SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"BM": "BMP"}
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def sniff_format(head: bytes) -> str | None:
    """The format name of an encoded image from its first bytes, or None when it is not one we accept."""
    for magic, name in SIGNATURES.items():
        if head.startswith(magic):
            return name
    return None


def describe_bytes(head: bytes) -> str:
    """A short name for what a file that is not an accepted image looks like."""
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "a GIF (only JPEG, PNG and BMP are read)"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP image (only JPEG, PNG and BMP are read)"
    if not head:
        return "an empty file"
    return "not a JPEG, PNG or BMP image"


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Files of `folder` (hidden ones excluded), sorted; with `recursive`, of its subfolders too.
    Every file is listed, not only those with image suffixes, so ``check_images`` can name the rest."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    return sorted(
        p for p in folder.glob(pattern)
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def problem_with(path: str | Path) -> str | None:
    """Why `path` cannot be used as an image (missing, not an accepted format, corrupt or truncated),
    or None when TensorFlow decodes it."""
    import tensorflow as tf

    path = Path(path)
    if not path.is_file():
        return "no such file"
    try:
        raw = path.read_bytes()
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    if sniff_format(raw[:16]) is None:
        return describe_bytes(raw[:16])
    try:
        image = tf.io.decode_image(raw, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        detail = detail.split("}}")[-1].strip()[:80]
        return f"corrupt or truncated {sniff_format(raw[:16])} ({detail})" if detail else "corrupt or truncated image"
    if image.shape[0] < 1 or image.shape[1] < 1:
        return "an image without pixels"
    return None


def check_images(paths: Sequence[str | Path], what: str = "", stream=None) -> tuple[list[int], list[tuple[Path, str]]]:
    """Indices of the paths that decode, and (path, problem) for the others. Prints one warning per
    skipped file and a count, so a run's log says what was left out and why."""
    stream = stream or sys.stderr
    good, skipped = [], []
    for index, path in enumerate(paths):
        problem = problem_with(path)
        if problem is None:
            good.append(index)
        else:
            skipped.append((Path(path), problem))
            print(f"Warning: skipping {path}: {problem}", file=stream)
    if skipped:
        print(f"Warning: skipped {len(skipped)} of {len(paths)} files{' in ' + what if what else ''} that are not usable images",
              file=stream)
    return good, skipped


# --- tf.data -------------------------------------------------------------------------------------


def decode_image(encoded, image_size: Sequence[int]):
    """Encoded JPEG/PNG/BMP bytes (a scalar string tensor) -> uint8 RGB (height, width, 3) at `image_size`.

    One function for the training pipeline, ``predict`` and exported signatures, so all three see the
    same pixels: channels are forced to 3 (grayscale repeated, alpha dropped), 16-bit input is scaled
    to 8 bits, and the resize is antialiased bilinear, rounded back to uint8.
    """
    import tensorflow as tf

    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return resize_uint8(image, image_size)


def resize_uint8(image, image_size: Sequence[int]):
    """An image tensor (any size, uint8 or float in [0, 255]) -> uint8 at `image_size`."""
    import tensorflow as tf

    resized = tf.image.resize(tf.cast(image, tf.float32), tuple(image_size), method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def decode_files_fn(image_size: Sequence[int]):
    """A tf.data map function: (file path, label) -> (uint8 image, label)."""
    import tensorflow as tf

    def decode(path, label):
        return decode_image(tf.io.read_file(path), image_size), label

    return decode


def decode_bytes_fn(image_size: Sequence[int]):
    """A tf.data map function: (encoded bytes, label) -> (uint8 image, label)."""

    def decode(encoded, label):
        return decode_image(encoded, image_size), label

    return decode


def decode_batch(encoded, image_size: Sequence[int]):
    """A 1-D string tensor of encoded images -> a uint8 batch (N, height, width, 3), e.g. for a
    SavedModel signature that takes image bytes."""
    import tensorflow as tf

    height, width = image_size
    return tf.map_fn(
        lambda item: decode_image(item, image_size),
        encoded,
        fn_output_signature=tf.TensorSpec([height, width, 3], tf.uint8),
    )


def read_image(path: str | Path, image_size: Sequence[int] | None = None) -> np.ndarray:
    """A file as a uint8 RGB array, resized when `image_size` is given (for overlays and previews)."""
    import tensorflow as tf

    image = tf.io.decode_image(Path(path).read_bytes(), channels=3, dtype=tf.uint8, expand_animations=False)
    return (resize_uint8(image, image_size) if image_size else image).numpy()


def encode_png(image: np.ndarray) -> bytes:
    """A uint8 (height, width, 1|3|4) array or (height, width) array -> PNG bytes (PIL, no TensorFlow)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


# --- pictures of results -------------------------------------------------------------------------


def _atomic_write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A uint8 RGB image with `heatmap` (any size, values in [0, 1]) blended on top in the jet colour map."""
    import matplotlib

    heat = np.asarray(heatmap, dtype=np.float32)
    rows = (np.arange(image.shape[0]) * heat.shape[0] // image.shape[0]).clip(0, heat.shape[0] - 1)
    cols = (np.arange(image.shape[1]) * heat.shape[1] // image.shape[1]).clip(0, heat.shape[1] - 1)
    heat = _smooth_upsample(heat, image.shape[:2]) if min(heat.shape) > 1 else heat[rows][:, cols]
    colours = matplotlib.colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255.0
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(blended, 0, 255).astype(np.uint8)


def _smooth_upsample(heat: np.ndarray, size) -> np.ndarray:
    """Bilinear upsampling in NumPy (a coarse CAM grid -> image pixels)."""
    height, width = size
    y = np.linspace(0, heat.shape[0] - 1, height)
    x = np.linspace(0, heat.shape[1] - 1, width)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, heat.shape[0] - 1), np.minimum(x0 + 1, heat.shape[1] - 1)
    wy, wx = (y - y0)[:, None], (x - x0)[None, :]
    top = heat[y0][:, x0] * (1 - wx) + heat[y0][:, x1] * wx
    bottom = heat[y1][:, x0] * (1 - wx) + heat[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def save_png(path: str | Path, image: np.ndarray) -> Path:
    path = Path(path)
    _atomic_write(path, encode_png(image))
    return path


def plot_confusion_matrix(matrix, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """The confusion matrix as a PNG: rows true classes, columns predicted, counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    size = max(3.5, 0.5 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if title:
        axis.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), value in np.ndenumerate(matrix):
        axis.text(col, row, str(value), ha="center", va="center", color="white" if value > threshold else "black")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(tmp, dpi=80)
    plt.close(figure)
    os.replace(tmp, path)
    return path


def expand_inputs(items: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """Paths named on a command line -> (files named directly, files found in named folders).
    A missing path is a UserError; folders are listed recursively."""
    named, found = [], []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found.extend(list_images(path, recursive=True))
        elif path.is_file():
            named.append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    return named, found


def image_inputs(items: Iterable[str | Path]) -> list[Path]:
    """predict's image arguments: files named directly (a bad one is an error naming it) and the
    usable images of named folders (bad ones skipped with a warning and a count)."""
    named, found = expand_inputs(items)
    for path in named:
        problem = problem_with(path)
        if problem:
            raise UserError(f"{path}: {problem}")
    if found:
        good, _ = check_images(found, what="the given folders")
        found = [found[i] for i in good]
    if not named + found:
        raise UserError("no input: give image files or folders of images")
    return named + found
