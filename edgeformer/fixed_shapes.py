"""Checking a fixed-shape bundle (NNAPI, CoreML, QNN targets): its graphs take one shape only.

The check runs the torch source at that shape (as the export did), and real inputs of another
shape are padded on the right to it (attention_mask 0 on the padding, filler rows of one token),
or refused naming the fixed size when they do not fit: never an onnxruntime shape error.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeformer.errors import BundleError, ParityError


def bundle_target(manifest: dict[str, Any]) -> Any:
    """The bundle's target (range-checked, as any target file) when it fixed shapes, else None."""
    from edgeformer.config import parse_target
    from edgeformer.errors import CardError

    target = manifest.get("target")
    if not isinstance(target, dict) or not target.get("static_shapes"):
        return None
    try:
        return parse_target(target, source="manifest.json target")
    except CardError as exc:
        raise BundleError(f"{exc}; re-export the bundle") from None


def source_at_bundle_shapes(source: Any, manifest: dict[str, Any]) -> Any:
    """``source`` with its graphs' dimensions fixed as the bundle's are (unchanged when dynamic)."""
    from edgeformer.export import mobile

    target = bundle_target(manifest)
    return source if target is None else mobile.fixed_source(source, target)


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
