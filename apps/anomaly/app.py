"""The anomaly app's hooks (see shared/app.py): what train, predict, evaluate and export do with
rows, series and images. No TensorFlow or Keras at the top: hooks import them when they run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dlapps.apps.anomaly import data as anomaly_data
from dlapps.apps.anomaly.config import AnomalyConfig
from dlapps.shared import data as data_lib
from dlapps.shared.app import App, Splits
from dlapps.shared.config import EvaluateOptions, PredictOptions, option
from dlapps.shared.errors import UserError

CALIBRATION_BATCH = 1024  # scoring batch while calibrating: inference only, so larger than training's


@dataclasses.dataclass
class AnomalyPredictOptions(PredictOptions):
    anomalies_only: bool = option(False, "print only the rows, steps or images flagged as anomalies")
    csv: str = option("", "also write every result to this CSV file")
    plot: str = option("", "timeseries: folder to write a PNG per series into (value and score over time, threshold, flagged stretches shaded)")


@dataclasses.dataclass
class AnomalyEvaluateOptions(EvaluateOptions):
    label_column: str = option("", "CSV column of 0/1 anomaly labels (default: the run's, or a column named label, anomaly, is_anomaly or outlier)")
    labels: str = option("", "timeseries: NAB label-window JSON for the --data series (e.g. combined_windows.json)")


class AnomalyApp(App):
    name = "anomaly"
    summary = "Anomaly detection with autoencoders for tables, time series and images, with a calibrated threshold."
    config = AnomalyConfig
    predict_options = AnomalyPredictOptions
    evaluate_options = AnomalyEvaluateOptions
    predict_help = "Score and flag rows, series steps or images: `dlapps anomaly predict data.csv`; --csv FILE, --plot DIR for series."
    evaluate_help = "ROC-AUC, average precision and F1 at the threshold on labelled --data (NAB windows: detected and false alarms)."
    inputs = "paths"
    input_help = "files to score: CSV/.mat/.npz tables, CSV series, images, image folders or .npz images; '-' reads paths from stdin"

    # --- train ---------------------------------------------------------------------------------
    def check_config(self, config) -> None:
        if config.noise < 0 and config.noise != -1:
            raise UserError(f"--noise must be at least 0 (or -1 for the default of the --kind), got {config.noise:g}")
        if config.contamination and config.threshold_percentile:
            raise UserError("--contamination and --threshold-percentile both set the threshold; give one")
        depth = 2 ** len(config.filters)
        if config.kind == "timeseries" and config.window % depth:
            raise UserError(f"--window {config.window} must be a multiple of {depth} (2 ** the {len(config.filters)} --filters)")
        if config.kind == "image" and config.image_size % depth:
            raise UserError(f"--image-size {config.image_size} must be a multiple of {depth} (2 ** the {len(config.filters)} --filters)")

    def load_splits(self, config) -> Splits:
        loaded = anomaly_data.load(config)
        if config.kind == "tabular":
            anomaly_data.check_learnable(loaded, config.data)
        if config.kind == "timeseries":
            train, val = split_series(loaded, config)
            info = {"kind": "timeseries", "series": len(train), "train_steps": sum(map(len, train)),
                    "val_steps": sum(map(len, val or [])), "channels": train[0].columns}
            return Splits(train, val, info)
        train_index, val_index = data_lib.split_indices(len(loaded), config.val_fraction, config.seed)
        train, val = loaded.subset(train_index), loaded.subset(val_index)
        info = {"kind": config.kind, "train_examples": len(train), "val_examples": len(val)}
        if config.kind == "tabular":
            info["features"] = len(train.columns)
        return Splits(train, val if len(val) else None, info)

    def build_model(self, config, splits: Splits):
        from dlapps.apps.anomaly import model as anomaly_model

        if config.kind == "tabular":
            center, scale = anomaly_model.robust_statistics(splits.train.x)
            return anomaly_model.TabularAutoencoder(
                splits.train.columns, center, scale, config.hidden_units, config.bottleneck or 8, noise_of(config),
                members=config.members, name="tabular_autoencoder"
            )
        if config.kind == "timeseries":
            import numpy as np

            center, scale = anomaly_model.robust_statistics(np.concatenate([s.values for s in splits.train]))
            return anomaly_model.SeriesAutoencoder(
                splits.train[0].columns, center, scale, config.window, config.filters, noise=noise_of(config), name="series_autoencoder"
            )
        return anomaly_model.ImageAutoencoder(
            config.image_size, config.channels, config.filters, config.bottleneck or 16, noise_of(config), name="image_autoencoder"
        )

    def datasets(self, model, splits: Splits, config) -> tuple:
        train = data_lib.make_dataset(model_inputs(splits.train, config), member_shares(splits.train, config),
                                      batch_size=config.batch_size, shuffle=True, seed=config.seed)
        val = None
        if splits.val is not None:
            val = data_lib.make_dataset(model_inputs(splits.val, config), batch_size=config.batch_size)
        return train, val

    def callbacks(self, model, splits: Splits, config) -> list:
        import keras
        import numpy as np

        train = model_inputs(splits.train, config)
        # A series' held-out tail is short next to its windows, and one anomaly there raises the
        # score of every step within a window of it: series calibrate on their training part.
        held_out = splits.train if config.kind == "timeseries" or splits.val is None else splits.val
        if config.kind == "tabular" and splits.val is not None:
            # Tables: every row, training and held out. The fence's quartiles from a few hundred
            # held-out rows moved the threshold by half (demo, 800 rows: 99.6 from the 160
            # held out, 72.4 from all; F1 on 2,000 fresh rows 0.87 and 0.91), and the ensemble's
            # bagged, denoising members score their training rows as they score others.
            held_out = anomaly_data.Examples(np.concatenate([splits.train.x, splits.val.x]))

        class Calibrate(keras.callbacks.Callback):
            """Sets the score's statistics (from the training examples) and the threshold (from
            the held-out scores, see above) once per epoch, before the checkpoint is chosen, so
            each saved model carries the calibration of its own weights. Under fit that is the end
            of the epoch's validation pass (on_test_end comes before every on_epoch_end)."""

            def on_epoch_begin(self, epoch, logs=None):
                self.calibrated = False

            def on_test_end(self, logs=None):
                self.calibrate()

            def on_epoch_end(self, epoch, logs=None):
                if not self.calibrated:  # no validation pass this epoch
                    self.calibrate()

            def calibrate(self):
                self.model.calibrate(train, batch_size=CALIBRATION_BATCH)
                self.model.set_threshold(scores_of(self.model, held_out, config), config.contamination, config.threshold_percentile)
                self.calibrated = True

        return [Calibrate()]

    def describe_training(self, model, splits: Splits, config) -> str:
        info = splits.info
        if config.kind == "timeseries":
            what = f"{info['series']} series, {info['train_steps']:,} steps ({len(info['channels'])} channel(s)), windows of {config.window}"
        elif config.kind == "tabular":
            what = f"{info['train_examples']:,} rows x {info['features']} features"
        else:
            what = f"{info['train_examples']:,} images {config.image_size}x{config.image_size}x{config.channels}"
        return f"Training anomaly ({config.kind}): {what}, {model.count_params():,} parameters"

    def after_training(self, model, splits: Splits, config, run) -> dict:
        figures = {"threshold": float(model.threshold.numpy())}
        if splits.val is not None and has_labels(splits.val):
            evaluated = self.evaluate(model, splits.val, self.evaluate_options())
            figures.update({f"val_{key}": value for key, value in evaluated.items() if key != "threshold"})
        return figures

    # --- predict -------------------------------------------------------------------------------
    def read_inputs(self, items: list[str], options) -> list:
        paths = []
        for item in items:
            path = Path(item).expanduser()
            if not path.exists():
                raise UserError(f"{path}: no such file or folder")
            paths.append(path)
        return paths

    def predict(self, model, inputs: list, options) -> list[dict]:
        rows = []
        for path in inputs:
            if model_kind(model) == "timeseries":
                for file in anomaly_data.series_files(path):
                    series = anomaly_data.read_series(file, encoding=options.encoding)
                    found = score_series(model, series, str(file))
                    rows += [{"source": file.name, "timestamp": t, "value": v, "score": s, "anomaly": a}
                             for t, v, s, a in zip(series.timestamps, plain_values(series), found["score"], found["anomaly"])]
                    if options.plot:
                        plot_series(series, found, float(model.threshold.numpy()), Path(options.plot) / f"{file.stem}.png")
            else:
                examples = read_examples(model, path, options.encoding)
                found = model.predict(model_ready(model, examples, path), batch_size=options.batch_size, verbose=0)
                rows += [{"source": name, "score": float(s), "anomaly": bool(a)}
                         for name, s, a in zip(examples.names, found["score"], found["anomaly"])]
        if options.csv:
            write_csv(rows, options.csv)
        return [row for row in rows if row["anomaly"]] if options.anomalies_only else rows

    def format_prediction(self, row: dict) -> str:
        where = f"{row['source']}\t{row['timestamp']}" if "timestamp" in row else row["source"]
        return f"{where}\t{row['score']:.4f}\t{'ANOMALY' if row['anomaly'] else 'normal'}"

    # --- evaluate ------------------------------------------------------------------------------
    def evaluation_data(self, config, options):
        if not options.data:
            return super().evaluation_data(config, options)
        config = dataclasses.replace(config, data=options.data, encoding=options.encoding,
                                     label_column=options.label_column or config.label_column, labels=options.labels or config.labels)
        return anomaly_data.load(config)

    def evaluate(self, model, data, options) -> dict:
        import numpy as np
        from sklearn import metrics

        where = str(getattr(options, "data", "") or "the validation split")
        if not has_labels(data):
            raise UserError(f"{where}: no anomaly labels to evaluate against (a label column, --label-column, or --labels for NAB windows)")
        found = {"score": [], "anomaly": []}
        labels = []
        detection = {"windows": 0, "windows_detected": 0, "false_alarms": 0}
        if isinstance(data, list):
            for series in data:
                scored = score_series(model, series, series.name)
                found["score"].append(scored["score"])
                found["anomaly"].append(scored["anomaly"])
                labels.append(series.labels)
                for key, value in window_detection(series.labels, scored["anomaly"]).items():
                    detection[key] += value
        else:
            predicted = model.predict(model_ready(model, data, where), batch_size=options.batch_size, verbose=0)
            found = {"score": [predicted["score"]], "anomaly": [predicted["anomaly"]]}
            labels = [data.labels]
        scores, flags, labels = (np.concatenate(found["score"]), np.concatenate(found["anomaly"]), np.concatenate(labels))
        both = len(set(labels.tolist())) == 2
        result = {
            "examples": int(len(labels)),
            "anomalies": int(labels.sum()),
            "roc_auc": float(metrics.roc_auc_score(labels, scores)) if both else None,
            "average_precision": float(metrics.average_precision_score(labels, scores)) if both else None,
            "precision": float(metrics.precision_score(labels, flags, zero_division=0)),
            "recall": float(metrics.recall_score(labels, flags, zero_division=0)),
            "f1": float(metrics.f1_score(labels, flags, zero_division=0)),
            "flagged": int(flags.sum()),
            "threshold": float(model.threshold.numpy()),
        }
        if isinstance(data, list):
            result.update(detection)
        return result

    def headline(self, metrics: dict) -> dict:
        keys = ("roc_auc", "average_precision", "f1", "precision", "recall", "flagged", "anomalies", "examples",
                "windows", "windows_detected", "false_alarms", "threshold")
        return {k: metrics[k] for k in keys if k in metrics and metrics[k] is not None}

    # --- export --------------------------------------------------------------------------------
    def endpoints(self, model, options) -> dict:
        import tensorflow as tf

        kind = model_kind(model)
        if kind == "tabular":
            rows = tf.TensorSpec([None, len(model.features)], tf.float32, name="rows")
            return {"serving_default": tf.function(lambda rows: model.detect(rows), input_signature=[rows])}
        if kind == "timeseries":
            channels = len(model.channels)
            values = tf.TensorSpec([None, None, channels], tf.float32, name="values")
            windows = tf.TensorSpec([None, model.window, channels], tf.float32, name="windows")
            return {
                # Equal-length series in, one score and flag per step out: what predict prints.
                "serving_default": tf.function(lambda values: model.detect_series(values), input_signature=[values]),
                "windows": tf.function(lambda windows: model.detect(windows), input_signature=[windows]),
            }
        image_bytes = tf.TensorSpec([None], tf.string, name="image_bytes")
        shape = tf.TensorSpec([model.image_size, model.image_size, model.channels], tf.uint8)

        def detect_images(image_bytes):
            decoded = tf.map_fn(lambda b: anomaly_data.decode_for_model(b, model.image_size, model.channels),
                                image_bytes, fn_output_signature=shape)
            return model.detect(decoded)

        return {"serving_default": tf.function(detect_images, input_signature=[image_bytes])}


