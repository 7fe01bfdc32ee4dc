"""The `dlapps` command: one sub-command per app, plus `apps` and `info`.

Grammar: ``dlapps APP MODE [OPTIONS]``. Nothing here imports TensorFlow, so help is instant.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import platform
import sys
from pathlib import Path
from typing import Any

import typer

from dlapps.shared import cli


def discover_apps() -> dict[str, Any]:
    """app name -> its contract (the ``APP`` of apps/NAME/app.py): every folder in apps/ with an
    app.py. Adding an app needs no edit here. app.py imports no TensorFlow, so this is fast."""
    found = {}
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        folder = Path(__file__).parent / module.name
        if module.ispkg and (folder / "app.py").exists():
            found[module.name] = importlib.import_module(f"{__package__}.{module.name}.app").APP
    return dict(sorted(found.items()))


APPS = discover_apps()

app = cli.make_app(
    "dlapps: deep-learning task apps behind one grammar, `dlapps APP MODE [OPTIONS]`.\n\n"
    "Every app trains offline on its built-in demo data: `dlapps sentiment train`."
)

for _name, _contract in APPS.items():
    _group = cli.app_commands(_contract)
    if (Path(__file__).parent / _name / "cli.py").exists():  # commands of its own beyond the four modes
        importlib.import_module(f"{__package__}.{_name}.cli").extend(_group, _contract)
    app.add_typer(_group, name=_name, help=_contract.summary)


@app.command("apps")
def list_apps():
    """List the apps and their modes."""
    width = max(len(n) for n in APPS)
    groups = {g.name: g for g in app.registered_groups}
    for name, contract in APPS.items():
        modes = ", ".join(typer.main.get_command(groups[name].typer_instance).list_commands(None))
        typer.echo(f"{name:<{width}}  {modes:<34}  {contract.summary}")


@app.command()
@cli.handle_errors
def info(json: cli.Json = False):
    """Versions, devices, the strategy `auto` picks, and where data and models live."""
    from importlib import metadata

    from dlapps.shared.runtime import import_tensorflow

    import_tensorflow()
    import tensorflow as tf

    from dlapps.shared.strategy import auto_choice

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    details = {
        "dlapps": version("dlapps"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": version("keras"),
        "keras-hub": version("keras-hub"),
        "tensorflow-datasets": version("tensorflow-datasets"),
        "keras backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "devices": ", ".join(f"{d.name} ({d.device_type})" for d in tf.config.list_logical_devices()),
        "strategy (auto)": auto_choice(),
        "models folder": os.path.abspath("saved_models"),
        "tfds data_dir": os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets")),
        "keras home": os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")),
    }
    if json:
        cli.echo_json(details)
    else:
        cli.echo_metrics(details, title="dlapps info")


def _serve_command():
    from dlapps.shared.serve import ServeOptions

    parameters = cli.option_parameters(ServeOptions, "serve")
    parameters.append(inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=cli.Verbose))

    def serve(**values):
        from dlapps.shared import serve as serving
        from dlapps.shared.config import resolve

        values.pop("verbose")
        options = resolve(ServeOptions, None, values)
        if not Path(options.models).is_dir():
            raise cli.UserError(f"{options.models}: no such folder (export a model first: dlapps APP export)")
        serving.serve(options.models, options.host, options.port, options.workers, options.limits())

    help_text = ("Serve every exported model in --models over TensorFlow Serving's REST API "
                 "(POST /v1/models/NAME:predict), with a try-it page at /.")
    app.command("serve")(cli._command(serve, parameters, help_text))


_serve_command()


def main() -> None:
    sys.exit(app(prog_name="dlapps"))


if __name__ == "__main__":
    main()
