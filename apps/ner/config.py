"""Typed options of the ner app: ``train`` flags, and the options of predict and evaluate."""

from dataclasses import dataclass

from dlapps.shared.config import EvaluateOptions, PredictOptions, TrainConfig, default, option

SCHEMES = ("auto", "iob1", "iob2", "bioes")


@dataclass
class NerConfig(TrainConfig):
    batch_size: int = default(32, help="sentences per step, summed over all devices")
    learning_rate: float = default(2e-3)
    patience: int = default(4)
    # --- data ---
    demo_size: int = option(2000, "sentences the demo generator writes", min=20, max=1_000_000)
    input_scheme: str = option("auto", "tag scheme of the data files (auto: detected per file)", choices=SCHEMES)
    tag_scheme: str = option("bioes", "tag scheme the model learns and outputs", choices=("iob2", "bioes"))
    max_length: int = option(200, "training sentences longer than this many tokens are skipped (with a count)", min=1, max=100_000)
    max_word_length: int = option(25, "characters of a word the character encoder reads; longer words are cut", min=1, max=1000)
    # --- model ---
    max_words: int = option(50000, "word vocabulary size (training words by frequency, then --embeddings words)", min=1, max=10_000_000)
    embedding_dim: int = option(100, "word vector size (taken from --embeddings when given)", min=1, max=4096)
    embeddings: str = option("", "word2vec text/binary vectors to initialise word embeddings (e.g. the word2vec app's output)")
    char_encoder: str = option("cnn", "character features per word", choices=("cnn", "lstm"))
    char_dim: int = option(30, "character embedding size", min=1, max=1024)
    char_units: int = option(50, "character feature size per word (CNN filters or BiLSTM units x 2)", min=1, max=4096)
    casing_dim: int = option(8, "size of the casing feature embedding", min=1, max=1024)
    lstm_units: list[int] = option([100], "units of each stacked word BiLSTM layer, e.g. 100,100", min=1, max=4096)
    dropout: float = option(0.5, "dropout on word features and between layers", min=0, below=1)
    head: str = option("crf", "output layer: linear-chain CRF with Viterbi decoding, or per-token softmax", choices=("crf", "softmax"))


@dataclass
class NerPredictOptions(PredictOptions):
    batch_size: int = default(128, help="sentences per model call")
    format: str = option("spans", "table output: spans (one entity per line) or conll (token and tag per line)",
                         choices=("spans", "conll"))


@dataclass
class NerEvaluateOptions(EvaluateOptions):
    batch_size: int = default(128, help="sentences per model call")
