"""Training for every app: run folders, the shared callbacks, Keras ``fit`` and a tf.distribute
loop, behind one ``train(app, config)``.

A run folder (``--out``, default ``saved_models/APP``) holds::

    config.json            the resolved config the run was trained with
    model.keras            the final model (the best epoch, or the last with keep="last")
    history.csv, logs/     per-epoch metrics (CSV) and TensorBoard event files
    curves.png             training curves
    metrics.json           final figures, written once
    serving/N/             SavedModels written by ``export`` (never touched by train)

A run writes into a staging folder beside it (``.NAME.training/``), locked against a second
train, and moves its files into the run folder only when it finishes: a run that fails or is
killed leaves the run folder as it was, and ``--resume`` continues the staging folder from its
last completed epoch. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from dlapps.shared import config as config_lib
from dlapps.shared import files, runtime
from dlapps.shared.errors import UserError

DEFAULT_ROOT = Path("saved_models")

def default_run_dir(app_name: str) -> Path:
    """Where an app's run folder lives when --out / --model is not given."""
    return DEFAULT_ROOT / app_name


def first_line(error: BaseException, limit: int = 200) -> str:
    """An exception as one short line: its message's first line, or its type's name."""
    text = str(error).strip()
    return (text.splitlines()[0][:limit] if text else type(error).__name__)


# --- stages ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Stage:
    """One phase of training (classify: frozen backbone, then fine-tuning). `prepare(model)` runs
    in the strategy's scope before the phase starts (unfreeze layers, compile anew);
    `from_best` starts the phase from the best checkpoint so far rather than the last epoch."""

    name: str
    epochs: int
    prepare: Callable | None = None
    from_best: bool = False


# --- run folders -----------------------------------------------------------------------------------


