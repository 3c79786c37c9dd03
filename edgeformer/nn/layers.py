"""Feed-forward network, position encodings and one Transformer layer (pre- or post-LN)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeformer.config import ModelConfig
from edgeformer.nn.attention import KV, MultiHeadAttention
from edgeformer.nn.banded import BANDED, Pattern, worth_banding
from edgeformer.nn.masks import SelfMask

# How a layer computes local and sparse self-attention: "auto" bands it above two blocks in eager torch and
# keeps the dense mask while torch.export traces (a Python branch on a dynamic length cannot be exported);
# "banded" always (what the export pipeline asks for its standard-op forms), "dense" never (the reference).
ATTENTION_IMPLS = ("auto", "banded", "dense")


@contextlib.contextmanager
def attention_impl(model: nn.Module, impl: str) -> Iterator[None]:
    """Every layer of ``model`` computes its self-attention the ``impl`` way inside the block, as before after."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention implementation {impl!r} is not one of {', '.join(ATTENTION_IMPLS)}")
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    before = [b.attention_impl for b in blocks]
    for block in blocks:
        block.attention_impl = impl
    try:
        yield
    finally:
        for block, was in zip(blocks, before, strict=True):
            block.attention_impl = was


def activate(x: Tensor, activation: str) -> Tensor:
    """ReLU (the paper), exact GELU (BERT, BART) or tanh-approximated GELU (GPT-2's gelu_new)."""
    if activation == "gelu":
        return F.gelu(x)
    if activation == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    return F.relu(x)


