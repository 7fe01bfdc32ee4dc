"""Classify benchmark: the same backbone fine-tuned from pretrained weights and trained from scratch,
same split, same run; frozen pretrained features + logistic regression as the reference fine-tuning
has to beat.

    python benchmarks/classify.py --train ../shared/data/hymenoptera/train \\
        --weights ../shared/data/imagenet_weights/mobilenet_2_5_224_tf_no_top.h5 [--test DIR | --folds 5] \\
        [--minutes 8] [--seeds 3] [--out DIR]

Without --test, a seeded (--seed) stratified 20% of --train is the held-out set; with ``--folds K``,
each of K seeded stratified folds is held out in turn (the others train), so every image is scored
once and the figures are accuracies over all of them (one 49-image split moves 2 points an image).
The pretrained runs use the app's own defaults (``--set KEY=VALUE`` changes them), trained with its ``train`` on all the
other images (--val-fraction 0, like the reference) and scored with its ``evaluate``; ``--seeds N``
trains N of them (seeds --seed, --seed+1, ...) on the same split and prints each, the mean and the
spread (max - min). The from-scratch peer (``--weights none``, 40 epochs) trains for the first
``--peer-seeds`` seeds. The reference runs at the models' image size and, when that differs, at
224. ``--out DIR`` keeps the run folders (``pretrained_seedN``, ``scratch_seedN``) with the split's
``train.csv`` / ``test.csv`` (with --folds, in ``DIR/foldK``): ``dlapps classify evaluate -m DIR/pretrained_seed0
--data DIR/test.csv``.
Unusable files (train/ants/imageNotFound.gif) are skipped with a warning by the app's reader.
Ends with one JSON line of figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from dlapps.apps.classify import data as classify_data  # noqa: E402
from dlapps.apps.classify.app import APP  # noqa: E402
from dlapps.apps.classify.config import ClassifyEvaluateOptions  # noqa: E402
from dlapps.shared import data as data_lib  # noqa: E402
from dlapps.shared.config import resolve  # noqa: E402
import seeds  # noqa: E402  (benchmarks/seeds.py, beside this script)


def write_csv(image_set: classify_data.ImageSet, path: Path) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label"])
        writer.writerows(zip((Path(s).resolve() for s in image_set.sources), image_set.labels))
    return path


def inference_variants(image_size: int, test_sizes: list[int]) -> dict[str, dict]:
    """Ways to run the same trained weights at inference, each a change to the model's config:
    test-time flip averaging, and other input sizes (the backbone is convolutional and pools
    globally, so its weights fit any size; training at one size and testing at a larger one
    corrects the apparent object size that zoom augmentation shifts, Touvron et al. 2019)."""
    variants = {"test_flip": {"test_flip": True}}
    for size in test_sizes:
        if size != image_size:
            variants[f"size{size}"] = {"image_size": size}
            variants[f"size{size}_test_flip"] = {"image_size": size, "test_flip": True}
    return variants


def train_and_score(overrides: dict, test_csv: Path, test_sizes: list[int] = ()) -> tuple[dict, float, float, dict]:
    """The app's own train, then its evaluate on the held-out CSV; also the accuracy of the same
    weights run in each of ``inference_variants`` (no training of their own)."""
    from dlapps.shared import training

    config = resolve(APP.config, None, overrides)
    started = time.time()
    metrics = training.train(APP, config)
    seconds = time.time() - started
    model = training.load_model(config.out, APP.name)
    options = ClassifyEvaluateOptions(data=str(test_csv))
    accuracy = APP.evaluate(model, APP.evaluation_data(config, options), options)["accuracy"]
    variants = {}
    for variant, changes in inference_variants(config.image_size, test_sizes).items():
        # FlipBatch and AverageFlips have no weights, and no weight's shape depends on the image size,
        # so the twin's weights line up with the model's
        twin = type(model).from_config({**model.get_config(), **changes})
        twin.set_weights(model.get_weights())
        variants[variant] = APP.evaluate(twin, APP.evaluation_data(config, options), options)["accuracy"]
    return metrics, accuracy, seconds, variants


def frozen_features_logreg(train, test, weights: str, image_size: int, alpha: float, seed: int) -> tuple[float, float]:
    """Pooled features of the frozen pretrained backbone + LogisticRegression (C by 5-fold CV)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    from dlapps.apps.classify.model import ImageClassifier
    from dlapps.shared.backbones import load_backbone_weights

    started = time.time()
    model = ImageClassifier(sorted(set(train.labels)), image_size=image_size, alpha=alpha, augment=False)
    load_backbone_weights(model, weights)

    def features(image_set):
        batches = classify_data.image_batches(image_set, image_size, 32)
        return np.concatenate([np.asarray(model.backbone_features(x)).mean(axis=(1, 2)) for x, _ in batches])

    search = GridSearchCV(LogisticRegression(max_iter=5000, random_state=seed), {"C": [0.01, 0.1, 1, 10]}, cv=5)
    search.fit(features(train), train.labels)
    accuracy = float(search.score(features(test), test.labels))
    return accuracy, time.time() - started


