"""`edgeformer train CARD --data ...` (issue #22): every family from its kind of data, the recipe from
flags and the card, bad data refused before any step, checkpoints that resume exactly."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeformer.cli import main
from edgeformer.io import sha256_file
from edgeformer.nn.training import TrainConfig, lr_multiplier

TINY = """
vocab_size = 259
d_model = 32
n_heads = 2
n_layers = 1
max_positions = 32
pad_token_id = 256
bos_token_id = 257
eos_token_id = 258
"""
FAMILIES = {
    "decoder": 'family = "decoder"\nhead = "lm"\npositions = "learned"\n',
    "encoder": 'family = "encoder"\nhead = "classification"\nnum_labels = 2\n',
    "encoder-decoder": 'family = "encoder-decoder"\nhead = "lm"\n',
    "encoder-mlm": 'family = "encoder"\nhead = "lm"\n',
}


def tiny_card(tmp_path: Path, family: str, training: str = "") -> Path:
    card = tmp_path / f"tiny-{family}.toml"
    text = f'name = "tiny-{family}"\ntokenizer = "bytes"\n\n[model]\n{FAMILIES[family]}{TINY}'
    card.write_text(text + (f"\n[training]\n{training}" if training else ""))
    return card


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def killed_after_first_checkpoint(monkeypatch, card: Path, flags: list, out: Path) -> None:
    """``train card flags -o out``, killed (exit 137) right after its first checkpoint is written."""
    from edgeformer import fit

    real = fit.save_state

    def save_then_die(out, model, state, run_info):
        real(out, model, state, run_info)
        raise SystemExit(137)

    monkeypatch.setattr(fit, "save_state", save_then_die)
    assert run("train", card, *flags, "-o", out).exit_code == 137
    monkeypatch.setattr(fit, "save_state", real)


def data_files(tmp_path: Path, family: str) -> tuple[Path, Path]:
    if family in ("decoder", "encoder-mlm"):
        (tmp_path / "a.txt").write_text("Return the absolute value of the argument.\n" * 20)
        (tmp_path / "b.txt").write_text("Return the sum of a and b.\n" * 5)
        return tmp_path / "a.txt", tmp_path / "b.txt"
    if family == "encoder":
        rows = [{"text": "Return the value.", "label": "prose"}, {"text": "value the Return.", "label": "shuffled"}]
        (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows * 4) + "\n")
        (tmp_path / "valid.csv").write_text("text,label\nReturn the sum.,0\nsum the Return.,1\n")
        return tmp_path / "train.jsonl", tmp_path / "valid.csv"
    (tmp_path / "train.tsv").write_text("Return the absolute value.\tabs\nReturn the sum.\tsum\n" * 4)
    (tmp_path / "valid.jsonl").write_text(json.dumps({"source": "Return the sum.", "target": "sum"}) + "\n")
    return tmp_path / "train.tsv", tmp_path / "valid.jsonl"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_trains_from_its_data(tmp_path, family):
    card = tiny_card(tmp_path, family, 'labels = ["prose", "shuffled"]\n' if family == "encoder" else "")
    train, valid = data_files(tmp_path, family)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "train",
            str(card),
            "--data",
            str(train),
            "--valid",
            str(valid),
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--log-every",
            "1",
            "-o",
            str(out),
        ],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    assert "step 3/3" in result.stderr and "eta" in result.stderr
    written = tomllib.loads((out / f"tiny-{family}.toml").read_text())
    assert written["checkpoint_sha256"] == sha256_file(out / f"tiny-{family}.safetensors")
    metrics = written["metrics"]
    if family == "encoder":
        assert metrics["examples"] == 2 and 0 <= metrics["balanced_accuracy"] <= 1
        assert written["training"]["labels"] == ["prose", "shuffled"]
    else:
        assert 1 < metrics["valid_perplexity"] < 1000 and metrics["valid_tokens"] > 0
    assert math.isfinite(metrics["train_loss"]) and len(metrics["data_sha256"]) == 64
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert written["training"]["steps"] == 3 and written["training"]["task"]
    assert set(json.loads((out / "edgeformer-train.json").read_text())["files"]) >= {
        f"tiny-{family}.toml",
        f"tiny-{family}.safetensors",
        "log.jsonl",
    }


def test_flags_override_the_cards_recipe_and_are_recorded(tmp_path):
    card = tiny_card(tmp_path, "decoder", 'lr = 0.01\nschedule = "linear"\nbatch_size = 2\n')
    train, _ = data_files(tmp_path, "decoder")
    result = run("train", card, "--data", train, "--steps", "2", "--lr", "0.002", "--schedule", "cosine",
                 "--warmup", "1", "--adam-betas", "0.9", "0.98", "--adam-eps", "1e-9", "--label-smoothing", "0.1",
                 "--dropout", "0.2", "--grad-accum", "2", "--weight-decay", "0", "--grad-clip", "0.5",
                 "-o", tmp_path / "out")  # fmt: skip
    assert result.exit_code == 0, result.output
    recipe = tomllib.loads((tmp_path / "out" / "tiny-decoder.toml").read_text())["training"]
    assert recipe["lr"] == 0.002 and recipe["schedule"] == "cosine" and recipe["batch_size"] == 2
    assert recipe["betas"] == [0.9, 0.98] and recipe["eps"] == 1e-9 and recipe["label_smoothing"] == 0.1
    assert recipe["dropout"] == 0.2 and recipe["grad_accum"] == 2 and recipe["grad_clip"] == 0.5
    assert recipe["task"] == "language-model"


@pytest.mark.parametrize(
    ("family", "name", "content", "says"),
    [
        ("decoder", "empty.txt", b"  \n", "empty.txt: the file is empty"),
        ("decoder", "bad.txt", b"fine\nfine\nbad \xff byte\n", "bad.txt:3: bytes that are not UTF-8"),
        ("encoder", "l.jsonl", b'{"text": "a b c", "label": 1}\n{"text": "x", "label": "nine"}\n', "l.jsonl:2: label"),
        ("encoder", "l.csv", b"text,label\nok,1\nno,7\n", "l.csv:3: label '7' is not in the card"),
        ("encoder-decoder", "p.tsv", b"a\tb\nno target here\n", "p.tsv:2: no 'target'"),
        ("encoder-decoder", "p.jsonl", b'{"source": "a"}\n', "p.jsonl:1: no 'target'"),
    ],
)
def test_bad_data_is_refused_with_file_and_line_before_any_step(tmp_path, family, name, content, says):
    (tmp_path / name).write_bytes(content)
    result = run("train", tiny_card(tmp_path, family), "--data", tmp_path / name, "-o", tmp_path / "out")
    assert result.exit_code == 1 and says in result.output, result.output
    assert "Traceback" not in result.output and "step" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_card_without_weights_or_recipe_and_without_data_gets_a_message(tmp_path):
    result = run("train", tiny_card(tmp_path, "encoder-decoder"), "-o", tmp_path / "out")
    assert result.exit_code == 1 and "give --data FILE" in result.output and "Traceback" not in result.output


def test_init_starts_from_given_weights(tmp_path):
    card = tiny_card(tmp_path, "decoder")
    train, _ = data_files(tmp_path, "decoder")
    assert run("train", card, "--data", train, "--steps", "2", "-o", tmp_path / "a").exit_code == 0
    again = run("train", card, "--data", train, "--steps", "1", "--lr", "1e-9", "--warmup", "0", "--init",
                tmp_path / "a", "--seed", "5", "-o", tmp_path / "b")  # fmt: skip
    assert again.exit_code == 0, again.output
    from safetensors.torch import load_file

    before, after = (
        load_file(tmp_path / "a" / "tiny-decoder.safetensors"),
        load_file(tmp_path / "b" / "tiny-decoder.safetensors"),
    )
    assert max((before[k] - after[k]).abs().max().item() for k in before) < 1e-6


def test_existing_output_needs_force_and_foreign_files_are_kept(tmp_path):
    card = tiny_card(tmp_path, "decoder")
    train, _ = data_files(tmp_path, "decoder")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    result = run("train", card, "--data", train, "--steps", "1", "-o", tmp_path / "mine", "--force")
    assert result.exit_code == 1 and "notes.txt" in result.output
    assert run("train", card, "--data", train, "--steps", "1", "-o", tmp_path / "o").exit_code == 0
    result = run("train", card, "--data", train, "--steps", "1", "-o", tmp_path / "o")
    assert result.exit_code == 1 and "--force" in result.output
    assert run("train", card, "--data", train, "--steps", "1", "-o", tmp_path / "o", "--force").exit_code == 0


def test_resume_after_an_interruption_gives_the_uninterrupted_weights(tmp_path, monkeypatch):
    card = tiny_card(tmp_path, "decoder", "dropout = 0.1\n")
    train, _ = data_files(tmp_path, "decoder")
    flags = ["--data", train, "--steps", "6", "--batch-size", "2", "--checkpoint-every", "3", "--warmup", "2"]
    assert run("train", card, *flags, "-o", tmp_path / "whole").exit_code == 0

    killed_after_first_checkpoint(monkeypatch, card, flags, tmp_path / "cut")  # at step 3
    assert not (tmp_path / "cut" / "tiny-decoder.safetensors").exists()
    assert json.loads((tmp_path / "cut" / "checkpoint" / "run.json").read_text())["step"] == 3
    result = run("train", "--resume", tmp_path / "cut")
    assert result.exit_code == 0, result.output
    assert "step 4/6" in result.stderr or "step 6/6" in result.stderr
    whole, cut = tmp_path / "whole" / "tiny-decoder.safetensors", tmp_path / "cut" / "tiny-decoder.safetensors"
    assert sha256_file(whole) == sha256_file(cut)


def test_resume_of_a_directory_without_checkpoint_is_a_message(tmp_path):
    (tmp_path / "d").mkdir()
    result = run("train", "--resume", tmp_path / "d")
    assert result.exit_code == 1 and "no checkpoint/ there" in result.output


def test_schedules():
    paper = TrainConfig(schedule="inverse-sqrt", warmup_steps=4000, lr=512**-0.5 * 4000**-0.5)
    for step in (0, 99, 3999, 4000, 50_000):
        n = step + 1
        want = 512**-0.5 * min(n**-0.5, n * 4000**-1.5)  # the paper's rate for d_model 512
        assert paper.lr * lr_multiplier(step, paper) == pytest.approx(want, rel=1e-12)
    cosine = TrainConfig(schedule="cosine", steps=110, warmup_steps=10, min_lr_ratio=0.0)
    assert lr_multiplier(9, cosine) == pytest.approx(1.0)
    assert lr_multiplier(60, cosine) == pytest.approx(0.5)
    assert lr_multiplier(110, cosine) == pytest.approx(0.0, abs=1e-12)


def test_a_bad_schedule_in_the_card_is_a_message(tmp_path):
    train, _ = data_files(tmp_path, "decoder")
    result = run("train", tiny_card(tmp_path, "decoder", 'schedule = "noam"\n'), "--data", train, "-o", tmp_path / "o")
    assert result.exit_code == 1 and "[training].schedule must be one of linear, cosine, inverse-sqrt" in result.output


def test_export_takes_the_training_output_directory(tmp_path):
    """... with the tokenizer.json the card names, which training copies into its output."""
    from tests.test_fit_tokenizer import word_tokenizer

    card = tiny_card(tmp_path, "encoder-decoder")
    card.write_text(card.read_text().replace('tokenizer = "bytes"', 'tokenizer = "words.json"'))
    tok = word_tokenizer(tmp_path / "words.json")
    train, _ = data_files(tmp_path, "encoder-decoder")
    assert run("train", card, "--data", train, "--steps", "1", "-o", tmp_path / "trained").exit_code == 0
    assert (
        tomllib.loads((tmp_path / "trained" / card.name).read_text())["tokenizer"]
        == "tiny-encoder-decoder.tokenizer.json"
    )
    result = run("export", tmp_path / "trained", "-o", tmp_path / "bundle")
    assert result.exit_code == 0, result.output
    assert "parity ok" in result.output and (tmp_path / "bundle" / "manifest.json").is_file()
    assert json.loads((tmp_path / "bundle" / "manifest.json").read_text())["tokenizer"] == "tokenizer.json"
    assert (tmp_path / "bundle" / "tokenizer.json").read_bytes() == tok.read_bytes()


def test_two_ranks_under_torchrun_follow_one_process(tmp_path):
    """torchrun --nproc_per_node=2 (gloo): the same global batch split over two ranks gives one
    process's losses, and rank 0 alone writes the output."""
    card = tiny_card(tmp_path, "decoder")
    train, _ = data_files(tmp_path, "decoder")
    flags = ["--data", train, "--steps", "20", "--batch-size", "4", "--warmup", "2", "--dropout", "0"]
    flags += ["--log-every", "1"]
    assert run("train", card, *flags, "-o", tmp_path / "one").exit_code == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    args = ["-m", "edgeformer.cli", "train", card, *flags, "-o", tmp_path / "two"]
    done = subprocess.run([*torchrun, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count('"sha256"') == 1  # one report, from rank 0
    assert done.stderr.count("step 20/20") == 1

    def losses(out):
        return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]

    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 20
    assert max(abs(a - b) for a, b in zip(one, two, strict=True)) < 1e-5


def test_a_global_batch_that_does_not_split_over_the_ranks_is_a_message(tmp_path, monkeypatch):
    from edgeformer import distributed

    monkeypatch.setattr(distributed, "world", lambda: (0, 3))
    with pytest.raises(Exception, match="global batch size 4 does not split over 3 ranks"):
        distributed.shard(lambda gen, b: {}, 4)


def test_masked_lm_corrupts_fifteen_percent_like_bert():
    import torch

    from edgeformer.config import parse_card
    from edgeformer.fit import mask_tokens

    card = parse_card(tomllib.loads(f'name = "m"\n[model]\n{FAMILIES["encoder-mlm"]}{TINY}'))
    ids = torch.randint(0, 256, (64, 32), generator=torch.Generator().manual_seed(1))
    batch = mask_tokens(ids, card, torch.Generator().manual_seed(2))
    chosen = batch["labels"] != -100
    assert 0.12 < chosen.float().mean().item() < 0.18 and chosen.any(1).all()
    assert torch.equal(batch["labels"][chosen], ids[chosen]) and torch.equal(batch["input_ids"][~chosen], ids[~chosen])
    masked = (batch["input_ids"] == 256) & chosen
    assert 0.7 < masked.sum().item() / chosen.sum().item() < 0.9


def test_bf16_autocast_and_gradient_checkpointing(tmp_path):
    card = tiny_card(tmp_path, "decoder")
    train, _ = data_files(tmp_path, "decoder")
    flags = ["--data", train, "--steps", "3", "--dropout", "0", "--log-every", "1", "--batch-size", "2"]

    def losses(name, *more):
        result = run("train", card, *flags, *more, "-o", tmp_path / name)
        assert result.exit_code == 0, result.output
        return [json.loads(line)["loss"] for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]

    plain = losses("plain")
    assert losses("ckpt", "--gradient-checkpointing") == pytest.approx(plain, abs=1e-6)  # same numbers, less memory
    bf16 = losses("bf16", "--precision", "bf16")
    assert bf16 != plain and bf16 == pytest.approx(plain, abs=0.05)  # bfloat16 rounding, the same training
    recipe = tomllib.loads((tmp_path / "bf16" / "tiny-decoder.toml").read_text())["training"]
    assert recipe["precision"] == "bf16"
