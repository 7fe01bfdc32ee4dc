"""NER data: the generated demo, CoNLL files (IOB1, IOB2 or BIOES, normalised on reading) and the
tensorflow-datasets ``conll2003`` set, all as plain lists of tokens and tags.

Tags are held in IOB2 between reading and training; the model learns ``--tag-scheme`` (BIOES by
default) and every score is computed on IOB2 by seqeval, like conlleval.
"""

from __future__ import annotations

import codecs
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlapps.shared import data as data_lib
from dlapps.shared.errors import UserError

DOCSTART = "-DOCSTART-"
TAG_PATTERN = re.compile(r"^(O|[BIES]-\S+)$")


@dataclass
class Sentences:
    tokens: list[list[str]]
    tags: list[list[str]]  # IOB2
    lines: list[int] = field(default_factory=list)  # first line of each sentence in its file (0: generated)
    source: str = ""

    def __len__(self):
        return len(self.tokens)

    def subset(self, index) -> "Sentences":
        lines = [self.lines[i] for i in index] if self.lines else []
        return Sentences([self.tokens[i] for i in index], [self.tags[i] for i in index], lines, self.source)

    def entity_types(self) -> list[str]:
        return sorted({tag[2:] for sentence in self.tags for tag in sentence if tag != "O"})


# --- tag schemes ---------------------------------------------------------------------------------


def detect_scheme(tag_sequences) -> str:
    """bioes if any E-/S- tag occurs; iob1 if an entity ever starts with I- (as IOB1 does whenever
    the previous token is not of the same type); iob2 otherwise."""
    iob1 = False
    for tags in tag_sequences:
        previous = "O"
        for tag in tags:
            if tag[0] in "ES":
                return "bioes"
            if tag[0] == "I" and previous[2:] != tag[2:]:
                iob1 = True
            previous = tag
    return "iob1" if iob1 else "iob2"


def to_iob2(tags: list[str], scheme: str) -> list[str]:
    """IOB1, IOB2 or BIOES tags of one sentence as IOB2. An I-X that starts an entity becomes B-X
    (the IOB1 rule, and conlleval's reading of a stray I- in IOB2)."""
    if scheme == "bioes":
        tags = ["B-" + t[2:] if t[0] == "S" else "I-" + t[2:] if t[0] == "E" else t for t in tags]
    out, previous = [], "O"
    for tag in tags:
        if tag[0] == "I" and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def from_iob2(tags: list[str], scheme: str) -> list[str]:
    """IOB2 tags of one sentence in `scheme` (iob2 or bioes)."""
    if scheme == "iob2":
        return list(tags)
    out = []
    for i, tag in enumerate(tags):
        following = tags[i + 1] if i + 1 < len(tags) else "O"
        continues = following == "I-" + tag[2:]
        if tag[0] == "B":
            out.append(tag if continues else "S-" + tag[2:])
        elif tag[0] == "I":
            out.append(tag if continues else "E-" + tag[2:])
        else:
            out.append(tag)
    return out


def spans(tags: list[str], scheme: str = "iob2") -> list[tuple[str, int, int]]:
    """Entities as (type, first token, last token + 1), read the way conlleval reads them."""
    tags = to_iob2(tags, scheme) if scheme != "iob2" else tags
    found, start, kind = [], None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        if start is not None and (tag[0] != "I" or tag[2:] != kind):
            found.append((kind, start, i))
            start = None
        if tag[0] == "B" or (tag[0] == "I" and start is None):
            start, kind = i, tag[2:]
    return found


# --- CoNLL files ---------------------------------------------------------------------------------


def read_text(path: Path, encoding: str) -> str:
    """shared.data.read_text, except that UTF-16 and UTF-32 files are decoded before its check for
    binary files, which takes their NUL bytes for binary data."""
    try:
        wide = codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
    except LookupError:
        wide = False  # read_text reports the unknown encoding
    if not wide or not path.is_file():
        return data_lib.read_text(path, encoding)
    raw = path.read_bytes()
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: byte {error.start} is not valid {encoding}")



