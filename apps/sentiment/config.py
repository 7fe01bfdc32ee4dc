"""Typed defaults of the sentiment app; every field is also a ``dlapps sentiment train`` flag."""

from dataclasses import dataclass

from ...shared.config import TrainConfig, option


@dataclass
class SentimentConfig(TrainConfig):
    epochs: int = option(8, "passes over the training data", short="-e")
    batch_size: int = option(64, "sentences per step, summed over all devices", short="-b")
    learning_rate: float = option(2e-3, "Adam learning rate")
    patience: int = option(3, "stop after this many epochs without validation improvement (0: never)")
    # --- data ---
    text_column: str = option("", "CSV/TSV column holding the text (name or 0-based index; default: detected)")
    label_column: str = option("", "CSV/TSV column holding the label (name or 0-based index; default: detected)")
    demo_size: int = option(4000, "sentences the demo grammar generates")
    # --- model ---
    max_tokens: int = option(20000, "vocabulary size, most frequent training words first")
    max_length: int = option(100, "tokens kept per text; longer texts are cut")
    embedding_dim: int = option(128, "word vector size (taken from --embeddings when given)")
    embeddings: str = option("", "word2vec text/binary vectors to initialise the embedding (e.g. the word2vec app's output)")
    lstm_units: list[int] = option([64], "units of each stacked BiLSTM layer, e.g. 64,32")
    pooling: str = option("max", "how word states become one vector", choices=("max", "mean", "attention"))
    dropout: float = option(0.5, "dropout on embeddings and before the classifier")
