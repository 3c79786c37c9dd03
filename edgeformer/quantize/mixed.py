"""Accuracy-aware mixed precision: keep the fewest float bytes that meet the budget, on what the final check judges.

1. Quantize everything; measure the budget metrics. Within budget: done.
2. Otherwise score each candidate node: the share of the budget it uses up alone (``budget.budget_used``),
   all from ONE gated session (``int4_rank``: int4 and dynamic int8, the float and the reduced node blended
   by a gate per node); only what no gate reaches (int8 attention merged into QAttention) is scored by a
   graph per node.
3. Order the candidates by budget bought back per float weight (``float_order``: a node kept in float is
   read at full width at every step, so a big LM head goes late), and bisect for the smallest prefix kept
   in float that meets the budget: a few whole-model confirmations, each logged with its count, its float
   bytes, its time and how many may follow.

"Meets the budget" is judged on the calibration rows, on ``verdict_feeds`` (the held-out rows the verdict
judges, up to the longest length the bundle claims) AND on ``cases``: the final parity check's own shapes
(seq 1, the longest checked length, batch 2 with padding, a cache), with the torch outputs on them, judged
by the check's own judge (``verdict.judge_case``). A graph the search accepts is one the final check
accepts; trained weights' outlier activations that only show at long lengths keep more nodes in float.
"""

from __future__ import annotations

import math
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
    case_misses: list[str] = field(default_factory=list)  # the final check's cases the chosen graph misses
    case_measured: dict[str, float] = field(default_factory=dict)  # the worst of each judged metric over them

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


@dataclass
class _Trials:
    """The graphs a search writes and judges: each on the calibration rows and, when final, on the
    verdict rows and the final check's cases (the worse value of each metric is kept)."""

    model: onnx.ModelProto
    out: Path
    quantize: Quantizer
    feeds: Sequence[Feeds]
    budget: dict[str, float]
    candidates: Sequence[str]
    language_model: bool
    verdict_feeds: Sequence[Feeds]
    cases: Sequence[Any]
    reference: list[dict[str, np.ndarray]] = field(default_factory=list)
    verdict_reference: list[dict[str, np.ndarray]] = field(default_factory=list)
    on_verdict_rows: dict[str, float] = field(default_factory=dict)
    on_cases: dict[str, float] = field(default_factory=dict)
    case_misses: list[str] = field(default_factory=list)
    graphs: int = 0

    @property
    def work(self) -> Path:
        return self.out.with_name(self.out.name + ".trial.onnx")

    def measure(self, reference: Sequence[dict[str, np.ndarray]], got: Any, feeds: Sequence[Feeds]) -> dict:
        return budgets.measure(reference, got, feeds, language_model=self.language_model)

    def score(self, exclude: Sequence[str], include: Sequence[str] | None = None, final: bool = True) -> dict:
        excluded = list(exclude) if include is None else [c for c in self.candidates if c not in include]
        self.quantize(self.model, self.work, exclude=excluded)
        self.graphs += 1
        session = _session(self.work)
        measured = self.measure(self.reference, outputs_of(session, self.feeds), self.feeds)
        if final and self.verdict_feeds:
            got = outputs_of(session, self.verdict_feeds)
            self.on_verdict_rows = self.measure(self.verdict_reference, got, self.verdict_feeds)
            _merge_worse(measured, self.on_verdict_rows)
        if final and self.cases:
            self.on_cases, self.case_misses = judge_cases(
                session, self.cases, self.budget, language_model=self.language_model
            )
            _merge_worse(measured, self.on_cases)
        return measured

    def sensitivity(self, rank: Ranker | None, log: Callable[[str], None]) -> tuple[dict[str, float], str]:
        """Each candidate's share of the budget used alone: from one gated session (``rank``), and
        for what it cannot reach, from a graph per node."""
        scores: dict[str, float] = {}
        key, start = "budget_used_alone", time.perf_counter()
        if rank is not None:

            def judge(got: list[dict[str, np.ndarray]]) -> float:
                n = len(got)
                return budgets.budget_used(self.measure(self.reference[:n], got, self.feeds[:n]), self.budget)

            scores, key = rank(self.model, self.work, self.candidates, self.feeds, judge)
        rest = [c for c in self.candidates if c not in scores]
        for i, name in enumerate(rest):
            scores[name] = budgets.budget_used(self.score([], include=[name], final=False), self.budget)
            if (i + 1) % 10 == 0:
                each = (time.perf_counter() - start) / (i + 1)
                left = each * (len(rest) - i - 1)
                log(f"    sensitivity {i + 1}/{len(rest)} ({each:.1f} s each, about {left:.0f} s left)")
        return scores, key

    def result(self, measured: dict[str, float], ok: bool, start: float, **more: Any) -> MixedResult:
        self.work.replace(self.out)
        return MixedResult(
            self.out, measured, ok, tried=self.graphs,
            seconds=time.perf_counter() - start, verdict_measured=self.on_verdict_rows,
            candidates=len(self.candidates), case_misses=self.case_misses, case_measured=self.on_cases, **more,
        )  # fmt: skip


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
    cases: Sequence[Any] = (),
) -> MixedResult:
    """``cases`` (``parity.BudgetCase``: inputs and the torch outputs on them) are the shapes the final
    parity check judges: every graph the search accepts meets the budget on each of them too, judged
    by ``verdict.judge_case``, the check's own judge."""
    start = time.perf_counter()
    trials = _Trials(model, out, quantize, feeds, budget, candidates,
                     language_model, verdict_feeds, cases)  # fmt: skip
    float_session = _session_of(model, out)
    trials.reference, trials.verdict_reference = (
        outputs_of(float_session, feeds),
        outputs_of(float_session, verdict_feeds),
    )
    measured = trials.score([])
    broken = budgets.violations(measured, budget)
    if not broken or not budget or not candidates:  # within budget, or nothing to keep in float
        return trials.result(measured, not broken, start)
    log(f"  all nodes in reduced precision break the budget ({'; '.join(broken)}); ranking nodes")
    sensitivity, key = trials.sensitivity(rank, log)
    params = weight_params(model, candidates)
    ranked = float_order(candidates, sensitivity, params)
    log(f"  keeping nodes in float, most budget per float byte first ({len(ranked)} candidates)")
    results: dict[int, dict[str, float]] = {}
    confirmations: list[int] = []
    clock = time.perf_counter()

    def meets(k: int, width: int) -> bool:
        results[k] = trials.score(ranked[:k])
        confirmations.append(k)
        each = (time.perf_counter() - clock) / len(confirmations)
        left = math.ceil(math.log2(width)) + 1 if width > 1 else 0  # confirmations still to come, at most
        megabytes = 4 * sum(params.get(n, 0) for n in ranked[:k]) / 1e6
        log(f"    confirmation {len(confirmations)}: {k}/{len(ranked)} node(s) in float ({megabytes:.1f} MB of "
            f"float weights): {budgets.to_jsonable(results[k])}; {each:.1f} s each, at most {left} more")  # fmt: skip
        return not budgets.violations(results[k], budget)

    hi = _smallest_meeting(meets, len(ranked))
    log(f"  search: {hi} node(s) kept in float after {len(confirmations)} whole-model confirmation(s), "
        f"{time.perf_counter() - start:.1f} s in all")  # fmt: skip
    kept = [{"node": n, key: round(sensitivity[n], 4)} for n in ranked[:hi]]
    return trials.result(results[hi], not budgets.violations(results[hi], budget), start, kept_in_float=kept)


