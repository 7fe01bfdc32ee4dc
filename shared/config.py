"""Typed app configurations: dataclasses whose fields carry a default and a one-line comment.

The same dataclass feeds the CLI flags (every field is a ``--flag`` of ``train``, with its comment as
help), ``--config FILE`` (JSON or YAML with the same keys) and the ``config.json`` written into each
run folder. Precedence: dataclass default < config file < explicit CLI flag.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from dlapps.shared.errors import UserError, suggest


def option(
    default: Any,
    help: str,
    choices: tuple | None = None,
    short: str | None = None,
    min: float | None = None,
    max: float | None = None,
    below: float | None = None,
    above: float | None = None,
):
    """A config field: its default, a one-line comment (shown by --help), optional choices and
    bounds. `min`/`max` are inclusive, `above`/`below` exclusive; for a list they bound every item.
    Bounds are checked once, in `validate`, for every flag, config file and saved config alike."""
    kwargs = {"default_factory": (lambda: list(default))} if isinstance(default, list) else {"default": default}
    bounds = {"min": min, "max": max, "below": below, "above": above}
    return dataclasses.field(
        metadata={"help": help, "choices": choices, "short": short, **{k: v for k, v in bounds.items() if v is not None}},
        **kwargs,
    )


def describe_bounds(metadata) -> str:
    """'at least 1', 'between 1 and 8', 'above 0 and below 1', ... as --help and errors say it
    (words, not interval brackets, which help renderers take for markup); '' when unbounded."""
    def shown(value) -> str:
        return str(value) if isinstance(value, int) else f"{value:g}"  # :g would print 2**31 as 2.14748e+09

    low = f"at least {shown(metadata['min'])}" if "min" in metadata else f"above {shown(metadata['above'])}" if "above" in metadata else ""
    high = f"at most {shown(metadata['max'])}" if "max" in metadata else f"below {shown(metadata['below'])}" if "below" in metadata else ""
    if "min" in metadata and "max" in metadata:
        return f"between {shown(metadata['min'])} and {shown(metadata['max'])}"
    return " and ".join(part for part in (low, high) if part)


def _out_of_bounds(value, metadata) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if value != value:  # NaN is never in range
        return True
    return (
        ("min" in metadata and value < metadata["min"])
        or ("max" in metadata and value > metadata["max"])
        or ("above" in metadata and value <= metadata["above"])
        or ("below" in metadata and value >= metadata["below"])
    )


def default(value: Any, **changes):
    """Changes an inherited option's default (and, optionally, its help or bounds) without
    re-declaring it: ``epochs: int = default(8)`` keeps TrainConfig's comment and bounds."""
    kwargs = {"default_factory": (lambda: list(value))} if isinstance(value, list) else {"default": value}
    return dataclasses.field(metadata={"inherit": True, **changes}, **kwargs)


class Options:
    """Base of typed option sets (train configs, predict/evaluate/export options): a subclass's
    ``default(...)`` fields take their comment and bounds from the field they override."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        inherited = {}
        for base in reversed(cls.__mro__[1:]):
            for f in getattr(base, "__dataclass_fields__", {}).values():
                inherited[f.name] = f
        for name, value in list(vars(cls).items()):
            if isinstance(value, dataclasses.Field) and value.metadata.get("inherit"):
                if name not in inherited:
                    raise TypeError(f"{cls.__name__}.{name}: default() overrides an inherited option, and there is none")
                metadata = {**inherited[name].metadata, **{k: v for k, v in value.metadata.items() if k != "inherit"}}
                kwargs = {"default": value.default} if value.default is not dataclasses.MISSING else {"default_factory": value.default_factory}
                setattr(cls, name, dataclasses.field(metadata=metadata, **kwargs))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")


@dataclasses.dataclass
class TrainConfig(Options):
    """Options every app's ``train`` shares; apps subclass it and override defaults."""

    data: str = option("demo", "training data: demo | a local path | tfds:NAME[:SPLIT]", short="-d")
    out: str = option("", "run folder for checkpoints, logs and the model", short="-o")
    epochs: int = option(10, "passes over the training data", short="-e", min=1)
    batch_size: int = option(32, "examples per step, summed over all devices", short="-b", min=1)
    learning_rate: float = option(1e-3, "Adam learning rate", above=0, max=10)
    seed: int = option(0, "seed for splits, shuffling and weight initialisation", min=0)
    val_fraction: float = option(0.1, "share of the data held out for validation when no validation split exists", min=0, below=1)
    patience: int = option(0, "stop after this many epochs without validation improvement (0: never)", min=0)
    max_minutes: float = option(0.0, "stop training after this many minutes; the best epoch so far is kept (0: no limit)", min=0)
    strategy: str = option("auto", "tf.distribute strategy", choices=STRATEGIES)
    mixed_precision: bool = option(False, "compute in bfloat16 (CPU/TPU) or float16 (GPU), keep weights in float32")
    resume: bool = option(False, "continue an interrupted run in --out from its last completed epoch")
    encoding: str = option("utf-8", "text encoding of local data files (e.g. latin-1)")
    tfds_dir: str = option("", "tensorflow-datasets data_dir (default ~/tensorflow_datasets)")


