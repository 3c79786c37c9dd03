"""Accuracy-aware mixed precision: keep the fewest float bytes that meet the budget, on what the final check judges.

1. Quantize everything; measure the budget metrics. Within budget: done.
2. Otherwise score each candidate by its local error, from ONE run of one instrumented session
   (``sensitivity``: the all-reduced graph with each node's float twin and a gate); only what that
   ranker cannot score is scored by a graph per node (its share of the budget used alone).
3. Order the candidates by score per float weight (``float_order``: a node kept in float is read at
   full width at every step, so a big LM head goes late), and find the smallest prefix kept in float
   that meets the budget: k doubles from 1, then bisection (O(log k) whole-model confirmations), each
   on the same gated session with the gates of the prefix closed (a set the gates cannot make, a tied
   head or a node merged into QAttention, on a written graph); the chosen set is then written and
   judged once more. Each confirmation is logged with its count, its float bytes and the time so far.

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
from edgeformer.quantize.streamed import measure_session

Feeds = dict[str, np.ndarray]
Quantizer = Callable[..., Path]  # (model, out, exclude=..., [include=...]) -> out
# (model, the all-quantized graph, candidates, feeds, judge: outputs of the first feeds -> budget used)
#   -> Ranking, or (score per node, the most sensitive highest; what the score means)
Ranker = Callable[..., "Ranking | tuple[dict[str, float], str]"]


@dataclass
class Ranking:
    """What a ranker hands the search: each candidate's score (the most sensitive highest) and what it
    means; ``confirm``, when there is one, a session of the all-reduced graph whose ``with_float(kept)``
    is the graph with ``kept`` in float (``sensitivity.GatedSession``): the confirmations run on it
    instead of a quantized graph and a session each; ``runs``: the model runs the scores took;
    ``ungated``: candidates no gate reaches (merged into a QAttention): a set keeping one in float is
    confirmed on a written graph."""

    scores: dict[str, float]
    key: str
    confirm: Any = None
    runs: int = 0
    ungated: set[str] = field(default_factory=set)
    local: dict[str, float] = field(default_factory=dict)  # each candidate's relative local error, when measured


@dataclass
class MixedResult:
    path: Path
    measured: dict[str, float]
    within_budget: bool
    kept_in_float: list[dict[str, Any]] = field(default_factory=list)
    tried: int = 1  # quantized graphs written and judged
    seconds: float = 0.0
    confirmations: int = 0  # whole-model judgements of a kept-in-float set, on a written or a gated graph
    verdict_measured: dict[str, float] = field(default_factory=dict)  # on the verdict rows
    candidates: int = 0
    case_misses: list[str] = field(default_factory=list)  # the final check's cases the chosen graph misses
    case_measured: dict[str, float] = field(default_factory=dict)  # the worst of each judged metric over them

    def tried_text(self) -> str:
        """What the search tried, for a verdict: "all N nodes int8; then K kept in float (T graphs)"."""
        text = f"all {self.candidates} quantizable node(s) in reduced precision"
        if self.tried > 1:
            text += (
                f"; then up to all of them kept in float, most sensitive first ({self.confirmations} "
                f"confirmation(s), {self.tried} graphs written)"
            )
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
            "confirmations": self.confirmations,
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
    confirmations: int = 0

    @property
    def work(self) -> Path:
        return self.out.with_name(self.out.name + ".trial.onnx")

    def measure(self, reference: Sequence[dict[str, np.ndarray]], got: Any, feeds: Sequence[Feeds]) -> dict:
        return budgets.measure(reference, got, feeds, language_model=self.language_model)

    def score(self, exclude: Sequence[str], include: Sequence[str] | None = None, final: bool = True) -> dict:
        excluded = list(exclude) if include is None else [c for c in self.candidates if c not in include]
        self.quantize(self.model, self.work, exclude=excluded)
        self.graphs += 1
        return self.judged(_session(self.work), final)

    def judged(self, session: Any, final: bool = True) -> dict:
        """The budget metrics of ``session`` on the calibration rows and, when ``final``, the verdict rows
        and the final check's cases too (the worse value of each)."""
        lm = self.language_model
        measured = measure_session(session, self.reference, self.feeds, language_model=lm)
        if final and self.verdict_feeds:
            self.on_verdict_rows = measure_session(
                session, self.verdict_reference, self.verdict_feeds, language_model=lm
            )
            _merge_worse(measured, self.on_verdict_rows)
        if final and self.cases:
            self.on_cases, self.case_misses = judge_cases(
                session, self.cases, self.budget, language_model=self.language_model
            )
            _merge_worse(measured, self.on_cases)
        return measured

    def sensitivity(self, rank: Ranker | None, log: Callable[[str], None]) -> Ranking:
        """Each candidate's score: from the ranker (one instrumented session), and for what it cannot
        reach, from a graph per node (its share of the budget used alone)."""
        ranking, start = Ranking({}, "budget_used_alone"), time.perf_counter()
        if rank is not None:

            def judge(got: list[dict[str, np.ndarray]]) -> float:
                n = len(got)
                return budgets.budget_used(self.measure(self.reference[:n], got, self.feeds[:n]), self.budget)

            found = rank(self.model, self.work, self.candidates, self.feeds, judge)
            ranking = found if isinstance(found, Ranking) else Ranking(*found, runs=len(found[0]) + 1)
        rest = [c for c in self.candidates if c not in ranking.scores]
        if rest and ranking.confirm is not None:
            ranking.confirm = None  # a set kept in float the gates cannot make: confirmations are written graphs
        for i, name in enumerate(rest):
            ranking.scores[name] = budgets.budget_used(self.score([], include=[name], final=False), self.budget)
            ranking.runs += 1
            if (i + 1) % 10 == 0:
                each = (time.perf_counter() - start) / (i + 1)
                left = each * (len(rest) - i - 1)
                log(f"    sensitivity {i + 1}/{len(rest)} ({each:.1f} s each, about {left:.0f} s left)")
        return ranking

    def result(self, measured: dict[str, float], ok: bool, start: float, **more: Any) -> MixedResult:
        self.work.replace(self.out)
        return MixedResult(
            self.out, measured, ok, tried=self.graphs,
            seconds=time.perf_counter() - start, verdict_measured=self.on_verdict_rows,
            candidates=len(self.candidates), case_misses=self.case_misses, case_measured=self.on_cases,
            confirmations=self.confirmations, **more,
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
        _judged_outputs(float_session, feeds),
        _judged_outputs(float_session, verdict_feeds),
    )
    del float_session  # the references are what the search needs of it
    measured = trials.score([])
    broken = budgets.violations(measured, budget)
    if not broken or not budget or not candidates:  # within budget, or nothing to keep in float
        return trials.result(measured, not broken, start)
    log(f"  all nodes in reduced precision break the budget ({'; '.join(broken)}); ranking {len(candidates)} nodes")
    ranking = trials.sensitivity(rank, log)
    params = weight_params(model, candidates)
    ranked = float_order(candidates, ranking.scores, params)
    log(f"  ranked {len(ranked)} candidates by {ranking.key} from {ranking.runs} run(s) of one batch "
        f"({time.perf_counter() - start:.1f} s so far); keeping nodes in float, most per float byte first")  # fmt: skip
    if ranking.local:
        top = sorted(ranking.local, key=lambda n: -ranking.local[n])[:3]
        log(f"    largest local errors: {', '.join(f'{n} {ranking.local[n]:.4f}' for n in top)}")
    hi, measured = _search(trials, ranking, ranked, params, log, start)
    log(f"  search: {hi} node(s) kept in float after {trials.confirmations} whole-model confirmation(s) and "
        f"{trials.graphs} quantized graph(s), {time.perf_counter() - start:.1f} s in all")  # fmt: skip
    kept = [{"node": n, ranking.key: round(ranking.scores[n], 4)} for n in ranked[:hi]]
    return trials.result(measured, not budgets.violations(measured, budget), start, kept_in_float=kept)


