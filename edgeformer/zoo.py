"""The model zoo: the cards shipped in models/ and lookup by name or path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgeformer.config import ModelCard, ModelConfig, load_card
from edgeformer.errors import CardError
from edgeformer.targets import Target, load_target


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


def parameter_count(cfg: ModelConfig) -> int:
    """Parameters of the model ``cfg`` describes, counted from the config (no torch import: listing
    the zoo stays fast). Equal to ``sum(p.numel() for p in build_model(cfg).parameters())``, a tied
    LM head counted once; tests/test_zoo.py checks it against torch for every shipped card."""
    d = cfg.d_model
    norm = 2 * d  # LayerNorm: weight and bias
    linear = d * d + d
    attention = 4 * linear
    block = attention + norm + (d * cfg.ffn_dim + cfg.ffn_dim) + (cfg.ffn_dim * d + d) + norm
    final = norm if cfg.norm == "pre" else 0
    rows = cfg.max_positions + cfg.position_offset
    positions = rows * d if cfg.positions == "learned" else 0  # the sinusoidal table is a buffer
    around_tokens = positions + cfg.type_vocab_size * d + (norm if cfg.embedding_norm else 0)
    total = cfg.vocab_size * d + around_tokens + cfg.n_layers * block + final
    if cfg.family == "encoder-decoder":
        total += cfg.decoder_layers * (block + attention + norm) + final  # cross-attention and its norm
        total += 0 if cfg.share_positions else around_tokens  # the decoder's own positions (tokens shared)
    lm = cfg.head == "lm" if cfg.family == "encoder" else cfg.head != "none"
    if lm:
        total += 0 if cfg.tie_embeddings else cfg.vocab_size * d
        total += cfg.vocab_size if cfg.lm_head_bias else 0
        total += linear + norm if cfg.lm_head_transform else 0
    if cfg.family == "encoder" and cfg.head == "classification":
        total += d * cfg.num_labels + cfg.num_labels
    if cfg.family == "encoder" and cfg.head in ("classification", "embedding") and cfg.pooling == "pooler":
        total += linear
    return total


def zoo_rows() -> list[dict[str, Any]]:
    """One row per shipped card (``edgeformer models``): its shape, parameters counted from the
    config (no torch), fp32 size, whether it has a trained checkpoint, and its metrics."""
    rows = []
    for card in list_cards():
        cfg = card.config
        params = parameter_count(cfg)
        rows.append(
            {
                "name": card.name,
                "family": cfg.family,
                "layers": cfg.n_layers,
                "decoder_layers": cfg.decoder_layers if cfg.family == "encoder-decoder" else None,
                "d_model": cfg.d_model,
                "heads": cfg.n_heads,
                "attention": cfg.attention,
                "parameters": params,
                "size_fp32_bytes": params * 4,
                "trained": card.checkpoint is not None,
                "metrics": card.metrics,
            }
        )
    return rows
