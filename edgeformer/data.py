"""The demo corpus: docstrings of the Python standard library that every machine already has.

Docstrings are read with ``ast`` from the stdlib's source files (nothing is imported or run). The
split is by file, so held-out text comes from modules the model never saw. Each docstring is
labelled with what it documents: a module, a class or a function — the encoder's task.
"""

from __future__ import annotations

import ast
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

KINDS = ("module", "class", "function")
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
    root = root or stdlib_dir()
    docs = []
    for path in _source_files(root):
        rel = path.relative_to(root).as_posix()
        if is_held_out(rel) == (split == "valid"):
            docs.extend(_docstrings_of(path, rel))
    return docs
