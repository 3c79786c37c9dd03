"""The model zoo: the cards shipped in models/ and lookup by name or path."""

from __future__ import annotations

import os
from pathlib import Path

from edgeformer.config import ModelCard, Target, load_card, load_target
from edgeformer.errors import CardError


def _data_dir(packaged: str, checkout: str) -> Path:
    """A data folder: inside the package in a wheel, at the repository root in a checkout."""
    inside = Path(__file__).parent / packaged
    if inside.is_dir():
        return inside
    return Path(__file__).resolve().parent.parent / checkout


def cards_dir() -> Path:
    """Where the shipped cards live: models/ in a checkout, edgeformer/_cards in a wheel."""
    return _data_dir("_cards", "models")


def targets_dir() -> Path:
    """Where the shipped targets live: export/ in a checkout, edgeformer/_targets in a wheel."""
    return _data_dir("_targets", "export")


def _is_file(path: Path) -> bool:
    """Whether ``path`` names a file; False (not an error) for names no file can have."""
    try:
        return path.is_file()
    except (OSError, ValueError):  # too long, embedded NUL byte
        return False


def card_names() -> list[str]:
    return sorted(p.stem for p in cards_dir().glob("*.toml"))


def list_cards() -> list[ModelCard]:
    return [load_card(p) for p in sorted(cards_dir().glob("*.toml"))]


def resolve_card(name_or_path: str | Path) -> ModelCard:
    """A shipped card by name (``bert-mini``) or any card file by path."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or "/" in text or os.sep in text or _is_file(path):  # a path, not a card name
        return load_card(path)
    candidate = cards_dir() / f"{text}.toml"
    if _is_file(candidate):
        return load_card(candidate)
    raise CardError(
        f"unknown model card {text!r}; known cards: {', '.join(card_names())} (or give a path to a .toml file)"
    )


def target_names() -> list[str]:
    return sorted(p.stem for p in targets_dir().glob("*.toml"))


def resolve_target(name_or_path: str | Path) -> Target:
    """A shipped target by name (``cpu-fp32``) or any target file by path."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or os.sep in text or _is_file(Path(text)):  # a path, not a name
        return load_target(text)
    candidate = targets_dir() / f"{text}.toml"
    if _is_file(candidate):
        return load_target(candidate)
    raise CardError(
        f"unknown target {text!r}; known targets: {', '.join(target_names())} (or give a path to a .toml file)"
    )
