"""`edgeformer train --batch-tokens N` (issue #22): batches grouped by length whose padded size stays
at or below N, every example once per epoch, the same batches for the same seed, each rank its own."""

from __future__ import annotations

import tomllib
from collections import Counter

import numpy as np
import pytest
import torch

from edgeformer.batching import TokenBatches, plan_epoch
from edgeformer.config import parse_card
from edgeformer.io import sha256_file
from edgeformer.train_batches import token_sampler
from edgeformer.train_data import Dataset
from tests.test_fit import FAMILIES, TINY, data_files, killed_after_first_checkpoint, run, tiny_card

LENGTHS = np.random.default_rng(7).integers(1, 33, size=300).tolist()


def test_every_batch_fits_the_token_budget_and_every_example_comes_once():
    plan = plan_epoch(LENGTHS, 96, seed=3, epoch=0)
    padded = [len(b) * max(LENGTHS[i] for i in b) for b in plan]
    assert max(padded) <= 96
    assert sorted(i for b in plan for i in b) == list(range(300))
    assert sum(LENGTHS) / sum(padded) > 0.85  # grouped by length: little padding (rows of random lengths: ~0.5)
    assert plan == plan_epoch(LENGTHS, 96, seed=3, epoch=0)
    assert plan != plan_epoch(LENGTHS, 96, seed=4, epoch=0) and plan != plan_epoch(LENGTHS, 96, seed=3, epoch=1)
    assert len(plan_epoch(LENGTHS, 96, seed=3, epoch=1)) == len(plan)  # the same count of batches every epoch


def test_ranks_share_an_epoch_and_a_long_example_is_a_message():
    make = lambda picks, gen: {"picks": torch.tensor(picks)}  # noqa: E731
    ranks = [TokenBatches(LENGTHS, 96, 3, make, rank=r, size=2) for r in range(2)]
    per_epoch = ranks[0].per_epoch
    seen = Counter(i for r in ranks for _ in range(per_epoch) for i in r(torch.Generator(), 0)["picks"].tolist())
    assert set(seen.values()) == {2} and len(seen) == 300  # two epochs over both ranks: each example twice
    ranks[1].seek(5)
    assert (
        ranks[1](torch.Generator(), 0)["picks"].tolist()
        == ranks[1].indices(5)
        == plan_epoch(LENGTHS, 96, 3, (11 // per_epoch))[11 % per_epoch]
    )
    with pytest.raises(Exception, match="--batch-tokens 16 is below the longest example \\(32 tokens\\)"):
        plan_epoch(LENGTHS, 16, 0, 0)


def test_sequence_to_sequence_batches_by_the_longer_side():
    card = parse_card(tomllib.loads(f'name = "s"\n[model]\n{FAMILIES["encoder-decoder"]}{TINY}'))
    sources = ["a" * n for n in range(1, 40)]
    targets = ["b" * (40 - n) for n in range(1, 40)]
    data = Dataset("sequence-to-sequence", sources, [], targets, {})
    sampler = token_sampler(data, card, 64, seed=0)
    batches = [sampler(torch.Generator(), 0) for _ in range(sampler.per_epoch)]
    for batch in batches:
        assert batch["input_ids"].numel() <= 64 and batch["decoder_input_ids"].numel() <= 64
    assert sum(len(b["input_ids"]) for b in batches) == 39


def test_train_batches_by_tokens_with_accumulation_and_resumes_exactly(tmp_path, monkeypatch):
    card = tiny_card(tmp_path, "encoder", 'labels = ["prose", "shuffled"]\nbatch_tokens = 40\n')
    train, _ = data_files(tmp_path, "encoder")
    flags = ["--data", train, "--steps", "4", "--grad-accum", "2", "--checkpoint-every", "2", "--log-every", "1"]
    whole = run("train", card, *flags, "-o", tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    recipe = tomllib.loads((tmp_path / "whole" / "tiny-encoder.toml").read_text())["training"]
    assert recipe["batch_tokens"] == 40 and recipe["grad_accum"] == 2

    killed_after_first_checkpoint(monkeypatch, card, flags, tmp_path / "cut")  # at step 2
    assert run("train", "--resume", tmp_path / "cut").exit_code == 0
    whole_w, cut_w = tmp_path / "whole" / "tiny-encoder.safetensors", tmp_path / "cut" / "tiny-encoder.safetensors"
    assert sha256_file(cut_w) == sha256_file(whole_w)  # the data position came back: the same batches after step 2


def test_a_batch_tokens_below_the_longest_example_is_refused_before_any_step(tmp_path):
    card = tiny_card(tmp_path, "decoder")
    train, _ = data_files(tmp_path, "decoder")
    result = run("train", card, "--data", train, "--batch-tokens", "8", "-o", tmp_path / "o")
    assert result.exit_code == 1 and "--batch-tokens 8 is below the longest example (32 tokens)" in result.output
    assert "step" not in result.stderr and not (tmp_path / "o").exists()  # nothing written: a rerun needs no --force
