"""Sentiment benchmark: our BiLSTM against TF-IDF + logistic regression, same split, same run.

    python benchmarks/sentiment.py --train ../shared/data/sentiment/rt-polarity [--test PATH] [--minutes 5]
    python benchmarks/sentiment.py --train ../shared/data/sentiment/sst2/train.tsv --test ../shared/data/sentiment/sst2/dev.tsv --minutes 15

Without --test, a seeded stratified 90/10 split of --train is the held-out set. Ours trains on the
rest (holding out its own 10% for checkpoint selection); the peer's C is chosen by 5-fold CV on
the same training texts. Ends with one JSON line of figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from dlapps.apps.sentiment import data as sentiment_data  # noqa: E402
from dlapps.apps.sentiment.config import SentimentConfig  # noqa: E402
from dlapps.shared import data as data_lib  # noqa: E402
from dlapps.shared.errors import UserError  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="training data in any format the sentiment app reads")
    parser.add_argument("--test", help="held-out data; default: a seeded stratified 10%% of --train")
    parser.add_argument("--minutes", type=float, default=5.0, help="training time budget for our model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoding", default="auto", help="text encoding; auto tries UTF-8 then Latin-1")
    parser.add_argument("--out", default="", help="run folder (default: a temporary folder)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra sentiment config values")
    args = parser.parse_args()

    full = read(args.train, args.encoding)
    if args.test:
        train, test = full, read(args.test, args.encoding)
    else:
        train_index, test_index = data_lib.split_indices(len(full), 0.1, args.seed, stratify=full.labels)
        train = sentiment_data.TextDataset([full.texts[i] for i in train_index], [full.labels[i] for i in train_index])
        test = sentiment_data.TextDataset([full.texts[i] for i in test_index], [full.labels[i] for i in test_index])
    print(f"train {len(train)} texts, test {len(test)} texts, labels {sorted(set(train.labels))}")

    peer_accuracy, peer_seconds = peer(train, test, args.seed)
    print(f"peer TF-IDF(1-2) + LogisticRegression: accuracy {peer_accuracy:.4f} ({peer_seconds:.1f} s)")

    from dlapps.apps.sentiment.app import APP
    from dlapps.shared import training
    from dlapps.shared.config import resolve

    with tempfile.TemporaryDirectory() as scratch:
        table = Path(scratch) / "train.tsv"
        with open(table, "w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
            writer.writerow(["label", "text"])
            writer.writerows(zip(train.labels, train.texts))
        out = args.out or str(Path(scratch) / "run")
        # --set values win over the benchmark's own (a model seed other than the split's, say).
        overrides = {"data": str(table), "out": out, "seed": args.seed, "max_minutes": args.minutes, "epochs": 100}
        overrides.update(kv.split("=", 1) for kv in args.set)
        config = resolve(SentimentConfig, None, overrides)
        started = time.time()
        metrics = training.train(APP, config)
        train_seconds = time.time() - started
        test_table = Path(scratch) / "test.tsv"
        with open(test_table, "w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file, delimiter="\t")
            writer.writerow(["label", "text"])
            writer.writerows(zip(test.labels, test.texts))
        options = resolve(APP.evaluate_options, None, {"data": str(test_table)})
        result = APP.evaluate(training.load_model(out, "sentiment"), APP.evaluation_data(config, options), options)

    print()
    print(f"{'model':<40} {'accuracy':>9} {'seconds':>8}")
    print(f"{'ours: BiLSTM (' + ','.join(map(str, config.lstm_units)) + '), ' + config.pooling + ' pooling':<40} {result['accuracy']:>9.4f} {train_seconds:>8.1f}")
    print(f"{'peer: TF-IDF 1-2 grams + LogisticRegression':<40} {peer_accuracy:>9.4f} {peer_seconds:>8.1f}")
    print(f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']}; macro F1 {result['macro_f1']:.4f}")
    print(json.dumps({
        "app": "sentiment",
        "data": args.train,
        "test": args.test or "seeded stratified 10% of --train",
        "metric": "accuracy",
        "value": round(result["accuracy"], 4),
        "peer": "tfidf-1-2gram+logreg(C by 5-fold CV)",
        "peer_value": round(peer_accuracy, 4),
        "train_seconds": round(train_seconds, 1),
        "peer_seconds": round(peer_seconds, 1),
        "best_epoch": metrics["best_epoch"],
        "test_examples": len(test),
    }))


if __name__ == "__main__":
    main()
