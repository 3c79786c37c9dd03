"""Reading a bundle's manifest for the tools (check, fuse, quantize): the runtime's reader, then the
fields the tools read beyond the runtime's, type-checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeformer.budget import budget_table_problem
from edgeformer.errors import BundleError
from edgeformer.runtime.bundle import Bundle, read_bundle
from edgeformer.runtime.errors import RuntimeBundleError
from edgeformer.runtime.manifest import parse_manifest


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


def check_producer_fields(manifest: dict[str, Any], where: str) -> None:
    """Refuse (BundleError) a manifest the typed reader (``runtime.manifest``) refuses: a field
    of the wrong type, an unknown precision (a check against it would judge nothing)."""
    try:
        parse_manifest(manifest, where)
    except RuntimeBundleError as exc:
        raise BundleError(str(exc)) from None
    target = manifest.get("target")
    budget = target.get("budget") if isinstance(target, dict) else None
    problem = budget_table_problem(budget) if budget is not None else None
    if problem:  # what check judges the graphs by: refused here, not deep inside the judge
        raise BundleError(f"{where}: target.{problem}")
