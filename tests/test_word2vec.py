"""word2vec: the contract suite, plus gensim reading the written vectors, neighbours and analogies
computed independently, negative sampling and subsampling rates, and its own bad input."""

import json

import numpy as np
import pytest

from .contract import AppContract, trained
from .helpers import assert_ok, assert_user_error, run_cli, run_subprocess

TINY = ("--demo-chars", "700000", "--dim", "32", "--batch-size", "512")
# word pairs that sit together in the standard library's docstrings
RELATED = [("true", "false"), ("return", "returns"), ("read", "write"), ("key", "value")]


class TestContract(AppContract):
    app = "word2vec"
    train_args = TINY
    epochs = 3
    resume_epochs = 60
    inputs = ("true", "return")
    predict_options = ("--topn", "5")
    evaluate_keys = ("vocabulary_size", "analogies", "similarity")
    bad_train_inputs = [
        ({"empty.txt": b""}, ["--data", "{tmp}/empty.txt"], ["empty.txt", "empty corpus"]),
        ({"punct.txt": b"... !!! 123 ;;"}, ["--data", "{tmp}/punct.txt"], ["punct.txt", "empty corpus"]),
        ({"short.txt": b"one two three"}, ["--data", "{tmp}/short.txt", "--min-count", "1"], ["short.txt", "only 3 words", "window (5)"]),
        ({"rare.txt": b"every word here is different from all the others in this line"}, ["--data", "{tmp}/rare.txt"],
         ["rare.txt", "min_count=5", "lower --min-count"]),
        ({"bad.txt": b"fine line\ncaf\xe9 au lait\n"}, ["--data", "{tmp}/bad.txt"], ["bad.txt", "line 2", "0xe9", "utf-8"]),
        ({"none/.hidden": b"x"}, ["--data", "{tmp}/none"], ["none", "no text files"]),
        ({"ok.txt": b"a b a b a b a b a b a b"}, ["--data", "{tmp}/ok.txt", "--token-pattern", "[a-"], ["--token-pattern", "not a valid regular expression"]),
        ({}, ["--model", "skipgrm"], ["model must be one of", "did you mean 'skipgram'"]),
        ({}, ["--window", "0"], ["--window must be between 1 and 100"]),
        ({}, ["--batch-size", "500", "--shared-negatives", "8"], ["--batch-size 500", "not a multiple", "--shared-negatives 8"]),
    ]

    def evaluate_args(self, tmp_path):
        analogies, similarity = tmp_path / "questions.txt", tmp_path / "pairs.tsv"
        analogies.write_text(": verbs\nread reads write writes\n")
        similarity.write_text("true\tfalse\t9.0\nreturn\treturns\t8.5\nread\twrite\t7\n")
        return ["--analogies", str(analogies), "--similarity", str(similarity)]

    def check_predictions(self, rows, inputs):
        assert [r["word"] for r in rows] == list(inputs)
        for row in rows:
            similarities = [n["similarity"] for n in row["neighbours"]]
            assert len(similarities) == 5 and similarities == sorted(similarities, reverse=True)
            assert row["word"] not in [n["word"] for n in row["neighbours"]]

    def serving_call(self, inputs):
        return {"word": list(inputs) + ["xyzzyq"]}, (), "serving_default"

    def check_served(self, served, rows):
        # the export's default --topn is 10, predict asked for 5: the first 5 agree
        assert served["found"] == [True, True, False]
        neighbours = np.array(served["neighbours"]).reshape(3, -1)
        for row, words, similarities in zip(rows, neighbours, np.array(served["similarities"])):
            assert list(words[:5]) == [n["word"] for n in row["neighbours"]]
            np.testing.assert_allclose(similarities[:5], [n["similarity"] for n in row["neighbours"]], atol=1e-5)
        assert list(neighbours[2]) == [""] * neighbours.shape[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained(tmp_path_factory, "word2vec", "--epochs", "3", *TINY)


@pytest.fixture(scope="module")
def model(run_dir):
    from dlapps.shared import training

    return training.load_model(run_dir, "word2vec")


def _rank(model, word, other):
    """Where `other` comes among `word`'s neighbours by cosine (0 = nearest)."""
    vectors = model.vectors()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    i, j = model.vocabulary.index(word), model.vocabulary.index(other)
    scores = unit @ unit[i]
    scores[i] = -np.inf
    return int((scores > scores[j]).sum())


def test_demo_training_learns_related_words(run_dir, model):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = [line.split(",") for line in (run_dir / "history.csv").read_text().splitlines()]
    header, rows = history[0], history[1:]
    rates = [float(r[header.index("learning_rate")]) for r in rows]
    assert rates[0] > rates[1] > rates[2] and abs(rates[2] - 1e-4) < 1e-6, rates  # linear decay, as gensim
    assert metrics["vocabulary_size"] == len(model.vocabulary) > 1000 and metrics["words_per_second"] > 0
    assert metrics["keep"] == "last" and metrics["best_epoch"] == 3
    # chance would put a given word at rank ~ vocabulary/2; learned vectors put these in the top 2%
    ranks = [_rank(model, a, b) for a, b in RELATED]
    assert sum(r < 0.02 * len(model.vocabulary) for r in ranks) >= 3, ranks
    for name in ("vectors.txt", "vectors.bin", "vectors.tsv", "metadata.tsv"):
        assert (run_dir / name).exists(), name
    assert model.counts == sorted(model.counts, reverse=True) and min(model.counts) >= 5


def test_written_vectors_read_back_identically_by_gensim_and_shared_reader(run_dir, model):
    from gensim.models import KeyedVectors

    from dlapps.shared.embeddings import read_word2vec

    vectors = model.vectors()
    for name, binary in (("vectors.txt", False), ("vectors.bin", True)):
        loaded = KeyedVectors.load_word2vec_format(str(run_dir / name), binary=binary)
        assert list(loaded.index_to_key) == model.vocabulary
        np.testing.assert_array_equal(loaded.vectors, vectors)
        words, ours = read_word2vec(run_dir / name)
        assert words == model.vocabulary
        np.testing.assert_array_equal(ours, vectors)
    projector = np.loadtxt(run_dir / "vectors.tsv", delimiter="\t", dtype=np.float32)
    assert projector.shape == vectors.shape and np.allclose(projector, vectors, atol=1e-5)
    assert (run_dir / "metadata.tsv").read_text().split("\n")[:-1] == model.vocabulary


def test_predict_neighbours_and_analogy(run_dir, model):
    result = run_cli("word2vec", "predict", "true", "return", "--topn", "5", "-m", run_dir, "--json")
    assert_ok(result)
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["word"] for r in rows] == ["true", "return"]
    for row in rows:
        similarities = [n["similarity"] for n in row["neighbours"]]
        assert len(similarities) == 5 and similarities == sorted(similarities, reverse=True)
        assert row["word"] not in [n["word"] for n in row["neighbours"]]
    # the neighbours are the words of highest cosine, computed independently here
    unit = model.vectors() / np.linalg.norm(model.vectors(), axis=1, keepdims=True)
    scores = unit @ unit[model.vocabulary.index("true")]
    expected = [model.vocabulary[i] for i in np.argsort(-scores)[1:6]]
    assert [n["word"] for n in rows[0]["neighbours"]] == expected
    answer = run_cli("word2vec", "predict", "--analogy", "read", "reads", "write", "-m", run_dir, "--json", "-n", "3")
    assert_ok(answer)
    answer = json.loads(answer.output)
    assert answer["query"] == "read - reads + write" and len(answer["answers"]) == 3
    assert not {"read", "reads", "write"} & {a["word"] for a in answer["answers"]}
    table = run_cli("word2vec", "predict", "-", "-m", run_dir, input="true\n")
    assert_ok(table)
    assert table.output.splitlines()[0] == "true" and len(table.output.splitlines()) == 11


