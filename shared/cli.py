"""The CLI of every app, generated from its contract (shared/app.py): ``train`` from its typed
config, ``predict``/``evaluate``/``export`` from its option dataclasses, plus close-match hints
and one-line errors.

Nothing here imports TensorFlow: ``dlapps --help`` and ``dlapps APP --help`` stay fast; commands
import TensorFlow when they run.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from typer.core import TyperGroup

from dlapps.shared import config as config_lib
from dlapps.shared.errors import UserError, suggest


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


def handle_errors(function: Callable) -> Callable:
    """Turns UserError into one line on stderr and exit status 2 (a traceback only with --verbose),
    and Ctrl-C into a note on how to resume. TensorFlow is imported only where a command needs it
    (shared.runtime), so a bad option or a missing file is reported at once."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (UserError, OSError) as error:
            if kwargs.get("verbose"):
                import traceback

                traceback.print_exc()
            if isinstance(error, OSError) and not isinstance(error, UserError):
                if not getattr(error, "filename", None):
                    raise
                error = UserError(f"{error.filename}: {error.strerror or type(error).__name__}")
            typer.echo(f"Error: {error}", err=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            typer.echo("Interrupted. A train run continues with the same command and --resume.", err=True)
            raise typer.Exit(130)

    return wrapper


# --- common options --------------------------------------------------------------------------------

Json = Annotated[bool, typer.Option("--json", help="print JSON for machines instead of a table")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="show tracebacks on errors")]
ConfigFile = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="JSON or YAML file of config values; flags win over it")
]
FileOption = Annotated[Optional[Path], typer.Option("--file", "-f", help="read one input per line from this file")]


def default_model_dir(app: str) -> Path:
    from dlapps.shared.training import default_run_dir

    return default_run_dir(app)


def read_inputs(items: list[str] | None, file: Path | None, encoding: str = "utf-8", kind: str = "texts") -> list[str]:
    """Inputs from arguments, --file (one per line) or '-' (stdin: one per line)."""
    from dlapps.shared.data import read_lines

    gathered: list[str] = []
    for item in items or []:
        if item == "-":
            gathered.extend(line.rstrip("\r\n") for line in sys.stdin if line.strip())
        else:
            gathered.append(item)
    if file is not None:
        gathered.extend(read_lines(file, encoding))
    if kind == "paths":
        empty = [item for item in gathered if not item.strip()]
        if empty:
            raise UserError("an empty path was given as input")
    if not gathered:
        what = "texts as arguments, --file FILE" if kind == "texts" else "files or folders as arguments"
        raise UserError(f"no input: give {what}, or '-' for stdin")
    return gathered


def echo_json(data: Any) -> None:
    from dlapps.shared.files import json_default

    typer.echo(json.dumps(data, ensure_ascii=False, default=json_default))


def echo_result(result: dict, as_json: bool, title: str = "") -> None:
    """A command's result: one JSON line for machines (--json), aligned lines for people."""
    if as_json:
        echo_json(result)
    else:
        echo_metrics(result, title=title)


def echo_metrics(metrics: dict, title: str = "") -> None:
    """Flat metrics as aligned `name  value` lines; nested values are shown as JSON."""
    from dlapps.shared.files import json_default

    if title:
        typer.echo(title)
    width = max((len(k) for k in metrics), default=0)
    for key, value in metrics.items():
        if isinstance(value, float):
            shown = f"{value:.4f}"
        elif isinstance(value, (dict, list)):
            shown = json.dumps(value, default=json_default, ensure_ascii=False)
        else:
            shown = str(value)
        typer.echo(f"  {key:<{width}}  {shown}")


# --- options of a dataclass as typer parameters ----------------------------------------------------


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


def option_parameters(options_cls, app_name: str) -> list[inspect.Parameter]:
    """One keyword parameter (a typer option defaulting to None = 'not given') per field of a
    typed options dataclass: its comment as help, choices and bounds shown, its default shown."""
    types_by_name = config_lib.field_types(options_cls)
    defaults = options_cls()
    parameters = []
    for field in dataclasses.fields(options_cls):
        tp = _cli_type(types_by_name[field.name])
        names = [_flag_name(field.name)]
        if tp is bool:
            names = [f"{names[0]}/--no-{field.name.replace('_', '-')}"]
        if field.metadata.get("short"):
            names.append(field.metadata["short"])
        help_text = field.metadata.get("help", "")
        if field.metadata.get("choices"):
            help_text += f" ({' | '.join(map(str, field.metadata['choices']))})"
        bounds = config_lib.describe_bounds(field.metadata)
        if bounds:
            help_text += f" ({bounds})"
        default = getattr(defaults, field.name)
        shown = str(default_model_dir(app_name)) if field.name == "out" and not default and hasattr(defaults, "epochs") else _shown_default(default)
        option = typer.Option(*names, help=help_text, show_default=shown)
        parameters.append(
            inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[tp], option])
        )
    return parameters


def _command(function: Callable, parameters: list[inspect.Parameter], help: str) -> Callable:
    function.__signature__ = inspect.Signature(parameters)
    function.__annotations__ = {p.name: p.annotation for p in parameters}
    function.__doc__ = help
    return handle_errors(function)


