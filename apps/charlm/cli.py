"""`dlapps charlm ...`: a thin typer layer over app.py. Imports no TensorFlow until a command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...shared import cli
from .config import CharLMConfig

APP = "charlm"
app = cli.make_app("Character-level language model (LSTM, GRU or Transformer): generate text, score it by perplexity.")



cli.add_train_command(app, CharLMConfig, f"{__package__}.app", APP, help="Train a character language model on --data (default: standard-library docstrings).")

TopK = Annotated[int, typer.Option("--top-k", "-k", help="sample among the K most likely characters (0: all)")]


@app.command()
@cli.handle_errors
def predict(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="text to continue (default: start of a line)")] = "",
    length: Annotated[int, typer.Option("--length", "-n", help="characters to generate")] = 500,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="above 0; lower is more conservative, 1 samples the model as is")] = 0.8,
    top_k: TopK = 40,
    seed: Annotated[Optional[int], typer.Option("--seed", "-s", help="the same seed generates the same text")] = None,
    score: Annotated[Optional[Path], typer.Option("--score", help="instead of generating: log-probability and perplexity of this file's text")] = None,
    model: cli.ModelDir = cli.default_model_dir(APP),
    json: cli.Json = False,
    encoding: cli.EncodingOption = "utf-8",
    verbose: cli.Verbose = False,
):
    """Generate text, streamed as it is produced: `dlapps charlm predict --prompt "ROMEO:" --length 500`;
    or score a file: `dlapps charlm predict --score FILE`."""
    from . import app as charlm

    if score is not None:
        result = charlm.score(model, score, encoding)
        if json:
            cli.echo_json(result)
            return
        cli.echo_metrics(result, title=f"Scored {score}")
        return

    def note_oov(characters):
        shown = ", ".join(repr(c) for c in characters)
        typer.echo(f"Note: prompt characters not in the model's vocabulary are read as the out-of-vocabulary symbol: {shown}", err=True)

    if not json:
        typer.echo(prompt, nl=False)
    result = charlm.generate(
        model, prompt, length, temperature, top_k, seed,
        on_text=None if json else (lambda piece: typer.echo(piece, nl=False)),  # click.echo flushes: the text streams
        on_oov=note_oov,
    )
    if json:
        cli.echo_json(result)
    else:
        typer.echo("")


@app.command()
@cli.handle_errors
def evaluate(
    data: cli.DataOption = None,
    model: cli.ModelDir = cli.default_model_dir(APP),
    json: cli.Json = False,
    encoding: cli.EncodingOption = "utf-8",
    verbose: cli.Verbose = False,
):
    """Perplexity per character and bits per character on --data (default: the run's validation text)."""
    from .app import evaluate as evaluate_model

    metrics = evaluate_model(model, data, encoding)
    cli.echo_result(metrics, json, title=f"Evaluated {model}")


@app.command()
@cli.handle_errors
def export(
    model: cli.ModelDir = cli.default_model_dir(APP),
    out: cli.ExportOut = None,
    top_k: TopK = 40,
    json: cli.Json = False,
    verbose: cli.Verbose = False,
):
    """Write model.keras and a SavedModel (OUT/serving/N): generate (serving_default) and score signatures."""
    from .app import export as export_model

    result = export_model(model, out, top_k)
    cli.echo_result(result, json, title="Exported")
