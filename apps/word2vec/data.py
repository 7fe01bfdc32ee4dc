"""word2vec data: the corpus (demo, local text files or folders, tfds text sets) as tokenised
sentences, the vocabulary, and the training batches generated on the fly with vectorised NumPy.

Tokenisation (documented in the README): the text is lower-cased (``--lowercase``), cut into
sentences at line breaks and at ``. ! ? ; :``, and each sentence into the runs of
``--token-pattern`` (default: letters of any script, so digits, punctuation and apostrophes
separate words). Raw text and one-sentence-per-line files both read correctly this way.

What gensim does per word in Python/Cython is done here per chunk of the corpus in NumPy:
subsampling (Mikolov's formula, as gensim 4), the dynamic window (each centre word draws its
window from 1..window), negatives drawn from unigram counts ** 0.75 by binary search on the
cumulative table (as gensim), and a learning rate that falls linearly with the words processed.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlapps.shared import data as data_lib
from dlapps.shared.errors import UserError

SENTENCE_BREAK = re.compile(r"[.!?;:\n]+")


# --- the corpus ----------------------------------------------------------------------------------


def tokenize(text: str, token_pattern: str, lowercase: bool = True) -> list[list[str]]:
    """Sentences of tokens: split at line breaks and . ! ? ; : then find the tokens of each."""
    if lowercase:
        text = text.lower()
    token = re.compile(token_pattern)
    sentences = (token.findall(part) for part in SENTENCE_BREAK.split(text))
    return [sentence for sentence in sentences if sentence]


def _compile_pattern(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as error:
        raise UserError(f"--token-pattern {pattern!r}: not a valid regular expression ({error})")
    return pattern


def corpus_files(path: Path) -> list[Path]:
    """A file, or every non-hidden file under a folder (sorted, so runs are repeatable)."""
    if path.is_file():
        return [path]
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    if not files:
        raise UserError(f"{path}: no text files in this folder")
    return files


def read_corpus(config) -> tuple[list[list[str]], str]:
    """The tokenised sentences of ``config.data`` and a short description of where they came from."""
    pattern = _compile_pattern(config.token_pattern)
    spec = data_lib.parse_data_spec(config.data)
    if spec.kind == "demo":
        from dlapps.shared.text import stdlib_docstrings

        texts = stdlib_docstrings(max_chars=config.demo_chars or None)
        sentences = [s for text in texts for s in tokenize(text, pattern, config.lowercase)]
        source = f"demo ({len(texts)} standard-library docstrings)"
    elif spec.kind == "tfds":
        sentences = [s for text in _tfds_texts(spec, config) for s in tokenize(text, pattern, config.lowercase)]
        source = str(spec)
    else:
        files = corpus_files(spec.path)
        sentences = []
        for file in files:
            sentences.extend(tokenize(data_lib.read_text(file, config.encoding), pattern, config.lowercase))
        source = f"{spec.path} ({len(files)} file{'s' if len(files) > 1 else ''})"
    if not sentences:
        raise UserError(f"{config.data}: empty corpus: no words matching {config.token_pattern!r}")
    return sentences, source


def _tfds_texts(spec, config):
    """The string feature of a tfds text set (``text``, or the first string feature)."""
    import tensorflow as tf

    dataset, info = data_lib.load_tfds(spec, "train", config.tfds_dir, as_supervised=False)
    features = info.features
    names = [name for name in features.keys() if getattr(features[name], "dtype", None) == tf.string]
    if not names:
        raise UserError(f"{spec}: has no text feature (features: {', '.join(features.keys())})")
    name = "text" if "text" in names else names[0]
    for example in dataset.as_numpy_iterator():
        yield example[name].decode("utf-8", errors="replace")


# --- the vocabulary ------------------------------------------------------------------------------


def build_vocabulary(sentences, min_count: int, max_vocab: int = 0, window: int = 1, source: str = "corpus"):
    """Words with at least `min_count` occurrences, most frequent first, and their counts."""
    counts = Counter(itertools.chain.from_iterable(sentences))
    total = sum(counts.values())
    if total <= window:
        raise UserError(f"{source}: only {total} words, the corpus must be longer than the window ({window})")
    kept = sorted(((c, w) for w, c in counts.items() if c >= min_count), key=lambda cw: (-cw[0], cw[1]))
    if max_vocab:
        kept = kept[:max_vocab]
    if len(kept) < 2:
        top = counts.most_common(1)[0]
        raise UserError(
            f"{source}: {len(kept)} word(s) occur at least min_count={min_count} times "
            f"(the most frequent, {top[0]!r}, occurs {top[1]}); lower --min-count or give more text"
        )
    return [w for _, w in kept], np.asarray([c for c, _ in kept], dtype=np.int64)


def encode(sentences, vocabulary: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(word ids, sentence number of each) for the in-vocabulary words of the corpus, in order;
    out-of-vocabulary words are dropped before windows are formed, as gensim does."""
    index = {w: i for i, w in enumerate(vocabulary)}
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    ids = np.fromiter((index.get(w, -1) for w in itertools.chain.from_iterable(sentences)), dtype=np.int32, count=int(lengths.sum()))
    sentence_ids = np.repeat(np.arange(len(sentences), dtype=np.int32), lengths)
    known = ids >= 0
    return ids[known], sentence_ids[known]


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """Probability of keeping each occurrence of a word (gensim 4's form of Mikolov's formula):
    (sqrt(f / t) + 1) * t / f with f the word's count and t = sample * total count, capped at 1."""
    counts = np.asarray(counts, dtype=np.float64)
    if not sample:
        return np.ones_like(counts)
    threshold = sample * counts.sum() if sample < 1.0 else float(sample)
    return np.minimum(1.0, (np.sqrt(counts / threshold) + 1.0) * threshold / counts)


