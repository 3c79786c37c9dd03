"""Checking a fixed-shape bundle (NNAPI, CoreML, QNN targets): its graphs take one shape only.

The check runs the torch source at that shape (as the export did), and real inputs of another
shape are padded on the right to it (attention_mask 0 on the padding, filler rows of one token),
or refused naming the fixed size when they do not fit: never an onnxruntime shape error.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeformer.errors import BundleError, CardError, ExportError, ParityError
from edgeformer.targets import Target, parse_target

if TYPE_CHECKING:  # the type only: checking shapes needs no torch
    from edgeformer.export.source import Source


def bundle_target(manifest: dict[str, Any]) -> Target | None:
    """The bundle's target (range-checked, as any target file) when it fixed shapes, else None."""
    target = manifest.get("target")
    if not isinstance(target, dict) or not target.get("static_shapes"):
        return None
    try:
        return parse_target(target, source="manifest.json target")
    except CardError as exc:
        raise BundleError(f"{exc}; re-export the bundle") from None


def source_at_bundle_shapes(source: Source, manifest: dict[str, Any]) -> Source:
    """``source`` with its graphs' dimensions fixed as the bundle's are (unchanged when dynamic)."""
    target = bundle_target(manifest)
    return source if target is None else fixed_source(source, target)


def fixed_source(source: Source, target: Target) -> Source:
    """The source with every graph's dimensions fixed to the target's sizes: the manifest's specs
    hold the sizes and parity is checked at that one shape. A family whose graphs keep a dimension
    the target does not fix (a decoder's growing KV cache) is refused, saying why and what to do."""
    if not target.static_shapes:
        return source
    fixed = dict(target.static_shapes)
    family = source.config.family if source.config is not None else "custom"
    if family in ("decoder", "encoder-decoder"):
        raise ExportError(
            f"target {target.name!r} fixes the input shapes ({dims_text(fixed)}) because its provider "
            f"({', '.join(target.providers)}) compiles a graph for one shape; a {family} grows its KV cache by one "
            "position per generated token (past_sequence), so it would need one graph per cache length, and a "
            "fixed-length decode-step graph is not built by edgeformer. Export it with --target mobile-cpu "
            "(dynamic shapes, onnxruntime's CPU / XNNPACK provider, .ort included), or use an encoder card here."
        )
    limit = source.config.max_positions if source.config is not None else None
    for name in ("sequence", "encoder_sequence"):
        if limit is not None and fixed.get(name, 0) > limit:
            raise ExportError(
                f"target {target.name!r} fixes {name} = {fixed[name]}, beyond the model's max_positions = {limit}; "
                "copy the target file and lower static_shapes"
            )
    plans = []
    for plan in source.plans:
        dims = {d for s in (*plan.inputs, *plan.outputs) for d in s.shape if isinstance(d, str)}
        left = sorted(dims - set(fixed))
        if left:
            raise ExportError(
                f"target {target.name!r} fixes {dims_text(fixed)}, but graph {plan.file} also has the dimension(s) "
                f"{', '.join(left)}; add them to the target's [static_shapes]"
            )
        plans.append(
            dataclasses.replace(
                plan,
                inputs=[_fix_spec(s, fixed) for s in plan.inputs],
                outputs=[_fix_spec(s, fixed) for s in plan.outputs],
                cases=[{d: fixed[d] for d in sorted(dims)}],
            )
        )
    return dataclasses.replace(source, plans=plans)


def dims_text(fixed: dict[str, int]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in fixed.items())


def _fix_spec(spec: Any, fixed: dict[str, int]) -> Any:
    return dataclasses.replace(spec, shape=tuple(fixed.get(d, d) if isinstance(d, str) else d for d in spec.shape))


def _fixed(plan: Any) -> tuple[int, int] | None:
    """(batch, sequence) of a plan whose first input has both sizes fixed, else None."""
    shape = plan.inputs[0].shape
    if len(shape) == 2 and all(isinstance(d, int) for d in shape):
        return int(shape[0]), int(shape[1])
    return None


def fit_to_fixed(plan: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Real (b, t) inputs padded to a fixed-shape plan's (B, T); a refusal naming (B, T) when
    b > B or t > T. Padding is on the right with attention_mask 0; filler rows hold one token."""
    fixed = _fixed(plan)
    if fixed is None:
        return inputs
    rows, width = inputs["input_ids"].shape
    batch, length = fixed
    if rows > batch or width > length:
        raise ParityError(
            f"this bundle's graphs take one fixed shape (batch {batch}, sequence {length}); the real inputs are "
            f"{rows} row(s) of {width} tokens. Give at most {batch} row(s) of at most {length} tokens "
            "(shorter ones are padded)"
        )
    out = {}
    for spec in plan.inputs:
        value = inputs[spec.name]
        if value.shape == (rows, width) and spec.shape == (batch, length):
            padded = np.zeros((batch, length), dtype=value.dtype)
            padded[:rows, :width] = value
            if "mask" in spec.name:
                padded[rows:, 0] = 1  # filler rows: one token, so no row is fully masked
            value = padded
        out[spec.name] = value
    return out
