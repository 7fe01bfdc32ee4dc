"""The word2vec app's hooks into the shared contract (shared/app.py), and the vector queries
(neighbours, analogies) and benchmarks (analogy accuracy, similarity correlation) it answers."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dlapps.shared.app import App, Splits
from dlapps.shared.config import EvaluateOptions, ExportOptions, PredictOptions, option
from dlapps.shared.embeddings import write_word2vec
from dlapps.shared.errors import UserError, suggest

from . import data as w2v_data
from .config import Word2VecConfig

if TYPE_CHECKING:  # the model module imports Keras; the CLI's help must not
    from .model import Word2Vec

VECTOR_FILES = ("vectors.txt", "vectors.bin", "vectors.tsv", "metadata.tsv")


@dataclasses.dataclass
class Word2VecPredictOptions(PredictOptions):
    analogy: bool = option(False, "answer A - B + C for three words A B C (king man woman)")
    topn: int = option(10, "how many neighbours or answers to show", short="-n", min=1, max=10_000)


@dataclasses.dataclass
class Word2VecEvaluateOptions(EvaluateOptions):
    data: str = option("", "unused by word2vec: give --analogies and/or --similarity")
    analogies: str = option("", "analogy questions in the questions-words format", short="-a")
    similarity: list[str] = option([], "word-pair scores (WordSim-353/SimLex style); several as FILE,FILE", short="-s")
    restrict_vocab: int = option(30000, "analogies use only the N most frequent words, as gensim (0: all)", min=0)


@dataclasses.dataclass
class Word2VecExportOptions(ExportOptions):
    topn: int = option(10, "neighbours the SavedModel returns per word", short="-n", min=1, max=10_000)


@dataclasses.dataclass
class TrainingCorpus:
    """The tokenised corpus and the epoch its batch generator makes next (set by a callback, so
    a resumed run goes on with the right seed and learning rate)."""

    sentences: list
    source: str
    words: int
    vocabulary: list
    counts: list
    epoch: dict = dataclasses.field(default_factory=lambda: {"epoch": 0})


class Word2VecApp(App):
    name = "word2vec"
    summary = "Word vectors: skip-gram or CBOW with negative sampling, written in gensim's formats."
    config = Word2VecConfig
    predict_options = Word2VecPredictOptions
    evaluate_options = Word2VecEvaluateOptions
    export_options = Word2VecExportOptions
    input_help = "words to query (three with --analogy); '-' reads one per line from stdin"
    predict_help = ("Nearest neighbours by cosine: `dlapps word2vec predict king --topn 10`; analogies: "
                    "`dlapps word2vec predict --analogy king man woman`.")
    evaluate_help = "Analogy accuracy and similarity Spearman correlations, with out-of-vocabulary counts."
    # The learning rate falls every epoch, as in gensim: the model kept is the last epoch's.
    monitor, mode, keep = "loss", "min", "last"
    single_device_only = ("its step updates the rows a batch touches in place (gensim's sparse SGD) with a "
                          "per-batch learning rate, which tf.distribute cannot split across replicas; use --strategy default")

    # --- train ---
    def check_config(self, config) -> None:
        if config.batch_size % config.shared_negatives:
            raise UserError(f"--batch-size {config.batch_size} is not a multiple of --shared-negatives {config.shared_negatives}")

    def load_splits(self, config) -> Splits:
        sentences, source = w2v_data.read_corpus(config)
        vocabulary, counts = w2v_data.build_vocabulary(sentences, config.min_count, config.max_vocab, config.window, source)
        corpus = TrainingCorpus(sentences, source, sum(len(s) for s in sentences), vocabulary, counts)
        return Splits(corpus, None, {"corpus": source, "corpus_words": corpus.words})

    def build_model(self, config, splits):
        from .model import Word2Vec

        return Word2Vec(vocabulary=splits.train.vocabulary, counts=splits.train.counts, dim=config.dim,
                        objective=config.model, seed=config.seed, row_update_cap=config.row_update_cap)

    def compile_model(self, model, config) -> None:
        import keras

        # The optimizer is never applied: train_step updates the touched rows by plain SGD itself.
        # A step takes a few milliseconds, so 16 per call save Keras' per-step Python overhead.
        model.compile(optimizer=keras.optimizers.SGD(config.learning_rate), steps_per_execution=16)

    def datasets(self, model, splits, config):
        # the vocabulary of a resumed run is the one it started with (from checkpoints/initial.keras)
        corpus = splits.train
        ids, sentence_ids = w2v_data.encode(corpus.sentences, model.vocabulary)
        corpus.sentences = None  # the ids are all that is needed from here on
        counts = np.asarray(model.counts, dtype=np.int64)
        encoded = w2v_data.Corpus(ids, sentence_ids, w2v_data.keep_probabilities(counts, config.sample),
                                  w2v_data.negative_cdf(counts, config.ns_exponent))
        print(f"Corpus {corpus.source}: {corpus.words} words, {len(ids)} in a vocabulary of {len(model.vocabulary)} "
              f"(min_count {config.min_count}), about {encoded.expected_words:.0f} per epoch after subsampling")
        # the generator's length varies with subsampling, so Keras learns each epoch's end by running out
        warnings.filterwarnings("ignore", message=".*ran out of data.*")
        return w2v_data.make_training_dataset(encoded, config, corpus.epoch), None

    def callbacks(self, model, splits, config) -> list:
        import keras

        from dlapps.shared import training

        epoch = splits.train.epoch

        class EpochNumber(keras.callbacks.Callback):
            """Tells the batch generator which epoch it makes (its seed and learning-rate schedule)."""

            def on_epoch_begin(self, number, logs=None):
                epoch["epoch"] = number

        return [EpochNumber(), training.keep_freed_memory()]

    def describe_training(self, model, splits, config) -> str:
        return f"Training {config.model}, dim {config.dim}, vocabulary {len(model.vocabulary)}"

    def after_training(self, model, splits, config, run) -> dict:
        from dlapps.shared.training import read_history

        written = write_vectors(model, run.staging)
        epochs = len(read_history(run.history_path).get("loss", []))
        return {
            "vocabulary_size": len(model.vocabulary),
            "words_per_second": round(splits.train.words * epochs / max(run.train_seconds, 1e-9)),
            "files": [str(run.dir / Path(name).name) for name in written],
        }

    # --- predict ---
    def predict(self, model, inputs, options) -> list[dict]:
        words = [w.strip() for w in inputs]
        vectors = Vectors.of(model)
        if options.analogy:
            if len(words) != 3:
                raise UserError(f"--analogy takes three words A B C (A - B + C, e.g. king man woman), got {len(words)}")
            a, b, c = vectors.ids(words)
            return [{"query": f"{words[0]} - {words[1]} + {words[2]}",
                     "answers": vectors.most_similar([a, c], [b], topn=options.topn)}]
        ids = vectors.ids(words)
        return [{"word": word, "neighbours": vectors.most_similar([i], topn=options.topn)} for word, i in zip(words, ids)]

    def format_prediction(self, row: dict) -> str:
        found = row.get("neighbours", row.get("answers"))
        return "\n".join([row.get("word", row.get("query"))] + [f"  {n['similarity']:.4f}  {n['word']}" for n in found])

    # --- evaluate ---
    def evaluation_data(self, config, options):
        if not options.analogies and not options.similarity:
            raise UserError("nothing to evaluate: give --analogies FILE (questions-words format) and/or --similarity FILE")
        for path in [options.analogies, *options.similarity]:
            if path and not Path(path).is_file():
                raise UserError(f"{path}: no such file")
        return options

    def evaluate(self, model, data, options) -> dict:
        vectors = Vectors.of(model)
        result: dict = {"vocabulary_size": len(vectors.words)}
        if options.analogies:
            result["analogies"] = evaluate_analogies(vectors, Path(options.analogies), options.restrict_vocab, options.encoding)
        if options.similarity:
            result["similarity"] = [evaluate_similarity(vectors, Path(p), options.encoding) for p in options.similarity]
        return result

    def headline(self, metrics: dict) -> dict:
        shown = {"vocabulary_size": metrics["vocabulary_size"]}
        if "analogies" in metrics:
            a = metrics["analogies"]
            shown[f"analogies {a['file']}"] = (f"accuracy {a['accuracy']:.4f} ({a['correct']} of {a['questions']} usable; "
                                               f"{a['out_of_vocabulary']} of {a['total']} skipped outside the "
                                               f"{a['restrict_vocab']} most frequent words)")
            for section in a["sections"]:
                accuracy = "-" if section["accuracy"] is None else f"{section['accuracy']:.4f}"
                shown[f"  {section['section']}"] = f"{accuracy} ({section['correct']}/{section['questions']}, {section['skipped']} skipped)"
        for s in metrics.get("similarity", []):
            spearman = "-" if s["spearman"] is None else f"{s['spearman']:.4f}"
            shown[f"similarity {s['file']}"] = f"Spearman {spearman} on {s['pairs']} pairs ({s['out_of_vocabulary']} of {s['total']} out of vocabulary)"
        return shown

    # --- export ---
    def endpoints(self, model, options) -> dict:
        """serving_default maps word strings to vectors (the lookup is inside) and returns each
        word's nearest neighbours; unknown words get a zero vector and found=False."""
        import tensorflow as tf

        words = tf.constant(model.vocabulary)
        topn = min(options.topn, len(model.vocabulary) - 1)

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

        return {"serving_default": serving_default}


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



APP = Word2VecApp()
