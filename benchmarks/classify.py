"""Classify benchmark: the same backbone fine-tuned from pretrained weights and trained from scratch,
same split, same run; frozen pretrained features + logistic regression as a third reference.

    python benchmarks/classify.py --train ../shared/data/hymenoptera/train \\
        --weights ../shared/data/imagenet_weights/mobilenet_2_5_224_tf_no_top.h5 [--test DIR] [--minutes 8]

Without --test, a seeded stratified 20% of --train is the held-out set. Both variants train on the
rest (each holding out its own 10% for checkpoint selection) with the app's own ``train`` and are
scored with its ``evaluate``. Unusable files (train/ants/imageNotFound.gif) are skipped with a
warning by the app's reader. Ends with one JSON line of figures.
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


def write_csv(image_set: classify_data.ImageSet, path: Path) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label"])
        writer.writerows(zip((Path(s).resolve() for s in image_set.sources), image_set.labels))
    return path


def train_and_score(overrides: dict, test_csv: Path) -> tuple[dict, dict, float]:
    """The app's own train, then its evaluate on the held-out CSV."""
    from dlapps.shared import training

    config = resolve(APP.config, None, overrides)
    started = time.time()
    metrics = training.train(APP, config)
    seconds = time.time() - started
    model = training.load_model(config.out, APP.name)
    options = ClassifyEvaluateOptions(data=str(test_csv))
    return metrics, APP.evaluate(model, APP.evaluation_data(config, options), options), seconds


def frozen_features_logreg(train, test, weights: str, image_size: int, alpha: float, seed: int) -> tuple[float, float]:
    """Pooled features of the frozen pretrained backbone + LogisticRegression (C by 5-fold CV)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    from dlapps.apps.classify.model import ImageClassifier, load_backbone_weights

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="a folder per class (or a CSV of path,label)")
    parser.add_argument("--weights", required=True, help="pretrained backbone weights: a file, or imagenet (online)")
    parser.add_argument("--test", help="held-out images; default: a seeded stratified 20%% of --train")
    parser.add_argument("--minutes", type=float, default=8.0, help="training time budget of each variant")
    parser.add_argument("--backbone", default="mobilenet")
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="folder for the two run folders (default: a temporary folder)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra classify config values for the pretrained run")
    args = parser.parse_args()

    full = classify_data.read_path(args.train)
    if args.test:
        train, test = full, classify_data.read_path(args.test)
    else:
        train_index, test_index = data_lib.split_indices(len(full), 0.2, args.seed, stratify=full.labels)
        train, test = full.subset(train_index), full.subset(test_index)
    print(f"train {len(train)} images, test {len(test)} images, classes {sorted(set(train.labels))}, "
          f"skipped {len(full.skipped)} unusable file(s)")

    common = dict(backbone=args.backbone, alpha=args.alpha, image_size=args.image_size, seed=args.seed,
                  max_minutes=args.minutes, val_fraction=0.1, batch_size=16)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.out or scratch)
        root.mkdir(parents=True, exist_ok=True)
        train_csv, test_csv = write_csv(train, Path(scratch) / "train.csv"), write_csv(test, Path(scratch) / "test.csv")
        pretrained_overrides = dict(common, data=str(train_csv), out=str(root / "pretrained"), weights=args.weights,
                                    epochs=20, finetune_epochs=15, unfreeze=30, learning_rate=2e-3, finetune_learning_rate=1e-4)
        pretrained_overrides.update(dict(kv.split("=", 1) for kv in args.set))
        ours_metrics, ours, ours_seconds = train_and_score(pretrained_overrides, test_csv)
        scratch_metrics, scratch_result, scratch_seconds = train_and_score(
            dict(common, data=str(train_csv), out=str(root / "scratch"), weights="none", epochs=40, learning_rate=1e-3), test_csv
        )
        logreg_accuracy, logreg_seconds = frozen_features_logreg(train, test, args.weights, args.image_size, args.alpha, args.seed)

    name = f"{args.backbone}" + (f" a{args.alpha:g}" if args.backbone.startswith("mobilenet") else "") + f" @{args.image_size}"
    print()
    print(f"{'model':<52} {'accuracy':>9} {'seconds':>8}")
    print(f"{'ours: ' + name + ' pretrained, head then top layers':<52} {ours['accuracy']:>9.4f} {ours_seconds:>8.1f}")
    print(f"{'peer: ' + name + ' from scratch, same budget':<52} {scratch_result['accuracy']:>9.4f} {scratch_seconds:>8.1f}")
    print(f"{'reference: frozen pretrained features + LogReg':<52} {logreg_accuracy:>9.4f} {logreg_seconds:>8.1f}")
    print(f"pretrained: best epoch {ours_metrics['best_epoch']} of {ours_metrics['epochs_run']} over both phases; "
          f"head phase best val {ours_metrics.get('head_phase', {}).get('best_value')}; "
          f"scratch: best epoch {scratch_metrics['best_epoch']} of {scratch_metrics['epochs_run']}")
    print(json.dumps({
        "app": "classify",
        "data": args.train,
        "test": args.test or "seeded stratified 20% of --train",
        "metric": "accuracy",
        "value": round(ours["accuracy"], 4),
        "peer": f"{name} from scratch (same app, --weights none)",
        "peer_value": round(scratch_result["accuracy"], 4),
        "train_seconds": round(ours_seconds, 1),
        "peer_seconds": round(scratch_seconds, 1),
        "frozen_features_logreg": round(logreg_accuracy, 4),
        "test_examples": len(test),
        "skipped_files": len(full.skipped),
        "minutes_budget": args.minutes,
    }))


if __name__ == "__main__":
    main()
