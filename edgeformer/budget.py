"""Accuracy budgets: what a reduced-precision graph must keep of the float graph's behaviour.

cosine      mean cosine similarity of every float output (hidden states, embeddings, logits),
            token by token over real (unpadded) positions: at least this
top1        agreement of argmax(logits) with the float graph, over real positions: at least this
perplexity  the reduced graph's perplexity over the float graph's on the same tokens: at most this
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeformer.numbers import finite_number

BUDGET_METRICS = ("cosine", "top1", "perplexity")
HIGHER_IS_BETTER = {"cosine": True, "top1": True, "perplexity": False}

# The default budgets, per precision. int8 keeps embeddings within 1% of cosine and 99% of the
# argmax decisions; a decoder's perplexity may grow by 2%.
DEFAULT_BUDGETS = {
    "int8": {"cosine": 0.99, "top1": 0.99, "perplexity": 1.02},
    "fp16": {"cosine": 0.9999, "top1": 0.995, "perplexity": 1.002},
    "int4": {"cosine": 0.98, "top1": 0.9, "perplexity": 1.1},
    "fp32": {},
}


def budget_for(precision: str, given: dict[str, float] | None = None) -> dict[str, float]:
    budget = dict(DEFAULT_BUDGETS.get(precision, {}))
    budget.update(given or {})
    return budget


# Each metric's domain: cosine and top-1 agreement are fractions (at least this much), the
# perplexity ratio is at most this and at least 1 (the float graph itself); NaN and infinities
# would make every comparison false, so a bundle "within budget" would have been judged by nothing.
DOMAINS = {"cosine": (0.0, 1.0), "top1": (0.0, 1.0), "perplexity": (1.0, 1e6)}


def budget_problem(name: str, value: object) -> str | None:
    """Why ``value`` is not a budget for ``name`` (None when it is one)."""
    low, high = DOMAINS[name]
    if not finite_number(value):
        return f"{name} must be a finite number from {low:g} to {high:g}, got {value!r:.40}"
    if not low <= value <= high:
        return f"{name} must be from {low:g} to {high:g}, got {value:g}"
    return None


def budget_table_problem(budget: object) -> str | None:
    """Why ``budget`` (a target's table, or the one a manifest records) is not a table of metric
    bounds, in words starting with "budget" (None when it is one)."""
    if not isinstance(budget, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in budget.values()
    ):
        return f"budget must be a table of metric = number, got {budget!r:.60}"
    unknown_metrics = sorted(set(budget) - set(BUDGET_METRICS))
    if unknown_metrics:
        return f"budget metric {unknown_metrics[0]!r:.40} is not one of {', '.join(BUDGET_METRICS)}"
    problems = [p for p in (budget_problem(k, v) for k, v in budget.items()) if p]
    return f"budget {problems[0]}" if problems else None


def parse_budget(items: Sequence[str]) -> dict[str, float]:
    """``["cosine=0.999", "top1=0.99"]`` -> {"cosine": 0.999, "top1": 0.99}; ValueError names the bad one."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in BUDGET_METRICS:
            raise ValueError(f"budget {item!r}: write METRIC=NUMBER with METRIC one of {', '.join(BUDGET_METRICS)}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"budget {item!r}: {value!r} is not a number") from None
        problem = budget_problem(name, number)
        if problem:
            raise ValueError(f"budget {item!r}: {problem}")
        out[name] = number
    return out


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64).reshape(-1, a.shape[-1])
    b = b.astype(np.float64).reshape(-1, b.shape[-1])
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(denom > 0, (a * b).sum(1) / np.maximum(denom, 1e-30), 1.0)


def _real(feeds: dict[str, np.ndarray], n: int) -> np.ndarray:
    mask = feeds.get("attention_mask")
    ids = feeds.get("input_ids")
    if mask is None or ids is None:
        return np.ones(n, dtype=bool)
    flat = mask[:, -ids.shape[1] :].reshape(-1).astype(bool)
    return flat if flat.size == n else np.ones(n, dtype=bool)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def measure(
    reference: Sequence[dict[str, np.ndarray]],
    got: Sequence[dict[str, np.ndarray]],
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    language_model: bool = False,
) -> dict[str, float]:
    """The budget metrics of ``got`` against ``reference`` (outputs per feed). With
    ``language_model``, perplexity uses the next input token as the label of each position."""
    cos, agree, total = [], 0, 0
    nll = {"ref": 0.0, "got": 0.0}
    counted = 0
    for ref, out, f in zip(reference, got, feeds, strict=True):
        for name, want in ref.items():
            have = out.get(name)
            if have is None or want.dtype.kind != "f" or want.ndim < 2 or name.startswith("present"):
                continue
            rows = cosine_rows(want, have)
            keep = _real(f, rows.size) if want.ndim == 3 else np.ones(rows.size, dtype=bool)
            cos.append(rows[keep])
            if name != "logits":
                continue
            a = want.reshape(-1, want.shape[-1]).argmax(-1)[keep]
            b = have.reshape(-1, have.shape[-1]).argmax(-1)[keep]
            agree, total = agree + int((a == b).sum()), total + int(keep.sum())
            if language_model and want.ndim == 3 and "input_ids" in f and want.shape[1] > 1:
                labels = f["input_ids"][:, 1:]
                valid = _real(f, want.shape[0] * want.shape[1]).reshape(want.shape[:2])[:, 1:]
                for key, logits in (("ref", want), ("got", have)):
                    logp = np.take_along_axis(_log_softmax(logits[:, :-1]), labels[..., None], -1)[..., 0]
                    nll[key] -= float(logp[valid].sum())
                counted += int(valid.sum())
    result: dict[str, float] = {}
    if cos:
        allcos = np.concatenate(cos)
        result["cosine"] = float(allcos.mean())
        result["cosine_min"] = float(allcos.min())
    if total:
        result["top1"] = agree / total
    if counted:
        result["perplexity"] = math.exp((nll["got"] - nll["ref"]) / counted)
        result["perplexity_reference"] = math.exp(nll["ref"] / counted)
    return result


def violations(measured: dict[str, float], budget: dict[str, float]) -> list[str]:
    """The budget lines ``measured`` breaks, in words; metrics not measured are not judged."""
    out = []
    for name, bound in budget.items():
        if name not in measured:
            continue
        value = measured[name]
        ok = value >= bound if HIGHER_IS_BETTER[name] else value <= bound
        if not ok:
            out.append(f"{name} {value:.6g} {'<' if HIGHER_IS_BETTER[name] else '>'} {bound:g}")
    return out


def budget_used(measured: dict[str, float], budget: dict[str, float]) -> float:
    """How much of the budget a graph uses up, as the largest fraction over the metrics: 0 is the
    float graph, 1 is exactly at the budget, above 1 is over it. Metrics on different scales
    (cosine near 1, perplexity ratios) compare on this one scale."""
    used = [0.0]
    for name, bound in budget.items():
        if name not in measured:
            continue
        value = measured[name]
        room = (1.0 - bound) if HIGHER_IS_BETTER[name] else (bound - 1.0)
        loss = (1.0 - value) if HIGHER_IS_BETTER[name] else (value - 1.0)
        used.append(loss / room if room > 0 else float("inf") if loss > 0 else 0.0)
    return max(used)


def to_jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}