class FeedForward(nn.Module):
    """FFN(x) = act(x W1 + b1) W2 + b2, with act = ReLU (the paper) or GELU (exact or tanh)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.activation = activation
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)  # (B, T, F)
        h = activate(h, self.activation)
        return self.fc2(self.dropout(h))  # (B, T, C)


class SinusoidalPositions(nn.Module):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...), as in the paper."""

    table: Tensor  # (P, C), a buffer

    def __init__(self, max_positions: int, d_model: int) -> None:
        super().__init__()
        pos = torch.arange(max_positions, dtype=torch.float32)[:, None]  # (P, 1)
        inv = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_positions, d_model)
        table[:, 0::2] = torch.sin(pos * inv)
        table[:, 1::2] = torch.cos(pos * inv[: d_model // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, position_ids: Tensor) -> Tensor:
        return self.table[position_ids]  # (B, T, C)


class LearnedPositions(nn.Module):
    def __init__(self, max_positions: int, d_model: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_positions, d_model)

    def forward(self, position_ids: Tensor) -> Tensor:
        return self.embedding(position_ids)  # (B, T, C)


class Embeddings(nn.Module):
    """Token embedding (optionally scaled by sqrt(d_model)), plus the type-0 token-type embedding
    (BERT), plus position encoding (read ``position_offset`` rows further, BART), then an optional
    norm and dropout. ``tokens`` shares another Embeddings' token table (an encoder-decoder whose
    decoder has its own positions)."""

    def __init__(self, cfg: ModelConfig, tokens: nn.Embedding | None = None) -> None:
        super().__init__()
        self.tokens = tokens if tokens is not None else nn.Embedding(cfg.vocab_size, cfg.d_model)
        positions = SinusoidalPositions if cfg.positions == "sinusoidal" else LearnedPositions
        self.positions = positions(cfg.max_positions + cfg.position_offset, cfg.d_model)
        self.position_offset = cfg.position_offset
        self.scale = math.sqrt(cfg.d_model) if cfg.scale_embeddings else None
        self.token_types = nn.Embedding(cfg.type_vocab_size, cfg.d_model) if cfg.type_vocab_size else None
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.embedding_norm else None
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: Tensor, position_ids: Tensor) -> Tensor:
        x = self.tokens(input_ids)  # (B, T, C)
        if self.scale is not None:
            x = x * self.scale
        if self.token_types is not None:
            x = x + self.token_types.weight[0]  # every token is of type 0
        if self.position_offset:
            position_ids = position_ids + self.position_offset
        x = x + self.positions(position_ids)  # (B, T, C)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)


class LMHeadTransform(nn.Module):
    """dense -> activation -> layer norm, applied before the LM projection (BERT's MLM head)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.activation = cfg.activation
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(activate(self.dense(x), self.activation))  # (B, T, C)


class Block(nn.Module):
    """One layer: self-attention, optional cross-attention, feed-forward; each sublayer wrapped in a
    residual connection with layer norm before it (pre-LN) or after the sum (post-LN)."""

    def __init__(self, cfg: ModelConfig, *, cross: bool = False, pattern: Pattern | None = None) -> None:
        super().__init__()
        self.pattern = pattern if pattern is not None else Pattern.of(cfg)
        self.attention_impl = "auto"  # one of ATTENTION_IMPLS
        self.pre_norm = cfg.norm == "pre"
        eps = cfg.layer_norm_eps
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout)
        self.self_norm = nn.LayerNorm(cfg.d_model, eps=eps)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout) if cross else None
        self.cross_norm = nn.LayerNorm(cfg.d_model, eps=eps) if cross else None
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation, cfg.dropout)
        self.ffn_norm = nn.LayerNorm(cfg.d_model, eps=eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def _residual(self, x: Tensor, norm: nn.LayerNorm, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        if self.pre_norm:
            return x + self.dropout(sublayer(norm(x)))
        return norm(x + self.dropout(sublayer(x)))

    def cross_key_values(self, memory: Tensor) -> KV:
        """This layer's cross-attention keys and values of the encoder output: (B, H, S, D) each."""
        if self.cross_attn is None:
            raise ValueError("a layer without cross-attention has no cross keys and values")
        return self.cross_attn.project_kv(memory)

    def _banded(self, mask: SelfMask | Tensor | None, past: KV | None) -> bool:
        """Whether this pass's self-attention takes the banded path (a full pass, no cache, banded pattern)."""
        if not isinstance(mask, SelfMask) or past is not None or mask.q_len != mask.k_len:
            return False
        if self.pattern.attention not in BANDED or self.attention_impl == "dense":
            return False
        if self.attention_impl == "banded":
            return True
        return not torch.compiler.is_exporting() and worth_banding(self.pattern, mask.q_len)

    def forward(
        self,
        x: Tensor,
        mask: SelfMask | Tensor | None,
        past: KV | None = None,
        cross_kv: KV | None = None,
        cross_mask: Tensor | None = None,
    ) -> tuple[Tensor, KV]:
        """x: (B, T, C). Returns the new x and this layer's self-attention keys/values (past included)."""
        present: list[KV] = []

        def self_attention(h: Tensor) -> Tensor:
            k, v = self.self_attn.project_kv(h)  # (B, H, T, D)
            if past is not None:
                k = torch.cat([past[0], k], dim=2)  # (B, H, Tpast + T, D)
                v = torch.cat([past[1], v], dim=2)
            present.append((k, v))
            if isinstance(mask, SelfMask) and self._banded(mask, past):
                return self.self_attn.banded(h, (k, v), self.pattern, mask.padding, causal=mask.causal)
            dense = mask.dense(self.pattern) if isinstance(mask, SelfMask) else mask
            return self.self_attn(h, (k, v), dense)

        x = self._residual(x, self.self_norm, self_attention)
        if self.cross_attn is not None and self.cross_norm is not None:  # both or neither
            if cross_kv is None:
                raise ValueError("a cross-attention layer needs the encoder's keys and values (cross_kv)")
            cross_attn = self.cross_attn
            x = self._residual(x, self.cross_norm, lambda h: cross_attn(h, cross_kv, cross_mask))
        x = self._residual(x, self.ffn_norm, self.ffn)
        return x, present[0]
