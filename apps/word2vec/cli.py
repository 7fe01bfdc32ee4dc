"""`dlapps word2vec ...`: a thin typer layer over app.py. Imports no TensorFlow until a command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ...shared import cli
from .config import Word2VecConfig

APP = "word2vec"
app = cli.make_app("Word vectors: skip-gram or CBOW with negative sampling, written in gensim's formats.")

WordsArgument = Annotated[
    Optional[list[str]], typer.Argument(help="words to query; '-' reads one word per line from stdin", show_default=False)
]
TopN = Annotated[int, typer.Option("--topn", "-n", help="how many neighbours or answers to show")]



cli.add_train_command(app, Word2VecConfig, f"{__package__}.app", APP,
                      help="Train word vectors on --data (default: the standard library's docstrings).")


@app.command()
@cli.handle_errors
def predict(
    words: WordsArgument = None,
    analogy: Annotated[bool, typer.Option("--analogy", help="answer A - B + C for three words A B C (king man woman)")] = False,
    topn: TopN = 10,
    file: cli.FileOption = None,
    model: cli.ModelDir = cli.default_model_dir(APP),
    json: cli.Json = False,
    encoding: cli.EncodingOption = "utf-8",
    verbose: cli.Verbose = False,
):
    """Nearest neighbours by cosine: `dlapps word2vec predict king --topn 10`; analogies:
    `dlapps word2vec predict --analogy king man woman`."""
    from .app import analogy as solve_analogy
    from .app import neighbours

    queries = [w.strip() for w in cli.read_inputs(words, file, encoding)]
    if analogy:
        result = solve_analogy(model, queries, topn)
        if json:
            cli.echo_json(result)
            return
        typer.echo(result["query"])
        for answer in result["answers"]:
            typer.echo(f"  {answer['similarity']:.4f}  {answer['word']}")
        return
    for result in neighbours(model, queries, topn):
        if json:
            cli.echo_json(result)
            continue
        typer.echo(result["word"])
        for neighbour in result["neighbours"]:
            typer.echo(f"  {neighbour['similarity']:.4f}  {neighbour['word']}")


@app.command()
@cli.handle_errors
def evaluate(
    analogies: Annotated[Optional[Path], typer.Option("--analogies", "-a", help="analogy questions, questions-words format")] = None,
    similarity: Annotated[Optional[list[Path]], typer.Option("--similarity", "-s", help="word-pair scores (WordSim-353/SimLex style); repeatable")] = None,
    restrict_vocab: Annotated[int, typer.Option("--restrict-vocab", help="analogies use only the N most frequent words, as gensim (0: all)")] = 30000,
    model: cli.ModelDir = cli.default_model_dir(APP),
    json: cli.Json = False,
    encoding: cli.EncodingOption = "utf-8",
    verbose: cli.Verbose = False,
):
    """Analogy accuracy and similarity Spearman correlations, with out-of-vocabulary counts."""
    from .app import evaluate as evaluate_model

    metrics = evaluate_model(model, analogies, similarity or [], restrict_vocab, encoding)
    if json:
        cli.echo_json(metrics)
        return
    typer.echo(f"Evaluated {model} (vocabulary {metrics['vocabulary_size']})")
    if "analogies" in metrics:
        a = metrics["analogies"]
        typer.echo(f"  analogies {a['file']}: accuracy {a['accuracy']:.4f} ({a['correct']} of {a['questions']} usable; "
                   f"{a['out_of_vocabulary']} of {a['total']} skipped outside the {a['restrict_vocab']} most frequent words)")
        for section in a["sections"]:
            shown = "-" if section["accuracy"] is None else f"{section['accuracy']:.4f}"
            typer.echo(f"    {section['section']:<30} {shown:>7}  ({section['correct']}/{section['questions']}, {section['skipped']} skipped)")
    for s in metrics.get("similarity", []):
        shown = "-" if s["spearman"] is None else f"{s['spearman']:.4f}"
        typer.echo(f"  similarity {s['file']}: Spearman {shown} on {s['pairs']} pairs "
                   f"({s['out_of_vocabulary']} of {s['total']} out of vocabulary)")


@app.command()
@cli.handle_errors
def export(
    model: cli.ModelDir = cli.default_model_dir(APP),
    out: cli.ExportOut = None,
    topn: TopN = 10,
    json: cli.Json = False,
    verbose: cli.Verbose = False,
):
    """Write model.keras and a TF Serving SavedModel (OUT/serving/N) mapping word strings to vectors."""
    from .app import export as export_model

    result = export_model(model, out, topn)
    cli.echo_result(result, json, title="Exported")