def read_conll(path: str | Path, encoding: str = "utf-8", scheme: str = "auto") -> Sentences:
    """One token per line with its tag in the last column, a blank line between sentences,
    ``-DOCSTART-`` lines skipped. Every token line must have as many columns as the first."""
    path = Path(path)
    text = read_text(path, encoding)
    if not text.strip():
        raise UserError(f"{path}: empty file")
    sentences = Sentences([], [], [], str(path))
    tokens, tags, first, width = [], [], 0, None

    def close():
        if tokens:
            sentences.tokens.append(list(tokens))
            sentences.tags.append(list(tags))
            sentences.lines.append(first)
        tokens.clear()
        tags.clear()

    for number, line in enumerate(text.split("\n"), start=1):
        columns = line.split()
        if not columns:
            close()
            continue
        if columns[0] == DOCSTART:
            close()
            continue
        if width is None:
            width = len(columns)
            if width < 2:
                raise UserError(f"{path}: line {number}: expected a token and a tag separated by whitespace, found 1 column")
        if len(columns) != width:
            raise UserError(f"{path}: line {number}: expected {width} columns like the first token line, found {len(columns)}")
        tag = columns[-1]
        if not TAG_PATTERN.match(tag):
            raise UserError(f"{path}: line {number}: unknown tag {tag!r} (expected O or B-/I-/E-/S- and a type)")
        if not tokens:
            first = number
        tokens.append(columns[0])
        tags.append(tag)
    close()
    if not sentences.tokens:
        raise UserError(f"{path}: no sentences found (only blank or {DOCSTART} lines)")
    scheme = detect_scheme(sentences.tags) if scheme == "auto" else scheme
    if scheme != "bioes":
        for sentence, line in zip(sentences.tags, sentences.lines):
            for offset, tag in enumerate(sentence):
                if tag[0] in "ES":
                    raise UserError(f"{path}: line {line + offset}: tag {tag!r} is not valid {scheme.upper()} (E-/S- are BIOES)")
    sentences.tags = [to_iob2(t, scheme) for t in sentences.tags]
    return sentences


CONLL_SUFFIXES = (".txt", ".conll", ".iob", ".bio", ".tsv", ".conllu")


def read_local(path: Path, config) -> tuple[Sentences, Sentences | None]:
    """A CoNLL file, or a folder with train.* and optionally valid.*/dev.*/validation.*."""
    if path.is_file():
        return read_conll(path, config.encoding, config.input_scheme), None
    files = {p.stem.lower(): p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in CONLL_SUFFIXES}
    if "train" not in files:
        raise UserError(f"{path}: no CoNLL training file found: expected train.txt (and optionally valid.txt) or a file path")
    train = read_conll(files["train"], config.encoding, config.input_scheme)
    for name in ("valid", "dev", "validation", "val", "testa"):
        if name in files:
            return train, read_conll(files[name], config.encoding, config.input_scheme)
    return train, None


# --- tensorflow-datasets -------------------------------------------------------------------------


def read_tfds(spec: data_lib.DataSpec, split: str, config) -> Sentences:
    """tfds ``conll2003`` (or any set with ``tokens`` and an ``ner`` ClassLabel sequence)."""
    dataset, info = data_lib.load_tfds(spec, split, config.tfds_dir, as_supervised=False)
    features = info.features
    if "tokens" not in features or "ner" not in features:
        raise UserError(f"{spec}: no 'tokens' and 'ner' features (has: {', '.join(features.keys())})")
    names = features["ner"].feature.names
    where = str(spec) if spec.tfds_split else f"{spec}:{split}"
    tokens, tags, uneven = [], [], 0
    for example in dataset.as_numpy_iterator():
        # A token never holds a space (the tokeniser splits there, and training joins tokens with spaces).
        words = [word.replace(" ", "_") for word in data_lib.decode_strings(example["tokens"])]
        labels = [names[int(i)] for i in example["ner"]]
        if len(words) != len(labels):
            uneven += 1
            words, labels = words[: len(labels)], labels[: len(words)]
        if words:
            tokens.append(words)
            tags.append(labels)
    if uneven:
        print(f"{where}: {uneven} examples had more tokens than tags or the reverse; cut to the shorter", file=sys.stderr)
    if not tokens:
        raise UserError(f"{where}: no sentences")
    scheme = detect_scheme(tags) if config.input_scheme == "auto" else config.input_scheme
    return Sentences(tokens, [to_iob2(t, scheme) for t in tags], [], str(spec))


# --- demo: generated sentences -------------------------------------------------------------------
# Names are built from syllables, so the tagger cannot memorise a gazetteer: it has to use the
# context words, capitalisation and the shape of the name (suffixes like -burg or Corp).

FIRST_NAMES = ["Angela", "John", "Maria", "Peter", "Aisha", "Carlos", "Yuki", "Olga", "David", "Fatima", "Lars", "Chen"]
SYLLABLES = ["ka", "lo", "ber", "man", "ti", "sen", "ra", "vo", "del", "mar", "gu", "strom", "ne", "fel", "dor", "ish"]
PLACE_SUFFIXES = ["burg", "ville", "ton", "stad", "ford", "holm", "grad", "polis", "mouth", "dale"]
PLACES = ["Paris", "Berlin", "Tokyo", "Kenya", "Brazil", "Oslo", "Lima", "Canada"]
ORG_SUFFIXES = ["Corp", "Bank", "Group", "United", "Airlines", "Motors", "Institute", "Council"]
ORG_PATTERNS = ["{name} {suffix}", "{name} {suffix}", "University of {place}", "{place} City Council", "{name} & {name2}"]
MISC = ["{nat}", "{nat}", "{nat}-born", "{name} Cup", "{place} Open", "{name} Prize"]
NATIONALITIES = ["French", "German", "Japanese", "Kenyan", "Brazilian", "Norwegian", "Canadian", "Peruvian"]

