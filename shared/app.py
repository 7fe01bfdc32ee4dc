"""The app contract: what an app declares, and what shared/ does with it once for every app.

An app is a folder ``apps/NAME/`` with ``config.py`` (typed options), ``data.py`` (demo
generator, local formats, tfds), ``model.py`` (the Keras model), ``app.py`` (this contract's
hooks) and a README. ``app.py`` subclasses :class:`App` and ends with ``APP = NameApp()``;
the CLI finds it, and shared/ runs every mode:

- ``train``: seed, splits (:meth:`App.load_splits`), a locked staging run folder, the
  distribution strategy, the model built and compiled in its scope (:meth:`App.build_model`,
  :meth:`App.compile_model`), the datasets (:meth:`App.datasets`), Keras ``fit`` (or the
  custom tf.distribute loop under multi-worker training or when :attr:`App.custom_loop`),
  best/last checkpoints, resume, history, then :meth:`App.after_training` and metrics.json,
  written once by ``Run.finish``.
- ``predict``: inputs from arguments, ``--file`` or stdin (:attr:`App.inputs`), then
  :meth:`App.predict`, printed as a table (:meth:`App.format_prediction`) or JSON lines.
- ``evaluate``: :meth:`App.evaluation_data` (the run's own validation split by default) and
  :meth:`App.evaluate`; a table of :meth:`App.headline` figures or one JSON object.
- ``export``: the SavedModel of :meth:`App.endpoints` in TF Serving's layout with the
  signature descriptions read off the functions' input specs and outputs.

Every option of every mode is a typed, bounded field (``shared.config.option``) of the app's
``config`` / ``predict_options`` / ``evaluate_options`` / ``export_options`` dataclasses.

Nothing in this module, and nothing at the top of an ``app.py``, imports TensorFlow or Keras:
``dlapps --help`` and ``dlapps APP --help`` load every app.py and must stay fast. Hooks import
the app's model.py (which imports Keras) inside their bodies.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from dlapps.shared.config import EvaluateOptions, ExportOptions, PredictOptions, TrainConfig
from dlapps.shared.errors import UserError


@dataclasses.dataclass
class Splits:
    """What :meth:`App.load_splits` returns: the training and validation parts in whatever form
    the app's :meth:`App.datasets` and :meth:`App.build_model` take (lists, arrays, paths), and
    `info`, plain facts for the start line and metrics.json (sizes, label names)."""

    train: Any
    val: Any = None
    info: dict = dataclasses.field(default_factory=dict)


class App:
    """One app's hooks. Subclasses set the class attributes and override the hooks they need."""

    # --- declarations --------------------------------------------------------------------------
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line, shown by `dlapps apps` and `dlapps NAME --help`
    config: ClassVar[type] = TrainConfig  # the train flags: a TrainConfig dataclass
    predict_options: ClassVar[type] = PredictOptions
    evaluate_options: ClassVar[type] = EvaluateOptions
    export_options: ClassVar[type] = ExportOptions
    # predict's positional arguments: "texts" (strings; --file reads one per line, '-' stdin),
    # "paths" (files or folders; '-' reads paths from stdin) or "none" (options only).
    inputs: ClassVar[str] = "texts"
    input_help: ClassVar[str] = "texts to run the model on; '-' reads one per line from stdin"
    inputs_optional: ClassVar[bool] = False  # predict with no input runs on [] (charlm: sample from scratch)
    # True: predict takes a keyword `write` (a function of one string) and prints its results as
    # they come (charlm's sampling); the CLI passes it for table output, never with --json.
    streams: ClassVar[bool] = False
    predict_help: ClassVar[str] = "Run the model on new inputs."  # --help of each mode
    evaluate_help: ClassVar[str] = "Score the model on --data (default: the run's validation split)."
    # Checkpoint selection: the epoch-end log value to watch, "min" or "max", and whether the
    # final model is the best epoch ("best") or the last one ("last": word2vec, GANs).
    monitor: ClassVar[str] = "val_loss"
    mode: ClassVar[str] = "min"
    keep: ClassVar[str] = "best"
    # True: always train with shared.training's tf.distribute loop (it calls model.train_step, so
    # a custom train_step with two optimizers works). False: Keras fit, except under
    # multi-worker training, where fit does not work (keras-team/keras#20585) and the loop runs.
    custom_loop: ClassVar[bool] = False
    # Why this app trains on one device only, when it does ("" when it can use several replicas:
    # mirrored GPUs, several workers); a strategy with more replicas is then one line, not a crash.
    single_device_only: ClassVar[str] = ""

    # --- train ---------------------------------------------------------------------------------
    def check_config(self, config) -> None:
        """Cross-field checks that per-field bounds cannot express; raise UserError."""

    def load_splits(self, config) -> Splits:
        """Reads ``config.data`` (demo | path | tfds:NAME) into training and validation parts.
        Runs before the run folder is touched: bad data changes nothing."""
        raise NotImplementedError

    def build_model(self, config, splits: Splits):
        """The untrained Keras model (called inside the strategy's scope). Data-derived state
        (vocabularies, label names, normalisation statistics) belongs in the model's config."""
        raise NotImplementedError

    def compile_model(self, model, config) -> None:
        """Compiles `model` (inside the strategy's scope). Default: Adam at config.learning_rate,
        the model's own ``compute_loss``; override for losses, metrics and schedules."""
        import keras

        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))

    def datasets(self, model, splits: Splits, config) -> tuple:
        """(train, validation or None) tf.data datasets of tensors the model trains on
        (tokenise and decode in the pipeline: strings never enter a distributed step)."""
        raise NotImplementedError

    def stages(self, config) -> list:
        """Training phases (shared.training.Stage: name, epochs, prepare). Default: one phase
        of ``config.epochs``. Each phase resumes on its own; the checkpoint spans them all."""
        from dlapps.shared.training import Stage

        return [Stage("train", config.epochs)]

    def steps_per_epoch(self, splits: Splits, config) -> int | None:
        """Steps of an epoch when the training dataset is infinite or of unknown length."""
        return None

    def callbacks(self, model, splits: Splits, config, run=None) -> list:
        """Extra Keras callbacks for fit (e.g. a learning-rate schedule, a validation metric
        such as BLEU or entity F1 that must appear in the logs before checkpoint selection).
        `run` (shared.training.Run; files go in ``run.staging``) is passed when the hook takes it."""
        return []

    def checkpoint_selection(self, config) -> tuple[str, str, str]:
        """(monitor, mode, keep) for this config; default the class attributes. An app whose
        architectures differ (a VAE keeps its best epoch, a GAN its last) overrides it; one whose
        monitor exists only with validation data may take ``splits=`` as well."""
        return self.monitor, self.mode, self.keep

    def describe_training(self, model, splits: Splits, config) -> str:
        """The line printed when training starts (sizes, labels); the strategy is appended."""
        return f"Training {self.name}: {model.count_params():,} parameters"

    def after_training(self, model, splits: Splits, config, run) -> dict:
        """Runs on the final model (best or last) after training, before metrics.json is written;
        returns extra metrics, and may write extra files into ``run.staging`` (vectors, plots)."""
        return {}

    # --- predict -------------------------------------------------------------------------------
    def read_inputs(self, items: list[str], options) -> list:
        """Turns the gathered positional inputs into what :meth:`predict` takes; "paths" apps
        expand folders and check files here (one-line UserError naming the file)."""
        return items

    def predict(self, model, inputs: list, options) -> list[dict]:
        """One JSON-able dict per input (or per generated item for ``inputs = "none"``)."""
        raise NotImplementedError

    def format_prediction(self, row: dict, options=None) -> str:
        """One line of predict's table output for a person (`options`: predict's, when the
        override takes them: ner's --format)."""
        return "\t".join(str(v) for v in row.values())

    # --- evaluate ------------------------------------------------------------------------------
    def evaluation_data(self, config, options):
        """What to evaluate on: ``options.data`` when given (read like training data, all of
        it), else the validation split of `config` (the run's own config.json)."""
        if not options.data:
            splits = self.load_splits(config)
            if splits.val is None or (hasattr(splits.val, "__len__") and not len(splits.val)):
                raise UserError("the run has no validation split (trained with --val-fraction 0); pass --data")
            return splits.val
        config = dataclasses.replace(config, data=options.data, encoding=options.encoding, val_fraction=0.0)
        return self.load_splits(config).train

    def evaluate(self, model, data, options) -> dict:
        """Metrics on `data` as plain Python (JSON-able). ``options.model_dir`` is the --model
        folder, where plots may go."""
        raise NotImplementedError

    def headline(self, metrics: dict) -> dict:
        """The figures evaluate's table shows (default: every scalar)."""
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}

    # --- export --------------------------------------------------------------------------------
    def endpoints(self, model, options) -> dict:
        """{signature name: tf.function with an input_signature}; ``serving_default`` first.
        Each takes raw inputs (strings, encoded images, waveforms) with a batch dimension and
        returns a dict of decoded outputs. shared.export tracks `model` and writes them."""
        raise NotImplementedError

    def core_example(self, model):
        """Example inputs of the model's tensor core (what `model(...)` takes), for the ONNX and
        LiteRT exports and their checks. Default: made from a functional model's Input specs."""
        from dlapps.shared.export import example_inputs

        return example_inputs(model)

    def export_info(self, model) -> dict:
        """Extra facts for export's result (label names, vocabulary size)."""
        return {}

    def export_resources(self, model) -> tuple:
        """Extra trackable objects the endpoints use (lookup tables outside the model)."""
        return ()
