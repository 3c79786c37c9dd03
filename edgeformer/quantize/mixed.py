"""Accuracy-aware mixed precision: keep the fewest, most sensitive nodes in float until the budget holds.

1. Quantize everything; measure the budget metrics against the float graph on the calibration
   data. Within budget: done.
2. Otherwise measure each quantizable node's sensitivity: the graph with only that node in int8,
   scored by the fraction of the budget it uses up alone (``budget.budget_used``); or, given
   ``rank``, by the quantizer's own ranking (int4: the same score from one session, ``int4_rank``).
3. Keep the k most sensitive nodes in float, with the smallest k that meets the budget (found by
   bisection); if even all of them in float miss it, that is reported as a failure.

"Meets the budget" is judged on the calibration rows AND on ``verdict_feeds``, the rows the final
verdict judges (held-out validation rows, up to the longest length the bundle claims): a graph the
search accepts is one the final verdict accepts, so the search keeps more nodes in float when
trained weights' outlier activations break the budget only on longer or unseen rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeformer import budget as budgets

Feeds = dict[str, np.ndarray]
Quantizer = Callable[..., Path]  # (model, out, exclude=..., [include=...]) -> out
# (model, the all-quantized graph, candidates, feeds, judge: outputs of the first feeds -> budget used)
#   -> (score per node, the most sensitive highest; what the score means)
Ranker = Callable[..., tuple[dict[str, float], str]]


@dataclass
class MixedResult:
    path: Path
    measured: dict[str, float]
    within_budget: bool
    kept_in_float: list[dict[str, Any]] = field(default_factory=list)
    tried: int = 1
    seconds: float = 0.0
    verdict_measured: dict[str, float] = field(default_factory=dict)  # on the verdict rows
    candidates: int = 0

    def tried_text(self) -> str:
        """What the search tried, for a verdict: "all N nodes int8; then K kept in float (T graphs)"."""
        text = f"all {self.candidates} quantizable node(s) in reduced precision"
        if self.tried > 1:
            text += f"; then up to all of them kept in float, most sensitive first ({self.tried} graphs tried)"
        if self.kept_in_float:
            text += f"; {'chose' if self.within_budget else 'ended with'} {len(self.kept_in_float)} kept in float"
        if not self.within_budget and self.candidates and len(self.kept_in_float) == self.candidates:
            text += (
                " (every candidate in float still misses: the loss is in what the quantizer changed outside "
                "the candidates, not in a node the search could keep in float)"
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "measured": budgets.to_jsonable(self.measured),
            "within_budget": self.within_budget,
            "kept_in_float": self.kept_in_float,
            "graphs_tried": self.tried,
            "seconds": round(self.seconds, 1),
        }


def _session(path: Path, threads: int = 2) -> Any:
    from edgeformer.runtime.session import make_session

    return make_session(path, ("cpu",), threads=threads)


def outputs_of(session: Any, feeds: Sequence[Feeds]) -> list[dict[str, np.ndarray]]:
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}
    results = []
    for f in feeds:
        values = session.run(names, {k: v for k, v in f.items() if k in wanted})
        results.append(dict(zip(names, values, strict=True)))
    return results


def quantize_within_budget(
    model: onnx.ModelProto,
    out: Path,
    quantize: Quantizer,
    feeds: Sequence[Feeds],
    budget: dict[str, float],
    *,
    candidates: Sequence[str],
    language_model: bool = False,
    log: Callable[[str], None] = lambda _m: None,
    verdict_feeds: Sequence[Feeds] = (),
    rank: Ranker | None = None,
) -> MixedResult:
    start = time.perf_counter()
    work = out.with_name(out.name + ".trial.onnx")
    float_session = _session_of(model, out)
    reference, verdict_reference = outputs_of(float_session, feeds), outputs_of(float_session, verdict_feeds)
    on_verdict_rows: dict[str, float] = {}

    def score(exclude: Sequence[str], include: Sequence[str] | None = None, final: bool = True) -> dict[str, float]:
        """The budget metrics on the calibration rows; with ``final``, a budget missed on the verdict
        rows counts as missed here too (their misses are merged in, named as such)."""
        nonlocal on_verdict_rows
        excluded = list(exclude) if include is None else [c for c in candidates if c not in include]
        quantize(model, work, exclude=excluded)
        session = _session(work)
        measured = budgets.measure(reference, outputs_of(session, feeds), feeds, language_model=language_model)
        if final and verdict_feeds:
            got = outputs_of(session, verdict_feeds)
            on_verdict_rows = budgets.measure(verdict_reference, got, verdict_feeds, language_model=language_model)
            for name, value in on_verdict_rows.items():  # the worse of the two, metric by metric
                if name in measured and name in budgets.HIGHER_IS_BETTER:
                    worse = min if budgets.HIGHER_IS_BETTER[name] else max
                    measured[name] = worse(measured[name], value)
        return measured

    measured = score([])
    tried = 1
    broken = budgets.violations(measured, budget)
    if not broken or not budget or not candidates:  # within budget, or nothing to keep in float
        work.replace(out)
        seconds = time.perf_counter() - start
        return MixedResult(
            out, measured, not broken, seconds=seconds, verdict_measured=on_verdict_rows, candidates=len(candidates)
        )
    log(f"  all nodes in reduced precision break the budget ({'; '.join(broken)}); ranking nodes")
    sensitivity, key = {}, "budget_used_alone"
    if rank is not None:  # one session for all nodes instead of a graph written and loaded per node

        def judge(got: list[dict[str, np.ndarray]]) -> float:
            n = len(got)
            measured = budgets.measure(reference[:n], got, feeds[:n], language_model=language_model)
            return budgets.budget_used(measured, budget)

        sensitivity, key = rank(model, work, candidates, feeds, judge)
    for i, name in enumerate(candidates if rank is None else ()):
        sensitivity[name] = budgets.budget_used(score([], include=[name], final=False), budget)
        tried += 1
        if (i + 1) % 10 == 0:
            log(f"    sensitivity {i + 1}/{len(candidates)}")
    ranked = sorted(candidates, key=lambda n: -sensitivity[n])  # the most sensitive first
    # the smallest k such that keeping the k most sensitive nodes in float meets the budget, by
    # bisection (keeping more in float only brings the graph closer to the float one); k = 0 failed
    results: dict[int, dict[str, float]] = {}
    last = -1

    def meets(k: int) -> bool:
        nonlocal last, tried
        results[k], last, tried = score(ranked[:k]), k, tried + 1
        log(f"    {k} node(s) in float: {budgets.to_jsonable(results[k])}")
        return not budgets.violations(results[k], budget)

    lo, hi = 0, len(ranked)
    if meets(hi):
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if meets(mid):
                hi = mid
            else:
                lo = mid
        if last != hi:
            meets(hi)  # leave the chosen graph in the work file
    kept, measured = ranked[:hi], results[hi]
    ok = not budgets.violations(measured, budget)
    work.replace(out)
    return MixedResult(
        out,
        measured,
        ok,
        kept_in_float=[{"node": n, key: round(sensitivity[n], 4)} for n in kept],
        tried=tried,
        seconds=time.perf_counter() - start,
        verdict_measured=on_verdict_rows,
        candidates=len(candidates),
    )


def _session_of(model: onnx.ModelProto, near: Path) -> Any:
    path = near.with_name(near.name + ".float.onnx")
    onnx.save(model, path)
    try:
        return _session(path)
    finally:
        path.unlink(missing_ok=True)
