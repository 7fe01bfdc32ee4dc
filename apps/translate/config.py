"""Typed options of the translate app: ``train`` flags, and the decoding options of predict,
evaluate and export."""

from dataclasses import dataclass

from dlapps.shared.config import EvaluateOptions, ExportOptions, PredictOptions, TrainConfig, default, option


@dataclass
class TranslateConfig(TrainConfig):
    epochs: int = default(30)
    batch_size: int = default(64)
    learning_rate: float = default(1e-3, help="peak Adam learning rate, reached after --warmup-steps")
    patience: int = default(5)
    # --- data ---
    src: str = option("", "source language: the file suffix of line-aligned pairs (train.de) or a tfds feature name")
    tgt: str = option("", "target language: the file suffix of line-aligned pairs (train.en) or a tfds feature name")
    reverse: bool = option(False, "translate the second column of TSV pairs (or tfds --tgt) into the first")
    demo_size: int = option(4000, "sentence pairs the demo grammar generates", min=10, max=1_000_000)
    # --- vocabularies (WordPiece, learnt per language from the training pairs) ---
    source_vocabulary_size: int = option(8000, "source WordPiece vocabulary size (at most)", min=50, max=200_000)
    target_vocabulary_size: int = option(8000, "target WordPiece vocabulary size (at most)", min=50, max=200_000)
    vocabulary_min_count: int = option(5, "two pieces merge into a vocabulary entry only when seen together this often", min=1, max=1_000_000)
    max_source_length: int = option(64, "source pieces read, [END] included; longer sources are cut (and training pairs skipped)", min=2, max=2048)
    max_target_length: int = option(64, "target pieces written at most; longer training pairs are skipped", min=1, max=2048)
    # --- model ---
    arch: str = option("transformer", "encoder-decoder architecture", choices=("transformer", "rnn"))
    embedding_dim: int = option(128, "token embedding size (the Transformer's model width)", min=8, max=8192)
    num_layers: int = option(2, "encoder and decoder layers (Transformer blocks or stacked GRUs)", min=1, max=24)
    num_heads: int = option(4, "Transformer attention heads (must divide --embedding-dim)", min=1, max=128)
    intermediate_dim: int = option(512, "Transformer feed-forward size", min=8, max=32768)
    units: int = option(256, "rnn: GRU units (per direction in the encoder)", min=8, max=8192)
    attention: str = option("bahdanau", "rnn: attention score, additive (bahdanau) or multiplicative (luong)", choices=("bahdanau", "luong"))
    dropout: float = option(0.1, "dropout in the blocks and on embeddings", min=0, below=1)
    label_smoothing: float = option(0.1, "share of each target's probability spread over the vocabulary", min=0, below=1)
    warmup_steps: int = option(400, "steps of linear learning-rate warm-up, then 1/sqrt(step) decay (0: constant rate)", min=0, max=1_000_000)
    # --- validation ---
    val_bleu_sentences: int = option(1000, "validation pairs translated for val_bleu after each epoch (0: all)", min=0)
    val_beam: int = option(1, "beam width of the per-epoch validation translation (1: greedy)", min=1, max=64)


@dataclass
class TranslatePredictOptions(PredictOptions):
    beam: int = option(1, "beam width (1: greedy decoding)", min=1, max=64)
    length_penalty: float = option(0.6, "beam search length normalisation exponent (0: raw log-probability)", min=0, max=5)


@dataclass
class TranslateEvaluateOptions(EvaluateOptions):
    beam: int = option(1, "beam width (1: greedy decoding)", min=1, max=64)
    length_penalty: float = option(0.6, "beam search length normalisation exponent (0: raw log-probability)", min=0, max=5)


@dataclass
class TranslateExportOptions(ExportOptions):
    beam: int = option(4, "beam width of the exported 'beam' signature", min=1, max=64)
    length_penalty: float = option(0.6, "length normalisation exponent of the 'beam' signature", min=0, max=5)
