"""Scaled dot-product attention and multi-head attention with a KV cache."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeformer.nn.banded import Pattern, banded_attention

KV = tuple[Tensor, Tensor]


def scaled_dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, dropout: float = 0.0, training: bool = False
) -> Tensor:
    """softmax(Q K^T / sqrt(d_k)) V, exactly. q: (B, H, Tq, D), k and v: (B, H, Tk, D).

    ``mask`` is boolean, True where attention is allowed, broadcastable to (B, H, Tq, Tk). Masked
    scores take the dtype's lowest value rather than -inf, so a fully masked row gives a finite
    (uniform) result instead of NaN.
    """
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)
    weights = F.dropout(weights, p=dropout, training=training)
    return weights @ v  # (B, H, Tq, D)


class MultiHeadAttention(nn.Module):
    """Multi-head attention. Keys and values are projected separately from queries, so the same
    module serves self-attention (with a growing cache) and cross-attention (memory projected once).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"{n_heads} heads do not divide d_model = {d_model}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def project_kv(self, x: Tensor) -> KV:
        """Keys and values of x: (B, T, C) -> two (B, H, T, D)."""
        return self._split(self.k_proj(x)), self._split(self.v_proj(x))

    def forward(self, x: Tensor, kv: KV, mask: Tensor | None = None) -> Tensor:
        """Queries from x (B, Tq, C) attend over kv; returns (B, Tq, C)."""
        q = self._split(self.q_proj(x))  # (B, H, Tq, D)
        return self._merge(scaled_dot_product_attention(q, kv[0], kv[1], mask, self.dropout, self.training))

    def banded(self, x: Tensor, kv: KV, pattern: Pattern, padding: Tensor | None, *, causal: bool) -> Tensor:
        """Self-attention of x (B, S, C) over its own kv in ``pattern`` without the (S x S) matrix."""
        q = self._split(self.q_proj(x))  # (B, H, S, D)
        y = banded_attention(
            q, kv[0], kv[1], pattern, padding, causal=causal, dropout=self.dropout, training=self.training
        )
        return self._merge(y)

    def _merge(self, y: Tensor) -> Tensor:
        b, _, t, _ = y.shape  # (B, H, T, D) -> (B, T, C)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))
