"""Detect benchmark: held-out COCO mAP of each architecture, against a mean-box baseline, same split, same run.

    python benchmarks/detect.py --train ../shared/data/raccoon --arch both \
        --weights ../shared/data/imagenet_weights/mobilenet_2_5_224_tf_no_top.h5 --minutes 8
    python benchmarks/detect.py --train demo --test demo --arch both \
        --weights ../shared/data/imagenet_weights/mobilenet_2_5_224_tf_no_top.h5 --minutes 10

Without --test, a seeded 20% of --train's images is the held-out set (the raccoon folder here has
only the 160 training images; its 40 test images are absent). The demo draws --set demo_size=N
images (the app's default otherwise); a demo --test draws as many from the next seed. Each
architecture trains on the rest (holding out its own --val-fraction for checkpoint selection) for at
most --minutes, then is scored on the held-out images by pycocotools (mAP@0.5 and mAP@[.5:.95]);
predict's images per second are timed on the same images, and the first held-out image is written
with its detections drawn (into --out/annotated/ARCH, or a kept temporary folder: its path is in the
figures). The peer is the floor any detector must clear: every held-out image gets the training
boxes' mean box (in fractions of the image) for every class, scored 1. Ends with one JSON line of
figures: the headline value is the first architecture's (YOLO's with --arch both), each one's
figures are keys beside it.
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

from dlapps.apps.detect import data as detect_data  # noqa: E402
from dlapps.apps.detect.config import DetectConfig, DetectEvaluateOptions  # noqa: E402
from dlapps.shared import data as data_lib  # noqa: E402


def read(value: str, seed: int, demo_size: int) -> detect_data.DetectionSet:
    config = DetectConfig(data=value, seed=seed, demo_size=demo_size)
    train, val = detect_data.read_any(value, config)
    return detect_data.join(train, val)


def write_csv(dataset: detect_data.DetectionSet, path: Path) -> Path:
    """The images' boxes as the CSV layout the app reads (absolute image paths; encoded demo images
    are written as PNG files beside the CSV)."""
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"])
        for i, (source, (width, height), boxes, labels) in enumerate(zip(dataset.sources, dataset.sizes, dataset.boxes, dataset.labels)):
            if dataset.encoded:
                image = path.parent / "images" / f"{i:05d}.png"
                image.parent.mkdir(exist_ok=True)
                image.write_bytes(source)
                source = image
            name = str(Path(source).resolve())
            if not len(labels):
                writer.writerow([name, width, height, "", "", "", "", ""])
            for box, label in zip(boxes, labels):
                writer.writerow([name, width, height, label, *(f"{v:.2f}" for v in box)])
    return path


def mean_box_peer(train: detect_data.DetectionSet, test: detect_data.DetectionSet, labels: list[str]) -> dict:
    """mAP of predicting the training boxes' mean relative box, once per class, in every image."""
    import numpy as np

    from dlapps.apps.detect.app import coco_scores

    relative = [np.asarray(b, dtype=float) / np.asarray([w, h, w, h], dtype=float)
                for b, (w, h) in zip(train.boxes, train.sizes) if len(b)]
    mean = np.concatenate(relative).mean(axis=0)
    detections = [[(mean * np.asarray([w, h, w, h]), 1.0, name) for name in labels] for (w, h) in test.sizes]
    return coco_scores(test, detections, labels)