TEMPLATES = [
    "{PER} visited {LOC} on Monday .",
    "{PER} , the {MISC} chief executive of {ORG} , resigned on Friday .",
    "{ORG} said profits rose 12 percent in {LOC} last year .",
    "Shares in {ORG} fell after {PER} warned of weaker demand .",
    "{PER} won the {MISC} in {LOC} .",
    "The {MISC} striker {PER} signed for {ORG} .",
    "Police in {LOC} arrested two men on Tuesday , a spokesman said .",
    "{PER} met {PER} in {LOC} to discuss trade .",
    "{ORG} will open a new plant near {LOC} , {PER} told reporters .",
    "In {LOC} , {ORG} and {ORG} agreed to merge .",
    "{PER} said the talks in {LOC} were useful .",
    "The {MISC} team beat {ORG} 3-1 in {LOC} .",
    "Rain is expected across {LOC} and {LOC} this week .",
    "the report was published on Wednesday .",
    "{PER} , who joined {ORG} in 1996 , lives in {LOC} .",
    "Analysts at {ORG} expect the {MISC} economy to grow .",
    "Officials from {LOC} flew to {LOC} for the summit .",
    "She told {PER} that {ORG} would appeal .",
]


def _word(rng, parts=2) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def _entity(rng, kind: str) -> list[str]:
    if kind == "PER":
        first = rng.choice(FIRST_NAMES) if rng.random() < 0.5 else _word(rng)
        return [first, _word(rng, int(rng.integers(2, 4)))] if rng.random() < 0.8 else [_word(rng, 3)]
    if kind == "LOC":
        return [rng.choice(PLACES)] if rng.random() < 0.3 else [_word(rng) + rng.choice(PLACE_SUFFIXES)]
    place = rng.choice(PLACES) if rng.random() < 0.3 else _word(rng) + rng.choice(PLACE_SUFFIXES)
    values = {"name": _word(rng), "name2": _word(rng), "place": place, "nat": rng.choice(NATIONALITIES),
              "suffix": rng.choice(ORG_SUFFIXES)}
    pattern = rng.choice(ORG_PATTERNS if kind == "ORG" else MISC)
    return pattern.format(**values).split()


def demo_sentence(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    tokens, tags = [], []
    for piece in rng.choice(TEMPLATES).split():
        kind = piece[1:-1] if piece.startswith("{") else None
        if kind is None:
            tokens.append(piece)
            tags.append("O")
            continue
        words = _entity(rng, kind)
        tokens += words
        tags += ["B-" + kind] + ["I-" + kind] * (len(words) - 1)
    tokens[0] = tokens[0][0].upper() + tokens[0][1:]
    return tokens, tags


def demo(size: int = 2000, seed: int = 0) -> Sentences:
    rng = np.random.default_rng(seed)
    pairs = [demo_sentence(rng) for _ in range(size)]
    return Sentences([p[0] for p in pairs], [p[1] for p in pairs], [], "demo")


# --- the splits train uses -----------------------------------------------------------------------


def load_splits(config) -> tuple[Sentences, Sentences]:
    """Training and validation sentences for `config.data`; a seeded split when the source has no
    validation part of its own."""
    spec = data_lib.parse_data_spec(config.data)
    val = None
    if spec.kind == "demo":
        train = demo(config.demo_size, config.seed)
    elif spec.kind == "tfds":
        train = read_tfds(spec, spec.tfds_split or "train", config)
        val = None if spec.tfds_split else read_tfds(spec, "validation", config)
    else:
        train, val = read_local(spec.path, config)
    if val is None:
        train_index, val_index = data_lib.split_indices(len(train), config.val_fraction, config.seed)
        train, val = train.subset(train_index), train.subset(val_index)
    if not train.entity_types():
        raise UserError(f"{spec}: no entity tags in the training data (every tag is O)")
    return train, val


def drop_overlong(sentences: Sentences, max_length: int) -> tuple[Sentences, int]:
    """Sentences of at most `max_length` tokens, and how many were longer (skipped, reported)."""
    keep = [i for i, tokens in enumerate(sentences.tokens) if len(tokens) <= max_length]
    return sentences.subset(keep), len(sentences) - len(keep)


def evaluation_sentences(data: str, config, seed_offset: int = 1) -> Sentences:
    """All sentences of --data for evaluate (train and validation files of a folder together)."""
    spec = data_lib.parse_data_spec(data)
    if spec.kind == "demo":
        return demo(max(config.demo_size // 5, 100), seed=config.seed + seed_offset)  # fresh sentences
    if spec.kind == "tfds":
        return read_tfds(spec, spec.tfds_split or "test", config)
    if spec.path.is_file():
        return read_conll(spec.path, config.encoding, config.input_scheme)
    train, val = read_local(spec.path, config)
    return train if val is None else Sentences(train.tokens + val.tokens, train.tags + val.tags, [], str(spec.path))