def splits(full, args):
    """(name, train, test) of each held-out split: --test, one seeded stratified 20%, or --folds K
    stratified folds (every image held out once, so 49-image noise averages over the whole set)."""
    if args.test:
        return [("test", full, classify_data.read_path(args.test))]
    if args.folds < 2:
        train_index, test_index = data_lib.split_indices(len(full), 0.2, args.seed, stratify=full.labels)
        return [(f"split{args.seed}", full.subset(train_index), full.subset(test_index))]
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(args.folds, shuffle=True, random_state=args.seed).split(np.zeros(len(full)), full.labels)
    return [(f"fold{k}", full.subset(train_index), full.subset(test_index)) for k, (train_index, test_index) in enumerate(folds)]


def run_split(name: str, train, test, root: Path, model_seeds: list[int], args) -> dict:
    """On one split: the pretrained runs (one per model seed), the from-scratch peers, the references."""
    # every training image trains (as for the reference): a checkpoint picked by the loss on ~20 held-back
    # images was noise (seed 1 kept phase one's epoch 4); the cosine schedule ends at a low rate instead
    common = dict(backbone=args.backbone, alpha=args.alpha, image_size=args.image_size, max_minutes=args.minutes,
                  val_fraction=0.0, batch_size=16)
    root.mkdir(parents=True, exist_ok=True)
    # in --out, so that the run folders can be evaluated afterwards (their config.json names train.csv)
    train_csv, test_csv = write_csv(train, root / "train.csv"), write_csv(test, root / "test.csv")
    ours, ours_variants, peers = [], [], []
    for index, seed in enumerate(model_seeds):
        # the pretrained runs train with the app's defaults (the --set values aside): what a user gets
        overrides = dict(common, seed=seed, data=str(train_csv), out=str(root / f"pretrained_seed{seed}"), weights=args.weights)
        overrides.update(dict(kv.split("=", 1) for kv in args.set))
        metrics, accuracy, seconds, variants = train_and_score(overrides, test_csv, args.test_sizes)
        ours.append((seed, metrics, accuracy, seconds))
        ours_variants.append(variants)
        print(f"{name} seed {seed}: pretrained {accuracy:.4f} ({seconds:.0f} s, best epoch {metrics['best_epoch']} of "
              f"{metrics['epochs_run']}); the same weights: " + ", ".join(f"{k} {a:.4f}" for k, a in variants.items()), flush=True)
        if index < args.peer_seeds:
            metrics, accuracy, seconds, _ = train_and_score(
                dict(common, seed=seed, data=str(train_csv), out=str(root / f"scratch_seed{seed}"), weights="none",
                     epochs=40, learning_rate=1e-3), test_csv)
            peers.append((seed, metrics, accuracy, seconds))
            print(f"{name} seed {seed}: from scratch {accuracy:.4f} ({seconds:.0f} s)", flush=True)
    # the reference at the models' image size; also at 224 (the ImageNet weights' own size) when that differs
    reference_sizes = sorted({args.image_size, 224}, key=lambda size: size != args.image_size)
    references = {size: frozen_features_logreg(train, test, args.weights, size, args.alpha, args.seed) for size in reference_sizes}
    print(f"{name}: reference " + ", ".join(f"@{size} {a:.4f}" for size, (a, _) in references.items()), flush=True)
    return {"ours": ours, "ours_variants": ours_variants, "peers": peers, "references": references, "train": len(train), "test": len(test)}


