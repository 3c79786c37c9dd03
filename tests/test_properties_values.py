"""Property-based: the number classes of issue 18 ("wrong answers, silently", "resources"): NaN,
the infinities, negative and huge counts, in cards, config.json, sampling options, budgets and
training recipes. Each case either is accepted with every value in its domain, or raises the
library's typed error at once (nothing is allocated first); nothing else."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from props import fuzz, outcome

from edgeformer.config import COUNT_LIMITS, ModelCard, parse_card
from edgeformer.errors import CardError, EdgeformerError
from edgeformer.runtime.errors import OptionError
from edgeformer.runtime.sampling import Sampling, greedy, sample

NON_FINITE = [float("nan"), float("inf"), float("-inf")]
HUGE = [2**31, 2**32 + 1, 10**6, 10**9, 10**12, 2**63 - 1, 10**30, -(2**63), -1]

# numbers a hostile file may hold: plausible, edge, non-finite, huge
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([*NON_FINITE, 0.0, -0.0, 5e-324, 1e-310, 1e308, 1.0, 0.5]),
)
counts = st.one_of(st.integers(-5, 300), st.sampled_from(HUGE), st.integers(-(2**80), 2**80))
numbers = st.one_of(floats, counts)

BASE = {"family": "decoder", "vocab_size": 64, "d_model": 32, "n_heads": 4, "n_layers": 1, "head": "lm"}
FLOAT_KEYS = ["layer_norm_eps", "dropout", "attention_dropout"]
INT_KEYS = sorted(COUNT_LIMITS) + ["pad_token_id", "bos_token_id", "eos_token_id"]


def _in_domain(card: ModelCard) -> None:
    cfg = card.config
    assert math.isfinite(cfg.layer_norm_eps) and 0 < cfg.layer_norm_eps < 1
    assert all(math.isfinite(v) and 0 <= v < 1 for v in (cfg.dropout, cfg.attention_dropout))
    for key, limit in COUNT_LIMITS.items():
        assert 0 <= getattr(cfg, key) <= limit, key


@fuzz(1500)
@given(st.dictionaries(st.sampled_from(FLOAT_KEYS + INT_KEYS), numbers, min_size=1, max_size=4))
def test_card_numbers_are_finite_and_bounded(changes):
    start = time.perf_counter()
    result = outcome("card numbers", lambda: parse_card({"name": "n", "model": {**BASE, **changes}}), CardError)
    assert time.perf_counter() - start < 0.5  # refused or accepted from the numbers alone
    if isinstance(result, ModelCard):
        _in_domain(result)


temperatures = st.one_of(floats, st.integers(-3, 3), st.sampled_from([np.float32(0.7), np.float64(1e-300)]))
seeds = st.one_of(st.none(), counts, st.sampled_from([np.int64(3), np.uint64(2**63), 1.0, True]))


@fuzz(1500)
@given(temperatures, st.one_of(counts, st.just(True)), st.one_of(floats, st.integers(-1, 2)), seeds, st.integers(0, 9))
def test_sampling_options_are_refused_or_give_valid_tokens(temperature, top_k, top_p, seed, which):
    how = outcome("sampling options", lambda: Sampling(temperature, top_k, top_p, seed), OptionError)
    if not isinstance(how, Sampling):
        return
    assert math.isfinite(how.temperature) and how.temperature >= 0 and 0 < how.top_p <= 1
    logits = np.random.default_rng(which).normal(size=(3, 17)).astype(np.float32) * 10 ** (which - 4)
    tokens = outcome("sampled tokens", lambda: sample(logits, how, None), OptionError)
    assert tokens.dtype == np.int64 and tokens.shape == (3,) and ((tokens >= 0) & (tokens < 17)).all()
    if how.temperature and how.temperature < 1e-30:  # tiny temperatures are greedy, never garbage
        assert (tokens == greedy(logits)).all()


@fuzz(800)
@given(st.sampled_from(["cosine", "top1", "perplexity"]), st.one_of(floats, st.sampled_from(["nan", "inf", "-1e9"])))
def test_budgets_are_refused_or_in_their_domain(metric, value):
    from edgeformer.budget import DOMAINS, parse_budget

    got = outcome("budget", lambda: parse_budget([f"{metric}={value}"]), ValueError)
    if isinstance(got, dict):
        low, high = DOMAINS[metric]
        assert math.isfinite(got[metric]) and low <= got[metric] <= high


@fuzz(500)
@given(st.dictionaries(st.sampled_from(["lr", "grad_clip", "betas", "batch_size", "steps", "min_lr_ratio"]), numbers))
def test_training_recipes_are_refused_or_in_their_domain(training):
    import dataclasses

    from edgeformer.demo import train_config_of
    from edgeformer.zoo import resolve_card

    card = resolve_card("demo-decoder")
    training = {k: ([v, 0.9] if k == "betas" else v) for k, v in training.items()}
    cfg = outcome("training recipe", lambda: train_config_of(dataclasses.replace(card, training=training)), CardError)
    if not isinstance(cfg, Exception):
        assert math.isfinite(cfg.lr) and cfg.lr > 0 and all(math.isfinite(b) for b in cfg.betas)
        assert 1 <= cfg.batch_size <= 4096 and 1 <= cfg.steps <= 10**8


GPT2 = {"architectures": ["GPT2LMHeadModel"], "vocab_size": 64, "n_embd": 32, "n_head": 4, "n_layer": 1}
GPT2_KEYS = ["vocab_size", "n_embd", "n_head", "n_layer", "n_positions", "n_inner", "layer_norm_epsilon"]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hf")


@fuzz(300)
@given(st.dictionaries(st.sampled_from(GPT2_KEYS), numbers, max_size=3))
def test_config_json_numbers_are_refused_before_any_weight(hf_dir, changes):
    from edgeformer.importers import import_directory

    config = {"n_positions": 16, **GPT2, **changes}
    (hf_dir / "config.json").write_text(json.dumps(config))  # NaN and Infinity are JSON's extensions
    start = time.perf_counter()
    error = outcome("config.json numbers", lambda: import_directory(hf_dir), EdgeformerError)
    assert isinstance(error, EdgeformerError)  # there are no weights: at best "has no weights"
    assert time.perf_counter() - start < 5
