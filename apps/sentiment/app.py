"""The sentiment app's modes as plain functions: each takes paths and values, returns plain Python."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...shared import data as data_lib
from ...shared import export as export_lib
from ...shared import training
from ...shared.errors import UserError
from ...shared.strategy import describe, get_strategy
from . import data as sentiment_data
from .config import SentimentConfig
from .model import SentimentClassifier, build_vocabulary  # also registers the class for loading

APP = "sentiment"


def _datasets(splits, config, preprocessor):
    """(token ids, label index) batches: tokenisation runs in tf.data, not in the training step."""
    label_index = {name: i for i, name in enumerate(splits.label_names)}

    def encode(part):
        return np.asarray(part.texts, dtype=object), np.asarray([label_index[y] for y in part.labels], dtype=np.int32)

    def tokenize(texts, labels):
        return preprocessor(texts), labels

    common = dict(batch_size=config.batch_size, batch_map_fn=tokenize)
    train = data_lib.make_dataset(*encode(splits.train), shuffle=True, seed=config.seed, **common)
    val = data_lib.make_dataset(*encode(splits.val), **common) if len(splits.val) else None
    return train, val


def _text_batches(texts, preprocessor, batch_size=256):
    return data_lib.make_dataset(np.asarray(texts, dtype=object), batch_size=batch_size, batch_map_fn=preprocessor)


def train(config: SentimentConfig) -> dict:
    """Trains on `config.data` and writes the run folder; returns validation metrics."""
    import keras

    keras.utils.set_random_seed(config.seed)
    splits = sentiment_data.load_splits(config)
    run = training.Run.start(APP, config)
    strategy = get_strategy(config.strategy, config.mixed_precision)

    def build():
        vocabulary = build_vocabulary(splits.train.texts, config.max_tokens)
        embedding_dim, matrix = config.embedding_dim, None
        if config.embeddings:
            from ...shared.embeddings import embedding_matrix

            matrix, found = embedding_matrix(["", "[UNK]"] + vocabulary, config.embeddings, config.seed)
            embedding_dim = matrix.shape[1]
            print(f"Embeddings: {found} of {len(vocabulary)} vocabulary words found in {config.embeddings}")
        model = SentimentClassifier(
            vocabulary,
            splits.label_names,
            embedding_dim=embedding_dim,
            lstm_units=config.lstm_units,
            pooling=config.pooling,
            dropout=config.dropout,
            max_length=config.max_length,
        )
        if matrix is not None:
            model.get_layer("token_embedding").embeddings.assign(matrix)
        return model

    model = training.model_for_run(run, config, build, strategy)
    with strategy.scope():
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=1.0),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    print(f"Training on {len(splits.train)} texts, validating on {len(splits.val)}; "
          f"labels {splits.label_names}; {describe(strategy)}")
    train_ds, val_ds = _datasets(splits, config, model.preprocessor)
    metrics = training.fit(model, train_ds, val_ds, run, config, monitor="val_accuracy", mode="max")
    metrics.update(train_size=len(splits.train), val_size=len(splits.val), labels=splits.label_names)
    training.write_json(run.metrics_path, metrics)
    return metrics


def predict(model_dir: str | Path, texts: list[str], model=None) -> list[dict]:
    """Label and probability for each text, plus every class's probability."""
    model = model or training.load_model(model_dir, APP)
    probabilities = model.predict(_text_batches(texts, model.preprocessor), verbose=0)
    results = []
    for text, row in zip(texts, probabilities):
        best = int(np.argmax(row))
        results.append(
            {
                "text": text,
                "label": model.labels[best],
                "probability": float(row[best]),
                "probabilities": {name: float(p) for name, p in zip(model.labels, row)},
            }
        )
    return results


def evaluation_data(model_dir: Path, data: str | None, encoding: str = "utf-8"):
    """The texts to evaluate on: all of --data when given, else the run's own validation split."""
    config = training.run_config(model_dir, SentimentConfig, required=data is None)
    if data is None:
        return sentiment_data.load_splits(config).val
    config.encoding = encoding
    spec = data_lib.parse_data_spec(data)
    if spec.kind == "demo":
        return sentiment_data.demo(config.demo_size, seed=config.seed + 1)  # fresh sentences, not the training ones
    if spec.kind == "tfds":
        return sentiment_data.read_tfds(spec, spec.tfds_split or "test", config)
    return sentiment_data.read_path(spec.path, config)


def evaluate(model_dir: str | Path, data: str | None = None, encoding: str = "utf-8") -> dict:
    """Accuracy, macro F1, per-class report and confusion matrix (scikit-learn)."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    model = training.load_model(model_dir, APP)
    dataset = evaluation_data(Path(model_dir), data, encoding)
    unknown = sorted(set(dataset.labels) - set(model.labels))
    if unknown:
        raise UserError(f"{data}: labels {unknown} are not among the model's labels {model.labels}")
    predicted = [r["label"] for r in predict(model_dir, dataset.texts, model=model)]
    return {
        "examples": len(dataset),
        "accuracy": float(accuracy_score(dataset.labels, predicted)),
        "macro_f1": float(f1_score(dataset.labels, predicted, average="macro", labels=model.labels, zero_division=0)),
        "labels": model.labels,
        "confusion_matrix": confusion_matrix(dataset.labels, predicted, labels=model.labels).tolist(),
        "per_class": classification_report(
            dataset.labels, predicted, labels=model.labels, output_dict=True, zero_division=0
        ),
    }


def export(model_dir: str | Path, out: str | Path | None = None) -> dict:
    """SavedModel whose serving_default takes strings and returns labels and probabilities."""
    import tensorflow as tf

    model = training.load_model(model_dir, APP)
    out = Path(out or model_dir)
    labels = tf.constant(model.labels)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serving_default(text):
        probabilities = model.classify_texts(text)
        best = tf.argmax(probabilities, axis=-1)
        return {
            "label": tf.gather(labels, best),
            "probability": tf.reduce_max(probabilities, axis=-1),
            "probabilities": probabilities,
        }

    path = export_lib.write_saved_model(model, {"serving_default": serving_default}, out)
    export_lib.copy_model(Path(model_dir), out)
    return {"saved_model": str(path), "version": int(path.name), "labels": model.labels,
            "signature": "serving_default(text: string[N]) -> label: string[N], probability: float[N], probabilities: float[N, C]"}
