"""The fusion stage: an ordered list of passes over an onnx-ir model, counted and checked.

Every pass (``passes.FusionPass``, onnx-ir's pass contract) says whether it changed the graph.
The passes run unchecked, then the fused graph is run once under onnxruntime on the same inputs as
the unfused graph and compared (``checks``). Only when that check fails (or the graph does not
load) are the passes run again from the unfused graph, each one that changed the graph checked,
so a pass that changes the numbers is named and undone exactly as if every pass had been checked. Which
passes run for which form is data (``tables``). The report counts, per kind of block (attention,
layer norm, GELU), how many the source graph had and how many fused, and says why the others did
not, in the words of the closest rule (``miss_reasons``); the hand-written walkers list, per pass,
every candidate node they left and why (``skipped``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx_ir as ir

from edgeformer.errors import ParityError
from edgeformer.fusions import standard_attention, tables
from edgeformer.fusions.checks import (
    INTERMEDIATE_DOMAIN,
    Feeds,
    Snapshot,
    check,
    intermediate_ops,
    ort_message,
    restore,
    run,
    snapshot,
    undo,
)
from edgeformer.fusions.miss_reasons import gelu_tanh_nodes, why_not
from edgeformer.fusions.passes import CPU_KERNEL_PROVIDERS, FusionOptions, FusionPass, FusionResult
from edgeformer.progress import Progress

__all__ = ["ATTENTION_OPS", "CPU_KERNEL_PROVIDERS", "INTERMEDIATE_DOMAIN", "FusionReport", "fuse_model"]

ATTENTION_OPS = {"MultiHeadAttention", "Attention", "GroupQueryAttention"}
NORM_OPS = {
    "LayerNormalization",
    "SkipLayerNormalization",
    "EmbedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
}
GELU_OPS = {"Gelu", "FastGelu", "BiasGelu", "QuickGelu"}
SKIPPED_LISTED = 20  # candidates a walker left, listed per pass in the report (all are counted)


@dataclass
class PassRecord:
    name: str
    rewrites: int
    nodes: int
    seconds: float
    max_rel_error: float | None = None  # against the unfused graph; None when not run
    rolled_back: str = ""  # why the pass was undone
    deferred: bool = False  # its graph held intermediate ops; checked with the next pass that could run


@dataclass
class FusionReport:
    form: str
    nodes_before: int
    nodes_after: int = 0
    passes: list[PassRecord] = field(default_factory=list)
    coverage: dict[str, dict[str, int]] = field(default_factory=dict)
    not_fused: list[dict[str, str]] = field(default_factory=list)
    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)  # pass -> count, candidates (node, reason)
    debug: str = ""
    parity_not_checked: str = ""  # why the passes were not checked against the unfused graph
    check: str = ""  # "once": the fused graph checked as a whole; "per pass": that failed, every pass checked
    max_rel_error: float | None = None  # the fused graph against the unfused one; None when not checked

    @property
    def counts(self) -> dict[str, int]:
        return {p.name: p.rewrites for p in self.passes if p.rewrites and p.name != "cleanup"}

    @property
    def complete(self) -> bool:
        return not self.not_fused

    def to_dict(self) -> dict[str, Any]:
        return {
            "form": self.form,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "counts": self.counts,
            "coverage": self.coverage,
            "complete": self.complete,
            "not_fused": self.not_fused,
            "skipped": self.skipped,
            "passes": [asdict(p) for p in self.passes],
            "rolled_back": {p.name: p.rolled_back for p in self.passes if p.rolled_back},
            "parity_not_checked": self.parity_not_checked or None,
            "check": self.check or None,
            "max_rel_error": self.max_rel_error,
        }


class FusionParityError(ParityError):
    """A pass changed what the graph computes beyond tolerance; the message names the pass."""


def _op_counts(model: ir.Model) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.all_nodes())


def _candidates(model: ir.Model) -> dict[str, int]:
    ops = _op_counts(model)
    return {
        "attention": ops["Softmax"],
        "layer_norm": ops["LayerNormalization"] + ops["ReduceMean"] // 2,
        # decomposed (erf or tanh form) or already one op (the standard Gelu, from opset 20)
        "gelu": ops["Erf"] + len(gelu_tanh_nodes(model)) + sum(ops[o] for o in GELU_OPS),
    }


def _standard_leftovers(model: ir.Model, not_fused: list[dict[str, str]]) -> list[dict[str, str]]:
    """In the standard form, say plainly when the opset is what stopped attention fusing."""
    if tables.opset(model) >= standard_attention.OPSET:
        return not_fused
    why = (
        f"the model's opset {tables.opset(model)} has no standard Attention op (it needs opset "
        f"{standard_attention.OPSET}: export with the portable-fp32 target)"
    )
    return [dict(item, reason=why) if item["kind"] == "attention" else item for item in not_fused]


@dataclass
class _Checker:
    """The unfused outputs, the last graph that passed its check (the restore point), and the
    passes since then whose graph could not run yet (see checks.check)."""

    feeds: list[Feeds]
    reference: list[list[Any]]
    tolerance: float
    strict: bool
    log: Callable[[str], None]
    restore_point: Snapshot
    pending: list[PassRecord] = field(default_factory=list)
    kept_error: float | None = 0.0  # the error of the graph at the restore point (the unfused graph's: 0)

    def after(self, model: ir.Model, record: PassRecord) -> ir.Model:
        snap = snapshot(model)
        record.max_rel_error, problem, deferred = check(snap, model, self.feeds, self.reference, self.tolerance)
        if deferred:
            record.deferred = True
            self.pending.append(record)
            return model
        if problem:
            model = self._fail(model, [*self.pending, record], problem)
        else:
            self.restore_point = snap  # the graph just checked is where a later failure goes back to
            self.kept_error = record.max_rel_error
        self.pending.clear()
        return model

    def whole(self, model: ir.Model) -> tuple[float | None, str]:
        """The fused graph (every pass applied) against the unfused outputs: (worst error, problem)."""
        error, problem, deferred = check(snapshot(model), model, self.feeds, self.reference, self.tolerance)
        if deferred:
            problem = f"it holds {', '.join(sorted(intermediate_ops(model)))}, which onnxruntime cannot run"
        return error, problem

    def finish(self, model: ir.Model) -> ir.Model:
        """The last passes left the rewriter's intermediate ops: a graph onnxruntime cannot run."""
        if self.pending:
            problem = f"it left {', '.join(sorted(intermediate_ops(model)))}, which onnxruntime cannot run"
            model = self._fail(model, self.pending, problem)
        return model

    def _fail(self, model: ir.Model, records: list[PassRecord], problem: str) -> ir.Model:
        if self.strict:
            culprits = " + ".join(repr(r.name) for r in records)
            raise FusionParityError(f"fusion pass {culprits}: {problem}")
        return undo(model, self.restore_point, records, problem, self.log)


