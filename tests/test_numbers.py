"""One rule for a finite number: an integer too large for a float is refused like NaN, everywhere
(the property suite of card files found ``10**400`` escaping as an OverflowError)."""

from __future__ import annotations

import math

import pytest

from edgeformer.budget import budget_problem
from edgeformer.config import ModelConfig
from edgeformer.errors import CardError
from edgeformer.numbers import finite_number
from edgeformer.runtime.errors import OptionError
from edgeformer.runtime.sampling import Sampling

HUGE = 10**400


@pytest.mark.parametrize("value", [0, -3, 1.5, 1e308, 10**300])
def test_finite_numbers(value):
    assert finite_number(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, HUGE, -HUGE, True, "1", None, [1]])
def test_not_finite_numbers(value):
    assert not finite_number(value)


def test_a_huge_integer_is_a_typed_refusal_in_cards_sampling_and_budgets():
    with pytest.raises(CardError, match="layer_norm_eps"):
        ModelConfig(family="decoder", vocab_size=8, d_model=8, n_heads=2, n_layers=1, layer_norm_eps=HUGE)
    with pytest.raises(OptionError, match="temperature"):
        Sampling(temperature=HUGE)
    assert "finite number" in (budget_problem("cosine", HUGE) or "")
