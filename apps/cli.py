"""The `dlapps` command: one sub-command per app, plus `apps` and `info`.

Grammar: ``dlapps APP MODE [OPTIONS]``. Nothing here imports TensorFlow, so help is instant.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import platform
import sys
from pathlib import Path

import typer

from ..shared import cli


def discover_apps() -> dict[str, tuple[str, str]]:
    """app name -> (its cli module, one-line description): every folder in apps/ with a cli.py,
    described by the first line of its package docstring. Adding an app needs no edit here."""
    found = {}
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module.ispkg and (Path(__file__).parent / module.name / "cli.py").exists():
            package = importlib.import_module(f"{__package__}.{module.name}")
            summary = (package.__doc__ or "").strip().splitlines()[0] if package.__doc__ else module.name
            found[module.name] = (f"{__package__}.{module.name}.cli", summary.split(": ", 1)[-1])
    return dict(sorted(found.items()))


APPS = discover_apps()

app = cli.make_app(
    "dlapps: deep-learning task apps behind one grammar, `dlapps APP MODE [OPTIONS]`.\n\n"
    "Every app trains offline on its built-in demo data: `dlapps sentiment train`."
)

for _name, (_module, _help) in APPS.items():
    app.add_typer(importlib.import_module(_module).app, name=_name, help=_help)


@app.command("apps")
def list_apps():
    """List the apps and their modes."""
    width = max(len(n) for n in APPS)
    for name, (module, help_text) in APPS.items():
        group = typer.main.get_command(importlib.import_module(module).app)
        modes = ", ".join(group.list_commands(None))
        typer.echo(f"{name:<{width}}  {modes:<34}  {help_text}")


@app.command()
@cli.handle_errors
def info(json: cli.Json = False):
    """Versions, devices, the strategy `auto` picks, and where data and models live."""
    from importlib import metadata

    import tensorflow as tf

    from ..shared.strategy import auto_choice

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


def main() -> None:
    sys.exit(app(prog_name="dlapps"))


if __name__ == "__main__":
    main()
