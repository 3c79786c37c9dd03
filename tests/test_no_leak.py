"""Changing a token a position must not see never changes that position's output."""

from __future__ import annotations

import pytest
import torch
from conftest import card_config

from edgeformer.nn import build_model


def _changed_positions(model, ids, mask, pos):  # noqa: ANN001
    ids2 = ids.clone()
    ids2[0, pos] = (ids2[0, pos] + 1) % model.config.vocab_size
    with torch.no_grad():
        a = model(ids, mask)
        b = model(ids2, mask)
    key = "logits" if "logits" in a and a["logits"].dim() == 3 else "last_hidden_state"
    return (a[key] - b[key]).abs().amax(dim=-1)[0]  # (T,)


@pytest.mark.parametrize("card", ["gpt-mini", "sparse-mini"])
def test_causal_future_never_leaks(card):
    model = build_model(card_config(card)).eval()
    t = 24
    ids = torch.randint(0, model.config.vocab_size, (1, t))
    for pos in (5, 12, 23):
        diff = _changed_positions(model, ids, None, pos)
        assert diff[:pos].max() == 0.0, f"changing token {pos} changed an earlier output"
        assert diff[pos:].max() > 0.0


def test_causal_local_window_never_reaches_past_window():
    model = build_model(card_config("gpt-mini", attention="local", window=3, n_layers=1)).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 20))
    diff = _changed_positions(model, ids, None, 4)
    # one layer: position 4 reaches queries 4, 5, 6 only
    assert diff[:4].max() == 0.0 and diff[7:].max() == 0.0
    assert diff[4:7].min() > 0.0


def test_local_encoder_window_never_reaches_past_window():
    model = build_model(card_config("local-mini", window=3, global_tokens=0, n_layers=1)).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 20))
    diff = _changed_positions(model, ids, None, 10)
    assert diff[:8].max() == 0.0 and diff[13:].max() == 0.0
    assert diff[8:13].min() > 0.0


def test_sparse_pattern_reaches_only_strided_positions():
    model = build_model(card_config("sparse-mini", sparse_stride=4, global_tokens=0, n_layers=1)).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 20))
    diff = _changed_positions(model, ids, None, 2)
    reached = {i for i in range(20) if diff[i] > 0}
    assert reached == {2, 3, 4, 5, 6, 10, 14, 18}


@pytest.mark.parametrize("card", ["bert-mini", "local-mini", "gpt-mini", "sparse-mini"])
def test_padding_never_leaks(card):
    model = build_model(card_config(card)).eval()
    t = 16
    ids = torch.randint(0, model.config.vocab_size, (1, t))
    mask = torch.ones(1, t, dtype=torch.long)
    mask[0, 11:] = 0
    diff = _changed_positions(model, ids, mask, 13)
    assert diff[:11].max() == 0.0


def test_encoder_decoder_padding_and_future_never_leak():
    model = build_model(card_config("transformer-mini")).eval()
    v = model.config.vocab_size
    src = torch.randint(0, v, (1, 10))
    src_mask = torch.ones(1, 10, dtype=torch.long)
    src_mask[0, 7:] = 0
    tgt = torch.randint(0, v, (1, 8))
    with torch.no_grad():
        base = model(src, tgt, src_mask)["logits"]
        src2 = src.clone()
        src2[0, 8] = (src2[0, 8] + 1) % v
        assert torch.equal(model(src2, tgt, src_mask)["logits"], base)
        tgt2 = tgt.clone()
        tgt2[0, 5] = (tgt2[0, 5] + 1) % v
        diff = (model(src, tgt2, src_mask)["logits"] - base).abs().amax(-1)[0]
    assert diff[:5].max() == 0.0 and diff[5:].min() > 0.0
