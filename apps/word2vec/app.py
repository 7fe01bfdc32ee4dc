"""The word2vec app's modes as plain functions: each takes paths and values, returns plain Python."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from ...shared import export as export_lib
from ...shared import training
from ...shared.embeddings import write_word2vec
from ...shared.errors import UserError, suggest
from ...shared.strategy import describe, get_strategy
from . import data as w2v_data
from .config import Word2VecConfig
from .model import Word2Vec  # also registers the class for loading

APP = "word2vec"
VECTOR_FILES = ("vectors.txt", "vectors.bin", "vectors.tsv", "metadata.tsv")


def train(config: Word2VecConfig) -> dict:
    """Trains on `config.data` and writes the run folder plus the vectors in word2vec text and
    binary formats and TensorBoard projector files; returns training figures."""
    import keras

    keras.utils.set_random_seed(config.seed)
    for name in ("window", "negative", "dim", "min_count"):
        if getattr(config, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    started = time.time()
    sentences, source = w2v_data.read_corpus(config)
    vocabulary, counts = w2v_data.build_vocabulary(sentences, config.min_count, config.max_vocab, config.window, source)
    run = training.Run.start(APP, config)  # only after the corpus passed its checks: a bad one changes nothing
    strategy = get_strategy(config.strategy, config.mixed_precision)

    def build():
        return Word2Vec(vocabulary, counts, dim=config.dim, objective=config.model, seed=config.seed,
                        row_update_cap=config.row_update_cap)

    model = training.model_for_run(run, config, build, strategy)
    # the vocabulary of a resumed run is the one it started with (from checkpoints/initial.keras)
    ids, sentence_ids = w2v_data.encode(sentences, model.vocabulary)
    raw_words = sum(len(s) for s in sentences)
    del sentences
    counts = np.asarray(model.counts, dtype=np.int64)
    corpus = w2v_data.Corpus(ids, sentence_ids, w2v_data.keep_probabilities(counts, config.sample),
                             w2v_data.negative_cdf(counts, config.ns_exponent))
    prepared = time.time() - started
    print(f"Corpus {source}: {raw_words} words, {len(ids)} in a vocabulary of {len(model.vocabulary)} "
          f"(min_count {config.min_count}), about {corpus.expected_words:.0f} per epoch after subsampling; "
          f"{config.model}, dim {config.dim}; {describe(strategy)}")

    epoch = {"epoch": 0}

    class EpochNumber(keras.callbacks.Callback):
        """Tells the batch generator which epoch it makes (its seed and learning-rate schedule)."""

        def on_epoch_begin(self, number, logs=None):
            epoch["epoch"] = number

    with strategy.scope():
        # the optimizer is never applied: train_step updates the touched rows by plain SGD itself.
        # A step takes a few milliseconds, so running 16 per call saves Keras' per-step Python
        # overhead (about 30% faster on 2 cores).
        model.compile(optimizer=keras.optimizers.SGD(config.learning_rate), steps_per_execution=16)
    dataset = w2v_data.make_training_dataset(corpus, config, epoch)
    with warnings.catch_warnings():
        # the generator's length varies with subsampling, so Keras learns each epoch's end by running out
        warnings.filterwarnings("ignore", message=".*ran out of data.*")
        # the learning rate falls every epoch, so "best" by it is always the last epoch, as in gensim
        metrics = training.fit(model, dataset, None, run, config, monitor="learning_rate", mode="min",
                               callbacks=(EpochNumber(),))
    final = training.load_model(run.model_path, APP)
    files = write_vectors(final, run.dir)
    history = training.read_history(run.history_path)
    metrics.update(
        corpus=source,
        corpus_words=raw_words,
        vocabulary_size=len(final.vocabulary),
        final_loss=history.get("loss", [None])[-1],
        prepare_seconds=round(prepared, 2),
        words_per_second=round(raw_words * metrics["epochs_run"] / max(metrics["train_seconds"], 1e-9)),
        files=files,
    )
    training.write_json(run.metrics_path, metrics)
    return metrics


def write_vectors(model: Word2Vec, folder: Path) -> list[str]:
    """vectors.txt / vectors.bin (word2vec formats gensim reads) and the TensorBoard projector's
    vectors.tsv + metadata.tsv, each written to a temporary name and renamed."""
    import os

    vectors = model.vectors()
    write_word2vec(folder / "vectors.txt", model.vocabulary, vectors, binary=False)
    write_word2vec(folder / "vectors.bin", model.vocabulary, vectors, binary=True)
    for name, text in (
        ("vectors.tsv", "\n".join("\t".join(f"{v:.6g}" for v in row) for row in vectors.tolist()) + "\n"),
        ("metadata.tsv", "\n".join(model.vocabulary) + "\n"),  # one column: the projector wants no header
    ):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / name)
    return [str(folder / name) for name in VECTOR_FILES]


# --- queries -------------------------------------------------------------------------------------


class Vectors:
    """Unit-length word vectors with the word index: what neighbour and analogy queries need."""

    def __init__(self, words: list[str], vectors: np.ndarray):
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.unit = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)

    @classmethod
    def of(cls, model: Word2Vec) -> "Vectors":
        return cls(model.vocabulary, model.vectors())

    def ids(self, words: list[str], source: str = "query") -> list[int]:
        """Row of each word; an unknown word is a one-line UserError with a close match."""
        ids = []
        for word in words:
            if word not in self.index:
                hint = suggest(word, self.words[:20000])
                raise UserError(f"{source}: {word!r} is not in the vocabulary of {len(self.words)} words{hint}")
            ids.append(self.index[word])
        return ids

    def most_similar(self, positive: list[int], negative: list[int] = (), topn: int = 10, restrict: int = 0):
        """gensim's most_similar: the mean of the unit vectors (+1 positive, -1 negative), the
        words with the highest cosine to it, the query words themselves excluded."""
        table = self.unit[:restrict] if restrict else self.unit
        query = self.unit[list(positive)].sum(axis=0) - self.unit[list(negative)].sum(axis=0)
        query /= max(float(np.linalg.norm(query)), 1e-12)
        scores = table @ query
        scores[[i for i in (*positive, *negative) if i < len(table)]] = -np.inf
        best = np.argpartition(-scores, min(topn, len(scores) - 1))[:topn]
        best = best[np.argsort(-scores[best])]
        return [{"word": self.words[i], "similarity": float(scores[i])} for i in best if np.isfinite(scores[i])]


def neighbours(model_dir: str | Path, words: list[str], topn: int = 10, model=None) -> list[dict]:
    """Nearest neighbours by cosine of each word."""
    if topn < 1:
        raise UserError(f"--topn must be at least 1, got {topn}")
    vectors = Vectors.of(model or training.load_model(model_dir, APP))
    ids = vectors.ids(words)
    return [{"word": word, "neighbours": vectors.most_similar([i], topn=topn)} for word, i in zip(words, ids)]


def analogy(model_dir: str | Path, words: list[str], topn: int = 10, model=None) -> dict:
    """`a b c`: the words closest to a - b + c (king man woman -> queen), as gensim's
    most_similar(positive=[a, c], negative=[b])."""
    if len(words) != 3:
        raise UserError(f"--analogy takes three words A B C (A - B + C, e.g. king man woman), got {len(words)}")
    if topn < 1:
        raise UserError(f"--topn must be at least 1, got {topn}")
    vectors = Vectors.of(model or training.load_model(model_dir, APP))
    a, b, c = vectors.ids(words)
    return {"query": f"{words[0]} - {words[1]} + {words[2]}", "answers": vectors.most_similar([a, c], [b], topn=topn)}


# --- evaluation ----------------------------------------------------------------------------------


def evaluate_analogies(vectors: Vectors, path: Path, restrict_vocab: int = 30000, encoding: str = "utf-8") -> dict:
    """Accuracy on questions-words analogies, as gensim's evaluate_word_analogies: questions with
    a word outside the `restrict_vocab` most frequent words are skipped (and counted), the answer
    is the nearest word to b - a + c among those words other than a, b, c; case-insensitive."""
    sections = w2v_data.read_analogies(path, encoding)
    limit = min(restrict_vocab or len(vectors.words), len(vectors.words))
    table = vectors.unit[:limit]
    index = {w: i for w, i in vectors.index.items() if i < limit}
    results, correct_total, usable_total, total = [], 0, 0, 0
    for name, questions in sections:
        total += len(questions)
        rows = [[index.get(w.lower(), -1) for w in q] for q in questions]
        rows = np.asarray([r for r in rows if min(r) >= 0], dtype=np.int64).reshape(-1, 4)
        correct = 0
        for start in range(0, len(rows), 512):  # bounded memory: 512 x restrict_vocab scores at a time
            a, b, c, d = rows[start : start + 512].T
            query = table[b] - table[a] + table[c]
            query /= np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
            scores = query @ table.T
            for column in (a, b, c):
                scores[np.arange(len(a)), column] = -np.inf
            correct += int((scores.argmax(axis=1) == d).sum())
        results.append({"section": name, "correct": correct, "questions": int(len(rows)), "skipped": len(questions) - int(len(rows)),
                        "accuracy": correct / len(rows) if len(rows) else None})
        correct_total += correct
        usable_total += len(rows)
    return {
        "file": str(path),
        "accuracy": correct_total / usable_total if usable_total else 0.0,
        "correct": correct_total,
        "questions": usable_total,
        "out_of_vocabulary": total - usable_total,
        "total": total,
        "restrict_vocab": limit,
        "sections": results,
    }


def evaluate_similarity(vectors: Vectors, path: Path, encoding: str = "utf-8") -> dict:
    """Spearman (and Pearson) correlation between cosine similarity and the human scores of a
    WordSim-353 / SimLex style file, as gensim's evaluate_word_pairs; pairs with an unknown word
    are skipped and counted."""
    from scipy.stats import pearsonr, spearmanr

    pairs = w2v_data.read_similarities(path, encoding)
    ours, human = [], []
    for first, second, score in pairs:
        i, j = vectors.index.get(first.lower()), vectors.index.get(second.lower())
        if i is None or j is None:
            continue
        ours.append(float(vectors.unit[i] @ vectors.unit[j]))
        human.append(score)
    result = {"file": str(path), "pairs": len(ours), "out_of_vocabulary": len(pairs) - len(ours), "total": len(pairs)}
    if len(ours) < 3:
        return {**result, "spearman": None, "pearson": None}
    return {**result, "spearman": float(spearmanr(ours, human).statistic), "pearson": float(pearsonr(ours, human).statistic)}


def evaluate(model_dir: str | Path, analogies: Path | None = None, similarity: list[Path] | tuple = (),
             restrict_vocab: int = 30000, encoding: str = "utf-8", model=None) -> dict:
    """Analogy accuracy and similarity correlations, with out-of-vocabulary counts."""
    if analogies is None and not similarity:
        raise UserError("nothing to evaluate: give --analogies FILE (questions-words format) and/or --similarity FILE")
    if restrict_vocab < 0:
        raise UserError(f"--restrict-vocab must be 0 (all) or more, got {restrict_vocab}")
    for path in [analogies, *similarity]:
        if path is not None and not Path(path).is_file():
            raise UserError(f"{path}: no such file")
    model = model or training.load_model(model_dir, APP)
    vectors = Vectors.of(model)
    result: dict = {"vocabulary_size": len(vectors.words)}
    if analogies is not None:
        result["analogies"] = evaluate_analogies(vectors, Path(analogies), restrict_vocab, encoding)
    if similarity:
        result["similarity"] = [evaluate_similarity(vectors, Path(p), encoding) for p in similarity]
    return result


# --- export --------------------------------------------------------------------------------------


def export(model_dir: str | Path, out: str | Path | None = None, topn: int = 10) -> dict:
    """SavedModel whose serving_default maps word strings to vectors (the lookup is inside) and
    returns each word's nearest neighbours; unknown words get a zero vector and found=False."""
    import tensorflow as tf

    model = training.load_model(model_dir, APP)
    out = Path(out or model_dir)
    words = tf.constant(model.vocabulary)
    topn = min(topn, len(model.vocabulary) - 1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="word")])
    def serving_default(word):
        vectors, found = model.word_vectors(word)
        table = tf.math.l2_normalize(model.word_embedding.embeddings, axis=1)
        ids = model.word_ids(word)
        scores = tf.matmul(tf.math.l2_normalize(vectors, axis=1), table, transpose_b=True)
        scores -= 3.0 * tf.one_hot(ids, len(model.vocabulary))  # the word itself is not its own neighbour
        best = tf.math.top_k(scores, k=topn)
        known = found[:, None]
        return {
            "vector": vectors,
            "found": found,
            "neighbours": tf.where(known, tf.gather(words, best.indices), ""),
            "similarities": tf.where(known, best.values, 0.0),
        }

    path = export_lib.write_saved_model(model, {"serving_default": serving_default}, out)
    export_lib.copy_model(Path(model_dir), out)
    return {"saved_model": str(path), "version": int(path.name), "vocabulary_size": len(model.vocabulary), "dim": model.dim,
            "signature": f"serving_default(word: string[N]) -> vector: float[N, {model.dim}], found: bool[N], "
                         f"neighbours: string[N, {topn}], similarities: float[N, {topn}]"}
