"""Which MatMuls int4 hurts most, without quantizing and loading one whole graph per node.

The search keeps the most sensitive nodes in float. It used to score a node by quantizing the
model with only that node in int4, writing it and loading a session: one quantization, one file
and one session per node, on a GPT-2-small-sized decoder (49 MatMuls) most of a 20-minute export.

Here one graph holds both versions of every candidate: the float MatMul and the MatMulNBits node
of the all-int4 graph (the very weights, scales and settings the bundle gets), blended by a gate
input, ``y = y_float + gate * (y_int4 - y_float)``. One session; a run with one gate open is the
model with that node alone in int4, scored as before by the share of the budget it uses up
(``budget.budget_used``) on the first batch of calibration rows. The bisection over how many to
keep in float then judges real written graphs on every calibration row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from edgeformer.quantize.mixed import Feeds, _session
from edgeformer.quantize.weights import SUFFIX

KEY = "budget_used_alone"
Judge = Callable[[list[dict[str, np.ndarray]]], float]  # outputs of the first feeds -> share of the budget used


def gate_name(node: str) -> str:
    return f"int4_gate/{node}"


def gated(model: onnx.ModelProto, quantized: onnx.ModelProto, candidates: Sequence[str]) -> onnx.ModelProto:
    """``model`` with each candidate's output blended with its MatMulNBits twin's by a scalar gate input."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    twins = {n.name: n for n in quantized.graph.node if n.op_type == "MatMulNBits"}
    inits = {i.name: i for i in quantized.graph.initializer}
    nodes, have = [], {i.name for i in out.graph.initializer}
    for node in out.graph.node:
        nodes.append(node)
        if node.name not in candidates:
            continue
        y = node.output[0]
        node.output[0] = f"{y}/float"
        twin = onnx.NodeProto()
        twin.CopyFrom(twins[node.name + SUFFIX])
        twin.output[0] = f"{y}/int4"
        gate = gate_name(node.name)
        out.graph.input.append(helper.make_tensor_value_info(gate, onnx.TensorProto.FLOAT, []))
        nodes += [
            twin,
            helper.make_node("Sub", [f"{y}/int4", f"{y}/float"], [f"{y}/delta"], name=f"{node.name}/delta"),
            helper.make_node("Mul", [f"{y}/delta", gate], [f"{y}/gated"], name=f"{node.name}/gated"),
            helper.make_node("Add", [f"{y}/float", f"{y}/gated"], [y], name=f"{node.name}/blend"),
        ]
        for name in twin.input[1:]:
            if name in inits and name not in have:
                out.graph.initializer.append(inits[name])
                have.add(name)
    out.graph.ClearField("node")
    out.graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return out


def rank(
    model: onnx.ModelProto, quantized: Path, candidates: Sequence[str], feeds: Sequence[Feeds], judge: Judge
) -> tuple[dict[str, float], str]:
    """Each candidate's share of the budget used with it alone in int4 (scores, and what they mean)."""
    path = quantized.with_name(quantized.name + ".gated.onnx")
    try:
        onnx.save(gated(model, onnx.load(str(quantized)), candidates), path)
        session = _session(path)
    finally:
        path.unlink(missing_ok=True)
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}
    first = [{k: v for k, v in f.items() if k in wanted} for f in feeds[:1]]
    closed = {gate_name(n): np.zeros((), np.float32) for n in candidates}
    scores = {}
    for name in candidates:
        gates = closed | {gate_name(name): np.ones((), np.float32)}
        got = [dict(zip(names, session.run(names, f | gates), strict=True)) for f in first]
        scores[name] = judge(got)
    return scores, KEY
