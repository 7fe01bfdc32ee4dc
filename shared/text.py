"""Real English text the project collects at run time, for demos that need a corpus: the
docstrings of the Python standard library installed on this machine. Read with `ast` from the
source files, never imported, so collecting them runs no code; nothing is copied into the repo."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path
from typing import Sequence

from dlapps.shared.errors import UserError


def stdlib_docstrings(max_chars: int | None = None, min_chars: int = 40) -> list[str]:
    """Module, class and function docstrings of the standard library, in a fixed order (sorted
    paths, source order), each cleaned of indentation; stops once `max_chars` are collected."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo", "__pycache__"}
    texts: list[str] = []
    total = 0
    for path in sorted(root.rglob("*.py")):
        if skip.intersection(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=True)
                if doc and len(doc) >= min_chars and doc.isascii():
                    texts.append(doc)
                    total += len(doc) + 1
                    if max_chars is not None and total >= max_chars:
                        return texts
    if not texts:
        raise UserError(f"{root}: found no standard-library docstrings to build the demo corpus from")
    return texts


def rank_vocabulary(counts, max_size: int = 0, min_count: int = 1, reserved: Sequence[str] = ()) -> list[str]:
    """Tokens by falling count (ties in first-seen order, so the same data gives the same ids),
    those seen at least `min_count` times, at most `max_size` (0: all) after the `reserved` ones."""
    from collections import Counter

    counts = counts if isinstance(counts, Counter) else Counter(counts)
    reserved = list(reserved)
    taken = set(reserved)
    ranked = [t for t, c in sorted(counts.items(), key=lambda item: -item[1]) if c >= min_count and t not in taken]
    if max_size:
        ranked = ranked[: max(0, max_size - len(reserved))]
    return reserved + ranked
