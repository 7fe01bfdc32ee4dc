"""Anomaly data: the generated demo of each kind, CSV tables, ODDS ``.mat`` files, ``.npz``
arrays, NAB series (CSV ``timestamp,value`` with the label-window JSON), image folders, and
tensorflow-datasets images. Labels (1 = anomaly) are kept when a source has them, for evaluate
only: training never reads them.

Tables: every column but the label column is a numeric feature; empty cells and NA, NaN, null, ?
are missing values, which the model imputes with the training median. Any other non-numeric cell
is an error naming its file, line and column.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from dlapps.shared import data as data_lib
from dlapps.shared import images
from dlapps.shared.errors import UserError

MISSING = {"", "na", "nan", "null", "none", "?", "n/a"}
LABEL_NAMES = ("label", "anomaly", "is_anomaly", "outlier")
TIME_NAMES = ("timestamp", "time", "date", "datetime")
NORMAL_FOLDERS = ("good", "normal", "ok")  # MVTec AD calls its defect-free images "good"
TABLE_SUFFIXES = (".csv", ".tsv", ".txt")


@dataclass
class Examples:
    """Table rows or images: one example per row of `x`."""

    x: np.ndarray  # float32 (rows, features) | uint8 (images, size, size, channels)
    labels: np.ndarray | None = None  # int (rows,), 1 = anomaly; None when the source has none
    names: list[str] = field(default_factory=list)  # where each example came from ("file:line", a path)
    columns: list[str] = field(default_factory=list)  # feature names (tables)

    def __len__(self):
        return len(self.x)

    def subset(self, index) -> "Examples":
        index = np.asarray(index, dtype=np.int64)
        labels = None if self.labels is None else self.labels[index]
        return Examples(self.x[index], labels, [self.names[i] for i in index], self.columns)


@dataclass
class Series:
    """One time series: values per step (float32, steps x channels), timestamps as written."""

    name: str
    values: np.ndarray
    timestamps: list[str]
    columns: list[str]
    labels: np.ndarray | None = None  # int per step, 1 = inside a labelled anomaly window

    def __len__(self):
        return len(self.values)

    def part(self, start: int, stop: int) -> "Series":
        labels = None if self.labels is None else self.labels[start:stop]
        return Series(self.name, self.values[start:stop], self.timestamps[start:stop], self.columns, labels)


# --- demo: generated with injected anomalies ----------------------------------------------------

DEMO_ANOMALY_SHARE = 0.05


def demo_table(rows: int = 2000, seed: int = 0) -> Examples:
    """Ten features that are smooth functions of two hidden factors, plus noise; 5% of the rows
    are anomalies drawn uniformly over the features' range, which breaks those relations."""
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(rows, 2))
    a, b = hidden[:, 0], hidden[:, 1]
    x = np.stack([a, b, a + b, a - b, a * b, np.sin(a), np.cos(b), a**2, 0.5 * b**2 - a, np.tanh(a + 2 * b)], axis=1)
    x = x * np.array([1, 2, 1, 1, 3, 5, 5, 1, 2, 4]) + np.array([0, 10, 0, -5, 0, 100, 0, 3, 0, 50])
    x = x + rng.normal(0, 0.05, x.shape) * x.std(axis=0)
    labels = np.zeros(rows, dtype=np.int64)
    outliers = rng.choice(rows, int(rows * DEMO_ANOMALY_SHARE), replace=False)
    low, high = x.min(axis=0), x.max(axis=0)
    x[outliers] = rng.uniform(low, high, (len(outliers), x.shape[1]))
    labels[outliers] = 1
    return Examples(x.astype(np.float32), labels, [f"demo:{i}" for i in range(rows)], [f"f{i}" for i in range(x.shape[1])])


