"""Issue 18, "wrong answers, silently" and "resources": every numeric option and card value is
range-checked (finite, in its domain) and every count is bounded before anything is allocated."""

from __future__ import annotations

import os
import re
import time

import numpy as np
import pytest

from edgeformer import runtime
from edgeformer.runtime.sampling import Sampling, greedy, sample

# ----- sampling and generation options ------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": float("nan")}, "temperature must be a finite number >= 0"),
        ({"temperature": float("inf")}, "temperature must be a finite number >= 0"),
        ({"temperature": -1e-9}, "temperature must be a finite number >= 0"),
        ({"temperature": "1"}, "temperature must be a finite number >= 0"),
        ({"temperature": 1.0, "top_p": float("nan")}, r"top_p must be in \(0, 1\]"),
        ({"temperature": 1.0, "top_p": float("inf")}, r"top_p must be in \(0, 1\]"),
        ({"temperature": 1.0, "top_k": 2.5}, "top_k must be an integer >= 0"),
        ({"temperature": 1.0, "top_k": True}, "top_k must be an integer >= 0"),
        ({"temperature": 1.0, "seed": -1}, r"seed must be None or an integer in \[0, 2\*\*64\)"),
        ({"temperature": 1.0, "seed": 2**64}, r"seed must be None or an integer in \[0, 2\*\*64\)"),
        ({"temperature": 1.0, "seed": 1.5}, r"seed must be None or an integer"),
    ],
)
def test_sampling_refuses_values_outside_their_domain(options, message):
    with pytest.raises(runtime.OptionError, match=message):
        Sampling(**options)


def test_tiny_temperature_is_greedy_not_garbage():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 300)).astype(np.float32) * 5
    for t in (1e-310, 5e-324, 1e-300, 1e-45):
        for seed in range(4):
            got = sample(logits, Sampling(temperature=t, seed=seed), None)
            np.testing.assert_array_equal(got, greedy(logits))
    big = np.full((2, 50), 3e38, dtype=np.float32)  # logits / T would overflow even at T = 0.5
    big[:, 11] = np.float32(3.4e38)
    assert sample(big, Sampling(temperature=0.5, seed=1), None).tolist() == [11, 11]


def test_huge_top_k_keeps_every_token():
    logits = np.tile(np.array([3.0, 2.0, 1.0, 0.0], dtype=np.float32), (4000, 1))
    drawn = sample(logits, Sampling(1.0, top_k=10**30, seed=0), None)
    assert set(drawn.tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"temperature": float("nan")}, runtime.OptionError, "temperature must be a finite number >= 0"),
        (
            {"temperature": 1e-310, "seed": -1},
            runtime.OptionError,
            r"seed must be None or an integer in \[0, 2\*\*64\)",
        ),
        ({"max_new_tokens": 10**18}, runtime.SequenceTooLongError, "lower max_new_tokens"),
    ],
)
def test_generate_refuses_before_the_first_token(edge_bundle, options, error, message):
    model = runtime.load(edge_bundle("gpt-mini"), spinning=False)
    with pytest.raises(error, match=message):
        model.generate([[1, 2, 3]], **{"max_new_tokens": 4, **options})


def test_generate_with_a_tiny_temperature_equals_greedy(edge_bundle):
    model = runtime.load(edge_bundle("gpt-mini"), spinning=False)
    prompts = [[1, 2, 3], [9, 8, 7]]
    greedy_tokens = model.generate(prompts, 12, stop_tokens=())
    assert model.generate(prompts, 12, temperature=1e-310, seed=3, stop_tokens=()) == greedy_tokens


@pytest.mark.parametrize("threads", [0, -1, 100_000, 2**63, 1.5, True])
def test_threads_are_bounded(edge_bundle, threads):
    start = time.perf_counter()
    with pytest.raises(runtime.OptionError, match=r"threads must be None \(one per core\) or an integer from 1 to"):
        runtime.load(edge_bundle("gpt-mini"), threads=threads)
    assert time.perf_counter() - start < 5


def test_the_thread_bound_scales_with_the_cores():
    from edgeformer.runtime.session import max_threads, session_options

    assert max_threads() == max(64, 4 * (os.cpu_count() or 1))
    assert session_options(threads=max_threads()).intra_op_num_threads == max_threads()


# ----- card values --------------------------------------------------------------------------------

