"""Typed defaults of the ner app; every field is also a ``dlapps ner train`` flag."""

from dataclasses import dataclass

from ...shared.config import TrainConfig, option

SCHEMES = ("auto", "iob1", "iob2", "bioes")


@dataclass
class NerConfig(TrainConfig):
    epochs: int = option(10, "passes over the training data", short="-e")
    batch_size: int = option(32, "sentences per step, summed over all devices", short="-b")
    learning_rate: float = option(2e-3, "Adam learning rate")
    patience: int = option(4, "stop after this many epochs without validation F1 improvement (0: never)")
    # --- data ---
    demo_size: int = option(2000, "sentences the demo generator writes")
    input_scheme: str = option("auto", "tag scheme of the data files (auto: detected per file)", choices=SCHEMES)
    tag_scheme: str = option("bioes", "tag scheme the model learns and outputs", choices=("iob2", "bioes"))
    max_length: int = option(200, "training sentences longer than this many tokens are skipped (with a count)")
    max_word_length: int = option(25, "characters of a word the character encoder reads; longer words are cut")
    # --- model ---
    max_words: int = option(50000, "word vocabulary size (training words by frequency, then --embeddings words)")
    embedding_dim: int = option(100, "word vector size (taken from --embeddings when given)")
    embeddings: str = option("", "word2vec text/binary vectors to initialise word embeddings (e.g. the word2vec app's output)")
    char_encoder: str = option("cnn", "character features per word", choices=("cnn", "lstm"))
    char_dim: int = option(30, "character embedding size")
    char_units: int = option(50, "character feature size per word (CNN filters or BiLSTM units x 2)")
    casing_dim: int = option(8, "size of the casing feature embedding")
    lstm_units: list[int] = option([100], "units of each stacked word BiLSTM layer, e.g. 100,100")
    dropout: float = option(0.5, "dropout on word features and between layers")
    head: str = option("crf", "output layer: linear-chain CRF with Viterbi decoding, or per-token softmax", choices=("crf", "softmax"))