def _search(
    trials: _Trials, ranking: Ranking, ranked: list[str], params: dict[str, int], log: Callable[[str], None],
    start: float,
) -> tuple[int, dict[str, float]]:  # fmt: skip
    """The smallest prefix of ``ranked`` kept in float that meets the budget, and the metrics of its
    written graph (left in the work file). Confirmations run on the ranker's gated session when it has
    one, then the chosen set is written and judged; should that graph miss (float rounding between the
    two), the search goes on over larger sets with written graphs."""
    results: dict[int, dict[str, float]] = {}
    written: list[int] = []  # the k of the graph in the work file (gated confirmations write none)
    kept_state: list[Any] = []  # and its judgement on the verdict rows and the cases
    tied = shared_weights(trials.model, ranked) | ranking.ungated

    def meets(k: int, left: int) -> bool:
        # a node sharing its weight (a tied LM head and the embedding) changes more than its gate when kept,
        # and a node merged into a QAttention has no gate
        gated = ranking.confirm if not tied.intersection(ranked[:k]) else None
        if gated is None and written == [k]:  # judged already, and its graph is still the one in the work file
            trials.on_verdict_rows, trials.on_cases, trials.case_misses = kept_state
            return not budgets.violations(results[k], trials.budget)
        results[k] = trials.judged(gated.with_float(ranked[:k])) if gated is not None else trials.score(ranked[:k])
        if gated is None:  # what the verdict reports is the written graph's
            written[:], kept_state[:] = [k], [trials.on_verdict_rows, trials.on_cases, trials.case_misses]
        trials.confirmations += 1
        megabytes = 4 * sum(params.get(n, 0) for n in ranked[:k]) / 1e6
        on = " (gated session)" if gated is not None else ""
        log(f"    confirmation {trials.confirmations}{on}: {k}/{len(ranked)} node(s) in float ({megabytes:.1f} MB "
            f"of float weights): {budgets.to_jsonable(results[k])}; {time.perf_counter() - start:.1f} s so far, "
            f"at most {left} more")  # fmt: skip
        return not budgets.violations(results[k], trials.budget)

    hi = _smallest_meeting(meets, len(ranked))
    if ranking.confirm is None or written == [hi]:
        if written == [hi]:
            trials.on_verdict_rows, trials.on_cases, trials.case_misses = kept_state
        return hi, results[hi]
    ranking.confirm = None  # the gated session is freed before the written graph's is built
    measured = trials.score(ranked[:hi])
    if hi < len(ranked) and budgets.violations(measured, trials.budget):
        log(f"  the written graph with {hi} in float misses ({'; '.join(budgets.violations(measured, trials.budget))});"
            " searching larger sets on written graphs")  # fmt: skip
        more = _smallest_meeting(lambda k, left: meets(hi + k, left), len(ranked) - hi)
        return hi + more, results[hi + more]
    return hi, measured


