"""Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p.

Greedy is ``argmax`` (the first index among equal maxima, like ``numpy.argmax``). Sampling draws
one uniform number per row from a seeded ``numpy.random.Generator``, so the same seed gives the
same tokens; with ``top_k=1`` it picks exactly the greedy token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeformer.runtime.errors import OptionError


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens. temperature 0 is greedy; top_k 0 and top_p 1.0 keep every token."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.temperature, int | float) or self.temperature < 0:
            raise OptionError(f"temperature must be >= 0 (0 is greedy), got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise OptionError(f"top_k must be an integer >= 0 (0 keeps every token), got {self.top_k!r}")
        if not isinstance(self.top_p, int | float) or not 0.0 < self.top_p <= 1.0:
            raise OptionError(f"top_p must be in (0, 1] (1 keeps every token), got {self.top_p!r}")

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
    scores = logits.astype(np.float64) / how.temperature  # (B, V)
    order = np.argsort(-scores, axis=-1, kind="stable")  # best first; ties keep the lower id first
    ranked = np.take_along_axis(scores, order, axis=-1)
    probs = np.exp(ranked - ranked[:, :1])  # (B, V), largest is 1
    if how.top_k:
        probs[:, how.top_k :] = 0.0
    probs /= probs.sum(-1, keepdims=True)
    if how.top_p < 1.0:
        before = np.cumsum(probs, axis=-1) - probs  # mass of the better-ranked tokens
        probs = np.where(before < how.top_p, probs, 0.0)  # the smallest prefix reaching top_p
        probs /= probs.sum(-1, keepdims=True)
    cdf = np.cumsum(probs, axis=-1)
    draws = rng.random((logits.shape[0], 1)) * cdf[:, -1:]
    picks = np.minimum((cdf <= draws).sum(-1), np.count_nonzero(probs, axis=-1) - 1)  # rank of the draw
    return order[np.arange(logits.shape[0]), picks].astype(np.int64)
