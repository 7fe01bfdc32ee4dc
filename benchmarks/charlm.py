"""Benchmark: charlm against the keras-io character LSTM, same text, same split, same time budget.

    python benchmarks/charlm.py --data ../shared/data/tinyshakespeare/input.txt --minutes 20 [--arch gru,transformer]

Split: the first 90% of --data trains, the last 10% validates (the char-rnn / nanoGPT convention);
--test PATH scores both models on a held-out text as well. Ours: what `dlapps charlm train` runs
(shared.training.train with the app's hooks) with the options below, every position of
128-character windows predicted, once per architecture of --arch (default: GRU, then a small
Transformer, each for --minutes: equal time). Peer: the keras-io "character-level text generation with LSTM"
configuration: one LSTM(128) over one-hot 40-character windows (step 3) predicting the next
character, softmax, RMSprop(0.01), batch 128. Both train for --minutes each, one after the other,
and are scored by the same definition: perplexity = exp(mean negative log-likelihood per predicted
character); ours reads the text through 128-character windows overlapping by half (model.py's
scoring windows): the first 128 characters are predicted from all that precede them, every later
one from at least 64; the peer predicts each character after the first 40 from the 40 before it
(its fixed input). --seeds N trains N seeds of each architecture and reports each, their mean and spread
(max - min; the peer trains once). --out keeps the run folders (OUT/ARCH, OUT/ARCH/seed_K with
--seeds) for `dlapps charlm evaluate` on other text. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import seeds  # benchmarks/seeds.py, beside this script

PEER_WINDOW, PEER_STEP = 40, 3


def train_peer(train_text: str, vocabulary: list[str], minutes: float, seed: int):
    """The keras-io reference, fed one-hot windows from tf.data (the same inputs as its
    NumPy arrays, without holding 333k x 40 x V booleans in memory)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    index = {c: i for i, c in enumerate(vocabulary)}
    ids = np.array([index[c] for c in train_text], dtype=np.int32)
    starts = np.arange(0, len(ids) - PEER_WINDOW, PEER_STEP)
    size = len(vocabulary)

    def example(start):
        window = tf.gather(ids, tf.range(start, start + PEER_WINDOW + 1))
        return tf.one_hot(window[:-1], size), tf.one_hot(window[-1], size)

    dataset = (tf.data.Dataset.from_tensor_slices(starts).shuffle(len(starts), seed=seed)
               .map(example, num_parallel_calls=tf.data.AUTOTUNE).batch(128).prefetch(tf.data.AUTOTUNE))
    model = keras.Sequential([keras.Input((PEER_WINDOW, size)), keras.layers.LSTM(128), keras.layers.Dense(size, activation="softmax")])
    model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.RMSprop(learning_rate=0.01))

    from dlapps.shared.training import time_limit

    started = time.time()
    history = model.fit(dataset, epochs=1000, callbacks=[time_limit(minutes)], verbose=2)
    return model, time.time() - started, len(history.history["loss"])


