"""CLI plumbing shared by every app: typer apps with close-match hints, the ``train`` command
generated from an app's typed config, common option types, and one-line errors.

Nothing here imports TensorFlow: ``dlapps --help`` and ``dlapps APP --help`` stay fast; commands
import the app's TensorFlow code when they run.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import os
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from typer.core import TyperGroup

from . import config as config_lib
from .errors import UserError, suggest


class HintingGroup(TyperGroup):
    """A command group that answers an unknown name with the closest known one."""

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            ctx.fail(f"No such command {name!r}.{suggest(name, self.list_commands(ctx))}")
        return super().resolve_command(ctx, args)

    def list_commands(self, ctx):  # keep the order commands were added in (train, predict, ...)
        return list(self.commands)


def make_app(help: str, **kwargs) -> typer.Typer:
    return typer.Typer(
        cls=HintingGroup,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        **kwargs,
    )


# --- errors --------------------------------------------------------------------------------------


def fail(message: str) -> typing.NoReturn:
    raise UserError(message)


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with its C++ start-up log lines (oneDNN, CUDA probing) kept off the
    terminal; TF_CPP_MIN_LOG_LEVEL=0 in the environment shows them again."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def handle_errors(function: Callable) -> Callable:
    """Turns UserError into one line on stderr and exit status 2 (a traceback only with --verbose),
    and Ctrl-C into a note on how to resume. Commands wrapped by it import TensorFlow quietly."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            import_tensorflow_quietly()
            return function(*args, **kwargs)
        except UserError as error:
            if kwargs.get("verbose"):
                import traceback

                traceback.print_exc()
            typer.echo(f"Error: {error}", err=True)
            raise typer.Exit(error.exit_code)
        except KeyboardInterrupt:
            typer.echo("Interrupted. A train run continues with the same command and --resume.", err=True)
            raise typer.Exit(130)

    return wrapper


# --- common options ------------------------------------------------------------------------------

ModelDir = Annotated[
    Path, typer.Option("--model", "-m", help="run folder (or .keras file) of a trained model", show_default=True)
]
Json = Annotated[bool, typer.Option("--json", help="print JSON for machines instead of a table")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="show tracebacks on errors")]
DataOption = Annotated[
    Optional[str], typer.Option("--data", "-d", help="demo | local path | tfds:NAME[:SPLIT] (default: the validation split the model was trained with)")
]
EncodingOption = Annotated[str, typer.Option("--encoding", help="text encoding of local files")]
ConfigFile = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="JSON or YAML file of config values; flags win over it")
]
TextsArgument = Annotated[
    Optional[list[str]], typer.Argument(help="texts to score; '-' reads one text per line from stdin", show_default=False)
]
FileOption = Annotated[Optional[Path], typer.Option("--file", "-f", help="read one text per line from this file")]
ExportOut = Annotated[
    Optional[Path], typer.Option("--out", "-o", help="folder to export into (default: the model's run folder)")
]


def default_model_dir(app: str) -> Path:
    return Path("saved_models") / app


def read_inputs(texts: list[str] | None, file: Path | None, encoding: str = "utf-8") -> list[str]:
    """Texts from arguments, --file (one per line) or '-' (stdin)."""
    from .data import read_lines

    items: list[str] = []
    for text in texts or []:
        if text == "-":
            items.extend(line.rstrip("\r\n") for line in sys.stdin if line.strip())
        else:
            items.append(text)
    if file is not None:
        items.extend(read_lines(file, encoding))
    if not items:
        raise UserError("no input: give texts as arguments, --file FILE, or '-' for stdin")
    return items


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def echo_result(result: dict, as_json: bool, title: str = "") -> None:
    """A command's result: one JSON line for machines (--json), aligned lines for people."""
    if as_json:
        echo_json(result)
    else:
        echo_metrics(result, title=title)


def echo_metrics(metrics: dict, title: str = "") -> None:
    """Flat metrics as aligned `name  value` lines; nested values are shown as JSON."""
    if title:
        typer.echo(title)
    width = max((len(k) for k in metrics), default=0)
    for key, value in metrics.items():
        if isinstance(value, float):
            shown = f"{value:.4f}"
        elif isinstance(value, (dict, list)):
            shown = json.dumps(value, default=str)
        else:
            shown = str(value)
        typer.echo(f"  {key:<{width}}  {shown}")


# --- the train command, generated from the typed config ------------------------------------------


def _flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _cli_type(tp):
    """The type typer parses a config field as: lists come in as comma-separated strings."""
    tp = config_lib._unwrap_optional(tp)
    if typing.get_origin(tp) in (list, tuple):
        return str
    return tp


def _shown_default(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    if value == "":
        return "none"
    return str(value)


def add_train_command(app: typer.Typer, config_cls, app_module: str, app_name: str, help: str) -> None:
    """Adds ``train`` to `app`: one ``--flag`` per config field (comment as help, default shown),
    plus ``--config FILE`` and ``--verbose``. `app_module` (the app's app.py, by module name so that
    TensorFlow loads only when the command runs) has ``train(config)`` returning metrics."""
    types_by_name = config_lib.field_types(config_cls)
    defaults = config_cls()
    parameters = []
    for field in dataclasses.fields(config_cls):
        tp = _cli_type(types_by_name[field.name])
        names = [_flag_name(field.name)]
        if tp is bool:
            names = [f"{names[0]}/--no-{field.name.replace('_', '-')}"]
        if field.metadata.get("short"):
            names.append(field.metadata["short"])
        help_text = field.metadata.get("help", "")
        if field.metadata.get("choices"):
            help_text += f" ({' | '.join(field.metadata['choices'])})"
        default = getattr(defaults, field.name)
        if field.name == "out" and not default:
            shown = str(default_model_dir(app_name))
        else:
            shown = _shown_default(default)
        option = typer.Option(*names, help=help_text, show_default=shown)
        parameters.append(
            inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[tp], option])
        )
    parameters.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigFile))
    parameters.append(inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Verbose))

    def train(**values):
        from . import training

        config_file = values.pop("config")
        values.pop("verbose")
        config = training.train_config(app_name, config_cls, config_file, values)
        metrics = importlib.import_module(app_module).train(config)
        echo_metrics(metrics, title=f"Trained {app_name}: {Path(config.out or default_model_dir(app_name)) / 'model.keras'}")

    train.__signature__ = inspect.Signature(parameters)
    train.__annotations__ = {p.name: p.annotation for p in parameters}
    train.__doc__ = help
    app.command("train")(handle_errors(train))
