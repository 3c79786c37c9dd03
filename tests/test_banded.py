"""Banded local and strided sparse attention (nn/banded.py) against the masked dense reference (issue #23):
causal and bidirectional, with and without global tokens, batched with left padding, at lengths below, at
and above the block; fp32 within 1e-4 of the output scale, as edgeformer.compare measures it."""

from __future__ import annotations

import pytest
import torch

from edgeformer.config import ModelConfig
from edgeformer.nn.attention import scaled_dot_product_attention
from edgeformer.nn.banded import Pattern, banded_attention
from edgeformer.nn.masks import self_attention_mask
from edgeformer.nn.models import build_model

PATTERNS = {
    "local": Pattern("local", window=8),
    "local-global": Pattern("local", window=8, global_tokens=2),
    "local-w1": Pattern("local", window=1, global_tokens=1),
    "sparse": Pattern("sparse", sparse_stride=4),
    "sparse-global": Pattern("sparse", sparse_stride=4, global_tokens=1),
}
LENGTHS = (5, 8, 21, 64)  # below, at, above the block (window 8, stride 4), and many blocks


def _scaled(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max().clamp(min=1e-6))


def _padding(b: int, t: int) -> torch.Tensor:
    padding = torch.ones(b, t, dtype=torch.long)
    padding[1, : t // 3] = 0  # second row left-padded
    padding[2, t - t // 4 :] = 0  # third row right-padded
    return padding


@pytest.mark.parametrize("t", LENGTHS)
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_banded_matches_masked_reference(pattern, causal, t):
    torch.manual_seed(t)
    p = PATTERNS[pattern]
    q, k, v = (torch.randn(3, 2, t, 8) for _ in range(3))
    padding = _padding(3, t)
    want = scaled_dot_product_attention(q, k, v, self_attention_mask(p, t, t, padding, causal=causal, device=q.device))
    got = banded_attention(q, k, v, p, padding, causal=causal)
    real = padding.bool()[:, None, :, None].expand_as(got)  # padded queries' rows are never read
    assert got.shape == want.shape
    assert _scaled(got[real], want[real]) <= 1e-5
    alone = banded_attention(q, k, v, p, None, causal=causal)
    dense = scaled_dot_product_attention(q, k, v, self_attention_mask(p, t, t, None, causal=causal, device=q.device))
    assert _scaled(alone, dense) <= 1e-5


@pytest.mark.parametrize("pattern", ["local-global", "sparse-global"])
def test_banded_gradients_match_the_masked_reference(pattern):
    """Training gains too: the band's gradients are the masked reference's."""
    torch.manual_seed(0)
    p, t = PATTERNS[pattern], 40
    leaves = [torch.randn(2, 2, t, 8, requires_grad=True) for _ in range(3)]
    padding = _padding(3, t)[1:]
    mask = self_attention_mask(p, t, t, padding, causal=False, device=torch.device("cpu"))
    weight = torch.randn(2, 2, t, 8) * padding[:, None, :, None]  # a loss on the real queries only
    (scaled_dot_product_attention(*leaves, mask) * weight).sum().backward()
    want = [x.grad.clone() for x in leaves]
    for x in leaves:
        x.grad = None
    (banded_attention(*leaves, p, padding, causal=False) * weight).sum().backward()
    for x, w in zip(leaves, want, strict=True):
        assert _scaled(x.grad, w) <= 1e-5


def test_banded_never_builds_the_square_matrix(monkeypatch):
    """At S = 128 with window 8 no tensor of the pass has S x S elements per head."""
    seen: list[int] = []
    real_matmul = torch.Tensor.__matmul__

    def spy(a, b):
        out = real_matmul(a, b)
        seen.append(out[0, 0].numel())
        return out

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    q, k, v = (torch.randn(1, 2, 128, 8) for _ in range(3))
    banded_attention(q, k, v, PATTERNS["local-global"], None, causal=False)
    assert seen and max(seen) <= (128 + 8) * (
        3 * 8 + 2
    )  # (S + a spare block) x (3 blocks + 2 global keys), never S x S


def _model(family: str, **pattern) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(family=family, vocab_size=40, d_model=16, n_heads=2, n_layers=2, max_positions=128,
                      head="lm", **pattern)  # fmt: skip
    return build_model(cfg).eval()


def _impl(model: torch.nn.Module, impl: str) -> None:
    for m in model.modules():
        if hasattr(m, "attention_impl"):
            m.attention_impl = impl


@pytest.mark.parametrize("family", ["encoder", "decoder"])
@pytest.mark.parametrize(
    "pattern", [dict(attention="local", window=8, global_tokens=1), dict(attention="sparse", sparse_stride=4)]
)
@torch.no_grad()
def test_models_band_above_two_blocks_and_match_dense(family, pattern):
    model = _model(family, **pattern)
    ids = torch.randint(0, 40, (2, 40), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, :7] = 0  # left padding
    calls: list[int] = []
    model.get_submodule("encoder" if family == "encoder" else "decoder").layers[0].self_attn.register_forward_hook(
        lambda *_: calls.append(0)
    )
    banded = model(ids, mask)
    _impl(model, "dense")
    dense = model(ids, mask)
    assert _scaled(banded["logits"][mask.bool()], dense["logits"][mask.bool()]) <= 1e-4
    if family == "decoder":  # the cache a banded prompt leaves is the dense one, and decoding reads it alike
        nxt, step = torch.tensor([[3], [4]]), torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
        _impl(model, "auto")
        after_banded = model(nxt, step, past_key_values=banded["present_key_values"])["logits"]
        after_dense = model(nxt, step, past_key_values=dense["present_key_values"])["logits"]
        assert _scaled(after_banded, after_dense) <= 1e-4


def test_auto_keeps_dense_at_two_blocks_and_bands_above(monkeypatch):
    import edgeformer.nn.attention as attention

    model = _model("encoder", attention="local", window=8)
    used: list[int] = []
    real = attention.banded_attention
    monkeypatch.setattr(attention, "banded_attention", lambda *a, **kw: used.append(a[0].size(2)) or real(*a, **kw))
    with torch.no_grad():
        model(torch.zeros(1, 16, dtype=torch.long))
        model(torch.zeros(1, 17, dtype=torch.long))
    assert used == [17, 17]  # two layers, the 17-long pass only
