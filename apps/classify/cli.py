"""`dlapps classify ...`: a thin typer layer over app.py. Imports no TensorFlow until a command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...shared import cli
from .config import ClassifyConfig

APP = "classify"
app = cli.make_app("Image classification by fine-tuning a pretrained backbone (MobileNet, EfficientNet, ResNet50).")

ImagesArgument = Annotated[
    Optional[list[str]], typer.Argument(help="image files (JPEG/PNG/BMP) or folders of images", show_default=False)
]
TopK = Annotated[int, typer.Option("--top-k", "-k", help="labels shown per image, most probable first")]



cli.add_train_command(
    app, ClassifyConfig, f"{__package__}.app", APP,
    help="Train on --data (default: the generated demo shapes and textures): a frozen backbone with a new head, then fine-tune its top layers.",
)


@app.command()
@cli.handle_errors
def predict(
    inputs: ImagesArgument = None,
    model: cli.ModelDir = cli.default_model_dir(APP),
    top_k: TopK = 3,
    gradcam: Annotated[Optional[Path], typer.Option("--gradcam", help="write a Grad-CAM overlay PNG per image into this folder")] = None,
    json: cli.Json = False,
    verbose: cli.Verbose = False,
):
    """Label images: `dlapps classify predict cat.jpg dog.png photos/`."""
    from .app import predict as predict_images

    results = predict_images(model, inputs or [], top_k=top_k, gradcam=gradcam)
    if json:
        for result in results:
            cli.echo_json(result)
        return
    for result in results:
        top = "  ".join(f"{t['label']} {t['probability']:.3f}" for t in result["top"])
        typer.echo(f"{result['image']}\t{top}" + (f"\t{result['overlay']}" if "overlay" in result else ""))


@app.command()
@cli.handle_errors
def evaluate(
    data: cli.DataOption = None,
    model: cli.ModelDir = cli.default_model_dir(APP),
    top_k: TopK = 3,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="confusion-matrix PNG (default: MODEL/confusion_matrix.png)")] = None,
    json: cli.Json = False,
    encoding: cli.EncodingOption = "utf-8",
    verbose: cli.Verbose = False,
):
    """Accuracy, top-k accuracy, per-class scores and the confusion matrix (also as a PNG) on --data."""
    from .app import evaluate as evaluate_model

    metrics = evaluate_model(model, data, encoding, top_k=top_k, plot=plot)
    if json:
        cli.echo_json(metrics)
        return
    top_key = next(k for k in metrics if k.startswith("top_"))
    cli.echo_metrics({k: metrics[k] for k in ("examples", "accuracy", top_key, "skipped_files", "confusion_matrix_png")},
                     title=f"Evaluated {model}")
    typer.echo("  per class (precision recall f1 support)")
    for label in metrics["labels"]:
        row = metrics["per_class"][label]
        typer.echo(f"    {label:>14} {row['precision']:.3f} {row['recall']:.3f} {row['f1-score']:.3f} {int(row['support'])}")
    typer.echo("  confusion matrix (rows: true, columns: predicted) " + " ".join(metrics["labels"]))
    for label, row in zip(metrics["labels"], metrics["confusion_matrix"]):
        typer.echo(f"    {label:>14} " + " ".join(f"{v:6d}" for v in row))


@app.command()
@cli.handle_errors
def export(
    model: cli.ModelDir = cli.default_model_dir(APP),
    out: cli.ExportOut = None,
    top_k: TopK = 3,
    json: cli.Json = False,
    verbose: cli.Verbose = False,
):
    """Write model.keras and a TF Serving SavedModel (OUT/serving/N) that takes encoded image bytes."""
    from .app import export as export_model

    result = export_model(model, out, top_k=top_k)
    cli.echo_result(result, json, title="Exported")
