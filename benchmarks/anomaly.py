"""Anomaly benchmark: our autoencoder against scikit-learn IsolationForest and PCA, same splits, same run.

    python benchmarks/anomaly.py --odds ../shared/data/anomaly/odds [--odds MORE.mat ...] [--seeds 5]
                                 [--nab ../shared/data/anomaly/nab] [--set KEY=VALUE ...]
    python benchmarks/anomaly.py --train rows.csv --test labelled.csv

ODDS (PyOD's protocol): for every .mat and seed, a seeded 60/40 split; every model trains on the
60% without labels; ROC-AUC on the 40%. Ours is `dlapps anomaly train --kind tabular` on the 60%
(which holds out its own 20% of that for early stopping and the threshold). Peers on the same
rows: IsolationForest (scikit-learn defaults, random_state=seed), PCA reconstruction error
(standardised features, the components explaining 90% of the variance) and PCA as PyOD scores it
by default (the squared projections on every component over its variance: a Mahalanobis
distance). With --train/--test: one training file (labels ignored) and a labelled held-out file.

NAB (--nab): every artificialWithAnomaly series, scored per step after training on the series
itself (unsupervised, as NAB's detectors see it): step ROC-AUC, labelled windows detected and
false alarms at the threshold. The peer is IsolationForest on the same windows, a step's score
being the lowest of its windows' scores as for ours, flagged by IsolationForest's own threshold.

Ends with one JSON line: value = our mean ROC-AUC over the ODDS sets, peer = IsolationForest's (each with
the std of that mean across seeds; per set: [mean, std]).
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

from dlapps.apps.anomaly import data as anomaly_data  # noqa: E402
from dlapps.apps.anomaly.app import APP, score_series, window_detection  # noqa: E402
from dlapps.apps.anomaly.config import AnomalyConfig  # noqa: E402
from dlapps.shared.config import resolve  # noqa: E402


def ours_tabular(train_x: np.ndarray, test_x: np.ndarray, seed: int, scratch: Path, settings: dict) -> tuple[np.ndarray, float]:
    """Trains the app on `train_x` (an .npz without labels) and scores `test_x`."""
    from dlapps.shared import training

    table = scratch / f"train-{seed}.npz"
    np.savez(table, x=train_x)
    out = scratch / f"run-{seed}"
    config = resolve(AnomalyConfig, None, {"data": str(table), "out": str(out), "seed": seed, "kind": "tabular", **settings})
    started = time.time()
    training.train(APP, config)
    seconds = time.time() - started
    model = training.load_model(out, "anomaly")
    return model.predict(test_x, batch_size=4096, verbose=0)["score"], seconds


def peers_tabular(train_x: np.ndarray, test_x: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    train_z, test_z = (train_x - scaler.mean_) / scale, (test_x - scaler.mean_) / scale
    pca90 = PCA(n_components=0.9, svd_solver="full").fit(train_z)
    reconstruction = pca90.inverse_transform(pca90.transform(test_z))
    full = PCA(svd_solver="full").fit(train_z)
    variance = np.maximum(full.explained_variance_, 1e-12)
    return {
        "isolation_forest": -IsolationForest(random_state=seed).fit(train_x).score_samples(test_x),
        "pca_reconstruction": ((test_z - reconstruction) ** 2).sum(axis=1),
        "pca_pyod": ((full.transform(test_z) ** 2) / variance).sum(axis=1),
    }


def odds_files(paths: list[str]) -> list[Path]:
    files = []
    for path in map(Path, paths):
        files += sorted(path.glob("*.mat")) if path.is_dir() else [path]
    return files


def run_odds(files: list[Path], seeds: int, settings: dict, scratch: Path) -> dict:
    from sklearn.metrics import roc_auc_score

    results = {}
    for file in files:
        examples = anomaly_data.read_mat(file)
        x, y = examples.x.astype(np.float64), examples.labels
        aucs: dict[str, list[float]] = {}
        seconds = []
        for seed in range(seeds):
            order = np.random.default_rng(seed).permutation(len(x))
            cut = int(0.6 * len(x))
            train, test = order[:cut], order[cut:]
            scores, fit_seconds = ours_tabular(x[train], x[test], seed, scratch, settings)
            seconds.append(fit_seconds)
            aucs.setdefault("ours", []).append(roc_auc_score(y[test], scores))
            for name, peer_scores in peers_tabular(x[train], x[test], seed).items():
                aucs.setdefault(name, []).append(roc_auc_score(y[test], peer_scores))
        results[file.stem] = {name: (float(np.mean(v)), float(np.std(v))) for name, v in aucs.items()}
        results[file.stem]["per_seed"] = {name: [float(a) for a in v] for name, v in aucs.items()}
        results[file.stem]["train_seconds"] = float(np.sum(seconds))
        shown = "  ".join(f"{name} {np.mean(v):.4f}±{np.std(v):.4f}" for name, v in aucs.items())
        print(f"{file.stem:<12} n={len(x):<6} d={x.shape[1]:<4} anomalies={y.mean():.3f}  {shown}  ({np.sum(seconds):.0f} s)", flush=True)
    return results


def run_train_test(train_path: str, test_path: str, settings: dict, scratch: Path) -> dict:
    from sklearn.metrics import roc_auc_score

    train = anomaly_data.read_table(Path(train_path))
    test = anomaly_data.read_table(Path(test_path))
    if test.labels is None:
        raise SystemExit(f"{test_path}: no anomaly labels")
    scores, seconds = ours_tabular(train.x, anomaly_data.match_features(test, train.columns, test_path), 0, scratch, settings)
    result = {"ours": (float(roc_auc_score(test.labels, scores)), 0.0), "train_seconds": seconds}
    for name, peer_scores in peers_tabular(train.x.astype(np.float64), test.x.astype(np.float64), 0).items():
        result[name] = (float(roc_auc_score(test.labels, peer_scores)), 0.0)
    print(f"{Path(test_path).name}: " + "  ".join(f"{k} {v[0]:.4f}" for k, v in result.items() if k != "train_seconds"))
    return {Path(test_path).stem: result}


def run_nab(folder: Path, settings: dict, scratch: Path) -> dict:
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score

    from dlapps.shared import training

    labels_file = folder / "labels" / "combined_windows.json"
    results = {}
    for file in sorted((folder / "data").glob("artificialWithAnomaly/*.csv")):
        out = scratch / f"nab-{file.stem}"
        config = resolve(AnomalyConfig, None, {"data": str(file), "out": str(out), "kind": "timeseries", **settings})
        started = time.time()
        training.train(APP, config)
        seconds = time.time() - started
        model = training.load_model(out, "anomaly")
        series = anomaly_data.read_series(file, labels_file=str(labels_file))
        ours = score_series(model, series, file.name)
        ours_found = window_detection(series.labels, ours["anomaly"])
        # The peer sees the same windows, standardised the same way (median, IQR).
        windows = anomaly_data.windows_of(series, config.window).reshape(-1, config.window * series.values.shape[1])
        center, scale = np.median(series.values), np.subtract(*np.percentile(series.values, [75, 25])) / 1.349 or 1.0
        forest = IsolationForest(random_state=0).fit((windows - center) / scale)
        window_scores = -forest.score_samples((windows - center) / scale)
        window_flags = forest.predict((windows - center) / scale) == -1
        steps = len(series)
        covering = [slice(max(0, t - config.window + 1), min(t, len(window_scores) - 1) + 1) for t in range(steps)]
        peer_scores = np.array([window_scores[c].min() for c in covering])
        peer_flags = np.array([window_flags[c].all() for c in covering])
        peer_found = window_detection(series.labels, peer_flags)
        results[file.stem] = {
            "ours": {"roc_auc": float(roc_auc_score(series.labels, ours["score"])), **ours_found, "train_seconds": round(seconds, 1)},
            "isolation_forest": {"roc_auc": float(roc_auc_score(series.labels, peer_scores)), **peer_found},
        }
        print(f"{file.stem:<28} ours: AUC {results[file.stem]['ours']['roc_auc']:.3f} detected {ours_found['windows_detected']}/{ours_found['windows']} "
              f"false alarms {ours_found['false_alarms']}  |  IsolationForest: AUC {results[file.stem]['isolation_forest']['roc_auc']:.3f} "
              f"detected {peer_found['windows_detected']}/{peer_found['windows']} false alarms {peer_found['false_alarms']}  ({seconds:.0f} s)", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--odds", action="append", default=[], help="an ODDS .mat file or a folder of them (repeatable)")
    parser.add_argument("--train", help="a training table (CSV/.mat/.npz; labels ignored), with --test")
    parser.add_argument("--test", help="the labelled held-out table for --train")
    parser.add_argument("--nab", help="the NAB folder (data/artificialWithAnomaly/*.csv, labels/combined_windows.json)")
    parser.add_argument("--seeds", type=int, default=5, help="ODDS splits (and model seeds) per set")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="anomaly config values for the tabular runs")
    parser.add_argument("--nab-set", nargs="*", default=[], metavar="KEY=VALUE", help="anomaly config values for the NAB runs")
    args = parser.parse_args()
    if not args.odds and not args.train and not args.nab:
        parser.error("give --odds, --train/--test or --nab")
    if bool(args.train) != bool(args.test):
        parser.error("--train and --test go together")

    settings = dict(kv.split("=", 1) for kv in args.set)
    nab_settings = {"epochs": "10", **dict(kv.split("=", 1) for kv in args.nab_set)}
    started = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        tabular = {}
        if args.odds:
            tabular.update(run_odds(odds_files(args.odds), args.seeds, settings, Path(scratch)))
        if args.train:
            tabular.update(run_train_test(args.train, args.test, settings, Path(scratch)))
        nab = run_nab(Path(args.nab), nab_settings, Path(scratch)) if args.nab else {}

    summary, spread = {}, {}
    if tabular:
        names = [k for k in next(iter(tabular.values())) if k not in ("train_seconds", "per_seed")]
        summary = {name: float(np.mean([r[name][0] for r in tabular.values()])) for name in names}
        # The overall std: of the mean over the sets, across seeds (each seed one split of every set).
        seeded = [r for r in tabular.values() if "per_seed" in r]
        spread = {name: float(np.std(np.mean([r["per_seed"][name] for r in seeded], axis=0))) if seeded else 0.0 for name in names}
        print()
        print(f"{'set':<12} " + " ".join(f"{n:>20}" for n in names))
        for set_name, result in tabular.items():
            print(f"{set_name:<12} " + " ".join(f"{result[n][0]:>13.4f}±{result[n][1]:.4f}" for n in names))
        print(f"{'mean':<12} " + " ".join(f"{summary[n]:>13.4f}±{spread[n]:.4f}" for n in names))
    print(json.dumps({
        "app": "anomaly",
        "data": args.odds or args.train or args.nab,
        "test": args.test or "seeded 60/40 split per set (PyOD's protocol)",
        "metric": "mean ROC-AUC over the ODDS sets" if args.odds else "ROC-AUC on --test",
        "value": round(summary.get("ours", float("nan")), 4),
        "value_std": round(spread.get("ours", float("nan")), 4),
        "peer": "sklearn IsolationForest (defaults)",
        "peer_value": round(summary.get("isolation_forest", float("nan")), 4),
        "peer_std": round(spread.get("isolation_forest", float("nan")), 4),
        "pca_reconstruction": round(summary.get("pca_reconstruction", float("nan")), 4),
        "pca_pyod": round(summary.get("pca_pyod", float("nan")), 4),
        "seeds": args.seeds if args.odds else 1,
        "train_seconds": round(sum(r["train_seconds"] for r in tabular.values()), 1),
        "per_set": {k: {n: [round(v[0], 4), round(v[1], 4)] for n, v in r.items() if n not in ("train_seconds", "per_seed")} for k, r in tabular.items()},
        "nab": nab,
        "wall_seconds": round(time.time() - started, 1),
    }))


if __name__ == "__main__":
    main()
