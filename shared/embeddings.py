"""Word vectors in word2vec text or binary format (what gensim and the word2vec app write),
turned into an initial Embedding matrix for a vocabulary."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlapps.shared.errors import UserError


def read_word2vec(path: str | Path, encoding: str = "utf-8") -> tuple[list[str], np.ndarray]:
    """Reads `COUNT DIM` then `word v1 ... vDIM` lines (text), or the binary layout (`word ` then
    DIM little-endian float32) that gensim and the word2vec app write."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such embeddings file")
    raw = path.read_bytes()
    header, _, body = raw.partition(b"\n")
    try:
        count, dim = (int(v) for v in header.split())
    except ValueError:
        raise UserError(f"{path}: line 1: expected the word2vec header 'COUNT DIM'")
    words, vectors = [], np.zeros((count, dim), dtype=np.float32)
    if _is_text(body, dim):
        lines = body.split(b"\n")
        for i in range(count):
            parts = lines[i].rstrip(b"\r ").split(b" ") if i < len(lines) else []
            if len(parts) != dim + 1:
                raise UserError(f"{path}: line {i + 2}: expected a word and {dim} numbers, got {max(len(parts) - 1, 0)}")
            try:
                vectors[i] = np.asarray(parts[1:], dtype=np.float32)
            except ValueError:
                raise UserError(f"{path}: line {i + 2}: not a vector of numbers")
            words.append(parts[0].decode(encoding, errors="replace"))
        return words, vectors
    position = 0
    for i in range(count):
        space = body.find(b" ", position)
        end = space + 1 + 4 * dim
        if space < 0 or end > len(body):
            raise UserError(f"{path}: truncated binary vectors after {i} of {count}")
        words.append(body[position:space].strip(b"\n").decode(encoding, errors="replace"))
        vectors[i] = np.frombuffer(body[space + 1 : end], dtype="<f4")
        position = end
    return words, vectors


def _is_text(body: bytes, dim: int) -> bool:
    first = body.split(b"\n", 1)[0].rstrip(b"\r ").split(b" ")
    if len(first) != dim + 1:
        return False
    try:
        [float(v) for v in first[1:]]
        return True
    except ValueError:
        return False


def embedding_matrix(
    vocabulary: list[str], path: str | Path, seed: int = 0, lowercase: bool = True
) -> tuple[np.ndarray, int]:
    """An initial matrix for `vocabulary` (row i = token i): vectors from the file where the word
    (or its lower-case form) is found, small random vectors elsewhere. Returns (matrix, found)."""
    words, vectors = read_word2vec(path)
    index = {w: i for i, w in enumerate(words)}
    if lowercase:
        for i, w in enumerate(words):
            index.setdefault(w.lower(), i)
    rng = np.random.default_rng(seed)
    scale = float(vectors.std()) if vectors.size else 0.05
    matrix = rng.normal(0.0, scale, size=(len(vocabulary), vectors.shape[1])).astype(np.float32)
    found = 0
    for row, word in enumerate(vocabulary):
        hit = index.get(word, index.get(word.lower()) if lowercase else None)
        if hit is not None:
            matrix[row] = vectors[hit]
            found += 1
    return matrix, found


def write_word2vec(path: str | Path, words: list[str], vectors: np.ndarray, binary: bool = False) -> Path:
    """Writes vectors in the word2vec format gensim's ``KeyedVectors.load_word2vec_format`` reads
    (and ``read_word2vec`` above): the header ``COUNT DIM``, then per word either a text line
    ``word v1 ... vDIM`` (floats printed so that they read back as the same float32) or, binary,
    ``word `` and DIM little-endian float32 (gensim's layout). Written to a temporary name and renamed."""
    import os

    path = Path(path)
    vectors = np.asarray(vectors, dtype="<f4")
    if len(words) != len(vectors):
        raise ValueError(f"{len(words)} words but {len(vectors)} vectors")
    bad = [w for w in words if not w or any(c.isspace() for c in w)]
    if bad:
        raise UserError(f"{path}: word2vec format cannot hold words with whitespace, such as {bad[0]!r}")
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as file:
        file.write(f"{len(words)} {vectors.shape[1]}\n".encode("utf-8"))
        if binary:
            for word, row in zip(words, vectors):
                file.write(word.encode("utf-8") + b" " + row.tobytes())
        else:
            for word, row in zip(words, vectors.tolist()):
                file.write((word + " " + " ".join(f"{v:.9g}" for v in row) + "\n").encode("utf-8"))
    os.replace(tmp, path)
    return path
