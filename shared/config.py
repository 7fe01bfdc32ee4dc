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

from .errors import UserError, suggest


def option(default: Any, help: str, choices: tuple | None = None, short: str | None = None):
    """A config field: its default, a one-line comment (shown by --help) and optional choices."""
    kwargs = {"default_factory": (lambda: list(default))} if isinstance(default, list) else {"default": default}
    return dataclasses.field(metadata={"help": help, "choices": choices, "short": short}, **kwargs)


STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")


@dataclasses.dataclass
class TrainConfig:
    """Options every app's ``train`` shares; apps subclass it and override defaults."""

    data: str = option("demo", "training data: demo | a local path | tfds:NAME[:SPLIT]", short="-d")
    out: str = option("", "run folder for checkpoints, logs and the model", short="-o")
    epochs: int = option(10, "passes over the training data", short="-e")
    batch_size: int = option(32, "examples per step, summed over all devices", short="-b")
    learning_rate: float = option(1e-3, "Adam learning rate")
    seed: int = option(0, "seed for splits, shuffling and weight initialisation")
    val_fraction: float = option(0.1, "share of the data held out for validation when no validation split exists")
    patience: int = option(0, "stop after this many epochs without validation improvement (0: never)")
    max_minutes: float = option(0.0, "stop training after this many minutes; the best epoch so far is kept (0: no limit)")
    strategy: str = option("auto", "tf.distribute strategy", choices=STRATEGIES)
    mixed_precision: bool = option(False, "compute in bfloat16 (CPU/TPU) or float16 (GPU), keep weights in float32")
    resume: bool = option(False, "continue an interrupted run in --out from its last completed epoch")
    encoding: str = option("utf-8", "text encoding of local data files (e.g. latin-1)")
    tfds_dir: str = option("", "tensorflow-datasets data_dir (default ~/tensorflow_datasets)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as error:  # JSONDecodeError, YAMLError: both name the position
        first_line = str(error).strip().splitlines()[0]
        raise UserError(f"{path}: not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: {first_line}")
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
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        value = getattr(config, f.name)
        if choices and value not in choices:
            raise UserError(
                f"{source}: {f.name} must be one of {', '.join(map(str, choices))}, got {value!r}{suggest(value, choices)}"
            )
    for name in ("epochs", "batch_size"):
        if hasattr(config, name) and getattr(config, name) < 1:
            raise UserError(f"{source}: {name} must be at least 1, got {getattr(config, name)}")
    if hasattr(config, "val_fraction") and not 0.0 <= config.val_fraction < 1.0:
        raise UserError(f"{source}: val_fraction must be in [0, 1), got {config.val_fraction}")


def load_saved(config_cls, path: Path):
    """The config a run folder was trained with (its config.json), tolerant of keys added later."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    known = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{k: v for k, v in data.items() if k in known})
