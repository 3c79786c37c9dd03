"""What ``edgeformer fuse`` is asked for: the fused form and the providers reconciled from
``--form``, ``--target`` and ``--providers``, the sizes of ``--dim``, and where the result goes (a
bundle or a single .onnx file). Contradictions and malformed values are ``errors.UsageError``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeformer.errors import UsageError
from edgeformer.fusions.standalone import fuse_bundle, fuse_file
from edgeformer.numbers import COUNT_LIMIT
from edgeformer.paths import default_output
from edgeformer.runtime.providers import PROVIDERS
from edgeformer.zoo import resolve_target

DEFAULT_FORM = "contrib"


def known_providers(providers: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """``providers`` when every name is one onnxruntime provider edgeformer knows (None: unchosen)."""
    unknown = [p for p in providers or () if p not in PROVIDERS]
    if providers and unknown:
        raise UsageError(
            f"--providers {','.join(providers)!r}: unknown {unknown[0]}; give names from {', '.join(PROVIDERS)}, "
            "e.g. cuda,cpu"
        )
    return providers


def fuse_form(
    form: str | None, target_name: str | None, providers: tuple[str, ...] | None
) -> tuple[str, tuple[str, ...] | None]:
    """The form to fuse into and the providers: ``--form``, else the target's form (which ``--form``
    may not contradict), else contrib; ``--providers``, else the target's, else None (the bundle's
    or cpu, decided where the source is read)."""
    providers = known_providers(providers)
    if target_name is None:
        return form or DEFAULT_FORM, providers
    target = resolve_target(target_name)
    if form is not None and form != target.fusions:
        raise UsageError(f"--form {form} contradicts target {target_name}, whose form is {target.fusions}")
    if target.fusions == "none":
        raise UsageError(f"target {target_name} asks for no fusion; choose --form or another target")
    return target.fusions, providers or target.providers


def dim_sizes(specs: tuple[str, ...] | list[str]) -> dict[str, int]:
    """``--dim NAME=SIZE`` options as ``{name: size}``, each size from 1 to ``COUNT_LIMIT``."""
    sizes = {}
    for spec in specs:
        name, _, size = spec.partition("=")
        if not name.strip() or not size.strip().isdigit() or not 1 <= int(size) <= COUNT_LIMIT:
            raise UsageError(
                f"{spec!r}: give NAME=SIZE with a positive integer up to {COUNT_LIMIT:,}, e.g. sequence=128", "--dim"
            )
        sizes[name.strip()] = int(size)
    return sizes


def fuse_path(
    source: Path,
    output: Path | None,
    form: str,
    *,
    providers: tuple[str, ...] | None = None,
    dims: dict[str, int] | None = None,
    force: bool = False,
    debug: bool = False,
    log: Callable[[str], Any] = print,
) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Fuse a bundle (into ``<bundle>-fused``) or an .onnx file (into ``<name>.fused.onnx``), or
    into ``output``; returns where it wrote and the fusion report of each graph."""
    if source.is_dir():
        out = output or default_output(source, "fused")
        manifest = fuse_bundle(source, out, form, providers=providers, dims=dims, force=force, debug=debug, log=log)
        return out, manifest["fusions"]
    out = output or source.with_suffix(".fused.onnx")
    report = fuse_file(source, out, form, providers=providers or ("cpu",), dims=dims, force=force, debug=debug, log=log)
    if debug and report.debug:
        log(report.debug)
    return out, {source.name: report.to_dict()}