def test_evaluate_analogies_and_similarity_with_oov_counts(run_dir, tmp_path):
    analogies = tmp_path / "questions.txt"
    analogies.write_text(": verbs\nread reads write writes\nreturn returns read reads\nTrue False read xyzzyq\n: other\nkey value key value\n")
    similarity = tmp_path / "pairs.tsv"
    similarity.write_text("# comment\nWord 1\tWord 2\tHuman (mean)\ntrue\tfalse\t9.0\nreturn\treturns\t8.5\nread\twrite\t7\n"
                          "key\tvalue\t6\nthe\tsocket\t1.0\nxyzzyq\tfalse\t3\n")
    result = run_cli("word2vec", "evaluate", "--analogies", analogies, "--similarity", f"{similarity},{similarity}",
                     "-m", run_dir, "--json")
    assert_ok(result)
    metrics = json.loads(result.output)
    a = metrics["analogies"]
    assert (a["total"], a["questions"], a["out_of_vocabulary"]) == (4, 3, 1)
    assert [s["section"] for s in a["sections"]] == ["verbs", "other"] and 0 <= a["accuracy"] <= 1
    assert a["correct"] == sum(s["correct"] for s in a["sections"])
    s = metrics["similarity"]
    assert len(s) == 2 and s[0]["pairs"] == 5 and s[0]["out_of_vocabulary"] == 1 and -1 <= s[0]["spearman"] <= 1
    table = run_cli("word2vec", "evaluate", "-a", analogies, "-s", similarity, "-m", run_dir, "--restrict-vocab", "50")
    assert_ok(table)
    assert "skipped outside the 50 most frequent words" in table.output and "Spearman" in table.output