def negative_cdf(counts: np.ndarray, exponent: float = 0.75) -> np.ndarray:
    """Cumulative, normalised unigram ** exponent distribution (gensim's cum_table, as floats)."""
    weights = np.asarray(counts, dtype=np.float64) ** exponent
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def draw_negatives(cdf: np.ndarray, rng: np.random.Generator, shape) -> np.ndarray:
    """Word ids drawn from the distribution `cdf` describes (binary search, like gensim's bisect)."""
    return np.searchsorted(cdf, rng.random(shape), side="right").astype(np.int32).clip(0, len(cdf) - 1)


@dataclass
class Corpus:
    """The encoded corpus and everything the batch generator needs."""

    ids: np.ndarray  # word ids of the in-vocabulary words, in corpus order
    sentence_ids: np.ndarray  # sentence number of each, so windows never cross sentences
    keep: np.ndarray  # subsampling: probability of keeping each word id
    cdf: np.ndarray  # negative sampling distribution

    @property
    def expected_words(self) -> float:
        """Words left after subsampling, on average: what one epoch trains on."""
        return float(self.keep[self.ids].sum())


def epoch_batches(corpus: Corpus, *, epoch: int, epochs: int, batch_size: int, window: int, negative: int,
                  learning_rate: float, min_learning_rate: float, seed: int, share: int = 1, window_draw: str = "word",
                  chunk: int = 1 << 17):
    """One epoch of training batches, as dicts of NumPy arrays. A batch is a run of B consecutive
    words of the subsampled corpus (the centre words) with `window` words of context on each side:

    tokens [B + 2*window] (word ids of the run and its margins, 0 in the padding at the corpus
    ends), mask [B, 2*window] (1 where the context word at offset -window..-1, 1..window of a
    centre lies inside the centre's reduced window and sentence), negatives [B / share, negative]
    (one draw shared by `share` consecutive centres and all their context words), learning_rate []
    (falling linearly over all epochs, as gensim's alpha). Each word's vector is gathered and
    updated once per batch, not once per pair. `batch_size` must be a multiple of `share`; the
    epoch's last batch is padded to one with masked-out centres.

    `window_draw` "word" draws each centre's reduced window (1..window) on its own, as gensim; "batch"
    draws one reach r per batch and narrows that batch to it: tokens [B + 2r], mask [B, 2r]. Every
    (centre, context) pair keeps gensim's chance of being trained on, and a step computes only
    the offsets it uses (on average (window + 1) / (2 * window) of them: 60% at window 5).
    """
    rng = np.random.default_rng([seed, epoch])
    kept = rng.random(len(corpus.ids)) < corpus.keep[corpus.ids]
    ids, sentences = corpus.ids[kept], corpus.sentence_ids[kept]
    total = len(ids)
    # padding with sentence -1 on both sides: windows at the ends find no context there
    padded_ids = np.concatenate([np.zeros(window, np.int32), ids, np.zeros(window, np.int32)])
    padded_sentences = np.concatenate([np.full(window, -1, np.int32), sentences, np.full(window, -1, np.int32)])
    offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])
    distance = np.abs(offsets)
    chunk = max(batch_size, chunk - chunk % batch_size)
    per_batch = window_draw == "batch"
    for start in range(0, total, chunk):
        end = min(start + chunk, total)
        positions = np.arange(start, end)[:, None] + offsets + window
        in_sentence = padded_sentences[positions] == sentences[start:end, None]
        if per_batch:
            reaches = window - rng.integers(0, window, size=-(-(end - start) // batch_size))
        else:  # gensim's reduced window: each centre word draws 1..window
            in_sentence &= distance <= (window - rng.integers(0, window, size=end - start))[:, None]
        mask = in_sentence.astype(np.float32)
        negatives = draw_negatives(corpus.cdf, rng, (-(-(end - start) // share), negative))
        for first in range(start, end, batch_size):
            last = min(first + batch_size, end)
            progress = (epoch + last / total) / epochs
            rate = max(min_learning_rate, learning_rate - (learning_rate - min_learning_rate) * progress)
            tokens, centres = padded_ids[first : last + 2 * window], mask[first - start : last - start]
            if per_batch:  # only the batch's own reach: the margins and mask columns beyond it go
                reach = int(reaches[(first - start) // batch_size])
                tokens, centres = tokens[window - reach : len(tokens) - window + reach], centres[:, distance <= reach]
            missing = -(last - first) % share  # only in the epoch's last batch: centres without context
            if missing:
                tokens = np.concatenate([tokens, np.zeros(missing, np.int32)])
                centres = np.concatenate([centres, np.zeros((missing, centres.shape[1]), np.float32)])
            yield {
                "tokens": tokens,
                "mask": centres,
                "negatives": negatives[(first - start) // share : -(-(last - start) // share)],
                "learning_rate": np.float32(rate),
            }


def make_training_dataset(corpus: Corpus, config, epoch_counter: dict, group: int = 16):
    """A tf.data pipeline over `epoch_batches`; each pass (one Keras epoch) generates a new epoch,
    numbered by `epoch_counter["epoch"]` (set by a callback, so a resumed run continues correctly).

    The generator hands over `group` batches of equal shapes at a time, stacked, and tf.data
    splits them again: each call into Python costs a fraction of a millisecond (the GIL, a
    fresh Python thread state, conversions), which is a tenth of a step when paid per batch."""
    import tensorflow as tf

    def generate():
        batches = epoch_batches(
            corpus, epoch=epoch_counter["epoch"], epochs=config.epochs, batch_size=config.batch_size,
            window=config.window, negative=config.negative, learning_rate=config.learning_rate,
            min_learning_rate=config.min_learning_rate, seed=config.seed, share=config.shared_negatives,
            window_draw=config.window_draw,
        )
        def stacked(same):
            return {key: np.stack([b[key] for b in same]) for key in same[0]}

        pending = {}  # mask shape -> batches of that shape (one reach each when drawn per batch)
        for batch in batches:
            same = pending.setdefault(batch["mask"].shape, [])
            same.append(batch)
            if len(same) == group:
                yield stacked(same)
                same.clear()
        yield from (stacked(same) for same in pending.values() if same)

    signature = {
        "tokens": tf.TensorSpec([None, None], tf.int32),
        "mask": tf.TensorSpec([None, None, None], tf.float32),  # [., batch, 2 * reach]
        "negatives": tf.TensorSpec([None, None, config.negative], tf.int32),  # [., batch / shared_negatives, negative]
        "learning_rate": tf.TensorSpec([None], tf.float32),
    }
    return tf.data.Dataset.from_generator(generate, output_signature=signature).unbatch().prefetch(4)


# --- evaluation files ----------------------------------------------------------------------------


def read_analogies(path: Path, encoding: str = "utf-8") -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """questions-words format: ``: section`` lines, then ``a b c d`` lines (a is to b as c is to d)."""
    sections: list[tuple[str, list]] = []
    for number, line in enumerate(data_lib.read_text(path, encoding).split("\n"), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(":"):
            sections.append((line[1:].strip(), []))
            continue
        words = line.split()
        if len(words) != 4:
            raise UserError(f"{path}: line {number}: expected ': section' or 4 words 'a b c d', got {len(words)} field(s)")
        if not sections:
            sections.append(("questions", []))
        sections[-1][1].append(tuple(words))
    if not any(questions for _, questions in sections):
        raise UserError(f"{path}: no analogy questions (expected ': section' lines and 'a b c d' lines)")
    return sections


def read_similarities(path: Path, encoding: str = "utf-8") -> list[tuple[str, str, float]]:
    """WordSim-353 / SimLex style: ``word1 word2 score`` per line (tab or space separated), ``#``
    comments; a header line whose score is not a number is skipped if it is the first line."""
    pairs = []
    first_data_line = True
    for number, line in enumerate(data_lib.read_text(path, encoding).split("\n"), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.rstrip("\r").split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if len(fields) < 3:
            raise UserError(f"{path}: line {number}: expected 'word1 word2 score', got {len(fields)} field(s)")
        try:
            score = float(fields[2])
        except ValueError:
            if first_data_line:  # a header such as 'Word 1<TAB>Word 2<TAB>Human (mean)'
                first_data_line = False
                continue
            raise UserError(f"{path}: line {number}: score {fields[2]!r} is not a number")
        first_data_line = False
        pairs.append((fields[0], fields[1], score))
    if not pairs:
        raise UserError(f"{path}: no word pairs (expected 'word1 word2 score' lines)")
    return pairs
