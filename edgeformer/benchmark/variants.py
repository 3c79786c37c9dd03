"""The variants ``edgeformer bench`` measures side by side: bundles, a card's exports, torch eager.

Variants are bundles given as they are, the variants of a model card exported into a cache
directory (``unfused`` is the cpu-fp32 target without fusions; any target name, e.g. ``cpu-fp32``
or ``cpu-int8``, exports that target), and torch eager (the source, rebuilt from the card or from
the first bundle's manifest). ``orchestrator`` measures them, each in processes of its own.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgeformer import __version__
from edgeformer.benchmark.options import Settings
from edgeformer.benchmark.settings import resolve
from edgeformer.config import render_card
from edgeformer.errors import EdgeformerError
from edgeformer.runtime.bundle import read_bundle
from edgeformer.runtime.errors import RuntimeBundleError
from edgeformer.zoo import resolve_card, resolve_target, target_names

UNFUSED = "unfused"
DEFAULT_TARGETS = (UNFUSED, "cpu-fp32")
OPTIONAL_TARGETS = ("cpu-int8",)  # measured by default once this installation ships the target

Log = Callable[[str], None]


class BenchError(EdgeformerError):
    """A benchmark cannot run as asked: unknown model or variant, or a variant's process failed."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One column of the comparison: an ONNX bundle, or torch eager rebuilt from a bundle or a card."""

    name: str
    kind: str  # "onnx" or "torch"
    bundle: Path | None = None
    card: str | None = None
    weights_seed: int = 0


def default_variants() -> list[str]:
    have = set(target_names())
    return [*DEFAULT_TARGETS, *(t for t in OPTIONAL_TARGETS if t in have)]


def variant_target(name: str) -> Any:
    """The export target of a card variant: a target name, or ``unfused`` (the unfused-fp32 target:
    cpu-fp32 without fusions)."""
    if name == UNFUSED:
        if "unfused-fp32" in target_names():
            return resolve_target("unfused-fp32")
        fp32 = resolve_target("cpu-fp32")
        return dataclasses.replace(
            fp32, name="unfused-fp32", fusions="none", description="cpu-fp32 without fusions (benchmarks)"
        )
    return resolve_target(name)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeformer" / "bench"


