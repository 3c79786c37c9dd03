"""Local and strided sparse attention without the (S x S) matrix: O(S * window) and O(S * (stride + S / stride)).

The queries are cut into blocks of ``b`` positions (b = window for local, b = stride for sparse). A
query block attends to its own key block and the previous one (and the next one when bidirectional):
every key at distance < b is in those 2 or 3 blocks, and the pattern's mask is applied inside them.
Sparse attention adds the strided "summary" keys: positions are laid out as (S / stride, stride), and
the queries of one column (one residue modulo the stride) attend to the keys of that column, the keys
at a distance that is a multiple of the stride. Global tokens (each row's first N real tokens) are extra
keys every query sees; when bidirectional their queries get full rows, scattered back by a one-hot product.

Only reshape, pad, slice, concat, matmul, where and softmax: torch.onnx exports it to standard ONNX
ops, so the exported graph is banded too. Scores of the band, the summary keys and the global keys
share one softmax, so the result is the masked dense reference's (``masks.pattern_mask``), rounding aside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from edgeformer.nn.masks import PatternLike

BANDED = ("local", "sparse")


@dataclass(frozen=True)
class Pattern:
    """One layer's attention pattern (a layer is given its own: per-layer patterns pass a different one)."""

    attention: str = "global"
    window: int = 0
    sparse_stride: int = 0
    global_tokens: int = 0

    @classmethod
    def of(cls, cfg: PatternLike) -> Pattern:
        return cls(cfg.attention, cfg.window, cfg.sparse_stride, cfg.global_tokens)

    @property
    def block(self) -> int:
        """Positions per block: every key of the band is within one block of its query."""
        return self.window if self.attention == "local" else self.sparse_stride


def worth_banding(pattern: Pattern, length: int) -> bool:
    """Below two blocks the banded form does as much work as the dense one, with more steps."""
    return pattern.attention in BANDED and length > 2 * pattern.block


def _fill(scores: Tensor, allowed: Tensor) -> Tensor:
    return scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)


def _blocks(x: Tensor, b: int, n: int, *, ahead: bool) -> Tensor:
    """(..., S, D) -> (..., nb, 2b|3b, D): for each query block, the previous, own (and next) key blocks."""
    pad = n * b - x.size(-2)
    shape = x.shape[:-2]
    x = F.pad(x, (0, 0, b, pad + b)).reshape(*shape, n + 2, b, x.size(-1))
    parts = [x[..., 0:n, :, :], x[..., 1 : n + 1, :, :]] + ([x[..., 2 : n + 2, :, :]] if ahead else [])
    return torch.cat(parts, dim=-2)