def demo_series(steps: int = 4032, seed: int = 0) -> Series:
    """A noisy daily cycle of 5-minute readings (288 a day, like NAB's artificial series) with
    spikes, a level shift, a flat stretch and a doubled frequency injected, spread so that the
    held-out tail (the last 20%) holds anomalies too, but mostly normal steps."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    values = 20 + 10 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 0.5, steps)
    labels = np.zeros(steps, dtype=np.int64)

    def span(fraction: float, length: int) -> slice:
        start = int(fraction * steps)
        return slice(start, min(start + length, steps))

    spike, shift, flat, late_spike, fast = span(0.25, 4), span(0.45, 96), span(0.65, 72), span(0.88, 4), span(0.95, 100)
    values[spike] += 25
    values[late_spike] -= 20
    values[shift] += 12
    values[flat] = values[flat.start]
    values[fast] = 20 + 10 * np.sin(4 * np.pi * t[fast] / 288) + rng.normal(0, 0.5, fast.stop - fast.start)
    for part in (spike, shift, flat, late_spike, fast):
        labels[part] = 1
    start = datetime(2026, 1, 1)
    stamps = [(start + timedelta(minutes=5 * int(i))).strftime("%Y-%m-%d %H:%M:%S") for i in t]
    return Series("demo", values.astype(np.float32)[:, None], stamps, ["value"], labels)


DEMO_IMAGE_SIZE = 32


def demo_image(rng: np.random.Generator, anomaly: bool) -> np.ndarray:
    """A bright disc near the centre on a dark, noisy background; an anomaly has a defect: a
    dark scratch across the disc, a missing bite, or a square in place of the disc."""
    size = DEMO_IMAGE_SIZE
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.uniform(-2, 2, 2)
    radius = rng.uniform(7, 9)
    disc = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    if anomaly:
        defect = rng.integers(3)
        if defect == 0:
            angle = rng.uniform(0, np.pi)
            distance = np.abs((x - cx) * np.sin(angle) - (y - cy) * np.cos(angle))
            disc &= distance > 2.0
        elif defect == 1:
            angle = rng.uniform(0, 2 * np.pi)
            by, bx = cy + radius * np.sin(angle), cx + radius * np.cos(angle)
            disc &= (x - bx) ** 2 + (y - by) ** 2 > (radius * 0.8) ** 2
        else:
            disc = (np.abs(x - cx) <= radius * 0.85) & (np.abs(y - cy) <= radius * 0.85)
    image = np.where(disc, rng.uniform(180, 230), rng.uniform(20, 50)) + rng.normal(0, 6, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8)[..., None]


def demo_images(count: int = 600, seed: int = 0) -> Examples:
    rng = np.random.default_rng(seed)
    labels = (rng.random(count) < DEMO_ANOMALY_SHARE).astype(np.int64)
    x = np.stack([demo_image(rng, bool(label)) for label in labels])
    return Examples(x, labels, [f"demo:{i}" for i in range(count)])


# --- tables: CSV, ODDS .mat, .npz ----------------------------------------------------------------


def read_csv_rows(path: Path, encoding: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (column names; "0", "1", ... when the first row is all numbers) and the
    non-blank rows with their line numbers; every row must have the header's width."""
    text = data_lib.read_text(path, encoding).replace("\r\n", "\n")
    first = text.split("\n", 1)[0]
    delimiter = "\t" if path.suffix.lower() == ".tsv" or ("\t" in first and "," not in first) else ","
    rows = [(n, [c.strip() for c in row]) for n, row in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter), 1) if any(c.strip() for c in row)]
    if not rows:
        raise UserError(f"{path}: empty file")
    if all(_number(c) is not None for c in rows[0][1]):
        header = [str(i) for i in range(len(rows[0][1]))]
    else:
        header, rows = rows[0][1], rows[1:]
        if not rows:
            raise UserError(f"{path}: has a header but no rows")
    for number, row in rows:
        if len(row) != len(header):
            raise UserError(f"{path}: line {number}: {len(row)} fields, the header has {len(header)}")
    return header, rows


def _number(cell: str) -> float | None:
    """A cell's value: NaN when missing (infinities too: no statistic survives them), None when text."""
    if cell.lower() in MISSING:
        return np.nan
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if np.isfinite(value) else np.nan


