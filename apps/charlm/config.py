"""Typed options of the charlm app: ``train`` flags (CharLMConfig) and those of predict/evaluate/export."""

from dataclasses import dataclass

from dlapps.shared.config import EvaluateOptions, ExportOptions, PredictOptions, TrainConfig, default, option

ARCHITECTURES = ("lstm", "gru", "transformer")
MAX_LENGTH = 100_000  # characters one prompt's continuation may have (predict and the SavedModel)


@dataclass
class CharLMConfig(TrainConfig):
    batch_size: int = default(64, help="windows per step, summed over all devices")
    learning_rate: float = default(2e-3)
    val_fraction: float = default(0.1, help="share of the text held out for validation: its last part")
    schedule: str = option("cosine", "learning rate: cosine decay to 0 over --epochs or --max-minutes (whichever ends first), or plateau: times --lr-decay after an epoch without validation improvement",
                           choices=("cosine", "plateau"))
    warmup: float = option(0.02, "cosine: share of training that warms the learning rate up linearly from 0", min=0, below=1)
    lr_decay: float = option(0.5, "plateau: multiply the learning rate by this after an epoch without validation improvement (1: never)", above=0, max=1)
    # --- data ---
    demo_chars: int = option(200_000, "characters of standard-library docstrings the demo trains on", min=100, max=100_000_000)
    min_count: int = option(1, "characters seen fewer times in training go to the out-of-vocabulary symbol", min=1)
    # --- model ---
    arch: str = option("gru", "network", choices=ARCHITECTURES)
    sequence_length: int = option(128, "characters per training window (all predicted; windows start at a new random offset every epoch); the transformer's context", min=2, max=65536)
    embedding_dim: int = option(64, "character vector size (the transformer's model width)", min=1, max=8192)
    units: list[int] = option([512], "units of each stacked LSTM/GRU layer, e.g. 256,256", min=1, max=8192)
    num_layers: int = option(4, "transformer blocks", min=1, max=128)
    num_heads: int = option(4, "transformer attention heads (a divisor of --embedding-dim)", min=1, max=128)
    dropout: float = option(0.2, "dropout after the embedding and every layer", min=0, below=1)
    clip_norm: float = option(1.0, "gradient clipping: largest global gradient norm", above=0, max=1e6)


@dataclass
class CharLMPredictOptions(PredictOptions):
    batch_size: int = default(256, help="scoring windows per model call (--score)")
    length: int = option(500, "characters to generate after each prompt", short="-n", min=1, max=MAX_LENGTH)
    temperature: float = option(0.8, "sampling temperature: lower is more conservative, 1 samples the model as it is", short="-t", above=0, max=100)
    top_k: int = option(40, "sample among the K most likely characters (0: all)", short="-k", min=0, max=1_000_000)
    seed: int | None = option(None, "the same seed generates the same text (default: a random one, reported with --json)", short="-s", min=0, max=2**31 - 1)
    score: bool = option(False, "score each input (log-probability, perplexity, bits per character) instead of continuing it")


@dataclass
class CharLMEvaluateOptions(EvaluateOptions):
    batch_size: int = default(256, help="scoring windows per model call")


@dataclass
class CharLMExportOptions(ExportOptions):
    top_k: int = option(40, "top-k of the unseeded generate signature (serving_default): sample among the K most likely characters (0: all)", short="-k", min=0, max=1_000_000)
