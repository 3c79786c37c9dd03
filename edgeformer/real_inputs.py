"""Real inputs for a parity check: read from an .npz or text, completed with the masks, positions
and empty cache a graph takes, and fitted to a fixed-shape graph's one shape."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeformer import tokenizer
from edgeformer.errors import ParityError
from edgeformer.export.graphs import GraphPlan
from edgeformer.export.manifest_read import read_manifest
from edgeformer.fixed_shapes import fit_to_fixed


def complete_inputs(plan: GraphPlan, given: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Real inputs for a graph: what the user gave, with masks, positions and an empty cache derived."""
    if "input_ids" not in given:
        raise ParityError(f"real inputs need 'input_ids'; got {', '.join(given) or 'nothing'}")
    ids = np.asarray(given["input_ids"])
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise ParityError(f"input_ids must be a non-empty (batch, sequence) integer array, got {ids.dtype} {ids.shape}")
    out: dict[str, np.ndarray] = {"input_ids": ids.astype(np.int64)}
    for spec in plan.inputs:
        if spec.name in out:
            continue
        if spec.name in given:
            out[spec.name] = np.asarray(given[spec.name]).astype(spec.dtype)
        elif spec.name in ("attention_mask", "encoder_attention_mask"):
            out[spec.name] = np.ones(ids.shape, dtype=np.int64)
        elif spec.name == "position_ids":
            pos = np.clip(np.cumsum(out["attention_mask"], axis=1) - 1, 0, None)
            out[spec.name] = pos[:, -ids.shape[1] :].astype(np.int64)
        elif spec.name.startswith("past_key_values.") and ".encoder." not in spec.name:
            heads, head_dim = int(spec.shape[1]), int(spec.shape[3])  # (batch, heads, past, head_dim)
            out[spec.name] = np.zeros((ids.shape[0], heads, 0, head_dim), dtype=np.float32)
        else:
            raise ParityError(f"real inputs lack {spec.name!r}, which cannot be derived")
        if spec.high and (out[spec.name].min() < 0 or out[spec.name].max() >= spec.high):
            raise ParityError(f"{spec.name} has values outside [0, {spec.high})")
    if ids.max() >= (plan.inputs[0].high or np.iinfo(np.int64).max) or ids.min() < 0:
        raise ParityError(f"input_ids has values outside [0, {plan.inputs[0].high})")
    return fit_to_fixed(plan, out)  # padded to a fixed-shape graph's one shape, or refused naming it


def read_real_inputs(bundle: Any, *, npz: Any = None, text: str | None = None) -> dict[str, np.ndarray]:
    """Real inputs from an .npz file, or from text for a bundle with the byte-level tokenizer."""
    if npz is not None:
        try:
            with np.load(Path(npz), allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ParityError(f"{npz} is not a readable .npz of arrays ({exc})") from None
    manifest = read_manifest(bundle, verify=False)
    if manifest.get("tokenizer") != "bytes":
        raise ParityError("--text needs a byte-level model (tokenizer 'bytes'); give --inputs FILE.npz instead")
    if not text:
        raise ParityError("--text is empty; give at least one character")
    config = manifest.get("config") or {}
    limit = int(config.get("max_positions", 0)) or None
    bos = config.get("family") != "encoder"  # encoders read bytes without a begin-of-text token, as the runtime does
    return {"input_ids": np.array([tokenizer.encode(text, bos=bos)[:limit]], dtype=np.int64)}