# --- helpers of the hooks ------------------------------------------------------------------------


def split_series(series: list, config) -> tuple[list, list]:
    """Each series' last `val_fraction` of steps is held out: by time, since overlapping windows
    of a random split would leak training steps into validation."""
    train, val = [], []
    for one in series:
        cut = len(one) - int(round(len(one) * config.val_fraction))
        train.append(one.part(0, cut))
        if cut < len(one):
            val.append(one.part(cut, len(one)))
        anomaly_data.windows_of(train[-1], config.window, f"{one.name}: the training part")
        if cut < len(one):
            anomaly_data.windows_of(val[-1], config.window, f"{one.name}: the held-out {config.val_fraction:g} (--val-fraction)")
    return train, val or None


def model_inputs(part, config):
    """What the model reads from a split: rows, images, or every window of every series."""
    import numpy as np

    if config.kind == "timeseries":
        return np.concatenate([anomaly_data.windows_of(series, config.window) for series in part])
    return part.x


def scores_of(model, part, config):
    """The scores the threshold is chosen from: one per row or image, or one per step of every
    series (what predict flags, so a short anomaly spoils only the steps it spans)."""
    import numpy as np

    if config.kind == "timeseries":
        return np.concatenate([score_series(model, series, series.name)["score"] for series in part])
    return model.measure(model_inputs(part, config), CALIBRATION_BATCH)["score"]