def score_peer(model, text: str, vocabulary: list[str]) -> dict:
    """Mean NLL of every character after the first 40 of `text`, each from the 40 before it."""
    import tensorflow as tf

    index = {c: i for i, c in enumerate(vocabulary)}
    ids = np.array([index.get(c, -1) for c in text], dtype=np.int32)
    if (ids < 0).any():
        raise SystemExit(f"the peer's vocabulary lacks characters of this text: {sorted(set(c for c in text if c not in index))}")
    size, total = len(vocabulary), 0.0
    targets = np.arange(PEER_WINDOW, len(ids))
    for begin in range(0, len(targets), 4096):
        batch = targets[begin : begin + 4096]
        windows = np.stack([ids[t - PEER_WINDOW : t] for t in batch])
        probabilities = model.predict_on_batch(tf.one_hot(windows, size))
        total += float(-np.log(np.maximum(probabilities[np.arange(len(batch)), ids[batch]], 1e-12)).sum())
    nats = total / len(targets)
    return {"perplexity": math.exp(nats), "bits_per_character": nats / math.log(2), "predicted_characters": len(targets)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="UTF-8 text; first 90%% trains, last 10%% validates")
    parser.add_argument("--test", help="a held-out text both models are also scored on")
    parser.add_argument("--minutes", type=float, default=20.0, help="training time for each model")
    parser.add_argument("--seed", type=int, default=0, help="the first model seed (the peer uses it)")
    parser.add_argument("--seeds", type=int, default=1, help="model seeds per architecture, each --minutes (mean and spread)")
    parser.add_argument("--arch", default="gru,transformer",
                        help="our architectures, comma-separated, each trained for --minutes (the first is the headline)")
    parser.add_argument("--units", default="512", help="recurrent units per layer, e.g. 512 or 256,256")
    parser.add_argument("--embedding-dim", type=int, default=64, help="recurrent models' character vector size")
    parser.add_argument("--model-dim", type=int, default=192, help="the transformer's width")
    parser.add_argument("--num-layers", type=int, default=4, help="transformer blocks")
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.0,
                        help="peak learning rate (default: 2e-3 for LSTM/GRU, 1e-3 for the transformer)")
    parser.add_argument("--schedule", default="cosine", choices=("cosine", "plateau"))
    parser.add_argument("--out", default="", help="parent of one run folder per architecture (default: a temporary folder)")
    parser.add_argument("--skip-peer", action="store_true", help="train only ours (for tuning; no peer figure)")
    args = parser.parse_args(argv)
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    if not archs or any(a not in ("lstm", "gru", "transformer") for a in archs):
        parser.error(f"--arch: a comma-separated list of lstm, gru, transformer (got {args.arch!r})")

    from dlapps.apps.charlm import data as charlm_data
    from dlapps.apps.charlm.app import APP, generate_text, score_text
    from dlapps.apps.charlm.config import CharLMConfig
    from dlapps.shared import config as config_lib
    from dlapps.shared import training

    text = charlm_data.read_file(Path(args.data))
    splits = charlm_data.split_text(text, 0.1)
    test_text = charlm_data.read_file(Path(args.test)) if args.test else None
    parent = Path(args.out or tempfile.mkdtemp(prefix="charlm-bench-"))

    ours = []  # one dict per (arch, seed), in --arch order
    for arch in archs:
        transformer = arch == "transformer"
        for seed in range(args.seed, args.seed + args.seeds):
            config = CharLMConfig(
                data=args.data, out=str(parent / arch / (f"seed_{seed}" if args.seeds > 1 else "")), epochs=1000,
                max_minutes=args.minutes, seed=seed, val_fraction=0.1, arch=arch, units=[int(u) for u in args.units.split(",")],
                embedding_dim=args.model_dim if transformer else args.embedding_dim, num_layers=args.num_layers,
                num_heads=args.num_heads, dropout=args.dropout, sequence_length=args.sequence_length, batch_size=args.batch_size,
                learning_rate=args.learning_rate or (1e-3 if transformer else 2e-3), schedule=args.schedule,
            )
            config_lib.validate(config, source="benchmark options")
            metrics = training.train(APP, config)
            model = training.load_model(config.out, "charlm")
            shape = (f"{args.num_layers}x{args.model_dim}, {args.num_heads} heads" if transformer
                     else f"{args.units} units, embedding {args.embedding_dim}")
            ours.append({
                "arch": arch, "seed": seed, "metrics": metrics, "val": score_text(model, splits.val),
                "test": score_text(model, test_text) if test_text else None,
                "description": f"{arch} {shape}, {model.count_params():,} parameters, dropout {args.dropout}, "
                               f"window {args.sequence_length}, lr {config.learning_rate:g} {args.schedule}",
                "sample": generate_text(model, "ROMEO:", 300, temperature=0.8, top_k=40, seed=seed),
            })

    peer_val = peer_test = None
    peer_seconds = peer_epochs = 0
    if not args.skip_peer:
        vocabulary = sorted(set(text) | set(test_text or ""))  # keras-io: every character of the corpus
        peer, peer_seconds, peer_epochs = train_peer(splits.train, vocabulary, args.minutes, args.seed)
        peer_val = score_peer(peer, splits.val, vocabulary)
        peer_test = score_peer(peer, test_text, vocabulary) if test_text else None

    def figure(run):  # the test figure when there is a test text, else validation
        return (run["test"] or run["val"])["perplexity"]

    def summary(arch):
        runs = [run for run in ours if run["arch"] == arch]
        perplexity = seeds.summary([figure(run) for run in runs])
        return {"value": perplexity["mean"], "values": perplexity["each"],
                "spread": perplexity["spread"], "model": runs[0]["description"],
                "train_seconds": [round(run["metrics"]["train_seconds"], 1) for run in runs],
                "epochs": [run["metrics"]["epochs_run"] for run in runs],
                "bits_per_character": round(sum((run["test"] or run["val"])["bits_per_character"] for run in runs) / len(runs), 4)}

    print()
    print(f"{'model':<52} {'val ppl':>8} {'val bpc':>8} {'test ppl':>9} {'train s':>8} {'epochs':>7}")
    rows = [(f"ours: {run['arch']}" + (f", seed {run['seed']}" if args.seeds > 1 else ""), run["val"], run["test"],
             run["metrics"]["train_seconds"], run["metrics"]["epochs_run"]) for run in ours]
    if peer_val:
        rows.append(("peer: keras-io LSTM(128), 40-char windows, RMSprop", peer_val, peer_test, peer_seconds, peer_epochs))
    for name, val, test, seconds, epochs in rows:
        shown_test = f"{test['perplexity']:>9.3f}" if test else f"{'-':>9}"
        print(f"{name:<52} {val['perplexity']:>8.3f} {val['bits_per_character']:>8.3f} {shown_test} {seconds:>8.0f} {epochs:>7}")
    if args.seeds > 1:
        for arch in archs:
            shown = summary(arch)
            print(f"ours: {arch}, mean of {args.seeds} seeds: {shown['value']:.3f} (spread max - min {shown['spread']:.3f})")
    for run in ours:
        print(f"\n{run['description']}, seed {run['seed']}\nSample (ROMEO:, temperature 0.8, top-k 40):\nROMEO:{run['sample']}")
    print(f"\nRun folders: {parent}/{{{','.join(archs)}}}\n")

    headline = summary(archs[0])
    result = {
        "app": "charlm",
        "data": args.data + (f" (test {args.test})" if args.test else " (last 10% validation)"),
        "metric": f"{'test' if test_text else 'validation'} perplexity per character"
                  + (f", mean of {args.seeds} seeds" if args.seeds > 1 else ""),
        **headline,
        "others": {arch: summary(arch) for arch in archs[1:]},
        "peer": "keras-io LSTM(128), 40-char windows step 3, RMSprop 0.01, batch 128",
        "peer_value": round((peer_test or peer_val)["perplexity"], 4) if peer_val else None,
        "peer_bits_per_character": round((peer_test or peer_val)["bits_per_character"], 4) if peer_val else None,
        "peer_train_seconds": round(peer_seconds, 1),
        "peer_epochs": peer_epochs,
        "minutes_each": args.minutes,
    }
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