def _global_slots(real: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Each row's first n real tokens: positions (B, n), valid (B, n) and is_global (B, S)."""
    rank = real.long().cumsum(-1)  # (B, S): 1 for the first real token
    slots = torch.arange(n, device=real.device)
    position = (rank[:, :, None] <= slots[None, None, :]).long().sum(1)  # (B, n): first index of rank slot + 1
    valid = slots[None, :] < rank[:, -1:]
    is_global = real & (rank <= n)
    return position.clamp(max=real.size(1) - 1), valid, is_global


@dataclass
class _Keys:
    """Where the keys are: padded length, the real-and-not-global keys, the global slots."""

    blocks: int  # ceil(S / block) + 1: the lengths below are multiples of the block, so shapes stay symbolic products
    length: int  # blocks * block
    visible: Tensor  # (B, S) bool: real keys the band and the summary keys may use
    g_pos: Tensor | None = None  # (B, G) global positions
    g_valid: Tensor | None = None  # (B, G)
    is_global: Tensor | None = None  # (B, S)


def _layout(pattern: Pattern, real: Tensor) -> _Keys:
    s = real.size(1)
    b = pattern.block
    # one block more than ceil(S / b): at least two, so torch.export (which specializes a size of 1 and
    # traces with a sequence of 3) keeps the number of blocks symbolic; the spare block is padding, cut off
    n = (s + b - 1) // b + 1
    keys = _Keys(blocks=n, length=n * b, visible=real)
    if pattern.global_tokens:
        keys.g_pos, keys.g_valid, keys.is_global = _global_slots(real, pattern.global_tokens)
        keys.visible = real & ~keys.is_global
    return keys


def _near(pattern: Pattern, causal: bool) -> list[list[bool]]:
    """(b, 2b|3b): may offset i of a query block see column c of its band? The same in every block."""
    b = pattern.block
    width = pattern.window if pattern.attention == "local" else pattern.sparse_stride
    dist = [[i + b - c for c in range(2 * b if causal else 3 * b)] for i in range(b)]  # query - key position
    return [[abs(d) < width and (d >= 0 or not causal) for d in row] for row in dist]


def _band_scores(q: Tensor, k: Tensor, pattern: Pattern, keys: _Keys, causal: bool) -> Tensor:
    """(B, H, nb, b, 2b|3b) scores of the band, masked."""
    b, n = pattern.block, keys.blocks
    kb = _blocks(k, b, n, ahead=not causal)
    qb = F.pad(q, (0, 0, 0, n * b - q.size(-2))).reshape(*q.shape[:2], n, b, q.size(-1))
    scores = qb @ kb.transpose(-1, -2)  # (B, H, nb, b, 2b|3b)
    near = torch.tensor(_near(pattern, causal), dtype=torch.bool, device=q.device)  # a constant in the graph
    visible = _blocks(keys.visible[:, None, :, None].float(), b, n, ahead=not causal)[..., 0] > 0.5
    return _fill(scores, near[None, None, None] & visible[:, :, :, None, :])  # visible: (B, 1, nb, 2b|3b)


def _by_residue(x: Tensor, s: int, n: int) -> Tensor:
    """(..., S, D) -> (..., s, nb, D): positions laid out as (nb, s), one row per residue modulo s."""
    x = F.pad(x, (0, 0, 0, n * s - x.size(-2)))
    return x.reshape(*x.shape[:-2], n, s, x.size(-1)).transpose(-2, -3)


def _summary_scores(q: Tensor, k: Tensor, pattern: Pattern, keys: _Keys, causal: bool) -> Tensor:
    """(B, H, nb, s, nb) scores of the keys at a distance that is a non-zero multiple of the stride, masked."""
    s, n = pattern.sparse_stride, keys.blocks
    scores = _by_residue(q, s, n) @ _by_residue(k, s, n).transpose(-1, -2)  # (B, H, s, nb, nb)
    blocks = torch.arange(n, device=q.device)
    other = blocks[:, None] > blocks[None, :] if causal else blocks[:, None] != blocks[None, :]
    visible = _by_residue(keys.visible[:, None, :, None].float(), s, n)[..., 0] > 0.5  # (B, 1, s, nb)
    scores = _fill(scores, other[None, None, None] & visible[:, :, :, None, :])
    return scores.permute(0, 1, 3, 2, 4)  # (B, H, query block, residue, key block)


def _gather(x: Tensor, positions: Tensor) -> Tensor:
    """(B, H, S, D) at (B, G) positions -> (B, H, G, D)."""
    index = positions[:, None, :, None].expand(-1, x.size(1), -1, x.size(-1))
    return torch.gather(x, 2, index)


def _global_scores(q: Tensor, k: Tensor, pattern: Pattern, keys: _Keys, causal: bool) -> Tensor:
    """(B, H, nb, b, G) scores of every query against the global keys, masked."""
    assert keys.g_pos is not None and keys.g_valid is not None  # _layout sets them with global tokens
    b, length = pattern.block, keys.length
    qp = F.pad(q, (0, 0, 0, length - q.size(-2)))
    scores = qp @ _gather(k, keys.g_pos).transpose(-1, -2)  # (B, H, L, G)
    allowed = keys.g_valid[:, None, :].expand(-1, length, -1)  # (B, L, G)
    if causal:
        allowed = allowed & (keys.g_pos[:, None, :] <= torch.arange(length, device=q.device)[None, :, None])
    scores = _fill(scores, allowed[:, None])
    return scores.reshape(*scores.shape[:2], keys.blocks, b, scores.size(-1))


def _global_rows(out: Tensor, q: Tensor, k: Tensor, v: Tensor, keys: _Keys, real: Tensor, dropout: float) -> Tensor:
    """Bidirectional global queries see every real key: their rows of ``out`` (B, H, S, D) replaced.
    ``dropout``: the probability, applied in training only (0 otherwise)."""
    assert keys.g_pos is not None and keys.g_valid is not None
    scores = _fill(_gather(q, keys.g_pos) @ k.transpose(-1, -2), real[:, None, None, :])  # (B, H, G, S)
    rows = F.dropout(scores.softmax(-1), p=dropout, training=dropout > 0) @ v  # (B, H, G, D)
    where = torch.arange(out.size(2), device=out.device)[None, :, None] == keys.g_pos[:, None, :]
    onehot = (where & keys.g_valid[:, None, :]).to(out.dtype)  # (B, S, G)
    is_row = onehot.sum(-1)[:, None, :, None] > 0.5  # (B, 1, S, 1)
    return torch.where(is_row, onehot[:, None] @ rows, out)


def banded_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    pattern: Pattern,
    padding: Tensor | None,
    *,
    causal: bool,
    dropout: float = 0.0,
    training: bool = False,
) -> Tensor:
    """The pattern's attention, q k v: (B, H, S, D) of the same S, padding (B, S) of 1 for real tokens."""
    bsz, _, t, d = q.shape
    real = padding.bool() if padding is not None else torch.ones(bsz, t, dtype=torch.bool, device=q.device)
    keys = _layout(pattern, real)
    q = q / math.sqrt(d)
    parts = [_band_scores(q, k, pattern, keys, causal)]  # (B, H, nb, b, 2b|3b)
    if pattern.attention == "sparse":
        parts.append(_summary_scores(q, k, pattern, keys, causal))  # (B, H, nb, s, nb)
    if keys.g_pos is not None:
        parts.append(_global_scores(q, k, pattern, keys, causal))  # (B, H, nb, b, G)
    weights = F.dropout(torch.cat(parts, -1).softmax(-1), p=dropout, training=training)
    b, n, edge = pattern.block, keys.blocks, parts[0].size(-1)
    out = weights[..., :edge] @ _blocks(v, b, n, ahead=not causal)  # (B, H, nb, b, D)
    if pattern.attention == "sparse":
        summary = weights[..., edge : edge + n].permute(0, 1, 3, 2, 4)  # (B, H, s, nb, nb)
        out = out + (summary @ _by_residue(v, b, n)).permute(0, 1, 3, 2, 4)
    if keys.g_pos is not None:
        out = out + weights[..., -pattern.global_tokens :] @ _gather(v, keys.g_pos)[:, :, None]
    out = out.reshape(*out.shape[:2], keys.length, d)[:, :, :t]
    if keys.g_pos is not None and not causal:
        out = _global_rows(out, q, k, v, keys, real, dropout if training else 0.0)
    return out