def find_column(header: list[str], wanted: str, path: Path, what: str) -> int:
    """The index of a column given by name or 0-based index."""
    if wanted in header:
        return header.index(wanted)
    if wanted.isdigit() and int(wanted) < len(header):
        return int(wanted)
    raise UserError(f"{path}: no {what} column {wanted!r} (columns: {', '.join(header[:20])})")


def numeric_column(path: Path, rows, index: int, name: str) -> np.ndarray:
    values = np.empty(len(rows), dtype=np.float64)
    for i, (number, row) in enumerate(rows):
        value = _number(row[index])
        if value is None:
            raise UserError(f"{path}: line {number}: column {name!r} is not numeric ({row[index][:40]!r})")
        values[i] = value
    return values


def parse_labels(values, path: Path, where: str) -> np.ndarray:
    """0/1 (any non-zero number), true/false, yes/no, anomaly/normal, outlier/inlier -> 0/1."""
    words = {"true": 1, "yes": 1, "anomaly": 1, "outlier": 1, "false": 0, "no": 0, "normal": 0, "inlier": 0}
    out = np.empty(len(values), dtype=np.int64)
    for i, (number, value) in enumerate(values):
        text = str(value).strip().lower()
        number_value = _number(text)
        if text in words:
            out[i] = words[text]
        elif number_value is not None and not np.isnan(number_value):
            out[i] = int(number_value != 0)
        else:
            raise UserError(f"{path}: line {number}: {where} {value!r} is not a 0/1 anomaly label")
    return out


def read_csv_table(path: Path, label_column: str = "", encoding: str = "utf-8") -> Examples:
    header, rows = read_csv_rows(path, encoding)
    label_index = None
    if label_column:
        label_index = find_column(header, label_column, path, "label")
    else:
        label_index = next((i for i, name in enumerate(header) if name.strip().lower() in LABEL_NAMES), None)
    features = [i for i in range(len(header)) if i != label_index]
    if not features:
        raise UserError(f"{path}: no feature columns besides the label column")
    x = np.stack([numeric_column(path, rows, i, header[i]) for i in features], axis=1)
    labels = None
    if label_index is not None:
        labels = parse_labels([(n, row[label_index]) for n, row in rows], path, f"label column {header[label_index]!r}:")
    names = [f"{path.name}:{number}" for number, _ in rows]
    return Examples(x.astype(np.float32), labels, names, [header[i] for i in features])


def read_mat(path: Path) -> Examples:
    """An ODDS-style MATLAB file: `X` (rows x features, any numeric type) and optional `y`."""
    import scipy.io

    try:
        contents = scipy.io.loadmat(path)
    except NotImplementedError:
        raise UserError(f"{path}: a MATLAB v7.3 (HDF5) file; save it with -v7 or as .npz")
    except Exception as error:
        raise UserError(f"{path}: not a readable MATLAB file ({str(error).strip().splitlines()[0][:100] if str(error).strip() else type(error).__name__})")
    return _arrays(path, contents, "X", "y")


def read_npz(path: Path, image: bool = False) -> Examples:
    """`x` (or `X`) and optional `y` (or `Y`) arrays of an .npz file."""
    try:
        with np.load(path, allow_pickle=False) as contents:
            arrays = {k: contents[k] for k in contents.files}
    except Exception as error:
        raise UserError(f"{path}: not a readable .npz file ({type(error).__name__})")
    return _arrays(path, arrays, "x", "y", image=image)


