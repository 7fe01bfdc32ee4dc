"""Translation benchmark: the Transformer and the attention GRU on one held-out set, same run.

    python benchmarks/translate.py --train ../shared/data/translation/multi30k --src de --tgt en [--test PREFIX] [--minutes N] [--arch rnn|transformer|both]
    python benchmarks/translate.py --train ../shared/data/translation/fra-eng/fra.txt --max-pairs 60000 --minutes 10

Each architecture trains through `dlapps translate train` (shared.training) for at most --minutes,
picking its epoch by validation BLEU, then translates the held-out set greedily and with beam
search. Without --test the folder's validation split is the held-out set (Multi30k as stored here
has no test2016), so it also chose the epoch: say so when quoting the figure. Scores are corpus
sacreBLEU (13a) and chrF on detokenised output against the raw references.

The peer, in the same run: with --arch both, the GRU for the Transformer; with one architecture,
copying the source unchanged (the floor any model must clear). Published figures for Multi30k
de->en test2016 (bentrevett/pytorch-seq2seq, torchtext BLEU on spaCy tokens, not sacreBLEU):
attention GRU 28.1, 3-layer Transformer 36.5. Ends with one JSON line of figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from dlapps.apps.translate import data as translate_data  # noqa: E402
from dlapps.apps.translate.app import APP, bleu_and_chrf, translate  # noqa: E402
from dlapps.shared.config import resolve  # noqa: E402

# Sizes for minutes of 2-core CPU training (bentrevett's GPU Transformer is 3 layers of 256).
ARCH_SETTINGS = {
    "transformer": {"arch": "transformer", "embedding_dim": 256, "num_layers": 2, "num_heads": 4,
                    "intermediate_dim": 512, "dropout": 0.1, "learning_rate": 1e-3, "warmup_steps": 400},
    "rnn": {"arch": "rnn", "embedding_dim": 256, "units": 256, "num_layers": 1, "dropout": 0.3,
            "learning_rate": 2e-3, "warmup_steps": 200},
}


def decode_figures(model, pairs, beam: int, batch_size: int) -> dict:
    started = time.time()
    out = translate(model, pairs.sources, beam=beam, batch_size=batch_size)
    seconds = time.time() - started
    return {**bleu_and_chrf(out["translations"], pairs.targets), "seconds": round(seconds, 1),
            "sentences_per_second": round(len(pairs) / seconds, 1), "translations": out["translations"]}


def run_arch(name: str, train_data: str, test, args, scratch: Path) -> dict:
    from dlapps.shared import training

    overrides = {"data": train_data, "out": str(scratch / name), "src": args.src, "tgt": args.tgt, "reverse": args.reverse,
                 "seed": args.seed, "max_minutes": args.minutes, "epochs": 100, "patience": 0, "batch_size": 64,
                 **ARCH_SETTINGS[name]}
    overrides.update(kv.split("=", 1) for kv in args.set)
    config = resolve(APP.config, None, overrides)
    started = time.time()
    metrics = training.train(APP, config)
    train_seconds = time.time() - started
    model = training.load_model(scratch / name, "translate")
    greedy = decode_figures(model, test, 1, 64)
    beam = decode_figures(model, test, args.beam, 32)
    print(f"{name}: greedy BLEU {greedy['bleu']:.2f} chrF {greedy['chrf']:.2f} ({greedy['sentences_per_second']} sent/s); "
          f"beam {args.beam} BLEU {beam['bleu']:.2f} chrF {beam['chrf']:.2f} ({beam['sentences_per_second']} sent/s); "
          f"{metrics['epochs_run']} epochs in {train_seconds:.0f} s", flush=True)
    return {"greedy": greedy, "beam": beam, "train_seconds": round(train_seconds, 1), "epochs": metrics["epochs_run"],
            "best_epoch": metrics["best_epoch"], "parameters": model.count_params(), "config": dataclasses.asdict(config)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="a folder with train/val pairs, a PREFIX of line-aligned files, or a TSV file")
    parser.add_argument("--src", default="", help="source language (file suffix)")
    parser.add_argument("--tgt", default="", help="target language (file suffix)")
    parser.add_argument("--reverse", action="store_true", help="TSV: translate the second column into the first")
    parser.add_argument("--test", help="held-out PREFIX (PREFIX.SRC + PREFIX.TGT) or TSV; default: the validation split")
    parser.add_argument("--minutes", type=float, default=45.0, help="training time budget per architecture (the targets are for 45)")
    parser.add_argument("--arch", default="both", choices=("rnn", "transformer", "both"))
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--max-pairs", type=int, default=0, help="use only the first N training pairs (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra translate config values")
    args = parser.parse_args()

    base = resolve(APP.config, None, {"data": args.train, "src": args.src, "tgt": args.tgt, "reverse": args.reverse,
                                       "seed": args.seed})
    train, val, _ = translate_data.load_splits(base)
    test = translate_data.evaluation_pairs(args.test, base) if args.test else val
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        train_data = args.train
        if args.max_pairs and len(train) > args.max_pairs:
            # A TSV of the first pairs, plus the same validation pairs, keeps the run comparable.
            rows = [f"{s}\t{t}\n" for s, t in zip(train.sources[: args.max_pairs], train.targets[: args.max_pairs])]
            (scratch / "pairs").mkdir()
            (scratch / "pairs" / "train.tsv").write_text("".join(rows), encoding="utf-8")
            (scratch / "pairs" / "val.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in zip(val.sources, val.targets)), encoding="utf-8")
            train_data, args.reverse = str(scratch / "pairs"), False
        print(f"train {min(len(train), args.max_pairs or len(train))} pairs, test {len(test)} pairs ({args.test or 'validation split'})", flush=True)
        names = ["transformer", "rnn"] if args.arch == "both" else [args.arch]
        results = {name: run_arch(name, train_data, test, args, scratch) for name in names}

    copy = bleu_and_chrf(list(test.sources), test.targets)
    main_name = names[0]
    ours = results[main_name]
    for i in range(3):
        print(f"\nsource:    {test.sources[i]}\nreference: {test.targets[i]}")
        for name in names:
            print(f"{name + ' beam':<17}: {results[name]['beam']['translations'][i]}")
    print(f"\ncopy-source baseline: BLEU {copy['bleu']:.2f} chrF {copy['chrf']:.2f}; signature {ours['beam']['bleu_signature']}")
    peer, peer_value = ("rnn (same run, beam)", results["rnn"]["beam"]["bleu"]) if len(names) == 2 else ("copy source", copy["bleu"])
    figures = {
        name: {
            "bleu_greedy": r["greedy"]["bleu"], "bleu_beam": r["beam"]["bleu"], "chrf_greedy": r["greedy"]["chrf"],
            "chrf_beam": r["beam"]["chrf"], "greedy_sentences_per_second": r["greedy"]["sentences_per_second"],
            "beam_sentences_per_second": r["beam"]["sentences_per_second"], "train_seconds": r["train_seconds"],
            "epochs": r["epochs"], "best_epoch": r["best_epoch"], "parameters": r["parameters"],
        }
        for name, r in results.items()
    }
    print(json.dumps({
        "app": "translate",
        "data": args.train,
        "test": args.test or "validation split",
        "metric": f"sacreBLEU (beam {args.beam})",
        "value": ours["beam"]["bleu"],
        "model": main_name,
        "peer": peer,
        "peer_value": peer_value,
        "train_seconds": ours["train_seconds"],
        "copy_source_bleu": copy["bleu"],
        "signature": ours["beam"]["bleu_signature"],
        "archs": figures,
    }))


if __name__ == "__main__":
    main()
