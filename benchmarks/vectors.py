"""Pretrained word vectors for the benchmarks that take them (ner, sentiment): gensim skip-gram on
a folder of text files, written in the word2vec text format that the apps' --embeddings read."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from dlapps.shared.errors import UserError


def text_files(corpus: str) -> list[Path]:
    """The .txt files under `corpus`, sorted; a one-line error when there are none."""
    files = sorted(Path(corpus).rglob("*.txt"))
    if not files:
        raise UserError(f"{corpus}: no .txt files to train word2vec vectors on")
    return files


def gensim_vectors(corpus: str, out: Path, seed: int, tokenize: Callable[[str], list[str]],
                   min_count: int) -> tuple[Path, float]:
    """Skip-gram vectors (100 dims, window 5, 5 negatives, 5 epochs) of every .txt file under
    `corpus`, each line split into words by `tokenize` (the app's own tokenisation, so words
    match); returns the vectors file and the seconds taken."""
    from gensim.models import Word2Vec

    started = time.time()
    files = text_files(corpus)
    # Tokenised once into one file: gensim's corpus_file mode reads it in C, in parallel, per epoch.
    tokenised = out.with_suffix(".corpus")
    with open(tokenised, "w", encoding="utf-8") as file:
        for path in files:
            for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
                words = tokenize(line)
                if words:
                    file.write(" ".join(words) + "\n")
    model = Word2Vec(corpus_file=str(tokenised), vector_size=100, window=5, min_count=min_count, sg=1, negative=5,
                     epochs=5, workers=2, seed=seed)
    model.wv.save_word2vec_format(str(out), binary=False)
    tokenised.unlink()
    return out, time.time() - started


def dlapps_vectors(corpus: str, folder: Path, seed: int, token_pattern: str, min_count: int) -> tuple[Path, float]:
    """The same skip-gram vectors trained by `dlapps word2vec train` (its defaults are gensim's),
    words matched by `token_pattern` after lower-casing; returns `folder`/vectors.txt and the
    seconds taken. The chain the suite exists for: our vectors feeding our taggers."""
    from dlapps.apps.word2vec.app import APP
    from dlapps.apps.word2vec.config import Word2VecConfig
    from dlapps.shared import training
    from dlapps.shared.config import resolve

    text_files(corpus)
    started = time.time()
    config = resolve(Word2VecConfig, None, {"data": corpus, "out": str(folder), "seed": seed,
                                            "token_pattern": token_pattern, "min_count": min_count})
    training.train(APP, config)
    return folder / "vectors.txt", time.time() - started
