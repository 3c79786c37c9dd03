"""Encoder bundles: hidden states, and embeddings or logits when the bundle has them."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeformer.runtime.errors import (
    InputError,
)
from edgeformer.runtime.model_base import RuntimeModel


class EncoderModel(RuntimeModel):
    """An encoder bundle (graph ``model``): hidden states, and embeddings or logits when it has them.

    Text (byte-level bundles) is encoded as UTF-8 bytes without a begin-of-text token, as the
    demo encoder was trained; a batch of different lengths is padded on the right.
    """

    def encode(self, inputs: Any, attention_mask: Any = None) -> dict[str, np.ndarray]:
        """Outputs by name: ``last_hidden_state`` (B, T, C) and, when the graph has them,
        ``embeddings`` (B, C) or ``logits``. ``attention_mask`` (B, T) of 0/1 is optional.
        A static-shape bundle (mobile targets) gets its inputs padded to its fixed sequence and
        run in batches of its fixed size; the outputs come back at the inputs' own shape."""
        batch = self._batch(inputs, bos=False, max_len=self._static_dim("model", 1) or self.max_positions)
        ids, mask = self._ids_and_mask(batch, attention_mask, left=False)
        return self._run_fitted("model", ids, mask)

    def _static_dim(self, graph: str, axis: int) -> int | None:
        spec = self.graph(graph).input("input_ids")
        dim = spec.shape[axis] if spec is not None and len(spec.shape) > axis else None
        return dim if isinstance(dim, int) else None

    def _run_fitted(self, graph: str, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Run (B, T) ids through ``graph``, padded to its fixed sequence length and split into
        its fixed batch size when the graph has them; outputs trimmed back to (B, T, ...)."""
        rows, width = ids.shape
        fixed_b, fixed_t = self._static_dim(graph, 0), self._static_dim(graph, 1)
        if fixed_b is None and fixed_t is None:
            return self._run(graph, {"input_ids": ids, "attention_mask": mask})
        t = fixed_t or width
        step = fixed_b or rows
        pad_id = self._config_int("pad_token_id")
        parts = []
        for start in range(0, rows, step):
            chunk_ids = np.full((step, t), pad_id, dtype=np.int64)
            chunk_mask = np.zeros((step, t), dtype=np.int64)
            n = min(step, rows - start)
            chunk_ids[:n, :width], chunk_mask[:n, :width] = ids[start : start + n], mask[start : start + n]
            chunk_mask[n:, 0] = 1  # filler rows of a fixed batch: one token, so no row is fully masked
            outs = self._run(graph, {"input_ids": chunk_ids, "attention_mask": chunk_mask})
            parts.append({k: v[:n] for k, v in outs.items()})
        joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        for name, value in joined.items():  # per-token outputs back to the inputs' length
            if value.ndim >= 3 and value.shape[1] == t and t != width:
                joined[name] = value[:, :width]
        return joined

    def logits(self, inputs: Any, attention_mask: Any = None) -> np.ndarray:
        """The ``logits`` output: (B, T, V) for a language-model head, (B, labels) for a classifier."""
        if "logits" not in self.graph("model").output_names():
            have = ", ".join(self.graph("model").output_names())
            head = self.config.get("head")
            raise InputError(f"this encoder bundle has no logits output (head {head!r}); it has {have}")
        return self.encode(inputs, attention_mask)["logits"]
