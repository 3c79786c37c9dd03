"""Which nodes reduced precision hurts most, without quantizing and loading one whole graph per node.

The search keeps the most sensitive nodes in float. It used to score a node by quantizing the
model with only that node reduced, writing it and loading a session: one quantization, one file
and one session per node, on a GPT-2-small-sized decoder (49 MatMuls) most of a 20-minute export.

Here one graph holds both versions of every candidate: the all-reduced graph (the very weights,
scales and settings the bundle gets: int4's MatMulNBits, dynamic int8's DynamicQuantizeMatMul,
a Gather's int8 table) with, beside each candidate's reduced form, the float node, blended by a gate
input, ``y = y_float + gate * (y_reduced - y_float)``. One quantization and one session; a run with
one gate open is the model with that node alone reduced, scored as before by the share of the budget
it uses up (``budget.budget_used``) on the first batch of calibration rows. A candidate no gate can
reach (int8 attention merged into one QAttention) is scored the old way, by the caller. The
bisection over how many to keep in float then judges real written graphs on every row and case.
This module builds the gated graph; ``quantize/sensitivity.rank`` runs it and scores the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import helper

KEY = "budget_used_alone"


def gate_name(node: str) -> str:
    return f"int4_gate/{node}"


def _producers(graph: onnx.GraphProto) -> dict[str, int]:
    return {out: i for i, node in enumerate(graph.node) for out in node.output}


def gateable(model: onnx.ModelProto, quantized: onnx.ModelProto, candidates: Sequence[str]) -> list[str]:
    """The candidates whose reduced form in ``quantized`` ends in the float node's own output (MatMulNBits;
    dynamic int8's DynamicQuantizeMatMul or MatMulInteger chain; a Gather's DequantizeLinear): those a
    gate can blend. A candidate whose output the quantized graph no longer has (merged into a QAttention)
    or still computes in float is not one."""
    float_nodes = {n.name: n for n in model.graph.node}
    made = _producers(quantized.graph)
    known = {i.name for i in model.graph.initializer} | {i.name for i in model.graph.input} | {""}
    out = []
    for name in candidates:
        node = float_nodes.get(name)
        at = made.get(node.output[0]) if node is not None else None
        if node is None or at is None or quantized.graph.node[at].name == name:
            continue
        # the float twin goes right after the reduced node: what it reads must be there by then
        if all(x in known or made.get(x, at) < at for x in node.input):
            out.append(name)
    return out


def _ungated(model: onnx.ModelProto, quantized: onnx.ModelProto) -> bool:
    """Whether the quantizer changed a node no gate can blend (its output renamed or merged away)."""
    made = _producers(quantized.graph)
    at = {n.name: made.get(n.output[0]) if n.output else None for n in model.graph.node}
    changed = [name for name, i in at.items() if i is None or quantized.graph.node[i].name != name]
    return bool(set(changed) - set(gateable(model, quantized, changed)))


def gated(model: onnx.ModelProto, quantized: onnx.ModelProto, candidates: Sequence[str]) -> onnx.ModelProto:
    """The all-reduced graph ``quantized`` with each candidate's output blended with the float node's
    (from ``model``) by a scalar gate input: gate 1 is the reduced node, gate 0 the float one."""
    out = onnx.ModelProto()
    out.CopyFrom(quantized)
    float_nodes = {n.name: n for n in model.graph.node}
    inits = {i.name: i for i in model.graph.initializer}
    gates = {float_nodes[n].output[0]: n for n in gateable(model, quantized, candidates)}
    nodes, have = [], {i.name for i in out.graph.initializer}
    for node in out.graph.node:
        nodes.append(node)
        y = next((o for o in node.output if o in gates), None)
        if y is None:
            continue
        name = gates[y]
        node.output[list(node.output).index(y)] = f"{y}/reduced"
        twin = onnx.NodeProto()
        twin.CopyFrom(float_nodes[name])
        twin.name, twin.output[0] = f"{name}/float", f"{y}/float"
        gate = gate_name(name)
        out.graph.input.append(helper.make_tensor_value_info(gate, onnx.TensorProto.FLOAT, []))
        nodes += [
            twin,
            helper.make_node("Sub", [f"{y}/reduced", f"{y}/float"], [f"{y}/delta"], name=f"{name}/delta"),
            helper.make_node("Mul", [f"{y}/delta", gate], [f"{y}/gated"], name=f"{name}/gated"),
            helper.make_node("Add", [f"{y}/float", f"{y}/gated"], [y], name=f"{name}/blend"),
        ]
        for weight in twin.input:
            if weight in inits and weight not in have:
                out.graph.initializer.append(inits[weight])
                have.add(weight)
    out.graph.ClearField("node")
    out.graph.node.extend(nodes)
    return out
