"""Generate benchmark: a VAE and a DCGAN trained on the same images, each within a time budget.

    python benchmarks/generate.py --data ../shared/data/mnist/mnist_t10k_first9000.npz [--test FILE] [--minutes 15]

Without --test, a seeded 1,000 of --data are held out and the rest train both models (each holds
out its own 5% for checkpoint selection and its in-run figures). Reported on the held-out images:

- the VAE's -log p(x) on stochastically binarised pixels (seeded), estimated by importance
  sampling with k = 100 (IWAE; nats per image), and its negative ELBO;
- the peer in the same run: an independent-pixel Bernoulli model (each pixel's training mean,
  Laplace-smoothed), whose NLL is exact. Burda et al. 2016 (Table 1) report 86.76 nats for a
  one-stochastic-layer VAE trained on all 60k binarised MNIST images: a literature reference only;
- classifier-feature FID (the VAE run's feature classifier for all three, so they compare) of
  1,000 GAN samples, of 1,000 VAE samples, and of 1,000 real training images (the floor), each
  against the held-out images. It is not Inception FID and compares only with itself.

Both runs write their per-epoch sample grids (samples/epoch_N.png, samples/final.png); the
benchmark writes 8x8 grids of each model into --out. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from dlapps.apps.generate import data as generate_data  # noqa: E402
from dlapps.apps.generate.config import GenerateConfig  # noqa: E402

BURDA_ONE_LAYER_NLL = 86.76  # nats, 60k binarised MNIST training images, k = 5000


def read(path: str) -> generate_data.ImageData:
    train, val, _ = generate_data.read_data(GenerateConfig(data=path))
    if val is None:
        return train
    return generate_data.ImageData(np.concatenate([train.images, val.images]),
                                   None if train.labels is None else np.concatenate([train.labels, val.labels]), train.label_names)


def independent_pixels_nll(train_images: np.ndarray, test_targets: np.ndarray) -> float:
    """Exact -log p(x) (nats) of a factorised Bernoulli: p(pixel = 1) = its binarised-training mean."""
    from dlapps.apps.generate.model import binarize

    ones = binarize(train_images, seed=1).reshape(len(train_images), -1)
    p = (ones.sum(axis=0) + 1.0) / (len(ones) + 2.0)
    x = test_targets.reshape(len(test_targets), -1)
    return float(-(x * np.log(p) + (1 - x) * np.log1p(-p)).sum(axis=1).mean())


def train_run(arch: str, train_npz: Path, out: Path, args, extra: dict) -> tuple[dict, float]:
    from dlapps.apps.generate.app import APP
    from dlapps.shared import training
    from dlapps.shared.config import resolve

    overrides = {"data": str(train_npz), "out": str(out), "arch": arch, "seed": args.seed, "max_minutes": args.minutes,
                 "epochs": 1000, "val_fraction": 0.05, **extra}
    overrides.update(kv.split("=", 1) for kv in getattr(args, f"set_{arch}"))
    config = resolve(GenerateConfig, None, overrides)
    started = time.time()
    metrics = training.train(APP, config)
    return metrics, time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="training images in any format the generate app reads")
    parser.add_argument("--test", help="held-out images; default: a seeded 1,000 of --data")
    parser.add_argument("--minutes", type=float, default=15.0, help="training time budget of each model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=100, help="importance samples of the NLL estimate")
    parser.add_argument("--out", default="", help="folder for both run folders and the grids (default: a temporary folder)")
    parser.add_argument("--set-vae", nargs="*", default=[], metavar="KEY=VALUE", help="extra VAE config values")
    parser.add_argument("--set-gan", nargs="*", default=[], metavar="KEY=VALUE", help="extra GAN config values")
    parser.add_argument("--skip-gan", action="store_true", help="train and score the VAE only")
    args = parser.parse_args()

    full = read(args.data)
    if args.test:
        train, test = full, read(args.test)
    else:
        order = np.random.default_rng(args.seed).permutation(len(full))
        train, test = full.subset(np.sort(order[1000:])), full.subset(np.sort(order[:1000]))
    print(f"train {len(train)} images, test {len(test)} images of {'x'.join(map(str, train.image_shape))}", flush=True)

    from dlapps.apps.generate import model as model_lib
    from dlapps.apps.generate.app import generated_images, make_grid
    from dlapps.shared import files, training
    from dlapps.shared.images import encode_png

    scratch = tempfile.TemporaryDirectory()
    out = Path(args.out or scratch.name)
    out.mkdir(parents=True, exist_ok=True)
    train_npz = out / "train.npz"
    if train.labels is None:
        np.savez(train_npz, x=train.images)
    else:  # label names, so that the runs' classes are the data's own
        np.savez(train_npz, x=train.images, y=np.asarray(train.label_names)[train.labels])

    vae_metrics, vae_seconds = train_run("vae", train_npz, out / "vae", args, {"kl_warmup": 5.0, "batch_size": 64})
    print(f"VAE: {vae_metrics['epochs_run']} epochs in {vae_seconds:.0f} s, best epoch {vae_metrics['best_epoch']}", flush=True)
    vae = training.load_model(out / "vae", "generate")

    targets = model_lib.binarize(test.images, seed=args.seed)
    started = time.time()
    neg_elbo, nll = model_lib.importance_weighted_bounds(vae, targets, samples=args.k, seed=args.seed)
    print(f"VAE test NLL (k={args.k}) {nll.mean():.2f} nats, -ELBO {neg_elbo.mean():.2f} ({time.time() - started:.0f} s)", flush=True)
    peer_nll = independent_pixels_nll(train.images, targets)
    print(f"peer: independent-pixel Bernoulli NLL {peer_nll:.2f} nats", flush=True)

    n = len(test)
    test_features, _ = model_lib.classifier_outputs(vae, model_lib.to_unit(test.images))
    real_pick = np.random.default_rng(args.seed + 1).choice(len(train), size=min(n, len(train)), replace=False)
    real_features, _ = model_lib.classifier_outputs(vae, model_lib.to_unit(train.images[real_pick]))
    fid_real = model_lib.frechet_distance(real_features, test_features)
    vae_samples = generated_images(vae, n, args.seed + 2)
    fid_vae = model_lib.frechet_distance(model_lib.classifier_outputs(vae, model_lib.to_unit(vae_samples))[0], test_features)
    grids = {"vae": str(files.write_bytes(out / "vae_grid.png", encode_png(make_grid(vae_samples[:64], 8))))}
    print(f"classifier-feature FID: VAE samples {fid_vae:.2f}, real training images {fid_real:.2f}", flush=True)

    fid_gan, gan_seconds, gan_metrics = None, 0.0, {}
    if not args.skip_gan:
        gan_metrics, gan_seconds = train_run("gan", train_npz, out / "gan", args, {"batch_size": 64})
        print(f"GAN: {gan_metrics['epochs_run']} epochs in {gan_seconds:.0f} s", flush=True)
        gan = training.load_model(out / "gan", "generate")
        gan_samples = generated_images(gan, n, args.seed + 2)
        fid_gan = model_lib.frechet_distance(model_lib.classifier_outputs(vae, model_lib.to_unit(gan_samples))[0], test_features)
        grids["gan"] = str(files.write_bytes(out / "gan_grid.png", encode_png(make_grid(gan_samples[:64], 8))))
        print(f"classifier-feature FID: GAN samples {fid_gan:.2f}", flush=True)

    print(json.dumps({
        "app": "generate",
        "data": args.data,
        "test": args.test or "seeded 1000 of --data",
        "metric": f"vae_test_nll_nats_k{args.k}",
        "value": round(float(nll.mean()), 2),
        "peer": "independent-pixel Bernoulli (exact NLL)",
        "peer_value": round(peer_nll, 2),
        "train_seconds": round(vae_seconds + gan_seconds, 1),
        "vae_train_seconds": round(vae_seconds, 1),
        "gan_train_seconds": round(gan_seconds, 1),
        "vae_epochs": vae_metrics["epochs_run"],
        "gan_epochs": gan_metrics.get("epochs_run"),
        "vae_neg_elbo": round(float(neg_elbo.mean()), 2),
        "reference_nll_burda_1_layer_60k": BURDA_ONE_LAYER_NLL,
        "fid_gan": None if fid_gan is None else round(fid_gan, 3),
        "fid_vae": round(fid_vae, 3),
        "fid_real": round(fid_real, 3),
        "fid_features": "the VAE run's feature classifier (not Inception)",
        "grids": grids,
        "run_folders": [str(out / "vae"), *([str(out / "gan")] if not args.skip_gan else [])],
        "test_images": n,
    }))
    if not args.out:
        print("run folders were temporary; pass --out to keep them", flush=True)
    scratch.cleanup()


if __name__ == "__main__":
    main()
