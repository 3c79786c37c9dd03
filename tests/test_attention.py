"""Every attention pattern against the naive loop, and the masks never leak."""

from __future__ import annotations

import pytest
import torch
from reference import allowed, attention_loop

from edgeformer.config import ModelConfig
from edgeformer.nn.attention import scaled_dot_product_attention
from edgeformer.nn.masks import self_attention_mask

PATTERNS = [
    dict(attention="global"),
    dict(attention="local", window=3),
    dict(attention="local", window=1),
    dict(attention="local", window=4, global_tokens=2),
    dict(attention="sparse", sparse_stride=3),
    dict(attention="sparse", sparse_stride=4, global_tokens=1),
]


def _cfg(family: str, **pattern) -> ModelConfig:
    return ModelConfig(family=family, vocab_size=32, d_model=16, n_heads=2, n_layers=1, max_positions=64, **pattern)


def _allow(cfg: ModelConfig, causal: bool):
    return lambda i, j: allowed(
        i,
        j,
        attention=cfg.attention,
        causal=causal,
        window=cfg.window,
        stride=cfg.sparse_stride,
        n_global=cfg.global_tokens,
    )


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()))
@pytest.mark.parametrize("family", ["encoder", "decoder"])
def test_pattern_matches_naive_loop(pattern, family):
    cfg = _cfg(family, **pattern)
    causal = family == "decoder"
    b, h, t, d = 2, 2, 13, 4
    q, k, v = (torch.randn(b, h, t, d) for _ in range(3))
    padding = torch.ones(b, t, dtype=torch.long)
    padding[1, 9:] = 0  # second row right-padded
    mask = self_attention_mask(cfg, t, t, padding, causal=causal, device=q.device)
    got = scaled_dot_product_attention(q, k, v, mask)
    want = attention_loop(q, k, v, _allow(cfg, causal), key_padding=padding)
    # padded query rows attend to nothing real; compare the real ones
    real = padding.bool()[:, None, :, None].expand_as(got)
    assert torch.allclose(got[real].double(), want[real], atol=1e-5)


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()))
def test_cached_queries_match_naive_loop(pattern):
    """Queries that are the last Tq of Tk positions (decoding with a cache) use absolute positions."""
    cfg = _cfg("decoder", **pattern)
    b, h, tk, tq, d = 1, 2, 11, 3, 4
    q = torch.randn(b, h, tq, d)
    k, v = torch.randn(b, h, tk, d), torch.randn(b, h, tk, d)
    mask = self_attention_mask(cfg, tq, tk, None, causal=True, device=q.device)
    got = scaled_dot_product_attention(q, k, v, mask)
    want = attention_loop(q, k, v, _allow(cfg, True), q_offset=tk - tq)
    assert torch.allclose(got.double(), want, atol=1e-5)


def test_exact_formula_without_mask():
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    want = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1) @ v
    assert torch.allclose(scaled_dot_product_attention(q, k, v), want, atol=1e-6)
    assert torch.allclose(torch.nn.functional.scaled_dot_product_attention(q, k, v), want, atol=1e-5)


def test_fully_masked_row_is_finite():
    q, k, v = (torch.randn(1, 1, 2, 4) for _ in range(3))
    mask = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    assert torch.isfinite(scaled_dot_product_attention(q, k, v, mask)).all()


def test_head_count_must_divide_width():
    from edgeformer.nn.attention import MultiHeadAttention

    with pytest.raises(ValueError, match="do not divide"):
        MultiHeadAttention(30, 8)