def test_cbow_trains_on_a_local_folder(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    animals = "cat dog horse cow sheep goat pig hen duck goose donkey mule lamb calf".split()
    tools = "hammer saw drill wrench chisel file plane level clamp vice spanner pliers axe rake".split()
    lines = []
    for _ in range(4000):
        group = animals if rng.random() < 0.5 else tools
        verb = "feeds the" if group is animals else "uses the"
        lines.append(f"the farmer {verb} {rng.choice(group)} and the {rng.choice(group)}.")
    (folder / "a.txt").write_text("\n".join(lines[:2000]))
    (folder / "sub" / "b.txt").write_text(" ".join(lines[2000:]))  # raw text: sentences end at '.'
    out = tmp_path / "run"
    result = run_cli("word2vec", "train", "--data", folder, "--model", "cbow", "--out", out, "--dim", "16", "--epochs", "4",
                     "--window", "3", "--sample", "0", "--batch-size", "128", "--learning-rate", "0.05",
                     "--row-update-cap", "32")
    assert_ok(result)
    assert "2 files" in result.output
    rows = [json.loads(r) for r in run_cli("word2vec", "predict", "cat", "hammer", "-n", "4", "-m", out, "--json").output.splitlines()]
    # without subsampling "the" is a quarter of the corpus: the capped row updates keep training stable
    assert all(np.isfinite(n["similarity"]) for row in rows for n in row["neighbours"])
    assert len({n["word"] for n in rows[0]["neighbours"]} & set(animals)) >= 3, rows[0]
    assert len({n["word"] for n in rows[1]["neighbours"]} & set(tools)) >= 3, rows[1]


# --- the sampling machinery ----------------------------------------------------------------------


def test_negative_samples_follow_unigram_to_the_three_quarters():
    from dlapps.apps.word2vec.data import draw_negatives, negative_cdf

    counts = np.array([5000, 1200, 300, 80, 20, 5], dtype=np.int64)
    drawn = draw_negatives(negative_cdf(counts), np.random.default_rng(0), (200_000,))
    observed = np.bincount(drawn, minlength=len(counts)) / len(drawn)
    expected = counts**0.75 / (counts**0.75).sum()
    np.testing.assert_allclose(observed, expected, atol=0.004)
    assert not np.allclose(observed, counts / counts.sum(), atol=0.02)  # not the raw unigram distribution


def test_subsampling_drops_frequent_words_at_the_expected_rate():
    from dlapps.apps.word2vec.data import Corpus, epoch_batches, keep_probabilities, negative_cdf

    counts = np.array([60_000, 20_000, 5_000, 1_000] + [100] * 140, dtype=np.int64)
    keep = keep_probabilities(counts, 1e-3)
    threshold = 1e-3 * counts.sum()
    np.testing.assert_allclose(keep[0], (np.sqrt(counts[0] / threshold) + 1) * threshold / counts[0])
    assert keep[0] < keep[1] < keep[2] < 1.0 and np.all(keep[4:] == 1.0)
    ids = np.random.default_rng(1).permutation(np.repeat(np.arange(len(counts), dtype=np.int32), counts))
    corpus = Corpus(ids, np.arange(len(ids), dtype=np.int32) // 20, keep, negative_cdf(counts))
    window, kept = 5, np.zeros(len(counts))
    for batch in epoch_batches(corpus, epoch=0, epochs=1, batch_size=4096, window=window, negative=5,
                               learning_rate=0.025, min_learning_rate=1e-4, seed=0):
        kept += np.bincount(batch["tokens"][window:-window], minlength=len(counts))
        contexts = batch["mask"].sum(axis=1)
        assert contexts.max() <= 2 * window
    np.testing.assert_allclose(kept[:4] / counts[:4], keep[:4], rtol=0.03)
    assert kept[4:].sum() == counts[4:].sum()


def test_shared_negatives_batches_pad_the_last_batch():
    from dlapps.apps.word2vec.data import Corpus, epoch_batches, keep_probabilities, negative_cdf

    counts = np.array([50] * 40, dtype=np.int64)
    ids = np.random.default_rng(2).permutation(np.repeat(np.arange(40, dtype=np.int32), counts))  # 2,000 words
    corpus = Corpus(ids, np.arange(len(ids), dtype=np.int32) // 30, keep_probabilities(counts, 0), negative_cdf(counts))
    window, centres = 3, 0
    batches = list(epoch_batches(corpus, epoch=0, epochs=1, batch_size=96, window=window, negative=4,
                                 learning_rate=0.025, min_learning_rate=1e-4, seed=0, share=8, chunk=384))
    for batch in batches:
        size = len(batch["mask"])
        assert size % 8 == 0 and batch["negatives"].shape == (size // 8, 4) and len(batch["tokens"]) == size + 2 * window
        centres += size
    # 2,000 centres: the last batch (2000 - 20 * 96 = 80) needs no padding; a 1,999-word corpus does
    assert centres == 2000 and len(batches) == 21
    short = Corpus(ids[:-1], corpus.sentence_ids[:-1], corpus.keep, corpus.cdf)
    last = list(epoch_batches(short, epoch=0, epochs=1, batch_size=96, window=window, negative=4, learning_rate=0.025,
                              min_learning_rate=1e-4, seed=0, share=8, chunk=384))[-1]
    assert len(last["mask"]) == 80 and not last["mask"][79].any() and last["mask"][:79].any(axis=1).sum() > 70
    assert list(last["tokens"][-window - 1:]) == [0] * (window + 1)  # the corpus end's margin, then the padded centre
    # the tf.data pipeline hands the generator's batches over in stacked groups and splits them again
    from dlapps.apps.word2vec.config import Word2VecConfig
    from dlapps.apps.word2vec.data import make_training_dataset

    config = Word2VecConfig(batch_size=96, window=window, negative=4, shared_negatives=8, epochs=1, learning_rate=0.025,
                            window_draw="word")  # one reach: batches keep their order
    direct = list(epoch_batches(short, epoch=0, epochs=1, batch_size=96, window=window, negative=4, learning_rate=0.025,
                                min_learning_rate=config.min_learning_rate, seed=config.seed, share=8))
    piped = list(make_training_dataset(short, config, {"epoch": 0}, group=5).as_numpy_iterator())
    assert len(piped) == len(direct) == 21
    for ours, theirs in zip(piped, direct):
        assert all(np.array_equal(ours[key], theirs[key]) for key in theirs)


def test_window_drawn_per_batch_keeps_the_pair_odds_and_narrows_each_batch():
    """window_draw="batch": each batch has one reach r (tokens B + 2r, mask B x 2r), and a pair
    at distance d is trained on as often as with gensim's per-word draw: (window - d + 1) / window."""
    from dlapps.apps.word2vec.config import Word2VecConfig
    from dlapps.apps.word2vec.data import Corpus, epoch_batches, keep_probabilities, negative_cdf, make_training_dataset

    counts = np.array([40] * 50, dtype=np.int64)
    ids = np.random.default_rng(4).permutation(np.repeat(np.arange(50, dtype=np.int32), counts))  # 2,000 words
    corpus = Corpus(ids, np.arange(len(ids), dtype=np.int32) // 25, keep_probabilities(counts, 0), negative_cdf(counts))
    window, size = 4, 8
    # pairs inside a sentence at each distance, whatever the draw: one per centre and side, each epoch
    seen = np.array([2 * (corpus.sentence_ids[d:] == corpus.sentence_ids[:-d]).sum() * 12 for d in range(1, window + 1)])
    odds = {}
    for draw in ("word", "batch"):
        on, reaches = np.zeros(window + 1), set()
        for epoch in range(12):
            for batch in epoch_batches(corpus, epoch=epoch, epochs=12, batch_size=size, window=window, negative=3,
                                       learning_rate=0.025, min_learning_rate=1e-4, seed=0, window_draw=draw):
                reach = batch["mask"].shape[1] // 2
                reaches.add(reach)
                assert len(batch["tokens"]) == len(batch["mask"]) + 2 * reach
                for j, offset in enumerate([o for o in range(-reach, reach + 1) if o]):
                    on[abs(offset)] += batch["mask"][:, j].sum()
        odds[draw] = on[1:] / seen
        assert reaches == ({window} if draw == "word" else set(range(1, window + 1)))
    expected = (window - np.arange(1, window + 1) + 1) / window
    np.testing.assert_allclose(odds["word"], expected, atol=0.02)
    np.testing.assert_allclose(odds["batch"], expected, atol=0.06)
    # the pipeline groups batches of one reach together and hands every batch over once
    config = Word2VecConfig(batch_size=size, window=window, negative=3, epochs=1, window_draw="batch")
    direct = list(epoch_batches(corpus, epoch=0, epochs=1, batch_size=size, window=window, negative=3, learning_rate=0.025,
                                min_learning_rate=config.min_learning_rate, seed=config.seed, share=config.shared_negatives,
                                window_draw="batch"))
    piped = list(make_training_dataset(corpus, config, {"epoch": 0}, group=5).as_numpy_iterator())
    key = lambda b: (float(b["learning_rate"]), b["tokens"].tobytes(), b["mask"].tobytes())  # noqa: E731
    assert sorted(map(key, piped)) == sorted(map(key, direct)) and len(direct) == 250


def _reference_step(word, context, tokens, mask, negatives, rate, objective, cap):
    """One batch of gensim's updates written pair by pair from the batch's starting vectors
    (the step applies them summed), with the per-row cap: what the Keras step must produce."""
    window, size, share = mask.shape[1] // 2, len(mask), len(mask) // len(negatives)
    offsets = [o for o in range(-window, window + 1) if o]
    d_word, d_context = np.zeros_like(word), np.zeros_like(context)
    n_word, n_context = np.zeros(len(word)), np.zeros(len(context))
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    for b in range(size):
        centre = tokens[window + b]
        targets = [(centre, 1.0, 1.0)] + [(n, 0.0, float(n != centre)) for n in negatives[b // share]]
        contexts = [tokens[window + b + o] for j, o in enumerate(offsets) if mask[b, j]]
        if objective == "skipgram":
            for x in contexts:
                n_word[x] += 1
                for t, label, weight in targets:
                    g = (label - sigmoid(word[x] @ context[t])) * weight * rate
                    d_word[x] += g * context[t]
                    d_context[t] += g * word[x]
                    n_context[t] += weight
        elif contexts:
            hidden = np.mean([word[x] for x in contexts], axis=0)
            d_hidden = np.zeros_like(hidden)
            for t, label, weight in targets:
                g = (label - sigmoid(hidden @ context[t])) * weight * rate
                d_hidden += g * context[t]
                d_context[t] += g * hidden
                n_context[t] += weight
            for x in contexts:
                d_word[x] += d_hidden
                n_word[x] += 1
    if cap:
        d_word /= np.maximum(1, n_word / cap)[:, None]
        d_context /= np.maximum(1, n_context / cap)[:, None]
    return word + d_word, context + d_context


@pytest.mark.parametrize("objective, share, cap, size, window", [
    ("skipgram", 1, 0, 6, 2), ("skipgram", 2, 3, 6, 2), ("cbow", 2, 0, 6, 2), ("cbow", 1, 2, 6, 2),
    ("skipgram", 1, 0, 5, 2),  # an odd number of centres
    ("cbow", 3, 2, 3, 2),  # one group of negatives for the whole batch
    ("skipgram", 2, 0, 6, 1), ("cbow", 1, 0, 6, 3),  # other reaches: a batch's width is its own
])
def test_train_step_matches_pairwise_reference(objective, share, cap, size, window):
    import keras
    import tensorflow as tf

    from dlapps.apps.word2vec.model import Word2Vec

    rng = np.random.default_rng(3)
    vocabulary, dim = [f"w{i}" for i in range(9)], 4
    model = Word2Vec(vocabulary, [10] * 9, dim=dim, objective=objective, row_update_cap=cap)
    model.context_embedding.embeddings.assign(rng.normal(0, 0.5, (9, dim)).astype(np.float32))
    model.word_embedding.embeddings.assign(rng.normal(0, 0.5, (9, dim)).astype(np.float32))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    tokens = rng.integers(0, 9, size + 2 * window).astype(np.int32)  # repeats: rows updated by several pairs
    mask = (rng.random((size, 2 * window)) < 0.7).astype(np.float32)
    mask[0] = 0  # a centre without context
    negatives = rng.integers(0, 9, (size // share, 3)).astype(np.int32)
    negatives[0, 0] = tokens[window]  # a negative equal to its centre is skipped
    word, context = model.vectors(), keras.ops.convert_to_numpy(model.context_embedding.embeddings)
    batch = {"tokens": tokens, "mask": mask, "negatives": negatives, "learning_rate": np.float32(0.2)}
    model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0, shuffle=False)
    expected_word, expected_context = _reference_step(word, context, tokens, mask, negatives, 0.2, objective, cap)
    np.testing.assert_allclose(model.vectors(), expected_word, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.context_embedding.embeddings), expected_context, atol=1e-5)


def test_training_keeps_freed_memory_and_restores_glibc_defaults():
    """With the settings of `keep_freed_memory`, repeated 3 MiB temporaries reuse freed memory
    instead of faulting fresh pages in each time (glibc only: elsewhere it does nothing)."""
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's mallopt")
    script = """
import resource
import numpy as np
from dlapps.shared.runtime import keep_freed_memory

def faults():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        np.ones(3 << 18, np.float32)  # 3 MiB (768 pages) written; from 4 MiB numpy asks for huge pages
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

restore = keep_freed_memory()
kept = faults()
restore()  # glibc's defaults: blocks above 128 KiB are mapped and unmapped one by one
print(kept, faults())
"""
    import subprocess
    import sys

    kept, default = map(int, subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split())
    assert default > 20 * 700 and kept < 1000, (kept, default)


# --- bad input: one line, exit 2, nothing overwritten ---------------------------------------------


@pytest.mark.parametrize(
    "content, fragments",
    [
        (": section\nread reads write writes\nread reads write\n", ["q.txt", "line 3", "4 words"]),
        ("\n\n", ["q.txt", "no analogy questions"]),
    ],
)
def test_malformed_analogy_file(run_dir, tmp_path, content, fragments):
    path = tmp_path / "q.txt"
    path.write_text(content)
    assert_user_error(run_cli("word2vec", "evaluate", "--analogies", path, "-m", run_dir), *fragments)


@pytest.mark.parametrize(
    "content, fragments",
    [
        ("# c\nw1\tw2\tscore\ntrue\tfalse\t8\nread\twrite\thigh\n", ["s.tsv", "line 4", "'high' is not a number"]),
        ("true\tfalse\t8\nread\n", ["s.tsv", "line 2", "expected 'word1 word2 score'"]),
    ],
)
def test_malformed_similarity_file(run_dir, tmp_path, content, fragments):
    path = tmp_path / "s.tsv"
    path.write_text(content)
    assert_user_error(run_cli("word2vec", "evaluate", "--similarity", path, "-m", run_dir), *fragments)


def test_query_and_evaluate_errors(run_dir, tmp_path):
    assert_user_error(run_cli("word2vec", "predict", "true", "xyzzyq", "-m", run_dir), "'xyzzyq' is not in the vocabulary")
    assert_user_error(run_cli("word2vec", "predict", "retrun", "-m", run_dir), "did you mean 'return'")
    assert_user_error(run_cli("word2vec", "predict", "--analogy", "true", "false", "-m", run_dir), "three words")
    assert_user_error(run_cli("word2vec", "predict", "-m", run_dir), "no input")
    assert_user_error(run_cli("word2vec", "evaluate", "-m", run_dir), "nothing to evaluate")
    assert_user_error(run_cli("word2vec", "evaluate", "-s", tmp_path / "none.tsv", "-m", run_dir), "none.tsv", "no such file")
    assert_user_error(run_cli("word2vec", "predict", "true", "-m", tmp_path / "nothing"), "no trained model here", "dlapps word2vec train")
    quiet = run_subprocess("word2vec", "export", "-m", tmp_path / "nothing")
    assert_user_error(quiet, "no trained model here")
