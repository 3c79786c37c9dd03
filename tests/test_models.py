"""Models: every card builds and runs; the KV cache equals the full pass; variants behave."""

from __future__ import annotations

import pytest
import torch
from conftest import EDGE_CARDS, card_config

from edgeformer.nn import build_model
from edgeformer.zoo import card_names, resolve_card


def _forward(model, cfg, b: int, t: int):  # noqa: ANN001
    ids = torch.randint(0, cfg.vocab_size, (b, t))
    with torch.no_grad():
        if cfg.family == "encoder-decoder":
            return model(ids, ids[:, : max(1, t // 2)])
        return model(ids)


@pytest.mark.parametrize("name", EDGE_CARDS)
@pytest.mark.parametrize("shape", [(1, 1), (2, 7), (1, "max")])
def test_edge_cards_forward(name, shape):
    cfg = resolve_card(name).config
    b, t = shape
    t = cfg.max_positions if t == "max" else t
    model = build_model(cfg).eval()
    out = _forward(model, cfg, b, t)
    assert out["last_hidden_state"].shape[-1] == cfg.d_model
    for value in out.values():
        if isinstance(value, torch.Tensor):
            assert torch.isfinite(value).all()


LARGE = [n for n in card_names() if n not in EDGE_CARDS and not n.startswith("demo-")]


@pytest.mark.parametrize("name", LARGE)
def test_large_cards_build_and_run(name):
    """The zoo's full-size cards build with real weights and run a short forward pass."""
    cfg = resolve_card(name).config
    assert 512 <= cfg.d_model <= 2048 and 8 <= cfg.n_heads <= 16 and 6 <= cfg.n_layers <= 24
    model = build_model(cfg).eval()
    out = _forward(model, cfg, 1, 4)
    expected = cfg.vocab_size if cfg.head == "lm" else cfg.d_model
    key = "logits" if cfg.head == "lm" else "last_hidden_state"
    assert out[key].shape[-1] == expected and torch.isfinite(out[key]).all()


def _greedy_steps(model, prompt, steps):  # noqa: ANN001
    """Decode token by token with the cache; return the logits of every step."""
    with torch.no_grad():
        out = model(prompt)
        logits = [out["logits"]]
        past = out["present_key_values"]
        for _ in range(steps):
            nxt = logits[-1][:, -1:].argmax(-1)
            out = model(nxt, past_key_values=past)
            logits.append(out["logits"])
            past = out["present_key_values"]
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("name", ["gpt-mini", "sparse-mini"])
@pytest.mark.parametrize("pattern", [{}, {"attention": "local", "window": 5}])
def test_decoder_kv_cache_equals_full_pass(name, pattern):
    model = build_model(card_config(name, **pattern)).eval()
    prompt = torch.randint(0, model.config.vocab_size, (2, 5))
    incremental = _greedy_steps(model, prompt, 12)
    tokens = torch.cat([prompt, incremental[:, 4:-1].argmax(-1)], dim=1)  # what was fed
    with torch.no_grad():
        full = model(tokens)["logits"]
    assert torch.allclose(incremental, full, atol=1e-5)


def test_decoder_kv_cache_with_left_padding():
    model = build_model(card_config("gpt-mini")).eval()
    v = model.config.vocab_size
    ids = torch.randint(0, v, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, :2] = 0  # left-padded second prompt
    nxt = torch.randint(0, v, (2, 1))
    with torch.no_grad():
        first = model(ids, mask)
        step_mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
        cached = model(nxt, step_mask, past_key_values=first["present_key_values"])["logits"]
        full = model(torch.cat([ids, nxt], 1), step_mask)["logits"][:, -1:]
        # the left-padded row equals the same prompt without its padding
        alone = model(torch.cat([ids[1:, 2:], nxt[1:]], 1))["logits"][:, -1:]
    assert torch.allclose(cached, full, atol=1e-5)
    assert torch.allclose(cached[1:], alone, atol=1e-5)


def test_encoder_decoder_cache_equals_full_pass():
    model = build_model(card_config("transformer-mini")).eval()
    v = model.config.vocab_size
    src = torch.randint(0, v, (2, 9))
    src_mask = torch.ones(2, 9, dtype=torch.long)
    src_mask[0, 6:] = 0
    tgt = torch.randint(0, v, (2, 8))
    with torch.no_grad():
        full = model(src, tgt, src_mask)["logits"]
        memory = model.encode(src, src_mask)
        cross = model.cross_key_values(memory)  # computed once
        past, steps = None, []
        for i in range(tgt.shape[1]):
            out = model.decode(tgt[:, i : i + 1], cross, src_mask, past_key_values=past)
            steps.append(out["logits"])
            past = out["present_key_values"]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_variants_run_and_differ(norm, positions, activation):
    cfg = card_config("gpt-mini", norm=norm, positions=positions, activation=activation)
    model = build_model(cfg).eval()
    assert (model.decoder.final_norm is not None) == (norm == "pre")
    ids = torch.randint(0, cfg.vocab_size, (2, 10))
    with torch.no_grad():
        out = model(ids)["logits"]
    assert out.shape == (2, 10, cfg.vocab_size) and torch.isfinite(out).all()
    pos = model.embeddings.positions
    assert (len(list(pos.parameters())) > 0) == (positions == "learned")


def test_sinusoidal_table_matches_paper():
    from edgeformer.nn.layers import SinusoidalPositions

    table = SinusoidalPositions(50, 16).table
    for pos in (0, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert table[pos, 2 * i].item() == pytest.approx(torch.sin(torch.tensor(angle)).item(), abs=1e-5)
            assert table[pos, 2 * i + 1].item() == pytest.approx(torch.cos(torch.tensor(angle)).item(), abs=1e-5)


def test_post_ln_normalises_each_sublayer_output():
    cfg = card_config("bert-mini", norm="post", n_layers=1)
    model = build_model(cfg).eval()
    hidden = model(torch.randint(0, cfg.vocab_size, (1, 6)))["last_hidden_state"]
    # post-LN ends in a LayerNorm whose parameters are fresh (weight 1, bias 0): zero mean, unit std
    assert torch.allclose(hidden.mean(-1), torch.zeros(1, 6), atol=1e-5)


@pytest.mark.parametrize("name", ["gpt-mini", "bert-mini", "transformer-mini"])
def test_gradient_checkpointing_gives_same_gradients(name):
    cfg = card_config(name)
    torch.manual_seed(1)
    plain = build_model(cfg)
    ckpt = build_model(cfg.replace(gradient_checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    ids = torch.randint(0, cfg.vocab_size, (2, 12))
    grads = []
    for model in (plain, ckpt):
        model.train()
        out = model(ids, ids) if cfg.family == "encoder-decoder" else model(ids)
        out["last_hidden_state"].square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n


def test_lm_head_tying():
    tied = build_model(card_config("gpt-mini"))
    assert tied.lm_head.weight is tied.embeddings.tokens.weight
    untied = build_model(card_config("gpt-mini", tie_embeddings=False))
    assert untied.lm_head.weight is not untied.embeddings.tokens.weight


def test_heads_outputs():
    cfg = card_config("bert-mini")
    ids = torch.randint(0, cfg.vocab_size, (3, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    with torch.no_grad():
        emb = build_model(cfg).eval()(ids, mask)
        model = build_model(cfg).eval()
        out = model(ids, mask)
        manual = (out["last_hidden_state"] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        assert torch.allclose(out["embeddings"], manual, atol=1e-6)
        cls = build_model(cfg.replace(head="classification", num_labels=4)).eval()(ids, mask)
        mlm = build_model(cfg.replace(head="lm")).eval()(ids, mask)
    assert emb["embeddings"].shape == (3, cfg.d_model)
    assert cls["logits"].shape == (3, 4)
    assert mlm["logits"].shape == (3, 5, cfg.vocab_size)


@pytest.mark.parametrize("name", ["transformer-base", "transformer-big"])
def test_paper_cards_scale_embeddings_by_sqrt_d_model(name):
    """Section 3.4 of the paper: the embedding weights are multiplied by sqrt(d_model)."""
    assert resolve_card(name).config.scale_embeddings
    cfg = resolve_card(name).config.replace(vocab_size=64, d_model=32, n_heads=4, n_layers=1, n_decoder_layers=1)
    cfg = cfg.replace(dropout=0.0, max_positions=16)
    model = build_model(cfg).eval()
    ids = torch.tensor([[3, 5, 7]])
    positions = torch.arange(3)[None]
    expected = model.embeddings.tokens(ids) * 32**0.5 + model.embeddings.positions(positions)
    torch.testing.assert_close(model.embeddings(ids, positions), expected)
