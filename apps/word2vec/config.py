"""Typed defaults of the word2vec app; every field is also a ``dlapps word2vec train`` flag.

The hyperparameters are gensim 4's (Word2Vec(vector_size=100, window=5, negative=5, min_count=5,
sample=1e-3, alpha=0.025, min_alpha=1e-4, epochs=5)), so results compare one to one. Two sampling
shortcuts are on by default, --window-draw batch and --shared-negatives 2: together they cut the
training time by about a third, and on Wikipedia the means over six seeds stayed within 1.2% of
gensim's quality (README). --window-draw word --shared-negatives 1 is gensim's own scheme."""

from dataclasses import dataclass

from dlapps.shared.config import TrainConfig, default, option

TOKEN_PATTERN = r"[^\W\d_]+"  # runs of letters, any script; digits and punctuation separate words


@dataclass
class Word2VecConfig(TrainConfig):
    epochs: int = default(5, help="passes over the corpus")
    batch_size: int = default(1024, help="centre words per step (each with all its context words), summed over devices")
    learning_rate: float = default(0.025, help="SGD learning rate at the start; decays linearly to --min-learning-rate")
    min_learning_rate: float = option(1e-4, "learning rate at the end of the last epoch", above=0, max=10)
    val_fraction: float = default(0.0, help="unused: word2vec trains on the whole corpus (loss is the training loss)")
    # --- data ---
    demo_chars: int = option(0, "characters of standard-library docstrings the demo corpus collects (0: all, ~1.6M)", min=0)
    token_pattern: str = option(TOKEN_PATTERN, "regular expression of one token, applied after lower-casing")
    lowercase: bool = option(True, "lower-case the text before tokenising")
    min_count: int = option(5, "ignore words that occur fewer times than this", min=1)
    max_vocab: int = option(0, "keep at most this many most frequent words (0: no limit)", min=0)
    sample: float = option(1e-3, "subsampling threshold: words more frequent than this are randomly dropped (0: off)", min=0, max=1)
    # --- model ---
    model: str = option("skipgram", "training objective", choices=("skipgram", "cbow"))
    dim: int = option(100, "vector size", min=1, max=4096)
    window: int = option(5, "maximum distance between a word and its context (each word draws 1..window)", min=1, max=100)
    window_draw: str = option("batch", "who draws the reduced window 1..window: each 'batch' (the same odds for every pair; a step computes only its own offsets, about 40% less work at window 5) or each centre 'word' (gensim's way)", choices=("batch", "word"))
    negative: int = option(5, "negative samples per positive pair, drawn from unigram counts ** ns_exponent", min=1, max=100)
    shared_negatives: int = option(2, "consecutive centre words that share one draw of negatives (1: each centre its own, shared by its context words, as gensim); must divide --batch-size; 2 is faster at about gensim's quality, 8 costs quality", min=1, max=1024)
    row_update_cap: float = option(256.0, "scale a word's summed update in one batch down to this many pairs' worth (keeps large batches stable; lower it, e.g. 32, for tiny vocabularies or --sample 0; 0: off)", min=0)
    ns_exponent: float = option(0.75, "exponent of the negative-sampling distribution", min=-10, max=10)
