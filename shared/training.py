"""Run folders and the one ``fit`` wrapper every app trains through.

A run folder (``--out``, default ``saved_models/APP``) holds::

    config.json            the resolved config the run was trained with
    model.keras            the best model; replaced only when a run finishes
    checkpoints/           best.keras (+ best.json) during training, initial.keras for --resume
    backup/                BackupAndRestore state of an unfinished run (deleted when it finishes)
    history.csv, logs/     per-epoch metrics (CSVLogger) and TensorBoard event files
    curves.png             training curves
    metrics.json           final validation metrics and timings
    serving/N/             SavedModels written by ``export``

Everything is written to a temporary name and renamed, so an interrupted run never leaves a
half-written file where a good one was.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from . import config as config_lib
from .errors import UserError

DEFAULT_ROOT = Path("saved_models")


# --- atomic writes -------------------------------------------------------------------------------


def write_json(path: str | Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2, default=_json_default)
        file.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; run folders are meant to be shared
    os.replace(tmp, path)


def _json_default(value):
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def save_model(model, path: str | Path) -> None:
    """model.save to a temporary .keras file in the same folder, then an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def load_model(run_dir: str | Path, app: str):
    """The trained model of a run folder, or a one-line UserError when it is missing or unreadable."""
    import keras

    run_dir = Path(run_dir)
    path = run_dir / "model.keras" if run_dir.is_dir() or not run_dir.suffix else run_dir
    if not path.exists():
        hint = f"train one first: dlapps {app} train --out {run_dir}" if path.parent == run_dir else ""
        raise UserError(f"{path}: no trained model here; {hint}".rstrip("; "))
    try:
        return keras.saving.load_model(path)
    except Exception as error:
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: not a readable Keras model ({first})")


# --- run folders ---------------------------------------------------------------------------------