def _smallest_meeting(meets: Callable[[int, int], bool], n: int) -> int:
    """The smallest k in 1..n with ``meets(k, bracket width)``, by bisection (keeping more in float only
    brings the graph closer to the float one; k = 0 failed already); n when even n fails. The last call
    is on the k returned, so its graph is the one left in the work file."""
    if not meets(n, n):
        return n
    lo, hi, last = 0, n, n
    while hi - lo > 1:
        mid, width = (lo + hi) // 2, hi - lo
        last = mid
        if meets(mid, width):
            hi = mid
        else:
            lo = mid
    if last != hi:
        meets(hi, 0)
    return hi


def weight_params(model: onnx.ModelProto, candidates: Sequence[str]) -> dict[str, int]:
    """The number of weights of each candidate node (its constant input): what keeping it in float costs."""
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    wanted = set(candidates)
    return {n.name: next((sizes[x] for x in n.input if x in sizes), 0) for n in model.graph.node if n.name in wanted}


def float_order(candidates: Sequence[str], sensitivity: dict[str, float], params: dict[str, int]) -> list[str]:
    """The order the search keeps nodes in float: the most budget used per float weight first. A node in
    float is read at full width at every step (a big LM head in fp32 reads 4x its int8 bytes and 6x its
    int4 bytes per token): the smallest nodes that buy the budget back go first, a big one only when needed."""
    return sorted(candidates, key=lambda n: -sensitivity[n] / max(params.get(n, 0), 1))


def judge_cases(
    session: Any, cases: Sequence[Any], budget: dict[str, float], *, language_model: bool = False
) -> tuple[dict[str, float], list[str]]:
    """The final parity check's judgement of ``session`` on its ``cases`` (``parity.BudgetCase``):
    the worst value of each judged metric over the cases, and every miss, named by its shape."""
    from edgeformer.verdict import case_bounds, judge_case

    worst: dict[str, float] = {}
    broken: list[str] = []
    wanted = {i.name for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    for case in cases:
        got = dict(zip(names, session.run(names, {k: v for k, v in case.inputs.items() if k in wanted}), strict=True))
        metrics, misses = judge_case(case.reference, got, case.inputs, budget, language_model=language_model)
        _merge_worse(worst, {k: v for k, v in metrics.items() if k in case_bounds(budget)}, add=True)
        broken += [f"{m} at {case.label} (random inputs, against the torch source)" for m in misses]
    return worst, broken


def _merge_worse(into: dict[str, float], other: dict[str, float], *, add: bool = False) -> None:
    """``into`` keeps, metric by metric, the worse of its value and ``other``'s (``add``: new metrics too)."""
    for name, value in other.items():
        if name not in budgets.HIGHER_IS_BETTER or (name not in into and not add):
            continue
        worse = min if budgets.HIGHER_IS_BETTER[name] else max
        into[name] = value if name not in into else worse(into[name], value)


def _session_of(model: onnx.ModelProto, near: Path) -> Any:
    path = near.with_name(near.name + ".float.onnx")
    onnx.save(model, path)
    try:
        return _session(path)
    finally:
        path.unlink(missing_ok=True)
