"""Typed defaults of the charlm app; every field is also a ``dlapps charlm train`` flag."""

from dataclasses import dataclass

from ...shared.config import TrainConfig, option

ARCHITECTURES = ("lstm", "gru", "transformer")


@dataclass
class CharLMConfig(TrainConfig):
    epochs: int = option(10, "passes over the training text", short="-e")
    batch_size: int = option(64, "windows per step, summed over all devices", short="-b")
    learning_rate: float = option(2e-3, "Adam learning rate")
    val_fraction: float = option(0.1, "share of the text held out for validation: its last part")
    lr_decay: float = option(0.5, "multiply the learning rate by this after an epoch without validation improvement (1: never)")
    # --- data ---
    demo_chars: int = option(200_000, "characters of standard-library docstrings the demo trains on")
    min_count: int = option(1, "characters seen fewer times in training go to the out-of-vocabulary symbol")
    # --- model ---
    arch: str = option("gru", "network", choices=ARCHITECTURES)
    sequence_length: int = option(128, "characters per training window (all predicted); the transformer's context")
    embedding_dim: int = option(64, "character vector size (the transformer's model width)")
    units: list[int] = option([512], "units of each stacked LSTM/GRU layer, e.g. 256,256")
    num_layers: int = option(4, "transformer blocks")
    num_heads: int = option(4, "transformer attention heads")
    dropout: float = option(0.2, "dropout after the embedding and every layer")
    clip_norm: float = option(1.0, "gradient clipping: largest global gradient norm")
