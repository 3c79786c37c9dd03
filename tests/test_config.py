"""Model cards: every shipped card loads; wrong cards are refused with the key named."""

from __future__ import annotations

import tomllib

import pytest

from edgeformer.config import load_card, parse_card, render_card
from edgeformer.errors import CardError
from edgeformer.zoo import card_names, list_cards, resolve_card

GOOD = {
    "name": "t",
    "model": {"family": "encoder", "vocab_size": 100, "d_model": 64, "n_heads": 8, "n_layers": 2},
}


def _with(**model):
    data = {"name": "t", "model": {**GOOD["model"], **model}}
    return data


def test_zoo_spans_the_seed_ranges():
    cards = {c.name: c for c in list_cards()}
    assert {"bert-base", "gpt2-small", "transformer-base", "bert-mini", "demo-decoder", "demo-encoder"} <= set(cards)
    large = [c.config for c in cards.values() if c.config.d_model >= 512]
    assert min(c.d_model for c in large) == 512 and max(c.d_model for c in large) == 2048
    assert {c.n_heads for c in large} >= {8, 16} and max(c.n_layers for c in large) == 24
    assert all(c.ffn_dim == 4 * c.d_model for c in large)
    assert {c.config.attention for c in cards.values()} == {"global", "local", "sparse"}
    assert {c.config.family for c in cards.values()} == {"encoder", "decoder", "encoder-decoder"}
    bert = cards["bert-base"].config
    assert (bert.d_model, bert.n_heads, bert.n_layers) == (768, 12, 12)
    base = cards["transformer-base"].config
    assert (base.d_model, base.n_heads, base.n_layers, base.decoder_layers, base.ffn_dim) == (512, 8, 6, 6, 2048)


def test_resolve_by_name_and_path(tmp_path):
    assert resolve_card("bert-mini").config.family == "encoder"
    path = tmp_path / "mine.toml"
    path.write_text(render_card(resolve_card("gpt-mini")))
    assert resolve_card(str(path)).config == resolve_card("gpt-mini").config


def test_unknown_card_lists_known_ones():
    with pytest.raises(CardError, match="known cards: .*bert-mini"):
        resolve_card("no-such-model")


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ({"n_heads": 7}, "n_heads"),
        ({"attention": "local", "window": 0}, "window"),
        ({"attention": "sparse"}, "sparse_stride"),
        ({"attention": "diagonal"}, "attention"),
        ({"family": "decoderish"}, "family"),
        ({"d_model": -64}, "d_model"),
        ({"dropout": 1.5}, "dropout"),
        ({"head": "classification"}, "num_labels"),
        ({"positions": "rotary"}, "positions"),
        ({"n_layers": "two"}, "n_layers"),
        ({"tie_embeddings": "yes"}, "tie_embeddings"),
        ({"vocab_size": True}, "vocab_size"),
        ({"colour": "blue"}, "colour"),
        ({"pad_token_id": 100}, "pad_token_id"),
        ({"n_decoder_layers": 3}, "n_decoder_layers"),
        ({"global_tokens": 600}, "global_tokens"),
    ],
)
def test_wrong_card_names_the_key(model, key):
    with pytest.raises(CardError, match=rf"\b{key}\b"):
        parse_card(_with(**model))


def test_card_level_mistakes():
    with pytest.raises(CardError, match="unknown key 'flavour'"):
        parse_card({**GOOD, "flavour": "x"})
    with pytest.raises(CardError, match=r"\[model\] table is missing"):
        parse_card({"name": "t"})
    with pytest.raises(CardError, match="'name'"):
        parse_card({"model": GOOD["model"]})
    missing = {"name": "t", "model": {k: v for k, v in GOOD["model"].items() if k != "d_model"}}
    with pytest.raises(CardError, match=r"\[model\]\.d_model is missing"):
        parse_card(missing)


def test_malformed_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[model\nfamily=')
    with pytest.raises(CardError, match="not valid TOML"):
        load_card(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(CardError, match="UTF-8"):
        load_card(binary)
    with pytest.raises(CardError, match="does not exist"):
        load_card(tmp_path / "absent.toml")


@pytest.mark.parametrize("name", card_names())
def test_render_round_trips(name):
    card = resolve_card(name)
    again = parse_card(tomllib.loads(render_card(card)))
    assert again.config == card.config
    assert again.metrics == card.metrics and again.training == card.training
