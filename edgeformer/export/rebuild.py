"""The torch source a manifest records, made again for a parity check (``edgeformer check``).

A manifest is data: no code it names is imported (see ``rebuild_source``).
"""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeformer.config import ModelCard, parse_card
from edgeformer.errors import BundleError, EdgeformerError, UserCodeNotRun
from edgeformer.export.manifest_read import check_producer_fields
from edgeformer.export.source import Source, source_from_card, source_from_factory
from edgeformer.importers import rebuild_source as rebuild_imported
from edgeformer.io import sha256_file
from edgeformer.zoo import resolve_card

Log = Callable[[str], None]


def _user_factory(recipe: dict[str, Any], factory: str | None, log: Log) -> Source:
    """The source from the factory the user named; a bundle's own recipe never chooses code to import."""
    recorded = recipe.get("factory") if recipe.get("kind") == "factory" else None
    if recipe.get("kind") == "factory" and not recorded:
        raise BundleError("the manifest's source names no factory to rebuild the torch module from")
    if factory is None:
        raise UserCodeNotRun(str(recorded))
    if factory != recorded:
        log(f"note: using the factory you named, {factory}; the bundle records {recorded or recipe.get('kind')!r}")
    io = recipe.get("io") if recorded is not None else None
    return source_from_factory(factory, io, seed=recipe.get("seed", 0))


def rebuild_source(
    manifest: dict[str, Any],
    max_sequence: int | None = None,
    *,
    memory_check: bool = True,
    factory: str | None = None,
    log: Log = lambda _msg: None,
) -> Source:
    """The torch source a manifest records: its card (with checkpoint, verified by sha256) or seed,
    or the Hugging Face directory it was imported from (weights verified by sha256).
    ``memory_check`` as in ``source_from_card``.

    A manifest is data: no code it names is imported. A source of kind "factory" (a user's
    ``module:function``) is rebuilt only from ``factory``, the one the user names (``--factory``);
    without it, UserCodeNotRun. A ``factory`` given for a bundle that records another source
    replaces that source, with a note to ``log``."""
    check_producer_fields(manifest, "manifest.json")
    recipe = manifest.get("source") or {}
    if recipe.get("kind") == "factory" or factory is not None:
        return _user_factory(recipe, factory, log)
    if recipe.get("kind") == "huggingface":
        return rebuild_imported(recipe, max_sequence)
    if recipe.get("kind") != "card":
        raise BundleError(f"this bundle's source kind {recipe.get('kind')!r} cannot be rebuilt")
    try:
        card = parse_card(tomllib.loads(recipe.get("card", "")), source="manifest card")
    except tomllib.TOMLDecodeError as exc:
        raise BundleError(f"the manifest's card is not valid TOML ({exc})") from None
    if "checkpoint" in recipe:
        if "checkpoint_sha256" not in recipe:
            raise BundleError("the manifest's source names a checkpoint without its sha256")
        path = Path(recipe["checkpoint"])
        if not path.is_file():
            with contextlib.suppress(EdgeformerError):  # the same card in this installation's zoo
                path = resolve_card(card.name).checkpoint or path
        if not path.is_file() or sha256_file(path) != recipe["checkpoint_sha256"]:
            raise BundleError(
                f"the torch source's checkpoint {recipe['checkpoint']} (sha256 {recipe['checkpoint_sha256'][:12]}...) "
                "is not on this machine; parity needs the weights the bundle was exported from"
            )
        card = ModelCard(card.name, card.config, card.description, path, recipe["checkpoint_sha256"], card.tokenizer)
    else:
        card = ModelCard(card.name, card.config, card.description, None, "", card.tokenizer)
    return source_from_card(card, seed=recipe.get("seed", 0), max_sequence=max_sequence, memory_check=memory_check)