@functools.cache
def code_digest() -> str:
    """A digest of edgeformer's own source: a cached bundle from other code is exported anew."""
    root = Path(__file__).resolve().parent.parent  # the edgeformer package
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def cached_export(card: Any, variant: Any, cache_dir: Path, *, seed: int, check: bool, log: Log) -> Path:
    """The bundle of ``card`` for ``variant`` (a variant name, or a Target), exported once into
    ``cache_dir``: its directory name carries a digest of the card, target, seed, checkpoint and
    edgeformer's version and source, so any change exports anew. A cached bundle is reused after
    its sha256 check."""
    from edgeformer.export.source import source_from_card  # torch: only when exporting
    from edgeformer.pipeline import export_bundle

    target = variant_target(variant) if isinstance(variant, str) else variant
    variant = variant if isinstance(variant, str) else target.name
    recipe = {
        "card": render_card(card),
        "target": target.to_dict(),
        "seed": seed,
        "checkpoint": card.checkpoint_sha256 if card.checkpoint else None,
        "edgeformer": __version__,
        "code": code_digest(),
        "check": check,
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    out = cache_dir / f"{card.name}-{variant}-{digest}"
    if out.is_dir():
        try:
            read_bundle(out, verify=True)
            log(f"{variant}: cached bundle {out}")
            return out
        except RuntimeBundleError as exc:
            log(f"{variant}: cached bundle unusable ({exc}); exporting again")
    log(f"{variant}: exporting {card.name} for target {target.name} into {out}")
    export_bundle(source_from_card(card, seed=seed), target, out, force=True, check=check, log=lambda m: log("  " + m))
    return out


def _is_bundle_arg(text: str) -> bool:
    path = Path(text)
    return path.is_dir() or (not text.endswith(".toml") and ("/" in text or os.sep in text))


def _user_source(bundle: Path) -> bool:
    """Whether a bundle's torch source is a user's factory (never imported because a bundle names it)."""

    source = read_bundle(bundle, verify=False).manifest.get("source")
    return isinstance(source, dict) and source.get("kind") == "factory"


def plan_variants(
    models: Sequence[str],
    *,
    variants: Sequence[str] | None = None,
    with_torch: bool = True,
    cache_dir: Path | None = None,
    check: bool = True,
    seed: int = 0,
    log: Log = lambda _m: None,
) -> list[Variant]:
    """The variants of the command line: bundles as given; for a card (at most one), its variants
    exported into the cache; torch eager first when ``with_torch``."""
    bundles, cards = _bundles_and_cards(models)
    if len(cards) > 1:
        raise BenchError(f"benchmark one model card at a time (got {', '.join(c.name for c in cards)})")
    if variants is not None and not cards:
        raise BenchError("--variants chooses what to export for a model CARD; bundles are measured as given")
    out: list[Variant] = []
    if with_torch:
        if cards:
            out.append(Variant("torch", "torch", card=str(cards[0].path or cards[0].name), weights_seed=seed))
        elif _user_source(bundles[0]):
            log(f"torch eager left out: {bundles[0]}'s torch source is user code, which a bundle cannot make bench run")
        else:
            out.append(Variant("torch", "torch", bundle=bundles[0]))
    if cards:
        for name in _card_variant_names(variants):
            path = cached_export(cards[0], name, cache_dir or cache_root(), seed=seed, check=check, log=log)
            out.append(Variant(name, "onnx", bundle=path))
    taken = {v.name for v in out}
    for path in bundles:
        name = path.resolve().name
        i = 2
        while name in taken:
            name, i = f"{path.resolve().name}#{i}", i + 1
        taken.add(name)
        out.append(Variant(name, "onnx", bundle=path))
    return out


def _bundles_and_cards(models: Sequence[str]) -> tuple[list[Path], list[Any]]:
    if not models:
        raise BenchError("give a bundle directory or a model card to benchmark")
    bundles: list[Path] = []
    cards = []
    for text in models:
        if _is_bundle_arg(text):
            try:
                read_bundle(text, verify=False)
            except RuntimeBundleError as exc:
                raise BenchError(str(exc)) from None
            bundles.append(Path(text))
        else:
            try:
                cards.append(resolve_card(text))
            except EdgeformerError as exc:
                raise BenchError(f"{text!r} is neither a bundle directory nor a model card: {exc}") from None
    return bundles, cards


def _card_variant_names(variants: Sequence[str] | None) -> list[str]:
    """The card variants asked for (default: ``default_variants``), each a target or ``unfused``."""
    names = list(dict.fromkeys(variants if variants is not None else default_variants()))
    if not names:
        raise BenchError("--variants is empty")
    for name in names:
        if name == "torch":
            raise BenchError("torch eager is included unless --no-torch; leave it out of --variants")
        try:
            variant_target(name)
        except EdgeformerError as exc:
            raise BenchError(f"variant {name!r}: {exc} ({UNFUSED!r} is cpu-fp32 without fusions)") from None
    return names


def _family_and_config(variant: Variant) -> tuple[str, dict[str, Any]]:
    if variant.bundle is not None:
        b = read_bundle(variant.bundle, verify=False)
        return b.family, b.config

    cfg = resolve_card(variant.card or "").config
    return cfg.family, cfg.to_dict()


def resolve_for_all(variants: Sequence[Variant], settings: Settings) -> Settings:
    """Concrete sweeps that every variant takes: resolved for the first, checked against the others."""
    family, config = _family_and_config(variants[0])
    concrete = resolve(settings, family, config)
    for v in variants[1:]:
        other_family, other_config = _family_and_config(v)
        if other_family != family:
            raise BenchError(f"variants must be of one family: {variants[0].name} is {family}, {v.name} {other_family}")
        resolve(concrete, other_family, other_config)
    return concrete