def _arrays(path: Path, arrays: dict, x_key: str, y_key: str, image: bool = False) -> Examples:
    pick = lambda key: next((arrays[k] for k in (key.lower(), key.upper()) if k in arrays), None)  # noqa: E731
    x, y = pick(x_key), pick(y_key)
    if x is None:
        raise UserError(f"{path}: no {x_key!r} array (has: {', '.join(k for k in arrays if not k.startswith('__')) or 'none'})")
    if not np.issubdtype(x.dtype, np.number) and x.dtype != bool:
        raise UserError(f"{path}: {x_key!r} is not numeric ({x.dtype})")
    if image:
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
            raise UserError(f"{path}: {x_key!r} has shape {x.shape}; expected images (N, height, width[, 1 or 3])")
        x = x[..., None] if x.ndim == 3 else x
        if x.dtype != np.uint8:
            x = np.clip(np.round(x * 255 if x.max() <= 1 else x), 0, 255).astype(np.uint8)
    else:
        if x.ndim != 2:
            raise UserError(f"{path}: {x_key!r} has shape {x.shape}; expected rows x features")
        x = x.astype(np.float32)
        x[~np.isfinite(x)] = np.nan  # missing, as in tables
    labels = None
    if y is not None:
        y = np.asarray(y).reshape(-1)
        if len(y) != len(x):
            raise UserError(f"{path}: {len(y)} labels for {len(x)} examples")
        if not np.issubdtype(y.dtype, np.number) or not set(np.unique(y).tolist()) <= {0, 1}:
            raise UserError(f"{path}: {y_key!r} must hold 0/1 anomaly labels, found {np.unique(y)[:5].tolist()}")
        labels = y.astype(np.int64)
    columns = [] if image else [f"x{i}" for i in range(x.shape[1])]
    return Examples(x, labels, [f"{path.name}:{i}" for i in range(len(x))], columns)


def read_table(path: Path, label_column: str = "", encoding: str = "utf-8") -> Examples:
    suffix = path.suffix.lower()
    if path.is_dir():
        raise UserError(f"{path}: a folder; tabular data is one CSV, .mat or .npz file")
    if suffix == ".mat":
        return read_mat(path)
    if suffix == ".npz":
        return read_npz(path)
    return read_csv_table(path, label_column, encoding)


def match_features(table: Examples, features: list[str], path) -> np.ndarray:
    """The columns of `table` a model trained on `features` reads: by name when the file names
    them all, else by position when the count agrees; otherwise a one-line error."""
    if all(name in table.columns for name in features):
        return table.x[:, [table.columns.index(name) for name in features]]
    if table.x.shape[1] == len(features):
        return table.x
    raise UserError(
        f"{path}: {table.x.shape[1]} feature columns, the model was trained on {len(features)} "
        f"({', '.join(features[:8])}{', ...' if len(features) > 8 else ''})"
    )


# --- time series: CSV, NAB label windows ---------------------------------------------------------


def read_series(path: Path, label_column: str = "", labels_file: str = "", encoding: str = "utf-8") -> Series:
    """A CSV of a timestamp column (named timestamp/time/date, or a first column of text) and
    one or more numeric value columns; labels from a label column or a NAB window JSON."""
    header, rows = read_csv_rows(path, encoding)
    lowered = [name.strip().lower() for name in header]
    time_index = next((i for i, name in enumerate(lowered) if name in TIME_NAMES), None)
    if time_index is None and _number(rows[0][1][0]) is None:
        time_index = 0
    label_index = find_column(header, label_column, path, "label") if label_column else next(
        (i for i, name in enumerate(lowered) if name in LABEL_NAMES), None
    )
    value_columns = [i for i in range(len(header)) if i not in (time_index, label_index)]
    if not value_columns:
        raise UserError(f"{path}: no value column besides the timestamps")
    values = np.stack([numeric_column(path, rows, i, header[i]) for i in value_columns], axis=1)
    if np.isnan(values).any():
        number = rows[int(np.flatnonzero(np.isnan(values).any(axis=1))[0])][0]
        raise UserError(f"{path}: line {number}: missing value; a series needs every step (fill or drop the gap)")
    stamps = [row[time_index] for _, row in rows] if time_index is not None else [str(i) for i in range(len(rows))]
    labels = None
    if label_index is not None:
        labels = parse_labels([(n, row[label_index]) for n, row in rows], path, "label")
    if labels_file:
        labels = window_labels(path, stamps, labels_file, [n for n, _ in rows])
    return Series(path.name, values.astype(np.float32), stamps, [header[i] for i in value_columns], labels)


