"""`dlapps ner ...`: a thin typer layer over app.py. Imports no TensorFlow until a command runs."""

from __future__ import annotations

from typing import Annotated

import typer

from ...shared import cli
from .config import NerConfig

APP = "ner"
app = cli.make_app("Named-entity recognition: BiLSTM-CRF over words, characters and casing; raw text in, entity spans out.")

Format = Annotated[str, typer.Option("--format", help="spans: one entity per line; conll: token and tag per line")]



cli.add_train_command(app, NerConfig, f"{__package__}.app", APP, help="Train a tagger on --data (default: generated demo sentences; or a CoNLL file/folder, tfds:conll2003).")


@app.command()
@cli.handle_errors
def predict(
    texts: cli.TextsArgument = None,
    file: cli.FileOption = None,
    model: cli.ModelDir = cli.default_model_dir(APP),
    json: cli.Json = False,
    format: Format = "spans",
    encoding: cli.EncodingOption = "utf-8",
    verbose: cli.Verbose = False,
):
    """Find entities: `dlapps ner predict "Angela Merkel visited Paris."`, --file FILE, or '-' for stdin."""
    if format not in ("spans", "conll"):
        cli.fail(f"--format must be spans or conll, got {format!r}")
    from .app import predict as predict_texts

    results = predict_texts(model, cli.read_inputs(texts, file, encoding))
    if json:
        for result in results:
            cli.echo_json(result)
        return
    for number, result in enumerate(results):
        if format == "conll":
            if number:
                typer.echo("")
            for token, tag in zip(result["tokens"], result["tags"]):
                typer.echo(f"{token}\t{tag}")
            continue
        typer.echo(result["text"])
        for entity in result["entities"]:
            typer.echo(f"  {entity['type']:<6} {entity['start']:>4}-{entity['end']:<4} {entity['score']:.3f}  {entity['text']}")


@app.command()
@cli.handle_errors
def evaluate(
    data: cli.DataOption = None,
    model: cli.ModelDir = cli.default_model_dir(APP),
    json: cli.Json = False,
    encoding: cli.EncodingOption = "utf-8",
    verbose: cli.Verbose = False,
):
    """Entity-level precision, recall and F1 (seqeval, conlleval-compatible), overall and per type, on --data."""
    from .app import evaluate as evaluate_model

    metrics = evaluate_model(model, data, encoding)
    if json:
        cli.echo_json(metrics)
        return
    cli.echo_metrics({k: metrics[k] for k in ("sentences", "tokens", "precision", "recall", "f1", "token_accuracy")},
                     title=f"Evaluated {model}")
    typer.echo(f"  {'type':<8} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for kind, row in metrics["per_type"].items():
        typer.echo(f"  {kind:<8} {row['precision']:9.4f} {row['recall']:9.4f} {row['f1-score']:9.4f} {row['support']:8d}")


@app.command()
@cli.handle_errors
def export(
    model: cli.ModelDir = cli.default_model_dir(APP),
    out: cli.ExportOut = None,
    json: cli.Json = False,
    verbose: cli.Verbose = False,
):
    """Write model.keras and a TF Serving SavedModel (OUT/serving/N) that takes raw strings."""
    from .app import export as export_model

    result = export_model(model, out)
    cli.echo_result(result, json, title="Exported")