class Run:
    """A training run's folder: where everything of one ``train`` goes."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    model_path = property(lambda self: self.dir / "model.keras")
    config_path = property(lambda self: self.dir / "config.json")
    checkpoint_dir = property(lambda self: self.dir / "checkpoints")
    best_path = property(lambda self: self.checkpoint_dir / "best.keras")
    initial_path = property(lambda self: self.checkpoint_dir / "initial.keras")
    backup_dir = property(lambda self: self.dir / "backup")
    history_path = property(lambda self: self.dir / "history.csv")
    metrics_path = property(lambda self: self.dir / "metrics.json")

    @property
    def interrupted(self) -> bool:
        """An unfinished run: BackupAndRestore state and the initial model to restore it into."""
        return self.backup_dir.is_dir() and self.initial_path.exists()

    def stage_done(self, stage: str) -> bool:
        """Whether a named stage of a multi-stage run (say, classify's frozen-backbone phase) finished."""
        return (self.checkpoint_dir / f"{stage}.done").exists()

    @classmethod
    def start(cls, app: str, config) -> "Run":
        """Checks --resume against the folder's state and writes config.json."""
        run = cls(config.out or DEFAULT_ROOT / app)
        if config.resume and not run.interrupted:
            raise UserError(f"{run.dir}: no interrupted run to resume (train without --resume to start one)")
        if not config.resume and run.interrupted:
            raise UserError(
                f"{run.dir}: holds an interrupted run; continue it with --resume, "
                f"or remove {run.backup_dir} to start over"
            )
        run.dir.mkdir(parents=True, exist_ok=True)
        if not config.resume:
            shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
        write_json(run.config_path, config.to_dict())
        return run


def run_config(model_dir: str | Path, config_cls, required: bool = False):
    """The config a run folder was trained with (its config.json), or the app's defaults when it
    has none; `required` (evaluating on the run's own validation split) makes a missing one an error."""
    path = Path(model_dir) / "config.json"
    if path.exists():
        return config_lib.load_saved(config_cls, path)
    if required:
        raise UserError(f"{path}: no training config to recover the validation split from; pass --data")
    return config_cls()


def train_config(app: str, config_cls, config_file=None, overrides: dict | None = None):
    """The config for ``train``; with --resume, the interrupted run's own config.json is the base,
    so only the flags given again (say, a larger --epochs) change it."""
    overrides = dict(overrides or {})
    if overrides.get("resume"):
        run = Run(overrides.get("out") or DEFAULT_ROOT / app)
        if run.config_path.exists() and not config_file:
            saved = config_lib.load_saved(config_cls, run.config_path).to_dict()
            saved.update({k: v for k, v in overrides.items() if v is not None})
            return config_lib.resolve(config_cls, None, saved)
    return config_lib.resolve(config_cls, config_file, overrides)


def model_for_run(run: Run, config, build: Callable[[], Any], strategy):
    """The model to train: built fresh (and saved as checkpoints/initial.keras, so that data-derived
    state such as a vocabulary is identical on --resume), or reloaded from that file on --resume."""
    import keras

    with strategy.scope():
        if config.resume:
            model = keras.saving.load_model(run.initial_path, compile=False)
        else:
            model = build()
    if not config.resume:
        save_model(model, run.initial_path)
    return model


# --- callbacks -----------------------------------------------------------------------------------


def _keras_callbacks():
    import keras

    class BestCheckpoint(keras.callbacks.Callback):
        """Saves the model whenever `monitor` improves, atomically; remembers the best value in
        best.json so a resumed run keeps comparing against it."""

        def __init__(self, run: Run, monitor: str, mode: str):
            super().__init__()
            self.run, self.monitor, self.mode = run, monitor, mode
            state_path = run.checkpoint_dir / "best.json"
            self.state_path = state_path
            state = json.loads(state_path.read_text()) if state_path.exists() else {}
            self.best = state.get("value", math.inf if mode == "min" else -math.inf)
            self.best_epoch = state.get("epoch")

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(self.monitor)
            if value is None or not math.isfinite(value):
                return
            better = value < self.best if self.mode == "min" else value > self.best
            if better:
                self.best, self.best_epoch = float(value), epoch + 1
                save_model(self.model, self.run.best_path)
                write_json(self.state_path, {"monitor": self.monitor, "value": self.best, "epoch": self.best_epoch})

    class TimeLimit(keras.callbacks.Callback):
        """Stops training once `minutes` have passed (checked after every batch)."""

        def __init__(self, minutes: float):
            super().__init__()
            self.deadline = time.time() + 60 * minutes

        def on_train_batch_end(self, batch, logs=None):
            if time.time() > self.deadline:
                self.model.stop_training = True

    return BestCheckpoint, TimeLimit


def time_limit(minutes: float):
    """The callback behind --max-minutes, for training loops outside `fit` (a benchmark's peer)."""
    return _keras_callbacks()[1](minutes)


def fit(
    model,
    train_data,
    val_data,
    run: Run,
    config,
    *,
    monitor: str = "val_loss",
    mode: str = "min",
    callbacks: tuple = (),
    steps_per_epoch: int | None = None,
    epochs: int | None = None,
    stage: str = "",
    final: bool = True,
    verbose: int | None = None,
) -> dict:
    """model.fit with the shared callbacks; promotes the best checkpoint to model.keras at the end
    and writes history.csv, curves.png and metrics.json. Returns the metrics as plain Python.

    Multi-stage training (e.g. a frozen backbone, then fine-tuning) calls fit once per `stage`
    with ``final=False`` for all but the last: each stage has its own resumable backup, history
    is appended, the best checkpoint is compared across stages, and only the final stage promotes
    it to model.keras. ``run.stage_done(stage)`` tells a resumed run which stages to skip.
    """
    import keras

    BestCheckpoint, TimeLimit = _keras_callbacks()
    if val_data is None and monitor.startswith("val_"):
        monitor = monitor[len("val_") :]
    best = BestCheckpoint(run, monitor, mode)
    backup_dir = run.backup_dir / stage if stage else run.backup_dir
    append = bool(config.resume) or any(run.checkpoint_dir.glob("*.done"))
    shared_callbacks = [
        keras.callbacks.BackupAndRestore(str(backup_dir), double_checkpoint=True),
        best,
        keras.callbacks.CSVLogger(str(run.history_path), append=append),
        keras.callbacks.TensorBoard(str(run.dir / "logs"), write_graph=False, profile_batch=0),
        keras.callbacks.TerminateOnNaN(),
    ]
    if getattr(config, "max_minutes", 0) > 0:
        shared_callbacks.append(TimeLimit(config.max_minutes))
    if config.patience > 0:
        shared_callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=config.patience)
        )
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    started = time.time()
    model.fit(
        train_data,
        validation_data=val_data,
        epochs=epochs or config.epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=shared_callbacks + list(callbacks),
        shuffle=False,  # input pipelines shuffle themselves (seeded), see shared.data
        verbose=verbose,
    )
    seconds = time.time() - started
    if not final:
        (run.checkpoint_dir / f"{stage}.done").write_text("")
        return {"stage": stage, "best_value": best.best, "best_epoch": best.best_epoch, "train_seconds": round(seconds, 2)}
    if stage:
        shutil.rmtree(run.backup_dir, ignore_errors=True)
    if not run.best_path.exists():  # e.g. every epoch produced NaN: keep the last weights rather than nothing
        save_model(model, run.best_path)
    os.replace(run.best_path, run.model_path)
    history = read_history(run.history_path)
    plot_history(history, run.dir / "curves.png")
    metrics = {
        "monitor": monitor,
        "best_value": None if not math.isfinite(best.best) else best.best,
        "best_epoch": best.best_epoch,
        "epochs_run": len(history.get("epoch", [])),
        "train_seconds": round(seconds, 2),
    }
    last = {k: v[-1] for k, v in history.items() if k != "epoch" and v}
    metrics["last_epoch"] = last
    write_json(run.metrics_path, metrics)
    shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
    return metrics


def read_history(path: Path) -> dict[str, list[float]]:
    import csv

    if not Path(path).exists():
        return {}
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                pass
    return columns


def plot_history(history: dict[str, list[float]], path: Path) -> None:
    """One panel per metric, training and validation curves together."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in history if k != "epoch" and not k.startswith("val_") and k != "learning_rate"]
    if not names:
        return
    epochs = [int(e) + 1 for e in history.get("epoch", range(len(history[names[0]])))]
    figure, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    for axis, name in zip(axes[0], names):
        axis.plot(epochs, history[name], marker="o", label="train")
        if history.get(f"val_{name}"):  # empty when CSVLogger wrote NA columns (no validation data)
            axis.plot(epochs, history[f"val_{name}"], marker="o", label="validation")
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.legend()
    figure.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(tmp, dpi=80)
    plt.close(figure)
    os.replace(tmp, path)