class Run:
    """A run folder and the staging folder a train writes into until it finishes."""

    def __init__(self, directory: str | Path, staging: Path | None = None, chief: bool = True):
        self.dir = Path(directory)
        self.staging = staging or self.dir.parent / f".{self.dir.name}.training"
        self.chief = chief
        self.train_seconds = 0.0  # set when training ends, for an app's after_training figures
        self._lock_file = None

    # paths in the staging folder while training
    config_path = property(lambda self: self.staging / "config.json")
    checkpoint_dir = property(lambda self: self.staging / "checkpoints")
    checkpoint_path = property(lambda self: self.checkpoint_dir / "model.keras")
    initial_path = property(lambda self: self.checkpoint_dir / "initial.keras")
    backup_dir = property(lambda self: self.staging / "backup")
    history_path = property(lambda self: self.staging / "history.csv")
    metrics_path = property(lambda self: self.staging / "metrics.json")
    model_path = property(lambda self: self.dir / "model.keras")
    lock_path = property(lambda self: self.dir.parent / f".{self.dir.name}.lock")

    @property
    def interrupted(self) -> bool:
        """An unfinished run: its config and the initial model to restore its backup into."""
        return self.config_path.exists() and self.initial_path.exists()

    def stage_done(self, stage: str) -> bool:
        return (self.checkpoint_dir / f"{stage}.done").exists()

    @staticmethod
    def check_location(directory: Path, resume: bool) -> None:
        """The checks on --out that need no data: a folder can be made there, and --resume has
        something to resume."""
        for parent in [directory, *directory.parents]:
            if parent.exists():
                if not parent.is_dir():
                    raise UserError(f"{directory}: cannot make the run folder here: {parent} is a file, not a folder")
                break
        if resume and not Run(directory).interrupted:
            raise UserError(f"{directory}: no interrupted run to resume (train without --resume to start one)")

    def discard_if_new(self, config) -> None:
        """Removes a staging folder this train made before it had anything worth resuming."""
        if self.chief and not config.resume and not self.initial_path.exists():
            shutil.rmtree(self.staging, ignore_errors=True)

    @classmethod
    def start(cls, app_name: str, config, chief: bool = True) -> "Run":
        """Locks the run folder, checks --resume against the staging folder, writes config.json.
        A worker that is not the chief writes into a temporary folder (TF's multi-worker pattern)."""
        directory = Path(config.out or default_run_dir(app_name))
        if not chief:
            run = cls(directory, Path(tempfile.mkdtemp(prefix="dlapps-worker-")), chief=False)
            files.write_json(run.config_path, config.to_dict())
            return run
        run = cls(directory)
        try:
            run.dir.parent.mkdir(parents=True, exist_ok=True)
            run._lock()
        except PermissionError as error:
            raise UserError(f"{run.dir}: cannot write the run folder here ({error.strerror})")
        try:
            cls.check_location(run.dir, config.resume)  # again, now that the lock holds the folder still
            if not config.resume and run.staging.exists():
                if run.interrupted:
                    raise UserError(
                        f"{run.dir}: holds an interrupted run; continue it with --resume, "
                        f"or remove {run.staging} to start over"
                    )
                shutil.rmtree(run.staging)  # a run killed before it had anything to resume
            run.staging.mkdir(parents=True, exist_ok=True)
            files.write_json(run.config_path, config.to_dict())
        except PermissionError as error:
            run.release()
            raise UserError(f"{run.dir}: cannot write the run folder here ({error.strerror})")
        except BaseException:
            run.release()
            raise
        return run

    def _lock(self) -> None:
        import fcntl

        self._lock_file = open(self.lock_path, "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "another process"
            self._lock_file.close()
            self._lock_file = None
            raise UserError(f"{self.dir}: another train is writing this run folder ({holder}); wait for it or use another --out")
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(f"pid {os.getpid()}")
        self._lock_file.flush()

    def release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
            self.lock_path.unlink(missing_ok=True)

    def finish(self, metrics: dict) -> None:
        """Writes metrics.json, then moves everything the run wrote into the run folder (each
        file replaced by rename; serving/ and other files of earlier runs stay), and unlocks."""
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        shutil.rmtree(self.backup_dir, ignore_errors=True)
        files.write_json(self.metrics_path, metrics)
        if not self.chief:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        # model.keras last: until it moves, the folder's model is the previous run's, whole.
        entries = sorted(self.staging.iterdir(), key=lambda p: p.name == "model.keras")
        for entry in entries:
            target = self.dir / entry.name
            if entry.is_dir():
                old = self.dir / f".{entry.name}.old"
                if target.exists():
                    os.replace(target, old)
                os.replace(entry, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(entry, target)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.release()


def run_config(model_dir: str | Path, config_cls, required: bool = False):
    """The config a run folder was trained with (its config.json), or the app's defaults when it
    has none; `required` (evaluating on the run's own validation split) makes a missing one an error."""
    path = Path(model_dir) / "config.json"
    if Path(model_dir).suffix == ".keras":
        path = Path(model_dir).parent / "config.json"
    if path.exists():
        try:
            return config_lib.load_saved(config_cls, path)
        except (ValueError, TypeError) as error:
            raise UserError(f"{path}: not a readable run config ({first_line(error)})")
    if required:
        raise UserError(f"{path}: no training config to recover the validation split from; pass --data")
    return config_cls()


def train_config(app_name: str, config_cls, config_file=None, overrides: dict | None = None):
    """The config for ``train``; with --resume, the interrupted run's own config.json is the base,
    so only the flags given again (say, a larger --epochs) change it."""
    overrides = dict(overrides or {})
    if overrides.get("resume"):
        run = Run(overrides.get("out") or default_run_dir(app_name))
        if run.config_path.exists() and not config_file:
            saved = config_lib.load_saved(config_cls, run.config_path).to_dict()
            saved.update({k: v for k, v in overrides.items() if v is not None})
            return config_lib.resolve(config_cls, None, saved)
    return config_lib.resolve(config_cls, config_file, overrides)


# --- models ----------------------------------------------------------------------------------------


def save_model(model, path: str | Path) -> None:
    """model.save to a temporary .keras file in the same folder, then an atomic rename."""
    files.write_atomic(path, lambda tmp: model.save(tmp))


def load_model(run_dir: str | Path, app: str, compile: bool = True):
    """The trained model of a run folder (or .keras file), checked to be one of `app`'s models;
    a one-line UserError when it is missing, unreadable or another app's or tool's model.
    Loads in Keras's safe mode: a file with Python lambdas is refused."""
    run_dir = Path(run_dir)
    path = run_dir if run_dir.suffix == ".keras" else run_dir / "model.keras"
    if not path.exists():
        hint = f"; train one first: dlapps {app} train --out {run_dir}" if path.parent == run_dir else ""
        raise UserError(f"{path}: no trained model here{hint}")
    runtime.import_tensorflow()
    import keras

    register_models(f"dlapps.apps.{app}")
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:
        raise UserError(f"{path}: not a readable Keras model of dlapps {app} ({first_line(error, 160)})")
    if not type(model).__module__.startswith(f"dlapps.apps.{app}."):
        raise UserError(f"{path}: a {type(model).__name__} model, not one that dlapps {app} trained")
    return model


def register_models(package: str) -> None:
    """Imports an app's model.py, whose decorators register its classes for loading."""
    import importlib

    try:
        importlib.import_module(f"{package}.model")
    except ModuleNotFoundError as error:
        if error.name != f"{package}.model":
            raise


def model_for_run(run: Run, config, build: Callable[[], Any], strategy):
    """The model to train: built fresh (and saved as checkpoints/initial.keras, so that data-derived
    state such as a vocabulary is identical on --resume), or reloaded from that file on --resume."""
    import keras

    with strategy.scope():
        if config.resume and run.initial_path.exists():
            model = keras.saving.load_model(run.initial_path, compile=False)
        else:
            model = build()
    if not run.initial_path.exists():
        save_model(model, run.initial_path)
    return model


# --- callbacks -------------------------------------------------------------------------------------


@functools.cache  # one set of classes, so `isinstance` recognises an app's CosineDecay
def _callback_classes():
    import keras

    class Checkpoint(keras.callbacks.Callback):
        """Saves the model atomically when `monitor` improves (keep="best") or after every epoch
        (keep="last"); remembers the best value in checkpoint.json so a resumed run keeps
        comparing against it."""

        def __init__(self, run: Run, monitor: str, mode: str, keep: str):
            super().__init__()
            self.run, self.monitor, self.mode, self.keep = run, monitor, mode, keep
            self.state_path = run.checkpoint_dir / "checkpoint.json"
            state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
            self.best = state.get("value", math.inf if mode == "min" else -math.inf)
            self.best_epoch = state.get("epoch")
            self.epoch_offset = 0  # epochs of earlier stages

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            if not all(math.isfinite(v) for v in logs.values() if isinstance(v, (int, float))):
                return  # a NaN epoch is never kept
            value = logs.get(self.monitor)
            epoch_number = self.epoch_offset + epoch + 1
            if self.keep == "last":
                if value is not None:
                    self.best = float(value)
                self.best_epoch = epoch_number
            else:
                if value is None or not math.isfinite(value):
                    return
                if not (value < self.best if self.mode == "min" else value > self.best):
                    return
                self.best, self.best_epoch = float(value), epoch_number
            save_model(self.model, self.run.checkpoint_path)
            files.write_json(self.state_path, {"monitor": self.monitor, "value": self.best, "epoch": self.best_epoch})

    class TimeLimit(keras.callbacks.Callback):
        """Stops training once `minutes` have passed (checked after every batch)."""

        def __init__(self, minutes: float):
            super().__init__()
            self.deadline = time.time() + 60 * minutes

        def on_train_batch_end(self, batch, logs=None):
            if time.time() > self.deadline:
                self.model.stop_training = True

    class NanGuard(keras.callbacks.Callback):
        """Stops at the first non-finite loss and remembers where (the run then fails)."""

        def __init__(self):
            super().__init__()
            self.nan_epoch = None
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            # every logged value: a GAN logs d_loss and g_loss, not one loss
            values = [float(v) for v in (logs or {}).values() if isinstance(v, (int, float)) or getattr(v, "shape", None) == ()]
            if any(not math.isfinite(v) for v in values):
                self.nan_epoch = self.epoch + 1
                self.model.stop_training = True

    class CosineDecay(keras.callbacks.Callback):
        """Sets the learning rate before every batch: a linear warm-up over the first `warmup` of
        training, then cosine decay (Loshchilov & Hutter 2017, no restarts) from `start` down to
        `floor` x `start`. Progress is the larger of epochs done / `epochs` and, with a time budget,
        the share of `minutes` spent, so a --max-minutes run anneals fully by its deadline however
        many epochs fit. Within `train` the budget is the run's one deadline (`deadline`, set by
        `_train_stages`), the same one that stops training; alone, it starts at `on_train_begin`."""

        def __init__(self, start: float, epochs: int, minutes: float = 0.0, warmup: float = 0.0, floor: float = 0.0):
            super().__init__()
            self.start, self.epochs, self.minutes = float(start), int(epochs), float(minutes)
            self.warmup, self.floor = float(warmup), float(floor)
            self.deadline = None
            self.epoch = 0

        def on_train_begin(self, logs=None):
            if self.deadline is None and self.minutes > 0:
                self.deadline = time.time() + 60 * self.minutes

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def progress(self, batch: int) -> float:
            steps = (self.params or {}).get("steps") or 0  # None for a pipeline of unknown size: by epochs
            done = (self.epoch + (batch / steps if steps else 0.0)) / max(self.epochs, 1)
            if self.minutes > 0 and self.deadline is not None:
                done = max(done, 1 - (self.deadline - time.time()) / (60 * self.minutes))
            return done

        def on_train_batch_begin(self, batch, logs=None):
            rate = cosine_rate(self.start, self.progress(batch), self.warmup, self.floor)
            self.model.optimizer.learning_rate.assign(rate)

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:  # into history.csv: the rate the epoch ended at
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    class KeepFreedMemory(keras.callbacks.Callback):
        """glibc keeps freed memory for reuse for the length of training (`runtime.keep_freed_memory`)."""

        def on_train_begin(self, logs=None):
            self.restore = runtime.keep_freed_memory()

        def on_train_end(self, logs=None):
            self.restore()

    return Checkpoint, TimeLimit, NanGuard, CosineDecay, KeepFreedMemory


def cosine_rate(start: float, progress: float, warmup: float = 0.0, floor: float = 0.0) -> float:
    """The learning rate `progress` (0..1, clipped) of the way through training: linear warm-up
    over the first `warmup`, then half a cosine from `start` down to `floor` x `start`."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return start * (progress + 1e-3) / warmup
    cosine = 0.5 * (1 + math.cos(math.pi * (progress - warmup) / max(1 - warmup, 1e-9)))
    return start * (floor + (1 - floor) * cosine)


def cosine_decay(start: float, epochs: int, minutes: float = 0.0, warmup: float = 0.0, floor: float = 0.0):
    """The callback of a cosine learning-rate schedule over `epochs` or a `minutes` budget,
    whichever ends first (see CosineDecay above)."""
    return _callback_classes()[3](start, epochs, minutes, warmup, floor)


def keep_freed_memory():
    """The callback for apps whose input pipeline is a Python generator (`from_generator`): that
    kernel pins glibc's mmap threshold at 128 KiB, so every large temporary of a step would be
    mapped and its pages faulted in afresh (see `runtime.keep_freed_memory`)."""
    return _callback_classes()[4]()


def time_limit(minutes: float):
    """The callback behind --max-minutes, for training loops outside `train` (a benchmark's peer)."""
    return _callback_classes()[1](minutes)


# --- train -----------------------------------------------------------------------------------------


def is_chief(strategy) -> bool:
    """Whether this process writes the run folder: always, but for non-chief multi-worker tasks."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def is_multiworker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def train(app, config) -> dict:
    """The whole ``train`` mode of `app` (a shared.app.App) with a resolved `config`."""
    app.check_config(config)
    directory = Path(config.out or default_run_dir(app.name))
    Run.check_location(directory, config.resume)  # before anything slow: a wrong --out fails at once
    runtime.import_tensorflow()
    import keras

    from dlapps.shared.strategy import describe, get_strategy

    keras.utils.set_random_seed(config.seed)
    strategy = get_strategy(config.strategy, config.mixed_precision)
    multiworker = is_multiworker(strategy)
    if strategy.num_replicas_in_sync > 1 and app.single_device_only:
        raise UserError(f"--strategy {config.strategy}: {app.name} trains on one device only: {app.single_device_only}")
    run = Run.start(app.name, config, chief=is_chief(strategy))
    try:
        try:
            splits = app.load_splits(config)
            register_models(type(app).__module__.rpartition(".")[0])  # --resume loads before build_model runs
            model = model_for_run(run, config, lambda: app.build_model(config, splits), strategy)
        except BaseException:
            run.discard_if_new(config)  # bad data or weights change nothing, not even the staging folder
            raise
        with strategy.scope():
            app.compile_model(model, config)
        print(f"{app.describe_training(model, splits, config)}; {describe(strategy)}", flush=True)
        train_ds, val_ds = app.datasets(model, splits, config)
        if strategy.num_replicas_in_sync > 1:
            train_ds, val_ds = (even_batches(ds, strategy.num_replicas_in_sync) for ds in (train_ds, val_ds))
        loop = app.custom_loop or multiworker
        outcome = _train_stages(app, model, train_ds, val_ds, run, config, strategy, splits, loop)
        run.train_seconds = outcome["train_seconds"]
        final = _final_model(model, run)
        if multiworker:  # the same number on every worker shows that they trained one model
            import numpy as np

            checksum = sum(float(np.abs(np.asarray(w, dtype="float64")).sum()) for w in model.weights)
            print(f"Weights checksum (the same on every worker): {checksum:.6f}", flush=True)
        metrics = {
            "monitor": outcome["monitor"],
            "keep": _checkpoint_selection(app, config, splits)[2],
            "best_value": outcome["best_value"],
            "best_epoch": outcome["best_epoch"],
            "epochs_run": outcome["epochs_run"],
            "train_seconds": outcome["train_seconds"],
            "last_epoch": outcome["last_epoch"],
            "strategy": describe(strategy),
            **splits.info,
        }
        metrics.update(app.after_training(final, splits, config, run) or {})
        if os.path.exists(run.history_path):
            plot_history(read_history(run.history_path), run.staging / "curves.png")
        save_model(final, run.staging / "model.keras")  # as after_training left it (generate adds its FID network)
        run.finish(metrics)
        return metrics
    finally:
        run.release()
        keras.mixed_precision.set_global_policy("float32")  # what follows in this process builds in float32


def even_batches(dataset, replicas: int):
    """Trims a batch to a multiple of the replicas (the last batch of an epoch, by at most
    replicas - 1 examples): Keras sums per-replica tensors of uneven halves into a shape error."""
    if dataset is None:
        return None
    import tensorflow as tf

    def trim(*batch):
        size = tf.shape(tf.nest.flatten(batch)[0])[0]
        even = tf.nest.map_structure(lambda t: t[: size - size % replicas], batch)
        return even[0] if len(even) == 1 else even

    def not_empty(*batch):
        return tf.shape(tf.nest.flatten(batch)[0])[0] > 0

    return dataset.map(trim).filter(not_empty)


def _final_model(model, run: Run):
    """The model the run keeps: the checkpoint written by `Checkpoint`, or the model in memory
    when no epoch produced one (e.g. a time budget shorter than one epoch)."""
    import keras

    if not run.checkpoint_path.exists():
        save_model(model, run.checkpoint_path)
        return model
    return keras.saving.load_model(run.checkpoint_path, compile=False)


def _checkpoint_selection(app, config, splits) -> tuple[str, str, str]:
    """The app's (monitor, mode, keep); `splits` is passed when its hook takes them."""
    if "splits" in inspect.signature(app.checkpoint_selection).parameters:
        return app.checkpoint_selection(config, splits=splits)
    return app.checkpoint_selection(config)


def _train_stages(app, model, train_ds, val_ds, run, config, strategy, splits, loop: bool) -> dict:
    import keras

    Checkpoint, TimeLimit, NanGuard, CosineDecay, _ = _callback_classes()
    monitor, mode, keep = _checkpoint_selection(app, config, splits)
    if val_ds is None and monitor.startswith("val_"):
        monitor = monitor[len("val_"):]
    checkpoint = Checkpoint(run, monitor, mode, keep)
    takes_run = "run" in inspect.signature(app.callbacks).parameters
    stages = app.stages(config)
    started = time.time()
    verbose = 1 if sys.stdout.isatty() else 2
    guard = NanGuard()
    budget = [TimeLimit(config.max_minutes)] if config.max_minutes > 0 else []  # one deadline for every stage
    for index, stage in enumerate(stages):
        if run.stage_done(stage.name) and len(stages) > 1:
            _load_stage_weights(model, run.checkpoint_dir / f"{stage.name}.npz")
            continue
        # epochs of earlier stages that actually ran (early stopping, a time budget): from history
        checkpoint.epoch_offset = _epochs_done_before(run, stages[:index])
        backup = run.backup_dir / stage.name if len(stages) > 1 else run.backup_dir
        # an interruption between an epoch's history row and its backup: the row goes, the epoch reruns
        _trim_history(run.history_path, checkpoint.epoch_offset + _backed_up_epochs(backup))
        if stage.from_best and run.checkpoint_path.exists():
            import keras as keras_lib

            best = keras_lib.saving.load_model(run.checkpoint_path, compile=False)
            model.set_weights(best.get_weights())
        if stage.prepare is not None:
            with strategy.scope():
                stage.prepare(model)
        # asked per stage, after `prepare`: a stage may want its own (classify's phase two)
        extra = app.callbacks(model, splits, config, run=run) if takes_run else app.callbacks(model, splits, config)
        for callback in extra:
            if budget and isinstance(callback, CosineDecay):
                callback.deadline = budget[0].deadline  # anneals by the deadline that stops training
        callbacks = [
            guard,
            *extra,  # first: a metric they add to the logs (val_bleu, val_f1) reaches the checkpoint and history
            checkpoint,
            keras.callbacks.CSVLogger(str(run.history_path), append=run.history_path.exists()),
            *budget,
            *([keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=config.patience)] if config.patience > 0 else []),
        ]
        if run.chief:
            callbacks.append(keras.callbacks.TensorBoard(str(run.staging / "logs"), write_graph=False, profile_batch=0))
        steps = app.steps_per_epoch(splits, config)
        with strategy.scope():
            build_optimizer(model)  # for fit and the loop alike, before their first trace
        if loop:
            loop_fit(model, train_ds, val_ds, strategy, stage.epochs, callbacks, backup, steps_per_epoch=steps, verbose=verbose)
        else:
            with warnings.catch_warnings():
                # A pipeline of unknown size (bucket_by_length) ends each epoch by running out, as meant;
                # Keras would warn after the first epoch that it "ran out of data".
                warnings.filterwarnings("ignore", message="Your input ran out of data")
                model.fit(
                    train_ds,
                    validation_data=val_ds,
                    epochs=stage.epochs,
                    steps_per_epoch=steps,
                    # the backup last: an epoch it counts as done has its history row and checkpoint
                    callbacks=[*callbacks, keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True)],
                    shuffle=False,  # input pipelines shuffle themselves (seeded), see shared.data
                    verbose=verbose,
                )
        if guard.nan_epoch is not None:
            shutil.rmtree(run.staging, ignore_errors=True)
            raise UserError(
                f"{run.dir}: training diverged (the loss became NaN in epoch {checkpoint.epoch_offset + guard.nan_epoch}); "
                "the run folder keeps its previous model; try a lower --learning-rate"
            )
        if len(stages) > 1 and index < len(stages) - 1:
            _save_stage_weights(model, run.checkpoint_dir / f"{stage.name}.npz")
            rows = len(read_history(run.history_path).get("epoch", []))
            (run.checkpoint_dir / f"{stage.name}.done").write_text(str(rows))
        if model.stop_training and budget and time.time() > budget[0].deadline:
            break  # the time budget is spent: later stages do not start
    history = read_history(run.history_path)
    return {
        "monitor": monitor,
        "best_value": checkpoint.best if isinstance(checkpoint.best, float) and math.isfinite(checkpoint.best) else None,
        "best_epoch": checkpoint.best_epoch,
        "epochs_run": len(history.get("epoch", [])),
        "train_seconds": round(time.time() - started, 2),
        "last_epoch": {k: v[-1] for k, v in history.items() if k != "epoch" and v},
    }


def build_optimizer(model) -> None:
    """Creates the optimizer's variables before `fit` or `loop_fit` for a model with Keras's own train_step.
    Keras's TensorFlow trainer otherwise builds the optimizer inside the first trace of the train
    step, and since variables appear during that trace, tf.function traces the step a second time:
    seconds per run (about 10 for the tiny YOLO detector), paid again at every start and resume."""
    import keras

    optimizer = getattr(model, "optimizer", None)
    stock_step = type(model).train_step is keras.Model.train_step  # a custom step may use other optimizers
    if optimizer is not None and not optimizer.built and model.built and stock_step:
        optimizer.build(model.trainable_variables)


def _backed_up_epochs(backup_dir: Path) -> int:
    """Epochs of a stage that its backup holds (Keras's and the loop's metadata alike)."""
    path = backup_dir / "training_metadata.json"
    try:
        return int(json.loads(path.read_text()).get("epoch", 0)) if path.exists() else 0
    except (ValueError, OSError):
        return 0


def _trim_history(path: Path, rows: int) -> None:
    """Keeps the header and the first `rows` rows of history.csv."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if len(lines) > rows + 1:
        files.write_text(path, "".join(lines[: rows + 1]))


def _epochs_done_before(run: Run, stages: list) -> int:
    """History rows written by the finished stages among `stages` (their .done files hold it)."""
    counts = [(run.checkpoint_dir / f"{s.name}.done").read_text().strip() for s in stages if run.stage_done(s.name)]
    return max((int(c) for c in counts if c.isdigit()), default=0)


def _save_stage_weights(model, path: Path) -> None:
    """The model's weights (not its optimizer's: the next stage compiles anew) after a stage."""
    import numpy as np

    files.write_atomic(path, lambda tmp: np.savez(tmp, *[v.numpy() for v in model.weights]))


def _load_stage_weights(model, path: Path) -> None:
    import numpy as np

    if path.exists():
        with np.load(path) as saved:
            for variable, key in zip(model.weights, saved.files):
                variable.assign(saved[key])


# --- the tf.distribute loop ------------------------------------------------------------------------


def loop_fit(model, train_ds, val_ds, strategy, epochs: int, callbacks: list, backup_dir: Path,
             steps_per_epoch: int | None = None, verbose: int = 2) -> None:
    """Trains like ``model.fit`` with a tf.distribute loop that works with every strategy,
    MultiWorkerMirroredStrategy included (Keras 3 fit does not: keras-team/keras#20585).

    Each step is the model's own ``train_step`` run by ``strategy.run`` in a tf.function: Keras
    scales its loss for the replicas as ``tf.nn.compute_average_loss`` does, the optimizer
    all-reduces the gradients, and an app's custom step (a GAN's two optimizers) runs unchanged.
    Logs are reduced across replicas. The Keras callbacks get the same calls as under fit;
    the state after each epoch (weights, optimizer, epoch) goes to `backup_dir` for --resume.
    """
    import keras
    import tensorflow as tf

    distributed_train = strategy.experimental_distribute_dataset(train_ds)
    distributed_val = strategy.experimental_distribute_dataset(val_ds) if val_ds is not None else None

    def reduce(outputs):
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in outputs.items()}

    # reduce_retracing: batches of varying length (bucketed text) share one trace
    @tf.function(reduce_retracing=True)
    def train_step(batch):
        return reduce(strategy.run(model.train_step, args=(batch,)))

    @tf.function(reduce_retracing=True)
    def test_step(batch):
        return reduce(strategy.run(model.test_step, args=(batch,)))

    callback_list = keras.callbacks.CallbackList(callbacks, model=model)
    start_epoch = _restore_backup(model, backup_dir)
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(start_epoch, epochs):
        started = time.time()
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        logs: dict = {}
        for step, batch in enumerate(distributed_train):
            if steps_per_epoch is not None and step >= steps_per_epoch:
                break
            callback_list.on_train_batch_begin(step)
            logs = {k: float(v) for k, v in train_step(batch).items()}
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        if distributed_val is not None and not model.stop_training:
            model.reset_metrics()
            callback_list.on_test_begin()
            val_logs: dict = {}
            for step, batch in enumerate(distributed_val):
                callback_list.on_test_batch_begin(step)
                val_logs = {k: float(v) for k, v in test_step(batch).items()}
                callback_list.on_test_batch_end(step, val_logs)
            callback_list.on_test_end(val_logs)  # as fit does: a callback may add to the logs here
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        callback_list.on_epoch_end(epoch, logs)
        _save_backup(model, backup_dir, epoch + 1)  # after the history row and checkpoint it vouches for
        if verbose:
            shown = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"Epoch {epoch + 1}/{epochs} - {time.time() - started:.0f}s - {shown}", flush=True)
        if model.stop_training:
            break
    callback_list.on_train_end()


def _save_backup(model, backup_dir: Path, epochs_done: int) -> None:
    files.write_atomic(backup_dir / "latest.weights.h5", lambda tmp: model.save_weights(tmp))
    # the name and form of Keras's BackupAndRestore metadata, so both paths read alike
    files.write_json(backup_dir / "training_metadata.json", {"epoch": epochs_done})


def _restore_backup(model, backup_dir: Path) -> int:
    state = backup_dir / "training_metadata.json"
    if not state.exists():
        return 0
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)  # its slots must exist to receive their values
    model.load_weights(backup_dir / "latest.weights.h5")
    return int(json.loads(state.read_text())["epoch"])


# --- history ---------------------------------------------------------------------------------------


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
        axis.plot(epochs[: len(history[name])], history[name], marker="o", label="train")
        if history.get(f"val_{name}"):  # empty when CSVLogger wrote NA columns (no validation data)
            axis.plot(epochs[: len(history[f"val_{name}"])], history[f"val_{name}"], marker="o", label="validation")
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.legend()
    figure.tight_layout()
    files.save_figure(figure, path)