@dataclasses.dataclass
class PredictOptions(Options):
    """Options of every app's ``predict``; apps subclass it for their own (``--beam``, ``--conf``)."""

    batch_size: int = option(64, "inputs per model call", min=1, max=65536)
    encoding: str = option("utf-8", "text encoding of input files")


@dataclasses.dataclass
class EvaluateOptions(Options):
    """Options of every app's ``evaluate``."""

    data: str = option("", "demo | local path | tfds:NAME[:SPLIT] (default: the run's own validation split)", short="-d")
    batch_size: int = option(64, "examples per model call", min=1, max=65536)
    encoding: str = option("utf-8", "text encoding of local data files")


@dataclasses.dataclass
class ExportOptions(Options):
    """Options of every app's ``export``."""

    out: str = option("", "folder to export into (default: the model's run folder)", short="-o")
    format: str = option("saved_model", "saved_model: TF Serving layout, raw inputs; keras: model.keras; onnx / litert: "
                         "the tensor core, checked in its own runtime", choices=("saved_model", "keras", "onnx", "litert"))


def field_types(config_cls) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def _unwrap_optional(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def coerce(name: str, value: Any, tp, source: str) -> Any:
    """Converts a value from a config file or the command line to the field's type, or raises UserError."""
    tp = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    try:
        if origin in (list, tuple):
            (item_type,) = typing.get_args(tp)[:1]
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            if not isinstance(value, (list, tuple)):
                value = [value]
            return [coerce(name, v, item_type, source) for v in value]
        if tp is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise UserError(f"{source}: {name} must be {getattr(tp, '__name__', tp)}, got {value!r}")


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    kind = "YAML" if path.suffix.lower() in (".yaml", ".yml") else "JSON"
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not valid {kind}: byte {error.start} is not UTF-8 text")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as error:  # JSONDecodeError, YAMLError: both name the position
        first_line = str(error).strip().splitlines()[0]
        raise UserError(f"{path}: not valid {kind}: {first_line}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def resolve(config_cls, file: str | Path | None = None, overrides: dict | None = None):
    """Builds a config: defaults < `file` (JSON/YAML) < `overrides` (explicit CLI values, None = unset)."""
    types_by_name = field_types(config_cls)
    values: dict[str, Any] = {}
    layers = []
    if file:
        layers.append((str(file), read_config_file(file)))
    layers.append(("command line", {k: v for k, v in (overrides or {}).items() if v is not None}))
    for source, layer in layers:
        for name, value in layer.items():
            if name not in types_by_name:
                raise UserError(f"{source}: unknown option {name!r}{suggest(name, types_by_name)}")
            values[name] = coerce(name, value, types_by_name[name], source)
    config = config_cls(**values)
    validate(config, source=str(file) if file else "command line")
    return config


def validate(config, source: str = "config") -> None:
    """Choices and bounds of every field (see `option`); one UserError naming the flag."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise UserError(
                f"{source}: {flag} must be one of {', '.join(map(str, choices))}, got {value!r}{suggest(value, choices)}"
            )
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if _out_of_bounds(item, f.metadata):
                raise UserError(f"{source}: {flag} must be {describe_bounds(f.metadata)}, got {value!r}")
        if isinstance(value, list) and not value and any(k in f.metadata for k in ("min", "above")):
            raise UserError(f"{source}: {flag} needs at least one value")


def load_saved(config_cls, path: Path):
    """The config a run folder was trained with (its config.json), tolerant of keys added later."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    known = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{k: v for k, v in data.items() if k in known})
