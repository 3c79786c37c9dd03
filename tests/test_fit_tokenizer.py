"""`edgeformer train --tokenizer tokenizer.json` (issue #22): a Hugging Face tokenizer in place of
bytes, read safely, written into the output so that export carries it into the bundle."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from edgeformer.errors import DataError
from edgeformer.train_batches import batch_of
from edgeformer.train_data import read_data
from edgeformer.train_tokens import TokenizerJson
from tests.test_fit import data_files, run, tiny_card
from tests.test_fit_streaming import card_of

WORDS = ["[UNK]", "Return", "the", "absolute", "value", "of", "argument", ".", "sum", "a", "and", "b", "abs"]


def word_tokenizer(path: Path, words: list[str] = WORDS) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return path


def test_a_decoder_trains_on_the_tokenizers_ids_and_the_output_carries_it(tmp_path):
    tok = word_tokenizer(tmp_path / "tok.json")
    train, _ = data_files(tmp_path, "decoder")
    (valid := tmp_path / "valid.txt").write_text("Return the sum.\n")
    out = tmp_path / "out"
    result = run("train", tiny_card(tmp_path, "decoder"), "--data", train, "--valid", valid, "--tokenizer", tok,
                 "--steps", "2", "--batch-size", "2", "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    card = tomllib.loads((out / "tiny-decoder.toml").read_text())
    assert card["tokenizer"] == "tiny-decoder.tokenizer.json"
    assert (out / "tiny-decoder.tokenizer.json").read_bytes() == tok.read_bytes()
    assert card["metrics"]["valid_tokens"] == 5  # [bos] Return the sum . [eos], less one (bytes: 17)
    assert "tiny-decoder.tokenizer.json" in json.loads((out / "edgeformer-train.json").read_text())["files"]


def test_examples_are_tokenized_by_the_cards_tokenizer(tmp_path):
    card = tiny_card(tmp_path, "encoder-decoder")
    word_tokenizer(tmp_path / "words.json")
    card.write_text(card.read_text().replace('tokenizer = "bytes"', 'tokenizer = "words.json"'))
    train, _ = data_files(tmp_path, "encoder-decoder")  # "Return the absolute value.\tabs"
    from edgeformer.zoo import resolve_card

    data = read_data(resolve_card(card), [train], TokenizerJson(tmp_path / "words.json"))
    batch = batch_of(data, resolve_card(card), [0])
    assert batch["input_ids"][0].tolist() == [1, 2, 3, 4, 7] and batch["labels"][0].tolist() == [12, 258]
    # a card's own tokenizer = "x.json" is used without --tokenizer; export carrying it: test_fit's export test


def test_a_tokenizer_that_is_a_link_too_large_or_not_json_is_refused(tmp_path):
    tok = word_tokenizer(tmp_path / "tok.json")
    os.symlink(tok, tmp_path / "link.json")
    with pytest.raises(DataError, match="is a symbolic link"):
        TokenizerJson(tmp_path / "link.json")
    (tmp_path / "bad.json").write_text('{"model": 3}')
    with pytest.raises(DataError, match="bad.json is not a tokenizer.json the tokenizers library reads"):
        TokenizerJson(tmp_path / "bad.json")
    big = word_tokenizer(tmp_path / "big.json", WORDS + [f"w{i}" for i in range(300)])
    with pytest.raises(DataError, match="the tokenizer has 313 tokens, more than the card's vocab_size 259"):
        read_data(card_of("decoder"), [tok], TokenizerJson(big))
    result = run("train", tiny_card(tmp_path, "decoder"), "--tokenizer", tok, "-o", tmp_path / "o")
    assert result.exit_code == 1 and "--tokenizer needs --data" in result.output