CARD = """name = "hostile"

[model]
family = "decoder"
vocab_size = 64
d_model = 32
n_heads = 4
n_layers = 2
head = "lm"
"""


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("layer_norm_eps = inf", r"\[model\]\.layer_norm_eps: must be a finite number with 0 < eps < 1"),
        ("layer_norm_eps = nan", r"\[model\]\.layer_norm_eps: must be a finite number with 0 < eps < 1"),
        ("layer_norm_eps = -inf", r"\[model\]\.layer_norm_eps: must be a finite number"),
        ("layer_norm_eps = 1.5", r"\[model\]\.layer_norm_eps: must be a finite number with 0 < eps < 1"),
        ("dropout = nan", r"\[model\]\.dropout: must be a number in \[0, 1\)"),
        ("attention_dropout = inf", r"\[model\]\.attention_dropout: must be a number in \[0, 1\)"),
        ("n_layers = 1000000", r"\[model\]\.n_layers: must be an integer from 1 to 1,024, got 1000000"),
        ("n_layers = 1000000000", r"\[model\]\.n_layers: must be an integer from 1 to 1,024"),
        ("d_model = 99999999999999999", r"\[model\]\.d_model: must be an integer from 1 to 65,536"),
        ("vocab_size = 4294967296", r"\[model\]\.vocab_size: must be an integer from 1 to 16,777,216"),
        ("max_positions = 1099511627776", r"\[model\]\.max_positions: must be an integer from 1 to 1,048,576"),
        ("d_ff = 9223372036854775807", r"\[model\]\.d_ff: must be an integer from 0 to 262,144"),
        ("type_vocab_size = 10000000", r"\[model\]\.type_vocab_size: must be an integer from 0 to 65,536"),
    ],
)
def test_card_values_are_finite_and_bounded(tmp_path, line, message):
    from edgeformer.config import load_card
    from edgeformer.errors import CardError

    card = tmp_path / "hostile.toml"
    key = line.split(" = ")[0]
    text = "\n".join(ln for ln in CARD.splitlines() if not ln.startswith(f"{key} =")) + f"\n{line}\n"
    card.write_text(text)
    start = time.perf_counter()
    with pytest.raises(CardError, match=message):
        load_card(card)
    assert time.perf_counter() - start < 0.5  # refused from the numbers, nothing allocated


@pytest.mark.parametrize("line", ["n_layers = 1000000", "layer_norm_eps = inf", "n_heads = 1000000000"])
def test_export_of_a_hostile_card_exits_1_at_once(tmp_path, line):
    from click.testing import CliRunner

    from edgeformer.cli import main

    key = line.split(" = ")[0]
    card = tmp_path / "hostile.toml"
    card.write_text("\n".join(ln for ln in CARD.splitlines() if not ln.startswith(f"{key} =")) + f"\n{line}\n")
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["export", str(card), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert f"[model].{key}" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() and time.perf_counter() - start < 5


# ----- budgets and command-line numbers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("cosine=nan", "cosine must be a finite number from 0 to 1"),
        ("cosine=inf", "cosine must be a finite number from 0 to 1"),
        ("cosine=-0.5", "cosine must be from 0 to 1, got -0.5"),
        ("cosine=1.5", "cosine must be from 0 to 1, got 1.5"),
        ("top1=nan", "top1 must be a finite number from 0 to 1"),
        ("top1=2", "top1 must be from 0 to 1, got 2"),
        ("perplexity=0.5", "perplexity must be from 1 to 1e+06, got 0.5"),
        ("perplexity=-inf", "perplexity must be a finite number"),
        ("perplexity=nan", "perplexity must be a finite number"),
    ],
)
def test_budgets_are_in_their_metric_domain(item, message):
    from edgeformer.budget import parse_budget
    from edgeformer.errors import CardError
    from edgeformer.targets import parse_target

    with pytest.raises(ValueError, match=re.escape(message)):
        parse_budget([item])
    name, _, value = item.partition("=")
    with pytest.raises(CardError, match=re.escape(message)):
        parse_target({"name": "t", "precision": "int8", "budget": {name: float(value)}})


def test_quantize_budget_nan_is_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from edgeformer.cli import main

    result = CliRunner().invoke(main, ["quantize", str(tmp_path / "no-bundle"), "--budget", "cosine=nan"])
    assert result.exit_code == 2 and "cosine must be a finite number from 0 to 1" in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["quantize", "b", "--samples", "100000000"], "--samples"),
        (["check", "b", "--steps", "10000000000"], "--steps"),
        (["check", "b", "--max-sequence", "99999999999"], "--max-sequence"),
        (["export", "bert-mini", "--max-sequence", "99999999999"], "--max-sequence"),
        (["train", "demo-decoder", "--steps", "10000000000"], "--steps"),
        (["fuse", "m.onnx", "--dim", "sequence=99999999999"], "positive integer up to 1,048,576"),
        (["bench", "b", "--time-budget", "nan"], "not a finite number"),
        (["bench", "b", "--time-budget", "inf"], "--time-budget"),
        (["bench", "b", "--repeats", "100000"], "--repeats"),
        (["bench", "b", "--limits-matmul", "1000000"], "--limits-matmul"),
        (["bench", "b", "--seed", "-99999999999999999999999"], "--seed"),
    ],
)
def test_numeric_options_are_bounded(tmp_path, monkeypatch, args, words):
    from click.testing import CliRunner

    from edgeformer.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.onnx").write_bytes(b"")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output


