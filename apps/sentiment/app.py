"""The sentiment app's hooks into the shared contract (shared/app.py)."""

from __future__ import annotations

import dataclasses

import numpy as np

from dlapps.shared import data as data_lib
from dlapps.shared.app import App, Splits
from dlapps.shared.errors import UserError

from . import data as sentiment_data
from .config import SentimentConfig


class SentimentApp(App):
    name = "sentiment"
    summary = "Text classification (binary or multi-class) with a BiLSTM or CNN over raw strings."
    config = SentimentConfig
    predict_help = 'Label texts: `dlapps sentiment predict "what a film" "dull"`, --file FILE, or \'-\' for stdin.'
    evaluate_help = "Accuracy, macro F1, per-class scores and the confusion matrix on --data."
    monitor, mode = "val_accuracy", "max"

    # --- train ---
    def load_splits(self, config) -> Splits:
        splits = sentiment_data.load_splits(config)
        return Splits(splits.train, splits.val,
                      {"train_size": len(splits.train), "val_size": len(splits.val), "labels": splits.label_names,
                       **splits.notes})

    def build_model(self, config, splits):
        from .model import SentimentClassifier, build_vocabulary

        vocabulary = build_vocabulary(splits.train.texts, config.max_tokens)
        embedding_dim, matrix = config.embedding_dim, None
        if config.embeddings:
            from dlapps.shared.embeddings import embedding_matrix

            matrix, found = embedding_matrix(["", "[UNK]"] + vocabulary, config.embeddings, config.seed)
            embedding_dim = matrix.shape[1]
            print(f"Embeddings: {found} of {len(vocabulary)} vocabulary words found in {config.embeddings}")
        model = SentimentClassifier(
            vocabulary=vocabulary,
            labels=splits.info["labels"],
            embedding_dim=embedding_dim,
            arch=config.arch,
            lstm_units=config.lstm_units,
            filter_widths=config.filter_widths,
            feature_maps=config.feature_maps,
            pooling=config.pooling,
            dropout=config.dropout,
            embedding_dropout=config.embedding_dropout,
            max_length=config.max_length,
            members=config.members,
        )
        if matrix is not None:
            for layer in model.embedding_layers():
                layer.embeddings.assign(matrix)
        return model

    def compile_model(self, model, config) -> None:
        import keras

        # The loss is the model's compute_loss (each ensemble member's own cross-entropy); accuracy
        # is that of the averaged probabilities, what predict and the SavedModel return.
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=1.0), metrics=["accuracy"])

    def datasets(self, model, splits, config):
        """(token ids, label index) batches: tokenisation runs in tf.data, not in the training step."""
        label_index = {name: i for i, name in enumerate(model.labels)}

        def encode(part):
            return np.asarray(part.texts, dtype=object), np.asarray([label_index[y] for y in part.labels], dtype=np.int32)

        def tokenize(texts, labels):
            return model.preprocessor(texts), labels

        common = dict(batch_size=config.batch_size, batch_map_fn=tokenize)
        train = data_lib.make_dataset(*encode(splits.train), shuffle=True, seed=config.seed, **common)
        val = data_lib.make_dataset(*encode(splits.val), **common) if len(splits.val) else None
        return train, val

    def describe_training(self, model, splits, config) -> str:
        phrases = ""
        if splits.info.get("phrase_level"):
            phrases = (f" whole sentences (phrase-level data: {splits.info['phrases_left_out']:,} phrases of them "
                       "left out of training)")
        members = f"{model.members} x " if model.members > 1 else ""
        return (f"Training on {len(splits.train)} texts, validating on {len(splits.val)}{phrases}; "
                f"labels {model.labels}; {members}{model.arch.upper()}, {model.count_params():,} parameters")

    # --- predict ---
    def predict(self, model, inputs, options) -> list[dict]:
        probabilities = model.classify_texts_batched(inputs, options.batch_size)
        results = []
        for text, row in zip(inputs, probabilities):
            best = int(np.argmax(row))
            results.append({
                "text": text,
                "label": model.labels[best],
                "probability": float(row[best]),
                "probabilities": {name: float(p) for name, p in zip(model.labels, row)},
            })
        return results

    def format_prediction(self, row: dict) -> str:
        return f"{row['label']}\t{row['probability']:.3f}\t{row['text']}"

    # --- evaluate ---
    def evaluation_data(self, config, options):
        if options.data.strip() == "demo":  # fresh sentences, not the training ones
            return sentiment_data.demo(config.demo_size, seed=config.seed + 1)
        if options.data:
            config = dataclasses.replace(config, encoding=options.encoding)
            spec = data_lib.parse_data_spec(options.data)
            if spec.kind == "tfds":
                return sentiment_data.read_tfds(spec, spec.tfds_split or "test", config)
            return sentiment_data.read_path(spec.path, config)
        return super().evaluation_data(config, options)

    def evaluate(self, model, data, options) -> dict:
        from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

        unknown = sorted(set(data.labels) - set(model.labels))
        if unknown:
            raise UserError(f"{options.data}: labels {unknown} are not among the model's labels {model.labels}")
        predicted = [r["label"] for r in self.predict(model, data.texts, options)]
        return {
            "examples": len(data),
            "accuracy": float(accuracy_score(data.labels, predicted)),
            "macro_f1": float(f1_score(data.labels, predicted, average="macro", labels=model.labels, zero_division=0)),
            "labels": model.labels,
            "confusion_matrix": confusion_matrix(data.labels, predicted, labels=model.labels).tolist(),
            "per_class": classification_report(data.labels, predicted, labels=model.labels, output_dict=True, zero_division=0),
        }

    def headline(self, metrics: dict) -> dict:
        rows = {f"confusion {label}": " ".join(f"{v:6d}" for v in row)
                for label, row in zip(metrics["labels"], metrics["confusion_matrix"])}
        return {k: metrics[k] for k in ("examples", "accuracy", "macro_f1")} | rows

    # --- export ---
    def endpoints(self, model, options) -> dict:
        import tensorflow as tf

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

        return {"serving_default": serving_default}


APP = SentimentApp()
