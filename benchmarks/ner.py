"""NER benchmark: our BiLSTM-CRF against a CRF with hand-crafted features (sklearn-crfsuite), same
data, same run. Both train on --train; ours keeps the epoch with the best --dev entity F1.

    python benchmarks/ner.py --train ../shared/data/conll2003/train.txt --dev ../shared/data/conll2003/valid.txt [--test PATH] [--minutes N]
    python benchmarks/ner.py ... --w2v-corpus ../shared/data/word2vec/wikipedia [--w2v-trainer dlapps]   # + pretrained vectors

With --w2v-corpus, skip-gram vectors (100 dims, window 5, lower-cased, min_count 3) are first trained
on that folder of text files (timed separately) by gensim or, with --w2v-trainer dlapps, by our own
word2vec app, and passed as --embeddings in word2vec text format; --embeddings FILE uses existing
vectors. Without either, word vectors start random (char CNN + casing only). Scores are seqeval
entity F1 (conlleval). --seeds N trains N model seeds on the same vectors and reports each, their
mean and spread (max - min); the JSON value is the mean.
Ends with one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from dlapps.apps.ner import data as ner_data  # noqa: E402
import seeds  # noqa: E402  (benchmarks/seeds.py and vectors.py, beside this script)
from vectors import dlapps_vectors, gensim_vectors  # noqa: E402


def crf_features(tokens: list[str], i: int) -> dict:
    """The sklearn-crfsuite tutorial's word features with a +-1 window (POS columns are not used,
    as our model does not use them either)."""
    word = tokens[i]
    features = {"bias": 1.0, "word.lower()": word.lower(), "word[-3:]": word[-3:], "word[-2:]": word[-2:],
                "word.isupper()": word.isupper(), "word.istitle()": word.istitle(), "word.isdigit()": word.isdigit()}
    for offset, name in ((-1, "-1"), (1, "+1")):
        j = i + offset
        if 0 <= j < len(tokens):
            other = tokens[j]
            features.update({f"{name}:word.lower()": other.lower(), f"{name}:word.istitle()": other.istitle(),
                             f"{name}:word.isupper()": other.isupper()})
        else:
            features["BOS" if offset < 0 else "EOS"] = True
    return features


def peer(train, tests: dict) -> tuple[dict, float]:
    import sklearn_crfsuite
    from seqeval.metrics import f1_score

    started = time.time()
    crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=0.1, c2=0.1, max_iterations=100, all_possible_transitions=True)
    crf.fit([[crf_features(s, i) for i in range(len(s))] for s in train.tokens], train.tags)
    seconds = time.time() - started
    scores = {}
    for name, sentences in tests.items():
        predicted = crf.predict([[crf_features(s, i) for i in range(len(s))] for s in sentences.tokens])
        scores[name] = f1_score(sentences.tags, predicted)
    return scores, seconds


TOKEN = r"\w+(?:[-.,]\w+)*|[^\w\s]"  # words with inner hyphens, dots, commas ("U.S.", "1,000"); punctuation alone


def train_word2vec(corpus: str, scratch: Path, seed: int, trainer: str) -> tuple[Path, float]:
    """Lower-cased skip-gram vectors from every text file under `corpus`, in word2vec text format,
    trained by gensim or by `dlapps word2vec` with the same options and tokens."""
    if trainer == "dlapps":
        return dlapps_vectors(corpus, scratch / "word2vec", seed, TOKEN, min_count=3)
    token = re.compile(TOKEN)
    return gensim_vectors(corpus, scratch / "vectors.txt", seed, lambda line: token.findall(line.lower()), min_count=3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, help="CoNLL training file")
    parser.add_argument("--dev", required=True, help="CoNLL validation file (checkpoint selection and the headline figure)")
    parser.add_argument("--test", help="held-out CoNLL file, scored once at the end")
    parser.add_argument("--minutes", type=float, default=25.0, help="training time budget of our model")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lstm-units", default="100")
    parser.add_argument("--head", default="crf", choices=("crf", "softmax"))
    parser.add_argument("--embeddings", default="", help="word2vec file to initialise word vectors")
    parser.add_argument("--w2v-corpus", default="", help="folder of text files to train word2vec vectors on first")
    parser.add_argument("--w2v-trainer", default="gensim", choices=("gensim", "dlapps"),
                        help="what trains the --w2v-corpus vectors: gensim, or our own `dlapps word2vec` (same options)")
    parser.add_argument("--seed", type=int, default=0, help="the first model seed (the vectors use it too)")
    parser.add_argument("--seeds", type=int, default=1, help="model seeds to train on the same vectors (mean and spread)")
    parser.add_argument("--out", default="", help="run folder, with --seeds N > 1, OUT/seed_K each (default: a temporary folder)")
    args = parser.parse_args()

    from dlapps.apps.ner.app import APP, entity_scores
    from dlapps.apps.ner.config import NerConfig
    from dlapps.shared import training
    from dlapps.shared.config import resolve

    train = ner_data.read_conll(args.train)
    tests = {"dev": ner_data.read_conll(args.dev)}
    if args.test:
        tests["test"] = ner_data.read_conll(args.test)
    peer_scores, peer_seconds = peer(train, tests)
    print(f"peer CRF: {peer_scores} in {peer_seconds:.1f} s", flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        embeddings, w2v_seconds = args.embeddings, 0.0
        if args.w2v_corpus:
            embeddings, w2v_seconds = train_word2vec(args.w2v_corpus, Path(scratch), args.seed, args.w2v_trainer)
            print(f"{args.w2v_trainer} word2vec vectors trained in {w2v_seconds:.1f} s", flush=True)
        data_dir = Path(scratch) / "data"
        data_dir.mkdir()
        (data_dir / "train.txt").symlink_to(Path(args.train).resolve())
        (data_dir / "valid.txt").symlink_to(Path(args.dev).resolve())
        runs = []  # one per model seed, all on the same vectors
        for seed in range(args.seed, args.seed + args.seeds):
            out = Path(args.out or Path(scratch) / "run")
            out = out / f"seed_{seed}" if args.seeds > 1 else out
            config = resolve(NerConfig, None, {
                "data": str(data_dir), "out": str(out), "epochs": args.epochs, "batch_size": args.batch_size, "seed": seed,
                "lstm_units": args.lstm_units, "head": args.head, "embeddings": str(embeddings or ""), "patience": 6,
                "max_minutes": args.minutes,
            })
            started = time.time()
            metrics = training.train(APP, config)
            seconds = time.time() - started
            model = training.load_model(out, "ner")
            scores = {name: entity_scores(model, sentences) for name, sentences in tests.items()}
            runs.append({"seed": seed, "scores": scores, "metrics": metrics, "seconds": seconds})
            print(f"seed {seed}: dev F1 {scores['dev']['f1']:.4f} (best epoch {metrics['best_epoch']} of {metrics['epochs_run']}, "
                  f"{seconds:.1f} s); dev F1 per epoch {metrics.get('val_f1_per_epoch')}", flush=True)

    f1 = {split: seeds.summary([r["scores"][split]["f1"] for r in runs]) for split in tests}

    print()
    print(f"{'model':<52} " + " ".join(f"{name + ' F1':>9}" for name in tests) + f" {'seconds':>8}")
    name = f"ours: BiLSTM({args.lstm_units})-{args.head.upper()} + char CNN" + (" + w2v" if embeddings else "")
    for r in runs:
        print(f"{name + ', seed ' + str(r['seed']):<52} " + " ".join(f"{r['scores'][n]['f1']:>9.4f}" for n in tests) + f" {r['seconds']:>8.1f}")
    if len(runs) > 1:
        print(f"{'ours: mean of ' + str(len(runs)) + ' seeds (spread: max - min)':<52} "
              + " ".join(f"{f1[n]['mean']:>9.4f}" for n in tests) + "\n" + f"{'':<52} "
              + " ".join(f"{'±' + format(f1[n]['spread'], '.4f'):>9}" for n in tests))
    print(f"{'peer: CRF, hand-crafted features (crfsuite)':<52} " + " ".join(f"{peer_scores[n]:>9.4f}" for n in tests) + f" {peer_seconds:>8.1f}")
    print("dev per type (first seed): " + ", ".join(f"{k} {v['f1-score']:.4f}" for k, v in runs[0]["scores"]["dev"]["per_type"].items()))
    result = {
        "app": "ner",
        "data": args.train,
        "metric": "seqeval entity F1 on --dev" + (f", mean of {len(runs)} model seeds" if len(runs) > 1 else ""),
        "value": f1["dev"]["mean"],
        "values": f1["dev"]["each"],
        "seeds": [r["seed"] for r in runs],
        "spread": f1["dev"]["spread"],
        "peer": "sklearn-crfsuite CRF (tutorial word features, +-1 window, no POS)",
        "peer_value": round(peer_scores["dev"], 4),
        "train_seconds": [round(r["seconds"], 1) for r in runs],
        "peer_seconds": round(peer_seconds, 1),
        "embeddings": f"{args.w2v_trainer} word2vec on {args.w2v_corpus}" if args.w2v_corpus else (embeddings or "random init"),
        "embedding_seconds": round(w2v_seconds, 1),
        "best_epochs": [r["metrics"]["best_epoch"] for r in runs],
        "epochs_run": [r["metrics"]["epochs_run"] for r in runs],
        "dev_precision": [round(r["scores"]["dev"]["precision"], 4) for r in runs],
        "dev_recall": [round(r["scores"]["dev"]["recall"], 4) for r in runs],
    }
    if args.test:
        result.update(test_value=f1["test"]["mean"], test_values=f1["test"]["each"],
                      test_peer_value=round(peer_scores["test"], 4))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
