"""The demo corpus: docstrings of the Python standard library that every machine already has.

Docstrings are read with ``ast`` from the stdlib's source files (nothing is imported or run). The
split is by file, so held-out text comes from modules the model never saw. Each docstring is
labelled with what it documents: a module, a class or a function.

The encoder's task is word order (``ORDERS``): the first words of a docstring as written, the same
words shuffled, or the same characters reversed. The three variants of a text hold the same bytes
(the same multiset), so a bag-of-bytes classifier is at chance (1/3) by construction: only a model
that reads order can tell them apart.
"""

from __future__ import annotations

import ast
import functools
import random
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

KINDS = ("module", "class", "function")
ORDERS = ("prose", "shuffled", "reversed")  # the labels of the encoder's word-order task
ORDER_BYTES = 64  # the first words of a docstring: short texts train fast on two cores
HELD_OUT_EVERY = 10  # one file in ten (by a hash of its path) is held out


@dataclass(frozen=True)
class Docstring:
    path: str  # relative to the stdlib directory
    kind: str  # one of KINDS
    text: str


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _source_files(root: Path) -> list[Path]:
    skip = {"site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}
    files = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(p in skip or p.startswith("test") for p in parts):
            continue
        files.append(path)
    return files


def _docstrings_of(path: Path, rel: str) -> list[Docstring]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):  # breadth-first from the module, a fixed order
        if isinstance(node, ast.Module):
            kind = "module"
        elif isinstance(node, ast.ClassDef):
            kind = "class"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            kind = "function"
        else:
            continue
        doc = ast.get_docstring(node, clean=True)
        if doc and len(doc) >= 16:
            out.append(Docstring(rel, kind, doc))
    return out


def is_held_out(rel_path: str) -> bool:
    return zlib.crc32(rel_path.encode()) % HELD_OUT_EVERY == 0


def load_docstrings(split: str = "train", root: Path | None = None) -> list[Docstring]:
    """All docstrings of the train or held-out ("valid") files, in a fixed order."""
    if split not in ("train", "valid"):
        raise ValueError(f"split must be 'train' or 'valid', got {split!r}")
    return list(_parsed_docstrings(split, root or stdlib_dir()))


@functools.lru_cache(maxsize=4)
def _parsed_docstrings(split: str, root: Path) -> tuple[Docstring, ...]:
    """Parsing the standard library takes seconds; the demos, the benches and the tests ask for the same
    split many times in one process (the docstrings are frozen, the caller gets its own list)."""
    docs = []
    for path in _source_files(root):
        rel = path.relative_to(root).as_posix()
        if is_held_out(rel) == (split == "valid"):
            docs.extend(_docstrings_of(path, rel))
    return tuple(docs)


def first_words(text: str, max_bytes: int = ORDER_BYTES) -> list[str]:
    """The words of the first paragraph of ``text`` that fit in ``max_bytes`` of UTF-8 joined by spaces."""
    words: list[str] = []
    size = -1
    for word in text.split("\n\n")[0].split():
        size += len(word.encode("utf-8")) + 1
        if size > max_bytes:
            break
        words.append(word)
    return words


def word_order_texts(docs: list[Docstring], exclude: set[tuple[str, ...]] | None = None) -> list[tuple[str, ...]]:
    """The distinct word lists of ``docs`` usable for the word-order task (at least 4 words, 3 of them
    different, so a shuffle can differ from the original), in first-seen order, minus ``exclude``."""
    seen = set(exclude or ())
    out = []
    for d in docs:
        words = tuple(first_words(d.text))
        if len(words) >= 4 and len(set(words)) >= 3 and words not in seen:
            seen.add(words)
            out.append(words)
    return out


def reorder(words: tuple[str, ...], label: int, rng: random.Random) -> str:
    """The text of ``words`` as ORDERS[label]: as written, shuffled (never the original), or reversed."""
    text = " ".join(words)
    if ORDERS[label] == "prose":
        return text
    if ORDERS[label] == "reversed":
        return text[::-1]
    shuffled = list(words)
    while " ".join(shuffled) == text:
        rng.shuffle(shuffled)
    return " ".join(shuffled)


def word_order_examples(split: str = "valid") -> list[tuple[str, int]]:
    """The held-out word-order set: every distinct held-out text (none also in training) in all three
    orders, so the classes are exactly balanced; shuffles are seeded by the text (a fixed set)."""
    train = set(word_order_texts(load_docstrings("train")))
    texts = word_order_texts(load_docstrings(split), exclude=train if split == "valid" else None)
    out: list[tuple[str, int]] = []
    for words in texts:
        rng = random.Random(zlib.crc32(" ".join(words).encode("utf-8")))
        out.extend((reorder(words, label, rng), label) for label in range(len(ORDERS)))
    return out
