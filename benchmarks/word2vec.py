"""word2vec benchmark: ours against gensim 4's Word2Vec, same settings, same sentences, same run.

    PYTHONHASHSEED=0 python benchmarks/word2vec.py --corpus ../shared/data/word2vec/wikipedia \\
        --analogies ../shared/data/word2vec/questions-words.txt \\
        --similarity ../shared/data/word2vec/wordsim353.tsv [--similarity MORE ...] [--epochs 5] [--max-files N]

Both train skip-gram (or --model cbow) with dim 100, window 5, negative 5, min_count 5, sample 1e-3,
5 epochs; gensim with 2 workers. Sentences: the corpus is lower-cased, split at line breaks and
. ! ? ; : and tokenised as runs of --token-pattern (default [a-z]+), by the app's own tokeniser for
both. The held-out sets are the analogy questions (--test is an alias of --analogies) and the
similarity files; both models are scored by the app's evaluator (gensim's protocol: analogies
restricted to the 30,000 most frequent words, case-insensitive; similarity pairs with an unknown
word skipped); gensim's own evaluate_word_pairs (and with --gensim-evaluator its slow
evaluate_word_analogies) are printed as a cross-check. Prints a table and ends with one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from dlapps.apps.word2vec import data as w2v_data  # noqa: E402
from dlapps.apps.word2vec.config import Word2VecConfig  # noqa: E402


def corpus_folder(corpus: str, max_files: int, scratch: str) -> str:
    """The corpus itself, or a folder of links to its first `max_files` files (a documented subset)."""
    path = Path(corpus)
    if not max_files or path.is_file():
        return corpus
    subset = Path(scratch) / "corpus"
    subset.mkdir()
    for file in w2v_data.corpus_files(path)[:max_files]:
        (subset / file.name).symlink_to(file.resolve())
    return str(subset)


def run_gensim(sentences, args):
    from gensim.models import Word2Vec

    model = Word2Vec(vector_size=args.dim, window=args.window, negative=args.negative, min_count=args.min_count,
                     sample=args.sample, sg=int(args.model == "skipgram"), workers=args.workers, seed=args.seed,
                     alpha=0.025, min_alpha=1e-4)
    started = time.time()
    model.build_vocab(sentences)
    vocab_seconds = time.time() - started
    started = time.time()
    model.train(sentences, total_examples=model.corpus_count, epochs=args.epochs)
    return model, vocab_seconds, time.time() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="text file or folder")
    parser.add_argument("--analogies", "--test", dest="analogies", help="questions-words analogy file")
    parser.add_argument("--similarity", action="append", default=[], help="WordSim-353/SimLex style file (repeatable)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--model", choices=("skipgram", "cbow"), default="skipgram")
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--negative", type=int, default=5)
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--sample", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=2, help="gensim worker threads")
    parser.add_argument("--batch-size", type=int, default=Word2VecConfig.batch_size)
    parser.add_argument("--row-update-cap", type=float, default=Word2VecConfig.row_update_cap)
    parser.add_argument("--restrict-vocab", type=int, default=30000)
    parser.add_argument("--token-pattern", default="[a-z]+")
    parser.add_argument("--max-files", type=int, default=0, help="use only the first N files of a corpus folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gensim-evaluator", action="store_true", help="also score gensim's analogies with its own (slow) evaluator")
    parser.add_argument("--out", default="", help="our run folder (default: a temporary folder)")
    args = parser.parse_args()
    if os.environ.get("PYTHONHASHSEED") is None:
        print("note: PYTHONHASHSEED is not set, so gensim's initial vectors differ between runs")

    from dlapps.apps.word2vec import app

    with tempfile.TemporaryDirectory() as scratch:
        corpus = corpus_folder(args.corpus, args.max_files, scratch)
        out = args.out or str(Path(scratch) / "run")
        config = Word2VecConfig(
            data=corpus, out=out, epochs=args.epochs, model=args.model, dim=args.dim, window=args.window,
            negative=args.negative, min_count=args.min_count, sample=args.sample, batch_size=args.batch_size,
            row_update_cap=args.row_update_cap, token_pattern=args.token_pattern, seed=args.seed,
        )
        # the same sentences for gensim, from the app's own tokeniser
        sentences, source = w2v_data.read_corpus(config)
        words = sum(len(s) for s in sentences)
        print(f"corpus {source}: {words} words in {len(sentences)} sentences")

        gensim_model, gensim_vocab_seconds, gensim_seconds = run_gensim(sentences, args)
        print(f"gensim: {gensim_seconds:.1f} s training, vocabulary {len(gensim_model.wv)}")
        del sentences

        started = time.time()
        metrics = app.train(config)
        our_wall = time.time() - started
        ours_seconds = metrics["train_seconds"]

        similarity = args.similarity
        analogies = Path(args.analogies) if args.analogies else None
        ours = app.evaluate(out, analogies, [Path(p) for p in similarity], args.restrict_vocab)
        peer_vectors = app.Vectors(list(gensim_model.wv.index_to_key), gensim_model.wv.vectors)
        peer = {"vocabulary_size": len(gensim_model.wv)}
        if analogies:
            peer["analogies"] = app.evaluate_analogies(peer_vectors, analogies, args.restrict_vocab)
            if args.gensim_evaluator:  # slow (tens of seconds); it gives the same figure as ours
                own_score, _ = gensim_model.wv.evaluate_word_analogies(str(analogies), restrict_vocab=args.restrict_vocab)
                peer["analogies"]["gensim_own_evaluator"] = own_score
        peer["similarity"] = [app.evaluate_similarity(peer_vectors, Path(p)) for p in similarity]
        for result, path in zip(peer["similarity"], similarity):
            result["gensim_own_spearman"] = float(gensim_model.wv.evaluate_word_pairs(path)[1].statistic)

    ours_rate, peer_rate = words * args.epochs / ours_seconds, words * args.epochs / gensim_seconds
    rows = [("training seconds", ours_seconds, gensim_seconds), ("words per second", ours_rate, peer_rate),
            ("vocabulary", ours["vocabulary_size"], peer["vocabulary_size"])]
    if analogies:
        rows.append((f"analogy accuracy ({ours['analogies']['questions']} / {peer['analogies']['questions']} usable)",
                     ours["analogies"]["accuracy"], peer["analogies"]["accuracy"]))
    for mine, theirs in zip(ours.get("similarity", []), peer["similarity"]):
        rows.append((f"Spearman {Path(mine['file']).name} ({mine['pairs']} pairs)", mine["spearman"], theirs["spearman"]))
    print()
    print(f"{'figure':<46} {'ours':>12} {'gensim':>12} {'ours/gensim':>12}")
    for name, mine, theirs in rows:
        ratio = mine / theirs if theirs else float("nan")
        print(f"{name:<46} {mine:>12.4f} {theirs:>12.4f} {ratio:>12.3f}")
    if analogies and args.gensim_evaluator:
        print(f"gensim's own evaluate_word_analogies on its vectors: {peer['analogies']['gensim_own_evaluator']:.4f}")
    for theirs in peer["similarity"]:
        print(f"gensim's own evaluate_word_pairs Spearman on {Path(theirs['file']).name}: {theirs['gensim_own_spearman']:.4f}")
    print(f"ours: wall {our_wall:.1f} s including reading and writing files; gensim vocabulary build {gensim_vocab_seconds:.1f} s")

    value = ours["analogies"]["accuracy"] if analogies else ours["similarity"][0]["spearman"]
    peer_value = peer["analogies"]["accuracy"] if analogies else peer["similarity"][0]["spearman"]
    print(json.dumps({
        "app": "word2vec",
        "data": args.corpus + (f" (first {args.max_files} files)" if args.max_files else ""),
        "test": args.analogies or similarity[0],
        "metric": f"analogy accuracy (restrict_vocab {args.restrict_vocab})" if analogies else "similarity Spearman",
        "value": round(value, 4),
        "peer": f"gensim Word2Vec ({args.workers} workers)",
        "peer_value": round(peer_value, 4),
        "train_seconds": round(ours_seconds, 1),
        "peer_seconds": round(gensim_seconds, 1),
        "words": words,
        "words_per_second": round(ours_rate),
        "peer_words_per_second": round(peer_rate),
        "analogy_questions": ours["analogies"]["questions"] if analogies else None,
        "similarity": {Path(m["file"]).name: {"ours": round(m["spearman"], 4), "peer": round(t["spearman"], 4)}
                       for m, t in zip(ours.get("similarity", []), peer["similarity"])},
        "model": args.model, "epochs": args.epochs, "batch_size": args.batch_size,
    }))


if __name__ == "__main__":
    main()