def noise_of(config) -> float:
    """--noise, with -1 the kind's default: 0.2 for tables (on the ODDS sets it raised the mean
    ROC-AUC of the ensemble, see the README), none for series and images (not measured there)."""
    if config.noise >= 0:
        return config.noise
    return 0.2 if config.kind == "tabular" else 0.0


def member_shares(part, config):
    """Tabular ensembles: which members learn from each training row, a seeded 0/1 draw per row
    and member (bagging: members that saw different rows, and so different anomalies among them,
    disagree where a single model would be sure); None (every row) for other kinds or one member."""
    import numpy as np

    if config.kind != "tabular" or config.members < 2 or config.member_rows >= 1:
        return None
    return (np.random.default_rng(config.seed).random((len(part), config.members)) < config.member_rows).astype("float32")


def model_kind(model) -> str:
    return {"TabularAutoencoder": "tabular", "SeriesAutoencoder": "timeseries"}.get(type(model).__name__, "image")


def has_labels(data) -> bool:
    parts = data if isinstance(data, list) else [data]
    return bool(parts) and all(part.labels is not None for part in parts)


def read_examples(model, path: Path, encoding: str):
    if model_kind(model) == "tabular":
        return anomaly_data.read_table(path, encoding=encoding)
    return anomaly_data.read_images(path, model.image_size, model.channels)


