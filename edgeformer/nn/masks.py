"""Attention masks as boolean tensors: True where a query may attend to a key.

Patterns are functions of absolute positions, so the same code serves a full forward pass and
incremental decoding with a KV cache (queries are the last ``Tq`` of ``Tk`` key positions).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class PatternLike(Protocol):
    """What a mask reads of a pattern: a ModelConfig, or one layer's ``banded.Pattern``."""

    @property
    def attention(self) -> str: ...
    @property
    def window(self) -> int: ...
    @property
    def sparse_stride(self) -> int: ...
    @property
    def global_tokens(self) -> int: ...


def _band(q_pos: Tensor, k_pos: Tensor, cfg: PatternLike) -> Tensor:
    """(Tq, Tk) bool: the local window or the sparse strides, without global tokens."""
    dist = q_pos[:, None] - k_pos[None, :]  # (Tq, Tk), > 0 when the key is in the past
    if cfg.attention == "local":
        return dist.abs() < cfg.window
    if cfg.attention == "sparse":
        return (dist.abs() < cfg.sparse_stride) | (torch.remainder(dist, cfg.sparse_stride) == 0)
    return torch.ones_like(dist, dtype=torch.bool)


def pattern_mask(q_pos: Tensor, k_pos: Tensor, cfg: PatternLike, *, causal: bool) -> Tensor:
    """(Tq, Tk) bool mask of the configured pattern for query and key positions.

    global: every key. local: keys at distance < window (only earlier ones when causal).
    sparse (strided, after the Sparse Transformer): a local band of ``sparse_stride`` keys plus
    every ``sparse_stride``-th key. ``global_tokens``: the first N positions see and are seen by all.
    """
    allowed = _band(q_pos, k_pos, cfg)
    if cfg.global_tokens and cfg.attention != "global":
        allowed = allowed | (q_pos[:, None] < cfg.global_tokens) | (k_pos[None, :] < cfg.global_tokens)
    if causal:
        allowed = allowed & (q_pos[:, None] >= k_pos[None, :])
    return allowed


def _padded_pattern(q_pos: Tensor, k_pos: Tensor, cfg: PatternLike, padding: Tensor, *, causal: bool) -> Tensor:
    """(B, Tq, Tk) pattern whose global tokens are each row's first N real tokens, wherever padding
    puts them (left-padded prompts). Bands are distances, the same for the contiguous real tokens."""
    real = padding.bool()  # (B, Tk)
    is_global = real & (padding.long().cumsum(-1) <= cfg.global_tokens)  # (B, Tk): rank among real tokens < N
    q_global = is_global[:, k_pos.numel() - q_pos.numel() :]  # (B, Tq): queries are the last Tq keys
    allowed = _band(q_pos, k_pos, cfg)[None] | q_global[:, :, None] | is_global[:, None, :]  # (B, Tq, Tk)
    if causal:
        allowed = allowed & (q_pos[:, None] >= k_pos[None, :])[None]
    return allowed


def self_attention_mask(
    cfg: PatternLike, q_len: int, k_len: int, padding: Tensor | None, *, causal: bool, device: torch.device
) -> Tensor:
    """(B|1, 1, Tq, Tk) mask for self-attention; queries are the last q_len of k_len positions.

    ``padding`` is the (B, Tk) attention mask of 1 for real tokens and 0 for padding.
    """
    k_pos = torch.arange(k_len, device=device)
    q_pos = k_pos[k_len - q_len :]
    if padding is None:
        return pattern_mask(q_pos, k_pos, cfg, causal=causal)[None, None]  # (1, 1, Tq, Tk)
    if cfg.global_tokens and cfg.attention != "global":
        mask = _padded_pattern(q_pos, k_pos, cfg, padding, causal=causal)[:, None]  # (B, 1, Tq, Tk)
    else:
        mask = pattern_mask(q_pos, k_pos, cfg, causal=causal)[None, None]
    return mask & padding.bool()[:, None, None, :]  # (B, 1, Tq, Tk)


def cross_attention_mask(padding: Tensor | None) -> Tensor | None:
    """(B, 1, 1, S) mask over encoder positions, or None when nothing is padded."""
    if padding is None:
        return None
    return padding.bool()[:, None, None, :]


class SelfMask:
    """The self-attention mask of one forward pass, built when a layer asks: the dense
    (B|1, 1, Tq, Tk) tensor of a pattern for the masked path (built once per pattern), or the padding
    and direction the banded path (``banded.banded_attention``) needs, which never builds it."""

    def __init__(self, q_len: int, k_len: int, padding: Tensor | None, *, causal: bool, device: torch.device) -> None:
        self.q_len, self.k_len, self.padding, self.causal, self.device = q_len, k_len, padding, causal, device
        self._dense: dict[tuple[str, int, int, int], Tensor] = {}

    def dense(self, pattern: PatternLike) -> Tensor:
        key = (pattern.attention, pattern.window, pattern.sparse_stride, pattern.global_tokens)
        if key not in self._dense:
            self._dense[key] = self_attention_mask(
                pattern, self.q_len, self.k_len, self.padding, causal=self.causal, device=self.device
            )
        return self._dense[key]
