"""Sentiment benchmark: our model against TF-IDF + logistic regression, same split, same run.

    python benchmarks/sentiment.py --train ../shared/data/sentiment/rt-polarity [--test PATH] [--minutes 5] [--seeds 3]
    python benchmarks/sentiment.py --train ../shared/data/sentiment/sst2/train.tsv --test ../shared/data/sentiment/sst2/dev.tsv --minutes 15
    ... --w2v-corpus ../shared/data/word2vec/wikipedia [--w2v-out vectors.txt]   # + gensim vectors trained first
    ... --embeddings vectors.txt                                                  # + existing word2vec vectors

Without --test, a seeded (--seed) stratified 90/10 split of --train is the held-out set. Ours
trains on the rest through the app (`dlapps sentiment train` on a table of those texts: the app
holds out its own 10% for checkpoint selection, by whole sentence when the data is phrase-level as
SST-2's train.tsv is); the peer's C is chosen by 5-fold CV on the same training texts. --seeds N
trains N models (config seeds --seed ... --seed+N-1: initialisation, shuffling and the app's own
validation draw) on the same split and reports each, their mean and spread (max - min);
--ensemble K also merges each K consecutive seed models into one model (model.py's merge_models),
keeps it as a run folder and scores it. With
--w2v-corpus, gensim skip-gram vectors (100 dims, window 5, 5 negatives, min_count 5, 5 epochs) are
trained first on every .txt file under it, tokenised as the app's preprocessor tokenises (lower
case, punctuation stripped, split on whitespace), and passed as --embeddings. Ends with one JSON
line of figures.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import re
import string
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from dlapps.apps.sentiment import data as sentiment_data  # noqa: E402
from dlapps.apps.sentiment.config import SentimentConfig  # noqa: E402
from dlapps.shared import data as data_lib  # noqa: E402
from dlapps.shared.errors import UserError  # noqa: E402
import seeds  # noqa: E402  (benchmarks/seeds.py and vectors.py, beside this script)
from vectors import gensim_vectors  # noqa: E402


def read(path: str, encoding: str) -> sentiment_data.TextDataset:
    """All labelled texts at `path`; falls back to Latin-1 for corpora like rt-polarity."""
    for candidate in ([encoding] if encoding != "auto" else ["utf-8", "latin-1"]):
        try:
            return sentiment_data.read_path(path, SentimentConfig(encoding=candidate))
        except UserError as error:
            if "is not valid" not in str(error) or candidate == "latin-1":
                raise
    raise AssertionError("unreachable")


def peer(train: sentiment_data.TextDataset, test: sentiment_data.TextDataset, seed: int) -> tuple[float, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    started = time.time()
    pipeline = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True),
        LogisticRegression(max_iter=2000, random_state=seed),
    )
    search = GridSearchCV(pipeline, {"logisticregression__C": [0.5, 1, 2, 4, 8, 16]}, cv=5, n_jobs=1)
    search.fit(train.texts, train.labels)
    accuracy = float(search.score(test.texts, test.labels))
    return accuracy, time.time() - started


def train_word2vec(corpus: str, out: Path, seed: int) -> tuple[Path, float]:
    """Skip-gram vectors of every .txt file under `corpus` in word2vec text format, tokenised like
    the app's TextPreprocessor (lower_and_strip_punctuation, then whitespace) so words match."""
    punctuation = re.compile(f"[{re.escape(string.punctuation)}]")
    return gensim_vectors(corpus, out, seed, lambda line: punctuation.sub("", line.lower()).split(), min_count=5)


def write_table(path: Path, data: sentiment_data.TextDataset) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["label", "text"])
        writer.writerows(zip(data.labels, data.texts))
    return path


