"""Typed defaults of the sentiment app; every field is also a ``dlapps sentiment train`` flag."""

from dataclasses import dataclass

from dlapps.shared.config import TrainConfig, default, option


@dataclass
class SentimentConfig(TrainConfig):
    epochs: int = default(8)
    batch_size: int = default(64)
    learning_rate: float = default(2e-3)
    patience: int = default(3)
    # --- data ---
    text_column: str = option("", "CSV/TSV column holding the text (name or 0-based index; default: detected)")
    label_column: str = option("", "CSV/TSV column holding the label (name or 0-based index; default: detected)")
    demo_size: int = option(4000, "sentences the demo grammar generates", min=20, max=1_000_000)
    phrases: str = option("auto", "phrase-level data (SST-2's train.tsv: parts of sentences as examples): validate on "
                          "whole sentences and keep their phrases out of training; auto: when half the texts begin or "
                          "end a longer one", choices=("auto", "yes", "no"))
    # --- model ---
    max_tokens: int = option(20000, "vocabulary size, most frequent training words first", min=10)
    max_length: int = option(100, "tokens kept per text; longer texts are cut", min=1, max=100_000)
    embedding_dim: int = option(128, "word vector size (taken from --embeddings when given)", min=1, max=4096)
    embeddings: str = option("", "word2vec text/binary vectors to initialise the embedding (e.g. the word2vec app's output)")
    arch: str = option("bilstm", "text encoder: stacked BiLSTMs, or a CNN (Kim 2014: parallel convolutions, max over time)",
                       choices=("bilstm", "cnn"))
    lstm_units: list[int] = option([64], "units of each stacked BiLSTM layer, e.g. 64,32", min=1, max=4096)
    filter_widths: list[int] = option([3, 4, 5], "CNN: word widths of the parallel convolutions", min=1, max=64)
    feature_maps: int = option(100, "CNN: filters per width", min=1, max=4096)
    pooling: str = option("max", "how word states become one vector", choices=("max", "mean", "attention"))
    dropout: float = option(0.5, "dropout before the classifier", min=0, below=1)
    embedding_dropout: float = option(0.5, "dropout of whole embedding dimensions (SpatialDropout1D)", min=0, below=1)
    members: int = option(1, "independently initialised models trained side by side on their own losses, their "
                             "probabilities averaged: a seed ensemble saved as one model", min=1, max=32)
