"""charlm data: one text (a string) from the demo corpus, local UTF-8 files or folders, or a
tensorflow-datasets text set; the validation text is the last part of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dlapps.shared import data as data_lib
from dlapps.shared.errors import UserError
from dlapps.shared.text import stdlib_docstrings


@dataclass
class Splits:
    train: str
    val: str  # "" when --val-fraction is 0


def demo(chars: int = 200_000) -> str:
    """Real English collected at run time: the standard library's docstrings, first `chars` of them."""
    return "\n\n".join(stdlib_docstrings(max_chars=chars))[:chars]


def read_file(path: Path, encoding: str = "utf-8") -> str:
    """A text file with line ends normalised to \\n; one-line errors for binary, undecodable or empty files."""
    text = data_lib.read_text(path, encoding).replace("\r\n", "\n")
    if "\x00" in text:
        raise UserError(f"{path}: looks like a binary file, not text")
    if not text.strip():
        raise UserError(f"{path}: empty file")
    return text


def read_local(path: Path, encoding: str = "utf-8") -> str:
    """A file, or every file under a folder (sorted, hidden ones skipped) joined by line breaks."""
    if path.is_file():
        return read_file(path, encoding)
    files = sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise UserError(f"{path}: no text files in this folder")
    return "\n".join(read_file(file, encoding) for file in files)


def read_tfds(spec: data_lib.DataSpec, split: str, tfds_dir: str = "") -> str:
    """A tensorflow-datasets text set (e.g. tfds:tiny_shakespeare): its `text` feature, joined."""
    dataset, info = data_lib.load_tfds(spec, split, tfds_dir, as_supervised=False)
    if "text" not in info.features:
        raise UserError(f"{spec}: no 'text' feature (has: {', '.join(info.features.keys())})")
    return "\n".join(example["text"].decode("utf-8", errors="replace") for example in dataset.as_numpy_iterator())


def read_data(value: str, encoding: str = "utf-8", demo_chars: int = 200_000, tfds_dir: str = "", tfds_split: str = "train") -> str:
    """The whole text `--data` names: demo, tfds:NAME[:SPLIT], a file, a folder, or several
    paths separated by commas."""
    value = (value or "").strip()
    if "," in value and not Path(value).exists() and not value.startswith("tfds:"):
        return "\n".join(read_data(part, encoding, demo_chars, tfds_dir, tfds_split) for part in value.split(",") if part.strip())
    spec = data_lib.parse_data_spec(value)
    if spec.kind == "demo":
        return demo(demo_chars)
    if spec.kind == "tfds":
        return read_tfds(spec, tfds_split, tfds_dir)
    return read_local(spec.path, encoding)


def split_text(text: str, val_fraction: float) -> Splits:
    """The standard language-model split: the first part trains, the last `val_fraction` validates."""
    cut = len(text) - int(round(len(text) * val_fraction))
    return Splits(text[:cut], text[cut:])


def load_splits(config) -> Splits:
    splits = split_text(read_data(config.data, config.encoding, config.demo_chars, config.tfds_dir), config.val_fraction)
    needed = config.sequence_length + 1
    if len(splits.train) < needed:
        raise UserError(
            f"{config.data}: only {len(splits.train)} training characters; a window needs {needed} "
            "(give more text or a smaller --sequence-length)"
        )
    return splits


def windows(text: str, length: int, full_only: bool) -> list[str]:
    """Strings of `length` + 1 characters starting every `length` characters: the inputs and
    targets of one window (see model.py); `full_only` drops a shorter last piece."""
    pieces = [text[start : start + length + 1] for start in range(0, max(len(text) - 1, 0), length)]
    return [p for p in pieces if len(p) == length + 1] if full_only else [p for p in pieces if len(p) > 1]