def _checker(model: ir.Model, feeds: list[Feeds] | None, report: FusionReport, **kwargs: Any) -> _Checker | None:
    """The check against the unfused graph, or None with the reason in the report."""
    if not feeds:
        report.parity_not_checked = "no inputs were given for the check"
        return None
    try:
        start = snapshot(model)
        return _Checker(feeds, run(start, feeds), restore_point=start, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a graph that cannot be serialised, or any onnxruntime failure on it
        report.parity_not_checked = f"the unfused graph does not run under onnxruntime ({ort_message(exc)})"
        return None


def _run_passes(
    model: ir.Model, passes: list[FusionPass], checker: _Checker | None, report: FusionReport, log: Callable
) -> tuple[ir.Model, dict[str, int]]:
    """Every pass in order, each checked when it changed the graph; the block counts after cleanup."""
    before: dict[str, int] = {}
    progress = Progress("fusion pass", len(passes), log)  # quiet unless the passes take a while
    for fusion_pass in passes:
        start = time.perf_counter()
        result = fusion_pass(model)
        assert isinstance(result, FusionResult)
        nodes = len(list(model.graph.all_nodes()))
        record = PassRecord(fusion_pass.name, result.rewrites, nodes, round(time.perf_counter() - start, 3))
        report.passes.append(record)
        if result.skipped:
            report.skipped[fusion_pass.name] = {
                "count": len(result.skipped),
                "candidates": result.skipped[:SKIPPED_LISTED],
            }
        if fusion_pass.name == "cleanup":
            before = _candidates(model)
        if result.rewrites:
            log(f"  {fusion_pass.name}: {result.rewrites}")
        if checker is not None and (result.modified or fusion_pass.name.endswith("cleanup")):
            model = checker.after(model, record)
        progress.step(fusion_pass.name)
    if checker is not None:
        model = checker.finish(model)
    return model, before


def _checked_once(
    model: ir.Model, passes: list[FusionPass], checker: _Checker, report: FusionReport, log: Callable
) -> tuple[ir.Model, dict[str, int]]:
    """Every pass unchecked, then one check of the fused graph. When it fails, the graph goes back to
    the unfused one and the passes run again, each checked, so the pass that broke it is undone and
    named (``_Checker``) and the graph kept is one that was checked."""
    model, before = _run_passes(model, passes, None, report, log)
    error, problem = checker.whole(model)
    if not problem:
        report.check, report.max_rel_error = "once", error
        return model, before
    log(f"  the fused graph failed its check ({problem}); checking the passes one by one")
    model = restore(model, checker.restore_point)  # the unfused graph: nothing has been checked yet
    report.passes.clear()
    model, before = _run_passes(model, passes, checker, report, log)
    report.check = "per pass"
    report.max_rel_error = checker.kept_error  # the graph kept is the last one checked
    return model, before


def _coverage(model: ir.Model, before: dict[str, int]) -> dict[str, dict[str, int]]:
    ops = _op_counts(model)
    return {
        "attention": {"blocks": before["attention"], "fused": sum(ops[o] for o in ATTENTION_OPS)},
        "layer_norm": {
            "blocks": before["layer_norm"],
            "fused": sum(ops[o] for o in NORM_OPS if o != "EmbedLayerNormalization"),
        },
        "gelu": {"blocks": before["gelu"], "fused": sum(ops[o] for o in GELU_OPS)},
    }


def fuse_model(
    model: ir.Model,
    form: str = "contrib",
    *,
    feeds: list[Feeds] | None = None,
    tolerance: float = 1e-4,
    debug: bool = False,
    strict: bool = False,
    packed_attention: bool = True,
    providers: tuple[str, ...] = ("cpu",),
    log: Callable[[str], None] = lambda _m: None,
) -> FusionReport:
    """Fuse ``model`` in place. With ``feeds``, parity against the unfused graph is checked once on
    the fused graph, and after every pass that rewrote something when that fails; with ``strict`` a
    pass beyond ``tolerance`` raises FusionParityError.
    ``packed_attention=False`` keeps attention as MultiHeadAttention with separate projections.
    ``providers`` (the target's, in order of preference) choose among forms: SkipLayerNormalization
    is split back into Add + LayerNormalization when the first one runs onnxruntime's CPU kernels
    (CPU_KERNEL_PROVIDERS); GPU providers keep the fused op."""
    # A pass whose graph no longer runs or no longer matches the unfused numbers is undone and
    # named in the report (rolled_back); the blocks it would have fused are then listed as not fused.
    passes = tables.passes_for(form, FusionOptions(packed_attention=packed_attention, providers=tuple(providers)))
    report = FusionReport(form, len(list(model.graph.all_nodes())))
    checker = _checker(model, feeds, report, tolerance=tolerance, strict=strict, log=log)
    if checker is None:
        model, before = _run_passes(model, passes, None, report, log)
    else:
        model, before = _checked_once(model, passes, checker, report, log)
    report.nodes_after = len(list(model.graph.all_nodes()))
    report.coverage = _coverage(model, before)
    if form not in ("none", *tables.PROVIDER_FORMS):  # form (c) keeps attention and GELU as ops on the provider's list
        report.not_fused, report.debug = why_not(model, debug)
        if form == "standard":
            report.not_fused = _standard_leftovers(model, report.not_fused)
    if debug:
        report.debug += skipped_text(report.skipped)
    return report


def skipped_text(skipped: dict[str, dict[str, Any]]) -> str:
    """The walkers' candidates left as they were, one line each, for ``--debug``."""
    lines = [f"[{name}] {c['node']}: {c['reason']}" for name, entry in skipped.items() for c in entry["candidates"]] + [
        f"[{name}] ... and {entry['count'] - len(entry['candidates'])} more"
        for name, entry in skipped.items()
        if entry["count"] > len(entry["candidates"])
    ]
    return "".join(line + "\n" for line in lines)
