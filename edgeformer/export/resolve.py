"""Which source a MODEL argument names (``edgeformer export MODEL``): ``package.module:factory``, an
``edgeformer train`` output directory, a Hugging Face model directory, a card file or a shipped
card's name, and the torch ``Source`` it is."""

from __future__ import annotations

from pathlib import Path

from edgeformer.export.source import Source, source_from_card, source_from_factory
from edgeformer.export.user import load_io
from edgeformer.fit import card_in
from edgeformer.importers import source_from_directory
from edgeformer.ownership import TRAIN_MARKER
from edgeformer.zoo import resolve_card


def source_kind(model: str) -> str:
    """``factory`` (``module:function``, not an existing path), ``training`` (an ``edgeformer train``
    output: the one card in it), ``directory`` (a Hugging Face model directory) or ``card`` (a
    card's name or path)."""
    if ":" in model and not Path(model).exists():
        return "factory"
    if Path(model).is_dir() and (Path(model) / TRAIN_MARKER).is_file():
        return "training"
    return "directory" if Path(model).is_dir() else "card"


def resolve_source(
    model: str,
    *,
    io_file: Path | None = None,
    seed: int = 0,
    max_sequence: int | None = None,
    memory_check: bool = True,
    parity: bool = True,
) -> Source:
    """The torch source ``model`` names (see ``source_kind``). ``io_file`` declares a factory's
    inputs; ``max_sequence``, ``memory_check`` and ``parity`` size the memory check of a card or a
    directory (a factory's module is the user's own)."""
    kind = source_kind(model)
    if kind == "factory":
        return source_from_factory(model, load_io(io_file) if io_file else None, seed=seed)
    if kind == "directory":
        return source_from_directory(model, max_sequence=max_sequence, memory_check=memory_check, parity=parity)
    card = resolve_card(card_in(Path(model)) if kind == "training" else model)
    return source_from_card(card, seed=seed, max_sequence=max_sequence, memory_check=memory_check, parity=parity)