def run_arch(arch: str, table: Path, test, scratch: Path, kept: Path, args) -> dict:
    from dlapps.apps.detect.app import APP, detect_batches, detector, draw_detections
    from dlapps.shared import training
    from dlapps.shared.config import resolve

    out = Path(args.out or scratch) / f"run-{arch}"
    overrides = {"data": str(table), "out": str(out), "arch": arch, "weights": args.weights, "seed": args.seed,
                 "max_minutes": args.minutes, "epochs": args.epochs}
    overrides.update(kv.split("=", 1) for kv in args.set)
    config = resolve(DetectConfig, None, overrides)
    started = time.time()
    metrics = training.train(APP, config)
    train_seconds = time.time() - started
    model = training.load_model(out, "detect")
    result = APP.evaluate(model, test, DetectEvaluateOptions(plot=str(out / "test_precision_recall.png")))
    encoded = [s if test.encoded else Path(s).read_bytes() for s in test.sources]
    run = detector(model, 0.25, 0.5, 100)  # one traced graph for both calls (each new one traces again)
    detect_batches(model, encoded[:8], 0.25, 0.5, 100, 8, run=run)  # the tracing: not part of the timing
    started = time.time()
    found = detect_batches(model, encoded, 0.25, 0.5, 100, 8, run=run)
    images_per_second = len(encoded) / (time.time() - started)
    # the first held-out image with its detections drawn, kept after the run (the runs may live in a temporary folder)
    if test.encoded:  # generated demo images exist only as bytes: written out as a PNG first
        first = kept / test.names[0]
        first.write_bytes(test.sources[0])
    else:
        first = Path(test.sources[0])
    annotated = str(draw_detections(first, found[0]["objects"], kept / arch, set()))
    return {
        "map50": result["map50"], "map": result["map"], "map75": result["map75"],
        "map_small": result["map_small"], "map_medium": result["map_medium"], "map_large": result["map_large"],
        "train_seconds": round(train_seconds, 1), "epochs_run": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
        "images_per_second": round(images_per_second, 2), "annotated": annotated, "config": config.to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="training data in any format the detect app reads (or demo)")
    parser.add_argument("--test", help="held-out data; default: a seeded 20%% of --train's images")
    parser.add_argument("--arch", default="both", choices=("yolo", "faster-rcnn", "both"))
    parser.add_argument("--weights", default="imagenet", help="backbone weights: imagenet | none | FILE")
    parser.add_argument("--minutes", type=float, default=8.0, help="training time budget per architecture")
    parser.add_argument("--epochs", type=int, default=300, help="epoch cap (the time budget usually ends training first)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="folder for the runs (default: a temporary folder)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra detect config values, e.g. image_size=256")
    args = parser.parse_args()

    # the demo's size comes from --set demo_size=N (the app's default otherwise); a demo --test is
    # generated from the next seed, so its images are not the training ones
    demo_size = int(dict(kv.split("=", 1) for kv in args.set).get("demo_size", DetectConfig().demo_size))
    full = read(args.train, args.seed, demo_size)
    if args.test:
        train, test = full, read(args.test, args.seed + 1, demo_size)
    else:
        train_index, test_index = data_lib.split_indices(len(full), 0.2, args.seed)
        train, test = full.subset(train_index), full.subset(test_index)
    labels = train.label_names()
    print(f"train {len(train)} images ({train.objects} boxes), test {len(test)} images ({test.objects} boxes), classes {labels}")

    peer = mean_box_peer(train, test, labels)
    print(f"peer mean-box baseline: mAP@0.5 {peer['map50']:.4f}, mAP@[.5:.95] {peer['map']:.4f}")

    archs = ["yolo", "faster-rcnn"] if args.arch == "both" else [args.arch]
    results = {}
    kept = Path(args.out) / "annotated" if args.out else Path(tempfile.mkdtemp(prefix="detect-benchmark-annotated-"))
    kept.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        table = write_csv(train, Path(scratch) / "train.csv")
        for arch in archs:
            results[arch] = run_arch(arch, table, test, Path(scratch), kept, args)
            r = results[arch]
            print(f"{arch}: mAP@0.5 {r['map50']:.4f}, mAP@[.5:.95] {r['map']:.4f}, {r['train_seconds']:.0f} s training "
                  f"({r['epochs_run']} epochs, best {r['best_epoch']}), predict {r['images_per_second']:.1f} images/s", flush=True)

    print()
    print(f"{'model':<28} {'mAP@0.5':>8} {'mAP@.5:.95':>11} {'train s':>8} {'images/s':>9}")
    for arch, r in results.items():
        print(f"{arch:<28} {r['map50']:>8.4f} {r['map']:>11.4f} {r['train_seconds']:>8.1f} {r['images_per_second']:>9.2f}")
    print(f"{'peer: mean-box baseline':<28} {peer['map50']:>8.4f} {peer['map']:>11.4f}")
    # one line for both architectures: the headline value is the first one's (YOLO's with --arch both),
    # each architecture's figures are flat keys beside it (yolo_map50, faster_rcnn_map50, ...)
    first = results[archs[0]]
    figures = {}
    for arch, r in results.items():
        key = arch.replace("-", "_")
        figures.update({f"{key}_map50": round(r["map50"], 4), f"{key}_map": round(r["map"], 4),
                        f"{key}_train_seconds": r["train_seconds"], f"{key}_images_per_second": r["images_per_second"],
                        f"{key}_annotated": r["annotated"]})
    print(json.dumps({
        "app": "detect",
        "data": args.train,
        "test": args.test or "seeded 20% of --train's images",
        "metric": "mAP@0.5",
        "value": round(first["map50"], 4),
        "arch": archs[0],
        "peer": "mean-box baseline (training boxes' mean relative box, every class, every image)",
        "peer_value": round(peer["map50"], 4),
        "train_seconds": first["train_seconds"],
        "test_images": len(test),
        "peer_map": round(peer["map"], 4),
        **figures,
        "architectures": {arch: {k: v for k, v in r.items() if k != "config"} for arch, r in results.items()},
    }))

if __name__ == "__main__":
    main()
