"""The shipped demo checkpoints are real: they load, and their recorded held-out metrics are what
evaluating them here gives."""

from __future__ import annotations

import platform

import pytest
import torch

from edgeformer import tokenizer
from edgeformer.data import KINDS, ORDERS, load_docstrings, word_order_examples
from edgeformer.demo import byte_stream, classification_metrics, perplexity, word_order_set
from edgeformer.nn.checkpoint import load_model, sha256_file
from edgeformer.zoo import resolve_card


def _same_python(card):
    if card.metrics.get("python") != platform.python_version():
        pytest.skip(f"metrics were recorded on Python {card.metrics.get('python')}; this stdlib differs")


def test_corpus_split_is_by_file_and_labelled():
    train, valid = load_docstrings("train"), load_docstrings("valid")
    assert len(train) > 5000 and len(valid) > 500
    assert not {d.path for d in train} & {d.path for d in valid}
    assert {d.kind for d in valid} == set(KINDS)


def test_tokenizer_round_trip():
    text = "Return the sum — of a and b. ✓"
    ids = tokenizer.encode(text, bos=True, eos=True)
    assert ids[0] == tokenizer.BOS and ids[-1] == tokenizer.EOS
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode([0xFF, 65]) == "\ufffdA"


@pytest.mark.parametrize("name", ["demo-decoder", "demo-encoder"])
def test_checkpoint_matches_card(name):
    card = resolve_card(name)
    assert card.checkpoint is not None and card.checkpoint.stat().st_size < 10_000_000
    assert sha256_file(card.checkpoint) == card.checkpoint_sha256


def test_demo_decoder_perplexity_is_as_recorded():
    card = resolve_card("demo-decoder")
    _same_python(card)
    model = load_model(card)
    ppl = perplexity(model, byte_stream(load_docstrings("valid")), card.config.max_positions)
    assert ppl == pytest.approx(card.metrics["valid_perplexity"], rel=1e-3)
    assert ppl < 6.0  # bytes are far from uniform (259): the model learned English and Python


def test_demo_decoder_writes_plausible_text():
    model = load_model(resolve_card("demo-decoder"))
    ids = torch.tensor([tokenizer.encode("Return the ", bos=True)])
    with torch.no_grad():
        for _ in range(24):
            nxt = model(ids)["logits"][:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
    text = tokenizer.decode(ids[0].tolist())
    words = text.split()
    assert len(words) >= 4 and sum(w.isascii() for w in words) == len(words), text


def test_word_order_set_is_balanced_and_the_same_bytes_in_every_order():
    examples = word_order_examples("valid")
    assert len(examples) > 1500 and [label for _, label in examples[:6]] == [0, 1, 2, 0, 1, 2]
    assert [sum(label == c for _, label in examples) for c in range(len(ORDERS))] == [len(examples) // 3] * 3
    for i in range(0, len(examples), 3):
        prose, shuffled, reversed_ = (text for text, _ in examples[i : i + 3])
        assert sorted(prose.encode()) == sorted(shuffled.encode()) == sorted(reversed_.encode())
        assert len(prose.encode()) <= 64 and prose != shuffled and reversed_ == prose[::-1]
    train_texts = {t for t, label in word_order_examples("train") if label == 0}
    assert not train_texts & {t for t, label in examples if label == 0}  # held out: no text seen in training


def test_demo_encoder_accuracy_is_as_recorded():
    """The encoder has something to lose: balanced accuracy >= 0.85 on exactly balanced classes,
    where a bag of bytes is at chance (the three orders of a text hold the same bytes)."""
    card = resolve_card("demo-encoder")
    _same_python(card)
    model = load_model(card)
    metrics = classification_metrics(model, *word_order_set(card.config.max_positions))
    assert metrics["accuracy"] == pytest.approx(card.metrics["accuracy"], abs=1e-4)
    assert metrics["balanced_accuracy"] == pytest.approx(card.metrics["balanced_accuracy"], abs=1e-4)
    assert metrics["balanced_accuracy"] >= 0.85 and metrics["majority_baseline"] == pytest.approx(1 / 3, abs=1e-4)
    assert card.metrics["bag_of_bytes_baseline"] == pytest.approx(1 / 3, abs=0.01)


def test_demo_encoder_tells_the_orders_apart():
    model = load_model(resolve_card("demo-encoder"))
    texts = ["Return the absolute value of the argument.", "absolute the argument. value Return of the",
             ".tnemugra eht fo eulav etulosba eht nruteR"]  # fmt: skip
    ids = torch.full((3, 64), tokenizer.PAD)
    mask = torch.zeros((3, 64), dtype=torch.long)
    for i, text in enumerate(texts):
        row = tokenizer.encode(text)
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    with torch.no_grad():
        assert model(ids, mask)["logits"].argmax(-1).tolist() == [0, 1, 2]
