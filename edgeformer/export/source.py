"""The torch source of a bundle: the module, its graph plans, and the recipe that rebuilds it.

A source comes from a model card (``source_from_card``), a user's factory (``source_from_factory``)
or a Hugging Face directory (``edgeformer.importers.source_from_directory``); ``export.rebuild``
makes one again from a manifest's recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeformer.config import ModelCard, ModelConfig, render_card
from edgeformer.errors import CardError, ExportError
from edgeformer.export.graphs import GraphPlan, plan_graphs
from edgeformer.export.user import load_factory, user_plan
from edgeformer.io import sha256_file
from edgeformer.limits import check_export_memory
from edgeformer.nn.checkpoint import load_model
from edgeformer.travel import travelling_file


@dataclass
class Source:
    """The torch source of a bundle, and the recipe that rebuilds it from the manifest alone."""

    name: str
    model: nn.Module
    config: ModelConfig | None  # None for a user's own module
    plans: list[GraphPlan]
    recipe: dict[str, Any]
    tokenizer: str = ""
    example_dims: dict[str, int] | None = None  # sizes to trace with (all >= 2); None: the defaults
    files: dict[str, Path] = field(default_factory=dict)  # copied into the bundle: name there -> file here


def tokenizer_files(card: ModelCard) -> tuple[str, dict[str, Path]]:
    """The manifest's tokenizer and the files it needs: a card's ``tokenizer = "x.json"`` (a
    Hugging Face tokenizer beside the card) travels as the bundle's tokenizer.json. Only a regular
    file in the card's own directory travels (``edgeformer.travel``): an absolute name, ``..`` or a
    symbolic link is a CardError. A card not read from a file (rebuilt from a manifest for a parity
    check) has no directory, so no file travels; exporting such a card is refused in ``export_bundle``."""
    if not card.tokenizer.endswith(".json"):
        return card.tokenizer, {}
    if card.path is None:
        return "tokenizer.json", {}
    base = card.path.parent
    what = f"the tokenizer of card {card.name!r}"
    return "tokenizer.json", {"tokenizer.json": travelling_file(base, card.tokenizer, what=what, error=CardError)}


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**64:
        raise ExportError(f"seed must be an integer in [-2**63, 2**64), got {seed!r:.40}")


def source_from_card(
    card: ModelCard,
    *,
    seed: int = 0,
    max_sequence: int | None = None,
    memory_check: bool = True,
    parity: bool = True,
) -> Source:
    """The card's torch model; parity is checked up to the card's maximum sequence length, or up to
    ``max_sequence`` when given (long-context cards need tens of GB at their maximum).

    With ``memory_check``, a card whose export (with its parity check, unless ``parity`` is False)
    would need more memory than the machine has is refused before the model is built
    (``edgeformer.limits``; ResourceError with the estimate)."""
    _check_seed(seed)
    if memory_check:
        check_export_memory(card.config, name=card.name, max_sequence=max_sequence, parity=parity)
    model = load_model(card, seed=seed)
    recipe: dict[str, Any] = {"kind": "card", "card": render_card(card), "seed": seed}
    if card.checkpoint is not None:
        recipe["checkpoint"] = str(card.checkpoint.resolve())
        recipe["checkpoint_sha256"] = card.checkpoint_sha256 or sha256_file(card.checkpoint)
    plans = plan_graphs(model, card.config, max_sequence)
    tokenizer, files = tokenizer_files(card)
    return Source(card.name, model, card.config, plans, recipe, tokenizer, files=files)


def source_from_factory(spec: str, io: dict[str, Any] | None = None, *, seed: int = 0) -> Source:
    """A user's module from ``package.module:factory``; inputs declared by ``io`` or the factory's
    ``edgeformer_io`` attribute. Random weights the factory makes come from ``seed``."""
    factory = load_factory(spec)
    io = io if io is not None else getattr(factory, "edgeformer_io", None)
    if io is None:
        raise ExportError(
            f"{spec}: declare its inputs with --io FILE.toml or a `edgeformer_io` attribute on the factory"
        )
    _check_seed(seed)
    torch.manual_seed(seed)
    try:
        model = factory()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - user code; sys.exit must not end a check as a success
        first = (str(exc).splitlines() or [""])[0]
        raise ExportError(f"factory {spec} failed: {type(exc).__name__}: {first}") from None
    if not isinstance(model, nn.Module):
        raise ExportError(f"factory {spec} returned {type(model).__name__}, not a torch.nn.Module")
    model.eval()
    plan, sizes = user_plan(model, io)
    recipe = {"kind": "factory", "factory": spec, "io": io, "seed": seed}
    return Source(spec.rpartition(":")[2], model, None, [plan], recipe, example_dims=sizes)