def test_bench_batch_is_bounded():
    from edgeformer.benchmark.options import Settings
    from edgeformer.benchmark.settings import resolve

    with pytest.raises(runtime.OptionError, match="--batch values must be integers from 1 to 4,096, got 1000000"):
        resolve(Settings(batches=(1, 10**6)), "decoder", {"max_positions": 64})


# ----- parity: torch and ONNX agreeing on NaN is not parity -----------------------------------------

NONSENSE = """
import torch
from torch import nn


class Nonsense(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)

    def forward(self, tokens):
        h = self.embed(tokens)
        return {"hidden": h * torch.log(h - h - 1.0)}  # log(-1): NaN in torch and in onnxruntime alike


def make():
    return Nonsense()


make.edgeformer_io = {"inputs": {"tokens": {"dtype": "int64", "shape": ["batch", "sequence"], "high": 20}}}
"""


def test_parity_refuses_outputs_that_are_not_finite(tmp_path, monkeypatch):
    from edgeformer.errors import ParityError
    from edgeformer.export.source import source_from_factory
    from edgeformer.parity import compare
    from edgeformer.pipeline import export_bundle
    from edgeformer.zoo import resolve_target

    both = np.array([[1.0, np.nan, np.inf]])
    report = compare("logits", both, both.copy(), 1e-4)
    assert not report.ok and report.non_finite == "torch source 1 NaN, 1 inf; ONNX 1 NaN, 1 inf"
    assert not compare("x", np.zeros(3), np.array([0.0, np.inf, 0.0]), float("inf")).ok  # a budget's limit too

    (tmp_path / "nonsense_module.py").write_text(NONSENSE)
    monkeypatch.syspath_prepend(str(tmp_path))
    source = source_from_factory("nonsense_module:make")
    with pytest.raises(ParityError, match=r"hidden is not finite \(torch source \d+ NaN, 0 inf; ONNX \d+ NaN, 0 inf\)"):
        export_bundle(source, resolve_target("cpu-fp32"), tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


# ----- training recipes and the memory check before training --------------------------------------


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"lr": float("nan")}, r"\[training\]\.lr must be a finite number in \(0, 10\)"),
        ({"lr": float("inf")}, r"\[training\]\.lr must be a finite number in \(0, 10\)"),
        ({"grad_clip": float("nan")}, r"\[training\]\.grad_clip must be a finite number"),
        ({"betas": [0.9, float("nan")]}, r"\[training\]\.betas must be two numbers, each in \[0, 1\)"),
        ({"betas": [0.9]}, r"\[training\]\.betas must be two numbers"),
        ({"batch_size": 10**9}, r"\[training\]\.batch_size must be an integer from 1 to 4,096"),
        ({"steps": 10**12}, r"\[training\]\.steps must be an integer from 1 to 100,000,000"),
    ],
)
def test_training_recipes_are_range_checked(training, message):
    import dataclasses

    from edgeformer.demo import train_config_of
    from edgeformer.errors import CardError
    from edgeformer.zoo import resolve_card

    card = resolve_card("demo-decoder")
    card = dataclasses.replace(card, training={**card.training, **training})
    with pytest.raises(CardError, match=message):
        train_config_of(card)


def test_training_checks_memory_before_building(tmp_path, monkeypatch):
    import dataclasses

    import edgeformer.limits
    from edgeformer.demo import train_demo
    from edgeformer.errors import ResourceError
    from edgeformer.zoo import resolve_card

    monkeypatch.setattr(edgeformer.limits, "available_memory", lambda: 10**9)
    card = resolve_card("demo-decoder")
    card = dataclasses.replace(card, config=card.config.replace(d_model=4096, n_heads=32, n_layers=48))
    start = time.perf_counter()
    with pytest.raises(ResourceError, match="refused before building the model"):
        train_demo(card, tmp_path / "ckpt.safetensors")
    assert time.perf_counter() - start < 20 and not (tmp_path / "ckpt.safetensors").exists()