def model_ready(model, examples, where):
    """Rows in the order the model was trained on (by name, else by position), or images."""
    if model_kind(model) == "tabular":
        return anomaly_data.match_features(examples, model.features, where)
    return examples.x


def score_series(model, series, where: str) -> dict:
    import numpy as np

    if series.values.shape[1] != len(model.channels):
        raise UserError(f"{where}: {series.values.shape[1]} value columns, the model was trained on {len(model.channels)} ({', '.join(model.channels)})")
    anomaly_data.windows_of(series, model.window, where)
    found = model.detect_series(series.values[None])
    return {"score": [float(s) for s in np.asarray(found["score"])[0]], "anomaly": [bool(a) for a in np.asarray(found["anomaly"])[0]]}


def plain_values(series) -> list:
    values = series.values.tolist()
    return [v[0] for v in values] if series.values.shape[1] == 1 else values


def runs(flags) -> list[tuple[int, int]]:
    """(start, stop) of every stretch of consecutive true values."""
    import numpy as np

    flags = np.asarray(flags, dtype=np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags, [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def window_detection(labels, flags) -> dict:
    """NAB's view of a series: a labelled window counts as detected when any step in it is
    flagged; every flagged stretch that touches no window is one false alarm."""
    windows, alarms = runs(labels), runs(flags)
    detected = sum(any(a < w_stop and w_start < a_stop for a, a_stop in alarms) for w_start, w_stop in windows)
    false_alarms = sum(not any(a < w_stop and w_start < a_stop for w_start, w_stop in windows) for a, a_stop in alarms)
    return {"windows": len(windows), "windows_detected": detected, "false_alarms": false_alarms}


def plot_series(series, found: dict, threshold: float, path: Path) -> None:
    """Value and score over time, the threshold as a line, flagged stretches shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlapps.shared.files import save_figure

    steps = range(len(series))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 5), sharex=True)
    top.plot(steps, series.values, linewidth=0.8)
    top.set_ylabel(", ".join(series.columns))
    bottom.plot(steps, found["score"], linewidth=0.8, color="tab:orange")
    bottom.axhline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:.3g}")
    bottom.set_ylabel("score")
    bottom.set_yscale("log")
    bottom.legend(loc="upper left")
    for start, stop in runs(found["anomaly"]):
        for axis in (top, bottom):
            axis.axvspan(start, stop - 1, color="tab:red", alpha=0.2)
    top.set_title(f"{series.name}: {sum(found['anomaly'])} of {len(series)} steps flagged")
    ticks = list(steps)[:: max(1, len(series) // 8)]
    bottom.set_xticks(ticks, [series.timestamps[i] for i in ticks], rotation=20, fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)


def write_csv(rows: list[dict], path: str) -> None:
    import csv
    import io

    from dlapps.shared.files import write_text

    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, buffer.getvalue())


APP = AnomalyApp()