def main() -> None:
    defaults = APP.config()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="a folder per class (or a CSV of path,label)")
    parser.add_argument("--weights", required=True, help="pretrained backbone weights: a file, or imagenet (online)")
    parser.add_argument("--test", help="held-out images; default: a seeded stratified 20%% of --train")
    parser.add_argument("--folds", type=int, default=1, help="without --test: K stratified folds of --train, each held out once "
                        "(default 1: one seeded 20%% split)")
    parser.add_argument("--minutes", type=float, default=8.0, help="training time budget of each variant")
    parser.add_argument("--backbone", default="mobilenet")
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="default: the app's")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split(s) and of the first model")
    parser.add_argument("--model-seed", type=int, default=None, help="seed of the first model (default: --seed); the splits keep --seed")
    parser.add_argument("--seeds", type=int, default=1, help="pretrained models trained on each split, seeds --model-seed, --model-seed+1, ...")
    parser.add_argument("--peer-seeds", type=int, default=1, help="from-scratch peers trained (the first seeds of --seeds)")
    parser.add_argument("--test-sizes", type=int, nargs="*", default=[], metavar="SIZE",
                        help="also score each trained model's weights at these image sizes (with and without flips)")
    parser.add_argument("--out", default="", help="folder for the run folders and the split's CSVs (default: a temporary folder)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra classify config values for the pretrained runs")
    args = parser.parse_args()
    if args.seeds < 1 or not 0 <= args.peer_seeds <= args.seeds:
        parser.error("--seeds must be at least 1 and --peer-seeds between 0 and --seeds")
    if args.folds < 1 or (args.folds > 1 and args.test):
        parser.error("--folds must be at least 1, and it splits --train only when no --test is given")

    full = classify_data.read_path(args.train)
    held_out = splits(full, args)
    print(f"{len(full)} images, classes {sorted(set(full.labels))}, skipped {len(full.skipped)} unusable file(s); "
          f"held-out split(s): " + ", ".join(f"{name} ({len(test)})" for name, _, test in held_out), flush=True)

    first = args.seed if args.model_seed is None else args.model_seed
    model_seeds = [first + i for i in range(args.seeds)]
    started = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.out or scratch)
        runs = {name: run_split(name, train, test, root / name if len(held_out) > 1 else root, model_seeds, args)
                for name, train, test in held_out}

    # over several folds a figure is each fold's accuracy weighted by its size: the share of all held-out images
    def pooled(values: list[float]) -> float:
        sizes = [run["test"] for run in runs.values()]
        return float(np.dot(values, sizes) / sum(sizes))

    ours_by_seed = [pooled([run["ours"][i][2] for run in runs.values()]) for i in range(args.seeds)]
    peers_by_seed = [pooled([run["peers"][i][2] for run in runs.values()]) for i in range(args.peer_seeds)]
    ours_accuracy = seeds.summary(ours_by_seed)
    # the variants the models were scored in (train_and_score's, from each model's own image size)
    variants = list(next(iter(runs.values()))["ours_variants"][0])
    variant_accuracy = {variant: seeds.summary([pooled([run["ours_variants"][i][variant] for run in runs.values()]) for i in range(args.seeds)])
                        for variant in variants}
    peer_accuracy = seeds.summary(peers_by_seed) if peers_by_seed else None
    references = {size: pooled([run["references"][size][0] for run in runs.values()]) for size in next(iter(runs.values()))["references"]}
    reference_seconds = float(np.mean([run["references"][args.image_size][1] for run in runs.values()]))
    ours_seconds = float(np.mean([s for run in runs.values() for *_, s in run["ours"]]))
    peer_seconds = float(np.mean([s for run in runs.values() for *_, s in run["peers"]])) if peers_by_seed else None
    reference = references[args.image_size]

    name = f"{args.backbone}" + (f" a{args.alpha:g}" if args.backbone.startswith("mobilenet") else "") + f" @{args.image_size}"
    print()
    if len(runs) > 1:
        print(f"{'fold':<8} {'test':>5} {'ours (each seed)':>28} {'reference @' + str(args.image_size):>16} {'ours - reference':>17}")
        for fold, run in runs.items():
            each = [a for _, _, a, _ in run["ours"]]
            print(f"{fold:<8} {run['test']:>5} {' / '.join(f'{a:.4f}' for a in each):>28} {run['references'][args.image_size][0]:>16.4f} "
                  f"{100 * (np.mean(each) - run['references'][args.image_size][0]):>+16.1f}")
    print(f"{'model':<58} {'accuracy (mean, spread)':>24} {'seconds':>8}")
    print(f"{'ours: ' + name + ' pretrained, head then top layers':<58} "
          f"{ours_accuracy['mean']:>9.4f} {ours_accuracy['spread']:>6.4f} x{args.seeds:<6} {ours_seconds:>8.1f}")
    for variant, accuracy in variant_accuracy.items():
        print(f"{'ours, the same models: ' + variant:<58} {accuracy['mean']:>9.4f} {accuracy['spread']:>6.4f} x{args.seeds:<6}")
    if peers_by_seed:
        print(f"{'peer: ' + name + ' from scratch, same budget':<58} "
              f"{peer_accuracy['mean']:>9.4f} {peer_accuracy['spread']:>6.4f} x{args.peer_seeds:<6} {peer_seconds:>8.1f}")
    for size, accuracy in references.items():
        print(f"{f'reference: frozen features @{size} + LogReg':<58} {accuracy:>9.4f}")
    for fold, run in runs.items():
        for seed, metrics, accuracy, _ in run["ours"]:
            print(f"{fold} seed {seed}: pretrained {accuracy:.4f}, best epoch {metrics['best_epoch']} of {metrics['epochs_run']} over "
                  f"both phases; head phase best {metrics['monitor']} {metrics.get('head_phase', {}).get('best_value')}")
    print(f"ours - reference @{args.image_size}: {100 * (ours_accuracy['mean'] - reference):+.1f} points; "
          f"wall time {time.time() - started:.0f} s", flush=True)
    print(json.dumps({
        "app": "classify",
        "data": args.train,
        "test": args.test or (f"{args.folds} stratified folds (seed {args.seed}) of --train, each held out once" if args.folds > 1
                              else f"seeded ({args.seed}) stratified 20% of --train"),
        "metric": "accuracy" + (" over all folds' held-out images" if len(runs) > 1 else ""),
        "value": ours_accuracy["mean"],
        "seeds": model_seeds,
        "values": ours_accuracy["each"],
        "spread": ours_accuracy["spread"],
        "same_weights": {variant: {"value": accuracy["mean"], "values": accuracy["each"]} for variant, accuracy in variant_accuracy.items()},
        **({"folds": {fold: {"ours": [round(a, 4) for _, _, a, _ in run["ours"]],
                             **{f"ours_{variant}": [round(v[variant], 4) for v in run["ours_variants"]]
                                for variant in variants},
                             "reference": round(run["references"][args.image_size][0], 4)} for fold, run in runs.items()}}
           if len(runs) > 1 else {}),
        "peer": f"{name} from scratch (same app, --weights none)",
        "peer_value": peer_accuracy["mean"] if peers_by_seed else None,
        "peer_values": peer_accuracy["each"] if peers_by_seed else [],
        "train_seconds": round(ours_seconds, 1),
        "peer_seconds": round(peer_seconds, 1) if peers_by_seed else None,
        "frozen_features_logreg": round(reference, 4),
        **{f"frozen_features_logreg_{size}": round(accuracy, 4) for size, accuracy in references.items() if size != args.image_size},
        "reference_seconds": round(reference_seconds, 1),
        "image_size": args.image_size,
        "test_examples": sum(run["test"] for run in runs.values()),
        "skipped_files": len(full.skipped),
        "minutes_budget": args.minutes,
    }))


if __name__ == "__main__":
    main()
