"""Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p.

Greedy is ``argmax`` (the first index among equal maxima, like ``numpy.argmax``). Sampling draws
one uniform number per row from a seeded ``numpy.random.Generator``, so the same seed gives the
same tokens; with ``top_k=1`` it picks exactly the greedy token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeformer.numbers import finite_number
from edgeformer.runtime.errors import OptionError

SEED_LIMIT = 2**64  # numpy's generators take any non-negative integer; larger seeds add nothing


def _number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _integer(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens. temperature 0 is greedy; top_k 0 and top_p 1.0 keep every token."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not finite_number(self.temperature) or self.temperature < 0:
            raise OptionError(f"temperature must be a finite number >= 0 (0 is greedy), got {self.temperature!r:.40}")
        if not _integer(self.top_k) or self.top_k < 0:
            raise OptionError(f"top_k must be an integer >= 0 (0 keeps every token), got {self.top_k!r:.40}")
        if not _number(self.top_p) or not 0.0 < self.top_p <= 1.0:  # NaN fails the comparison
            raise OptionError(f"top_p must be in (0, 1] (1 keeps every token), got {self.top_p!r:.40}")
        if self.seed is not None and (not _integer(self.seed) or not 0 <= self.seed < SEED_LIMIT):
            raise OptionError(f"seed must be None or an integer in [0, 2**64), got {self.seed!r:.40}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def greedy(logits: np.ndarray) -> np.ndarray:
    """(B, V) -> (B,) int64 argmax."""
    return logits.argmax(-1).astype(np.int64)


def sample(logits: np.ndarray, how: Sampling, rng: np.random.Generator | None) -> np.ndarray:
    """(B, V) logits -> (B,) int64 tokens, one draw per row from the filtered distribution
    (``rng`` may be None for greedy)."""
    if how.greedy:
        return greedy(logits)
    if rng is None:
        rng = np.random.default_rng(how.seed)
    scores = logits.astype(np.float64)
    # shift before dividing: (x - max) / T is <= 0, so a tiny T gives -inf (probability 0) where
    # x / T would overflow to inf and inf - inf = NaN; the best token keeps 0 (probability 1)
    with np.errstate(over="ignore"):  # -inf is the intended result
        scores = (scores - scores.max(-1, keepdims=True)) / how.temperature  # (B, V)
    order = np.argsort(-scores, axis=-1, kind="stable")  # best first; ties keep the lower id first
    ranked = np.take_along_axis(scores, order, axis=-1)
    probs = np.exp(ranked)  # (B, V), largest is 1
    if how.top_k:
        probs[:, min(how.top_k, probs.shape[-1]) :] = 0.0
    probs /= probs.sum(-1, keepdims=True)
    if how.top_p < 1.0:
        before = np.cumsum(probs, axis=-1) - probs  # mass of the better-ranked tokens
        probs = np.where(before < how.top_p, probs, 0.0)  # the smallest prefix reaching top_p
        probs /= probs.sum(-1, keepdims=True)
    cdf = np.cumsum(probs, axis=-1)
    draws = rng.random((logits.shape[0], 1)) * cdf[:, -1:]
    picks = np.minimum((cdf <= draws).sum(-1), np.count_nonzero(probs, axis=-1) - 1)  # rank of the draw
    return order[np.arange(logits.shape[0]), picks].astype(np.int64)