def window_labels(path: Path, stamps: list[str], labels_file: str, lines: list[int]) -> np.ndarray:
    """1 for the steps inside the file's NAB anomaly windows. The JSON maps paths relative to NAB's
    data/ folder ("artificialWithAnomaly/art_daily_jumpsup.csv") to [start, end] pairs; the key is
    matched by the file's trailing path components."""
    labels_path = Path(labels_file)
    try:
        windows_by_file = json.loads(data_lib.read_text(labels_path))
    except json.JSONDecodeError as error:
        raise UserError(f"{labels_path}: not valid JSON ({error.msg}, line {error.lineno})")
    if not isinstance(windows_by_file, dict):
        raise UserError(f"{labels_path}: expected a mapping of series paths to anomaly windows")
    parts = path.resolve().parts
    key = next((k for k in windows_by_file if tuple(Path(k).parts) == parts[-len(Path(k).parts):]), None)
    if key is None:
        raise UserError(f"{labels_path}: no anomaly windows for {path.name}")
    times = []
    for stamp, line in zip(stamps, lines):
        try:
            times.append(datetime.fromisoformat(stamp))
        except ValueError:
            raise UserError(f"{path}: line {line}: timestamp {stamp!r} is not an ISO date and time, so NAB windows cannot be placed")
    labels = np.zeros(len(stamps), dtype=np.int64)
    for window in windows_by_file[key]:
        try:
            start, end = (datetime.fromisoformat(str(t)) for t in window)
        except (TypeError, ValueError):
            raise UserError(f"{labels_path}: {key}: window {window!r} is not a [start, end] pair of timestamps")
        labels |= np.array([start <= t <= end for t in times], dtype=np.int64)
    return labels


def series_files(path: Path) -> list[Path]:
    """One CSV, or every CSV below a folder (say, NAB's artificialNoAnomaly)."""
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in TABLE_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise UserError(f"{path}: no CSV series in this folder")
    return files


def read_series_path(path: Path, config) -> list[Series]:
    files = series_files(path)
    series = [read_series(f, config.label_column, config.labels, config.encoding) for f in files]
    for other, file in zip(series[1:], files[1:]):
        if len(other.columns) != len(series[0].columns):
            raise UserError(f"{file}: {len(other.columns)} value columns, {files[0].name} has {len(series[0].columns)}")
    return series


def windows_of(series: Series, window: int, where: str = "") -> np.ndarray:
    """Every window of `window` consecutive steps (stride 1): (windows, window, channels)."""
    if len(series) < window:
        raise UserError(f"{where or series.name}: {len(series)} steps, shorter than one window of {window} (lower --window)")
    return np.lib.stride_tricks.sliding_window_view(series.values, window, axis=0).transpose(0, 2, 1)


# --- images: folders, .npz, tensorflow-datasets --------------------------------------------------


def image_labels(paths: list[Path], root: Path) -> np.ndarray | None:
    """MVTec AD layout: images in good/ (normal/, ok/) folders are normal and images in their
    sibling folders anomalies; None (unlabelled) when no such folder exists."""
    parents = [p.parent.name.lower() for p in paths]
    if not any(name in NORMAL_FOLDERS for name in parents):
        return None
    return np.array([int(p.parent != root and name not in NORMAL_FOLDERS) for p, name in zip(paths, parents)], dtype=np.int64)


def to_model_images(rgb, image_size: int, channels: int):
    """uint8 RGB image(s) of any size -> uint8 (size, size, channels): one function for training
    data, predict and the exported signature, so all three see the same pixels."""
    import tensorflow as tf

    resized = images.resize_uint8(rgb, (image_size, image_size))
    return tf.image.rgb_to_grayscale(resized) if channels == 1 else resized


