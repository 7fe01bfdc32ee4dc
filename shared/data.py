"""Data utilities shared by every app: resolving --data, reading text files, seeded splits,
tf.data pipelines and tensorflow-datasets loading that behaves offline.

Apps describe their data as plain Python/NumPy (lists of strings, arrays, file paths) and hand it to
``make_dataset``; images, audio and sequence pairs differ only in the ``map`` function they pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from dlapps.shared.errors import UserError

AUTOTUNE = -1  # tf.data.AUTOTUNE, without importing TensorFlow here


# --- what --data names --------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` value: ``demo``, a local path, or ``tfds:NAME[:SPLIT]``."""

    kind: str  # "demo" | "path" | "tfds"
    path: Path | None = None
    tfds_name: str = ""
    tfds_split: str = ""

    def __str__(self) -> str:
        if self.kind == "tfds":
            return f"tfds:{self.tfds_name}" + (f":{self.tfds_split}" if self.tfds_split else "")
        return "demo" if self.kind == "demo" else str(self.path)


def parse_data_spec(value: str) -> DataSpec:
    value = (value or "").strip()
    if value in ("", "demo"):
        return DataSpec("demo")
    if value.startswith("tfds:"):
        name, _, split = value[len("tfds:") :].partition(":")
        if not name:
            raise UserError(f"--data {value}: expected tfds:NAME[:SPLIT], e.g. tfds:imdb_reviews:train")
        return DataSpec("tfds", tfds_name=name, tfds_split=split)
    path = Path(value).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    return DataSpec("path", path=path)


# --- reading text --------------------------------------------------------------------------------


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """A whole text file, with a one-line error naming the file and the first undecodable byte."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    raw = path.read_bytes()
    # UTF-16 and UTF-32 text is full of NUL bytes; any other text with one is a binary file.
    wide = encoding.lower().replace("-", "").replace("_", "").startswith(("utf16", "utf32"))
    if b"\x00" in raw[:4096] and not wide:
        raise UserError(f"{path}: looks like a binary file, not text (or give its --encoding, e.g. utf-16)")
    try:
        return raw.decode(encoding)
    except LookupError:
        raise UserError(f"--encoding {encoding}: unknown text encoding")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise UserError(
            f"{path}: line {line}: byte 0x{raw[error.start]:02x} is not valid {encoding} (try --encoding latin-1)"
        )


def read_lines(path: str | Path, encoding: str = "utf-8", skip_blank: bool = True) -> list[str]:
    """Lines of a text file split on \\n only (str.splitlines would also split on NEL 0x85 and
    friends, which Latin-1 corpora contain), with \\r stripped."""
    lines = [line.rstrip("\r") for line in read_text(path, encoding).split("\n")]
    return [line for line in lines if line.strip()] if skip_blank else lines


# --- splits --------------------------------------------------------------------------------------


def split_indices(
    n: int, val_fraction: float, seed: int, stratify: Sequence | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (optionally stratified) train/validation index split; the same seed gives the same split."""
    rng = np.random.default_rng(seed)
    if val_fraction <= 0 or n < 2:
        return rng.permutation(n), np.array([], dtype=np.int64)
    if stratify is None:
        order = rng.permutation(n)
        n_val = max(1, int(round(n * val_fraction)))
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    train, val = [], []
    labels = np.asarray(stratify)
    for label in sorted(set(labels.tolist())):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(len(members) * val_fraction))
        if len(members) > 1:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


# --- tf.data -------------------------------------------------------------------------------------


def make_dataset(
    features,
    labels=None,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    map_fn: Callable | None = None,
    batch_map_fn: Callable | None = None,
    padded: bool = False,
    padding_values=None,
    cache: bool = False,
    drop_remainder: bool = False,
):
    """from_tensor_slices -> [shuffle] -> [map] -> [cache] -> batch or padded_batch -> [batch map] -> prefetch.

    `features` may be an array, a list of strings or a dict named after the model's keras.Input
    layers; `map_fn` turns one example into tensors (decode an image, cut audio, tokenise a pair);
    `batch_map_fn` works on whole batches (a model's preprocessor: tokenise and pad per batch).
    """
    import tensorflow as tf

    elements = features if labels is None else (features, labels)
    dataset = tf.data.Dataset.from_tensor_slices(elements)
    return batch_dataset(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        shuffle_buffer=len(labels if labels is not None else _first_leaf(features)),
        seed=seed,
        map_fn=map_fn,
        batch_map_fn=batch_map_fn,
        padded=padded,
        padding_values=padding_values,
        cache=cache,
        drop_remainder=drop_remainder,
    )


