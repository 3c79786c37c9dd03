"""The per-pass check: run the rewritten graph under onnxruntime on the inputs the unfused graph
ran on, compare, and undo a pass that broke or changed it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

Feeds = dict[str, np.ndarray]
INTERMEDIATE_DOMAIN = "ai.onnxruntime._fusion"  # onnxscript's ort_fusions: SDPA, MHA before its final form


class Undoable(Protocol):
    name: str
    rewrites: int
    nodes: int
    rolled_back: str


def run(model: ir.Model, feeds: list[Feeds]) -> list[list[np.ndarray]]:
    """The graph's outputs on each of ``feeds``; raises what onnxruntime raises when it cannot
    load or run the graph (the caller names the pass, or says why nothing was checked)."""
    proto = ir.to_proto(model)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 4  # a failure is reported by the caller, not logged to stderr as well
    session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [session.run(names, f) for f in feeds]


def intermediate_ops(model: ir.Model) -> set[str]:
    return {f"{n.domain}:{n.op_type}" for n in model.graph.all_nodes() if n.domain == INTERMEDIATE_DOMAIN}


def check(
    model: ir.Model, feeds: list[Feeds], reference: list[list[np.ndarray]], tolerance: float
) -> tuple[float | None, str, bool]:
    """Run the rewritten graph against the unfused outputs: (worst error, problem, deferred).
    A graph holding the rewriter's intermediate ops (a fusion that a later pass completes) cannot
    load in onnxruntime; its check is deferred to the next pass, and a failure then undoes both."""
    try:
        got = run(model, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's failure to load or run the rewritten graph
        if intermediate_ops(model):
            return None, "", True
        return None, f"the graph no longer runs ({ort_message(exc)})", False
    error = max_rel(reference, got)
    if error > tolerance:
        return error, f"it changed the outputs by {error:.3g} of their scale (tolerance {tolerance:g})", False
    return error, "", False


def undo(
    model: ir.Model, restore_point: Any, records: list[Undoable], problem: str, log: Callable[[str], None]
) -> ir.Model:
    """Put the graph back to ``restore_point`` and mark ``records`` (the last one the pass whose
    check failed) as undone, naming the problem."""
    model = restore(model, restore_point)
    undone = [r for r in records if r.rewrites or r is records[-1]]
    if len(undone) > 1:
        names = " + ".join(r.name for r in undone)
        problem = f"{problem} (checked as one step, {names}: the graph between them does not run)"
    for record in records:
        if record in undone:
            record.rolled_back, record.rewrites = problem, 0
            log(f"  {record.name}: undone, {problem}")
        record.nodes = len(list(model.graph.all_nodes()))
    return model


def ort_message(exc: Exception) -> str:
    """The informative part of an onnxruntime error: the node it failed in and its status message
    without the source location and failed condition, first line, bounded."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    node = re.search(r"while running (\S+) node\. Name:'([^']*)'", text)
    for marker in ("Status Message: ", "] : "):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
    if text.startswith("/") and " was false. " in text:  # "/src/file.h:91 Func(...) cond was false. Message"
        text = text.split(" was false. ", 1)[1]
    if node:
        text = f"{node[1]} node {node[2]!r}: {text}" if node[2] else f"{node[1]} node: {text}"
    return text[:300]


def max_rel(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> float:
    worst = 0.0
    for ref_outs, got_outs in zip(reference, got, strict=True):
        for r, g in zip(ref_outs, got_outs, strict=True):
            if r.size == 0:
                continue
            err = float(np.abs(r.astype(np.float64) - g.astype(np.float64)).max())
            worst = max(worst, err / max(1.0, float(np.abs(r).max())))
    return worst


def restore(model: ir.Model, backup: Any) -> ir.Model:
    """Put the graph back as it was before a pass, in the same Model object."""
    restored = ir.from_proto(backup)
    model.graph = restored.graph  # type: ignore[misc]  # onnx-ir declares graph read-only; it carries the opsets
    model.functions.clear()
    model.functions.update(restored.functions)
    return model
