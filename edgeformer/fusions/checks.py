"""The per-pass check: run the rewritten graph under onnxruntime on the inputs the unfused graph
ran on, compare, and undo a pass that broke or changed it."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from edgeformer.compare import scaled_error

Feeds = dict[str, np.ndarray]
INTERMEDIATE_DOMAIN = "ai.onnxruntime._fusion"  # onnxscript's ort_fusions: SDPA, MHA before its final form


class Undoable(Protocol):
    name: str
    rewrites: int
    nodes: int
    rolled_back: str


_INLINE_ELEMENTS = 1024  # smaller initializers stay in the proto (shape inference and folding read them)
_MEMORY = "edgeformer-fusion-check.memory"  # the location the weights claim; onnxruntime gets them from memory


@dataclass
class Snapshot:
    """The graph as a proto whose large initializers are references to data held in memory:
    serialised without copying the weights, run without onnxruntime parsing them, and the restore
    point of the passes after it (the tensors are shared with the model, never modified in place)."""

    proto: onnx.ModelProto
    tensors: dict[str, ir.TensorProtocol]


def _external(tensor: ir.TensorProtocol, name: str) -> ir.ExternalTensor:
    return ir.ExternalTensor(_MEMORY, 0, tensor.nbytes, tensor.dtype, shape=ir.Shape(tensor.shape.numpy()), name=name)


def snapshot(model: ir.Model) -> Snapshot:
    swapped: dict[str, ir.TensorProtocol] = {}
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if tensor is None or tensor.size < _INLINE_ELEMENTS or tensor.dtype not in _NUMPY_TYPES:
            continue
        swapped[name] = tensor
        value.const_value = _external(tensor, name)
    try:
        proto = ir.to_proto(model)
    finally:
        for name, tensor in swapped.items():
            model.graph.initializers[name].const_value = tensor
    return Snapshot(proto, swapped)


_NUMPY_TYPES = {
    ir.DataType.FLOAT,
    ir.DataType.FLOAT16,
    ir.DataType.DOUBLE,
    ir.DataType.INT64,
    ir.DataType.INT32,
    ir.DataType.INT8,
    ir.DataType.UINT8,
    ir.DataType.BOOL,
}


def session(snap: Snapshot) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 4  # a failure is reported by the caller, not logged to stderr as well
    if snap.tensors:
        values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(t.numpy())) for t in snap.tensors.values()]
        opts.add_external_initializers(list(snap.tensors), values)
    return ort.InferenceSession(snap.proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run(model: ir.Model | Snapshot, feeds: list[Feeds]) -> list[list[np.ndarray]]:
    """The graph's outputs on each of ``feeds``; raises what onnxruntime raises when it cannot
    load or run the graph (the caller names the pass, or says why nothing was checked)."""
    sess = session(model if isinstance(model, Snapshot) else snapshot(model))
    names = [o.name for o in sess.get_outputs()]
    return [sess.run(names, f) for f in feeds]


def intermediate_ops(model: ir.Model) -> set[str]:
    return {f"{n.domain}:{n.op_type}" for n in model.graph.all_nodes() if n.domain == INTERMEDIATE_DOMAIN}


def check(
    snap: Snapshot, model: ir.Model, feeds: list[Feeds], reference: list[list[np.ndarray]], tolerance: float
) -> tuple[float | None, str, bool]:
    """Run the rewritten graph (``snap`` of ``model``) against the unfused outputs: (worst error,
    problem, deferred). A graph holding the rewriter's intermediate ops (a fusion that a later pass
    completes) cannot load in onnxruntime; its check is deferred to the next pass, and a failure
    then undoes both."""
    try:
        got = run(snap, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's failure to load or run the rewritten graph
        if intermediate_ops(model):
            return None, "", True
        return None, f"the graph no longer runs ({ort_message(exc)})", False
    error = max_rel(reference, got)
    if not error <= tolerance:  # NaN included
        return error, f"it changed the outputs by {error:.3g} of their scale (tolerance {tolerance:g})", False
    return error, "", False


def undo(
    model: ir.Model, restore_point: Snapshot, records: Sequence[Undoable], problem: str, log: Callable[[str], None]
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
    """The worst ``compare.scaled_error`` over every output of every feed (inf where either side
    is not finite)."""
    worst = 0.0
    for ref_outs, got_outs in zip(reference, got, strict=True):
        for r, g in zip(ref_outs, got_outs, strict=True):
            worst = max(worst, scaled_error(r, g))
    return worst


def restore(model: ir.Model, snap: Snapshot) -> ir.Model:
    """Put the graph back as it was at ``snap``, in the same Model object."""
    restored = ir.from_proto(snap.proto)
    for name, tensor in snap.tensors.items():
        restored.graph.initializers[name].const_value = tensor
    model.graph = restored.graph  # (the graph carries the opset imports)
    model.functions.clear()
    model.functions.update(restored.functions)
    return model