def batch_dataset(
    dataset,
    *,
    batch_size: int,
    shuffle: bool = False,
    shuffle_buffer: int = 10_000,
    seed: int = 0,
    map_fn: Callable | None = None,
    batch_map_fn: Callable | None = None,
    padded: bool = False,
    padding_values=None,
    cache: bool = False,
    drop_remainder: bool = False,
):
    """The shared tail of every input pipeline, for datasets built any other way (tfds, generators)."""
    import tensorflow as tf

    if shuffle:
        dataset = dataset.shuffle(max(1, shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
    if map_fn is not None:
        dataset = dataset.map(map_fn, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        dataset = dataset.cache()
    if padded:
        dataset = dataset.padded_batch(batch_size, padding_values=padding_values, drop_remainder=drop_remainder)
    else:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if batch_map_fn is not None:
        dataset = dataset.map(batch_map_fn, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _first_leaf(features):
    if isinstance(features, dict):
        return next(iter(features.values()))
    return features


# --- tensorflow-datasets -------------------------------------------------------------------------


def load_tfds(spec: DataSpec, split: str, data_dir: str = "", as_supervised: bool = True):
    """tfds.load that never reaches for Google Cloud Storage and fails with one clear line offline.

    Prepared datasets in `data_dir` (default ~/tensorflow_datasets) load without a network; others
    are downloaded and prepared once when online.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError:  # pragma: no cover - a dependency, but keep the message useful
        raise UserError("tfds: tensorflow-datasets is not installed (pip install tensorflow-datasets)")

    split = spec.tfds_split or split
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    _fail_fast_offline(tfds, spec, data_dir)
    try:
        return tfds.load(
            spec.tfds_name,
            split=split,
            data_dir=data_dir,
            as_supervised=as_supervised,
            try_gcs=False,
            download=True,
            with_info=True,
        )
    except Exception as error:  # DatasetNotFoundError, network errors, bad split names...
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        kind = type(error).__name__
        if kind == "DatasetNotFoundError":
            raise UserError(f"{spec}: no such tensorflow-datasets dataset{suggest_tfds(spec.tfds_name)}")
        raise UserError(
            f"{spec}: could not load split {split!r} from {data_dir or '~/tensorflow_datasets'} "
            f"({kind}: {message[:200]}); when offline, prepare it once on a connected machine"
        )


# Any host that answers when the machine is online; only reachability is asked, nothing is fetched.
CONNECTIVITY_PROBE = ("www.tensorflow.org", 443)


def _online(timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection(CONNECTIVITY_PROBE, timeout=timeout).close()
        return True
    except OSError:
        return False


def _fail_fast_offline(tfds, spec: DataSpec, data_dir) -> None:
    """An unprepared dataset needs a download, and tfds retries an unreachable network for
    minutes before it fails: check once, and say what to do."""
    try:
        builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    except Exception as error:
        if type(error).__name__ == "DatasetNotFoundError":
            raise UserError(f"{spec}: no such tensorflow-datasets dataset{suggest_tfds(spec.tfds_name)}")
        return  # let tfds.load report it
    # tfds.testing.mock_data replaces the download with generated examples: nothing to reach then.
    real_download = type(builder).download_and_prepare.__module__.startswith("tensorflow_datasets.core")
    if real_download and not builder.is_prepared() and not _online():
        raise UserError(
            f"{spec}: not prepared in {data_dir or '~/tensorflow_datasets'} and the network is unreachable; "
            f"prepare it once on a connected machine (tfds build {spec.tfds_name}) and pass --tfds-dir"
        )


def suggest_tfds(name: str) -> str:
    try:
        import tensorflow_datasets as tfds

        from dlapps.shared.errors import suggest

        return suggest(name, tfds.list_builders())
    except Exception:
        return ""


def tfds_to_numpy(dataset: Iterable, limit: int | None = None):
    """Materialises a small supervised tfds split as (features list, labels array)."""
    features, labels = [], []
    for i, (x, y) in enumerate(dataset.as_numpy_iterator()):
        if limit is not None and i >= limit:
            break
        features.append(x)
        labels.append(y)
    return features, np.asarray(labels)


def decode_strings(values) -> list[str]:
    return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in values]


# --- variable-length batches ---------------------------------------------------------------------


def bucket_by_length(dataset, length_fn: Callable, batch_size: int, boundaries: Sequence[int] | None = None,
                     max_length: int = 512, padding_values=None, drop_remainder: bool = False):
    """Batches examples of similar length together, padded per batch (less padding, faster RNNs
    and attention). `length_fn(*example)` returns an int32 scalar; without `boundaries`, buckets
    grow geometrically up to `max_length`. Use it in place of ``padded_batch`` in a pipeline."""

    if boundaries is None:
        boundaries, edge = [], 8
        while edge < max_length:
            boundaries.append(edge)
            edge = int(edge * 1.5) + 1
    return dataset.bucket_by_sequence_length(
        element_length_func=length_fn,
        bucket_boundaries=list(boundaries),
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        padding_values=padding_values,
        drop_remainder=drop_remainder,
        pad_to_bucket_boundary=False,
    )


def pad_targets(rows: Sequence[np.ndarray], pad_value=-1, max_rows: int | None = None, dtype=None) -> np.ndarray:
    """Variable-length targets (boxes per image, token ids per transcript) as one dense array,
    padded with `pad_value` to the longest row (or `max_rows`): shape (examples, rows, ...)."""
    rows = [np.asarray(r, dtype=dtype) for r in rows]
    longest = max_rows if max_rows is not None else max((len(r) for r in rows), default=0)
    tail = next((r.shape[1:] for r in rows if r.ndim > 1 and len(r)), ())
    out = np.full((len(rows), longest, *tail), pad_value, dtype=dtype or (rows[0].dtype if rows else np.float32))
    for i, row in enumerate(rows):
        row = row[:longest]
        if len(row):
            out[i, : len(row)] = row.reshape((len(row), *tail))
    return out
