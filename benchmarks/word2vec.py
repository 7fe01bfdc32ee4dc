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
evaluate_word_analogies) are printed as a cross-check. `--seeds N` trains N models of each (seeds
SEED..SEED+N-1; gensim's worker threads make even one seed vary between runs) and compares the means.
Prints a table per seed (and of the means) and ends with one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from statistics import fmean as mean

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from dlapps.apps.word2vec import data as w2v_data  # noqa: E402
from dlapps.apps.word2vec.config import Word2VecConfig  # noqa: E402
import seeds  # noqa: E402  (benchmarks/seeds.py, beside this script)


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


def run_gensim(sentences, args, seed):
    from gensim.models import Word2Vec

    model = Word2Vec(vector_size=args.dim, window=args.window, negative=args.negative, min_count=args.min_count,
                     sample=args.sample, sg=int(args.model == "skipgram"), workers=args.workers, seed=seed,
                     alpha=0.025, min_alpha=1e-4)
    started = time.time()
    model.build_vocab(sentences)
    vocab_seconds = time.time() - started
    started = time.time()
    model.train(sentences, total_examples=model.corpus_count, epochs=args.epochs)
    return model, vocab_seconds, time.time() - started


def score_gensim(model, analogies, similarity, args) -> dict:
    """gensim's vectors scored by our evaluator, and its own evaluators as a cross-check."""
    from dlapps.apps.word2vec import app

    vectors = app.Vectors(list(model.wv.index_to_key), model.wv.vectors)
    scores = {"vocabulary_size": len(model.wv)}
    if analogies:
        scores["analogies"] = app.evaluate_analogies(vectors, analogies, args.restrict_vocab)
        if args.gensim_evaluator:  # slow (tens of seconds); it gives the same figure as ours
            own_score, _ = model.wv.evaluate_word_analogies(str(analogies), restrict_vocab=args.restrict_vocab)
            scores["analogies"]["gensim_own_evaluator"] = own_score
    scores["similarity"] = [app.evaluate_similarity(vectors, Path(p)) for p in similarity]
    for result, path in zip(scores["similarity"], similarity):
        result["gensim_own_spearman"] = float(model.wv.evaluate_word_pairs(path)[1].statistic)
    return scores


def train_ours(config, analogies, similarity, restrict_vocab):
    """Trains one model through the app (``dlapps word2vec train``'s code path) and scores it."""
    from dlapps.apps.word2vec.app import APP, Word2VecEvaluateOptions
    from dlapps.shared import training

    started = time.time()
    metrics = training.train(APP, config)
    wall = time.time() - started
    model = training.load_model(config.out, "word2vec")
    options = Word2VecEvaluateOptions(analogies=str(analogies or ""), similarity=[str(p) for p in similarity],
                                      restrict_vocab=restrict_vocab)
    return metrics, APP.evaluate(model, options, options), wall


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
    parser.add_argument("--shared-negatives", type=int, default=Word2VecConfig.shared_negatives)
    parser.add_argument("--window-draw", choices=("word", "batch"), default=Word2VecConfig.window_draw,
                        help="ours: reduced window drawn per centre word (gensim's way) or per batch (less work)")
    parser.add_argument("--restrict-vocab", type=int, default=30000)
    parser.add_argument("--token-pattern", default="[a-z]+")
    parser.add_argument("--max-files", type=int, default=0, help="use only the first N files of a corpus folder")
    parser.add_argument("--seed", type=int, default=0, help="first seed (ours and gensim: SEED..SEED+N-1)")
    parser.add_argument("--seeds", type=int, default=1, help="train this many models of ours and of gensim (seeds) on the same corpus")
    parser.add_argument("--gensim-evaluator", action="store_true", help="also score gensim's analogies with its own (slow) evaluator")
    parser.add_argument("--out", default="", help="our run folder (default: a temporary folder); with --seeds N, OUT/seed_S")
    args = parser.parse_args()
    if os.environ.get("PYTHONHASHSEED") is None:
        print("note: PYTHONHASHSEED is not set, so gensim's initial vectors differ between runs")

    with tempfile.TemporaryDirectory() as scratch:
        corpus = corpus_folder(args.corpus, args.max_files, scratch)
        base = dict(data=corpus, epochs=args.epochs, model=args.model, dim=args.dim, window=args.window,
                    negative=args.negative, min_count=args.min_count, sample=args.sample, batch_size=args.batch_size,
                    row_update_cap=args.row_update_cap, shared_negatives=args.shared_negatives, token_pattern=args.token_pattern,
                    window_draw=args.window_draw)
        # the same sentences for gensim, from the app's own tokeniser
        sentences, source = w2v_data.read_corpus(Word2VecConfig(**base))
        words = sum(len(s) for s in sentences)
        print(f"corpus {source}: {words} words in {len(sentences)} sentences")

        analogies = Path(args.analogies) if args.analogies else None
        similarity = args.similarity
        # gensim once per seed too: its worker threads make even one seed vary between runs by
        # about as much as the gap being measured, so one gensim run is no yardstick
        peers = []
        for seed in range(args.seed, args.seed + args.seeds):
            gensim_model, gensim_vocab_seconds, gensim_seconds = run_gensim(sentences, args, seed)
            peers.append({"seed": seed, "train_seconds": gensim_seconds, **score_gensim(gensim_model, analogies, similarity, args)})
            print(f"gensim, seed {seed}: {gensim_seconds:.1f} s training, vocabulary {len(gensim_model.wv)} "
                  f"(built in {gensim_vocab_seconds:.1f} s)", flush=True)
            del gensim_model
        del sentences

        runs = []
        for seed in range(args.seed, args.seed + args.seeds):
            folder = Path(args.out or Path(scratch) / "run")
            out = folder / f"seed_{seed}" if args.seeds > 1 else folder
            metrics, ours, wall = train_ours(Word2VecConfig(**base, out=str(out), seed=seed), analogies, similarity,
                                             args.restrict_vocab)
            runs.append({"seed": seed, "train_seconds": metrics["train_seconds"], "wall": wall, **ours})
            print(f"ours, seed {seed}: {metrics['train_seconds']:.1f} s training", flush=True)


    def figures(run, peer):
        """name -> (ours, gensim) for one seed of each."""
        rows = {"training seconds": (run["train_seconds"], peer["train_seconds"]),
                "words per second": (words * args.epochs / run["train_seconds"], words * args.epochs / peer["train_seconds"]),
                "vocabulary": (run["vocabulary_size"], peer["vocabulary_size"])}
        if analogies:
            rows[f"analogy accuracy ({run['analogies']['questions']} / {peer['analogies']['questions']} usable)"] = (
                run["analogies"]["accuracy"], peer["analogies"]["accuracy"])
        for mine, theirs in zip(run.get("similarity", []), peer["similarity"]):
            rows[f"Spearman {Path(mine['file']).name} ({mine['pairs']} pairs)"] = (mine["spearman"], theirs["spearman"])
        return rows

    tables = [(f"seed {run['seed']}", figures(run, peer)) for run, peer in zip(runs, peers)]
    if len(runs) > 1:
        each = [rows for _, rows in tables]
        tables.append((f"mean of {len(runs)} seeds", {name: (mean([rows[name][0] for rows in each]), mean([rows[name][1] for rows in each]))
                                                      for name in each[0]}))
    for title, rows in tables:
        print()
        print(f"{'figure, ' + title:<46} {'ours':>12} {'gensim':>12} {'ours/gensim':>12}")
        for name, (mine, theirs) in rows.items():
            ratio = mine / theirs if theirs else float("nan")
            print(f"{name:<46} {mine:>12.4f} {theirs:>12.4f} {ratio:>12.3f}")
    for run in runs:
        print(f"ours, seed {run['seed']}: wall {run['wall']:.1f} s including reading and writing files")
    for peer in peers:
        if analogies and args.gensim_evaluator:
            print(f"gensim seed {peer['seed']}: its own evaluate_word_analogies on its vectors: {peer['analogies']['gensim_own_evaluator']:.4f}")
        for theirs in peer["similarity"]:
            print(f"gensim seed {peer['seed']}: its own evaluate_word_pairs Spearman on {Path(theirs['file']).name}: {theirs['gensim_own_spearman']:.4f}")

    def headline(run):
        return run["analogies"]["accuracy"] if analogies else run["similarity"][0]["spearman"]

    values = [headline(run) for run in runs]
    our_value = seeds.summary(values)
    seconds = [run["train_seconds"] for run in runs]
    peer_values = [headline(peer) for peer in peers]
    peer_seconds = [peer["train_seconds"] for peer in peers]
    peer_value = mean(peer_values)
    print(json.dumps({
        "app": "word2vec",
        "data": args.corpus + (f" (first {args.max_files} files)" if args.max_files else ""),
        "test": args.analogies or similarity[0],
        "metric": f"analogy accuracy (restrict_vocab {args.restrict_vocab})" if analogies else "similarity Spearman",
        "value": our_value["mean"],
        "seeds": {"seed": [run["seed"] for run in runs], "value": our_value, "train_seconds": seeds.summary(seconds)},
        "peer": f"gensim Word2Vec ({args.workers} workers)",
        "peer_value": round(peer_value, 4),
        "peer_seeds": {"seed": [peer["seed"] for peer in peers], "value": seeds.summary(peer_values), "train_seconds": seeds.summary(peer_seconds)},
        "value_ratio": round(mean(values) / peer_value, 4) if peer_value else None,
        "train_seconds": round(mean(seconds), 1),
        "peer_seconds": round(mean(peer_seconds), 1),
        "time_ratio": round(mean(seconds) / mean(peer_seconds), 3),
        "words": words,
        "words_per_second": round(words * args.epochs / mean(seconds)),
        "peer_words_per_second": round(words * args.epochs / mean(peer_seconds)),
        "analogy_questions": runs[0]["analogies"]["questions"] if analogies else None,
        "similarity": {Path(name).name: {"ours": seeds.summary([run["similarity"][i]["spearman"] for run in runs]),
                                          "peer": seeds.summary([peer["similarity"][i]["spearman"] for peer in peers])}
                       for i, name in enumerate(similarity)},
        "model": args.model, "epochs": args.epochs, "batch_size": args.batch_size, "shared_negatives": args.shared_negatives,
        "window_draw": args.window_draw,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()