def _common(app_name: str, model: bool = True) -> list[inspect.Parameter]:
    keyword = inspect.Parameter.KEYWORD_ONLY
    common = []
    if model:
        model_option = typer.Option("--model", "-m", help="run folder (or .keras file) of a trained model")
        common.append(inspect.Parameter("model", keyword, default=default_model_dir(app_name), annotation=Annotated[Path, model_option]))
    common.append(inspect.Parameter("json", keyword, default=False, annotation=Json))
    common.append(inspect.Parameter("verbose", keyword, default=False, annotation=Verbose))
    return common


# --- the four modes, generated from an app's contract ----------------------------------------------


def app_commands(contract) -> typer.Typer:
    """The typer group of one app (a shared.app.App): train, predict, evaluate and export."""
    group = make_app(contract.summary)
    add_train_command(group, contract)
    add_predict_command(group, contract)
    add_evaluate_command(group, contract)
    add_export_command(group, contract)
    return group


def add_train_command(group: typer.Typer, contract) -> None:
    parameters = option_parameters(contract.config, contract.name)
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters.append(inspect.Parameter("config", keyword, default=None, annotation=ConfigFile))
    parameters.append(inspect.Parameter("verbose", keyword, default=False, annotation=Verbose))

    def train(**values):
        from dlapps.shared import training

        config_file = values.pop("config")
        values.pop("verbose")
        config = training.train_config(contract.name, contract.config, config_file, values)
        metrics = training.train(contract, config)
        out = Path(config.out or default_model_dir(contract.name))
        echo_metrics(metrics, title=f"Trained {contract.name}: {out / 'model.keras'}")

    help_text = f"Train on --data (default: the generated demo data). Every flag is a field of apps/{contract.name}/config.py."
    group.command("train")(_command(train, parameters, help_text))


def add_predict_command(group: typer.Typer, contract) -> None:
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = []
    if contract.inputs != "none":
        argument = typer.Argument(help=contract.input_help, show_default=False)
        parameters.append(inspect.Parameter("inputs", keyword, default=None, annotation=Annotated[Optional[list[str]], argument]))
    if contract.inputs == "texts":
        parameters.append(inspect.Parameter("file", keyword, default=None, annotation=FileOption))
    parameters += option_parameters(contract.predict_options, contract.name) + _common(contract.name)

    def predict(**values):
        from dlapps.shared import training

        model_dir, as_json = values.pop("model"), values.pop("json")
        values.pop("verbose")
        items, file = values.pop("inputs", None), values.pop("file", None)
        options = config_lib.resolve(contract.predict_options, None, values)
        given = bool(items) or file is not None
        if contract.inputs == "none" or (contract.inputs_optional and not given):
            inputs = []
        else:
            inputs = read_inputs(items, file, options.encoding, contract.inputs)
        inputs = contract.read_inputs(inputs, options)
        model = training.load_model(model_dir, contract.name, compile=False)
        if contract.streams and not as_json:
            contract.predict(model, inputs, options, write=lambda text: typer.echo(text, nl=False))
            return
        takes_options = len(inspect.signature(contract.format_prediction).parameters) > 1
        for row in contract.predict(model, inputs, options):
            if as_json:
                typer.echo(json.dumps(row, ensure_ascii=False, default=_json_default()))
            else:
                typer.echo(contract.format_prediction(row, options) if takes_options else contract.format_prediction(row))

    group.command("predict")(_command(predict, parameters, contract.predict_help))


def add_evaluate_command(group: typer.Typer, contract) -> None:
    parameters = option_parameters(contract.evaluate_options, contract.name) + _common(contract.name)

    def evaluate(**values):
        from dlapps.shared import training

        model_dir, as_json = values.pop("model"), values.pop("json")
        values.pop("verbose")
        options = config_lib.resolve(contract.evaluate_options, None, values)
        options.model_dir = Path(model_dir)  # not an option: where evaluate may write its plots
        model = training.load_model(model_dir, contract.name, compile=False)
        config = training.run_config(model_dir, contract.config, required=not options.data)
        metrics = contract.evaluate(model, contract.evaluation_data(config, options), options)
        if as_json:
            echo_json(metrics)
        else:
            echo_metrics(contract.headline(metrics), title=f"Evaluated {model_dir} on {options.data or 'its validation split'}")

    group.command("evaluate")(_command(evaluate, parameters, contract.evaluate_help))


def add_export_command(group: typer.Typer, contract) -> None:
    parameters = option_parameters(contract.export_options, contract.name) + _common(contract.name)

    def export(**values):
        from dlapps.shared import export as export_lib

        model_dir, as_json = values.pop("model"), values.pop("json")
        values.pop("verbose")
        options = config_lib.resolve(contract.export_options, None, values)
        echo_result(export_lib.export(contract, model_dir, options), as_json, title="Exported")

    help_text = "Write model.keras and a TF Serving SavedModel (OUT/serving/N) that takes raw inputs."
    group.command("export")(_command(export, parameters, help_text))


def _json_default():
    from dlapps.shared.files import json_default

    return json_default