def _smallest_meeting(meets: Callable[[int, int], bool], n: int) -> int:
    """The smallest k in 1..n with ``meets(k, confirmations left at most)`` (k = 0 failed already;
    keeping more in float only brings the graph closer to the float one): k doubles from 1 until it
    meets (few nodes usually hold the loss: about 2 log2(k) confirmations, not log2(n) + 1 starting
    from all in float), then bisection between the last k that missed and the first that met; n when
    even n misses. The last call is on the k returned, so its graph is the one left in the work file."""
    rounds = max(math.ceil(math.log2(n)), 0) if n > 0 else 0
    lo, k, step = 0, 1, 0
    while not meets(min(k, n), 2 * rounds - step):
        if k >= n:
            return n
        lo, k, step = min(k, n), 2 * k, step + 1
    hi = last = min(k, n)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        last = mid
        if meets(mid, math.ceil(math.log2(hi - lo))):
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


def shared_weights(model: onnx.ModelProto, candidates: Sequence[str]) -> set[str]:
    """The candidates whose weight another node reads too (a tied LM head's table, read by the embedding's
    Gather): keeping one in float changes that node as well, which no gate of the candidate's shows."""
    inits = {i.name for i in model.graph.initializer}
    readers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for x in node.input:
            if x in inits:
                readers.setdefault(x, set()).add(node.name)
    wanted = set(candidates)
    return {
        n.name for n in model.graph.node if n.name in wanted and any(len(readers[x]) > 1 for x in n.input if x in inits)
    }


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


def _judged_outputs(session: Any, feeds: Sequence[Feeds]) -> list[dict[str, np.ndarray]]:
    """The outputs the budget judges (a KV cache's ``present`` outputs are not: the logits that follow
    from them are), kept as the search's reference."""
    return [{k: v for k, v in out.items() if not k.startswith("present")} for out in outputs_of(session, feeds)]


def _session_of(model: onnx.ModelProto, near: Path) -> Any:
    path = near.with_name(near.name + ".float.onnx")
    onnx.save(model, path)
    try:
        return _session(path)
    finally:
        path.unlink(missing_ok=True)
