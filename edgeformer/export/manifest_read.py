"""Reading a bundle's manifest for the tools (check, fuse, quantize): the runtime's reader, then the
fields the tools read beyond the runtime's, type-checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeformer.config import PRECISIONS
from edgeformer.errors import BundleError
from edgeformer.runtime.bundle import Bundle, read_bundle
from edgeformer.runtime.errors import RuntimeBundleError


def read_manifest(bundle: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """The manifest of a bundle, read and checked by the runtime's reader (the one apps use):
    file names must stay inside the bundle, files must exist and, with ``verify``, match their sha256."""
    return read_checked(bundle, verify=verify).manifest


def read_checked(
    bundle: str | Path, *, verify: bool = True, expect_manifest_sha256: str | None = None, keep_bytes: bool = False
) -> Bundle:
    """``read_manifest``, returning the runtime's ``Bundle`` (with ``manifest_sha256`` and
    whether manifest.sha256 was there); ``expect_manifest_sha256`` pins the manifest;
    ``keep_bytes`` keeps the verified graph bytes (``runtime.bundle.read_bundle``)."""
    try:
        read = read_bundle(bundle, verify=verify, expect_manifest_sha256=expect_manifest_sha256, keep_bytes=keep_bytes)
    except RuntimeBundleError as exc:
        raise BundleError(str(exc)) from None
    check_producer_fields(read.manifest, f"{bundle}/manifest.json")
    return read


# what the tools (check, fuse, quantize) read beyond the runtime's fields, and their types
PRODUCER_FIELDS: dict[str, type] = {
    "precision": str, "opset": int, "target": dict, "source": dict, "fusions": dict, "parity": dict,
}  # fmt: skip
RECIPE_FIELDS: dict[str, type] = {
    "kind": str, "card": str, "seed": int, "checkpoint": str, "checkpoint_sha256": str, "factory": str, "io": dict,
}  # fmt: skip


_KINDS = {str: "a string", int: "an integer", dict: "an object"}


def _wrong_type(value: object, kind: type) -> bool:
    return value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool))


def check_producer_fields(manifest: dict[str, Any], where: str) -> None:
    """Refuse (BundleError) a manifest whose fields for the tools have the wrong type, or whose
    precision is unknown (a check against an unknown precision would judge nothing)."""
    for key, kind in PRODUCER_FIELDS.items():
        if _wrong_type(manifest.get(key), kind):
            raise BundleError(f"{where}: {key!r} must be {_KINDS[kind]}, got {manifest[key]!r:.60}")
    if manifest.get("precision", "fp32") not in PRECISIONS:
        raise BundleError(f"{where}: precision {manifest['precision']!r} is not one of {', '.join(PRECISIONS)}")
    recipe = manifest.get("source") or {}
    for key, kind in RECIPE_FIELDS.items():
        if _wrong_type(recipe.get(key), kind):
            raise BundleError(f"{where}: source.{key} must be {_KINDS[kind]}, got {recipe[key]!r:.60}")
