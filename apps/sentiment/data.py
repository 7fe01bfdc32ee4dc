"""Sentiment data: the generated demo, local files (CSV/TSV, folder per class, file per class) and
tensorflow-datasets text sets, all returned as plain lists of strings and label names."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlapps.shared import data as data_lib
from dlapps.shared.errors import UserError


@dataclass
class TextDataset:
    texts: list[str]
    labels: list[str]  # label names, one per text

    def __len__(self):
        return len(self.texts)


@dataclass
class Splits:
    train: TextDataset
    val: TextDataset
    label_names: list[str]
    notes: dict = field(default_factory=dict)  # how the split was made, for metrics.json


# --- demo: a small grammar of reviews ------------------------------------------------------------
# Negation flips a clause, intensifiers do not, and after "but"/"although" the second clause decides:
# every sentiment word occurs in both classes, so no single word separates them.

ASPECTS = [
    "the acting", "the plot", "the soundtrack", "the dialogue", "the pacing", "the ending", "the cast",
    "the script", "the camera work", "the story", "the characters", "this film", "the movie", "the humour",
]
POSITIVE = [
    "good", "great", "wonderful", "brilliant", "moving", "clever", "charming", "gripping", "superb",
    "delightful", "touching", "funny", "fresh", "beautiful", "smart", "memorable",
]
NEGATIVE = [
    "bad", "dull", "boring", "awful", "clumsy", "tedious", "predictable", "bland", "weak", "messy",
    "forgettable", "lifeless", "shallow", "tiresome", "silly", "flat",
]
INTENSIFIERS = ["", "", "very", "truly", "really", "incredibly", "remarkably", "quite", "rather", "so"]
NEGATIONS = ["was not", "was never", "was hardly", "was far from", "wasn't", "was not at all"]
OPENERS = ["", "", "", "honestly,", "overall,", "to be fair,", "in the end,", "i think"]


def _clause(rng: np.random.Generator, polarity: int) -> str:
    """A clause whose meaning is `polarity` (+1/-1), negated half of the time."""
    negated = rng.random() < 0.4
    word_polarity = -polarity if negated else polarity
    adjective = rng.choice(POSITIVE if word_polarity > 0 else NEGATIVE)
    verb = rng.choice(NEGATIONS) if negated else rng.choice(["was", "is", "felt", "seemed"])
    intensifier = rng.choice(INTENSIFIERS)
    return " ".join(w for w in (rng.choice(ASPECTS), verb, intensifier, adjective) if w)


def demo_review(rng: np.random.Generator, polarity: int) -> str:
    shape = rng.random()
    if shape < 0.45:
        body = _clause(rng, polarity)
    elif shape < 0.75:
        body = f"{_clause(rng, -polarity)}, but {_clause(rng, polarity)}"
    elif shape < 0.9:
        body = f"although {_clause(rng, -polarity)}, {_clause(rng, polarity)}"
    else:
        body = f"{_clause(rng, polarity)} and {_clause(rng, polarity)}"
    opener = rng.choice(OPENERS)
    return (f"{opener} {body}" if opener else body).strip() + rng.choice([".", ".", "!", ""])


def demo(size: int = 4000, seed: int = 0) -> TextDataset:
    rng = np.random.default_rng(seed)
    labels = ["positive", "negative"] * (size // 2) + ["positive"] * (size % 2)
    texts = [demo_review(rng, +1 if label == "positive" else -1) for label in labels]
    order = rng.permutation(len(texts))
    return TextDataset([texts[i] for i in order], [labels[i] for i in order])


# --- local files ---------------------------------------------------------------------------------

TEXT_NAMES = ("text", "sentence", "review", "content", "document", "body", "comment", "tweet")
LABEL_NAMES = ("label", "labels", "sentiment", "polarity", "class", "category", "target", "y")
PER_CLASS_SUFFIXES = (".pos", ".neg", ".neu")


def read_table(path: Path, encoding: str, text_column: str = "", label_column: str = "") -> TextDataset:
    """CSV or TSV with a text and a label column, header optional; columns detected or named."""
    content = data_lib.read_text(path, encoding).replace("\r\n", "\n")
    if not content.strip():
        raise UserError(f"{path}: empty file")
    delimiter = "\t" if path.suffix.lower() == ".tsv" or "\t" in content.split("\n", 1)[0] else ","
    rows = [row for row in csv.reader(io.StringIO(content), delimiter=delimiter) if any(c.strip() for c in row)]
    width = len(rows[0])
    if width < 2:
        raise UserError(f"{path}: expected at least two columns (text and label), found one; is it a {delimiter!r}-separated table?")
    lowered = [c.strip().lower() for c in rows[0]]
    has_header = any(c in TEXT_NAMES + LABEL_NAMES for c in lowered) or bool(
        (text_column and not text_column.isdigit()) or (label_column and not label_column.isdigit())
    )
    if not has_header and not (text_column or label_column) and _looks_like_header(rows):
        raise UserError(
            f"{path}: the first line looks like a header ({', '.join(rows[0])}) but names no known text or label "
            "column; name them with --text-column and --label-column"
        )
    header = lowered if has_header else [str(i) for i in range(width)]
    body = rows[1:] if has_header else rows
    if not body:
        raise UserError(f"{path}: has a header but no rows")
    for number, row in enumerate(body, start=2 if has_header else 1):
        if len(row) != width:
            raise UserError(f"{path}: line {number}: expected {width} columns, found {len(row)}")

    def column(wanted: str, names: tuple, role: str) -> int:
        if wanted:
            if wanted.isdigit() and int(wanted) < width:
                return int(wanted)
            if wanted.lower() in header:
                return header.index(wanted.lower())
            raise UserError(f"{path}: no {role} column {wanted!r} (columns: {', '.join(header)})")
        for name in names:
            if name in header:
                return header.index(name)
        return -1

    text_index = column(text_column, TEXT_NAMES, "text")
    label_index = column(label_column, LABEL_NAMES, "label")
    if text_index < 0:  # no name to go by: the text is the column with the longest entries
        lengths = [np.mean([len(r[i]) for r in body]) if i != label_index else -1 for i in range(width)]
        text_index = int(np.argmax(lengths))
    if label_index < 0:  # ... and the label the column with the fewest distinct values
        distinct = [len({r[i] for r in body}) if i != text_index else 10**9 for i in range(width)]
        label_index = int(np.argmin(distinct))
    if has_header and header[label_index] not in LABEL_NAMES and not label_column:
        raise UserError(f"{path}: no label column found (columns: {', '.join(header)}); name it with --label-column")
    texts = [r[text_index].strip() for r in body]
    labels = [r[label_index].strip() for r in body]
    return TextDataset(texts, labels)


def _looks_like_header(rows: list[list[str]]) -> bool:
    """A first row whose value in a label-like column (few distinct values below it) is none of
    those values: "stars" above 1..5, "polarity" above pos/neg. Training on it would make a
    class of one example named after the column."""
    body = rows[1:]
    if len(body) < 4:
        return False
    for i in range(len(rows[0])):
        values = {r[i].strip() for r in body}
        if len(values) <= max(2, len(body) // 20) and rows[0][i].strip() not in values:
            return True
    return False


def read_folder_per_class(path: Path, encoding: str) -> TextDataset:
    """aclImdb layout: one subfolder per class, one text per file ('unsup' is unlabelled, skipped)."""
    texts, labels = [], []
    for class_dir in sorted(p for p in path.iterdir() if p.is_dir() and p.name != "unsup" and not p.name.startswith(".")):
        for file in sorted(f for f in class_dir.iterdir() if f.is_file() and not f.name.startswith(".")):
            texts.append(data_lib.read_text(file, encoding).replace("<br />", " ").strip())
            labels.append(class_dir.name)
    return TextDataset(texts, labels)


def read_file_per_class(files: list[Path], encoding: str) -> TextDataset:
    """rt-polarity layout: one file per class, one text per line; the class is the file's suffix
    (x.pos, x.neg) or, for .txt files, its name (pos.txt, neg.txt)."""
    texts, labels = [], []
    for file in files:
        label = file.suffix[1:] if file.suffix.lower() in PER_CLASS_SUFFIXES else file.stem
        lines = data_lib.read_lines(file, encoding)
        if not lines:
            raise UserError(f"{file}: empty file")
        texts += [line.strip() for line in lines]
        labels += [label] * len(lines)
    return TextDataset(texts, labels)


def read_local(path: Path, config) -> tuple[TextDataset, TextDataset | None]:
    """The training data at `path` and, when the folder has one, its validation file."""
    if path.is_file():
        if path.suffix.lower() in PER_CLASS_SUFFIXES:
            siblings = sorted(p for p in path.parent.iterdir() if p.suffix.lower() in PER_CLASS_SUFFIXES)
            return read_file_per_class(siblings, config.encoding), None
        return read_table(path, config.encoding, config.text_column, config.label_column), None
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    tables = {p.stem.lower(): p for p in files if p.suffix.lower() in (".csv", ".tsv")}
    if "train" in tables:
        train = read_table(tables["train"], config.encoding, config.text_column, config.label_column)
        for name in ("dev", "valid", "validation", "val"):
            if name in tables:
                return train, read_table(tables[name], config.encoding, config.text_column, config.label_column)
        return train, None
    if (path / "train").is_dir():  # aclImdb root: its train/ folder
        return read_local(path / "train", config)
    per_class = [p for p in files if p.suffix.lower() in PER_CLASS_SUFFIXES]
    if len(per_class) >= 2:
        return read_file_per_class(per_class, config.encoding), None
    if any(p.is_dir() for p in path.iterdir()):
        return read_folder_per_class(path, config.encoding), None
    text_files = [p for p in files if p.suffix.lower() == ".txt"]
    if len(text_files) >= 2:
        return read_file_per_class(text_files, config.encoding), None
    if len(tables) == 1:
        return read_table(next(iter(tables.values())), config.encoding, config.text_column, config.label_column), None
    raise UserError(
        f"{path}: no sentiment data found: expected a CSV/TSV file, train.csv/train.tsv, "
        "a folder per class, or one file per class (*.pos/*.neg, pos.txt/neg.txt)"
    )


def read_path(path: str | Path, config) -> TextDataset:
    """All examples of a local file or folder (its validation file included): for evaluate."""
    train, val = read_local(Path(path), config)
    if val is not None:
        train = TextDataset(train.texts + val.texts, train.labels + val.labels)
    return check(train, Path(path))


def check(dataset: TextDataset, source) -> TextDataset:
    keep = [i for i, t in enumerate(dataset.texts) if t.strip()]
    dataset = TextDataset([dataset.texts[i] for i in keep], [dataset.labels[i] for i in keep])
    if not dataset.texts:
        raise UserError(f"{source}: no texts found")
    return dataset


# --- tensorflow-datasets -------------------------------------------------------------------------


def read_tfds(spec: data_lib.DataSpec, split: str, config) -> TextDataset:
    dataset, info = data_lib.load_tfds(spec, split, config.tfds_dir, as_supervised=False)
    features = info.features
    text_key = next((k for k in TEXT_NAMES if k in features), None)
    label_key = next((k for k in LABEL_NAMES if k in features), None)
    if text_key is None or label_key is None:
        raise UserError(f"{spec}: no text and label features (has: {', '.join(features.keys())})")
    names = features[label_key].names
    texts, labels = [], []
    for example in dataset.as_numpy_iterator():
        label = int(example[label_key])
        if label < 0:  # unlabelled test rows (GLUE)
            continue
        texts.append(example[text_key].decode("utf-8", errors="replace"))
        labels.append(names[label])
    return TextDataset(texts, labels)


def tfds_validation_split(spec: data_lib.DataSpec, config) -> str | None:
    import tensorflow_datasets as tfds

    builder = tfds.builder(spec.tfds_name, data_dir=config.tfds_dir or None)
    return next((s for s in ("validation", "dev") if s in builder.info.splits), None)


# --- phrase-level data (SST-2's train.tsv) -------------------------------------------------------
# SST-2's train.tsv holds ~67k phrases that are sub-spans (parse-tree constituents) of ~6.9k
# sentences. A random validation split puts parts of one sentence on both sides, so validation
# accuracy measures memory (93%) and picks checkpoints by it. Such data is split by sentence.

PHRASE_LEVEL_SHARE = 0.5  # SST-2 train: 82% of distinct texts start or end a longer one; rt-polarity 0.1%, demo 1%


def _key(text: str) -> str:
    """A text as lower-cased words joined by single spaces: containment is checked word by word."""
    return " ".join(text.lower().split())


def contained_share(texts: list[str]) -> float:
    """Share of distinct texts that begin or end a longer text at a word boundary. O(n log n): in
    sorted order, every text that begins others sorts right before them, so comparing neighbours
    finds them all (and, on reversed strings, the texts that end others). Phrases in the middle of
    a sentence are not counted: the share is a cheap detector, not the grouping."""
    keys = sorted({_key(t) for t in texts} - {""})
    if len(keys) < 2:
        return 0.0
    contained = set()
    for reverse in (False, True):
        # a space on the joining side makes "good" not begin "goodness"
        marked = sorted(((" " + k)[::-1] if reverse else k + " ", k) for k in keys)
        for (shorter, key), (longer, _) in zip(marked, marked[1:]):
            if longer.startswith(shorter):
                contained.add(key)
    return len(contained) / len(keys)


def phrase_groups(texts: list[str]) -> list[int]:
    """For each text, the index of the longest text that contains it word-aligned (the first
    occurrence of that text), or of itself when no longer text contains it: a sentence.

    Texts are visited longest first; a text not yet claimed is a sentence and claims every text
    that is one of its word spans. Each sentence of L words costs about L*L/2 hash look-ups (SST-2:
    1.6M for 6.9k sentences, about a second), never a search of one text against all others."""
    keys = [_key(t) for t in texts]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    lengths = {k: len(k.split()) for k in first}
    present = set(lengths.values())  # span lengths that can match a text at all
    owner: dict[str, int] = {}
    for k in sorted(first, key=lambda k: -lengths[k]):
        if k in owner:
            continue
        owner[k] = first[k]
        words = k.split()
        for n in range(1, len(words)):
            if n not in present:
                continue
            for start in range(len(words) - n + 1):
                span = " ".join(words[start : start + n])
                if span in first and span not in owner:
                    owner[span] = first[k]
    return [owner[k] for k in keys]


def spans_of(texts: list[str]) -> set[str]:
    """Every word span of every text (keys as `_key` makes them)."""
    spans = set()
    for text in texts:
        words = _key(text).split()
        for n in range(1, len(words) + 1):
            spans.update(" ".join(words[s : s + n]) for s in range(len(words) - n + 1))
    return spans


def split_by_sentence(data: TextDataset, val_fraction: float, seed: int) -> tuple[TextDataset, TextDataset, dict]:
    """Validation = a seeded stratified `val_fraction` of the sentences (texts no longer text
    contains); training = every text that is not a word span of a validation sentence (a phrase of
    a training sentence that also occurs in a validation one is left out too)."""
    groups = phrase_groups(data.texts)
    sentences = sorted(set(groups))
    _, val_pick = data_lib.split_indices(len(sentences), val_fraction, seed, stratify=[data.labels[i] for i in sentences])
    val_keys = {_key(data.texts[sentences[j]]) for j in val_pick}
    held = spans_of(list(val_keys))
    val_index = [i for i, t in enumerate(data.texts) if _key(t) in val_keys]
    train_index = [i for i, t in enumerate(data.texts) if _key(t) not in held]
    notes = {
        "phrase_level": True,
        "sentences": len(sentences),
        "validation_sentences": len(val_keys),
        "phrases_left_out": len(data) - len(train_index) - len(val_index),
    }
    pick = lambda index: TextDataset([data.texts[i] for i in index], [data.labels[i] for i in index])  # noqa: E731
    return pick(train_index), pick(val_index), notes


# --- the splits train uses -----------------------------------------------------------------------


def load_splits(config) -> Splits:
    """Training and validation texts for `config.data`, with a seeded stratified split when the
    source has no validation part of its own."""
    spec = data_lib.parse_data_spec(config.data)
    val = None
    if spec.kind == "demo":
        train = demo(config.demo_size, config.seed)
    elif spec.kind == "tfds":
        train = read_tfds(spec, "train", config)
        val_split = None if spec.tfds_split else tfds_validation_split(spec, config)
        val = read_tfds(spec, val_split, config) if val_split else None
    else:
        train, val = read_local(spec.path, config)
    train = check(train, spec)
    label_names = sorted(set(train.labels))
    if len(label_names) < 2:
        raise UserError(f"{spec}: needs at least two classes, found {label_names}")
    notes = {}
    if val is None:
        phrase_level = config.val_fraction > 0 and (
            config.phrases == "yes" or (config.phrases == "auto" and contained_share(train.texts) >= PHRASE_LEVEL_SHARE)
        )
        if phrase_level:
            train, val, notes = split_by_sentence(train, config.val_fraction, config.seed)
            if not train.texts:
                raise UserError(f"{spec}: no training texts left after holding out whole sentences; lower --val-fraction")
        else:
            train_index, val_index = data_lib.split_indices(len(train), config.val_fraction, config.seed, stratify=train.labels)
            val = TextDataset([train.texts[i] for i in val_index], [train.labels[i] for i in val_index])
            train = TextDataset([train.texts[i] for i in train_index], [train.labels[i] for i in train_index])
    unknown = sorted(set(val.labels) - set(label_names))
    if unknown:
        raise UserError(f"{spec}: validation labels {unknown} do not occur in the training data")
    return Splits(train, val, label_names, notes)