def decode_for_model(encoded, image_size: int, channels: int):
    """Encoded JPEG/PNG/BMP bytes (a scalar string tensor) -> the model's uint8 input."""
    import tensorflow as tf

    rgb = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    rgb.set_shape([None, None, 3])
    return to_model_images(rgb, image_size, channels)


def read_image_files(paths: list[Path], image_size: int, channels: int) -> np.ndarray:
    import tensorflow as tf

    return np.stack([decode_for_model(tf.constant(Path(p).read_bytes()), image_size, channels).numpy() for p in paths])


def conform_images(x: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """Arrays (N, h, w, 1|3) of uint8 -> the model's input size and channels."""
    if x.shape[1:] == (image_size, image_size, channels):
        return x
    rgb = np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
    return to_model_images(rgb, image_size, channels).numpy()


def read_images(path: Path, image_size: int, channels: int) -> Examples:
    """An image folder (unusable files skipped with a warning each) or an .npz of images."""
    if path.is_file():
        if path.suffix.lower() != ".npz":
            good, skipped = images.check_images([path])
            if skipped:
                raise UserError(f"{path}: {skipped[0][1]}")
            return Examples(read_image_files([path], image_size, channels), None, [str(path)])
        examples = read_npz(path, image=True)
        examples.x = conform_images(examples.x, image_size, channels)
        return examples
    files = images.list_images(path, recursive=True)
    good, _ = images.check_images(files, what=str(path))
    files = [files[i] for i in good]
    if not files:
        raise UserError(f"{path}: no usable images in this folder")
    return Examples(read_image_files(files, image_size, channels), image_labels(files, path), [str(f) for f in files])


def read_tfds_images(spec, config) -> Examples:
    """The images of a tensorflow-datasets split (its class labels are not anomaly labels, so
    none are kept): for training on a set of normal images."""
    import tensorflow as tf

    dataset, info = data_lib.load_tfds(spec, "train", config.tfds_dir, as_supervised=False)
    key = next((k for k in ("image", "img") if k in info.features), None)
    if key is None:
        raise UserError(f"{spec}: no image feature (has: {', '.join(info.features.keys())})")

    def prepare(example):
        image = tf.cast(example[key], tf.uint8)
        rgb = tf.image.grayscale_to_rgb(image) if image.shape[-1] == 1 else image
        return to_model_images(rgb, config.image_size, config.channels)

    x = np.stack(list(dataset.map(prepare).as_numpy_iterator()))
    return Examples(x, None, [f"{spec}:{i}" for i in range(len(x))])


def check_learnable(table: Examples, source) -> None:
    """A table to train on needs two rows and one column that varies."""
    if len(table) < 2:
        raise UserError(f"{source}: {len(table)} row(s); training needs at least 2")
    with warnings.catch_warnings():  # an all-missing column is constant too, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        varies = np.nanmax(table.x, axis=0) > np.nanmin(table.x, axis=0)
    if not varies.any():
        raise UserError(f"{source}: every column is constant; there is nothing to learn")


# --- what train and evaluate read ----------------------------------------------------------------


def load(config) -> Examples | list[Series]:
    """Everything `config.data` holds for `config.kind`: Examples (tabular, image) or a list of Series."""
    spec = data_lib.parse_data_spec(config.data)
    if spec.kind == "tfds":
        if config.kind != "image":
            raise UserError(f"{spec}: tensorflow-datasets has no {config.kind} anomaly sets here; use a local file or demo")
        return read_tfds_images(spec, config)
    if config.kind == "tabular":
        return demo_table(config.demo_size or 2000, config.seed) if spec.kind == "demo" else read_table(spec.path, config.label_column, config.encoding)
    if config.kind == "timeseries":
        return [demo_series(config.demo_size or 4032, config.seed)] if spec.kind == "demo" else read_series_path(spec.path, config)
    if spec.kind == "demo":
        examples = demo_images(config.demo_size or 600, config.seed)
        examples.x = conform_images(examples.x, config.image_size, config.channels)
        return examples
    return read_images(spec.path, config.image_size, config.channels)
