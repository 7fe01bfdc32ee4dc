"""`dlapps sentiment ...`: a thin typer layer over app.py. Imports no TensorFlow until a command runs."""

from __future__ import annotations

import typer

from ...shared import cli
from .config import SentimentConfig

APP = "sentiment"
app = cli.make_app("Text classification (binary or multi-class) with a BiLSTM over raw strings.")



cli.add_train_command(app, SentimentConfig, f"{__package__}.app", APP, help="Train a classifier on --data (default: the generated demo reviews).")


@app.command()
@cli.handle_errors
def predict(
    texts: cli.TextsArgument = None,
    file: cli.FileOption = None,
    model: cli.ModelDir = cli.default_model_dir(APP),
    json: cli.Json = False,
    encoding: cli.EncodingOption = "utf-8",
    verbose: cli.Verbose = False,
):
    """Label texts: `dlapps sentiment predict "what a film" "dull"`, --file FILE, or '-' for stdin."""
    from .app import predict as predict_texts

    results = predict_texts(model, cli.read_inputs(texts, file, encoding))
    if json:
        for result in results:
            cli.echo_json(result)
        return
    for result in results:
        typer.echo(f"{result['label']}\t{result['probability']:.3f}\t{result['text']}")


@app.command()
@cli.handle_errors
def evaluate(
    data: cli.DataOption = None,
    model: cli.ModelDir = cli.default_model_dir(APP),
    json: cli.Json = False,
    encoding: cli.EncodingOption = "utf-8",
    verbose: cli.Verbose = False,
):
    """Accuracy, macro F1, per-class scores and the confusion matrix on --data."""
    from .app import evaluate as evaluate_model

    metrics = evaluate_model(model, data, encoding)
    if json:
        cli.echo_json(metrics)
        return
    cli.echo_metrics({k: metrics[k] for k in ("examples", "accuracy", "macro_f1")}, title=f"Evaluated {model}")
    typer.echo("  confusion matrix (rows: true, columns: predicted) " + " ".join(metrics["labels"]))
    for label, row in zip(metrics["labels"], metrics["confusion_matrix"]):
        typer.echo(f"    {label:>12} " + " ".join(f"{v:6d}" for v in row))


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
