"""NER benchmark: our BiLSTM-CRF against a CRF with hand-crafted features (sklearn-crfsuite), same
data, same run. Both train on --train; ours keeps the epoch with the best --dev loss.

    python benchmarks/ner.py --train ../shared/data/conll2003/train.txt --dev ../shared/data/conll2003/valid.txt [--test PATH] [--minutes N]
    python benchmarks/ner.py ... --w2v-corpus ../shared/data/word2vec/wikipedia   # + pretrained vectors

With --w2v-corpus, gensim word2vec (skip-gram, 100 dims, lower-cased) is first trained on that folder
of text files (timed separately) and passed as --embeddings in word2vec text format, exactly what the
word2vec app writes; --embeddings FILE uses existing vectors. Scores are seqeval entity F1 (conlleval).
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
from vectors import gensim_vectors  # noqa: E402  (benchmarks/vectors.py, beside this script)


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


def train_word2vec(corpus: str, out: Path, seed: int) -> tuple[Path, float]:
    """Lower-cased skip-gram vectors from every text file under `corpus`, in word2vec text format."""
    token = re.compile(r"\w+(?:[-.,]\w+)*|[^\w\s]")
    return gensim_vectors(corpus, out, seed, lambda line: token.findall(line.lower()), min_count=3)


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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="run folder (default: a temporary one)")
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
            embeddings, w2v_seconds = train_word2vec(args.w2v_corpus, Path(scratch) / "vectors.txt", args.seed)
            print(f"word2vec vectors trained in {w2v_seconds:.1f} s", flush=True)
        data_dir = Path(scratch) / "data"
        data_dir.mkdir()
        (data_dir / "train.txt").symlink_to(Path(args.train).resolve())
        (data_dir / "valid.txt").symlink_to(Path(args.dev).resolve())
        out = args.out or str(Path(scratch) / "run")
        config = resolve(NerConfig, None, {
            "data": str(data_dir), "out": out, "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
            "lstm_units": args.lstm_units, "head": args.head, "embeddings": str(embeddings or ""), "patience": 6,
            "max_minutes": args.minutes,
        })
        started = time.time()
        metrics = training.train(APP, config)
        train_seconds = time.time() - started
        model = training.load_model(out, "ner")
        ours = {name: entity_scores(model, sentences) for name, sentences in tests.items()}

    print()
    print(f"{'model':<48} " + " ".join(f"{name + ' F1':>9}" for name in tests) + f" {'seconds':>8}")
    name = f"ours: BiLSTM({args.lstm_units})-{args.head.upper()} + char CNN" + (" + w2v" if embeddings else "")
    print(f"{name:<48} " + " ".join(f"{ours[n]['f1']:>9.4f}" for n in tests) + f" {train_seconds:>8.1f}")
    print(f"{'peer: CRF, hand-crafted features (crfsuite)':<48} " + " ".join(f"{peer_scores[n]:>9.4f}" for n in tests) + f" {peer_seconds:>8.1f}")
    print(f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']}; dev F1 per epoch {metrics.get('val_f1_per_epoch')}")
    print("dev per type: " + ", ".join(f"{k} {v['f1-score']:.4f}" for k, v in ours["dev"]["per_type"].items()))
    result = {
        "app": "ner",
        "data": args.train,
        "metric": "seqeval entity F1 on --dev",
        "value": round(ours["dev"]["f1"], 4),
        "peer": "sklearn-crfsuite CRF (tutorial word features, +-1 window, no POS)",
        "peer_value": round(peer_scores["dev"], 4),
        "train_seconds": round(train_seconds, 1),
        "peer_seconds": round(peer_seconds, 1),
        "embeddings": "gensim word2vec on " + args.w2v_corpus if args.w2v_corpus else (embeddings or "random init"),
        "embedding_seconds": round(w2v_seconds, 1),
        "best_epoch": metrics["best_epoch"],
        "epochs_run": metrics["epochs_run"],
        "dev_precision": round(ours["dev"]["precision"], 4),
        "dev_recall": round(ours["dev"]["recall"], 4),
    }
    if args.test:
        result.update(test_value=round(ours["test"]["f1"], 4), test_peer_value=round(peer_scores["test"], 4))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
