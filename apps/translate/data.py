"""Translation data: the generated demo, line-aligned file pairs (the Multi30k layout), TSV pairs
(Tatoeba/Anki) and tensorflow-datasets translation sets, all as plain lists of sentence pairs.

Pairs with an empty side are skipped and counted; files of a pair with different line counts are
an error naming both counts.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlapps.shared import data as data_lib
from dlapps.shared.errors import UserError

VALIDATION_NAMES = ("val", "valid", "validation", "dev")
TEST_NAMES = ("test2016", "test", "test2017", "test2018")
TSV_SUFFIXES = (".tsv", ".txt", ".tab")


@dataclass
class Pairs:
    sources: list[str]
    targets: list[str]
    origin: str = ""
    skipped: int = 0  # pairs dropped on reading because one side was empty

    def __len__(self):
        return len(self.sources)

    def subset(self, index) -> "Pairs":
        return Pairs([self.sources[i] for i in index], [self.targets[i] for i in index], self.origin)


# --- demo: numbers in English sentences -> German ------------------------------------------------
# A small real grammar: the verb agrees with the subject, a fronted adverb moves the German verb
# before its subject (verb-second), and German numbers are one word with the units before the
# tens (forty-two -> zweiundvierzig), which the subword vocabulary must cut into pieces.

EN_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
           "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
EN_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
DE_ONES = ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn", "elf",
           "zwölf", "dreizehn", "vierzehn", "fünfzehn", "sechzehn", "siebzehn", "achtzehn", "neunzehn"]
DE_TENS = ["", "", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig", "neunzig"]
# (English, German, person: 0 I, 1 you, 2 he/she, 3 we, 4 they)
SUBJECTS = [("I", "ich", 0), ("you", "du", 1), ("he", "er", 2), ("she", "sie", 2), ("we", "wir", 3), ("they", "sie", 4)]
VERBS = [  # English base form, German forms by person
    ("have", ["habe", "hast", "hat", "haben", "haben"]),
    ("see", ["sehe", "siehst", "sieht", "sehen", "sehen"]),
    ("buy", ["kaufe", "kaufst", "kauft", "kaufen", "kaufen"]),
    ("want", ["will", "willst", "will", "wollen", "wollen"]),
    ("need", ["brauche", "brauchst", "braucht", "brauchen", "brauchen"]),
    ("find", ["finde", "findest", "findet", "finden", "finden"]),
]
NOUNS = [("apples", "Äpfel"), ("books", "Bücher"), ("cats", "Katzen"), ("dogs", "Hunde"), ("houses", "Häuser"),
         ("cars", "Autos"), ("flowers", "Blumen"), ("chairs", "Stühle"), ("birds", "Vögel"), ("trees", "Bäume")]
ADVERBS = [("today", "heute"), ("tomorrow", "morgen"), ("now", "jetzt")]


def english_number(n: int) -> str:
    if n < 20:
        return EN_ONES[n]
    if n < 100:
        return EN_TENS[n // 10] + (f"-{EN_ONES[n % 10]}" if n % 10 else "")
    return f"{EN_ONES[n // 100]} hundred" + (f" and {english_number(n % 100)}" if n % 100 else "")


def german_number(n: int) -> str:
    if n < 20:
        return DE_ONES[n]
    if n < 100:
        units = n % 10
        return (("ein" if units == 1 else DE_ONES[units]) + "und" if units else "") + DE_TENS[n // 10]
    hundreds = "ein" if n // 100 == 1 else DE_ONES[n // 100]
    return f"{hundreds}hundert" + (german_number(n % 100) if n % 100 else "")


def demo_pair(rng: np.random.Generator) -> tuple[str, str]:
    en_subject, de_subject, person = SUBJECTS[rng.integers(len(SUBJECTS))]
    en_verb, de_forms = VERBS[rng.integers(len(VERBS))]
    en_noun, de_noun = NOUNS[rng.integers(len(NOUNS))]
    number = int(rng.integers(2, 1000))
    en_verb = en_verb if person != 2 else ("has" if en_verb == "have" else en_verb + "s")
    en_object, de_object = f"{english_number(number)} {en_noun}", f"{german_number(number)} {de_noun}"
    if rng.random() < 0.3:
        en_adverb, de_adverb = ADVERBS[rng.integers(len(ADVERBS))]
        english = f"{en_adverb} {en_subject} {en_verb} {en_object}."
        german = f"{de_adverb} {de_forms[person]} {de_subject} {de_object}."  # verb second
    else:
        english = f"{en_subject} {en_verb} {en_object}."
        german = f"{de_subject} {de_forms[person]} {de_object}."
    return english[0].upper() + english[1:], german[0].upper() + german[1:]


def demo(size: int = 4000, seed: int = 0) -> Pairs:
    rng = np.random.default_rng(seed)
    pairs = [demo_pair(rng) for _ in range(size)]
    return Pairs([p[0] for p in pairs], [p[1] for p in pairs], "demo")


# --- local files ---------------------------------------------------------------------------------


def read_parallel(source_path: Path, target_path: Path, encoding: str = "utf-8") -> Pairs:
    """Line i of one file translates line i of the other. Lines are split on \\n only."""
    sources = data_lib.read_lines(source_path, encoding, skip_blank=False)
    targets = data_lib.read_lines(target_path, encoding, skip_blank=False)
    # A final newline leaves one empty string at the end of each file: not a pair.
    for lines in (sources, targets):
        if lines and not lines[-1].strip():
            lines.pop()
    if len(sources) != len(targets):
        raise UserError(
            f"{source_path} has {len(sources)} lines but {target_path} has {len(targets)}: "
            "the files of a pair must be line-aligned"
        )
    pairs = Pairs([], [], f"{source_path} + {target_path.name}")
    for source, target in zip(sources, targets):
        if source.strip() and target.strip():
            pairs.sources.append(source.strip())
            pairs.targets.append(target.strip())
        else:
            pairs.skipped += 1
    if not pairs.sources:
        raise UserError(f"{source_path}: no sentence pairs (every line of the pair is empty on one side)")
    return pairs


def read_tsv(path: Path, encoding: str = "utf-8", reverse: bool = False) -> Pairs:
    """``source<TAB>target[<TAB>more columns]`` per line (Tatoeba/Anki exports carry an
    attribution third); `reverse` reads the second column as the source."""
    pairs = Pairs([], [], str(path))
    for number, line in enumerate(data_lib.read_lines(path, encoding, skip_blank=False), start=1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) < 2:
            raise UserError(f"{path}: line {number}: expected source<TAB>target, found no tab")
        source, target = columns[0].strip(), columns[1].strip()
        if reverse:
            source, target = target, source
        if source and target:
            pairs.sources.append(source)
            pairs.targets.append(target)
        else:
            pairs.skipped += 1
    if not pairs.sources:
        raise UserError(f"{path}: no sentence pairs found (expected source<TAB>target lines)")
    return pairs


def _languages(config, path: Path, found: list[str]) -> tuple[str, str]:
    if not config.src or not config.tgt:
        listed = ", ".join(found) if found else "none"
        raise UserError(f"{path}: line-aligned files need --src and --tgt (the file suffixes, e.g. --src de --tgt en); found: {listed}")
    return config.src, config.tgt


def read_prefix(prefix: Path, config) -> Pairs:
    """``PREFIX.SRC`` and ``PREFIX.TGT``."""
    found = sorted(p.name for p in prefix.parent.glob(prefix.name + ".*")) if prefix.parent.is_dir() else []
    src, tgt = _languages(config, prefix, found)
    source_path, target_path = Path(f"{prefix}.{src}"), Path(f"{prefix}.{tgt}")
    for path in (source_path, target_path):
        if not path.is_file():
            raise UserError(f"{path}: no such file" + (f" (found: {', '.join(found)})" if found else ""))
    return read_parallel(source_path, target_path, config.encoding)


def _folder_part(folder: Path, names, config) -> Pairs | None:
    """The first of `names` present in `folder` as a pair of files or a TSV file."""
    for name in names:
        if config.src and config.tgt and (folder / f"{name}.{config.src}").is_file():
            return read_prefix(folder / name, config)
        for suffix in TSV_SUFFIXES:
            if (folder / f"{name}{suffix}").is_file():
                return read_tsv(folder / f"{name}{suffix}", config.encoding, config.reverse)
    return None


def read_folder(folder: Path, config) -> tuple[Pairs, Pairs | None]:
    """A folder with ``train.SRC``/``train.TGT`` (or train.tsv) and optionally val/valid/dev."""
    train = _folder_part(folder, ("train",), config)
    if train is None:
        found = sorted(p.name for p in folder.glob("train.*"))
        if found and not (config.src and config.tgt):
            _languages(config, folder, found)
        raise UserError(f"{folder}: no training pairs: expected train.SRC + train.TGT or train.tsv")
    return train, _folder_part(folder, VALIDATION_NAMES, config)


def read_path(value: str, config) -> tuple[Pairs, Pairs | None]:
    """--data as a TSV file, a folder, or a prefix of line-aligned files (``multi30k/val``)."""
    path = Path(value).expanduser()
    if path.is_dir():
        return read_folder(path, config)
    if path.is_file():
        return read_tsv(path, config.encoding, config.reverse), None
    if path.parent.is_dir() and any(path.parent.glob(path.name + ".*")):
        return read_prefix(path, config), None
    raise UserError(f"{path}: no such file or folder (nor a {path.name}.{config.src or 'SRC'} + .{config.tgt or 'TGT'} file pair)")


# --- tensorflow-datasets -------------------------------------------------------------------------


def read_tfds(spec: data_lib.DataSpec, split: str, config) -> Pairs:
    """A tfds translation set (wmt*, ted_hrlr_translate, ...): features named by language code."""
    dataset, info = data_lib.load_tfds(spec, split, config.tfds_dir, as_supervised=False)
    names = list(info.features.keys())
    default_src, default_tgt = info.supervised_keys if info.supervised_keys else (names + ["", ""])[:2]
    src, tgt = config.src or default_src, config.tgt or default_tgt
    if config.reverse:
        src, tgt = tgt, src
    for language in (src, tgt):
        if language not in names:
            raise UserError(f"{spec}: no language {language!r} (has: {', '.join(names)})")
    pairs = Pairs([], [], str(spec))
    for example in dataset.as_numpy_iterator():
        source, target = (example[k].decode("utf-8", errors="replace").strip() for k in (src, tgt))
        if source and target:
            pairs.sources.append(source)
            pairs.targets.append(target)
        else:
            pairs.skipped += 1
    return pairs


# --- what train and evaluate read ----------------------------------------------------------------


def report_skipped(*parts: Pairs | None) -> int:
    skipped = sum(p.skipped for p in parts if p is not None)
    for part in parts:
        if part is not None and part.skipped:
            print(f"Skipped {part.skipped} pairs with an empty side in {part.origin}", file=sys.stderr)
    return skipped


def load_splits(config) -> tuple[Pairs, Pairs, int]:
    """(training pairs, validation pairs, pairs skipped on reading); a seeded split of the
    training pairs when the data has no validation part."""
    value = (config.data or "").strip()
    val = None
    if value in ("", "demo"):
        train = demo(config.demo_size, config.seed)
    elif value.startswith("tfds:"):
        spec = data_lib.parse_data_spec(value)
        train = read_tfds(spec, spec.tfds_split or "train", config)
        val = None if spec.tfds_split else read_tfds(spec, "validation", config)
    else:
        train, val = read_path(value, config)
    skipped = report_skipped(train, val)
    if val is None:
        train_index, val_index = data_lib.split_indices(len(train), config.val_fraction, config.seed)
        train, val = train.subset(train_index), train.subset(val_index)
    return train, val, skipped


def evaluation_pairs(value: str, config) -> Pairs:
    """All pairs of `value` for evaluate: a folder's test split (else its validation split),
    a prefix, a TSV file, a tfds split (default test) or fresh demo pairs."""
    value = (value or "").strip()
    if value in ("", "demo"):
        return demo(max(config.demo_size // 5, 200), config.seed + 1)  # a seed training never used
    if value.startswith("tfds:"):
        spec = data_lib.parse_data_spec(value)
        pairs = read_tfds(spec, spec.tfds_split or "test", config)
    elif Path(value).expanduser().is_dir():
        folder = Path(value).expanduser()
        pairs = _folder_part(folder, TEST_NAMES, config) or _folder_part(folder, VALIDATION_NAMES, config)
        if pairs is None:
            raise UserError(f"{folder}: no test or validation pairs (test2016.SRC, test.SRC, val.SRC, dev.tsv, ...)")
    else:
        pairs, _ = read_path(value, config)
    report_skipped(pairs)
    return pairs