def merge_and_score(group: list[dict], parent: Path, test_table: Path) -> dict:
    """The seed models of `group` merged into one model (model.py's merge_models), saved as a run
    folder that evaluate and export read, and scored on the held-out table."""
    from dlapps.apps.sentiment.app import APP
    from dlapps.apps.sentiment.model import merge_models
    from dlapps.shared import files, training
    from dlapps.shared.config import resolve

    merged = merge_models([training.load_model(r["out"], "sentiment") for r in group])
    folder = parent / f"ensemble_{group[0]['seed']}-{group[-1]['seed']}"
    folder.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(training.run_config(group[0]["out"], SentimentConfig), members=merged.members)
    files.write_json(folder / "config.json", config.to_dict())
    training.save_model(merged, folder / "model.keras")
    options = resolve(APP.evaluate_options, None, {"data": str(test_table)})
    result = APP.evaluate(training.load_model(folder, "sentiment"), APP.evaluation_data(config, options), options)
    print(f"ensemble of seeds {[r['seed'] for r in group]}: accuracy {result['accuracy']:.4f} ({folder})", flush=True)
    return {"seeds": [r["seed"] for r in group], "accuracy": result["accuracy"], "folder": str(folder)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="training data in any format the sentiment app reads")
    parser.add_argument("--test", help="held-out data; default: a seeded stratified 10%% of --train")
    parser.add_argument("--minutes", type=float, default=5.0, help="training time budget for our model")
    parser.add_argument("--seed", type=int, default=0, help="split seed, and the first model seed")
    parser.add_argument("--seeds", type=int, default=1, help="model seeds to train on the same split (mean and spread)")
    parser.add_argument("--encoding", default="auto", help="text encoding; auto tries UTF-8 then Latin-1")
    parser.add_argument("--out", default="", help="run folder (default: a temporary folder); with --seeds N > 1, OUT/seed_K each")
    parser.add_argument("--embeddings", default="", help="word2vec vectors to initialise the embeddings")
    parser.add_argument("--w2v-corpus", default="", help="folder of .txt files to train gensim word2vec vectors on first")
    parser.add_argument("--w2v-out", default="", help="where --w2v-corpus vectors are written (default: a temporary file)")
    parser.add_argument("--ensemble", type=int, default=0, metavar="K",
                        help="also merge each K consecutive seed models into one K-member model and score it "
                             "(--seeds 9 --ensemble 3: three ensembles, their mean and spread); kept in OUT/ensemble_A-B")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra sentiment config values")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.ensemble and not 2 <= args.ensemble <= args.seeds:
        parser.error("--ensemble K needs 2 <= K <= --seeds")

    full = read(args.train, args.encoding)
    if args.test:
        train, test = full, read(args.test, args.encoding)
    else:
        train_index, test_index = data_lib.split_indices(len(full), 0.1, args.seed, stratify=full.labels)
        train = sentiment_data.TextDataset([full.texts[i] for i in train_index], [full.labels[i] for i in train_index])
        test = sentiment_data.TextDataset([full.texts[i] for i in test_index], [full.labels[i] for i in test_index])
    print(f"train {len(train)} texts, test {len(test)} texts, labels {sorted(set(train.labels))}", flush=True)

    peer_accuracy, peer_seconds = peer(train, test, args.seed)
    print(f"peer TF-IDF(1-2) + LogisticRegression: accuracy {peer_accuracy:.4f} ({peer_seconds:.1f} s)", flush=True)

    from dlapps.apps.sentiment.app import APP
    from dlapps.shared import training
    from dlapps.shared.config import resolve

    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        embeddings, w2v_seconds = args.embeddings, 0.0
        if args.w2v_corpus:
            target = Path(args.w2v_out) if args.w2v_out else Path(scratch) / "vectors.txt"
            embeddings, w2v_seconds = train_word2vec(args.w2v_corpus, target, args.seed)
            print(f"word2vec vectors trained in {w2v_seconds:.1f} s: {embeddings}", flush=True)
        table = write_table(Path(scratch) / "train.tsv", train)
        test_table = write_table(Path(scratch) / "test.tsv", test)
        for k in range(args.seeds):
            seed = args.seed + k
            out = str(Path(args.out) / f"seed_{seed}") if args.out and args.seeds > 1 else args.out
            out = out or str(Path(scratch) / f"run_seed_{seed}")
            # --set values win over the benchmark's own (a learning rate, an architecture).
            overrides = {"data": str(table), "out": out, "seed": seed, "max_minutes": args.minutes, "epochs": 100}
            if embeddings:
                overrides["embeddings"] = str(embeddings)
            overrides.update(kv.split("=", 1) for kv in args.set)
            config = resolve(SentimentConfig, None, overrides)
            started = time.time()
            metrics = training.train(APP, config)
            train_seconds = time.time() - started
            options = resolve(APP.evaluate_options, None, {"data": str(test_table)})
            result = APP.evaluate(training.load_model(out, "sentiment"), APP.evaluation_data(config, options), options)
            runs.append({"seed": seed, "out": out, "accuracy": result["accuracy"], "macro_f1": result["macro_f1"], "seconds": train_seconds,
                         "best_epoch": metrics["best_epoch"], "epochs_run": metrics["epochs_run"]})
            print(f"seed {seed}: accuracy {result['accuracy']:.4f} (best epoch {metrics['best_epoch']} of "
                  f"{metrics['epochs_run']}, {train_seconds:.1f} s)", flush=True)
        ensembles = [merge_and_score(runs[k: k + args.ensemble], Path(args.out or scratch), test_table)
                     for k in range(0, len(runs) - args.ensemble + 1, args.ensemble)] if args.ensemble else []

    accuracy = seeds.summary([r["accuracy"] for r in runs])
    ensemble = seeds.summary([e["accuracy"] for e in ensembles]) if ensembles else None
    members = f"{config.members} x " if config.members > 1 else ""
    encoder = f"CNN ({','.join(map(str, config.filter_widths))} x {config.feature_maps})" if config.arch == "cnn" else \
        f"BiLSTM ({','.join(map(str, config.lstm_units))}), {config.pooling} pooling"
    name = f"ours: {members}{encoder}" + (" + w2v" if embeddings else "")
    print()
    print(f"{'model':<52} {'accuracy':>9} {'seconds':>8}")
    for r in runs:
        print(f"{name + ', seed ' + str(r['seed']):<52} {r['accuracy']:>9.4f} {r['seconds']:>8.1f}")
    if len(runs) > 1:
        print(f"{'ours: mean of ' + str(len(runs)) + ' seeds (spread ' + format(accuracy['spread'], '.4f') + ')':<52} {accuracy['mean']:>9.4f}")
    for e in ensembles:
        print(f"{'ensemble of seeds ' + '+'.join(map(str, e['seeds'])) + ' (one model)':<52} {e['accuracy']:>9.4f}")
    if len(ensembles) > 1:
        print(f"{'ensembles: mean of ' + str(len(ensembles)) + ' (spread ' + format(ensemble['spread'], '.4f') + ')':<52} {ensemble['mean']:>9.4f}")
    print(f"{'peer: TF-IDF 1-2 grams + LogisticRegression':<52} {peer_accuracy:>9.4f} {peer_seconds:>8.1f}")
    print(json.dumps({
        "app": "sentiment",
        "data": args.train,
        "test": args.test or "seeded stratified 10% of --train",
        "metric": "accuracy",
        "model": name[len("ours: "):],
        "value": accuracy["mean"],
        "values": accuracy["each"],
        "seeds": [r["seed"] for r in runs],
        "spread": accuracy["spread"],
        "peer": "tfidf-1-2gram+logreg(C by 5-fold CV)",
        "peer_value": round(peer_accuracy, 4),
        "train_seconds": [round(r["seconds"], 1) for r in runs],
        "peer_seconds": round(peer_seconds, 1),
        "embeddings": f"gensim word2vec on {args.w2v_corpus}" if args.w2v_corpus else (embeddings or "random init"),
        "embedding_seconds": round(w2v_seconds, 1),
        "best_epochs": [r["best_epoch"] for r in runs],
        "test_examples": len(test),
        "set": args.set,
        **({"ensemble_value": ensemble["mean"], "ensemble_values": ensemble["each"], "ensemble_spread": ensemble["spread"],
            "ensemble_seeds": [e["seeds"] for e in ensembles]} if ensemble else {}),
    }))


if __name__ == "__main__":
    main()
